"""Run management: what ``python run.py`` does around training one task.

Reading the config into settings and the run key (``settings``), checks before any model loads
(``preflight``, ``overrides``, ``writable``), the pipeline of one run (``runner``: prepare, fit and
test, record) and of a launch with its side-by-side baselines (``app``), and what happens to a run
directory across launches (``lifecycle``, ``lock``, ``outputs``, ``run_log``, ``launch``,
``sweep_summary``). The Lightning pieces a run trains with are ``grft_app.lit``'s.
"""
