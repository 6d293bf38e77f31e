"""The pre-registered reading of the toy baselines study (README.md here, "Analysis and the
reading rule"), applied to the study's analysis: written before any of its runs finished and
not changed after (a change would be a labelled amendment). The generic readings (each
comparison's difference, CI, Holm p, the ``ci`` verdicts, Kendall's τ-b) are the study
report's (``hdit-edu study report``); this file adds only the question-specific rule: the
validity condition on R1, R3 ≈ R1 as equivalence within a margin, R2 worse than R1, and the
whole account.

``python results/baselines-toy/reading.py`` → ``reading.md`` here (and prints it).
"""

from __future__ import annotations

from pathlib import Path

from hdit_edu.analysis import analyze
from hdit_edu.studies.registration import check

HERE = Path(__file__).resolve().parent
VALID_ACCURACY = 0.25  # R1's mean class accuracy (w = 1) must reach twice chance (0.125)
FID_MARGIN = 0.2  # R3 ≈ R1: the CI of R3 − R1 inside ±20 % of R1's mean toy FID
ACCURACY_MARGIN = 0.05  # … and, for class accuracy, inside ±0.05


def rows(result: dict) -> dict:
    """(X, Y, metric) → the analysis row."""
    return {(r["x"], r["y"], r["metric"]): r for r in result["comparisons"]}


def ci_text(row: dict) -> str:
    d = row["difference"]
    if d["n"] < 2:
        return f"{d['mean']:+.3g} (n = {d['n']}, no interval)"
    return f"{d['mean']:+.3g} [{d['ci95'][0]:+.3g}, {d['ci95'][1]:+.3g}] (n = {d['n']})"


def worse_reading(row: dict) -> str:
    """R2 − R1 in toy FID: CI above 0 supports "R2 worse", below 0 contradicts it."""
    d = row["difference"]
    if d["n"] < 2:
        return "not resolved"
    lo, hi = d["ci95"]
    return "supports" if lo > 0 else "contradicts" if hi < 0 else "not resolved"


def equal_reading(row: dict, margin: float) -> str:
    """R3 − R1 within ±``margin``: CI inside supports "≈"; CI excluding 0 with the mean outside
    the margin contradicts it; anything else is not resolved."""
    d = row["difference"]
    if d["n"] < 2:
        return "not resolved"
    lo, hi = d["ci95"]
    if -margin <= lo and hi <= margin:
        return "supports"
    if (lo > 0 or hi < 0) and abs(d["mean"]) > margin:
        return "contradicts"
    return "not resolved"


def whole_account(readings: list[str]) -> str:
    if all(r == "supports" for r in readings):
        return "**supported** at toy scale"
    if "contradicts" in readings:
        return "**contradicted** at toy scale"
    return "**not decided** at toy scale"


def reading(result: dict) -> list[str]:
    """The README's rule, line by line, from an analysis (``table`` and ``comparisons``)."""
    r, table = rows(result), result["table"]
    r1_fid = table["R1"]["fid"]["mean"]
    r1_acc = table["R1"]["class_accuracy"]["mean"]
    delta = FID_MARGIN * r1_fid
    worse = r[("R1", "R2", "fid")]
    equal = r[("R1", "R3", "fid")]
    equal_acc = r[("R1", "R3", "class_accuracy")]
    w, e = worse_reading(worse), equal_reading(equal, delta)
    e_acc = equal_reading(equal_acc, ACCURACY_MARGIN)
    valid = r1_acc >= VALID_ACCURACY
    lines = [
        f"- **Validity:** R1's mean class accuracy (w = 1) is {r1_acc:.3f} "
        f"({'≥' if valid else '<'} {VALID_ACCURACY}, twice chance): "
        + ("R1 learned the task; R1 → R2 and R1 → R3 are read."
           if valid else "**R1 undertrained at this budget: the account is not tested**, "
           "whatever the CIs below say."),  # fmt: skip
        f"- R2 − R1 (toy FID): {ci_text(worse)}: {w} \"R2 worse than R1\".",
        f"- R3 − R1 (toy FID): {ci_text(equal)}, margin ±{delta:.3g} (20 % of R1's "
        f"{r1_fid:.3g}): {e} \"R3 ≈ R1\".",
        f"- R3 − R1 (class accuracy, secondary): {ci_text(equal_acc)}, margin "
        f"±{ACCURACY_MARGIN}: {e_acc} \"R3 ≈ R1\".",
    ]
    if valid:
        lines.append(f"- **The authors' account** (both primary readings): {whole_account([w, e])}.")
    else:
        lines.append("- **The authors' account:** not tested (validity condition).")
    tau = result.get("kendall_tau")
    if tau:
        lines.append(f"- Kendall's τ-b against Table 1's FID order (descriptive): {tau['tau']:+.3f}.")
    return lines


def main() -> str:
    study = check(HERE / "study.toml")
    result = analyze(study)
    text = "\n".join(
        ["# The pre-registered reading (reading.py; the rule of README.md)", "",
         f"{result['n_runs']} complete runs.", ""] + reading(result)
    ) + "\n"  # fmt: skip
    (HERE / "reading.md").write_text(text)
    return text


if __name__ == "__main__":
    print(main())
