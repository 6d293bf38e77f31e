"""Smoke tests of the benchmark scripts (``benchmarks/``): no timings are asserted.

Each script's ``main`` runs at its smallest size (``--quick``: toy-sized models, one repeat, one
CPU thread) and must write a result JSON with the shared schema (``common.RESULT_KEYS``) whose
numbers are consistent with each other and with the library (GFLOPs, resolved attention
backends, the attention-call count of a step). The power-law fit is checked on exact power laws,
where it must recover the exponent. With ``HDIT_K_DIFFUSION_SRC`` set, the side-by-side loader
must give k-diffusion's model our weights (same outputs).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import common  # noqa: E402
import gpu_checks  # noqa: E402
import loader_throughput  # noqa: E402
import profile_step  # noqa: E402
import sampling_speed  # noqa: E402
import scaling  # noqa: E402
import train_throughput  # noqa: E402

from hdit_edu.flops import analytic_gflops, analytic_params  # noqa: E402
from hdit_edu.models import build_model, set_attention_backend  # noqa: E402
from hdit_edu.planner import BF16_ACTIVATION_FACTOR, activation_bytes, plan  # noqa: E402
from hdit_edu.presets import get_config  # noqa: E402

PIXELS = [64**2, 128**2, 256**2, 512**2, 1024**2]


def _load(path: Path) -> dict:
    document = json.loads(path.read_text())
    assert tuple(document) == common.RESULT_KEYS
    assert document["schema_version"] == common.SCHEMA_VERSION
    env = document["environment"]
    assert env["device_type"] == "cpu" and env["torch_threads"] == 1  # --quick: one thread
    assert env["versions"]["torch"] == torch.__version__
    assert len(document["load_average"]["before"]) == 3
    assert document["settings"]["quick"] is True
    return document


# ----------------------------------------------------------------------------------------------
# The growth exponent
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0.5, 1.0, 1.15, 2.0])
def test_fit_exponent_recovers_an_exact_power_law(k):
    c = 3.7e-5
    fit = common.fit_exponent(PIXELS, [c * p**k for p in PIXELS])
    assert fit["k"] == pytest.approx(k, abs=1e-12)
    assert fit["c"] == pytest.approx(c, rel=1e-9)
    assert fit["points"] == len(PIXELS)


def test_scaling_fits_use_the_fit_range_and_give_local_exponents():
    """time ∝ pixels^1.1 for "A" (GFLOPs ∝ pixels), ∝ pixels^2 for "B" (GFLOPs ∝ pixels^1.5)."""
    rows = []
    for label, k_time, k_flops in (("A", 1.1, 1.0), ("B", 2.0, 1.5)):
        for p in PIXELS:
            res = math.isqrt(p)
            rows.append(
                {
                    "model": label,
                    "resolution": res,
                    "pixels": p,
                    "analytic_gflops": 2.0 * p**k_flops,
                    "forward": {"median_s": 1e-6 * p**k_time},
                    "forward+backward": {"skipped": "out of memory"} if res > 256 else {},
                }
            )
    # a kink below the fit range must not change the fitted k
    rows[0]["forward"]["median_s"] *= 10
    fits = scaling.fits(rows, (128, 1024), ["forward", "forward+backward"])
    assert fits["A"]["forward"]["fit_resolutions"] == [128, 256, 512, 1024]
    assert fits["A"]["forward"]["k_time"] == pytest.approx(1.1, abs=1e-12)
    assert fits["A"]["forward"]["k_gflops"] == pytest.approx(1.0, abs=1e-12)
    assert fits["B"]["forward"]["k_time"] == pytest.approx(2.0, abs=1e-12)
    assert fits["B"]["forward"]["k_gflops"] == pytest.approx(1.5, abs=1e-12)
    local = fits["A"]["forward"]["local_k_time"]
    assert [(e["from"], e["to"]) for e in local] == [(64, 128), (128, 256), (256, 512), (512, 1024)]
    assert local[0]["k_time"] == pytest.approx(1.1 - math.log(10) / math.log(4), abs=1e-12)
    assert all(e["k_time"] == pytest.approx(1.1, abs=1e-12) for e in local[1:])
    assert "k_time" not in fits["A"]["forward+backward"]  # no timed points


def test_cpu_peak_memory_counts_tensors_alive_at_once():
    """4 MB and 8 MB alive together, then 4 MB freed and 2 MB allocated: the peak is 12 MB
    above entry, whatever was allocated before (the 4 MB ``kept``) or after."""
    kept = torch.empty(10**6, dtype=torch.float32)
    with common.PeakMemory(torch.device("cpu")) as memory:
        a = torch.empty(10**6, dtype=torch.float32)
        b = torch.empty(2 * 10**6, dtype=torch.float32)
        del a
        c = torch.empty(5 * 10**5, dtype=torch.float32)
        del b, c
    assert memory.peak_MiB * 2**20 == 12 * 10**6
    assert "allocator events" in memory.kind
    del kept


# ----------------------------------------------------------------------------------------------
# The scripts, end to end at their smallest size
# ----------------------------------------------------------------------------------------------


def test_scaling_quick_writes_json_and_plot(tmp_path):
    threads = torch.get_num_threads()
    out = tmp_path / "scaling.json"
    assert scaling.main(["--quick", "--device", "cpu", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads  # restored
    document = _load(out)
    rows = document["results"]
    assert [(r["model"], r["resolution"]) for r in rows] == [
        ("HDiT-B/4 toy-scaled", 32),
        ("HDiT-B/4 toy-scaled", 64),
        ("DiT-B/4 toy-scaled", 32),
        ("DiT-B/4 toy-scaled", 64),
    ]
    for row in rows:
        step = "E" if row["arch"] == "hdit" else "R1"
        config = scaling.model_config(step, row["resolution"], "toy")
        assert row["analytic_gflops"] == analytic_gflops(config, row["resolution"])
        assert row["pixels"] == row["resolution"] ** 2
        for mode in scaling.MODES:
            assert row[mode]["median_s"] > 0 and row[mode]["repeats"] == 1
            assert row[mode]["peak_memory_MiB"] is not None
    # toy HDiT at 64²: 3 levels, neighborhood attention on the 32² and 16² grids (masked SDPA)
    assert rows[1]["levels"] == 3
    assert [(b["grid"], b["backend"]) for b in rows[1]["na_backends"]] == [
        ([32, 32], "masked-sdpa"),
        ([16, 16], "masked-sdpa"),
    ]
    assert rows[2]["na_backends"] == []  # DiT: global attention only
    k = document["summary"]["k"]
    assert set(k) == {"HDiT-B/4 toy-scaled", "DiT-B/4 toy-scaled"}
    hdit = [r for r in rows if r["arch"] == "hdit"]
    expected = math.log(hdit[1]["forward"]["median_s"] / hdit[0]["forward"]["median_s"]) / math.log(
        4
    )
    assert k["HDiT-B/4 toy-scaled"]["forward"] == pytest.approx(expected, rel=1e-9)
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sampling_speed_quick_extrapolates_explicitly(tmp_path):
    out = tmp_path / "sampling.json"
    assert sampling_speed.main(["--quick", "--device", "cpu", "--out", str(out)]) == 0
    document = _load(out)
    (row,) = document["results"]
    assert row["config"] == "toy" and row["batch_size"] == 1
    assert (row["steps"], row["measured_steps"], row["extrapolated"]) == (50, 2, True)
    assert row["model_evaluations_per_image"] == 50
    assert row["seconds_per_step"] == pytest.approx(row["median_s"] / 2)
    assert row["images_per_s"] == pytest.approx(1 / (50 * row["seconds_per_step"]))
    assert row["forward_gflops_per_image"] == analytic_gflops(get_config("toy"))
    assert row["na_backends"] == [
        {"level": 0, "grid": [16, 16], "kernel_size": 7, "backend": "masked-sdpa"}
    ]
    assert document["summary"]["toy"]["images_per_s"] == row["images_per_s"]


def test_profile_step_quick_counts_the_attention_calls(tmp_path):
    out = tmp_path / "profile.json"
    assert profile_step.main(["--quick", "--device", "cpu", "--out", str(out)]) == 0
    document = _load(out)
    (row,) = document["results"]
    assert row["backend"] == "auto" and row["na_backends"][0]["backend"] == "masked-sdpa"
    # toy: depth 2 down + 2 up at the neighborhood level → 4 calls per step
    assert row["na_calls_per_step"] == 4
    assert 0 < row["na_share"] < 1
    assert row["na_share"] == pytest.approx(row["na_forward_share"] + row["na_backward_share"])
    assert row["na_share_below_max"] == (row["na_share"] < 0.5)
    assert len(row["top_self_time"]) == 12
    assert document["settings"]["batch_size"] == 4


def test_train_throughput_quick_rows_are_consistent(tmp_path):
    out = tmp_path / "throughput.json"
    argv = ["--quick", "--device", "cpu", "--backends", "auto", "torch", "natten-flex"]
    assert train_throughput.main([*argv, "--out", str(out)]) == 0
    document = _load(out)
    rows = {row["backend"]: row for row in document["results"]}
    assert list(rows) == ["auto", "torch", "natten-flex"]
    gflops = analytic_gflops(get_config("toy"))
    for backend, picked in (("auto", "masked-sdpa"), ("torch", "torch")):
        row = rows[backend]
        assert row["config"] == "toy" and row["batch_size"] == 4 and row["mode"] == "eager"
        assert [b["backend"] for b in row["na_backends"]] == [picked]
        assert row["samples_per_s"] == pytest.approx(4 / row["step_time"]["median_s"])
        assert row["forward_gflops_per_image"] == pytest.approx(gflops)
        assert row["model_tflops_per_s"] == pytest.approx(row["samples_per_s"] * 6 * gflops / 1e3)
        assert row["mfu"] is None and row["precision"] == "fp32"
        assert row["peak_memory_MiB"] > 0
    assert "forward-only" in rows["natten-flex"]["skipped"]  # NATTEN cannot train on CPU
    assert document["summary"]["toy b4 natten-flex eager"] == {
        "skipped": rows["natten-flex"]["skipped"]
    }


def test_mfu_closed_form():
    """E at 128² (31.37 GMAC forward), 256 images in 1 s on an H100: 256 · 6 · 31.37e9 FLOP/s."""
    assert train_throughput.bf16_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert train_throughput.bf16_peak("Tesla T4") is None
    numbers = train_throughput.throughput(1.0, 256, 31.37, 989e12)
    assert numbers["samples_per_s"] == 256
    assert numbers["model_tflops_per_s"] == pytest.approx(256 * 6 * 31.37e9 / 1e12)
    assert numbers["mfu"] == pytest.approx(256 * 6 * 31.37e9 / 989e12)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-size", "max"], "needs --device cuda"),
        (["--batch-size", "lots"], "a positive int or 'max'"),
        (["--backends", "flash"], "allowed: auto"),
        (["--configs", "nope"], "nope"),
    ],
)
def test_train_throughput_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        train_throughput.parse_args(["--device", "cpu", *argv])
    assert message in capsys.readouterr().err


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="allowed: cpu, cuda"):
        common.resolve_device("tpu")
    with pytest.raises(ValueError, match="allowed: auto"):
        set_attention_backend(torch.nn.Linear(1, 1), "flash")
    with pytest.raises(ValueError, match="allowed: b4, toy"):
        scaling.model_config("E", 128, "xl")


# ----------------------------------------------------------------------------------------------
# The k-diffusion side-by-side loader (only with the reference source)
# ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(
    not os.environ.get(common.K_DIFFUSION_ENV),
    reason=f"set {common.K_DIFFUSION_ENV} to a k-diffusion checkout for the side-by-side loader",
)
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.filterwarnings("ignore:return_lse is deprecated")
def test_reference_model_has_our_config_and_weights():
    torch.manual_seed(0)
    model = build_model(get_config("toy")).eval()
    with torch.no_grad():
        for p in model.parameters():  # every weight non-zero: F is a non-trivial function
            p.add_(torch.randn_like(p) * 0.05)
    g = torch.Generator().manual_seed(1)
    x, sigma = torch.randn(2, 3, 32, 32, generator=g), torch.tensor([0.3, 4.0])
    classes = torch.tensor([1, 8])  # 8 = the dropped class
    before = sys.modules.get("k_diffusion")  # the session's `k_diffusion` fixture, if open
    with common.reference_model(model, torch.device("cpu")) as reference, torch.no_grad():
        assert type(reference).__name__ == "ImageTransformerDenoiserModelV2"
        expected = model(x, sigma, class_cond=classes)
        got = reference(x, sigma, class_cond=classes)
    assert expected.abs().mean() > 0.1
    assert (got - expected).abs().max() < 1e-5
    assert sys.modules.get("k_diffusion") is before  # the loader cleans up


def test_loader_throughput_quick_measures_every_format_worker_and_augmentation(tmp_path):
    """--quick: 64² files, 0 and 1 workers, PNG / JPEG / prepared, augmentation off and on;
    the per-GPU need is Table 6's FFHQ-1024 arithmetic."""
    out = tmp_path / "loader.json"
    assert loader_throughput.main(["--quick", "--out", str(out)]) == 0
    document = _load(out)
    rows = document["results"]
    keys = [(r["format"], r["augment_p"], r["workers"]) for r in rows]
    assert sorted(keys) == sorted(
        (f, p, w) for f in ("png", "jpeg", "prepared") for p in (0.0, 0.12) for w in (0, 1)
    )
    for r in rows:
        assert r["images_timed"] == 2 * 2 and r["images_per_s"] > 0
        assert r["images_per_s_per_worker"] == r["images_per_s"] / max(1, r["workers"])
    need = document["summary"]["ffhq1024_needs"]["images_per_s_per_gpu"]
    assert need == pytest.approx(1e6 * 256 / (5 * 86400) / 64) and round(need, 2) == 9.26
    assert document["summary"]["prepare_images_per_s_one_process"] > 0
    # the made images compress like photographs, not like flat colour: PNG > JPEG > 0
    size = {r["format"]: r["file_MiB"] for r in rows}
    assert size["prepared"] > size["png"] > size["jpeg"] > 0


# ----------------------------------------------------------------------------------------------
# The GPU checks (issue 17), smoke run on the CPU
# ----------------------------------------------------------------------------------------------


def test_gpu_checks_smoke_measures_every_stage(tmp_path):
    """``gpu_checks.py --smoke``: the GPU check's stages shortened on the CPU (the toy config in
    both roles, a pretend 0.15 GiB device so the plan accumulates). The preflight's plans are the
    planner's own; the bf16 factor is a real CPU-autocast measurement (toy, 2 → 4 images) near
    the planner's; the planned step runs with accumulation and is predicted within 10 %; each
    measured step holds exactly the resident tensors the planner counts; the model step on one
    batch kept on the device gives samples/s."""
    assert gpu_checks.main(["--smoke", "--out", str(tmp_path)]) == 0
    document = json.loads((tmp_path / "gpu-checks-cpu-smoke.json").read_text())
    assert tuple(document)[: len(common.RESULT_KEYS)] == common.RESULT_KEYS
    env = document["environment"]
    assert env["device_type"] == "cpu" and env["device"] and env["torch_threads"] == 1
    assert env["versions"]["torch"] == torch.__version__ and "natten" in env
    assert [b["backend"] for b in env["na_backends"]["toy"]] == ["masked-sdpa"]
    assert list(document["stage_times_s"]) == list(gpu_checks.STAGES)
    assert all(t is not None and t >= 0 for t in document["stage_times_s"].values())
    results = document["results"]

    checks = results["preflight"]["checks"]
    config = gpu_checks.config_for("toy")
    config.training.batch_size = 8
    expected = plan(config, 1, gpu_checks.SMOKE_SETTINGS["gpu_memory_GiB"], "bf16")
    assert checks["plan_ffhq"]["micro_batch"] == expected.micro_batch
    assert checks["plan_ffhq"]["days"] == {"low": expected.days[0], "high": expected.days[1]}
    assert "torch gather" in checks["kernel_path"]  # no fused NATTEN kernels on the CPU

    factor = results["bf16_factor"]["toy"]
    assert [(r["precision"], r["batch"]) for r in factor["rows"]] == [
        ("bf16 autocast", 2), ("bf16 autocast", 4), ("fp32", 2), ("fp32", 4)
    ]  # fmt: skip
    assert factor["planner_assumes"] == BF16_ACTIVATION_FACTOR
    assert factor["bf16_over_fp32"] == pytest.approx(BF16_ACTIVATION_FACTOR, abs=0.08)
    per_image = factor["fp32"]["measured_activation_bytes_per_image"]
    assert per_image == pytest.approx(activation_bytes(config, "none", "fp32"), rel=0.1)

    memory = results["ffhq_step"]["memory"]
    (attempt,) = memory["attempts"]  # no out-of-memory: measured as planned
    assert attempt["micro_batch"] == expected.micro_batch and attempt["grad_accum"] == 2
    measured = attempt["measured"]
    resident = 16 * analytic_params(config)  # weights 4P + EMA 4P + AdamW moments 8P
    assert measured["resident_bytes"] == pytest.approx(resident, rel=1e-3)  # + buffers
    assert measured["peak_bytes"] == measured["resident_bytes"] + measured["step_peak_bytes"]
    assert abs(attempt["error_percent"]) < 10
    step = results["ffhq_step"]["time"]
    assert step["micro_batch"] == expected.micro_batch and step["precision"] == "bf16 autocast"
    assert step["samples_per_s"] == pytest.approx(step["micro_batch"] / step["median_s"])
    assert step["mfu"] is None  # no CPU peak
    assert len(step["planner_mfu_range"]) == 2

    auto = results["imagenet128"]["auto"]
    assert auto["samples_per_s"] > 0 and auto["micro_batch"] == expected.micro_batch
    assert set(results["imagenet128"]) >= {"plan", "auto", "torch"}
    summary = document["summary"]
    assert summary["bf16_over_fp32"]["toy"] == factor["bf16_over_fp32"]
    assert summary["ffhq_step_memory"]["error_percent"] == attempt["error_percent"]
    tables = gpu_checks.markdown(document)  # --markdown: the README's table
    assert f"{attempt['measured_peak_bytes'] / 2**30:.2f}" in tables
    assert "| bf16 / fp32 activations, toy | 0.67 |" in tables


def test_gpu_checks_time_guard_skips_what_does_not_fit(tmp_path):
    """With no time left, a stage records each measurement as skipped, and the JSON is still
    written with the device named."""
    out = tmp_path / "checks.json"
    assert (
        gpu_checks.main(["--smoke", "--stages", "imagenet128", "--budget", "0", "--out", str(out)])
        == 0
    )
    document = json.loads(out.read_text())
    runs = document["results"]["imagenet128"]
    assert {"auto", "torch"} <= set(runs)
    assert all("stage budget" in runs[b]["skipped"] for b in ("auto", "torch"))
    assert document["environment"]["device"] and "imagenet128" in document["summary"]


def test_gpu_checks_refuses_the_cpu_without_smoke():
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(SystemExit):
        gpu_checks.main(["--device", "cpu"])
