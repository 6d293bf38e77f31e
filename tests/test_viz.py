"""hdit_edu.viz's forest plot on the shipped ablation summary: one row per comparison in every
metric's panel, each CI drawn where the analysis puts it, significant ones filled."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from hdit_edu.viz import WEIGHTING_STYLES, plot_forest, plot_loss_weightings  # noqa: E402

SUMMARY = Path(__file__).resolve().parents[1] / "results" / "ablation-toy" / "runs" / "summary.json"


def test_forest_plot_draws_each_comparison_at_its_interval():
    comparisons = json.loads(SUMMARY.read_text())["comparisons"]
    axes = plot_forest(comparisons)
    names = list(dict.fromkeys(f"{c['x']} → {c['y']}" for c in comparisons))
    assert [t.get_text() for t in axes[0].get_yticklabels()] == names
    fid = [c for c in comparisons if c["metric"] == "fid"]
    lines = axes[0].get_lines()
    intervals = [ln for ln in lines if len(ln.get_xdata()) == 2 and ln.get_linestyle() == "-"]
    assert len(intervals) == sum(c["difference"]["n"] > 1 for c in fid)
    first = next(c for c in fid if c["difference"]["n"] > 1)
    assert list(intervals[0].get_xdata()) == first["difference"]["ci95"]
    markers = [ln for ln in lines if ln.get_marker() == "o"]
    filled = [to_rgba(ln.get_markerfacecolor()) != (1.0, 1.0, 1.0, 1.0) for ln in markers]
    assert filled == [bool(c["significant"]) for c in fid if c["difference"]["n"]]
    plt.close("all")


def test_weighting_plot_keeps_snr_visible_under_karras():
    ax = plot_loss_weightings(None, ("snr", "karras"), gamma=4.0)
    snr, karras = ax.get_lines()
    assert snr.get_linewidth() > karras.get_linewidth() and karras.get_linestyle() == "--"
    assert WEIGHTING_STYLES["snr"]["color"] != WEIGHTING_STYLES["karras"]["color"]
    plt.close("all")
