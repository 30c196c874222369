"""The shape of the package (issue 23): imports run only downward through an explicit layer order and never
in a circle, and no source file grows past ~400 lines without saying why at its top."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "unlearnrec"

# Lowest first. A module may import its own layer and the layers below it, never one above.
# The first segment after ``unlearnrec.`` names the layer (``unlearnrec`` itself: the package root).
LAYERS: list[set[str]] = [
    {"", "errors", "config", "runtime", "losses"},  # foundations: no project imports but each other
    {"io"},  # checkpoints, atomic writes
    {"data"},  # interactions, graphs, datasets, sampling (+ Batch)
    {"eval"},  # ranking and membership metrics
    {"backbones"},  # the Backbone contract and the recommenders
    {"train"},  # fit: the one training loop
    {"model"},  # TrainedModel
    {"unlearn"},  # the Unlearner contract, the methods, ledger and verification
    {"experiments"},  # grids, store, cells, runner, results, studies, reports
    {"cli", "__main__", "serve"},  # the boundaries: command line and service
]
MAX_LINES = 400
REASON = "# long file:"


def _layer(module: str) -> int:
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else ""
    for k, names in enumerate(LAYERS):
        if head in names:
            return k
    raise AssertionError(f"module {module} is in no layer: add '{head}' to LAYERS in {__file__}")


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = p.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


@functools.cache
def _tree(path: Path) -> ast.Module:
    """The parsed source of ``path`` (each file parsed once for all the tests here)."""
    return ast.parse(path.read_text(), str(path))


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (annotations, never imported)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in ``path`` at run time (module level or inside functions)."""
    found = set()
    for node in _runtime_nodes(_tree(path)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import sub`` imports the module pkg.sub where there is one
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                for a in node.names
            ]
        found.update(n for n in names if n == "unlearnrec" or n.startswith("unlearnrec."))
    return found


@functools.cache
def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {d for d in _imports(p, modules) if d != m} for m, p in modules.items()}


def test_no_upward_import():
    upward = [
        f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
        for m, deps in _graph().items()
        for d in sorted(deps)
        if _layer(d) > _layer(m)
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_type_checking_imports_are_not_run_time_imports():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\nelse:\n    import b\nimport c"
    )
    names = {n.names[0].name for n in _runtime_nodes(tree) if isinstance(n, ast.Import)}
    assert names == {"b", "c"}


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_layers_catch_an_upward_import():
    assert _layer("unlearnrec.data.sampling") < _layer("unlearnrec.backbones.base")
    with pytest.raises(AssertionError, match="in no layer"):
        _layer("unlearnrec.nowhere")


def test_long_files_say_why():
    """A source file over ~400 lines carries ``# long file: <reason>`` in its first five lines."""
    unexplained = []
    for p in sorted(PACKAGE.rglob("*.py")):
        lines = p.read_text().splitlines()
        if len(lines) > MAX_LINES and not any(line.startswith(REASON) for line in lines[:5]):
            unexplained.append(f"{p.relative_to(SRC)}: {len(lines)} lines")
    assert not unexplained, "over 400 lines without a reason at the top:\n" + "\n".join(unexplained)


BOUNDARY_ONLY = ("argparse", "tqdm")


def test_only_the_command_line_imports_argparse_or_tqdm():
    """The library logs and returns; parsing arguments and drawing progress bars belong to ``cli/``."""
    offenders = []
    for p in sorted(PACKAGE.rglob("*.py")):
        if p.relative_to(PACKAGE).parts[0] == "cli":
            continue
        for node in ast.walk(_tree(p)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{p.relative_to(SRC)} imports {n}" for n in names if n.split(".")[0] in BOUNDARY_ONLY
            ]
    assert not offenders, "\n".join(offenders)
