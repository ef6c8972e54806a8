"""One study: trials on validation data, asked and told by Optuna, launched by Hydra; then the final run.

``run_study`` is what the sweeper plugin (``hydra_plugins.grft_tune``) does with a multirun: each
batch of ``parallel`` trials is asked from the study, launched together through the configured
Hydra launcher (basic, local, slurm), and told its objective (the validation metric of the
protocol's statistic, read from each trial's record). When the study holds ``trials`` finished
trials, the best one's settings train one final run on training + validation data, tested once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..record import reported_key
from . import space as search_space
from .stages import FINAL, TRIAL, stage_overrides
from .study import finished_count, keep_val_split, open_study, outcome_of, recover_stopped, save_summary, study_dir

log = logging.getLogger("grft.tune")

Launch = Callable[[list[list[str]]], Sequence[Any]]


@dataclass(frozen=True)
class StudyOptions:
    """``hydra.sweeper.*`` (conf/hydra/sweeper/tune.yaml)."""

    study: str | None = None
    trials: int = 20
    parallel: int = 1
    seed: int = 0
    metric: str = "acc"
    val_fraction: float | None = None
    val_seed: int = 0
    final: bool = True


def default_name(cfg) -> str:
    """``<task>-<method>`` (``-share<percent>`` with an equal-budget ``share``)."""
    name = f"{cfg.dataset.name}-{cfg.method.name}"
    share = cfg.get("share")
    return name + (f"-share{share}" if share is not None else "")


def objective_of(cfg, metric: str) -> str:
    """The validation key of the protocol's statistic: ``val_acc_best`` (best epoch), ``val_acc`` (final)..."""
    return reported_key(f"val_{metric}", str(cfg.protocol.report), str(cfg.protocol.report_model))


def _check_fixed(fixed: dict[str, str], stage_keys: set[str]) -> None:
    clash = sorted(stage_keys & set(fixed))
    if clash:
        raise ValueError(
            f"the tuner sets {', '.join(clash)} itself (trials: validation split, no test; final run: train + val, "
            "tested once); remove it from the overrides"
        )


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def run_study(cfg, options: StudyOptions, overrides: list[str], parser, launch: Launch) -> dict:
    """Run (or resume) the study of ``cfg`` (the multirun's composed config); returns its summary."""
    if int(options.trials) < 1 or int(options.parallel) < 1:
        raise ValueError(
            f"hydra.sweeper.trials and .parallel must be >= 1, got {options.trials} and {options.parallel}"
        )
    space, fixed = search_space.parse(overrides, parser)
    if not space:
        raise ValueError("the search space is empty: choose one with tune=<method> (conf/tune/) or sweep a key")
    name = options.study or default_name(cfg)
    objective = objective_of(cfg, options.metric)
    trial_stage = stage_overrides(cfg.dataset, TRIAL, options.val_fraction, options.val_seed)
    final_stage = stage_overrides(cfg.dataset, FINAL)
    _check_fixed(fixed, {_key(o) for o in (*trial_stage, *final_stage)})
    fixed["baselines"] = "baselines=null"  # a trial trains one method; side-by-side baselines are other studies
    folder = study_dir(Path(str(cfg.hydra.sweep.dir)), name)
    setup = {"objective": objective, "space": search_space.describe(space), "fixed": sorted(fixed.values())}
    study = open_study(folder, name, int(options.seed), setup)
    retried = recover_stopped(study)
    if retried:
        log.info("study %s: trial(s) %s were running when a launch stopped; asking them again", name, retried)
    tune = [f"++tune.study={name}", f"++tune.metric={options.metric}", f"++tune.objective={objective}"]
    done = finished_count(study)
    print(
        f"study {name}: {done} of {options.trials} trials finished; objective {objective} (validation only); "
        f"storage {folder / 'study.db'}",
        flush=True,
    )
    while done < int(options.trials):
        asked = [study.ask(fixed_distributions=space) for _ in range(min(int(options.parallel), options.trials - done))]
        batch = [
            [*fixed.values(), *search_space.as_overrides(t.params), *trial_stage, "++tune.stage=trial", *tune]
            for t in asked
        ]
        for trial, returned in zip(asked, launch(batch), strict=True):
            outcome = outcome_of(returned, objective)
            keep_val_split(folder, outcome.run_dir)
            if outcome.value is None:
                study.tell(trial, state=_fail())
                log.warning("trial %d failed: %s", trial.number, outcome.error)
            else:
                study.tell(trial, outcome.value)
            print(f"  trial {trial.number}: {_settings(trial.params)} -> {_value(outcome)}", flush=True)
        done = finished_count(study)
        if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
            raise ValueError(f"study {name}: every trial so far failed ({outcome.error}); fix it and launch again")
    summary = _summary(study, name, objective, folder)
    if options.final and summary.get("best") is not None:
        best = summary["best"]
        chosen = [
            f"++tune.trial={best['trial']}",
            f"++tune.value={best['value']}",
        ]
        final = [[*fixed.values(), *search_space.as_overrides(best["params"]), *final_stage, "++tune.stage=final",
                  *tune, *chosen]]  # fmt: skip
        outcome = outcome_of(launch(final)[0], reported_key("test_acc"))
        summary["final"] = {"run_dir": outcome.run_dir, "test_acc": outcome.value, "error": outcome.error}
        print(
            f"final run (train + val, settings of trial {best['trial']}, tested once): "
            f"test_acc {_value(outcome)}  ({outcome.run_dir})",
            flush=True,
        )
    save_summary(folder, summary)
    return summary


def _fail():
    from optuna.trial import TrialState

    return TrialState.FAIL


def _settings(params: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _value(outcome) -> str:
    return f"{outcome.value:.4f}" if outcome.value is not None else f"failed ({outcome.error})"


def _summary(study, name: str, objective: str, folder: Path) -> dict:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None  # the earliest on ties
    summary = {
        "study": name,
        "storage": str(folder / "study.db"),
        "objective": objective,
        "selected_on": "val",
        "trials": [
            {"trial": t.number, "state": t.state.name.lower(), "params": dict(t.params), "value": t.value}
            for t in trials
        ],
        "best": None if best is None else {"trial": best.number, "params": dict(best.params), "value": best.value},
    }
    if best is not None:
        print(f"best trial {best.number}: {_settings(best.params)} -> {objective} {best.value:.4f}", flush=True)
    else:
        print(f"study {name}: no trial finished with a value; no final run", flush=True)
    return summary
