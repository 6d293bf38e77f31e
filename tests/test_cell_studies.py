"""Evaluation-only studies (``[cells]`` in a ``study.toml``; :mod:`hdit_edu.studies.cells`,
:mod:`hdit_edu.studies.cell_report`): the shipped guidance sweep and resolution study are
specs whose analyses give their shipped summaries byte for byte; the best-cell analysis in
closed form; the spec's validation; the per-cell evaluation on real (tiny) trained runs, where
the cell at the run's own settings is its own final evaluation, number for number."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import TINY_STUDY
from scipy import stats

from hdit_edu.studies import cell_report, cells, registration, runner
from hdit_edu.studies.spec import SpecError, load_study

ROOT = Path(__file__).resolve().parents[1]
GUIDANCE = ROOT / "results" / "ablation-toy" / "guidance"
RESOLUTION = ROOT / "results" / "resolution-toy"


@pytest.mark.parametrize("folder", [GUIDANCE, RESOLUTION], ids=["guidance", "resolution"])
def test_the_shipped_cell_studies_reproduce_their_summaries_byte_for_byte(folder):
    """The guidance sweep's and the resolution study's specs (≤ 35 lines, registered, the text
    unchanged since) analysed by the library give their shipped summary.json and summary.md
    exactly, from the shipped records."""
    spec = folder / "study.toml"
    assert len(spec.read_text().splitlines()) <= 35
    study = registration.check(spec)  # registered; the spec is the accepted text
    result = cell_report.analyze(study)
    assert json.dumps(result, indent=1) + "\n" == (folder / "summary.json").read_text()
    assert cell_report.markdown(result, study) == (folder / "summary.md").read_text()


def test_the_shipped_grids_and_their_records():
    """Guidance: five scales, keys w1 … w4, every record's five cells read (2,048 samples);
    resolution: 13 cells (one at 32², four at each other size), every record's 13 read."""
    guidance, resolution = load_study(GUIDANCE), load_study(RESOLUTION)
    assert [guidance.cells.key(c) for c in guidance.cells.cells()] == [
        "w1", "w1.5", "w2", "w3", "w4"]  # fmt: skip
    keys = [resolution.cells.key(c) for c in resolution.cells.cells()]
    assert len(keys) == 13 and keys.count("32-normalised-noshift") == 1
    assert "32-grid-shift" not in keys and "64-grid-shift" in keys
    assert resolution.cells.key(resolution.cells.base) == "32-normalised-noshift"
    runs = cells.load(guidance)
    assert {a: sorted(s) for a, s in runs.items()} == {"C-smsnr": [0, 1, 2], "E": [0, 1, 2]}
    assert all(len(c) == 5 for by_seed in runs.values() for c in by_seed.values())
    runs = cells.load(resolution)
    assert list(runs) == ["C", "D", "L"]
    assert all(sorted(c) == sorted(keys) for by_seed in runs.values() for c in by_seed.values())
    assert all(r["state"] == "done" for r in cells.status(resolution))


def test_best_cell_picks_each_arms_best_w_and_pairs_the_two_by_seed():
    """Synthetic records with closed-form curves: C-smsnr's FID 20 + 4(w − 1.5)² + s, E's
    7 + 2(w − 3)² + 2s (seed s): best w 1.5 and 3, and E − C-smsnr at those scales is
    −13 + s for s = 0, 1, 2, i.e. −12 ± t₀.₉₇₅,₂ · 1/√3; at one w the same pairing by seed."""
    study = load_study(GUIDANCE)
    scales = (1.0, 1.5, 2.0, 3.0, 4.0)
    curves = {"C-smsnr": lambda w, s: 20 + 4 * (w - 1.5) ** 2 + s,
              "E": lambda w, s: 7 + 2 * (w - 3) ** 2 + 2 * s}  # fmt: skip
    extra = dict(fid_mean_term=1.0, coherence=0.5, spread_within_class=1.0, cpu_s=36.0)
    runs = {
        arm: {s: {f"w{w:g}": {"cfg": w, "fid": f(w, s), "class_accuracy": w / 10 + s / 100,
                             **extra} for w in scales} for s in range(3)}
        for arm, f in curves.items()
    }  # fmt: skip
    result = cell_report.best_cell(study, runs)
    assert result["best_w"] == {"C-smsnr": 1.5, "E": 3.0}
    fid = result["primary"]["fid"]["difference"]
    half = stats.t.ppf(0.975, 2) / math.sqrt(3)
    assert fid["values"] == pytest.approx([-13, -12, -11])
    assert fid["ci95"] == pytest.approx([-12 - half, -12 + half])
    assert result["verdict"] == "robust: E is better at every model's own best w"
    acc = result["primary"]["class_accuracy"]["difference"]
    assert acc["values"] == pytest.approx([0.15, 0.15, 0.15])  # 3/10 − 1.5/10, same seed
    rows = {(r["cfg"], r["metric"]): r["difference"] for r in result["per_w"]}
    assert rows[4.0, "fid"]["values"] == pytest.approx([(7 + 2) - (20 + 25) + s for s in range(3)])
    assert result["cpu_h"] == pytest.approx(30 * 36 / 3600)
    assert cell_report.best_verdict([-1.0, 2.0], "C-smsnr", "E", "fid").startswith("not robust")
    assert cell_report.best_verdict([0.5, 2.0], "C-smsnr", "E", "fid").startswith("reversed: C-smsnr")
    # higher-is-better: a CI above 0 means Y is better
    assert cell_report.best_verdict([0.5, 2.0], "A", "B", "class_accuracy").startswith("robust: B")
    assert "| each at its best w (pre-registered) | -12 [" in cell_report.markdown(result, study)


CELL_SPEC = """\
question = "q"
seeds = [0]
arms = ["B2", "C"]

[evaluation]
metrics = ["fid", "class_accuracy"]

[cells]
cfg = [1.0, 3.0]
n = 16
checkpoints = { B2 = "x", C = "y" }
analysis = "best-cell"

[analysis]
comparisons = [["B2", "C", "+ GEGLU", "better"]]
"""


@pytest.mark.parametrize(
    "change, message",
    [
        (("", ""), None),
        (("n = 16", "n = 0"), "cells.n: 0; allowed: an integer > 0"),
        (("cfg = [1.0, 3.0]", "resolution = [24, 32]"), "best-cell chooses among guidance scales"),
        (("cfg = [1.0, 3.0]", "cfg = [1.0, 1.0]"), r"cells.cfg: \[1.0, 1.0\]; allowed: a list of distinct"),
        (("n = 16", 'n = 16\npositions = ["normalised", "sideways"]'), r"cells.positions: .*allowed"),
        (("n = 16", 'n = 16\neffects = ["shift"]'), "cells.effects: 'shift'; allowed"),
        (('"best-cell"', '"at-random"'), "cells.analysis: 'at-random'; allowed: best-cell, from-base"),
        (("n = 16", "n = 16\nwobble = 1"), "cells.wobble: unknown field"),
    ],
)
def test_a_cell_spec_is_validated_with_messages_naming_the_field(tmp_path, change, message):
    (tmp_path / "study.toml").write_text(CELL_SPEC.replace(*change))
    if message is None:
        assert load_study(tmp_path).cells.analysis == "best-cell"
        return
    with pytest.raises(SpecError, match=message):
        load_study(tmp_path)


def test_coherence_is_a_cell_metric_only_where_it_is_measured(tmp_path):
    text = CELL_SPEC.replace('"class_accuracy"]', '"coherence"]')
    (tmp_path / "study.toml").write_text(text)
    with pytest.raises(SpecError, match="'coherence' needs cells.coherence = true"):
        load_study(tmp_path)
    text = text.replace("n = 16", "n = 16\ncoherence = true")
    (tmp_path / "study.toml").write_text(text)
    assert load_study(tmp_path).metrics == ("fid", "coherence")


TINY_TRAIN = TINY_STUDY.replace("seeds = [0, 1]", "seeds = [0]").replace(
    "Does GEGLU (C) beat GELU (B2) on a tiny budget?", "two tiny runs to measure at cells"
)

TINY_CELLS = """\
question = "the tiny runs at other cells"
seeds = [0]
arms = ["B2", "C"]

[evaluation]
metrics = ["{first}", "class_accuracy"]
sample_steps = 3
sample_batch = 16

[cells]
{axes}
n = 16
checkpoints = {{ B2 = "{runs}/B2-s{{seed}}", C = "{runs}/C-s{{seed}}" }}
analysis = "{analysis}"

[analysis]
comparisons = [["B2", "C", "+ GEGLU", "better"]]
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Two tiny trained runs (10 steps; final evaluation: 16 samples, 3 steps, w = 3)."""
    folder = tmp_path_factory.mktemp("train")
    spec = folder / "study.toml"
    spec.write_text(TINY_TRAIN.format(checkpoints=folder / "checkpoints"))
    registration.register(spec)
    assert runner.run(spec, progress=False, log=lambda *a: None)["ok"]
    return spec


def _cell_study(folder: Path, trained: Path, axes: str, analysis: str, first="fid") -> Path:
    folder.mkdir()
    spec = folder / "study.toml"
    runs = trained.parent / "checkpoints"
    spec.write_text(TINY_CELLS.format(axes=axes, runs=runs, analysis=analysis, first=first))
    registration.register(spec)
    return spec


def test_cells_at_the_runs_own_settings_are_their_final_evaluations(trained, tmp_path):
    """A cell study of two trained runs over w ∈ {1, 3}: the w = 3 cell (same checkpoint,
    sampler, steps, noise seed 1000 + seed, 16 samples) equals each run's own final
    evaluation exactly; a second run measures nothing again; the report is written."""
    spec = _cell_study(tmp_path / "guid", trained, "cfg = [1.0, 3.0]", "best-cell")
    study = load_study(spec)
    assert [r["state"] for r in cells.status(study)] == ["queued", "queued"]
    cells.run(study)
    finals = {a: json.loads((trained.parent / "runs" / f"{a}-s0.json").read_text())["final"]
              for a in ("B2", "C")}  # fmt: skip
    for arm in ("B2", "C"):
        record = json.loads((study.records / f"{arm}-s0.json").read_text())
        assert record["status"] == "done" and list(record["cells"]) == ["w1", "w3"]
        w3 = record["cells"]["w3"]
        assert (w3["fid"], w3["class_accuracy"]) == (finals[arm]["fid"], finals[arm]["class_accuracy"])
        assert record["cells"]["w1"]["fid"] != w3["fid"]
        assert (study.records / "grids" / f"{arm}-s0-w1.png").exists()
    before = {p.name: p.read_bytes() for p in study.records.glob("*.json")}
    cells.run(study)  # resumable: every cell is there, nothing is measured again
    assert {p.name: p.read_bytes() for p in study.records.glob("*.json")} == before
    result = cell_report.report(spec)
    assert set(result["best_w"].values()) <= {1.0, 3.0} and result["models"] == ["B2", "C"]
    assert {"summary.json", "summary.md", "summary.png"} <= {p.name for p in spec.parent.iterdir()}


def test_cells_at_other_sizes_readings_and_shift(trained, tmp_path):
    """Sizes 32 and 48 × both readings × the σ shift: five cells per run (one at the training
    size, whose numbers are the run's final evaluation), and the from-base analysis pairs them."""
    axes = 'resolution = [32, 48]\npositions = ["normalised", "grid"]\nshift = [false, true]'
    spec = _cell_study(tmp_path / "res", trained, axes, "from-base", first="class_accuracy")
    study = load_study(spec)
    cells.run(study)
    final = json.loads((trained.parent / "runs" / "C-s0.json").read_text())["final"]
    record = json.loads((study.records / "C-s0.json").read_text())
    assert sorted(record["cells"]) == ["32-normalised-noshift", "48-grid-noshift", "48-grid-shift",
                                       "48-normalised-noshift", "48-normalised-shift"]  # fmt: skip
    assert record["cells"]["32-normalised-noshift"]["class_accuracy"] == final["class_accuracy"]
    assert record["cells"]["48-grid-noshift"]["resolution"] == 48
    summary = cell_report.analyze(study)
    entry = summary["paired"]["C-B2"]["48-grid-shift"]["class_accuracy"]
    runs = cells.load(study)
    d = [runs[a][0][k]["class_accuracy"] for a in ("B2", "C") for k in ("48-grid-shift", "32-normalised-noshift")]
    assert entry["difference_of_change"]["values"] == pytest.approx([(d[2] - d[3]) - (d[0] - d[1])])
    assert entry["verdict"] == "not resolved"  # one seed: no interval


def test_the_study_command_line_on_the_shipped_cell_studies(capsys, tmp_path):
    """``hdit-edu study status / analyze --json / report`` of an evaluation-only study: the
    resolution study's nine runs are done at 13 cells each; analyze --json prints the shipped
    guidance summary.json; report --out writes the shipped summary.json and .md exactly and the
    figure; a changed spec is refused."""
    from hdit_edu.cli import main

    assert main(["study", "status", str(RESOLUTION)]) == 0
    out = capsys.readouterr().out
    assert out.count(" done ") == 9 and out.count("13/13") == 9
    assert main(["study", "analyze", str(GUIDANCE), "--json"]) == 0
    assert capsys.readouterr().out == (GUIDANCE / "summary.json").read_text()
    assert main(["study", "report", str(RESOLUTION), "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    for name in ("summary.json", "summary.md"):  # (the figure's bytes depend on matplotlib's)
        assert (tmp_path / name).read_bytes() == (RESOLUTION / name).read_bytes(), name
    assert (tmp_path / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    copy = tmp_path / "changed"
    copy.mkdir()
    for name in ("study.toml", "registration.json"):
        (copy / name).write_text((GUIDANCE / name).read_text())
    spec = copy / "study.toml"
    spec.write_text(spec.read_text().replace("n = 2048", "n = 1024"))
    assert main(["study", "analyze", str(copy)]) == 2
    assert "changed since it was registered" in capsys.readouterr().err
