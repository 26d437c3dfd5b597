"""A stage under `accelerate launch` with two CPU processes (gloo): both ranks run, only rank 0 writes."""

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
BOOKKEEPING = {"_SUCCESS", "metrics.json"}


def bare_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("run: {seed: 1}\ndata:\n  world: {n_people: 20, corpus_bytes: 20000}\n")
    return folder


def launch(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_data_stage_on_two_processes_matches_one(tmp_path):
    two = bare_run(tmp_path / "two")
    result = launch("--config_file", "recipes/accelerate/cpu_2proc.yaml", "-m", "pipeline.stages.data", "--run", str(two))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0/2: data" in result.stderr and "rank 1/2: data" in result.stderr
    metrics = json.loads((two / "data" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2

    one = bare_run(tmp_path / "one")
    subprocess.run([sys.executable, "-m", "pipeline.stages.data", "--run", str(one)], cwd=ROOT, check=True,
                   capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    files = sorted(p.relative_to(one / "data") for p in (one / "data").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two / "data") for p in (two / "data").rglob("*") if p.is_file())
    for rel in files:  # rank 1 wrote nothing: the output is exactly what one process writes
        if rel.name not in BOOKKEEPING:
            assert filecmp.cmp(one / "data" / rel, two / "data" / rel, shallow=False), rel
