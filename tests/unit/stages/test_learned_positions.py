"""A GPT-2 model learns a fixed number of positions (pretrain.block_size): the stages after pretrain refuse, in
one line before any work, lengths that would index past them (it was an IndexError traceback inside training),
and run once the lengths fit."""

import json

import pytest
from transformers import GPT2Config, LlamaConfig

from pipeline.cli import main
from pipeline.models.loading import learned_positions
from tests.conftest import NANO_SECTIONS, make_run, stage


def test_learned_positions_are_gpt2s_only():
    assert learned_positions(GPT2Config(n_positions=96)) == 96
    assert learned_positions(LlamaConfig(max_position_embeddings=96)) is None


@pytest.mark.slow
def test_gpt2_stages_refuse_lengths_past_its_positions_then_run(tmp_path, capsys):
    sections = {name: dict(values) for name, values in NANO_SECTIONS.items()}
    sections["pretrain"].update(architecture="gpt2", max_steps=5)  # block_size 64: 64 positions
    sections["sft"].update(max_steps=2)
    sections["reward"].update(max_steps=2)
    sections["ppo"].update(total_episodes=4, rollout_batch_size=4, save_steps=0)
    folder = make_run(tmp_path / "run", **sections)
    for name in ("data", "tokenizer", "pretrain"):
        stage(name, folder)
    for name, bad, good, message in (
            ("sft", [], ["sft.max_length=64"], "sft.max_length: 256 tokens, but the gpt2 model in"),
            ("reward", [], ["reward.max_length=64"], "reward.max_length: 256 tokens, but the gpt2 model in"),
            ("ppo", ["ppo.max_new_tokens=60"], [], "need 97 positions, but the gpt2 models learned 64")):
        capsys.readouterr()
        assert main(["stage", name, "--run", str(folder), *bad]) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1 and message in lines[0] and "learned 64" in lines[0] and "Traceback" not in err, err
        assert not (folder / name / "_SUCCESS").exists()
        stage(name, folder, *good)
        assert (folder / name / "_SUCCESS").is_file()
    assert json.loads((folder / "ppo" / "metrics.json").read_text())["updates"] == 1
