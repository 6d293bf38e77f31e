"""hdit_edu.exercises: one checker per exercise of the notebooks, a stub and a checked solution for
each, and checkers that accept the right answer, name what is wrong in a wrong one and wait for
an unanswered stub."""

from __future__ import annotations

import math
import re
from pathlib import Path

import jupytext
import pytest

from hdit_edu.exercises import CHECKERS, check, passes

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]*_*.py"))
CALL = re.compile(r'check\("(\w+\.\d+)"')


def _exercise_cells(source: Path):
    cells = jupytext.read(source).cells
    stubs = [c for c in cells if "exercise" in c.metadata.get("tags", [])]
    solutions = [c for c in cells if "solution" in c.metadata.get("tags", [])]
    return cells, stubs, solutions


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_has_a_stub_before_a_solution_that_passes_its_checker(source: Path):
    """Each solution cell follows the student's answer cell of the same exercise: the stub
    calls ``check("NN.k", …)`` on a ``...`` placeholder, the solution ``assert passes("NN.k", …)``
    (the notebook run in CI executes it), numbered 1, 2, … within the notebook."""
    cells, stubs, solutions = _exercise_cells(source)
    prefix = source.stem.split("_")[0]
    assert 2 <= len(solutions) == len(stubs) <= 4, source.name
    for k, (stub, solution) in enumerate(zip(stubs, solutions), start=1):
        want = f"{prefix}.{k}"
        assert CALL.findall(stub.source) == [want], (source.name, stub.source)
        assert "..." in stub.source, f"{source.name}: the stub of {want} has no ... to fill in"
        assert f'assert passes("{want}"' in solution.source, (source.name, want)
        assert cells.index(stub) < cells.index(solution), want
        between = cells[cells.index(stub) + 1 : cells.index(solution)]
        assert all(c.cell_type == "markdown" or "solution" in c.metadata.get("tags", [])
                   for c in between), want  # fmt: skip


def test_every_checker_belongs_to_an_exercise():
    found = set()
    for source in NOTEBOOKS:
        _, stubs, _ = _exercise_cells(source)
        found |= {i for c in stubs for i in CALL.findall(c.source)}
    assert found == set(CHECKERS) and len(found) == 35


def test_an_unanswered_stub_waits_and_an_unknown_id_is_an_error(capsys):
    assert passes("01.1", (..., ...)) is False
    assert "not answered yet" in capsys.readouterr().out
    assert check("01.1", (0.25, 8.0)) is None  # the student's cell: the message, no True/False
    assert "✓ correct" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown exercise '99.1'"):
        check("99.1", 1)


@pytest.mark.parametrize(
    ("exercise_id", "right", "wrong", "hint"),
    [
        ("00.1", 65536 / 87296, 0.5, "outermost level's count"),
        ("01.1", (0.25, 8.0), (0.25, 16.0), "soft-min-SNR weight there"),
        ("01.3", (19, 10), (20, 10), "Heun's last step"),
        ("01.4", 157.407, 15.7407, "product of (1 − β_s)"),
        ("02.2", (0.5, math.sqrt(0.5)), (0.0, 1.0), "f² + (1 − f)²"),
        ("02.3", 2 * 384**2 + 2 * 768**2, 2 * 384**2, "2d → d"),
        ("03.1", (9 * 768**2, 8 * 768**2), (8 * 768**2, 8 * 768**2), "GEGLU parameters"),
        ("04.1", (25, 9), (9, 9), "NATTEN's keys"),
        ("04.2", (64 * 64 + 128 * 32 + 64 * 16) / 256, 64, "average"),
        ("04.3", 3, 5, "odd"),
        ("05.2", 256 * 256 * 128 * 12, 256 * 256 * 64 * 12, "per head"),
        ("07.1", 1_000_000 * 256 / 70_000, 1_000_000 / 70_000, "global batch"),
        ("07.2", 64, 16, "times 2"),
        ("10.2", (64, 144), (144, 144), "repeats border cells"),
    ],
)
def test_a_checker_accepts_the_answer_and_explains_a_wrong_one(
    exercise_id, right, wrong, hint, capsys
):
    assert passes(exercise_id, right) is True
    assert "✓" in capsys.readouterr().out
    assert passes(exercise_id, wrong) is False
    assert hint in capsys.readouterr().out


def test_an_answer_of_the_wrong_form_gets_a_hint_not_a_traceback(capsys):
    assert passes("03.3", "a string") is False
    assert "wrong form" in capsys.readouterr().out
