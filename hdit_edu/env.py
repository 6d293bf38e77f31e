"""The environment report (torch, device, NATTEN) and the notebook profile switch.

Every notebook starts with ``PROFILE = "auto"``; :func:`resolve_profile` turns that into
``"cpu"`` (tiny sizes, minutes on 2 cores) or ``"gpu"`` (the paper's settings). The
environment variable ``HDIT_PROFILE`` overrides it (the notebook tests set ``HDIT_PROFILE=cpu``).
"""

from __future__ import annotations

import os
import platform

PROFILES = ("cpu", "gpu")


def resolve_profile(profile: str = "auto") -> str:
    """``"auto"`` → ``"gpu"`` when CUDA is available, else ``"cpu"``; ``HDIT_PROFILE`` wins."""
    profile = os.environ.get("HDIT_PROFILE", profile)
    if profile == "auto":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; allowed: 'auto', {', '.join(PROFILES)}")
    return profile


def natten_status() -> dict:
    """What NATTEN can do here: installed or not, version, fused CUDA kernels or not."""
    try:
        import natten
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable"
        return {"installed": False, "version": None, "fused": False, "error": str(e)}
    import torch

    fused = False
    if torch.cuda.is_available():
        has_cuda = getattr(natten, "has_cuda", None) or getattr(natten, "HAS_LIBNATTEN", None)
        fused = bool(has_cuda() if callable(has_cuda) else has_cuda)
    return {"installed": True, "version": getattr(natten, "__version__", "?"), "fused": fused}


def environment_report() -> dict:
    """Versions and devices, as a dict (the tour notebook shows it, ``hdit-edu`` prints it)."""
    import torch

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
