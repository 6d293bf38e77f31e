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

import numpy as np
import torch

from hdit_edu import evaluation
from hdit_edu.ablation import cpu_model
from hdit_edu.runs import load_run
from hdit_edu.sampling import generate, sample_labels
from hdit_edu.toy import ToyDataset, predict_classes, toy_coherence


def spread(a: np.ndarray, b: np.ndarray) -> float:
    """Tr(Σ_a) / Tr(Σ_b): total feature variance of ``a`` relative to ``b``."""
    return float(np.trace(np.cov(a, rowvar=False)) / np.trace(np.cov(b, rowvar=False)))


def diversity(feats: np.ndarray, labels: np.ndarray, real: np.ndarray, real_labels) -> dict:
    """FID, its mean term (the covariance term is the rest), and the overall and within-class
    spread of ``feats`` (labels ``labels``) against ``real`` (labels ``real_labels``)."""
    fid = evaluation.frechet_distance(feats, real)
    mean_term = float(np.sum((feats.mean(0) - real.mean(0)) ** 2))
    k = int(real_labels.max()) + 1
    within = [spread(feats[labels == c], real[real_labels == c]) for c in range(k)]
    return {
        "fid": fid,
        "fid_mean_term": mean_term,
        "fid_covariance_term": fid - mean_term,
        "spread": spread(feats, real),
        "spread_within_class": float(np.mean(within)),
        "spread_per_class": within,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="NAME=RUN_DIR (NAME ends in -sSEED)")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    test = ToyDataset("test", resolution=32)
    real = evaluation.extract_features(test, extractor="toy", batch_size=256)
    real_labels = test.labels.astype(np.int64)
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {"cpu": cpu_model(), "runs": {}}
    for spec in args.runs:
        name, run_dir = spec.split("=", 1)
        if name in result["runs"]:
            continue
        c0 = time.process_time()
        config, denoiser = load_run(run_dir)
        seed = int(name.rsplit("-s", 1)[1])
        images = generate(denoiser, config, args.n, sampler="dpmpp_3m_sde", steps=50,
                          cfg_scale=3.0, seed=1000 + seed, batch_size=64)  # fmt: skip
        labels = sample_labels(args.n, config.model.num_classes)
        feats = evaluation.extract_features(images, extractor="toy", batch_size=256)
        result["runs"][name] = {
            "run_dir": run_dir,
            "n_samples": args.n,
            "class_accuracy": (predict_classes(images) == labels).float().mean().item(),
            "coherence": toy_coherence(images, labels)["coherent"].float().mean().item(),
            **diversity(feats, labels.numpy(), real, real_labels),
            "cpu_s": time.process_time() - c0,
        }
        out.write_text(json.dumps(result, indent=1) + "\n")
        r = result["runs"][name]
        print(name, {k: round(v, 3) for k, v in r.items() if isinstance(v, float)}, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
