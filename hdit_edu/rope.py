"""Position information: 2-D axial RoPE (§4.2, step D of Table 1) and the additive position
embedding it replaces (steps A–C).

**Position grid.** Every token of a level has a 2-D position ``pos[i, j] = (y_i, x_j)``: the
centres of an ``h × w`` grid of cells laid over ``[-1, 1]``, the longer side spanning the full
interval (a non-square grid keeps square cells: the shorter side spans ``±short/long``). When the
hourglass merges 2×2 tokens into one, the positions are merged the same way (their mean), so a
token at every level keeps the position of the image region it covers (:func:`downscale_pos`).

**Axial RoPE** (§4.2: "split the encoding to operate on each axis separately, applying RoPE for
each spatial axis to distinct parts of query and key … to only half of the query and key
vectors"). A head of ``head_dim`` channels is read as ``[x1 | x2 | rest]`` with
``|x1| = |x2| = head_dim / 4`` and ``|rest| = head_dim / 2``; each channel pair
``(x1[c], x2[c])`` is rotated by an angle ``θ_c``:

    y1 = x1·cos θ − x2·sin θ,     y2 = x2·cos θ + x1·sin θ,     rest unchanged.

The first half of the ``head_dim / 4`` angles encode the row, the second half the column:
``θ = [y·f_1 … y·f_m, x·f_1 … x·f_m]`` with ``m = head_dim / 8`` frequencies per head, spaced
log-uniformly between π and 10π over all heads and frequencies together (heads interleaved, so
each head gets a spread of scales). Rotations compose, so after rotating ``q`` at position ``p``
and ``k`` at ``p'``, ``q·k`` depends on ``p − p'`` only — the relative offset.

The constants and the order of operations follow the authors' k-diffusion
(``image_transformer_v2.AxialRoPE``) so that converted checkpoints give the same numbers: the
buffer :attr:`AxialRoPE.freqs` has k-diffusion's shape ``(heads, head_dim // 8)`` and values.

**The frequency design, and aliasing** (issue 29; :func:`rope_turns`). The frequencies are set
in *image* units, so the angle a pair turns between neighbouring tokens depends on the grid: on
an ``n``-token side the spacing is ``2/n``, and frequency ``f`` turns by ``2f/n`` per token. A
pair that turns by more than π per token *aliases*: sampled at the tokens, a turn of ``θ`` is
the same as ``θ − 2π``, a slower turn the other way, so the pair no longer tells near offsets
from far ones the way its frequency says. With the top of the range at 10π, no pair aliases on
a side of 20 tokens or more (the paper's 32×32 outer grid); on its 16×16 inner grid about 10 %
of the pairs alias, on the toy ablation's 8×8 and 4×4 grids 3 of 8 and 11 of 16.
``model.rope_freqs = "grid"`` (:data:`~hdit_edu.kinds.ROPE_FREQS`, :func:`rope_freq_scale`)
scales each level's range by ``min(1, n/20)`` for its training grid of ``n`` tokens per side,
so that no pair turns by π or more; ``"image"`` (the default) is the reference's range,
unscaled and bit-identical.

**Additive position embedding** (steps A–C: "a simple additive positional encoding").
:class:`AdditivePosEmb` is a learned ``(grid_h, grid_w, width)`` table added to the tokens after
patching. Our choice (the paper does not specify the initialisation): initialise the table with
the fixed 2-D sin-cos embedding DiT uses (:func:`sincos_pos_emb_2d`), then learn it — from step 0
the model sees a well-conditioned, unambiguous position code (a zero table would leave tokens
position-less until it has learned one; small random noise is an arbitrary code), and training
can still adapt it as the learned tables of DiT/U-ViT do. At a grid size other than the training
one the table is resized bicubically (the usual ViT recipe) — precisely the extrapolation RoPE
avoids.

**Two readings of positions at another resolution** (:data:`POSITION_READINGS`, issue 19; the
one place both position codes read them: :func:`token_positions` and
:meth:`AdditivePosEmb.embedding`). A model trained on an ``h₀ × w₀`` token grid and run on
``h × w``:

* ``"normalised"`` (the default, the reference's behaviour, bit-identical to training at the
  training grid): positions stay cell centres on ``[-1, 1]`` (:func:`make_axial_pos`), so a
  larger grid is *denser* in the same range — RoPE interpolates; the additive table is resized
  bicubically — interpolation too.
* ``"grid"``: positions in units of the *training grid's spacing*: the normalised positions
  times ``max(h, w) / max(h₀, w₀)``, so a 16-token side (trained on 8) spans ``±1.875`` and its
  outer tokens sit at positions the model never saw — true extrapolation for RoPE (its angles
  keep turning at the trained rate per token). The additive table has no values beyond its
  cells: it is laid over the new grid centred, one table cell per token (no resizing), and
  tokens beyond its border take the nearest border cell (border padding; between cells, if the
  grids' difference is odd, linear interpolation). Why border padding and not zeros or a
  periodic table: every token still gets a code the model saw in training (a zero code is a
  position-less token the model never met; tiling would alias distant tokens onto the same
  position), and the code *stops changing* past the border — the honest analogue, for a table,
  of "a position the model never saw". A smaller grid keeps the table's centre cells.
* ``"fixed"``: no resizing of any position code: valid only at the training grid (an error
  naming the sizes otherwise) — for callers who must not change the model silently.

The reading is checked once, where it enters (:func:`check_position_reading`: the model's
``position_reading``, set with ``HDiT.set_position_reading``; :mod:`hdit_edu.resolution`; the
command line's ``--positions``). :func:`token_positions` and :meth:`AdditivePosEmb.embedding`
run in every forward pass and do not check it again: at the training grid every reading gives
the training positions; elsewhere a string that is not a reading falls through to the same
error, naming it and the allowed readings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# RoPE frequency range (k-diffusion AxialRoPE): log-spaced from f_min to f_max, in radians per
# unit of position on the [-1, 1] grid.
ROPE_MIN_FREQ = math.pi
ROPE_MAX_FREQ = 10.0 * math.pi


def _cell_centres(start: float, stop: float, n: int, *, device=None, dtype=None) -> torch.Tensor:
    """Centres of ``n`` equal cells covering ``[start, stop]``."""
    edges = torch.linspace(start, stop, n + 1, device=device, dtype=dtype)
    return (edges[:-1] + edges[1:]) / 2


def make_axial_pos(h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """Token positions ``(h, w, 2)``: ``[..., 0]`` the row coordinate y, ``[..., 1]`` the column
    coordinate x, cell centres on ``[-1, 1]`` along the longer side (square cells)."""
    if h < 1 or w < 1:
        raise ValueError(f"make_axial_pos: grid size must be positive, got h={h}, w={w}")
    y_extent = min(1.0, h / w)  # the longer side spans [-1, 1]
    x_extent = min(1.0, w / h)
    y = _cell_centres(-y_extent, y_extent, h, device=device, dtype=dtype)
    x = _cell_centres(-x_extent, x_extent, w, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(y, x, indexing="ij"), dim=-1)


POSITION_READINGS = ("normalised", "grid", "fixed")


def check_position_reading(reading: str) -> str:
    """``reading`` if it is one of :data:`POSITION_READINGS`, else a ``ValueError``."""
    if reading not in POSITION_READINGS:
        raise ValueError(
            f"position reading {reading!r}: allowed: {', '.join(POSITION_READINGS)} "
            f"(normalised = the training range [-1, 1]; grid = units of the training grid)"
        )
    return reading


def _no_reading(reading: str, h: int, w: int, train_grid: tuple[int, int], what: str) -> ValueError:
    """The error of a reading that gives ``what`` no value at an ``h × w`` grid other than the
    training one: ``"fixed"``'s (returned), or, for a string that is not a reading (a caller
    that skipped the check where readings enter), :func:`check_position_reading`'s (raised)."""
    check_position_reading(reading)
    th, tw = train_grid
    return ValueError(
        f"{what} is fixed to the training token grid {th}×{tw} (position reading 'fixed', "
        f"no resizing), but the input has {h}×{w} tokens; allowed: the training size, or "
        f"the reading 'normalised' (resize/interpolate) or 'grid' (extrapolate)"
    )


def token_positions(
    h: int,
    w: int,
    train_grid: tuple[int, int] | None = None,
    reading: str = "normalised",
    device=None,
    dtype=None,
) -> torch.Tensor:
    """Positions ``(h, w, 2)`` of an ``h × w`` token grid under a position ``reading`` (module
    docstring; checked where it enters, not here) for a model trained on ``train_grid``
    tokens: ``"normalised"`` (and every reading at the training grid) is
    :func:`make_axial_pos`; ``"grid"`` scales it by ``max(h, w) / max(train_grid)``, the
    training grid's spacing as the unit; ``"fixed"`` elsewhere is an error."""
    pos = make_axial_pos(h, w, device=device, dtype=dtype)
    if train_grid is None or (h, w) == tuple(train_grid) or reading == "normalised":
        return pos
    if reading == "grid":
        return pos * (max(h, w) / max(train_grid))
    raise _no_reading(reading, h, w, train_grid, "the RoPE position grid")


def downscale_pos(pos: torch.Tensor) -> torch.Tensor:
    """Positions of merged tokens: the mean over each 2×2 block, ``(..., h, w, 2) -> (..., h/2,
    w/2, 2)`` — the same grouping as the token merge (PixelUnshuffle 2×2)."""
    *batch, h, w, e = pos.shape
    if h % 2 or w % 2:
        raise ValueError(f"downscale_pos: grid {h}×{w} is not divisible by 2")
    blocks = pos.reshape(*batch, h // 2, 2, w // 2, 2, e).transpose(-3, -4)
    return blocks.reshape(*batch, h // 2, w // 2, 4, e).mean(dim=-2)


def axial_rope_freqs(head_dim: int, heads: int) -> torch.Tensor:
    """The RoPE frequencies ``(heads, head_dim // 8)``.

    ``head_dim // 2`` channels of each head are rotated: ``head_dim // 4`` channel pairs, half
    of them for the row axis and half for the column axis, each axis using the same
    ``m = head_dim // 8`` frequencies per head. All ``heads · m`` frequencies are log-spaced
    on ``[π, 10π)`` (``heads · m + 1`` points, the last dropped) and dealt out to the heads
    in turn: head ``h`` gets frequencies ``h, h + heads, h + 2·heads, …``.
    """
    if head_dim % 8 or head_dim < 8:
        raise ValueError(
            f"axial RoPE needs head_dim divisible by 8 (a quarter of each head rotated per axis "
            f"pair, two axes), got head_dim={head_dim}"
        )
    if heads < 1:
        raise ValueError(f"axial RoPE needs heads >= 1, got {heads}")
    m = head_dim // 8
    log_freqs = torch.linspace(math.log(ROPE_MIN_FREQ), math.log(ROPE_MAX_FREQ), heads * m + 1)
    return log_freqs[:-1].exp().view(m, heads).T.contiguous()


def rope_freq_scale(rope_freqs: str, train_grid: tuple[int, int]) -> float:
    """The factor on :func:`axial_rope_freqs` of a level trained on a ``train_grid`` token grid
    (``model.rope_freqs``, :data:`~hdit_edu.kinds.ROPE_FREQS`; checked by the config): ``1.0``
    for ``"image"``; for ``"grid"``, ``min(1, π / (10π · s))`` with ``s = 2 / max(train_grid)``
    the token spacing, so the range's (excluded) top 10π turns by π per token and every pair by
    less. The spread of scales (one decade) is kept; a side of ≥ 20 tokens is left unscaled."""
    if rope_freqs == "image":
        return 1.0
    return min(1.0, math.pi / (ROPE_MAX_FREQ * 2.0 / max(train_grid)))


def rope_turns(
    head_dim: int,
    heads: int,
    grid: tuple[int, int],
    *,
    rope_freqs: str = "image",
    train_grid: tuple[int, int] | None = None,
    reading: str = "normalised",
) -> tuple[torch.Tensor, torch.Tensor]:
    """How far each RoPE frequency turns between neighbouring tokens of an ``h × w`` grid.

    Returns ``(turns, aliased)``, both ``(heads, head_dim // 8)``: the angle per token in units
    of π (float64; the frequency times the token spacing of :func:`token_positions`, both axes
    alike: square cells), and ``turns > 1``, the pairs that alias. ``train_grid`` (default:
    ``grid``) is the level's training grid: it sets the ``"grid"`` scale and, with ``reading``,
    the positions on another grid."""
    h, w = grid
    if max(h, w) < 2:
        raise ValueError(f"rope_turns: a {h}×{w} grid has no neighbouring tokens")
    train_grid = tuple(grid if train_grid is None else train_grid)
    freqs = axial_rope_freqs(head_dim, heads) * rope_freq_scale(rope_freqs, train_grid)
    pos = token_positions(h, w, train_grid, reading, dtype=torch.float64)
    spacing = pos[0, 1, 1] - pos[0, 0, 1] if w > 1 else pos[1, 0, 0] - pos[0, 0, 0]
    turns = freqs.double() * spacing / math.pi
    return turns, turns > 1


class AxialRoPE(nn.Module):
    """Rotation angles of axial RoPE for ``heads`` heads of ``head_dim`` channels.

    ``forward(pos)`` maps positions ``(..., 2)`` to angles ``θ`` of shape
    ``(..., heads, head_dim // 4)``: ``[y·f, x·f]`` per head. No trainable parameters; the
    frequencies are a (saved) buffer, as in k-diffusion, times ``scale``
    (:func:`rope_freq_scale`; 1 = the reference's, unchanged).
    """

    def __init__(self, head_dim: int, heads: int, scale: float = 1.0):
        super().__init__()
        self.head_dim = head_dim
        freqs = axial_rope_freqs(head_dim, heads)
        self.register_buffer("freqs", freqs if scale == 1.0 else freqs * scale)
        self.scale = scale

    def extra_repr(self) -> str:
        scale = "" if self.scale == 1.0 else f", scale={self.scale:g}"
        return f"head_dim={self.head_dim}, heads={self.freqs.shape[0]}{scale}"

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        if pos.shape[-1] != 2:
            raise ValueError(
                f"AxialRoPE: positions must have shape (..., 2), got {tuple(pos.shape)}"
            )
        freqs = self.freqs.to(pos.dtype)
        theta_y = pos[..., None, 0:1] * freqs  # (..., heads, m): row angle y·f
        theta_x = pos[..., None, 1:2] * freqs  # (..., heads, m): column angle x·f
        return torch.cat((theta_y, theta_x), dim=-1)


def apply_rope(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(x[c], x[d + c])`` of each head by ``theta[c]``, ``d =
    theta.shape[-1]``; channels ``2d …`` pass through unchanged (half the head for axial RoPE).

    ``x``: ``(..., heads, head_dim)``; ``theta``: broadcastable to ``(..., heads, d)``. The
    rotation is computed in (at least) float32 and cast back to ``x.dtype``.
    """
    d = theta.shape[-1]
    if 2 * d > x.shape[-1]:
        raise ValueError(
            f"apply_rope: {d} angles rotate {2 * d} channels, more than head_dim={x.shape[-1]}"
        )
    dtype = torch.promote_types(torch.promote_types(x.dtype, theta.dtype), torch.float32)
    x1, x2, rest = x[..., :d].to(dtype), x[..., d : 2 * d].to(dtype), x[..., 2 * d :]
    cos, sin = torch.cos(theta.to(dtype)), torch.sin(theta.to(dtype))
    y1 = x1 * cos - x2 * sin
    y2 = x2 * cos + x1 * sin
    return torch.cat((y1.to(x.dtype), y2.to(x.dtype), rest), dim=-1)


# --- additive position embedding (ablation steps A–C) ---


def sincos_pos_emb_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sin-cos code ``(n, dim)`` of positions ``(n,)``: ``[sin(p·ω_i), cos(p·ω_i)]``,
    ``ω_i = 10000^(−i/(dim/2))``, ``i = 0 … dim/2 − 1``."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dim, got {dim}")
    omega = 10000.0 ** (-torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = positions.to(torch.float64)[:, None] * omega
    return torch.cat((angles.sin(), angles.cos()), dim=-1).float()


def sincos_pos_emb_2d(h: int, w: int, width: int) -> torch.Tensor:
    """DiT's fixed 2-D sin-cos position code ``(h, w, width)``: the first half of the channels
    encode the row index, the second half the column index (token units ``0 … n − 1``)."""
    if width % 4:
        raise ValueError(f"2-D sin-cos embedding needs width divisible by 4, got {width}")
    rows = sincos_pos_emb_1d(torch.arange(h), width // 2)  # (h, width/2)
    cols = sincos_pos_emb_1d(torch.arange(w), width // 2)  # (w, width/2)
    return torch.cat((rows[:, None, :].expand(h, w, -1), cols[None, :, :].expand(h, w, -1)), dim=-1)


class AdditivePosEmb(nn.Module):
    """Learned additive position embedding for a ``grid_h × grid_w`` token grid (steps A–C).

    ``table``: ``(grid_h, grid_w, width)``, initialised with :func:`sincos_pos_emb_2d` (see the
    module docstring for why). ``forward(x)`` returns ``x + table`` for ``x`` of shape
    ``(B, H, W, width)``; for another grid size the table is resized bicubically first.
    """

    def __init__(self, grid_h: int, grid_w: int, width: int):
        super().__init__()
        self.table = nn.Parameter(sincos_pos_emb_2d(grid_h, grid_w, width))

    def extra_repr(self) -> str:
        h, w, c = self.table.shape
        return f"grid=({h}, {w}), width={c}"

    def embedding(self, h: int, w: int, reading: str = "normalised") -> torch.Tensor:
        """The table at grid size ``h × w``: itself, or under the position ``reading`` (module
        docstring; checked where it enters, not here) bicubically resized (``"normalised"``),
        laid over the grid centred with border padding (``"grid"``), or an error
        (``"fixed"``)."""
        grid = tuple(self.table.shape[:2])
        if (h, w) == grid:
            return self.table
        if reading == "normalised":
            image = self.table.permute(2, 0, 1)[None]  # (1, width, grid_h, grid_w)
            resized = F.interpolate(image, size=(h, w), mode="bicubic", align_corners=False)
            return resized[0].permute(1, 2, 0)
        if reading == "grid":
            return _centred_border(_centred_border(self.table, h, dim=0), w, dim=1)
        raise _no_reading(reading, h, w, grid, "the additive position table")

    def forward(self, x: torch.Tensor, reading: str = "normalised") -> torch.Tensor:
        if x.ndim != 4 or x.shape[-1] != self.table.shape[-1]:
            raise ValueError(
                f"AdditivePosEmb: expected x of shape (B, H, W, {self.table.shape[-1]}), "
                f"got {tuple(x.shape)}"
            )
        return x + self.embedding(x.shape[1], x.shape[2], reading).to(x.dtype)


def _centred_border(table: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """``table`` along ``dim`` (``n₀`` cells) read at ``n`` cells of the same spacing, centred:
    cell ``i`` sits at table coordinate ``c = i − (n − n₀)/2``, clamped to ``[0, n₀ − 1]``
    (border padding), linearly interpolated between the two nearest cells (exact cells when
    ``n − n₀`` is even)."""
    n0 = table.shape[dim]
    # on the table's device: the indices and weights meet it in index_select and the lerp
    c = torch.arange(n, dtype=torch.float64, device=table.device) - (n - n0) / 2
    c = c.clamp(0, n0 - 1)
    lo = c.floor().long()
    hi = (lo + 1).clamp(max=n0 - 1)
    frac = (c - lo).to(table.dtype)
    shape = [1] * table.ndim
    shape[dim] = n
    a, b = table.index_select(dim, lo), table.index_select(dim, hi)
    return a + frac.view(shape) * (b - a)
