"""Lightning's start-up chatter off the terminal, so what a user reads is about their run.

Why: for each run Lightning prints which accelerators exist, a tip for a cloud service, and
warnings about settings that are deliberate here (a short digits epoch is shorter than the
logging interval; a task without a validation split returns no validation loader). What is
silenced is listed here, by message; every other warning still shows.
"""

from __future__ import annotations

import logging
import warnings

# Informational lines (GPU/TPU available, the cloud-upload tip, "Restoring states from ...").
CHATTY_LOGGERS = (
    "lightning.pytorch",
    "lightning.fabric",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)
# Warnings about choices this app makes on purpose (regular expressions matched at the start).
EXPECTED_WARNINGS = (
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"Total length of `.*` across ranks is zero",
    r"The '.*_dataloader' does not have many workers",  # num_workers=0 is right for in-memory tensors
    r"You are using `torch.load` with `weights_only=False`",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated",
)


def quiet_lightning() -> None:
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
