"""Pretrain stage throughput vs a bare PyTorch loop: same model init, data, batch, optimizer, schedule, clipping.

    python benchmarks/pretrain_overhead.py [recipes/tiny.yaml] [--steps N] [--repeats 3]

Builds a run from the recipe's run, data, tokenizer and pretrain sections (only `pretrain.max_steps` changes, to
--steps; evaluation and checkpoint settings stay as the recipe has them; no sample generations), then alternates
  - the pretrain stage as a run does it (`pipeline stage pretrain --force`): packing, then the whole
    `Trainer.train()` call with its periodic evaluation and checkpoints. Its metrics give the training-only
    tokens/s (`tokens_per_second`) and the end-to-end tokens/s: its tokens over packing + train() wall seconds;
  - a bare loop over the packed blocks the stage wrote: the model built the same way from the same seed, the same
    batch (and gradient accumulation), AdamW with the Trainer's parameter groups and settings, the same lr
    schedule and gradient clipping; on a GPU the model and batches move to the device, under the stage's
    precision (bf16/fp16 autocast, as the Trainer does).
and prints both stage figures against the bare loop as ratios (target: training-only >= 0.95x bare). It refuses
(exit 2, one line) a mismatched comparison: device, precision, batch, block size, steps or model size differing
between the two sides. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate.utils import set_seed
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, get_scheduler

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline import config as config_lib  # noqa: E402
from pipeline.artifacts import RunDir  # noqa: E402
from pipeline.cli import main as pipeline  # noqa: E402
from pipeline.data.packing import BlockDataset  # noqa: E402
from pipeline.models.sizes import build_config  # noqa: E402
from pipeline.trainers import runtime_args  # noqa: E402

SIDES = ("device", "precision", "batch", "block", "steps", "params")  # what both sides must share


def stage_side(folder: Path) -> dict:
    assert pipeline(["stage", "pretrain", "--run", str(folder), "--force"]) == 0
    m = json.loads((folder / "pretrain" / "metrics.json").read_text())
    block = np.load(folder / "pretrain" / "packed" / "train.npy", mmap_mode="r").shape[1]
    tokens = m["timed_steps"] * m["train_tokens"] // m["steps"]
    return {"device": m["device"], "precision": m["precision"], "batch": m["train_tokens"] // m["steps"] // block,
            "block": block, "steps": m["timed_steps"], "params": m["params"],
            "tokens_per_second": m["tokens_per_second"],
            "end_to_end": tokens / (m["pack_seconds"] + m["train_wall_seconds"]),
            "detail": f"train {m['train_seconds']:.1f}s, eval {m['eval_seconds']:.1f}s ({len(m['eval_history'])}x), "
                      f"save {m['save_seconds']:.1f}s, pack {m['pack_seconds']:.1f}s, train() {m['train_wall_seconds']:.1f}s"}


def bare_side(folder: Path) -> dict:
    """The stage's training loop without the Trainer: `Trainer.get_optimizer_cls_and_kwargs` and
    `get_decay_parameter_names` give the same optimizer, `get_scheduler` the same schedule."""
    recipe = config_lib.load_recipe(folder / "config.yaml")
    cfg = recipe.sections["pretrain"]
    args = runtime_args(cfg, RunDir(folder, seed=recipe.run.seed), "pretrain")
    device = args.device
    dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
    tok = AutoTokenizer.from_pretrained(folder / "tokenizer" / "final")
    set_seed(recipe.run.seed)  # as the runner does before the stage builds its model
    model = AutoModelForCausalLM.from_config(build_config(
        cfg.model_size, cfg.architecture, vocab_size=len(tok), max_position_embeddings=cfg.block_size,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id), attn_implementation="sdpa").to(device)
    opt, sched = optimizer_and_schedule(args, model)
    scaler = torch.amp.GradScaler(device.type, enabled=args.fp16)
    loader = torch.utils.data.DataLoader(BlockDataset(folder / "pretrain" / "packed" / "train.npy"), shuffle=True,
                                         batch_size=args.per_device_train_batch_size, drop_last=args.dataloader_drop_last,
                                         generator=torch.Generator().manual_seed(args.data_seed))
    micro = infinite(loader)
    accumulate, model_block = args.gradient_accumulation_steps, None
    model.train()
    sync(device)
    start = time.perf_counter()
    for _ in range(args.max_steps):
        for _ in range(accumulate):
            batch = {k: v.to(device, non_blocking=True) for k, v in next(micro).items()}
            model_block = batch["input_ids"].shape[1]
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = model(**batch).loss / accumulate
            scaler.scale(loss).backward()
        scaler.unscale_(opt)
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        scaler.step(opt)
        scaler.update()
        sched.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    seconds = time.perf_counter() - start
    batch = args.per_device_train_batch_size * accumulate
    return {"device": device.type, "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
            "batch": batch, "block": model_block, "steps": args.max_steps,
            "params": sum(p.numel() for p in model.parameters()),
            "tokens_per_second": args.max_steps * batch * model_block / seconds}


def optimizer_and_schedule(args, model):
    """The Trainer's optimizer (class and settings from `args.optim`, weight decay off for biases and norms) and
    lr schedule, built from its own helpers."""
    decay = set(Trainer.get_decay_parameter_names(None, model))  # uses no Trainer state
    groups = [{"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": args.weight_decay},
              {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0}]
    opt_cls, opt_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    opt = opt_cls(groups, **opt_kwargs)
    sched = get_scheduler(args.lr_scheduler_type, opt, num_warmup_steps=args.get_warmup_steps(args.max_steps),
                          num_training_steps=args.max_steps, scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    return opt, sched


def infinite(loader):
    while True:
        yield from loader


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def prepare(folder: Path, recipe: Path, steps: int | None) -> None:
    """A run folder from the recipe's sections; the first pretrain run warms caches up (not timed)."""
    data = yaml.safe_load(recipe.read_text())
    pretrain = dict(data.get("pretrain") or {}, n_samples=0, disable_tqdm=True)
    if steps is not None:
        pretrain["max_steps"] = steps
    config = {"run": {"seed": (data.get("run") or {}).get("seed", 0)}, "data": data.get("data") or {},
              "tokenizer": data.get("tokenizer") or {}, "pretrain": pretrain}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    for name in ("data", "tokenizer", "pretrain"):
        assert pipeline(["stage", name, "--run", str(folder)]) == 0


def check_matched(stage: dict, bare: dict) -> None:
    differ = [f"{k} (stage {stage[k]}, bare {bare[k]})" for k in SIDES if stage[k] != bare[k]]
    if differ:
        print(f"refusing a mismatched comparison: {'; '.join(differ)}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", nargs="?", default=str(ROOT / "recipes" / "tiny.yaml"))
    parser.add_argument("--steps", type=int, default=None, help="pretrain.max_steps (default: the recipe's)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bench"
        prepare(folder, Path(args.recipe), args.steps)
        stage, bare = [], []
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits both sides alike
            stage.append(stage_side(folder))
            bare.append(bare_side(folder))
            check_matched(stage[-1], bare[-1])
    report(args, stage, bare)


def report(args, stage: list[dict], bare: list[dict]) -> None:
    def median(runs, key):
        return statistics.median(r[key] for r in runs)

    def runs(side, key):
        return ", ".join(f"{r[key]:,.0f}" for r in side)

    s, e, b = median(stage, "tokens_per_second"), median(stage, "end_to_end"), median(bare, "tokens_per_second")
    info = stage[0]
    print(f"\n{args.recipe}: {info['params']:,} params, block {info['block']}, batch {info['batch']}, "
          f"{info['steps']} steps, {info['device']} {info['precision']}, {torch.get_num_threads()} torch threads, "
          f"median of {args.repeats}\nstage (last run): {stage[-1]['detail']}")
    print("| loop | tokens/s (median) | runs | vs bare |\n| --- | ---: | --- | ---: |")
    print(f"| pretrain stage, training only | {s:,.0f} | {runs(stage, 'tokens_per_second')} | **{s / b:.3f}** (target >= 0.95) |")
    print(f"| pretrain stage, end to end (packing + train()) | {e:,.0f} | {runs(stage, 'end_to_end')} | {e / b:.3f} |")
    print(f"| bare PyTorch loop | {b:,.0f} | {runs(bare, 'tokens_per_second')} | 1 |")


if __name__ == "__main__":
    main()
