"""Every command in the README's code blocks works as typed (after its set-up steps).

The README's shell commands are read from its code blocks (indented or fenced), not listed here,
so a command added to the README is checked too: ``make`` lines must be valid targets (``make
-n``), ``python run.py`` lines must compose and pass the settings checks (each job of a ``-m``
sweep), ``--help`` and ``debug=smoke`` lines run for real, and the library example runs on a tiny
model. A line this test does not know how to check fails it. The section "Your own task" is one
example whose commands depend on each other (train, then predict and export the run): it runs as
written, in order, in a fresh folder.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from grft_app.lit.app import run_dir_of
from grft_app.lit.settings import method_settings, register_resolvers, train_settings
from grft_app.paths import ROOT

register_resolvers()


def code_blocks(text: str) -> list[tuple[str, list[str]]]:
    """``(language, lines)`` of every fenced block and every indented block outside a list."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)", lines[i])
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            blocks.append((fence.group(1) or "sh", lines[i + 1 : end]))
            i = end + 1
        elif lines[i].startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            blocks.append(("sh", [line[4:] for line in lines[i:end] if line.strip()]))
            i = end
        else:
            i += 1
    return blocks


def section(text: str, title: str) -> tuple[str, str]:
    """``(the section "## <title>", the text without it)``."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    end = len(text) if end < 0 else end
    return text[start:end], text[:start] + text[end:]


def shell_lines(text: str) -> list[str]:
    return [line for lang, block in code_blocks(text) if lang in ("sh", "bash", "console") for line in block]


README = (ROOT / "README.md").read_text()
OWN_TASK, OTHER_SECTIONS = section(README, "Your own task")
SHELL = shell_lines(OTHER_SECTIONS)
PYTHON = ["\n".join(block) for lang, block in code_blocks(README) if lang == "python"]


def test_the_readme_has_commands_to_check():
    assert any(line.startswith("make run") for line in SHELL) and any(
        line.startswith("python run.py") for line in SHELL
    )


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs of a Hydra multirun, as the basic sweeper expands its comma lists."""
    jobs = [[]]
    for override in OverridesParser.create().parse_overrides(overrides):
        text = override.input_line
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [None]
        key = text.split("=", 1)[0]
        jobs = [job + [text if v is None else f"{key}={v}"] for job in jobs for v in values]
    return jobs


def check_composes(tmp_path: Path, overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"paths.runs={tmp_path}"], return_hydra_config=True)
    method_settings(cfg)
    train_settings(cfg, ("acc",))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        job_cfg = compose(
            "config", overrides=[o for o in overrides if not o.startswith("hydra")] + [f"paths.runs={tmp_path}"]
        )
    assert run_dir_of(job_cfg).is_relative_to(tmp_path)
    return job_cfg


@pytest.mark.parametrize("line", SHELL)
def test_readme_command(tmp_path, line):
    words = shlex.split(line, comments=True)
    env = {**os.environ, "GRFT_RUNS": str(tmp_path), "PYTHONPATH": str(ROOT)}
    if words[0] in ("source", "."):
        assert (ROOT / "Makefile").read_text().count("$(VENV)/bin/python") and words[1] == ".venv/bin/activate"
        return
    if words[0] == "make":
        proc = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return
    assert words[:2] == ["python", "run.py"], f"the README command {line!r} is not one this test knows how to check"
    args = words[2:]
    if "--help" in args:
        proc = subprocess.run(
            [sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0 and "method" in proc.stdout, proc.stderr[-2000:]
        return
    multirun = args[:1] == ["-m"]
    overrides = args[1:] if multirun else args
    jobs = sweep_jobs(overrides) if multirun else [overrides]
    cfgs = [check_composes(tmp_path, job) for job in jobs]
    if "debug=smoke" in overrides and not multirun:  # seconds: run it, baselines included
        from grft_app.lit.app import main as run_app

        record = run_app(cfgs[0], run_dir_of(cfgs[0]))
        assert record.done


@pytest.mark.parametrize("snippet", PYTHON)
def test_readme_library_example_runs_on_a_tiny_model(tmp_path, snippet, monkeypatch):
    from helpers.models import image_batches, make_tiny_vit

    monkeypatch.chdir(tmp_path)
    model = make_tiny_vit()
    namespace = {
        "model": model,
        "fresh_model": copy.deepcopy(model),
        "train_batches": image_batches(views=2),
        "task_loss": 0.0,
    }
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert (tmp_path / "adapter.safetensors").is_file()


def test_your_own_task_runs_as_written(tmp_path):
    """The example's commands, in order, as a user types them in a fresh folder: ``python`` is this
    interpreter, ``run.py`` the checkout's, and results go where they go by default (results/runs/)."""
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # a link would lose the venv
    (shims / "python").chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    lines = [line.replace("python run.py", f"python {ROOT / 'run.py'}") for line in shell_lines(OWN_TASK)]
    assert any("grft_app.predict" in line for line in lines) and any("grft_app.export" in line for line in lines)
    env = {k: v for k, v in os.environ.items() if k not in ("GRFT_RUNS", "GRFT_CACHE", "GRFT_DATA")}
    env.update(PATH=f"{shims}{os.pathsep}{env['PATH']}", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
    proc = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    import pandas as pd
    import timm

    predictions = pd.read_csv(work / "predictions.csv")
    assert len(predictions) == 10 and set(predictions["class"]) <= {"zero", "one", "two"}
    model = timm.create_model(f"local-dir:{work / 'my-model'}", pretrained=True)
    assert model.pretrained_cfg["label_names"] == ["one", "two", "zero"] and model.num_classes == 3
