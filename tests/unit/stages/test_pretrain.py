"""Tokenizer and pretrain stages on a nano model: artifacts load with vanilla transformers, loss falls."""

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import make_run, stage

NANO = {"model_size": "nano", "block_size": 32, "max_steps": 30, "per_device_train_batch_size": 8,
        "logging_steps": 5, "eval_steps": 15, "save_steps": 15, "learning_rate": 0.005, "n_samples": 2}


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
    # the leading separator makes every token of the validation text scored: the denominator is all its bytes
    assert metrics["val_bytes"] == stats["bytes"] and metrics["steps"] == 30
    assert metrics["val_scored_tokens"] == stats["tokens"] - stats["documents"]  # all but the separators
    assert [step for step, _ in metrics["eval_history"]] == [15, 30]
    assert metrics["eval_history"][-1][1] == pytest.approx(metrics["eval_loss"], rel=0.01)  # same windows
    assert len(metrics["samples"]) == 2 and all(isinstance(s, str) and s for s in metrics["samples"])

    model = AutoModelForCausalLM.from_pretrained(out / "final")  # vanilla transformers, safetensors
    tok = AutoTokenizer.from_pretrained(out / "final")
    ids = torch.from_numpy(np.load(out / "packed" / "validation_stream.npy")[: 4 * 32].astype(np.int64)).view(4, 32)
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    assert loss < np.log(len(tok)) - 1.0


def test_pretrain_timing_splits_train_from_eval_and_save(pretrained):
    metrics = json.loads((pretrained / "pretrain" / "metrics.json").read_text())
    assert metrics["timed_steps"] == 30 and metrics["train_tokens"] == 30 * 8 * 32
    seconds = 30 * 8 * 32 / metrics["tokens_per_second"]  # training-only: train_seconds, not the wall time
    assert seconds == pytest.approx(metrics["train_seconds"], abs=5e-4)  # train_seconds is rounded to ms
    assert min(metrics["train_seconds"], metrics["eval_seconds"], metrics["save_seconds"]) > 0
    parts = metrics["train_seconds"] + metrics["eval_seconds"] + metrics["save_seconds"]
    assert parts <= metrics["train_wall_seconds"] + 0.003  # rounding
    assert (metrics["device"], metrics["precision"]) == ("cpu", "fp32") and metrics["pack_seconds"] > 0


def test_val_bpb_matches_a_reviewers_recomputation(pretrained):
    """From the saved model and the validation text alone: the stream <|endoftext|> doc1 <|endoftext|> doc2 ...,
    windows of 32 tokens overlapping by one, one window at a time; bits of every predicted non-special token over
    the UTF-8 bytes of the validation text."""
    import datasets

    out = pretrained / "pretrain"
    metrics = json.loads((out / "metrics.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(out / "final").eval()
    tok = AutoTokenizer.from_pretrained(out / "final")
    texts = datasets.load_from_disk(str(pretrained / "data" / "corpus"))["validation"]["text"]
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    stream = [eot]
    for text in texts:
        stream += tok(text, add_special_tokens=False)["input_ids"] + [eot]
    special = set(tok.all_special_ids)
    nats, scored, start = 0.0, 0, 0
    while start < len(stream) - 1:
        window = torch.tensor([stream[start: start + 32]])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(input_ids=window).logits[0].double(), dim=-1)
        targets = window[0, 1:]
        keep = torch.tensor([t not in special for t in targets.tolist()], dtype=torch.bool)
        nats -= log_probs[torch.arange(len(targets)), targets][keep].sum().item()
        scored += int(keep.sum())
        start += 31
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    assert (metrics["val_scored_tokens"], metrics["val_bytes"]) == (scored, text_bytes)
    assert metrics["val_bpb"] == pytest.approx(nats / np.log(2) / text_bytes, rel=1e-5)


def test_validation_smaller_than_one_eval_batch_still_gets_a_number(pretrained, tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    for name in ("data", "tokenizer", "config.yaml"):  # reuse the world and tokenizer
        (shutil.copytree if name != "config.yaml" else shutil.copy)(pretrained / name, folder / name)
    stage("pretrain", folder, "pretrain.max_steps=2", "pretrain.eval_steps=1", "pretrain.save_steps=2",
          "pretrain.per_device_eval_batch_size=1000", "pretrain.n_samples=0")
    metrics = json.loads((folder / "pretrain" / "metrics.json").read_text())
    stats = json.loads((folder / "pretrain" / "packed" / "stats.json").read_text())["validation"]
    assert stats["windows"] < 1000
    assert [step for step, _ in metrics["eval_history"]] == [1, 2]
    assert 0 < metrics["val_bpb"] < 20 and metrics["val_bytes"] == stats["bytes"]


def metrics_vocab(folder):
    return json.loads((folder / "tokenizer" / "metrics.json").read_text())["vocab_size"]


def test_pretrain_rejects_bad_config(tmp_path, capsys):
    from pipeline.cli import main

    folder = make_run(tmp_path / "r", pretrain={"model_size": "huge"})
    assert main(["stage", "pretrain", "--run", str(folder)]) == 2  # caught before anything runs
    assert "pretrain.model_size: unknown size 'huge' (valid: nano, micro, tiny, mini, small, base)" in capsys.readouterr().err
    folder = make_run(tmp_path / "s", pretrain={"precision": "fp8"})
    assert main(["validate", str(folder / "config.yaml")]) == 2
    assert "pretrain.precision: expected auto, fp32, bf16 or fp16, got 'fp8'" in capsys.readouterr().err


def test_report_to_tensorboard_passes_through(tmp_path):
    folder = make_run(tmp_path / "tb", run={"seed": 0, "report_to": ["tensorboard"]},
                      pretrain={**NANO, "max_steps": 3, "eval_steps": 3, "save_steps": 3, "n_samples": 0})
    for name in ("data", "tokenizer", "pretrain"):
        stage(name, folder)
    assert list((folder / "pretrain").rglob("events.out.tfevents.*"))
