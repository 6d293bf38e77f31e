"""Positions (§4.2): the token grid and its downscaling, axial RoPE (relative-offset property,
half of each head unrotated, k-diffusion's frequencies) and the additive embedding of steps A–C."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from hdit_edu.ablation import run_config
from hdit_edu.configs import Config, validate_config
from hdit_edu.flops import analytic_params
from hdit_edu.hourglass import HDiT, level_rope_turns
from hdit_edu.presets import get_config
from hdit_edu.rope import (
    AdditivePosEmb,
    AxialRoPE,
    apply_rope,
    axial_rope_freqs,
    downscale_pos,
    make_axial_pos,
    rope_freq_scale,
    rope_turns,
    sincos_pos_emb_2d,
)
from hdit_edu.studies.report import study_script

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "results" / "ablation-toy" / "runs"
REVISITED = ROOT / "results" / "ablation-toy-revisited"


def test_positions_are_cell_centres_on_the_unit_square():
    pos = make_axial_pos(4, 4)
    centres = torch.tensor([-0.75, -0.25, 0.25, 0.75])
    assert pos.shape == (4, 4, 2)
    assert torch.allclose(pos[:, 0, 0], centres) and torch.allclose(pos[0, :, 1], centres)
    assert torch.allclose(pos[2, 1], torch.tensor([0.25, -0.25]))  # (row y, column x)
    # non-square: the longer side spans [-1, 1], cells stay square (step 0.5 both ways)
    wide = make_axial_pos(2, 4)
    assert torch.allclose(wide[:, 0, 0], torch.tensor([-0.25, 0.25]))
    assert torch.allclose(wide[0, :, 1], centres)
    tall = make_axial_pos(4, 2)
    assert torch.equal(tall, wide.transpose(0, 1).flip(-1))


@pytest.mark.parametrize("h,w", [(8, 8), (4, 12), (16, 2)])
def test_downscaled_positions_are_the_positions_of_the_merged_grid(h, w):
    merged = downscale_pos(make_axial_pos(h, w))
    assert torch.allclose(merged, make_axial_pos(h // 2, w // 2), atol=1e-7)
    with pytest.raises(ValueError, match="not divisible by 2"):
        downscale_pos(make_axial_pos(3, 4))


def test_frequencies_are_log_spaced_from_pi_to_ten_pi_dealt_to_heads():
    heads, head_dim = 3, 32  # m = 4 frequencies per head and axis
    freqs = axial_rope_freqs(head_dim, heads)
    m = head_dim // 8
    assert freqs.shape == (heads, m)
    step = math.log(10) / (heads * m)  # heads·m points over [log π, log 10π), end excluded
    for h in range(heads):
        for i in range(m):
            expected = math.pi * math.exp((i * heads + h) * step)
            assert freqs[h, i].item() == pytest.approx(expected, rel=1e-6)
    assert freqs.min().item() == pytest.approx(math.pi) and freqs.max() < 10 * math.pi
    with pytest.raises(ValueError, match="divisible by 8"):
        axial_rope_freqs(12, 2)


def test_rope_module_angles_and_no_parameters():
    rope = AxialRoPE(16, 2)
    assert list(rope.parameters()) == [] and set(rope.state_dict()) == {"freqs"}
    pos = torch.tensor([[0.5, -0.25]])
    theta = rope(pos)
    assert theta.shape == (1, 2, 4)  # (…, heads, head_dim // 4)
    assert torch.allclose(theta[0, :, :2], 0.5 * rope.freqs)  # row angles y·f
    assert torch.allclose(theta[0, :, 2:], -0.25 * rope.freqs)  # column angles x·f


def test_rope_leaves_half_of_each_head_unrotated_and_keeps_norms():
    rope = AxialRoPE(32, 4)
    x = torch.randn(6, 5, 4, 32)  # (h, w, heads, head_dim)
    y = apply_rope(x, rope(make_axial_pos(6, 5)))
    assert torch.equal(y[..., 16:], x[..., 16:])  # the second half: untouched
    assert (y[..., :16] - x[..., :16]).abs().max() > 0.1  # the first half: rotated
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)


def test_rope_is_a_rotation_of_channel_pairs():
    # pairs (c, c + d) with d = theta.shape[-1]: a complex multiplication by e^{iθ}
    x, theta = torch.randn(3, 2, 16), torch.randn(3, 2, 4)
    y = apply_rope(x, theta)
    z = torch.complex(x[..., :4], x[..., 4:8]) * torch.polar(torch.ones_like(theta), theta)
    assert torch.allclose(y[..., :4], z.real, atol=1e-6)
    assert torch.allclose(y[..., 4:8], z.imag, atol=1e-6)


def test_rotated_dot_product_depends_only_on_the_relative_offset():
    torch.manual_seed(0)
    rope = AxialRoPE(64, 2)
    q, k = torch.randn(2, 64), torch.randn(2, 64)

    def score(p_q, p_k):
        q_rot = apply_rope(q, rope(torch.tensor(p_q)))
        k_rot = apply_rope(k, rope(torch.tensor(p_k)))
        return (q_rot * k_rot).sum(-1)  # per head

    base = score([0.1, -0.3], [0.4, 0.2])  # offset (-0.3, -0.5)
    for shift in ([0.5, 0.5], [-0.7, 0.15], [1.3, -2.0]):
        moved = score([0.1 + shift[0], -0.3 + shift[1]], [0.4 + shift[0], 0.2 + shift[1]])
        assert torch.allclose(moved, base, atol=1e-4)
    other = score([0.1, -0.3], [0.6, 0.2])  # a different offset gives a different score
    assert (other - base).abs().max() > 1e-2


def test_sincos_table_closed_form():
    table = sincos_pos_emb_2d(3, 5, 16)  # rows use channels 0–7, columns 8–15
    assert table.shape == (3, 5, 16)
    i, j = torch.arange(3)[:, None], torch.arange(5)[None, :]
    assert torch.allclose(table[..., 0], torch.sin(i * 1.0).expand(3, 5))  # ω_0 = 1
    assert torch.allclose(table[..., 4], torch.cos(i * 1.0).expand(3, 5))
    assert torch.allclose(table[..., 8], torch.sin(j * 1.0).expand(3, 5))
    assert torch.allclose(table[..., 9], torch.sin(j * 10000 ** (-1 / 4)).expand(3, 5))
    assert len({tuple(v.tolist()) for v in table.reshape(15, 16)}) == 15  # all codes distinct


def test_additive_embedding_learns_adds_and_resizes():
    emb = AdditivePosEmb(4, 6, 8)
    assert [n for n, _ in emb.named_parameters()] == ["table"]
    assert torch.equal(emb.table.detach(), sincos_pos_emb_2d(4, 6, 8))
    x = torch.randn(2, 4, 6, 8)
    out = emb(x)
    assert torch.allclose(out - x, emb.table.detach().expand_as(x))
    out.sum().backward()
    assert torch.equal(emb.table.grad, torch.full((4, 6, 8), 2.0))  # batch of 2
    # another grid: bicubic resize; a constant table stays constant, the own size is identity
    with torch.no_grad():
        emb.table.fill_(0.5)
    assert torch.allclose(emb.embedding(8, 3), torch.full((8, 3, 8), 0.5))
    assert emb(torch.zeros(1, 8, 12, 8)).shape == (1, 8, 12, 8)
    with pytest.raises(ValueError, match=r"\(B, H, W, 8\)"):
        emb(torch.zeros(1, 4, 6, 4))


# --- the frequency design (issue 29): rotation per token, aliasing, grid-scaled frequencies ---


def _aliased_by_closed_form(n_freqs: int, side: int) -> int:
    """Frequency k = π·10^(k/N) turns by 10^(k/N)·2/side π per token: it aliases (> π) for
    k > N·log10(side/2)."""
    return sum(10 ** (k / n_freqs) * 2 / side > 1 for k in range(n_freqs))


def test_rotation_per_token_on_the_toy_and_paper_grids():
    """Issue 29's numbers, from the library's own frequencies and positions: the toy ablation's
    8×8 / 4×4 grids alias (3 of 8, 11 of 16 pairs; up to 1.87π and 4.33π per token), the
    paper's ImageNet-128² 32×32 / 16×16 grids do not / about 10 % (9 of 96)."""
    toy = level_rope_turns(run_config("D", 0).model)
    paper = level_rope_turns(get_config("imagenet128").model)
    expected = [  # (grid, frequencies, aliased, max turn per token in π)
        (toy[0], (8, 8), 8, 3, 10 ** (7 / 8) / 4),  # 2 heads × 4
        (toy[1], (4, 4), 16, 11, 10 ** (15 / 16) / 2),  # 4 heads × 4
        (paper[0], (32, 32), 48, 0, 10 ** (47 / 48) / 16),  # 6 heads × 8
        (paper[1], (16, 16), 96, 9, 10 ** (95 / 96) / 8),  # 12 heads × 8
    ]
    for (grid, turns, aliased), want_grid, n, n_aliased, top in expected:
        assert grid == want_grid and turns.numel() == n
        assert int(aliased.sum()) == n_aliased == _aliased_by_closed_form(n, grid[0])
        assert torch.equal(aliased, turns > 1)
        assert turns.max().item() == pytest.approx(top, rel=1e-6)
    assert round(toy[0][1].max().item(), 2) == 1.87 and round(toy[1][1].max().item(), 2) == 4.33
    assert paper[1][2].float().mean().item() == pytest.approx(0.094, abs=1e-3)  # "about 10 %"
    # the inner level's positions are the outer ones merged 2×2 (the model's path): same step
    merged = downscale_pos(make_axial_pos(8, 8))
    assert (merged[0, 1, 1] - merged[0, 0, 1]).item() == pytest.approx(0.5)


def test_rotation_per_token_follows_the_position_reading():
    """At another grid, ``normalised`` positions are denser (turns shrink with the side);
    ``grid`` positions keep the training grid's step, so the turns per token stay."""
    trained, _ = rope_turns(32, 2, (8, 8))
    dense, _ = rope_turns(32, 2, (16, 16), train_grid=(8, 8))
    kept, _ = rope_turns(32, 2, (16, 16), train_grid=(8, 8), reading="grid")
    torch.testing.assert_close(dense, trained / 2)
    torch.testing.assert_close(kept, trained)
    assert torch.equal(rope_turns(32, 2, (4, 12))[0], rope_turns(32, 2, (12, 12))[0])
    with pytest.raises(ValueError, match="no neighbouring tokens"):
        rope_turns(32, 2, (1, 1))


def test_grid_scaled_frequencies_never_alias_and_image_is_the_reference():
    assert rope_freq_scale("image", (4, 4)) == 1.0
    for grid, scale in [((8, 8), 0.4), ((4, 4), 0.2), ((16, 16), 0.8), ((4, 12), 0.6)]:
        assert rope_freq_scale("grid", grid) == pytest.approx(scale)
    assert rope_freq_scale("grid", (32, 32)) == rope_freq_scale("grid", (20, 20)) == 1.0
    d_image = run_config("D", 0).model
    d_grid = dataclasses.replace(d_image, rope_freqs="grid")
    # the top of the range (10π, excluded) turns by π: the highest pair by π·10^(-1/N) < π
    for (_, turns, aliased), n in zip(level_rope_turns(d_grid), (8, 16)):
        assert not aliased.any() and turns.max().item() == pytest.approx(10 ** (-1 / n))
    paper = dataclasses.replace(get_config("imagenet128").model, rope_freqs="grid")
    assert [int(a.sum()) for _, _, a in level_rope_turns(paper)] == [0, 0]
    # the model's buffers: "image" is the reference's, untouched (bit-identical); "grid" is
    # the same frequencies times each level's scale (outer 8×8: 0.4, inner 4×4: 0.2)
    for config in (d_image, d_grid):
        model = HDiT(config)
        outer = [*model.down_levels[0], *model.up_levels[0]]
        for layers, grid in [(outer, (8, 8)), (list(model.mid_level), (4, 4))]:
            scale = rope_freq_scale(config.rope_freqs, grid)
            for layer in layers:
                reference = axial_rope_freqs(32, layer.attn.heads)
                want = reference if config.rope_freqs == "image" else reference * scale
                assert torch.equal(layer.attn.pos_emb.freqs, want)
    assert HDiT(d_grid).state_dict().keys() == HDiT(d_image).state_dict().keys()


def test_old_configs_and_records_read_as_image_frequencies():
    """A config written before ``rope_freqs`` existed (every shipped record) reads as
    ``"image"``, the reference's frequencies: the same model as before, bit for bit."""
    record = json.loads((RECORDS / "D-s0.json").read_text())
    assert "rope_freqs" not in record["config"]["model"]
    config = Config.from_dict(record["config"])
    assert config.model.rope_freqs == "image" and config.model.pos_emb == "rope"
    assert config.model == run_config("D", 0).model


@pytest.mark.parametrize(
    "change, fragments",
    [
        ({"rope_freqs": "nyquist"}, ["model.rope_freqs", "'nyquist'", "allowed: image, grid"]),
        ({"rope_freqs": "grid", "pos_emb": "additive"}, ["model.rope_freqs", "'additive'"]),
        ({"rope_freqs": "grid", "arch": "dit"}, ["model.rope_freqs", "'dit'", "'rope+additive'"]),
        ({"pos_emb": "rope+sincos"}, ["model.pos_emb", "'rope+sincos'", "rope+additive"]),
    ],
)
def test_rope_options_are_validated_with_a_message(change, fragments):
    model = run_config("D", 0).model
    levels = model.levels[:1] if change.get("arch") == "dit" else model.levels
    model = dataclasses.replace(model, levels=levels, **change)
    with pytest.raises(ValueError) as info:
        validate_config(model)
    assert all(f in str(info.value) for f in fragments), str(info.value)


def test_rope_and_additive_table_together():
    """``pos_emb = "rope+additive"`` (issue 29's arm): the table after patching *and* RoPE in
    every attention; its parameters are the table's on top of the RoPE model's."""
    rope = run_config("D", 0).model
    both = dataclasses.replace(rope, pos_emb="rope+additive")
    validate_config(both)
    model = HDiT(both)
    assert model.pos_emb.table.shape == (8, 8, 64)
    assert all(layer.attn.pos_emb is not None for layer in [*model.down_levels[0], *model.mid_level])
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == analytic_params(both) == analytic_params(rope) + 8 * 8 * 64
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised outputs would hide everything
            p.add_(0.02 * torch.randn_like(p))
        out = model(x, torch.tensor([1.0, 3.0]), torch.tensor([0, 8]))
        model.pos_emb = None  # without the table: another output
        assert not torch.allclose(out, model(x, torch.tensor([1.0, 3.0]), torch.tensor([0, 8])))
    with pytest.raises(ValueError, match="divisible by 8"):
        levels = [dataclasses.replace(rope.levels[0], width=48, head_dim=12), *rope.levels[1:]]
        validate_config(dataclasses.replace(both, levels=levels))


def test_revisited_study_is_the_registered_amd_cut():
    """Issue 29's spec as registered: the AMD cut fixed in its README before any run (C, D,
    D-grid, D-table × 5 seeds, the five RoPE comparisons), its RoPE arms the two options,
    registered (the registration's hash is the file's), and design.py costs the same runs."""
    from hdit_edu.studies.registration import check
    from hdit_edu.studies.spec import load_study

    study = load_study(REVISITED / "study.toml")
    assert (REVISITED / "registration.json").exists()
    check(REVISITED / "study.toml")  # raises if the spec changed since its registration
    arms = {a.label: a for a in study.arms}
    assert arms["D-grid"].overrides == ("model.rope_freqs=grid",)
    assert arms["D-table"].overrides == ("model.pos_emb=rope+additive",)
    assert (study.budget.train_steps, study.budget.batch_size) == (20_000, 16)
    assert len(study.comparisons) == 5 and study.rule == "holm" and study.reference is None
    design = study_script(REVISITED, "design")
    assert design.AMD_CUT == {label: len(a.seeds) for label, a in arms.items()}
    assert len(study.runs()) == sum(design.AMD_CUT.values()) == 20
    assert study.metrics[:2] == ("fid_selected", "fid_ae_selected") and study.fid_ae
    assert study.select_cfg == (1.0, 1.5, 2.0, 3.0, 4.0) and study.loss_profile


def test_revisited_reading_rule_gives_each_outcome_of_its_table():
    """reading.py applies the README's RoPE outcome table as registered: each row of the table
    from analysis rows with those significances and signs (Holm p and CIs as the analysis
    writes them), and the qualifiers from the autoencoder FID and the σ-band errors."""
    reading = study_script(REVISITED, "reading")

    def row(mean, sig, lo=None, hi=None):
        lo, hi = (mean - 1, mean + 1) if lo is None else (lo, hi)
        return {"difference": {"mean": mean, "n": 5, "ci95": [lo, hi]}, "significant": sig,
                "p_holm": 0.01 if sig else 0.5}  # fmt: skip

    def rows(grid, table, ae=None, mid=None):
        ae, mid = ae or row(0.0, False), mid or row(0.0, False)
        r = {("D", "D-grid", "fid_selected"): grid, ("D", "D-table", "fid_selected"): table}
        for arm in ("D-grid", "D-table"):
            r |= {("D", arm, "fid_ae_selected"): ae, ("D", arm, "error_mid"): mid,
                  ("D", arm, "error_high"): row(0.0, False)}  # fmt: skip
        return r

    def verdict(r):
        return reading.rope_reading(r)[2]

    assert "supports **aliasing**" in verdict(rows(row(-9, True), row(-2, False)))
    assert "supports **lost absolute position**" in verdict(rows(row(-2, False), row(-9, True)))
    assert "both contribute" in verdict(rows(row(-9, True), row(-9, True)))
    assert "**neither**" in verdict(rows(row(-2, False), row(3, False)))
    assert "grid hurts" in verdict(rows(row(9, True), row(-9, True)))
    strong = rows(row(-9, True), row(0, False), ae=row(-5, False, -8, -2), mid=row(-1, False, -2, -0.5))
    assert "under both extractors, and where the layout forms" in reading.rope_reading(strong)[3]
    weak = rows(row(-9, True), row(0, False), ae=row(-5, False, -8, 1))
    assert "toy classifier only;" in reading.rope_reading(weak)[3]
    r = {("C", "D", "fid_selected"): row(8, True), ("C", "D", "fid"): row(8, False)}
    assert "a guidance artefact" in reading.guidance_reading(r)[0]
    r[("C", "D", "fid")] = row(7, True)
    assert "stands" in reading.guidance_reading(r)[0]
