"""Interactive apps for the notebooks (ipywidgets): the sampling demo, the explorers and the
live training view.

Each app is a small class that holds its controls and its outputs; ``app.widget`` is the box a
notebook displays (``display(app)`` works too), and every action is a plain method, so tests
drive the apps without a browser (``app.sample_button.click()`` runs the same callback a click
in JupyterLab runs).

Sections (each app in its own section):

* ``# --- sampling app ---`` — :class:`SamplingApp` (notebook 08): samples from a trained run
  (by default the shipped toy model, :data:`SHIPPED_RUN`) with a class, a classifier-free
  guidance scale w (App. D), a sampler (§5.1: Euler, Heun, DPM++(2M), DPM++(3M) SDE), a number
  of steps, a seed and a batch size; it shows the grid, the denoising trajectory (the x̂₀
  prediction ``D(x_i, σ_i)`` of every step) and the time taken. :func:`draw_samples` is the
  function behind it. A run of DiT's discrete process (R1, ``diffusion.process = "ddpm"``) is
  offered the samplers that fit it (:func:`hdit_edu.sampling.samplers_for`: DiT's ancestral
  sampler, 250 respaced steps by default) and guided as DiT guides (on ε̂). The measurements
  notebook 08 shows next to it (Figure 9's guidance trade-off, the sampler study) are headless,
  in :mod:`hdit_edu.measure`.
* ``# --- live training view ---`` — :class:`LiveTrainingView` (notebooks 07 and 09): a
  progress bar, the loss curve and the newest EMA sample grid of a training run, redrawn as the
  trainer logs; ``trainer.fit(steps, callback=LiveTrainingView())`` attaches it for one call
  (it is a sink of :mod:`hdit_edu.logging_sinks`).
* ``# --- attention explorer ---`` — :class:`AttentionExplorer` (notebook 04): for a level's
  token grid and a chosen query token, the keys global, neighborhood (k × k, clamped at the
  borders) and shifted-window attention let it see, side by side.
* ``# --- headless execution ---`` — :func:`interact` (notebooks 01-05), the notebooks'
  ``ipywidgets.interact``: with a front end (JupyterLab) the sliders, and without one (the
  notebook runner of the tests and the book, which sets ``HDIT_HEADLESS=1``) the figure of the
  default values, drawn straight into the cell. :func:`front_end_attached` decides, and every
  app here draws a still picture when it is false: pages work without a kernel, and no cell
  waits on an ``ipywidgets.Output`` round trip through nbclient (see the function).
"""

from __future__ import annotations

import html
import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import ipywidgets as ipw
import numpy as np
import torch
from IPython.display import Image as DisplayImage
from IPython.display import clear_output, display
from PIL import Image
from torchvision.utils import make_grid

from .attention import ATTENTION_MODULE_KINDS
from .attention_analysis import attended_mask
from .data import to_uint8
from .measure import DEFAULT_CFG_SCALE, DEFAULT_SAMPLER, DEFAULT_STEPS
from .runs import load_run
from .sampling import (
    DDPM_SAMPLER,
    generate,
    sample_labels,
    sampler_and_steps,
    samplers_for,
    sampling_sigmas,
    step_range,
)
from .toy import TOY_CLASSES
from .viz import plot_attended_set

# --- sampling app ---

# The pretrained toy model that ships with the repository (see its README.md): resolved from
# the package location, so notebooks find it from any working directory.
SHIPPED_RUN = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "toy-hdit"

# The samplers of §5.1 as the app names them (label, hdit_edu.sampling name), and DiT's for a
# DDPM run (R1); a run is offered those that fit it (hdit_edu.sampling.samplers_for).
SAMPLER_LABELS = (
    ("Euler", "euler"),
    ("Heun", "heun"),
    ("DPM++(2M)", "dpmpp_2m"),
    ("DPM++(3M) SDE", "dpmpp_3m_sde"),
)
DDPM_SAMPLER_LABEL = ("DDPM ancestral (DiT)", DDPM_SAMPLER)
ALL_CLASSES = "all"  # the class picker's "every class in turn" entry
CFG_RANGE = (1.0, 4.0)  # the guidance scales the app offers (w = 1: no guidance)
MAX_STEPS = 100  # EDM's samplers (whose step count has no top); DDPM: its 2 … 1000 steps
MAX_BATCH = 64
DISPLAY_SCALE = 4  # 32×32 samples are shown 4× enlarged (nearest neighbour: no blur)


@dataclass(frozen=True)
class SamplingSettings:
    """What the app's controls set. ``class_index=None`` draws classes 0, 1, 2, … in turn.
    The defaults are an EDM run's (:data:`DEMO_SETTINGS`); :func:`default_settings` gives a
    run's own."""

    class_index: int | None = None
    cfg_scale: float = DEFAULT_CFG_SCALE
    sampler: str = DEFAULT_SAMPLER
    steps: int = DEFAULT_STEPS
    seed: int = 0
    batch_size: int = 16

    def validate(self, config) -> None:
        """Raise ``ValueError`` naming the bad setting and the allowed values, for a model of
        ``config``: the sampler must fit the process it was trained with
        (:func:`hdit_edu.sampling.sampler_and_steps`' check and message), the steps lie in
        :func:`step_limits`."""
        num_classes = config.model.num_classes
        sampler_and_steps(config, self.sampler, None)  # raises for a sampler of another process
        low, high = step_limits(config)
        if not low <= self.steps <= high:
            raise ValueError(f"steps={self.steps}; allowed: {low} … {high}")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size={self.batch_size}; allowed: 1 … {MAX_BATCH}")
        if not CFG_RANGE[0] <= self.cfg_scale <= CFG_RANGE[1]:
            raise ValueError(
                f"cfg_scale={self.cfg_scale}; allowed: {CFG_RANGE[0]} … {CFG_RANGE[1]}"
            )
        if self.class_index is not None and not 0 <= self.class_index < max(num_classes, 1):
            allowed = f"0 … {num_classes - 1} or None (every class in turn)"
            raise ValueError(f"class_index={self.class_index}; allowed: {allowed}")
        if num_classes == 0 and (self.class_index is not None or self.cfg_scale != 1):
            raise ValueError(
                "the model is unconditional: class_index must be None and cfg_scale 1 "
                f"(got class_index={self.class_index}, cfg_scale={self.cfg_scale})"
            )


# The demo's defaults: 16 images, the paper's sampler (50 steps of DPM++(3M) SDE, §5.1) with
# guidance w = 2.5 (hdit_edu.measure's defaults).
DEMO_SETTINGS = SamplingSettings()


def step_limits(config) -> tuple[int, int]:
    """The step counts the app offers a model of ``config``: its sampler's
    (:func:`hdit_edu.sampling.step_range`), at most :data:`MAX_STEPS` for EDM's samplers."""
    low, top = step_range(config)
    return low, MAX_STEPS if top is None else top


def default_settings(config) -> SamplingSettings:
    """The app's settings for a model of ``config``: :data:`DEMO_SETTINGS` with the process's
    own sampler and steps (:func:`hdit_edu.sampling.sampler_and_steps`: an EDM run's are
    DEMO_SETTINGS' 50 steps of DPM++(3M) SDE; a DDPM run's, R1, DiT's ancestral sampler over
    250 respaced steps), and no class or guidance for an unconditional model."""
    sampler, steps = sampler_and_steps(config, None, None)
    settings = replace(DEMO_SETTINGS, sampler=sampler, steps=steps)
    if config.model.num_classes == 0:
        settings = replace(settings, class_index=None, cfg_scale=1.0)
    return settings


@dataclass
class SampleResult:
    """One press of "Sample": the images, their classes, the σ schedule, the x̂₀ prediction of
    every step (``trajectory[i] = D(x_i, σ_i)``, guided when w ≠ 1) and the time taken.

    A DDPM run's (R1) steps are DiT's respaced discrete steps: ``timesteps[i]`` is the step t
    (of 1,000) the network sees at step i, ``sigmas[i]`` its EDM noise level σ_t =
    √((1 − ᾱ_t)/ᾱ_t), and ``trajectory[i]`` DiT's x̂₀ = (x_t − √(1 − ᾱ_t)·ε̂)/√ᾱ_t, which is
    D(x_t/√ᾱ_t, σ_t) (:mod:`hdit_edu.ddpm`)."""

    images: torch.Tensor  # (B, C, H, W) in [-1, 1]
    classes: torch.Tensor | None  # (B,) or None (unconditional)
    sigmas: torch.Tensor  # (steps + 1,), σ of each step (EDM: the Karras schedule), last = 0
    trajectory: torch.Tensor  # (steps, B, C, H, W) in [-1, 1]
    seconds: float
    settings: SamplingSettings
    timesteps: torch.Tensor | None = None  # (steps,) DDPM: the step t of each; EDM: None


def sample_classes(settings: SamplingSettings, num_classes: int) -> torch.Tensor | None:
    """The class of each sample: ``class_index`` for all, else 0, 1, 2, … in turn (None for an
    unconditional model) — the order ``hdit-edu sample`` and the studies use
    (:func:`hdit_edu.sampling.sample_labels`)."""
    if num_classes == 0:
        return None
    return sample_labels(settings.batch_size, num_classes, settings.class_index)


@torch.no_grad()
def draw_samples(
    denoiser,
    config,
    settings: SamplingSettings | None = None,
    *,
    on_step: Callable[[int, int], None] | None = None,
) -> SampleResult:
    """Sample ``settings.batch_size`` images and record the x̂₀ prediction of every step: the
    draws of :func:`hdit_edu.sampling.generate` (and so of ``hdit-edu sample``) for the same
    settings, with its per-step ``callback`` collecting the trajectory. ``settings`` None: the
    run's own (:func:`default_settings`). ``on_step(i, steps)`` is called after each step (the
    app's progress bar).
    """
    m = config.model
    settings = default_settings(config) if settings is None else settings
    settings.validate(config)
    device = next(denoiser.parameters()).device
    discrete = settings.sampler == DDPM_SAMPLER  # DiT's steps: generate takes no σ schedule
    sigmas = None if discrete else sampling_sigmas(config, settings.steps, device=device)
    trajectory, timesteps = [], []

    def record(info: dict) -> None:
        x0 = info["pred_x0"] if discrete else info["denoised"]
        trajectory.append(x0.float().clamp(-1, 1).cpu())
        if discrete:
            timesteps.append(info["t"])
        if on_step is not None:
            on_step(len(trajectory), settings.steps)

    start = time.perf_counter()
    images = generate(
        denoiser,
        config,
        settings.batch_size,
        sampler=settings.sampler,
        steps=settings.steps,
        cfg_scale=settings.cfg_scale,
        class_cond=settings.class_index,
        seed=settings.seed,
        batch_size=settings.batch_size,
        sigmas=sigmas,
        callback=record,
    )
    seconds = time.perf_counter() - start
    steps = torch.tensor(timesteps, dtype=torch.long) if discrete else None
    if discrete:  # σ_t of the steps visited (the denoiser's table), then the sample's σ = 0
        sigmas = torch.cat([denoiser.schedule.sigmas[steps].float(), torch.zeros(1)])
    return SampleResult(
        images=images,
        classes=sample_classes(settings, m.num_classes),
        sigmas=sigmas.cpu(),
        trajectory=torch.stack(trajectory),
        seconds=seconds,
        settings=settings,
        timesteps=steps,
    )


def images_png(images: torch.Tensor, nrow: int | None = None, scale: int = DISPLAY_SCALE) -> bytes:
    """A grid of images (N, C, H, W) in [-1, 1] as PNG bytes, enlarged ``scale``× (nearest)."""
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be (N, C, H, W) with N >= 1; got {tuple(images.shape)}")
    nrow = nrow or default_columns(len(images))
    grid = make_grid(to_uint8(images), nrow=nrow, padding=1, pad_value=255)
    picture = Image.fromarray(grid.permute(1, 2, 0).numpy())
    if scale != 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="png")
    return buffer.getvalue()


def default_columns(n: int) -> int:
    """Grid columns: 8 (the toy classes in turn fill a row each) for 8 or more images."""
    return min(n, 8)


def trajectory_steps(steps: int, columns: int = 8) -> list[int]:
    """Evenly spaced step indices for the trajectory strip, always including the first and the
    last step (all steps when there are at most ``columns``)."""
    if steps <= columns:
        return list(range(steps))
    return sorted({round(i * (steps - 1) / (columns - 1)) for i in range(columns)})


def trajectory_strip(result: SampleResult, rows: int = 4, columns: int = 8) -> torch.Tensor:
    """The denoising trajectory as a strip: ``rows`` samples (one per row) × ``columns`` steps
    (x̂₀ predictions, noisiest first), flattened row by row into (rows·columns, C, H, W)."""
    steps = trajectory_steps(len(result.trajectory), columns)
    picked = result.trajectory[steps, : min(rows, result.trajectory.shape[1])]  # (S, R, C, H, W)
    return picked.transpose(0, 1).reshape(-1, *picked.shape[2:])


class SamplingApp:
    """The sampling demo: controls (class, CFG scale w, sampler, steps, seed, batch size), a
    "Sample" button (CSS class ``hdit-sample-button``), a progress bar, the sample grid (CSS
    class ``hdit-sample-grid``), the denoising trajectory as a strip and as a step slider over
    the x̂₀ predictions, and the time taken. ``app.run()`` is what the button does.

    ``settings`` None: the run's own (:func:`default_settings`); the sampler picker offers the
    samplers that fit the run (:func:`hdit_edu.sampling.samplers_for`) and the steps slider
    :func:`step_limits`, so a DDPM run (R1) gets DiT's ancestral sampler and its 250 steps."""

    def __init__(
        self,
        denoiser,
        config,
        *,
        class_names: Sequence[str] | None = None,
        settings: SamplingSettings | None = None,
    ):
        self.denoiser, self.config = denoiser, config
        num_classes = config.model.num_classes
        settings = default_settings(config) if settings is None else settings
        if num_classes == 0:
            settings = replace(settings, class_index=None, cfg_scale=1.0)
        settings.validate(config)
        self.class_names = list(class_names or _class_names(config))
        if len(self.class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names; the model has "
                f"{num_classes} classes"
            )
        self.result: SampleResult | None = None

        style = {"description_width": "90px"}
        classes = [("every class in turn", ALL_CLASSES)] + [
            (f"{i}: {name}", i) for i, name in enumerate(self.class_names)
        ]
        self.class_picker = ipw.Dropdown(
            options=classes,
            value=ALL_CLASSES if settings.class_index is None else settings.class_index,
            description="class",
            disabled=num_classes == 0,
            style=style,
        )
        self.cfg_slider = ipw.FloatSlider(
            value=settings.cfg_scale,
            min=CFG_RANGE[0],
            max=CFG_RANGE[1],
            step=0.25,
            description="CFG scale w",
            disabled=num_classes == 0,
            style=style,
        )
        fitting = samplers_for(config)
        self.sampler_picker = ipw.Dropdown(
            options=[o for o in (*SAMPLER_LABELS, DDPM_SAMPLER_LABEL) if o[1] in fitting],
            value=settings.sampler,
            description="sampler",
            style=style,
        )
        low, high = step_limits(config)
        self.steps_slider = ipw.IntSlider(
            value=settings.steps, min=low, max=high, description="steps", style=style
        )
        self.seed_input = ipw.BoundedIntText(
            value=settings.seed, min=0, max=2**31 - 1, description="seed", style=style
        )
        self.batch_slider = ipw.IntSlider(
            value=settings.batch_size, min=1, max=MAX_BATCH, description="batch size", style=style
        )
        self.sample_button = ipw.Button(
            description="Sample", button_style="primary", icon="play", tooltip="draw samples"
        ).add_class("hdit-sample-button")
        self.progress = ipw.IntProgress(
            value=0, min=0, max=settings.steps, description="steps done", style=style
        )
        self.status = ipw.HTML(value="Press <b>Sample</b>.")
        self.grid_image = ipw.Image(format="png").add_class("hdit-sample-grid")
        self.strip_image = ipw.Image(format="png").add_class("hdit-trajectory-strip")
        self.strip_caption = ipw.HTML()
        self.step_slider = ipw.IntSlider(
            value=1, min=1, max=1, description="x̂₀ at step", disabled=True, style=style
        )
        self.step_image = ipw.Image(format="png").add_class("hdit-trajectory-step")

        self.sample_button.on_click(lambda _button: self.run())
        self.step_slider.observe(lambda _change: self._show_step(), names="value")

        controls = ipw.VBox(
            [
                self.class_picker,
                self.cfg_slider,
                self.sampler_picker,
                self.steps_slider,
                self.seed_input,
                self.batch_slider,
                ipw.HBox([self.sample_button, self.progress]),
                self.status,
            ]
        )
        samples = ipw.VBox([ipw.HTML("<b>samples</b>"), self.grid_image])
        predicted = (
            "DiT's x̂₀ = (x_t − √(1 − ᾱ_t)·ε̂)/√ᾱ_t"
            if config.diffusion.process == "ddpm"
            else "x̂₀ = D(x_i, σ_i)"
        )
        trajectory = ipw.VBox(
            [
                ipw.HTML(f"<b>denoising trajectory</b>: {predicted} of each step"),
                self.strip_image,
                self.strip_caption,
                self.step_slider,
                self.step_image,
            ]
        )
        self.widget = ipw.VBox([ipw.HBox([controls, samples]), trajectory])

    @classmethod
    def from_run(cls, run_dir: str | Path = SHIPPED_RUN, *, device="cpu", **options):
        """The app on a run's EMA weights (default: the shipped toy model)."""
        config, denoiser = load_run(run_dir, device=device)
        return cls(denoiser, config, **options)

    def _ipython_display_(self):
        if front_end_attached():
            display(self.widget)
        elif self.result is not None:
            _show_still(None, self.result.settings)
            display(DisplayImage(data=images_png(self.result.images)))
        else:
            _show_still(None, self.settings())

    def settings(self) -> SamplingSettings:
        """The settings the controls show now."""
        class_index = self.class_picker.value
        return SamplingSettings(
            class_index=None if class_index == ALL_CLASSES else int(class_index),
            cfg_scale=float(self.cfg_slider.value),
            sampler=self.sampler_picker.value,
            steps=int(self.steps_slider.value),
            seed=int(self.seed_input.value),
            batch_size=int(self.batch_slider.value),
        )

    def run(self) -> SampleResult:
        """Sample with the current settings and show the result (the "Sample" button)."""
        settings = self.settings()
        self.sample_button.disabled = True
        self.progress.max, self.progress.value = settings.steps, 0
        self.status.value = "sampling …"
        try:
            result = draw_samples(self.denoiser, self.config, settings, on_step=self._on_step)
        except Exception as e:
            self.status.value = f"<span style='color:#b00'>error: {html.escape(str(e))}</span>"
            raise
        finally:
            self.sample_button.disabled = False
        self.show(result)
        return result

    def _on_step(self, done: int, total: int) -> None:
        self.progress.value = done

    def show(self, result: SampleResult) -> None:
        """Display a :class:`SampleResult`: grid, trajectory strip and slider, time taken."""
        self.result = result
        s = result.settings
        _show_png(self.grid_image, images_png(result.images))
        columns = trajectory_steps(len(result.trajectory))
        rows = min(4, len(result.images))
        strip = trajectory_strip(result, rows)
        _show_png(self.strip_image, images_png(strip, nrow=len(columns), scale=2))
        sigma_text = ", ".join(f"{result.sigmas[i].item():.3g}" for i in columns)
        if result.timesteps is not None:  # DDPM: DiT's discrete step t and its σ_t
            t_text = ", ".join(str(int(result.timesteps[i])) for i in columns)
            sigma_text = f"{sigma_text} (DDPM step t = {t_text} of 1000)"
        self.strip_caption.value = (
            f"<small>{rows} samples (rows) at steps {[i + 1 for i in columns]} (columns); "
            f"σ = {sigma_text}</small>"
        )
        last = len(result.trajectory)  # the slider counts steps from 1
        self.step_slider.max = last
        self.step_slider.disabled = False
        if self.step_slider.value == last:
            self._show_step()
        self.step_slider.value = last  # observe() redraws
        sampler = {name: label for label, name in (*SAMPLER_LABELS, DDPM_SAMPLER_LABEL)}[s.sampler]
        what = "every class in turn" if s.class_index is None else self.class_names[s.class_index]
        guidance = f"w = {s.cfg_scale:g}"
        if s.sampler == DDPM_SAMPLER and s.cfg_scale != 1:  # ddpm.guided_output
            guidance += " (DiT's guidance: on ε̂; the variance from the conditional pass)"
        self.status.value = (
            f"{len(result.images)} images ({what}), {s.steps} steps of {sampler}, "
            f"{guidance}, seed {s.seed}: <b>{result.seconds:.2f} s</b> "
            f"({result.seconds / len(result.images) * 1000:.0f} ms per image)"
        )

    def _show_step(self) -> None:
        if self.result is None:
            return
        step = self.step_slider.value
        _show_png(self.step_image, images_png(self.result.trajectory[step - 1], scale=2))


def _show_png(image, png: bytes) -> None:
    """Put PNG bytes into an ``ipywidgets.Image`` at their natural width (read from the PNG
    header), so that flex boxes do not stretch small pictures."""
    image.value = png
    image.width = str(int.from_bytes(png[16:20], "big"))  # IHDR: width, big-endian


def _class_names(config) -> list[str]:
    """The toy classes' names for a toy-set model, else ``class 0``, ``class 1``, …"""
    n = config.model.num_classes
    if config.training.dataset == "toy" and n == len(TOY_CLASSES):
        return list(TOY_CLASSES)
    return [f"class {i}" for i in range(n)]


# --- live training view ---


def _in_ipython() -> bool:
    from IPython import get_ipython

    return get_ipython() is not None


def _in_kernel() -> bool:
    """Whether the code runs in a Jupyter kernel (JupyterLab, nbclient): widgets can show."""
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None


def _figure_png(fig) -> bytes:
    """A matplotlib ``Figure`` (not pyplot's: nothing is shown by itself) as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


class LiveTrainingView:
    """A live view of a training run: a progress bar, the loss curve and the newest EMA sample
    grid, redrawn every ``every`` steps and whenever a sample grid is written. One line:

        trainer.fit(steps, callback=LiveTrainingView())

    It is a sink of :mod:`hdit_edu.logging_sinks`, attached for the length of ``fit``: it
    receives each ``metrics.jsonl`` record (every ``training.log_every`` steps) and each grid of
    ``samples/`` (every ``training.sample_every`` steps; only with a run dir), so it shows the
    run's own numbers and costs the training step nothing. The data it holds: ``steps`` and
    ``losses`` (the records' ``step`` and ``loss``), ``records`` (their scalars), ``grid``
    (the newest grid, an (H, W, 3) uint8 array) and ``grid_step``.

    ``mode``: ``"widget"`` (an ipywidgets box; at the end of ``fit`` the same output is
    replaced by a still picture of the final state, which saved notebooks and the book keep),
    ``"print"`` (a status line per redraw and the picture at the end: scripts and terminals)
    or ``"auto"`` (``"widget"`` in a Jupyter kernel, else ``"print"``). ``scale``: the grid's
    enlargement (nearest neighbour). ``title``: shown above the view.
    """

    def __init__(self, every: int = 100, *, mode: str = "auto", scale: int = 2, title: str = ""):
        if mode not in ("auto", "widget", "print"):
            raise ValueError(f"mode={mode!r}; allowed: 'auto', 'widget', 'print'")
        if not (isinstance(every, int) and every >= 1):
            raise ValueError(f"every={every!r}; allowed: an integer >= 1")
        if not (isinstance(scale, int) and scale >= 1):
            raise ValueError(f"scale={scale!r}; allowed: an integer >= 1 (the grid's enlargement)")
        self.every, self.scale, self.title = every, scale, title
        self.mode = ("widget" if _in_kernel() else "print") if mode == "auto" else mode
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.records: list[dict[str, float]] = []
        self.grid = None  # (H, W, 3) uint8: the newest sample grid
        self.grid_step: int | None = None
        self.start, self.total, self._drawn_at = 0, 0, None
        self._t0 = time.perf_counter()
        self._handle = None
        self.progress = ipw.IntProgress(value=0, min=0, max=1, description="step")
        self.status = ipw.HTML()
        self.loss_image = ipw.Image(format="png").add_class("hdit-live-loss")
        self.grid_image = ipw.Image(format="png").add_class("hdit-live-samples")
        self._pictures = [self.loss_image, self.grid_image]
        rows = [ipw.HBox([self.progress, self.status]), ipw.HBox(self._pictures)]
        header = [ipw.HTML(f"<b>{html.escape(title)}</b>")] if title else []
        self.widget = ipw.VBox(header + rows).add_class("hdit-live-view")
        self._boxes = [self.widget, *rows, *header]

    # the sink protocol (hdit_edu.logging_sinks)

    def begin(self, step: int, total: int) -> None:
        """A ``fit`` call from ``step`` to ``total`` starts."""
        self.start, self.total, self._drawn_at = step, total, None
        self._t0 = time.perf_counter()
        self.progress.min, self.progress.max = 0, max(total, 1)
        self.progress.value = step
        self.status.value = f"step {step} / {total}: starting"
        if self.mode == "widget":
            self._handle = display(self.widget, display_id=True)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.steps.append(step)
        self.losses.append(values["loss"])
        self.records.append(dict(values))
        self.progress.value = step
        if self._drawn_at is None or step - self._drawn_at >= self.every or step >= self.total:
            self.draw()

    def image(self, step: int, path) -> None:
        self.grid = np.asarray(Image.open(path).convert("RGB"))
        self.grid_step = step
        self.draw()

    def close(self) -> None:
        """The end of ``fit``: the final state as a still picture, in place of the widget."""
        if self.mode == "widget" and self._handle is not None:
            self._handle.update(DisplayImage(data=_figure_png(self.figure())))
            for widget in self._boxes + [self.progress, self.status, *self._pictures]:
                for part in (widget, widget.layout, getattr(widget, "style", None)):
                    if part is not None:
                        part.close()  # free the kernel's copies; the output keeps the picture
        else:
            print(self.status_line())
            if _in_ipython():  # a terminal IPython or a kernel: the picture inline
                display(DisplayImage(data=_figure_png(self.figure())))
        self._handle = None

    # drawing

    def status_line(self) -> str:
        if not self.steps:
            return f"step {self.start} / {self.total}"
        step, done = self.steps[-1], self.steps[-1] - self.start
        elapsed = time.perf_counter() - self._t0
        eta = elapsed / done * (self.total - step) if done > 0 else float("nan")
        speed = self.records[-1].get("samples_per_s")
        return (
            f"step {step} / {self.total} · loss {self.losses[-1]:.4f}"
            + (f" · {speed:.0f} images/s" if speed is not None else "")
            + f" · {elapsed:.0f} s, about {eta:.0f} s to go"
        )

    def figure(self):
        """The view as one matplotlib ``Figure``: the loss curve and the newest grid."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 3.6))
        ax_loss, ax_grid = fig.subplots(1, 2, width_ratios=(1, 1.2))
        self._plot_loss(ax_loss, self.title or "training loss")
        ax_loss.set_ylabel("loss (metrics.jsonl)")
        if self.grid is not None:
            ax_grid.imshow(self.grid, interpolation="nearest")
            ax_grid.set_title(f"EMA samples at step {self.grid_step}")
        else:
            ax_grid.set_title("no sample grid yet")
        ax_grid.axis("off")
        fig.tight_layout()
        return fig

    def _loss_png(self) -> bytes:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.5, 3))
        self._plot_loss(fig.subplots(), "loss")
        fig.tight_layout()
        return _figure_png(fig)

    def _plot_loss(self, ax, title: str) -> None:
        """The loss curve (log scale) on ``ax``: the still picture's and the widget's."""
        if self.steps:
            ax.plot(self.steps, self.losses, lw=1)
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)

    def draw(self) -> None:
        """Redraw: the widget's pictures, or a status line in ``print`` mode."""
        self._drawn_at = self.steps[-1] if self.steps else self.start
        line = self.status_line()
        if self.mode == "print":
            print(line + (f" · samples of step {self.grid_step}" if self.grid_step else ""))
            return
        self.status.value = html.escape(line)
        if self.steps:
            _show_png(self.loss_image, self._loss_png())
        if self.grid is not None:
            picture = Image.fromarray(self.grid)
            size = (picture.width * self.scale, picture.height * self.scale)
            buffer = io.BytesIO()
            picture.resize(size, Image.NEAREST).save(buffer, format="png")
            _show_png(self.grid_image, buffer.getvalue())

    def _ipython_display_(self):
        display(self.widget)


# --- attention explorer ---


class AttentionExplorer:
    """Notebook 04: pick a level of the hourglass (its token grid), a query token, the
    neighborhood kernel size and the shifted-window size/shift, and see the keys that global,
    neighborhood and shifted-window attention let the query see, side by side
    (:func:`hdit_edu.viz.plot_attended_set`). ``app.draw()`` is what every control change does;
    ``app.key_counts()`` returns the numbers drawn."""

    def __init__(
        self,
        grids: Sequence[tuple[int, int]] = ((32, 32), (16, 16), (8, 8)),
        *,
        kernel_size: int = 7,
        window_size: int = 8,
        query: tuple[int, int] = (0, 0),
    ):
        self.grids = [tuple(g) for g in grids]
        if not self.grids:
            raise ValueError("AttentionExplorer needs at least one grid")
        h, wd = self.grids[0]
        style = {"description_width": "90px"}
        self.level = ipw.Dropdown(
            options=[(f"level {i}: {gh}×{gw} tokens", i) for i, (gh, gw) in enumerate(self.grids)],
            value=0,
            description="level",
            style=style,
        )
        self.row = ipw.IntSlider(
            value=query[0], min=0, max=h - 1, description="query row", style=style
        )
        self.col = ipw.IntSlider(
            value=query[1], min=0, max=wd - 1, description="query col", style=style
        )
        self.kernel = ipw.IntSlider(
            value=kernel_size, min=1, max=15, step=2, description="NA kernel", style=style
        )
        self.window = ipw.Dropdown(
            options=[2, 4, 8, 16], value=window_size, description="window", style=style
        )
        self.shifted = ipw.Checkbox(value=False, description="shift windows by window/2")
        # the panels' place: only where a front end shows it (headless: a still picture)
        self.output = ipw.Output() if front_end_attached() else None
        controls = [
            ipw.HBox([self.level, self.row, self.col]),
            ipw.HBox([self.kernel, self.window, self.shifted]),
        ]
        self.widget = ipw.VBox(controls + ([self.output] if self.output is not None else []))
        self.level.observe(self._level_changed, names="value")
        for control in (self.row, self.col, self.kernel, self.window, self.shifted):
            control.observe(lambda _: self.draw(), names="value")
        self.draw()

    def _level_changed(self, _=None):
        h, wd = self.grids[self.level.value]
        self.row.max, self.col.max = h - 1, wd - 1  # the sliders clamp their values
        self.draw()

    def settings(self) -> dict:
        """The current choice, clamped to what the level's grid allows (kernel ≤ grid side,
        window dividing the grid)."""
        h, wd = self.grids[self.level.value]
        side = min(h, wd)
        kernel = min(self.kernel.value, side if side % 2 else side - 1)  # odd, ≤ grid side
        window = self.window.value
        while h % window or wd % window:
            window //= 2
        return {
            "h": h,
            "w": wd,
            "query": (self.row.value, self.col.value),
            "kernel_size": kernel,
            "window_size": window,
            "shift": window // 2 if self.shifted.value else 0,
        }

    def key_counts(self) -> dict[str, int]:
        """How many keys the query sees under each attention kind, for the current settings."""
        s = self.settings()
        return {
            kind: int(
                attended_mask(
                    kind,
                    s["h"],
                    s["w"],
                    s["query"],
                    kernel_size=s["kernel_size"],
                    window_size=s["window_size"],
                    shift=s["shift"],
                ).sum()
            )
            for kind in ATTENTION_MODULE_KINDS
        }

    def figure(self):
        """The three panels for the current settings, as a matplotlib ``Figure``."""
        from matplotlib.figure import Figure

        s = self.settings()
        fig = Figure(figsize=(10, 3.4))
        for ax, kind in zip(fig.subplots(1, 3), ATTENTION_MODULE_KINDS):
            plot_attended_set(
                kind,
                s["h"],
                s["w"],
                s["query"],
                ax=ax,
                kernel_size=s["kernel_size"],
                window_size=s["window_size"],
                shift=s["shift"],
            )
        fig.tight_layout()
        return fig

    def draw(self):
        """Redraw the panels into the explorer's output (only where a front end shows it)."""
        if self.output is None:
            return
        with self.output:
            clear_output(wait=True)
            display(DisplayImage(data=_figure_png(self.figure())))

    def _ipython_display_(self):
        if front_end_attached():
            display(self.widget)
        else:
            _show_still(self.figure(), self.settings())


# --- headless execution ---

# Set to 1 by the notebook runner (tools/build_book.py): the kernel has no front end.
HEADLESS_ENV = "HDIT_HEADLESS"


def front_end_attached() -> bool:
    """Whether widgets here are seen and used: in a Jupyter kernel not run headless.

    The notebook runner (tests and book; nbclient) is no front end: it only records what the
    kernel sends. For one widget, ``ipywidgets.Output`` (which ``ipywidgets.interact`` draws
    into), nbclient plays the front end's part and sends a ``comm_msg`` back into the kernel's
    shell channel for every output, while its own coroutine waits on that channel for the
    cell's ``execute_reply``. That round trip is what left notebook 01's ``interact`` cell
    waiting, kernel idle, until the hang watch killed it: so without a front end, nothing here
    opens an ``Output``; each app draws a still picture instead (:func:`interact`)."""
    return _in_kernel() and os.environ.get(HEADLESS_ENV, "") != "1"


def _show_still(fig, settings) -> None:
    """A still picture (``fig``, a matplotlib Figure, or None) under a line naming the
    ``settings`` it shows (a dict or a dataclass): what a page without a kernel gets."""
    values = settings if isinstance(settings, dict) else vars(settings)
    display(_caption(values))
    if fig is not None:
        display(DisplayImage(data=_figure_png(fig)))


def _caption(values: dict) -> _Caption:
    shown = ", ".join(f"{k} = {v!r}" for k, v in values.items())
    return _Caption(f"Interactive with a running kernel; shown here: {shown}")


class _Caption(str):
    """Text that shows as itself (an italic line in HTML), not as a quoted repr."""

    def _repr_html_(self):
        return f"<p><i>{html.escape(self)}</i></p>"

    def __repr__(self):
        return str(self)


def interact(function: Callable, /, **controls) -> None:
    """``ipywidgets.interact(function, **controls)`` for a function that draws a figure.

    With a front end: the controls and the figure, redrawn on every change. Without one
    (:func:`front_end_attached` is false): ``function`` is called once with the controls'
    values (a widget's ``.value``, else the value itself) and draws straight into the cell,
    under a line naming them; no widget is opened. Returns None, so the cell shows no
    ``<function …>`` repr."""
    values = {name: getattr(c, "value", c) for name, c in controls.items()}
    if front_end_attached():
        display(ipw.interactive(function, **controls))
        return None
    display(_caption(values))
    function(**values)
    return None
