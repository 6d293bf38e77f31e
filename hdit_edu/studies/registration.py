"""Pre-registration of a study, as a fact the tool checks (the toy ablation's design was fixed
in its README before its runs, §5.2 rebuilt; this makes that a file, not a promise).

* :func:`register` writes ``registration.json`` beside ``study.toml``: the spec's text, its
  SHA-256, the git commit (and whether the spec file is committed there), the UTC time and how
  many complete records already existed (a study registered after runs says so, with the
  reason given). It is created exclusively: a second registration never overwrites the first.
* :func:`check` (called by run, analyze and report) refuses a spec whose hash is neither the
  registered one nor that of the latest amendment.
* :func:`amend` accepts a changed spec only as a labelled amendment: one line of
  ``amendments.jsonl`` with its label, reason, UTC time, old and new hash and the new text.
  Reports list every amendment.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from ..analysis import load_records
from ..env import git
from .spec import Study, load_study, spec_hash

REGISTRATION = "registration.json"
AMENDMENTS = "amendments.jsonl"


class RegistrationError(ValueError):
    """A study that is not registered, or whose spec changed without an amendment."""


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _provenance(study: Study) -> dict:
    """The git commit of the spec's repository and whether the spec is committed unchanged."""
    commit = git(study.folder, "rev-parse", "HEAD")
    status = git(study.folder, "status", "--porcelain", "--", study.path.name)
    return {"git_commit": commit, "spec_committed": commit is not None and status == ""}


def _done(study: Study) -> int:
    if not study.records.is_dir():
        return 0
    if study.cells is not None:  # an evaluation-only study: its (arm, seed) records of cells
        from .cells import load

        return sum(len(by_seed) for by_seed in load(study).values())
    runs = load_records(study.records, [a.label for a in study.arms])
    return sum(len(by_seed) for by_seed in runs.values())


def registration(folder: str | Path) -> dict | None:
    """The registration of the study in ``folder`` (None if it has none)."""
    path = Path(folder) / REGISTRATION
    return json.loads(path.read_text()) if path.exists() else None


def amendments(folder: str | Path) -> list[dict]:
    """The amendments of the study in ``folder``, oldest first."""
    path = Path(folder) / AMENDMENTS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def accepted_hash(folder: str | Path) -> str | None:
    """The hash a spec must have now: the latest amendment's, else the registered one."""
    reg = registration(folder)
    if reg is None:
        return None
    amended = amendments(folder)
    return amended[-1]["new_sha256"] if amended else reg["sha256"]


def register(spec: str | Path, *, after_runs: str | None = None) -> dict:
    """Register the study ``spec`` (validated first). Registering the same spec again returns
    the registration; a different spec is refused (amend it instead). Complete records already
    in the records folder are refused unless ``after_runs`` gives the reason (a retroactive
    registration, recorded as such)."""
    study = load_study(spec)
    folder, digest = study.folder, spec_hash(study.path)
    existing = registration(folder)
    if existing is not None:
        if accepted_hash(folder) == digest:
            return existing
        raise RegistrationError(
            f"{study.path} is registered ({existing['registered_utc']}) with another text; "
            "a change after registration is an amendment: hdit-edu study amend SPEC "
            "--label LABEL --reason REASON"
        )
    done = _done(study)
    if done and not after_runs:
        raise RegistrationError(
            f"{study.records} already holds {done} complete records: registration comes before "
            "the runs; to register an existing study, give the reason (after_runs / --after-runs)"
        )
    record = {
        "spec": study.path.name,
        "sha256": digest,
        "registered_utc": _utc(),
        **_provenance(study),
        "records_at_registration": done,
        "after_runs": after_runs or None,
        "text": study.path.read_text(),
    }
    tmp = folder / f".{REGISTRATION}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    try:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.link(tmp, folder / REGISTRATION)  # exclusive: fails if another registered first
    except FileExistsError:
        return register(spec, after_runs=after_runs)
    finally:
        tmp.unlink(missing_ok=True)
    return record


def check(spec: str | Path | Study) -> Study:
    """The study, if it is registered and its spec is the accepted one; else a
    :class:`RegistrationError` naming what to do."""
    study = spec if isinstance(spec, Study) else load_study(spec)
    accepted = accepted_hash(study.folder)
    if accepted is None:
        raise RegistrationError(
            f"{study.path} is not registered; register it before its runs: "
            "hdit-edu study register SPEC"
        )
    if spec_hash(study.path) != accepted:
        raise RegistrationError(
            f"{study.path} changed since it was registered (or last amended): refused. Record "
            "the change as an amendment (hdit-edu study amend SPEC --label LABEL --reason "
            "REASON), or restore the registered text (registration.json holds it)"
        )
    return study


def amend(spec: str | Path, label: str, reason: str) -> dict:
    """Accept the changed spec as the amendment ``label`` with its ``reason``: one line of
    ``amendments.jsonl`` (UTC time, old and new hash, the new text, the commit, how many
    complete records existed). The new spec must validate and differ from the accepted one."""
    study = load_study(spec)
    for name, value in (("label", label), ("reason", reason)):
        if not isinstance(value, str) or not value.strip():
            raise RegistrationError(f"amend: {name}={value!r}; allowed: a non-empty string")
    if registration(study.folder) is None:
        raise RegistrationError(f"{study.path} is not registered; nothing to amend")
    path = study.folder / AMENDMENTS
    with open(path, "a") as log:
        fcntl.flock(log.fileno(), fcntl.LOCK_EX)  # amendments are appended one at a time
        old = accepted_hash(study.folder)
        if old is None:
            raise RegistrationError(f"{study.path} is not registered; nothing to amend")
        new = spec_hash(study.path)
        if new == old:
            raise RegistrationError(f"{study.path} is unchanged since its registration/amendment")
        entry = {
            "label": label.strip(),
            "reason": reason.strip(),
            "amended_utc": _utc(),
            "old_sha256": old,
            "new_sha256": new,
            **_provenance(study),
            "records_at_amendment": _done(study),
            "text": study.path.read_text(),
        }
        log.write(json.dumps(entry) + "\n")
        log.flush()
        os.fsync(log.fileno())
    return entry
