"""A study's report (§5.2's tables, with their uncertainty): ``summary.json`` (the analysis,
:func:`hdit_edu.analysis.analyze`, exactly), ``summary.md`` (the question, the
registration and every amendment, the per-arm table, the comparisons, the readings) and
``summary.png`` (a forest plot: one panel per metric, each comparison's difference with its
95 % CI); for a study that lets every arm choose its guidance scale (``evaluation.select_cfg``)
also ``frontier.png`` (each arm's FID–accuracy frontier over w, the chosen w marked) and the
chosen scales in ``summary.json`` (``guidance``) and ``summary.md``; for a study of cells
(``task.resolutions``) also ``anytime.png`` (every metric against training GFLOPs per
resolution and arm, with its 95 % CI band: :func:`anytime_plot`).

:func:`study_script` loads a study folder's own question-specific script (``reading.py``: the
rule fixed before the runs, as code; ``design.py``: its cost and power) for a notebook or test.

The readings (:func:`readings`) are generated from the numbers and the reading rule fixed in
the spec, and say nothing else: the difference and its interval, the corrected p, whether the
rule calls it significant / better / worse / not resolved, and whether its sign is the
expected one. They never say *why*.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

from ..analysis import ALL_METRICS, METRIC_LABELS, load_study_records, side_label
from ..checkpoints import atomic_write_text
from ..presets import get_config
from .registration import amendments, check, registration
from .resolutions import analyze_study, cells_markdown
from .spec import Study


def _num(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"


def _signed(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:+.3g}"


def _p_key(row: dict) -> str:
    return "p_holm" if "p_holm" in row else "p_adjusted"


def _expected(row: dict) -> int:
    return next(v for k, v in row.items() if k.endswith("_sign"))


def reading(row: dict, rule: str) -> str:
    """One comparison row as one sentence: only what its numbers and the rule say."""
    d, metric = row["difference"], row["metric"]
    label = METRIC_LABELS.get(metric, metric)
    x, y = side_label(row["x"]), side_label(row["y"])
    head = f"{y} − {x} ({row['what']}), {label}:"
    if d["n"] == 0:
        return f"{head} no seed has both arms; nothing to read."
    if d["n"] < 2:
        return f"{head} {_signed(d['mean'])} from one seed; no interval, nothing can be concluded."
    lo, hi = d["ci95"]
    text = f"{head} {_signed(d['mean'])} [95 % CI {_signed(lo)}, {_signed(hi)}] over {d['n']} seeds"
    p = row[_p_key(row)]
    correction = "Holm-adjusted p" if _p_key(row) == "p_holm" else "p (uncorrected)"
    text += f", {correction} = {_num(p)}"
    if rule == "ci":
        better = "higher" if ALL_METRICS[metric] < 0 else "lower"
        verdict = row["verdict"]
        if verdict == "not resolved":
            text += "; the interval includes 0: not resolved"
        else:
            text += f"; the interval excludes 0: {y} is {verdict} than {x}"
            text += f" ({better} is better)"
    else:
        text += "; significant at 0.05" if row["significant"] else "; not significant at 0.05"
    expected = _expected(row)
    if expected and row["sign_matches"] is not None:
        text += "; the sign is the expected one" if row["sign_matches"] else "; the sign is against the expected one"
    return text + "."


def readings(result: dict, study: Study) -> list[str]:
    """Every comparison's :func:`reading`, metric by metric, then Kendall's τ-b."""
    out = [reading(row, study.rule) for row in result["comparisons"]]
    tau = result.get("kendall_tau")
    if tau and study.reference is not None:
        out.append(
            f"Kendall's τ-b between the {study.reference.label} and our mean "
            f"{METRIC_LABELS.get(study.reference.metric, study.reference.metric)} over "
            f"{', '.join(tau['configs'])}: {tau['tau']:.3f} (p = {tau['p']:.3g})."
        )
    seeds = sorted({row["difference"]["n"] for row in result["comparisons"]})
    if seeds and max(seeds) <= 3:
        out.append(
            f"With at most {max(seeds)} seeds per comparison, only large and consistent "
            "differences can be resolved; a difference that is not resolved is not shown to be "
            "absent."
        )
    return out


def _registration_lines(study: Study) -> list[str]:
    reg = registration(study.folder)
    if reg is None:
        return ["**Not registered.**"]
    lines = [
        f"Registered {reg['registered_utc']} (spec SHA-256 `{reg['sha256'][:12]}`, commit "
        f"`{(reg.get('git_commit') or 'none')[:10]}`"
        f"{'' if reg.get('spec_committed') else ', spec not committed then'})."
    ]
    if reg.get("after_runs"):
        lines.append(
            f"Registered **after** {reg['records_at_registration']} records existed: "
            f"{reg['after_runs']}"
        )
    amended = amendments(study.folder)
    if not amended:
        lines.append("No amendments.")
    for i, a in enumerate(amended, 1):
        lines.append(
            f"- Amendment {i}, **{a['label']}** ({a['amended_utc']}, `{a['old_sha256'][:12]}` → "
            f"`{a['new_sha256'][:12]}`, {a['records_at_amendment']} records existed): "
            f"{a['reason']}"
        )
    return lines


def _ddpm_note(study: Study) -> str:
    """The sampler of the study's DDPM arms (R1), where it has any: they sample with DiT's
    ancestral sampler over ``ddpm_steps`` (:meth:`hdit_edu.protocol.EvalProtocol.sampling`)."""
    ddpm = [a.label for a in study.arms if get_config(a.config).diffusion.process == "ddpm"]
    if not ddpm:
        return ""
    return f" ({', '.join(ddpm)}: ddpm {study.budget.ddpm_steps} steps)"
def _steps(study: Study) -> str:
    """The training budget in words: steps, or a cell study's FLOPs per cell (its plan below)."""
    cells = study.resolution_cells
    if cells is None or cells.final_gflop is None:
        return f"{study.budget.train_steps} steps"
    per_cell = ", ".join(f"{n}²: {g:g}" for n, g in cells.final_gflop.items())
    return f"equal training GFLOP per cell ({per_cell}; every arm's steps in the plan below)"


def markdown(result: dict, study: Study) -> str:
    """The report as Markdown (see the module docstring)."""
    metrics = list(study.metrics)
    ref = study.reference
    lines = [f"# Study: {study.name}", "", f"**Question.** {study.question}", ""]
    lines += _registration_lines(study) + [""]
    b = study.budget
    lines += [
        f"Budget: {_steps(study)} at batch {b.batch_size}, task {b.task}; evaluation "
        f"{b.n_eval} samples, {b.sampler} {b.sample_steps} steps{_ddpm_note(study)}, "
        f"w = {b.cfg:g}, held-out "
        f"loss on {b.n_loss} images ({b.loss_weighting}); compile: "
        f"{'yes' if study.compile else 'no'}; reading rule: {study.rule}; correction: "
        f"{study.correction} per {study.family}.",
        "",
        "| arm | seeds | " + " | ".join(METRIC_LABELS.get(m, m) for m in metrics)
        + (f" | {ref.label} |" if ref else " |"),
        "|---|---|" + "---|" * (len(metrics) + bool(ref)),
    ]
    for arm, row in result["table"].items():
        cells = [
            f"{row[m]['mean']:.4g} ± {row[m]['half']:.2g}" if row[m]["n"] > 1
            else f"{row[m]['mean']:.4g}"
            for m in metrics
        ]  # fmt: skip
        extra = f" | {ref.values.get(arm, '–')} |" if ref else " |"
        seeds = ",".join(str(s) for s in row["seeds"])
        lines.append(f"| {arm} | {seeds} | " + " | ".join(cells) + extra)
    lines += [
        "",
        "| comparison | metric | n | Y − X [95 % CI] | p (corrected) | expected sign | rule |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["comparisons"]:
        d = r["difference"]
        ci = f" [{_signed(d['ci95'][0])}, {_signed(d['ci95'][1])}]" if d["n"] > 1 else ""
        expected = {1: "+", -1: "−", 0: "none"}[_expected(r)]
        if study.rule == "ci":
            verdict = r["verdict"]
        else:
            verdict = "significant" if r["significant"] else "not significant"
        match = "" if r["sign_matches"] is None else (" ✓" if r["sign_matches"] else " ✗")
        lines.append(
            f"| {side_label(r['x'])} → {side_label(r['y'])} ({r['what']}) | {r['metric']} | {d['n']} | "
            f"{_signed(d['mean']) if d['n'] else '–'}{ci} | {_num(r[_p_key(r)])} | "
            f"{expected}{match} | {verdict} |"
        )
    lines += ["", "**Readings** (generated from the numbers and the rule above):", ""]
    lines += [f"- {t}" for t in readings(result, study)]
    cost = result["cost"]
    lines += [
        "",
        f"{result['n_runs']} runs, {cost['total_cpu_s'] / 3600:.2f} CPU-hours "
        f"({cost['total_cpu_s']:.0f} CPU-s: training, sampling and held-out loss).",
    ]
    if study.resolution_cells is not None:  # the plan, anytime curves, crossover, exponents
        lines += cells_markdown(result, study)
    return "\n".join(lines) + "\n"


def _saved(fig, path: str | Path | None):
    """Lay out ``fig`` and, with a ``path``, write it (100 dpi) and close it; returns it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig


def forest_plot(result: dict, study: Study, path: str | Path | None = None):
    """One panel per metric: each comparison's Y − X (dot) with its 95 % CI (bar), 0 marked;
    filled where the rule calls it significant / resolved, green where the sign is the
    expected one, red where it is not. Returns the figure (saved to ``path`` if given)."""
    import matplotlib

    with matplotlib.rc_context({"backend": "agg"}):
        import matplotlib.pyplot as plt

        metrics = list(study.metrics)
        n = len(study.comparisons)
        fig, axes = plt.subplots(
            1, len(metrics), figsize=(4.2 * len(metrics) + 2, 0.45 * n + 1.4), squeeze=False
        )
        for ax, metric in zip(axes[0], metrics):
            rows = [r for r in result["comparisons"] if r["metric"] == metric]
            for i, r in enumerate(rows):
                d = r["difference"]
                if not d["n"]:
                    continue
                colour = {True: "tab:green", False: "tab:red", None: "tab:gray"}[r["sign_matches"]]
                resolved = r["significant"] if study.rule == "holm" else r["verdict"] != "not resolved"
                if d["n"] > 1:
                    ax.plot(d["ci95"], [i, i], color=colour, lw=2)
                ax.plot([d["mean"]], [i], "o", color=colour, mfc=colour if resolved else "white")
            ax.axvline(0, color="k", lw=0.8)
            ticks = [f"{side_label(r['x'])} → {side_label(r['y'])}" for r in rows]
            ax.set_yticks(range(len(rows)), ticks)
            ax.invert_yaxis()
            better = "higher" if ALL_METRICS[metric] < 0 else "lower"
            ax.set_title(f"{METRIC_LABELS.get(metric, metric)} (Y − X; {better} is better)")
        fig.suptitle(
            f"{study.name}: 95 % CIs; filled = {'significant' if study.rule == 'holm' else 'resolved'}"
            ", green = expected sign",
            fontsize=10,
        )
        return _saved(fig, path)


def anytime_plot(result: dict, study: Study, path: str | Path | None = None):
    """A cell study's quality against training compute (the paper's Fig. 1 axis): one row per
    metric, one column per resolution; each arm's mean over seeds at its anytime evaluations
    against training GFLOPs (log), with the 95 % t interval as a band. Equal FLOPs per cell, so
    the arms end at the same x. Returns the figure (saved to ``path`` if given)."""
    import matplotlib

    with matplotlib.rc_context({"backend": "agg"}):
        import matplotlib.pyplot as plt

        metrics, curves = list(study.metrics), result["anytime"]
        fig, axes = plt.subplots(len(metrics), len(curves), squeeze=False,
                                 figsize=(3.6 * len(curves) + 1, 2.6 * len(metrics) + 0.8))  # fmt: skip
        for col, (n, arms) in enumerate(curves.items()):
            for row, metric in enumerate(metrics):
                ax = axes[row][col]
                for i, (arm, points) in enumerate(arms.items()):
                    pts = [p for p in points if metric in p]
                    if not pts:
                        continue
                    x = [p["gflop"] for p in pts]
                    ax.plot(x, [p[metric]["mean"] for p in pts], "-o", color=f"C{i}", ms=4,
                            label=f"{arm} (n = {pts[-1]['n_seeds']})")  # fmt: skip
                    if all(p[metric]["n"] > 1 for p in pts):
                        ax.fill_between(x, [p[metric]["ci95"][0] for p in pts],
                                        [p[metric]["ci95"][1] for p in pts], color=f"C{i}",
                                        alpha=0.2)  # fmt: skip
                ax.set_xscale("log")
                better = "higher" if ALL_METRICS[metric] < 0 else "lower"
                ax.set_title(f"{n}²: {METRIC_LABELS.get(metric, metric)}", fontsize=9)
                ax.set_ylabel(f"({better} is better)", fontsize=8)
                if row == len(metrics) - 1:
                    ax.set_xlabel("training GFLOPs")
                if row == 0:
                    ax.legend(fontsize=7)
        fig.suptitle(f"{study.name}: quality against training compute (mean, 95 % CI over "
                     "seeds)", fontsize=10)  # fmt: skip
        return _saved(fig, path)


def guidance(study: Study, runs: dict | None = None) -> dict:
    """Each arm's own guidance scale (a study with ``evaluation.select_cfg``): the w every seed
    chose on its selection noise, and the FID–accuracy frontier over w on that noise, each
    metric averaged over the arm's seeds (toy FID, class accuracy, and the autoencoder FID
    where measured). ``{}`` for a study without selection."""
    if not study.select_cfg:
        return {}
    runs = load_study_records(study) if runs is None else runs
    out = {}
    for arm in study.arms:
        recs = [r for _, r in sorted(runs.get(arm.label, {}).items()) if "guidance_selection" in r]
        if not recs:
            continue
        frontier = []
        for i, w in enumerate(study.select_cfg):
            rows = [r["guidance_selection"]["frontier"][i] for r in recs]
            keys = [k for k in rows[0] if k != "cfg"]
            frontier.append({"cfg": w} | {k: sum(row[k] for row in rows) / len(rows) for k in keys})
        chosen = {str(r["seed"]): r["final"]["cfg_selected"] for r in recs}
        out[arm.label] = {"cfg_selected": chosen, "frontier": frontier}
    return out


def frontier_plot(table: dict, path: str | Path | None = None):
    """The FID–accuracy frontier of every arm (:func:`guidance`): toy FID (and the
    autoencoder FID, where measured, in a second panel) against class accuracy at each w of
    the selection, averaged over seeds; each point labelled with its w, the scales the seeds
    chose ringed. Returns the figure (saved to ``path`` if given)."""
    import matplotlib

    with matplotlib.rc_context({"backend": "agg"}):
        import matplotlib.pyplot as plt

        second = all("fid_ae" in row for arm in table.values() for row in arm["frontier"])
        keys = ["fid", "fid_ae"] if second else ["fid"]
        fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4.2), squeeze=False)
        for ax, key in zip(axes[0], keys):
            for i, (label, arm) in enumerate(table.items()):
                colour = f"C{i}"
                acc = [row["class_accuracy"] for row in arm["frontier"]]
                val = [row[key] for row in arm["frontier"]]
                ax.plot(acc, val, "-o", color=colour, ms=4, label=label)
                chosen = set(arm["cfg_selected"].values())
                for row, a, v in zip(arm["frontier"], acc, val):
                    ax.annotate(f"{row['cfg']:g}", (a, v), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")  # fmt: skip
                    if row["cfg"] in chosen:
                        ax.plot([a], [v], "o", ms=10, mfc="none", color=colour)
            ax.set_xlabel("class accuracy (selection noise)")
            ax.set_ylabel({"fid": "toy FID", "fid_ae": "FID, autoencoder features"}[key])
            ax.set_title(f"{ax.get_ylabel()} against class accuracy over w")
            ax.legend(fontsize=8)
        fig.suptitle("Each arm's frontier over the guidance scale w (mean over seeds); "
                     "ringed: a w some seed chose", fontsize=10)  # fmt: skip
        return _saved(fig, path)


def guidance_lines(table: dict) -> list[str]:
    """The chosen scales as a Markdown table (arm, the w of each seed, the frontier)."""
    if not table:
        return []
    lines = ["", "Each arm's own guidance scale (chosen on selection noise, scored on test "
             "noise); the frontier's toy FID / class accuracy per w, mean over seeds:", "",
             "| arm | w chosen (seed: w) | " + " | ".join(
                 f"w = {row['cfg']:g}" for row in next(iter(table.values()))["frontier"]) + " |",
             "|---|---|" + "---|" * len(next(iter(table.values()))["frontier"])]  # fmt: skip
    for label, arm in table.items():
        chosen = ", ".join(f"{s}: {w:g}" for s, w in arm["cfg_selected"].items())
        cells = [f"{row['fid']:.1f} / {row['class_accuracy']:.2f}" for row in arm["frontier"]]
        lines.append(f"| {label} | {chosen} | " + " | ".join(cells) + " |")
    return lines


def report(spec: str | Path | Study, out: str | Path | None = None) -> dict:
    """Analyse a registered study and write ``summary.json``, ``summary.md`` and
    ``summary.png`` into ``out`` (default: the study's folder). Returns the analysis with
    ``"markdown"`` and ``"readings"``."""
    study = check(spec)
    runs = load_study_records(study)  # read once: the analysis and the guidance table share it
    result = analyze_study(study, runs)
    if not result["table"]:
        raise ValueError(f"{study.records} holds no complete records of this study yet")
    out = Path(out) if out is not None else study.folder
    out.mkdir(parents=True, exist_ok=True)
    chosen = guidance(study, runs)
    if chosen:
        result = result | {"guidance": chosen}
        frontier_plot(chosen, out / "frontier.png")
    text = markdown(result, study) + "\n".join(guidance_lines(chosen)) + ("\n" if chosen else "")
    atomic_write_text(out / "summary.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(out / "summary.md", text)
    forest_plot(result, study, out / "summary.png")
    if "anytime" in result:
        anytime_plot(result, study, out / "anytime.png")
    return result | {"markdown": text, "readings": readings(result, study)}


def study_script(folder: str | Path, name: str = "reading") -> ModuleType:
    """The study folder's script ``NAME.py`` as a module (a fresh one on every call), e.g. a
    registered reading rule (``reading.py``) that a notebook shows beside the numbers."""
    path = Path(folder) / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the study has no {name}.py")
    spec = importlib.util.spec_from_file_location(f"{Path(folder).name}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as importlib's recipe: dataclasses look their module up
    spec.loader.exec_module(module)
    return module
