"""A failed launch: one line first (the problem and the fix), the traceback kept, no empty run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from grft_app.lit import launch
from grft_app.lit.app import run_dir_of
from grft_app.lit.runner import run_task
from grft_app.lit.settings import register_resolvers
from grft_app.paths import ROOT

register_resolvers()


def cli(runs: Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GRFT_RUNS": str(runs), "PYTHONPATH": str(ROOT), **env_extra}
    for name in ("HYDRA_FULL_ERROR", "GRFT_TRACEBACK"):
        if name not in env_extra:
            env.pop(name, None)
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_missing_data_is_found_before_the_model_is_built(tmp_path, monkeypatch):
    import grft_app.lit.runner as runner

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the data was checked")

    monkeypatch.setattr(runner, "base_of_run", no_model)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "dataset=cub",
                "selection=row",
                f"data_dir={tmp_path / 'data'}",
                f"paths.runs={tmp_path / 'runs'}",
                "baselines=null",
            ],
        )
    with pytest.raises(FileNotFoundError, match="python -m data_prep.fgvc --tasks cub"):
        run_task(cfg, run_dir_of(cfg))


def test_a_launch_without_its_data_says_so_in_one_line_and_leaves_nothing(tmp_path):
    proc = cli(tmp_path / "runs", "dataset=cub", "selection=row", f"data_dir={tmp_path / 'data'}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[0].startswith("error: cub: ") and "data_prep.fgvc" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert files_under(tmp_path / "runs") == []  # no .hydra/, run.log or .lock left behind


@pytest.mark.parametrize("full_error", [False, True])
def test_an_unexpected_error_is_one_line_first_with_the_traceback_kept(tmp_path, full_error):
    # A Trainer argument Lightning does not know: an error no check of ours catches.
    env = {"HYDRA_FULL_ERROR": "1"} if full_error else {}
    proc = cli(tmp_path, "debug=smoke", "baselines=null", "+trainer.no_such_argument=1", **env)
    assert proc.returncode != 0
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("error: TypeError in ") and "no_such_argument" in first and "runner.py" in first
    (log_file,) = tmp_path.rglob("run.log")
    assert "Traceback" in log_file.read_text() and str(log_file) in first
    assert ("Traceback" in proc.stderr) == full_error  # HYDRA_FULL_ERROR=1: the traceback follows the line
    run_dir = log_file.parent
    assert not (run_dir / ".lock").exists() and not (run_dir / "logs").exists()


def test_tidy_keeps_records_and_checkpoints_and_removes_only_what_the_launch_made(tmp_path):
    recorded, resumable, old, fresh = (tmp_path / n for n in ("recorded", "resumable", "old", "fresh"))
    for d in (recorded, resumable, old):
        d.mkdir()
    (old / "run.log").write_text("an earlier launch\n")
    before = launch.snapshot([recorded, resumable, old, fresh])
    for d in (recorded, resumable, old, fresh):
        (d / "logs" / "version_0").mkdir(parents=True)
        (d / ".lock").write_text("pid 1")
    (recorded / "record.json").write_text("{}")
    (resumable / "checkpoints").mkdir()
    (resumable / "checkpoints" / "last.ckpt").write_text("")
    for state in before:
        launch.tidy(state, keep_report=False, runs_root=tmp_path)
    assert (recorded / ".lock").exists() and (resumable / "logs").exists()  # left alone
    assert sorted(p.name for p in old.iterdir()) == ["run.log"]  # only this launch's husks removed
    assert not fresh.exists()
