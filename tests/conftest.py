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
