"""The run record: its layout round-trips, records written so far still read, anything else is a clear error.

``data/record_schema1.json`` is a record as the runner wrote it before the record was typed (the
embedded digits default, ``make run``), kept verbatim: the reader must keep reading it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grft_app.record import (
    RECORD_NAME,
    SCHEMA_VERSION,
    CodeFacts,
    CorruptRecord,
    Evaluation,
    Launch,
    Params,
    Reported,
    RunRecord,
    Timings,
    UnknownSchema,
    is_done,
    iter_records,
    read_record,
    status_of,
    write_record,
)

SCHEMA1 = Path(__file__).parent / "data" / "record_schema1.json"


def full_record() -> RunRecord:
    """A finished run's record with every block filled, as the runner builds it."""
    return RunRecord(
        task="cub",
        method="grft",
        done=True,
        status="done",
        family="fgvc",
        model="vit_base_patch16_224.augreg_in21k",
        selection="row",
        norm="l2",
        k=2,
        lambda_=1e-3,
        regular_layers="all",
        subsets=1,
        seed=3,
        lr=1e-2,
        batch_size=32,
        epochs=4,
        tags={"table": "table1"},
        config={"k": 2, "lambda": 1e-3, "dataset": {"name": "cub"}},
        code=CodeFacts(version="0.1.0", commit=None, uncommitted_changes=None),
        multirun=None,
        metrics={"test_acc": 0.5, "test_acc_best": 0.75, "test_acc_best_epoch": 2, "test_ema_acc": 0.625},
        params=Params(trainable=10, total=1000, pct=1.0),
        timings=Timings(
            train_s=12.5,
            train_s_this_launch=2.5,
            probe_s=0.25,
            steps_timed=40,
            peak_mem_mb=1024.0,
            peak_mem_kind="ru_maxrss",
        ),
        device="cpu",
        memory_trace="memory.csv",
        adapter_file="adapter.safetensors",
        adapter_files={"raw": "adapter.safetensors", "ema": "adapter_ema.safetensors"},
        selection_file="selection.safetensors",
        evaluation=Evaluation(
            protocol="reference",
            test_every=1,
            final_epoch=3,
            ema=True,
            reported=Reported(statistic="best", model="raw", key="test_acc_best", description="best"),
            curve=[{"epoch": e, "test_acc": 0.25 * e} for e in range(4)],
        ),
        resumed=True,
        launches=[
            Launch(started_at="2026-01-01T00:00:00", resumed=False, train_s=10.0, steps=30, outcome="killed"),
            Launch(
                started_at="2026-01-01T01:00:00",
                resumed=True,
                train_s=2.5,
                steps=10,
                outcome="trained",
                ended_at="2026-01-01T01:00:03",
            ),
        ],
        started_at="2026-01-01T01:00:00",
        finished_at="2026-01-01T01:00:04",
    )


def test_a_record_round_trips_through_its_file(tmp_path):
    record = full_record()
    path = write_record(tmp_path, record)
    assert path == tmp_path / RECORD_NAME and record.run_dir == tmp_path
    on_disk = json.loads(path.read_text())
    assert on_disk == record.to_json() and on_disk["schema"] == SCHEMA_VERSION
    assert on_disk["lambda"] == 1e-3  # JSON keys as before
    assert "run_dir" not in on_disk and "lambda_" not in on_disk and "error" not in on_disk  # None: not written
    assert on_disk["multirun"] is None  # the run's identity keys are written even when null
    again = read_record(tmp_path)
    assert again == record and again.run_dir == tmp_path
    assert isinstance(again.launches[1], Launch) and again.evaluation.reported.key == "test_acc_best"
    assert is_done(tmp_path) and status_of(again) == "done" and status_of(None) == "missing"
    # What a table reads from it: the protocol's statistic (best epoch, raw model), and in words.
    assert again.metric_key("test_acc") == "test_acc_best" and again.reported("test_acc") == 0.75
    assert again.statistic == "best"


def test_a_record_written_by_the_untyped_runner_reads_and_writes_back_the_same():
    data = json.loads(SCHEMA1.read_text())
    record = RunRecord.from_json(data, SCHEMA1)
    assert (record.task, record.method, record.seed, record.k, record.lambda_) == ("digits", "grft", 0, 4, 0.001)
    assert record.state == "done" and record.reported("test_acc") == pytest.approx(0.7974137663841248)
    assert record.params == Params(trainable=7317, total=135813, pct=pytest.approx(5.3875549468754835))
    assert record.launches == [
        Launch(
            started_at="2026-11-30T20:08:34",
            resumed=False,
            train_s=16.195,
            steps=360,
            outcome="trained",
            ended_at="2026-11-30T20:08:50",
        )
    ]
    assert record.timings.train_s == 16.195 and record.code.version == "0.1.0"
    assert record.evaluation.reported.statistic == "final" and record.config["dataset"]["name"] == "digits"
    assert record.to_json() == data  # nothing lost, nothing renamed


def test_older_records_without_status_evaluation_or_launches_read_with_the_meanings_they_had(tmp_path):
    """The earliest schema-1 records had no status (done flag only), no evaluation block, no launches, no code."""
    old = {
        "schema": 1,
        "task": "digits",
        "method": "linear",
        "done": False,
        "seed": 0,
        "selection": None,
        "config": {},
        "metrics": {"test_acc": 0.5},
    }
    record = RunRecord.from_json(old)
    assert record.state == "unfinished" and record.status is None and record.launches is None
    assert record.metric_key("test_acc") == "test_acc" and record.statistic.startswith("final test accuracy")
    done = RunRecord.from_json({**old, "done": True})
    assert done.state == "done" and done.reported("test_acc") == 0.5 and done.reported("test_f1") is None
    failed = RunRecord.from_json({**old, "status": "failed", "error": "FileNotFoundError: cub: data missing"})
    assert failed.state == "failed" and failed.error.startswith("FileNotFoundError")


def write_raw(folder: Path, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RECORD_NAME
    path.write_text(json.dumps(data))
    return path


def test_an_unknown_schema_version_is_one_line_naming_the_file_the_version_and_the_fix(tmp_path):
    data = {
        **full_record().to_json(),
        "schema": 99,
        "code": {"version": "0.3.0", "commit": None, "uncommitted_changes": None},
    }
    path = write_raw(tmp_path / "run", data)
    with pytest.raises(UnknownSchema) as err:
        read_record(path.parent)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "schema 99" in message and "reads schema 1, 2" in message
    assert "version that wrote it (version 0.3.0)" in message and "force=true" in message
    assert isinstance(err.value, CorruptRecord)  # what every reader already handles: sweeps stop, tables name it
    with pytest.raises(UnknownSchema, match="has no schema version"):
        RunRecord.from_json({k: v for k, v in data.items() if k != "schema"}, path)


def test_a_key_the_layout_lacks_or_a_value_of_the_wrong_type_names_itself(tmp_path):
    good = full_record().to_json()
    cases = [
        ({**good, "accuracy": 0.9}, "unknown key accuracy"),
        ({**good, "timings": {**good["timings"], "gpu_s": 1.0}}, "unknown key timings.gpu_s"),
        ({**good, "seed": "3"}, "seed is '3', not int"),
        ({**good, "done": 1}, "done is 1, not bool"),
        ({**good, "params": {"trainable": 1, "total": 2}}, "params.pct is missing"),
        ({**good, "metrics": {"test_acc": "high"}}, "metrics.test_acc is 'high', not float"),
        ({**good, "launches": [{**good["launches"][0], "steps": 1.5}]}, r"launches\[0\].steps is 1.5, not int"),
        ({k: v for k, v in good.items() if k != "task"}, "task is missing"),
    ]
    for data, detail in cases:
        with pytest.raises(CorruptRecord, match=detail) as err:
            RunRecord.from_json(data, "some/record.json")
        assert str(err.value).startswith("some/record.json is not a valid run record of schema 2")
        assert "version 0.1.0" in str(err.value) and "force=true" in str(err.value) and "\n" not in str(err.value)


def test_a_record_that_could_not_be_read_back_is_refused_before_it_is_written(tmp_path):
    record = full_record()
    record.seed = "abc"  # e.g. a bad value from the command line
    with pytest.raises(CorruptRecord, match="seed is 'abc'"):
        write_record(tmp_path, record)
    assert not (tmp_path / RECORD_NAME).exists()


def test_readers_of_many_records_name_an_unreadable_one_and_go_on(tmp_path):
    from experiments.paper.matching import RecordIndex

    write_record(tmp_path / "a", full_record())
    newer = write_raw(tmp_path / "b", {**full_record().to_json(), "schema": 9})
    problems = []
    assert [r.run_dir for r in iter_records(tmp_path, on_corrupt=lambda e: problems.append(str(e)))] == [tmp_path / "a"]
    assert len(problems) == 1 and str(newer) in problems[0]
    with pytest.raises(UnknownSchema):
        list(iter_records(tmp_path))  # without a handler: the error itself
    index = RecordIndex.load(tmp_path)
    assert [r.run_dir for r, _ in index.candidates("cub", "grft")] == [tmp_path / "a"]
    assert "schema 9" in index.corrupt[0]
