"""The tiers: ``grft`` (torch only) <- ``grft_app`` (Hydra + Lightning) <- ``experiments`` (paper, benchmark).

Imports only go down the tiers, and no two modules import each other, directly or round a loop. The
import graph is read from the source (every ``import`` statement, those inside functions included:
a deferred import still ties two modules together), so a violation fails here before it is ever run.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from grft_app.paths import ROOT

TIERS = ("grft", "grft_app", "experiments")
# What `import grft` must not load: the application's frameworks and the tiers above it.
NOT_IN_THE_LIBRARY = (
    "lightning",
    "pytorch_lightning",
    "hydra",
    "omegaconf",
    "pandas",
    "timm",
    "transformers",
    "peft",
    "grft_app",
    "experiments",
)
LIGHTNING = ("lightning", "pytorch_lightning")  # what the paper's renderer must not load (tables need no trainer)
# In a fresh interpreter: every module of the renderer, then the calls its tables make on a cell (compose it, find
# its run directory, say which statistic it holds); prints the modules loaded.
RENDERER_PROBE = """
import importlib, json, pkgutil, sys
import experiments.paper as paper
for info in pkgutil.walk_packages(paper.__path__, "experiments.paper."):
    importlib.import_module(info.name)
from experiments.paper.compose import Composer, run_dir
from experiments.paper.tables.cells import statistic_of
cfg = Composer().config(["dataset=digits", "k=2"])
print(run_dir(cfg), statistic_of(cfg), file=sys.stderr)
print(json.dumps(sorted(sys.modules)))
"""


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = ROOT, tiers: tuple[str, ...] = TIERS) -> dict[str, Path]:
    return {module_name(p, root): p for tier in tiers for p in sorted((root / tier).rglob("*.py"))}


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_names(name: str, path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (``from .x import y`` resolved); ``if TYPE_CHECKING:`` skipped."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    stack: list[ast.AST] = [ast.parse(path.read_text(), str(path))]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = package[: len(package) - child.level + 1] if child.level else []
                module = ".".join(base + ([child.module] if child.module else []))
                # pkg.name: the submodule when there is one, else (import_graph strips it) pkg itself
                found.update(f"{module}.{alias.name}" for alias in child.names)
            stack.append(child)
    return found


def import_graph(root: Path = ROOT, tiers: tuple[str, ...] = TIERS) -> dict[str, set[str]]:
    """Module -> the project modules it imports (a name resolves to its longest existing module)."""
    known = modules(root, tiers)
    graph = {}
    for name, path in known.items():
        edges = set()
        for imported in imported_names(name, path):
            while imported not in known and "." in imported:
                imported = imported.rsplit(".", 1)[0]
            if imported in known and imported != name:
                edges.add(imported)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward_imports(graph: dict[str, set[str]], tier: str, above: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{m} imports {t}"
        for m, targets in graph.items()
        if m.split(".")[0] == tier
        for t in targets
        if t.split(".")[0] in above
    )


def lightning_paths(graph: dict[str, set[str]], prefix: str, root: Path = ROOT) -> list[str]:
    """``a <- b <- c``: each project module that imports Lightning itself and that a module under ``prefix``
    reaches, with the chain of imports that reaches it."""
    known = modules(root)
    parent: dict[str, str | None] = {m: None for m in graph if m.startswith(prefix)}
    queue = sorted(parent)
    while queue:
        current = queue.pop(0)
        for nxt in sorted(graph.get(current, ())):
            if nxt not in parent:
                parent[nxt] = current
                queue.append(nxt)
    found = []
    for name in sorted(parent):
        if not {n.split(".")[0] for n in imported_names(name, known[name])} & set(LIGHTNING):
            continue
        chain = [name]
        while parent[chain[-1]] is not None:
            chain.append(parent[chain[-1]])
        found.append(" <- ".join(chain))
    return found


# --- the project ----------------------------------------------------------------------------------


@pytest.mark.process
def test_import_grft_loads_no_application_framework():
    code = "import json, sys, grft; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    loaded = {m.split(".")[0] for m in json.loads(proc.stdout.strip().splitlines()[-1])}
    assert "torch" in loaded and "grft" in loaded
    assert sorted(loaded & set(NOT_IN_THE_LIBRARY)) == []


@pytest.mark.process
def test_the_paper_renderer_loads_no_lightning():
    proc = subprocess.run([sys.executable, "-c", RENDERER_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    loaded = {m.split(".")[0] for m in json.loads(proc.stdout.strip().splitlines()[-1])}
    assert {"hydra", "pandas", "experiments", "grft_app"} <= loaded  # it did load the renderer
    assert sorted(loaded & set(LIGHTNING)) == []


def test_no_path_of_the_paper_renderer_reaches_lightning():
    """Read from the source, deferred imports included: no module the renderer may import imports Lightning."""
    assert lightning_paths(import_graph(), "experiments.paper") == []


def test_the_library_imports_neither_the_app_nor_the_experiments():
    assert upward_imports(import_graph(), "grft", ("grft_app", "experiments")) == []


def test_the_app_does_not_import_the_experiments():
    assert upward_imports(import_graph(), "grft_app", ("experiments",)) == []


def test_the_lightning_parts_do_not_import_the_run_management():
    """``grft_app.lit`` (module, data, checkpoints...) is used by ``grft_app.run`` (settings, launch,
    lifecycle, the runner), never the reverse."""
    graph = import_graph()
    assert any(m.startswith("grft_app.run.") for m in graph) and any(m.startswith("grft_app.lit.") for m in graph)
    assert (
        sorted(
            f"{m} imports {t}"
            for m, targets in graph.items()
            if m.startswith("grft_app.lit.")
            for t in targets
            if t == "grft_app.run" or t.startswith("grft_app.run.")
        )
        == []
    )


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_scan_sees_every_module_and_real_edges():
    """The checks above look at something: every tier's files, and imports the code really has."""
    graph = import_graph()
    assert {"grft", "grft.adapter", "grft_app.run.runner", "experiments.paper.compose"} <= set(graph)
    assert "grft.io" in graph["grft.adapter"]  # from .io import ... (relative)
    assert "grft_app.paths" in graph["experiments.paper.compose"]  # from grft_app.paths import ... (absolute)
    assert "grft.adapter" in graph["grft"]  # the package's __init__


# --- the checks themselves fail on a violation -----------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize("deferred", [False, True])
def test_an_upward_import_and_a_cycle_are_found(tmp_path, deferred):
    indent = "def f():\n    " if deferred else ""
    _write(
        tmp_path,
        {
            "grft/__init__.py": "",
            "grft/a.py": f"{indent}from grft_app import b\n",
            "grft/c.py": f"{indent}from . import d\n",
            "grft/d.py": f"{indent}from .c import x\n",
            "grft_app/__init__.py": "",
            "grft_app/b.py": f"{indent}import experiments.paper.e\n",
            "experiments/__init__.py": "",
            "experiments/paper/__init__.py": "",
            "experiments/paper/e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import grft_app.b\n",
        },
    )
    graph = import_graph(tmp_path)
    assert upward_imports(graph, "grft", ("grft_app", "experiments")) == ["grft.a imports grft_app.b"]
    assert upward_imports(graph, "grft_app", ("experiments",)) == ["grft_app.b imports experiments.paper.e"]
    assert cycles(graph) == [["grft.c", "grft.d"]]


def test_a_deferred_lightning_import_behind_the_renderer_is_found(tmp_path):
    _write(
        tmp_path,
        {
            "grft/__init__.py": "",
            "grft_app/__init__.py": "",
            "grft_app/settings.py": "def train():\n    from .module import x\n",
            "grft_app/module.py": "import lightning as L\n",
            "experiments/__init__.py": "",
            "experiments/paper/__init__.py": "",
            "experiments/paper/tables.py": "from grft_app import settings\n",
        },
    )
    found = lightning_paths(import_graph(tmp_path), "experiments.paper", tmp_path)
    assert found == ["grft_app.module <- grft_app.settings <- experiments.paper.tables"]
