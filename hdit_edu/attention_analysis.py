"""Which keys a query sees (§4.3, Fig. 8; notebook 04): the attended set of each attention kind
and the receptive field of a whole hourglass — analysis for figures and tests, never run in a
forward pass.

* :func:`attended_keys` — the keys any of a set of query tokens attends to under global,
  neighborhood (the ``k × k`` window clamped at the borders: NATTEN's semantics, as the kernels
  in :mod:`hdit_edu.attention`) or shifted-window attention (segments ``⌊(i + shift)/window⌋``
  along both axes); :func:`attended_mask` for one query token;
* :func:`receptive_field` — which input tokens can influence one output token of an hourglass,
  followed backwards through its layers, merges and splits.

The cost of each kind (keys per query, multiply-adds) is in :mod:`hdit_edu.flops`.
"""

from __future__ import annotations

import torch

from .attention import check_kernel_size, check_window, neighborhood_window_starts
from .kinds import ATTENTION_KINDS


def attended_keys(
    kind: str, queries: torch.Tensor, *, kernel_size: int = 7, window_size: int = 8, shift: int = 0
) -> torch.Tensor:
    """The keys seen by any of the ``queries`` (a boolean ``(h, w)`` token grid) under ``kind``
    (one of :data:`~hdit_edu.kinds.ATTENTION_KINDS`; ``"none"``: each token sees itself): boolean
    ``(h, w)``. Neighborhood: the union of the clamped ``k × k`` windows; shifted window: every
    token in the same segment ``⌊(i + shift)/window⌋`` along both axes as some query."""
    h, w = queries.shape
    queries = queries.bool().cpu()
    if kind == "none":
        return queries.clone()
    if kind == "global":
        return torch.full((h, w), bool(queries.any()))
    rows, cols = queries.nonzero(as_tuple=True)
    if kind == "neighborhood":
        check_kernel_size(kernel_size, h, w)
        keys = torch.zeros(h, w, dtype=torch.bool)
        row0 = neighborhood_window_starts(h, kernel_size)[rows]
        col0 = neighborhood_window_starts(w, kernel_size)[cols]
        for a in range(kernel_size):
            for c in range(kernel_size):
                keys[row0 + a, col0 + c] = True
        return keys
    if kind == "shifted-window":
        check_window(window_size, shift, h, w)
        seg_r = (torch.arange(h) + shift) // window_size
        seg_c = (torch.arange(w) + shift) // window_size
        hit = torch.zeros(int(seg_r[-1]) + 1, int(seg_c[-1]) + 1, dtype=torch.bool)
        hit[seg_r[rows], seg_c[cols]] = True
        return hit[seg_r[:, None], seg_c[None, :]]
    raise ValueError(f"unknown attention kind {kind!r}; allowed: {', '.join(ATTENTION_KINDS)}")


def attended_mask(
    kind: str, h: int, w: int, query: tuple[int, int], *, kernel_size=7, window_size=8, shift=0
) -> torch.Tensor:
    """Boolean ``(h, w)`` grid of the keys that the query token ``(row, col)`` attends to."""
    row, col = query
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"query {query} is outside the {h}×{w} grid")
    one = torch.zeros(h, w, dtype=torch.bool)
    one[row, col] = True
    return attended_keys(kind, one, kernel_size=kernel_size, window_size=window_size, shift=shift)


def receptive_field(levels, h: int, w: int, query: tuple[int, int]) -> torch.Tensor:
    """Which tokens of the ``h × w`` input grid (after patching) can influence the output token
    ``query`` of a whole hourglass: boolean ``(h, w)``.

    ``levels``: the hourglass's levels, outermost first — objects with ``depth``, ``attention``
    (a kind of :func:`attended_keys`), ``kernel_size`` and ``window_size`` (e.g.
    :class:`~hdit_edu.configs.LevelConfig`). As in the model: level ``l`` has ``depth`` layers
    going down and ``depth`` going up (the innermost level: ``depth`` layers once); a 2×2 merge
    between levels, a split back up with the skip from the same level; shifted-window layers
    shift by ``window_size // 2`` on odd layer indices (the up layers continue the count).
    The dependencies are followed backwards from the output: attention spreads a set of tokens
    to all the keys its queries see, a split to the skip token and the merged parent token, a
    merge to the 2×2 children. Feed-forward layers, norms and residuals are token-wise.
    """
    levels = list(levels)
    if not levels:
        raise ValueError("receptive_field needs at least one level")
    scale = 2 ** (len(levels) - 1)
    if h % scale or w % scale:
        raise ValueError(f"grid {h}×{w} is not divisible by 2^(levels − 1) = {scale}")

    def through_layers(field, level, layer_indices):  # backwards through a stack of layers
        for index in reversed(layer_indices):
            field = attended_keys(
                level.attention,
                field,
                kernel_size=level.kernel_size,
                window_size=level.window_size,
                shift=level.window_size // 2 if index % 2 else 0,
            )
        return field

    field = torch.zeros(h, w, dtype=torch.bool)
    field[query] = True
    skips = []
    for level in levels[:-1]:  # up the output side: up layers, then the split
        field = through_layers(field, level, range(level.depth, 2 * level.depth))
        skips.append(field)  # the split's skip input
        field = field.unflatten(0, (-1, 2)).unflatten(2, (-1, 2)).any(dim=(1, 3))  # parents
    field = through_layers(field, levels[-1], range(levels[-1].depth))
    for i in reversed(range(len(levels) - 1)):  # down the input side: merge, then down layers
        field = field.repeat_interleave(2, dim=0).repeat_interleave(2, dim=1) | skips[i]
        field = through_layers(field, levels[i], range(levels[i].depth))
    return field
