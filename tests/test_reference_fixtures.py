"""hdit-edu against the authors' k-diffusion, on every test run: the reference's numbers are
frozen in ``tests/reference/fixtures/`` (written by ``tests/reference/make_fixtures.py``, which
needs the reference source; ``manifest.json`` says what each file holds and which k-diffusion
commit computed it). These tests need no reference source and never skip:

* **Models.** Each fixture model's k-diffusion weights go through ``from_k_diffusion``; our
  HDiT must give the reference's outputs on the stored inputs — square inputs, and non-square
  inputs to square configs — to within 1e-5 relative (fp32; relative to the largest |output|).
  ``to_k_diffusion`` must give back the reference's tensor names and shapes (and values). The
  rectangular-``input_size`` model ([H, W] = [16, 32]) converts to an H×W config and back.
* **Diffusion.** The preconditioner's c_skip, c_out, c_in, c_noise; the denoiser output and the
  training loss for each loss weighting the reference has; the log-normal and
  interpolated-cosine σ densities on fixed uniforms; the Karras schedule.
* **Samplers.** Every step of Euler, Heun and DPM++(2M), and of DPM++(3M) SDE with the
  reference's injected noise, driven by a converted fixture model.

With ``HDIT_K_DIFFUSION_SRC`` set, one more test regenerates the fixtures from the reference
and checks that they are bit-identical to the committed ones.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hdit_edu import interop
from hdit_edu.diffusion import (
    Denoiser,
    c_in,
    c_noise,
    c_out,
    c_skip,
    cosine_interpolated_sigma,
    lognormal_sigma,
)
from hdit_edu.sampling import karras_sigmas, sample

REFERENCE = Path(__file__).parent / "reference"
FIXTURES = REFERENCE / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
MODELS = MANIFEST["models"]
LOADABLE = sorted(MODELS)  # every fixture model converts (rectangular input sizes too)


def _input_size(name: str) -> list[int]:
    return json.loads((FIXTURES / MODELS[name]["config"]).read_text())["model"]["input_size"]


RECTANGULAR = sorted(name for name in MODELS if len(set(_input_size(name))) == 2)  # [H, W], H ≠ W

MODEL_RTOL = 1e-5  # fp32 model outputs: max |ours − reference| / max |reference|
# Every step's x, relative to its largest |x|. DPM++(3M) SDE: k-diffusion computes its step
# coefficients (h, e^(−h), √(1 − e^(−2ηh)), φ₂, φ₃) from float32 σ tensors, hdit-edu in float64;
# with one schedule and one noise stream that alone moves x by a few 1e-6 here (and by 6e-4 over
# 50 steps down to σ = 0.002 on a sharp mixture denoiser; in float64 both agree to 1e-14).
SAMPLER_RTOL = {"euler": 5e-6, "heun": 5e-6, "dpmpp_2m": 5e-6, "dpmpp_3m_sde": 2e-5}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _load(name: str) -> tuple[dict, dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """(k-diffusion config, k-diffusion state dict, {input case: {x, sigma, …, output}})."""
    entry = MODELS[name]
    config = json.loads((FIXTURES / entry["config"]).read_text())
    weights = load_file(str(FIXTURES / entry["weights"]))
    cases: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(FIXTURES / entry["io"])).items():
        case, tensor = key.split(".", 1)
        cases.setdefault(case, {})[tensor] = value
    assert sorted(cases) == sorted(entry["inputs"]), name
    return config, weights, cases


def _tensors(entry: str) -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / MANIFEST[entry]["file"]))


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    assert got.shape == expected.shape, (got.shape, expected.shape)
    return ((got - expected).abs().max() / expected.abs().max()).item()


def _forward(model, case: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(
            case["x"], case["sigma"], class_cond=case.get("class_cond"), aug_cond=case["aug_cond"]
        )


def _denoiser(name: str) -> Denoiser:
    """D of a fixture model, converted to hdit-edu (σ_data from the converted config)."""
    config, weights, _ = _load(name)
    sigma_data = interop.config_from_k_diffusion(config, strict=False).diffusion.sigma_data
    return Denoiser(interop.from_k_diffusion(config, weights), sigma_data=sigma_data)


# ----------------------------------------------------------------------------------------------
# The fixtures themselves
# ----------------------------------------------------------------------------------------------


def test_fixture_models_cover_the_issue_list():
    """Issue 15's list: every attention kind, 1–4 levels, patch 1/2/4, mapping depth 1/2,
    with and without classes, a rectangular input_size and non-square inputs to square
    configs; and the files stay small."""
    assert len(MODELS) >= 6
    configs = {name: _load(name)[0]["model"] for name in MODELS}
    attentions = {a["type"] for m in configs.values() for a in m["self_attns"]}
    assert attentions == {"neighborhood", "shifted-window", "global", "none"}
    assert {len(m["widths"]) for m in configs.values()} == {1, 2, 3, 4}
    assert {m["patch_size"][0] for m in configs.values()} == {1, 2, 4}
    assert {m["mapping_depth"] for m in configs.values()} == {1, 2}
    classes = {_load(name)[0]["dataset"]["num_classes"] for name in MODELS}
    assert 0 in classes and max(classes) > 0
    assert any(m["input_size"][0] != m["input_size"][1] for m in configs.values())
    non_square_inputs = [
        name
        for name in LOADABLE
        if any(h != w for h, w in MODELS[name]["inputs"].values())
        and configs[name]["input_size"][0] == configs[name]["input_size"][1]
    ]
    assert len(non_square_inputs) >= 2, non_square_inputs
    for name in MODELS:
        _, weights, cases = _load(name)
        assert all(case["aug_cond"].abs().sum() > 0 for case in cases.values())  # augmentation
        zero = [key for key, value in weights.items() if not value.any()]
        assert not zero, f"{name}: all-zero tensors {zero}"  # zero-initialised ones re-drawn
        scales = [value for key, value in weights.items() if key.endswith("self_attn.scale")]
        assert all((s > 0).all() and (s != 10).all() for s in scales), name  # init: 10
    size = sum(path.stat().st_size for path in FIXTURES.iterdir())
    assert size <= 3_000_000, f"fixtures take {size} bytes; allowed: 3 MB"


@pytest.mark.parametrize("name", LOADABLE)
def test_from_k_diffusion_gives_the_reference_outputs(name):
    config, weights, cases = _load(name)
    ours = interop.from_k_diffusion(config, weights)
    errors = {}
    for case_name, case in cases.items():
        expected = case["output"]
        assert expected.abs().mean() > 0.1  # the stored function is non-trivial
        errors[case_name] = _relative_error(_forward(ours, case), expected)
    print(f"\n{name}: relative error " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    worst = max(errors.values())
    assert worst <= MODEL_RTOL, f"{name}: hdit-edu differs from k-diffusion by {errors}"


@pytest.mark.parametrize("name", RECTANGULAR)
def test_rectangular_config_converts_to_height_by_width(name):
    """k-diffusion's ``input_size: [H, W]`` is our ``resolution = (H, W)``: the model is built
    for that grid, written back as ``[H, W]``, and its σ density's ``image_d`` is the longer
    side, as k-diffusion sets it (``max(input_size)``). Its outputs: the test above."""
    config, weights, cases = _load(name)
    height, width = config["model"]["input_size"]
    ours = interop.config_from_k_diffusion(config, strict=False)
    assert ours.model.resolution == (height, width)
    model = interop.from_k_diffusion(config, weights)
    assert all(tuple(case["x"].shape[-2:]) == (height, width) for case in cases.values())
    kd_config = interop.config_to_k_diffusion(ours)
    assert kd_config["model"]["input_size"] == [height, width]
    assert kd_config["model"]["sigma_sample_density"]["noise_d_high"] == max(height, width)
    assert interop.to_k_diffusion(model)[0]["model"]["input_size"] == [height, width]


@pytest.mark.parametrize("name", LOADABLE)
def test_to_k_diffusion_round_trips_names_and_shapes(name):
    config, weights, _ = _load(name)
    kd_config, kd_state = interop.to_k_diffusion(interop.from_k_diffusion(config, weights))
    assert {k: tuple(v.shape) for k, v in kd_state.items()} == {
        k: tuple(v.shape) for k, v in weights.items()
    }
    for key, value in weights.items():  # the permutations invert; 1 − (1 − fac) rounds
        torch.testing.assert_close(kd_state[key], value, rtol=0, atol=1e-7, msg=key)
    assert interop.model_config_from_k_diffusion(kd_config) == (
        interop.model_config_from_k_diffusion(config)
    )


# ----------------------------------------------------------------------------------------------
# Diffusion: preconditioner, loss, σ densities, schedule
# ----------------------------------------------------------------------------------------------


F32_2ULP = 2 * torch.finfo(torch.float32).eps  # 2.4e-7 relative


def test_preconditioner_scalings_equal_the_reference():
    t = _tensors("diffusion")
    sigma = t["scalings.sigma"]
    for sd in MANIFEST["diffusion"]["scaling_sigma_data"]:
        for name, fn in (("c_skip", c_skip), ("c_out", c_out), ("c_in", c_in)):
            expected = t[f"scalings.sigma_data_{sd}.{name}"]
            # two float32 ulps: the golden numbers were made on an Intel Xeon, and another CPU
            # kind's vector sqrt / division round differently by one ulp (AMD EPYC: 1.0 ulp)
            torch.testing.assert_close(fn(sigma, sd), expected, rtol=F32_2ULP, atol=0, msg=name)
    torch.testing.assert_close(c_noise(sigma), t["scalings.c_noise"], rtol=0, atol=1e-7)


@pytest.mark.parametrize("weighting", MANIFEST["diffusion"]["loss_weightings"])
def test_loss_equals_the_reference(weighting):
    t = _tensors("diffusion")
    denoiser = _denoiser(MANIFEST["diffusion"]["loss_model"])
    cond = {"class_cond": t["loss.class_cond"], "aug_cond": t["loss.aug_cond"]}
    x0, noise, sigma = t["loss.x0"], t["loss.noise"], t["loss.sigma"]
    with torch.no_grad():
        loss = denoiser.loss(x0, noise, sigma, weighting=weighting, **cond)
        expected = t[f"loss.{weighting}"]
        torch.testing.assert_close(loss, expected, rtol=2e-6, atol=0)
        if weighting == "karras":
            d = denoiser(x0 + noise * sigma[:, None, None, None], sigma, **cond)
            assert _relative_error(d, t["denoiser.output"]) <= MODEL_RTOL


@pytest.mark.parametrize("name", sorted(MANIFEST["diffusion"]["densities"]))
def test_sigma_densities_equal_the_reference(name):
    """Our inverse CDFs, with the parameters ``config_from_k_diffusion`` reads from the
    reference's config, map the stored uniforms onto the reference's σ (float64).

    The log-normal is compared untruncated, as k-diffusion draws it: hdit-edu's
    ``sample_sigmas`` confines it to the config's [sigma_min, sigma_max] (here [1e-3, 1e3]),
    which moves these σ by up to 9e-5 (EDM's −1.2 ± 1.2) and 2e-3 (−0.4 ± 1.6) relative."""
    configs = json.loads((FIXTURES / MANIFEST["diffusion"]["configs"]).read_text())
    kd_config = configs["densities"][name]
    t = _tensors("diffusion")
    u, expected = t[f"density.{name}.u"], t[f"density.{name}.sigma"]
    config = interop.config_from_k_diffusion(kd_config)
    d = config.diffusion
    if d.sigma_density == "lognormal":
        # k-diffusion's log-normal is not truncated and squeezes u into [1e-7, 1 − 1e-7].
        got = lognormal_sigma(u * (1 - 2e-7) + 1e-7, d.lognormal_mean, d.lognormal_std)
        rtol = 1e-6  # k-diffusion holds loc and scale in float32
    else:
        got = cosine_interpolated_sigma(
            u,
            config.model.resolution,
            d.noise_d_low,
            d.noise_d_high,
            sigma_data=d.sigma_data,
            sigma_min=d.sigma_min,
            sigma_max=d.sigma_max,
        )
        rtol = 1e-12
    torch.testing.assert_close(got, expected, rtol=rtol, atol=0)


@pytest.mark.parametrize("name", sorted(MANIFEST["schedules"]["karras"]))
def test_karras_schedule_equals_the_reference(name):
    spec = MANIFEST["schedules"]["karras"][name]
    expected = _tensors("schedules")[f"karras.{name}"]
    got = karras_sigmas(spec["n"], spec["sigma_min"], spec["sigma_max"], spec["rho"])
    assert got[-1] == 0 and expected[-1] == 0
    torch.testing.assert_close(got, expected, rtol=2e-6, atol=0)  # theirs in float32


# ----------------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", MANIFEST["samplers"]["samplers"])
def test_samplers_follow_the_reference_step_by_step(sampler):
    spec = MANIFEST["samplers"]
    t = _tensors("samplers")
    denoiser = _denoiser(spec["model"])
    expected = t[f"{sampler}.trajectory"]
    generator = None
    if sampler == "dpmpp_3m_sde":
        # The reference's noise came from this seed through its noise_sampler, one draw per
        # step; our sampler draws the same stream from a generator with the same seed.
        noise = t[f"{sampler}.noise"]
        stream = torch.Generator().manual_seed(spec["sde_noise_seed"])
        assert torch.equal(
            torch.stack([torch.randn(noise.shape[1:], generator=stream) for _ in noise]), noise
        ), "torch.randn no longer draws the stored noise stream: the comparison needs it"
        generator = torch.Generator().manual_seed(spec["sde_noise_seed"])
    steps = []
    final = sample(
        denoiser,
        t["x"],
        t["sigmas"],
        sampler,
        class_cond=t["class_cond"],
        generator=generator,
        callback=lambda info: steps.append(info["x"]),
    )
    got = torch.stack([*steps, final])
    assert got.shape == expected.shape
    errors = [_relative_error(g, e) for g, e in zip(got, expected)]
    print(f"\n{sampler}: worst relative error per step {max(errors):.2e}")
    assert max(errors) <= SAMPLER_RTOL[sampler], (sampler, errors)


# ----------------------------------------------------------------------------------------------
# Regeneration (needs the reference source)
# ----------------------------------------------------------------------------------------------


def _make_fixtures():
    """``tests/reference/make_fixtures.py`` as a module (tests/ is not a package)."""
    name = "hdit_edu_reference_make_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REFERENCE / "make_fixtures.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.filterwarnings("ignore:return_lse is deprecated")  # NATTEN's flex path (reference)
def test_regenerated_fixtures_are_bit_identical(k_diffusion, tmp_path):
    _make_fixtures().generate(k_diffusion, tmp_path)
    committed = sorted(p.name for p in FIXTURES.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == committed
    differ = [n for n in committed if (tmp_path / n).read_bytes() != (FIXTURES / n).read_bytes()]
    assert not differ, (
        f"regenerated fixtures differ from the committed ones: {differ} (committed: "
        f"k-diffusion {MANIFEST['k_diffusion_commit']}, torch {MANIFEST['torch']}, NATTEN "
        f"{MANIFEST['natten']})"
    )
