"""Pretrain: a stock transformers GPT (Llama or GPT-2 style, sized by name) from scratch on the packed corpus.

    pipeline stage pretrain --run runs/tiny pretrain.max_steps=600
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml -m pipeline.stages.pretrain --run runs/x

The loop is HF `Trainer` (cosine schedule with warmup, gradient accumulation, DDP/FSDP/DeepSpeed through
accelerate, SDPA attention, optional `torch_compile`); the config extends `TrainingArguments`, so every field
keeps its transformers name. Checkpoints go to `<run>/pretrain/checkpoint-<step>/` (model, optimizer,
scheduler, RNG, data position); a killed run resumes from the last one. The model and tokenizer land in
`<run>/pretrain/final/`, loadable with `AutoModelForCausalLM.from_pretrained`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import torch
from accelerate import PartialState
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
    default_data_collator,
)

from pipeline.artifacts import RunDir, write_json
from pipeline.data.packing import BlockDataset, pack, save_blocks
from pipeline.errors import PipelineError
from pipeline.models.sizes import ARCHITECTURES, SIZES, build_config
from pipeline.trainers import check_precision, history, last_loss, runtime_args, save_final

NAME, NEEDS = "pretrain", ("data", "tokenizer")
HEADLINE = ("eval_loss", "val_bpb", "tokens_per_second")
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "4090": 165e12}


@dataclass
class Config(TrainingArguments):
    dataset: str = field(default="corpus", metadata={"help": "Text dataset (column `text`) built by the data stage."})
    model_size: str = field(default="tiny", metadata={"help": "Named size from pipeline.models.sizes: nano, tiny, mini, small, base."})
    architecture: str = field(default="llama", metadata={"help": "Stock transformers architecture: llama or gpt2."})
    block_size: int = field(default=128, metadata={"help": "Tokens per packed training sequence (the context length)."})
    precision: str = field(default="auto", metadata={"help": "auto: bf16 on a GPU that has it, else fp32; or fp32, bf16, fp16."})
    n_samples: int = field(default=3, metadata={"help": "Greedy generations written to metrics.json at the end."})
    # TrainingArguments defaults changed for small-model pretraining (nanoGPT-like):
    max_steps: int = field(default=400, metadata={"help": "Optimizer steps."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Sequences per device per micro-batch."})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Sequences per device in evaluation."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate; cosine decay to 0 after warmup."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "transformers scheduler name."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warmup steps, or a fraction of max_steps if < 1."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    adam_beta2: float = field(default=0.99, metadata={"help": "AdamW beta2 (0.99 suits small models and batches)."})
    logging_steps: float = field(default=10, metadata={"help": "Log train loss every N steps."})
    eval_strategy: str = field(default="steps", metadata={"help": "When to evaluate: steps, epoch or no."})
    eval_steps: float = field(default=100, metadata={"help": "Evaluate on the validation split every N steps."})
    save_steps: float = field(default=100, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep the last N checkpoints."})
    dataloader_drop_last: bool = field(default=True, metadata={"help": "Every step sees full batches."})
    optim: str = field(default="adamw_torch", metadata={"help": "transformers optimizer name."})

    def __post_init__(self):
        if self.model_size not in SIZES:
            raise ValueError(f"model_size: unknown size {self.model_size!r} (valid: {', '.join(SIZES)})")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture: unknown architecture {self.architecture!r} (valid: {', '.join(ARCHITECTURES)})")
        check_precision(self.precision)
        super().__post_init__()


def run(cfg: Config, run: RunDir) -> dict:
    state = PartialState()
    out = run.stage_dir(NAME)
    tokenizer = AutoTokenizer.from_pretrained(run.final("tokenizer"))
    if state.is_main_process:
        stats = prepare_blocks(cfg, run, tokenizer)
        write_json(out / "packed" / "stats.json", stats)
    state.wait_for_everyone()
    stats = json.loads((out / "packed" / "stats.json").read_text())
    args = runtime_args(cfg, run, NAME)
    model = AutoModelForCausalLM.from_config(build_config(
        cfg.model_size, cfg.architecture, vocab_size=len(tokenizer), max_position_embeddings=cfg.block_size,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id), attn_implementation="sdpa")
    trainer = Trainer(model=model, args=args, data_collator=default_data_collator, processing_class=tokenizer,
                      train_dataset=BlockDataset(out / "packed" / "train.npy"),
                      eval_dataset=BlockDataset(out / "packed" / "validation.npy"))
    result = trainer.train(resume_from_checkpoint=run.last_checkpoint(NAME))
    evaluation = trainer.evaluate()
    metrics = summarize(cfg, args, trainer, result, evaluation, stats, model)
    if state.is_main_process:
        save_final(trainer, tokenizer, out)
        metrics["samples"] = sample(out / "final", tokenizer, stats["prompts"][: cfg.n_samples])
    state.wait_for_everyone()
    return metrics


def prepare_blocks(cfg: Config, run: RunDir, tokenizer) -> dict:
    ds = run.dataset(cfg.dataset, where="pretrain.dataset")
    if "validation" not in ds:
        raise PipelineError(f"pretrain.dataset: {cfg.dataset!r} has no validation split (splits: {', '.join(ds)})")
    stats = {}
    for split in ("train", "validation"):
        blocks, stats[split] = pack((row["text"] for row in ds[split]), tokenizer, cfg.block_size)
        if len(blocks) == 0:
            raise PipelineError(f"pretrain.dataset: split {split!r} of {cfg.dataset!r} is shorter than one block of {cfg.block_size} tokens")
        save_blocks(run.stage_dir(NAME) / "packed" / f"{split}.npy", blocks)
        stats[split]["blocks"] = len(blocks)
    stats["prompts"] = [" ".join(t.split()[:4]) for t in ds["validation"][:10]["text"] if t.split()]
    return stats


def summarize(cfg, args, trainer, result, evaluation, stats, model) -> dict:
    state = PartialState()
    tokens = trainer.state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps \
        * state.num_processes * cfg.block_size
    val = stats["validation"]
    metrics = {
        "train_loss": last_loss(trainer, result),
        "eval_loss": evaluation["eval_loss"],
        # nats per token -> bits per byte of the held-out text: tokenizer-independent, comparable across runs
        "val_bpb": evaluation["eval_loss"] / math.log(2) * val["tokens"] / val["bytes"],
        "tokens_per_second": result.metrics.get("train_samples_per_second", 0) * cfg.block_size,
        "train_tokens": tokens,
        "params": sum(p.numel() for p in model.parameters()),
        "steps": trainer.state.global_step,
        "loss_history": history(trainer, "loss"),
        "grad_norm_history": history(trainer, "grad_norm"),
        "eval_history": history(trainer, "eval_loss"),
    }
    mfu = model_flops_utilization(metrics["params"], model.config, cfg.block_size, metrics["tokens_per_second"])
    if mfu is not None:
        metrics["mfu"] = mfu
    return metrics


def model_flops_utilization(params: int, config, block_size: int, tokens_per_second: float) -> float | None:
    """Training FLOPs per token (6N + attention, as in PaLM appendix B) over the GPU's dense bf16 peak."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    peak = next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)
    if peak is None:
        return None
    per_token = 6 * params + 12 * config.num_hidden_layers * config.hidden_size * block_size
    return per_token * tokens_per_second / (peak * PartialState().num_processes)


def sample(folder, tokenizer, prompts: list[str], max_new_tokens: int = 24) -> list[str]:
    model = AutoModelForCausalLM.from_pretrained(folder)
    model.eval()
    outputs = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id])
        outputs.append(tokenizer.decode(gen[0], skip_special_tokens=True))
    return outputs


if __name__ == "__main__":
    from pipeline.runner import stage_main

    stage_main(NAME)
