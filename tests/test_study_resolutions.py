"""A study's cells (``hdit_edu.studies.resolutions``, issue 30): one question at several resolutions,
equal training FLOPs per cell with each arm's steps derived from its analytic FLOPs before any
run, anytime evaluations, the detail metric and per-resolution evaluation classifiers, per-cell
signs, the crossover reading and the benchmark's ``exponent``.

The FLOP numbers are the closed-form counts of ``benchmarks/hourglass_vs_global.py --costs``
(README of ``results/hourglass-vs-global``); the end-to-end study is tiny (16² and 32², a few
steps, 8–16 samples, classifiers trained on 512 images): it tests the machinery, not HDiT."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_STUDY

from hdit_edu.analysis import complete
from hdit_edu.studies import registration, report, runner
from hdit_edu.studies import resolutions as resolutions
from hdit_edu.studies.resolutions import TRAIN_FLOPS_PER_MAC, anytime_steps, derived_steps
from hdit_edu.studies.spec import SpecError, load_study
from hdit_edu.toy import MissingWeightsError, train_toy_classifier
from hdit_edu.toy_detail import ToyDetailDataset

ROOT = Path(__file__).resolve().parents[1]
HOURGLASS = ROOT / "results" / "hourglass-vs-global" / "study.toml"

# Forward multiply-adds per image (flops.analytic_terms, closed form), batch 16 (the study's).
MAC = {
    ("E", 32): 15_630_976, ("E", 64): 46_793_344, ("E", 128): 171_344_512,
    ("global", 32): 45_105_792, ("global", 64): 217_334_400, ("global", 128): 1_472_479_872,
}  # fmt: skip

CELLS = """\
question = "At equal FLOPs, where does the hourglass pay?"
seeds = [0, 1]
checkpoints = "{checkpoints}"

[arms]
E = "E"
global = {{ config = "R4", set = ["model.ffn=geglu", "model.pos_emb=rope"] }}

[task]
data = "toy-detail"
task = "p4k3"
resolutions = {resolutions}
batch_size = {batch}
budget = {{ kind = "flops", final_gflop = {budget} }}
anytime = {anytime}

[evaluation]
n_eval = 16
n_eval_mid = 8
n_loss = 16
sample_steps = 2
sample_batch = 16
classifiers = {classifiers}
metrics = ["class_accuracy", "coherence", "detail_distance", "fid", "heldout_loss"]

[analysis]
comparisons = [["global", "E", "hourglass vs global", {expect}]]
rule = "ci"
family = "comparison"
crossover = {{ win = ["detail_distance"], not_worse = ["class_accuracy"] }}
{scaling}"""


PLAIN = TINY_STUDY  # conftest: the tiny two-arm study


def cell_spec(folder: Path, **values) -> Path:
    fields = {
        "resolutions": "[32, 64, 128]", "batch": 16, "anytime": "[0.125, 0.25, 0.5, 1.0]",
        "budget": "{ 32 = 1500.573696, 64 = 3000, 128 = 20000 }",
        "classifiers": '{ 32 = "c32", 64 = "c64", 128 = "c128" }',
        "expect": '{ 32 = "none", 64 = "none", 128 = "better" }', "scaling": "",
        "checkpoints": folder / "checkpoints",
    } | values  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "study.toml"
    spec.write_text(CELLS.format(**fields))
    return spec


def test_each_arms_steps_are_the_budget_over_its_analytic_flops_per_step(tmp_path):
    study = load_study(cell_spec(tmp_path / "s"))
    plan = {(p.arm, p.resolution): p for p in study.resolution_cells.plan}
    assert {k: p.forward_mac for k, p in plan.items()} == MAC
    budget = {32: 1500.573696, 64: 3000, 128: 20000}
    for (arm, n), p in plan.items():
        assert p.step_flops == 6 * MAC[arm, n] * 16
        assert p.steps == round(budget[n] * 1e9) // (6 * MAC[arm, n] * 16)  # ⌊budget ÷ per step⌋
        assert p.steps * p.step_flops <= budget[n] * 1e9 < (p.steps + 1) * p.step_flops
    # 32²: the budget is exactly 1,000 of E's steps, 346.5 of the global arm's (2.886× E's)
    assert plan["E", 32].steps == 1000 and plan["global", 32].steps == 346
    assert plan["E", 32].eval_steps == (125, 250, 500, 1000)
    assert plan["global", 32].eval_steps == (43, 87, 173, 346)  # ⌊f·346 + ½⌋: 43.25, 86.5, 173
    # 128²: the global arm's step costs 8.59× E's (1.472 vs 0.171 GMAC per image)
    assert (plan["E", 128].steps, plan["global", 128].steps) == (1215, 141)
    assert TRAIN_FLOPS_PER_MAC == 6 and derived_steps(1.0, 10**9 + 1) == 0
    assert anytime_steps((0.5, 1.0), 7) == (4, 7)


def test_cells_become_arms_and_per_cell_comparisons_with_their_own_signs(tmp_path):
    study = load_study(cell_spec(tmp_path / "s"))
    labels = [a.label for a in study.arms]
    assert labels == ["E@32", "global@32", "E@64", "global@64", "E@128", "global@128"]
    e128 = study.arm("E@128")
    assert (e128.base, e128.resolution, e128.config) == ("E", 128, "E")
    b = e128.budget
    assert (b.resolution, b.data, b.classifier, b.train_steps) == (128, "toy-detail", "c128", 1215)
    assert b.eval_at == "152,304,608"  # ⌊f·1215 + ½⌋ for f = 1/8, 1/4, 1/2
    assert [(c.x, c.y, c.expect) for c in study.comparisons] == [
        ("global@32", "E@32", "none"), ("global@64", "E@64", "none"),
        ("global@128", "E@128", "better"),
    ]  # fmt: skip
    assert study.comparisons[2].what == "hourglass vs global @ 128²"
    # seed-major over every cell: a part-finished study holds whole seeds of every cell
    assert [(a.label, s) for a, s in study.runs()][:7] == [
        (label, 0) for label in labels
    ] + [("E@32", 1)]


@pytest.mark.parametrize(
    "values, message",
    [
        ({"anytime": "[0.5, 0.25, 1.0]"}, "task.anytime"),
        ({"anytime": "[0.25, 0.5]"}, "task.anytime"),
        ({"budget": "{ 32 = 1, 64 = 1 }"}, "task.budget.final_gflop"),
        ({"budget": "{ 32 = 0.01, 64 = 100, 128 = 100 }"}, "less than one step"),
        ({"expect": '{ 32 = "none", 64 = "better" }'}, "analysis.comparisons[0]"),
        ({"expect": '{ 32 = "none", 64 = "x", 128 = "better" }'}, "analysis.comparisons[0]"),
        ({"resolutions": "[64, 32, 128]"}, "task.resolutions"),
        ({"resolutions": "[32, 60, 128]"}, "task.resolutions"),
        ({"batch": "4\ntrain_steps = 100"}, "task.train_steps"),
        ({"classifiers": '{ 32 = "a", 64 = "b", 128 = "c" }\nfid_ae = true'}, "evaluation.fid_ae"),
        ({"classifiers": '{ 32 = "a", 64 = "b" }'}, "evaluation.classifiers"),
        ({"classifiers": '{ 32 = "a", 64 = "b", 128 = "c" }\neval_at = "5"'}, "evaluation.eval_at"),
        ({"budget": "{ 32 = 100, 64 = -1, 128 = 100 }"}, "task.budget.final_gflop.64"),
        # E@32 gets 13 steps (1/8, 1/4 → steps 2, 3), the global arm 4: 1/8 and 1/4 → step 1
        ({"budget": "{ 32 = 20, 64 = 100, 128 = 1000 }"}, "task.anytime"),
    ],
)
def test_the_cell_keys_are_validated_with_messages_naming_the_field(tmp_path, values, message):
    spec = cell_spec(tmp_path / "s", **values)
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_study(spec)


def test_cell_keys_need_resolutions_and_detail_metrics_need_toy_detail(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    plain = PLAIN.format(checkpoints=folder / "c")
    (folder / "study.toml").write_text(plain.replace("batch_size = 4", "batch_size = 4\nanytime = [1.0]"))
    with pytest.raises(SpecError, match="task.anytime: needs task.resolutions"):
        load_study(folder)
    (folder / "study.toml").write_text(
        plain.replace('n_eval = 16', 'n_eval = 16\nmetrics = ["fid", "detail_distance"]')
    )
    with pytest.raises(SpecError, match='detail_distance.*needs task.data = "toy-detail"'):
        load_study(folder)


def test_the_hourglass_study_loads_with_both_arms_at_every_resolution():
    study = load_study(HOURGLASS)
    assert study.resolution_cells.resolutions == (32, 64, 128) and study.resolution_cells.data == "toy-detail"
    plan = {(p.arm, p.resolution): p for p in study.resolution_cells.plan}
    assert {k: p.forward_mac for k, p in plan.items()} == MAC
    assert study.resolution_cells.classifiers == {n: f"data/toy_detail_classifier/{n}" for n in (32, 64, 128)}
    for n in (32, 64, 128):  # equal FLOPs: both arms spend the cell's budget to within a step
        for arm in ("E", "global"):
            p = plan[arm, n]
            assert study.resolution_cells.final_gflop[n] - p.step_flops / 1e9 < p.gflop <= study.resolution_cells.final_gflop[n]


def test_a_study_without_its_classifiers_is_refused_before_any_training(tmp_path):
    spec = cell_spec(tmp_path / "s", classifiers='{ 32 = "/nonexistent/c32", 64 = "c64", 128 = "c128" }')
    registration.register(spec)
    with pytest.raises(MissingWeightsError, match="--data toy-detail --resolution 32"):
        runner.work(spec, progress=False, log=lambda *a: None)
    assert not (tmp_path / "s" / "checkpoints").exists()


# --- end to end: two arms, two resolutions, two seeds ---------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """Classifiers at 16² and 32² (512 detail images, one epoch), then a registered cell study
    run to the end (8 runs of 2–11 steps) with a benchmark file for ``exponent``."""
    root = tmp_path_factory.mktemp("cells")
    paths = {}
    for n in (16, 32):
        paths[n] = root / f"classifier{n}"
        train_toy_classifier(paths[n], epochs=1, batch_size=64, resolution=n, train_size=512,
                             test_size=256, log=None, dataset=ToyDetailDataset)  # fmt: skip
    bench = root / "bench.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "hourglass_vs_global.py"), "--max-res", "64",
         "--repeats", "1", "--warmup", "0", "--out", str(bench)],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    spec = cell_spec(
        root / "study", resolutions="[16, 32]", batch=4, anytime="[0.5, 1.0]",
        budget="{ 16 = 2.0, 32 = 4.0 }",
        classifiers=f'{{ 16 = "{paths[16]}", 32 = "{paths[32]}" }}',
        expect='{ 16 = "none", 32 = "better" }', scaling=f'scaling = "{bench}"\n',
    )  # fmt: skip
    registration.register(spec)
    result = runner.run(spec, progress=False, log=lambda *a: None)
    assert result["ok"], result
    return spec


def test_a_tiny_two_resolution_study_runs_with_anytime_evaluations_at_its_steps(finished):
    study = load_study(finished)
    plan = {(p.arm, p.resolution): p for p in study.resolution_cells.plan}
    # ⌊2 GFLOP ÷ (6 · MAC · 4)⌋ at 16², ⌊4 GFLOP ÷ …⌋ at 32²
    assert {k: p.steps for k, p in plan.items()} == {
        ("E", 16): 11, ("global", 16): 7, ("E", 32): 10, ("global", 32): 3
    }  # fmt: skip
    for arm in study.arms:
        p = plan[arm.base, arm.resolution]
        for seed in (0, 1):
            record = json.loads(runner.record_path(study, arm, seed).read_text())
            assert complete(record, study.metrics)
            assert [e["step"] for e in record["evaluations"]] == list(p.eval_steps)
            assert [e["n_samples"] for e in record["evaluations"]] == [8, 16]
            s = record["settings"]
            assert (s["resolution"], s["data"], s["train_steps"]) == (arm.resolution, "toy-detail", p.steps)
            config = record["config"]
            assert config["model"]["resolution"] == arm.resolution
            assert config["training"]["dataset"] == "toy-detail"
            for e in record["evaluations"]:  # the detail metric and the cell's classifier's
                assert 0 < e["detail_distance"] < 10 and 0 <= e["coherence"] <= 1
                assert 0 <= e["class_accuracy"] <= 1 and math.isfinite(e["fid"])
    # E at 16² has one level (App. A drops the outer one), at 32² two
    levels = {a.label: len(json.loads(runner.record_path(study, a, 0).read_text())["config"]["model"]["levels"])
              for a in study.arms}  # fmt: skip
    assert levels == {"E@16": 1, "global@16": 1, "E@32": 2, "global@32": 1}


def test_the_cell_analysis_reads_each_cell_with_anytime_curves_crossover_and_exponent(finished, tmp_path):
    study = registration.check(finished)
    result = resolutions.analyze_study(study)
    assert result["n_runs"] == 8
    rows = [r for r in result["comparisons"] if r["metric"] == "detail_distance"]
    assert [(r["x"], r["y"], r["difference"]["n"]) for r in rows] == [
        ("global@16", "E@16", 2), ("global@32", "E@32", 2)
    ]  # fmt: skip
    assert [r["expected_sign"] for r in rows] == [0, -1]  # none at 16², better (lower) at 32²
    curve = result["anytime"]["32"]["E"]
    assert [(p["step"], p["n_seeds"]) for p in curve] == [(5, 2), (10, 2)]
    assert curve[1]["gflop"] == pytest.approx(10 * 6 * MAC["E", 32] * 4 / 1e9)
    assert curve[0]["train_cpu_s"]["mean"] < curve[1]["train_cpu_s"]["mean"]
    # equal CPU-seconds: E's curve read at the global arm's CPU-seconds, linear in log CPU-s
    reading = next(r for r in result["equal_cpu"]
                   if r["metric"] == "detail_distance" and r["x"] == "global@32")  # fmt: skip
    e, g = result["anytime"]["32"]["E"], result["anytime"]["32"]["global"]
    for point, at in zip(reading["points"], g):
        cpu = at["train_cpu_s"]["mean"]
        (c0, v0), (c1, v1) = [(p["train_cpu_s"]["mean"], p["detail_distance"]["mean"]) for p in e]
        if c0 <= cpu <= c1:
            t = math.log(cpu / c0) / math.log(c1 / c0)
            assert point["y"] == pytest.approx(v0 + t * (v1 - v0), rel=1e-12)
        else:
            assert point["y"] is None
        assert point["x"] == at["detail_distance"]["mean"]
    cross = result["crossover"]["comparisons"][0]
    assert set(cross["readings"]) == {"16", "32"} and cross["x"] == "global"
    assert set(cross["readings"].values()) <= {"Y wins", "X wins", "not resolved"}
    if cross["readings"]["32"] != "Y wins":
        assert cross["crossover_resolution"] is None
    # the benchmark file as seen from the study's folder: a summary is the same in every clone
    named = Path(result["scaling"]["file"])
    assert not named.is_absolute() and (study.folder / named).resolve() == (finished.parent.parent / "bench.json").resolve()
    # the benchmark's exponents, FLOPs over 32² and 64²: log(MAC₆₄ / MAC₃₂) / log 4, closed form
    flops_k = result["exponent"]["E"]["flops"]
    assert flops_k == pytest.approx(math.log(MAC["E", 64] / MAC["E", 32]) / math.log(4), rel=1e-9)
    assert result["exponent"]["global"]["flops"] == pytest.approx(
        math.log(MAC["global", 64] / MAC["global", 32]) / math.log(4), rel=1e-9
    )
    out = report.report(finished, tmp_path / "out")
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "equal training GFLOP per cell (16²: 2, 32²: 4;" in text
    assert "## ResolutionCells" in text and "| E | 32 |" in text and "Crossover (hourglass vs global" in text
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["exponent"] == out["exponent"]
    # anytime.png: one panel per metric (rows) and resolution (columns), each arm's means
    assert (tmp_path / "out" / "anytime.png").is_file()
    study = registration.check(finished)
    fig = report.anytime_plot(out, study)
    assert len(fig.axes) == len(study.metrics) * 2
    arm, points = next(iter(out["anytime"]["32"].items()))
    metric = study.metrics[0]
    x, y = fig.axes[1].lines[0].get_data()  # row 0 (first metric), column 1 (32²), first arm
    assert fig.axes[1].lines[0].get_label().startswith(arm)
    assert list(x) == [p["gflop"] for p in points]
    assert list(y) == [p[metric]["mean"] for p in points]


def test_the_cli_trains_a_per_resolution_classifier_on_the_detail_set(tmp_path):
    """``hdit-edu classifier train --data toy-detail --resolution 16``: the whole detail train
    split at 16² (one epoch of 32 batches of 512), written where a study's ``classifiers`` may
    name it, and loaded from there by the protocol."""
    from hdit_edu.cli import main
    from hdit_edu.protocol import eval_classifier

    out = tmp_path / "c16"
    assert main(["classifier", "train", "--data", "toy-detail", "--resolution", "16",
                 "--epochs", "1", "--batch-size", "512", "--out", str(out)]) == 0  # fmt: skip
    record = json.loads((out / "config.json").read_text())
    assert record["model"]["resolution"] == 16
    assert record["training"]["data"] == "ToyDetailDataset('train', 16) (16384 images, seed 0)"
    assert record["test_data"] == "ToyDetailDataset('test', 16) (2048 images, seed 0)"
    assert record["log"][0]["step"] == 16384 // 512
    assert eval_classifier(str(out)).resolution == 16
