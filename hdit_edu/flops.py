"""FLOPs and parameters: how HDiT's cost scales with resolution (App. A, Fig. 2, Tables 1, 6).

**Convention** (the paper's; reproduced with the authors' code): one FLOP = one multiply-add.

* a linear layer costs ``prod(input shape) × out_features`` (biases, norms, activations,
  RoPE and every other elementwise op are free);
* attention costs, per head, ``(keys seen per query) × queries × (d_qk + d_v)`` — the two
  matrix products ``q·kᵀ`` and ``attn·v``: ``s_q · s_k · (d_q + d_v)`` for global (and
  windowed: ``s_k`` = window²) attention, ``tokens · k² · (d_q + d_v)`` for a k×k
  neighborhood (:func:`attention_flops`; :func:`keys_per_query`).

**Two counts that must agree.**

* :func:`count_gflops` *measures*: it traces a real model with fvcore's ``FlopCountAnalysis``.
  fvcore alone counts only the linear part — it skips SDPA and custom attention ops (30.1
  instead of 31.4 GFLOP for E@128², 179 instead of 1060 for A@512²) — so we register handles
  for ``aten::scaled_dot_product_attention`` and for the two single traced nodes
  ``prim::PythonOp.NeighborhoodAttentionOp`` / ``prim::PythonOp.ShiftedWindowAttentionOp`` of
  :mod:`hdit_edu.attention`, count 2-operand ``einsum`` as a contraction (a 1-operand einsum is a
  permutation: free), and switch off fvcore's elementwise counts for norms and resampling.
  The trace runs on the ``meta`` device when it can (shapes only: no weights, no compute, any
  resolution in seconds) and falls back to a real CPU forward pass otherwise.
* :func:`analytic_gflops` *derives* the same number in closed form from the config — the
  linear layers and attention terms App. A reasons with (:func:`analytic_terms` lists every
  term with its level and kind, for the per-level / per-op plots).

**App. A in one line.** Level ``l`` of the hourglass sees ``n / 4^l`` tokens (n at the outermost
level), so the local-attention levels added for each doubling of the resolution cost
``n·d·Σ_m (1/4)^m`` — a geometric series bounded by ``(4/3)·n·d``: linear in n. Global
attention at a fixed 16² core costs a constant. DiT's single global level costs ``O(n²)``.

:func:`analytic_params` gives the parameter count of a config in closed form (Table 6: 117M,
85M, 557M), :func:`scaling_table` the rows of Fig. 2 / Table 1.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

from .attention import ATTENTION_MODULE_KINDS
from .configs import (
    Config,
    ModelConfig,
    at_resolution,
    normalize_resolution,
    token_grids,
    validate_config,
)
from .kinds import ADDITIVE_POS_EMBS
from .layers import default_d_ff
from .models import build_model
from .presets import get_config

# ----------------------------------------------------------------------------------------------
# The paper's numbers
# ----------------------------------------------------------------------------------------------

# Table 1: GFLOP per forward pass (batch 1) at 128², 256², 512².
TABLE1_GFLOPS: dict[str, tuple[float, float, float]] = {
    "R1": (106, 657, 6341),
    "R2": (106, 657, 6341),
    "R3": (106, 657, 6341),
    "R4": (106, 657, 6341),
    "A": (32, 114, 1060),
    "B1": (29, 60, 185),
    "B2": (29, 60, 184),
    "C": (31, 65, 198),
    "D": (31, 65, 198),
    "E": (31, 65, 198),
}
TABLE1_RESOLUTIONS = (128, 256, 512)

# Table 6: parameters and GFLOP per forward pass of the three trained models.
TABLE6 = {
    "imagenet128": {"params": 117e6, "gflops": 31, "resolution": 128},
    "ffhq1024": {"params": 85e6, "gflops": 206, "resolution": 1024},
    "imagenet256": {"params": 557e6, "gflops": 198, "resolution": 256},
}

# The kinds of terms :func:`analytic_terms` returns (and the plots stack), in forward order.
TERM_KINDS = ("patch", "conditioning", "norm", "qkv+out", "attention", "ffn", "merge/split")


# ----------------------------------------------------------------------------------------------
# The closed form (App. A)
# ----------------------------------------------------------------------------------------------


def keys_per_query(kind: str, h: int, w: int, *, kernel_size: int = 7, window_size: int = 8):
    """How many keys each query attends to on an ``h × w`` grid: ``h·w`` (global), ``k²``
    (neighborhood — every window is full, thanks to the clamping), ``w²`` (shifted window, as
    computed: the masked entries of the seam windows are computed too)."""
    counts = {"global": h * w, "neighborhood": kernel_size**2, "shifted-window": window_size**2}
    if kind not in counts:
        raise ValueError(
            f"unknown attention kind {kind!r}; allowed: {', '.join(ATTENTION_MODULE_KINDS)}"
        )
    return counts[kind]


def attention_flops(kind: str, h: int, w: int, heads: int, head_dim: int, **window) -> int:
    """Multiply-adds of the attention kernel alone (``q·k`` and ``attn·v``) per image on an
    ``h × w`` grid, counted like k-diffusion: ``tokens · heads · keys/query · (d_qk + d_v)``.
    ``window``: ``kernel_size`` / ``window_size`` as in :func:`keys_per_query`."""
    return h * w * heads * keys_per_query(kind, h, w, **window) * 2 * head_dim


@dataclass(frozen=True)
class FlopTerm:
    """One term of the analytic count: ``flops`` multiply-adds of ``kind`` (one of
    :data:`TERM_KINDS`) at hourglass ``level`` (None: the conditioning path, once per image)."""

    level: int | None
    kind: str
    flops: int


def _model_config(config: Any) -> ModelConfig:
    if isinstance(config, str):
        config = get_config(config)
    if isinstance(config, Config):
        return config.model
    if isinstance(config, ModelConfig):
        return config
    raise ValueError(f"expected a Config, ModelConfig or config name, got {type(config).__name__}")


def _d_ff(level, ffn: str) -> int:
    return level.d_ff or default_d_ff(level.width, ffn)


def _hdit_terms(m: ModelConfig, grids: list[tuple[int, int]]) -> list[FlopTerm]:
    terms: list[FlopTerm] = []
    add = lambda level, kind, flops: terms.append(FlopTerm(level, kind, int(flops)))
    p, c_in, c_out = m.patch_size, m.in_channels, m.out_channels or m.in_channels
    n0 = grids[0][0] * grids[0][1]
    w0 = m.levels[0].width
    add(0, "patch", n0 * (c_in * p * p) * w0)  # patch_in: TokenMerge(p×p) = linear C·p² → w0
    add(0, "patch", n0 * w0 * (c_out * p * p))  # patch_out: linear w0 → C·p², then unshuffle

    # Conditioning, once per image: Fourier features (a 1 → mw/2 and an aug → mw/2 matmul),
    # their input projections, and the mapping network's GEGLU blocks.
    mw, mdepth = m.mapping.width, m.mapping.depth
    m_dff = m.mapping.d_ff or 3 * mw
    add(None, "conditioning", 1 * mw // 2 + mw * mw)
    if m.aug_dim:
        add(None, "conditioning", m.aug_dim * mw // 2 + mw * mw)
    add(None, "conditioning", mdepth * (mw * 2 * m_dff + m_dff * mw))

    n_levels = len(m.levels)
    for i, (level, (gh, gw)) in enumerate(zip(m.levels, grids)):
        n, w = gh * gw, level.width
        layers = level.depth if i == n_levels - 1 else 2 * level.depth  # down + up
        d_ff = _d_ff(level, m.ffn)
        up = 2 * d_ff if m.ffn == "geglu" else d_ff
        has_attention = level.attention != "none"
        norms = 2 if has_attention else 1
        add(i, "norm", layers * norms * mw * w)  # AdaRMSNorm scale = Linear(cond): mw → w
        add(i, "ffn", layers * n * (w * up + d_ff * w))
        if has_attention:
            add(i, "qkv+out", layers * n * (w * 3 * w + w * w))
            heads = w // level.head_dim
            core = attention_flops(
                level.attention,
                gh,
                gw,
                heads,
                level.head_dim,
                kernel_size=level.kernel_size,
                window_size=level.window_size,
            )
            add(i, "attention", layers * core)
        if i > 0:
            outer = m.levels[i - 1].width
            add(i, "merge/split", n * (4 * outer) * w)  # merge: 2×2 unshuffle + linear 4·w' → w
            add(i, "merge/split", n * w * (4 * outer))  # split: linear w → 4·w', then shuffle
            if m.skip == "concat":
                n_outer = grids[i - 1][0] * grids[i - 1][1]
                add(i, "merge/split", n_outer * 2 * outer * outer)  # concat → linear 2·w' → w'
    return terms


def _dit_terms(m: ModelConfig, grid: tuple[int, int]) -> list[FlopTerm]:
    level = m.levels[0]
    n, w = grid[0] * grid[1], level.width
    p, c_in, c_out = m.patch_size, m.in_channels, m.out_channels or m.in_channels
    d_ff = level.d_ff or 4 * w
    heads = w // level.head_dim
    frequency_dim = 256  # DiT's sinusoidal timestep features
    return [
        FlopTerm(0, "patch", n * (c_in * p * p) * w),  # Conv2d(p, stride p) = linear per patch
        FlopTerm(0, "patch", n * w * (c_out * p * p)),  # final linear
        FlopTerm(None, "conditioning", frequency_dim * w + w * w),  # timestep MLP
        # adaLN-Zero modulations: 6 vectors per block, 2 for the final layer (Linear on c)
        FlopTerm(0, "norm", level.depth * w * 6 * w + w * 2 * w),
        FlopTerm(0, "qkv+out", level.depth * n * (w * 3 * w + w * w)),
        FlopTerm(
            0, "attention", level.depth * attention_flops("global", *grid, heads, level.head_dim)
        ),
        FlopTerm(0, "ffn", level.depth * n * (w * d_ff + d_ff * w)),
    ]


def analytic_terms(config, resolution=None) -> list[FlopTerm]:
    """Every multiply-add of one forward pass (batch 1) of ``config`` at ``resolution`` (None:
    the config's own), as :class:`FlopTerm` s by level and kind. Per layer of a level with
    ``n`` tokens, width ``d``, FFN hidden ``d_ff``, mapping width ``d_c``:

        qkv+out    n·(3d² + d²)
        attention  heads · n · keys · 2·head_dim      (keys = n | k² | window²)
        ffn        n·(d·2·d_ff + d_ff·d)  (GEGLU)  or  n·(d·d_ff + d_ff·d)  (GELU)
        norm       2 · d_c·d                           (AdaRMSNorm scales, once per image)

    outer levels run their ``depth`` layers twice (down and up), and each level below the first
    adds a merge and a split, ``n·4d'·d`` each. DiT: the same with adaLN-Zero (``6d²`` per block)
    and its timestep MLP.
    """
    m = _model_config(config)
    validate_config(m, resolution)
    grids = token_grids(m, resolution)
    return _dit_terms(m, grids[0]) if m.arch == "dit" else _hdit_terms(m, grids)


def analytic_gflops(config, resolution=None, batch_size: int = 1) -> float:
    """The closed-form GFLOPs (multiply-adds / 10⁹) of one forward pass of ``batch_size``
    images — the sum of :func:`analytic_terms`. Exact for square and non-square inputs."""
    return batch_size * sum(t.flops for t in analytic_terms(config, resolution)) / 1e9


def analytic_breakdown(config, resolution=None, by: str = "level") -> dict:
    """GFLOPs grouped ``by="level"`` (``{level: GFLOP}``, ``None`` = conditioning),
    ``by="kind"`` (``{kind: GFLOP}``) or ``by="level-kind"`` (``{(level, kind): GFLOP}``)."""
    keys = {
        "level": lambda t: t.level,
        "kind": lambda t: t.kind,
        "level-kind": lambda t: (t.level, t.kind),
    }
    if by not in keys:
        raise ValueError(f"by: unknown value {by!r}; allowed: {', '.join(keys)}")
    out: dict = defaultdict(float)
    for term in analytic_terms(config, resolution):
        out[keys[by](term)] += term.flops / 1e9
    return dict(out)


def analytic_params(config) -> int:
    """The parameter count of ``config`` in closed form (equals the built model's count).

    HDiT (no biases): patch in/out ``C·p²·d₀`` each; time and augmentation input projections
    ``d_c²`` each; class table ``(classes + 1)·d_c``; mapping blocks ``d_c·2·d_ff + d_ff·d_c``
    plus RMSNorm scales; per layer ``4d² + heads`` (qkv, out, attention scale), the FFN
    (``3·d·d_ff`` GEGLU / ``2·d·d_ff`` GELU) and two AdaRMSNorm projections ``2·d_c·d``;
    merges/splits ``4·d'·d`` each (+1 lerp weight, or ``2d'²`` for concat); the additive position
    table ``(H/p)·(W/p)·d₀`` for steps A–C. DiT-B/4 follows the official model (biases included).
    """
    m = _model_config(config)
    validate_config(m)
    p, c_in, c_out = m.patch_size, m.in_channels, m.out_channels or m.in_channels
    if m.arch == "dit":
        level = m.levels[0]
        w = level.width
        d_ff = level.d_ff or 4 * w
        block = (w * 3 * w + 3 * w) + (w * w + w) + (w * d_ff + d_ff) + (d_ff * w + w)
        block += w * 6 * w + 6 * w  # adaLN-Zero modulation
        total = level.depth * block
        total += c_in * p * p * w + w  # patch embedding (conv with bias)
        total += (256 * w + w) + (w * w + w)  # timestep MLP
        total += (m.num_classes + 1) * w if m.num_classes else 0
        total += m.aug_dim * w  # zero-initialised augmentation map (aug_dim = 0: none)
        total += (w * p * p * c_out + p * p * c_out) + (w * 2 * w + 2 * w)  # final layer
        return total
    mw = m.mapping.width
    m_dff = m.mapping.d_ff or 3 * mw
    w0 = m.levels[0].width
    total = c_in * p * p * w0 + w0 * c_out * p * p + w0  # patch in, patch out, out norm
    total += mw * mw + (mw * mw if m.aug_dim else 0)
    total += (m.num_classes + 1) * mw if m.num_classes else 0
    total += 2 * mw + m.mapping.depth * (mw + mw * 2 * m_dff + m_dff * mw)
    if m.pos_emb in ADDITIVE_POS_EMBS:
        grid_h, grid_w = token_grids(m)[0]
        total += grid_h * grid_w * w0
    for i, level in enumerate(m.levels):
        w = level.width
        d_ff = _d_ff(level, m.ffn)
        ffn = w * (2 * d_ff if m.ffn == "geglu" else d_ff) + d_ff * w
        layer = ffn + mw * w
        if level.attention != "none":
            layer += 4 * w * w + w // level.head_dim + mw * w
        total += (level.depth if i == len(m.levels) - 1 else 2 * level.depth) * layer
        if i > 0:
            outer = m.levels[i - 1].width
            total += 2 * 4 * outer * w
            total += {"lerp": 1, "add": 0, "concat": 2 * outer * outer}[m.skip]
    return total


# ----------------------------------------------------------------------------------------------
# Measuring: fvcore with handles for the attention ops
# ----------------------------------------------------------------------------------------------


def _shape(value) -> list[int]:
    # fvcore is imported where it is used: importing it runs torch.jit.script, which warns.
    from fvcore.nn.jit_handles import get_shape

    return list(get_shape(value))


def sdpa_flop_handle(inputs, outputs) -> int:
    """``aten::scaled_dot_product_attention`` (q, k, v, mask, …): ``batch·heads · s_q · s_k ·
    (d_q + d_v)`` — ``q·kᵀ`` and ``attn·v``; the mask and softmax are elementwise."""
    q, k, v = (_shape(x) for x in inputs[:3])
    return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


def _local_attention_handle(inputs, outputs) -> int:
    """``NeighborhoodAttentionOp`` / ``ShiftedWindowAttentionOp`` (q, k, v laid out
    ``(B, H, W, heads, head_dim)``; first scalar argument = kernel size or window size): every
    query sees ``size²`` keys: ``B·H·W·heads · size² · (d_q + d_v)``."""
    q, v = _shape(inputs[0]), _shape(inputs[2])
    size = int(outputs[0].node().scalar_args()[0])
    return math.prod(q[:-1]) * size * size * (q[-1] + v[-1])


def einsum_flop_handle(inputs, outputs) -> float:
    """``aten::einsum``: a one-operand einsum is a permutation or reduction (free); a
    two-operand one is a contraction costing the product of all index sizes; more operands go
    to fvcore's own path-optimised count."""
    from fvcore.nn.jit_handles import einsum_flop_jit

    equation = inputs[0].toIValue().replace(" ", "")
    operands = [_shape(v) for v in inputs[1].node().inputs()]
    if len(operands) == 1:
        return 0
    if len(operands) == 2:
        sizes: dict[str, int] = {}
        for letters, shape in zip(equation.split("->")[0].split(","), operands):
            sizes.update(zip(letters, shape))
        return math.prod(sizes.values())
    return einsum_flop_jit(inputs, outputs)


def not_counted(inputs, outputs) -> int:
    """Elementwise work (norms, resampling, pooling): free under the paper's convention.
    (fvcore's ``set_op_handle(name, None)`` does not drop a default handle, hence this one.)"""
    return 0


# Handles added to (or replacing) fvcore's defaults.
FLOP_HANDLES = {
    "aten::scaled_dot_product_attention": sdpa_flop_handle,
    "prim::PythonOp.NeighborhoodAttentionOp": _local_attention_handle,
    "prim::PythonOp.ShiftedWindowAttentionOp": _local_attention_handle,
    "aten::einsum": einsum_flop_handle,
    "aten::batch_norm": not_counted,
    "aten::group_norm": not_counted,
    "aten::layer_norm": not_counted,
    "aten::instance_norm": not_counted,
    "aten::upsample_nearest2d": not_counted,
    "aten::upsample_bilinear2d": not_counted,
    "aten::adaptive_avg_pool2d": not_counted,
    "aten::grid_sampler": not_counted,
}


def flop_count_analysis(model, inputs: tuple):
    """fvcore's ``FlopCountAnalysis`` of ``model(*inputs)`` with :data:`FLOP_HANDLES`
    registered and its warnings silenced (unlisted elementwise ops are simply not counted)."""
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, inputs)
    analysis.set_op_handle(**FLOP_HANDLES)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis


def _example_inputs(model, resolution, batch_size: int, device):
    """Inputs of a forward pass: zero images, σ = 1, the dropped class (when conditional)."""
    config = getattr(model, "config", None)
    in_channels = getattr(model, "in_channels", None) or config.in_channels
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        num_classes = config.num_classes if config is not None else 0
    h, w = resolution
    x = torch.zeros(batch_size, in_channels, h, w, device=device)
    sigma = torch.ones(batch_size, device=device)
    class_cond = (
        torch.full((batch_size,), num_classes, dtype=torch.long, device=device)
        if num_classes
        else None
    )
    return (x, sigma, class_cond)


def _fvcore_analysis(model_or_config, resolution, batch_size: int, device: str | None):
    if isinstance(model_or_config, torch.nn.Module):
        model = model_or_config
        config = getattr(model, "config", None)
        if resolution is None:
            if config is None:
                raise ValueError("count_gflops: give a resolution for a model without .config")
            resolution = config.resolution
        size = normalize_resolution(resolution)
        if config is not None:
            validate_config(config, size)
        params = next(model.parameters(), None)
        device = params.device if params is not None else torch.device("cpu")
        was_training = model.training
        model.eval()
        try:
            inputs = _example_inputs(model, size, batch_size, device)
            return _run_analysis(model, inputs)
        finally:
            model.train(was_training)
    config = get_config(model_or_config) if isinstance(model_or_config, str) else model_or_config
    m = _model_config(config)
    size = normalize_resolution(m.resolution if resolution is None else resolution)
    validate_config(m, size)
    devices = ["meta", "cpu"] if device in (None, "auto") else [device]
    error = None
    for dev in devices:
        try:
            with torch.device(dev):
                model = build_model(m).eval()
            inputs = _example_inputs(model, size, batch_size, dev)
            return _run_analysis(model, inputs)
        except (RuntimeError, TypeError, NotImplementedError) as e:  # a meta kernel is missing
            error = e
    raise RuntimeError(f"count_gflops: tracing failed on {devices}: {error}") from error


def _run_analysis(model, inputs):
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit deprecation and tracer warnings
        analysis = flop_count_analysis(model, inputs)
        analysis.total()  # trace now, inside the warning filter
    return analysis


def count_gflops(
    model_or_config,
    resolution=None,
    batch_size: int = 1,
    by_module: bool = False,
    *,
    device: str | None = None,
):
    """Measured GFLOPs (multiply-adds / 10⁹) of one forward pass, by fvcore with
    :data:`FLOP_HANDLES` (module docstring).

    ``model_or_config``: an ``nn.Module`` built by :func:`~hdit_edu.models.build_model` (traced
    as it is, on its device), or a :class:`Config` / :class:`ModelConfig` / config name (built for
    the trace: on ``device="meta"`` first — shapes only, no compute — then on ``"cpu"`` if a meta
    kernel is missing, as for DiT's patch convolution). ``resolution``: int or ``(h, w)``; None =
    the config's own. Inputs: zero images, σ = 1, the dropped class.

    Returns the total, or with ``by_module=True`` a dict ``{module name: GFLOP}`` over every
    submodule (``""`` = the whole model).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: got {batch_size!r}; allowed: an integer >= 1")
    analysis = _fvcore_analysis(model_or_config, resolution, batch_size, device)
    if by_module:
        return {name: flops / 1e9 for name, flops in analysis.by_module().items()}
    return analysis.total() / 1e9


def module_level(name: str, n_levels: int) -> int | None:
    """The hourglass level a module of :class:`~hdit_edu.hourglass.HDiT` or
    :class:`~hdit_edu.dit.DiT` belongs to, by its name (None: the conditioning path):
    ``down_levels.i`` / ``up_levels.i`` → i, ``mid_level`` → the last, ``merges.i`` /
    ``splits.i`` → i + 1 (they enter and leave level i + 1), patching and DiT's blocks → 0."""
    head, _, rest = name.partition(".")
    if head in ("down_levels", "up_levels"):
        return int(rest.split(".")[0])
    if head == "mid_level":
        return n_levels - 1
    if head in ("merges", "splits"):
        return int(rest.split(".")[0]) + 1
    if head in ("patch_in", "patch_out", "out_norm", "pos_emb", "blocks", "x_embedder"):
        return 0
    if head == "final_layer":
        return 0
    return None


def count_gflops_by_level(model_or_config, resolution=None, *, device: str | None = None):
    """Measured GFLOPs per hourglass level (fvcore), ``{level: GFLOP}`` with ``None`` for the
    conditioning path — to compare with ``analytic_breakdown(config, res, by="level")``.
    (DiT's adaLN modulations live in its blocks, so they count at level 0 in both.)"""
    analysis = _fvcore_analysis(model_or_config, resolution, 1, device)
    by_module = analysis.by_module()
    n_levels = 1 + sum(
        1 for name in by_module if name.count(".") == 1 and name.startswith("merges.")
    )
    out: dict = defaultdict(float)
    for name, flops in by_module.items():
        parts = name.split(".")
        # a partition of the model: the children of the per-level ModuleLists, other top-level
        # children as they are
        if len(parts) == (2 if parts[0] in _PER_LEVEL_LISTS else 1) and name:
            out[module_level(name, n_levels)] += flops / 1e9
    return dict(out)


_PER_LEVEL_LISTS = ("down_levels", "up_levels", "merges", "splits")


# ----------------------------------------------------------------------------------------------
# Scaling tables (Fig. 2, Table 1)
# ----------------------------------------------------------------------------------------------


def scaling_table(configs, resolutions, method: str = "auto") -> list[dict]:
    """GFLOPs of each config at each resolution — the data of Fig. 2 and Table 1.

    ``configs``: names (``"E"``, ``"R1"``, …, resolved with :func:`get_config`) or
    :class:`Config` s; each is adapted to every resolution by App. A's rule
    (:func:`~hdit_edu.configs.at_resolution`: one more outer level per doubling).
    ``method``: ``"analytic"``, ``"fvcore"`` (traced, on the CPU if the meta trace fails: slow for
    big models) or ``"auto"`` (fvcore where the model traces on the meta device — any size, no
    compute — else analytic).

    Returns one dict per (config, resolution): ``name``, ``resolution``, ``tokens`` (outermost
    grid), ``levels``, ``gflops``, ``analytic_gflops``, ``method``, ``params``.
    """
    methods = ("auto", "analytic", "fvcore")
    if method not in methods:
        raise ValueError(f"method: unknown value {method!r}; allowed: {', '.join(methods)}")
    rows = []
    for entry in configs:
        base = get_config(entry) if isinstance(entry, str) else entry
        if not isinstance(base, Config):
            raise ValueError(f"scaling_table: expected config names or Configs, got {entry!r}")
        for res in resolutions:
            config = at_resolution(base, res)
            analytic = analytic_gflops(config, res)
            measured, used = analytic, "analytic"
            if method != "analytic":
                try:
                    measured = count_gflops(
                        config, res, device="meta" if method == "auto" else None
                    )
                    used = "fvcore"
                except RuntimeError:
                    if method == "fvcore":
                        raise
            gh, gw = token_grids(config.model, res)[0]
            rows.append(
                {
                    "name": base.name,
                    "resolution": res,
                    "tokens": gh * gw,
                    "levels": len(config.model.levels),
                    "gflops": measured,
                    "analytic_gflops": analytic,
                    "method": used,
                    "params": analytic_params(config),
                }
            )
    return rows


def loglog_slope(xs, ys) -> float:
    """Least-squares slope of ``log y`` against ``log x`` — the exponent of a power law
    (≈ 1 for HDiT's cost against pixel count, ≈ 2 for DiT's at high resolution)."""
    xs, ys = list(xs), list(ys)
    if len(xs) != len(ys) or len(xs) < 2 or min(xs) <= 0 or min(ys) <= 0:
        raise ValueError("loglog_slope needs two or more positive (x, y) pairs of equal length")
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx
