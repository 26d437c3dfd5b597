import json
import os

import pytest

from pipeline.artifacts import MARKER, RunDir, atomic_write, replace_dir


def test_atomic_write_leaves_no_temporary(tmp_path):
    atomic_write(tmp_path / "a" / "f.txt", "one")
    atomic_write(tmp_path / "a" / "f.txt", "two")
    assert (tmp_path / "a" / "f.txt").read_text() == "two"
    assert os.listdir(tmp_path / "a") == ["f.txt"]


def test_marker_lifecycle(tmp_path):
    run = RunDir(tmp_path)
    assert not run.up_to_date("x", "fp", ())
    run.begin("x")
    run.complete("x", "fp", (), {"loss": 1.5})
    assert run.up_to_date("x", "fp", ()) and not run.up_to_date("x", "other", ())
    assert run.metrics("x") == {"loss": 1.5}
    run.begin("y")
    run.complete("y", "fp", ("x",), {})
    assert run.up_to_date("y", "fp", ("x",))
    run.begin("x")  # x is being rebuilt: y no longer matches what is on disk
    assert not (tmp_path / "x" / MARKER).exists()
    assert not run.up_to_date("y", "fp", ("x",))


def test_corrupt_marker_counts_as_missing(tmp_path):
    run = RunDir(tmp_path)
    run.stage_dir("x")
    (tmp_path / "x" / MARKER).write_text("{half")
    assert run.marker("x") is None


def test_replace_dir(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "f").write_text("new")
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "old").write_text("old")
    replace_dir(tmp_path / "new", tmp_path / "final")
    assert os.listdir(tmp_path / "final") == ["f"] and not (tmp_path / "new").exists()


def test_begin_resumes_only_the_same_interrupted_attempt(tmp_path):
    run = RunDir(tmp_path)
    assert run.begin("x", "fp") is False
    (tmp_path / "x" / "checkpoint-5").mkdir()
    assert run.begin("x", "fp") is True  # interrupted, same config: the checkpoint stays
    assert (tmp_path / "x" / "checkpoint-5").is_dir()
    assert run.begin("x", "changed") is False  # another config: start clean
    assert not (tmp_path / "x" / "checkpoint-5").exists()
    (tmp_path / "x" / "out").write_text("done")
    run.complete("x", "changed", (), {})
    assert run.begin("x", "changed") is False  # a finished stage run again (--force) starts clean too
    assert not (tmp_path / "x" / "out").exists()


def test_last_checkpoint_skips_one_killed_while_saving(tmp_path):
    run = RunDir(tmp_path)
    assert run.last_checkpoint("pretrain") is None
    for step, complete in ((5, True), (10, True), (15, False)):
        folder = tmp_path / "pretrain" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        if complete:
            (folder / "trainer_state.json").write_text('{"global_step": %d}' % step)
    (tmp_path / "pretrain" / "checkpoint-9" ).mkdir()
    (tmp_path / "pretrain" / "checkpoint-9" / "trainer_state.json").write_text("{")
    assert run.last_checkpoint("pretrain") == str(tmp_path / "pretrain" / "checkpoint-10")


def _checkpoint(folder, step: int):
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({"w": torch.ones(4)}, str(folder / "model.safetensors"))
    torch.save({"state": {}, "param_groups": []}, folder / "optimizer.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))


@pytest.mark.parametrize("damage, why", [
    (lambda f: (f / "optimizer.pt").write_bytes((f / "optimizer.pt").read_bytes()[:100]), "optimizer.pt"),
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:-8]), "model.safetensors"),
    (lambda f: (f / "trainer_state.json").write_text("[]"), None),
    (lambda f: (f / "trainer_state.json").write_text('{"a": 1}'), None),
    (lambda f: (f / "trainer_state.json").write_bytes(b"\xff\xfe"), None),
])
def test_a_damaged_checkpoint_is_skipped_for_the_one_before(tmp_path, capsys, damage, why):
    run = RunDir(tmp_path)
    _checkpoint(tmp_path / "sft" / "checkpoint-3", 3)
    _checkpoint(tmp_path / "sft" / "checkpoint-6", 6)
    assert run.last_checkpoint("sft") == str(tmp_path / "sft" / "checkpoint-6")
    damage(tmp_path / "sft" / "checkpoint-6")
    assert run.last_checkpoint("sft") == str(tmp_path / "sft" / "checkpoint-3")
    if why:
        assert f"checkpoint-6: skipped, {why}" in capsys.readouterr().err
