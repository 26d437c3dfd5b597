"""Data parallelism is exact: 2 processes x batch B give the first step's loss and gradient norm of
1 process x batch 2B (same samples, gradients averaged by DDP over gloo)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_run, stage

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
STEP = {"model_size": "nano", "block_size": 32, "max_steps": 1, "logging_steps": 1, "eval_steps": 1,
        "save_steps": 1, "n_samples": 0}


def test_two_processes_batch_b_equal_one_process_batch_2b(tmp_path):
    one = make_run(tmp_path / "one", pretrain={**STEP, "per_device_train_batch_size": 8})
    stage("data", one)
    stage("tokenizer", one)
    two = tmp_path / "two"
    shutil.copytree(one, two)

    stage("pretrain", one)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                             "recipes/accelerate/cpu_2proc.yaml", "-m", "pipeline.stages.pretrain", "--run", str(two),
                             "pretrain.per_device_train_batch_size=4"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    a = json.loads((one / "pretrain" / "metrics.json").read_text())
    b = json.loads((two / "pretrain" / "metrics.json").read_text())
    assert (a["num_processes"], b["num_processes"]) == (1, 2)
    assert a["train_tokens"] == b["train_tokens"] == 8 * 32
    assert b["loss_history"][0][1] == pytest.approx(a["loss_history"][0][1], rel=1e-5)
    assert b["grad_norm_history"][0][1] == pytest.approx(a["grad_norm_history"][0][1], rel=1e-4)
