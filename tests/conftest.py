"""Shared fixtures and test-session settings; the helpers tests import are in ``tests/helpers/``.

The folders mirror the tiers: ``lib/`` the library (``grft``), ``app/`` the application (``grft_app``,
``run.py``, ``data_prep``), ``paper/`` the paper's tables (``experiments/paper``), ``bench/`` the
benchmark and the model-coverage sweep; ``test_layout.py`` checks the tiers themselves. Marks beside
``slow`` and ``gpu``: ``process`` (starts processes), ``trains`` (trains in-process) and ``composes``
(composes a paper table's many cells); ``make test-fast`` leaves them out, ``make test`` runs them.
"""

from __future__ import annotations

import os

import pytest
import torch

from helpers.models import make_tiny_vit

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The tests' models are tiny: several intra-op threads only wait on each other (and on a shared
# machine they spin against other processes). GRFT_TEST_THREADS=N tests with N threads.
torch.set_num_threads(int(os.environ.get("GRFT_TEST_THREADS", "1")))


@pytest.fixture
def tiny_vit():
    return make_tiny_vit()
