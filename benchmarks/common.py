"""Shared pieces of the benchmark scripts (``scaling.py``, ``sampling_speed.py``,
``profile_step.py``): what machine this is, how to time and how to measure memory, the power-law
fit, and where results go.

* :func:`environment` — device (name, kind, torch threads) and versions (Python, torch, CUDA,
  NATTEN, fvcore, the git commit of this checkout); :func:`make_result` adds the load average
  before and after the run (timings on a shared machine are only as good as its quiet).
* :func:`time_call` — wall-clock of a call: ``warmup`` untimed calls, then ``repeats`` timed
  ones (CUDA synchronised before and after each); the median is the number we report.
* :class:`PeakMemory` — peak tensor memory of a block above what was allocated at entry:
  ``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the same quantity from the allocator
  events ``torch.profiler`` records. (``tracemalloc`` does not see torch's allocations,
  ``ru_maxrss`` is a process-wide high-water mark that a later, smaller measurement never
  lowers, and the RSS does not move when the C heap reuses freed memory.)
* :func:`fit_exponent` — the growth exponent ``k`` of ``time ∝ pixels^k``: least squares of
  ``log time`` against ``log pixels`` (:func:`hdit_edu.flops.loglog_slope`).
* :func:`write_result` — ``benchmarks/results/<name>-<device>-<date>.json`` with the
  environment, the command line, the settings and the numbers (:data:`RESULT_KEYS`).
* **k-diffusion side by side** — when ``HDIT_K_DIFFUSION_SRC`` points at a k-diffusion source
  tree (a clone of crowsonkb/k-diffusion), :func:`reference_model` builds the authors'
  ``image_transformer_v2`` with the same config and weights as one of our HDiT models
  (:func:`hdit_edu.interop.to_k_diffusion`), imported from that tree at run time by
  :func:`hdit_edu.reference_source.import_k_diffusion`, as the tests do (no k-diffusion code lives in
  this repository): the reference calls ``natten.functional.na2d`` (fused kernels on CUDA; on
  the CPU NATTEN's flex path, forward only) and, off CUDA, skips its ``torch.compile`` of small
  kernels.

Run the scripts from the repository root (``python benchmarks/<script>.py``); they put the
repository root on ``sys.path`` themselves when ``hdit_edu`` is not installed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
RESULTS_DIR = BENCHMARKS_DIR / "results"
SCHEMA_VERSION = 1
# Every result JSON has these top-level keys (the test checks them).
RESULT_KEYS = (
    "benchmark",
    "schema_version",
    "date",
    "command",
    "environment",
    "load_average",
    "settings",
    "results",
    "summary",
)

if str(REPO_ROOT) not in sys.path:  # `python benchmarks/x.py` without an installed package
    sys.path.insert(0, str(REPO_ROOT))

from hdit_edu import planner as _planner  # noqa: E402
from hdit_edu.reference_source import K_DIFFUSION_SRC_ENV as K_DIFFUSION_ENV  # noqa: E402, F401

# ----------------------------------------------------------------------------------------------
# Devices and versions
# ----------------------------------------------------------------------------------------------


def resolve_device(device: str | None) -> torch.device:
    """``None`` / ``"auto"`` → CUDA when available, else CPU; anything else as torch names it."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device {device!r}: allowed: cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(device)!r}: allowed: cpu, cuda, cuda:N or auto")
    return device


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model (``/proc/cpuinfo``) and its core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine() or "cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} ({os.cpu_count()} cores)"


def device_tag(device: torch.device) -> str:
    """Short file-name tag: ``cpu`` or ``cuda-<gpu model>``, e.g. ``cuda-nvidia-h100-80gb-hbm3``."""
    if device.type != "cuda":
        return "cpu"
    return "cuda-" + re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (how busy the machine was while we timed)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _module_version(name: str) -> str | None:
    try:
        module = importlib.import_module(name)
    except Exception:  # noqa: BLE001 - not installed or broken: no version
        return None
    return getattr(module, "__version__", "?")


def environment(device: torch.device) -> dict:
    """The device and the software versions of a run."""
    from hdit_edu.env import natten_fused_available

    info: dict[str, Any] = {
        "device_type": device.type,
        "device": device_name(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu_memory_GiB"] = round(props.total_memory / 2**30, 1)
        info["compute_capability"] = f"{props.major}.{props.minor}"
    info["versions"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "natten": _module_version("natten"),
        "natten_fused": natten_fused_available(),
        "fvcore": _module_version("fvcore"),
        "hdit_edu_commit": _git_commit(),
    }
    return info


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds per call: every timed repeat, and their median / min / mean."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def to_dict(self) -> dict:
        s = self.seconds
        return {
            "median_s": self.median,
            "min_s": min(s),
            "mean_s": statistics.fmean(s),
            "repeats": len(s),
            "all_s": s,
        }


def time_call(fn: Callable[[], Any], device: torch.device, *, warmup: int, repeats: int) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed (wall clock,
    ``time.perf_counter``; CUDA synchronised around each call)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0; got {repeats}, {warmup}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - t0)
    return Timing(seconds)


# ----------------------------------------------------------------------------------------------
# Peak memory
# ----------------------------------------------------------------------------------------------


# PeakMemory lives in the library (the planner is calibrated with it); re-exported here.
PeakMemory = _planner.PeakMemory


# ----------------------------------------------------------------------------------------------
# The growth exponent
# ----------------------------------------------------------------------------------------------


def fit_exponent(pixels: Iterable[float], values: Iterable[float]) -> dict:
    """Fit ``value = c · pixels^k`` by least squares in log-log space; returns ``{"k", "c",
    "points"}``. Exact for exact power laws (the test checks that k is recovered)."""
    from hdit_edu.flops import loglog_slope

    xs, ys = list(pixels), list(values)
    k = loglog_slope(xs, ys)
    log_c = statistics.fmean(math.log(y) - k * math.log(x) for x, y in zip(xs, ys))
    return {"k": k, "c": math.exp(log_c), "points": len(xs)}


# ----------------------------------------------------------------------------------------------
# Neighborhood attention backends
# ----------------------------------------------------------------------------------------------


def resolved_backends(model_config, resolution: int, backend: str, device) -> list[dict]:
    """For each neighborhood-attention level of ``model_config`` at ``resolution``: its token
    grid and the backend ``backend`` resolves to there on ``device`` (what ``"auto"`` picks)."""
    from hdit_edu.attention import resolve_na_backend
    from hdit_edu.configs import token_grids

    if model_config.arch != "hdit":
        return []
    rows = []
    for i, (level, (h, w)) in enumerate(
        zip(model_config.levels, token_grids(model_config, resolution))
    ):
        if level.attention != "neighborhood":
            continue
        probe = torch.empty(1, h, w, 1, 1, device=device)
        rows.append(
            {
                "level": i,
                "grid": [h, w],
                "kernel_size": level.kernel_size,
                "backend": resolve_na_backend(backend, probe, probe, probe, level.kernel_size),
            }
        )
    return rows


class RandomImages:
    """A stand-in data set for benchmarks of configs whose data is not here (ImageNet, FFHQ):
    ``batch(indices)`` → images uniform in [-1, 1] and random classes, the same for the same
    indices. A step's cost does not depend on the pixels. (The :class:`hdit_edu.training.Trainer`
    data-set protocol: ``len`` and ``batch``.)"""

    def __init__(self, resolution: int, num_classes: int, channels: int = 3, size: int = 10**6):
        self.resolution, self.num_classes = resolution, num_classes
        self.channels, self.size = channels, size

    def __len__(self) -> int:
        return self.size

    def batch(self, indices):
        g = torch.Generator().manual_seed(int(indices[0]))
        n, r = len(indices), self.resolution
        images = torch.rand(n, self.channels, r, r, generator=g) * 2 - 1
        return images, torch.randint(0, max(1, self.num_classes), (n,), generator=g)


def benchmark_dataset(config):
    """The data set a benchmark trains on: ``None`` (the config's own: the toy set, or an image
    folder that exists here) or :class:`RandomImages` when the config's folder is absent."""
    name = config.training.dataset
    if name == "toy" or Path(name).is_dir():
        return None
    return RandomImages(config.model.resolution, config.model.num_classes, config.model.in_channels)


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------


def command_line(script: str, argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", f"benchmarks/{script}", *args])


def result_path(name: str, device: torch.device, date: dt.date | None = None) -> Path:
    """``benchmarks/results/<name>-<device tag>-<YYYY-MM-DD>.json``."""
    date = date or dt.date.today()
    return RESULTS_DIR / f"{name}-{device_tag(device)}-{date.isoformat()}.json"


def make_result(
    name: str,
    device: torch.device,
    *,
    command: str,
    settings: dict,
    results: Any,
    summary: dict,
    load_before: list[float] | None,
) -> dict:
    """The JSON document of one benchmark run (keys :data:`RESULT_KEYS`)."""
    return {
        "benchmark": name,
        "schema_version": SCHEMA_VERSION,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "environment": environment(device),
        "load_average": {"before": load_before, "after": load_average()},
        "settings": settings,
        "results": results,
        "summary": summary,
    }


def write_result(document: dict, device: torch.device, out: str | Path | None = None) -> Path:
    """Write ``document`` to ``out`` (default :func:`result_path`); returns the path."""
    path = Path(out) if out else result_path(document["benchmark"], device)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, default=_json_default) + "\n")
    return path


def _json_default(value):
    if isinstance(value, (torch.device, torch.dtype, Path)):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def add_common_arguments(parser, *, repeats: str, warmup: str) -> None:
    """The options every script shares."""
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--repeats", type=int, help=f"timed repeats per measurement ({repeats})")
    parser.add_argument("--warmup", type=int, help=f"untimed calls first ({warmup})")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's; --quick: 1)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smallest sizes, one repeat (a smoke run)"
    )
    parser.add_argument("--out", help="output JSON path (default: benchmarks/results/...)")
    parser.add_argument("--no-save", action="store_true", help="print only, write nothing")


def run_script(
    name: str,
    parse_args: Callable,
    run: Callable,
    argv: list[str] | None = None,
    *,
    show: Callable[[dict], Any] = lambda document: document["summary"],
    after_write: Callable[[dict, Path], None] | None = None,
) -> int:
    """The ``main`` of every script ``benchmarks/<name>.py``: parse the arguments
    (``parse_args(argv) -> (args, device)``); with ``--threads`` torch threads, run
    (``run(args, device) -> (settings, results, summary)``) and make the result document
    (:func:`make_result`, with the load average before and after); print ``show(document)``;
    unless ``--no-save``, write the JSON (``--out`` or :func:`result_path`) and call
    ``after_write(document, path)`` (e.g. to draw a plot)."""
    args, device = parse_args(argv)
    with torch_threads(args.threads):
        load_before = load_average()
        settings, results, summary = run(args, device)
        document = make_result(
            name,
            device,
            command=command_line(f"{name}.py", argv),
            settings=settings,
            results=results,
            summary=summary,
            load_before=load_before,
        )
    print(json.dumps(show(document), indent=1, default=_json_default))
    if not args.no_save:
        path = write_result(document, device, args.out)
        print(f"wrote {path}")
        if after_write is not None:
            after_write(document, path)
    return 0


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` torch CPU threads (None: leave torch's setting); the
    previous setting is restored afterwards (the smoke test calls the scripts in-process).

    On a machine whose cores are shared with other busy processes, one thread is far faster
    and steadier than several: an intra-op parallel region waits for its slowest thread, and a
    descheduled thread stalls every small op (measured here: a toy HDiT forward 0.7 s with 2
    threads at load average 6 on 2 cores, 0.04 s with 1)."""
    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1; got {threads}")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------------------------
# k-diffusion side by side (HDIT_K_DIFFUSION_SRC)
# ----------------------------------------------------------------------------------------------


def k_diffusion_source() -> str | None:
    """The k-diffusion source tree named by ``HDIT_K_DIFFUSION_SRC`` (None when unset; a
    ``ValueError`` when it is set but is not one): :func:`hdit_edu.reference_source.k_diffusion_source`."""
    from hdit_edu.reference_source import k_diffusion_source

    return k_diffusion_source()


@contextlib.contextmanager
def reference_model(model: torch.nn.Module, device: torch.device):
    """``with reference_model(hdit, device) as ref:`` — k-diffusion's model with ``hdit``'s
    config and weights on ``device`` (eval mode), or ``None`` when ``HDIT_K_DIFFUSION_SRC`` is
    unset. Only HDiT models (``arch="hdit"``) have a reference; for others this raises
    ``ValueError``. The reference stays importable while the block runs (its forward needs it)."""
    src = k_diffusion_source()
    if src is None:
        yield None
        return
    from hdit_edu.interop import to_k_diffusion
    from hdit_edu.reference_source import import_k_diffusion

    kd_config, kd_state = to_k_diffusion(model)
    with import_k_diffusion(src, device=device) as K:
        with torch.device(device):
            reference = K.config.make_model(K.config.load_config(kd_config))
        reference.load_state_dict({k: v.to(device) for k, v in kd_state.items()}, strict=True)
        yield reference.eval()
