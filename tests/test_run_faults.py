"""Faults that must not lose work or mislead: kills, damaged files, a full disk, signals, bad values.

Most cases start from one of two runs made once per module (an uninterrupted run, and the same run
stopped after its first epoch) and copy it, so each case costs one launch at most.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest

from grft_app.lit import launch
from grft_app.lit.app import run_dir_of
from grft_app.lit.runner import run_task
from grft_app.lit.settings import ConfigError, register_resolvers
from grft_app.paths import ROOT
from grft_app.record import read_record
from helpers.app_runs import make_cfg

register_resolvers()

ARGS = ("epochs=3", "selection=column", "lambda=0.01")
STEPS_PER_EPOCH = 2  # debug=smoke: trainer.limit_train_batches=2


class StopAtEpoch(L.Callback):
    """Stops the launch when ``epoch`` begins (the earlier epochs are checkpointed)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise SystemExit("stopped")


def launch_task(runs: Path, *overrides: str, callbacks=None, **kwargs):
    cfg = make_cfg(runs, *ARGS, *overrides)
    run_dir = run_dir_of(cfg)
    return run_task(cfg, run_dir, extra_callbacks=callbacks, **kwargs), run_dir


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run: its record and directory."""
    return launch_task(tmp_path_factory.mktemp("straight"))


@pytest.fixture(scope="module")
def stopped_runs(tmp_path_factory) -> Path:
    """A runs folder whose run stopped when its second epoch began (``epoch0.ckpt`` is the last)."""
    runs = tmp_path_factory.mktemp("stopped")
    with pytest.raises(SystemExit):
        launch_task(runs, callbacks=[StopAtEpoch(1)])
    return runs


def copy_runs(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return run_dir_of(make_cfg(target, *ARGS))


def same_bytes(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def assert_matches_straight(record, run_dir: Path, straight) -> None:
    """Adapter, selection and metrics of ``record`` are those of the uninterrupted run, byte for byte."""
    reference, reference_dir = straight
    assert record.done and record.metrics == reference.metrics
    for name in ("adapter.safetensors", "selection.safetensors"):
        assert same_bytes(run_dir / name, reference_dir / name), name


def no_probe(monkeypatch):
    import grft_app.methods.grft as grft_method

    def refuse(*args, **kwargs):
        raise AssertionError("the probe ran again on resume")

    monkeypatch.setattr(grft_method, "select", refuse)


# --- 1. a kill while a checkpoint is replaced ------------------------------------------------------


def test_a_kill_while_the_checkpoint_is_replaced_resumes_from_the_newest_intact_one(
    tmp_path, stopped_runs, straight, monkeypatch, caplog
):
    run_dir = copy_runs(stopped_runs, tmp_path / "runs")
    folder = run_dir / "checkpoints"
    # What a kill leaves between "epoch1 saved, epoch0 removed" and "last.ckpt moved": a dangling link.
    shutil.copy(folder / "epoch0.ckpt", folder / "epoch1.ckpt")
    shutil.copy(folder / "epoch0.ckpt.sha256", folder / "epoch1.ckpt.sha256")
    for name in ("epoch0.ckpt", "epoch0.ckpt.sha256"):
        (folder / name).unlink()
    assert (folder / "last.ckpt").is_symlink() and not (folder / "last.ckpt").exists()
    no_probe(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="grft"):
        record, _ = launch_task(tmp_path / "runs")
    assert record.resumed is True
    assert record.launches[-1].steps == 2 * STEPS_PER_EPOCH  # epochs 1 and 2 only: epoch 0 is not trained again
    assert any("newest intact checkpoint" in r.getMessage() and "epoch1.ckpt" in r.getMessage() for r in caplog.records)
    assert_matches_straight(record, run_dir, straight)


def test_with_no_checkpoint_left_behind_a_dangling_link_the_launch_says_it_starts_over(tmp_path, caplog):
    runs = tmp_path / "runs"
    folder = run_dir_of(make_cfg(runs, *ARGS, "epochs=1")) / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "last.ckpt").symlink_to("epoch0.ckpt")
    with caplog.at_level(logging.WARNING, logger="grft"):
        record, _ = launch_task(runs, "epochs=1")
    lines = [r.getMessage() for r in caplog.records if "starting over" in r.getMessage()]
    assert len(lines) == 1 and "epoch0.ckpt" in lines[0] and "\n" not in lines[0]
    assert record.done and record.resumed is False


# --- 2. launches.json of the wrong shape --------------------------------------------------------------


def test_a_launch_log_of_the_wrong_shape_is_set_aside_in_one_line_and_the_run_resumes(
    tmp_path, stopped_runs, straight, caplog
):
    run_dir = copy_runs(stopped_runs, tmp_path / "runs")
    (run_dir / "launches.json").write_text("[1, 2]")
    with caplog.at_level(logging.WARNING, logger="grft"):
        record, _ = launch_task(tmp_path / "runs")
    lines = [r.getMessage() for r in caplog.records if "launches.json" in r.getMessage()]
    assert len(lines) == 1 and str(run_dir / "launches.json") in lines[0] and "\n" not in lines[0]
    assert record.resumed is True and [launch.outcome for launch in record.launches] == ["trained"]
    assert [p.read_text() for p in (run_dir / "history").glob("*-launches.json")] == ["[1, 2]"]
    assert_matches_straight(record, run_dir, straight)


# --- 3. a full disk ---------------------------------------------------------------------------------


def test_a_full_disk_is_one_line_leaves_no_partial_checkpoint_and_records_the_launch_as_failed(
    tmp_path, stopped_runs, straight, monkeypatch
):
    import grft_app.lit.checkpoints as checkpoints

    run_dir = copy_runs(stopped_runs, tmp_path / "runs")
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())

    def full(tmp, data):
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoints, "write_bytes", full)
    with pytest.raises(OSError) as caught:
        launch_task(tmp_path / "runs")
    line = launch.explain(caught.value)
    assert launch.is_user_error(caught.value) and "\n" not in line
    assert line.startswith("error: no space left on ") and f"while writing {run_dir / 'checkpoints'}" in line
    assert "report" not in line and "bug" not in line
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before  # nothing partial left
    launches = json.loads((run_dir / "launches.json").read_text())
    assert [entry["outcome"] for entry in launches] == ["failed", "failed"]  # the stop, then the full disk
    monkeypatch.undo()
    record, _ = launch_task(tmp_path / "runs")
    assert_matches_straight(record, run_dir, straight)


def test_an_atomic_write_on_a_full_disk_names_its_file_and_leaves_nothing(tmp_path):
    from grft.io import write_atomic

    def full(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("I/O error: No space left on device (os error 28)")  # as safetensors reports it

    with pytest.raises(OSError) as caught:
        write_atomic(tmp_path / "adapter.safetensors", full)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "adapter.safetensors")
    assert list(tmp_path.iterdir()) == []


# --- 5, 6. SIGTERM during the probe, Ctrl-C -------------------------------------------------------------


class SignalSent(Exception):
    pass


def test_sigterm_during_the_probe_is_a_preemption_that_resumes(tmp_path, straight, monkeypatch):
    import grft_app.methods.grft as grft_method

    real_select = grft_method.select

    def select_then_sigterm(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_select(*args, **kwargs)

    def fallback(signum, frame):  # only if the launch installed none: the process is not killed
        raise SignalSent("SIGTERM reached the default handler")

    previous = signal.signal(signal.SIGTERM, fallback)
    try:
        monkeypatch.setattr(grft_method, "select", select_then_sigterm)
        with pytest.raises(SystemExit) as stop:
            launch_task(tmp_path / "runs")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stop.value.code == 143
    run_dir = run_dir_of(make_cfg(tmp_path / "runs", *ARGS))
    record = read_record(run_dir)
    assert record.status == "preempted" and [launch.outcome for launch in record.launches] == ["preempted"]
    monkeypatch.undo()
    record, _ = launch_task(tmp_path / "runs")
    assert_matches_straight(record, run_dir, straight)


def test_ctrl_c_is_one_line_records_interrupted_exits_130_and_resumes(
    tmp_path, stopped_runs, straight, monkeypatch, caplog
):
    run_dir = copy_runs(stopped_runs, tmp_path / "runs")

    class CtrlC(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.current_epoch == 2:
                os.kill(os.getpid(), signal.SIGINT)

    with caplog.at_level(logging.WARNING, logger="grft"), pytest.raises(SystemExit) as stop:
        launch_task(tmp_path / "runs", callbacks=[CtrlC()])
    assert stop.value.code == 130
    lines = [r.getMessage() for r in caplog.records if "interrupted" in r.getMessage()]
    assert len(lines) == 1 and "resume" in lines[0]
    record = read_record(run_dir)
    assert record.status == "interrupted" and not record.done
    assert [launch.outcome for launch in record.launches] == ["failed", "interrupted"]
    no_probe(monkeypatch)
    record, _ = launch_task(tmp_path / "runs")
    assert record.resumed is True and record.launches[-1].steps == STEPS_PER_EPOCH  # only epoch 2 again
    assert_matches_straight(record, run_dir, straight)


# --- 7. damaged outputs and checkpoints -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,damage",
    [
        ("selection.safetensors", "delete"),
        ("adapter.safetensors", "truncate"),
        ("adapter.safetensors", "alter"),
    ],
)
def test_a_finished_run_with_a_damaged_output_is_not_done_and_names_the_file(tmp_path, straight, name, damage):
    _, reference_dir = straight
    runs = tmp_path / "runs"
    run_dir = run_dir_of(make_cfg(runs, *ARGS))
    shutil.copytree(reference_dir, run_dir, symlinks=True)
    path = run_dir / name
    data = path.read_bytes()
    if damage == "delete":
        path.unlink()
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ValueError) as err:
        launch_task(runs)
    message = str(err.value)
    assert str(path) in message and "force=true" in message and "\n" not in message
    assert ("missing" if damage == "delete" else "damaged") in message


def test_an_altered_checkpoint_fails_its_checksum_before_it_is_resumed(tmp_path, stopped_runs):
    run_dir = copy_runs(stopped_runs, tmp_path / "runs")
    target = (run_dir / "checkpoints" / "last.ckpt").resolve()
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 1  # one bit in the middle of the weights: the file still loads
    target.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum") as err:
        launch_task(tmp_path / "runs")
    assert str(run_dir / "checkpoints" / "last.ckpt") in str(err.value) and "force=true" in str(err.value)


# --- 8. a read-only runs folder ---------------------------------------------------------------------------


def test_a_runs_folder_that_cannot_be_written_is_one_line_before_hydra_writes(tmp_path, monkeypatch, capsys):
    from omegaconf import OmegaConf

    from grft_app.lit import writable

    assert OmegaConf.load(ROOT / "conf" / "config.yaml").hydra.callbacks.writable_runs._target_ == (
        "grft_app.lit.writable.WritableRuns"
    )
    cfg = OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path / "runs" / "digits" / "grft" / "abc")}}})

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(writable.tempfile, "TemporaryFile", read_only)
    with pytest.raises(SystemExit) as stop:
        writable.WritableRuns().on_run_start(cfg)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: cannot write") and "Read-only file system" in err and "paths.runs" in err


def test_a_read_only_mount_is_found_by_trying(tmp_path):
    """Root writes through permissions, not through a read-only mount: the check tries a write."""
    from grft_app.lit.writable import write_problem

    assert write_problem(tmp_path / "not" / "yet") is None
    mount = tmp_path / "ro"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        assert "Read-only file system" in write_problem(mount / "digits")
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# --- 9. probe.max_batches and the baselines list ----------------------------------------------------------


def test_probe_max_batches_zero_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"probe\.max_batches must be a whole number >= 1"):
        launch_task(tmp_path, "probe.max_batches=0")


@pytest.mark.parametrize(
    "override,expected",
    [
        (None, [("linear", {"lr": 3e-2}), ("full", {"lr": 3e-3})]),
        ("baselines=[linear]", [("linear", {})]),
        ("baselines={linear: {lr: 0.1}}", [("linear", {"lr": 0.1})]),  # replaces the default, no `full`
        ("baselines=null", []),
    ],
)
def test_the_digits_baselines_are_replaced_by_either_form(override, expected):
    from hydra import compose, initialize_config_dir

    from grft_app.lit.app import baseline_specs

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[override] if override else [])
    assert baseline_specs(cfg.baselines or []) == expected


# --- 10. a diverged run ----------------------------------------------------------------------------------


@pytest.mark.parametrize("record_failure", [False, True], ids=["single", "multirun"])
def test_a_diverged_run_is_recorded_failed_with_the_step_and_the_fix(tmp_path, record_failure):
    with pytest.raises(ValueError) as err:
        launch_task(tmp_path, "lr=1e30", "epochs=1", record_failure=record_failure)
    record = read_record(run_dir_of(make_cfg(tmp_path, *ARGS, "lr=1e30", "epochs=1")))
    assert record.status == "failed" and not record.done
    assert "loss became NaN at step " in record.error and "lower lr" in record.error
    line = launch.explain(err.value)
    assert "\n" not in line and "loss became NaN at step" in line and "lower lr" in line
    assert "bug" not in line + record.error and "report" not in line + record.error


# --- 11. unknown top-level keys -------------------------------------------------------------------------


@pytest.mark.parametrize("arg,closest", [("datset=cub", "dataset"), ("+datset=cub", "dataset"), ("+lamda=1", "lambda")])
def test_unknown_top_level_keys_name_the_closest_known_key(arg, closest):
    from grft_app.lit.overrides import unknown_key_problem

    problem = unknown_key_problem(["debug=smoke", arg])
    assert problem is not None and f"did you mean {closest!r}" in problem and "\n" not in problem


def test_known_keys_groups_and_hydra_flags_pass():
    from grft_app.lit.overrides import unknown_key_problem

    argv = ["-m", "--config-name", "config", "dataset=cub,digits", "+trainer.max_time=1", "hydra/launcher=local"]
    assert unknown_key_problem([*argv, "lambda=0.1", "probe.max_batches=2", "~tags", "experiment=fgvc/cub"]) is None


def test_a_misspelt_group_added_with_plus_stops_the_launch_before_training(tmp_path):
    env = {**os.environ, "GRFT_RUNS": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "run.py", "debug=smoke", "baselines=null", "+datset=cub"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2 and "did you mean 'dataset'" in proc.stderr, proc.stderr[-2000:]
    assert not any(tmp_path.iterdir())


# --- 12. one run's log, one epoch numbering --------------------------------------------------------------


def test_each_run_log_holds_its_own_lines_and_epochs_agree_everywhere(tmp_path):
    first_dir = run_dir_of(make_cfg(tmp_path, *ARGS, "method=linear", "epochs=2"))
    first_dir.mkdir(parents=True)
    root = logging.getLogger()
    hydra_file = logging.FileHandler(first_dir / "run.log")  # as Hydra opens the launched run's log
    level = root.level
    root.addHandler(hydra_file)
    root.setLevel(logging.INFO)
    try:
        first, _ = launch_task(tmp_path, "method=linear", "epochs=2")
        second, second_dir = launch_task(tmp_path, "epochs=2")
    finally:
        root.removeHandler(hydra_file)
        hydra_file.close()
        root.setLevel(level)
    first_log, second_log = (d / "run.log" for d in (first_dir, second_dir))
    assert str(first_dir) in first_log.read_text() and str(second_dir) not in first_log.read_text()
    assert str(second_dir) in second_log.read_text() and str(first_dir) not in second_log.read_text()

    import csv

    (metrics_csv,) = second_dir.glob("logs/version_*/metrics.csv")
    rows = list(csv.DictReader(metrics_csv.open()))
    test_rows = [r for r in rows if r.get("test/acc")]
    curve_epochs = [point["epoch"] for point in second.evaluation.curve]
    final = second.evaluation.final_epoch
    assert final == 1 and curve_epochs[-1] == final  # epochs 0 and 1: counted from 0
    assert [float(r["epoch"]) for r in test_rows] == [final]  # the final test row: not one past it
    assert int(second.metrics["test_acc_best_epoch"]) in curve_epochs


# --- kill -9 at chosen moments: every re-launch ends with the uninterrupted run's files ----------------

KILL_AT = Path(__file__).parent / "helpers" / "kill_at.py"


def launch_cli(runs: Path, where: str) -> subprocess.CompletedProcess:
    """``run.py`` with this module's settings in a subprocess, killed with SIGKILL at ``where``."""
    env = {**os.environ, "GRFT_RUNS": str(runs), "PYTHONPATH": str(ROOT)}
    for name in ("HYDRA_FULL_ERROR", "GRFT_TRACEBACK"):
        env.pop(name, None)
    command = [sys.executable, str(KILL_AT), where, "run.py", "debug=smoke", "baselines=null", *ARGS]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def epochs_saved(run_dir: Path) -> int:
    """Epochs a re-launch need not train again: those of the newest published checkpoint."""
    found = [int(p.stem[len("epoch") :]) for p in (run_dir / "checkpoints").glob("epoch*.ckpt")]
    return max(found) + 1 if found else 0


def assert_kill_then_resume(runs: Path, where: str, straight, relaunch) -> None:
    killed = launch_cli(runs, where)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run_dir = run_dir_of(make_cfg(runs, *ARGS))
    saved = epochs_saved(run_dir)
    record = relaunch(runs)
    assert record.done and record.launches[-1].outcome == "trained"
    assert record.launches[-1].steps == (3 - saved) * STEPS_PER_EPOCH  # nothing already saved trains again
    assert record.resumed is (saved > 0)
    assert_matches_straight(record, run_dir, straight)


def test_kill_9_while_the_checkpoint_link_moves_then_the_relaunch_matches_an_uninterrupted_run(
    tmp_path, straight, monkeypatch
):
    no_probe(monkeypatch)  # epoch 1 is saved: the relaunch must not probe again
    assert_kill_then_resume(tmp_path / "runs", "relink:2", straight, lambda runs: launch_task(runs)[0])


def relaunch_cli(runs: Path):
    proc = launch_cli(runs, "never")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return read_record(run_dir_of(make_cfg(runs, *ARGS)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "where",
    [
        "probe",
        "step:3",  # half-way through epoch 1
        "ckpt-write:2",  # half of epoch 1's checkpoint on disk
        "relink:1",
        "file:launches.json",
        "file:selection.safetensors",
        "file:adapter.safetensors",
        "file:record.json",
    ],
)
def test_kill_9_at_any_moment_then_a_relaunch_matches_an_uninterrupted_run(tmp_path, straight, where):
    assert_kill_then_resume(tmp_path / "runs", where, straight, relaunch_cli)


@pytest.mark.slow
def test_kill_9_at_random_moments_until_done_matches_an_uninterrupted_run(tmp_path, straight):
    import random
    import time

    rng = random.Random(23)
    runs = tmp_path / "runs"
    env = {**os.environ, "GRFT_RUNS": str(runs), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "run.py", "debug=smoke", "baselines=null", *ARGS]
    run_dir = run_dir_of(make_cfg(runs, *ARGS))

    def launches() -> int:
        try:
            return len(json.loads((run_dir / "launches.json").read_text()))
        except (OSError, ValueError):
            return 0

    for _ in range(6):
        before = launches()
        job = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Once the launch log has this launch, the launch is past its imports: kill at a random moment after.
        deadline = time.time() + 300
        while launches() == before and job.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 3.0))
        job.kill()
        job.communicate(timeout=300)
        if job.returncode == 0:
            break
    record = relaunch_cli(runs)
    assert_matches_straight(record, run_dir, straight)
