"""The package skeleton: installable metadata, environment.yml in sync, the CLI answers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hdit_edu.env import (
    cpu_id,
    cpu_kind,
    environment_report,
    format_report,
    git_dirty,
    resolve_profile,
    versions,
)

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip(
    "tomllib", reason="tomllib is in the standard library from Python 3.11"
)


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_every_runtime_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_name(r) for r in pip_section if not r.startswith("-e")}
    assert runtime - listed == set(), f"missing in environment.yml: {sorted(runtime - listed)}"
    assert any(r.startswith("-e .[") and "notebooks" in r and "dev" in r for r in pip_section)


def test_constraints_pin_what_this_machine_needs():
    pins = (ROOT / "requirements" / "constraints.txt").read_text()
    for pkg in ("torch==", "torchvision==", "natten=="):
        assert pkg in pins


def test_cli_prints_help_and_environment():
    out = subprocess.run(
        [sys.executable, "-m", "hdit_edu.cli"], capture_output=True, text=True, check=True
    ).stdout
    assert "usage: hdit-edu" in out
    assert "torch" in out and "natten" in out and "device" in out


def test_environment_report_and_profile(monkeypatch):
    report = environment_report()
    import torch

    assert report["torch"] == torch.__version__
    assert "natten" in format_report(report)
    monkeypatch.setenv("HDIT_PROFILE", "cpu")
    assert resolve_profile("auto") == "cpu"
    monkeypatch.setenv("HDIT_PROFILE", "tpu")
    try:
        resolve_profile("auto")
    except ValueError as e:
        assert "tpu" in str(e) and "cpu" in str(e)
    else:
        raise AssertionError("an unknown profile must raise")


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads Linux's /proc/cpuinfo")
def test_records_keep_the_cpu_id_beside_the_model_name():
    """The model name can be "AMD EPYC" for CPUs that round differently: the records keep the
    vendor, family, model and stepping of the first processor, and torch's vector unit."""
    import torch

    info = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    field = dict(
        (k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in info.splitlines())
    )
    if "vendor_id" not in field:
        pytest.skip("no vendor_id in /proc/cpuinfo (not an x86 CPU)")
    expected = " ".join(
        [field["vendor_id"]]
        + [f"{k.split()[-1]} {field[k]}" for k in ("cpu family", "model", "stepping") if k in field]
        + [torch.backends.cpu.get_cpu_capability()]
    )
    assert cpu_id() == expected
    assert versions()["cpu_id"] == expected
    assert cpu_kind() == {"cpu": field.get("model name"), "cpu_id": expected}


def test_git_dirty_is_about_the_code_not_the_records_a_study_writes(tmp_path):
    """A study's tracked records and queue log grow under its runs: they do not make a record
    say its code was dirty; a change to the package, its data or its requirements does."""
    def run(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    for name in ("hdit_edu/model.py", "data/weights.json", "results/s/runs/queue.jsonl", "README.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("0\n")
    run("init", "-q")
    run("add", ".")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    assert git_dirty(tmp_path) is False
    (tmp_path / "results/s/runs/queue.jsonl").write_text("0\n1\n")  # a run appends its events
    (tmp_path / "README.md").write_text("changed\n")
    (tmp_path / "hdit_edu/new.py").write_text("untracked\n")
    assert git_dirty(tmp_path) is False
    (tmp_path / "data/weights.json").write_text("1\n")
    assert git_dirty(tmp_path) is True
    run("checkout", "--", "data")
    (tmp_path / "hdit_edu/model.py").write_text("1\n")
    assert git_dirty(tmp_path) is True
    assert git_dirty(tmp_path.parent / "not-a-repo-here") is None
