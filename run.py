"""Train one task: `python run.py dataset=cub selection=row k=2` (Hydra; `--help` lists groups).

With no arguments it runs the embedded offline default (digits transfer, GRFT vs linear vs full).
Any error shows as one line first: the problem and the fix (grft_app.lit.launch); the full traceback
goes to the run's run.log, or to the terminal with HYDRA_FULL_ERROR=1.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # before Hydra (which would add a misspelt key and train) and before torch loads
    from grft_app.lit.overrides import unknown_key_problem

    problem = unknown_key_problem(sys.argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from grft_app.lit.settings import register_resolvers  # noqa: E402

register_resolvers()


def launched_dirs(cfg: DictConfig, run_dir: Path) -> list[Path]:
    """The run directory and those of its side-by-side baselines (where a failed launch may write)."""
    from grft_app.lit.app import baseline_specs, run_dir_of, with_method

    dirs = [run_dir]
    try:
        dirs += [
            run_dir_of(with_method(cfg, name, overrides)) for name, overrides in baseline_specs(cfg.baselines or [])
        ]
    except Exception:  # a bad baseline spec fails the launch itself, with its own message
        pass
    return dirs


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    """Returns the run's record (a study's sweeper reads its objective from it)."""
    from grft_app.lit import launch
    from grft_app.lit.app import main as run_app
    from grft_app.lit.quiet import quiet_lightning

    quiet_lightning()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    before = launch.snapshot(launched_dirs(cfg, run_dir))
    runs_root = Path(str(cfg.paths.runs))
    try:
        return run_app(cfg, run_dir)
    except SystemExit as stop:  # the app has already printed its one-line error
        if stop.code not in (0, None):
            for state in before:
                launch.tidy(state, keep_report=False, runs_root=runs_root)
        raise
    except Exception as err:
        user_error = launch.is_user_error(err)
        written = None if user_error else launch.log_traceback(err)
        print(launch.explain(err, written), file=sys.stderr)
        for state in before:
            launch.tidy(state, keep_report=not user_error, runs_root=runs_root)
        if launch.wants_traceback() or HydraConfig.get().mode.name == "MULTIRUN":
            raise  # Hydra prints the traceback (multirun: its launcher records the job and goes on)
        sys.exit(2 if user_error else 1)


if __name__ == "__main__":
    main()
