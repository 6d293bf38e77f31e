"""The pre-registered reading of the revisited toy ablation (README.md here, "Analysis and the
reading rule"), applied to the study's analysis: written before any of its runs finished and
not changed after (a change would be a labelled amendment). The generic readings (each
comparison's difference, CI, Holm p) are the study report's (``hdit-edu study report``); this
file adds only the question-specific rule: the RoPE outcome table with its qualifiers, the
C → D-grid / C → D-table gap readings and the guidance reading of C → D.

``python results/ablation-toy-revisited/reading.py`` → ``reading.md`` here (and prints it).
"""

from __future__ import annotations

from pathlib import Path

from hdit_edu.analysis import analyze
from hdit_edu.studies.registration import check

HERE = Path(__file__).resolve().parent


def rows(result: dict) -> dict:
    """(X, Y, metric) → the analysis row."""
    return {(r["x"], r["y"], r["metric"]): r for r in result["comparisons"]}


def excludes_zero_below(row: dict) -> bool:
    """Y − X's 95 % CI lies entirely below 0 (Y lower)."""
    d = row["difference"]
    return d["n"] > 1 and d["ci95"][1] < 0


def ci_text(row: dict) -> str:
    d = row["difference"]
    if d["n"] < 2:
        return f"{d['mean']:+.2f} (n = {d['n']}, no interval)"
    return f"{d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] (n = {d['n']}, Holm p = {row['p_holm']:.3g})"


def rope_reading(r: dict) -> list[str]:
    """The outcome table for Δgrid = D-grid − D and Δtable = D-table − D on fid_selected."""
    grid, table = r[("D", "D-grid", "fid_selected")], r[("D", "D-table", "fid_selected")]
    sig = {k: row["significant"] for k, row in (("grid", grid), ("table", table))}
    neg = {k: row["difference"]["mean"] < 0 for k, row in (("grid", grid), ("table", table))}
    if any(sig[k] and not neg[k] for k in sig):
        hurt = [k for k in sig if sig[k] and not neg[k]]
        verdict = " and ".join(f"{k} hurts: that explanation is contradicted" for k in hurt)
    elif sig["grid"] and sig["table"]:
        verdict = "both contribute; no ranking between them is claimed"
    elif sig["grid"]:
        verdict = "supports **aliasing**, not lost absolute position"
    elif sig["table"]:
        verdict = "supports **lost absolute position**, not aliasing"
    else:
        verdict = ("**neither** explanation is supported at this power; the CIs give the largest "
                   "effect still compatible")  # fmt: skip
    lines = [f"- Δgrid (D → D-grid, toy FID at own w): {ci_text(grid)}",
             f"- Δtable (D → D-table, toy FID at own w): {ci_text(table)}",
             f"- **RoPE test reading:** {verdict}."]  # fmt: skip
    for arm, key in (("D-grid", "grid"), ("D-table", "table")):
        if not (sig[key] and neg[key]):
            continue
        ae = r[("D", arm, "fid_ae_selected")]
        both = ae["difference"]["mean"] < 0 and excludes_zero_below(ae)
        layout = any(excludes_zero_below(r[("D", arm, m)]) for m in ("error_mid", "error_high"))
        lines.append(f"  - {arm}: {'under both extractors' if both else 'toy classifier only'}"
                     f"{', and where the layout forms' if layout else ''}; SNR weighting only "
                     f"(the AMD cut has no E arms). Autoencoder FID: {ci_text(ae)}")  # fmt: skip
    return lines


def gap_reading(r: dict) -> list[str]:
    """C → D-grid and C → D-table: does a fix close the gap to the additive table?"""
    out = []
    for arm in ("D-grid", "D-table"):
        row = r[("C", arm, "fid_selected")]
        if row["significant"]:
            text = "still worse than C" if row["difference"]["mean"] > 0 else "better than C"
        else:
            text = "gap not resolved (which does not mean equal)"
        out.append(f"- C → {arm} (toy FID at own w): {ci_text(row)}: **{text}**.")
    return out


def guidance_reading(r: dict) -> list[str]:
    """C → D at the best w (primary) against w = 3 (the original protocol), same models."""
    best, fixed = r[("C", "D", "fid_selected")], r[("C", "D", "fid")]
    s_best, s_fixed = best["significant"], fixed["significant"]
    same_sign = (best["difference"]["mean"] > 0) == (fixed["difference"]["mean"] > 0)
    if s_best and s_fixed and same_sign:
        text = "stands"
    elif s_best != s_fixed or (s_best and s_fixed and not same_sign):
        text = "a guidance artefact"
    else:
        text = "not resolved"
    return [f"- C → D at own w: {ci_text(best)}; at w = 3: {ci_text(fixed)}: **{text}**."]


def main() -> str:
    study = check(HERE / "study.toml")
    result = analyze(study)
    r = rows(result)
    text = "\n".join(
        ["# The pre-registered reading (reading.py; the rule of README.md)", "",
         f"{result['n_runs']} complete runs.", "", "## RoPE test", ""] + rope_reading(r)
        + ["", "## The gap to the additive table", ""] + gap_reading(r)
        + ["", "## Guidance (C → D)", ""] + guidance_reading(r)
    ) + "\n"  # fmt: skip
    (HERE / "reading.md").write_text(text)
    return text


if __name__ == "__main__":
    print(main())
