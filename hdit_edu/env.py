"""The environment report (torch, device, NATTEN), the one NATTEN probe, the profile switch.

Every notebook starts with ``PROFILE = "auto"``; :func:`resolve_profile` turns that into
``"cpu"`` (tiny sizes, minutes on 2 cores) or ``"gpu"`` (the paper's settings). The
environment variable ``HDIT_PROFILE`` overrides it (the notebook tests set ``HDIT_PROFILE=cpu``).

:func:`natten_status` is the one place that asks NATTEN what it can do here; the attention
backends (``backend="auto"``), the report and the benchmarks all read it.

:func:`versions` (with :func:`cpu_model`, :func:`cpu_id` and :func:`git`) is what every
experiment record keeps of its environment: runs repeat bit for bit on one CPU kind only, and
:func:`same_cpu_kind` is the one place that says whether two records' CPUs are one kind.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

PROFILES = ("cpu", "gpu")


def resolve_profile(profile: str = "auto") -> str:
    """``"auto"`` → ``"gpu"`` when CUDA is available, else ``"cpu"``; ``HDIT_PROFILE`` wins."""
    profile = os.environ.get("HDIT_PROFILE", profile)
    if profile == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; allowed: 'auto', {', '.join(PROFILES)}")
    return profile


@functools.lru_cache(maxsize=1)
def _natten_probe() -> dict:
    """Import NATTEN once (lazily: only this asks) and read what it can do."""
    try:
        import natten
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable"
        return {"installed": False, "version": None, "fused": False, "error": str(e)}
    fused = False
    if torch.cuda.is_available():
        has_cuda = getattr(natten, "has_cuda", None) or getattr(natten, "HAS_LIBNATTEN", None)
        fused = bool(has_cuda() if callable(has_cuda) else has_cuda)
    return {"installed": True, "version": getattr(natten, "__version__", "?"), "fused": fused}


def natten_status() -> dict:
    """What NATTEN can do here: ``installed``, ``version``, ``fused`` (its compiled CUDA
    kernels, with CUDA available) and, when the import failed, ``error``."""
    return dict(_natten_probe())  # a copy: the probe's answer is cached


def natten_fused_available() -> bool:
    """True when NATTEN is installed with its compiled (fused CUDA) kernels and CUDA is
    available: what ``backend="auto"`` needs to pick NATTEN (:mod:`hdit_edu.attention`)."""
    return bool(natten_status()["fused"])


def values_on_host(t: torch.Tensor) -> bool:
    """Whether reading a tensor's *values* is free: a CPU tensor, outside tracing and
    ``torch.compile``. Value checks in forward passes (σ > 0, class labels in range) run only
    then: on an accelerator, reading values means a host synchronisation that stalls the
    stream on every call, so there the forward passes check shapes only and the values are
    checked where they enter (the sampler's schedule and labels, the trainer's batches)."""
    return t.device.type == "cpu" and not (torch.jit.is_tracing() or torch.compiler.is_compiling())


def environment_report() -> dict:
    """Versions and devices, as a dict (the tour notebook shows it, ``hdit-edu`` prints it)."""
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": cuda,
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({os.cpu_count()} cores)",
        "natten": natten_status(),
    }


def format_report(report: dict | None = None) -> str:
    report = environment_report() if report is None else report
    nat = report["natten"]
    if nat["installed"]:
        natten_line = f"{nat['version']} ({'fused CUDA kernels' if nat['fused'] else 'no fused kernels: flex/torch path'})"
    else:
        natten_line = "not installed (pure-PyTorch neighborhood attention is used)"
    return "\n".join(
        [
            f"python  {report['python']}",
            f"torch   {report['torch']}",
            f"device  {report['device']}",
            f"natten  {natten_line}",
        ]
    )


def _cpuinfo() -> dict[str, str] | None:
    """``/proc/cpuinfo`` as each field's first value (the first processor's); None where it
    cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    fields: dict[str, str] = {}
    for ln in text.splitlines():
        key, sep, value = ln.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo``), as the records keep it; None where unknown."""
    return (_cpuinfo() or {}).get("model name")


def cpu_id() -> str | None:
    """What tells two CPUs of one model name apart: vendor, family, model and stepping
    (``/proc/cpuinfo``) and the vector unit torch dispatches to. Under a hypervisor the model
    name can be as coarse as "AMD EPYC" for CPUs that round differently (two such machines
    differed from the sixth training step on), so the records keep this beside it."""
    fields = _cpuinfo()
    if fields is None:
        return None
    parts = [fields.get("vendor_id")] + [
        f"{k.split()[-1]} {fields[k]}" for k in ("cpu family", "model", "stepping") if k in fields
    ]
    parts.append(torch.backends.cpu.get_cpu_capability())
    return " ".join(p for p in parts if p) or None


def cpu_kind() -> dict:
    """This machine's CPU as a record's ``versions`` names it: ``{"cpu", "cpu_id"}`` (what
    :func:`same_cpu_kind` compares)."""
    return {"cpu": cpu_model(), "cpu_id": cpu_id()}


def same_cpu_kind(a: dict, b: dict, *, known: bool = False) -> bool:
    """Whether two records' ``versions`` name one CPU kind: the same model name and, where both
    keep it, the same ``cpu_id`` (records made before it have only the model name, which under
    a hypervisor can be one name for two kinds). ``known=True`` (to expect bit-identical
    numbers): both must keep a ``cpu_id``, since a model name alone does not settle it."""
    if a.get("cpu") != b.get("cpu"):
        return False
    if a.get("cpu_id") is None or b.get("cpu_id") is None:
        return not known
    return a["cpu_id"] == b["cpu_id"]


def cpu_kind_label(versions: dict) -> str:
    """A record's CPU kind in words: the model name, with the ``cpu_id`` where it has one."""
    cpu, ident = versions.get("cpu"), versions.get("cpu_id")
    return f"{cpu}" + (f" ({ident})" if ident else "")


def git(folder: str | Path, *args: str) -> str | None:
    """``git -C folder ARGS``'s output (stripped); None outside a repository or without git."""
    try:
        return subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# What a run reads from the repository: the package, its shipped weights and data, what it
# installs. A record's ``git_dirty`` is about these only: the records, queue logs and specs that
# a study writes under results/ (tracked once committed) say nothing about the code that ran.
CODE_PATHS = ("hdit_edu", "data", "pyproject.toml", "requirements")


def git_dirty(folder: str | Path) -> bool | None:
    """Whether the tracked files of :data:`CODE_PATHS` in the repository at ``folder`` differ
    from its commit (None outside a repository)."""
    status = git(folder, "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    return None if status is None else bool(status)


def versions() -> dict:
    """Python, torch, numpy, the package's git commit (+ :func:`git_dirty`), CPU model and id,
    threads."""
    source = Path(__file__).resolve().parents[1]
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "git_commit": git(source, "rev-parse", "HEAD"),
        "git_dirty": git_dirty(source),
        **cpu_kind(),
        "threads": torch.get_num_threads(),
    }
