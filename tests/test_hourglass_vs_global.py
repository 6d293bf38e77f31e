"""Issue 30's two arms and its scaling benchmark (benchmarks/hourglass_vs_global.py): the arms
read from results/hourglass-vs-global/study.toml are E and a single-level global transformer
with E's blocks; their FLOPs follow the closed forms; the benchmark writes its exponents and
stops an arm by its rule. No timing is asserted."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import hourglass_vs_global as hvg  # noqa: E402

from hdit_edu.flops import analytic_breakdown, analytic_gflops, analytic_params  # noqa: E402


@pytest.fixture(scope="module")
def arms():
    return hvg.read_arms()


def test_arms_have_the_same_blocks(arms):
    assert set(arms) == {"E", "global"}
    for res in (32, 64, 128, 256):
        e = hvg.arm_config(*arms["E"], res)
        g = hvg.arm_config(*arms["global"], res)
        # E gains one 64-wide neighborhood level per doubling (App. A); global keeps one level
        assert len(e.model.levels) == 2 + round(math.log2(res / 32))
        assert [lv.attention for lv in g.model.levels] == ["global"]
        assert (g.model.ffn, g.model.pos_emb) == (e.model.ffn, e.model.pos_emb) == ("geglu", "rope")
        assert g.diffusion.loss_weighting == e.diffusion.loss_weighting == "soft-min-snr"
        assert g.model.levels[0].width == e.model.levels[-1].width == 128
        assert g.model.patch_size == e.model.patch_size == 4
    p_e = analytic_params(hvg.arm_config(*arms["E"], 32))
    p_g = analytic_params(hvg.arm_config(*arms["global"], 32))
    assert abs(p_g / p_e - 1) < 0.06  # 931,468 vs 884,301 at 32²


def test_flops_follow_the_closed_forms(arms):
    """The global arm's attention at 1024² is 3 layers × 2·T²·d with T = 256² tokens, d = 128
    (QKᵀ and AV); between 512² and 1024² its FLOPs grow ∝ pixels^≈2, E's ∝ pixels^≈1."""
    g = {r: hvg.arm_config(*arms["global"], r) for r in (512, 1024)}
    e = {r: hvg.arm_config(*arms["E"], r) for r in (512, 1024)}
    tokens = (1024 // 4) ** 2
    assert analytic_breakdown(g[1024], by="kind")["attention"] == pytest.approx(
        3 * 2 * tokens**2 * 128 / 1e9, rel=1e-12
    )
    k = lambda c: math.log(analytic_gflops(c[1024]) / analytic_gflops(c[512])) / math.log(4)  # noqa: E731
    assert k(g) > 1.9
    assert 0.95 < k(e) < 1.05
    rows = hvg.costs(arms, [32, 128])
    assert [r["train_gmac_per_image"] for r in rows] == [3 * r["forward_gmac_per_image"] for r in rows]


def test_benchmark_writes_exponents_and_stops_by_its_rule(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert hvg.main(["--max-res", "64", "--repeats", "1", "--warmup", "0", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    for arm in ("E", "global"):
        rows = [r for r in doc["results"] if r["arm"] == arm]
        assert [r["resolution"] for r in rows] == [32, 64]
        assert all(r["step_s"] > 0 and r["peak_memory_MiB"] > 0 for r in rows)
        assert set(doc["summary"][arm]["exponent"]) == {"step_time", "peak_memory", "flops"}
    # a step cap below any real step: the 64² step is predicted over it and skipped
    out2 = tmp_path / "stop.json"
    argv = ["--max-res", "64", "--repeats", "1", "--warmup", "0", "--max-seconds", "1e-6"]
    assert hvg.main([*argv, "--out", str(out2)]) == 0
    doc = json.loads(out2.read_text())
    for arm in ("E", "global"):
        assert doc["summary"][arm]["exponent"] is None
        assert doc["summary"][arm]["stopped_at"] == 64
        (skipped,) = [r for r in doc["results"] if r["arm"] == arm and "skipped" in r]
        assert skipped["resolution"] == 64 and "--max-seconds" in skipped["skipped"]
