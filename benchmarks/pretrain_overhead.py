"""Pretrain stage throughput vs a bare PyTorch loop: same model, data, batch, optimizer, schedule, clipping.

    python benchmarks/pretrain_overhead.py [--steps 150] [--repeats 3] [--size tiny] [--block 128] [--batch 16]

Builds a small run (synthetic world corpus + BPE), then alternates the `pretrain` stage (HF Trainer, evaluation
and checkpoints off so both sides do the same work) with a hand-written loop over the same packed blocks, and
prints tokens/s of each and their ratio (target: stage >= 0.95x bare). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.cli import main as pipeline  # noqa: E402
from pipeline.data.packing import BlockDataset  # noqa: E402
from pipeline.models.sizes import build_config  # noqa: E402


def stage_tokens_per_second(folder: Path, args) -> float:
    assert pipeline(["stage", "pretrain", "--run", str(folder), "--force"]) == 0
    return json.loads((folder / "pretrain" / "metrics.json").read_text())["tokens_per_second"]


def bare_tokens_per_second(folder: Path, args) -> float:
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(folder / "tokenizer" / "final")
    model = AutoModelForCausalLM.from_config(build_config(args.size, "llama", len(tok), args.block, tok.pad_token_id,
                                                          tok.eos_token_id), attn_implementation="sdpa")
    data = BlockDataset(folder / "pretrain" / "packed" / "train.npy")
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch, shuffle=True, drop_last=True)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=2e-3, betas=(0.9, 0.99))
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(0.05 * args.steps), args.steps)
    model.train()
    step, start = 0, time.perf_counter()
    while step < args.steps:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step == args.steps:
                break
    return args.steps * args.batch * args.block / (time.perf_counter() - start)


def prepare(folder: Path, args) -> None:
    config = {
        "run": {"seed": 0},
        "data": {"world": {"n_people": 60, "corpus_bytes": 1_000_000}},
        "tokenizer": {"vocab_size": 2048},
        "pretrain": {"model_size": args.size, "block_size": args.block, "max_steps": args.steps,
                     "per_device_train_batch_size": args.batch, "eval_strategy": "no", "save_strategy": "no",
                     "logging_steps": 50, "n_samples": 0, "disable_tqdm": True},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    for name in ("data", "tokenizer", "pretrain"):  # the first pretrain run also warms up caches
        assert pipeline(["stage", name, "--run", str(folder)]) == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bench"
        prepare(folder, args)
        stage, bare = [], []
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits both sides alike
            stage.append(stage_tokens_per_second(folder, args))
            bare.append(bare_tokens_per_second(folder, args))
    s, b = statistics.median(stage), statistics.median(bare)
    print(f"\nmodel {args.size} (llama), block {args.block}, batch {args.batch}, {args.steps} steps, "
          f"{torch.get_num_threads()} torch threads, median of {args.repeats}")
    print("| loop | tokens/s (median) | runs |\n| --- | ---: | --- |")
    print(f"| pretrain stage (HF Trainer) | {s:,.0f} | {', '.join(f'{x:,.0f}' for x in stage)} |")
    print(f"| bare PyTorch loop | {b:,.0f} | {', '.join(f'{x:,.0f}' for x in bare)} |")
    print(f"| **ratio stage / bare** | **{s / b:.3f}** | target >= 0.95 |")


if __name__ == "__main__":
    main()
