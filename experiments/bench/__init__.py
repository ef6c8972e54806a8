"""Benchmark of GRFT against full fine-tuning, GPS, LoRA, linear probing and the floor.

``python -m experiments.bench`` (``make bench``) measures, per model and method, in one process
each: step time, peak memory, trainable parameters, optimizer state, adapter file size and probe
time; it writes ``results/bench/latest.{csv,md,png}`` and the memory-over-time figure (Fig. 3).
Modules: ``driver`` (runs the workers), ``launch`` (the options and how a worker is started,
shared by the driver and ``memory_trace``), ``worker`` (measures one pair; its result is a ``row``),
``names`` (an arm's name as the app's config overrides), ``arms`` (the app's methods through its
factory, and the floor), ``models``, ``memory``, ``memory_trace`` (Fig. 3),
``report`` (tables, chart), ``targets`` (the goals).
"""
