"""A study saved with the runs: Optuna's storage, resuming it, and what it chose.

The study lives in ``<runs>/studies/<name>/``: ``study.db`` (Optuna's SQLite storage: every trial,
its settings, its value, its state), ``study.json`` (the objective, the search space, the fixed
overrides, the best trial and the final run) and, where the validation part was held out of the
training items, ``val_split.json`` (which items). Launching the same study again resumes it:
finished trials (complete or failed) are never run again, and a trial that was running when the
launch was stopped is asked again with the same settings, so it lands in the same run directory
and resumes there from its last checkpoint.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grft.io import write_json_atomic

STUDIES_DIR = "studies"
SPLIT_LISTING = "data_split.json"  # the runner's name for which items went to which split
RETRY_OF = "retry_of"  # user attribute of a trial asked again for one a stopped launch left running


class StudyMismatch(ValueError):
    """A study launched again with another objective, space or fixed settings; the message names the fix."""


def study_dir(runs: Path, name: str) -> Path:
    return Path(runs) / STUDIES_DIR / name


def storage_url(folder: Path) -> str:
    return f"sqlite:///{Path(folder).resolve() / 'study.db'}"


def open_study(folder: Path, name: str, seed: int, setup: dict[str, Any]):
    """Create the study, or load it and check it searches what it searched before."""
    import optuna

    folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=storage_url(folder),
        sampler=optuna.samplers.TPESampler(seed=seed),
        direction="maximize",
        load_if_exists=True,
    )
    saved = {key: study.user_attrs.get(key) for key in setup}
    if not any(value is not None for value in saved.values()):
        for key, value in setup.items():
            study.set_user_attr(key, value)
    else:
        differ = [key for key in setup if saved[key] != setup[key]]
        if differ:
            raise StudyMismatch(
                f"study {name!r} in {folder} was run with another {', '.join(differ)} "
                f"(saved: {', '.join(f'{k}={saved[k]!r}' for k in differ)}); "
                "name a new study with hydra.sweeper.study=<name>, or launch it as it was"
            )
    return study


def recover_stopped(study) -> list[int]:
    """Trials a stopped launch left ``RUNNING``: marked failed and asked again with the same settings.

    Returns their numbers. The retry has the same settings, hence the same run directory, where the
    run resumes from its last checkpoint (or is found done).
    """
    from optuna.trial import TrialState

    stopped = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for trial in stopped:
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(dict(trial.params), user_attrs={RETRY_OF: trial.number})
    return [t.number for t in stopped]


def finished_count(study) -> int:
    """Trials that count towards the study's size: complete or failed, less the failed ones asked again."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs[RETRY_OF] for t in trials if RETRY_OF in t.user_attrs}
    return sum(
        t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and t.number not in retried) for t in trials
    )


@dataclass(frozen=True)
class Outcome:
    """What a trial's job returned: its objective value, or why it has none."""

    value: float | None
    run_dir: str | None
    error: str | None = None


def outcome_of(job_return, objective: str) -> Outcome:
    """The objective from a job's return value (the run's record); a failed job or a missing value is an error."""
    from hydra.core.utils import JobStatus

    if job_return.status != JobStatus.COMPLETED:
        return Outcome(None, None, f"{type(job_return._return_value).__name__}: {job_return._return_value}")
    record = job_return.return_value
    if record is None or not getattr(record, "done", False):
        return Outcome(None, None, "the run did not finish (its record.json says why)")
    run_dir = str(record.run_dir) if record.run_dir else None
    value = (record.metrics or {}).get(objective)
    if value is None:
        return Outcome(None, run_dir, f"its record has no {objective}")
    return Outcome(float(value), run_dir)


def save_summary(folder: Path, summary: dict) -> Path:
    return write_json_atomic(Path(folder) / "study.json", summary)


def keep_val_split(folder: Path, run_dir: str | None) -> None:
    """Copy a trial's held-out items (``data_split.json``) beside the study, once: every trial holds out the same."""
    if run_dir is None:
        return
    source, target = Path(run_dir) / SPLIT_LISTING, Path(folder) / SPLIT_LISTING
    if source.is_file() and not target.is_file():
        shutil.copyfile(source, target)


def read_summary(folder: Path) -> dict | None:
    path = Path(folder) / "study.json"
    return json.loads(path.read_text()) if path.is_file() else None
