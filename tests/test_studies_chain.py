"""``hdit-edu ablate toy`` as a study (``hdit_edu.studies.chain``) and compile as an option of a
study (``[options] compile = true``).

* The generated spec of the whole chain, pointed at the shipped records, gives the shipped
  ``runs/summary.json`` byte for byte: the shortcut asks the same question as the shipped spec.
* A compiled study (``torch.compile`` on the CPU, 3 steps, 8 samples) run twice into two
  folders gives equal losses and metrics, and its records say they were compiled.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hdit_edu.ablation import TOY_EXPERIMENT, ToyBudget
from hdit_edu.analysis import analyze
from hdit_edu.env import cpu_model
from hdit_edu.studies import registration, runner
from hdit_edu.studies.chain import chain_study_text, prepare_chain_study
from hdit_edu.studies.spec import SpecError, load_study

ROOT = Path(__file__).resolve().parents[1]
ABLATION = ROOT / "results" / "ablation-toy"


def test_the_chain_study_of_ablate_asks_the_shipped_question(tmp_path):
    """The spec ``ablate toy`` generates for the whole chain (seeds 0–4: D and E have the
    extra two, the others have none), reading the shipped records, reproduces the shipped
    summary exactly — the arms, comparisons, reference and budget are the shipped spec's."""
    text = chain_study_text(TOY_EXPERIMENT, [0, 1, 2, 3, 4], ToyBudget(), "ckpt")
    assert 'records = "."' in text
    spec = tmp_path / "study.toml"
    spec.write_text(text.replace('records = "."', f"records = {json.dumps(str(ABLATION / 'runs'))}"))
    study, shipped = load_study(spec), load_study(ABLATION / "study.toml")
    assert [a.label for a in study.arms] == [a.label for a in shipped.arms]
    assert study.comparisons == shipped.comparisons and study.reference == shipped.reference
    assert study.budget == shipped.budget and study.metrics == shipped.metrics
    expected = (ABLATION / "runs" / "summary.json").read_text()
    assert json.dumps(analyze(study), indent=1) + "\n" == expected


def test_the_chain_study_is_registered_then_amended_with_the_command(tmp_path):
    out = tmp_path / "out"
    budget = ToyBudget(train_steps=3)
    spec = prepare_chain_study(out, ["C", "D"], [0], budget, "ck", command="hdit-edu ablate toy A")
    study = load_study(spec)
    assert [a.label for a in study.arms] == ["C", "D"] and study.budget == budget
    assert [(c.x, c.y) for c in study.comparisons] == [("C", "D")]
    reg = registration.registration(out)
    assert reg["after_runs"] is None and reg["text"] == spec.read_text()
    assert prepare_chain_study(out, ["C", "D"], [0], budget, "ck", command="again") == spec
    assert registration.amendments(out) == []  # the same flags: the same, registered spec
    prepare_chain_study(out, ["C"], [0, 1], budget, "ck", command="hdit-edu ablate toy B")
    (amendment,) = registration.amendments(out)
    assert amendment["label"].startswith("ablate") and "hdit-edu ablate toy B" in amendment["reason"]
    assert registration.check(spec).arms[0].seeds == (0, 1)  # the amended spec is accepted
    # two configurations outside the paper's comparisons: each compared with the next
    text = chain_study_text(["C", "E"], [0], budget, "ck")
    assert '["C", "E", "C \\u2192 E"]' in text


def test_a_spec_may_leave_out_comparisons_only_for_one_arm(tmp_path):
    body = 'question = "q"\nseeds = [0]\narms = {arms}\n[analysis]\ncomparisons = []\n'
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "study.toml").write_text(body.format(arms='["C"]'))
    assert load_study(tmp_path / "one").comparisons == ()
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "study.toml").write_text(body.format(arms='["C", "D"]'))
    with pytest.raises(SpecError, match="analysis.comparisons: \\[\\]; allowed"):
        load_study(tmp_path / "two")


COMPILED = """\
question = "Is a compiled study bit-identical to itself on one CPU kind?"
seeds = [0]
arms = ["C"]
checkpoints = "{checkpoints}"

[task]
train_steps = 3
batch_size = 4

[evaluation]
n_eval = 8
n_loss = 8
sample_steps = 2
sample_batch = 8

[analysis]
comparisons = []

[options]
compile = true
"""


def test_a_compiled_study_is_bit_identical_to_itself_and_says_it_was_compiled(tmp_path):
    """Twice the same compiled study into two folders (torch.compile's inductor on the CPU:
    it builds C++ kernels with the machine's compiler): every loss of the three steps and
    every metric are equal, on this CPU kind; the record says compiled, with the CPU."""
    records = []
    threads = torch.get_num_threads()
    try:
        for name in ("a", "b"):
            folder = tmp_path / name
            folder.mkdir()
            spec = folder / "study.toml"
            spec.write_text(COMPILED.format(checkpoints=folder / "checkpoints"))
            registration.register(spec)
            result = runner.run(spec, progress=False, log=lambda *a: None)
            assert result["ok"], result["errors"]
            assert [r["compiled"] for r in result["status"]] == [True]
            records.append(json.loads((folder / "runs" / "C-s0.json").read_text()))
    finally:
        torch.set_num_threads(threads)
    a, b = records
    for r in records:
        assert r["status"] == "done" and r["config"]["training"]["compile"] is True
        assert r["settings"]["overrides"] == ["training.compile=true"]
        assert r["compiled"]["torch"] == torch.__version__ and r["versions"]["cpu"] == cpu_model()
    assert len(a["losses_first_steps"]) == 3
    assert a["losses_first_steps"] == b["losses_first_steps"]
    assert a["loss_every_10"] == b["loss_every_10"]
    for metric in ("fid", "class_accuracy", "class_accuracy_per_class", "heldout_loss"):
        assert a["final"][metric] == b["final"][metric], metric


def test_a_compiled_study_is_refused_where_no_cpp_compiler_is_found(tmp_path):
    """The real mechanism: a process whose PATH holds no ``g++`` (only the interpreter's own
    folder), with an empty inductor cache. ``study run`` refuses the compiled study before any
    run, naming torch's reason and the way out; nothing is trained, no record is written."""
    folder = tmp_path / "s"
    folder.mkdir()
    spec = folder / "study.toml"
    spec.write_text(COMPILED.format(checkpoints=folder / "checkpoints"))
    registration.register(spec)
    bare_path = str(Path(sys.executable).parent)
    assert shutil.which("g++", path=bare_path) is None
    env = {"PATH": bare_path, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "hdit_edu.cli", "study", "run", str(spec), "--no-progress"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "options.compile = true, but torch.compile cannot build CPU kernels" in proc.stderr
    assert "C++ compiler" in proc.stderr and "Traceback" not in proc.stderr
    assert not (folder / "runs" / "C-s0.json").exists() and not (folder / "checkpoints").exists()
