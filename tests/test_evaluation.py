"""Evaluation: FID / KID through clean-fid with the toy classifier offline; Inception errors."""

import json
import shutil

import numpy as np
import pytest
import scipy.linalg
import torch

from hdit_edu import evaluation as ev
from hdit_edu import toy
from hdit_edu.cli import main
from hdit_edu.toy import ToyDataset, make_toy_folder

N = 256  # images per folder: > 128 feature dims, so the covariances have full rank


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_toy_folder(tmp_path_factory.mktemp("fid") / "a", N, seed=1)


@pytest.fixture(scope="module")
def folder_features(folder):
    return ev.extract_features(folder, device="cpu")


def _fid_closed_form(a, b):
    """‖μa − μb‖² + Tr Σa + Tr Σb − 2 Tr (Σa Σb)^{1/2}, the last term from the eigenvalues of
    Σa^{1/2} Σb Σa^{1/2} (symmetric PSD, so its square root is well defined)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = scipy.linalg.sqrtm(cov_a).real
    eig = np.linalg.eigvalsh(root_a @ cov_b @ root_a).clip(min=0)
    return ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(eig).sum()


def _kid_closed_form(a, b):
    """Unbiased MMD² with k(x, y) = (xᵀy / d + 1)³ on the full sets (equal sizes), in float64
    (the features are float32; summing m² cubic kernel values in float32 loses ~1e-5)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d, m = a.shape[1], len(a)
    k = lambda x, y: (x @ y.T / d + 1) ** 3
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    off = lambda K: (K.sum() - np.trace(K)) / (m * (m - 1))
    return off(kaa) + off(kbb) - 2 * kab.mean()


def test_fid_of_a_folder_against_itself_is_zero(folder, folder_features):
    score = ev.fid_from_folders(folder, folder, device="cpu")
    scale = np.trace(np.cov(folder_features, rowvar=False))
    assert folder_features.shape == (N, 128) and scale > 10
    assert abs(score) <= 1e-6 * scale


def test_fid_and_kid_match_their_closed_forms(folder_features):
    other = ev.extract_features(ToyDataset("test", 32, size=N, seed=2), device="cpu")
    fid = ev.frechet_distance(folder_features, other)
    assert fid == pytest.approx(_fid_closed_form(folder_features, other), rel=1e-6)
    # one subset of all N images = the full-set unbiased estimate
    kid = ev.kernel_inception_distance(folder_features, other, num_subsets=1, max_subset_size=N)
    assert kid == pytest.approx(_kid_closed_form(folder_features, other), rel=1e-6, abs=1e-9)


def test_fid_and_kid_separate_different_class_sets():
    x, y = ToyDataset("test", 32, size=384, seed=5).batch(np.arange(384))
    first, second = x[y < 4], x[y >= 4]  # face ring plus cross | triangle diamond pair quad
    same = ToyDataset("test", 32, size=384, seed=6).batch(np.arange(384))[0]
    options = dict(device="cpu", kid_subsets=20)
    apart, alike = ev.metrics(first, second, **options), ev.metrics(x, same, **options)
    assert apart["fid"] > 50 > 2 > alike["fid"] > 0
    assert apart["kid"] > 1 > 0.05 > alike["kid"]


def test_generator_and_folder_give_the_same_features(folder, folder_features):
    images = ToyDataset("test", 32, size=N, seed=1).batch(np.arange(N))[0]
    asked = []

    def generate(batch_size):  # a model's sampler would go here; images in [-1, 1]
        start = sum(asked)
        asked.append(batch_size)
        return images[start : start + batch_size]

    score = ev.fid_from_generator(generate, folder, n=N, batch_size=100, device="cpu")
    assert asked == [100, 100, 56]  # no image generated beyond n
    assert abs(score) <= 1e-6 * np.trace(np.cov(folder_features, rowvar=False))


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")
def test_clean_fid_compute_fid_takes_the_toy_extractor(tmp_path):
    from cleanfid import fid as cleanfid

    folder = make_toy_folder(tmp_path, 136, seed=4)  # 136 > 128 features: full rank
    extractor = toy.ToyFeatureExtractor()
    big = torch.rand(2, 3, 299, 299) * 255  # what clean-fid hands a custom extractor
    assert extractor(big).shape == (2, 128)
    score = cleanfid.compute_fid(
        str(folder), str(folder), mode="clean", custom_feat_extractor=extractor,
        device=torch.device("cpu"), num_workers=0, batch_size=64, verbose=False,
    )  # fmt: skip
    assert abs(score) < 1e-6 * 128


def test_shipped_classifier_is_accurate_on_fresh_images():
    folder = toy.TOY_CLASSIFIER_DIR
    assert (folder / "model.safetensors").stat().st_size < 1_000_000
    record = json.loads((folder / "config.json").read_text())
    assert record["test_accuracy"] >= 0.95 and record["classes"] == list(ToyDataset.classes)
    x, y = ToyDataset("test", 32, size=512, seed=12345).batch(np.arange(512))
    assert toy.class_accuracy(x, y) >= 0.95
    assert toy.class_accuracy(x, (y + 1) % 8) <= 0.05  # wrong labels are caught
    x64, y64 = ToyDataset("test", 64, size=256, seed=54321).batch(np.arange(256))
    assert toy.class_accuracy(x64, y64) >= 0.95  # 64² is resized to the classifier's 32²


def test_classifier_training_is_deterministic():
    runs = [
        toy.train_toy_classifier(
            epochs=1, batch_size=32, train_size=128, test_size=64, seed=7, log=None
        )[0]
        for _ in range(2)
    ]
    for (name, a), b in zip(runs[0].state_dict().items(), runs[1].state_dict().values()):
        assert torch.equal(a, b), name


def test_inception_offline_is_a_clear_error(tmp_path, monkeypatch, folder):
    missing = tmp_path / "weights" / ev.INCEPTION_FILE
    monkeypatch.setenv("HDIT_EDU_INCEPTION", str(missing))
    with pytest.raises(ev.MissingWeightsError, match="Inception weights.*does not exist") as e:
        ev.inception_extractor(download=False)
    assert str(missing) in str(e.value) and ev.INCEPTION_URL in str(e.value)
    # a download that cannot connect (a refused local port) fails fast, leaves no file
    monkeypatch.setattr(ev, "INCEPTION_URL", "http://127.0.0.1:9/" + ev.INCEPTION_FILE)
    with pytest.raises(ev.MissingWeightsError, match="HDIT_EDU_INCEPTION"):
        ev.fid(folder, folder, extractor="inception", device="cpu")
    assert not any(missing.parent.iterdir())


def test_reference_stats_missing_and_bad_options(folder, monkeypatch):
    ref = ev.ReferenceStats("ffhq", 1024, "trainval70k")
    assert ref.path("clean").name == "ffhq_clean_trainval70k_1024.npz"
    if not ref.path("clean").exists():
        with pytest.raises(ev.MissingWeightsError, match="ffhq_clean_trainval70k_1024.npz"):
            ref.load("clean", download=False)
    with pytest.raises(ValueError, match="extractor='inception'"):
        ev.fid(folder, ref, extractor="toy")
    with pytest.raises(ValueError, match="mode='tensorflow'"):
        ev.fid(folder, folder, mode="tensorflow")
    with pytest.raises(ValueError, match="extractor must be one of"):
        ev.fid(folder, folder, extractor="vgg")
    with pytest.raises(ValueError, match="n .* is required"):
        ev.fid(lambda b: None, folder)
    with pytest.raises(ValueError, match="has no images"):
        ev.fid(folder, folder.parent / "nowhere")


def test_fid_cli_prints_fid_and_kid(folder, capsys, tmp_path):
    half = tmp_path / "half"
    shutil.copytree(folder, half)
    for name in ("face", "ring"):  # 3/4 of the images left: covariances stay full rank
        shutil.rmtree(half / name)
    assert main(["fid-folders", str(folder), str(half)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fid"] > 10 and set(out) == {"fid", "kid"}
