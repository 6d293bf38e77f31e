"""Positions (§4.2): the token grid and its downscaling, axial RoPE (relative-offset property,
half of each head unrotated, k-diffusion's frequencies) and the additive embedding of steps A–C."""

from __future__ import annotations

import math

import pytest
import torch

from hdit_edu.rope import (
    AdditivePosEmb,
    AxialRoPE,
    apply_rope,
    axial_rope_freqs,
    downscale_pos,
    make_axial_pos,
    sincos_pos_emb_2d,
)


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
