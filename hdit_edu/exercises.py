"""The notebooks' exercises, checked: ``check("01.2", answer)`` tells a student whether their own
answer is right, and why not (nbgrader / otter-grader style); ``passes`` is the same check
returning True/False, for the solution cells' ``assert``.

Every notebook ends with "## Exercises". Each exercise has an id ``"NN.k"`` (notebook, number),
an answer cell the student fills in (``answer = ...``, then ``check("NN.k", answer)``) and a
hidden solution cell that calls the same checker on the solution (``assert passes(...)``), so the
notebook run in CI keeps proving that every solution passes its own checker.

A checker computes the expected answer itself, from the library (closed forms, the paper's
configs, the shipped records) or from ``context`` the notebook passes along (the objects the
exercise works on: a model, a record, a measured table), never from the notebook's solution.
It returns ``None`` when the answer is right, else a hint: what was expected in which form, and
what to look at. :func:`check` prints the verdict (:func:`passes` also returns it); neither raises
for a wrong or missing answer (a notebook still runs top to bottom with its stubs unfilled), only for
an unknown id.

The paper sections the exercises belong to are those of their notebooks (README's notebook map).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch

CHECKERS: dict[str, Callable[..., str | None]] = {}


def exercise(exercise_id: str):
    """Register the checker of exercise ``exercise_id`` (``"NN.k"``)."""

    def register(function: Callable[..., str | None]):
        if exercise_id in CHECKERS:
            raise ValueError(f"exercise {exercise_id!r} registered twice")
        CHECKERS[exercise_id] = function
        return function

    return register


def passes(exercise_id: str, answer, **context) -> bool:
    """Check ``answer`` to exercise ``exercise_id``: print ✓ or a hint and return whether it is
    right (the solution cells ``assert`` it). ``...`` (the stub's placeholder) counts as not
    answered yet. ``context``: what the exercise works on."""
    if exercise_id not in CHECKERS:
        raise ValueError(f"unknown exercise {exercise_id!r}; allowed: {', '.join(CHECKERS)}")
    if _unanswered(answer):
        print(f"Exercise {exercise_id}: not answered yet — replace the ... with your answer.")
        return False
    try:
        hint = CHECKERS[exercise_id](answer, **context)
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as error:
        hint = f"the answer has the wrong form ({type(error).__name__}: {error})"
    if hint is None:
        print(f"Exercise {exercise_id}: ✓ correct.")
        return True
    print(f"Exercise {exercise_id}: not yet — {hint}")
    return False


def check(exercise_id: str, answer, **context) -> None:
    """:func:`passes` for the student's answer cell: prints the verdict and returns nothing, so
    the cell shows the message and no ``True``/``False`` after it."""
    passes(exercise_id, answer, **context)


def _unanswered(answer) -> bool:
    if answer is ...:
        return True
    if isinstance(answer, (tuple, list)):
        return any(_unanswered(a) for a in answer)
    if isinstance(answer, dict):
        return any(_unanswered(a) for a in answer.values())
    return False


def _close(got, want, rel: float = 1e-3, abs_tol: float = 1e-9) -> bool:
    return math.isclose(float(got), float(want), rel_tol=rel, abs_tol=abs_tol)


def _pair(answer, want, names: str, rel: float = 1e-3) -> str | None:
    """Check a tuple of numbers against ``want``; the hint names the first wrong entry."""
    if len(answer) != len(want):
        return f"give {len(want)} numbers: ({names})"
    for name, got, expected in zip(names.split(", "), answer, want):
        if not _close(got, expected, rel):
            return f"{name} = {got} is off; recompute it ({names})"
    return None


# --- 00 tour ---


@exercise("00.1")
def _tour_tokens(answer) -> str | None:
    """Fraction of all FFHQ-1024² tokens that sit at the outermost level."""
    from .configs import token_grids
    from .presets import paper_config

    counts = [h * w for h, w in token_grids(paper_config("ffhq1024").model)]
    if _close(answer, counts[0] / sum(counts), 1e-4):
        return None
    return (
        "count the tokens of every level (h·w of each grid of token_grids) and divide the "
        "outermost level's count by their sum"
    )


@exercise("00.2")
def _tour_guidance(answer, *, denoiser, config) -> str | None:
    """Class accuracy of 16 'cross' samples at w = 1 and w = 4 (20 steps, seed 1)."""
    from .sampling import generate
    from .toy import class_accuracy

    one_class = torch.full((16,), 3)
    want = [
        class_accuracy(
            generate(denoiser, config, 16, class_cond=one_class, cfg_scale=w, steps=20, seed=1),
            one_class,
        )
        for w in (1.0, 4.0)
    ]
    return _pair(answer, want, "accuracy at w = 1, accuracy at w = 4", rel=1e-6)


# --- 01 diffusion and loss weighting ---


@exercise("01.1")
def _knee(answer) -> str | None:
    from .diffusion import loss_weight

    knee = 16.0**-0.5
    want = (knee, float(loss_weight("soft-min-snr", knee, gamma=16.0)))
    return _pair(answer, want, "σ at the knee, soft-min-SNR weight there")


@exercise("01.2")
def _median_sigma(answer) -> str | None:
    if abs(float(answer) / math.exp(-1.2) - 1) < 0.03:
        return None
    return "the median of a log-normal is e^(mean of ln σ); 20 000 draws get within 3 %"


@exercise("01.3")
def _heun_calls(answer) -> str | None:
    return _pair(answer, (19, 10), "Heun's calls, Euler's calls", rel=0) and (
        "count every call of the wrapped denoiser; Heun's last step into σ = 0 is an Euler step"
    )


@exercise("01.4")
def _last_ddpm_sigma(answer) -> str | None:
    """σ_999 = √((1 − ᾱ_999)/ᾱ_999) of DiT's linear schedule (R1's process)."""
    from .ddpm import DDPMSchedule

    want = DDPMSchedule.linear().sigmas[-1].item()
    if _close(answer, want, 1e-4):
        return None
    return (
        "ᾱ_t is the product of (1 − β_s) over s ≤ t, and σ_t = √((1 − ᾱ_t)/ᾱ_t); take all "
        "1000 β's of linear_betas()"
    )


# --- 02 hourglass and skips ---


@exercise("02.1")
def _side_multiple(answer, *, model) -> str | None:
    want = model.config.patch_size * 2 ** (len(model.config.levels) - 1)
    if int(answer) == want:
        return None
    return "the patch size divides the side once, then every merge halves the grid"


@exercise("02.2")
def _lerp_rms(answer) -> str | None:
    """The f minimising the RMS of a lerp of two independent unit-variance inputs, and it."""
    return _pair(answer, (0.5, 0.5**0.5), "best f, RMS there", rel=0.02) and (
        "the variance of f·a + (1 − f)·b is f² + (1 − f)² for independent unit-variance a, b"
    )


@exercise("02.3")
def _concat_params(answer) -> str | None:
    from .presets import paper_config

    levels = paper_config("imagenet256").model.levels
    if int(answer) == sum(2 * lv.width**2 for lv in levels[:-1]):
        return None
    return "one 2d → d projection (no bias) per skip, at each level but the innermost"


# --- 03 blocks, RoPE, cosine attention ---


@exercise("03.1")
def _ffn_params(answer) -> str | None:
    from .layers import FeedForward, default_d_ff

    count = [
        sum(p.numel() for p in FeedForward(768, default_d_ff(768, kind), kind).parameters())
        for kind in ("geglu", "gelu")
    ]
    return _pair(answer, count, "GEGLU parameters, GELU parameters", rel=0)


@exercise("03.2")
def _entropy(answer) -> str | None:
    at_zero, at_infinity = (float(a) for a in answer)
    if not _close(at_zero, math.log(256), 1e-4):
        return "at τ = 0 the weights are uniform over the 256 keys: entropy log 256"
    if not 0 <= at_infinity < 0.01:
        return "as τ → ∞ one key takes all the weight: entropy → 0 (use log_softmax at large τ)"
    return None


@exercise("03.3")
def _rope_shift(answer) -> str | None:
    before, after = (float(a) for a in answer)
    if math.isclose(before, after, rel_tol=1e-4, abs_tol=1e-4):
        return None
    return "shift both positions by the same vector: only their difference enters the product"


# --- 04 local attention ---


@exercise("04.1")
def _corner_keys(answer) -> str | None:
    from .attention_analysis import attended_mask

    natten = int(attended_mask("neighborhood", 16, 16, (0, 0), kernel_size=5).sum())
    return _pair(answer, (natten, 3 * 3), "NATTEN's keys, a zero-padded window's keys", rel=0)


@exercise("04.2")
def _mean_swin_keys(answer) -> str | None:
    """Mean keys per query over a 16×16 grid, windows of 8 shifted by 4."""
    from .attention_analysis import attended_mask

    sizes = [
        int(attended_mask("shifted-window", 16, 16, (i, j), window_size=8, shift=4).sum())
        for i in range(16)
        for j in range(16)
    ]
    if _close(answer, sum(sizes) / len(sizes), 1e-6):
        return None
    return "count the keys of every one of the 256 queries (attended_mask) and average"


@exercise("04.3")
def _largest_kernel(answer) -> str | None:
    if int(answer) == 3:
        return None
    return "a kernel must be odd and fit in the grid: try 1, 3, 5, … on the 4×4 grid"


# --- 05 FLOPs and scaling ---


@exercise("05.1")
def _growth(answer) -> str | None:
    from .flops import analytic_gflops
    from .presets import ablation_step

    def growth(step, low, high):
        return analytic_gflops(ablation_step(step, high), high) / analytic_gflops(
            ablation_step(step, low), low
        )

    want = (growth("E", 2048, 4096), growth("R1", 512, 1024))
    return _pair(answer, want, "HDiT 2048² → 4096² factor, DiT 512² → 1024² factor")


@exercise("05.2")
def _attention_macs(answer) -> str | None:
    from .flops import attention_flops

    if int(answer) == attention_flops("global", 16, 16, heads=12, head_dim=64):
        return None
    return "s_q · s_k · (d_q + d_v) per head, times 12 heads; 16×16 = 256 tokens"


@exercise("05.3")
def _deeper(answer) -> str | None:
    from .flops import analytic_gflops
    from .presets import ablation_step

    deeper = copy.deepcopy(ablation_step("E"))
    deeper.model.levels[0].depth = 4
    if _close(answer, analytic_gflops(deeper, 128), 1e-4):
        return None
    return "analytic_gflops of a copy of step E whose levels[0].depth is 4, at 128²"


# --- 05b HDiT assembled ---


@exercise("05b.1")
def _zeroed(answer, *, x, sigma) -> str | None:
    from .diffusion import c_skip

    if torch.allclose(answer, c_skip(sigma)[:, None, None, None] * x):
        return None
    return "with F = 0, D(x, σ) = c_skip(σ)·x + c_out(σ)·F = c_skip(σ)·x"


@exercise("05b.2")
def _additive(answer, *, model, x, sigma, class_cond) -> str | None:
    with torch.no_grad():
        want = model(x, sigma, class_cond)
    if torch.equal(answer, want):
        return None
    return "the additive merge is x_up + x_skip (no f); compare with the library model's output"


@exercise("05b.3")
def _grids64(answer, *, model) -> str | None:
    if [tuple(g) for g in answer] == [tuple(g) for g in model.grid_sizes(64, 64)]:
        return None
    return "the patch size divides 64 once, then each merge halves the grid"


# --- 06 ablation chain ---


@exercise("06.1")
def _paired_ci(answer, *, row) -> str | None:
    want = (row["mean"], *row["ci95"]) if row.get("n", 2) > 1 else (row["mean"],)
    names = "mean, CI low, CI high" if len(want) == 3 else "mean"
    return _pair(answer, want, names, rel=1e-9) and (
        "per seed E − D, then mean ± t(0.975, n − 1)·SD/√n with the sample SD (ddof = 1)"
    )


@exercise("06.2")
def _smallest_significant(answer, *, sd) -> str | None:
    from scipy import stats

    want = {n: stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) for n in (3, 5, 10)}
    if set(answer) == set(want) and all(_close(answer[n], want[n]) for n in want):
        return None
    return "a dict {3: …, 5: …, 10: …}: t(0.975, n − 1)·SD/√n, the CI's half width"


@exercise("06.3")
def _kendall(answer, *, paper, toy) -> str | None:
    from scipy import stats

    if _close(answer, stats.kendalltau(paper, toy)[0], 1e-9):
        return None
    return "(concordant − discordant) / √(pairs untied in x · pairs untied in y), over all pairs"


@exercise("06.4")
def _seeds_needed(answer, *, mean, sd) -> str | None:
    from scipy import stats

    n = 2
    while stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) >= abs(mean) and n < 1_000_000:
        n += 1
    if isinstance(answer, (int, float)) and not isinstance(answer, bool) and answer == n:
        return None
    return "try n = 2, 3, …: the first n where t(0.975, n − 1)·SD/√n drops below |mean|"


# --- 07 FFHQ-1024 ---


@exercise("07.1")
def _epochs(answer) -> str | None:
    from .presets import paper_config

    t = paper_config("ffhq1024").training
    if _close(answer, t.steps * t.batch_size / 70_000):
        return None
    return "steps × global batch = images drawn; divide by the 70,000 faces"


@exercise("07.2")
def _multiple(answer) -> str | None:
    from .presets import paper_config

    m = paper_config("ffhq1024").model
    if int(answer) == m.patch_size * 2 ** (len(m.levels) - 1):
        return None
    return "the patch size, times 2 for each merge between levels"


@exercise("07.3")
def _resumed(answer, *, straight) -> str | None:
    if list(answer) == list(straight[5:]):
        return None
    return "the losses of steps 6-8 of the resumed run, compared with the uninterrupted run"


# --- 08 sampling demo ---


@exercise("08.1")
def _w1(answer) -> str | None:
    same, calls_w1, calls_plain = answer
    if bool(same) and int(calls_w1) == int(calls_plain) == 10:
        return None
    return "at w = 1 the guided formula is D(x, σ, c) itself: is the second model call needed?"


@exercise("08.2")
def _best_w(answer, *, fid_by_w, acc_by_w) -> str | None:
    want = (min(fid_by_w, key=fid_by_w.get), max(acc_by_w, key=acc_by_w.get))
    return _pair(answer, want, "w of the lowest FID, w of the highest accuracy", rel=0)


# --- 09 training live ---


@exercise("09.1")
def _per_class(answer, *, images, labels, classes: int = 8) -> str | None:
    from .toy import predict_classes

    predicted = predict_classes(images)
    want = [(predicted[labels == c] == c).float().mean().item() for c in range(classes)]
    return _pair(answer, want, ", ".join(f"class {c}" for c in range(classes)), rel=1e-6)


@exercise("09.2")
def _images_seen(answer, *, records, batch_size: int, steps: int) -> str | None:
    from .toy import TOY_SIZES

    seen = sum(sum(r["sigma_bin_counts"].values()) for r in records)
    if seen != steps * batch_size:
        return f"the log counts {seen} draws, not steps × batch = {steps * batch_size}"
    return _pair(answer, (seen, seen / TOY_SIZES["train"]), "images seen, epochs")


@exercise("09.3")
def _unguided(answer, *, guided) -> str | None:
    """``answer``: the unguided run (images, labels, class_accuracy) beside the guided one."""
    from .toy import class_accuracy

    if not torch.equal(answer.labels, guided.labels):
        return "sample the same classes as section 4: 0, 1, 2, … in turn, as many as N_EVAL"
    if torch.equal(answer.images, guided.images):
        return "these are the guided samples: sample again with cfg_scale=1.0"
    if not _close(answer.class_accuracy, class_accuracy(answer.images, answer.labels), 1e-9):
        return "class_accuracy does not match the run's images: measure it with the classifier"
    if answer.class_accuracy >= guided.class_accuracy:
        return "your run says guidance did not help: check that the guided run used w > 1"
    return None


# --- 10 resolution extrapolation ---


@exercise("10.1")
def _reach(answer) -> str | None:
    from .rope import token_positions

    n, n0 = 96 // 4, 8
    want = [token_positions(n, n, (n0, n0), r).abs().max().item() for r in ("normalised", "grid")]
    return _pair(
        (answer["normalised"], answer["grid"]), want, "normalised reach, grid reach", rel=1e-6
    )


@exercise("10.2")
def _distinct(answer) -> str | None:
    """Distinct embedding vectors of an 8×8 additive table read at 12×12 tokens."""
    from .rope import AdditivePosEmb

    table = AdditivePosEmb(8, 8, 8)
    with torch.no_grad():
        want = [
            len(torch.unique(table.embedding(12, 12, r).reshape(-1, 8), dim=0))
            for r in ("grid", "normalised")
        ]
    return _pair(answer, want, "distinct under grid, distinct under normalised", rel=0) and (
        "the grid reading repeats border cells; the normalised one resamples every token"
    )
