"""The import graph of ``hdit_edu`` (docs/ARCHITECTURE.md, "Import direction"): read from the
source with ``ast``, it has no cycle, and the bottom layers import only what they may."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hdit_edu"
# A module of the map is a file hdit_edu/NAME.py or a sub-package hdit_edu/NAME/ (the command
# line, ``cli``: its files together are one module of the map).
MODULES = sorted(
    [p.stem for p in PACKAGE.glob("*.py")] + [p.parent.name for p in PACKAGE.glob("*/__init__.py")]
)


def module_files(module: str) -> list[Path]:
    """The source files of a module of the map (one, or every file of a sub-package)."""
    folder = PACKAGE / module
    return sorted(folder.glob("*.py")) if folder.is_dir() else [PACKAGE / f"{module}.py"]


def _imported_modules(node: ast.stmt, module: str, package: tuple[str, ...]) -> set[str]:
    """The ``hdit_edu`` modules an import statement of ``module`` names (``from . import x``,
    ``from .x import y``, ``from ..x import y`` in a sub-package, ``from hdit_edu.x import
    y``, ``import hdit_edu.x``); ``package`` is the dotted package the file sits in."""
    targets: list[tuple[str, ...]] = []
    if isinstance(node, ast.ImportFrom):
        base = package[: len(package) - node.level + 1] if node.level else ()
        full = base + tuple(node.module.split(".") if node.module else ())
        if len(full) > 1:
            targets = [full]
        elif full == ("hdit_edu",):
            targets = [full + (a.name,) for a in node.names]
    elif isinstance(node, ast.Import):
        targets = [tuple(a.name.split(".")) for a in node.names]
    names = {t[1] for t in targets if len(t) > 1 and t[0] == "hdit_edu"}
    return {name for name in names if name in MODULES and name != module}


def import_graph(*, top_level_only: bool = True) -> dict[str, set[str]]:
    """``{module: the hdit_edu modules it imports}``: its top-level imports (those run when it
    is imported, ``if TYPE_CHECKING:`` blocks excluded), or with ``top_level_only=False`` every
    import statement in the file (function-local ones too)."""
    graph = {}
    for module in MODULES:
        graph[module] = set()
        for path in module_files(module):
            package = ("hdit_edu",) + ((module,) if path.parent != PACKAGE else ())
            tree = ast.parse(path.read_text())
            nodes = tree.body if top_level_only else list(ast.walk(tree))
            for node in nodes:
                graph[module] |= _imported_modules(node, module, package)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, …, a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


@pytest.mark.parametrize("top_level_only", [True, False], ids=["top-level", "all imports"])
def test_the_import_graph_has_no_cycle(top_level_only):
    graph = import_graph(top_level_only=top_level_only)
    assert len(graph) == len(MODULES) >= 20 and graph["training"] >= {"models", "checkpoints"}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_bottom_layers_import_only_what_they_may():
    graph = import_graph(top_level_only=False)
    # the vocabulary and the environment are leaves; configs sit on them only
    assert graph["kinds"] == set() and graph["env"] == set()
    assert graph["configs"] <= {"kinds", "env"}, graph["configs"]
    # the maths of §3.1 takes plain values, not configs; the blocks know nothing of models
    assert graph["diffusion"] <= {"kinds", "env"}, graph["diffusion"]
    for module in ("layers", "rope", "attention"):
        assert graph[module] <= {"kinds", "env", "rope", "layers"}, (module, graph[module])
    # only models picks HDiT or DiT; no model module imports the training side
    users_of_architectures = {m for m, deps in graph.items() if deps & {"hourglass", "dit"}}
    assert users_of_architectures <= {"models", "widgets", "viz"}, users_of_architectures
    for module in ("hourglass", "dit", "models"):
        assert not graph[module] & {"training", "runs", "checkpoints", "cli"}, module
    # the reference-source loader serves tests and benchmarks: the library never imports it
    assert not any("reference_source" in deps for deps in graph.values())
    # the command line is the top: nothing imports it
    assert not any("cli" in deps for deps in graph.values())


def test_the_architecture_map_names_every_module():
    """docs/ARCHITECTURE.md keeps up with the package: every module has a row in "Modules ↔
    paper" and a place in the "Import direction" diagram."""
    import re

    doc = (PACKAGE.parent / "docs" / "ARCHITECTURE.md").read_text()
    rows = set(re.findall(r"^\| `(\w+)(?:\.py|/)` \|", doc, flags=re.M))
    section = doc.split("## Import direction", 1)[1]
    diagram = section.split("```", 2)[1]
    placed = set(re.findall(r"\b[a-z_]+\b", diagram))
    modules = set(MODULES) - {"__init__"}
    assert modules - rows == set(), "no row in 'Modules ↔ paper'"
    assert rows - modules == set(), "a row for a module that does not exist"
    assert modules - placed == set(), "not in the import diagram"
