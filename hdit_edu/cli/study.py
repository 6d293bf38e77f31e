"""``hdit-edu study``: a study's life from its ``study.toml`` (§5.2's ablations as a user's own
experiment; :mod:`hdit_edu.studies`, the file format in ``docs/studies.md``):

    hdit-edu study register SPEC [--after-runs REASON]   # fix the design before any run
    hdit-edu study amend SPEC --label LABEL --reason WHY # a labelled change after registration
    hdit-edu study run SPEC [--workers N] [--stop-after MINUTES]   # the (arm, seed) runs
    hdit-edu study status SPEC                           # each run's state
    hdit-edu study analyze SPEC [--json]                 # tables, differences, readings
    hdit-edu study report SPEC [--out DIR]               # summary.{json,md,png}

SPEC is a ``study.toml`` or its folder. ``run``, ``analyze`` and ``report`` refuse a spec that
changed since its registration or last amendment. A spec with ``[cells]`` is evaluation-only
(:mod:`hdit_edu.studies.cells`): ``run`` measures its checkpoints at every cell, ``status``
counts the cells, ``analyze`` / ``report`` give its cell analysis.
"""

from __future__ import annotations

import argparse
import json

from .arguments import POSITIVE, add_command, finite_float

ACTIONS = ("register", "amend", "run", "status", "analyze", "report")


def add_study(sub) -> None:
    """``study``: register, amend, run, status, analyze, report."""
    study = add_command(
        sub,
        "study",
        None,
        help="a pre-registered study from one study.toml: register, amend, run, status, "
        "analyze, report",
        description=__doc__.split("\n\n", 1)[1],
    )
    study.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the usage lines
    actions = study.add_subparsers(dest="action", metavar="ACTION", required=True)
    spec_help = "the study file (study.toml) or its folder"
    for name, helptext in (
        ("register", "record the spec, its hash, the commit and the time before any run"),
        ("amend", "accept a changed spec as a labelled amendment (with its reason)"),
        ("run", "train and evaluate every unfinished (arm, seed), each claimed atomically"),
        ("status", "show each run's state: done, running, partial, failed, pending"),
        ("analyze", "per-arm means with 95 % CIs, paired differences, corrected p, readings"),
        ("report", "write summary.json, summary.md and a forest plot summary.png"),
    ):
        p = actions.add_parser(name, help=helptext.replace("%", "%%"), description=helptext)
        p.add_argument("spec", help=spec_help)
        p.set_defaults(func=cmd_study)
        if name == "register":
            p.add_argument(
                "--after-runs",
                metavar="REASON",
                help="register a study whose records already exist, saying why (recorded)",
            )
        elif name == "amend":
            p.add_argument("--label", required=True, help="a short name of the change")
            p.add_argument("--reason", required=True, help="why the design changes")
        elif name == "run":
            p.add_argument(
                "--workers", type=POSITIVE, default=1, help="worker processes, one thread each"
            )
            p.add_argument("--no-progress", action="store_true", help="no progress bars")
            p.add_argument(
                "--stop-after", type=finite_float(0.0), metavar="MINUTES",
                help="start no new run after this many minutes; the runs under way finish "
                "(for a session or job with a time limit)",
            )  # fmt: skip
        elif name == "analyze":
            p.add_argument("--json", action="store_true", help="print the analysis as JSON")
        elif name == "report":
            p.add_argument("--out", help="folder of summary.* (default: the study's folder)")


def _status_table(rows: list[dict], metrics) -> str:
    lines = [f"{'run':<16} {'state':<8} {'step':>7}  {'cpu':<28} " + " ".join(
        f"{m:>14}" for m in metrics
    )]  # fmt: skip
    for r in rows:
        values = " ".join(
            f"{r[m]:>14.5g}" if isinstance(r.get(m), float) else f"{'–':>14}" for m in metrics
        )
        step = "–" if r.get("step") is None else str(r["step"])
        cpu = (r.get("cpu") or "–")[:28]
        lines.append(f"{r['run']:<16} {r['state']:<8} {step:>7}  {cpu:<28} {values}")
    counts = {s: sum(r["state"] == s for r in rows) for s in dict.fromkeys(r["state"] for r in rows)}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()) + f" (of {len(rows)})")
    return "\n".join(lines)


def cmd_study(args: argparse.Namespace) -> int:
    # Imported here: the studies package pulls in the trainer and the evaluation.
    from ..studies import registration, report, resolutions, runner
    from ..studies.spec import load_study

    if args.action == "register":
        reg = registration.register(args.spec, after_runs=args.after_runs)
        print(json.dumps({k: v for k, v in reg.items() if k != "text"}, indent=1))
        return 0
    if args.action == "amend":
        entry = registration.amend(args.spec, args.label, args.reason)
        print(json.dumps({k: v for k, v in entry.items() if k != "text"}, indent=1))
        return 0
    if args.action != "amend" and load_study(args.spec).cells is not None:
        return _cell_study(args)
    if args.action == "run":
        result = runner.run(
            args.spec, workers=args.workers, progress=not args.no_progress,
            stop_after=args.stop_after,
        )  # fmt: skip
        study = load_study(args.spec)
        print(_status_table(result["status"], study.metrics))
        return 0 if result["ok"] else 1
    if args.action == "status":
        study = load_study(args.spec)
        if study.resolution_cells is not None:  # the plan: every arm's steps per cell, fixed by the spec
            print("\n".join(resolutions.plan_lines(study)) + "\n")
        print(_status_table(runner.status(study), study.metrics))
        return 0
    if args.action == "analyze":
        study = registration.check(args.spec)
        result = resolutions.analyze_study(study)  # analysis.analyze, and a cell study's own parts
        if args.json:
            print(json.dumps(result, indent=1))
        else:
            print(report.markdown(result, study), end="")
        return 0
    result = report.report(args.spec, args.out)
    print(result["markdown"], end="")
    return 0


def _cell_study(args: argparse.Namespace) -> int:
    """``run`` / ``status`` / ``analyze`` / ``report`` of an evaluation-only study."""
    from ..studies import cell_report, cells, registration
    from ..studies.spec import load_study

    if args.action == "status":
        for row in cells.status(load_study(args.spec)):
            print(f"{row['run']:<16} {row['state']:<8} {row['cells']:>7}")
        return 0
    study = registration.check(args.spec)
    if args.action == "run":
        cells.run(study)
        return 0
    if args.action == "analyze":
        result = cell_report.analyze(study)
        text = json.dumps(result, indent=1) + "\n" if args.json else cell_report.markdown(result, study)
        print(text, end="")
        return 0
    print(cell_report.report(study, args.out)["markdown"], end="")
    return 0
