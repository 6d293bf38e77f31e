"""Attention kernels alone, forward + backward, one thread.

Default: neighborhood / global / Swin kernels on the toy outer level (batch 16, 16x16 tokens,
2 heads of 32): median ms of 20 calls (results/ablation-toy/speed.md's backend table; moved
from results/ablation-toy/).

    OMP_NUM_THREADS=1 python benchmarks/attention_micro.py

``--sweep``: where ``backend="auto"`` should switch from masked SDPA to the ``"torch"`` gather on
the CPU, as a function of the kernel size k (``hdit_edu.attention.MASKED_SDPA_AUTO_TOKENS_PER_K2``,
"C": masked SDPA up to ``min(MASKED_SDPA_AUTO_MAX_TOKENS, C·k²)`` tokens). For k in 3, 5, 7 and
square grids of 8…32 tokens a side (and 48 for k = 7), both backends' forward + backward time
(batch 16, 2 heads of 32, median of ``--repeats``, the two backends interleaved call by call so
that a busy spell of the shared machine hits both); then, for every integer C, which cells the
rule would give the slower backend (the fewest such cells, and the smallest worst slowdown).
Writes
``benchmarks/results/attention_auto_threshold-cpu-<date>.json``.

    python benchmarks/attention_micro.py --sweep
"""

import argparse
import json
import statistics
import sys
import time

import common  # benchmarks/common.py (it also puts the repository root on sys.path)
import torch
import torch.nn.functional as F

from hdit_edu.attention import (
    MASKED_SDPA_AUTO_MAX_TOKENS,
    MASKED_SDPA_AUTO_TOKENS_PER_K2,
    global_attention,
    neighborhood_attention,
    neighborhood_mask,
    resolve_na_backend,
    shifted_window_attention,
)

B, H, W, h, d = 16, 16, 16, 2, 32
# 28² = 784 tokens: near the k = 5 crossover (C·k² = 800 with C = 32, 750 with C = 30).
SWEEP_GRIDS = {
    3: (8, 12, 16, 20, 24, 28, 32),
    5: (8, 12, 16, 20, 24, 28, 32),
    7: (8, 12, 16, 20, 24, 28, 32, 48),
}
SWEEP_BACKENDS = ("masked-sdpa", "torch")
C_CANDIDATES = range(4, 65)


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


def kernel_table():
    """The default run: each kernel at 16×16 tokens."""
    torch.set_num_threads(1)
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


# --- --sweep: the "auto" threshold as a function of k ---


def time_backends(side: int, kernel_size: int, *, warmup: int, repeats: int) -> dict:
    """Forward + backward seconds of each backend on a ``side``×``side`` grid, the backends
    interleaved call by call: ``{backend: [seconds, ...]}``."""
    q, k, v = (torch.randn(B, side, side, h, d, requires_grad=True) for _ in range(3))

    def call(backend):
        out = neighborhood_attention(q, k, v, kernel_size, backend=backend)
        torch.autograd.grad(out.sum(), (q, k, v))

    for _ in range(warmup):
        for backend in SWEEP_BACKENDS:
            call(backend)
    seconds = {backend: [] for backend in SWEEP_BACKENDS}
    for _ in range(repeats):
        for backend in SWEEP_BACKENDS:
            t0 = time.perf_counter()
            call(backend)
            seconds[backend].append(time.perf_counter() - t0)
    return seconds


def rule_choice(tokens: int, kernel_size: int, c: int) -> str:
    """What "auto" picks on the CPU with constant ``c``."""
    limit = min(MASKED_SDPA_AUTO_MAX_TOKENS, c * kernel_size**2)
    return "masked-sdpa" if tokens <= limit else "torch"


def misses(cells: list[dict], c: int) -> list[dict]:
    """The cells where the rule with constant ``c`` picks the slower backend, and by how much
    (its median time over the faster one's)."""
    out = []
    for cell in cells:
        picked = rule_choice(cell["tokens"], cell["kernel_size"], c)
        if picked != cell["faster"]:
            slowdown = cell["median_ms"][picked] / cell["median_ms"][cell["faster"]]
            out.append(
                {"kernel_size": cell["kernel_size"], "side": cell["side"], "picked": picked,
                 "slowdown": round(slowdown, 3)}
            )
    return out


def run_sweep(args, device):
    torch.manual_seed(0)
    cells = []
    for kernel_size, sides in SWEEP_GRIDS.items():
        for side in sides:
            seconds = time_backends(side, kernel_size, warmup=args.warmup, repeats=args.repeats)
            median_ms = {b: round(statistics.median(s) * 1e3, 2) for b, s in seconds.items()}
            faster = min(median_ms, key=median_ms.get)
            probe = torch.empty(1, side, side, 1, 1)
            cell = {
                "kernel_size": kernel_size,
                "side": side,
                "tokens": side * side,
                "tokens_per_k2": round(side * side / kernel_size**2, 1),
                "median_ms": median_ms,
                "all_ms": {b: [round(t * 1e3, 2) for t in s] for b, s in seconds.items()},
                "torch_over_masked": round(median_ms["torch"] / median_ms["masked-sdpa"], 3),
                "faster": faster,
                "auto_picks": resolve_na_backend("auto", probe, probe, probe, kernel_size),
            }
            cells.append(cell)
            print(
                f"k={kernel_size} {side:2d}x{side:<2d} ({side * side:4d} tokens) "
                f"masked {median_ms['masked-sdpa']:8.1f} ms  torch {median_ms['torch']:8.1f} ms  "
                f"torch/masked {cell['torch_over_masked']:.2f}  auto → {cell['auto_picks']}",
                flush=True,
            )
    by_c = {c: misses(cells, c) for c in C_CANDIDATES}
    fewest = min(len(m) for m in by_c.values())
    worst = {c: max((m["slowdown"] for m in ms), default=1.0) for c, ms in by_c.items()}
    least_worst = min(worst.values())
    chosen = MASKED_SDPA_AUTO_TOKENS_PER_K2
    summary = {
        "chosen_C": chosen,
        "rule": "masked-sdpa when tokens <= min(MASKED_SDPA_AUTO_MAX_TOKENS, C·k²), else torch",
        "MASKED_SDPA_AUTO_MAX_TOKENS": MASKED_SDPA_AUTO_MAX_TOKENS,
        "misses_at_chosen_C": by_c[chosen],
        "C_with_fewest_misses": [c for c, m in by_c.items() if len(m) == fewest],
        "fewest_misses": fewest,
        "C_with_smallest_worst_slowdown": [c for c, w in worst.items() if w == least_worst],
        "smallest_worst_slowdown": least_worst,
        "table": {
            f"k={c['kernel_size']} {c['side']}x{c['side']}": (
                f"masked {c['median_ms']['masked-sdpa']} ms, torch {c['median_ms']['torch']} ms, "
                f"faster {c['faster']}, auto {c['auto_picks']}"
            )
            for c in cells
        },
    }
    settings = {
        "batch": B, "heads": h, "head_dim": d, "threads": torch.get_num_threads(),
        "warmup": args.warmup, "repeats": args.repeats, "grids": SWEEP_GRIDS,
        "note": (
            "shared machine: 2 CPU cores, other single-thread training processes running "
            "(see load_average); medians of interleaved calls, relative numbers only"
        ),
    }
    return settings, {"cells": cells, "misses_by_C": by_c}, summary


def parse_sweep_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="the auto-threshold sweep over k")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per backend (7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (2)")
    parser.add_argument("--out", help="output JSON path (default: benchmarks/results/...)")
    parser.add_argument("--no-save", action="store_true", help="print only, write nothing")
    args = parser.parse_args(argv)
    if args.repeats < 5 or args.warmup < 0:
        parser.error(f"need --repeats >= 5 and --warmup >= 0; got {args.repeats}, {args.warmup}")
    args.threads = 1
    return args, torch.device("cpu")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--sweep" not in argv:
        kernel_table()
        return 0
    args, device = parse_sweep_args(argv)
    name = "attention_auto_threshold"
    with common.torch_threads(args.threads):
        load_before = common.load_average()
        settings, results, summary = run_sweep(args, device)
        document = common.make_result(
            name, device, command=common.command_line("attention_micro.py", argv),
            settings=settings, results=results, summary=summary, load_before=load_before,
        )
    summary = {k: v for k, v in document["summary"].items() if k != "table"}
    print(json.dumps(summary, indent=1))
    if not args.no_save:
        print(f"wrote {common.write_result(document, device, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
