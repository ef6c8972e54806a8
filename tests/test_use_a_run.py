"""Using a finished run: ``predict`` and ``export`` rebuild it from its directory alone.

Tiny runs (``debug=smoke``, every test item evaluated) of a timm and a transformers model, rows
and columns, and a baseline (LoRA). The exported model is loaded by plain timm / transformers in
a fresh interpreter where grft cannot be imported (``helpers.fresh_load``); it must give the
logits of the model the run trained (rebuilt unmerged, with the method's own layers) and the
test accuracy its record holds. ``predict``'s answers on the test files must give that accuracy
too (the run's evaluation transform and tokenizer, the record's class names).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from grft_app import export as export_cli
from grft_app import predict as predict_cli
from grft_app.data import build_datasets
from grft_app.trained import load_run, logits_of
from helpers.app_runs import run
from helpers.fresh_load import load_in_fresh_interpreter
from helpers.miniature import write_glue, write_vtab
from helpers.own_data import CLASSES, TEST_ROWS, TRAIN_ROWS, write_image_folder, write_table

IMAGES = ["dataset=images", "model=timm", "model.name=vit_tiny_patch16_224"]
TEXT = ["dataset=text", "model=hf", "model.name=bert-base-uncased", "model.model_type=bert"]
RUNS = {
    "timm_rows": [*IMAGES, "selection=row"],
    "hf_columns": [*TEXT, "selection=column"],
    "timm_lora": [*IMAGES, "method=lora"],
}
SLOW_RUNS = {
    "timm_columns": [*IMAGES, "selection=column"],
    "timm_sparse": [*IMAGES, "selection=sparse"],
    "hf_rows": [*TEXT, "selection=row"],
    "hf_lora": [*TEXT, "method=lora"],
    "resnet_full": ["dataset=images", "model=timm", "model.name=resnet18", "method=full"],  # BatchNorm statistics
    "timm_ssf": [*IMAGES, "method=ssf"],
    "timm_gps": [*IMAGES, "method=gps", "lambda=0"],
    "timm_bias": [*IMAGES, "method=bias"],
    "hf_linear": [*TEXT, "method=linear"],
    "vtab_vit": ["dataset=eurosat", "model=timm", "model.name=vit_tiny_patch16_224"],  # a paper task's layout
    "glue_bert": ["dataset=rte", "model=hf", "model.name=bert-base-uncased", "model.model_type=bert"],
    "digits_vit": ["dataset=digits", "method=grft"],  # the embedded default's own small ViT (one channel)
}


def write_data(data: Path) -> None:
    write_image_folder(data / "images", {"train": 4, "test": 2})  # three classes, every image mode
    write_table(data / "text" / "train.csv", TRAIN_ROWS)
    write_table(data / "text" / "test.csv", TEST_ROWS)
    write_vtab(data, "eurosat", num_classes=10)
    write_glue(data, "rte", dev_rows=4)


def train(root: Path, overrides: list[str]):
    data = root / "data"
    if not data.is_dir():
        write_data(data)
    places = [f"dataset.root={data / 'images'}"] if "dataset=images" in overrides else []
    if "dataset=text" in overrides:
        places = [f"dataset.train={data / 'text' / 'train.csv'}", f"dataset.test={data / 'text' / 'test.csv'}"]
    # Every test item evaluated (debug=smoke alone tests two batches), lr high enough to move the head.
    return run(
        root / "runs", *overrides, *places, f"data_dir={data}", "k=1", "lr=0.05", "trainer.limit_test_batches=1.0"
    )


def whole_test_split(trained) -> tuple[object, torch.Tensor]:
    """The whole test split as one batch (inputs as the run evaluates them) and its labels."""
    splits = build_datasets(trained.cfg.dataset, trained.cfg.data_dir, trained.bundle.inputs)
    items = [splits.test[i] for i in range(len(splits.test))]
    if splits.collate_fn is not None:
        batch = splits.collate_fn(items)
        return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean())


def export_and_reload(root: Path, name: str, run_dir: Path) -> dict:
    """Export the run, load it in a fresh interpreter; what the test compares."""
    out = root / "exported" / name
    assert export_cli.main([str(run_dir), str(out)]) == 0
    merged = load_run(run_dir)
    as_trained = load_run(run_dir, merge=False)  # the method's own layers: what training ran
    inputs, labels = whole_test_split(merged)
    with torch.no_grad():
        merged_logits = logits_of(merged.model, inputs)
        trained_logits = logits_of(as_trained.model, inputs)
    tensors = {"x": inputs} if isinstance(inputs, torch.Tensor) else dict(inputs)
    save_file({k: v.contiguous() for k, v in tensors.items()}, root / f"{name}_inputs.safetensors")
    job = {
        "library": "timm" if "architecture" in json.loads((out / "config.json").read_text()) else "transformers",
        "folder": str(out),
        "inputs": str(root / f"{name}_inputs.safetensors"),
        "out": str(root / f"{name}_logits.safetensors"),
    }
    return {
        "job": job,
        "merged": merged,
        "merged_logits": merged_logits,
        "trained_logits": trained_logits,
        "labels": labels,
    }


def check_export(case: dict, names: list[str]) -> None:
    merged, record = case["merged"], case["merged"].record
    exported = load_file(case["job"]["out"])["logits"]
    torch.testing.assert_close(exported, case["merged_logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(case["merged_logits"], case["trained_logits"], rtol=1e-4, atol=1e-5)
    assert accuracy(exported, case["labels"]) == pytest.approx(record.metrics[merged.final_test_key], abs=1e-6)
    assert names == merged.class_names


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The default runs, trained, exported and loaded back in one fresh interpreter."""
    root = tmp_path_factory.mktemp("use_a_run")
    cases = {}
    for name, overrides in RUNS.items():
        _, run_dir = train(root, overrides)
        cases[name] = export_and_reload(root, name, run_dir)
    names = load_in_fresh_interpreter([case["job"] for case in cases.values()], cwd=root)
    return root, cases, dict(zip(cases, names, strict=True))


@pytest.mark.parametrize("name", list(RUNS))
def test_exported_model_gives_the_runs_logits_and_test_accuracy_without_grft(exported, name):
    _, cases, names = exported
    check_export(cases[name], names[name])


def test_exported_timm_model_carries_its_arguments_labels_and_preprocessing(exported):
    root, cases, _ = exported
    config = json.loads((Path(cases["timm_rows"]["job"]["folder"]) / "config.json").read_text())
    assert config["num_classes"] == 3 and config["label_names"] == list(CLASSES)
    assert config["model_args"]["img_size"] in (32, [32, 32]) and config["model_args"]["embed_dim"] == 32
    pretrained = config["pretrained_cfg"]
    assert pretrained["input_size"] == [3, 32, 32] and pretrained["mean"] == [0.5] * 3
    assert pretrained["crop_mode"] == "center" and pretrained["crop_pct"] == 0.9  # images: resize, centre crop


def test_exported_timm_preprocessing_is_the_runs_evaluation_transform(exported):
    """timm's own transform from the exported config (as the README loads it) feeds what the run tested on."""
    import timm

    from grft_app.data import eval_transform
    from grft_app.data.images import load_rgb

    root, cases, _ = exported
    merged = cases["timm_rows"]["merged"]
    model = timm.create_model(f"local-dir:{cases['timm_rows']['job']['folder']}", pretrained=True)
    theirs = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    ours = eval_transform(merged.cfg.dataset, merged.bundle.inputs)
    for path in sorted((root / "data" / "images" / "test").rglob("*.*")):
        image = load_rgb(path)
        torch.testing.assert_close(theirs(image), ours(image), rtol=0, atol=1e-6)


def test_exported_transformers_model_has_label_names_and_tokenizer(exported):
    _, cases, _ = exported
    folder = Path(cases["hf_columns"]["job"]["folder"])
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "meh", "1": "neg", "2": "pos"}  # sorted string labels
    assert config["label2id"] == {"meh": 0, "neg": 1, "pos": 2}
    assert (folder / "tokenizer.json").is_file() and (folder / "model.safetensors").is_file()


def test_predict_on_the_test_images_gives_the_recorded_accuracy(exported, capsys):
    root, cases, _ = exported
    merged = cases["timm_rows"]["merged"]
    folder = root / "data" / "images" / "test"  # images in every mode: RGB, L, RGBA, P, CMYK
    out = root / "timm_predictions.csv"
    assert predict_cli.main([str(merged.run_dir), str(folder), "--out", str(out)]) == 0
    rows = pd.read_csv(out)
    truth = [Path(p).parent.name for p in rows["input"]]  # .../test/<class>/<file>
    assert len(rows) == 6 and set(rows["class"]) <= set(CLASSES)
    assert [merged.class_names[i] for i in rows["class_index"]] == list(rows["class"])
    assert (rows["probability"] > 1 / 3 - 1e-6).all() and (rows["probability"] <= 1).all()  # the largest of three
    correct = sum(int(c == t) for c, t in zip(rows["class"], truth, strict=True)) / len(truth)
    assert correct == pytest.approx(merged.record.metrics[merged.final_test_key], abs=1e-6)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 7 and printed[-1] == f"wrote 6 predictions to {out}"


def test_predict_on_the_test_table_gives_the_recorded_accuracy(exported):
    root, cases, _ = exported
    merged = cases["hf_columns"]["merged"]
    table = root / "data" / "text" / "test.csv"  # text, text_pair (the run's columns), label
    out = root / "text_predictions.csv"
    assert predict_cli.main([str(merged.run_dir), str(table), "--out", str(out)]) == 0
    rows = pd.read_csv(out)
    assert list(rows["input"]) == [f"{table}:{n}" for n in range(2, 2 + len(TEST_ROWS))]
    assert list(rows["text"]) == [f"{t} | {p}" for t, p, _ in TEST_ROWS]  # both segments were read
    correct = sum(int(c == label) for c, (_, _, label) in zip(rows["class"], TEST_ROWS, strict=True)) / len(rows)
    assert correct == pytest.approx(merged.record.metrics[merged.final_test_key], abs=1e-6)


def test_predict_reads_text_lines_and_renamed_columns(exported, tmp_path):
    _, cases, _ = exported
    run_dir = str(cases["hf_columns"]["merged"].run_dir)
    lines = tmp_path / "reviews.txt"
    lines.write_text("great fun\n\nboring\n")
    out = tmp_path / "lines.csv"
    assert predict_cli.main([run_dir, str(lines), "--out", str(out)]) == 0
    assert list(pd.read_csv(out)["input"]) == [f"{lines}:1", f"{lines}:3"]
    table = tmp_path / "renamed.jsonl"
    write_table(table, TEST_ROWS[:2], columns=("review", "summary", "stars"))
    argv = [run_dir, str(table), "--text-column", "review", "--pair-column", "summary", "--out", str(out)]
    assert predict_cli.main(argv) == 0
    assert list(pd.read_csv(out)["text"]) == [f"{t} | {p}" for t, p, _ in TEST_ROWS[:2]]


# --- bad input: one line, status 2, nothing written --------------------------------------------------------
def one_line_error(capsys, code: int, *fragments: str) -> None:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err


def test_a_folder_that_is_not_a_finished_run_is_one_line(exported, tmp_path, capsys):
    _, cases, _ = exported
    run_dir = cases["timm_rows"]["merged"].run_dir
    image = next((run_dir.parents[3] / "data" / "images").rglob("*.jpg"))
    one_line_error(capsys, predict_cli.main([str(tmp_path / "nope"), str(image)]), "is not a directory")
    one_line_error(capsys, predict_cli.main([str(tmp_path), str(image)]), "has no record.json", "run directory")
    unfinished = tmp_path / "unfinished"
    (unfinished).mkdir()
    record = json.loads((run_dir / "record.json").read_text())
    (unfinished / "record.json").write_text(json.dumps({**record, "done": False, "status": "failed"}))
    one_line_error(capsys, predict_cli.main([str(unfinished), str(image)]), "has not finished (status: failed)")
    one_line_error(capsys, export_cli.main([str(unfinished), str(tmp_path / "out")]), "has not finished")
    assert not (tmp_path / "out").exists()


def test_inputs_that_do_not_suit_the_run_are_one_line(exported, tmp_path, capsys):
    _, cases, _ = exported
    image_run, text_run = (str(cases[n]["merged"].run_dir) for n in ("timm_rows", "hf_columns"))
    image = next(Path(cases["timm_rows"]["merged"].run_dir).parents[3].joinpath("data", "images").rglob("*.jpg"))
    text = tmp_path / "lines.txt"
    text.write_text("a sentence\n")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    table = tmp_path / "table.csv"
    table.write_text("sentence\nhello\n")
    out = tmp_path / "predictions.csv"
    cases_ = [
        (image_run, [str(text)], "is text, but this run's model takes images"),
        (text_run, [str(image)], "is an image, but this run's model takes text"),
        (image_run, [str(image), str(broken)], "cannot read"),
        (image_run, [str(tmp_path / "absent.jpg")], "does not exist"),
        (text_run, [str(table)], "has no column 'text'"),
        (text_run, [str(tmp_path)], "is a folder, but this run's model takes text"),
    ]
    for run_dir, inputs, message in cases_:
        one_line_error(capsys, predict_cli.main([run_dir, *inputs, "--out", str(out)]), message)
        assert not out.exists()


def test_export_never_writes_over_a_folder(exported, tmp_path, capsys):
    _, cases, _ = exported
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    code = export_cli.main([str(cases["timm_rows"]["merged"].run_dir), str(tmp_path / "taken")])
    one_line_error(capsys, code, "already exists")
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]


# --- broader: every other method, BatchNorm, columns on timm, rows on transformers ---------------------------
@pytest.mark.slow
def test_every_mergeable_method_exports_and_reloads_without_grft(tmp_path):
    cases = {}
    for name, overrides in SLOW_RUNS.items():
        _, run_dir = train(tmp_path, overrides)
        cases[name] = export_and_reload(tmp_path, name, run_dir)
    names = load_in_fresh_interpreter([case["job"] for case in cases.values()], cwd=tmp_path)
    for case, labels in zip(cases.values(), names, strict=True):
        check_export(case, labels)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["adapter", "vpt_deep"])
def test_a_method_that_cannot_merge_still_predicts_and_says_why_it_does_not_export(tmp_path, capsys, method):
    _, run_dir = train(tmp_path, [*IMAGES, f"method={method}"])
    trained = load_run(run_dir)
    assert not trained.merged and "no weight of the base model can hold" in trained.not_merged_because
    one_line_error(capsys, export_cli.main([str(run_dir), str(tmp_path / "out")]), "predict with the run itself")
    assert not (tmp_path / "out").exists()
    assert predict_cli.main([str(run_dir), str(tmp_path / "data" / "images" / "test")]) == 0


@pytest.mark.slow
def test_a_run_rebuilt_on_another_base_is_refused(tmp_path):
    """GRFT's adapter carries its base's fingerprint: a rebuilt base that is not the run's is an error."""
    import grft
    from grft.adapter import AdapterMismatch
    from grft_app.models import base_of_run

    _, run_dir = train(tmp_path, RUNS["timm_rows"])
    trained = load_run(run_dir)
    other = copy.deepcopy(trained.cfg)
    other.seed = int(other.seed) + 1  # another tiny random base
    bundle = base_of_run(other, len(trained.class_names))
    with pytest.raises(AdapterMismatch, match="another base model"):
        grft.load_adapter(bundle.model, trained.adapter, arch=bundle.arch)
