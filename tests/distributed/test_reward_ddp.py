"""The reward stage on two CPU processes (gloo) from a LoRA SFT adapter: only rank 0 merges the adapter into the
scratch `<run>/reward/.base/`, rank 1 waits for it, both train, and the scratch folder is gone at the end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_run, stage

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
PRETRAIN = {"model_size": "nano", "block_size": 64, "max_steps": 4, "per_device_train_batch_size": 8,
            "eval_steps": 4, "save_steps": 4, "n_samples": 0}


def test_reward_on_two_processes_from_a_lora_sft(tmp_path):
    folder = make_run(tmp_path / "r", pretrain=PRETRAIN,
                      sft={"use_peft": True, "lora_r": 4, "max_steps": 2, "per_device_train_batch_size": 8,
                           "eval_max_new_tokens": 4},
                      reward={"max_steps": 2, "per_device_train_batch_size": 4})
    for name in ("data", "tokenizer", "pretrain", "sft"):
        stage(name, folder)
    assert (folder / "sft" / "final" / "adapter_config.json").is_file()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                             "recipes/accelerate/cpu_2proc.yaml", "-m", "pipeline.stages.reward", "--run", str(folder)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0/2: reward" in result.stderr and "rank 1/2: reward" in result.stderr  # two ranks, really
    assert (folder / "reward" / "_SUCCESS").is_file() and not (folder / "reward" / ".base").exists()
    metrics = json.loads((folder / "reward" / "metrics.json").read_text())
    assert metrics["pairs"] + metrics["pairs_skipped"] == 100 and metrics["pairs"] > 0

    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(folder / "reward" / "final").config.num_labels == 1
