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


def test_embeddings_on_two_processes_write_one_set_of_vectors(tmp_path):
    """Rank 0 trains and writes (the methods are not distributed yet); rank 1 runs the stage and waits. The
    vectors are those a one-process run writes."""
    import numpy as np

    from pipeline.embeddings.vectors import read_vectors

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    folders = {}
    for processes in (1, 2):
        folder = bare_run(tmp_path / str(processes))
        with open(folder / "config.yaml", "a") as config:
            config.write("embeddings: {methods: [cbow, glove], min_count: 2, epochs: 1, glove_epochs: 2, vector_size: 16}\n")
        subprocess.run([sys.executable, "-m", "pipeline.stages.data", "--run", str(folder)], cwd=ROOT, check=True,
                       capture_output=True, env=env)
        if processes == 1:
            subprocess.run([sys.executable, "-m", "pipeline.stages.embeddings", "--run", str(folder)], cwd=ROOT,
                           check=True, capture_output=True, env=env)
        else:
            result = launch("--config_file", "recipes/accelerate/cpu_2proc.yaml", "-m", "pipeline.stages.embeddings",
                            "--run", str(folder))
            assert result.returncode == 0, result.stderr[-3000:]
            assert "rank 0/2: embeddings" in result.stderr and "rank 1/2: embeddings" in result.stderr
            assert json.loads((folder / "embeddings" / "metrics.json").read_text())["num_processes"] == 2
        folders[processes] = folder / "embeddings"
    for method in ("cbow", "glove"):
        assert sorted(p.name for p in (folders[2] / method).iterdir()) == ["metrics.json", "vectors.bin", "vectors.txt"]
        one, two = (read_vectors(folders[n] / method / "vectors.bin") for n in (1, 2))
        assert one.words == two.words and np.array_equal(one.matrix, two.matrix), method
