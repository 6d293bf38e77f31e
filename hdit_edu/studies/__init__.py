"""Studies: a question about HDiT's design (§5.2's ablations, or a user's own) asked as one
declarative file, ``study.toml``, and given a full life: register, run, status, analyze, report.

* :mod:`.spec`: the file format (its fields, defaults and validation) → :class:`.spec.Study`;
* :mod:`.registration`: the pre-registration (``registration.json``) and labelled amendments
  (``amendments.jsonl``); a spec that changed since is refused;
* :mod:`.runner`: the queue of (arm, seed) runs, each claimed atomically, resumable, trained
  through :func:`hdit_edu.ablation.run_toy`; ``status``;
* :mod:`.analysis`: per-arm means with 95 % t intervals, seed-paired differences, the
  multiplicity correction and the reading rule (:mod:`hdit_edu.stats`);
* :mod:`.report`: ``summary.{json,md}`` and a forest plot, with sentences that say only what
  the numbers say.

This ``__init__`` imports nothing: :mod:`hdit_edu.ablation` uses :mod:`.analysis` (its chain's
analysis is one study's), while :mod:`.runner` uses :mod:`hdit_edu.ablation`.
"""
