"""data_prep: converters on tiny inputs made here, the checker on good and broken folders."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from data_prep import fgvc as prep_fgvc
from data_prep import glue as prep_glue
from data_prep import vtab as prep_vtab
from grft_app.data import build_datasets
from grft_app.data.catalog import TASKS, Task
from grft_app.data.splits import InputSpec

SPEC = InputSpec(kind="image", img_size=16)


# --- VTAB-1k ------------------------------------------------------------------------------------
def fake_items(n: int, classes: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    return [(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8), int(label)) for label in labels], labels.tolist()


@pytest.fixture(scope="module")
def kitti_dir(tmp_path_factory):
    """A full-size KITTI/distance task (800 / 200 / 711 images, 4 classes) converted by ``write_task``."""
    data_dir = tmp_path_factory.mktemp("data")
    train, train_labels = fake_items(800, 4, 0)
    val, val_labels = fake_items(200, 4, 1)
    test, test_labels = fake_items(711, 4, 2)
    counts = prep_vtab.write_task(data_dir / "vtab-1k" / "kitti", iter(train), iter(val), iter(test))
    return data_dir, counts, train_labels + val_labels, test_labels, train[0][0]


def test_vtab_converter_writes_the_layout_the_loader_reads(kitti_dir):
    data_dir, counts, trainval_labels, test_labels, first = kitti_dir
    assert counts == {"train800": 800, "val200": 200, "train800val200": 1000, "test": 711}
    cfg = {"name": "kitti", "family": "vtab", "folder": "kitti", "num_classes": 4}
    splits = build_datasets(cfg, data_dir, SPEC)
    assert [label for _, label in splits.train.raw.items] == trainval_labels
    assert [label for _, label in splits.test.raw.items] == test_labels
    assert np.array_equal(np.asarray(splits.train.raw[0][0]), first)  # png keeps the pixels exactly


def test_vtab_check_passes_on_a_complete_task(kitti_dir, capsys):
    data_dir = kitti_dir[0]
    assert prep_vtab.check_task(TASKS["kitti"], data_dir).ok
    assert prep_vtab.main(["--data-dir", str(data_dir), "--tasks", "kitti", "--check"]) == 0
    assert "ok" in capsys.readouterr().out


def test_vtab_check_reports_each_problem(kitti_dir, tmp_path, capsys):
    import shutil

    data_dir = tmp_path / "copy"
    shutil.copytree(kitti_dir[0], data_dir)
    folder = data_dir / "vtab-1k" / "kitti"
    (folder / "images" / "train" / "000003.png").unlink()
    (folder / "images" / "test" / "000010.png").write_bytes(b"not a png at all")
    lines = (folder / "val200.txt").read_text().splitlines()
    (folder / "val200.txt").write_text("\n".join(lines[:-1] + [lines[-1].rsplit(" ", 1)[0] + " 9"]) + "\n")
    report = prep_vtab.check_task(TASKS["kitti"], data_dir)
    text = "\n".join(report.problems)
    assert "image missing" in text and "000003.png" in text
    assert "image unreadable" in text and "000010.png" in text
    assert "val200.txt: labels [9] outside 0..3" in text
    assert "train800val200.txt is not train800.txt + val200.txt" in text
    (folder / "test.txt").unlink()
    assert prep_vtab.main(["--data-dir", str(data_dir), "--tasks", "kitti", "--check"]) == 1
    assert "test.txt missing" in capsys.readouterr().out


def test_vtab_check_counts_against_the_expected_sizes(tmp_path):
    prep_vtab.write_task(tmp_path / "vtab-1k" / "dtd", *(fake_items(n, 47, s)[0] for n, s in ((8, 0), (2, 1), (3, 2))))
    problems = prep_vtab.check_task(TASKS["dtd"], tmp_path).problems
    assert "train800.txt lists 8 images, expected 800" in problems
    assert "test.txt lists 3 images, expected 1880" in problems
    assert prep_vtab.check_task(
        TASKS["dtd"], tmp_path, sizes={"train800": 8, "val200": 2, "train800val200": 10, "test": 3}
    ).ok


def test_vtab_labels_follow_the_task_definitions():
    def objects(depths):
        return {"objects": {"size": [0] * len(depths), "pixel_coords": [[0, 0, d] for d in depths]}}

    assert prep_vtab.clevr_count(objects([9.0] * 5)) == 2  # 5 objects: counts start at 3
    assert [prep_vtab.clevr_distance(objects([d, 20.0])) for d in (7.9, 8.2, 8.7, 9.2, 9.7, 12.0)] == [0, 1, 2, 3, 4, 5]

    def kitti(*objs):
        return {"objects": {"type": [t for t, _ in objs], "location": [[0, 0, z] for _, z in objs]}}

    assert prep_vtab.kitti_distance(kitti((0, 5.0))) == 0  # a car 5 m ahead
    assert prep_vtab.kitti_distance(kitti((1, 15.0), (2, 30.0))) == 1  # closest vehicle (a van) counts
    assert prep_vtab.kitti_distance(kitti((3, 2.0), (0, 25.0))) == 2  # a pedestrian is not a vehicle
    assert prep_vtab.kitti_distance(kitti((4, 3.0))) == 3  # no vehicle at all
    assert prep_vtab.kitti_distance({"objects": {"type": np.zeros(0), "location": np.zeros((0, 3))}}) == 3
    loc = prep_vtab.SPECS["dsprites_loc"].label
    assert [loc({"label_x_position": x}) for x in (0, 1, 2, 17, 31)] == [0, 0, 1, 8, 15]
    ori = prep_vtab.SPECS["dsprites_ori"].label
    assert [ori({"label_orientation": o}) for o in (0, 2, 3, 20, 39)] == [0, 0, 1, 8, 15]
    assert prep_vtab.SPECS["smallnorb_ele"].label({"label_elevation": 8, "label_azimuth": 3}) == 8
    assert prep_vtab.SPECS["smallnorb_azi"].label({"label_elevation": 8, "label_azimuth": 3}) == 3
    sprite = prep_vtab.SPECS["dsprites_loc"].image({"image": np.ones((64, 64, 1), dtype=np.uint8)})
    assert sprite.shape == (64, 64, 3) and sprite.dtype == np.uint8 and sprite.max() == 255


@pytest.mark.parametrize(
    "task,tfds_total",
    [("eurosat", 27000), ("resisc45", 31500), ("dsprites_loc", 737280), ("smallnorb_ele", 24300), ("cifar100", 10000)],
)
def test_vtab_test_splits_have_the_expected_sizes(task, tfds_total):
    """A fraction of a TFDS split (sizes from TFDS's dataset cards) gives the catalog's test count."""
    split = prep_vtab.SPECS[task].test.tfds_split(tfds_total)
    begin, end = (int(v) for v in split[split.index("[") + 1 : -1].split(":"))
    assert end - begin == TASKS[task].sizes["test"]


def test_vtab_val200_starts_where_the_validation_part_starts():
    assert prep_vtab.SPECS["cifar100"].val.tfds_split(50000, take=200) == "train[45000:45200]"
    assert prep_vtab.SPECS["dtd"].val.tfds_split(1880, take=200) == "validation[0:200]"
    assert prep_vtab.SPECS["cifar100"].train.tfds_split(50000, take=800) == "train[0:800]"


# --- FGVC ---------------------------------------------------------------------------------------
def image(path, value=90):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 9), (value, 30, 60)).save(path)


def test_cub_style_annotations_become_vpt_json_splits(tmp_path):
    folder = tmp_path / "fgvc" / "CUB_200_2011"
    lines = {"images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": []}
    expected_test = {}
    image_id = 0
    for cls in range(1, 201):
        for k in range(4):  # three training images and one test image per class
            image_id += 1
            relative = f"{cls:03d}.Bird_{cls}/Bird_{cls}_{k}.jpg"
            image(folder / "images" / relative)
            lines["images.txt"].append(f"{image_id} {relative}")
            lines["image_class_labels.txt"].append(f"{image_id} {cls}")
            lines["train_test_split.txt"].append(f"{image_id} {int(k < 3)}")
            if k == 3:
                expected_test[relative] = cls
    for name, rows in lines.items():
        (folder / name).write_text("\n".join(rows) + "\n")
    counts = prep_fgvc.write_splits(folder, *prep_fgvc.official_splits(TASKS["cub"], folder))
    assert counts == {"train": 540, "val": 60, "test": 200}  # val: a tenth of 600
    assert json.loads((folder / "test.json").read_text()) == expected_test
    assert prep_fgvc.check_task(TASKS["cub"], tmp_path, sizes=counts).ok
    cfg = {"name": "cub", "family": "fgvc", "folder": "CUB_200_2011", "image_root": "images", "num_classes": 200}
    splits = build_datasets(cfg, tmp_path, SPEC)
    assert (len(splits.train), len(splits.test)) == (600, 200)
    assert sorted(label for _, label in splits.test.raw.items) == list(range(200))


def test_flowers_official_splits_from_the_mat_files(tmp_path):
    from scipy.io import savemat

    folder = tmp_path / "fgvc" / "oxfordflower"
    labels = np.repeat(np.arange(1, 103), 3)  # image k has class labels[k-1]
    for k in range(1, len(labels) + 1):
        image(folder / "jpg" / f"image_{k:05d}.jpg")
    savemat(folder / "imagelabels.mat", {"labels": labels[None, :]})
    ids = np.arange(1, len(labels) + 1)
    savemat(folder / "setid.mat", {"trnid": ids[0::3][None], "valid": ids[1::3][None], "tstid": ids[2::3][None]})
    train, val, test = prep_fgvc.official_splits(TASKS["oxford_flowers"], folder)
    assert train["jpg/image_00001.jpg"] == 1 and val["jpg/image_00005.jpg"] == 2 and test["jpg/image_00306.jpg"] == 102
    assert (len(train), len(val), len(test)) == (102, 102, 102)
    prep_fgvc.write_splits(folder, train, val, test)
    assert prep_fgvc.check_task(TASKS["oxford_flowers"], tmp_path, sizes={"train": 102, "val": 102, "test": 102}).ok


def test_dogs_and_cars_mat_files(tmp_path):
    from scipy.io import savemat

    dogs = tmp_path / "stanforddogs"
    files = np.empty((4, 1), dtype=object)
    files[:, 0] = ["n1-Chihuahua/a.jpg", "n1-Chihuahua/b.jpg", "n2-Pug/c.jpg", "n2-Pug/d.jpg"]
    dogs.mkdir()
    savemat(dogs / "train_list.mat", {"file_list": files[:3], "labels": np.array([[1], [1], [2]])})
    savemat(dogs / "test_list.mat", {"file_list": files[3:], "labels": np.array([[2]])})
    assert prep_fgvc.read_dogs(dogs) == (
        {"n1-Chihuahua/a.jpg": 1, "n1-Chihuahua/b.jpg": 1, "n2-Pug/c.jpg": 2},
        {"n2-Pug/d.jpg": 2},
    )
    cars = tmp_path / "stanfordcars"
    (cars / "devkit").mkdir(parents=True)
    record = [("fname", "O"), ("class", "O")]
    savemat(
        cars / "devkit" / "cars_train_annos.mat",
        {"annotations": np.array([("00001.jpg", 5), ("00002.jpg", 196)], dtype=record)[None]},
    )
    savemat(cars / "cars_test_annos_withlabels.mat", {"annotations": np.array([("00001.jpg", 7)], dtype=record)[None]})
    assert prep_fgvc.read_cars(cars) == (
        {"cars_train/00001.jpg": 5, "cars_train/00002.jpg": 196},
        {"cars_test/00001.jpg": 7},
    )


def test_hold_out_takes_a_seeded_tenth_rounded_up():
    train = {f"img{i}.jpg": i % 7 for i in range(8144)}  # Stanford Cars' official training set size
    kept, val = prep_fgvc.hold_out(train)
    assert (len(kept), len(val)) == (TASKS["stanford_cars"].sizes["train"], TASKS["stanford_cars"].sizes["val"])
    assert not kept.keys() & val.keys() and {**kept, **val} == train
    assert prep_fgvc.hold_out(train) == (kept, val)
    assert len(prep_fgvc.hold_out({str(i): 0 for i in range(5994)})[1]) == math.ceil(599.4) == 600  # CUB


def test_fgvc_check_reports_overlap_classes_and_bad_images(tmp_path):
    folder = tmp_path / "fgvc" / "stanfordcars"
    paths = [f"cars_train/{i:05d}.jpg" for i in range(4)]
    for p in paths:
        image(folder / p)
    (folder / paths[2]).write_bytes(b"\xff\xd8 broken jpeg")
    (folder / "train.json").write_text(json.dumps({paths[0]: 1, paths[1]: 2}))
    (folder / "val.json").write_text(json.dumps({paths[1]: 2}))
    (folder / "test.json").write_text(json.dumps({paths[2]: 3, "cars_test/absent.jpg": 3}))
    problems = "\n".join(prep_fgvc.check_task(TASKS["stanford_cars"], tmp_path).problems)
    assert "train.json lists 2 images, expected 7329" in problems
    assert "1 image(s) are in both train.json and val.json" in problems
    assert "the splits hold 3 classes, expected 196" in problems
    assert (
        f"image unreadable: {folder / paths[2]}" in problems
        and "image missing" in problems
        and "absent.jpg" in problems
    )


def test_fgvc_manual_tasks_say_where_to_unpack(tmp_path):
    with pytest.raises(SystemExit, match="nabirds"):
        prep_fgvc.prepare(TASKS["nabirds"], tmp_path)


# --- GLUE ---------------------------------------------------------------------------------------
HF_ROWS = {
    "cola": [{"sentence": "The book was read by\tMary.", "label": 1}, {"sentence": "Book the read.", "label": 0}],
    "mrpc": [
        {"sentence1": 'He said "yes".', "sentence2": "He agreed.", "label": 1},
        {"sentence1": "A cat.", "sentence2": "A dog.", "label": 0},
    ],
    "rte": [
        {"sentence1": "Paris is in France.", "sentence2": "Paris is French.", "label": 0},
        {"sentence1": "It rains.", "sentence2": "It is sunny.", "label": 1},
    ],
}


@pytest.mark.parametrize("task", ["cola", "mrpc", "rte"])
def test_glue_converter_writes_tsvs_the_loader_reads(tmp_path, task):
    from grft_app.models.llama import tiny_tokenizer

    rows = HF_ROWS[task]
    folder = TASKS[task].folder_in(tmp_path)
    counts = prep_glue.write_task(TASKS[task], folder, {"train": rows, "test": rows[:1]})
    assert counts == {"train.tsv": 2, "dev.tsv": 1}
    first_line = (folder / "train.tsv").read_text().splitlines()[0]
    assert (
        first_line
        == {
            "cola": "glue\t1\t\tThe book was read by Mary.",
            "mrpc": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
            "rte": "index\tsentence1\tsentence2\tlabel",
        }[task]
    )
    cfg = {"name": task, "family": "glue", "folder": TASKS[task].folder, "num_classes": 2}
    splits = build_datasets(cfg, tmp_path, InputSpec(kind="text", tokenizer=tiny_tokenizer()))
    assert [label for _, label in (splits.train[0], splits.train[1])] == [r["label"] for r in rows]
    item = splits.train[0][0]
    if task == "cola":
        assert item["text"] == "The book was read by Mary."
    else:
        assert (item["text"], item["text_pair"]) == (rows[0]["sentence1"], rows[0]["sentence2"])
    assert prep_glue.check_task(TASKS[task], tmp_path, sizes={"train": 2, "dev": 1}).ok
    assert prep_glue.check_task(TASKS[task], tmp_path).problems == [
        f"train.tsv has 2 examples, expected {TASKS[task].sizes['train']}",
        f"dev.tsv has 1 examples, expected {TASKS[task].sizes['dev']}",
    ]


def test_glue_check_of_an_empty_data_dir_fails_with_the_fetch_command(tmp_path, capsys):
    assert prep_glue.main(["--data-dir", str(tmp_path), "--check"]) == 1
    out = capsys.readouterr().out
    assert out.count("folder missing") == 3 and "python -m data_prep.glue --tasks rte" in out


def test_unknown_task_names_the_known_ones(tmp_path):
    with pytest.raises(SystemExit, match="known: cola, mrpc, rte"):
        prep_glue.main(["--data-dir", str(tmp_path), "--tasks", "sst2", "--check"])


def test_a_custom_task_is_checked_by_its_own_sizes(tmp_path):
    task = Task("mini", "vtab", "mini", 3, {"train800": 2, "val200": 1, "train800val200": 3, "test": 1})
    prep_vtab.write_task(tmp_path / "vtab-1k" / "mini", *(fake_items(n, 3, n)[0] for n in (2, 1, 1)))
    assert prep_vtab.check_task(task, tmp_path).ok
