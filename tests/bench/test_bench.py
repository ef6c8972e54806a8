"""The benchmark measures what it claims: checked on toy models against arithmetic.

- A worker process (tiny ViT) for grft_row and lora gives a CSV row with every column the benchmark
  asks for; GRFT's Adam state is exactly 2 moments x 4 bytes x trainable parameters; its adapter
  is a small fraction of a full fp32 checkpoint (4 bytes x parameters).
- GPS: the masks keep exactly k entries per row, and the masked-out entries of every weight are
  bit-identical after several Adam steps while kept entries move.
- Every arm but the floor is the app's method, built by the app's factory; the LoRA arm is the
  app's LoRA with the recipe of the paper's table for each model (what ``python run.py method=lora
  recipe=...`` composes), and its trainable count is the hand count for that rank and those targets.
- The targets report says met/missed from the ratios, as hand arithmetic says it should.
- Bad input gets an error that names the fix.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from experiments.bench import arms, driver, interleave, launch, report, targets, worker
from experiments.bench.models import build_llama, build_vit, call
from experiments.bench.names import DEFAULT_ARMS
from grft_app.methods.gps import model_masks
from grft_app.paths import ROOT

REQUIRED = (
    "model",
    "method",
    "step_time_s",
    "peak_mem_mb",
    "trainable_params",
    "optimizer_state_mb",
    "adapter_mb",
    "probe_s",
    "device",
)


def run_worker(method: str, *extra: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "experiments.bench.worker",
        "--model",
        "vit",
        "--method",
        method,
        "--tiny",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--threads",
        "1",
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=launch.worker_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def records():
    return {m: run_worker(m) for m in ("grft_row", "lora")}


@pytest.mark.process
def test_worker_rows_have_every_required_column(records):
    table = driver.aggregate(list(records.values()))
    assert set(REQUIRED) <= set(table.columns)
    assert list(table["method"]) == ["grft_row", "lora"]
    for column in REQUIRED:
        assert table[column].notna().all(), column
    assert (table["step_time_s"] > 0).all() and (table["peak_mem_mb"] > 0).all()
    assert table["device"].str.startswith("cpu: ").all()
    assert records["grft_row"]["probe_s"] > 0 and records["lora"]["probe_s"] == 0


@pytest.mark.process
def test_whole_run_peak_is_the_largest_phase_peak(records):
    for rec in records.values():
        phases = (rec["build_peak_mb"], rec["prepare_peak_mb"], rec["peak_mem_mb"])
        assert rec["whole_run_peak_mb"] == max(phases) and min(phases) > 0
    grft_row = records["grft_row"]
    # --probe-batches 2 (default); the memory plan, made once per run, is not a batch's time
    assert grft_row["probe_batch_s"] == pytest.approx((grft_row["probe_s"] - grft_row["probe_plan_s"]) / 2)
    assert 0 < grft_row["probe_plan_s"] < grft_row["probe_s"] and grft_row["probe_passes"] >= 1
    assert records["lora"]["probe_batch_s"] is None


@pytest.mark.process
def test_grft_adam_state_is_two_fp32_moments_per_trainable_parameter(records):
    rec = records["grft_row"]
    assert rec["optimizer_state_bytes"] == 2 * 4 * rec["trainable_params"]
    assert rec["optimizer_state_mb"] == pytest.approx(rec["optimizer_state_bytes"] / 2**20)


@pytest.mark.process
def test_grft_trainable_count_matches_hand_count(records):
    # tiny ViT: embed 64, 2 blocks, MLP 256, patch 8x8x3, 10 classes; rows, k=2.
    k, d, mlp, patch = 2, 64, 256, 3 * 8 * 8
    slices = k * patch + 2 * k * (d + d + d + mlp)  # patch_embed, then qkv, proj, fc1, fc2 per block
    biases = d + 2 * (3 * d + d + mlp + d)
    head = 10 * d + 10
    assert records["grft_row"]["trainable_params"] == slices + biases + head


@pytest.mark.process
def test_grft_adapter_is_far_below_a_full_checkpoint(records):
    rec = records["grft_row"]
    full_checkpoint = 4 * rec["total_params"]  # fp32, before any file header
    assert rec["adapter_bytes"] < 0.1 * full_checkpoint
    # and it holds at least the trained values themselves
    assert rec["adapter_bytes"] >= 4 * rec["trainable_params"]


def test_gps_masks_keep_k_per_row_and_frozen_entries_never_move():
    torch.manual_seed(0)
    work = build_vit(batch=8, tiny=True, probe_batches=2)
    k = 2
    trainable = arms.prepare("gps", work, k)
    masks = model_masks(trainable.model)
    for name, mask in masks.items():
        rows = mask.reshape(mask.shape[0], -1)
        assert torch.equal(rows.sum(dim=1), torch.full((rows.shape[0],), k)), name
    weights = {n: work.model.get_submodule(n).weight for n in masks}
    before = {n: w.detach().clone() for n, w in weights.items()}
    optimizer = torch.optim.Adam(trainable.params, lr=1e-2, weight_decay=0.0)
    autocast = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731
    for _ in range(3):
        worker.train_step(trainable, optimizer, work.inputs, work.labels, autocast)
    moved = 0
    for name, w in weights.items():
        frozen = ~masks[name]
        assert torch.equal(w.detach()[frozen], before[name][frozen]), f"{name}: a masked-out entry changed"
        moved += int((w.detach()[~frozen] != before[name][~frozen]).sum())
    assert moved > 0, "no kept entry moved: GPS did not train"


@pytest.mark.parametrize("model, recipe", [("vit", "lora_vtab"), ("llama", "lora_glue")])
def test_lora_arm_settings_are_what_the_app_composes_for_the_tables_recipe(model, recipe):
    from hydra import compose, initialize_config_dir

    from grft_app.run.settings import method_settings

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["method=lora", f"recipe={recipe}"])
    app = method_settings(cfg)
    bench = arms.arm_settings("lora", model, k=2)
    assert (bench.name, bench.options) == (app.name, app.options)
    assert app.options["r"] == 16 and float(app.options["alpha"]) == 16.0  # the recipes' rank and scale


def test_every_arm_but_the_floor_is_the_apps_method():
    from grft_app.methods import method_class

    app_methods = {"full": "full", "gps": "gps", "lora": "lora", "grft_row": "grft", "grft_column": "grft"}
    assert set(app_methods) | {"linear", "floor"} == set(DEFAULT_ARMS)
    for arm, name in (app_methods | {"linear": "linear"}).items():
        trainable = arms.prepare(arm, build_vit(batch=4, tiny=True, probe_batches=1), k=1)
        assert type(trainable.method) is method_class(name), arm
    trainable = arms.prepare("grft_column", build_vit(batch=4, tiny=True, probe_batches=1), k=1)
    assert trainable.method.settings.grft.selection == "column" and trainable.probe_s > 0
    assert arms.prepare("floor", build_vit(batch=4, tiny=True, probe_batches=1), k=1).method is None


def test_arms_are_the_apps_config_overrides_and_facts_come_from_the_methods_class():
    from grft_app.methods.bias import BiasMethod

    settings = arms.arm_settings("grft_column", "vit", k=3)  # the bench's pull: squared L2, lambda 1e-3, 2 blocks
    grft = settings.grft
    assert (grft.k, grft.selection, grft.norm, grft.lam, grft.regular_layers) == (3, "column", "l2", 1e-3, 2)
    assert arms.arm_overrides("lora", "llama", k=2)[:2] == ["method=lora", "recipe=lora_glue"]
    # A method of conf/method outside the default comparison is an arm with no edit in the benchmark.
    trainable = arms.prepare("bias", build_vit(batch=4, tiny=True, probe_batches=1), k=1)
    assert type(trainable.method) is BiasMethod
    assert {n for n, p in trainable.model.named_parameters() if p.requires_grad} == {
        n for n, _ in trainable.model.named_parameters() if n.endswith(".bias") or n.startswith("head.")
    }
    probing = {"full": False, "gps": True, "lora": False, "grft_row": True, "linear": False, "floor": False}
    assert {arm: arms.probes(arm) for arm in probing} == probing
    assert {arm: arms.reads_k(arm) for arm in probing} == probing  # GRFT and GPS read k; they alone probe
    with pytest.raises(ValueError, match="method lora reads no selection"):
        arms.prepare("lora_row", build_vit(batch=4, tiny=True, probe_batches=1), k=1)


def test_worker_row_reads_the_committed_results_and_refuses_an_unknown_column():
    from experiments.bench.row import WorkerRow
    from grft_app.strict_json import Mismatch

    lines = (ROOT / "results" / "bench" / "latest_runs.jsonl").read_text().splitlines()
    rows = [WorkerRow.from_line(line) for line in lines if '"step_time_s"' in line]
    assert rows and {r.method for r in rows} == set(DEFAULT_ARMS)
    committed = json.loads(next(line for line in lines if '"step_time_s"' in line))
    written = json.loads(rows[0].to_line())
    assert {k: written[k] for k in committed} == committed  # columns added since are None where the row lacks them
    assert all(written[k] is None for k in written.keys() - committed.keys())
    data = json.loads(rows[0].to_line())
    with pytest.raises(Mismatch, match="peak_gb"):
        WorkerRow.read({**data, "peak_gb": 1.0})
    with pytest.raises(Mismatch, match="trainable_params"):
        WorkerRow.read({**data, "trainable_params": "many"})


def test_lora_arm_trains_rank_16_on_the_recipes_targets_by_hand_count(tmp_path):
    from grft_app.methods.lora import load_lora

    # tiny ViT: width 64, 2 blocks, fused qkv 64 -> 192, 10 classes; r=16 on qkv, plus the head.
    vit = arms.prepare("lora", build_vit(batch=4, tiny=True, probe_batches=1), k=2)
    assert vit.moving == 2 * 16 * (64 + 192) + (10 * 64 + 10)
    assert sum(p.numel() for p in vit.params) == vit.moving
    scalings = [m.scaling["default"] for n, m in vit.model.named_modules() if n.endswith(".qkv")]
    assert scalings == [1.0, 1.0]  # alpha / r = 16 / 16
    # tiny Llama: width 32, 2 layers, 4 heads of 8, 2 KV heads (k, v: 32 -> 16); q, k, v at r=16; head 2 x 32.
    work = build_llama(batch=4, tiny=True, probe_batches=1, layers=2, seq_len=8)
    llama = arms.prepare("lora", work, k=2)
    assert llama.moving == 2 * 16 * ((32 + 32) + 2 * (32 + 16)) + 2 * 32
    # The arm's adapter file is the app's: loading it into a fresh model gives the trained model's outputs.
    optimizer = torch.optim.Adam(llama.params, lr=1e-2)
    worker.train_step(llama, optimizer, work.inputs, work.labels, lambda: torch.autocast("cpu", enabled=False))
    path = llama.save(tmp_path)
    fresh = load_lora(build_llama(batch=4, tiny=True, probe_batches=1, layers=2, seq_len=8).model, path)
    with torch.no_grad():
        assert torch.allclose(call(fresh, work.inputs), call(llama.model, work.inputs), atol=1e-6)


def test_llama_floor_adds_a_zero_bias_that_changes_nothing_but_trains():
    work = build_llama(batch=4, tiny=True, probe_batches=1, layers=2, seq_len=8)
    with torch.no_grad():
        before = call(work.model, work.inputs).clone()
    trainable = arms.prepare("floor", work, k=2)
    names = {n for n, p in work.model.named_parameters() if p.requires_grad}
    assert names == {"score.weight", "model.layers.0.self_attn.q_proj.bias"}
    with torch.no_grad():
        assert torch.equal(call(trainable.model, work.inputs), before)
    optimizer = torch.optim.Adam(trainable.params, lr=1e-2)
    worker.train_step(trainable, optimizer, work.inputs, work.labels, lambda: torch.autocast("cpu", enabled=False))
    assert work.model.get_submodule("model.layers.0.self_attn.q_proj").bias.abs().sum() > 0


def test_interleaved_timing_gives_every_method_its_rounds(capsys):
    assert (
        interleave.main(
            ["--model", "vit", "--tiny", "--methods", "lora,grft_row,floor", "--rounds", "3", "--threads", "1"]
        )
        == 0
    )
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(record["methods"]) == {"lora", "grft_row", "floor"} and record["rounds"] == 3
    for times in record["methods"].values():
        assert len(times["step_times"]) == 3 and min(times["step_times"]) > 0
    rows = [{"model": "vit", "method": m, "step_times": [1.0, 2.0, 3.0], "peak_mem_mb": 1.0} for m in ("lora", "floor")]
    table = driver.aggregate(rows, [record]).set_index("method")
    assert table.at["lora", "step_time_s"] == 2.0
    want = sorted(record["methods"]["lora"]["step_times"])[1]  # the median of three
    assert table.at["lora", "step_time_interleaved_s"] == want


def test_cpu_peak_reset_forgets_setup_and_sees_new_peaks():
    from experiments.bench.memory import Memory

    memory = Memory(torch.device("cpu"))
    block = torch.ones(400 * 2**20 // 4)  # 400 MiB, touched
    high = memory.peak_mb()
    del block
    if not memory.reset():
        pytest.skip("this platform cannot reset the resident high-water mark")
    after_reset = memory.peak_mb()
    assert after_reset < high - 300
    block = torch.ones(200 * 2**20 // 4)
    assert memory.peak_mb() > after_reset + 150
    assert memory.current_mb() > 150
    del block


def _table(rows):
    base = {
        "device": "cpu: test",
        "workload": "w",
        "step_time_p25": 1.0,
        "step_time_p75": 1.0,
        "step_cpu_s": 1.0,
        "live_peak_mb": 1.0,
        "trainable_params": 1,
        "optimizer_state_mb": 0.0,
        "probe_s": 0.0,
    }
    return pd.DataFrame(
        [
            {**base, "model": "vit", "method": m, "step_time_s": t, "peak_mem_mb": p, "adapter_mb": a}
            for m, t, p, a in rows
        ]
    )


def test_targets_follow_hand_computed_ratios():
    table = _table(
        [
            ("full", 7.0, 3300.0, 330.0),
            ("gps", 7.2, 3200.0, 50.0),  # 3200/3300 < 1: the GPS >= full target is missed
            ("lora", 4.0, 2400.0, 1.5),
            ("grft_row", 4.0, 2400.0, 1.0),  # 4.0/4.0 = 1 <= 1 (met); 2400/2400 = 1 (met)
            ("grft_column", 4.3, 2300.0, 1.7),  # 4.3/4.0 > 1 (missed); 2300/2400 = 0.958 > 0.95 (missed)
            ("floor", 4.2, 2100.0, 0.3),
        ]
    )
    result = targets.evaluate(table, "cpu").set_index("target")
    status = result["status"].to_dict()
    assert status["grft_row step_time_s <= 1 x lora"] == "met"
    assert status["grft_column step_time_s <= 1 x lora"] == "MISSED"
    assert status["grft_row step_time_s <= 1.05 x floor"] == "met"  # 4.0/4.2
    assert status["grft_column step_time_s <= 1.05 x floor"] == "met"  # 4.3/4.2 = 1.024
    assert status["grft_row peak_mem_mb <= 1 x lora"] == "met"
    assert status["grft_column peak_mem_mb <= 0.95 x lora"] == "MISSED"
    assert status["grft_column peak_mem_mb <= 1.1 x floor"] == "met"  # 2300/2100 = 1.095
    assert status["gps peak_mem_mb >= 1 x full"] == "MISSED"
    assert status["grft_row adapter_mb <= 0.005 x full"] == "met"  # 1/330 = 0.003
    assert status["grft_column adapter_mb <= 0.005 x full"] == "MISSED"  # 1.7/330 = 0.0052
    assert result.loc["grft_column peak_mem_mb <= 0.95 x lora", "ratio"] == pytest.approx(2300 / 2400)
    assert not any("cuda" in t for t in status)  # GPU goals only for a GPU run
    text = report.markdown(table, {"command": "test"})
    assert "| vit     | grft_column peak_mem_mb <= 0.95 x lora" in text
    assert f"{sum(s == 'met' for s in status.values())} of {len(status)} met." in text


def test_step_targets_use_side_by_side_times_when_both_methods_have_them():
    table = _table([("lora", 4.0, 2400.0, 1.5), ("grft_row", 4.4, 2300.0, 1.0), ("floor", 4.1, 2200.0, 0.3)])
    table["step_time_interleaved_s"] = [4.2, 4.1, float("nan")]
    result = targets.evaluate(table, "cpu").set_index("target")
    row = result.loc["grft_row step_time_s <= 1 x lora"]
    assert row["measured"] == "step_time_interleaved_s" and row["status"] == "met"  # 4.1/4.2, not 4.4/4.0
    row = result.loc["grft_row step_time_s <= 1.05 x floor"]  # floor was not interleaved: per process
    assert row["measured"] == "step_time_s" and row["ratio"] == pytest.approx(4.4 / 4.1)


def test_cpu_training_memory_targets_judge_the_vit_only_and_the_whole_run_every_model():
    rows = [
        ("full", 7.0, 3300.0, 330.0),
        ("gps", 7.2, 3200.0, 50.0),
        ("lora", 4.0, 2400.0, 1.5),
        ("grft_row", 4.0, 2400.0, 1.0),
        ("grft_column", 4.0, 2390.0, 1.0),
        ("floor", 4.0, 2380.0, 0.3),
    ]
    table = pd.concat([_table(rows), _table(rows).assign(model="llama")])
    result = targets.evaluate(table, "cpu")
    llama = set(result[result["model"] == "llama"]["target"])
    vit = set(result[result["model"] == "vit"]["target"])
    training = {t for t in vit if t.split()[1] == "peak_mem_mb"}
    assert len(training) == 4 and not training & llama  # the CPU Llama is 98% weights: not judged
    whole_run = {t for t in vit if t.split()[1] in ("whole_run_peak_mb", "prepare_peak_mb")}
    assert len(whole_run) == 4 and whole_run <= llama  # the probe's passes keep every model's run within
    assert "grft_row step_time_s <= 1 x lora" in llama and "grft_row adapter_mb <= 0.005 x full" in llama
    assert "grft_column probe_share_110 <= 0.1" in llama and "grft_row probe_share_110 <= 0.1" in vit


def test_the_probes_time_in_epochs_and_in_the_papers_110_epochs_is_hand_arithmetic():
    rows = [
        {
            "model": "llama",
            "method": "grft_row",
            "step_times": [2.0, 4.0, 3.0],
            "probe_batch_s": 6.0,
            "peak_mem_mb": 1.0,
        },
        {"model": "llama", "method": "lora", "step_times": [2.0], "peak_mem_mb": 1.0},
    ]
    table = driver.aggregate(rows).set_index("method")
    assert table.at["grft_row", "probe_epochs"] == pytest.approx(6.0 / 3.0)  # over the median step
    assert table.at["grft_row", "probe_share_110"] == pytest.approx(2.0 / 110)
    assert pd.isna(table.at["lora", "probe_epochs"])
    result = targets.evaluate(table.reset_index(), "cpu").set_index("target")
    assert result.loc["grft_row probe_share_110 <= 0.1", "status"] == "met"


def test_whole_run_and_probe_targets_follow_hand_computed_ratios():
    table = _table(
        [
            ("full", 7.0, 3300.0, 330.0),
            ("lora", 4.0, 2400.0, 1.5),
            ("grft_row", 4.0, 2000.0, 1.0),
            ("grft_column", 4.0, 2000.0, 1.0),
        ]
    )
    table["whole_run_peak_mb"] = [3400.0, 2450.0, 2300.0, 2500.0]  # lora's build peak tops its training
    table["prepare_peak_mb"] = [1300.0, 1300.0, 1900.0, 2500.0]  # grft_column's probe tops its training
    table["probe_batch_x_full_step"] = [float("nan"), float("nan"), 2.6, float("nan")]
    table["probe_batch_x_full_step_p25"] = [float("nan"), float("nan"), 2.4, float("nan")]
    table["probe_batch_x_full_step_p75"] = [float("nan"), float("nan"), 2.7, float("nan")]
    result = targets.evaluate(table, "cpu").set_index("target")
    row = result.loc["grft_row whole_run_peak_mb <= 1 x lora"]
    assert row["status"] == "met" and row["ratio"] == pytest.approx(2300 / 2450)
    assert result.loc["grft_column whole_run_peak_mb <= 1 x lora", "status"] == "MISSED"  # 2500/2450
    row = result.loc["grft_row prepare_peak_mb <= 1 x grft_row peak_mem_mb"]
    assert row["status"] == "met" and row["ratio"] == pytest.approx(1900 / 2000)
    assert result.loc["grft_column prepare_peak_mb <= 1 x grft_column peak_mem_mb", "status"] == "MISSED"
    row = result.loc["grft_row probe_batch_x_full_step <= 2.5"]
    assert (
        row["status"] == "MISSED" and row["ratio"] == pytest.approx(2.6) and row["per-round p25–p75"] == "2.400–2.700"
    )
    text = report.markdown(table, {"command": "test"})
    assert "whole-run peak MB" in text and "| grft_row    |" in text


def test_probe_time_alternates_probe_batches_and_full_steps(capsys):
    from experiments.bench import probe_time

    assert probe_time.main(["--model", "vit", "--tiny", "--rounds", "2", "--warmup", "0", "--threads", "1"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(record["probe_batch_times"]) == 2 and len(record["full_step_times"]) == 2
    assert min(record["probe_batch_times"] + record["full_step_times"]) > 0
    rows = [{"model": "vit", "method": m, "step_times": [1.0], "peak_mem_mb": 1.0} for m in ("full", "grft_row")]
    record.update(probe_batch_times=[3.0, 5.0], full_step_times=[2.0, 2.0])  # hand-made: ratios 1.5 and 2.5
    table = driver.aggregate(rows, [], [record]).set_index("method")
    assert table.at["grft_row", "probe_batch_x_full_step"] == pytest.approx(4.0 / 2.0)  # median over median
    assert table.at["grft_row", "probe_batch_x_full_step_p25"] == pytest.approx(1.75)
    assert pd.isna(table.at["full", "probe_batch_x_full_step"])


def test_targets_without_a_method_are_not_measured():
    table = _table([("grft_row", 4.0, 2400.0, 1.0), ("lora", 4.2, 2500.0, 1.5)])
    result = targets.evaluate(table, "cpu").set_index("target")["status"]
    assert result["grft_row step_time_s <= 1 x lora"] == "met"
    assert result["grft_row step_time_s <= 1.05 x floor"] == "not measured"


def test_unknown_method_is_rejected_with_the_list(capsys):
    assert worker.main(["--model", "vit", "--method", "bitfit", "--tiny"]) == 2
    err = capsys.readouterr().err
    assert "bitfit" in err and "full, gps, lora, grft_row, grft_column, linear, floor" in err
    with pytest.raises(SystemExit):
        launch.parse(["--methods", "lora,bitfit"])
    assert "choose from full, gps, lora" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when no GPU is present")
def test_cuda_without_a_gpu_says_so(capsys):
    assert worker.main(["--model", "vit", "--method", "lora", "--tiny", "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.process
@pytest.mark.slow
def test_driver_writes_csv_markdown_chart_and_fig3(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "experiments.bench",
        "--tiny",
        "--models",
        "vit",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--fig3-steps",
        "2",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=launch.worker_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "latest.csv")
    assert set(REQUIRED) <= set(table.columns)
    assert sorted(table["method"]) == sorted(DEFAULT_ARMS)
    assert (tmp_path / "latest.png").stat().st_size > 0 and (tmp_path / "fig3_memory.png").stat().st_size > 0
    trace = pd.read_csv(tmp_path / "fig3_memory.csv")
    assert list(trace.columns)[:3] == ["method", "t_s", "memory_mb"] and set(trace["method"]) == {
        "grft_row",
        "gps",
        "lora",
    }
    assert "## Targets (cpu)" in (tmp_path / "latest.md").read_text()


def test_profile_table_lists_each_method_and_a_total(tmp_path, capsys):
    from experiments.bench import profile

    out = tmp_path / "profile.md"
    assert (
        profile.main(
            [
                "--model",
                "vit",
                "--tiny",
                "--methods",
                "floor,grft_column",
                "--rounds",
                "1",
                "--threads",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = out.read_text()
    assert "floor ms (calls)" in text and "grft_column ms (calls)" in text and "**all operators**" in text
    assert "_SlicedLinearFn" in text  # GRFT's own layer shows up, the floor has none


def bench_imports() -> dict[str, set[str]]:
    """Module -> the benchmark modules it imports (anywhere in the file, function bodies included)."""
    import ast

    folder = ROOT / "experiments" / "bench"
    names = {p.stem for p in folder.glob("*.py")}
    graph = {}
    for path in folder.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level == 1:
                    found |= {module} if module else {a.name for a in node.names}
                elif module.startswith("experiments.bench"):
                    rest = module.removeprefix("experiments.bench").lstrip(".")
                    found |= {rest.split(".")[0]} if rest else {a.name for a in node.names}
        graph[path.stem] = found & names - {path.stem}
    return graph


def test_bench_modules_import_each_other_without_a_cycle():
    graph = bench_imports()
    assert "memory_trace" in graph["driver"] and "driver" not in graph["memory_trace"]
    done, path = set(), []

    def visit(module: str) -> None:
        assert module not in path, f"import cycle: {' -> '.join(path[path.index(module) :] + [module])}"
        if module in done:
            return
        path.append(module)
        for other in sorted(graph[module]):
            visit(other)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
