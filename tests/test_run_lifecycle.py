"""A run directory across launches: force, data identity in the key, damaged files, failed sweep jobs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from grft_app.lit.app import run_dir_of
from grft_app.lit.runner import run_task
from grft_app.lit.settings import register_resolvers, run_key
from grft_app.paths import ROOT
from grft_app.record import CorruptRecord

register_resolvers()


def make_cfg(runs: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["debug=smoke", f"paths.runs={runs}", "baselines=null", *overrides])


def cli(runs: Path, *args: str, multirun: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "GRFT_RUNS": str(runs), "PYTHONPATH": str(ROOT)}
    env.pop("GRFT_TRACEBACK", None)
    flags = ["-m"] if multirun else []
    return subprocess.run(
        [sys.executable, "run.py", *flags, "debug=smoke", "baselines=null", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_force_trains_again_from_the_pretrained_weights_and_keeps_the_old_record(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path, "epochs=2")
    run_dir = run_dir_of(cfg)
    first = run_task(cfg, run_dir)
    assert first.done and first.launches[0].steps > 0

    import grft_app.methods.grft as grft_method

    probes = []
    real_select = grft_method.select
    monkeypatch.setattr(grft_method, "select", lambda *a, **k: probes.append(1) or real_select(*a, **k))
    with open_dict(cfg):
        cfg.force = True
    again = run_task(cfg, run_dir)
    # A re-run, not a resume from the final checkpoint (which would train 0 steps and skip the probe).
    assert again.resumed is False and probes == [1]
    assert [launch.steps for launch in again.launches] == [launch.steps for launch in first.launches]
    assert again.metrics == first.metrics  # same seed, same data: the same numbers
    kept = list((run_dir / "history").glob("*-record.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["finished_at"] == first.finished_at


def test_the_run_key_follows_the_data_folder_its_split_files_and_the_results_version(tmp_path, monkeypatch):
    def key(data_dir):
        return run_key(make_cfg(tmp_path, "dataset=cub", "model=vit_b16_in21k", f"data_dir={data_dir}"))

    def make_task(data_dir, train_lines):
        folder = data_dir / "fgvc" / "CUB_200_2011"
        folder.mkdir(parents=True)
        for split in ("train", "val", "test"):
            (folder / f"{split}.json").write_text(
                json.dumps({"a.jpg": 0, **{f"{i}.jpg": 1 for i in range(train_lines)}})
            )
        return folder

    a, b = tmp_path / "a", tmp_path / "b"
    folder = make_task(a, 3)
    make_task(b, 3)
    assert key(a) == key(a)
    assert key(a) != key(b)  # same files, another folder
    before = key(a)
    (folder / "train.json").write_text(json.dumps({"a.jpg": 0}))
    assert key(a) != before  # a split list changed in place
    assert key(tmp_path / "absent") != key(a)  # missing data has its own key
    import grft
    import grft_app.identity as identity

    current = key(a)
    monkeypatch.setattr(grft, "__version__", "999")
    assert key(a) == current  # the package version is provenance only
    monkeypatch.setattr(identity, "RESULTS_VERSION", identity.RESULTS_VERSION + 1)
    assert key(a) != current


def test_the_same_config_on_another_data_folder_is_not_already_done(tmp_path):
    """The reported bug: pointed at another folder, a run was "already done" with the other folder's metrics."""
    from grft_app.data.identity import data_identity

    digits = make_cfg(tmp_path)
    assert data_identity(digits.dataset, digits.data_dir) == {"folder": None, "splits": "built-in"}
    keys = {run_key(make_cfg(tmp_path, "dataset=cub", "model=vit_b16_in21k", f"data_dir={tmp_path / d}")) for d in "xy"}
    assert len(keys) == 2


def test_a_damaged_record_names_itself_and_force_gets_past_it(tmp_path):
    done = cli(tmp_path, "k=1")
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = tmp_path.rglob("record.json")
    mask = os.umask(0)
    os.umask(mask)
    for name in ("record.json", "adapter.safetensors", "selection.safetensors"):  # not private (0600)
        assert stat.S_IMODE((record.parent / name).stat().st_mode) == 0o666 & ~mask, name
    record.write_text(record.read_text()[:294])
    broken = cli(tmp_path, "k=1")
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert f"error: {record} is not a valid run record" in broken.stderr and "force=true" in broken.stderr
    # The sweep tool stops on it with the same line; rendering names it and goes on.
    from experiments.paper.matching import RecordIndex
    from experiments.paper.sweeps import is_done

    with pytest.raises(CorruptRecord, match=str(record)):
        is_done(record.parent)
    assert str(record) in RecordIndex.load(tmp_path).corrupt[0]
    forced = cli(tmp_path, "k=1", "force=true")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert json.loads(record.read_text())["done"] is True
    assert len(list((record.parent / "history").glob("*-record.json"))) == 1


def test_a_damaged_last_checkpoint_names_itself_and_force_gets_past_it(tmp_path):
    import lightning as L

    class Stop(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                raise SystemExit("killed")

    cfg = make_cfg(tmp_path, "epochs=2")
    run_dir = run_dir_of(cfg)
    with pytest.raises(SystemExit):
        run_task(cfg, run_dir, extra_callbacks=[Stop()])
    last = run_dir / "checkpoints" / "last.ckpt"
    target = last.resolve()
    target.write_bytes(target.read_bytes()[:1000])
    proc = cli(tmp_path, "epochs=2")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = next(li for li in proc.stderr.splitlines() if li.startswith("error:"))
    assert str(last) in line and "cannot be read" in line and "force=true" in line
    forced = cli(tmp_path, "epochs=2", "force=true")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert json.loads((run_dir / "record.json").read_text())["resumed"] is False


@pytest.mark.parametrize(
    "args,expected",
    [
        (["lr=abc"], "error: lr must be a number, got 'abc'"),
        (["seed=abc"], "error: seed must be a whole number, got 'abc'"),
    ],
)
def test_non_numbers_name_their_key(tmp_path, args, expected):
    proc = cli(tmp_path, *args)
    assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_a_failed_job_is_recorded_and_the_rest_of_the_multirun_still_runs(tmp_path):
    data = tmp_path / "no_data"
    proc = cli(tmp_path / "runs", "dataset=cub,digits", f"data_dir={data}", multirun=True)  # cub first: it fails
    assert proc.returncode == 1 and "error: 1 of the multirun's runs failed" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "this multirun wrote 2 records:" in proc.stdout
    cub_line = next(line for line in proc.stdout.splitlines() if "cub/grft seed=0" in line)
    assert ": failed: DataMissingError: cub:" in cub_line
    records = {
        json.loads(p.read_text())["task"]: json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("record.json")
    }
    assert set(records) == {"cub", "digits"}
    assert records["digits"]["done"] is True and records["digits"]["status"] == "done"
    failed = records["cub"]
    assert failed["done"] is False and failed["status"] == "failed"
    assert (
        "make data-fgvc" in failed["error"]
        and failed["method"] == "grft"
        and failed["config"]["dataset"]["name"] == "cub"
    )
