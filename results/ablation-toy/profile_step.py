"""torch.profiler table of 10 training steps of a toy task (after 5 warm-up steps), one thread:

OMP_NUM_THREADS=1 python results/ablation-toy/profile_step.py p2 E
"""

import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from hdit_edu.training import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import task_config  # noqa: E402

torch.set_num_threads(1)
task = sys.argv[1]
step = sys.argv[2] if len(sys.argv) > 2 else "E"
trainer = Trainer(task_config(step, task), None, progress=False, device="cpu")
for _ in range(5):
    trainer.train_step()
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(10):
        trainer.train_step()
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
