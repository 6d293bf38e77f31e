"""Golden reference fixtures: numbers computed by the authors' k-diffusion, frozen into small
files so that ``tests/test_reference_fixtures.py`` compares hdit-edu with the reference in
every test run, without the reference source (k-diffusion's PyPI release predates
``image_transformer_v2``, so CI cannot install it).

The files hold numbers only — configs as JSON, tensors as safetensors — never k-diffusion code.
``fixtures/manifest.json`` names the k-diffusion commit, the torch and NATTEN versions, the
dtype, and what each file holds. Regenerate (needs a clone of crowsonkb/k-diffusion)::

    HDIT_K_DIFFUSION_SRC=/path/to/k-diffusion .venv/bin/python tests/reference/make_fixtures.py

Deterministic: fixed seeds, float32 (float64 for the σ densities), one thread; running it twice
gives bit-identical files (``test_regenerated_fixtures_are_bit_identical`` checks that).

What is recorded:

* **Models** (:data:`MODELS`): tiny ``image_transformer_v2`` configs that together cover
  neighborhood, shifted-window, global and no attention, 1–4 levels, patch sizes 1/2/4, mapping
  depth 1/2, with and without classes, a rectangular ``input_size`` and non-square inputs to
  square configs. The reference model is built from the config, every parameter re-drawn
  (the zero-initialised projections too; attention scales stay positive), and run on fixed
  inputs (x, σ, class, augmentation). Per model: ``<name>.json`` (the config),
  ``<name>.weights.safetensors`` (the reference state dict, buffers included) and
  ``<name>.io.safetensors`` (per input case ``<case>.x``, ``.sigma``, ``.class_cond``,
  ``.aug_cond``, ``.output``).
* **Diffusion** (``diffusion.safetensors``): the preconditioner's c_skip, c_out, c_in (the
  reference ``Denoiser.get_scalings``) and c_noise (what the reference model feeds its
  noise-level embedding, read with a hook) on a σ grid, for σ_data 0.5 and 1; the denoiser output
  and the training loss of a fixture model for each loss weighting the reference has; the
  σ densities the reference's ``make_sample_density`` builds, evaluated on fixed uniforms.
* **Schedules** (``schedules.safetensors``): ``get_sigmas_karras`` for a few settings.
* **Samplers** (``samplers.safetensors``): every step's x of Euler, Heun, DPM++(2M) and
  DPM++(3M) SDE driven by a fixture model; the SDE's noise is injected through the
  reference's ``noise_sampler`` from a seeded generator, and stored.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from safetensors.torch import save_file

FIXTURES = Path(__file__).parent / "fixtures"
MANIFEST = "manifest.json"
SIGMA_DATA = 0.5
BATCH = 3


def _kd(size, patch, depths, widths, attns, *, classes=0, **model) -> dict:
    """A k-diffusion config: RGB, ``size`` = [H, W], σ_data 0.5; k-diffusion fills the rest."""
    spec = {
        "type": "image_transformer_v2",
        "input_channels": 3,
        "input_size": list(size),
        "patch_size": [patch, patch],
        "depths": depths,
        "widths": widths,
        "self_attns": attns,
        "sigma_data": SIGMA_DATA,
        **model,
    }
    return {"model": spec, "dataset": {"num_classes": classes}}


def _global(d):
    return {"type": "global", "d_head": d}


def _neighborhood(k, d):
    return {"type": "neighborhood", "d_head": d, "kernel_size": k}


def _window(w, d):
    return {"type": "shifted-window", "d_head": d, "window_size": w}


_NONE = {"type": "none"}


@dataclass
class ModelCase:
    """A fixture model: its k-diffusion config and its input cases ``{name: (H, W)}``."""

    config: dict
    inputs: dict[str, tuple[int, int]]
    seed: int = 0


MODELS: dict[str, ModelCase] = {
    "global_1level_p4": ModelCase(
        _kd((16, 16), 4, [2], [32], [_global(16)], mapping_depth=1, mapping_width=32),
        {"square": (16, 16), "tall": (24, 16)},
        seed=1,
    ),
    "neighborhood_2level_p2_classes": ModelCase(
        _kd(
            (16, 16),
            2,
            [1, 1],
            [32, 48],
            [_neighborhood(3, 16), _global(16)],
            classes=5,
            mapping_depth=2,
            mapping_width=32,
            mapping_d_ff=48,
            d_ffs=[48, 80],
        ),
        {"square": (16, 16), "wide": (16, 24)},
        seed=2,
    ),
    "shifted_window_3level_p1": ModelCase(
        _kd(
            (16, 16),
            1,
            [1, 1, 1],
            [16, 24, 32],
            [_window(4, 8), _window(4, 8), _global(16)],
            mapping_depth=2,
            mapping_width=32,
        ),
        {"square": (16, 16)},
        seed=3,
    ),
    "four_level_none_neighborhood_window_global_p2_classes": ModelCase(
        _kd(
            (32, 32),
            2,
            [1, 1, 1, 1],
            [16, 16, 32, 32],
            [_NONE, _neighborhood(3, 8), _window(2, 16), _global(16)],
            classes=3,
            mapping_depth=1,
            mapping_width=32,
        ),
        {"square": (32, 32), "wide": (32, 48)},
        seed=4,
    ),
    "neighborhood_1level_p4_classes": ModelCase(
        _kd(
            (32, 32),
            4,
            [2],
            [32],
            [_neighborhood(5, 16)],
            classes=10,
            mapping_depth=2,
            mapping_width=32,
        ),
        {"square": (32, 32), "tall": (40, 24)},
        seed=5,
    ),
    "rectangular_2level_p2_classes": ModelCase(
        _kd(
            (16, 32),
            2,
            [1, 1],
            [16, 32],
            [_window(4, 8), _global(16)],
            classes=2,
            mapping_depth=2,
            mapping_width=32,
        ),
        {"config_size": (16, 32)},
        seed=6,
    ),
}

# The diffusion pieces. Loss and denoiser: this model, these classes; the densities: these
# k-diffusion sigma_sample_density settings (with these input sizes), on these uniforms.
LOSS_MODEL = "neighborhood_2level_p2_classes"
LOSS_WEIGHTINGS = ("karras", "soft-min-snr", "snr")  # every name k-diffusion's Denoiser takes
SCALING_SIGMA_DATA = (0.5, 1.0)
DENSITIES = {
    "lognormal_edm": ({"type": "lognormal", "mean": -1.2, "std": 1.2}, 64),
    "lognormal_wide": ({"type": "lognormal", "loc": -0.4, "scale": 1.6}, 64),
    "cosine_interpolated_64": ({"type": "cosine-interpolated"}, 64),
    "cosine_interpolated_256": ({"type": "cosine-interpolated"}, 256),
    "cosine_interpolated_128_low64": ({"type": "cosine-interpolated", "noise_d_low": 64}, 128),
    "cosine_interpolated_32": ({"type": "cosine-interpolated"}, 32),
}
DENSITY_DRAWS = 64
KARRAS = {  # name: (n, sigma_min, sigma_max, rho)
    "edm_50": (50, 0.002, 80.0, 7.0),
    "paper_range_25": (25, 1e-3, 1e3, 7.0),
    "rho3_7": (7, 0.1, 10.0, 3.0),
    "samplers_10": (10, 0.02, 20.0, 7.0),
}
# The samplers: this model (with these classes), this schedule, this seed for the SDE noise.
SAMPLER_MODEL = "neighborhood_2level_p2_classes"
SAMPLER_SCHEDULE = "samplers_10"
SAMPLER_CLASSES = [1, 5]  # 5 = the dropped class
SAMPLERS = ("euler", "heun", "dpmpp_2m", "dpmpp_3m_sde")
SDE_NOISE_SEED = 5


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomise_(model: torch.nn.Module, seed: int, std: float = 0.1) -> None:
    """Re-draw every parameter: ``p ← p + std·N(0, 1)``, so the zero-initialised projections
    (attention output, AdaRMSNorm, patch_out) become non-zero too; attention scales (under a
    square root in cosine-similarity attention) are multiplied by ``exp(0.3·N(0, 1))`` instead,
    which keeps them positive."""
    g = _generator(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("self_attn.scale"):
                p.mul_(torch.exp(0.3 * noise))
            else:
                p.add_(noise * std)


def model_inputs(case: ModelCase, size: tuple[int, int], seed: int) -> dict[str, torch.Tensor]:
    """x, σ (over ~[0.03, 30]), class labels (the last one the dropped class), augmentation."""
    g = _generator(seed)
    classes = case.config["dataset"]["num_classes"]
    x = torch.randn(BATCH, 3, *size, generator=g)
    sigma = torch.exp(torch.linspace(-3.5, 3.5, BATCH) + 0.2 * torch.randn(BATCH, generator=g))
    aug = torch.randn(BATCH, 9, generator=g) * 0.5
    inputs = {"x": x, "sigma": sigma, "aug_cond": aug}
    if classes:
        labels = torch.randint(0, classes, (BATCH,), generator=g)
        labels[-1] = classes  # the dropped class (classifier-free guidance)
        inputs["class_cond"] = labels
    return inputs


def _reference_model(K: ModuleType, name: str) -> torch.nn.Module:
    """The reference model of a fixture, its parameters re-drawn (buffers from the seed)."""
    case = MODELS[name]
    torch.manual_seed(case.seed)  # k-diffusion draws its Fourier-feature buffers here
    model = K.config.make_model(K.config.load_config(case.config)).eval()
    randomise_(model, seed=1000 + case.seed)
    return model


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(path))


def _write_json(obj, path: Path) -> None:
    """Indented JSON; lists, and objects of plain values, on one line."""
    text = json.dumps(obj, indent=1)
    innermost = re.compile(r"([\[{])\n\s*([^\[\]{}]*?)\n\s*([\]}])")  # nothing nested
    text = innermost.sub(lambda m: m[1] + re.sub(r",\n\s*", ", ", m[2]) + m[3], text)
    path.write_text(text + "\n")


def _k_diffusion_commit(K: ModuleType) -> str:
    root = Path(K.__file__).resolve().parent.parent
    out = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git checkout)"


# ----------------------------------------------------------------------------------------------
# The fixtures
# ----------------------------------------------------------------------------------------------


def _models(K: ModuleType, out: Path, files: dict) -> None:
    for index, (name, case) in enumerate(MODELS.items()):
        reference = _reference_model(K, name)
        io = {}
        for j, (case_name, size) in enumerate(case.inputs.items()):
            inputs = model_inputs(case, size, seed=100 * (index + 1) + j)
            output = reference(**inputs)
            mean = output.abs().mean().item()
            if mean < 0.1:
                raise RuntimeError(f"{name}/{case_name}: trivial reference output (|F| ~ {mean})")
            io.update({f"{case_name}.{k}": v for k, v in inputs.items()})
            io[f"{case_name}.output"] = output
        _write_json(case.config, out / f"{name}.json")
        _save(reference.state_dict(), out / f"{name}.weights.safetensors")
        _save(io, out / f"{name}.io.safetensors")
        entry = {
            "config": f"{name}.json",
            "weights": f"{name}.weights.safetensors",
            "io": f"{name}.io.safetensors",
            "inputs": {k: list(v) for k, v in case.inputs.items()},
            "parameters": sum(p.numel() for p in reference.parameters()),
        }
        files["models"][name] = entry


def _diffusion(K: ModuleType, out: Path, files: dict) -> None:
    tensors = {}
    # Preconditioner scalings on a σ grid, and c_noise as the reference model computes it.
    sigma = torch.logspace(-3, 3, 25)
    tensors["scalings.sigma"] = sigma
    for sd in SCALING_SIGMA_DATA:
        scalings = K.layers.Denoiser(torch.nn.Identity(), sigma_data=sd).get_scalings(sigma)
        for key, value in zip(("c_skip", "c_out", "c_in"), scalings):
            tensors[f"scalings.sigma_data_{sd}.{key}"] = value
    seen = []
    model = _reference_model(K, "global_1level_p4")
    hook = model.time_emb.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    model(torch.zeros(len(sigma), 3, 16, 16), sigma)
    hook.remove()
    tensors["scalings.c_noise"] = seen[0].reshape(-1)

    # Denoiser output and the loss per weighting (k-diffusion's make_denoiser_wrapper).
    case = MODELS[LOSS_MODEL]
    inner = _reference_model(K, LOSS_MODEL)
    g = _generator(7)
    x0 = torch.randn(4, 3, 16, 16, generator=g) * SIGMA_DATA
    noise = torch.randn(4, 3, 16, 16, generator=g)
    sigma = torch.tensor([0.02, 0.3, 2.5, 40.0])
    classes = torch.tensor([0, 2, 4, case.config["dataset"]["num_classes"]])
    aug = torch.randn(4, 9, generator=g) * 0.5
    cond = {"class_cond": classes, "aug_cond": aug}
    tensors.update({"loss.x0": x0, "loss.noise": noise, "loss.sigma": sigma})
    tensors.update({f"loss.{k}": v for k, v in cond.items()})
    for weighting in LOSS_WEIGHTINGS:
        config = json.loads(json.dumps(case.config))
        config["model"]["loss_weighting"] = weighting
        wrapper = K.config.make_denoiser_wrapper(K.config.load_config(config))(inner)
        tensors[f"loss.{weighting}"] = wrapper.loss(x0, noise, sigma, **cond)
        if weighting == "karras":
            tensors["denoiser.output"] = wrapper(
                x0 + noise * sigma[:, None, None, None], sigma, **cond
            )

    # σ densities on fixed uniforms: seed, draw u, re-seed, let the reference draw the same u.
    densities = {}
    for i, (name, (density, size)) in enumerate(DENSITIES.items()):
        config = {
            "model": {
                "type": "image_transformer_v2",
                "input_channels": 3,
                "input_size": [size, size],
                "patch_size": [4, 4],
                "depths": [1],
                "widths": [64],
                "sigma_data": SIGMA_DATA,
                "sigma_min": 1e-3,
                "sigma_max": 1e3,
                "sigma_sample_density": density,
            },
            "dataset": {"num_classes": 0},
        }
        draw = K.config.make_sample_density(K.config.load_config(config)["model"])
        torch.manual_seed(20 + i)
        u = torch.rand([DENSITY_DRAWS], dtype=torch.float64)
        torch.manual_seed(20 + i)
        tensors[f"density.{name}.u"] = u
        tensors[f"density.{name}.sigma"] = draw([DENSITY_DRAWS], dtype=torch.float64)
        densities[name] = config
    _save(tensors, out / "diffusion.safetensors")
    _write_json({"densities": densities}, out / "diffusion.json")
    files["diffusion"] = {
        "file": "diffusion.safetensors",
        "configs": "diffusion.json",
        "holds": "scalings.*: c_skip/c_out/c_in of k_diffusion.layers.Denoiser.get_scalings on "
        "scalings.sigma for each sigma_data, and c_noise as the reference model feeds its "
        "time embedding; loss.*: inputs (x0, noise, sigma, class_cond, aug_cond) and the "
        "per-sample Denoiser.loss for each loss weighting (model: loss_model, its weights), "
        "denoiser.output: D(x0 + sigma*noise, sigma) (weighting karras); density.<name>.u / "
        ".sigma: uniforms and the sigmas make_sample_density(config) draws from them (float64), "
        "the configs in diffusion.json",
        "scaling_sigma_data": list(SCALING_SIGMA_DATA),
        "loss_model": LOSS_MODEL,
        "loss_weightings": list(LOSS_WEIGHTINGS),
        "densities": list(densities),
    }


def _schedules(K: ModuleType, out: Path, files: dict) -> None:
    tensors = {
        f"karras.{name}": K.sampling.get_sigmas_karras(n, lo, hi, rho)
        for name, (n, lo, hi, rho) in KARRAS.items()
    }
    _save(tensors, out / "schedules.safetensors")
    files["schedules"] = {
        "file": "schedules.safetensors",
        "holds": "karras.<name>: k_diffusion.sampling.get_sigmas_karras(n, sigma_min, "
        "sigma_max, rho) (n levels and a final 0)",
        "karras": {
            name: dict(zip(("n", "sigma_min", "sigma_max", "rho"), args))
            for name, args in KARRAS.items()
        },  # fmt: skip
    }


def _samplers(K: ModuleType, out: Path, files: dict) -> None:
    case = MODELS[SAMPLER_MODEL]
    denoiser = K.config.make_denoiser_wrapper(K.config.load_config(case.config))(
        _reference_model(K, SAMPLER_MODEL)
    )
    sigmas = K.sampling.get_sigmas_karras(*KARRAS[SAMPLER_SCHEDULE])
    classes = torch.tensor(SAMPLER_CLASSES)
    x = torch.randn(len(classes), 3, 16, 16, generator=_generator(9)) * sigmas[0]
    tensors = {"sigmas": sigmas, "x": x, "class_cond": classes}
    for name in SAMPLERS:
        steps = []
        kwargs = {}
        if name == "dpmpp_3m_sde":
            g, noise = _generator(SDE_NOISE_SEED), []

            def noise_sampler(sigma, sigma_next, g=g, noise=noise):
                noise.append(torch.randn(x.shape, generator=g))
                return noise[-1]

            kwargs["noise_sampler"] = noise_sampler
        fn = getattr(K.sampling, f"sample_{name}")
        torch.manual_seed(0)  # Euler / Heun draw (unused, churn 0) noise from the global RNG
        final = fn(
            denoiser,
            x,
            sigmas,
            extra_args={"class_cond": classes},
            callback=lambda info, steps=steps: steps.append(info["x"]),
            disable=True,
            **kwargs,
        )
        tensors[f"{name}.trajectory"] = torch.stack([*steps, final])
        if name == "dpmpp_3m_sde":
            tensors[f"{name}.noise"] = torch.stack(noise)
    _save(tensors, out / "samplers.safetensors")
    files["samplers"] = {
        "file": "samplers.safetensors",
        "holds": "x (start, = unit noise * sigmas[0]), sigmas, class_cond; <sampler>.trajectory: "
        "the x of every step (the callback's x) then the result, of k_diffusion.sampling."
        "sample_<sampler> on D = make_denoiser_wrapper(config)(model); dpmpp_3m_sde.noise: "
        "the noise injected by its noise_sampler, one N(0, I) draw per step from a "
        "torch.Generator seeded with sde_noise_seed",
        "model": SAMPLER_MODEL,
        "schedule": SAMPLER_SCHEDULE,
        "samplers": list(SAMPLERS),
        "sde_noise_seed": SDE_NOISE_SEED,
        "eta": 1.0,
    }


def generate(K: ModuleType, out: Path = FIXTURES) -> dict:
    """Write every fixture into ``out`` with the reference package ``K`` (``k_diffusion``,
    imported by the loader's ``import_k_diffusion``, see :func:`main`); returns the manifest.
    One thread, fixed seeds, float32; the caller's RNG state and thread count are restored."""
    import natten

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict = {"models": {}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():  # NATTEN's CPU path: forward only
            _models(K, out, files)
            _diffusion(K, out, files)
            _schedules(K, out, files)
            _samplers(K, out, files)
    finally:
        torch.set_num_threads(threads)
    manifest = {
        "about": "numbers computed by the authors' k-diffusion (image_transformer_v2, the "
        "Denoiser, the samplers) for tests/test_reference_fixtures.py; generated by "
        "tests/reference/make_fixtures.py — no k-diffusion code",
        "k_diffusion_commit": _k_diffusion_commit(K),
        "torch": torch.__version__.split("+")[0],
        "natten": natten.__version__,
        "dtype": "float32 (densities: float64)",
        "threads": 1,
        "sigma_data": SIGMA_DATA,
        "model_files": "<name>.json: the k-diffusion config; <name>.weights.safetensors: the "
        "reference state dict (parameters re-drawn, buffers included); <name>.io.safetensors: "
        "per input case <case>.x, .sigma, .class_cond (when num_classes > 0), .aug_cond and "
        ".output = F(x, sigma, aug_cond, class_cond) of the reference model",
        **files,
    }
    _write_json(manifest, out / MANIFEST)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=FIXTURES, help=f"default: {FIXTURES}")
    args = parser.parse_args(argv)
    from hdit_edu import reference_source as loader  # the only import of the reference loader

    src = loader.k_diffusion_source()
    if src is None:
        sys.exit(f"set {loader.K_DIFFUSION_SRC_ENV} to a clone of crowsonkb/k-diffusion")
    with loader.import_k_diffusion(src) as K:
        manifest = generate(K, args.out)
    size = sum(p.stat().st_size for p in Path(args.out).iterdir())
    print(f"wrote {len(list(Path(args.out).iterdir()))} files, {size} bytes, into {args.out}")
    print(f"k-diffusion {manifest['k_diffusion_commit']}, torch {manifest['torch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
