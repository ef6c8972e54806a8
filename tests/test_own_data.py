"""Your own data: an ImageFolder tree (``dataset=images``) and text tables (``dataset=text``), trained on
with timm and transformers models; every bad input stopped before any model loads, in one line; the
run key following the files' contents; models training in training mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from grft_app.data import build_datasets, check_data_present, class_count
from grft_app.data.splits import InputSpec
from grft_app.lit import launch
from grft_app.lit.app import run_dir_of
from grft_app.lit.runner import run_task
from grft_app.lit.settings import run_key
from grft_app.paths import ROOT
from helpers.app_runs import make_cfg, run
from helpers.own_data import CLASSES, TEST_ROWS, TRAIN_ROWS, write_dataset_dir, write_image_folder, write_table

TIMM_VIT = ["model=timm", "model.name=vit_tiny_patch16_224"]
HF_BERT = ["model=hf", "model.model_type=bert"]


def images(root: Path, *extra: str) -> list[str]:
    return ["dataset=images", f"dataset.root={root}", *extra]


def texts(train: Path, test: Path | None = None, *extra: str) -> list[str]:
    return ["dataset=text", f"dataset.train={train}", *([f"dataset.test={test}"] if test else []), *extra]


def text_files(folder: Path, suffix: str = ".csv") -> tuple[Path, Path]:
    return write_table(folder / f"train{suffix}", TRAIN_ROWS), write_table(folder / f"test{suffix}", TEST_ROWS)


# --- training ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, model, method",
    [
        ("images", TIMM_VIT, ["selection=row"]),
        ("text", HF_BERT, ["selection=column"]),
        ("images", ["model=hf", "model.model_type=vit"], ["method=lora"]),
    ],
    ids=["images-timm-rows", "text-bert-columns", "images-hf-vit-lora"],
)
def test_own_data_trains_and_its_record_names_the_classes(tmp_path, data, model, method):
    if data == "images":
        written = write_image_folder(tmp_path / "pets")
        overrides = images(tmp_path / "pets")
    else:
        overrides = texts(*text_files(tmp_path / "reviews"))
    record, run_dir = run(tmp_path / "runs", *overrides, *model, *method)
    assert record.done and record.status == "done"
    if data == "images":
        assert record.class_names == sorted(CLASSES)
        listing = json.loads((run_dir / record.split_file).read_text())
        assert listing["train"] == sorted(written["train"]) and listing["test"] == sorted(written["test"])
    else:
        assert record.class_names == sorted({row[2] for row in TRAIN_ROWS})  # meh, neg, pos
    assert record.config["dataset"]["num_classes"] is None  # read from the data, not configured
    assert (run_dir / "adapter.safetensors").is_file()


def test_a_timm_model_on_the_default_digits_task_runs(tmp_path):
    """Grey 8x8 digits become three channels at the model's input size."""
    record, _ = run(tmp_path / "runs", *TIMM_VIT)
    assert record.done and record.task == "digits"


def test_a_transformers_model_trains_in_training_mode(tmp_path, monkeypatch):
    """from_pretrained returns eval mode; training must still use the dropout the config asks for."""
    from grft_app.lit.module import FineTuneModule
    from grft_app.models import hf
    from grft_app.models.llama import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = hf.tiny_model("bert", 3, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    assert model.config.hidden_dropout_prob > 0
    model.save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    modes = []
    original = FineTuneModule.training_step

    def spy(self, batch, batch_idx):
        modes.append([m.training for m in self.model.modules() if isinstance(m, torch.nn.Dropout)])
        return original(self, batch, batch_idx)

    monkeypatch.setattr(FineTuneModule, "training_step", spy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record, _ = run(
            tmp_path / "runs",
            *texts(*text_files(tmp_path / "reviews")),
            "model=hf",
            f"model.name={tmp_path / 'bert'}",
            "model.tiny=false",
        )
    assert record.done and modes and all(all(step) and step for step in modes)
    assert not [w for w in caught if "eval mode" in str(w.message)]


# --- reading -----------------------------------------------------------------------------------------


def read(cfg_overrides: list[str], tmp_path: Path, inputs: InputSpec | None = None):
    cfg = make_cfg(tmp_path / "runs", *cfg_overrides)
    check_data_present(cfg.dataset, cfg.data_dir)
    return cfg, build_datasets(cfg.dataset, cfg.data_dir, inputs or InputSpec(kind="text", tokenizer=object()))


def as_rows(items) -> list:
    return [(item["text"], item["text_pair"], label) for item, label in (items[i] for i in range(len(items)))]


def test_every_text_format_reads_alike(tmp_path):
    names = sorted({row[2] for row in TRAIN_ROWS})
    expected = {
        "train": [(t, p, names.index(label)) for t, p, label in TRAIN_ROWS],
        "test": [(t, p, names.index(label)) for t, p, label in TEST_ROWS],
    }
    for suffix in (".csv", ".tsv", ".jsonl", ".parquet"):
        train, test = text_files(tmp_path / suffix[1:], suffix)
        _, splits = read(texts(train, test), tmp_path)
        assert {"train": as_rows(splits.train), "test": as_rows(splits.test)} == expected, suffix
        assert splits.class_names == tuple(names) and splits.num_classes == 3
    # A datasets folder: its train and test splits; string labels sorted as in a file.
    folder = write_dataset_dir(tmp_path / "hf_strings", {"train": TRAIN_ROWS, "test": TEST_ROWS})
    _, splits = read(texts(folder), tmp_path)
    assert {"train": as_rows(splits.train), "test": as_rows(splits.test)} == expected
    # A ClassLabel keeps its own names and order (here pos, neg, meh).
    folder = write_dataset_dir(tmp_path / "hf_classes", {"train": TRAIN_ROWS, "test": TEST_ROWS}, class_label=True)
    _, splits = read(texts(folder), tmp_path)
    assert splits.class_names == ("pos", "neg", "meh")
    assert [label for _, _, label in as_rows(splits.train)] == [("pos", "neg", "meh").index(r[2]) for r in TRAIN_ROWS]


def test_text_columns_can_be_renamed(tmp_path):
    columns = ("review", "summary", "stars")
    train = write_table(
        tmp_path / "train.csv", [(t, p, {"neg": 1, "meh": 3, "pos": 5}[y]) for t, p, y in TRAIN_ROWS], columns
    )
    overrides = texts(
        train, None, "dataset.test_fraction=0.25", "dataset.columns.text=review", "dataset.columns.label=stars"
    )
    _, splits = read(overrides, tmp_path)
    assert splits.class_names == ("1", "3", "5")  # numbers sorted as numbers
    assert all(pair is None for _, pair, _ in as_rows(splits.train))  # text_pair not asked for: one segment
    rows = splits.split_listing["rows_of_training_file"]  # a quarter of each label held out as the test split
    assert sorted(TRAIN_ROWS[i][2] for i in rows["test"]) == ["meh", "neg", "pos"]
    assert sorted(rows["train"] + rows["test"]) == list(range(len(TRAIN_ROWS)))
    assert [TRAIN_ROWS[i][0] for i in rows["test"]] == [text for text, _, _ in as_rows(splits.test)]
    _, splits = read([*overrides, "dataset.columns.text_pair=summary"], tmp_path)
    assert all(pair is not None for _, pair, _ in as_rows(splits.train))


def test_every_image_mode_becomes_rgb(tmp_path):
    root = tmp_path / "modes"
    colours = {}
    for split in ("train", "test"):
        for name in ("grey", "rgba", "palette", "cmyk"):
            folder = root / split / name
            folder.mkdir(parents=True)
            if name == "grey":
                Image.new("L", (6, 5), 100).save(folder / "a.png")
                colours[name] = (100, 100, 100)
            elif name == "rgba":
                Image.new("RGBA", (6, 5), (10, 20, 30, 128)).save(folder / "a.png")
                colours[name] = (10, 20, 30)
            elif name == "palette":
                image = Image.new("P", (6, 5), 0)
                image.putpalette([50, 60, 70] + [0, 0, 0] * 255)
                image.save(folder / "a.png", transparency=1)  # a palette with a transparent entry
                colours[name] = (50, 60, 70)
            else:
                Image.new("CMYK", (6, 5), (255, 0, 0, 0)).save(folder / "a.tif")  # full cyan
                colours[name] = (0, 255, 255)
    inputs = InputSpec(kind="image", img_size=8, mean=(0.0,) * 3, std=(1.0,) * 3, interpolation="bilinear")
    _, splits = read(images(root, "dataset.transform.eval=resize"), tmp_path, inputs)
    assert splits.class_names == ("cmyk", "grey", "palette", "rgba")
    for i in range(len(splits.test)):
        tensor, label = splits.test[i]
        expected = torch.tensor(colours[splits.class_names[label]], dtype=torch.float32).view(3, 1, 1) / 255
        assert tensor.shape == (3, 8, 8)
        torch.testing.assert_close(tensor, expected.expand(3, 8, 8), atol=1 / 255, rtol=0)


def test_images_are_sized_and_normalised_as_the_timm_model_was_pretrained(tmp_path):
    import timm

    from grft_app.models.timm_classifier import input_spec

    model = timm.create_model("resnet50.a1_in1k", pretrained=False)
    pretrained = model.pretrained_cfg
    inputs = input_spec(model, {})
    assert (inputs.img_size, inputs.mean, inputs.std, inputs.interpolation, inputs.crop_pct) == (
        pretrained["input_size"][-1],
        tuple(pretrained["mean"]),
        tuple(pretrained["std"]),
        pretrained["interpolation"],
        pretrained["crop_pct"],
    )
    write_image_folder(tmp_path / "pets", {"train": 2, "test": 1})
    _, splits = read(images(tmp_path / "pets"), tmp_path, inputs)
    resize = splits.test.transform.transforms[0]  # resize the short side to img_size / crop_pct, then crop
    assert resize.size == int(inputs.img_size / pretrained["crop_pct"]) and splits.test[0][0].shape == (3, 224, 224)


def test_held_out_splits_are_stratified_seeded_and_disjoint(tmp_path):
    written = write_image_folder(tmp_path / "pets", {"train": 8})
    overrides = images(tmp_path / "pets", "dataset.test_fraction=0.25", "dataset.val_fraction=0.5")
    inputs = InputSpec(kind="image", img_size=8)
    _, first = read(overrides, tmp_path, inputs)
    _, again = read(overrides, tmp_path, inputs)
    _, reseeded = read([*overrides, "dataset.split_seed=1"], tmp_path, inputs)
    listing = first.split_listing
    assert listing == again.split_listing and listing["test"] != reseeded.split_listing["test"]
    assert sorted(listing["train"] + listing["val"] + listing["test"]) == sorted(written["train"])
    for split, per_class in (("test", 2), ("val", 3), ("train", 3)):  # 8 per class: 2 to test, half of 6 to val
        assert sorted(path.split(os.sep)[1] for path in listing[split]) == sorted(CLASSES * per_class), split
    assert listing["held_out_by"] == {"test": "dataset.test_fraction", "val": "dataset.val_fraction"}
    assert len(first.val) == 9 and len(first.test) == 6


def test_a_val_folder_or_file_is_the_validation_split(tmp_path):
    written = write_image_folder(tmp_path / "pets", {"train": 2, "val": 1, "test": 1})
    _, splits = read(images(tmp_path / "pets"), tmp_path, InputSpec(kind="image", img_size=8))
    assert splits.split_listing["val"] == sorted(written["val"]) and len(splits.val) == 3
    assert splits.val.transform is splits.test.transform  # evaluated as the test split is
    train, test = text_files(tmp_path / "reviews")
    val = write_table(tmp_path / "reviews" / "val.jsonl", TEST_ROWS[:3])
    _, splits = read(texts(train, test, f"dataset.val={val}"), tmp_path)
    assert [(t, p) for t, p, _ in as_rows(splits.val)] == [(t, p) for t, p, _ in TEST_ROWS[:3]]


# --- bad input ---------------------------------------------------------------------------------------


def empty_class(root: Path) -> list[str]:
    write_image_folder(root)
    for file in (root / "train" / "emu").iterdir():
        file.unlink()
    return images(root)


def corrupt_image(root: Path) -> list[str]:
    write_image_folder(root)
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"not an image")
    return images(root)


def truncated_image(root: Path) -> list[str]:
    write_image_folder(root)
    path = root / "test" / "cat" / "big.jpg"
    Image.effect_noise((64, 64), 50).convert("RGB").save(path)
    path.write_bytes(path.read_bytes()[:600])
    return images(root)


def unseen_test_class(root: Path) -> list[str]:
    write_image_folder(root)
    write_image_folder(root, {"test": 1}, classes=("yak",))
    return images(root)


def one_class(root: Path) -> list[str]:
    write_image_folder(root, classes=("cat",))
    return images(root)


def no_test(root: Path) -> list[str]:
    write_image_folder(root, {"train": 2})
    return images(root)


def wrong_class_count(root: Path) -> list[str]:
    write_image_folder(root)
    return images(root, "dataset.num_classes=5")


def missing_column(root: Path) -> list[str]:
    train = write_table(root / "train.csv", [(t, y) for t, _, y in TRAIN_ROWS], ("sentence", "label"))
    return texts(train, write_table(root / "test.csv", TEST_ROWS))


def unseen_test_label(root: Path) -> list[str]:
    train = write_table(root / "train.csv", TRAIN_ROWS)
    return texts(train, write_table(root / "test.csv", [*TEST_ROWS, ("so so", "hm", "mixed")]))


def one_label(root: Path) -> list[str]:
    train = write_table(root / "train.csv", [(t, p, "pos") for t, p, _ in TRAIN_ROWS])
    return texts(train, write_table(root / "test.csv", TEST_ROWS[:1]))


# name: (make the data -> overrides, extra overrides, what the one line must name)
BAD_INPUTS = {
    "no-root": (lambda root: ["dataset=images"], TIMM_VIT, ["dataset.root=DIR"]),
    "root-missing": (lambda root: images(root / "nowhere"), TIMM_VIT, ["nowhere", "is not a folder"]),
    "empty-class": (empty_class, TIMM_VIT, ["train/emu", "add images or remove the folder"]),
    "corrupt-image": (corrupt_image, TIMM_VIT, ["broken.jpg", "replace or remove the file"]),
    "truncated-image": (truncated_image, TIMM_VIT, ["big.jpg", "replace or remove the file"]),
    "unseen-test-class": (unseen_test_class, TIMM_VIT, ["test/yak", "add", "train/yak"]),
    "one-class": (one_class, TIMM_VIT, ["1 class folder", "at least two"]),
    "no-test": (no_test, TIMM_VIT, ["no test/ folder", "dataset.test_fraction"]),
    "wrong-class-count": (wrong_class_count, TIMM_VIT, ["dataset.num_classes=5", "3 class folders"]),
    "no-train-file": (lambda root: ["dataset=text"], HF_BERT, ["dataset.train=FILE"]),
    "train-file-missing": (lambda root: texts(root / "absent.csv"), HF_BERT, ["absent.csv", "does not exist"]),
    "unknown-format": (
        lambda root: texts(write_table(root / "t.csv", TRAIN_ROWS).rename(root / "t.xlsx")),
        HF_BERT,
        ["t.xlsx", ".parquet"],
    ),
    "missing-column": (missing_column, HF_BERT, ["train.csv", "no column 'text'", "dataset.columns.text="]),
    "unseen-test-label": (unseen_test_label, HF_BERT, ["test.csv", "row 5", "'mixed'", "add training rows"]),
    "one-label": (one_label, HF_BERT, ["train.csv", "1 distinct label", "at least two"]),
    "no-test-file": (lambda root: texts(write_table(root / "t.csv", TRAIN_ROWS)), HF_BERT, ["dataset.test_fraction"]),
    "image-model-on-text": (lambda root: texts(*text_files(root)), TIMM_VIT, ["holds texts", "vit_tiny_patch16_224"]),
    "text-model-on-images": (
        lambda root: images(write_image_folder(root) and root),
        HF_BERT,
        ["holds images", "reads texts", "model family hf"],
    ),
    "text-model-on-digits": (lambda root: [], HF_BERT, ["dataset digits holds images", "reads texts"]),
    "vit-only-baseline-on-bert": (
        lambda root: texts(*text_files(root)),
        [*HF_BERT, "method=ssf"],
        ["method ssf supports timm ViT models", "use lora, grft"],
    ),
    "vit-only-baseline-on-resnet": (
        lambda root: images(write_image_folder(root) and root),
        ["model=timm", "model.name=resnet18", "method=adapter"],
        ["method adapter supports timm ViT models", "resnet18"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_own_data_is_one_line_before_any_model_loads(tmp_path, monkeypatch, case):
    import grft_app.lit.runner as runner

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the data was checked")

    monkeypatch.setattr(runner, "base_of_run", no_model)
    make, model, named = BAD_INPUTS[case]
    (tmp_path / "data").mkdir()
    cfg = make_cfg(tmp_path / "runs", *make(tmp_path / "data"), *model)
    with pytest.raises(Exception) as caught:
        run_task(cfg, run_dir_of(cfg))
    err = caught.value
    line = launch.explain(err)
    assert launch.is_user_error(err), line
    assert "\n" not in str(err).strip() and all(part in line for part in named), line


def cli(runs: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GRFT_RUNS": str(runs), "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "run.py", "debug=smoke", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("case", ["empty-class", "image-model-on-text"])
def test_a_launch_on_bad_own_data_exits_with_one_line_and_leaves_no_run(tmp_path, case):
    make, model, named = BAD_INPUTS[case]
    (tmp_path / "data").mkdir()
    proc = cli(tmp_path / "runs", *make(tmp_path / "data"), *model)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and all(part in lines[-1] for part in named), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    runs = tmp_path / "runs"
    assert not runs.exists() or not [p for p in runs.rglob("*") if p.is_file()]


# --- the run key -------------------------------------------------------------------------------------


def key_of(tmp_path: Path, *overrides: str) -> str:
    return run_key(make_cfg(tmp_path / "runs", *overrides, *TIMM_VIT))


def touch_later(path: Path) -> None:
    """A later modification time, as an editor's save gives (a coarse file-system clock may not)."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_the_run_key_follows_every_image_file(tmp_path):
    root = tmp_path / "pets"
    written = write_image_folder(root)
    keys = [key_of(tmp_path, *images(root))]
    assert key_of(tmp_path, *images(root)) == keys[0]  # the same files: the same run
    extra = root / "train" / "cat" / "extra.png"
    Image.new("RGB", (5, 5), (1, 2, 3)).save(extra)
    keys.append(key_of(tmp_path, *images(root)))  # added
    extra.unlink()
    assert key_of(tmp_path, *images(root)) == keys[0]  # removed again: the first run
    (root / written["test"][0]).unlink()
    keys.append(key_of(tmp_path, *images(root)))  # removed
    edited = root / written["train"][0]
    edited.write_bytes(edited.read_bytes()[:-1] + b"\0")  # same size, other bytes
    touch_later(edited)
    keys.append(key_of(tmp_path, *images(root)))  # edited
    (root / "train" / "dog").rename(root / "train" / "hound")
    keys.append(key_of(tmp_path, *images(root)))  # a class renamed
    assert len(set(keys)) == len(keys), keys


def test_the_run_key_follows_the_text_files(tmp_path):
    train, test = text_files(tmp_path)
    first = key_of(tmp_path, *texts(train, test))
    train.write_text(train.read_text().replace("a warm", "A warm"))
    touch_later(train)
    edited = key_of(tmp_path, *texts(train, test))
    write_table(test, TEST_ROWS[:3])
    shorter = key_of(tmp_path, *texts(train, test))
    assert len({first, edited, shorter}) == 3


def test_class_count_is_read_from_the_data(tmp_path):
    write_image_folder(tmp_path / "pets", {"train": 2, "test": 1}, classes=("a", "b", "c", "d"))
    cfg = make_cfg(tmp_path / "runs", *images(tmp_path / "pets"))
    assert class_count(cfg.dataset, cfg.data_dir) == 4
