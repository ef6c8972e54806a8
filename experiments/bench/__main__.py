"""``python -m experiments.bench``: see ``experiments.bench.driver``."""

import sys

from .driver import main

sys.exit(main())
