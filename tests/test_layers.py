"""Tests for hdit_edu.layers: norms, feed-forward, Fourier features, mapping network, param groups
(§4.2, Figs. 4–5, Table 6)."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hdit_edu.layers import (
    AdaRMSNorm,
    FeedForward,
    FourierFeatures,
    MappingNetwork,
    RMSNorm,
    check_conditioning,
    default_d_ff,
    geglu,
    make_param_groups,
    param_tags,
    rms_norm,
    tag_module,
    zero_init,
)


def test_rms_norm_closed_form_and_torch_reference():
    # x = (3, 4): mean(x²) = 12.5, so y = x / √12.5 (eps = 0).
    y = rms_norm(torch.tensor([3.0, 4.0]), torch.ones(2), eps=0.0)
    torch.testing.assert_close(y, torch.tensor([3.0, 4.0]) / math.sqrt(12.5))
    # Against PyTorch's own RMSNorm with a random scale.
    torch.manual_seed(0)
    x, scale = torch.randn(4, 5, 6, 32), torch.randn(32)
    ref = F.rms_norm(x, (32,), weight=scale, eps=1e-6)
    torch.testing.assert_close(RMSNorm(32).eval()(x), F.rms_norm(x, (32,), eps=1e-6))
    torch.testing.assert_close(rms_norm(x, scale, 1e-6), ref, rtol=1e-5, atol=1e-6)


def test_rms_norm_statistics_in_float32_for_bf16():
    torch.manual_seed(0)
    x = (torch.randn(64, 256) * 100).bfloat16()
    y = rms_norm(x, torch.ones(256, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16
    expected = (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).bfloat16()
    assert (y.float() - expected.float()).abs().max() <= 2e-2  # one bf16 rounding of the product


def test_ada_rms_norm_starts_as_rms_norm_and_scales_per_sample():
    torch.manual_seed(0)
    norm = AdaRMSNorm(16, 8)
    x, cond = torch.randn(3, 4, 5, 16), torch.randn(3, 8)
    assert not norm.linear.weight.any()  # zero-initialised conditioning projection
    assert torch.equal(norm(x, cond), RMSNorm(16)(x))  # exactly RMSNorm at init
    with torch.no_grad():
        norm.linear.weight.normal_()
    scale = 1 + cond @ norm.linear.weight.T  # (3, 16): scale = 1 + W·cond
    for b in range(3):
        torch.testing.assert_close(norm(x, cond)[b], rms_norm(x[b], scale[b]))


def test_geglu_feed_forward_matches_manual_computation():
    torch.manual_seed(0)
    ffn = FeedForward(8, 12, kind="geglu")
    assert ffn.up_proj.weight.shape == (24, 8) and ffn.down_proj.weight.shape == (8, 12)
    x = torch.randn(5, 8)
    assert not ffn(x).any()  # down_proj starts at zero
    with torch.no_grad():
        ffn.down_proj.weight.normal_()
    w_value, w_gate = ffn.up_proj.weight[:12], ffn.up_proj.weight[12:]  # first half: value
    hidden = (x @ w_value.T) * F.gelu(x @ w_gate.T)
    torch.testing.assert_close(ffn(x), hidden @ ffn.down_proj.weight.T)
    torch.testing.assert_close(
        geglu(torch.tensor([2.0, 1.0])), torch.tensor([2 * F.gelu(torch.tensor(1.0)).item()])
    )


def test_gelu_feed_forward_and_default_hidden_sizes():
    torch.manual_seed(0)
    ffn = FeedForward(8, 32, kind="gelu")
    assert ffn.up_proj.weight.shape == (32, 8)
    with torch.no_grad():
        ffn.down_proj.weight.normal_()
    x = torch.randn(5, 8)
    torch.testing.assert_close(ffn(x), F.gelu(x @ ffn.up_proj.weight.T) @ ffn.down_proj.weight.T)
    assert ffn.up_proj.bias is None and ffn.down_proj.bias is None  # no biases
    assert default_d_ff(384, "geglu") == 1152 and default_d_ff(384, "gelu") == 1536
    with pytest.raises(ValueError, match="allowed"):
        FeedForward(8, 8, kind="swiglu")
    with pytest.raises(ValueError, match="allowed"):
        default_d_ff(8, "relu")


def test_fourier_features_closed_form():
    torch.manual_seed(0)
    ff = FourierFeatures(1, 8, std=2.0)
    assert ff.weight.shape == (4, 1) and "weight" in ff.state_dict()  # a saved buffer
    assert list(ff.parameters()) == []
    # cosines first: at x = 0 the features are [1, 1, 1, 1, 0, 0, 0, 0]
    torch.testing.assert_close(ff(torch.zeros(1, 1)), torch.tensor([[1.0] * 4 + [0.0] * 4]))
    x = torch.tensor([[0.3], [-1.2]])
    f = 2 * math.pi * x * ff.weight[:, 0]
    torch.testing.assert_close(ff(x), torch.cat([f.cos(), f.sin()], dim=-1))
    big = FourierFeatures(3, 20000, std=0.5)
    assert abs(big.weight.std().item() - 0.5) < 0.01  # B ~ N(0, std²)
    with pytest.raises(ValueError, match="even"):
        FourierFeatures(1, 7)


def test_mapping_network_starts_as_two_rms_norms():
    torch.manual_seed(0)
    net = MappingNetwork(depth=2, width=16)
    assert net.blocks[0].ffn.up_proj.weight.shape == (2 * 48, 16)  # d_ff default 3·width, GEGLU
    x = torch.randn(4, 16)
    # zero-initialised down projections: each residual block is the identity
    torch.testing.assert_close(net(x), rms_norm(rms_norm(x, torch.ones(16)), torch.ones(16)))
    with torch.no_grad():
        for block in net.blocks:
            block.ffn.down_proj.weight.normal_()
    h = rms_norm(x, torch.ones(16))
    for block in net.blocks:
        h = h + block.ffn(rms_norm(h, torch.ones(16)))
    torch.testing.assert_close(net(x), rms_norm(h, torch.ones(16)))


def test_zero_init_weight_and_bias():
    layer = zero_init(nn.Linear(4, 3))
    assert not layer.weight.any() and not layer.bias.any()


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.cond_in = tag_module(nn.Linear(4, 4, bias=False), "no_wd")
        self.norm = AdaRMSNorm(4, 4)
        self.mapping = MappingNetwork(1, 4)
        self.emb = nn.Embedding(3, 4)


def test_param_groups_weight_decay_only_on_weight_matrices_and_mapping_lr():
    model = _Toy()
    tags = param_tags(model)
    assert tags["proj.weight"] == {"wd"}
    assert tags["proj.bias"] == set()
    assert tags["cond_in.weight"] == set()  # exempted, like k-diffusion's time_in_proj
    assert tags["norm.linear.weight"] == {"wd", "mapping"}
    assert tags["mapping.in_norm.scale"] == {"mapping"}
    assert tags["mapping.blocks.0.ffn.up_proj.weight"] == {"wd", "mapping"}
    assert tags["emb.weight"] == set()
    groups = make_param_groups(model, base_lr=1e-3, mapping_lr_scale=0.25)
    assert [g["name"] for g in groups] == ["wd", "no_wd", "mapping_wd", "mapping_no_wd"]
    assert [g["lr"] for g in groups] == [1e-3, 1e-3, 2.5e-4, 2.5e-4]
    assert "weight_decay" not in groups[0] and groups[1]["weight_decay"] == 0.0
    assert groups[2].get("weight_decay") is None and groups[3]["weight_decay"] == 0.0
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each exactly once
    assert len(groups[0]["params"]) == 1 and len(groups[2]["params"]) == 3
    # tags live on modules: a deep copy (EMA) gives the same groups
    twin = copy.deepcopy(model)
    assert [len(g["params"]) for g in make_param_groups(twin)] == [len(g["params"]) for g in groups]
    torch.optim.AdamW(groups, weight_decay=1e-2)  # accepted as is (empty groups allowed)
    with pytest.raises(ValueError, match="allowed"):
        tag_module(nn.Linear(2, 2), "frozen")


def test_conditioning_checks():
    assert check_conditioning(3, torch.tensor(2.0), None, None, 0, 0).shape == (3,)
    with pytest.raises(ValueError, match="class_cond is required"):
        check_conditioning(2, torch.ones(2), None, None, 10, 0)
    with pytest.raises(ValueError, match=r"\[0, 10\].*max 11"):
        check_conditioning(2, torch.ones(2), torch.tensor([0, 11]), None, 10, 0)
    with pytest.raises(ValueError, match="min -1"):
        check_conditioning(2, torch.ones(2), torch.tensor([-1, 3]), None, 10, 0)
    with pytest.raises(ValueError, match="integer tensor"):
        check_conditioning(2, torch.ones(2), torch.tensor([0.0, 1.0]), None, 10, 0)
    with pytest.raises(ValueError, match="unconditional"):
        check_conditioning(2, torch.ones(2), torch.tensor([0, 1]), None, 0, 0)
    with pytest.raises(ValueError, match="sigma"):
        check_conditioning(2, torch.ones(3), None, None, 0, 0)
    with pytest.raises(ValueError, match=r"aug_cond.*\(2, 9\)"):
        check_conditioning(2, torch.ones(2), None, torch.zeros(2, 3), 0, 9)
    check_conditioning(2, torch.ones(2), torch.tensor([0, 10]), torch.zeros(2, 9), 10, 9)
