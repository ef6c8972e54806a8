"""What tests import: tiny models and batches (``models``), the app run in-process (``app_runs``),
miniature datasets in the benchmarks' layouts (``miniature``), and stub configs and run records for
the renderer (``results_fixtures``). Fixtures live in ``tests/conftest.py``."""
