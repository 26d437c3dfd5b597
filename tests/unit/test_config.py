from pathlib import Path

import pytest

from pipeline import config as config_lib
from pipeline.cli import main
from pipeline.config import ConfigError, load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def write(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates_and_round_trips(path, tmp_path):
    recipe = load_recipe(path)
    assert recipe.stages, f"{path.name} runs no stage"
    resolved = write(tmp_path, config_lib.dump_yaml(recipe))
    again = load_recipe(resolved)
    assert again.to_dict() == recipe.to_dict()


def test_values_are_typed_and_defaults_filled(fake_stages, tmp_path):
    path = write(tmp_path, "run: {name: x, seed: 3}\nalpha: {value: 7, rate: 1}\n")
    recipe = load_recipe(path)
    assert recipe.run.seed == 3 and recipe.stages == ["alpha"]
    cfg = recipe.sections["alpha"]
    assert cfg.value == 7 and cfg.rate == 1.0 and isinstance(cfg.rate, float) and cfg.label == "a"
    assert recipe.sections["beta"].factor == 2  # a section the recipe left out still has its defaults


def test_overrides(fake_stages, tmp_path):
    path = write(tmp_path, "alpha: {value: 7}\n")
    recipe = load_recipe(path, ["alpha.rate=1e-4", "alpha.label=007", "run.stages=[alpha, beta]", "beta.factor=5"])
    assert recipe.sections["alpha"].rate == pytest.approx(1e-4)
    assert recipe.sections["alpha"].label == "007"  # a str field keeps the text as typed
    assert recipe.stages == ["alpha", "beta"] and recipe.sections["beta"].factor == 5


@pytest.mark.parametrize("text, overrides, message", [
    ("alpha: {value: 1\n", [], "r.yaml: invalid YAML at line 2"),
    ("- a\n- b\n", [], "r.yaml: expected a mapping of sections at the top level, got list"),
    ("gamma: {}\n", [], "r.yaml: gamma: unknown section (valid: run, alpha, beta)"),
    ("alpha: {valeu: 1}\n", [], "r.yaml: alpha.valeu: unknown key (valid: checkpoint, fail, label, rate, value)"),
    ("alpha: {rate: fast}\n", [], "r.yaml: alpha.rate: expected float, got 'fast'"),
    ("alpha: {value: 1.5}\n", [], "r.yaml: alpha.value: expected int, got 1.5"),
    ("alpha: {fail: 'yes'}\n", [], "r.yaml: alpha.fail: expected bool, got 'yes'"),
    ("alpha: {label: [1]}\n", [], "r.yaml: alpha.label: expected str, got a list"),
    ("alpha: 3\n", [], "r.yaml: alpha: expected a mapping, got 3"),
    ("run: {stages: [alpha, omega]}\n", [], "r.yaml: run.stages: unknown stage 'omega' (valid: alpha, beta)"),
    ("run: {report_to: [mlflow]}\n", [], "unknown tracker 'mlflow'"),
    ("alpha: {}\n", ["alpha.rate=fast"], "r.yaml: alpha.rate: expected float, got 'fast'"),
    ("alpha: {}\n", ["alpha.rate"], "override 'alpha.rate': expected section.key=value"),
    ("alpha: {}\n", ["alpha.value.x=1"], "r.yaml: alpha.value: expected int, got a mapping"),
    ("alpha: {value: 2}\n", ["alpha.value.x=1"], "override 'alpha.value.x=1': alpha.value is not a section"),
])
def test_bad_recipes_name_file_section_key(fake_stages, tmp_path, text, overrides, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_recipe(path, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: no such recipe file"):
        load_recipe(tmp_path / "nope.yaml")


def test_cli_error_is_one_line_exit_2(fake_stages, tmp_path, capsys):
    path = write(tmp_path, "alpha: {rate: fast}\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {path}: alpha.rate: expected float, got 'fast'"
    assert main(["run", str(path)]) == 2
    assert not (tmp_path / "runs").exists()


def test_validate_ok(fake_stages, tmp_path, capsys):
    path = write(tmp_path, "alpha: {}\n")
    assert main(["validate", str(path)]) == 0
    assert "stages: alpha" in capsys.readouterr().out


def test_every_config_field_has_help():
    from pipeline import registry

    for name in registry.STAGES:
        for cls in _dataclasses(registry.config_class(name)):
            for f in cls.__dataclass_fields__.values():
                if f.init and f.name not in _inherited_help(cls):
                    assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
    for f in config_lib.RunConfig.__dataclass_fields__.values():
        assert f.metadata.get("help"), f"run.{f.name} has no help"


def _dataclasses(cls, seen=None):
    import dataclasses
    import typing

    seen = seen if seen is not None else set()
    if cls in seen or not cls.__module__.startswith(("pipeline", "tests")):  # upstream classes document themselves
        return seen
    seen.add(cls)
    for tp in typing.get_type_hints(cls).values():
        for arg in (tp, *typing.get_args(tp)):
            if dataclasses.is_dataclass(arg) and isinstance(arg, type):
                _dataclasses(arg, seen)
    return seen


def _inherited_help(cls):
    """Fields inherited from transformers/TRL configs carry their own help upstream."""
    import transformers

    return {f for f in getattr(transformers.TrainingArguments, "__dataclass_fields__", {})} if issubclass(cls, transformers.TrainingArguments) else set()
