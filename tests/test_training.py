"""The trainer (§5.1, Table 6): the optimiser recipe, EMA warm-up, conditioning dropout,
checkpoints that resume bit for bit, corrupt checkpoints, NaN stops, metrics, DDP on gloo.

All runs use a tiny HDiT (widths 32/64, one layer per level) on the 32×32 toy set, batch 8.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config as tiny

from hdit_edu.attention import Attention
from hdit_edu.checkpoints import CheckpointError, list_checkpoints, load_checkpoint
from hdit_edu.data import ResumableSampler
from hdit_edu.models import build_model
from hdit_edu.runs import read_metrics
from hdit_edu.toy import ToyDataset
from hdit_edu.training import (
    EMAWarmup,
    NonFiniteLossError,
    Trainer,
    drop_class_labels,
    ema_update,
    make_optimizer,
)

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**training):
    """6 steps: a log record every step, checkpoints at 3 and 6 (all kept), no sample grids."""
    run = {"log_every": 1, "checkpoint_every": 3, "sample_every": 0, "keep_checkpoints": 5}
    return tiny(6, **(run | training))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def six_step_run(tmp_path_factory, toy_data):
    """An uninterrupted 6-step run with checkpoints at steps 3 and 6."""
    run = tmp_path_factory.mktemp("runs") / "full"
    trainer = Trainer(tiny_config(), run, dataset=toy_data, progress=False)
    summary = trainer.fit(6)
    return run, summary["losses"]


# --- Table 6's recipe --------------------------------------------------------------------------


def test_ema_warmup_follows_the_inverse_schedule():
    ema = EMAWarmup(max_decay=0.9999)
    assert ema.decay(0) == 0.0  # the first update copies the weights
    for t in (1, 10, 999, 31_622):
        assert ema.decay(t) == pytest.approx(1 - (1 + t) ** (-2 / 3))
    assert ema.decay(999) == pytest.approx(0.99, abs=1e-12)  # 1 − 1000^(−2/3) = 0.99
    assert ema.decay(10**9) == 0.9999  # capped at the paper's decay


def test_ema_update_is_a_lerp_towards_the_weights():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.clone() for p in a.parameters()]
    ema_update(a, b, decay=0.9)
    for p_ema, p0, p in zip(a.parameters(), before, b.parameters()):
        torch.testing.assert_close(p_ema, 0.9 * p0 + 0.1 * p)
    ema_update(a, b, decay=0.0)
    for p_ema, p in zip(a.parameters(), b.parameters()):
        assert torch.equal(p_ema, p)


def test_optimizer_is_table6_adamw_with_mapping_at_one_third():
    config = tiny_config()
    model = build_model(config)
    opt = make_optimizer(model, config)
    assert isinstance(opt, torch.optim.AdamW)
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())  # each exactly once
    for g in opt.param_groups:
        assert g["betas"] == (0.9, 0.95) and g["eps"] == 1e-8
        assert g["lr"] in (5e-4, pytest.approx(5e-4 / 3))
        assert g["weight_decay"] in (0.0, 1e-2)
        if g["weight_decay"]:  # weight decay only on weight matrices
            assert all(p.ndim == 2 for p in g["params"])
    mapping = {id(p) for p in model.mapping.parameters()}
    slow = {id(p) for g in opt.param_groups if g["lr"] < 5e-4 for p in g["params"]}
    assert mapping and mapping <= slow


def test_conditioning_dropout_drops_ten_percent_to_the_extra_class():
    labels = torch.randint(0, 8, (200_000,), generator=torch.Generator().manual_seed(0))
    dropped = drop_class_labels(labels, 0.1, 8, torch.Generator().manual_seed(1))
    is_dropped = dropped == 8
    assert abs(is_dropped.float().mean().item() - 0.1) < 0.003  # 4.5 σ of Binomial(2e5, 0.1)
    assert torch.equal(dropped[~is_dropped], labels[~is_dropped])


# --- exact resume, checkpoints, NaN ------------------------------------------------------------


def test_resume_repeats_the_loss_sequence_bit_for_bit(six_step_run, toy_data, tmp_path):
    run, losses = six_step_run
    assert [c.name for c in list_checkpoints(run)] == ["step-00000003", "step-00000006"]
    # A second run stopped after step 3 (as if killed), then resumed in a new trainer.
    partial = tmp_path / "partial"
    Trainer(tiny_config(), partial, dataset=toy_data, progress=False).fit(3)
    resumed = Trainer(tiny_config(), partial, dataset=toy_data, progress=False, resume=True)
    assert resumed.step == 3
    rest = resumed.fit(6)["losses"]
    assert rest == losses[3:]  # bit for bit
    a, b = (
        load_checkpoint(run / "checkpoints/step-00000006"),
        load_checkpoint(partial / "checkpoints/step-00000006"),
    )
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key])
    assert [r["loss"] for r in read_metrics(partial)] == losses


def test_attention_backend_reaches_the_model_and_its_ema(six_step_run, toy_data):
    """The same first two steps with the pure-PyTorch neighborhood attention as with the
    default ("auto": masked SDPA on the 16×16 grid)."""
    _, losses = six_step_run
    trainer = Trainer(
        tiny_config(), None, dataset=toy_data, progress=False, attention_backend="torch"
    )
    backends = {m.backend for net in (trainer.model, trainer.ema) for m in net.modules()
                if isinstance(m, Attention) and m.kind == "neighborhood"}  # fmt: skip
    assert backends == {"torch"}
    got = [trainer.train_step() for _ in range(2)]
    assert got == pytest.approx(losses[:2], rel=1e-5)
    with pytest.raises(ValueError, match="allowed: auto"):
        Trainer(tiny_config(), None, dataset=toy_data, attention_backend="flash")


def test_class_labels_are_checked_where_they_enter(toy_data):
    """The labels of a batch are checked on the host before they go to the device (the model's
    forward pass reads no values on an accelerator)."""

    class Shifted:  # a data set whose labels run past the model's 8 classes
        def __len__(self):
            return len(toy_data)

        def batch(self, indices):
            images, classes = toy_data.batch(indices)
            return images, classes + 5

    trainer = Trainer(tiny_config(), None, dataset=Shifted(), progress=False)
    with pytest.raises(ValueError, match=r"class_cond values must lie in \[0, 8\].*max 1[0-2]"):
        trainer.train_step()
    assert trainer.step == 0


def test_augmentation_in_loader_workers_repeats_the_main_process_bit_for_bit(toy_data, tmp_path):
    """Augmentation runs where the batch is read: in the DataLoader's worker processes when
    there are workers. The draws of micro-step m of step s still come from the generator of
    (seed, s, rank, STREAM_AUGMENT + 1000·m), as when the main process augmented each
    micro-batch, so runs with 0 and 2 workers give the same losses bit for bit."""
    from PIL import Image

    from hdit_edu.data import Augment, step_generator
    from hdit_edu.training import MICRO_STREAM_STRIDE, STREAM_AUGMENT, make_dataset

    for i in range(16):  # an image folder of toy images, one sub-folder per class
        folder = tmp_path / "data" / f"c{int(toy_data.labels[i])}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(toy_data.images[i]).save(folder / f"{i:03d}.png")
    config = tiny_config(augment_p=0.5, xflip_p=1.0, grad_accum=2, dataset=str(tmp_path / "data"))
    config.model.num_classes = len(make_dataset(config).classes)
    trainer = Trainer(config, None, dataset=make_dataset(config), progress=False)
    augment = Augment(0.5, xflip_p=1.0)
    for step in range(3):  # the draws of each micro-step, as the trainer always made them
        images, classes = trainer.dataset.batch(trainer.step_indices(step))
        got, got_classes, aug_cond = trainer.read_step(step)
        assert torch.equal(got_classes, classes) and aug_cond[:, 2:].abs().sum() > 0
        for m in range(2):
            g = step_generator(0, step, 0, STREAM_AUGMENT + MICRO_STREAM_STRIDE * m)
            want, want_cond = augment(images[4 * m : 4 * m + 4], generator=g)
            assert torch.equal(got[4 * m : 4 * m + 4], want)
            assert torch.equal(aug_cond[4 * m : 4 * m + 4], want_cond)
    main = trainer.fit(3)["losses"]
    workers = Trainer(config, None, dataset=make_dataset(config), progress=False, num_workers=2)
    assert workers.fit(3)["losses"] == main


def test_checkpoint_state_loads_with_weights_only(six_step_run):
    run, _ = six_step_run
    state = torch.load(run / "checkpoints/step-00000006/trainer_state.pt", weights_only=True)
    assert state["step"] == 6 and state["data"][0]["position"] == 6 * 8
    assert set(state["rng"][0]) == {"torch", "cuda", "python", "numpy"}
    assert state["optimizer"]["state"]  # Adam moments are saved
    manifest = json.loads((run / "checkpoints/step-00000006/manifest.json").read_text())
    for name, digest in manifest["files"].items():
        assert sha(run / "checkpoints/step-00000006" / name) == digest


def test_a_run_dir_with_checkpoints_is_not_overwritten(six_step_run, toy_data):
    run, _ = six_step_run
    with pytest.raises(ValueError, match="already holds checkpoints"):
        Trainer(tiny_config(), run, dataset=toy_data, progress=False)


def test_corrupt_checkpoint_is_named_and_the_previous_one_untouched(
    six_step_run, toy_data, tmp_path
):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(six_step_run[0], run)
    previous = run / "checkpoints/step-00000003"
    before = {p.name: sha(p) for p in previous.iterdir()}
    bad = run / "checkpoints/step-00000006/model.safetensors"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the weights
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        Trainer(tiny_config(), run, dataset=toy_data, progress=False, resume=True)
    message = str(info.value)
    assert str(bad) in message and "corrupt" in message and str(previous) in message
    assert {p.name: sha(p) for p in previous.iterdir()} == before
    # Falling back resumes from the previous checkpoint and reproduces steps 4-6 exactly.
    with pytest.warns(UserWarning, match="falling back"):
        trainer = Trainer(
            tiny_config(), run, dataset=toy_data, progress=False, resume=True, fallback=True
        )
    assert trainer.step == 3
    assert trainer.fit(6)["losses"] == six_step_run[1][3:]


class PoisonedToyData:
    """The toy set with one image replaced by NaNs (a corrupt input reaching the model)."""

    def __init__(self, data: ToyDataset, bad_index: int):
        self.data, self.bad_index, self.num_classes = data, bad_index, data.num_classes

    def __len__(self):
        return len(self.data)

    def batch(self, indices):
        images, classes = self.data.batch(indices)
        images[np.asarray(indices) == self.bad_index] = float("nan")
        return images, classes


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(toy_data, tmp_path):
    bad_index = int(ResumableSampler(len(toy_data)).batch_indices(4, 8)[0])  # read at step 5
    run = tmp_path / "nan"
    trainer = Trainer(
        tiny_config(), run, dataset=PoisonedToyData(toy_data, bad_index), progress=False
    )
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(6)
    message = str(info.value)
    assert "step 5" in message and "step-00000003" in message and "nan" in message.lower()
    assert trainer.step == 4  # step 5 never updated the weights
    assert [c.name for c in list_checkpoints(run)] == ["step-00000003"]
    state = load_checkpoint(run / "checkpoints/step-00000003")  # verified, intact
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert all(math.isfinite(r["loss"]) for r in read_metrics(run))


def test_metrics_jsonl_records_loss_lr_speed_and_sigma_bins(six_step_run):
    run, losses = six_step_run
    records = read_metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in records] == losses
    labels = [
        "1e-03-1e-02",
        "1e-02-1e-01",
        "1e-01-1e+00",
        "1e+00-1e+01",
        "1e+01-1e+02",
        "1e+02-1e+03",
    ]
    for r in records:
        assert r["lr"] == 5e-4 and r["samples_per_s"] > 0
        assert list(r["sigma_bins"]) == labels
        counts = r["sigma_bin_counts"]
        assert sum(counts.values()) == 8
        # the per-σ-bin means recombine into the step's loss
        total = sum(r["sigma_bins"][k] * counts[k] for k in labels if counts[k])
        assert total / 8 == pytest.approx(r["loss"], rel=1e-6)
    assert records[0]["ema_decay"] == 0.0 and records[-1]["ema_decay"] == pytest.approx(
        1 - 6 ** (-2 / 3)
    )


def test_loss_curves_plot(six_step_run):
    import matplotlib

    matplotlib.use("Agg")
    from hdit_edu.viz import plot_losses

    run, losses = six_step_run
    ax = plot_losses(run)
    ys = ax.get_lines()[0].get_ydata()
    assert list(ys) == pytest.approx(losses)
    ax = plot_losses(run, by_sigma=True)
    assert 1 <= len(ax.get_lines()) <= 6


# --- DDP on CPU with gloo ----------------------------------------------------------------------

DDP_WORKER = ROOT / "tests" / "ddp_worker.py"  # one rank: records step 0's grads and draws
GLOO_ENV = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")


def load_ranks(out: Path, world: int) -> list[dict]:
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]


def test_ddp_gloo_two_processes_average_to_the_full_batch_gradient(tmp_path, toy_data):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(DDP_WORKER), str(tmp_path), "1"]  # fmt: skip
    proc = subprocess.run(cmd, env=GLOO_ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = load_ranks(tmp_path, 2)
    assert r0["world"] == r1["world"] == 2 and len(r0["x0"]) == 4  # 8 split over 2 ranks

    # One process on the full batch of step 0: the same images (the two shards) ...
    single = Trainer(
        tiny_config(batch_size=8),
        None,
        dataset=ToyDataset("train", resolution=32, size=512),
        progress=False,
    )
    full = single.sampler.batch_indices(0, 8)
    assert sorted(torch.cat([r0["indices"], r1["indices"]]).tolist()) == sorted(full.tolist())
    # ... each rank drew its own strata of σ: sorted by σ the ranks alternate 0, 1, 0, 1, ...
    sigma = torch.cat([r0["sigma"], r1["sigma"]])
    owner = torch.tensor([0] * 4 + [1] * 4)[sigma.argsort(descending=True)]
    assert owner.tolist() == [0, 1] * 4
    # ... and the gradient of the full-batch mean equals DDP's averaged gradient.
    cat = lambda key: torch.cat([r0[key], r1[key]])
    single.forward_backward(cat("x0"), cat("noise"), sigma, class_cond=cat("class_cond"))
    for name, p in single.model.named_parameters():
        torch.testing.assert_close(r0["grads"][name], p.grad, rtol=1e-4, atol=1e-7, msg=name)
        assert torch.equal(r0["grads"][name], r1["grads"][name])  # all-reduced: identical
    for name in r0["params"]:  # after a DDP optimiser step the replicas agree exactly
        assert torch.equal(r0["params"][name], r1["params"][name])


# --- Multi-node: 2 torchrun "nodes" of 1 process each on 127.0.0.1, c10d rendezvous, gloo -------

MULTINODE_STEPS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_reproduce_a_single_process_run_with_the_same_global_batch(tmp_path):
    """README's multi-node recipe, on one machine: two ``torchrun --nnodes 2 --nproc-per-node 1
    --node-rank i`` launchers meet at a c10d rendezvous and train 3 steps of global batch 8 (4
    per node). One process then replays the same global batches and draws (the two nodes'
    images, σ and ε side by side) through the real ``train_step``: the losses agree to 1e-6
    (relative) and the weights and EMA weights after 3 AdamW steps to 1e-6 (absolute; measured:
    ≤ 1.5e-8 and 1e-7 relative for the losses)."""
    rdzv = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
            "--rdzv-id", "hdit-multinode-test", "--local-addr", "127.0.0.1"]  # fmt: skip
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--node-rank",
                str(node),
                *rdzv,
                str(DDP_WORKER),
                str(tmp_path),
                str(MULTINODE_STEPS),
            ],  # fmt: skip
            env=GLOO_ENV,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in (0, 1)
    ]
    for proc in nodes:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output[-3000:]
    ranks = load_ranks(tmp_path, 2)
    assert [r["world"] for r in ranks] == [2, 2] and [r["rank"] for r in ranks] == [0, 1]
    for r in ranks:  # the nodes' replicas agree exactly after each all-reduced update
        assert r["losses"].tolist() == ranks[0]["losses"].tolist()
        for name, p in r["params"].items():
            assert torch.equal(p, ranks[0]["params"][name]), name

    # One process, global batch 8, fed the two nodes' batches and draws step by step.
    single = Trainer(tiny_config(batch_size=8), None, dataset=ToyDataset("train", resolution=32,
                     size=512), progress=False)  # fmt: skip
    cat = lambda step, key: torch.cat([r["draws"][step][key] for r in ranks])
    single.micro_batches = lambda step, batch=None: [  # one micro-step: the nodes' draws
        {key: cat(step, key) for key in ("x0", "noise", "sigma", "class_cond")}
    ]
    losses = [single.train_step() for _ in range(MULTINODE_STEPS)]
    assert single.step == MULTINODE_STEPS
    torch.testing.assert_close(
        torch.tensor(losses, dtype=torch.float64), ranks[0]["losses"], rtol=1e-6, atol=0
    )
    for name, p in single.model.named_parameters():
        torch.testing.assert_close(p.detach(), ranks[0]["params"][name], rtol=0, atol=1e-6)
    for name, p in single.ema.named_parameters():
        torch.testing.assert_close(p.detach(), ranks[0]["ema"][name], rtol=0, atol=1e-6)
