"""Same recipe, same seed: identical datasets and tokenizer bytes, and on CPU identical metrics for every stage
(a second nano run compared with the session's, excluding wall-clock numbers) and identical final weights."""

import json
from pathlib import Path

import pytest

from tests.conftest import NANO_SECTIONS, NANO_STAGES, make_run, stage

pytestmark = pytest.mark.slow
# per-run identity and wall-clock; everything else must be equal
VOLATILE_FILES = {"_SUCCESS", "log.txt", "metrics.json", "manifest.json"}
WALL_CLOCK = ("seconds", "runtime", "per_second", "_time", "episodes_per_second", "throughput", "mfu", "flops")


def timeless(value):
    """`value` with every wall-clock number removed (keys naming seconds, rates per second, runtimes)."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if not any(w in k for w in WALL_CLOCK)}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    return value


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in VOLATILE_FILES}


@pytest.fixture(scope="module")
def twin(nano_run, tmp_path_factory) -> Path:
    folder = make_run(tmp_path_factory.mktemp("twin") / "run", **NANO_SECTIONS)
    for name in NANO_STAGES:
        stage(name, folder)
    return folder


@pytest.mark.parametrize("name", ["data", "tokenizer"])
def test_datasets_and_tokenizer_are_byte_identical(name, nano_run, twin):
    a, b = files(nano_run / name), files(twin / name)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    manifest = "manifest.json" if name == "data" else None
    if manifest:
        assert json.loads((nano_run / name / manifest).read_text()) == json.loads((twin / name / manifest).read_text())


@pytest.mark.parametrize("name", NANO_STAGES)
def test_every_stage_has_identical_metrics(name, nano_run, twin):
    a = timeless(json.loads((nano_run / name / "metrics.json").read_text()))
    b = timeless(json.loads((twin / name / "metrics.json").read_text()))
    assert a == b
    weights = nano_run / name / "final" / "model.safetensors"
    if weights.is_file():  # and the trained weights, bit for bit
        assert weights.read_bytes() == (twin / name / "final" / "model.safetensors").read_bytes()
