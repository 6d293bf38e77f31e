"""Studies: a question about HDiT's design (§5.2's ablations, or a user's own) asked as one
declarative file, ``study.toml``, and given a full life: register, run, status, analyze, report.

* :mod:`.spec`: the file format (its fields, defaults and validation) → :class:`.spec.Study`;
* :mod:`.registration`: the pre-registration (``registration.json``) and labelled amendments
  (``amendments.jsonl``); a spec that changed since is refused;
* :mod:`.runner`: the queue of (arm, seed) runs, each claimed atomically, resumable, trained
  through :func:`hdit_edu.ablation.run_toy`, then given the study's unbiased evaluations;
  ``status``;
* :mod:`.chain`: the paper chain's toy ablation as a generated, registered study
  (``hdit-edu ablate toy``'s shortcut onto the runner);
* :mod:`.report`: ``summary.{json,md}`` and a forest plot, with sentences that say only what
  the numbers say;
* :mod:`.cells` and :mod:`.cell_report`: an evaluation-only study (``[cells]``): trained
  checkpoints measured at a grid of guidance scales, sampling sizes, position readings and σ
  shifts, resumable cell by cell, and its best-cell / from-base analyses and report;
* :mod:`.resolutions`: one question trained at several resolutions (the paper's Fig. 1–2
  claim): cells as arms ``ARM@n``, equal training FLOPs per cell (steps from the analytic
  FLOPs, fixed when the spec is read), anytime evaluations, the crossover reading and the
  benchmark's exponents.

Below this package, shared with :mod:`hdit_edu.ablation` (which this package builds on):
:mod:`hdit_edu.analysis` (per-arm means with 95 % t intervals, seed-paired differences, the
multiplicity correction and the reading rule, on :mod:`hdit_edu.stats`) and
:mod:`hdit_edu.protocol` (the one evaluation protocol).
"""
