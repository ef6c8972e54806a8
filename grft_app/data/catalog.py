"""The paper's 27 tasks: folder, class count and the split sizes of the community's layouts.

One table serves three readers: the loaders (to say which ``data_prep`` command fetches a missing
task), ``data_prep --check`` (to verify counts), and the tests (every ``conf/dataset`` file must
agree with it). Split sizes are those of the layouts the PEFT community shares:

- VTAB-1k: 800 + 200 training images per task; the test split is VTAB's own test split.
- FGVC: the train / val / test json splits of VPT (val is a held-out tenth of the official
  training set; train + val is the official training set, test the official test set).
- GLUE: the original TSV files; ``dev.tsv`` is the split the paper reports (test labels are hidden).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Task:
    name: str  # the Hydra config name: ``dataset=<name>``
    family: str  # vtab | fgvc | glue
    folder: str  # under ``data_dir/<family-root>/``
    num_classes: int
    sizes: dict = field(default_factory=dict, compare=False)  # split file stem -> number of items

    @property
    def root(self) -> str:
        """The family's folder under ``data_dir``."""
        return FAMILY_ROOTS[self.family]

    def folder_in(self, data_dir) -> Path:
        """This task's folder under ``data_dir``: ``data_dir/<family root>/<folder>``."""
        return Path(data_dir) / self.root / self.folder

    def prep_command(self, data_dir: str = "data") -> str:
        """The command that downloads and converts this task into ``data_dir``."""
        return f"python -m data_prep.{self.family} --tasks {self.name} --data-dir {data_dir}"


FAMILY_ROOTS = {"vtab": "vtab-1k", "fgvc": "fgvc", "glue": "glue"}

VTAB_TRAIN = {"train800": 800, "val200": 200, "train800val200": 1000}

# name, folder, classes, test size (VTAB's test split of each task)
_VTAB = [
    ("cifar100", "cifar", 100, 10000),
    ("caltech101", "caltech101", 102, 6084),
    ("dtd", "dtd", 47, 1880),
    ("flowers102", "oxford_flowers102", 102, 6149),
    ("pets", "oxford_iiit_pet", 37, 3669),
    ("svhn", "svhn", 10, 26032),
    ("sun397", "sun397", 397, 21750),
    ("patch_camelyon", "patch_camelyon", 2, 32768),
    ("eurosat", "eurosat", 10, 5400),
    ("resisc45", "resisc45", 45, 6300),
    ("diabetic_retinopathy", "diabetic_retinopathy", 5, 42670),
    ("clevr_count", "clevr_count", 8, 15000),
    ("clevr_dist", "clevr_dist", 6, 15000),
    ("dmlab", "dmlab", 6, 22735),
    ("kitti", "kitti", 4, 711),
    ("dsprites_loc", "dsprites_loc", 16, 73728),
    ("dsprites_ori", "dsprites_ori", 16, 73728),
    ("smallnorb_azi", "smallnorb_azi", 18, 12150),
    ("smallnorb_ele", "smallnorb_ele", 9, 12150),
]

# name, folder, classes, (train, val, test); image_root is where json paths start, inside the folder
_FGVC = [
    ("cub", "CUB_200_2011", 200, (5394, 600, 5794)),
    ("nabirds", "nabirds", 555, (21536, 2393, 24633)),
    ("oxford_flowers", "oxfordflower", 102, (1020, 1020, 6149)),
    ("stanford_dogs", "stanforddogs", 120, (10800, 1200, 8580)),
    ("stanford_cars", "stanfordcars", 196, (7329, 815, 8041)),
]
FGVC_IMAGE_ROOTS = {
    "cub": "images",
    "nabirds": "images",
    "oxford_flowers": "",
    "stanford_dogs": "Images",
    "stanford_cars": "",
}

# name, folder, classes, (train, dev)
_GLUE = [
    ("cola", "CoLA", 2, (8551, 1043)),
    ("mrpc", "MRPC", 2, (3668, 408)),
    ("rte", "RTE", 2, (2490, 277)),
]

TASKS: dict[str, Task] = {}
for _name, _folder, _classes, _test in _VTAB:
    TASKS[_name] = Task(_name, "vtab", _folder, _classes, {**VTAB_TRAIN, "test": _test})
for _name, _folder, _classes, (_train, _val, _test) in _FGVC:
    TASKS[_name] = Task(_name, "fgvc", _folder, _classes, {"train": _train, "val": _val, "test": _test})
for _name, _folder, _classes, (_train, _dev) in _GLUE:
    TASKS[_name] = Task(_name, "glue", _folder, _classes, {"train": _train, "dev": _dev})


def tasks_of(family: str) -> list[Task]:
    return [t for t in TASKS.values() if t.family == family]


def task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task {name!r} is unknown; known: {', '.join(TASKS)}")
    return TASKS[name]


class DataMissingError(FileNotFoundError):
    """A task's files are absent or incomplete; the message names the folder and the fix."""


def missing(task_name: str, family: str, data_dir, folder, what: str) -> DataMissingError:
    """The error for an absent or incomplete task folder: what is missing and the command to fetch it."""
    return DataMissingError(f"{task_name}: {folder} is incomplete: {what}. {fetch_hint(task_name, family, data_dir)}")


def fetch_hint(task_name: str, family: str, data_dir) -> str:
    """A paper task's ``fetch_hint`` (``grft_app.data.family``): the commands that fetch it, or where to point."""
    known = TASKS.get(task_name)
    fetch = known.prep_command(str(data_dir)) if known else f"python -m data_prep.{family} --data-dir {data_dir}"
    return (
        f"Fetch and convert it with `{fetch}` "
        f"(or `make data-{family} DATA_DIR={data_dir}{f' TASKS={task_name}' if known else ''}`), "
        f"or point data_dir at the folder that holds "
        f"{FAMILY_ROOTS.get(family, family)}/"
    )
