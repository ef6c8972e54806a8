"""Scale-out: 2-rank CPU DDP agrees with one process, submitit sweeps, killed jobs resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import grft
from grft_app.paths import ROOT


def cli(runs: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "GRFT_RUNS": str(runs), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def only_record(runs: Path) -> tuple[dict, Path]:
    paths = list(runs.rglob("record.json"))
    assert len(paths) == 1, paths
    return json.loads(paths[0].read_text()), paths[0].parent


@pytest.mark.process
@pytest.mark.parametrize("subsets", [1, 2])
def test_two_rank_cpu_ddp_selects_exactly_what_one_process_selects(tmp_path, subsets):
    common = ("debug=smoke", "baselines=null", "probe.max_batches=4", f"subsets={subsets}", "selection=column")
    single = cli(tmp_path / "one", *common)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = cli(tmp_path / "ddp", *common, "trainer=ddp_cpu")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one_record, one_dir = only_record(tmp_path / "one")
    ddp_record, ddp_dir = only_record(tmp_path / "ddp")  # one record and one run dir for both ranks
    assert ddp_record["config"]["trainer"]["devices"] == 2
    assert grft.Selection.load(ddp_dir / "selection.safetensors") == grft.Selection.load(
        one_dir / "selection.safetensors"
    )


@pytest.mark.process
def test_submitit_local_sweep_finishes_with_one_record_per_job(tmp_path):
    proc = cli(tmp_path, "-m", "hydra/launcher=local", "debug=smoke", "baselines=null", "k=1,2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in tmp_path.rglob("record.json")]
    assert sorted(r["k"] for r in records) == [1, 2] and all(r["done"] for r in records)
    # The jobs print into their own logs; the launching terminal still gets one line per run.
    assert "this multirun wrote 2 records:" in proc.stdout and proc.stdout.count("digits/grft seed=0 row") == 2


RESUME_ARGS = ("debug=smoke", "baselines=null", "epochs=6", "trainer.limit_train_batches=4", "selection=row")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    runs = tmp_path_factory.mktemp("straight")
    straight = cli(runs, *RESUME_ARGS)
    assert straight.returncode == 0, straight.stderr[-3000:]
    return only_record(runs)


def start(runs: Path) -> subprocess.Popen:
    env = {**os.environ, "GRFT_RUNS": str(runs), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "run.py", *RESUME_ARGS],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_checkpoint(job: subprocess.Popen, runs: Path, epoch: int) -> None:
    """Until last.ckpt points at the end of ``epoch`` (then the launch log has been written too)."""
    deadline = time.time() + 300
    while time.time() < deadline:
        lasts = list(runs.rglob("checkpoints/last.ckpt"))
        if lasts and lasts[0].resolve().name == f"epoch{epoch}.ckpt":
            return
        if job.poll() is not None:
            pytest.fail("the job ended before it could be stopped")
        time.sleep(0.02)
    pytest.fail("no checkpoint in time")


def same_adapter(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(x[k].dtype == y[k].dtype and bool((x[k] == y[k]).all()) for k in x)


@pytest.mark.process
def test_killed_twice_then_resumed_counts_every_launch_and_matches_bit_for_bit(tmp_path, uninterrupted):
    reference, reference_dir = uninterrupted
    runs = tmp_path / "killed"
    for epoch in (1, 3):
        job = start(runs)
        wait_for_checkpoint(job, runs, epoch)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        assert not list(runs.rglob("record.json")), "killed before finishing"

    relaunched = cli(runs, *RESUME_ARGS)
    assert relaunched.returncode == 0, relaunched.stderr[-3000:]
    record, run_dir = only_record(runs)
    assert record["resumed"] is True and record["done"] is True
    launches = record["launches"]
    assert [launch["outcome"] for launch in launches] == ["killed", "killed", "trained"]
    assert all(launch["train_s"] > 0 for launch in launches)
    assert record["timings"]["train_s"] == pytest.approx(sum(launch["train_s"] for launch in launches), abs=1e-3)
    assert record["timings"]["train_s_this_launch"] == launches[-1]["train_s"] < record["timings"]["train_s"]
    assert grft.Selection.load(run_dir / "selection.safetensors") == grft.Selection.load(
        reference_dir / "selection.safetensors"
    )
    assert record["metrics"]["test_acc"] == reference["metrics"]["test_acc"]
    assert record["metrics"]["test_loss"] == reference["metrics"]["test_loss"]
    assert same_adapter(run_dir / "adapter.safetensors", reference_dir / "adapter.safetensors")


@pytest.mark.process
def test_sigterm_checkpoints_marks_the_record_unfinished_exits_non_zero_and_resumes(tmp_path, uninterrupted):
    reference, reference_dir = uninterrupted
    runs = tmp_path / "preempted"
    job = start(runs)
    wait_for_checkpoint(job, runs, 1)
    os.kill(job.pid, signal.SIGTERM)
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 143, stderr[-3000:]
    record, run_dir = only_record(runs)
    assert record["done"] is False and record["status"] == "preempted"
    assert [launch["outcome"] for launch in record["launches"]] == ["preempted"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()

    relaunched = cli(runs, *RESUME_ARGS)
    assert relaunched.returncode == 0, relaunched.stderr[-3000:]
    record, run_dir = only_record(runs)
    assert record["done"] is True and record["resumed"] is True
    assert [launch["outcome"] for launch in record["launches"]] == ["preempted", "trained"]
    assert record["metrics"]["test_loss"] == reference["metrics"]["test_loss"]
    assert same_adapter(run_dir / "adapter.safetensors", reference_dir / "adapter.safetensors")


def test_the_same_run_cannot_train_twice_at_once(tmp_path):
    from grft_app.run.lock import RunLock, RunLocked

    with RunLock(tmp_path):
        with pytest.raises(RunLocked, match="is being trained by pid"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):  # released with its holder
        pass


def test_a_shared_baseline_run_waits_for_its_holder_instead_of_failing(tmp_path):
    import threading

    from grft_app.run.lock import RunLock

    holder = RunLock(tmp_path).__enter__()
    entered = threading.Event()

    def second_launch():
        with RunLock(tmp_path, wait=True):
            entered.set()

    thread = threading.Thread(target=second_launch)
    thread.start()
    assert not entered.wait(0.5), "entered while another process held the run"
    holder.__exit__(None, None, None)
    assert entered.wait(10)
    thread.join()
