"""Studies (``hdit_edu.studies``): the spec and its validation, pre-registration and labelled
amendments, the claimed run queue (with real second processes), the analysis and the report.

The shipped toy ablation is one study: its ``study.toml`` regenerates ``runs/summary.json``
byte for byte. The runs here are tiny (10 steps, 16 samples): they test the machinery, not
HDiT."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_STUDY

from hdit_edu.ablation import analyze as ablation_analyze
from hdit_edu.ablation import load_runs
from hdit_edu.analysis import analyze, analyze_runs, complete, load_records
from hdit_edu.env import same_cpu_kind
from hdit_edu.protocol import EvalProtocol, diversity
from hdit_edu.studies import registration, report, runner
from hdit_edu.studies.report import study_script
from hdit_edu.studies.spec import SpecError, load_study

ROOT = Path(__file__).resolve().parents[1]
ABLATION = ROOT / "results" / "ablation-toy"

TINY = TINY_STUDY


def tiny_study(folder: Path, text: str = TINY) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "study.toml"
    spec.write_text(text.format(checkpoints=folder / "checkpoints"))
    return spec


def run_seed_zero(folder: Path, evaluation: str):
    """The tiny study at seed 0 with ``evaluation`` lines added, registered and run to the end:
    (spec, study, the C-s0 record)."""
    text = TINY.replace("seeds = [0, 1]", "seeds = [0]").replace(
        "[analysis]", evaluation + "\n\n[analysis]"
    )
    spec = tiny_study(folder, text)
    registration.register(spec)
    assert runner.run(spec, progress=False, log=lambda *a: None)["ok"]
    study = load_study(spec)
    return spec, study, json.loads((study.records / "C-s0.json").read_text())


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A tiny study, registered and run to the end in this process (4 runs)."""
    spec = tiny_study(tmp_path_factory.mktemp("tiny") / "tiny")
    registration.register(spec)
    result = runner.run(spec, progress=False, log=lambda *a: None)
    assert result["ok"]
    return spec


# --- the spec ----------------------------------------------------------------------------------


def test_the_ablation_spec_reproduces_the_shipped_summary_byte_for_byte():
    """results/ablation-toy/study.toml (≤ 45 lines) analysed by the study machinery gives the
    shipped runs/summary.json exactly — as does ``ablate``'s analysis, which is the same
    code."""
    spec = ABLATION / "study.toml"
    assert len(spec.read_text().splitlines()) <= 45
    shipped = (ABLATION / "runs" / "summary.json").read_text()
    assert json.dumps(analyze(load_study(spec)), indent=1) + "\n" == shipped
    assert json.dumps(ablation_analyze(load_runs(ABLATION / "runs")), indent=1) + "\n" == shipped


@pytest.mark.parametrize(
    "change, message",
    [
        (("seeds = [0, 1]", "seeds = [0, 0]"), "seeds: .*distinct integers"),
        (('arms = ["B2", "C"]', 'arms = ["B2", "Q"]'), "arms.Q.config: 'Q'; allowed: toy, imagenet128, .*, A, B1"),
        (("train_steps = 10", "train_steps = -3"), "task.train_steps: -3; allowed: an integer > 0"),
        (("n_eval = 16", "n_evals = 16"), "evaluation.n_evals: unknown field; allowed: n_eval"),
        (('"better"]]', '"sideways"]]'), r"comparisons\[0\]: expect='sideways'; allowed: better"),
        (('"+ GEGLU", "better"]]', '"+ GEGLU"]]'), "no expected sign"),
        (('["B2", "C", "+', '["B2", "E", "+'), "'E' is not an arm; allowed: B2, C"),
        (("[analysis]", '[analysis]\nrule = "vibes"'), "analysis.rule: 'vibes'; allowed: holm, ci"),
        (("[analysis]", '[options]\ncross_cpu = "maybe"\n[analysis]'),
         "options.cross_cpu: 'maybe'; allowed: true, false or \"seeds\""),
        (("[analysis]", "[options]\ncross_cpu = 1\n[analysis]"), "options.cross_cpu: 1; allowed"),
        (('question = "', 'question = "'), None),
    ],
)
def test_the_spec_is_validated_once_with_messages_naming_the_field(tmp_path, change, message):
    spec = tiny_study(tmp_path / "s", TINY.replace(*change))
    if message is None:
        assert load_study(spec).budget.train_steps == 10
        return
    with pytest.raises(SpecError, match=message):
        load_study(spec)


def test_a_spec_lists_its_runs_seed_major_with_extra_seeds():
    study = load_study(ABLATION / "study.toml")
    runs = [(a.label, s) for a, s in study.runs()]
    assert len(runs) == 37 and runs[:2] == [("A", 0), ("B1", 0)]
    assert runs[-4:] == [("D", 3), ("E", 3), ("D", 4), ("E", 4)]
    assert study.budget.n_eval == 2048 and study.budget.cfg == 3.0


# --- registration and amendments --------------------------------------------------------------


def test_a_changed_spec_is_refused_until_it_is_amended(tmp_path):
    spec = tiny_study(tmp_path / "s")
    with pytest.raises(registration.RegistrationError, match="not registered"):
        registration.check(spec)
    reg = registration.register(spec)
    assert registration.register(spec) == reg  # the same spec again: the same registration
    registration.check(spec)
    spec.write_text(spec.read_text().replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    with pytest.raises(registration.RegistrationError, match="changed since it was registered"):
        registration.check(spec)
    with pytest.raises(registration.RegistrationError, match="amendment"):
        registration.register(spec)
    with pytest.raises(registration.RegistrationError, match="reason"):
        registration.amend(spec, "third seed", " ")
    entry = registration.amend(spec, "third seed", "the pilot's SD asks for n = 3")
    assert entry["old_sha256"] == reg["sha256"] != entry["new_sha256"]
    registration.check(spec)  # accepted now
    with pytest.raises(registration.RegistrationError, match="unchanged"):
        registration.amend(spec, "again", "nothing changed")
    assert [a["label"] for a in registration.amendments(spec.parent)] == ["third seed"]


def test_registration_after_runs_needs_a_reason(finished, tmp_path):
    copy_ = tmp_path / "again"
    (copy_ / "runs").mkdir(parents=True)
    for f in (finished.parent / "runs").glob("*.json"):
        (copy_ / "runs" / f.name).write_text(f.read_text())
    spec = tiny_study(copy_)
    with pytest.raises(registration.RegistrationError, match="already holds 4 complete records"):
        registration.register(spec)
    reg = registration.register(spec, after_runs="rebuilt from shipped records")
    assert reg["records_at_registration"] == 4


# --- running -----------------------------------------------------------------------------------


def test_a_finished_study_reports_its_runs_and_skips_them(finished):
    rows = runner.status(finished)
    assert [r["state"] for r in rows] == ["done"] * 4
    assert [r["run"] for r in rows] == ["B2-s0", "C-s0", "B2-s1", "C-s1"]
    assert all(r["step"] == 10 and r["cpu"] for r in rows)
    again = runner.work(finished, progress=False)
    assert again["skipped_done"] == ["B2-s0", "C-s0", "B2-s1", "C-s1"] and not again["trained"]
    log = runner.queue_log(load_study(finished))
    assert sorted(e["run"] for e in log if e["event"] == "start") == ["B2-s0", "B2-s1", "C-s0", "C-s1"]


def test_a_record_says_done_only_when_its_evaluation_is_complete(finished):
    record = json.loads((finished.parent / "runs" / "C-s0.json").read_text())
    assert complete(record)
    broken = copy.deepcopy(record) | {"final": None}  # issue 27: done, zero evaluations
    assert not complete(broken)
    early = copy.deepcopy(record)
    early["final"]["step"] = 5
    assert not complete(early)
    assert not complete(record | {"status": "running"})


def _hold(claim_dir: Path) -> subprocess.Popen:
    """A real second process that claims ``claim_dir`` and sleeps."""
    code = (
        "import sys, time; from hdit_edu.runfolder import claim; "
        "c = claim(sys.argv[1]); print('held', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(claim_dir)], stdout=subprocess.PIPE, text=True,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_run_claimed_by_a_live_process_is_skipped_and_taken_after_its_death(tmp_path):
    spec = tiny_study(tmp_path / "s", TINY.replace("seeds = [0, 1]", "seeds = [0]"))
    registration.register(spec)
    study = load_study(spec)
    arm = study.arm("B2")
    holder = _hold(runner.claim_folder(study, arm, 0))
    try:
        first = runner.work(spec, progress=False, log=lambda *a: None)
        assert first["held"] == ["B2-s0"] and first["trained"] == ["C-s0"]
        assert runner.run_state(study, arm, 0)["state"] == "running"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    second = runner.work(spec, progress=False, log=lambda *a: None)  # the kernel freed the claim
    assert second["trained"] == ["B2-s0"] and second["skipped_done"] == ["C-s0"]


def test_two_processes_on_one_study_train_every_run_exactly_once(tmp_path):
    """Two real ``work`` processes started together on one 6-run study: every run is started
    exactly once, finishes, and its record is complete."""
    spec = tiny_study(
        tmp_path / "s",
        TINY.replace("seeds = [0, 1]", "seeds = [0, 1, 2]").replace("train_steps = 10", "train_steps = 30"),
    )  # fmt: skip
    registration.register(spec)
    code = (
        "import sys, json; from hdit_edu.studies.runner import work; "
        "print(json.dumps(work(sys.argv[1], int(sys.argv[2]), progress=False, log=lambda *a: None)))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(spec), str(i)], stdout=subprocess.PIPE, text=True,
            env=os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        for i in range(2)
    ]
    results = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    study = load_study(spec)
    names = [n for r in results for n in r["trained"]]
    assert sorted(names) == sorted(f"{a}-s{s}" for a in ("B2", "C") for s in (0, 1, 2))
    starts = [e["run"] for e in runner.queue_log(study) if e["event"] == "start"]
    assert sorted(starts) == sorted(names)  # each run started once, by one process
    runs = load_records(study.records)
    assert sum(len(v) for v in runs.values()) == 6
    assert all(complete(r) for v in runs.values() for r in v.values())


# --- analysis and report -----------------------------------------------------------------------


def test_seed_paired_arms_from_different_cpu_kinds_are_refused():
    runs = {k: v for k, v in load_runs(ABLATION / "runs").items() if k in ("C", "D")}
    args = {"arms": ["C", "D"], "comparisons": [("C", "D", "RoPE", -1)], "metrics": ["fid"]}
    assert analyze_runs(runs, **args)["comparisons"][0]["difference"]["n"] == 3
    moved = copy.deepcopy(runs)
    moved["D"][1]["versions"]["cpu"] = "AMD EPYC"
    with pytest.raises(ValueError, match="different CPU kinds .*D-s1 on AMD EPYC"):
        analyze_runs(moved, **args)
    assert analyze_runs(moved, **args, cross_cpu=True)["comparisons"][0]["difference"]["n"] == 3


def test_one_model_name_for_two_kinds_is_told_apart_by_cpu_id_and_seeds_may_differ_by_kind():
    """Two machines that both report "AMD EPYC" rounded differently (issue 30's seeds 0 and 1,
    results/hourglass-vs-global/README.md): where both records keep ``cpu_id`` it decides;
    ``cross_cpu = "seeds"`` lets seeds differ in kind and refuses a seed split across two."""
    runs = {k: v for k, v in load_runs(ABLATION / "runs").items() if k in ("C", "D")}
    args = {"arms": ["C", "D"], "comparisons": [("C", "D", "RoPE", -1)], "metrics": ["fid"]}
    zen = "AuthenticAMD family 26 model 2 stepping 1 AVX512"
    kinds = copy.deepcopy(runs)
    for arm in ("C", "D"):
        for seed, record in kinds[arm].items():
            record["versions"]["cpu"] = "AMD EPYC"  # one model name for every run
            if seed > 0:  # seeds 1 and 2 on a machine that keeps cpu_id, seed 0 on an older one
                record["versions"]["cpu_id"] = zen
    n = analyze_runs(kinds, **args)["comparisons"][0]["difference"]["n"]
    assert n == 3  # no cpu_id on seed 0: the model name decides, and it is one
    kinds["C"][2]["versions"]["cpu_id"] = kinds["D"][2]["versions"]["cpu_id"] = zen.replace("26", "25")
    with pytest.raises(ValueError, match=r"different CPU kinds .*C-s1 on AMD EPYC \(Authentic"):
        analyze_runs(kinds, **args)  # seeds 1 and 2 on two kinds of one name
    assert analyze_runs(kinds, **args, cross_cpu="seeds")["comparisons"][0]["difference"]["n"] == 3
    kinds["D"][2]["versions"]["cpu_id"] = zen  # seed 2's two arms on two kinds
    with pytest.raises(ValueError, match="within one seed from different CPU kinds .*C-s2.*D-s2"):
        analyze_runs(kinds, **args, cross_cpu="seeds")
    assert analyze_runs(kinds, **args, cross_cpu=True)["comparisons"][0]["difference"]["n"] == 3
    # to expect equal numbers a model name is not enough: both must keep a cpu_id
    old, new = {"cpu": "AMD EPYC"}, {"cpu": "AMD EPYC", "cpu_id": zen}
    assert same_cpu_kind(old, new) and not same_cpu_kind(old, new, known=True)
    assert same_cpu_kind(new, dict(new), known=True)
    assert not same_cpu_kind(new, {"cpu": "AMD EPYC", "cpu_id": zen + " "}, known=False)


def test_the_report_states_the_numbers_and_shows_amendments(finished, tmp_path):
    result = report.report(finished, tmp_path / "out")
    text = (tmp_path / "out" / "summary.md").read_text()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["n_runs"] == 4
    assert (tmp_path / "out" / "summary.png").stat().st_size > 10_000
    assert "No amendments." in text and "Does GEGLU (C) beat GELU" in text
    fid = next(r for r in result["comparisons"] if r["metric"] == "fid")
    lo, hi = fid["difference"]["ci95"]
    sentence = result["readings"][0]
    assert sentence.startswith("C − B2 (+ GEGLU), toy FID:")
    assert f"{lo:+.3g}, {hi:+.3g}" in sentence and "over 2 seeds" in sentence
    assert ("not significant" in sentence) == (not fid["significant"])
    spec_text = finished.read_text()
    try:
        finished.write_text(spec_text.replace("on a tiny budget?", "on a tiny budget (2 seeds)?"))
        with pytest.raises(registration.RegistrationError, match="changed"):
            report.report(finished, tmp_path / "out")
        registration.amend(finished, "wording", "the question names the seeds")
        text = report.report(finished, tmp_path / "out")["markdown"]
        assert "Amendment 1, **wording**" in text and "the question names the seeds" in text
    finally:
        finished.write_text(spec_text)
        (finished.parent / registration.AMENDMENTS).unlink(missing_ok=True)


# --- the evaluation protocol ------------------------------------------------------------------


def test_followup_diversity_splits_fid_and_measures_spread_in_closed_form():
    """Samples = 2 × (zero-mean real features) + v: FID's mean term is ‖v‖², its covariance
    term Tr(Σ + 4Σ − 2·2Σ) = Tr(Σ); the spread, overall and within each class, is 4."""
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 3)) * [1.0, 2.0, 0.5]
    real -= real.mean(0)
    labels = np.arange(400) % 2
    v = np.array([1.0, -2.0, 0.5])
    out = diversity(2 * real + v, labels, real, labels)
    assert out["fid_mean_term"] == pytest.approx(v @ v, rel=1e-12)
    assert out["fid_covariance_term"] == pytest.approx(
        np.trace(np.cov(real, rowvar=False)), rel=1e-6
    )
    assert out["spread"] == pytest.approx(4.0, rel=1e-12)
    assert out["spread_within_class"] == pytest.approx(4.0, rel=1e-12)
    assert out["spread_per_class"] == pytest.approx([4.0, 4.0], rel=1e-12)


def test_the_protocol_defaults_are_the_ablations_and_remeasure_a_record_exactly(finished):
    """EvalProtocol() is the toy ablation's pre-registered protocol (ToyBudget's sampler
    settings, as every shipped record holds them); and re-measuring a finished run's EMA
    checkpoint with its record's settings and noise seed gives the record's numbers by ``==``
    (the records and the protocol are one measurement)."""
    from hdit_edu.ablation import ToyBudget
    from hdit_edu.protocol import evaluate
    from hdit_edu.runs import load_run

    b, p = ToyBudget(), EvalProtocol()
    assert (p.n, p.sampler, p.steps, p.cfg, p.batch_size) == (
        b.n_eval, b.sampler, b.sample_steps, b.cfg, b.sample_batch
    )  # fmt: skip
    shipped = json.loads((ABLATION / "runs" / "E-s0.json").read_text())["settings"]
    assert (p.n, p.sampler, p.steps, p.cfg, p.batch_size) == tuple(
        shipped[k] for k in ("n_eval", "sampler", "sample_steps", "cfg", "sample_batch")
    )
    study = load_study(finished)
    record = json.loads((study.records / "C-s1.json").read_text())
    s = record["settings"]
    config, denoiser = load_run(study.checkpoints / "C-s1")
    protocol = EvalProtocol(s["n_eval"], s["sampler"], s["sample_steps"], s["cfg"], s["sample_batch"])
    again, _, _ = evaluate(denoiser, config, protocol, s["eval_seed"])
    for key in ("fid", "class_accuracy", "class_accuracy_per_class", "n_samples"):
        assert again[key] == record["final"][key], key


def test_the_study_command_line(finished, capsys):
    """``hdit-edu study``: status and analyze of a finished study, run skips its done runs,
    a changed spec is refused (exit 2, the message says how to amend) until ``amend``."""
    from hdit_edu.cli import main

    assert main(["study", "status", str(finished)]) == 0
    assert "4 done (of 4)" in capsys.readouterr().out
    assert main(["study", "run", str(finished), "--no-progress"]) == 0
    assert "4 done (of 4)" in capsys.readouterr().out
    assert main(["study", "analyze", str(finished.parent)]) == 0
    assert "**Readings**" in capsys.readouterr().out
    text = finished.read_text()
    try:
        finished.write_text(text.replace("n_eval = 16", "n_eval = 32"))
        assert main(["study", "analyze", str(finished)]) == 2
        assert "changed since it was registered" in capsys.readouterr().err
        assert main(["study", "amend", str(finished), "--label", "more samples",
                     "--reason", "16 samples are too few"]) == 0  # fmt: skip
        capsys.readouterr()
        # accepted now; the records were made with 16 samples: the analysis refuses them
        assert main(["study", "analyze", str(finished)]) == 2
        assert "other settings than" in capsys.readouterr().err
    finally:
        finished.write_text(text)
        (finished.parent / registration.AMENDMENTS).unlink(missing_ok=True)


def test_pairs_of_arms_compare_differences_and_holm_runs_over_each_comparisons_metrics():
    """A comparison side may be a pair (A, B) = B − A per seed: the follow-up's interaction
    (D − C) − (E − C-smsnr) in closed form; Holm over the metrics of one comparison."""
    fid = {"C": (10, 8, 11), "D": (21, 19, 15), "E": (7, 7, 6), "C-smsnr": (7.5, 6, 6.5)}
    runs = {
        n: {
            s: {"name": f"{n}-s{s}", "settings": {}, "versions": {"cpu": "x"},
                "train_cpu_s": 1.0, "final": dict.fromkeys(("fid", "class_accuracy"), v)}
            for s, v in enumerate(values)
        }  # fmt: skip
        for n, values in fid.items()
    }
    result = analyze_runs(
        runs,
        arms=list(fid),
        comparisons=[
            ("C", "D", "C → D", -1),
            ("C-smsnr", "E", "C-smsnr → E", -1),
            (("C-smsnr", "E"), ("C", "D"), "interaction", 0),
        ],
        metrics=["fid", "class_accuracy"],
        family="comparison",
    )
    rows = {(r["what"], r["metric"]): r for r in result["comparisons"]}
    assert rows["C → D", "fid"]["difference"]["values"] == [11, 11, 4]
    assert rows["C-smsnr → E", "fid"]["difference"]["values"] == [-0.5, 1, -0.5]
    inter = rows["interaction", "fid"]
    assert inter["difference"]["values"] == [11.5, 10, 4.5]
    assert inter["x"] == ["C-smsnr", "E"] and inter["sign_matches"] is None
    # Holm over the two metrics of one comparison (equal p's here: 2·p capped at 1)
    assert rows["C → D", "fid"]["p_holm"] == pytest.approx(min(1, 2 * rows["C → D", "fid"]["p"]))


def test_the_followup_spec_reproduces_the_shipped_followup_analysis():
    """results/ablation-toy/followup/study.toml (C-smsnr's records there, C, D, E read from
    the main study) gives every number of the shipped followup/summary.json: the seeds, each
    difference's interval, p and Holm p — and it must allow cross-CPU pairs (C-smsnr ran on
    an AMD EPYC, the main study on an Intel Xeon; the README's amendment)."""
    folder = ABLATION / "followup"
    study = load_study(folder)
    result = analyze(study)
    shipped = json.loads((folder / "summary.json").read_text())["rows"]
    mine = {(r["metric"], r["what"]): r for r in result["comparisons"]}
    assert len(mine) == len(shipped) == 9
    for row in shipped:
        for key in ("seeds", "difference", "p", "p_holm"):
            got = mine[row["metric"], row["what"]][key]
            assert json.dumps(got) == json.dumps(row[key]), (row["what"], key)
    strict = load_study(folder).__class__(**{**study.__dict__, "cross_cpu": False})
    with pytest.raises(ValueError, match="different CPU kinds"):
        analyze(strict)


def test_each_arm_chooses_its_guidance_on_selection_noise_and_is_scored_on_test_noise(tmp_path):
    """evaluation.select_cfg: every run's w is the lowest-FID scale on the selection noise
    (seed 2000 + seed), and the selected metrics are the test noise's (the record's eval seed)
    at that w — re-measured here by ``==``; the frontier is kept; the analysis reads them.
    evaluation.loss_profile: the held-out loss under the arm's own weighting (C: SNR) and the
    unweighted error per σ band, re-measured by ``==``."""
    from hdit_edu.protocol import SIGMA_BANDS, error_by_sigma, evaluate, evaluate_loss
    from hdit_edu.runs import load_run

    spec, study, record = run_seed_zero(tmp_path / "s", (
        'select_cfg = [1.0, 3.0]\nn_select = 16\nloss_profile = true\nmetrics = ["fid", '
        '"fid_selected", "class_accuracy_selected", "error_mid", "heldout_loss_own"]'))  # fmt: skip
    sel = record["guidance_selection"]
    assert (sel["selection_seed"], sel["test_seed"]) == (2000, 1000)
    frontier = {row["cfg"]: row["fid"] for row in sel["frontier"]}
    assert set(frontier) == {1.0, 3.0}
    assert record["final"]["cfg_selected"] == min(frontier, key=frontier.get)
    config, denoiser = load_run(study.checkpoints / "C-s0")
    w = record["final"]["cfg_selected"]
    again, _, _ = evaluate(denoiser, config, EvalProtocol(16, steps=3, cfg=w, batch_size=16), 1000)
    assert again["fid"] == record["final"]["fid_selected"]
    own = evaluate_loss(denoiser, config, n=512, weighting="snr", seed=0)
    assert config.diffusion.loss_weighting == "snr" and record["final"]["heldout_loss_own"] == own
    mid = error_by_sigma(denoiser, config, SIGMA_BANDS["mid"], n=512, seed=0)
    assert record["final"]["error_mid"] == pytest.approx(sum(mid) / len(mid), rel=1e-12)
    result = analyze(study)
    assert {r["metric"] for r in result["comparisons"]} == {
        "fid", "fid_selected", "class_accuracy_selected", "error_mid", "heldout_loss_own"
    }  # fmt: skip
    written = report.report(spec, tmp_path / "out")
    chosen = written["guidance"]["C"]
    assert chosen["cfg_selected"] == {"0": w}  # the record's own choice, per seed
    assert chosen["frontier"] == sel["frontier"]  # one seed: the mean is the record's frontier
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["guidance"]["C"] == chosen
    assert (tmp_path / "out" / "frontier.png").stat().st_size > 0
    assert f"| C | 0: {w:g} |" in written["markdown"]
    with pytest.raises(SpecError, match="needs evaluation.select_cfg"):
        tiny_study(tmp_path / "bad", TINY.replace("[analysis]", 'metrics = ["fid_selected"]\n\n[analysis]'))
        load_study(tmp_path / "bad")


def test_a_spec_turns_on_the_second_feature_space(tmp_path):
    """evaluation.fid_ae: each record's test samples are drawn again and measured in the
    label-free autoencoder's features; the redrawn samples' toy FID equals the record's (they
    are its own samples), and fid_ae is the autoencoder FID of exactly those samples."""
    from hdit_edu.protocol import evaluate
    from hdit_edu.runs import load_run
    from hdit_edu.toy_autoencoder import TOY_AUTOENCODER_DIR, fid_ae

    if not (TOY_AUTOENCODER_DIR / "model.safetensors").is_file():
        pytest.skip("data/toy_autoencoder is not built")
    with pytest.raises(SpecError, match="'fid_ae' needs evaluation.fid_ae = true"):
        load_study(tiny_study(tmp_path / "bad", TINY.replace(
            "[analysis]", 'metrics = ["fid", "fid_ae"]\n\n[analysis]')))  # fmt: skip
    _, study, record = run_seed_zero(tmp_path / "s", 'fid_ae = true\nmetrics = ["fid", "fid_ae"]')
    second = record["second_features"]
    assert second["fid_redrawn"] == second["fid_record"] == record["final"]["fid"]
    config, denoiser = load_run(study.checkpoints / "C-s0")
    _, images, _ = evaluate(denoiser, config, EvalProtocol(16, steps=3, batch_size=16), 1000)
    assert record["final"]["fid_ae"] == fid_ae(images)
    assert {r["metric"] for r in analyze(study)["comparisons"]} == {"fid", "fid_ae"}


def test_the_second_feature_space_at_each_arms_own_guidance(tmp_path):
    """evaluation.fid_ae with select_cfg: every frontier row and the test samples at the chosen
    w carry the autoencoder FID (fid_ae_selected); w is still chosen by toy FID; without
    "fid_ae" in the metrics nothing is drawn again (no second_features)."""
    from hdit_edu.protocol import evaluate
    from hdit_edu.runs import load_run
    from hdit_edu.toy_autoencoder import TOY_AUTOENCODER_DIR, fid_ae

    if not (TOY_AUTOENCODER_DIR / "model.safetensors").is_file():
        pytest.skip("data/toy_autoencoder is not built")
    with pytest.raises(SpecError, match="'fid_ae_selected' needs evaluation.fid_ae = true"):
        load_study(tiny_study(tmp_path / "bad", TINY.replace("[analysis]", (
            'select_cfg = [1.0, 3.0]\nmetrics = ["fid_ae_selected"]\n\n[analysis]'))))  # fmt: skip
    _, study, record = run_seed_zero(tmp_path / "s", (
        'fid_ae = true\nselect_cfg = [1.0, 3.0]\nn_select = 16\n'
        'metrics = ["fid_selected", "fid_ae_selected"]'))  # fmt: skip
    assert "second_features" not in record and "fid_ae" not in record["final"]
    frontier = record["guidance_selection"]["frontier"]
    assert all({"fid", "class_accuracy", "fid_ae"} <= set(row) for row in frontier)
    w = record["final"]["cfg_selected"]
    assert w == min(frontier, key=lambda row: row["fid"])["cfg"]
    config, denoiser = load_run(study.checkpoints / "C-s0")
    _, probe, _ = evaluate(denoiser, config, EvalProtocol(16, steps=3, cfg=1.0, batch_size=16), 2000)
    assert frontier[0]["fid_ae"] == fid_ae(probe)
    m, images, _ = evaluate(denoiser, config, EvalProtocol(16, steps=3, cfg=w, batch_size=16), 1000)
    assert record["final"]["fid_selected"] == m["fid"]
    assert record["final"]["fid_ae_selected"] == fid_ae(images)
    assert {r["metric"] for r in analyze(study)["comparisons"]} == {"fid_selected", "fid_ae_selected"}


def test_stop_after_starts_no_new_run(tmp_path):
    """``study run --stop-after 0``: no run is started (none is claimed, trained or
    written) and every run stays pending."""
    spec = tiny_study(tmp_path / "s")
    registration.register(spec)
    result = runner.run(spec, progress=False, log=lambda *a: None, stop_after=0)
    assert result["ok"] and {row["state"] for row in result["status"]} == {"pending"}
    study = load_study(spec)
    assert not list(study.records.glob("*.json"))
    with pytest.raises(ValueError, match="stop_after=-1; allowed: minutes"):
        runner.run(spec, progress=False, stop_after=-1)


def test_a_study_folders_own_script_loads_as_a_module(tmp_path):
    """``study_script``: a study's ``reading.py`` (or any NAME.py beside its spec) as a module,
    freshly executed on every call; a missing script names its path."""
    (tmp_path / "reading.py").write_text(
        "from dataclasses import dataclass\n\n@dataclass\nclass Row:\n    x: int\n\n"
        "CALLS = []\nCALLS.append(1)\n\ndef double(r):\n    return Row(2 * r.x)\n"
    )  # fmt: skip
    first = study_script(tmp_path)
    assert first.double(first.Row(21)) == first.Row(42) and first.CALLS == [1]
    assert study_script(tmp_path).CALLS == [1]  # executed again, not a cached module
    with pytest.raises(FileNotFoundError, match=r"design\.py: the study has no design\.py"):
        study_script(tmp_path, "design")
