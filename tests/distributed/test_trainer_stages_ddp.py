"""SFT and reward on two CPU processes (gloo) x batch B against one process x batch 2B: the same first-step
loss, the same final loss and held-out metrics (relative tolerance 1e-4: DDP averages the two halves' gradients
in another order of float additions), and only rank 0 writes files. (Pretrain: test_pretrain_ddp.py; ppo:
tests/unit/stages/test_ppo.py::test_two_processes_make_the_same_first_update_as_one; embeddings and data:
test_accelerate.py.)

Which rank wrote a file is read from its mode: rank_umask/sitecustomize.py gives every rank but 0 the umask 027, so
their files are 0640 where rank 0's are 0644. The RNG state HF Trainer saves per rank is the control: rank 1's must
be 0640. (Files written through a private temporary, 0600 whatever the umask, such as safetensors', are not
attributed: their content is what the one-process run writes, compared above through the metrics.)"""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_run, stage

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
PRETRAIN = {"model_size": "nano", "block_size": 64, "max_steps": 20, "per_device_train_batch_size": 8,
            "learning_rate": 0.005, "eval_steps": 20, "save_steps": 20, "n_samples": 0}
STEPS = {"max_steps": 3, "logging_steps": 1, "per_device_train_batch_size": 8}
PER_RANK_FILES = ("rng_state_1.pth",)  # HF Trainer checkpoints each rank's RNG state, written by that rank


def launch_two(name: str, folder: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent / "rank_umask"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                             "recipes/accelerate/cpu_2proc.yaml", "-m", f"pipeline.stages.{name}", "--run", str(folder),
                             *overrides], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"rank 0/2: {name}" in result.stderr and f"rank 1/2: {name}" in result.stderr  # two ranks, really
    return result


def written_by_other_ranks(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and stat.S_IMODE(p.stat().st_mode) == 0o640)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    folder = make_run(tmp_path_factory.mktemp("ddp") / "one", pretrain=PRETRAIN,
                      sft={**STEPS, "eval_max_new_tokens": 4, "learning_rate": 0.002},
                      reward={**STEPS, "learning_rate": 0.001})
    for name in ("data", "tokenizer", "pretrain"):
        stage(name, folder)
    return folder


@pytest.mark.parametrize("name, compared", [
    ("sft", ("exact_match", "exact_match_base", "contains_answer")),
    ("reward", ("accuracy", "margin_mean", "ece")),
])
def test_two_processes_batch_b_equal_one_process_batch_2b(name, compared, pretrained, tmp_path):
    one = tmp_path / "one"
    shutil.copytree(pretrained, one)
    if name == "reward":
        stage("sft", one)
    two = tmp_path / "two"
    shutil.copytree(one, two)
    stage(name, one)
    launch_two(name, two, f"{name}.per_device_train_batch_size=4")

    a = json.loads((one / name / "metrics.json").read_text())
    b = json.loads((two / name / "metrics.json").read_text())
    assert (a["num_processes"], b["num_processes"]) == (1, 2)
    assert len(a["loss_history"]) == len(b["loss_history"]) == 3
    assert b["loss_history"][0][1] == pytest.approx(a["loss_history"][0][1], rel=1e-5)  # first step: same samples
    assert b["loss_history"][-1][1] == pytest.approx(a["loss_history"][-1][1], rel=1e-4)
    for key in compared:
        assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert written_by_other_ranks(two / name) == [f"checkpoint-3/{file}" for file in PER_RANK_FILES]
