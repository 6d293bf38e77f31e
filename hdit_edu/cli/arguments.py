"""The command line's shared pieces: the flag domains (one checker per kind, applied by
argparse before any work; the message names the flag and what is allowed), the output-path
checks, the help formatter, the options several commands take and the subcommand helper."""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import torch

from ..attention import NA_BACKENDS
from ..configs import (
    parse_resolution,
)

PROFILE_HELP = (
    "'gpu': the config as the paper sets it; 'cpu': the same kinds of choices on the 32x32 toy "
    "set at tiny sizes (minutes on 2 cores); 'auto' (default): gpu when CUDA is available "
    "(the HDIT_PROFILE environment variable overrides)"
)


# ----------------------------------------------------------------------------------------------
# Flag domains: one checker per kind, applied by argparse before any work (the message names
# the flag and the allowed range)
# ----------------------------------------------------------------------------------------------


def int_at_least(minimum: int):
    """An argparse ``type``: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"got {text!r}; allowed: an integer >= {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def finite_float(minimum: float = -math.inf, *, open_low: bool = False):
    """An argparse ``type``: a finite number >= ``minimum`` (> with ``open_low``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        low_ok = value > minimum if open_low else value >= minimum
        if not (math.isfinite(value) and low_ok):
            bound = "" if minimum == -math.inf else f" {'>' if open_low else '>='} {minimum:g}"
            raise argparse.ArgumentTypeError(f"got {text!r}; allowed: a finite number{bound}")
        return value

    parse.__name__ = "finite number"
    return parse


def name_list(allowed: tuple[str, ...]):
    """An argparse ``type``: comma-separated names, each one of ``allowed``."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        bad = [n for n in names if n not in allowed]
        if not names or bad:
            raise argparse.ArgumentTypeError(
                f"got {text!r}; allowed: comma-separated names of {', '.join(allowed)}"
            )
        return names

    parse.__name__ = "list of names"
    return parse


def int_list(minimum: int):
    """An argparse ``type``: comma-separated distinct integers, each >= ``minimum``."""
    one = int_at_least(minimum)

    def parse(text: str) -> list[int]:
        try:
            values = [one(v.strip()) for v in text.split(",")]
        except argparse.ArgumentTypeError:
            values = None
        if not values or len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(
                f"got {text!r}; allowed: comma-separated distinct integers >= {minimum}, e.g. 0,1,2"
            )
        return values

    parse.__name__ = f"list of integers >= {minimum}"
    return parse


def resolution_arg(text: str) -> int | tuple[int, int]:
    """An argparse ``type``: an image size ``N`` (N×N) or ``HxW`` (:func:`parse_resolution`)."""
    try:
        return parse_resolution(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"got {text!r}; allowed: a positive integer N (N×N) or HxW, e.g. 256x512"
        ) from None


def device_arg(text: str) -> str:
    """An argparse ``type``: a torch device this machine has (``cuda`` only with a GPU)."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"got {text!r}; allowed: cpu, cuda, cuda:N, mps (a torch device name)"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(
                f"got {text!r} but CUDA is not available here (no GPU visible to torch "
                f"{torch.__version__}); allowed: cpu"
            )
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(
                f"got {text!r}; allowed: cuda:0 … cuda:{count - 1} ({count} GPUs visible)"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"got {text!r} but MPS is not available; allowed: cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: cpu, cuda, cuda:N, mps")
    return text


def check_output_file(
    flag: str, path: str | Path, suffixes: tuple[str, ...] = (), *, what: str = "", force=None
) -> Path:
    """Refuse, before any work, an output file path that is a folder or cannot be written:
    the nearest existing ancestor must be a folder in which a file can be created. With
    ``suffixes``, the name must end in one of them (``what`` names the format written); with
    ``force`` given (the value of a ``--force`` flag), an existing file is refused unless it
    is true."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a folder; allowed: a file path")
    if suffixes and path.suffix.lower() not in suffixes:
        raise ValueError(
            f"{flag} {str(path)!r}: this writes {what or suffixes[0][1:].upper()}; allowed file "
            f"name endings: {', '.join(suffixes)}"
        )
    if force is False and (path.exists() or path.is_symlink()):
        raise ValueError(f"{flag} {str(path)!r} exists: pass --force to replace it")
    check_writable_folder(flag, path.parent, path)
    return path


# Bytes of one float32 image tensor the sampler keeps per image at once, counted in copies of
# the image: the state x, the denoised estimate, DPM++(3M)'s two previous ones, the noise and
# the output (the network's activations come on top: this is a lower bound).
SAMPLER_IMAGE_COPIES = 6


def check_sample_memory(flag: str, n: int, batch: int, channels: int, size, device) -> None:
    """Refuse, before allocating, a sample size whose images alone cannot fit in the memory
    ``device`` has free (a lower bound of what sampling needs), naming both."""
    height, width = (size, size) if isinstance(size, int) else size
    image = channels * height * width * 4
    need = image * (n + SAMPLER_IMAGE_COPIES * min(n, batch or n))
    if torch.device(device).type == "cuda":
        free = torch.cuda.mem_get_info(torch.device(device))[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > free:
        raise ValueError(
            f"{flag} {height}x{width}: {n} samples need at least {need / 2**30:.1f} GiB for "
            f"the images alone, and {device} has {free / 2**30:.1f} GiB free; choose a smaller "
            f"size or fewer samples (--n, --batch-size)"
        )


def check_apart(source_flag: str, source: str | Path, target_flag: str, target: str | Path):
    """Refuse an output folder inside its input folder (or the reverse): a rerun would read
    its own output as input (links resolved)."""
    src, dst = Path(source).resolve(), Path(target).resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        where = "is" if dst == src else "is inside" if src in dst.parents else "holds"
        raise ValueError(
            f"{target_flag} {str(target)!r} {where} {source_flag} {str(source)!r}: a rerun would "
            f"read its own output as input; choose a {target_flag} outside it"
        )


def check_writable_folder(flag: str, folder: str | Path, shown: str | Path | None = None) -> None:
    """The folder (or its nearest existing ancestor, where it will be created) must be a
    folder in which this process can create files."""
    shown = str(shown if shown is not None else folder)
    ancestor = Path(folder).absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{flag} {shown!r}: {str(ancestor)!r} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as e:
        raise ValueError(
            f"{flag} {shown!r}: cannot write in {str(ancestor)!r} ({e.strerror})"
        ) from None


def check_run_folder(flag: str, path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{flag} {str(path)!r}: no such run folder (written by `hdit-edu train`)")
    return path


POSITIVE = int_at_least(1)
NON_NEGATIVE = int_at_least(0)
FINITE = finite_float()


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it is None/False or the help already names it."""

    def _get_help_string(self, action):
        unset = action.default is None or action.default is False or action.default == []
        if unset or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_command(sub, name: str, func, help: str, description: str | None = None):
    """A subcommand ``name`` whose parsed arguments go to ``func(args)``; its --help shows the
    options' defaults (:class:`HelpFormatter`)."""
    parser = sub.add_parser(
        name, help=help, description=description, formatter_class=HelpFormatter
    )
    if func is not None:
        parser.set_defaults(func=func)
    return parser


# Options that several commands take, each defined once.
SHARED_OPTIONS = {
    "--profile": dict(default="auto", choices=("auto", "cpu", "gpu"), help=PROFILE_HELP),
    "--run": dict(required=True, help="a run folder written by `hdit-edu train`"),
    "--no-progress": dict(action="store_true", help="no progress bar"),
    "--seed": dict(type=NON_NEGATIVE, default=0, help="random seed"),
    "--resolution": dict(
        type=POSITIVE, default=32, help="image side in pixels (the toy set's: 32)"
    ),
    "--backend": dict(
        default="auto",
        choices=NA_BACKENDS,
        help="neighborhood-attention backend ('auto': NATTEN's fused kernels on CUDA, else "
        "masked SDPA on small grids, else the pure-PyTorch one; all compute the same numbers)",
    ),
}


def add_shared(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument(name, **SHARED_OPTIONS[name])


# Old spellings, kept for one release: each still works and says on stderr what replaced it.


def deprecation(prog: str, old: str, new: str) -> None:
    """Say on stderr that ``old`` is deprecated (removed in the next release) and what to use."""
    print(f"{prog}: {old} is deprecated and will be removed in the next release; use {new}",
          file=sys.stderr)  # fmt: skip


class DeprecatedFlag(argparse.Action):
    """An old spelling of a flag: stores into the new flag's ``dest`` and prints a deprecation
    message that names the new flag."""

    def __init__(self, option_strings, dest, *, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        deprecation(parser.prog, option_string, self.new)
        setattr(namespace, self.dest, values)


def add_renamed(p: argparse.ArgumentParser, new: str, old: str, **kwargs) -> argparse.Action:
    """The flag ``new`` (``kwargs`` as for ``add_argument``) and its old spelling ``old``, hidden
    from ``--help``, parsed and checked the same way (:class:`DeprecatedFlag`)."""
    action = p.add_argument(new, **kwargs)
    p.add_argument(
        old, dest=action.dest, type=action.type, choices=action.choices, metavar=action.metavar,
        action=DeprecatedFlag, new=new, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
    )  # fmt: skip
    return action


def torch_device(name: str | None) -> torch.device:
    """``--device``'s value, or cuda when available, else cpu."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
