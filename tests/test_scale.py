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

ROOT = Path(__file__).resolve().parents[1]


def cli(runs: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "GRFT_RUNS": str(runs), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def only_record(runs: Path) -> tuple[dict, Path]:
    paths = list(runs.rglob("record.json"))
    assert len(paths) == 1, paths
    return json.loads(paths[0].read_text()), paths[0].parent


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
    assert grft.Selection.load(ddp_dir / "selection.safetensors") == grft.Selection.load(one_dir / "selection.safetensors")


def test_submitit_local_sweep_finishes_with_one_record_per_job(tmp_path):
    proc = cli(tmp_path, "-m", "hydra/launcher=local", "debug=smoke", "baselines=null", "k=1,2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in tmp_path.rglob("record.json")]
    assert sorted(r["k"] for r in records) == [1, 2] and all(r["done"] for r in records)


def test_a_killed_job_resumes_with_its_selection_when_relaunched(tmp_path):
    args = ("debug=smoke", "baselines=null", "epochs=4", "trainer.limit_train_batches=4", "selection=row")
    straight = cli(tmp_path / "straight", *args)
    assert straight.returncode == 0, straight.stderr[-3000:]
    reference, reference_dir = only_record(tmp_path / "straight")

    runs = tmp_path / "killed"
    env = {**os.environ, "GRFT_RUNS": str(runs), "PYTHONPATH": str(ROOT)}
    job = subprocess.Popen([sys.executable, "run.py", *args], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(runs.rglob("checkpoints/epoch1.ckpt")):
        if job.poll() is not None:
            pytest.fail("the job ended before it could be killed")
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert not list(runs.rglob("record.json")), "killed before finishing"

    relaunched = cli(runs, *args)
    assert relaunched.returncode == 0, relaunched.stderr[-3000:]
    record, run_dir = only_record(runs)
    assert record["resumed"] is True and record["done"] is True
    assert grft.Selection.load(run_dir / "selection.safetensors") == grft.Selection.load(
        reference_dir / "selection.safetensors"
    )
    assert record["metrics"]["test_acc"] == reference["metrics"]["test_acc"]


def test_the_same_run_cannot_train_twice_at_once(tmp_path):
    from grft.lit.lock import RunLock, RunLocked

    with RunLock(tmp_path):
        with pytest.raises(RunLocked, match="is being trained by pid"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):  # released with its holder
        pass
