"""FLOPs and parameters against the paper (Tables 1, 6, Fig. 2, App. A) and fvcore against the
closed form. All counts are multiply-adds (the paper's convention)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hdit_edu.attention import neighborhood_attention, shifted_window_attention
from hdit_edu.configs import at_resolution
from hdit_edu.flops import (
    TABLE1_GFLOPS,
    TABLE1_RESOLUTIONS,
    TABLE6,
    analytic_breakdown,
    analytic_gflops,
    analytic_params,
    analytic_terms,
    count_gflops,
    count_gflops_by_level,
    flop_count_analysis,
    loglog_slope,
    scaling_table,
)
from hdit_edu.models import build_model
from hdit_edu.presets import ablation_step, config_names, get_config

# ----------------------------------------------------------------------------------------------
# The paper's numbers, in closed form
# ----------------------------------------------------------------------------------------------

TABLE1_CELLS = [
    (name, res, paper)
    for name, row in TABLE1_GFLOPS.items()
    for res, paper in zip(TABLE1_RESOLUTIONS, row)
]


@pytest.mark.parametrize(
    "name, res, paper", TABLE1_CELLS, ids=[f"{n}@{r}" for n, r, _ in TABLE1_CELLS]
)
def test_table1_gflops(name, res, paper):
    gflops = analytic_gflops(ablation_step(name, res), res)
    assert abs(gflops / paper - 1) < 0.02


# Where our count does not round to the paper's integer: (ours, paper). DiT-B/4 at 256² is
# 657.63 GFLOP (rounds to 658); the paper prints 657 for all four baselines — which is R3/R4's
# single-level hourglass (657.45) rounded. Residual +0.63 GFLOP (+0.10%), no reading removes it.
NOT_ROUNDING_TO_PAPER = {("R1", 256): (657.627, 657), ("R2", 256): (657.627, 657)}


def test_table1_cells_round_to_the_paper():
    for name, res, paper in TABLE1_CELLS:
        gflops = analytic_gflops(ablation_step(name, res), res)
        if (name, res) in NOT_ROUNDING_TO_PAPER:
            ours, printed = NOT_ROUNDING_TO_PAPER[name, res]
            assert (gflops, paper) == (pytest.approx(ours, abs=1e-3), printed)
        else:
            assert round(gflops) == paper, (name, res, gflops)


def test_table1_exact_values():
    """The closed form, to the MAC, for a few cells (these are the numbers in the notebook)."""
    assert analytic_gflops(ablation_step("E"), 128) == pytest.approx(31.369, abs=1e-3)
    assert analytic_gflops(ablation_step("A", 512), 512) == pytest.approx(1059.91, abs=1e-2)
    assert analytic_gflops(ablation_step("B2", 512), 512) == pytest.approx(183.753, abs=1e-3)
    assert analytic_gflops(ablation_step("R1", 512), 512) == pytest.approx(6341.23, abs=1e-2)
    assert analytic_gflops(ablation_step("R3", 512), 512) == pytest.approx(6340.60, abs=1e-2)


@pytest.mark.parametrize("name", list(TABLE6))
def test_table6_gflops_and_params(name):
    config = get_config(name)
    paper = TABLE6[name]
    assert abs(analytic_gflops(config) / paper["gflops"] - 1) < 0.02
    with torch.device("meta"):  # the real module tree, without allocating weights
        params = sum(p.numel() for p in build_model(config).parameters())
    assert params == analytic_params(config)
    assert abs(params / paper["params"] - 1) < 0.01


def test_table6_exact_parameter_counts():
    assert analytic_params(get_config("imagenet128")) == 117_003_805
    assert analytic_params(get_config("ffhq1024")) == 85_079_300
    assert analytic_params(get_config("imagenet256")) == 557_416_522
    # Table 6's "mapping width 768" read literally: 104.0M / 598.3M, not 85M / 557M
    literal = get_config("ffhq1024")
    literal.model.mapping.width = 768
    assert analytic_params(literal) == pytest.approx(103.96e6, rel=1e-3)


@pytest.mark.parametrize("name", config_names())
def test_analytic_params_equal_the_built_model(name):
    config = get_config(name)
    with torch.device("meta"):
        model = build_model(config)
    assert sum(p.numel() for p in model.parameters()) == analytic_params(config)


def test_dit_b4_size():
    """§5.2: "approx. 130M parameters for DiT, approx 105M to 120M for HDiT"."""
    assert analytic_params(ablation_step("R1")) == pytest.approx(130.39e6, rel=1e-3)
    for step in ("A", "B1", "B2", "C", "D", "E"):
        assert 105e6 <= analytic_params(ablation_step(step)) <= 120e6


# ----------------------------------------------------------------------------------------------
# fvcore and the closed form agree
# ----------------------------------------------------------------------------------------------

# One per distinct architecture (D = E, R2 = R1, R4 = R3, imagenet128 = E: see test_configs).
DISTINCT = ["A", "B1", "B2", "C", "E", "E-add", "E-concat", "R3", "toy"]


@pytest.mark.parametrize("name", DISTINCT)
def test_fvcore_matches_analytic_at_128(name):
    config = get_config(name)
    res = 128 if name != "toy" else 32
    measured = count_gflops(config, res, device="meta")
    assert measured == pytest.approx(analytic_gflops(config, res), rel=1e-6)


def test_fvcore_matches_analytic_for_dit_on_cpu():
    """DiT's patch convolution has no meta kernel under tracing: this one runs on the CPU."""
    config = ablation_step("R1")
    assert count_gflops(config, 128) == pytest.approx(analytic_gflops(config, 128), rel=1e-6)


@pytest.mark.parametrize("name", ["E@256", "imagenet256"])
def test_fvcore_matches_analytic_at_256_per_level(name):
    config = get_config(name)
    measured = count_gflops_by_level(config, 256, device="meta")
    expected = analytic_breakdown(config, 256, by="level")
    assert set(measured) == set(expected) == {None, 0, 1, 2}
    for level, gflops in expected.items():
        assert measured[level] == pytest.approx(gflops, rel=1e-6), level


def test_plain_fvcore_misses_exactly_the_attention():
    """The fact measured with the authors' code: fvcore without our handles gives 30.1 GFLOP for
    E@128 (31.4 with them) — the difference is exactly the attention kernels."""
    from fvcore.nn import FlopCountAnalysis

    config = ablation_step("E")
    with torch.device("meta"):
        model = build_model(config).eval()
        inputs = (torch.zeros(1, 3, 128, 128), torch.ones(1), torch.tensor([1000]))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = FlopCountAnalysis(model, inputs).unsupported_ops_warnings(False).total() / 1e9
    attention = analytic_breakdown(config, 128, by="kind")["attention"]
    assert round(plain, 1) == 30.1
    assert plain + attention == pytest.approx(analytic_gflops(config, 128), rel=1e-9)


def test_count_gflops_of_a_module_and_batches():
    """A built module is traced as it is (here on the CPU, really running), batch 2."""
    config = get_config("toy")
    model = build_model(config)
    by_module = count_gflops(model, 32, batch_size=2, by_module=True)
    per_level = analytic_breakdown(config, 32, by="level")
    assert by_module[""] == pytest.approx(2 * analytic_gflops(config, 32), rel=1e-9)
    inner = by_module["mid_level"] + by_module["merges"] + by_module["splits"]
    assert inner == pytest.approx(2 * per_level[1], rel=1e-9)
    assert model.training  # restored after the trace
    with pytest.raises(ValueError, match="batch_size"):
        count_gflops(model, 32, batch_size=0)


# ----------------------------------------------------------------------------------------------
# The handles, on single ops
# ----------------------------------------------------------------------------------------------


class _Op(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _count(fn, *inputs) -> float:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return flop_count_analysis(_Op(fn), inputs).total()


def test_sdpa_handle():
    q = torch.randn(2, 3, 10, 8)
    k = torch.randn(2, 3, 12, 8)
    v = torch.randn(2, 3, 12, 5)
    flops = _count(torch.nn.functional.scaled_dot_product_attention, q, k, v)
    assert flops == 2 * 3 * 10 * 12 * (8 + 5)


def test_neighborhood_and_window_handles():
    q = torch.randn(1, 16, 16, 2, 8)
    na = lambda q, k, v: neighborhood_attention(q, k, v, 5, backend="torch")
    assert _count(na, q, q, q) == 16 * 16 * 2 * 25 * (8 + 8)
    sw = lambda q, k, v: shifted_window_attention(q, k, v, 4, 2)
    assert _count(sw, q, q, q) == 16 * 16 * 2 * 16 * (8 + 8)


def test_einsum_handle():
    a, b = torch.randn(4, 5), torch.randn(5, 6)
    assert _count(lambda a, b: torch.einsum("ij,jk->ik", a, b), a, b) == 4 * 5 * 6
    assert _count(lambda a: torch.einsum("nhwc->nchw", a), torch.randn(2, 3, 4, 5)) == 0


def test_norms_are_not_counted():
    x = torch.randn(4, 10, 32)
    assert _count(nn.LayerNorm(32), x) == 0
    assert _count(nn.Linear(32, 7), x) == 4 * 10 * 32 * 7


# ----------------------------------------------------------------------------------------------
# Scaling (Fig. 2, App. A)
# ----------------------------------------------------------------------------------------------


def test_scaling_table_and_fig2_slopes():
    resolutions = [128, 256, 512, 1024, 2048, 4096]
    rows = scaling_table(["E", "R1"], resolutions, method="analytic")
    hdit = [r["gflops"] for r in rows if r["name"] == "E"]
    dit = [r["gflops"] for r in rows if r["name"] == "R1"]
    pixels = [r * r for r in resolutions]
    assert [r["levels"] for r in rows if r["name"] == "E"] == [2, 3, 4, 5, 6, 7]
    # log-log slopes over 1024²…4096²: HDiT linear in pixels, DiT quadratic
    assert loglog_slope(pixels[3:], hdit[3:]) == pytest.approx(1.0, abs=0.03)
    assert loglog_slope(pixels[3:], dit[3:]) == pytest.approx(2.0, abs=0.03)
    # Fig. 2: "at megapixel resolutions, less than 1% of the cost of DiT"
    assert hdit[3] / dit[3] < 0.01
    # auto: traced where it can be (meta device), analytic elsewhere; both agree
    auto = scaling_table(["E"], [128], method="auto")[0]
    assert auto["method"] == "fvcore" and auto["gflops"] == pytest.approx(auto["analytic_gflops"])


def test_app_a_geometric_series():
    """App. A: the local-attention levels added for each doubling cost n·d·Σ (1/4)^m — bounded
    by 4/3 of the outermost level's cost, so the total is O(n)."""
    for res in (512, 1024, 2048, 4096):
        terms = analytic_terms(ablation_step("E", res), res)
        attention = {t.level: t.flops for t in terms if t.kind == "attention"}
        local = [attention[level] for level in sorted(attention)[:-1]]  # all but the global core
        for outer, inner in zip(local, local[1:]):
            assert inner == outer // 4  # each level: a quarter of the tokens, same width
        assert sum(local) < 4 / 3 * local[0]
    # doubling the resolution quadruples the pixels: HDiT's cost → ×4, DiT's → ×16
    e = [analytic_gflops(ablation_step("E", r), r) for r in (2048, 4096)]
    d = [analytic_gflops(ablation_step("R1", r), r) for r in (2048, 4096)]
    assert e[1] / e[0] == pytest.approx(4, rel=0.02)
    assert d[1] / d[0] == pytest.approx(16, rel=0.02)


def test_loglog_slope_closed_form():
    assert loglog_slope([1, 10, 100], [3, 300, 30000]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        loglog_slope([1], [1])
    assert math.isclose(loglog_slope([2, 4], [2, 4]), 1.0)


# ----------------------------------------------------------------------------------------------
# Rectangular sizes (H × W)
# ----------------------------------------------------------------------------------------------


def test_rectangular_attention_flops_closed_form():
    """At 128×256, step A's levels see 32×64 = 2048 and 16×32 = 512 tokens: global attention
    costs layers · heads · n² · 2·head_dim; E's 7×7 neighborhoods n · 49 keys instead."""
    a = ablation_step("A")
    attention = {t.level: t.flops for t in analytic_terms(a, (128, 256)) if t.kind == "attention"}
    assert attention == {0: 4 * 6 * 2048**2 * 2 * 64, 1: 11 * 12 * 512**2 * 2 * 64}
    e = ablation_step("E")
    attention = {t.level: t.flops for t in analytic_terms(e, (128, 256)) if t.kind == "attention"}
    assert attention == {0: 4 * 6 * 2048 * 49 * 2 * 64, 1: 11 * 12 * 512**2 * 2 * 64}


@pytest.mark.parametrize("name", ["A", "B1", "E", "R1"])
def test_rectangular_counts_are_symmetric(name):
    """H × W and W × H have the same tokens per level, the same keys per query: equal FLOPs."""
    config = ablation_step(name)
    wide, tall = analytic_gflops(config, (128, 256)), analytic_gflops(config, (256, 128))
    assert wide == tall > analytic_gflops(config, 128)
    if name != "R1":  # DiT's patch convolution traces on the CPU only (see above): slow
        assert count_gflops(config, (128, 256), device="meta") == pytest.approx(wide, rel=1e-6)
        assert count_gflops(config, (256, 128), device="meta") == pytest.approx(wide, rel=1e-6)


@pytest.mark.parametrize("name", ["A", "R1"])
def test_rectangular_position_table_parameters(name):
    """The additive table (A) / DiT's fixed sin-cos buffer (R1, no parameters) at H × W: the
    closed form equals the built model; A's table grows by (H/p)(W/p) − (n/p)² rows."""
    square = ablation_step(name)
    rect = at_resolution(square, (128, 192))
    with torch.device("meta"):
        model = build_model(rect)
    assert sum(p.numel() for p in model.parameters()) == analytic_params(rect)
    extra = (32 * 48 - 32 * 32) * 384 if name == "A" else 0
    assert analytic_params(rect) - analytic_params(square) == extra
    if name == "A":
        assert tuple(model.pos_emb.table.shape) == (32, 48, 384)
    else:
        assert tuple(model.pos_embed.shape) == (32, 48, 768)
