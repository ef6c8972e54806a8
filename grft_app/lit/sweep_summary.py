"""After a multirun: one line per run it trained, and a non-zero exit if any of them failed.

Under the submitit launchers (``hydra/launcher=local`` or ``slurm``) every job prints into its own
log file, so the launching terminal would otherwise show nothing of the results. Hydra calls this
callback in the launching process before the first job and after the last one. It tags the
multirun with an id in the environment (jobs inherit it, also through submitit and sbatch), each
record carries that id (``multirun``), and at the end the records with this id are listed. A failed
job has already written its ``failed`` record and returned, so the other jobs ran; here the whole
multirun then exits with status 1.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ..record import RECORD_NAME, CorruptRecord, RunRecord, load_record_file

ENV = "GRFT_MULTIRUN"


def current_multirun() -> str | None:
    """The id of the multirun this process runs a job of (``None`` outside one)."""
    return os.environ.get(ENV)


def describe(record: RunRecord, run_dir: Path) -> str:
    status = record.state
    what = f"{record.task}/{record.method} seed={record.seed}"
    if record.method == "grft":
        what += f" {record.selection} k={record.k}"
    tuning = record.evaluation.tuning if record.evaluation is not None else None
    if status == "done" and tuning is not None and tuning.stage == "trial":  # a study's trial: never tested
        key = record.evaluation.reported.key
        value = (record.metrics or {}).get(key)
        result = f"{key} {value:.4f} (trial of study {tuning.study})" if value is not None else "done"
    elif status == "done":
        acc = (record.metrics or {}).get("test_acc")
        result = f"test_acc {acc:.4f}" if acc is not None else "done"
        if tuning is not None:
            result += f" (final run of study {tuning.study})"
    else:
        result = f"{status}" + (f": {record.error}" if record.error else "")
    return f"  {what}: {result}  ({run_dir})"


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[ENV] = uuid.uuid4().hex[:12]

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        tag = os.environ.pop(ENV, None)
        root = Path(str(config.hydra.sweep.dir))
        if tag is None or not root.is_dir():
            return
        lines, failed = [], 0
        for path in sorted(root.rglob(RECORD_NAME)):
            try:
                record = load_record_file(path)
            except CorruptRecord:
                continue
            if record.multirun == tag:
                lines.append(describe(record, path.parent))
                failed += record.state == "failed"
        if lines:
            print(f"this multirun wrote {len(lines)} records:", *lines, sep="\n", flush=True)
        if failed:
            print(
                f"error: {failed} of the multirun's runs failed (their record.json says why); "
                "fix them and launch again: finished runs are skipped",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(1)
