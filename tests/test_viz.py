"""hdit_edu.viz's forest plot on the shipped ablation summary: one row per comparison in every
metric's panel, each CI drawn where the analysis puts it, significant ones filled; the weighting
plot's styles; sample grids with one label per column."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

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


def test_sample_grid_names_each_column_under_its_centre():
    """show_images puts one label under the centre of each column, for a tensor and for a
    rendered grid, and refuses a label count that does not match the columns."""
    from hdit_edu.viz import show_images

    names = [f"class {j}" for j in range(4)]
    images = torch.zeros(8, 3, 6, 6)  # 4 columns of 6 px, padding 1: 4·7 + 1 = 29 px wide
    fig, ax = plt.subplots()
    show_images(ax, images, nrow=4, column_labels=names)
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    centres = ax.get_xticks()
    assert len(centres) == 4 and abs(centres[1] - centres[0] - 29 / 4) < 1e-9
    # each tick lies inside its column's image pixels (column j spans 1 + 7j … 7 + 7j)
    assert all(1 + 7 * j <= c <= 7 + 7 * j for j, c in enumerate(centres))
    rendered = np.ones((20, 40, 3))
    show_images(ax, rendered, nrow=2, column_labels=["a", "b"])
    assert list(ax.get_xticks()) == [10.0, 30.0]
    with pytest.raises(ValueError, match="3 names for a grid of 2 columns"):
        show_images(ax, rendered, nrow=2, column_labels=["a", "b", "c"])
    plt.close(fig)
