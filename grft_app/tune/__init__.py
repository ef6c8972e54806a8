"""Choosing a method's settings on validation data only (``make tune``), and equal trainable budgets.

A study (Optuna, driven through Hydra's sweeper interface by ``hydra_plugins.grft_tune``) runs
*trials*: runs trained on the training part of a task and evaluated on its validation part, never
on its test split. The best trial's settings then train one *final* run on training + validation
data, tested once. ``stages`` says what each stage changes in a run's config; the runner reads the
stage from ``cfg.tune`` (absent outside a study, so ordinary runs keep their keys).
"""
