"""Data: image folders, the toy set, non-leaking augmentation, the resumable sampler."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hdit_edu import data, toy
from hdit_edu.cli import main
from hdit_edu.data import (
    AUG_DIM,
    Augment,
    AugParams,
    ImageFolderDataset,
    ResumableSampler,
    augment,
    step_generator,
)
from hdit_edu.toy import ToyDataset, make_toy_folder

# ------------------------------------------------------------------------------ image folders


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode="RGB").save(path)


def test_flat_folder_resize_and_center_crop(tmp_path):
    # 64 wide × 32 high: left half red, right half blue. Shorter side is already 32, so the
    # center crop keeps columns 16..47: 16 red columns then 16 blue ones.
    two = np.zeros((32, 64, 3), np.uint8)
    two[:, :32] = (255, 0, 0)
    two[:, 32:] = (0, 0, 255)
    _png(tmp_path / "a.png", two)
    # a solid 48×40 image is resized (shorter side 40 → 32) and stays that colour exactly
    _png(tmp_path / "b.jpg", np.full((40, 48, 3), (0, 255, 0), np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    ds = ImageFolderDataset(tmp_path, 32)
    assert len(ds) == 2 and ds.classes == [tmp_path.name] and ds.num_classes == 1
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and y == 0
    red, blue = torch.tensor([1.0, -1, -1]), torch.tensor([-1.0, -1, 1])
    assert torch.equal(x[:, :, :16], red[:, None, None].expand(3, 32, 16))
    assert torch.equal(x[:, :, 16:], blue[:, None, None].expand(3, 32, 16))
    green, _ = ds[1]
    assert green.shape == (3, 32, 32)
    assert (green - torch.tensor([-1.0, 1, -1])[:, None, None]).abs().max() < 2 / 255 + 1e-6


def test_class_subfolders_match_the_toy_pixels(tmp_path):
    root = make_toy_folder(tmp_path / "toy", 24, resolution=32, seed=3)
    ds = ImageFolderDataset(root, 32)  # auto-detected: no images directly in root
    toy_set = ToyDataset("test", 32, size=24, seed=3)
    assert ds.classes == sorted(toy.TOY_CLASSES) and len(ds) == 24
    for i in range(len(ds)):
        x, y = ds[i]
        k = int(ds.files[i].stem)  # make_toy_folder names files by toy index
        assert ds.classes[y] == toy_set.classes[toy_set.labels[k]]
        assert torch.equal(x, toy_set[k][0])  # PNG is lossless, no resize at 32
    flat = ImageFolderDataset(root, 16, class_subfolders=False)  # FFHQ-style: one set
    assert len(flat) == 24 and set(flat.targets) == {0}
    xb, yb = flat.batch([0, 5])
    assert xb.shape == (2, 3, 16, 16) and yb.tolist() == [0, 0]


def _corrupt_folder(tmp_path):
    make_toy_folder(tmp_path, 8, seed=1)
    good = sorted((tmp_path / "face").glob("*.png"))[0].read_bytes()
    (tmp_path / "face" / "000000_broken.png").write_bytes(b"this is not a png")
    (tmp_path / "face" / "000001_truncated.png").write_bytes(good[: len(good) // 2])
    return tmp_path


def test_corrupt_file_raise_names_the_file(tmp_path):
    ds = ImageFolderDataset(_corrupt_folder(tmp_path), 32, on_error="raise")
    bad = [i for i, p in enumerate(ds.files) if "broken" in p.name or "truncated" in p.name]
    assert len(bad) == 2
    for i in bad:
        with pytest.raises(ValueError, match=ds.files[i].name):
            ds[i]
    with pytest.raises(ValueError, match="broken.png"):
        ImageFolderDataset(tmp_path, 32, verify=True)


def test_corrupt_file_skip_counts_and_names_it(tmp_path):
    ds = ImageFolderDataset(_corrupt_folder(tmp_path), 32, on_error="skip")
    i = next(i for i, p in enumerate(ds.files) if "broken" in p.name)
    with pytest.warns(UserWarning) as caught:
        x, _ = ds[i]
    messages = " ".join(str(w.message) for w in caught)
    assert "000000_broken.png" in messages and "000001_truncated.png" in messages
    assert torch.equal(x, ds[i + 2][0])  # the next readable file (i + 1 is the truncated one)
    assert [p.name for p in ds.skipped] == ["000000_broken.png", "000001_truncated.png"]
    checked = ImageFolderDataset(tmp_path, 32, on_error="skip")
    with pytest.warns(UserWarning):
        skipped = checked.verify()
    assert len(skipped) == 2 and len(checked) == len(ds) - 2


def test_empty_folder_and_bad_arguments(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no images found in .*empty.*\.png, \.jpg"):
        ImageFolderDataset(tmp_path / "empty", 32)
    with pytest.raises(ValueError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing", 32)
    with pytest.raises(ValueError, match=r"on_error='ignore'.*'raise', 'skip'"):
        ImageFolderDataset(tmp_path / "empty", 32, on_error="ignore")


# ---------------------------------------------------------------------------------- toy set


def test_toy_set_is_deterministic_from_the_seed():
    a = ToyDataset("test", 32, size=256, seed=0)
    toy._toy_arrays.cache_clear()  # really draw it again
    b = ToyDataset("test", 32, size=256, seed=0)
    assert a.images is not b.images
    assert a.images.tobytes() == b.images.tobytes() and np.array_equal(a.labels, b.labels)
    c = ToyDataset("test", 32, size=256, seed=1)
    train = ToyDataset("train", 32, size=256, seed=0)
    assert np.abs(a.images.astype(int) - c.images).mean() > 20
    assert np.abs(a.images.astype(int) - train.images).mean() > 20


def test_toy_set_size_balance_shapes_and_range():
    assert toy.TOY_SIZES["train"] >= 10_000
    ds = ToyDataset()
    assert len(ds) == toy.TOY_SIZES["train"] and ds.num_classes == 8 >= 5
    assert np.bincount(ds.labels).tolist() == [len(ds) // 8] * 8  # exactly balanced
    x, y = ds.batch(np.arange(64))
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.9 and x.max() > 0.9
    assert torch.equal(x[5], ds[5][0]) and y[5] == ds[5][1]
    # 64² draws the same scenes: downsampled, it is close to the 32² rendering
    big, small = ToyDataset("test", 64, size=64), ToyDataset("test", 32, size=64)
    x64 = F.avg_pool2d(big.batch(np.arange(64))[0], 2)
    assert (x64 - small.batch(np.arange(64))[0]).abs().mean() < 0.03
    with pytest.raises(ValueError, match="split='val'"):
        ToyDataset("val")


def test_make_toy_cli(tmp_path):
    assert main(["data", "make-toy", str(tmp_path / "out"), "--n", "16", "--resolution", "32"]) == 0
    files = sorted((tmp_path / "out").rglob("*.png"))
    assert len(files) == 16 and Image.open(files[0]).size == (32, 32)
    assert main(["data", "preview", str(tmp_path / "grid.png"), "--per-class", "3"]) == 0
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (8 * 64, 3 * 64, 3)  # 8 class rows × 3 images, 32 px shown at 2×


def test_prepare_writes_the_pixels_training_reads_and_continues_a_cut_short_run(tmp_path):
    """``hdit-edu prepare`` (issue 17): the prepared folder, read at the same resolution, gives
    the same tensors and classes as the original, bit for bit (resize once + lossless PNG)."""
    rng = np.random.default_rng(0)
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i, (cls, size, suffix) in enumerate(
        [
            ("cat", (40, 30), ".jpg"),
            ("cat", (16, 16), ".png"),
            ("dog", (30, 52), ".png"),
            ("dog", (64, 64), ".jpeg"),
        ]  # fmt: skip
    ):
        (src / cls / "deep").mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8), mode="RGB")
        image.save(src / cls / "deep" / f"{i}{suffix}")
    assert main(["prepare", str(src), str(dst), "--resolution", "16x24"]) == 0
    before, after = ImageFolderDataset(src, (16, 24)), ImageFolderDataset(dst, (16, 24))
    assert after.classes == before.classes == ["cat", "dog"]
    assert [p.relative_to(dst) for p in after.files] == [
        p.relative_to(src).with_suffix(".png") for p in before.files
    ]
    assert torch.equal(after.batch(range(4))[0], before.batch(range(4))[0])
    assert torch.equal(after.batch(range(4))[1], before.batch(range(4))[1])
    for path in after.files:  # at the target size already, stored without compression
        assert Image.open(path).size == (24, 16) and path.stat().st_size > 16 * 24 * 3
    # a cut-short run (one file missing) continues: only that file is written, the same bytes
    first = after.files[0]
    data_bytes = first.read_bytes()
    first.unlink()
    done = data.prepare_image_folder(src, dst, (16, 24), workers=1)
    assert done == {"images": 4, "written": 1, "skipped": 3}
    assert first.read_bytes() == data_bytes
    # two sources that would become one file are named
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "cat" / "deep" / "0.png")
    with pytest.raises(ValueError, match="would both become"):
        data.prepare_image_folder(src, tmp_path / "again", 16)


# ----------------------------------------------------------------------------- augmentation


def _random_images(b=64, size=16, seed=0):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_p_zero_is_identity():
    x = _random_images()
    out, cond = Augment(0.0)(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, x) and cond.shape == (64, AUG_DIM) and not cond.any()


def test_flips_and_translation_are_exactly_what_aug_cond_says():
    x = _random_images(b=256, size=16)
    aug = Augment(1.0, kinds=("xflip", "yflip", "translate"))
    out, cond = aug(x, generator=torch.Generator().manual_seed(1))
    unit = aug.a_trans * 16
    assert set(cond[:, 0].tolist()) == {0.0, 1.0} and set(cond[:, 1].tolist()) == {0.0, 1.0}
    assert not cond[:, 2:7].any()  # no scale / rotation / anisotropy drawn
    shifts = cond[:, 7:] * unit
    assert torch.equal(shifts, shifts.round()) and shifts.abs().max() > 0
    for i in range(len(x)):
        y = out[i]
        if cond[i, 0]:  # undo in reverse order: x-flip, y-flip, then the shift
            y = y.flip(2)
        if cond[i, 1]:
            y = y.flip(1)
        tx, ty = int(shifts[i, 0]), int(shifts[i, 1])
        # out[r, c] = in[r − ty, c − tx] wherever the source is inside the image
        rows = slice(max(ty, 0), 16 + min(ty, 0))
        cols = slice(max(tx, 0), 16 + min(tx, 0))
        src_rows = slice(max(-ty, 0), 16 + min(-ty, 0))
        src_cols = slice(max(-tx, 0), 16 + min(-tx, 0))
        assert torch.equal(y[:, rows, cols], x[i][:, src_rows, src_cols]), i


def test_translation_mirrors_the_border():
    x = torch.arange(5.0).view(1, 1, 1, 5).expand(1, 1, 5, 5)
    out = data.translate_integer(x, torch.tensor([2]), torch.tensor([0]))
    assert out[0, 0, 0].tolist() == [2.0, 1.0, 0.0, 1.0, 2.0]  # content moved right by 2


def test_rotation_and_scale_follow_aug_cond():
    x = _random_images(b=2, size=16)
    aug, z = Augment(1.0), torch.zeros(2)
    quarter = AugParams(z, z, z, torch.full((2,), math.pi / 2), z, z, z, z, 2.0)
    out = aug.apply(x, quarter)
    assert (out - torch.rot90(x, 1, (2, 3))).abs().max() < 1e-5  # counter-clockwise by θ
    cond = quarter.cond()
    assert torch.allclose(cond[:, 3], torch.tensor(-1.0)) and torch.allclose(
        cond[:, 4], torch.tensor(1.0)
    )
    # scale: log_scale = 5 with a_scale = 2^0.2 magnifies by 2 — a centred 4×4 square becomes 8×8
    sq = torch.full((1, 1, 16, 16), -1.0)
    sq[..., 6:10, 6:10] = 1
    one = torch.ones(1)
    big = aug.apply(
        sq, AugParams(one, one * 0, one * 5, one * 0, one * 0, one * 0, one * 0, one * 0, 2.0)
    )
    assert (big > 0).sum().item() == 64 and (big - big.flip(3)).abs().max() < 1e-5
    # anisotropic stretch by t = 2 along x (φ = 0): the 4×4 square becomes 8 wide, 2 high
    # (rows 4..11: outside them the mirrored border shows reflected copies)
    wide = data.warp_affine(sq, one, one * 0, one * 2, one * 0)[0, 0, 4:12] > 0
    assert wide.sum(1).max() == 8 and wide.any(1).sum() == 2 and wide.sum() == 16


def test_augment_draws_with_probability_p_and_is_seeded():
    x = _random_images(b=4000, size=8)
    out, cond = augment(x, 0.5, generator=torch.Generator().manual_seed(2))
    out2, cond2 = augment(x, 0.5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(out, out2) and torch.equal(cond, cond2)
    # a drawn flip is a fair coin: flips happen with probability p/2 = 0.25 (4000 draws: ±0.03)
    assert abs(cond[:, 1].mean().item() - 0.25) < 0.03
    assert abs((cond[:, 3:5] != 0).any(1).float().mean().item() - 0.5) < 0.03  # rotations
    # k-diffusion's dataset x-flip: always drawn (xflip_p=1) → flipped half the time
    _, c = augment(x, 0.12, generator=torch.Generator().manual_seed(3), xflip_p=1.0)
    assert abs(c[:, 0].mean().item() - 0.5) < 0.03
    one, c1 = Augment(1.0)(x[0])
    assert one.shape == x[0].shape and c1.shape == (AUG_DIM,)
    with pytest.raises(ValueError, match="p must be in"):
        Augment(1.5)
    with pytest.raises(ValueError, match="unknown augmentation kinds"):
        Augment(0.1, kinds=("xflip", "cutout"))


def test_augmenting_a_batch_equals_augmenting_each_image_and_leaves_undrawn_ones_alone():
    """apply works on the drawn images only (issue 17: the trainer augments 1024² batches in its
    main process); the result is the same as applying each image's own draw to it alone, and an
    image with nothing drawn comes back bit for bit."""
    x = _random_images(b=64, size=16)
    aug = Augment(0.3)
    params = aug.draw(64, 16, generator=torch.Generator().manual_seed(5))
    out = aug.apply(x, params)
    fields = ("xflip", "yflip", "log_scale", "angle", "aniso", "aniso_angle", "tx", "ty")
    untouched = (params.cond() == 0).all(1)
    assert 5 < untouched.sum() < 59  # both kinds of image are in the batch
    warped = (params.cond()[:, 2:7] != 0).any(1)
    for k in range(64):
        alone = AugParams(*(getattr(params, f)[k : k + 1] for f in fields), params.trans_unit)
        if warped[k]:  # grid_sample's matrix inverted batched vs alone: float32 rounding
            torch.testing.assert_close(out[k : k + 1], aug.apply(x[k : k + 1], alone))
        else:  # gathers and flips: exact
            assert torch.equal(out[k : k + 1], aug.apply(x[k : k + 1], alone)), k
        if untouched[k]:
            assert torch.equal(out[k], x[k])
    zero = AugParams(*(getattr(params, f)[:4] * 0 for f in fields), params.trans_unit)
    batch = x[:4]
    assert aug.apply(batch, zero) is batch  # nothing drawn: not even a copy


# --------------------------------------------------------------------------------- sampler


def test_sampler_epochs_are_permutations():
    s = ResumableSampler(50, seed=4)
    first, second = s.indices(0, 50), s.indices(50, 50)
    assert sorted(first.tolist()) == list(range(50)) == sorted(second.tolist())
    assert not np.array_equal(first, second) and s.epoch_of(49) == 0 and s.epoch_of(50) == 1
    assert not np.array_equal(first, ResumableSampler(50, seed=5).indices(0, 50))


def test_sampler_resumes_exactly():
    stream = list(itertools.islice(ResumableSampler(37, seed=9), 120))
    interrupted = ResumableSampler(37, seed=9)
    head = list(itertools.islice(interrupted, 53))  # killed after 53 indices
    state = interrupted.state_dict()
    restored = ResumableSampler(37, seed=9)
    restored.load_state_dict(state)
    tail = list(itertools.islice(restored, 67))
    assert state["position"] == 53 and head + tail == stream
    batches = [ResumableSampler(37, seed=9).batch_indices(k, 8).tolist() for k in range(15)]
    assert sum(batches, []) == stream[:120]
    with pytest.raises(ValueError, match="seed=1"):
        ResumableSampler(37, seed=10).load_state_dict(dict(state, seed=1))


def test_two_ranks_shard_the_same_permutation():
    size = 11  # odd: rank 0 gets 6 of epoch 0, rank 1 gets 5
    one = ResumableSampler(size, seed=3).indices(0, 40)
    r0 = ResumableSampler(size, seed=3, rank=0, world_size=2).indices(0, 20)
    r1 = ResumableSampler(size, seed=3, rank=1, world_size=2).indices(0, 20)
    assert np.array_equal(np.stack([r0, r1], 1).reshape(-1), one)  # interleaved = one stream
    epoch0 = set(r0[:6].tolist()) | set(r1[:5].tolist())
    assert epoch0 == set(range(size)) and not set(r0[:6].tolist()) & set(r1[:5].tolist())
    with pytest.raises(ValueError, match="rank=2"):
        ResumableSampler(size, rank=2, world_size=2)


def test_batch_stream_feeds_a_dataloader_from_any_step():
    ds = ToyDataset("test", 32, size=40, seed=0)
    sampler = ResumableSampler(len(ds), seed=1)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler.batches(6, start_step=5))
    x, y = next(iter(loader))
    xb, yb = ds.batch(sampler.batch_indices(5, 6))
    assert torch.equal(x, xb) and torch.equal(y, yb)


def test_step_generator_is_a_pure_function_of_its_arguments():
    draw = lambda *a: torch.rand(4, generator=step_generator(*a))
    assert torch.equal(draw(0, 10), draw(0, 10))
    assert not torch.equal(draw(0, 10), draw(0, 11))
    assert not torch.equal(draw(0, 10, 0), draw(0, 10, 1))
    assert not torch.equal(draw(0, 10, 0, 0), draw(0, 10, 0, 1))


def test_a_symlink_to_the_data_root_or_a_class_is_not_a_class_of_its_own(tmp_path):
    """A real symlink inside an ImageFolder data set that points to the data root (or to a
    sibling class folder) would list the same images again as an extra class: it is skipped
    with a warning naming it, and the classes and files are those of the real folders."""
    root = tmp_path / "data"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(root / name / "a.png")
    plain = ImageFolderDataset(root, 8)
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "twin").symlink_to(root / "cat", target_is_directory=True)
    with pytest.warns(UserWarning, match="links to") as caught:
        linked = ImageFolderDataset(root, 8)
    assert {n for n in ("'loop'", "'twin'") for w in caught if n in str(w.message)} == {"'loop'", "'twin'"}
    assert linked.classes == plain.classes == ["cat", "dog"]
    assert linked.files == plain.files and linked.targets == plain.targets == [0, 1]
