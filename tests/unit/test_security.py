"""Security guarantees: no remote code, no pickles, names that cannot lead a write out of the run folder.
(Hub tokens: tests/unit/test_hub.py::test_the_token_is_never_written and ::test_a_token_in_the_recipe_is_redacted;
torch.load only with weights_only on resume: tests/e2e/test_interruption.py.)"""

import re
from pathlib import Path

import pytest

from pipeline.artifacts import RunDir
from pipeline.cli import main
from pipeline.config import ConfigError, load_recipe
from pipeline.errors import PipelineError

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for folder in ("pipeline", "benchmarks", "recipes") for p in (ROOT / folder).rglob("*")
           if p.suffix in (".py", ".yaml") and ".venv" not in p.parts and "peers" not in p.parts]


def test_the_scan_sees_the_code():
    assert len([p for p in SOURCES if p.suffix == ".py"]) > 50 and any(p.suffix == ".yaml" for p in SOURCES)


@pytest.mark.parametrize("pattern, what", [
    (r"trust_remote_code[\"']?\s*(:\s*bool\s*)?[=:]\s*(True|true|1)\b", "remote code trusted"),
    (r"allow_pickle\s*=\s*True|read_pickle\(|pickle\.Unpickler|from torch import load\b", "pickle loading"),
    (r"\bpickle\.loads?\(|\bdill\.|\bjoblib\.load\(", "pickle loading"),
    (r"torch\.load\((?![^)]*weights_only\s*=\s*True)|weights_only\s*=\s*False", "torch.load without weights_only=True"),
    (r"(use_safetensors|safe_serialization)\s*=\s*False", "pickled weights"),
])
def test_no_source_file_does_it(pattern, what):
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in SOURCES for n, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(pattern, line) and not line.lstrip().startswith("#")]
    assert not offenders, f"{what}: {offenders}"


def test_trust_remote_code_in_a_recipe_is_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("sft: {trust_remote_code: true}\n")
    with pytest.raises(ConfigError, match="trust_remote_code: never enabled"):
        load_recipe(recipe)


@pytest.mark.parametrize("text, message", [
    ("run: {name: ../../outside}\n", "run.name: '../../outside' is not a plain name"),
    ("run: {name: /etc}\n", "run.name: '/etc' is not a plain name"),
    ("data: {sources: [{name: ../../../tmp/x, format: text, path: a.txt}]}\n", "data.sources[0].name: '../../../tmp/x'"),
    ("data: {sources: [{name: .hidden, format: text, path: a.txt}]}\n", "data.sources[0].name: '.hidden'"),
])
def test_names_that_would_leave_the_run_folder_are_refused(tmp_path, text, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_recipe(recipe)


def test_a_dataset_name_cannot_read_outside_the_run(tmp_path):
    with pytest.raises(PipelineError, match=r"sft.dataset: '../../x' is not a plain name"):
        RunDir(tmp_path).dataset("../../x", where="sft.dataset")


def test_a_symlinked_stage_folder_is_refused_and_nothing_is_written_outside(fake_stages, tmp_path, capsys):
    run, outside = tmp_path / "run", tmp_path / "outside"
    run.mkdir()
    outside.mkdir()
    (run / "config.yaml").write_text("alpha: {value: 5}\n")
    (run / "alpha").symlink_to(outside, target_is_directory=True)
    assert main(["stage", "alpha", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"outside the run folder {run}" in err and "symlink" in err
    assert list(outside.iterdir()) == []


def test_every_saved_model_is_safetensors_only(nano_run):
    finals = [f for f in sorted(nano_run.glob("*/final")) + sorted(nano_run.glob("ppo/value")) if f.parent.name != "tokenizer"]
    assert {f.parent.name for f in finals} >= {"pretrain", "sft", "reward", "ppo"}
    for folder in finals:
        assert any(folder.glob("*.safetensors")), folder
        pickles = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
        assert not pickles, f"{folder}: {pickles}"


def test_a_model_folder_with_pickled_weights_only_is_refused(nano_run, tmp_path, capsys):
    """`pytorch_model.bin` (a pickle) is never loaded: every model load asks transformers for safetensors."""
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    folder.mkdir()
    final = nano_run / "pretrain" / "final"
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((final / name).read_bytes())
    torch.save(load_file(final / "model.safetensors"), folder / "pytorch_model.bin")
    text = tmp_path / "text.txt"
    text.write_text("Mara lives in Dublin. Her friend is Tariq.\n")
    assert main(["eval", str(folder), "--suite", "bpb", "--data", str(text)]) == 2  # evaluated it before
    assert "no file named model.safetensors" in capsys.readouterr().err
