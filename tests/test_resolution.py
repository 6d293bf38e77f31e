"""Sampling at another resolution (issue 19): the two position readings in closed form, the
additive table's border extension, the σ schedule's resolution shift, the size checks with their
messages, the all-local config, ``hdit-edu sample --resolution``, and the analysis of the
shipped results (``results/resolution-toy/study.toml``, analysed by
:mod:`hdit_edu.studies.cell_report`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from hdit_edu.configs import (
    Config,
    DiffusionConfig,
    LevelConfig,
    ModelConfig,
    all_local,
    sampling_sigma_range,
)
from hdit_edu.diffusion import Denoiser
from hdit_edu.models import build_model
from hdit_edu.resolution import position_span, sampling_config, shifted_sigmas
from hdit_edu.rope import AdditivePosEmb, make_axial_pos, token_positions
from hdit_edu.sampling import generate, karras_sigmas
from hdit_edu.stats import t_interval
from hdit_edu.studies.report import study_script


def p4k3_config(pos_emb: str = "rope", middle: str = "global") -> Config:
    """The toy chain's p4k3 geometry at tiny widths: 32², patch 4, outer 8×8 tokens with a 3×3
    neighborhood, inner 4×4 tokens."""
    outer = LevelConfig(depth=1, width=32, head_dim=16, attention="neighborhood", kernel_size=3)
    inner = LevelConfig(depth=1, width=64, head_dim=16, attention=middle, kernel_size=3)
    model = ModelConfig(
        levels=[outer, inner], patch_size=4, num_classes=8, aug_dim=0, pos_emb=pos_emb,
        resolution=32,
    )  # fmt: skip
    model.mapping.width = 32
    config = Config(name="t", model=model, diffusion=DiffusionConfig(loss_weighting="snr"))
    config.validate()
    return config


# --- positions -------------------------------------------------------------------------------


def test_normalised_positions_are_the_training_range_and_grid_positions_extend_it():
    train = (8, 8)
    # normalised: 16 cell centres on [-1, 1] → ±(1 − 1/16), spacing 2/16
    pos = token_positions(16, 16, train, "normalised")
    assert torch.equal(pos, make_axial_pos(16, 16))
    assert pos[0, 0, 0].item() == pytest.approx(-15 / 16)
    assert (pos[1, 0, 0] - pos[0, 0, 0]).item() == pytest.approx(2 / 16)
    # grid: the training spacing 2/8 = 0.25, so 16 tokens reach ±(2 − 1/8) = ±1.875
    pos = token_positions(16, 16, train, "grid")
    assert pos[0, 0, 0].item() == pytest.approx(-1.875)
    assert pos[-1, -1, 1].item() == pytest.approx(1.875)
    assert torch.allclose(pos[1:, 0, 0] - pos[:-1, 0, 0], torch.full((15,), 0.25))
    # 6 tokens (24²): ±0.625 in grid units (inside the trained ±0.875), ±5/6 normalised
    assert token_positions(6, 6, train, "grid")[0, 0, 0].item() == pytest.approx(-0.625)
    assert token_positions(6, 6, train, "normalised")[0, 0, 0].item() == pytest.approx(-5 / 6)
    # rectangular 8×12 from a 8×8 training grid: the longer side sets the unit
    pos = token_positions(8, 12, train, "grid")
    assert pos[0, 0, 1].item() == pytest.approx(-1.375) and pos[0, 0, 0].item() == pytest.approx(
        -0.875
    )
    # at the training grid every reading is the training positions, bit for bit
    for reading in ("normalised", "grid", "fixed"):
        assert torch.equal(token_positions(8, 8, train, reading), make_axial_pos(8, 8))
    with pytest.raises(ValueError, match=r"fixed to the training token grid 8×8.*16×16"):
        token_positions(16, 16, train, "fixed")
    # the reading is checked where it enters (the model, resolution, the CLI), not here: a
    # string that is not a reading still has no positions off the training grid
    with pytest.raises(ValueError, match="reading 'stretched': allowed: normalised, grid, fixed"):
        token_positions(16, 16, train, "stretched")
    config = p4k3_config()
    assert position_span(config, 64, "grid") == pytest.approx(1.875)
    assert position_span(config, 64, "normalised") == pytest.approx(15 / 16)


def test_additive_table_grid_reading_is_the_table_centred_with_border_padding():
    emb = AdditivePosEmb(8, 8, 4)
    table = emb.table.detach()
    big = emb.embedding(12, 12, "grid").detach()  # 2 cells of border on each side
    assert torch.equal(big[2:10, 2:10], table)
    assert torch.equal(big[0, 5], table[0, 3]) and torch.equal(big[1, 5], table[0, 3])
    assert torch.equal(big[11, 11], table[7, 7]) and torch.equal(big[0, 0], table[0, 0])
    small = emb.embedding(6, 6, "grid").detach()  # the centre cells
    assert torch.equal(small, table[1:7, 1:7])
    odd = emb.embedding(9, 8, "grid").detach()  # an odd difference: halfway between cells
    assert torch.allclose(odd[1], (table[0] + table[1]) / 2)
    assert torch.equal(odd[0], table[0]) and torch.equal(odd[8], table[7])
    # normalised: today's bicubic resize; fixed: an error at another size
    resized = emb.embedding(16, 16, "normalised").detach()
    expected = torch.nn.functional.interpolate(
        table.permute(2, 0, 1)[None], size=(16, 16), mode="bicubic", align_corners=False
    )[0].permute(1, 2, 0)
    assert torch.equal(resized, expected)
    with pytest.raises(ValueError, match="additive position table is fixed"):
        emb.embedding(16, 16, "fixed")
    with pytest.raises(ValueError, match="reading 'stretched': allowed: normalised, grid, fixed"):
        emb.embedding(16, 16, "stretched")
    assert torch.equal(emb.embedding(8, 8, "fixed"), emb.table)


def test_additive_table_grid_reading_stays_on_the_tables_device():
    # the meta device stands in for an accelerator: an index or weight made on the CPU raises
    emb = AdditivePosEmb(8, 8, 4).to("meta")
    for h, w in ((12, 9), (6, 6)):
        out = emb.embedding(h, w, "grid")
        assert out.device.type == "meta" and tuple(out.shape) == (h, w, 4)


@pytest.mark.parametrize("pos_emb", ["rope", "additive"])
def test_model_output_at_training_size_is_bit_identical_under_every_reading(pos_emb):
    torch.manual_seed(0)
    model = build_model(p4k3_config(pos_emb)).eval()
    with torch.no_grad():  # a fresh model outputs zeros: move its weights off their init
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, sigma, c = torch.randn(2, 3, 32, 32), torch.tensor([0.5, 2.0]), torch.tensor([1, 3])
    with torch.no_grad():
        ref = model(x, sigma, c)
        for reading in ("grid", "fixed"):
            model.set_position_reading(reading)
            assert torch.equal(model(x, sigma, c), ref)
        # at 64² the readings differ (RoPE angles / the table), and 'fixed' refuses
        big = torch.randn(1, 3, 64, 64)
        model.set_position_reading("normalised")
        a = model(big, sigma[:1], c[:1])
        model.set_position_reading("grid")
        b = model(big, sigma[:1], c[:1])
        assert not torch.allclose(a, b)
        model.set_position_reading("fixed")
        with pytest.raises(ValueError, match="fixed to the training"):
            model(big, sigma[:1], c[:1])
    with pytest.raises(ValueError, match="reading 'extrapolate': allowed: normalised, grid, fixed"):
        model.set_position_reading("extrapolate")


@pytest.mark.parametrize("pos_emb", ["rope", "additive"])
def test_position_reading_is_checked_when_set_not_in_forward(pos_emb, monkeypatch):
    """The real check, counted: once where the reading enters (the model's attribute, however it
    is set; sampling at a size), never in the forward passes at 64² (nor in token_positions)."""
    import hdit_edu.hourglass
    import hdit_edu.resolution
    import hdit_edu.rope

    calls = []
    check = hdit_edu.rope.check_position_reading

    def counted(reading):
        calls.append(reading)
        return check(reading)

    for module in (hdit_edu.hourglass, hdit_edu.resolution, hdit_edu.rope):
        monkeypatch.setattr(module, "check_position_reading", counted)
    model = build_model(p4k3_config(pos_emb)).eval()
    assert calls == ["normalised"] and model.position_reading == "normalised"  # the build
    model.set_position_reading("grid")
    with pytest.raises(ValueError, match="reading 'wide': allowed: normalised, grid, fixed"):
        model.position_reading = "wide"  # a plain assignment is checked too
    assert model.position_reading == "grid" and calls == ["normalised", "grid", "wide"]
    x, sigma, c = torch.randn(2, 3, 64, 64), torch.tensor([0.5, 2.0]), torch.tensor([1, 3])
    with torch.no_grad():
        for _ in range(3):
            model(x, sigma, c)
    assert calls == ["normalised", "grid", "wide"]  # no check in forward
    assert sampling_config(p4k3_config(pos_emb), 64, "grid").model.resolution == 64
    assert calls[-1] == "grid" and len(calls) == 4
    grid = token_positions(16, 16, (8, 8), "grid")
    assert grid.abs().max().item() == pytest.approx(1.875) and len(calls) == 4


# --- the size checks ---------------------------------------------------------------------------


def test_sampling_config_names_the_size_and_what_is_allowed():
    config = p4k3_config()
    assert sampling_config(config, 64).model.resolution == 64
    assert sampling_config(config, (32, 48)).model.resolution == (32, 48)
    assert config.model.resolution == 32  # a copy
    with pytest.raises(ValueError, match=r"--resolution 36 .*not divisible by .* = 8.*e\.g\. 32"):
        sampling_config(config, 36)
    with pytest.raises(ValueError, match=r"kernel 3 is larger than its 2×2 token grid"):
        sampling_config(all_local(config), 16)  # the inner 2×2 grid of an all-local model
    assert sampling_config(config, 16).model.resolution == 16  # a global inner level fits
    with pytest.raises(ValueError, match=r"additive position table is fixed .* allowed: "):
        sampling_config(p4k3_config("additive"), 48, "fixed")
    with pytest.raises(ValueError, match=r"RoPE position grid is fixed"):
        sampling_config(config, 48, "fixed")
    assert sampling_config(config, 32, "fixed").model.resolution == 32


def test_all_local_changes_only_the_global_level():
    config = p4k3_config()
    local = all_local(config)
    assert [(lv.attention, lv.kernel_size) for lv in local.model.levels] == [
        ("neighborhood", 3),
        ("neighborhood", 3),
    ]
    a, b = config.to_dict(), local.to_dict()
    a["model"]["levels"][1].update(attention="neighborhood", kernel_size=3)
    assert a == b
    assert config.model.levels[1].attention == "global"  # unchanged
    dit = Config(name="dit", model=ModelConfig(arch="dit", levels=[config.model.levels[1]]))
    with pytest.raises(ValueError, match="needs an hourglass \\(arch 'hdit'\\), got 'dit'"):
        all_local(dit)


# --- the σ shift ---------------------------------------------------------------------------


def test_shifted_sigmas_follow_the_cosine_shift_in_closed_form():
    config = p4k3_config()
    sigmas = karras_sigmas(10, 1e-3, 1e3)
    assert torch.equal(shifted_sigmas(sigmas, config, 32), sigmas)  # no shift at d₀
    sd, lo, hi = 0.5, 1e-3, 1e3
    for d in (24, 64):
        out = shifted_sigmas(sigmas, config, d).double()
        assert out[-1] == 0 and out[0].item() == pytest.approx(hi, rel=1e-5)
        assert out[-2].item() == pytest.approx(lo, rel=1e-5)
        # by hand: t from the unshifted cosine at 32, then the density at d (noise_d_low 32
        # at t = 0, unshifted at t = 1, interpolated linearly in log σ)
        for s_in, s_out in zip(sigmas[1:-2].double().tolist(), out[1:-2].tolist()):
            a0, a1 = math.atan(hi / sd), math.atan(lo / sd)
            t = (math.atan(s_in / sd) - a0) / (a1 - a0)
            r = 32 / d
            b0, b1 = math.atan(r * hi / sd), math.atan(r * lo / sd)
            shifted = math.log(sd / r) + math.log(math.tan(b0 + t * (b1 - b0)))
            plain = math.log(sd) + math.log(math.tan(a0 + t * (a1 - a0)))
            assert s_out == pytest.approx(math.exp((1 - t) * shifted + t * plain), rel=1e-6)
        # a larger image is sampled at higher σ (more steps at high noise), a smaller at lower
        inner = out[1:-2] / sigmas[1:-2].double()
        assert (inner > 1).all() if d > 32 else (inner < 1).all()
    # the shift is the interpolated cosine's; a run trained with another density is refused
    lognormal = p4k3_config()
    lognormal.diffusion.sigma_density = "lognormal"
    with pytest.raises(ValueError, match="trains with 'lognormal'; allowed: sampling without"):
        shifted_sigmas(sigmas, lognormal, 64)


# --- sampling ---------------------------------------------------------------------------


def test_generate_draws_another_size_and_restores_the_reading():
    torch.manual_seed(0)
    config = p4k3_config("additive")
    model = build_model(config).eval()
    denoiser = Denoiser(model, 0.5, "snr")
    out = generate(
        denoiser, config, 2, resolution=(24, 40), positions="grid", shift=True, steps=3,
        batch_size=2,
    )
    assert out.shape == (2, 3, 24, 40) and torch.isfinite(out).all()
    assert model.position_reading == "normalised"
    # the shift is the shifted Karras schedule, exactly
    sigmas = shifted_sigmas(karras_sigmas(3, *sampling_sigma_range(config)), config, (24, 40))
    model.set_position_reading("grid")
    at = sampling_config(config, (24, 40), "grid")
    assert torch.equal(out, generate(denoiser, at, 2, steps=3, batch_size=2, sigmas=sigmas))
    model.set_position_reading("normalised")
    same = generate(denoiser, config, 2, positions="fixed", steps=3, batch_size=2)
    assert same.shape == (2, 3, 32, 32)


def test_generate_shifts_the_schedule_of_a_model_without_position_readings():
    """DiT (R1–R2) has no position readings, but the σ shift depends on the sizes alone."""
    model_config = ModelConfig(
        arch="dit", levels=[LevelConfig(depth=1, width=32, head_dim=16, attention="global")],
        patch_size=4, num_classes=0, aug_dim=0, ffn="gelu", pos_emb="additive", resolution=16,
    )  # fmt: skip
    config = Config(name="dit", model=model_config, diffusion=DiffusionConfig())
    config.validate()
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    denoiser = Denoiser(model, 0.5, config.diffusion.loss_weighting)
    shifted = generate(denoiser, config, 2, resolution=32, shift=True, steps=3, batch_size=2)
    sigmas = shifted_sigmas(karras_sigmas(3, *sampling_sigma_range(config)), config, 32)
    at = sampling_config(config, 32)
    assert torch.equal(shifted, generate(denoiser, at, 2, steps=3, batch_size=2, sigmas=sigmas))
    plain = generate(denoiser, config, 2, resolution=32, steps=3, batch_size=2)
    assert shifted.shape == plain.shape == (2, 3, 32, 32)
    assert not torch.allclose(shifted, plain)
    with pytest.raises(ValueError, match="only the hourglass .* allowed for 'dit': normalised"):
        generate(denoiser, config, 2, resolution=32, positions="grid", steps=3)


# --- the coherence measure ----------------------------------------------------------------------


def test_toy_coherence_is_near_one_on_real_images_and_zero_on_noise_and_tilings():
    from hdit_edu.toy import TOY_PART_COUNTS, ToyDataset, count_parts, toy_coherence

    # closed form: two 2×2 blocks and a 1-pixel speck (below 0.4 % of 16×16 = 1.02 pixels)
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, 2:4, 2:4] = mask[0, 10:12, 5:7] = mask[0, 14, 14] = True
    assert count_parts(mask).tolist() == [2]
    mask[0, 4:10, 3] = mask[0, 9, 3:6] = True  # a bridge joins the blocks (4-neighbour path)
    assert count_parts(mask).tolist() == [1]
    for resolution in (24, 64):
        images, labels = ToyDataset("test", resolution=resolution).batch(range(256))
        c = toy_coherence(images, labels)
        assert c["coherent"].float().mean() >= 0.99
        assert c["n_parts"].tolist() == [TOY_PART_COUNTS[i] for i in labels.tolist()]
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(64, 3, 32, 32, generator=g).clamp(-1, 1)
    assert not toy_coherence(noise, torch.arange(64) % 8)["coherent"].any()
    # four real 32² scenes tiled into one 64² image: four objects, not one
    images, labels = ToyDataset("test", resolution=32).batch(range(256))
    tiled = images.view(64, 4, 3, 32, 32)
    tiled = torch.cat(
        (torch.cat((tiled[:, 0], tiled[:, 1]), -1), torch.cat((tiled[:, 2], tiled[:, 3]), -1)), -2
    )
    assert toy_coherence(tiled, labels[::4])["coherent"].float().mean() <= 0.02


# --- the shipped results and their analysis ----------------------------------------------------

RESULTS = Path(__file__).resolve().parents[1] / "results" / "resolution-toy"


def _study():
    from hdit_edu.studies.spec import load_study

    return load_study(RESULTS / "study.toml")


class _Analysis:
    """The resolution study's analysis as the library gives it (its spec's ``[cells]``)."""

    def __init__(self):
        from hdit_edu.studies import cell_report, cells

        self.study, self.report, self.cells = _study(), cell_report, cells

    def summarise(self, runs):
        return self.report.from_base(self.study, runs)

    def load(self):
        return self.cells.load(self.study)

    def markdown(self, summary):
        return self.report.markdown(summary, self.study)

    def wide_tables(self, summary, schedule):
        return self.report.wide_tables(summary, self.study, schedule)

    def verdict(self, entry, metric):
        from hdit_edu.stats import ci_verdict

        return ci_verdict(entry, self.report.better_sign(metric))

    def retained(self, cell, base, metric):
        floor = self.study.cells.post_hoc["floors"].get(metric, 0.0)
        return self.report.retained(cell, base, metric, floor)


def test_shipped_resolution_summary_is_the_analysis_of_its_runs():
    """summary.json / .md are the spec's analysis of the shipped runs, as written (NaN, for
    one seed, compares as text); the 32² cell of C-s0 is its record: 383 of 512 samples; the
    table's 32² entry of C is the t interval of every C seed's record."""
    analyze = _Analysis()
    summary = analyze.summarise(analyze.load())
    assert json.dumps(summary, indent=1) + "\n" == (RESULTS / "summary.json").read_text()
    assert analyze.markdown(summary) == (RESULTS / "summary.md").read_text()
    runs = analyze.load()
    assert runs["C"][0]["32-normalised-noshift"]["class_accuracy"] == 383 / 512
    c32 = summary["table"]["C"]["32-normalised-noshift"]["class_accuracy"]
    values = [cells["32-normalised-noshift"]["class_accuracy"] for cells in runs["C"].values()]
    assert c32["n"] == len(runs["C"]) and c32["values"] == values
    assert c32["mean"] == pytest.approx(sum(values) / len(values), rel=1e-12)


def _synthetic_cells(acc64):
    """One synthetic run's cells: fixed numbers at 32², class accuracy ``acc64`` at 64² grid."""
    return {
        "32-normalised-noshift": {"class_accuracy": 0.5, "fid": 10.0, "coherence": 0.5},
        "64-grid-noshift": {"class_accuracy": acc64, "fid": 20.0, "coherence": 0.25},
    }


def test_resolution_analysis_pairs_by_seed_with_the_ablation_statistics():
    """Three seeds where D − C at 64² is 0.125 × (1, 2, 3) and zero at 32²: the table and the
    paired entries are hdit_edu.ablation's t interval and paired t-test (closed forms: t₀.₉₇₅,₂
    = 0.95 / √(2·0.975·0.025), p = 1 − √(t²/(2 + t²)) with t = 2√3); no spread: NaN p."""
    analyze = _Analysis()

    runs = {
        "C": {s: _synthetic_cells(0.25) for s in range(3)},
        "D": {s: _synthetic_cells(0.25 + 0.125 * (s + 1)) for s in range(3)},
    }
    summary = analyze.summarise(runs)
    t975 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    half = 0.125 * t975 / math.sqrt(3)  # 0.3105
    d64 = summary["table"]["D"]["64-grid-noshift"]["class_accuracy"]
    assert d64["mean"] == 0.5 and d64["sd"] == 0.125 and d64["half"] == pytest.approx(half)
    assert d64["ci95"] == pytest.approx([0.5 - half, 0.5 + half], rel=1e-12)
    t = 2 * math.sqrt(3)
    pair = summary["paired"]["D-C"]["64-grid-noshift"]["class_accuracy"]
    for entry in (pair["difference"], pair["difference_of_change"]):
        assert entry["seeds"] == [0, 1, 2] and entry["mean"] == 0.25
        assert entry["ci95"] == pytest.approx([0.25 - half, 0.25 + half], rel=1e-12)
        assert entry["p"] == pytest.approx(1 - math.sqrt(t * t / (2 + t * t)), rel=1e-12)
    at32 = summary["paired"]["D-C"]["32-normalised-noshift"]["class_accuracy"]["difference"]
    assert at32["mean"] == 0.0 and at32["half"] == 0.0 and math.isnan(at32["p"])
    assert "L-D" not in summary["paired"]  # no L runs: no pair
    assert "| D-C | 64-grid-noshift | 0.250 ± 0.311 | 0.0 ± 0.0 |" in analyze.markdown(summary)


def test_resolution_verdicts_follow_the_preregistered_rule():
    """The README's rule on a difference's 95 % CI: wholly on the better side of 0 → better,
    wholly on the worse side → worse, else (or with one seed) not resolved; "better" is higher
    accuracy and coherence, lower FID. The summary counts the verdicts per pair and metric."""
    analyze = _Analysis()
    up = t_interval([0.1, 0.2, 0.3])  # CI 0.2 ± 0.248: spans 0
    clear = t_interval([0.19, 0.2, 0.21])  # CI 0.2 ± 0.025: above 0
    assert analyze.verdict(up, "class_accuracy") == "not resolved"
    assert analyze.verdict(clear, "class_accuracy") == "better"
    assert analyze.verdict(clear, "coherence") == "better"
    assert analyze.verdict(clear, "fid") == "worse"
    assert analyze.verdict(t_interval([-0.19, -0.2, -0.21]), "fid") == "better"
    assert analyze.verdict(t_interval([0.2]), "class_accuracy") == "not resolved"
    assert analyze.verdict(t_interval([0.0, 0.0, 0.0]), "fid") == "not resolved"

    runs = {
        "C": {s: _synthetic_cells(0.25) for s in range(3)},
        "D": {s: _synthetic_cells(0.45 + 0.01 * s) for s in range(3)},
    }
    summary = analyze.summarise(runs)
    entry = summary["paired"]["D-C"]["64-grid-noshift"]
    assert entry["class_accuracy"]["verdict"] == "better"
    assert entry["fid"]["verdict"] == "not resolved"  # no difference at all
    assert "verdict" not in summary["paired"]["D-C"]["32-normalised-noshift"]["fid"]
    assert summary["verdict_counts"]["D-C"]["class_accuracy"] == {
        "better": 1,
        "worse": 0,
        "not resolved": 0,
    }
    assert "| D-C | 64-grid-noshift | better | not resolved | not resolved |" in (
        analyze.markdown(summary)
    )
    # the labelled post-hoc view: the fraction of the 32² level kept (closed forms), same rule
    assert analyze.retained(0.5, 0.75, "class_accuracy") == 0.375 / 0.625  # above chance 1/8
    assert analyze.retained(0.25, 0.5, "coherence") == 0.5
    assert analyze.retained(20.0, 10.0, "fid") == 0.5  # 32²-FID / FID
    post = entry["class_accuracy"]["post_hoc_retained"]  # (0.325 + 0.01 s) / 0.375 − 1 / 3
    assert post["mean"] == pytest.approx(0.335 / 0.375 - 1 / 3) and post["verdict"] == "better"
    assert entry["fid"]["post_hoc_retained"]["verdict"] == "not resolved"  # both keep 1/2
    assert summary["post_hoc_verdict_counts"]["D-C"]["class_accuracy"]["better"] == 1


def test_shift_effect_is_shift_minus_no_shift_paired_by_seed_and_tabled_per_schedule():
    """The σ shift's own effect per model and cell: shift − no shift, paired by seed (closed
    form: differences 0.19, 0.20, 0.21 → mean 0.2, CI 0.2 ± 0.0248, "better"); a model without
    shifted cells has no entry; the wide tables show one row per size under each schedule,
    32² being the one training cell under both."""
    analyze = _Analysis()

    def cells(s, shifted=True):
        out = _synthetic_cells(0.25)
        if shifted:
            out["64-grid-shift"] = {
                "class_accuracy": 0.44 + 0.01 * s,
                "fid": 20.0,
                "coherence": 0.25,
            }
        return out

    summary = analyze.summarise(
        {"C": {s: cells(s) for s in range(3)}, "D": {s: cells(s, False) for s in range(3)}}
    )
    effect = summary["shift_effect"]["C"]["64-grid"]
    assert effect["class_accuracy"]["values"] == pytest.approx([0.19, 0.2, 0.21])
    assert effect["class_accuracy"]["mean"] == pytest.approx(0.2)
    half = 0.01 * 0.95 / math.sqrt(2 * 0.975 * 0.025) / math.sqrt(3)
    assert effect["class_accuracy"]["half"] == pytest.approx(half)
    assert effect["class_accuracy"]["verdict"] == "better"
    assert effect["fid"]["verdict"] == "not resolved"  # no change
    assert set(summary["shift_effect"]) == {"C"}
    md = analyze.markdown(summary)
    assert "| C | 64-grid | 0.200 ± 0.025 better | 0.0 ± 0.0 not resolved |" in md
    shift_acc = analyze.wide_tables(summary, "shift")[:8]
    assert shift_acc[2] == "| size | C normalised | C grid | D normalised | D grid |"
    assert (
        shift_acc[5]
        == "| 32² | 0.500 ± 0.000 (3) | 0.500 ± 0.000 (3) | 0.500 ± 0.000 (3) | 0.500 ± 0.000 (3) |"
    )
    assert shift_acc[7] == "| 64² | – | 0.450 ± 0.025 (3) | – | – |"


def test_same_as_record_tells_a_retrained_run_from_another_seed(capsys):
    """The check run on retrained C/D checkpoints: a record equals itself; seed 2 differs from
    seed 1 in the seed, every loss and the final numbers."""
    module = study_script(RESULTS, "same_as_record")
    runs = RESULTS.parent / "ablation-toy" / "runs"
    assert module.main([str(runs / "C-s1.json"), str(runs / "C-s1.json")]) == 0
    assert "C-s1: same run as the record (2100 logged losses equal" in capsys.readouterr().out
    assert module.main([str(runs / "C-s2.json"), str(runs / "C-s1.json")]) == 1
    out = capsys.readouterr().out
    assert "seed" in out and "loss_every_10" in out and "final.fid" in out
