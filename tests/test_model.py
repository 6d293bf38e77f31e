"""Tests for the HDiT model (hourglass.py, §4.1, Fig. 3, Table 2) and the DiT baseline (dit.py)."""

import copy

import einops
import pytest
import torch
from torch import nn

from hdit_edu.attention import Attention
from hdit_edu.configs import LevelConfig, MappingConfig, ModelConfig
from hdit_edu.diffusion import Denoiser
from hdit_edu.dit import DiT
from hdit_edu.hourglass import (
    HDiT,
    TokenMerge,
    TokenSplit,
    merge_skip,
    pixel_shuffle_tokens,
    pixel_unshuffle_tokens,
)
from hdit_edu.layers import param_tags
from hdit_edu.models import build_model, set_attention_backend
from hdit_edu.presets import get_config
from hdit_edu.profiles import to_toy_scale
from hdit_edu.rope import sincos_pos_emb_1d


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest single-threaded (and do not fight other processes for cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**overrides) -> ModelConfig:
    """Three levels: shifted windows (window 4) → neighborhood (3×3) → global; patch 2."""
    spec = dict(
        levels=[
            LevelConfig(depth=2, width=32, head_dim=16, attention="shifted-window", window_size=4),
            LevelConfig(depth=1, width=48, head_dim=16, attention="neighborhood", kernel_size=3),
            LevelConfig(depth=1, width=64, head_dim=16, attention="global"),
        ],
        mapping=MappingConfig(depth=2, width=64),
        patch_size=2,
        num_classes=10,
        aug_dim=9,
        resolution=16,
    )
    spec.update(overrides)
    return ModelConfig(**spec)


def inputs(batch=2, h=16, w=16, num_classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, h, w, generator=g)
    sigma = torch.rand(batch, generator=g) * 5 + 0.05
    cls = torch.arange(batch) % (num_classes + 1) if num_classes else None
    return x, sigma, cls


def perturb_(model: nn.Module, std=0.02, seed=0) -> nn.Module:
    """Add noise to every parameter (so the zero-initialised ones are non-zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


# --- fresh model: F = 0 -------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"pos_emb": "additive", "skip": "concat", "ffn": "gelu"},
        {"num_classes": 0, "aug_dim": 0},
    ],
)
def test_fresh_hdit_returns_exactly_zero(overrides):
    torch.manual_seed(0)
    config = tiny_config(**overrides)
    model = build_model(config)
    assert isinstance(model, HDiT)
    x, sigma, cls = inputs(num_classes=config.num_classes)
    out = model(x, sigma, cls)
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))  # exactly zero: patch_out is zero-initialised
    assert not model.patch_out.proj.weight.any()
    for module in model.modules():  # every AdaRMSNorm starts as a plain RMSNorm
        if type(module).__name__ == "AdaRMSNorm":
            assert not module.linear.weight.any()


# --- gradients reach every parameter ------------------------------------------------------


def test_zero_init_chain_gradients_reach_every_parameter():
    """The zero-initialised projections form a chain: a parameter gets a non-zero gradient only
    once every zero matrix between it and the output has moved. With one Adam step per round:

    step 1: only patch_out (everything upstream is behind its zero weight);
    step 2: + residual stream (patch_in, merges, splits, lerp f, out_norm, additive positions)
            and the zero-initialised out_proj / down_proj of every block;
    step 3: + qkv, attention scales, FFN up_proj, the AdaRMSNorm projections;
    step 4: + mapping network input side (time/aug/class embeddings, in/out norms, down_proj);
    step 5: + the mapping network's up_proj and block norms — every parameter.
    """
    torch.manual_seed(0)
    model = HDiT(tiny_config(pos_emb="additive"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, sigma, cls = inputs()
    aug = torch.randn(2, 9)
    target = torch.randn_like(x)
    first_step = {}
    for step in range(1, 6):
        opt.zero_grad()
        (model(x, sigma, cls, aug) - target).pow(2).mean().backward()
        for name, p in model.named_parameters():
            if name not in first_step and p.grad is not None and p.grad.any():
                first_step[name] = step
        opt.step()
    names = [n for n, _ in model.named_parameters()]
    assert set(first_step) == set(names), sorted(set(names) - set(first_step))
    assert [n for n in names if first_step[n] == 1] == ["patch_out.proj.weight"]
    expected = {
        "patch_in.proj.weight": 2,
        "pos_emb.table": 2,
        "splits.0.f": 2,
        "mid_level.0.attn.out_proj.weight": 2,
        "down_levels.0.1.ffn.down_proj.weight": 2,
        "down_levels.0.1.attn.qkv_proj.weight": 3,
        "up_levels.1.0.attn.scale": 3,
        "mid_level.0.norm2.linear.weight": 3,
        "class_emb.weight": 4,
        "time_in_proj.weight": 4,
        "aug_in_proj.weight": 4,
        "mapping.blocks.1.ffn.up_proj.weight": 5,
    }
    assert {n: first_step[n] for n in expected} == expected


def test_perturbed_model_gradients_reach_every_parameter_in_one_backward():
    """With all zero-inits perturbed, a single backward reaches every parameter (nothing is
    disconnected), for each skip kind and FFN kind."""
    for overrides in ({"skip": "lerp"}, {"skip": "add", "ffn": "gelu"}, {"skip": "concat"}):
        torch.manual_seed(0)
        model = perturb_(HDiT(tiny_config(**overrides)))
        x, sigma, cls = inputs()
        model(x, sigma, cls, torch.randn(2, 9)).square().mean().backward()
        no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
        assert no_grad == [], (overrides, no_grad)


# --- resolutions and validation -----------------------------------------------------------


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (128, 128), (32, 64), (64, 32)])
def test_runs_at_several_resolutions(size):
    torch.manual_seed(0)
    model = perturb_(HDiT(tiny_config(patch_size=4, resolution=32))).eval()
    assert model.grid_sizes(*size) == [(size[0] // 4 >> i, size[1] // 4 >> i) for i in range(3)]
    x, sigma, cls = inputs(h=size[0], w=size[1])
    with torch.no_grad():
        out = model(x, sigma, cls)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().max() > 0


def test_rectangular_config_builds_its_position_tables_for_h_by_w():
    """resolution (16, 32) with patch 2: an 8×16 token grid. The additive table (steps A–C)
    starts as the 2-D sin-cos code (rows in the first half of the channels, columns in the
    second), is used as is at 16×32 and resized for other sizes; DiT's fixed table likewise."""
    config = tiny_config(pos_emb="additive", ffn="gelu", resolution=(16, 32))
    model = HDiT(config)
    table = model.pos_emb.table
    assert tuple(table.shape) == (8, 16, 32)
    with torch.no_grad():  # row 3 in the first half of the channels, column 11 in the second
        torch.testing.assert_close(table[3, 11, :16], sincos_pos_emb_1d(torch.tensor([3]), 16)[0])
        torch.testing.assert_close(table[3, 11, 16:], sincos_pos_emb_1d(torch.tensor([11]), 16)[0])
    assert model.pos_emb.embedding(8, 16) is table
    perturb_(model).eval()
    assert tuple(model.pos_emb.embedding(16, 8).shape) == (16, 8, 32)  # a 32×16 input
    for h, w in ((16, 32), (32, 16)):
        x, sigma, cls = inputs(h=h, w=w)
        with torch.no_grad():
            assert model(x, sigma, cls).shape == x.shape
    dit = DiT(
        ModelConfig(
            arch="dit",
            levels=[LevelConfig(depth=1, width=64, head_dim=16, attention="global")],
            patch_size=4,
            num_classes=0,
            aug_dim=0,
            pos_emb="additive",
            resolution=(16, 32),
        )
    )
    assert tuple(dit.pos_embed.shape) == (4, 8, 64)
    torch.testing.assert_close(
        dit.pos_embed[2, 5, 32:], sincos_pos_emb_1d(torch.tensor([5]), 32)[0]
    )
    x, sigma, _ = inputs(h=16, w=32, num_classes=0)
    with torch.no_grad():
        assert dit(x, sigma).shape == x.shape


def test_two_level_model_neighborhood_then_global():
    config = tiny_config(
        levels=[LevelConfig(2, 32, 16, "neighborhood", 5), LevelConfig(2, 64, 32, "global")],
        patch_size=4,
    )
    model = perturb_(HDiT(config)).eval()
    x, sigma, cls = inputs(h=64, w=32)
    with torch.no_grad():
        out = model(x, sigma, cls)
    assert out.shape == (2, 3, 64, 32) and torch.isfinite(out).all()


def test_non_divisible_resolution_names_the_sizes():
    model = HDiT(tiny_config())  # patch 2, 3 levels: sizes must be multiples of 2·2² = 8
    x, sigma, cls = inputs(h=36, w=36)
    with pytest.raises(
        ValueError, match=r"36×36 is not divisible by patch_size·2\^\(levels−1\) = 2·2\^2 = 8"
    ):
        model(x, sigma, cls)
    with pytest.raises(ValueError, match="16×20"):
        model(*inputs(h=16, w=20))
    # grids too small for the neighborhood kernel / not divisible by the window
    big_kernel = HDiT(
        tiny_config(
            levels=[LevelConfig(1, 32, 16, "neighborhood", 7), LevelConfig(1, 32, 16, "global")]
        )
    )
    with pytest.raises(ValueError, match=r"kernel 7 is larger than its 4×4 token grid"):
        big_kernel(*inputs(h=8, w=8))
    window8 = HDiT(
        tiny_config(
            levels=[LevelConfig(1, 32, 16, "shifted-window", window_size=8), LevelConfig(1, 32, 16)]
        )
    )
    with pytest.raises(ValueError, match=r"window_size: 8 does not divide its 12×12"):
        window8(*inputs(h=24, w=24))


def test_bad_inputs_raise_before_any_compute():
    model = HDiT(tiny_config())
    calls = []
    model.patch_in.register_forward_pre_hook(lambda *_: calls.append(1))
    x, sigma, cls = inputs()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(2, 4, 16, 16), sigma, cls)
    with pytest.raises(ValueError, match="class_cond is required"):
        model(x, sigma)
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        model(x, sigma, torch.tensor([0, 11]))
    with pytest.raises(ValueError, match="aug_cond"):
        model(x, sigma, cls, torch.zeros(2, 4))
    assert calls == []
    with pytest.raises(ValueError, match="allowed"):
        HDiT(tiny_config(skip="mul"))
    with pytest.raises(ValueError, match="multiple of head_dim"):
        HDiT(tiny_config(levels=[LevelConfig(1, 40, 16, "global")]))


def test_noise_level_enters_as_c_noise():
    model = HDiT(tiny_config())
    seen = []
    model.time_emb.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    x, sigma, cls = inputs()
    model(x, sigma, cls)
    torch.testing.assert_close(seen[0], (torch.log(sigma) / 4)[:, None])  # c_noise = log(σ)/4


# --- class conditioning -------------------------------------------------------------------


def test_dropped_class_index_uses_the_extra_embedding_row():
    torch.manual_seed(0)
    model = perturb_(HDiT(tiny_config(num_classes=5)), std=0.1).eval()
    assert model.class_emb.weight.shape == (6, 64)  # num_classes + 1 rows
    x, sigma, _ = inputs()
    dropped = torch.tensor([5, 5])
    with torch.no_grad():
        out_dropped = model(x, sigma, dropped)
        out_class0 = model(x, sigma, torch.tensor([0, 0]))
        twin = copy.deepcopy(model)
        twin.class_emb.weight[0] = model.class_emb.weight[5]  # row 5 moved to row 0
        out_twin = twin(x, sigma, torch.tensor([0, 0]))
    torch.testing.assert_close(out_twin, out_dropped)
    assert (out_dropped - out_class0).abs().max() > 1e-4


# --- token merge / split and the skip merges -----------------------------------------------


def test_pixel_unshuffle_and_shuffle_are_inverse():
    x = torch.randn(2, 8, 12, 5)
    y = pixel_unshuffle_tokens(x, 2)
    assert y.shape == (2, 4, 6, 20)
    assert torch.equal(pixel_shuffle_tokens(y, 2), x)
    assert torch.equal(pixel_unshuffle_tokens(pixel_shuffle_tokens(y, 2), 2), y)
    # channel order (c, dy, dx): token (0, 0) channel c·4 + dy·2 + dx = x[dy, dx, c]
    assert torch.equal(y[0, 0, 0].view(5, 2, 2), x[0, :2, :2].permute(2, 0, 1))


def test_token_merge_and_split_shapes_and_k_diffusion_layout():
    torch.manual_seed(0)
    merge, split = TokenMerge(6, 10, patch_size=2), TokenSplit(10, 6, patch_size=2, skip=None)
    x = torch.randn(2, 8, 4, 6)
    assert merge(x).shape == (2, 4, 2, 10)
    assert split(merge(x)).shape == (2, 8, 4, 6)
    assert TokenMerge(3, 16, patch_size=4)(torch.randn(1, 32, 64, 3)).shape == (1, 8, 16, 16)
    # k-diffusion groups channels as (dy, dx, c); the documented permutation maps its weights
    w_kd = torch.randn(10, 2 * 2 * 6)
    ref = einops.rearrange(x, "b (h nh) (w nw) e -> b h w (nh nw e)", nh=2, nw=2) @ w_kd.T
    with torch.no_grad():
        merge.proj.weight.copy_(w_kd.view(10, 2, 2, 6).permute(0, 3, 1, 2).reshape(10, 24))
    torch.testing.assert_close(merge(x), ref)
    t = torch.randn(2, 4, 2, 10)
    w_kd = torch.randn(2 * 2 * 6, 10)
    ref = einops.rearrange(t @ w_kd.T, "b h w (nh nw e) -> b (h nh) (w nw) e", nh=2, nw=2)
    with torch.no_grad():
        split.proj.weight.copy_(w_kd.view(2, 2, 6, 10).permute(2, 0, 1, 3).reshape(24, 10))
    torch.testing.assert_close(split(t), ref)


def test_skip_merges():
    torch.manual_seed(0)
    up, skip = torch.randn(2, 4, 4, 8), torch.randn(2, 4, 4, 8)
    one, zero, half = torch.ones(1), torch.zeros(1), torch.full((1,), 0.5)
    assert torch.equal(merge_skip("lerp", up, skip, one), skip)  # f = 1: the skip exactly
    assert torch.equal(merge_skip("lerp", up, skip, zero), up)  # f = 0: the upsampled branch
    torch.testing.assert_close(merge_skip("lerp", up, skip, half), (up + skip) / 2)
    f = torch.full((1,), 0.3)
    torch.testing.assert_close(merge_skip("lerp", up, skip, f), 0.3 * skip + 0.7 * up)  # eq. 6
    # k-diffusion's fac weights the upsampled branch: f = 1 − fac
    torch.testing.assert_close(merge_skip("lerp", up, skip, 1 - f), torch.lerp(skip, up, f))
    assert torch.equal(merge_skip("add", up, skip), up + skip)
    proj = nn.Linear(16, 8, bias=False)
    torch.testing.assert_close(
        merge_skip("concat", up, skip, proj=proj), torch.cat([up, skip], -1) @ proj.weight.T
    )
    with pytest.raises(ValueError, match="allowed"):
        merge_skip("max", up, skip)
    # inside TokenSplit
    for kind, n_params in (("lerp", 1), ("add", 0), ("concat", 16 * 8)):
        split = TokenSplit(12, 8, skip=kind)
        extra = sum(p.numel() for p in split.parameters()) - split.proj.weight.numel()
        assert extra == n_params
        assert split(torch.randn(2, 2, 2, 12), skip).shape == (2, 4, 4, 8)
    assert TokenSplit(12, 8).f.item() == 0.5  # lerp starts halfway
    with pytest.raises(ValueError, match="needs a skip"):
        TokenSplit(12, 8, skip="add")(torch.randn(2, 2, 2, 12))


# --- structure: shifts, positions, FFN, attention kinds -------------------------------------


def test_structure_follows_the_config():
    model = HDiT(tiny_config())
    shifts = lambda level: [layer.attn.shift for layer in level]
    assert shifts(model.down_levels[0]) == [0, 2]  # window 4: shift 2 on odd layers
    assert shifts(model.up_levels[0]) == [0, 2]  # up levels continue the count (2, 3)
    one_deep = HDiT(
        tiny_config(
            levels=[
                LevelConfig(1, 32, 16, "shifted-window", window_size=4),
                LevelConfig(1, 32, 16, "global"),
            ]
        )
    )
    assert shifts(one_deep.down_levels[0]) == [0] and shifts(one_deep.up_levels[0]) == [2]
    assert model.down_levels[1][0].attn.kernel_size == 3
    assert model.mid_level[0].attn.kind == "global"
    assert model.mid_level[0].ffn.up_proj.weight.shape == (2 * 3 * 64, 64)  # GEGLU, 3·d
    assert all(layer.attn.pos_emb is not None for layer in model.mid_level)  # RoPE
    additive = HDiT(tiny_config(pos_emb="additive", ffn="gelu"))
    assert additive.pos_emb.table.shape == (8, 8, 32)  # resolution 16 / patch 2
    assert additive.mid_level[0].attn.pos_emb is None
    assert additive.mid_level[0].ffn.up_proj.weight.shape == (4 * 64, 64)  # GELU, 4·d
    ffn_only = HDiT(
        tiny_config(levels=[LevelConfig(1, 32, 16, "none"), LevelConfig(1, 32, 16, "global")])
    )
    assert ffn_only.down_levels[0][0].attn is None and ffn_only.down_levels[0][0].norm1 is None
    single = HDiT(tiny_config(levels=[LevelConfig(2, 32, 16, "global")]))  # R3/R4: one level
    assert len(single.merges) == 0 and single(*inputs()).shape == (2, 3, 16, 16)


def test_param_groups_of_hdit():
    model = HDiT(tiny_config())
    tags = param_tags(model)
    groups = model.param_groups(base_lr=5e-4, mapping_lr_scale=1 / 3)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    for name, t in tags.items():
        is_mapping = name.startswith("mapping.") or ".linear." in name  # + AdaRMSNorm projections
        assert ("mapping" in t) == is_mapping, name
        is_matrix = name.endswith("proj.weight") or ".linear." in name
        exempt = name in ("time_in_proj.weight", "aug_in_proj.weight")  # as k-diffusion
        assert ("wd" in t) == (is_matrix and not exempt), name
    for name in ("splits.0.f", "mid_level.0.attn.scale", "class_emb.weight", "out_norm.scale"):
        assert tags[name] == set(), name
    assert groups[2]["lr"] == pytest.approx(5e-4 / 3)


# --- paper parameter counts (built on the meta device: no memory, no init cost) -----------


def test_table6_imagenet128_parameter_count():
    config = ModelConfig(
        levels=[LevelConfig(2, 384, 64, "neighborhood", 7), LevelConfig(11, 768, 64, "global")],
        mapping=MappingConfig(depth=1, width=768),
        num_classes=1000,
        resolution=128,
    )
    with torch.device("meta"):
        n = sum(p.numel() for p in HDiT(config).parameters())
    mw = 768

    def layer(d, d_ff, heads):  # AdaRMSNorm + qkv + scale + out;  AdaRMSNorm + GEGLU FFN
        return (mw * d + 3 * d * d + heads + d * d) + (mw * d + d * 2 * d_ff + d_ff * d)

    closed_form = 4 * layer(384, 1152, 6) + 11 * layer(768, 2304, 12)
    closed_form += (
        48 * 384 + 384 * 4 * 768 + 768 * 384 * 4 + 1 + 384 + 384 * 48
    )  # patch, merge, split, out
    closed_form += 2 * mw * mw + 1001 * mw + 2 * mw + (mw + mw * 2 * 2304 + 2304 * mw)  # mapping
    assert n == closed_form == 117_003_805
    assert abs(n / 117e6 - 1) < 0.005  # Table 6: 117M


def test_dit_b4_parameter_count_output_and_zero_init():
    # DiT-B/4 with the learned-variance head of R1/R2: 2·3 output channels (mean, variance)
    dit_b4 = dict(arch="dit", patch_size=4, out_channels=6)
    config = ModelConfig(
        **dit_b4, levels=[LevelConfig(12, 768, 64)], num_classes=1000, aug_dim=0, resolution=128
    )
    with torch.device("meta"):
        n = sum(p.numel() for p in DiT(config).parameters())
    d = 768
    block = 3 * d * d + 3 * d + d * d + d + 8 * d * d + 5 * d + 6 * d * d + 6 * d
    closed_form = (
        48 * d
        + d
        + 256 * d
        + d
        + d * d
        + d
        + 1001 * d
        + 12 * block
        + 2 * d * d
        + 2 * d
        + 96 * d
        + 96
    )
    assert n == closed_form == 130_389_600
    assert abs(n / 130e6 - 1) < 0.005  # §5.2: approx. 130M
    tiny = build_model(
        ModelConfig(**dit_b4, levels=[LevelConfig(2, 64, 16)], num_classes=10, resolution=32)
    )
    assert isinstance(tiny, DiT) and tiny.out_channels_used == 3
    x, sigma, cls = inputs(h=32, w=48)
    out = tiny(x, sigma, cls, torch.zeros(2, 9))
    assert out.shape == (2, 6, 32, 48) and torch.equal(out, torch.zeros_like(out))
    perturb_(tiny, std=0.05)
    with torch.no_grad():
        a, b = tiny(x, sigma, torch.tensor([10, 10])), tiny(x, sigma, torch.tensor([3, 3]))
    assert (a - b).abs().max() > 1e-4  # the dropped-class row is its own embedding
    with pytest.raises(ValueError, match="not divisible by the patch size 4"):
        tiny(*inputs(h=30, w=32))
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        tiny(x, sigma, torch.tensor([11, 0]))


# --- the attention backend: chosen at build time, switched on a built model --------------------


def test_attention_backend_is_chosen_by_build_model_and_switched_after():
    config = tiny_config(resolution=32)
    torch.manual_seed(0)
    model = perturb_(build_model(config, attention_backend="torch")).eval()
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    assert len(attentions) == 2 * 2 + 2 * 1 + 1  # down + up layers of two levels, the middle
    assert {a.backend for a in attentions} == {"torch"}
    x, sigma, cls = inputs(h=32, w=32)
    with torch.no_grad():
        reference = model(x, sigma, cls)
        assert set_attention_backend(model, "masked-sdpa") is model
        assert {a.backend for a in attentions} == {"masked-sdpa"}
        other = model(x, sigma, cls)
    assert reference.abs().max() > 1e-3
    torch.testing.assert_close(other, reference, rtol=0, atol=1e-5)  # same numbers
    assert model.state_dict().keys() == build_model(config).state_dict().keys()
    for bad in (lambda: build_model(config, attention_backend="flash"),
                lambda: set_attention_backend(model, "flash")):  # fmt: skip
        with pytest.raises(ValueError, match="allowed: auto, natten, natten-flex, torch"):
            bad()
    assert {a.backend for a in attentions} == {"masked-sdpa"}  # a refused switch changes nothing


# --- no host synchronisation in the forward pass ---------------------------------------------


@pytest.mark.parametrize("name", ["toy", "B1", "R1"])  # neighborhood + global, Swin, DiT
def test_denoiser_forward_and_loss_read_no_tensor_values(name):
    """On the meta device a tensor has a shape but no values: ``.item()``, ``int(t)`` or
    ``bool(t)`` raise. So a forward and backward pass that runs there reads no values — on an
    accelerator it would not wait for the device (the checks of values happen where σ and the
    labels enter: the sampler, the trainer's batch)."""
    config = to_toy_scale(get_config(name)) if name != "toy" else get_config("toy")
    with torch.device("meta"):
        model = build_model(config)
        d = config.diffusion
        denoiser = Denoiser(model, d.sigma_data, d.loss_weighting, d.gamma)
        x, sigma = torch.randn(2, 3, 32, 32), torch.rand(2) + 0.1
        cond = {"class_cond": torch.tensor([0, 8])} if config.model.num_classes else {}
        out = denoiser(x, sigma, **cond)
        loss = denoiser.loss(x, torch.randn_like(x), sigma, **cond)
        loss.mean().backward()
    assert out.shape == x.shape and out.is_meta and loss.shape == (2,)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with pytest.raises(RuntimeError, match="meta"):  # what a value read would have done
        bool((sigma > 0).all())
