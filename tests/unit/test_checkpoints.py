"""`pipeline.checkpoints` on the nano run: what each folder is, which model a path means, where a checkpoint's
tokenizer is, and a ppo checkpoint's policy loaded as `ppo/final` would be."""

import io
import json
import shutil

import pytest
import torch
from safetensors import safe_open

from pipeline import checkpoints
from pipeline.checkpoints import CAUSAL_LM, REWARD_MODEL
from pipeline.cli import main
from pipeline.errors import PipelineError

TOKENIZER_PATTERNS = ("tokenizer*", "chat_template*", "special_tokens_map.json")


@pytest.mark.parametrize("stage, kind", [("pretrain", CAUSAL_LM), ("sft", CAUSAL_LM), ("reward", REWARD_MODEL),
                                         ("ppo", CAUSAL_LM)])
def test_each_final_model_has_its_kind_and_place_in_the_run(nano_run, stage, kind):
    found = checkpoints.identify(nano_run / stage / "final")
    assert (found.kind, found.run, found.stage, found.step, found.label) == (kind, nano_run.resolve(), stage, None,
                                                                             stage)
    assert checkpoints.tokenizer_folder(found.folder) == found.folder  # saved with the model


def test_a_trainer_checkpoint_is_its_stage_at_a_step(nano_run):
    found = checkpoints.identify(nano_run / "sft" / "checkpoint-10")
    assert (found.kind, found.stage, found.step, found.label) == (CAUSAL_LM, "sft", 10, "sft-10")
    assert checkpoints.run_of(nano_run / "sft") == (None, None, None)  # a stage folder is not a model's place
    assert checkpoints.model_kind(nano_run / "ppo" / "value") == REWARD_MODEL  # the value model: a classifier
    assert checkpoints.describe(nano_run / "ppo" / "value").startswith("a reward (or value) model")


def test_a_run_folder_means_its_newest_policy_and_lists_its_models(nano_run, tmp_path, capsys):
    assert checkpoints.causal_lm_folder(str(nano_run)) == nano_run / "ppo" / "final"
    assert "using ppo/final, the run's newest policy" in capsys.readouterr().err
    assert checkpoints.causal_lm_folder(str(nano_run / "sft")) == nano_run / "sft" / "final"  # a stage: its final/
    run = tmp_path / "run"
    shutil.copytree(nano_run / "pretrain" / "final", run / "pretrain" / "final")
    shutil.copy(nano_run / "config.yaml", run / "config.yaml")
    assert checkpoints.causal_lm_folder(str(run)) == run / "pretrain" / "final"
    shutil.rmtree(run / "pretrain")
    with pytest.raises(PipelineError, match="a run folder without a trained policy"):
        checkpoints.newest_policy(run)
    finals = [nano_run / stage / "final" for stage in checkpoints.MODEL_STAGES]
    assert checkpoints.run_models(nano_run) == finals
    with_checkpoints = checkpoints.run_models(nano_run, checkpoints=True)
    assert [f for f in with_checkpoints if f.name == "final"] == finals
    assert with_checkpoints.index(nano_run / "sft" / "checkpoint-10") == with_checkpoints.index(finals[1]) + 1


@pytest.mark.parametrize("folder, says", [
    ("empty", "an empty folder, not a model folder"),
    ("tokenizer/final", "a tokenizer without a model"),
    ("value_head", "a PPO value head"),
    ("accelerate_state/checkpoint-3", "a training checkpoint without config.json"),
])
def test_a_folder_without_a_model_says_what_it_is(nano_run, tmp_path, folder, says):
    path = nano_run / folder if folder == "tokenizer/final" else tmp_path / folder
    path.mkdir(parents=True, exist_ok=True)
    if folder == "value_head":
        (path / "value_head.safetensors").write_bytes(b"")
    if folder.endswith("checkpoint-3"):  # an accelerate state outside a run: no architecture to load it into
        (path / "model.safetensors").write_bytes(b"")
        (path / "trainer_state.json").write_text("{}")
    assert checkpoints.model_kind(path) is None
    assert checkpoints.describe(path).startswith(says)
    for check in (checkpoints.identify, checkpoints.require_causal_lm):
        with pytest.raises(PipelineError) as error:
            check(path)
        assert str(error.value).startswith(f"{path}: {says}") and "\n" not in str(error.value)


def test_a_reward_model_is_no_causal_lm(nano_run):
    with pytest.raises(PipelineError, match=r"a reward \(or value\) model \(LlamaForSequenceClassification\), "
                                            "not a causal language model: give a policy"):
        checkpoints.causal_lm_folder(str(nano_run / "reward" / "final"))


def test_a_checkpoint_without_tokenizer_takes_its_run_s(nano_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(nano_run / "config.yaml", run / "config.yaml")
    for folder in ("sft/final", "tokenizer/final"):
        shutil.copytree(nano_run / folder, run / folder)
    checkpoint = run / "sft" / "checkpoint-10"
    shutil.copytree(nano_run / "sft" / "checkpoint-10", checkpoint, ignore=shutil.ignore_patterns(*TOKENIZER_PATTERNS))
    assert checkpoints.tokenizer_folder(checkpoint) == run / "sft" / "final"
    assert f"using {run / 'sft' / 'final'}'s" in capsys.readouterr().err
    shutil.rmtree(run / "sft" / "final")
    assert checkpoints.tokenizer_folder(checkpoint) == run / "tokenizer" / "final"
    tokenizer = checkpoints.load_tokenizer(checkpoint)
    assert tokenizer.get_vocab() == checkpoints.load_tokenizer(nano_run / "sft" / "final").get_vocab()
    shutil.rmtree(run / "tokenizer")
    with pytest.raises(PipelineError, match=r"no tokenizer \(looked in"):
        checkpoints.tokenizer_folder(checkpoint)


@pytest.fixture(scope="module")
def ppo_runs(nano_run, tmp_path_factory):
    """(two, one): copies of the nano run whose ppo stage ran again from the same sft policy, `two` for 2 updates
    (8 episodes of 4) checkpointing after every update, `one` for 1 update."""
    runs = []
    for name, episodes in (("two", 8), ("one", 4)):
        run = tmp_path_factory.mktemp("ppo") / name
        shutil.copytree(nano_run, run, ignore=shutil.ignore_patterns("checkpoint-*", "eval"))
        assert main(["stage", "ppo", "--run", str(run), "ppo.save_steps=1", f"ppo.total_episodes={episodes}",
                     "ppo.save_total_limit=5", "--force"]) == 0
        runs.append(run)
    return runs


def logits(model):
    ids = torch.tensor([[1, 5, 9, 2, 7, 3, 11, 4]])
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_a_ppo_checkpoint_loads_as_the_policy_of_its_update(ppo_runs):
    two, one = ppo_runs
    # the last update writes final/, not a checkpoint: of 2 updates, only the first one's checkpoint is left
    assert [p.name for p in (two / "ppo").glob("checkpoint-*")] == ["checkpoint-1"]
    checkpoint = two / "ppo" / "checkpoint-1"
    with safe_open(str(checkpoint / "model.safetensors"), "pt") as weights:  # accelerate's state, no config.json
        prefixes = {key.split(".")[0] for key in weights.keys()}
    assert prefixes == {"policy", "value_model"} and not (checkpoint / "config.json").exists()
    found = checkpoints.identify(checkpoint)
    assert (found.kind, found.stage, found.step, found.label) == (CAUSAL_LM, "ppo", 1, "ppo-1")
    policy = checkpoints.load_model(checkpoint)
    assert torch.equal(logits(policy), logits(checkpoints.load_model(one / "ppo" / "final")))  # the same update
    assert not torch.equal(logits(policy), logits(checkpoints.load_model(two / "ppo" / "final")))  # one more


def test_chat_and_eval_take_a_ppo_checkpoint(ppo_runs, monkeypatch, capsys):
    two, one = ppo_runs
    checkpoint, final = two / "ppo" / "checkpoint-1", one / "ppo" / "final"
    replies, results = [], []
    for model in (checkpoint, final):
        monkeypatch.setattr("sys.stdin", io.StringIO("How old is Mara?\n"))
        assert main(["chat", str(model), "--temperature", "0", "--max-new-tokens", "6"]) == 0
        replies.append(capsys.readouterr())
        assert main(["eval", str(model), "--suite", "exact_match", "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert f"using {two / 'ppo' / 'final'}'s" in replies[0].err  # its tokenizer: the one saved with ppo/final
    assert replies[0].out == replies[1].out
    assert (results[0]["kind"], results[0]["stage"], results[0]["step"]) == (CAUSAL_LM, "ppo", 1)
    assert results[0]["suites"] == results[1]["suites"]
