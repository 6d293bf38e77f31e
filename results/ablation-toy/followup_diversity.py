"""Post-hoc look at the follow-up (README, "Follow-up: RoPE under soft-min-SNR"; written after
its three runs, not part of its design): C-smsnr draws the intended class almost always (class
accuracy ≈ 99 %) yet has twice C's toy FID. Is that a loss of diversity? For each given run,
512 samples at 32² (the ablation's sampler, w = 3) and their toy-classifier features against
the 2,048 test images':

- FID split into its two terms, ‖μ_s − μ_r‖² (mean) and Tr(Σ_s + Σ_r − 2(Σ_sΣ_r)^½)
  (covariance);
- *spread*: Tr(Σ_s) / Tr(Σ_r), overall and within each class (mean over the 8 classes):
  below 1 = the samples vary less than real images;
- class accuracy and coherence (one whole object of the intended class).

    OMP_NUM_THREADS=1 python results/ablation-toy/followup_diversity.py \\
        C-smsnr-s0=runs/ablation-toy/followup/C-smsnr-s0 C-s1=... --out followup/diversity.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from hdit_edu.ablation import cpu_model
from hdit_edu.protocol import EvalProtocol, evaluate
from hdit_edu.runs import load_run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="NAME=RUN_DIR (NAME ends in -sSEED)")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {"cpu": cpu_model(), "runs": {}}
    protocol = EvalProtocol(n=args.n, coherence=True, diversity=True)  # the ablation's sampler
    for spec in args.runs:
        name, run_dir = spec.split("=", 1)
        if name in result["runs"]:
            continue
        c0 = time.process_time()
        config, denoiser = load_run(run_dir)
        seed = int(name.rsplit("-s", 1)[1])
        m, _, _ = evaluate(denoiser, config, protocol, 1000 + seed)
        keep = ("class_accuracy", "coherence", "fid", "fid_mean_term", "fid_covariance_term",
                "spread", "spread_within_class", "spread_per_class")  # fmt: skip
        result["runs"][name] = {"run_dir": run_dir, "n_samples": args.n}
        result["runs"][name] |= {k: m[k] for k in keep} | {"cpu_s": time.process_time() - c0}
        out.write_text(json.dumps(result, indent=1) + "\n")
        r = result["runs"][name]
        print(name, {k: round(v, 3) for k, v in r.items() if isinstance(v, float)}, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
