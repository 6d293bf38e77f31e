"""A second toy feature space, trained without class labels (issue 28, "Features"; §5.2's FID
at toy scale, measured twice).

Toy FID and class accuracy both come from :class:`hdit_edu.toy.ToyClassifier`, a
class-discriminative network: prototypical, over-guided samples score well on both, so the two
numbers are not independent witnesses. This module gives the evaluation protocol a second one:

* :class:`ToyEncoder` — the encoder half of a small **denoising convolutional autoencoder**
  (three stride-2 convolutions 32² → 4², a linear layer to 64 features), trained with
  :func:`train_toy_autoencoder` to reconstruct toy images from slightly noised copies (mean
  squared error; x-flip augmentation). It never sees a class label, so its features are not
  class-discriminative by construction: they must describe colours, layout, backgrounds and
  shapes alike, everything a decoder needs. It does not share the classifier's objective, its
  architecture or its seed (seed 1). The decoder is thrown away after training; the encoder
  ships in ``data/toy_autoencoder/`` (fp16 safetensors, ≈ 0.2 MB), made by
  ``python -m hdit_edu.toy_autoencoder`` (one CPU thread, 600 steps, about 1.5 minutes on an idle core).
* :func:`autoencoder_features` — standardised 64-D features of images in [-1, 1] (computed
  directly in float32, not through clean-fid), :func:`autoencoder_test_features` those of the
  held-out test split, :func:`fid_ae` the Fréchet distance between them: the protocol's
  ``fid_ae`` (:class:`hdit_edu.protocol.EvalProtocol`'s ``fid_ae`` option).

Floors at the protocol's n (``data/README.md``): held-out real images against the test split
score near 0; Gaussian noise scores far above any sample.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .data import ResumableSampler, step_generator
from .evaluation import frechet_distance
from .toy import MissingWeightsError, ToyDataset

TOY_AUTOENCODER_DIR = Path(__file__).resolve().parent.parent / "data" / "toy_autoencoder"
FEATURE_DIM = 64


class ToyEncoder(nn.Module):
    """Images (B, 3, 32, 32) in [-1, 1] → raw features (B, 64); with the stored per-feature
    mean and std, :meth:`features` standardises them."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 64), feature_dim: int = FEATURE_DIM):
        super().__init__()
        self.config = dict(widths=list(widths), feature_dim=feature_dim)
        layers, channels = [], 3
        for width in widths:
            layers += [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.GELU()]
            channels = width
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        self.side = 32 // 2 ** len(widths)
        self.embed = nn.Linear(channels * self.side**2, feature_dim)
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (32, 32):
            images = F.interpolate(
                images, size=(32, 32), mode="bilinear", antialias=True, align_corners=False
            )
        return self.embed(self.trunk(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return (self(images) - self.feature_mean) / self.feature_std


class _Decoder(nn.Module):
    """The mirror of :class:`ToyEncoder`, used only while training."""

    def __init__(self, encoder: ToyEncoder):
        super().__init__()
        widths = encoder.config["widths"]
        self.side, self.channels = encoder.side, widths[-1]
        self.embed = nn.Linear(encoder.config["feature_dim"], widths[-1] * encoder.side**2)
        layers = []
        for w_in, w_out in zip(widths[::-1], [*widths[::-1][1:], 3]):
            layers += [nn.GELU(), nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.embed(z).view(len(z), self.channels, self.side, self.side))


def train_toy_autoencoder(
    out_dir: str | Path | None = None,
    *,
    steps: int = 600,
    batch_size: int = 128,
    lr: float = 2e-3,
    noise_std: float = 0.1,
    seed: int = 1,
    train_size: int | None = None,
    log=print,
) -> tuple[ToyEncoder, dict]:
    """Train a denoising autoencoder on the toy train split (no labels; deterministic from
    ``seed`` on one CPU thread: seeded init, :class:`ResumableSampler` order, per-step
    generators), store the encoder's feature statistics over the train split and, with
    ``out_dir``, write the encoder as fp16 ``model.safetensors`` and ``config.json``.
    ``train_size``: fewer train images (quick checks)."""
    torch.manual_seed(seed)
    train = ToyDataset("train", 32, size=train_size)
    encoder = ToyEncoder()
    decoder = _Decoder(encoder)
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + np.cos(np.pi * s / steps))
    )
    sampler = ResumableSampler(len(train), seed=seed)
    history, start = [], time.time()
    for step in range(steps):
        images, _ = train.batch(sampler.batch_indices(step, batch_size))  # labels unused
        g = step_generator(seed, step)
        flip = torch.rand(len(images), generator=g) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
        noisy = images + noise_std * torch.randn(images.shape, generator=g)
        loss = F.mse_loss(decoder(encoder(noisy)), images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % 100 == 0:
            entry = {"step": step + 1, "loss": loss.item(), "seconds": round(time.time() - start, 1)}
            history.append(entry)
            if log:
                log(json.dumps(entry))
    encoder.eval().requires_grad_(False)
    # Round to fp16 first (the shipped precision), so the statistics match the shipped weights.
    encoder.load_state_dict({k: v.half().float() for k, v in encoder.state_dict().items()})
    with torch.no_grad():
        feats = torch.cat([encoder(train.batch(np.arange(i, min(i + 1024, len(train))))[0])
                           for i in range(0, len(train), 1024)]).double()  # fmt: skip
    encoder.feature_mean.copy_(feats.mean(0))
    encoder.feature_std.copy_(feats.std(0).clamp_min(1e-6))
    record = {
        "model": encoder.config,
        "objective": f"denoising autoencoder, MSE, input noise std {noise_std}, no labels",
        "seed": seed,
        "training": {"steps": steps, "batch_size": batch_size, "optimizer": f"Adam(lr={lr}), "
                     f"cosine to 0", "augmentation": "x-flip p=0.5", "torch": torch.__version__,
                     "threads": torch.get_num_threads()},  # fmt: skip
        "log": history,
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.half().contiguous() for k, v in encoder.state_dict().items()}
        save_file(state, out_dir / "model.safetensors")
        (out_dir / "config.json").write_text(json.dumps(record, indent=2) + "\n")
    return encoder, record


def load_toy_encoder(path: str | Path | None = None) -> ToyEncoder:
    """The shipped (or a given) encoder, float32, eval mode, frozen."""
    folder = Path(path) if path is not None else TOY_AUTOENCODER_DIR
    weights, config = folder / "model.safetensors", folder / "config.json"
    if not weights.is_file() or not config.is_file():
        raise MissingWeightsError(
            f"toy autoencoder not found: need {str(weights)!r} and {str(config)!r}; "
            "make them with `python -m hdit_edu.toy_autoencoder`"
        )
    model = ToyEncoder(**json.loads(config.read_text())["model"])
    model.load_state_dict({k: v.float() for k, v in load_file(weights).items()})
    return model.eval().requires_grad_(False)


_SHIPPED: dict[str, ToyEncoder] = {}
_TEST_FEATURES: dict[int, np.ndarray] = {}


@torch.no_grad()
def autoencoder_features(images: torch.Tensor, encoder: ToyEncoder | None = None,
                         batch_size: int = 512) -> np.ndarray:  # fmt: skip
    """Standardised autoencoder features (N, 64) of images (N, 3, H, W) in [-1, 1]."""
    if encoder is None:
        if "ae" not in _SHIPPED:
            _SHIPPED["ae"] = load_toy_encoder()
        encoder = _SHIPPED["ae"]
    images = torch.as_tensor(images).float().cpu()
    return torch.cat([encoder.features(images[i : i + batch_size])
                      for i in range(0, len(images), batch_size)]).double().numpy()  # fmt: skip


def autoencoder_test_features(resolution: int = 32) -> np.ndarray:
    """Autoencoder features of the whole held-out test split at ``resolution``, once per
    process."""
    if resolution not in _TEST_FEATURES:
        test = ToyDataset("test", resolution=resolution)
        _TEST_FEATURES[resolution] = autoencoder_features(test.batch(np.arange(len(test)))[0])
    return _TEST_FEATURES[resolution]


def fid_ae(images: torch.Tensor) -> float:
    """The Fréchet distance between ``images``' autoencoder features and the test split's."""
    return frechet_distance(autoencoder_features(images),
                            autoencoder_test_features(images.shape[-1]))  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(1)
    train_toy_autoencoder(sys.argv[1] if len(sys.argv) > 1 else TOY_AUTOENCODER_DIR)
