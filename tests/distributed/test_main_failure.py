"""A main-process-only action that fails (a push to the Hub, taking the run lock) stops every rank with the same
one-line error instead of leaving the others waiting at a barrier."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_every_rank_raises_the_main_process_failure():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                             "recipes/accelerate/cpu_2proc.yaml", "tests/distributed/main_failure_script.py"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    for rank in (0, 1):
        assert f"rank {rank}/2: error: the Hub refused the upload" in result.stderr, result.stderr[-2000:]
