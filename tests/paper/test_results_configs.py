"""Every experiment config composes and carries the paper's settings (Tables 6-7, §4.1, Table 8)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.paper.compose import Composer, ConfigUnavailable
from experiments.paper.spec import load_spec
from helpers.results_fixtures import CLASSES, ROOT, search_path, write_stubs

SPEC = load_spec()
VISION = [(b, t) for b in ("fgvc", "vtab") for t in SPEC.tasks(b)]
ALL = VISION + [("glue", t) for t in SPEC.tasks("glue")]
PAPER = pd.concat(
    [
        pd.read_csv(ROOT / "experiments/paper/published" / f, dtype=str).set_index("task")
        for f in ("table6.csv", "table7.csv")
    ]
)


@pytest.fixture(scope="module")
def stubbed(tmp_path_factory):
    return Composer([search_path(write_stubs(tmp_path_factory.mktemp("stubs")))])


def test_one_experiment_file_per_paper_task():
    files = sorted(
        p.relative_to(ROOT / "conf/experiment").with_suffix("").as_posix()
        for p in (ROOT / "conf/experiment").glob("*/*.yaml")
        if p.parent.name != "ablation"
    )
    assert files == sorted(f"{b}/{t}" for b, t in ALL)
    assert len(files) == 27


@pytest.mark.parametrize("bench,task", ALL)
def test_experiment_composes_with_the_real_configs(bench, task):
    missing = [
        p
        for p in (f"dataset/{task}.yaml",) + (("model/llama32_1b.yaml",) if bench == "glue" else ())
        if not (ROOT / "conf" / p).is_file()
    ]
    if missing:
        pytest.skip(f"conf/{', conf/'.join(missing)} not in this checkout yet (datasets/models area)")
    cfg = Composer().config([f"experiment={bench}/{task}"])
    assert cfg.dataset.name == task
    assert int(cfg.dataset.num_classes) == CLASSES[task]


@pytest.mark.parametrize("bench,task", VISION)
def test_vision_experiment_has_the_papers_settings(stubbed, bench, task):
    cfg = stubbed.config([f"experiment={bench}/{task}"])
    paper = PAPER.loc[task]
    assert cfg.dataset.name == task and cfg.model.name == "vit_base_patch16_224.augreg_in21k"
    assert math.isclose(float(cfg.lr), float(paper["lr"]))
    assert int(cfg.batch_size) == int(paper["batch_size"])
    assert int(cfg.epochs) == int(paper["epochs"]) == 100
    assert int(cfg.subsets) == int(paper["subsets"])
    assert math.isclose(float(cfg["lambda"]), float(paper["lambda"]), abs_tol=0)
    assert str(cfg.regular_layers) == paper["regular_layers"]
    assert int(cfg.k) == int(paper["k"])
    assert int(cfg.warmup_epochs) == 10 and cfg.optimizer == "adam" and float(cfg.weight_decay) == 0.0
    assert cfg.selection.kind in ("row", "column") and cfg.method.name == "grft" and cfg.norm.kind == "l2"


@pytest.mark.parametrize("task", SPEC.tasks("fgvc"))
def test_fgvc_experiments_use_the_reference_augmentation(stubbed, task):
    aug = stubbed.config([f"experiment=fgvc/{task}"]).augment
    assert (aug.mixup, aug.cutmix, aug.label_smoothing) == (0.8, 1.0, 0.1)
    assert 0 < float(aug.ema) < 1


@pytest.mark.parametrize("task", SPEC.tasks("vtab"))
def test_vtab_experiments_train_without_augmentation(stubbed, task):
    aug = stubbed.config([f"experiment=vtab/{task}"]).augment
    assert (aug.mixup, aug.cutmix, aug.label_smoothing, aug.ema) == (0.0, 0.0, 0.0, None)


@pytest.mark.parametrize("task", ["cola", "mrpc", "rte"])
def test_glue_experiments_state_what_the_paper_implies(stubbed, task):
    cfg = stubbed.config([f"experiment=glue/{task}"])
    assert cfg.model.family == "llama" and cfg.optimizer == "adamw" and int(cfg.k) == 3
    assert (int(cfg.epochs), int(cfg.warmup_epochs)) == (100, 10)  # §4.1, read as covering every task
    text = (ROOT / "conf/experiment/glue" / f"{task}.yaml").read_text()
    assert "Open in the paper" in text


def test_cached_composition_equals_a_full_hydra_compose(stubbed, tmp_path_factory):
    """The composer caches the group choices' compose and applies the values after; that must equal a full compose."""
    from grft_app.run.settings import register_resolvers

    register_resolvers()
    extra = stubbed.extra
    cases = [
        ["experiment=fgvc/cub", "method=gps", "k=2", "lr=0.003"],
        ["experiment=fgvc/stanford_cars", "selection=sparse"],
        ["experiment=fgvc/nabirds", "norm=l1", "lambda=1e-08"],
        ["experiment=vtab/dmlab", "selection=row", "regular_layers=3"],
        ["experiment=glue/rte", "method=lora", "lr=0.0002"],
        ["experiment=fgvc/cub", "debug=smoke", "selection=row"],
        ["experiment=fgvc/cub", "+extra_note=1", "~lambda", "method.name=renamed"],
        ["experiment=fgvc/cub", "++lr=0.5", "++brand_new.inner=2", "+augment={mixup: 0.5}", "~k=2"],
        ["experiment=fgvc/cub", "method=gps", "k=3"],  # the same group choices as the first case: from the cache
    ]
    for overrides in cases:
        fast = OmegaConf.to_container(stubbed.config(overrides))
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
            full = compose("config", overrides=[*overrides, *extra])
        assert fast == OmegaConf.to_container(full), overrides


def test_missing_configs_are_reported_not_raised_deep_inside():
    composer = Composer()
    with pytest.raises(ConfigUnavailable, match="no_such_task"):
        composer.config(["experiment=fgvc/no_such_task"])
    with pytest.raises(ConfigUnavailable):
        composer.config(["dataset=digits", "method=no_such_method"])
    with pytest.raises(ConfigUnavailable, match="no_such_key"):
        composer.config(["dataset=digits", "no_such_key=1"])  # a value for a key the config lacks, as Hydra says
    with pytest.raises(ConfigUnavailable, match="Ambiguous value"):
        composer.config(["dataset=digits", "k=1,2"])  # a sweep is not one cell
    with pytest.raises(ConfigUnavailable, match=r"lr exists; change it with lr=1 or \+\+lr=1"):
        composer.config(["dataset=digits", "+lr=1"])
    with pytest.raises(ConfigUnavailable, match="its value is 2, not 3"):
        composer.config(["dataset=digits", "k=2", "~k=3"])
