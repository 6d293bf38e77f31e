"""Memory and time of paper-scale training: how to fit Table 6's batch on the GPUs at hand.

The measurement the planner is calibrated against: :class:`PeakMemory` /
:func:`peak_allocated`, the most tensor memory a block holds at once above what was allocated
at entry — CUDA's allocator count on a GPU, and on the CPU (where
``torch.cuda.max_memory_allocated`` has no counterpart) the running sum of the allocator events
``torch.profiler`` records with ``profile_memory=True``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss() -> int:
    """The process's peak resident set size in bytes (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """``with PeakMemory(device) as mem: ...`` then ``mem.peak_MiB`` — the most memory the
    block's tensors held at once above what was allocated at entry (weights and inputs are not
    counted), and ``mem.kind``: how it was measured.

    * CUDA: ``max_memory_allocated − memory_allocated`` at entry (the caching allocator's own
      count).
    * CPU: the same quantity from torch's allocator events — the block runs under
      ``torch.profiler`` with ``profile_memory=True``, and the peak is the maximum of the
      running sum of the allocated/freed bytes it records, in time order. (The process RSS is
      no measure here: freed memory stays in the C heap and is reused without the RSS moving.)
      The profiler slows small ops down, so time the block separately. If that event stream is
      unavailable, falls back to the growth of the process's peak RSS (``ru_maxrss``), which
      reads 0 when an earlier, larger block already set the high-water mark.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_MiB: float | None = None
        self.kind = "torch.cuda.max_memory_allocated above entry"

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            _synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        from torch.profiler import ProfilerActivity, profile

        self._rss_base = _peak_rss()
        self._profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self._profiler.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            _synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.peak_MiB = (peak - self._base) / 2**20
            return
        rss = _peak_rss()
        self._profiler.__exit__(*exc)
        if exc[0] is not None:
            return
        try:
            deltas = [
                (e.start_ns(), e.nbytes())
                for e in self._profiler.profiler.kineto_results.events()
                if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
            ]
        except AttributeError:  # a torch without this event stream
            deltas = None
        if deltas is None:
            self.kind = "growth of the peak RSS (ru_maxrss; fallback)"
            self.peak_MiB = max(0, rss - self._rss_base) / 2**20
            return
        running = peak = 0
        for _, nbytes in sorted(deltas):
            running += nbytes
            peak = max(peak, running)
        self.kind = "torch CPU allocator events above entry (torch.profiler profile_memory)"
        self.peak_MiB = peak / 2**20


def peak_allocated(fn: Callable[[], object], device: str | torch.device = "cpu") -> int:
    """The peak, in bytes, of tensor memory allocated on ``device`` while ``fn()`` runs, above
    what was allocated before it started (:class:`PeakMemory`)."""
    with PeakMemory(torch.device(device)) as memory:
        fn()
    return round(memory.peak_MiB * 2**20)
