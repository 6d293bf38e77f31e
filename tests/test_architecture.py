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


def import_statements(module: str):
    """``(file, line, imported module, top_level)`` for every ``hdit_edu`` module that an
    import statement of ``module`` names, function-local ones included (``top_level``: the
    statement runs when the module is imported; ``if TYPE_CHECKING:`` blocks count as not)."""
    for path in module_files(module):
        package = ("hdit_edu",) + ((module,) if path.parent != PACKAGE else ())
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            for name in sorted(_imported_modules(node, module, package)):
                yield path.relative_to(PACKAGE.parent), node.lineno, name, id(node) in top


def import_graph(*, top_level_only: bool = True) -> dict[str, set[str]]:
    """``{module: the hdit_edu modules it imports}``: its top-level imports (those run when it
    is imported, ``if TYPE_CHECKING:`` blocks excluded), or with ``top_level_only=False`` every
    import statement in the file (function-local ones too)."""
    graph = {module: set() for module in MODULES}
    for module in MODULES:
        for _, _, name, top_level in import_statements(module):
            if top_level or not top_level_only:
                graph[module].add(name)
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
    """docs/ARCHITECTURE.md keeps up with the package: every module has a row in "Modules, in
    four layers" and a place in the "Import direction" diagram."""
    import re

    doc = (PACKAGE.parent / "docs" / "ARCHITECTURE.md").read_text()
    table = doc.split("## Modules, in four layers", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `(\w+)(?:\.py|/)` \|", table, flags=re.M))
    section = doc.split("## Import direction", 1)[1]
    diagram = section.split("```", 2)[1]
    placed = set(re.findall(r"\b[a-z_]+\b", diagram))
    modules = set(MODULES) - {"__init__"}
    assert modules - rows == set(), "no row in 'Modules, in four layers'"
    assert rows - modules == set(), "a row for a module that does not exist"
    assert modules - placed == set(), "not in the import diagram"


# --- the map's layers ---------------------------------------------------------------------------

# docs/ARCHITECTURE.md's four groups, bottom first. A module imports from its own layer or the
# ones below it, never from a layer above: at the top of the file or inside a function alike.
# (Within a layer the order is the import diagram's; the cycle test and the bottom layers' test
# above keep it.) A new module gets a place here and a row under its group in the map.
LAYERS = {
    "paper core": (
        "__init__", "kinds", "env", "configs", "diffusion", "ddpm", "layers", "rope", "attention",
        "attention_analysis", "hourglass", "dit", "models", "resolution", "sampling",
    ),
    "training infrastructure": (
        "data", "toy", "toy_detail", "spectrum", "profiles", "presets", "flops", "checkpoints",
        "logging_sinks", "runs", "runfolder", "batches", "training", "evaluation",
        "toy_autoencoder", "interop", "conversion", "planner",
    ),
    "experiments": ("measure", "stats", "protocol", "analysis", "ablation", "studies"),
    "apps and tools": ("viz", "widgets", "exercises", "cli", "reference_source"),
}  # fmt: skip
LAYER_OF = {module: layer for layer, modules in LAYERS.items() for module in modules}
RANK = {layer: rank for rank, layer in enumerate(LAYERS)}

# Function-local imports are for optional or slow dependencies only, each named here with why;
# an import of another hdit_edu module inside a function obeys the layers like any other.
LAZY_IMPORTS = {
    "cleanfid": "FID/KID only; seconds to import",
    "natten": "its backends and the probe only; optional",
    "torchvision": "data.save_grid only; importing it pulls in torch._dynamo (2 s)",
    "fvcore": "flops' measured count only; importing it runs torch.jit.script, which warns",
    "matplotlib": "the ablation's and the widgets' figures only",
    "torch.utils.tensorboard": "training.tensorboard only",
    "wandb": "training.wandb only; optional",
    "IPython": "the widgets' notebook detection only",
    "torch.profiler": "the planner's CUDA peak-memory probe only",
    "resource": "the planner's CPU peak memory only (POSIX)",
    "concurrent.futures": "prepare's worker processes only",
    "scipy": "the exercises' statistics checkers only (importing scipy.stats takes about a second)",
    "tomllib": "studies.spec's TOML reader (the standard library's from Python 3.11)",
    "tomli": "studies.spec's TOML reader before Python 3.11",
}


def upward_imports(layer_of: dict[str, str]) -> list[str]:
    """Every import, top-level or function-local, of a module in a higher layer than the
    importer's: ``file:line: importer (layer) imports module (layer), a layer above``."""
    rank = {module: RANK[layer] for module, layer in layer_of.items()}
    found = []
    for module in MODULES:
        for path, line, name, _ in import_statements(module):
            if rank[name] > rank[module]:
                found.append(
                    f"{path}:{line}: {module} ({layer_of[module]}) imports {name} "
                    f"({layer_of[name]}), a layer above"
                )
    return found


def test_every_module_has_one_layer():
    assert set(LAYER_OF) == set(MODULES), (
        f"no layer: {sorted(set(MODULES) - set(LAYER_OF))}; "
        f"no such module: {sorted(set(LAYER_OF) - set(MODULES))}"
    )
    assert sum(map(len, LAYERS.values())) == len(LAYER_OF)  # none in two layers


def test_no_import_points_up_a_layer():
    """Function-local imports included (``planner`` reads ``configs``, ``flops`` and ``layers``
    inside its functions: all in a layer below it); nothing reads up."""
    upward = upward_imports(LAYER_OF)
    assert not upward, "imports against the layers of docs/ARCHITECTURE.md:\n" + "\n".join(upward)


def test_the_layer_check_catches_an_upward_function_local_import():
    """The check itself: were ``resolution`` in a layer above ``sampling`` (experiments),
    ``sampling``'s import of it would be named with its file and line."""
    moved = LAYER_OF | {"resolution": "experiments"}
    upward = upward_imports(moved)
    assert upward and all("imports resolution (experiments), a layer above" in u for u in upward)
    assert any(u.startswith("hdit_edu/sampling.py:") for u in upward), upward


def test_function_local_imports_are_the_lazy_dependencies_only():
    """A function-local import of a third-party module must be one of :data:`LAZY_IMPORTS`
    (optional or slow to import, each with its reason); everything else imports at the top."""
    stray = []
    for module in MODULES:
        for path in module_files(module):
            tree = ast.parse(path.read_text())
            top = {id(node) for node in tree.body}
            for node in ast.walk(tree):
                if id(node) in top or not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                if isinstance(node, ast.ImportFrom) and node.level:
                    continue  # an hdit_edu module: the layers decide
                names = [node.module] if isinstance(node, ast.ImportFrom) else [
                    a.name for a in node.names
                ]
                for name in names:
                    if name.split(".")[0] == "hdit_edu":
                        continue
                    if not any(name == lazy or name.startswith(lazy + ".") for lazy in LAZY_IMPORTS):
                        stray.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {name}")
    assert not stray, "function-local imports that are not lazy dependencies: " + ", ".join(stray)



def test_the_map_lists_each_module_under_its_layer():
    """docs/ARCHITECTURE.md's "Modules, in four layers": one heading per layer of
    :data:`LAYERS`, holding exactly that layer's rows."""
    import re

    doc = (PACKAGE.parent / "docs" / "ARCHITECTURE.md").read_text()
    section = doc.split("## Modules, in four layers", 1)[1].split("\n## ", 1)[0]
    groups = {}
    for chunk in section.split("\n### ")[1:]:
        heading, _, body = chunk.partition("\n")
        groups[heading.strip().lower()] = set(re.findall(r"^\| `(\w+)(?:\.py|/)` \|", body, re.M))
    groups.pop("one name per concept", None)
    assert list(groups) == list(LAYERS), list(groups)
    for layer, modules in LAYERS.items():
        assert groups[layer] == set(modules) - {"__init__"}, layer


# --- results/: records and question-specific analyses, no script imports another ---------------

RESULTS = PACKAGE.parent / "results"
# Imports between results/ scripts that were there when the rule was written down (issue 26);
# each moved into the library or benchmarks/ (issue 28). The list may only shrink: it is empty.
KNOWN_RESULTS_IMPORTS: set[str] = set()
# The ways one file can reach another's code without an import statement of its module name.
_LOADERS = {"spec_from_file_location", "import_module", "__import__", "run_path", "run_module",
            "SourceFileLoader", "exec", "execfile"}  # fmt: skip


def results_script_imports(root: Path = RESULTS) -> set[str]:
    """``"file: how"`` for every Python file under ``root`` (results/) that reaches another one:
    an import of a sibling script's module name (absolute or relative), any ``importlib`` /
    ``runpy`` / ``exec`` loader, a change of ``sys.path``, ``PYTHONPATH`` set from the code."""
    scripts = {p.stem for p in root.rglob("*.py")}
    found = set()
    for path in sorted(root.rglob("*.py")):
        where = str(path.relative_to(root.parent))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                top = (node.module or "").split(".")[0]
                if node.level:
                    found.add(f"{where}: relative import")
                elif top in scripts or top in {"importlib", "runpy"}:
                    found.add(f"{where}: imports {node.module}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    top = a.name.split(".")[0]
                    if top in scripts or top in {"importlib", "runpy"}:
                        found.add(f"{where}: imports {a.name}")
            elif isinstance(node, (ast.Attribute, ast.Name)):
                name = node.attr if isinstance(node, ast.Attribute) else node.id
                if name in _LOADERS:
                    found.add(f"{where}: loads another file ({name})")
                if isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(
                    node.value, ast.Name) and node.value.id == "sys":
                    found.add(f"{where}: puts a folder on sys.path")
            elif isinstance(node, ast.Constant) and node.value == "PYTHONPATH":
                found.add(f"{where}: sets PYTHONPATH")
    return found


def test_the_results_import_check_sees_every_way_in(tmp_path):
    """The check on real files: each way one script can reach another is found; a script that
    only imports the library and the standard library is not."""
    (tmp_path / "results" / "a").mkdir(parents=True)
    ways = {
        "b1.py": "import a2\n",
        "b2.py": "from a2 import main\n",
        "b3.py": "from . import a2\n",
        "b4.py": "import importlib.util\n",
        "b5.py": "import sys\nsys.path.insert(0, 'x')\n",
        "b6.py": "__import__('a2')\n",
        "b7.py": "import runpy\nrunpy.run_path('a2.py')\n",
        "b8.py": "exec(open('a2.py').read())\n",
        "b9.py": "import os\nos.environ['PYTHONPATH'] = '.'\n",
    }
    for name, text in ways.items():
        (tmp_path / "results" / "a" / name).write_text(text)
    (tmp_path / "results" / "a2.py").write_text("import json\nfrom hdit_edu.stats import holm\n")
    found = results_script_imports(tmp_path / "results")
    assert {f.split(":")[0].rsplit("/", 1)[-1] for f in found} == set(ways)


def test_no_results_script_imports_another():
    """docs/ARCHITECTURE.md's rule for results/: what two scripts share lives in ``hdit_edu``."""
    found = results_script_imports()
    new = found - KNOWN_RESULTS_IMPORTS
    assert not new, f"results/ scripts reaching other scripts (move the shared part into hdit_edu): {sorted(new)}"
