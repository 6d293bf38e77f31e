"""Memory and time of paper-scale training: how to fit Table 6's batch on the GPUs at hand.

This module starts with the one measurement the planner is calibrated against:
:func:`peak_allocated`, the peak of bytes held by PyTorch's allocator while a function runs,
read from the allocator's own counter as the profiler reports it (``profile_memory=True``:
every allocation and free of the CPU — or CUDA — allocator, with its running total). It works
for CPU tensors, where ``torch.cuda.max_memory_allocated`` has no counterpart, and counts only
what is allocated inside the window (tensors that exist before it are not included).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch


def peak_allocated(fn: Callable[[], object], device: str = "cpu") -> int:
    """The peak, in bytes, of memory allocated by PyTorch on ``device`` while ``fn()`` runs,
    above what was allocated before it started (the profiler's "Total Allocated" of its
    memory events)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    kind = "cpu" if device == "cpu" else "cuda"
    peak = 0
    for event in events:
        if event.get("name") != "[memory]":
            continue
        args = event["args"]
        device_type = args.get("Device Type", 0)
        if (kind == "cpu") == (device_type == 0):
            peak = max(peak, int(args["Total Allocated"]))
    return peak
