"""Tokenizer and pretrain stages on a nano model: artifacts load with vanilla transformers, loss falls."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipeline.data.packing import BlockDataset, pack, save_blocks
from pipeline.models.tokenizer import train_bpe
from tests.conftest import make_run, stage

NANO = {"model_size": "nano", "block_size": 32, "max_steps": 30, "per_device_train_batch_size": 8,
        "logging_steps": 5, "eval_steps": 15, "save_steps": 15, "learning_rate": 0.005, "n_samples": 2}


def test_packing_joins_documents_with_eot_and_keeps_only_full_blocks(tmp_path):
    docs = ["one two three", "four five", "six"]
    tok = train_bpe(docs * 20, vocab_size=300)
    blocks, stats = pack(docs, tok, block_size=4)
    ids = sum((tok(d, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|endoftext|>")] for d in docs), [])
    assert stats == {"bytes": sum(len(d) for d in docs), "tokens": len(ids), "documents": 3}
    assert blocks.shape == (len(ids) // 4, 4)
    assert blocks.flatten().tolist() == ids[: blocks.size]
    save_blocks(tmp_path / "b.npy", blocks)
    item = BlockDataset(tmp_path / "b.npy")[1]
    assert torch.equal(item["input_ids"], item["labels"]) and item["input_ids"].tolist() == ids[4:8]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    folder = make_run(tmp_path_factory.mktemp("run") / "r", pretrain=NANO)
    for name in ("data", "tokenizer", "pretrain"):
        stage(name, folder)
    return folder


def test_tokenizer_stage(pretrained):
    metrics = json.loads((pretrained / "tokenizer" / "metrics.json").read_text())
    tok = AutoTokenizer.from_pretrained(pretrained / "tokenizer" / "final")
    assert len(tok) == metrics["vocab_size"] <= 512 and metrics["bytes_per_token"] > 2
    assert tok.chat_template and tok.eos_token == "<|im_end|>"


def test_pretrain_artifacts_and_learning(pretrained):
    out = pretrained / "pretrain"
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(p.name for p in (out / "final").iterdir()) == [
        "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json"]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-15", "checkpoint-30"]
    losses = [loss for _, loss in metrics["loss_history"]]
    assert losses[-1] < losses[0] - 1.0  # it learned something
    assert losses[0] == pytest.approx(np.log(metrics_vocab(pretrained)), rel=0.15)  # starts near uniform
    stats = json.loads((out / "packed" / "stats.json").read_text())["validation"]
    bpb = metrics["eval_loss"] / np.log(2) * stats["tokens"] / stats["bytes"]
    assert metrics["val_bpb"] == pytest.approx(bpb) and metrics["steps"] == 30
    assert len(metrics["samples"]) == 2 and all(isinstance(s, str) and s for s in metrics["samples"])

    model = AutoModelForCausalLM.from_pretrained(out / "final")  # vanilla transformers, safetensors
    tok = AutoTokenizer.from_pretrained(out / "final")
    ids = torch.from_numpy(np.load(out / "packed" / "validation.npy")[:4].astype(np.int64))
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    assert loss < np.log(len(tok)) - 1.0


def metrics_vocab(folder):
    return json.loads((folder / "tokenizer" / "metrics.json").read_text())["vocab_size"]


def test_pretrain_rejects_bad_config(tmp_path, capsys):
    from pipeline.cli import main

    folder = make_run(tmp_path / "r", pretrain={"model_size": "huge"})
    assert main(["stage", "pretrain", "--run", str(folder)]) == 2  # caught before anything runs
    assert "pretrain.model_size: unknown size 'huge' (valid: nano, tiny, mini, small, base)" in capsys.readouterr().err
    folder = make_run(tmp_path / "s", pretrain={"precision": "fp8"})
    assert main(["validate", str(folder / "config.yaml")]) == 2
    assert "pretrain.precision: expected auto, fp32, bf16 or fp16, got 'fp8'" in capsys.readouterr().err


def test_report_to_tensorboard_passes_through(tmp_path):
    folder = make_run(tmp_path / "tb", run={"seed": 0, "report_to": ["tensorboard"]},
                      pretrain={**NANO, "max_steps": 3, "eval_steps": 3, "save_steps": 3, "n_samples": 0})
    for name in ("data", "tokenizer", "pretrain"):
        stage(name, folder)
    assert list((folder / "pretrain").rglob("events.out.tfevents.*"))
