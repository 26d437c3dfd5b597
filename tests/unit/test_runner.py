"""Skip, force, invalidation and interruption, on two fake stages (alpha -> beta)."""

import json

import pytest

from pipeline.artifacts import MARKER
from pipeline.config import load_recipe
from pipeline.errors import PipelineError
from pipeline.runner import run_stages


def recipe(tmp_path, *overrides):
    path = tmp_path / "r.yaml"
    path.write_text("run: {name: t, stages: [alpha, beta]}\nalpha: {value: 3}\n")
    return load_recipe(path, [f"run.output_dir={tmp_path / 'run'}", *overrides])


def runs(tmp_path, name):
    return int((tmp_path / "run" / f"{name}.runs").read_text())


def test_run_writes_the_contract(fake_stages, tmp_path):
    results = run_stages(recipe(tmp_path), ["alpha", "beta"])
    root = tmp_path / "run"
    assert results["beta"]["doubled"] == 6
    assert sorted(p.name for p in (root / "beta").iterdir()) == [MARKER, "log.txt", "metrics.json", "out.txt"]
    assert json.loads((root / "beta" / "metrics.json").read_text())["doubled"] == 6
    env = json.loads((root / "env.json").read_text())
    assert env["packages"]["transformers"] and env["accelerate"]["num_processes"] == 1
    assert load_recipe(root / "config.yaml").sections["alpha"].value == 3  # the resolved copy is a recipe


def test_rerun_skips_and_force_reruns(fake_stages, tmp_path):
    run_stages(recipe(tmp_path), ["alpha", "beta"])
    again = run_stages(recipe(tmp_path), ["alpha", "beta"])
    assert (runs(tmp_path, "alpha"), runs(tmp_path, "beta")) == (1, 1)
    assert again["beta"]["doubled"] == 6  # a skipped stage reports its saved metrics
    run_stages(recipe(tmp_path), ["alpha", "beta"], force=True)
    assert (runs(tmp_path, "alpha"), runs(tmp_path, "beta")) == (2, 2)


def test_changed_section_reruns_only_it_and_downstream(fake_stages, tmp_path):
    run_stages(recipe(tmp_path), ["alpha", "beta"])
    run_stages(recipe(tmp_path, "beta.factor=10"), ["alpha", "beta"])
    assert (runs(tmp_path, "alpha"), runs(tmp_path, "beta")) == (1, 2)
    results = run_stages(recipe(tmp_path, "alpha.value=4", "beta.factor=10"), ["alpha", "beta"])
    assert (runs(tmp_path, "alpha"), runs(tmp_path, "beta")) == (2, 3)
    assert results["beta"]["doubled"] == 40


def test_rerun_upstream_invalidates_downstream(fake_stages, tmp_path):
    run_stages(recipe(tmp_path), ["alpha", "beta"])
    run_stages(recipe(tmp_path), ["alpha"], force=True)  # same config, new output
    run_stages(recipe(tmp_path), ["alpha", "beta"])
    assert (runs(tmp_path, "alpha"), runs(tmp_path, "beta")) == (2, 2)


def test_interrupted_stage_leaves_no_marker_and_resumes(fake_stages, tmp_path):
    with pytest.raises(RuntimeError, match="on purpose"):
        run_stages(recipe(tmp_path, "alpha.fail=true"), ["alpha", "beta"])
    assert not (tmp_path / "run" / "alpha" / MARKER).exists()
    assert not (tmp_path / "run" / "beta").exists()
    run_stages(recipe(tmp_path), ["alpha", "beta"])
    assert (tmp_path / "run" / "alpha" / MARKER).exists() and runs(tmp_path, "alpha") == 2


def test_a_failed_rerun_that_saved_nothing_puts_the_finished_stage_back(fake_stages, tmp_path):
    run_stages(recipe(tmp_path, "alpha.value=7"), ["alpha"])
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="on purpose"):
        run_stages(recipe(tmp_path, "alpha.value=8", "alpha.fail=true"), ["alpha"])
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert {k: v for k, v in after.items() if k.name != "alpha.runs"} == \
        {k: v for k, v in before.items() if k.name != "alpha.runs"}  # config.yaml, env.json, alpha/ unchanged
    assert not (tmp_path / "run" / ".alpha.previous").exists()


def test_a_failed_rerun_that_saved_a_checkpoint_keeps_it_to_resume(fake_stages, tmp_path):
    run_stages(recipe(tmp_path), ["alpha"])
    with pytest.raises(RuntimeError, match="on purpose"):
        run_stages(recipe(tmp_path, "alpha.value=8", "alpha.fail=true", "alpha.checkpoint=true"), ["alpha"])
    assert (tmp_path / "run" / "alpha" / "checkpoint-1").is_dir()
    assert not (tmp_path / "run" / "alpha" / MARKER).exists()
    assert (tmp_path / "run" / ".alpha.previous" / MARKER).exists()  # until the new attempt completes
    run_stages(recipe(tmp_path, "alpha.value=8", "alpha.checkpoint=true"), ["alpha"])
    assert (tmp_path / "run" / "alpha" / "out.txt").read_text() == "8"
    assert not (tmp_path / "run" / ".alpha.previous").exists()


def test_stage_without_upstream_is_a_clear_error(fake_stages, tmp_path):
    with pytest.raises(PipelineError, match="stage 'beta' needs alpha: run alpha first"):
        run_stages(recipe(tmp_path), ["beta"])


def test_stage_command_on_folder_with_only_config(fake_stages, tmp_path, capsys):
    from pipeline.cli import main

    folder = tmp_path / "bare"
    folder.mkdir()
    (folder / "config.yaml").write_text("alpha: {value: 5}\n")
    assert main(["stage", "alpha", "--run", str(folder)]) == 0
    assert json.loads((folder / "alpha" / "metrics.json").read_text())["value"] == 5
    assert main(["stage", "beta", "--run", str(tmp_path / "nowhere")]) == 2
    assert "not a run folder (no config.yaml)" in capsys.readouterr().err


def test_library_output_goes_to_the_stage_log_unless_verbose(fake_stages, tmp_path, capfd):
    run_stages(recipe(tmp_path), ["alpha"])
    log = (tmp_path / "run" / "alpha" / "log.txt").read_text()
    assert "alpha says hello on fd 1" in log and "alpha warns on fd 2" in log
    shown = capfd.readouterr()
    assert "hello" not in shown.out + shown.err and "✓ alpha" in shown.err  # the terminal gets the progress line
    run_stages(recipe(tmp_path), ["alpha"], force=True, verbose=True)
    shown = capfd.readouterr()
    assert "alpha says hello on fd 1" in shown.out and "alpha warns on fd 2" in shown.err
    assert not (tmp_path / "run" / "alpha" / "log.txt").exists()  # the forced rerun started a fresh folder


@pytest.mark.parametrize("name", ["pretrain", "sft", "reward", "ppo"])
def test_every_trainer_stage_clips_gradients_by_default(name, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(f"{name}: {{}}\n")
    assert load_recipe(path).sections[name].max_grad_norm == 1.0
