import dataclasses
from pathlib import Path

from pipeline import registry

STAGES_DIR = Path(registry.__file__).parent / "stages"


def test_registry_matches_stage_modules():
    files = sorted(p.stem for p in STAGES_DIR.glob("*.py") if p.stem != "__init__")
    assert sorted(registry.STAGES) == files
    assert all(module == f"pipeline.stages.{name}" for name, module in registry.STAGES.items())


def test_every_stage_follows_the_protocol():
    order = list(registry.STAGES)
    for name in order:
        mod = registry.module(name)
        assert mod.NAME == name
        assert all(order.index(need) < order.index(name) for need in mod.NEEDS), f"{name} needs a later stage"
        assert dataclasses.is_dataclass(mod.Config) and callable(mod.run)
        assert set(mod.HEADLINE) and all(isinstance(k, str) for k in mod.HEADLINE)
        source = Path(mod.__file__).read_text()
        assert 'if __name__ == "__main__":' in source, f"{name} cannot run as python -m {mod.__name__}"
        assert (mod.__doc__ or "").strip(), f"{name} has no docstring with its command"
