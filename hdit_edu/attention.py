"""Self-attention of the HDiT blocks (§4.2–4.3, App. C): cosine-similarity attention with a
learned per-head scale, axial RoPE, and three attention kinds behind one module.

**Cosine-similarity attention** (App. C). Instead of ``softmax(q·kᵀ / √d)``, HDiT uses

    Attention(q, k, v) = softmax(τ · cos(q, k)) v,    cos(q, k) = q·k / (‖q‖ ‖k‖),

with ``τ`` a per-head, per-layer scale learned *directly in linear space* (init 10), not as
``exp(θ)`` clamped at 100 as in Swin-v2: the paper found the exponential parametrisation drives
many scales to the clamp or below 1, while learning ``τ`` directly keeps them in ``[5, 50]``.
:func:`cosine_sim_scale` multiplies ``q`` and ``k`` each by ``√τ / ‖·‖``, so that the kernels
below run with ``scale=1``: ``q'·k' = τ·cos(q, k)``. RoPE is applied after the normalisation (a
rotation keeps the norm, and this is k-diffusion's order of operations).

**Attention kinds** (§4.3, steps B1/B2 of Table 1). All kernels take ``(batch, height, width,
heads, head_dim)`` tensors and a ``scale`` (default ``head_dim ** -0.5``, like SDPA and NATTEN):

- :func:`global_attention` — every token attends to every token: PyTorch SDPA. O(n²) in tokens.
- :func:`neighborhood_attention` — each query attends to the ``k × k`` tokens around it. At the
  borders the window is *shifted inward* so it always holds ``k × k`` real tokens (NATTEN's
  semantics; never zero-padded): along an axis of length ``L`` the window of query ``i`` is
  ``[s, s + k)`` with ``s = clamp(i − ⌊k/2⌋, 0, L − k)``. O(n · k²).
- :func:`shifted_window_attention` — Swin: non-overlapping ``w × w`` windows of the grid rolled
  by ``shift`` (``w/2`` on alternate layers), with masks that keep the tokens that the roll
  brought across the border from attending to their new neighbours. Equivalently (and that is
  how the tests check it): query ``i`` attends to key ``j`` iff ``⌊(i + s)/w⌋ = ⌊(j + s)/w⌋``
  along both axes. We roll by ``+shift`` exactly as k-diffusion does; Swin's paper rolls by
  ``−shift`` — for ``shift = w/2``, the shift HDiT uses, the two give the same windows.

**Neighborhood attention backends** (``backend=``; docs/ARCHITECTURE.md "Attention backends"):

- ``"natten"`` — ``natten.functional.na2d`` (NATTEN's fused kernels on CUDA; without its compiled
  library, its flex-attention path, which on CPU is forward-only and materialises the full
  ``tokens × tokens`` score matrix).
- ``"natten-flex"`` — ``na2d`` forced onto NATTEN's ``"flex-fna"`` backend (PyTorch's
  ``flex_attention`` with a block-sparse neighborhood mask), even where the fused kernels exist:
  the third point of the benchmarks' "fused vs flex vs ours" comparison. We do not ask NATTEN to
  compile it (NATTEN discourages compiling flex for backprop).
- ``"torch"`` — ours, pure PyTorch: loops over the ``k²`` entries of the window; entry
  ``(a, c)`` of every query's clamped window is one re-indexed copy of the key grid
  (``index_select``), so memory stays ``O(tokens · (heads·k² + head_dim))`` — never
  ``tokens²``, never the ``k²``-times-larger tensor of all gathered windows — in the forward
  and in its closed-form backward. (Batching the ``k`` column entries of a window row into one
  op — ``k``× fewer ops, a ``k``-times larger copy of the keys — measured 1.5–3× *slower* on the
  CPU, forward and backward, at 16², 32², 64² and 128² grids: the copies cost more than the
  calls saved.)
- ``"masked-sdpa"`` — dense SDPA with the boolean neighborhood mask (:func:`neighborhood_mask`):
  the same numbers, ``O(tokens²)`` memory, but the fastest CPU path at small grids. Refused above
  :data:`MASKED_SDPA_MAX_TOKENS` tokens.
- ``"auto"`` — NATTEN when its fused CUDA kernels are available; else masked SDPA up to
  ``min(MASKED_SDPA_AUTO_MAX_TOKENS, MASKED_SDPA_AUTO_TOKENS_PER_K2 · k²)`` tokens (1024 = 32×32
  at k = 7; 270 at k = 3, so 16×16 but not 32×32); else ``"torch"``. Masked SDPA does
  ``tokens²`` work whatever k is, the gather ``tokens · k²``, so the smaller the kernel the
  sooner the gather wins (measured: ``benchmarks/results/attention_auto_threshold-cpu-*.json``).
  (NATTEN's CPU flex path is never chosen automatically: it is unfused, materialises
  ``tokens²`` scores, is slower than both of ours and cannot backpropagate on CPU.)

**One traced node per kernel** (for FLOP counting, ``flops.py``). The neighborhood and shifted-
window kernels are ``torch.autograd.Function`` subclasses, so ``torch.jit.trace`` records each
call as a single node whatever the backend does inside:

==================================================  ============================================
node kind (as fvcore names it)                      node inputs / ``node.scalar_args()``
==================================================  ============================================
``prim::PythonOp.NeighborhoodAttentionOp``           ``q, k, v`` / ``[kernel_size, scale, backend]``
``prim::PythonOp.ShiftedWindowAttentionOp``          ``q, k, v`` / ``[window_size, shift, scale]``
``aten::scaled_dot_product_attention``  (global)     ``q, k, v`` as ``(B, heads, tokens, head_dim)``
==================================================  ============================================

A fvcore handle receives the node's input/output values; ``outputs[0].node().scalar_args()``
gives the scalars. Costs (multiply-adds, counted like k-diffusion): neighborhood
``B·H·W·heads·k²·(d_qk + d_v)``; shifted window ``B·H·W·heads·w²·(d_qk + d_v)``.

Backward passes: ``NeighborhoodAttentionOp`` with the ``"torch"`` backend has a closed-form
backward (the softmax-attention gradient, window entry by window entry, from the saved
attention weights: the same memory bound as its forward). For the other backends, and for
``ShiftedWindowAttentionOp``, ``forward`` runs the kernel with autograd recording on detached
inputs (only when a gradient will be needed) and keeps that inner graph; ``backward``
differentiates it with ``torch.autograd.grad``. So the op is one node to the outside, and costs
exactly what the plain kernel costs under autograd — no recomputation. (Recomputing in backward
instead, as ``torch.utils.checkpoint`` does, measured +35–40% on the masked-SDPA CPU path.)
"""

from __future__ import annotations

import contextlib
import warnings
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .env import natten_fused_available, natten_status
from .kinds import ATTENTION_KINDS
from .rope import AxialRoPE, apply_rope

# The kinds an Attention module computes: every attention kind but "none" (FFN-only layers).
ATTENTION_MODULE_KINDS = tuple(kind for kind in ATTENTION_KINDS if kind != "none")
NA_BACKENDS = ("auto", "natten", "natten-flex", "torch", "masked-sdpa")

# "auto" uses masked SDPA on CPU grids up to this many tokens (32×32), "torch" above: measured
# on 2 CPU cores (k = 7, 4 heads of 32), forward + backward, masked SDPA is 2–3× faster at 16×16,
# the two are even at 32×32, and "torch" is 2.5–4.5× faster at 48×48 and 64×64.
MASKED_SDPA_AUTO_MAX_TOKENS = 1024
# ... and only up to this many tokens per window entry (C: tokens ≤ C·k²), because the gather's
# cost shrinks with k² and masked SDPA's does not. C = 30: k = 3 → 270 tokens (16×16 masked,
# 17×17 and above the gather), k = 5 → 750 (27×27), k ≥ 6 → the 1024 above (30·36 > 1024: every
# k ≥ 6 choice as before). Measured twice with `python benchmarks/attention_micro.py --sweep` (one
# thread, batch 16, 2 heads of 32, forward + backward, a busy machine;
# benchmarks/results/attention_auto_threshold-cpu-2026-12-07{-first,}.json): at k = 3 the
# crossover is between 256 and 400 tokens in both (16×16 masked SDPA 1.3× faster, 20×20 the
# gather 1.2–1.3× faster), so C from 256/9 ≈ 28.4 to 400/9 ≈ 44; at k = 5 it is between 400 and
# 784 tokens (24×24 even in the first sweep, the gather 1.26× faster in the second): C < 31.4.
# C = 29…31 picks the faster backend in every cell of the first sweep and misses only that k = 5
# 24×24 cell in the second. (A crossover exactly ∝ k² would give one C; these are not, so C sits
# where both k = 3 and k = 5 hold.)
MASKED_SDPA_AUTO_TOKENS_PER_K2 = 30
# Explicit backend="masked-sdpa" is refused above this (the tokens² boolean mask alone: 256 MiB).
MASKED_SDPA_MAX_TOKENS = 16384


# --- cosine-similarity attention (App. C) ---


def cosine_sim_scale(q: torch.Tensor, k: torch.Tensor, scale, eps: float = 1e-6):
    """Scale ``q`` and ``k`` so that ``q'·k' = τ · cos(q, k)`` (App. C):

        q' = q · √τ / √(‖q‖² + ε),     k' = k · √τ / √(‖k‖² + ε).

    ``scale`` (τ) broadcasts against ``q[..., :1]``: for the per-head vector ``(heads,)`` of the
    heads-last layout ``(..., heads, head_dim)`` pass ``scale[:, None]``. Computed in (at least)
    float32, returned in the input dtypes.
    """
    scale = torch.as_tensor(scale, device=q.device)
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), scale.dtype)
    dtype = torch.promote_types(dtype, torch.float32)
    sqrt_tau = torch.sqrt(scale.to(dtype))
    q_factor = sqrt_tau * torch.rsqrt(q.to(dtype).pow(2).sum(dim=-1, keepdim=True) + eps)
    k_factor = sqrt_tau * torch.rsqrt(k.to(dtype).pow(2).sum(dim=-1, keepdim=True) + eps)
    return q * q_factor.to(q.dtype), k * k_factor.to(k.dtype)


# --- shared checks ---


def _check_qkv(where: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.ndim != 5:
        raise ValueError(
            f"{where}: expected q, k, v of shape (batch, height, width, heads, head_dim), "
            f"got q of shape {tuple(q.shape)}"
        )
    if k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(
            f"{where}: q, k, v shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, "
            f"v {tuple(v.shape)} (k must equal q; v may differ only in head_dim)"
        )


def _default_scale(scale, head_dim: int) -> float:
    return head_dim**-0.5 if scale is None else float(scale)


def _heads_first(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, heads, D) -> (B, heads, H·W, D), the layout of SDPA."""
    return x.flatten(1, 2).transpose(1, 2)


def _heads_last(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, heads, H·W, D) -> (B, H, W, heads, D)."""
    return x.transpose(1, 2).unflatten(1, (h, w))


# --- global attention ---


def global_attention(q, k, v, scale=None) -> torch.Tensor:
    """Every token attends to every token (PyTorch SDPA). ``(B, H, W, heads, D)`` in and out."""
    _check_qkv("global_attention", q, k, v)
    return _global_attention(q, k, v, _default_scale(scale, q.shape[-1]))


def _global_attention(q, k, v, scale: float) -> torch.Tensor:
    h, w = q.shape[1:3]
    out = F.scaled_dot_product_attention(
        _heads_first(q), _heads_first(k), _heads_first(v), scale=scale
    )
    return _heads_last(out, h, w)


# --- neighborhood attention ---


def neighborhood_window_starts(length: int, kernel_size: int, device=None) -> torch.Tensor:
    """First index of each query's window along one axis: ``clamp(i − ⌊k/2⌋, 0, L − k)``.

    Query ``i`` attends to ``[start, start + k)``: centred on ``i`` inside the grid, shifted
    inward at the borders (NATTEN's semantics, dilation 1)."""
    i = torch.arange(length, device=device)
    return (i - kernel_size // 2).clamp(0, length - kernel_size)


def check_kernel_size(kernel_size, h: int, w: int) -> int:
    """``kernel_size`` for a neighborhood on an ``h × w`` grid: an odd int in [1, min(h, w)]."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int):
        raise ValueError(f"kernel_size must be an odd int, got {kernel_size!r}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
    if kernel_size > min(h, w):
        raise ValueError(
            f"kernel_size {kernel_size} is larger than the token grid {h}×{w}; "
            f"it must be <= min(height, width) = {min(h, w)}"
        )
    return kernel_size


@lru_cache(maxsize=32)
def _neighborhood_mask_cached(h: int, w: int, kernel_size: int, device: torch.device):
    def axis_mask(length: int) -> torch.Tensor:  # (L, L): [query i, key j] j in window of i
        start = neighborhood_window_starts(length, kernel_size, device)[:, None]
        j = torch.arange(length, device=device)[None, :]
        return (j >= start) & (j < start + kernel_size)

    rows, cols = axis_mask(h), axis_mask(w)
    return (rows[:, None, :, None] & cols[None, :, None, :]).reshape(h * w, h * w)


def neighborhood_mask(h: int, w: int, kernel_size: int, device=None) -> torch.Tensor:
    """Boolean ``(h·w, h·w)`` mask: ``[query, key]`` is True iff the key lies in the query's
    clamped ``k × k`` window (tokens in row-major order). The mask of the ``masked-sdpa``
    backend; cached per (size, kernel, device)."""
    check_kernel_size(kernel_size, h, w)
    return _neighborhood_mask_cached(h, w, kernel_size, torch.device(device or "cpu"))


def _window_indices(h: int, w: int, kernel_size: int, device):
    """Row and column of window entry ``(a, c)`` for every query: ``rows[a][i] = s_h(i) + a``,
    ``cols[c][j] = s_w(j) + c`` (lists of ``k`` index vectors of length ``h`` / ``w``)."""
    row_starts = neighborhood_window_starts(h, kernel_size, device)
    col_starts = neighborhood_window_starts(w, kernel_size, device)
    rows = [row_starts + a for a in range(kernel_size)]
    cols = [col_starts + c for c in range(kernel_size)]
    return rows, cols


def _na_torch_forward(q, k, v, kernel_size: int, scale: float):
    """The ``"torch"`` backend, forward: returns ``(out, attn)``.

    Window entry ``(a, c)`` of query ``(i, j)`` is the key at ``(s_h(i) + a, s_w(j) + c)``; for
    a fixed ``(a, c)`` these keys, over all queries, form a re-indexed copy ``K_ac`` of the key
    grid (``index_select`` of rows, then columns). So, looping over the ``k²`` entries:

        S_ac = scale · ⟨q, K_ac⟩,    P = softmax_(a,c)(S),    out = Σ_ac P_ac · V_ac.

    Memory: the scores ``(k², B, H, W, heads)`` plus one ``(B, H, W, heads, D)`` copy at a time —
    ``O(tokens · (heads·k² + D))``, never ``tokens²``. Computed in (at least) float32.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    rows, cols = _window_indices(q.shape[1], q.shape[2], kernel_size, q.device)
    scores = []
    for rows_a in rows:
        k_a = k.index_select(1, rows_a)  # window row a of every query's window
        scores += [torch.linalg.vecdot(q, k_a.index_select(2, cols_c)) for cols_c in cols]
    # window entries first: (k², B, H, W, heads), so that each entry's slice is contiguous
    attn = (torch.stack(scores) * scale).softmax(dim=0)
    out = torch.zeros(q.shape[:-1] + v.shape[-1:], dtype=dtype, device=q.device)
    for a, rows_a in enumerate(rows):
        v_a = v.index_select(1, rows_a)
        for c, cols_c in enumerate(cols):
            out.addcmul_(attn[a * kernel_size + c, ..., None], v_a.index_select(2, cols_c))
    return out, attn


def _na_torch_backward(q, k, v, attn, out, grad_out, kernel_size: int, scale: float):
    """The ``"torch"`` backend, backward in closed form (no recomputation, same memory bound):

    dP_ac = ⟨dout, V_ac⟩
    dS_ac = P_ac · (dP_ac − ⟨dout, out⟩)        softmax backward: Σ_ac P_ac dP_ac = ⟨dout, out⟩
    dq    = scale · Σ_ac dS_ac K_ac
    dK_ac = scale · dS_ac q,   dV_ac = P_ac dout  — added back at the keys' positions.
    """
    dtype = attn.dtype
    q, k, v, grad_out, out = (t.to(dtype) for t in (q, k, v, grad_out, out))  # autocast: one dtype
    rows, cols = _window_indices(q.shape[1], q.shape[2], kernel_size, q.device)
    grad_p = []
    for rows_a in rows:
        v_a = v.index_select(1, rows_a)
        grad_p += [torch.linalg.vecdot(grad_out, v_a.index_select(2, cols_c)) for cols_c in cols]
    grad_p = torch.stack(grad_p)  # (k², B, H, W, heads), like attn
    grad_s = attn * (grad_p - torch.linalg.vecdot(grad_out, out)) * scale
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for a, rows_a in enumerate(rows):
        k_a = k.index_select(1, rows_a)
        dk_a, dv_a = torch.zeros_like(k), torch.zeros_like(v)  # gradients of window row a
        for c, cols_c in enumerate(cols):
            g_s, p = grad_s[a * kernel_size + c, ..., None], attn[a * kernel_size + c, ..., None]
            dq.addcmul_(g_s, k_a.index_select(2, cols_c))
            dk_a.index_add_(2, cols_c, g_s * q)
            dv_a.index_add_(2, cols_c, p * grad_out)
        dk.index_add_(1, rows_a, dk_a)
        dv.index_add_(1, rows_a, dv_a)
    return dq, dk, dv


def _na_masked_sdpa(q, k, v, kernel_size: int, scale: float) -> torch.Tensor:
    """The ``"masked-sdpa"`` backend: dense attention restricted by :func:`neighborhood_mask`."""
    h, w = q.shape[1:3]
    mask = _neighborhood_mask_cached(h, w, kernel_size, q.device)
    out = F.scaled_dot_product_attention(
        _heads_first(q), _heads_first(k), _heads_first(v), attn_mask=mask, scale=scale
    )
    return _heads_last(out, h, w)


def _na_natten(q, k, v, kernel_size: int, scale: float, natten_backend=None) -> torch.Tensor:
    """The ``"natten"`` backend: ``natten.functional.na2d`` (same layout as ours), with NATTEN's
    own choice of kernel, or ``natten_backend`` (``"flex-fna"`` for ``"natten-flex"``)."""
    import natten

    with warnings.catch_warnings():
        # Its CPU flex path warns that it runs unfused (that is why "auto" avoids it on CPU).
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile")
        warnings.filterwarnings("ignore", message=".*return_lse is deprecated")
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        return natten.functional.na2d(q, k, v, kernel_size, scale=scale, backend=natten_backend)


def _na_natten_flex(q, k, v, kernel_size: int, scale: float) -> torch.Tensor:
    """The ``"natten-flex"`` backend: ``na2d`` on NATTEN's flex-attention kernel."""
    return _na_natten(q, k, v, kernel_size, scale, natten_backend="flex-fna")


# The backends differentiated through their own autograd graph ("torch" has its own backward).
_NA_BACKEND_KERNELS = {
    "masked-sdpa": _na_masked_sdpa,
    "natten": _na_natten,
    "natten-flex": _na_natten_flex,
}


def check_backend(backend: str) -> None:
    """Raise ``ValueError`` unless ``backend`` is one of :data:`NA_BACKENDS`."""
    if backend not in NA_BACKENDS:
        raise ValueError(
            f"unknown neighborhood attention backend {backend!r}; allowed: {', '.join(NA_BACKENDS)}"
        )


def resolve_na_backend(backend: str, q, k, v, kernel_size: int) -> str:
    """The concrete backend ``neighborhood_attention`` runs for these inputs with this kernel
    size (``"auto"`` resolved; an explicit choice checked against what this machine and these
    inputs allow)."""
    check_backend(backend)
    tokens = q.shape[1] * q.shape[2]
    if backend == "auto":
        if q.is_cuda and natten_fused_available():
            return "natten"
        limit = min(MASKED_SDPA_AUTO_MAX_TOKENS, MASKED_SDPA_AUTO_TOKENS_PER_K2 * kernel_size**2)
        return "masked-sdpa" if tokens <= limit else "torch"
    if backend in ("natten", "natten-flex"):
        if not natten_status()["installed"]:
            raise ValueError(f"backend={backend!r} needs NATTEN installed; use 'torch'")
        if not q.is_cuda and any(t.requires_grad for t in (q, k, v)):
            raise ValueError(
                f"backend={backend!r} on CPU is forward-only (NATTEN's flex path has no CPU "
                "backward and refuses inputs that require grad); use backend='torch' or "
                "'masked-sdpa' for training on CPU, or detach the inputs"
            )
    if backend == "masked-sdpa" and tokens > MASKED_SDPA_MAX_TOKENS:
        raise ValueError(
            f"backend='masked-sdpa' builds a tokens×tokens mask; {q.shape[1]}×{q.shape[2]} = "
            f"{tokens} tokens exceeds MASKED_SDPA_MAX_TOKENS={MASKED_SDPA_MAX_TOKENS}; "
            f"use backend='torch' (memory O(tokens·k²)) or 'natten'"
        )
    return backend


# --- one autograd node per kernel call ---


def _run_recorded(ctx, kernel, q, k, v):
    """Run ``kernel(q, k, v)`` inside an op's ``forward``. When a gradient will be needed, run
    it with autograd recording on detached inputs and keep that small graph on ``ctx`` for
    :func:`_backward_through_recorded`; the op still appears as one node to the outside."""
    needs = ctx.needs_input_grad[:3]
    with torch.enable_grad() if any(needs) else contextlib.nullcontext():
        leaves = [t.detach().requires_grad_(n) for t, n in zip((q, k, v), needs)]
        out = kernel(*leaves)
    ctx.recorded = (out, leaves) if any(needs) else None
    return out.detach()


def _backward_through_recorded(ctx, grad_out):
    """Gradients of the graph :func:`_run_recorded` kept (``None`` where none is needed)."""
    out, leaves = ctx.recorded
    ctx.recorded = None  # free the graph
    wanted = [t for t in leaves if t.requires_grad]
    grads = iter(torch.autograd.grad(out, wanted, grad_out))
    return [next(grads) if t.requires_grad else None for t in leaves]


class NeighborhoodAttentionOp(torch.autograd.Function):
    """Neighborhood attention as one autograd (and traced) node. Backward: closed form for the
    ``"torch"`` backend; the kernel's own recorded graph for the others."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, q, k, v, kernel_size, scale, backend):
        ctx.kernel_size, ctx.scale, ctx.backend = kernel_size, scale, backend
        if backend == "torch":
            out, attn = _na_torch_forward(q, k, v, kernel_size, scale)
            ctx.save_for_backward(q, k, v, attn, out)
            return out.to(q.dtype)
        kernel = _NA_BACKEND_KERNELS[backend]
        return _run_recorded(ctx, lambda q, k, v: kernel(q, k, v, kernel_size, scale), q, k, v)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_out):
        if ctx.backend == "torch":
            q, k, v, attn, out = ctx.saved_tensors
            grads = _na_torch_backward(q, k, v, attn, out, grad_out, ctx.kernel_size, ctx.scale)
            dq, dk, dv = (g.to(t.dtype) for g, t in zip(grads, (q, k, v)))
        else:
            dq, dk, dv = _backward_through_recorded(ctx, grad_out)
        return dq, dk, dv, None, None, None


def neighborhood_attention(q, k, v, kernel_size: int, *, scale=None, backend: str = "auto"):
    """Neighborhood attention (Hassani et al. 2023; §4.3): each query attends to the ``k × k``
    tokens around it, the window shifted inward at the borders (never zero-padded).

    ``q, k, v``: ``(batch, height, width, heads, head_dim)``; returns the same layout.
    ``scale``: multiplies ``q·k`` (default ``head_dim ** -0.5``). ``backend``: one of
    :data:`NA_BACKENDS` (module docstring). All backends give the same numbers.
    """
    _check_qkv("neighborhood_attention", q, k, v)
    check_kernel_size(kernel_size, q.shape[1], q.shape[2])
    return _neighborhood_attention(
        q, k, v, kernel_size, _default_scale(scale, q.shape[-1]), backend
    )


def _neighborhood_attention(q, k, v, kernel_size: int, scale: float, backend: str):
    """:func:`neighborhood_attention` on checked arguments (the model checked its grids)."""
    backend = resolve_na_backend(backend, q, k, v, kernel_size)
    if backend != "torch" and torch.compiler.is_compiling():
        # Under torch.compile the kernel is traced as the plain differentiable PyTorch (or
        # NATTEN op) it is: the one-node wrapper exists for torch.jit.trace (FLOP counting),
        # and its recorded inner graph is invisible to the compiler (the backward would find
        # no grad_fn). The "torch" backend's op (a closed-form backward) compiles as it is.
        return _NA_BACKEND_KERNELS[backend](q, k, v, kernel_size, scale)
    return NeighborhoodAttentionOp.apply(q, k, v, kernel_size, scale, backend)


# --- shifted-window attention ---


def check_window(window_size, shift, h: int, w: int) -> None:
    """Swin windows of ``window_size`` dividing the ``h × w`` grid, ``shift`` in [0, window)."""
    if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
        raise ValueError(f"window_size must be a positive int, got {window_size!r}")
    if h % window_size or w % window_size:
        raise ValueError(
            f"shifted-window attention needs the token grid {h}×{w} divisible by "
            f"window_size={window_size}"
        )
    if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift < window_size:
        raise ValueError(f"shift must be an int in [0, window_size={window_size}), got {shift!r}")


@lru_cache(maxsize=32)
def _shifted_window_mask_cached(h, w, window_size, shift, device):
    # In the grid rolled by +shift, rows/cols [0, shift) are the ones that came across the
    # border. Within a window, two tokens may attend to each other iff they are on the same
    # side of that seam along both axes (only the first window row / column has a seam).
    def same_side(length):  # (windows, query offset, key offset)
        wrapped = (torch.arange(length, device=device) < shift).view(-1, window_size)
        return wrapped[:, :, None] == wrapped[:, None, :]

    rows, cols = same_side(h), same_side(w)
    mask = rows[:, None, :, None, :, None] & cols[None, :, None, :, None, :]
    return mask.reshape((h // window_size) * (w // window_size), window_size**2, window_size**2)


def shifted_window_mask(h: int, w: int, window_size: int, shift: int, device=None):
    """Boolean ``(windows, w², w²)`` mask of each window of the rolled grid: ``[window,
    query, key]`` (windows and in-window offsets in row-major order). All True for shift 0."""
    check_window(window_size, shift, h, w)
    return _shifted_window_mask_cached(h, w, window_size, shift, torch.device(device or "cpu"))


def _to_windows(x, window_size: int, shift: int):
    """(B, H, W, heads, D) -> (B, heads, windows, w², D) of the grid rolled by +shift."""
    b, h, w, heads, d = x.shape
    n = window_size
    x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    x = x.reshape(b, h // n, n, w // n, n, heads, d).permute(0, 5, 1, 3, 2, 4, 6)
    return x.reshape(b, heads, (h // n) * (w // n), n * n, d)


def _from_windows(x, h: int, w: int, window_size: int, shift: int):
    """Inverse of :func:`_to_windows`."""
    b, heads, _, _, d = x.shape
    n = window_size
    x = x.reshape(b, heads, h // n, w // n, n, n, d).permute(0, 2, 4, 3, 5, 1, 6)
    return torch.roll(x.reshape(b, h, w, heads, d), shifts=(-shift, -shift), dims=(1, 2))


def _shifted_window_kernel(q, k, v, window_size: int, shift: int, scale: float):
    h, w = q.shape[1:3]
    mask = _shifted_window_mask_cached(h, w, window_size, shift, q.device)
    q, k, v = (_to_windows(t, window_size, shift) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return _from_windows(out, h, w, window_size, shift)


class ShiftedWindowAttentionOp(torch.autograd.Function):
    """Shifted-window attention as one autograd (and traced) node."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, q, k, v, window_size, shift, scale):
        def kernel(q, k, v):
            return _shifted_window_kernel(q, k, v, window_size, shift, scale)

        return _run_recorded(ctx, kernel, q, k, v)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_out):
        dq, dk, dv = _backward_through_recorded(ctx, grad_out)
        return dq, dk, dv, None, None, None


def shifted_window_attention(q, k, v, window_size: int, shift: int, *, scale=None):
    """Shifted-window (Swin) attention (Liu et al. 2021; step B1): attention within the
    ``window_size²`` windows of the grid rolled by ``shift``, masked at the rolled seam.

    ``q, k, v``: ``(batch, height, width, heads, head_dim)``, height and width divisible by
    ``window_size``; ``0 <= shift < window_size``. Returns the same layout.
    """
    _check_qkv("shifted_window_attention", q, k, v)
    check_window(window_size, shift, q.shape[1], q.shape[2])
    return _shifted_window_attention(
        q, k, v, window_size, shift, _default_scale(scale, q.shape[-1])
    )


def _shifted_window_attention(q, k, v, window_size: int, shift: int, scale: float):
    """:func:`shifted_window_attention` on checked arguments."""
    if torch.compiler.is_compiling():  # traced as plain PyTorch (see _neighborhood_attention)
        return _shifted_window_kernel(q, k, v, window_size, shift, scale)
    return ShiftedWindowAttentionOp.apply(q, k, v, window_size, shift, scale)


# --- the attention module of an HDiT block ---


class Attention(nn.Module):
    """Self-attention of one HDiT block (Fig. 4; §4.2–4.3, App. C), without the norm before it
    and the residual around it (the transformer layer adds those: ``x + attn(norm(x), pos)``).

        qkv = x W_qkv                         channels split "(t heads head_dim)", t = q, k, v
        q, k ← q·√τ/‖q‖, k·√τ/‖k‖            cosine similarity, τ per head (init 10)
        q, k ← RoPE(q, pos), RoPE(k, pos)     half of each head rotated (``rope=True``)
        y = attention(q, k, v, scale=1)       global | neighborhood | shifted-window
        out = dropout(y) W_out                W_out zero-initialised: a fresh block adds 0

    ``kind``: one of :data:`ATTENTION_MODULE_KINDS`; ``rope``: axial RoPE in the attention (a
    config's ``pos_emb="rope"`` or ``"rope+additive"``; with ``"additive"`` positions the model
    adds a table instead); ``rope_scale``: the factor on its frequencies
    (:func:`hdit_edu.rope.rope_freq_scale`; 1 = the reference's).
    Parameters: ``qkv_proj`` (Linear width → 3·width, no bias), ``scale`` ``(heads,)``,
    ``out_proj`` (Linear width → width, no bias, zeros); ``pos_emb`` is an
    :class:`~hdit_edu.rope.AxialRoPE` (a buffer only) or ``None``.
    ``forward(x (B, H, W, width), pos (H, W, 2)) -> (B, H, W, width)``. The token grid is the
    caller's to check (a model checks its grids once, :func:`hdit_edu.configs.check_grids`);
    the forward pass checks shapes only.
    """

    def __init__(
        self,
        width: int,
        head_dim: int = 64,
        kind: str = "global",
        kernel_size: int = 7,
        window_size: int = 8,
        shift: int = 0,
        rope: bool = True,
        rope_scale: float = 1.0,
        dropout: float = 0.0,
        backend: str = "auto",
    ):
        super().__init__()
        if kind not in ATTENTION_MODULE_KINDS:
            raise ValueError(
                f"unknown attention kind {kind!r}; allowed: {', '.join(ATTENTION_MODULE_KINDS)}"
            )
        check_backend(backend)
        if head_dim < 1 or width % head_dim:
            raise ValueError(f"width={width} is not divisible by head_dim={head_dim}")
        if kind == "neighborhood" and (kernel_size < 1 or kernel_size % 2 == 0):
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        if kind == "shifted-window" and not 0 <= shift < window_size:
            raise ValueError(f"shift must be in [0, window_size={window_size}), got {shift}")
        self.width, self.head_dim, self.heads = width, head_dim, width // head_dim
        self.kind, self.kernel_size, self.window_size, self.shift = (
            kind,
            kernel_size,
            window_size,
            shift,
        )
        self.backend = backend
        self.qkv_proj = nn.Linear(width, 3 * width, bias=False)
        self.scale = nn.Parameter(torch.full((self.heads,), 10.0))
        self.pos_emb = AxialRoPE(head_dim, self.heads, rope_scale) if rope else None
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(width, width, bias=False)
        nn.init.zeros_(self.out_proj.weight)

    def extra_repr(self) -> str:
        detail = {
            "global": "",
            "neighborhood": f", kernel_size={self.kernel_size}, backend={self.backend!r}",
            "shifted-window": f", window_size={self.window_size}, shift={self.shift}",
        }[self.kind]
        return f"kind={self.kind!r}, head_dim={self.head_dim}, heads={self.heads}{detail}"

    def attend(self, q, k, v) -> torch.Tensor:
        """The attention kind, on prepared ``q, k`` (cosine-scaled, rotated): ``scale = 1``."""
        if self.kind == "global":
            return _global_attention(q, k, v, 1.0)
        if self.kind == "neighborhood":
            return _neighborhood_attention(q, k, v, self.kernel_size, 1.0, self.backend)
        return _shifted_window_attention(q, k, v, self.window_size, self.shift, 1.0)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-1] != self.width:
            raise ValueError(
                f"Attention: expected x of shape (B, H, W, {self.width}), got {tuple(x.shape)}"
            )
        b, h, w, _ = x.shape
        qkv = self.qkv_proj(x).view(b, h, w, 3, self.heads, self.head_dim)
        q, k, v = qkv.unbind(dim=3)  # each (B, H, W, heads, head_dim)
        q, k = cosine_sim_scale(q, k, self.scale[:, None])
        if self.pos_emb is not None:
            if pos is None or pos.shape != (h, w, 2):
                got = None if pos is None else tuple(pos.shape)
                raise ValueError(f"Attention: expected pos of shape ({h}, {w}, 2), got {got}")
            theta = self.pos_emb(pos)  # (H, W, heads, head_dim // 4)
            q, k = apply_rope(q, theta), apply_rope(k, theta)
        y = self.attend(q, k, v).reshape(b, h, w, self.width)
        return self.out_proj(self.dropout(y))
