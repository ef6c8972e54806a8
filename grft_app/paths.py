"""The checkout's own folders, found in one place.

The application reads its Hydra configs from ``conf/`` and writes under ``results/`` of the checkout
it runs from (an editable install); every other module asks here instead of counting parent folders.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
RESULTS_DIR = ROOT / "results"
