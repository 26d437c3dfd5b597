"""Kill pretraining with SIGKILL after a checkpoint, rerun the stage: it resumes and ends exactly as an
uninterrupted run does (losses, evaluation, weights)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import kill_when, make_run, stage

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
CONFIG = {"model_size": "tiny", "block_size": 64, "max_steps": 40, "per_device_train_batch_size": 8,
          "logging_steps": 5, "eval_steps": 10, "save_steps": 10, "save_total_limit": 5, "n_samples": 1}


def launch(folder: Path) -> subprocess.Popen:
    """The stage in a child process, its output to a file (a pipe nobody reads could fill and stall it)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = open(folder.parent / f"{folder.name}.log", "a")
    return subprocess.Popen([sys.executable, "-m", "pipeline.stages.pretrain", "--run", str(folder)], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, folder: Path) -> str:
    proc.wait(timeout=600)
    output = (folder.parent / f"{folder.name}.log").read_text()
    assert proc.returncode == 0, output[-3000:]
    return output


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    base = make_run(tmp_path / "base", pretrain=CONFIG)
    stage("data", base)
    stage("tokenizer", base)
    killed = tmp_path / "killed"
    shutil.copytree(base, killed)

    kill_when(launch(killed), killed / "pretrain" / "checkpoint-10" / "trainer_state.json")
    assert not (killed / "pretrain" / "_SUCCESS").exists(), "the run finished before it could be killed"
    assert not (killed / "pretrain" / "final").exists()

    assert "pretrain (resuming)" in finish(launch(killed), killed)
    finish(launch(base), base)

    a = json.loads((base / "pretrain" / "metrics.json").read_text())
    b = json.loads((killed / "pretrain" / "metrics.json").read_text())
    for key in ("loss_history", "grad_norm_history", "eval_history", "eval_loss", "val_bpb", "steps", "samples"):
        assert a[key] == b[key], key
    wa, wb = load_file(base / "pretrain" / "final" / "model.safetensors"), load_file(killed / "pretrain" / "final" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
