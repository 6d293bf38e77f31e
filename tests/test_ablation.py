"""The toy ablation experiment (issue 16, ``results/ablation-toy``): the shipped records rerun
bit for bit through the library, the pre-registered analysis recomputed from first principles,
and ``hdit-edu ablate`` at tiny budgets (resumable per (configuration, seed), domain-checked)."""

from __future__ import annotations

import itertools
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from hdit_edu.ablation import (
    COMPARISONS,
    CROSS_CPU_RTOL,
    PAPER_FID,
    TOY_EXPERIMENT,
    ablation_config,
    analyze,
    load_runs,
    record_config,
    rerun_prefix,
    run_config,
    summary_markdown,
    train_command,
)
from hdit_edu.cli import build_parser, main
from hdit_edu.cli.train import train_config
from hdit_edu.configs import all_local
from hdit_edu.models import build_model
from hdit_edu.presets import FOLLOW_UPS
from hdit_edu.studies import registration, runner
from hdit_edu.studies.spec import load_study

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "results" / "ablation-toy" / "runs"
CLI_CMD = [sys.executable, "-m", "hdit_edu.cli"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def record(name: str) -> dict:
    return json.loads((RUNS / f"{name}.json").read_text())


# --- bit-identical reruns ----------------------------------------------------------------------


def test_e_s0_prefix_reruns_bit_for_bit_on_its_cpu_kind():
    """30 steps of the shipped run E-s0, rebuilt by run_config from the record's
    settings (checked equal to the recorded config), give the recorded losses exactly (==) on
    the CPU kind the record names; on another kind (other float32 kernels) within
    CROSS_CPU_RTOL — and this CI's CPU is named in the failure message either way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the records used one thread
    try:
        result = rerun_prefix(record("E-s0"), steps=30)
    finally:
        torch.set_num_threads(threads)
    assert result["steps"] == 30 and result["recorded_cpu"] == "Intel(R) Xeon(R) Processor"
    where = f"on {result['cpu']!r} (record: {result['recorded_cpu']!r})"
    if result["same_cpu"]:
        assert result["rerun"] == result["recorded"], (where, result["first_difference"])
        assert result["identical"] and result["max_abs_difference"] == 0.0
    else:
        assert result["max_rel_difference"] <= CROSS_CPU_RTOL, (where, result["max_rel_difference"])
    assert result["reproduced"]


def test_every_shipped_record_is_rebuilt_by_the_library():
    """Each finished record's config is what run_config builds from its settings, and
    its settings are the pre-registered budget."""
    runs = load_runs(RUNS)
    assert {"E", "D", "C"} <= set(runs)
    for by_seed in runs.values():
        for r in by_seed.values():
            config = record_config(r)  # raises if the library builds another config
            assert config.training.steps == 20_000 and config.training.batch_size == 16
            s = r["settings"]
            assert (s["task"], s["n_eval"], s["sample_steps"], s["cfg"]) == ("p4k3", 2048, 50, 3.0)
            assert s["eval_seed"] == 1000 + r["seed"]
            assert len(r["losses_first_steps"]) == 100 and r["final"]["n_samples"] == 2048


def test_record_config_refuses_a_record_it_cannot_rebuild():
    r = record("C-s0")
    r["config"]["model"]["levels"][0]["kernel_size"] = 5
    with pytest.raises(ValueError, match="another config"):
        record_config(r)


# --- the analysis ------------------------------------------------------------------------------


def _kendall_tau_b(x, y) -> float:
    pairs = list(itertools.combinations(range(len(x)), 2))
    s = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs)
    tx = sum(x[i] != x[j] for i, j in pairs)
    ty = sum(y[i] != y[j] for i, j in pairs)
    return s / math.sqrt(tx * ty)


class _Fixed(torch.nn.Module):
    """A 'denoiser' D(x, σ) = a·x with one parameter (error_by_sigma reads its device)."""

    def __init__(self, a: float):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a))

    def forward(self, x, sigma, class_cond=None):
        return self.a * x


def test_error_by_sigma_closed_forms():
    # D = x: error = σ²·mean(ε²); D = 0: error = mean(x₀²), whatever σ. The same ε for every σ.
    from hdit_edu.protocol import error_by_sigma
    from hdit_edu.toy import ToyDataset

    config = run_config("E", 0)
    n, sigmas = 40, [0.01, 1.0, 30.0]
    x0, _ = ToyDataset("test", resolution=32).batch(np.arange(n))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    ident = error_by_sigma(_Fixed(1.0), config, sigmas, n=n, batch_size=16)
    zero = error_by_sigma(_Fixed(0.0), config, sigmas, n=n, batch_size=16)
    assert ident == pytest.approx([s**2 * (eps**2).mean().item() for s in sigmas], rel=1e-5)
    assert zero == pytest.approx([(x0**2).mean().item()] * 3, rel=1e-5)


def test_analysis_of_the_shipped_runs_recomputed():
    """Every number of the analysis of the shipped records, recomputed from the records: means,
    CIs, paired differences and their tests, Holm per metric, the paper's sign, τ-b."""
    runs = load_runs(RUNS)
    result = analyze(runs)
    final = {c: {s: r["final"] for s, r in by_seed.items()} for c, by_seed in runs.items()}
    for c, row in result["table"].items():
        for m in ("fid", "class_accuracy", "heldout_loss"):
            values = [final[c][s][m] for s in sorted(final[c])]
            assert row[m]["mean"] == pytest.approx(np.mean(values), rel=1e-12)
            assert row[m]["n"] == len(values) == len(row["seeds"])
            if len(values) > 1:
                sem = stats.sem(values)
                lo, hi = stats.t.interval(0.95, len(values) - 1, np.mean(values), sem)
                assert row[m]["ci95"] == pytest.approx([lo, hi], rel=1e-9)
    rows = {(r["metric"], r["x"], r["y"]): r for r in result["comparisons"]}
    assert len(rows) == 3 * len(COMPARISONS)
    for metric, sign in (("fid", 1), ("class_accuracy", -1), ("heldout_loss", 1)):
        ps = []
        for x, y, _ in COMPARISONS:
            r = rows[(metric, x, y)]
            seeds = sorted(set(final.get(x, {})) & set(final.get(y, {})))
            assert r["seeds"] == seeds
            d = [final[y][s][metric] - final[x][s][metric] for s in seeds]
            if d:
                assert r["difference"]["mean"] == pytest.approx(np.mean(d), rel=1e-12)
                assert r["sign_matches"] == (
                    np.sign(np.mean(d)) == sign * np.sign(PAPER_FID[y] - PAPER_FID[x])
                )
            p = math.nan
            if len(d) > 1:
                p = stats.ttest_rel([final[y][s][metric] for s in seeds],
                                    [final[x][s][metric] for s in seeds]).pvalue  # fmt: skip
                assert r["p"] == pytest.approx(p, rel=1e-9)
            ps.append(p)
        valid = sorted((p, i) for i, p in enumerate(ps) if not math.isnan(p))
        for i, (x, y, _) in enumerate(COMPARISONS):
            r = rows[(metric, x, y)]
            if math.isnan(ps[i]):
                assert math.isnan(r["p_holm"]) and not r["significant"]
                continue
            rank = [j for _, j in valid].index(i)
            bound = max(min(1.0, (len(valid) - k) * valid[k][0]) for k in range(rank + 1))
            assert r["p_holm"] == pytest.approx(bound, rel=1e-12)
            assert r["significant"] == (bound < 0.05)
    k = result["kendall_tau"]
    present = [c for c in ("A", "B1", "B2", "C", "D", "E", "R4") if c in final]
    assert k["configs"] == present
    ours = [result["table"][c]["fid"]["mean"] for c in present]
    assert k["tau"] == pytest.approx(_kendall_tau_b([PAPER_FID[c] for c in present], ours))
    cost = sum(r["train_cpu_s"] + r["final"]["sample_cpu_s"] + r["final"]["loss_cpu_s"]
               for by_seed in runs.values() for r in by_seed.values())  # fmt: skip
    assert result["cost"]["total_cpu_s"] == pytest.approx(cost)


def test_shipped_summary_matches_its_runs():
    """results/ablation-toy/runs/summary.json is the analysis of the records it names (more
    runs may have arrived since; those are not in it)."""
    summary = json.loads((RUNS / "summary.json").read_text())
    runs = load_runs(RUNS)
    named = set(summary["cost"]["per_run_cpu_s"])
    subset = {
        c: {s: r for s, r in by_seed.items() if r["name"] in named} for c, by_seed in runs.items()
    }
    recomputed = analyze({c: b for c, b in subset.items() if b})
    # as written (floats round-trip exactly; NaN, for a CI of one seed, compares as text)
    assert json.dumps(recomputed, indent=1) + "\n" == (RUNS / "summary.json").read_text()
    assert summary_markdown(recomputed) + "\n" == (RUNS / "summary.md").read_text()
    assert (RUNS / "summary.png").stat().st_size > 10_000


# --- the command line --------------------------------------------------------------------------

TINY = ["toy", "--train-steps", "3", "--n-eval", "16", "--sampler-steps", "2",
        "--n-loss", "32", "--sample-batch", "16", "--no-progress"]  # fmt: skip


def hdit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI_CMD, *args], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ablate_runs_resumes_and_analyses(tmp_path, capsys):
    """Two configurations × seed 0 at 3 steps (the real command, in a subprocess): each run's
    first losses are the shipped runs' first 3 (the same config objects, seeds, data order and
    draws; the budget only ends the run earlier). Then, in this process: a second call skips
    finished runs; an unfinished record starts again and gives the same losses; a finished
    record of another budget is refused."""
    out, ckpt = tmp_path / "runs", tmp_path / "ckpt"
    args = ["ablate", *TINY, "--configs", "C,D", "--seeds", "0", "--out", str(out)]
    args += ["--run-dir", str(ckpt)]
    proc = hdit(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("C-s0", "D-s0"):
        r = json.loads((out / f"{name}.json").read_text())
        assert r["status"] == "done" and r["final"]["step"] == 3
        assert r["losses_first_steps"] == record(name)["losses_first_steps"][:3]
        assert (out / f"{name}.png").exists() and (ckpt / name / "checkpoints").is_dir()
        assert r["command"].startswith("hdit-edu ablate")
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["table"]) == {"C", "D"} and summary["n_runs"] == 2
    # a study: its spec generated and registered in OUT, its runs logged by the study runner
    study = load_study(out / "study.toml")
    assert [a.label for a in study.arms] == ["C", "D"] and study.budget.train_steps == 3
    assert registration.registration(out)["text"] == (out / "study.toml").read_text()
    starts = [e["run"] for e in runner.queue_log(study) if e["event"] == "start"]
    assert sorted(starts) == ["C-s0", "D-s0"]
    assert all("arm" not in json.loads((out / f"{n}.json").read_text()) for n in starts)
    assert (out / "summary.md").exists() and (out / "summary.png").exists()

    threads = torch.get_num_threads()
    try:
        before = (out / "C-s0.json").read_text()
        assert main(args) == 0
        assert capsys.readouterr().out.count("is done: skipped") == 2
        assert (out / "C-s0.json").read_text() == before
        (out / "C-s0.json").write_text(json.dumps(json.loads(before) | {"status": "running"}))
        assert main(args) == 0
        assert capsys.readouterr().out.count("is done: skipped") == 1
        again, first = json.loads((out / "C-s0.json").read_text()), json.loads(before)
        assert again["status"] == "done" and again["started"] >= first["started"]
        assert again["losses_first_steps"] == first["losses_first_steps"]
        assert again["final"]["heldout_loss"] == first["final"]["heldout_loss"]
        assert main([*args, "--train-steps", "4"]) == 2
        err = capsys.readouterr().err
        assert "other settings" in err and "train_steps: 3 vs 4" in err
        assert registration.amendments(out) == []  # refused before anything was written
        one = [*args[: args.index("--configs")], "--configs", "C", *args[args.index("--seeds"):]]
        assert main(one) == 0  # other flags: the spec amended, naming the command
        (amendment,) = registration.amendments(out)
        assert "--configs C" in amendment["reason"]
        assert capsys.readouterr().out.count("is done: skipped") == 1
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["toy", "--seeds", "0,0"], "--seeds"),
        (["toy", "--seeds", "-1"], "--seeds"),
        (["toy", "--configs", "E,F"], "--configs"),
        (["toy", "--train-steps", "0"], "--train-steps"),
        (["toy", "--cfg", "nan"], "--cfg"),
        (["toy", "--task", "p3"], "--task"),
        (["toy", "--configs", "R1"], "not in the toy experiment"),
        (["toy", "--configs", "D,L"], "L: an extra toy configuration, outside"),
        (["paper", "--configs", "L"], "L: an extra toy configuration, not a step"),
        (["toy", "--data", "x"], "unrecognized arguments: --data"),
        (["paper", "--seeds", "1"], "unrecognized arguments: --seeds"),
        (["paper", "--data", "."], "--eval-data"),
        (["paper", "--data", "no-such-folder", "--eval-data", "."], "not a folder"),
        (["paper", "--data", ".", "--eval-data", "."], "is the training folder"),
    ],
)
def test_ablate_flags_are_domain_checked(flags, message, capsys, tmp_path):
    try:
        out = ["--out", str(tmp_path / "o")] if flags[0] == "toy" else []
        code = main(["ablate", flags[0], *out, *flags[1:]])
    except SystemExit as e:  # argparse: the flag's type refused the value
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_printed_torchrun_command_trains_the_config_ablate_resumes(capsys, tmp_path):
    """`ablate paper`: each printed `torchrun … train` command, parsed by the real CLI parser,
    builds exactly ablation_config's config, into RUN_DIR/STEP (where run_ablation resumes)."""
    data = tmp_path / "train"
    steps = "A,E,D-minsnr5"
    assert main(["ablate", "paper", "--data", str(data), "--configs", steps,
                 "--train-steps", "1000", "--run-dir", str(tmp_path / "abl"),
                 "--print-torchrun", "4"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    parser = build_parser()
    for step, line in zip(steps.split(","), lines):
        words = shlex.split(line)
        assert words[:5] == ["torchrun", "--nproc_per_node", "4", "-m", "hdit_edu.cli"]
        args = parser.parse_args(words[5:])
        assert args.run_dir == str(tmp_path / "abl" / step) and args.workers == 8
        config = train_config(args, "gpu")
        assert config == ablation_config(step, train_steps=1000, data=str(data))
    assert train_command("E", "r", "d")[-1] != ""  # a list of words, no empty ones


def test_toy_configurations_cover_the_three_tables():
    assert set(TOY_EXPERIMENT) == set(PAPER_FID)
    d, minsnr5 = run_config("D", 0), run_config("D-minsnr5", 0)
    assert d.model == minsnr5.model  # Table 5 changes only the weighting
    assert (minsnr5.diffusion.loss_weighting, minsnr5.diffusion.gamma) == ("min-snr", 5.0)


def test_extra_toy_configuration_l_is_d_with_its_global_level_made_local():
    """Issue 19's all-local L: the library builds it (no change to the 11 pre-registered
    configurations) as configs.all_local of D — its config differs from D's in the name and the
    inner level's attention (global → 3×3 neighborhood) only; same parameters (884,301)."""
    assert len(TOY_EXPERIMENT) == 11 and "L" not in TOY_EXPERIMENT
    assert FOLLOW_UPS == ("L", "C-smsnr")
    d, local = run_config("D", 0), run_config("L", 0)
    expected = all_local(d)
    expected.name = "L"
    assert local == expected

    def flat(tree, prefix=""):
        if isinstance(tree, dict):
            return {
                k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}{key}.").items()
            }
        if isinstance(tree, list):
            return {
                k: v for i, sub in enumerate(tree) for k, v in flat(sub, f"{prefix}{i}.").items()
            }
        return {prefix[:-1]: tree}

    a, b = flat(d.to_dict()), flat(local.to_dict())
    assert {k: (a[k], b[k]) for k in a if a[k] != b[k]} == {
        "name": ("D", "L"),
        "model.levels.1.attention": ("global", "neighborhood"),
        "model.levels.1.kernel_size": (7, 3),
    }
    count = [sum(p.numel() for p in build_model(c).parameters()) for c in (d, local)]
    assert count == [884_301, 884_301]
    with pytest.raises(
        ValueError, match="unknown config 'Z'; allowed: toy, .*D-minsnr4, L, C-smsnr$"
    ):
        run_config("Z", 0)
    # The follow-up's C-smsnr: C with E's weighting, so E − C-smsnr is RoPE alone (as C → D).
    c, e, cs = (flat(run_config(n, 0).to_dict()) for n in ("C", "E", "C-smsnr"))
    assert {k: (c[k], cs[k]) for k in c if c[k] != cs[k]} == {
        "name": ("C", "C-smsnr"),
        "diffusion.loss_weighting": ("snr", "soft-min-snr"),
    }
    assert {k: (cs[k], e[k]) for k in e if cs[k] != e[k]} == {
        "name": ("C-smsnr", "E"),
        "model.pos_emb": ("additive", "rope"),
    }
