"""The authors' reference implementation, imported from a k-diffusion source tree — for the tests
and the benchmarks only (the library never needs it).

To run the authors' model next to ours, point ``HDIT_K_DIFFUSION_SRC``
(:data:`K_DIFFUSION_SRC_ENV`) at a clone of crowsonkb/k-diffusion (tested at commit 4601bf0):
:func:`k_diffusion_source` finds the tree, and ``with import_k_diffusion(src) as K:`` imports
it for the length of the block — standing in for packages the model does not use and adapting
the reference to NATTEN 0.21, both undone on exit. The conversion of configs and weights
between the two is :mod:`hdit_edu.interop`. Nothing of k-diffusion is copied into this
repository.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .interop import deep_merge

K_DIFFUSION_SRC_ENV = "HDIT_K_DIFFUSION_SRC"
# The file that marks a k-diffusion source tree: the model every conversion here targets.
_KD_MODEL_FILE = "k_diffusion/models/image_transformer_v2.py"
# Packages that ``import k_diffusion`` pulls in for features the model, its config loader, the
# Denoiser's losses and the samplers never touch (CLIP guidance, DCT losses, SDE / adaptive ODE
# solvers, image augmentation). Parents come before their submodules.
_KD_UNUSED_IMPORTS = (
    "torchsde",
    "clip",
    "torchdiffeq",
    "dctorch",
    "dctorch.functional",
    "jsonmerge",
    "skimage",
    "skimage.transform",
)
# k-diffusion's switches for torch.compile of its small kernels and for FlashAttention-2.
_KD_CUDA_ONLY_FLAGS = ("K_DIFFUSION_USE_COMPILE", "K_DIFFUSION_USE_FLASH_2")
# NATTEN's CPU (flex) path warns that it runs uncompiled; the reference's calls trigger it.
_KD_EXPECTED_WARNINGS = (
    ".*flex_attention called without torch.compile",
    ".*return_lse is deprecated",
)


def k_diffusion_source(src: str | os.PathLike | None = None) -> str | None:
    """The k-diffusion source tree to compare with, as an absolute path: ``src``, or when it is
    ``None`` the environment variable ``HDIT_K_DIFFUSION_SRC`` (:data:`K_DIFFUSION_SRC_ENV`).
    Returns ``None`` when ``src`` is ``None`` and the variable is unset or empty.

    A source tree is a clone of crowsonkb/k-diffusion: a folder holding
    ``k_diffusion/models/image_transformer_v2.py``. Anything else raises a ``ValueError``
    naming the path (a misspelt variable should fail loudly, not skip the comparison)."""
    if src is None:
        src = os.environ.get(K_DIFFUSION_SRC_ENV) or None
        if src is None:
            return None
        what = f"{K_DIFFUSION_SRC_ENV}={src!r}"
    else:
        what = repr(os.fspath(src))
    root = Path(src).expanduser()
    if not (root / _KD_MODEL_FILE).is_file():
        raise ValueError(
            f"{what} is not a k-diffusion source tree (no {_KD_MODEL_FILE}); point it at a "
            f"clone of crowsonkb/k-diffusion"
        )
    return str(root.resolve())


class _UnusedModule(types.ModuleType):
    """Stands in for a package that is not installed and that the reference imports without
    needing it here: the import succeeds, and any use of the package raises
    ``ModuleNotFoundError`` naming it."""

    def __getattr__(self, name: str):
        if name.startswith("_"):  # __path__, __file__, …: let the import system see a module
            raise AttributeError(name)

        def unavailable(*args, **kwargs):
            raise ModuleNotFoundError(
                f"{self.__name__}.{name}: {self.__name__} is not installed (import_k_diffusion "
                f"stood in for it because k-diffusion's model does not use it)",
                name=self.__name__,
            )

        return unavailable


def _pop_k_diffusion_modules() -> dict[str, types.ModuleType]:
    """Remove ``k_diffusion`` and its submodules from ``sys.modules``; returns them."""
    names = [n for n in sys.modules if n == "k_diffusion" or n.startswith("k_diffusion.")]
    return {name: sys.modules.pop(name) for name in names}


def _stand_in_for_unused_imports(undo: contextlib.ExitStack) -> None:
    for name in _KD_UNUSED_IMPORTS:
        try:
            importlib.import_module(name)
            continue
        except ImportError:
            pass
        stand_in = _UnusedModule(name)
        if name == "jsonmerge":  # k-diffusion's load_config merges its defaults with it
            stand_in.merge = deep_merge
        parent, _, child = name.rpartition(".")
        if parent:  # `from dctorch import functional` reads the parent's attribute
            setattr(sys.modules[parent], child, stand_in)
        sys.modules[name] = stand_in
        undo.callback(_forget_module, name, stand_in)


def _forget_module(name: str, module: types.ModuleType) -> None:
    if sys.modules.get(name) is module:
        del sys.modules[name]


def _discard(items: list, item: Any) -> None:
    with contextlib.suppress(ValueError):
        items.remove(item)


def _use_natten_na2d() -> bool:
    return True


def _restore_environ(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@contextlib.contextmanager
def import_k_diffusion(
    src: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> Iterator[types.ModuleType]:
    """``with import_k_diffusion(src) as K:`` — the authors' ``k_diffusion`` package imported
    from the source tree ``src`` (see :func:`k_diffusion_source`), to run it next to ours::

        kd_config, kd_state = to_k_diffusion(model)
        with import_k_diffusion(k_diffusion_source()) as K:
            reference = K.config.make_model(K.config.load_config(kd_config)).eval()
            reference.load_state_dict(kd_state)
            expected = reference(x, sigma, class_cond=classes)  # inside the block

    Nothing of k-diffusion is copied into this repository; the tree is imported as it is, with
    four adjustments for the environment hdit-edu runs in:

    * **Unused imports.** ``import k_diffusion`` imports every submodule, and with them
      torchsde, clip, torchdiffeq, dctorch, jsonmerge and scikit-image, which neither the model
      and its config loader nor the Denoiser's losses and the samplers that hdit-edu is
      compared with use. Those not installed are replaced by stand-ins (using one raises
      ``ModuleNotFoundError`` naming it); jsonmerge's ``merge``, which ``load_config`` does
      call, is a deep merge of dicts (what jsonmerge does by default).
    * **NATTEN 0.21.** The reference asks ``natten.has_fused_na()`` and otherwise calls
      ``na2d_qk`` / ``na2d_av``, which NATTEN 0.21 no longer has. When the function is missing
      it is set to answer ``True``, so the reference calls ``natten.functional.na2d``: fused
      kernels on CUDA; on the CPU NATTEN's flex path (forward only: run under
      ``torch.no_grad()``), whose "runs without torch.compile" warnings are silenced.
    * **Off CUDA** (``device`` is not a CUDA device), ``K_DIFFUSION_USE_COMPILE=0`` and
      ``K_DIFFUSION_USE_FLASH_2=0``: no ``torch.compile`` of small kernels (slow to compile on
      the CPU, the same math) and no FlashAttention-2.
    * ``src`` goes first on ``sys.path``, and a ``k_diffusion`` imported before (say, an
      installed one) is set aside, so the package comes from ``src`` (checked).

    k-diffusion reads the NATTEN answer and the flags when the model *runs*, so call the
    reference inside the block. On exit everything is undone: ``sys.path``, the stand-ins, the
    ``k_diffusion`` modules (a package set aside comes back), the NATTEN function, the
    environment variables and the warning filters. Blocks nest (an inner block imports its
    own copy); like any ``with`` blocks, they must close in reverse order of opening."""
    import natten

    root = k_diffusion_source(src)
    with contextlib.ExitStack() as undo:
        undo.callback(sys.modules.update, _pop_k_diffusion_modules())  # runs last
        undo.callback(_pop_k_diffusion_modules)  # the copy from `src`
        _stand_in_for_unused_imports(undo)
        if not hasattr(natten, "has_fused_na"):
            natten.has_fused_na = _use_natten_na2d
            undo.callback(delattr, natten, "has_fused_na")
        if torch.device(device).type != "cuda":
            for flag in _KD_CUDA_ONLY_FLAGS:
                undo.callback(_restore_environ, flag, os.environ.get(flag))
                os.environ[flag] = "0"
        undo.enter_context(warnings.catch_warnings())
        for message in _KD_EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        sys.path.insert(0, root)
        undo.callback(_discard, sys.path, root)

        package = importlib.import_module("k_diffusion")
        origin = Path(package.__file__).resolve().parent.parent
        if origin != Path(root):
            raise ImportError(f"k_diffusion was imported from {str(origin)!r}, not from {root!r}")
        yield package
