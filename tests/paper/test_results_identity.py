"""One identity for a run: two configs share a run directory exactly when they fill the same table cell.

The sweep half finds a run "done" by its run directory (``run_dir_of``: the run key); the render half
fills a cell with the records whose identity is the cell's (``RecordIndex``, seeds aside). Both must
be the same relation, or a sweep counts as done a run that the table shows as a hole, or the reverse.
The test builds many configs (each setting of a few base configs changed in turn, plus the changes
that once split the two rules) and checks, pair by pair, that one relation holds exactly when the
other does (with the same seed, since a cell aggregates seeds and a run directory holds one).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from experiments.paper.matching import RecordIndex, identity, matches, resolved
from grft_app.identity import RESULTS_VERSION, flatten, run_identity
from grft_app.record import CodeFacts, RunRecord
from grft_app.run.app import run_dir_of
from helpers.app_runs import make_cfg

BASES = (
    (),
    ("method=linear",),
    ("method=gps", "weight_decay=0", "protocol=reference"),
)
# Changes that once made the run key and the table disagree, and others of each kind.
NAMED = {
    "trainer.accelerator": "cpu",
    "trainer.precision": "bf16-mixed",
    "trainer.log_every_n_steps": 3,
    "eval_batch_size": 7,
    "model.checkpoint": "/elsewhere/weights.safetensors",
    "cpu_threads": 3,
    "num_workers": 2,
    "k": 9,
    "lambda": 0.5,
    "probe.max_batches": 3,
    "seed": 5,
    "lr": 0.001,  # the default's own value, written otherwise
    "tags.target": "table1",
    "paths.runs": "/elsewhere",
}


def changed(value):
    """Another value of the same kind (a list grows, a string gets a suffix, null becomes a number)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_x"
    if isinstance(value, list):
        return [*value, value[-1] if value else 1]
    if value is None:
        return 3
    return None


def with_value(cfg, key: str, value):
    other = copy.deepcopy(cfg)
    with open_dict(other):
        OmegaConf.update(other, key, value, force_add=True)
    return other


def variants(runs: Path) -> list:
    """Base configs, each with one setting changed in turn, and the named changes."""
    out = []
    for base in BASES:
        cfg = make_cfg(runs, *base)
        out.append(cfg)
        out += [with_value(cfg, key, value) for key, value in NAMED.items()]
        for key, value in flatten(resolved(cfg)).items():
            new = changed(value)
            # paths: where runs go (compared relative to it); the dataset's name: a directory level of its own.
            if new is not None and not key.startswith("paths.") and key != "dataset.name":
                out.append(with_value(cfg, key, new))
    return out


def record_of(cfg, results_version=RESULTS_VERSION) -> RunRecord:
    return RunRecord(
        task=str(cfg.dataset.name),
        method=str(cfg.method.name),
        done=True,
        seed=int(cfg.seed) if isinstance(cfg.seed, int) else None,
        config=OmegaConf.to_container(cfg, resolve=True),
        code=CodeFacts(results_version=results_version),
        metrics={"test_acc": 0.5},
    )


def place(cfg) -> Path:
    """A run's directory relative to the runs folder: the same run under another ``paths.runs`` is the same run."""
    return run_dir_of(cfg).relative_to(Path(cfg.paths.runs))


def difference(a, b) -> list:
    return sorted(set(flatten(resolved(a)).items()) ^ set(flatten(resolved(b)).items()), key=str)


@pytest.mark.composes
def test_a_run_directory_is_shared_exactly_when_a_table_cell_is(tmp_path):
    configs = variants(tmp_path)
    places = [place(c) for c in configs]
    records = [record_of(c) for c in configs]
    number = {id(r): i for i, r in enumerate(records)}
    index = RecordIndex(records)
    disagree = []
    for i, cfg in enumerate(configs):
        expected = identity(records[i].config)  # the config resolved once (as identity(cfg) would: it is slow)
        cell = {
            number[id(record)]
            for record, ident in index.candidates(str(cfg.dataset.name), str(cfg.method.name))
            if record.seed == cfg.seed and matches(expected, ident)
        }
        directory = {j for j, p in enumerate(places) if p == places[i]}
        disagree += [(i, j) for j in cell ^ directory]
    # Both relations group the configs, and neither is trivial: some share, many do not.
    assert len(set(places)) > len(configs) / 2 and len(set(places)) < len(configs)
    assert not disagree, [difference(configs[i], configs[j]) for i, j in disagree[:5]]


@pytest.mark.parametrize(
    "change",
    ["trainer.accelerator=cpu", "eval_batch_size=7", "++model.checkpoint=/w.safetensors", "cpu_threads=3", "k=9"],
)
def test_what_once_split_the_two_rules_now_leaves_a_baseline_in_its_run_and_its_cell(tmp_path, change):
    base, other = make_cfg(tmp_path, "method=linear"), make_cfg(tmp_path, "method=linear", change)
    assert run_dir_of(base) == run_dir_of(other)
    index = RecordIndex([record_of(base)])
    assert index.find(other, "test_acc", 1.0).n == 1


@pytest.mark.parametrize("change", ["probe.passes=2", "probe.memory=3", "probe.memory=0.5"])
def test_the_probes_passes_leave_a_grft_run_in_its_run_and_its_cell(tmp_path, change):
    # The passes change how the probe sums its gradients, not the sums (the selection is the same
    # bits, tests/test_probe_passes.py): the same run, resumed or skipped, and the same table cell.
    base, other = make_cfg(tmp_path), make_cfg(tmp_path, change)
    assert run_dir_of(base) == run_dir_of(other)
    assert RecordIndex([record_of(base)]).find(other, "test_acc", 1.0).n == 1


@pytest.mark.parametrize("change", ["trainer.precision=bf16-mixed", "probe.max_batches=3", "k=9"])
def test_a_setting_that_changes_the_numbers_is_another_run_and_another_cell(tmp_path, change):
    base, other = make_cfg(tmp_path), make_cfg(tmp_path, change)
    assert run_dir_of(base) != run_dir_of(other)
    assert RecordIndex([record_of(base)]).find(other, "test_acc", 1.0).n == 0


@pytest.mark.parametrize("version", [None, RESULTS_VERSION - 1])
def test_a_record_of_another_results_version_fills_no_cell(tmp_path, version):
    cfg = make_cfg(tmp_path)
    index = RecordIndex([record_of(cfg, version)])
    assert index.find(cfg, "test_acc", 1.0).n == 0
    assert len(index.unmatched([str(cfg.dataset.name)], [str(cfg.method.name)])) == 1
    assert RecordIndex([record_of(cfg)]).find(cfg, "test_acc", 1.0).n == 1


def test_the_identity_holds_the_results_version_and_normalises_whole_numbers():
    ident = run_identity({"method": {"name": "grft"}, "lr": 1, "k": 2.0, "cpu_threads": 4})
    assert ident == {"method.name": "grft", "lr": 1, "k": 2, "results_version": RESULTS_VERSION}
    assert run_identity({"lr": 1.0}) == run_identity({"lr": 1})
    # A baseline reads none of GRFT's keys and does not probe.
    assert run_identity({"method": {"name": "linear"}, "k": 3, "probe": {"max_batches": 2}, "lr": 0.1}) == {
        "method.name": "linear",
        "lr": 0.1,
        "results_version": RESULTS_VERSION,
    }


def test_the_code_a_yaml_names_is_not_in_the_identity():
    """``_target_`` names the class that builds a group: a record written before the YAML named it, or
    after the class moved, is the same run and the same cell as one that names it."""
    named = {"method": {"_target_": "grft_app.methods.grft.GRFTMethod", "name": "grft"}, "k": 2, "lr": 1e-3}
    moved = copy.deepcopy(named)
    moved["method"]["_target_"] = "elsewhere.GRFTMethod"
    unnamed = copy.deepcopy(named)
    del unnamed["method"]["_target_"]
    assert run_identity(named) == run_identity(moved) == run_identity(unnamed)
    assert not any("_target_" in key for key in run_identity(named))


def test_the_grft_settings_table_reaches_the_settings_the_record_and_the_identity(tmp_path):
    """One row per setting (grft_app.grft_settings): ``probe.temperature``, exposed by one row, reaches
    ``GRFTConfig``; the record's GRFT facts follow what the method reads; a non-default temperature is
    another GRFT and GPS run but the same baseline run; errors name the key as users type it."""
    from grft_app.methods import method_class
    from grft_app.run.runner import grft_facts
    from grft_app.run.settings import ConfigError, check_numbers, grft_config

    cfg = make_cfg(tmp_path, "probe.temperature=0.2", "lambda=0.5", "k=3", "selection=column", "regular_layers=1")
    config = grft_config(cfg)
    assert (config.temperature, config.lam, config.k, config.selection, config.regular_layers) == (
        0.2,
        0.5,
        3,
        "column",
        1,
    )
    assert grft_facts(cfg, method_class("grft").grft_keys) == {
        "k": 3,
        "selection": "column",
        "norm": "l2",
        "lambda_": 0.5,
        "regular_layers": 1,
        "subsets": 1,
    }
    assert set(grft_facts(cfg, method_class("gps").grft_keys).values()) == {3, None}
    for method, differs in (("grft", True), ("gps", True), ("linear", False)):
        base = make_cfg(tmp_path, f"method={method}", "weight_decay=0")
        assert run_dir_of(base) == run_dir_of(with_value(base, "probe.temperature", 0.07))
        assert (run_dir_of(base) != run_dir_of(with_value(base, "probe.temperature", 0.2))) == differs
    with pytest.raises(ConfigError, match="^probe.temperature must be > 0"):
        grft_config(make_cfg(tmp_path, "probe.temperature=0"))
    with pytest.raises(ConfigError, match="^lambda must be a finite number"):
        grft_config(make_cfg(tmp_path, "lambda=-1"))
    with pytest.raises(ConfigError, match="^probe.temperature must be a number, got 'abc'"):
        check_numbers(make_cfg(tmp_path, "probe.temperature=abc"))
