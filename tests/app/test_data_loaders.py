"""The VTAB-1k, FGVC and GLUE loaders on miniature datasets written here in the exact layouts."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from grft_app.data import build_datasets
from grft_app.data.catalog import DataMissingError
from grft_app.data.images import CorruptImageError
from grft_app.data.splits import InputSpec
from helpers.miniature import GLUE_ROWS, colour, glue_expected, write_fgvc, write_glue, write_vtab

SPEC = InputSpec(kind="image", img_size=24, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def vtab_cfg(**extra):
    return {"name": "eurosat", "family": "vtab", "folder": "eurosat", "num_classes": 10, **extra}


def fgvc_cfg(**extra):
    return {
        "name": "oxford_flowers",
        "family": "fgvc",
        "folder": "oxfordflower",
        "image_root": "",
        "num_classes": 102,
        **extra,
    }


def pixel(tensor: torch.Tensor, y: int, x: int) -> list[int]:
    """Undo Normalize(0.5, 0.5) and return the 0..255 colour at one pixel."""
    return [round(float(v)) for v in (tensor[:, y, x] * 0.5 + 0.5) * 255]


# --- VTAB-1k ------------------------------------------------------------------------------------
def test_vtab_reads_train800val200_and_test(tmp_path):
    written = write_vtab(tmp_path, "eurosat", num_classes=10)
    splits = build_datasets(vtab_cfg(), tmp_path, SPEC)
    assert (len(splits.train), len(splits.test), splits.val, splits.num_classes) == (30, 10, None, 10)
    for i, (relative, label) in enumerate(written["train800val200"]):
        image, got = splits.train[i]
        assert got == label and image.shape == (3, 24, 24)
        index = int(relative.rsplit("/", 1)[1].split(".")[0])
        assert max(abs(a - b) for a, b in zip(pixel(image, 12, 12), colour(label, index), strict=True)) <= 3  # jpeg
    assert [splits.test[i][1] for i in range(10)] == [label for _, label in written["test"]]
    views, label = splits.probe[0]
    assert len(views) == 2 and views[0].shape == (3, 24, 24) and label == written["train800val200"][0][1]
    assert splits.metrics == ("acc",)


def test_vtab_validation_run_uses_train800_and_val200(tmp_path):
    written = write_vtab(tmp_path, "eurosat", num_classes=10)
    splits = build_datasets(vtab_cfg(split="train800"), tmp_path, SPEC)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (20, 10, 10)
    assert [splits.val[i][1] for i in range(10)] == [label for _, label in written["val200"]]


def test_vtab_resizes_directly_without_cropping(tmp_path):
    write_vtab(tmp_path, "eurosat", num_classes=10)
    folder = tmp_path / "vtab-1k" / "eurosat"
    relative = (folder / "test.txt").read_text().split("\n")[0].rsplit(" ", 1)[0]
    wide = Image.new("RGB", (80, 20), (0, 0, 255))
    wide.paste((0, 255, 0), (0, 0, 8, 20))  # a green stripe along the left edge: a center crop would cut it off
    wide.save(folder / relative)
    image, _ = build_datasets(vtab_cfg(), tmp_path, SPEC).test[0]
    assert pixel(image, 12, 0)[1] > 200 and pixel(image, 12, 23)[2] > 200


def test_vtab_missing_folder_names_it_and_the_prep_command(tmp_path):
    with pytest.raises(DataMissingError) as err:
        build_datasets(vtab_cfg(), tmp_path, SPEC)
    message = str(err.value)
    assert str(tmp_path / "vtab-1k" / "eurosat") in message and "python -m data_prep.vtab --tasks eurosat" in message


def test_vtab_missing_list_file_is_named(tmp_path):
    write_vtab(tmp_path, "eurosat", num_classes=10)
    (tmp_path / "vtab-1k" / "eurosat" / "test.txt").unlink()
    with pytest.raises(DataMissingError, match="test.txt is missing"):
        build_datasets(vtab_cfg(), tmp_path, SPEC)


def test_vtab_listed_image_absent_is_named(tmp_path):
    written = write_vtab(tmp_path, "eurosat", num_classes=10)
    gone = written["train800"][3][0]
    (written["root"] / gone).unlink()
    with pytest.raises(DataMissingError, match="1 image") as err:
        build_datasets(vtab_cfg(), tmp_path, SPEC)
    assert gone in str(err.value)


def test_corrupt_image_error_names_the_file(tmp_path):
    written = write_vtab(tmp_path, "eurosat", num_classes=10)
    bad = written["root"] / written["train800val200"][5][0]
    bad.write_bytes(b"\x89PNG garbage, not an image" * 10)
    splits = build_datasets(vtab_cfg(), tmp_path, SPEC)
    splits.train[4]  # its neighbours still load
    with pytest.raises(CorruptImageError) as err:
        splits.train[5]
    assert str(bad) in str(err.value)


def test_vtab_label_outside_the_class_count_is_refused(tmp_path):
    write_vtab(tmp_path, "eurosat", num_classes=10)
    with pytest.raises(ValueError, match=r"outside 0\.\.6"):
        build_datasets(vtab_cfg(num_classes=7), tmp_path, SPEC)


def test_vtab_malformed_line_names_file_and_line(tmp_path):
    written = write_vtab(tmp_path, "eurosat", num_classes=10)
    with open(written["root"] / "test.txt", "a") as f:
        f.write("images/x.png not-a-label\n")
    with pytest.raises(ValueError, match=r"test\.txt:11"):
        build_datasets(vtab_cfg(), tmp_path, SPEC)


def test_an_image_task_refuses_a_text_model(tmp_path):
    write_vtab(tmp_path, "eurosat", num_classes=10)
    with pytest.raises(ValueError, match="image model"):
        build_datasets(vtab_cfg(), tmp_path, InputSpec(kind="text"))


# --- FGVC ---------------------------------------------------------------------------------------
def test_fgvc_trains_on_train_plus_val_and_remaps_class_ids(tmp_path):
    ids = list(range(1, 103))  # Oxford Flowers: 102 classes, ids 1..102, images at the folder root
    written = write_fgvc(tmp_path, "oxfordflower", "", ids)
    splits = build_datasets(fgvc_cfg(), tmp_path, SPEC)
    assert (len(splits.train), len(splits.test), splits.val, splits.num_classes) == (306, 102, None, 102)
    expected = [cls - 1 for cls in list(written["train"].values()) + list(written["val"].values())]
    assert [label for _, label in splits.train.raw.items] == expected
    image, label = splits.test[0]
    assert image.shape == (3, 24, 24) and label == 0


def test_fgvc_sparse_class_ids_map_in_sorted_order(tmp_path):
    ids = [817, 295, 1000, 3, 52]  # NABirds-like ids: sorted 3, 52, 295, 817, 1000 -> 0..4
    write_fgvc(tmp_path, "nabirds", "images", ids)
    cfg = {
        "name": "nabirds",
        "family": "fgvc",
        "folder": "nabirds",
        "image_root": "images",
        "num_classes": 5,
        "split": "train",
    }
    splits = build_datasets(cfg, tmp_path, SPEC)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (10, 5, 5)
    assert [label for _, label in splits.test.raw.items] == [3, 2, 4, 0, 1]
    assert splits.train.raw.root == tmp_path / "fgvc" / "nabirds" / "images"


def test_fgvc_eval_resizes_then_center_crops(tmp_path):
    write_fgvc(tmp_path, "oxfordflower", "", list(range(1, 103)))
    root = tmp_path / "fgvc" / "oxfordflower"
    relative = next(iter(json.loads((root / "test.json").read_text())))
    wide = Image.new("RGB", (80, 20), (0, 0, 255))
    wide.paste((0, 255, 0), (0, 0, 8, 20))  # cut off by the center crop, unlike VTAB's direct resize
    wide.save(root / relative)
    image, _ = build_datasets(fgvc_cfg(), tmp_path, SPEC).test[0]
    assert image.shape == (3, 24, 24) and pixel(image, 12, 0)[2] > 200 and pixel(image, 12, 0)[1] < 50


def test_fgvc_class_count_mismatch_is_refused(tmp_path):
    write_fgvc(tmp_path, "oxfordflower", "", list(range(1, 11)))
    with pytest.raises(ValueError, match="hold 10 classes but dataset.num_classes=102"):
        build_datasets(fgvc_cfg(), tmp_path, SPEC)


def test_fgvc_missing_json_is_named_with_the_prep_command(tmp_path):
    write_fgvc(tmp_path, "oxfordflower", "", list(range(1, 103)))
    (tmp_path / "fgvc" / "oxfordflower" / "val.json").unlink()
    with pytest.raises(DataMissingError, match="val.json missing") as err:
        build_datasets(fgvc_cfg(), tmp_path, SPEC)
    assert "python -m data_prep.fgvc --tasks oxford_flowers" in str(err.value)


def test_fgvc_image_root_matters(tmp_path):
    write_fgvc(tmp_path, "stanforddogs", "Images", list(range(1, 121)))
    cfg = {
        "name": "stanford_dogs",
        "family": "fgvc",
        "folder": "stanforddogs",
        "image_root": "Images",
        "num_classes": 120,
    }
    assert len(build_datasets(cfg, tmp_path, SPEC).train) == 360
    shutil.move(tmp_path / "fgvc" / "stanforddogs" / "Images", tmp_path / "fgvc" / "stanforddogs" / "images")
    with pytest.raises(DataMissingError, match="are absent"):
        build_datasets(cfg, tmp_path, SPEC)


# --- GLUE ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_spec():
    from grft_app.models.llama import tiny_tokenizer

    return InputSpec(kind="text", tokenizer=tiny_tokenizer(), max_length=64)


GLUE_CFGS = {
    "cola": {"name": "cola", "family": "glue", "folder": "CoLA", "num_classes": 2, "metrics": ["acc", "mcc"]},
    "mrpc": {"name": "mrpc", "family": "glue", "folder": "MRPC", "num_classes": 2, "metrics": ["acc", "f1"]},
    "rte": {"name": "rte", "family": "glue", "folder": "RTE", "num_classes": 2},
}


@pytest.mark.parametrize("task", ["cola", "mrpc", "rte"])
def test_glue_reads_the_original_tsv_layout(tmp_path, text_spec, task):
    write_glue(tmp_path, task, dev_rows=2)
    texts, labels = glue_expected(task)
    splits = build_datasets(GLUE_CFGS[task], tmp_path, text_spec)
    assert (len(splits.train), len(splits.test), splits.num_classes) == (len(GLUE_ROWS[task][2]), 2, 2)
    got = [splits.train[i] for i in range(len(splits.train))]
    assert [label for _, label in got] == labels
    if task == "cola":
        assert [item["text"] for item, _ in got] == texts and all(item["text_pair"] is None for item, _ in got)
    else:
        assert [(item["text"], item["text_pair"]) for item, _ in got] == texts
    assert splits.probe is splits.train  # text: plain items, no views
    assert splits.metrics == tuple(GLUE_CFGS[task].get("metrics", ["acc"]))
    batch = splits.collate_fn([splits.train[0], splits.train[1]])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["labels"].tolist() == labels[:2] and batch["input_ids"].shape == batch["attention_mask"].shape
    # Pairs are encoded as pairs: each sentence opens with its own begin-of-text token.
    bos = text_spec.tokenizer.bos_token_id
    first = batch["input_ids"][0][batch["attention_mask"][0].bool()]
    assert int((first == bos).sum()) == (1 if task == "cola" else 2)


def test_glue_pads_to_the_longest_and_truncates_at_max_length(tmp_path, text_spec):
    write_glue(tmp_path, "rte")
    short = InputSpec(kind="text", tokenizer=text_spec.tokenizer, max_length=12)
    splits = build_datasets(GLUE_CFGS["rte"], tmp_path, short)
    batch = splits.collate_fn([splits.train[i] for i in range(4)])
    assert batch["input_ids"].shape[1] == 12 and batch["attention_mask"].sum(1).max() == 12


def test_glue_unknown_label_names_file_and_line(tmp_path, text_spec):
    root = write_glue(tmp_path, "rte")
    text = (root / "train.tsv").read_text().replace("\tentailment\n", "\tmaybe\n", 1)
    (root / "train.tsv").write_text(text)
    with pytest.raises(ValueError, match=r"train\.tsv:3: label 'maybe'"):
        build_datasets(GLUE_CFGS["rte"], tmp_path, text_spec)


def test_glue_wrong_header_is_refused(tmp_path, text_spec):
    root = write_glue(tmp_path, "mrpc")
    text = (root / "dev.tsv").read_text().replace("#1 String", "sentence1")
    (root / "dev.tsv").write_text(text)
    with pytest.raises(ValueError, match=r"columns \['#1 String'\] are missing"):
        build_datasets(GLUE_CFGS["mrpc"], tmp_path, text_spec)


def test_glue_missing_dev_names_it(tmp_path, text_spec):
    root = write_glue(tmp_path, "cola")
    (root / "dev.tsv").unlink()
    with pytest.raises(DataMissingError, match="dev.tsv missing") as err:
        build_datasets(GLUE_CFGS["cola"], tmp_path, text_spec)
    assert "python -m data_prep.glue --tasks cola" in str(err.value)


def test_a_text_task_refuses_an_image_model(tmp_path):
    write_glue(tmp_path, "cola")
    with pytest.raises(ValueError, match="text model"):
        build_datasets(GLUE_CFGS["cola"], tmp_path, SPEC)


def test_every_dataset_family_the_conf_folder_names_keeps_the_family_contract(tmp_path):
    """Each family module that conf/dataset names has the members of ``DataFamily``; where its data is
    absent, the check fails with the family's own fetch hint (digits ship with the code: nothing fails)."""
    from omegaconf import OmegaConf

    from grft_app.builders import family_builders
    from grft_app.data import family_module, fetch_hint
    from grft_app.data.family import DataFamily
    from grft_app.paths import CONF_DIR

    builders = family_builders("dataset")
    assert set(builders) == {"digits", "vtab", "fgvc", "glue", "images", "text"}
    for path in sorted((CONF_DIR / "dataset").glob("*.yaml")):
        node = OmegaConf.load(path)
        cfg = OmegaConf.to_container(node.get("dataset", node), resolve=False)
        assert isinstance(family_module(cfg), DataFamily), path.name
        if cfg["family"] in ("vtab", "fgvc", "glue"):
            hint = fetch_hint(cfg, tmp_path)
            assert f"--tasks {cfg['name']}" in hint
            with pytest.raises(DataMissingError) as err:
                family_module(cfg).check_present(cfg, tmp_path)
            assert hint in str(err.value)


def test_a_config_names_its_builder_or_its_family_finds_one(tmp_path):
    from grft_app.data import family_module

    assert family_module({"family": "vtab"}).__name__ == "grft_app.data.vtab"
    assert family_module({"family": "vtab", "builder": "grft_app.data.fgvc"}).__name__ == "grft_app.data.fgvc"
    with pytest.raises(ValueError, match="dataset family 'nope' is unknown; known: digits, fgvc, glue, images"):
        family_module({"family": "nope"})
