"""Hermetic tests: nothing reaches the network; shared real data is read from ../shared/data when present."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


# The NIST StRD files the regression tests score against ship with the tests (tests/data/nist_strd/README.md);
# set, not setdefault: the tests always read this copy, whatever NIST_STRD_DIR the shell exports.
NIST_STRD = ROOT / "tests" / "data" / "nist_strd"
os.environ["NIST_STRD_DIR"] = str(NIST_STRD)


def _have_nist() -> bool:
    from pipeline.regression.nist import data_dir

    try:
        return data_dir() == NIST_STRD
    except FileNotFoundError:
        return False


needs_nist = pytest.mark.skipif(not _have_nist(), reason=f"NIST StRD data not found at {NIST_STRD}")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def fake_stages(monkeypatch):
    """Replace the registry with two tiny stages (alpha -> beta) from tests/fake_stages.py."""
    from pipeline import registry

    monkeypatch.setattr(registry, "STAGES", {"alpha": "tests.fake_stages", "beta": "tests.fake_stages_beta"})
    return registry.STAGES


def make_run(folder: Path, **sections) -> Path:
    """A run folder holding a config.yaml: a small world plus the given sections ({"pretrain": {...}})."""
    import yaml

    config = {"run": {"seed": 0}, "data": {"world": {"n_people": 20, "corpus_bytes": 60000}},
              "tokenizer": {"vocab_size": 512}}
    config.update(sections)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def stage(name: str, folder: Path, *overrides: str) -> None:
    """Run a stage in this process, failing the test on error."""
    from pipeline.cli import main

    assert main(["stage", name, "--run", str(folder), *overrides]) == 0


def kill_when(proc, marker: Path, timeout: float = 300, delay: float = 0.0) -> None:
    """SIGKILL `proc` `delay` seconds after `marker` exists (a checkpoint's last file), or when it ends or time
    runs out. A delay lands the kill at a step that depends on the machine's speed: mid-step, mid-save or later."""
    import signal
    import time

    deadline = time.time() + timeout
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    if delay and proc.poll() is None:
        time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


# A whole run at the smallest sizes that still exercise every model stage (about a minute on 2 cores).
NANO_SECTIONS = {
    "pretrain": {"model_size": "nano", "block_size": 64, "max_steps": 30, "per_device_train_batch_size": 8,
                 "learning_rate": 0.005, "eval_steps": 30, "save_steps": 30, "n_samples": 0},
    "sft": {"max_steps": 10, "per_device_train_batch_size": 8, "eval_max_new_tokens": 8, "learning_rate": 0.002},
    "reward": {"max_steps": 10, "per_device_train_batch_size": 8, "learning_rate": 0.001},
    "ppo": {"rollout_batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 6, "total_episodes": 8,
            "save_steps": 2, "eval_max_new_tokens": 8, "score_qa_prompts": True},
}
NANO_STAGES = ("data", "tokenizer", "pretrain", "sft", "reward", "ppo")


@pytest.fixture(scope="session")
def nano_run(tmp_path_factory) -> Path:
    """A finished run folder (data .. ppo at nano sizes), shared by the whole session: treat it as read-only
    (copy it with shutil.copytree before changing anything in it)."""
    folder = make_run(tmp_path_factory.mktemp("nano") / "run", **NANO_SECTIONS)
    for name in NANO_STAGES:
        stage(name, folder)
    return folder
