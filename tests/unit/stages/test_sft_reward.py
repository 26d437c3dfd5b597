"""SFT (assistant-only loss, LoRA, merge) and reward modeling on a nano model trained in-process."""

import json
import shutil

import datasets
import pytest
import torch
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from trl import SFTTrainer

from pipeline.cli import main
from pipeline.metrics.reward import score_pairs
from pipeline.stages.sft import Config as SFTStageConfig
from tests.conftest import make_run, stage

PRETRAIN = {"model_size": "nano", "block_size": 64, "max_steps": 40, "per_device_train_batch_size": 8,
            "learning_rate": 0.005, "eval_steps": 40, "save_steps": 40, "n_samples": 0}
SFT = {"max_steps": 20, "per_device_train_batch_size": 8, "eval_max_new_tokens": 8, "learning_rate": 0.002}
REWARD = {"max_steps": 40, "per_device_train_batch_size": 8, "learning_rate": 0.001}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    folder = make_run(tmp_path_factory.mktemp("run") / "r", pretrain=PRETRAIN, sft=SFT, reward=REWARD)
    for name in ("data", "tokenizer", "pretrain"):
        stage(name, folder)
    return folder


def data_files(folder):
    return sorted(p.relative_to(folder) for p in (folder / "data").rglob("*"))


def test_assistant_only_loss_masks_everything_but_the_replies(pretrained, tmp_path):
    tok = AutoTokenizer.from_pretrained(pretrained / "pretrain" / "final")
    model = AutoModelForCausalLM.from_pretrained(pretrained / "pretrain" / "final")
    dialogue = datasets.load_from_disk(str(pretrained / "data" / "dialogue"), keep_in_memory=True)["train"].select(range(8))
    args = SFTStageConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, use_cpu=True, max_steps=1,
                          eval_strategy="no")
    assert args.assistant_only_loss
    trainer = SFTTrainer(model=model, args=args, train_dataset=dialogue, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    by_text = {}
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        trained = tok.decode(ids[labels != -100])
        by_text[tok.decode(ids[ids != tok.pad_token_id])] = trained
        assert "<|im_start|>" not in trained
    for row in dialogue:
        full = tok.apply_chat_template(row["messages"], tokenize=False)
        replies = "".join(m["content"] + "<|im_end|>" for m in row["messages"] if m["role"] == "assistant")
        assert by_text[full] == replies  # exactly the assistant turns and their EOS


def test_full_sft_then_reward(pretrained):
    before = data_files(pretrained)
    stage("sft", pretrained)
    sft = json.loads((pretrained / "sft" / "metrics.json").read_text())
    assert {"eval_loss", "exact_match", "exact_match_base", "by_category", "examples"} <= set(sft)
    assert 0 <= sft["exact_match"] <= 1 and sft["trainable_params"] == sft["params"]
    AutoModelForCausalLM.from_pretrained(pretrained / "sft" / "final")

    stage("reward", pretrained)
    reward = json.loads((pretrained / "reward" / "metrics.json").read_text())
    assert set(reward["accuracy_by_kind"]) == {"wrong_fact", "wrong_arithmetic", "rude", "rambling", "off_topic", "no_answer"}
    assert (reward["pairs"], reward["pairs_skipped"]) == (100, 0)  # every held-out pair fits in max_length
    assert reward["calibration"]["bins"] and (pretrained / "reward" / "calibration.png").is_file()

    # the saved reward model, loaded with vanilla transformers, prefers chosen answers on the held-out split,
    # each side tokenized as TRL does (chat template over prompt + reply) and scored whole
    model = AutoModelForSequenceClassification.from_pretrained(pretrained / "reward" / "final")
    tok = AutoTokenizer.from_pretrained(pretrained / "reward" / "final")
    test = datasets.load_from_disk(str(pretrained / "data" / "preferences"))["test"]
    pairs = datasets.Dataset.from_dict({f"{side}_ids": [tok.apply_chat_template(p + c, tokenize=True)["input_ids"]
                                                        for p, c in zip(test["prompt"], test[side])]
                                        for side in ("chosen", "rejected")})
    chosen, rejected = score_pairs(model, pairs)
    assert (chosen > rejected).mean() == pytest.approx(reward["accuracy"])
    assert reward["accuracy"] >= 0.75  # rude, rambling, off-topic and empty replies are easy to tell apart
    assert data_files(pretrained) == before  # the trainers cached nothing into the data stage's folder
    assert "accuracy_with_likelihood" not in reward  # likelihood_weight 0: off
    shorter = [len(c) < len(r) for c, r in zip(pairs["chosen_ids"], pairs["rejected_ids"])]
    assert reward["floor_shorter_reply"] == pytest.approx(sum(shorter) / len(shorter))


def test_reward_with_likelihood_weight_reports_both_accuracies(pretrained, tmp_path, capsys):
    folder = tmp_path / "r"
    shutil.copytree(pretrained, folder, ignore=shutil.ignore_patterns("reward"))
    if not (folder / "sft" / "_SUCCESS").exists():
        stage("sft", folder)
    assert main(["stage", "reward", "--run", str(folder), "reward.likelihood_weight=-2"]) == 2
    assert "reward.likelihood_weight: expected a finite number >= 0" in capsys.readouterr().err
    stage("reward", folder, "reward.likelihood_weight=2.0")
    reward = json.loads((folder / "reward" / "metrics.json").read_text())
    assert reward["likelihood_weight"] == 2.0
    kinds = set(reward["accuracy_by_kind"])
    for name in ("with_likelihood", "likelihood_alone"):
        assert 0 <= reward[f"accuracy_{name}"] <= 1 and set(reward[f"accuracy_by_kind_{name}"]) == kinds


def test_lora_trains_only_the_adapter_and_merge_is_exact(pretrained, tmp_path):
    folder = tmp_path / "lora"
    shutil.copytree(pretrained, folder, ignore=shutil.ignore_patterns("sft", "reward"))
    stage("sft", folder, "sft.use_peft=true", "sft.merge=true", "sft.lora_r=4", "sft.eval_dataset=")
    metrics = json.loads((folder / "sft" / "metrics.json").read_text())
    assert 0 < metrics["trainable_params"] < metrics["params"] / 5

    base = AutoModelForCausalLM.from_pretrained(folder / "pretrain" / "final")
    adapted = AutoPeftModelForCausalLM.from_pretrained(folder / "sft" / "adapter")
    merged = AutoModelForCausalLM.from_pretrained(folder / "sft" / "final")
    base_state = base.state_dict()
    for name, value in adapted.named_parameters():  # every base weight is untouched; some adapter moved
        if "lora_" not in name:
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(value, base_state[key]), name
    assert any("lora_B" in n and v.abs().sum() > 0 for n, v in adapted.named_parameters())  # B starts at 0

    ids = torch.randint(0, base.config.vocab_size, (2, 16))
    with torch.no_grad():
        a, m, b = adapted(ids).logits, merged(ids).logits, base(ids).logits
    assert torch.allclose(a, m, atol=1e-4) and not torch.allclose(a, b, atol=1e-3)


def test_reward_on_a_lora_sft_leaves_no_merged_base_behind(pretrained, tmp_path, capsys):
    from pipeline.cli import main

    folder = tmp_path / "lora_reward"
    shutil.copytree(pretrained, folder, ignore=shutil.ignore_patterns("sft", "reward"))
    stage("sft", folder, "sft.use_peft=true", "sft.lora_r=4", "sft.max_steps=4", "sft.eval_dataset=")
    assert (folder / "sft" / "final" / "adapter_config.json").is_file()

    # a reward adapter on top would point at the merged SFT model, which is not kept: refused before any work
    assert main(["stage", "reward", "--run", str(folder), "reward.use_peft=true"]) == 2
    assert "reward.merge=true" in capsys.readouterr().err and not (folder / "reward" / ".base").exists()

    stage("reward", folder, "reward.use_peft=false", "reward.max_steps=4")  # (the failed command saved use_peft)
    assert not (folder / "reward" / ".base").exists()  # the merged SFT model was scratch
    model = AutoModelForSequenceClassification.from_pretrained(folder / "reward" / "final")
    assert model.config.num_labels == 1
    reward = json.loads((folder / "reward" / "metrics.json").read_text())
    assert reward["pairs"] + reward["pairs_skipped"] == 100


def test_interrupted_sft_resumes_from_its_last_checkpoint(pretrained, tmp_path, capsys):
    folder = tmp_path / "resume"
    shutil.copytree(pretrained, folder, ignore=shutil.ignore_patterns("sft", "reward"))
    opts = ["sft.max_steps=20", "sft.save_strategy=steps", "sft.save_steps=10", "sft.logging_steps=5",
            "sft.eval_strategy=no", "sft.eval_dataset=", "sft.save_total_limit=3"]
    stage("sft", folder, *opts)
    out = folder / "sft"
    straight = json.loads((out / "metrics.json").read_text())
    marker = json.loads((out / "_SUCCESS").read_text())
    # leave the folder as a run killed between step 10 and step 20 leaves it
    (out / "_STARTED").write_text(json.dumps({"fingerprint": marker["fingerprint"], "upstream": marker["upstream"]}))
    for name in ("_SUCCESS", "metrics.json"):
        (out / name).unlink()
    for name in ("final", "checkpoint-20"):
        shutil.rmtree(out / name)
    capsys.readouterr()
    stage("sft", folder, *opts)
    assert "sft (resuming)" in capsys.readouterr().err
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["loss_history"] == straight["loss_history"] and len(straight["loss_history"]) == 4
