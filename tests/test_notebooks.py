"""Every notebook: its .py (the source of truth) and .ipynb twin agree, the .ipynb carries no
outputs, and it runs top to bottom in the ``cpu`` profile (``HDIT_PROFILE=cpu``) — any
exception or failed ``assert`` cell fails the test.

A notebook whose jupytext header has ``hdit_slow: true`` in its metadata is skipped unless
``--runslow`` is given.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from jupytext.compare import NotebookDifference, compare_notebooks
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
SOURCES = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]*_*.py"))
sys.path.insert(0, str(ROOT / "tools"))
from build_book import run_notebook  # noqa: E402  (the one notebook runner: tests and the book)


def execute_notebook(nb: nbformat.NotebookNode, cwd: Path, profile: str = "cpu") -> None:
    """Run every cell of ``nb`` in a fresh kernel; raises CellExecutionError on any error."""
    run_notebook(nb, cwd, profile)


def test_there_are_notebooks():
    assert SOURCES, f"no notebooks found in {NOTEBOOK_DIR}"
    assert (NOTEBOOK_DIR / "00_tour.py").exists()


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_pair_in_sync(source: Path):
    twin = source.with_suffix(".ipynb")
    assert twin.exists(), f"{twin.name} is missing: run `jupytext --to ipynb {source}`"
    from_py = jupytext.read(source)
    from_ipynb = nbformat.read(twin, as_version=4)
    # raises on the first difference in cell content, type or metadata
    compare_notebooks(from_ipynb, from_py, fmt="py:percent")
    for cell in from_ipynb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs, f"{twin.name} holds outputs: commit it without outputs"


@pytest.mark.notebook
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_runs_in_cpu_profile(source: Path, request):
    nb = jupytext.read(source)
    if nb.metadata.get("hdit_slow") and not request.config.getoption("--runslow"):
        pytest.skip("notebook marked hdit_slow: run with --runslow")
    execute_notebook(nb, NOTEBOOK_DIR)


# Every notebook ends with exercises.
EXERCISE_NOTEBOOKS = SOURCES


@pytest.mark.parametrize("source", EXERCISE_NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_have_collapsed_checked_solutions(source: Path):
    """2-4 exercises after an "## Exercises" heading, each with a solution cell that JupyterLab
    shows collapsed (``jupyter.source_hidden``) and that checks itself with an ``assert`` (the
    notebook run above executes it)."""
    cells = jupytext.read(source).cells
    heading = [
        i
        for i, c in enumerate(cells)
        if c.cell_type == "markdown" and c.source.lstrip().startswith("## Exercises")
    ]
    assert len(heading) == 1, f"{source.name}: expected one '## Exercises' section"
    solutions = [c for c in cells if "solution" in c.metadata.get("tags", [])]
    assert 2 <= len(solutions) <= 4, f"{source.name}: {len(solutions)} solution cells"
    for cell in solutions:
        assert cells.index(cell) > heading[0]
        assert cell.cell_type == "code"
        assert cell.metadata.get("jupyter", {}).get("source_hidden") is True
        assert "assert " in cell.source, f"{source.name}: a solution without an assert"


def test_failing_cell_fails_the_run(tmp_path: Path):
    """The harness itself: a raising cell, or a failed assert, must fail the execution."""
    for bad in ("raise RuntimeError('boom')", "assert 1 + 1 == 3, 'arithmetic'"):
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell(bad)]
        with pytest.raises(CellExecutionError):
            execute_notebook(nb, tmp_path)


def test_drift_between_pair_is_detected(tmp_path: Path):
    """The sync check itself: an edit to the .py that the .ipynb lacks must be caught."""
    nb = jupytext.read(NOTEBOOK_DIR / "00_tour.py")
    drifted = jupytext.reads(
        jupytext.writes(nb, fmt="py:percent") + "\n# %%\nprint('only in the .py')\n",
        fmt="py:percent",
    )
    with pytest.raises(NotebookDifference):
        compare_notebooks(nb, drifted, fmt="py:percent")


def _one_cell_notebook(source: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(source)]
    return nb


def test_a_hung_first_run_is_retried_once_and_a_slow_cell_still_fails(tmp_path: Path):
    """The runner's answer to a hung kernel: a cell past the time limit runs once more from the
    top in a new kernel (here it hangs only the first time), but one that is slow every time
    fails."""
    marker = tmp_path / "first-run"
    hangs_once = (
        f"import pathlib, time\np = pathlib.Path({str(marker)!r})\n"
        "if not p.exists():\n    p.touch()\n    time.sleep(60)\nprint('second run')"
    )
    nb = _one_cell_notebook(hangs_once)
    run_notebook(nb, tmp_path, timeout=5)
    assert marker.exists() and nb.cells[0].outputs[0]["text"] == "second run\n"
    with pytest.raises(CellTimeoutError):
        run_notebook(_one_cell_notebook("import time; time.sleep(60)"), tmp_path, timeout=3)


def test_an_idle_kernel_is_taken_for_hung_long_before_the_time_limit(tmp_path: Path):
    """The hang as seen: the kernel sits idle and the cell never ends. The runner's watch kills a
    kernel that uses no CPU for ``idle_s`` seconds and runs the notebook again, well before the
    cell's time limit; a busy cell longer than ``idle_s`` is left alone; idle twice fails."""
    import time

    marker = tmp_path / "first-run"
    idle_once = (
        f"import pathlib, time\np = pathlib.Path({str(marker)!r})\n"
        "if not p.exists():\n    p.touch()\n    time.sleep(120)\nprint('second run')"
    )
    t0 = time.monotonic()
    nb = run_notebook(_one_cell_notebook(idle_once), tmp_path, timeout=110, idle_s=3)
    assert nb.cells[0].outputs[0]["text"] == "second run\n"
    assert time.monotonic() - t0 < 60  # the watch, not the 110 s limit, ended the first run
    runs = tmp_path / "runs"
    busy = (  # 8 s of pure CPU: longer than idle_s, never idle (needs 1 CPU-s in any 5 s)
        f"import pathlib, time\nwith open({str(runs)!r}, 'a') as f: f.write('x')\n"
        "t = time.process_time()\nwhile time.process_time() - t < 8: pass\nprint('done')"
    )
    nb = run_notebook(_one_cell_notebook(busy), tmp_path, timeout=110, idle_s=5)
    assert nb.cells[0].outputs[0]["text"] == "done\n" and runs.read_text() == "x"
    with pytest.raises(DeadKernelError):
        run_notebook(_one_cell_notebook("import time; time.sleep(120)"), tmp_path, idle_s=2)


def test_an_interactive_cell_draws_its_default_figure_without_a_widget(tmp_path: Path):
    """The runner's kernel is headless: ``hdit_edu.widgets.interact`` calls the function once with
    the controls' values and its figure lands in the cell itself (the book shows it), under a line
    naming the values; no widget is opened (so nothing waits on a widget round trip) and no
    ``<function …>`` repr follows."""
    source = (
        "import ipywidgets as widgets, matplotlib.pyplot as plt\n"
        "from hdit_edu.widgets import front_end_attached, interact\n"
        "assert not front_end_attached()\n"
        "def show(a=1.0, n=3):\n"
        "    print(f'drawn with a={a}, n={n}')\n"
        "    plt.plot(range(n), [a] * n)\n"
        "    plt.show()\n"
        "interact(show, a=widgets.FloatSlider(value=2.5, min=0, max=5), n=4)"
    )
    nb = run_notebook(_one_cell_notebook(source), tmp_path)
    outputs = nb.cells[0].outputs
    texts = [o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs]
    assert "shown here: a = 2.5, n = 4" in texts[0]
    assert "drawn with a=2.5, n=4\n" in texts
    assert [o["output_type"] for o in outputs].count("display_data") == 2  # caption, figure
    assert "image/png" in outputs[-1]["data"]
    assert not any("<function" in t for t in texts)
    assert all(o["output_type"] != "execute_result" for o in outputs)
    widgets = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models = [w["model_name"] for w in widgets.get("state", {}).values()]
    assert "OutputModel" not in models


def test_a_cell_that_opens_an_output_widget_fails_the_run_at_once(tmp_path: Path):
    """An ``ipywidgets.Output`` with no front end is the widget round trip that hung notebook 01:
    the runner never answers it and fails the run naming the cell, every time, instead of
    sometimes hanging."""
    nb = _one_cell_notebook("x = 1")
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import ipywidgets as widgets\nout = widgets.Output()\nwith out:\n    print('hi')\nout"
        )
    )
    with pytest.raises(RuntimeError, match=r"cell\(s\) 1 opened an ipywidgets.Output"):
        run_notebook(nb, tmp_path)
