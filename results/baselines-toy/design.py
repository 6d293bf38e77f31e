"""The cost of the baselines study (issue 33; README.md here), from its pilot's measured rates:
``python results/baselines-toy/design.py`` prints each arm's CPU seconds per run and the total.

**The rates** (AMD EPYC, one thread per run, this session's shared machine; README "Pilot"):

* ``TRAIN_S_PER_STEP``: ``train_cpu_s / 200`` of the pilot's records (the draft's arms at seed
  0, ``train_steps = 200``, ``n_eval = 64``, ``n_loss = 256``, registered and run in
  ``/tmp/r1pilot`` with ``hdit-edu study run study.toml --workers 1``).
* ``SAMPLE_S``: CPU seconds per sample at w = 1 (no guidance: one forward pass per step),
  measured on the pilot's checkpoints with ``generate(denoiser, config, 64, cfg_scale=1,
  seed=1000)`` (R1: 250 DDPM steps; R3: 50 steps of DPM++(3M) SDE). R2 and R4 sample R3's
  step count with a network of R3's cost (R2's DiT trains at R3's rate + 17 %; its sampling
  rate at w = 3 in the pilot, 0.201 CPU-s, equals R3's 0.203; R4 is R3's network).
* ``FIXED_S``: what a run costs besides training and sampling: the held-out loss on 2,048
  images (the pilot: 0.6 CPU-s per 256), the loss profile, the toy classifier's features and
  the model set-up (the pilot's ``cpu_s`` minus training and sampling: 7.7 s for R1), rounded
  up.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAIN_S_PER_STEP = {"R1": 24.105 / 200, "R2": 23.307 / 200, "R3": 19.841 / 200,
                    "R4": 20.750 / 200}
SAMPLE_S = {"R1": 0.684, "R3": 0.104}  # w = 1 (R1 at w = 3: 1.071; the pilot's run: 1.256)
SAMPLE_S["R2"] = SAMPLE_S["R4"] = SAMPLE_S["R3"]
FIXED_S = 30.0
RUN_LIMIT_S = 30 * 60  # each run (training + evaluation) ≤ 30 min
BUDGET_CPU_H = 6.0


def per_run(study) -> dict[str, float]:
    """CPU seconds of one run of each arm of ``study`` (a loaded :class:`Study`)."""
    b = study.budget
    return {
        a.label: TRAIN_S_PER_STEP[a.config] * b.train_steps + SAMPLE_S[a.config] * b.n_eval
        + FIXED_S
        for a in study.arms
    }


def total_cpu_h(study) -> float:
    """The whole study: every (arm, seed) run, in CPU hours."""
    cost = per_run(study)
    return sum(cost[a.label] for a, _ in study.runs()) / 3600


if __name__ == "__main__":
    from hdit_edu.studies.spec import load_study

    study = load_study(HERE / "study.toml")
    for label, s in per_run(study).items():
        print(f"{label}: {s:,.0f} CPU-s per run ({s / 60:.1f} min)")
    print(f"{len(study.runs())} runs, {total_cpu_h(study):.2f} CPU-hours")
