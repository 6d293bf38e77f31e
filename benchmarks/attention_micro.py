"""Neighborhood / global / Swin attention kernels alone, forward + backward, on the toy outer
level (batch 16, 16x16 tokens, 2 heads of 32), one thread: median ms of 20 calls.

    OMP_NUM_THREADS=1 python benchmarks/attention_micro.py

(results/ablation-toy/speed.md's backend table; moved from results/ablation-toy/.)
"""

import time

import torch
import torch.nn.functional as F

from hdit_edu.attention import (
    global_attention,
    neighborhood_attention,
    neighborhood_mask,
    shifted_window_attention,
)

torch.set_num_threads(1)
B, H, W, h, d = 16, 16, 16, 2, 32


def bench(fn, reps=20):
    q, k, v = (torch.randn(B, H, W, h, d, requires_grad=True) for _ in range(3))
    for _ in range(3):
        fn(q, k, v).sum().backward()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(q, k, v).sum().backward()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2] * 1e3


mask = neighborhood_mask(H, W, 7)
fmask = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
hf = lambda t: t.flatten(1, 2).transpose(1, 2)
rows = {
    "global SDPA (A)": lambda q, k, v: global_attention(q, k, v, scale=1.0),
    "swin w8 (B1)": lambda q, k, v: shifted_window_attention(q, k, v, 8, 4, scale=1.0),
    "NA masked-sdpa (library)": lambda q, k, v: neighborhood_attention(
        q, k, v, 7, scale=1.0, backend="masked-sdpa"
    ),
    "NA torch (library)": lambda q, k, v: neighborhood_attention(
        q, k, v, 7, scale=1.0, backend="torch"
    ),
    "SDPA bool mask, direct": lambda q, k, v: F.scaled_dot_product_attention(
        hf(q), hf(k), hf(v), attn_mask=mask, scale=1.0
    ),
    "SDPA float mask, direct": lambda q, k, v: F.scaled_dot_product_attention(
        hf(q), hf(k), hf(v), attn_mask=fmask, scale=1.0
    ),
    "math: softmax(qk+fmask)v": lambda q, k, v: (
        (hf(q) @ hf(k).transpose(-1, -2) + fmask).softmax(-1) @ hf(v)
    ),
}
for name, fn in rows.items():
    print(f"{name:32s} {bench(fn):7.2f} ms fwd+bwd", flush=True)
