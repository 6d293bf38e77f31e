"""Train issue 19's all-local model ``L`` (step D with the global middle level replaced by 3×3
neighborhood attention, :func:`hdit_edu.configs.all_local`) with the toy chain's exact budget.

It is the ablation driver ``results/ablation-toy/run.py`` unchanged (``hdit_edu.ablation.run_toy``)
— the same recipe, task ``p4k3``, seeds, evaluation at 32², result JSON and kept checkpoint —
with ``--config L``: the library knows ``L`` as an extra toy configuration
(``hdit_edu.presets.FOLLOW_UPS``, outside the ablation's pre-registered ``TOY_EXPERIMENT``
and analysis). Run it from a pinned worktree (the coordinator's queue line, ``README.md``
here) so that neither file changes under a running job:

    cd /work/wt-res-pinned && PYTHONPATH=$PWD OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
      python results/resolution-toy/train.py --seed 0 --task p4k3 --train-steps 20000 \\
      --batch-size 16 --n-eval 2048 --sample-steps 50 --sampler dpmpp_3m_sde --cfg 3 \\
      --sample-batch 64 --n-loss 2048 --loss-weighting soft-min-snr --out DIR

writes ``DIR/L-s0.json`` (+ ``.png``); the checkpoint stays in
``<worktree>/runs/ablation-toy/<DIR's name>/L-s0/checkpoints/`` (git-ignored).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUN_PY = HERE.parent / "ablation-toy" / "run.py"


def _load_run_module():
    spec = importlib.util.spec_from_file_location("ablation_toy_run", RUN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv:
        argv = ["--config", "L", *argv]
    return _load_run_module().main(argv)


if __name__ == "__main__":
    sys.exit(main())
