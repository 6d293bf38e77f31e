"""One rank of a DDP training run on the toy set, launched by ``torchrun`` from the tests.

``python ddp_worker.py OUT STEPS``: builds the tests' tiny HDiT (widths 32/64, one layer per
level, global batch 8) in a :class:`~hdit_edu.training.Trainer` under torchrun's environment,
records the gradient of step 0 (before any update), then trains ``STEPS`` steps with the real
``train_step`` while recording each step's inputs and random draws (images, classes, σ, ε);
writes ``OUT/rank{RANK}.pt``. Used by ``tests/test_training.py`` (one machine, 2 processes) and
``tests/test_multinode.py`` (2 "nodes" of 1 process on 127.0.0.1).
"""

import sys

import torch
from conftest import tiny_config

from hdit_edu.toy import ToyDataset
from hdit_edu.training import Trainer


def main(out: str, steps: int) -> None:
    config = tiny_config(1)
    trainer = Trainer(
        config, None, dataset=ToyDataset("train", resolution=32, size=512), progress=False
    )
    rank = trainer.dist.rank

    # The gradient of step 0 on this rank (DDP all-reduces it during backward).
    x0, classes, _ = trainer.get_batch(0)
    sigma, noise, cond = trainer.draw_noise(x0, classes, 0)
    trainer.forward_backward(x0, noise, sigma, **cond)
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    trainer.optimizer.zero_grad(set_to_none=True)

    # Train, recording what each step drew (the single-process replay feeds these back).
    draws, draw_noise = [], trainer.draw_noise

    def recording_draw_noise(x0, classes, step, *micro):  # micro: (micro-step, accumulation)
        sigma, noise, cond = draw_noise(x0, classes, step, *micro)
        draws.append(dict(x0=x0, classes=classes, sigma=sigma, noise=noise, **cond))
        return sigma, noise, cond

    trainer.draw_noise = recording_draw_noise
    losses = [trainer.train_step() for _ in range(steps)]
    result = dict(
        world=trainer.dist.world_size,
        rank=rank,
        indices=torch.as_tensor(trainer.sampler.batch_indices(0, trainer.batch_size)),
        x0=x0,
        noise=noise,
        sigma=sigma,
        class_cond=cond["class_cond"],
        grads=grads,
        draws=draws,
        losses=torch.tensor(losses, dtype=torch.float64),
        params={n: p.detach().clone() for n, p in trainer.model.named_parameters()},
        ema={n: p.detach().clone() for n, p in trainer.ema.named_parameters()},
    )
    torch.save(result, f"{out}/rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
