"""Interruptions of the trainer stages: SIGKILL then rerun ends exactly as an uninterrupted run (sft, reward,
embeddings killed twice: in word2vec, then in GloVe;
pretrain in tests/e2e/test_pretrain_resume.py, ppo in tests/unit/stages/test_ppo.py); Ctrl-C saves a checkpoint
and exits 130 with one line; a NaN stops the stage naming the step (ppo's own guard: test_ppo.py); a checkpoint
whose save failed half-way is never resumed from, and resuming loads states only with `weights_only=True`.

Every test starts from a copy of the session's nano run without the stage under test (and what follows it)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.artifacts import RunDir
from pipeline.cli import main
from tests.conftest import NANO_STAGES, kill_when, make_run, stage

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
# longer than the nano run's, checkpointing every 3 steps; the same for the killed and the uninterrupted run
SETTINGS = {
    "sft": ["sft.max_steps=24", "sft.save_strategy=steps", "sft.save_steps=3", "sft.logging_steps=1",
            "sft.save_total_limit=10"],
    "reward": ["reward.max_steps=24", "reward.save_strategy=steps", "reward.save_steps=3", "reward.logging_steps=1",
               "reward.save_total_limit=10"],
    "ppo": ["ppo.total_episodes=48", "ppo.save_steps=3", "ppo.save_total_limit=10"],
}
COMPARED = {  # every metric but wall-clock ones
    "sft": ("loss_history", "eval_loss", "exact_match", "exact_match_base", "examples"),
    "reward": ("loss_history", "accuracy", "accuracy_by_kind", "margin_mean", "ece"),
}


def upstream_of(name: str, nano_run: Path, target: Path) -> Path:
    """A copy of the nano run holding only the stages before `name`."""
    later = NANO_STAGES[NANO_STAGES.index(name):]
    shutil.copytree(nano_run, target, ignore=lambda folder, names: [n for n in names if Path(folder) == nano_run
                                                                      and n in later])
    return target


def launch(name: str, folder: Path, *overrides: str) -> subprocess.Popen:
    log = open(folder.parent / f"{folder.name}.log", "a")
    return subprocess.Popen([sys.executable, "-m", "pipeline.stages." + name, "--run", str(folder), *overrides],
                            cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=log, stderr=subprocess.STDOUT,
                            text=True)


def weights(folder: Path) -> dict:
    return load_file(folder / "final" / "model.safetensors")


@pytest.mark.parametrize("name, step, delay", [("sft", 3, 0.0), ("reward", 3, 0.0), ("sft", 3, 0.7),
                                              ("reward", 3, 0.4), ("sft", 24, 0.0)])
def test_sigkill_then_rerun_ends_as_an_uninterrupted_run(name, step, delay, nano_run, tmp_path, capfd):
    """Killed right after checkpoint-`step` is complete, or `delay` seconds later: at a step that depends on the
    machine (a few steps on, possibly during the save of checkpoint-6, which resume then skips). Step 24 is the
    last: killed between that checkpoint and the final save, the rerun must train no 25th step (transformers
    alone does)."""
    base, killed = upstream_of(name, nano_run, tmp_path / "base"), upstream_of(name, nano_run, tmp_path / "killed")
    kill_when(launch(name, killed, *SETTINGS[name]), killed / name / f"checkpoint-{step}" / "trainer_state.json",
              delay=delay)
    assert not (killed / name / "_SUCCESS").exists(), "the stage finished before it could be killed"
    capfd.readouterr()
    stage(name, killed, *SETTINGS[name])
    assert f"{name} (resuming)" in capfd.readouterr().err
    stage(name, base, *SETTINGS[name])
    a = json.loads((base / name / "metrics.json").read_text())
    b = json.loads((killed / name / "metrics.json").read_text())
    for key in COMPARED[name]:
        assert a[key] == b[key], key
    wa, wb = weights(base / name), weights(killed / name)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if path.is_file() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path} (exit {proc.poll()})")


@pytest.mark.parametrize("name, started", [("sft", "'loss'"), ("ppo", "ppo 2/")])
def test_ctrl_c_saves_a_checkpoint_and_exits_130(name, started, nano_run, tmp_path):
    folder = upstream_of(name, nano_run, tmp_path / "run")
    proc = launch(name, folder, *SETTINGS[name], *(["ppo.logging_steps=1"] if name == "ppo" else []))
    wait_for(folder / name / "log.txt", started, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=300) == 130
    lines = [line for line in (tmp_path / "run.log").read_text().splitlines() if line.startswith("interrupted:")]
    assert len(lines) == 1  # (a progress bar's last redraw may follow it)
    last = lines[0]
    assert last.startswith(f"interrupted: {name}: interrupted at ") and "the same command resumes it" in last
    checkpoint = Path(last.split("checkpoint saved in ")[1].split(";")[0])
    assert checkpoint.parent == folder / name and (checkpoint / "trainer_state.json").is_file()
    assert RunDir(folder).last_checkpoint(name) == str(checkpoint)
    assert not (folder / name / "_SUCCESS").exists()
    stage(name, folder, *SETTINGS[name])  # resumes and finishes
    assert (folder / name / "_SUCCESS").is_file()


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_nan_loss_stops_sft_naming_the_step_and_keeps_the_last_checkpoint(poison, nano_run, tmp_path, monkeypatch,
                                                                           capsys):
    from trl import SFTTrainer

    folder = upstream_of("sft", nano_run, tmp_path / "run")
    real, calls = SFTTrainer.compute_loss, {"train": 0}

    def poisoned(self, model, inputs, *args, **kwargs):
        loss = real(self, model, inputs, *args, **kwargs)
        if model.training:
            calls["train"] += 1
            if calls["train"] == 5:
                return (loss[0] * poison, *loss[1:]) if isinstance(loss, tuple) else loss * poison
        return loss

    monkeypatch.setattr(SFTTrainer, "compute_loss", poisoned)
    assert main(["stage", "sft", "--run", str(folder), *SETTINGS["sft"]]) == 2
    errors = [line[line.index("error:"):] for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert errors == [(f"error: sft: non-finite gradient (NaN or inf) at step 5; stopped before the update; "
                       f"last good checkpoint: {folder / 'sft' / 'checkpoint-3'}")]
    assert (folder / "sft" / "checkpoint-3" / "trainer_state.json").is_file()
    assert not (folder / "sft" / "checkpoint-6").exists() and not (folder / "sft" / "_SUCCESS").exists()


@pytest.mark.parametrize("name", ["sft", "ppo"])
def test_a_save_that_fails_half_way_is_never_resumed_from(name, nano_run, tmp_path, monkeypatch):
    """The second checkpoint's save raises (a full disk) after the weights are written: resume takes the first."""
    folder = upstream_of(name, nano_run, tmp_path / "run")
    if name == "sft":
        from transformers import Trainer as target
        method = "_save_rng_state"  # after model and optimizer, before trainer_state.json
    else:
        from pipeline.rl.trainer import PPOTrainer as target
        method = "save"
    real, calls = getattr(target, method), {"n": 0}

    def full_disk(self, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            if name == "ppo":
                self.accelerator.save_state(str(path))  # the models are on disk, our trainer_state is not
            raise OSError(28, "No space left on device")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(target, method, full_disk)
    with pytest.raises(OSError, match="No space left"):
        main(["stage", name, "--run", str(folder), *SETTINGS[name]])
    assert (folder / name / "checkpoint-6").is_dir() and not (folder / name / "checkpoint-6" / "trainer_state.json").exists()
    assert RunDir(folder).last_checkpoint(name) == str(folder / name / "checkpoint-3")
    monkeypatch.setattr(target, method, real)
    loads, real_load = [], torch.load

    def spy(*args, **kwargs):  # resume reads optimizer and RNG states with torch.load: never as full pickles
        loads.append(kwargs.get("weights_only", True))  # torch >= 2.6 defaults to weights_only=True
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    stage(name, folder, *SETTINGS[name])
    assert (folder / name / "_SUCCESS").is_file()
    assert loads and all(loads), loads


def test_embeddings_killed_twice_end_with_the_vectors_of_a_run_never_stopped(tmp_path):
    """Killed after CBOW's first epoch, then after GloVe's first epoch (CBOW finished): the rerun keeps the
    finished method, continues GloVe from its checkpoint, and every vector file equals the uninterrupted run's."""
    import random
    import string

    rng = random.Random(0)  # ~2,000 six-letter words (the stage keeps letters only): epochs of ~0.4-0.8 s
    words = sorted({"".join(rng.choice(string.ascii_lowercase) for _ in range(6)) for _ in range(2000)})
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words[: rng.randint(20, len(words))]) for _ in range(12))
                                for _ in range(40000)) + "\n")
    section = {"methods": ["cbow", "glove"], "corpus_file": str(corpus), "min_count": 1, "epochs": 3,
               "glove_epochs": 3, "vector_size": 16}
    base, killed = (make_run(tmp_path / name, embeddings=section) for name in ("base", "killed"))
    kill_when(launch("embeddings", killed), killed / "embeddings" / ".cbow.checkpoint" / "state.json")
    assert not (killed / "embeddings" / "cbow" / "metrics.json").exists(), "cbow finished before the kill"
    kill_when(launch("embeddings", killed), killed / "embeddings" / ".glove.checkpoint" / "state.json")
    assert (killed / "embeddings" / "cbow" / "metrics.json").exists() and not (killed / "embeddings" / "_SUCCESS").exists()
    stage("embeddings", killed)
    stage("embeddings", base)
    for method in ("cbow", "glove"):
        for name in ("vectors.txt", "vectors.bin"):
            assert (killed / "embeddings" / method / name).read_bytes() == (base / "embeddings" / method / name).read_bytes()
    assert not list((killed / "embeddings").glob(".*.checkpoint"))
    assert json.loads((base / "embeddings" / "metrics.json").read_text())["vocabulary"] > 1900
    resumed = {m: json.loads((killed / "embeddings" / m / "metrics.json").read_text())["resumed_from_epoch"]
               for m in ("cbow", "glove")}
    assert resumed == {"cbow": 1, "glove": 1}  # each continued from its first epoch's checkpoint
    assert json.loads((base / "embeddings" / "cbow" / "metrics.json").read_text())["resumed_from_epoch"] == 0
