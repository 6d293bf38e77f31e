"""The second toy feature space (issue 28): a denoising autoencoder's encoder, trained without
labels. It is deterministic, its FID has a floor near 0 on real images and is far above on
noise, and its features are not the classifier's: they separate the classes less."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hdit_edu import evaluation, toy
from hdit_edu import toy_autoencoder as ae
from hdit_edu.protocol import measure, toy_test_features
from hdit_edu.toy import ToyDataset

pytestmark = pytest.mark.skipif(
    not (ae.TOY_AUTOENCODER_DIR / "model.safetensors").is_file(),
    reason="data/toy_autoencoder is not built",
)


def test_shipped_weights_are_small_and_labelled():
    folder = ae.TOY_AUTOENCODER_DIR
    assert (folder / "model.safetensors").stat().st_size < 1_000_000
    record = json.loads((folder / "config.json").read_text())
    assert "no labels" in record["objective"] and record["seed"] != 0


def test_training_is_deterministic():
    runs = [ae.train_toy_autoencoder(steps=3, batch_size=16, train_size=64, seed=5, log=None)[0]
            for _ in range(2)]  # fmt: skip
    for (name, a), b in zip(runs[0].state_dict().items(), runs[1].state_dict().values()):
        assert torch.equal(a, b), name


def test_features_are_deterministic_and_standardised():
    x, _ = ToyDataset("train", 32).batch(np.arange(2048))
    a, b = ae.autoencoder_features(x), ae.autoencoder_features(x)
    assert a.shape == (2048, ae.FEATURE_DIM) and np.array_equal(a, b)
    # standardised on the train split: unit scale on its images
    assert abs(a.mean()) < 0.1 and 0.8 < a.std() < 1.2


def test_floor_on_real_images_and_noise():
    """At the protocol's n = 2,048: held-out real (train) images against the test split sit near
    the floor; Gaussian noise is far above (FLOOR_* in data/README.md)."""
    x, _ = ToyDataset("train", 32).batch(np.arange(2048))
    real = ae.fid_ae(x)
    noise = ae.fid_ae(torch.randn(2048, 3, 32, 32, generator=torch.Generator().manual_seed(0))
                      .clamp(-1, 1))  # fmt: skip
    assert real < 1.0, real
    assert noise > 100 * real and noise > 30, (real, noise)


def _nearest_centroid(train_f, train_y, test_f, test_y) -> float:
    centroids = np.stack([train_f[train_y == c].mean(0) for c in range(8)])
    d = ((test_f[:, None, :] - centroids[None]) ** 2).sum(-1)
    return float((d.argmin(1) == test_y).mean())


def test_not_the_classifier():
    """The label-free features separate the classes less than the classifier's: nearest-centroid
    accuracy on the test split, centroids from 2,048 train images."""
    train = ToyDataset("train", 32)
    xtr, ytr = train.batch(np.arange(2048))
    test = ToyDataset("test", 32)
    xte, yte = test.batch(np.arange(len(test)))
    ytr, yte = ytr.numpy(), yte.numpy()
    cls = _nearest_centroid(evaluation.extract_features(xtr, extractor="toy", batch_size=256),
                            ytr, toy_test_features(32), yte)  # fmt: skip
    auto = _nearest_centroid(ae.autoencoder_features(xtr), ytr, ae.autoencoder_test_features(32),
                             yte)  # fmt: skip
    print(f"nearest-centroid accuracy: classifier {cls:.3f}, autoencoder {auto:.3f}")
    assert cls > 0.95 and auto < 0.5 and auto < cls - MARGIN, (cls, auto)


MARGIN = 0.4  # measured: classifier 0.989, autoencoder 0.230 (chance 0.125)


def test_protocol_measures_fid_ae_only_when_asked():
    x, y = ToyDataset("train", 32).batch(np.arange(256))
    plain = measure(x, y)
    both = measure(x, y, fid_ae=True)
    assert "fid_ae" not in plain and plain["fid"] == both["fid"]
    assert both["fid_ae"] == pytest.approx(ae.fid_ae(x), rel=1e-12)
    assert toy.class_accuracy(x, y) == both["class_accuracy"]
