"""Data: image folders, non-leaking augmentation, a resumable order, image files (§5.1).

The paper trains on ImageNet (class sub-folders) and FFHQ (one flat set of faces), on RGB
pixels scaled to [-1, 1]. "For runs on small datasets, we apply a non-leaking augmentation
scheme akin to (Karras et al., 2020a)" (§5.1; Table 6: augmentation probability 0.12 for
FFHQ-1024², 0 for ImageNet). This module holds the pieces a training run reads from:

* :class:`ImageFolderDataset` — an FFHQ-style flat folder or an ImageNet-style folder of class
  sub-folders, resized (shorter side) and center-cropped to the model resolution;
  :func:`prepare_image_folder` (``hdit-edu prepare``) does that once, into uncompressed PNGs
  that load ~3× faster than FFHQ's (data loading at 1024², issue 17).
* (the shipped toy set is :class:`hdit_edu.toy.ToyDataset`, with the same ``len`` /
  ``dataset[i]`` / ``batch(indices)`` protocol);
* :class:`Augment` / :func:`augment` — the non-leaking augmentation: each transform is drawn
  with probability ``p`` and the model is *told* what was drawn through the 9-number
  conditioning vector ``aug_cond`` that its mapping network consumes (``ModelConfig.aug_dim``
  = 9). Sampling passes ``aug_cond = 0`` ("not augmented"), so augmentations cannot leak into
  the samples. The vector's layout follows k-diffusion's ``KarrasAugmentationPipeline``::

      aug_cond = [x-flip, y-flip, log_{a_scale}(scale), cos(θ) − 1, sin(θ),
                  a·cos(φ), a·sin(φ), t_x, t_y]

  (θ rotation, anisotropic stretch by a_aniso^a along direction φ, translation (t_x, t_y) in
  units of ``a_trans × size`` pixels). Zero means "identity" for every entry.
* :class:`ResumableSampler` — the order in which a run reads the data: a pure function of
  (seed, step, rank), so a checkpoint only needs the step to restore the data position
  exactly, and DDP ranks read disjoint shards of the same permutation.
* pixel conventions and image files: :func:`to_model_range`, :func:`to_uint8`,
  :func:`save_png`, :func:`save_grid` (a PNG grid of samples).

The trainer's view (one step)::

    sampler = ResumableSampler(len(dataset), seed=cfg.seed, rank=rank, world_size=world)
    indices = sampler.batch_indices(step, batch_size)          # this rank's share of the step
    images, classes = dataset.batch(indices)                   # (B, 3, H, W) in [-1, 1], (B,)
    images, aug_cond = Augment(p)(images, generator=step_generator(cfg.seed, step, rank))
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".ppm", ".tif", ".tiff")
ON_ERROR_CHOICES = ("raise", "skip")
AUG_KINDS = ("xflip", "yflip", "scale", "rotate", "aniso", "translate")
AUG_DIM = 9  # the length of aug_cond (ModelConfig.aug_dim)


# --------------------------------------------------------------------------------------------
# Pixel conventions: uint8 [0, 255] on disk, float [-1, 1] in the model.
# --------------------------------------------------------------------------------------------


def to_model_range(images_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images (…, H, W, 3) or (…, 3, H, W) → float32 in [-1, 1]: x = u / 127.5 − 1."""
    x = torch.as_tensor(np.array(images_uint8))  # a copy: the source may be read-only
    return x.to(torch.float32) / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] → uint8 in [0, 255] (clamped, rounded): what a PNG stores."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def save_png(image: torch.Tensor, path: str | Path) -> None:
    """Write one (3, H, W) image in [-1, 1] as an RGB PNG."""
    array = to_uint8(image).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(array, mode="RGB").save(path)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Save images (N, C, H, W) in [-1, 1] as one PNG grid (``nrow`` images per row), written
    to a temporary file and renamed into place."""
    # Lazy: importing torchvision costs seconds (it pulls in torch._dynamo); only this needs it.
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, math.ceil(math.sqrt(len(images))))
    tmp = path.with_name(f".tmp-{path.name}")
    save_image((images.float() + 1) / 2, tmp, nrow=nrow, padding=2, format="png")
    os.replace(tmp, path)
    return path


def _resize_center_crop(image: Image.Image, resolution: int | tuple[int, int]) -> Image.Image:
    """Resize (antialiased bicubic) so the image just covers ``resolution`` = n or (H, W) — for
    a square: its shorter side becomes n — then center-crop to it."""
    height, width = check_resolution(resolution)
    w, h = image.size
    scale = max(width / w, height / h)
    if scale != 1:
        new = (max(width, round(w * scale)), max(height, round(h * scale)))
        image = image.resize(new, resample=Image.BICUBIC)
        w, h = image.size
    left, top = (w - width) // 2, (h - height) // 2
    return image.crop((left, top, left + width, top + height))


# Pillow's integer modes wider than 8 bits and their full scale (16-bit PNG/TIFF: 65535).
_WIDE_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}


def _to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB image at the right scale. Pillow's ``convert("RGB")`` clips 16-bit
    grayscale (mode ``I;16`` / ``I``) at 255 instead of scaling it (a 16-bit PNG would turn
    almost white), and treats float images (mode ``F``) the same way: those are rescaled
    here (16-bit: value / 257; float: [0, 1] → [0, 255])."""
    if image.mode in _WIDE_MODES or image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            scale = 255.0 if array.size and array.max() <= 1.0 else 1.0
        else:
            scale = 255.0 / _WIDE_MODES[image.mode]
        gray = np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    return image.convert("RGB")


def _open_rgb(path: Path) -> Image.Image:
    """Open and fully decode an image as RGB; any failure → ValueError naming the file."""
    try:
        with Image.open(path) as image:
            return _to_rgb(image)  # decodes the whole file: truncation fails here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image file {str(path)!r}: {e}") from e


def check_choice(name: str, value, allowed: Sequence) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; allowed: {tuple(allowed)}")


def check_resolution(resolution) -> tuple[int, int]:
    """An image size ``n`` (n × n) or ``(height, width)`` → ``(height, width)``; anything else
    is a ``ValueError``."""
    sides = tuple(resolution) if isinstance(resolution, (tuple, list)) else (resolution,) * 2
    if len(sides) != 2 or not all(
        isinstance(side, int) and not isinstance(side, bool) and side >= 1 for side in sides
    ):
        raise ValueError(
            f"resolution must be a positive int or (height, width) of positive ints, "
            f"got {resolution!r}"
        )
    return sides


# --------------------------------------------------------------------------------------------
# Image folders (FFHQ: flat; ImageNet: one sub-folder per class)
# --------------------------------------------------------------------------------------------


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images under ``root``, resized (to cover it) and center-cropped to ``resolution`` (n or
    (height, width)).

    ``class_subfolders``: ``True`` — each direct sub-folder of ``root`` is a class (ImageNet
    layout; images anywhere below it); ``False`` — one unconditional set of every image below
    ``root`` at any depth (FFHQ: pass ``False``, its 1000-image chunk folders are not classes);
    ``None`` (default) — class sub-folders if ``root`` holds no images itself, else flat.

    ``on_error``: what a corrupt or unreadable file does when it is read: ``"raise"`` — a
    ``ValueError`` naming the file; ``"skip"`` — a warning naming the file, the file is
    listed in ``self.skipped`` and the next readable image is returned instead. Files are
    checked when read (lazily: opening 70k large images up front is slow); call
    :meth:`verify` (or pass ``verify=True``) to check every file now and drop bad ones.

    ``dataset[i]`` → ``(image, class)``: float32 (3, H, W) in [-1, 1] and an int (0 for a flat
    folder). ``.classes`` lists the class names (sub-folder names, sorted); ``.empty_classes``
    the sub-folders left out because they hold no images. 16-bit images are read at their full
    scale (:func:`_to_rgb`).
    """

    def __init__(
        self,
        root: str | Path,
        resolution: int | tuple[int, int],
        *,
        class_subfolders: bool | None = None,
        on_error: str = "raise",
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        verify: bool = False,
    ):
        check_resolution(resolution)
        check_choice("on_error", on_error, ON_ERROR_CHOICES)
        self.root = Path(root)
        self.resolution = resolution
        self.on_error = on_error
        self.extensions = tuple(
            e.lower() if e.startswith(".") else "." + e.lower() for e in extensions
        )
        if not self.root.is_dir():
            raise ValueError(f"image folder {str(self.root)!r} does not exist or is not a folder")

        def images_below(folder: Path, recursive: bool) -> list[Path]:
            found = folder.rglob("*") if recursive else folder.iterdir()
            return sorted(p for p in found if p.is_file() and p.suffix.lower() in self.extensions)

        if class_subfolders is None:
            class_subfolders = not images_below(self.root, recursive=False)
        self.files: list[Path] = []
        self.targets: list[int] = []
        self.empty_classes: list[Path] = []  # class sub-folders without images (left out)
        if class_subfolders:
            folders = [p for p in sorted(self.root.iterdir()) if p.is_dir() and self._own(p)]
            self.empty_classes = [p for p in folders if not images_below(p, recursive=True)]
            folders = [p for p in folders if p not in self.empty_classes]
            self.classes = [p.name for p in folders]
            for index, folder in enumerate(folders):
                files = images_below(folder, recursive=True)
                self.files += files
                self.targets += [index] * len(files)
        else:
            self.classes = [self.root.name]
            self.files = images_below(self.root, recursive=True)
            self.targets = [0] * len(self.files)
        if not self.files:
            raise ValueError(
                f"no images found in {str(self.root)!r} (class_subfolders={class_subfolders}); "
                f"accepted extensions: {', '.join(self.extensions)}"
            )
        self.skipped: list[Path] = []
        if verify:
            self.verify()

    def _own(self, folder: Path) -> bool:
        """Whether the class sub-folder ``folder`` holds images of its own. A symlink to the
        data root (or to a folder above it) would list every image again as one more class,
        and a symlink to a sibling class folder would duplicate that class: both are skipped
        with a warning naming them."""
        real, root = folder.resolve(), self.root.resolve()
        if real == root or real in root.parents or (folder.is_symlink() and root in real.parents):
            warnings.warn(
                f"image folder {str(self.root)!r}: {folder.name!r} links to {str(real)!r}, "
                "whose images are already in the data set; it is not a class of its own (skipped)",
                stacklevel=3,
            )
            return False
        return True

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index: int) -> torch.Tensor:
        image = _resize_center_crop(_open_rgb(self.files[index]), self.resolution)
        return to_model_range(np.asarray(image)).permute(2, 0, 1)

    def _report_bad(self, index: int, error: ValueError) -> None:
        path = self.files[index]
        if self.on_error == "raise":
            raise error
        if path not in self.skipped:
            self.skipped.append(path)
            warnings.warn(
                f"skipping unreadable image {str(path)!r} ({len(self.skipped)} skipped so far)",
                stacklevel=3,
            )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for offset in range(len(self.files)):
            i = (index + offset) % len(self.files)
            try:
                return self._load(i), self.targets[i]
            except ValueError as e:
                self._report_bad(i, e)
        raise ValueError(f"no readable image in {str(self.root)!r}; unreadable: {self.skipped}")

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack ``dataset[i]`` for ``i`` in ``indices``: ((B, 3, H, W), LongTensor (B,))."""
        items = [self[int(i)] for i in indices]
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])

    def verify(self) -> list[Path]:
        """Read every file now. ``on_error="raise"``: the first bad file raises; ``"skip"``:
        bad files are removed from the data set, listed in ``self.skipped`` and returned."""
        keep = []
        for i, path in enumerate(self.files):
            try:
                _open_rgb(path)
                keep.append(i)
            except ValueError as e:
                self._report_bad(i, e)
        self.files = [self.files[i] for i in keep]
        self.targets = [self.targets[i] for i in keep]
        if not self.files:
            raise ValueError(f"no readable image in {str(self.root)!r}; unreadable: {self.skipped}")
        return list(self.skipped)


PREPARED_PNG_LEVEL = 0  # zlib level of prepared files: stored, not compressed (fast to decode)


def _prepare_one(job: tuple[Path, Path, tuple[int, int]]) -> None:
    source, target, resolution = job
    image = _resize_center_crop(_open_rgb(source), resolution)
    tmp = target.with_name(f".tmp-{target.name}")
    image.save(tmp, format="PNG", compress_level=PREPARED_PNG_LEVEL)
    os.replace(tmp, target)


def prepare_image_folder(
    source: str | Path,
    target: str | Path,
    resolution: int | tuple[int, int],
    *,
    class_subfolders: bool | None = None,
    workers: int = 0,
) -> dict:
    """Resize and center-crop every image of ``source`` once, exactly as
    :class:`ImageFolderDataset` does when it reads them, into ``target`` as uncompressed PNGs
    (``hdit-edu prepare``, issue 17).

    An :class:`ImageFolderDataset` of ``target`` at ``resolution`` then returns the same
    tensors as one of ``source`` (PNG is lossless), without the resize and with a fraction of
    the decoding time: a photograph-like 1024² PNG decodes in ~34 ms on a CPU core, a stored
    one in ~8 ms, JPEG ~12 ms; the loader reads ~3× more images/s (``benchmarks/README.md``).
    The cost is disk: 3 MiB per 1024² image (FFHQ's 70k: 210 GB).

    The layout is kept (each file's path relative to ``source``, suffix ``.png``), so class
    sub-folders stay classes. Files already in ``target`` are kept (a cut-short run continues
    where it stopped; each file is written to a temporary name and renamed). ``workers`` > 0
    decodes in that many processes. Returns ``{"images", "written", "skipped"}``."""
    resolution = check_resolution(resolution)
    dataset = ImageFolderDataset(source, resolution, class_subfolders=class_subfolders)
    root, target = dataset.root, Path(target)
    if target.resolve() == root.resolve():
        raise ValueError(f"prepare: the target folder must differ from the source ({root})")
    jobs, seen = [], {}
    for path in dataset.files:
        out = target / path.relative_to(root).with_suffix(".png")
        if out in seen:
            raise ValueError(
                f"prepare: {str(seen[out])!r} and {str(path)!r} would both become {str(out)!r}"
            )
        seen[out] = path
        if not out.exists():
            jobs.append((path, out, resolution))
    for folder in {out.parent for _, out, _ in jobs}:
        folder.mkdir(parents=True, exist_ok=True)
    if workers > 0:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_prepare_one, jobs, chunksize=16))
    else:
        for job in jobs:
            _prepare_one(job)
    return {"images": len(dataset), "written": len(jobs), "skipped": len(dataset) - len(jobs)}


# --------------------------------------------------------------------------------------------
# Non-leaking augmentation (Karras et al. 2020a; k-diffusion's KarrasAugmentationPipeline)
# --------------------------------------------------------------------------------------------


@dataclass
class AugParams:
    """The drawn augmentation of a batch (one row per image); :meth:`cond` is ``aug_cond``.

    Applied to the image in this order (as the reference composes its matrix): translate by
    (tx, ty) whole pixels (content moves right/down; borders are mirrored), stretch by
    a_aniso^aniso along direction ``aniso_angle``, rotate counter-clockwise by ``angle``,
    magnify by a_scale^log_scale, then flip vertically (``yflip``) and horizontally
    (``xflip``)."""

    xflip: torch.Tensor  # (B,) 0/1
    yflip: torch.Tensor  # (B,) 0/1
    log_scale: torch.Tensor  # (B,) scale = a_scale ** log_scale
    angle: torch.Tensor  # (B,) θ in radians
    aniso: torch.Tensor  # (B,) stretch = a_aniso ** aniso
    aniso_angle: torch.Tensor  # (B,) φ in radians
    tx: torch.Tensor  # (B,) integer pixels
    ty: torch.Tensor  # (B,) integer pixels
    trans_unit: float  # pixels per unit of aug_cond's translation entries (a_trans × size)

    def cond(self) -> torch.Tensor:
        """aug_cond (B, 9) = [xflip, yflip, log_scale, cos θ − 1, sin θ, a cos φ, a sin φ,
        tx / unit, ty / unit]."""
        a, phi = self.aniso, self.aniso_angle
        return torch.stack(
            [
                self.xflip,
                self.yflip,
                self.log_scale,
                torch.cos(self.angle) - 1,
                torch.sin(self.angle),
                a * torch.cos(phi),
                a * torch.sin(phi),
                self.tx / self.trans_unit,
                self.ty / self.trans_unit,
            ],
            dim=1,
        ).float()


def _mirror(index: torch.Tensor, n: int) -> torch.Tensor:
    """Reflect integer indices into [0, n) without repeating the edge (… 2 1 | 0 1 2 … n−1 |
    n−2 …), for any shift size: period 2(n − 1)."""
    if n == 1:
        return torch.zeros_like(index)
    period = 2 * (n - 1)
    index = index.remainder(period)
    return torch.where(index < n, index, period - index)


def translate_integer(images: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Shift each image (B, C, H, W) by whole pixels: out[y, x] = in[y − ty, x − tx], with the
    source index mirrored at the borders. Exact (a gather, no interpolation)."""
    b, _, h, w = images.shape
    rows = _mirror(torch.arange(h, device=images.device)[None] - ty.to(images.device)[:, None], h)
    cols = _mirror(torch.arange(w, device=images.device)[None] - tx.to(images.device)[:, None], w)
    batch = torch.arange(b, device=images.device)[:, None, None]
    out = images.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def warp_affine(
    images: torch.Tensor,
    scale: torch.Tensor,
    angle: torch.Tensor,
    stretch: torch.Tensor,
    stretch_angle: torch.Tensor,
) -> torch.Tensor:
    """Magnify · rotate · stretch each image (B, C, H, W) about its centre (bicubic, mirrored
    borders); the parameters are (B,) tensors.

    The forward map on centred coordinates (x right, y down) is M = S(s) R(−θ) A, with the
    stretch A = R(φ) diag(t, 1/t) R(−φ); ``grid_sample`` needs its inverse (output pixel →
    source pixel). R(−θ) with y pointing down turns content counter-clockwise by θ."""

    def rot(t):  # (B, 2, 2) rotation matrices
        c, s = torch.cos(t), torch.sin(t)
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)

    def diag(sx, sy):
        zero = torch.zeros_like(sx)
        return torch.stack([torch.stack([sx, zero], -1), torch.stack([zero, sy], -1)], -2)

    aniso = rot(stretch_angle) @ diag(stretch, 1 / stretch) @ rot(-stretch_angle)
    forward = diag(scale, scale) @ rot(-angle) @ aniso
    theta = torch.cat([torch.linalg.inv(forward), torch.zeros(len(scale), 2, 1)], dim=2)
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(
        images, grid, mode="bicubic", padding_mode="reflection", align_corners=False
    )


class HorizontalFlip:
    """DiT's ``RandomHorizontalFlip()`` as a batch transform (``training.hflip``): each image
    mirrored left–right with probability ½, drawn from ``generator``; no augmentation input.
    ``HorizontalFlip()(images (B, C, H, W), generator)`` → ``(images, None)``."""

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None):
        flip = torch.rand(len(images), generator=generator) < 0.5
        return torch.where(flip.reshape(-1, 1, 1, 1), images.flip(-1), images), None


class Augment:
    """The non-leaking augmentation of Karras et al. (2020a), as a batch transform.

    ``Augment(p)(images, generator)`` → ``(augmented images, aug_cond (B, 9))``. Each enabled
    kind in :data:`AUG_KINDS` is drawn independently per image with probability ``p``
    (Table 6: 0.12 for FFHQ-1024²); a drawn flip is a fair coin (so a flip happens with
    probability p/2, as in ADA), a drawn translation is round(N(0, 1) · a_trans · size)
    pixels (integer: exact, the cond records the rounded value), a drawn log-scale or
    stretch exponent is N(0, 1), a drawn angle uniform in [−π, π). k-diffusion mirrors x with
    probability 1/2 whenever augmentation is on: ``xflip_p=1.0`` reproduces that.
    ``p = 0`` returns the images unchanged and ``aug_cond = 0``.
    """

    def __init__(
        self,
        p: float = 0.12,
        *,
        kinds: Sequence[str] = AUG_KINDS,
        xflip_p: float | None = None,
        a_scale: float = 2**0.2,
        a_aniso: float = 2**0.2,
        a_trans: float = 1 / 8,
    ):
        if not 0 <= p <= 1:
            raise ValueError(f"augmentation probability p must be in [0, 1], got {p!r}")
        if xflip_p is not None and not 0 <= xflip_p <= 1:
            raise ValueError(f"xflip_p must be in [0, 1] or None, got {xflip_p!r}")
        unknown = [k for k in kinds if k not in AUG_KINDS]
        if unknown:
            raise ValueError(f"unknown augmentation kinds {unknown}; allowed: {AUG_KINDS}")
        self.p, self.kinds, self.xflip_p = p, tuple(kinds), xflip_p
        self.a_scale, self.a_aniso, self.a_trans = a_scale, a_aniso, a_trans

    def draw(self, batch: int, size: int, generator: torch.Generator | None = None) -> AugParams:
        """Draw the augmentation of a batch of ``batch`` square images of side ``size``."""
        g = dict(generator=generator)

        def drawn(kind: str, p: float | None = None) -> torch.Tensor:  # (B,) 0/1 per image
            p = self.p if p is None else p
            return (torch.rand(batch, **g) < p).float() * (kind in self.kinds)

        xflip = drawn("xflip", self.xflip_p) * torch.randint(0, 2, (batch,), **g).float()
        yflip = drawn("yflip") * torch.randint(0, 2, (batch,), **g).float()
        log_scale = drawn("scale") * torch.randn(batch, **g)
        angle = drawn("rotate") * (torch.rand(batch, **g) * 2 - 1) * math.pi
        do_aniso = drawn("aniso")
        aniso_angle = do_aniso * (torch.rand(batch, **g) * 2 - 1) * math.pi
        aniso = do_aniso * torch.randn(batch, **g)
        unit = self.a_trans * size
        do_trans = drawn("translate")
        tx = (do_trans * torch.randn(batch, **g) * unit).round()
        ty = (do_trans * torch.randn(batch, **g) * unit).round()
        return AugParams(xflip, yflip, log_scale, angle, aniso, aniso_angle, tx, ty, unit)

    def apply(self, images: torch.Tensor, params: AugParams) -> torch.Tensor:
        """Apply drawn ``params`` to images (B, C, H, W) in the order :class:`AugParams` says.

        Each transform touches only the images it was drawn for (at p = 0.12 most images are
        left as they are): at 1024² a full-batch gather or flip costs ~40 ms per image on a CPU
        core (the trainer augments where it reads the batch: in its DataLoader's worker
        processes when it has workers, :class:`hdit_edu.training.StepAugment`). ``params``
        live on the host, so choosing the images reads no device values. Nothing drawn:
        ``images`` is returned."""
        p = params
        move = (p.tx != 0) | (p.ty != 0)
        warp = (p.log_scale != 0) | (p.angle != 0) | (p.aniso != 0)
        if not (move | warp | p.xflip.bool() | p.yflip.bool()).any():
            return images
        out = images.clone()

        def chosen(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            i = mask.nonzero()[:, 0]  # host indices (params), and the same on the images' device
            return i, i.to(out.device)

        i, on = chosen(move)
        if len(i):
            out[on] = translate_integer(out[on], p.tx[i].long(), p.ty[i].long())
        i, on = chosen(warp)
        if len(i):  # only the images that need resampling are resampled
            scale, stretch = self.a_scale ** p.log_scale[i], self.a_aniso ** p.aniso[i]
            out[on] = warp_affine(out[on], scale, p.angle[i], stretch, p.aniso_angle[i])
        for flags, dim in ((p.yflip, 2), (p.xflip, 3)):
            i, on = chosen(flags.bool())
            if len(i):
                out[on] = out[on].flip(dim)
        return out

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment (B, C, H, W) or one (C, H, W) image; returns (images, aug_cond)."""
        single = images.ndim == 3
        if single:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
            raise ValueError(
                f"expected square images (B, C, H, W), got shape {tuple(images.shape)}"
            )
        params = self.draw(len(images), images.shape[-1], generator)
        out, cond = self.apply(images, params), params.cond().to(images.device)
        return (out[0], cond[0]) if single else (out, cond)


def augment(
    images: torch.Tensor, p: float, generator: torch.Generator | None = None, **options
) -> tuple[torch.Tensor, torch.Tensor]:
    """``Augment(p, **options)(images, generator)``: augmented images and aug_cond (…, 9)."""
    return Augment(p, **options)(images, generator)


# --------------------------------------------------------------------------------------------
# A deterministic, resumable, DDP-aware data order
# --------------------------------------------------------------------------------------------


def step_generator(seed: int, step: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    """A CPU ``torch.Generator`` that is a pure function of (seed, step, rank, stream): the
    per-step randomness (augmentation, noise, σ) of a run that resumes exactly without saving
    RNG states. Use a different ``stream`` for each independent use in one step."""
    entropy = np.random.SeedSequence([seed, step, rank, stream])  # well-mixed, portable hash
    return torch.Generator().manual_seed(int(entropy.generate_state(1, np.uint64)[0]))


class ResumableSampler(torch.utils.data.Sampler):
    """An endless stream of data-set indices: epoch e is a permutation of range(size) drawn
    from (seed, e); the epochs are concatenated into one global stream and rank r of
    ``world_size`` takes its elements r, r + W, r + 2W, … So all ranks read disjoint shards
    of the same permutation, every epoch is covered exactly once across ranks, and the
    index at any position is a pure function — nothing but the position has to be saved.

    * ``sampler.indices(position, count)`` — this rank's indices at positions
      ``position … position + count − 1`` (pure).
    * ``sampler.batch_indices(step, batch_size)`` — those of training step ``step``
      (= ``indices(step * batch_size, batch_size)``; ``batch_size`` is per rank).
    * ``iter(sampler)`` — yields indices forever from ``sampler.position`` (advancing it);
      ``batches(batch_size, start_step)`` — a ``batch_sampler`` for a ``DataLoader`` that
      starts at a given step (a ``DataLoader`` prefetches, so save the step, not
      ``sampler.position``).
    * ``state_dict()`` / ``load_state_dict()`` — seed, position and shape, JSON-friendly.
    """

    def __init__(
        self, size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True
    ):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        if not (isinstance(world_size, int) and world_size >= 1 and 0 <= rank < world_size):
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank!r}, world_size={world_size!r}"
            )
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.shuffle = shuffle
        self.position = 0
        self._permutations: dict[int, np.ndarray] = {}

    def _epoch(self, epoch: int) -> np.ndarray:
        """The permutation of epoch ``epoch``, drawn from (seed, epoch) (a few kept)."""
        if epoch not in self._permutations:
            if len(self._permutations) >= 4:
                self._permutations.pop(next(iter(self._permutations)))
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(self.size) if self.shuffle else np.arange(self.size)
            self._permutations[epoch] = order
        return self._permutations[epoch]

    def indices(self, position: int, count: int) -> np.ndarray:
        """This rank's indices at stream positions [position, position + count)."""
        if position < 0 or count < 0:
            raise ValueError(f"position and count must be >= 0, got {position}, {count}")
        glob = (np.arange(position, position + count) * self.world_size) + self.rank
        epochs, offsets = np.divmod(glob, self.size)
        out = np.empty(count, dtype=np.int64)
        for e in np.unique(epochs):
            mask = epochs == e
            out[mask] = self._epoch(int(e))[offsets[mask]]
        return out

    def batch_indices(self, step: int, batch_size: int) -> np.ndarray:
        """This rank's ``batch_size`` indices for training step ``step``."""
        return self.indices(step * batch_size, batch_size)

    def epoch_of(self, position: int) -> int:
        """The epoch the element at stream position ``position`` belongs to."""
        return (position * self.world_size + self.rank) // self.size

    def __iter__(self) -> Iterator[int]:
        while True:
            chunk = self.indices(self.position, 1024)
            for index in chunk:
                self.position += 1
                yield int(index)

    def batches(self, batch_size: int, start_step: int = 0) -> _BatchStream:
        return _BatchStream(self, batch_size, start_step)

    def state_dict(self) -> dict:
        return {
            "size": self.size,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "shuffle": self.shuffle,
            "position": self.position,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("size", "seed", "world_size", "shuffle"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler state has {key}={state[key]!r}, this sampler {getattr(self, key)!r}"
                )
        self.position = int(state["position"])


class _BatchStream:
    """Endless ``batch_sampler``: lists of indices for steps start_step, start_step + 1, …"""

    def __init__(self, sampler: ResumableSampler, batch_size: int, start_step: int):
        self.sampler, self.batch_size, self.start_step = sampler, batch_size, start_step

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            yield self.sampler.batch_indices(step, self.batch_size).tolist()
            step += 1
