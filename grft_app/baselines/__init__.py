"""Baseline fine-tuning methods as small torch modules (LoRA through peft, adapters, prompts, SSF).

Each file does one method's model surgery and its file format; the Method classes in
``grft_app.methods`` decide what trains and call these. No Lightning or Hydra in here.
"""
