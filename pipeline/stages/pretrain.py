"""Pretrain: a stock transformers GPT (Llama or GPT-2 style, sized by name) from scratch on the packed corpus.

    pipeline stage pretrain --run runs/tiny pretrain.max_steps=600
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml -m pipeline.stages.pretrain --run runs/x

The loop is HF `Trainer` (cosine schedule with warmup, gradient accumulation, DDP/FSDP/DeepSpeed through
accelerate, SDPA attention, optional `torch_compile`); the config extends `TrainingArguments`, so every field
keeps its transformers name. Checkpoints go to `<run>/pretrain/checkpoint-<step>/` (model, optimizer,
scheduler, RNG, data position); a killed run resumes from the last one. The model and tokenizer land in
`<run>/pretrain/final/`, loadable with `AutoModelForCausalLM.from_pretrained`.

Packed data (`<run>/pretrain/packed/`): `train.npy`, full blocks of the training stream (documents joined by
<|endoftext|>; the tail short of a block is not trained on); `validation_stream.npy`, the whole validation split's
tokens after one leading <|endoftext|>; `stats.json`.

Metrics: `eval_loss` and `val_bpb` come from `pipeline.metrics.lm.bits_per_byte` over the whole validation stream
at the end (windows of `block_size` overlapping by one token, so every validation token is predicted exactly
once; separators are context, not scored): `eval_loss` is the mean loss in nats over every predicted token,
`val_bpb` the bits of every scored token over the UTF-8 bytes of exactly the text they decode to (with the
leading separator, the whole validation text: `val_bytes`). `eval_history` is the Trainer's periodic evaluation
on the same windows (its mean weights batches by windows, so its last entry is close to, not equal to,
`eval_loss`). `tokens_per_second` is training-only: tokens of this train() call's steps over its training seconds,
evaluation and checkpoint saving excluded (`train_seconds`, `eval_seconds`, `save_seconds`; `train_wall_seconds`
is the whole train() call, `pack_seconds` the packing); `mfu` (GPU only) derives from it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import PartialState
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)

from pipeline.artifacts import RunDir, write_json
from pipeline.data.packing import BlockDataset, WindowDataset, pack, save_blocks, validation_stream
from pipeline.errors import PipelineError
from pipeline.metrics.lm import bits_per_byte, token_byte_lengths, windows
from pipeline.models.sizes import ARCHITECTURES, SIZES, build_config
from pipeline.trainers import (check_precision, check_sizes, history, last_loss, runtime_args,
                               save_final, stage_callbacks, train_resuming)

NAME, NEEDS = "pretrain", ("data", "tokenizer")
SAVES_ON_INTERRUPT = True  # Ctrl-C: checkpoint, then stop (pipeline.interrupts)
HEADLINE = ("eval_loss", "val_bpb", "tokens_per_second")
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "4090": 165e12}


@dataclass
class Config(TrainingArguments):
    dataset: str = field(default="corpus", metadata={"help": "Text dataset (column `text`) built by the data stage."})
    model_size: str = field(default="tiny", metadata={"help": "Named size from pipeline.models.sizes: nano, micro, tiny, mini, small, base."})
    architecture: str = field(default="llama", metadata={"help": "Stock transformers architecture: llama or gpt2."})
    block_size: int = field(default=128, metadata={"help": "Tokens per packed training sequence and per validation window (the context length)."})
    precision: str = field(default="auto", metadata={"help": "auto: bf16 on a GPU that has it, else fp32; or fp32, bf16, fp16."})
    n_samples: int = field(default=3, metadata={"help": "Greedy generations written to metrics.json at the end."})
    # TrainingArguments defaults changed for small-model pretraining (nanoGPT-like):
    max_steps: int = field(default=400, metadata={"help": "Optimizer steps."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Sequences per device per micro-batch."})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Validation windows per device per evaluation batch."})
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
    dataloader_drop_last: bool = field(default=True, metadata={"help": "Every training step sees full batches (evaluation never drops any)."})
    optim: str = field(default="adamw_torch", metadata={"help": "transformers optimizer name."})

    def __post_init__(self):
        if self.model_size not in SIZES:
            raise ValueError(f"model_size: unknown size {self.model_size!r} (valid: {', '.join(SIZES)})")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture: unknown architecture {self.architecture!r} (valid: {', '.join(ARCHITECTURES)})")
        check_precision(self.precision)
        check_sizes(self)
        if self.block_size < 2:
            raise ValueError(f"block_size: expected >= 2 (a block predicts its tokens after the first), got {self.block_size}")
        super().__post_init__()


def run(cfg: Config, run: RunDir) -> dict:
    state = PartialState()
    out = run.stage_dir(NAME)
    tokenizer = AutoTokenizer.from_pretrained(run.final("tokenizer"))
    pack_seconds = time.perf_counter()
    if state.is_main_process:
        write_json(out / "packed" / "stats.json", prepare_blocks(cfg, run, tokenizer))
    pack_seconds = time.perf_counter() - pack_seconds
    state.wait_for_everyone()
    args = runtime_args(cfg, run, NAME)
    model = AutoModelForCausalLM.from_config(build_config(
        cfg.model_size, cfg.architecture, vocab_size=len(tokenizer), max_position_embeddings=cfg.block_size,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id), attn_implementation="sdpa")
    timer = TrainTimer()
    trainer = PretrainTrainer(model=model, args=args, data_collator=default_data_collator, processing_class=tokenizer,
                              train_dataset=BlockDataset(out / "packed" / "train.npy"),
                              eval_dataset=WindowDataset(out / "packed" / "validation_stream.npy", cfg.block_size),
                              callbacks=[timer, *stage_callbacks(NAME)])
    start = time.perf_counter()
    result = train_resuming(trainer, run, NAME)
    timer.wall = time.perf_counter() - start
    validation = score_validation(trainer, tokenizer, out / "packed" / "validation_stream.npy", cfg.block_size)
    metrics = summarize(cfg, args, trainer, result, timer, validation, model)
    metrics["pack_seconds"] = round(pack_seconds, 3)  # packing and writing packed/, on the main process
    metrics.update(held_out_overlap(run, cfg.dataset))
    final = save_final(trainer, tokenizer, out)  # on every rank: FSDP gathers the shards, the main process writes
    if state.is_main_process:
        metrics["samples"] = sample(final, tokenizer, json.loads(
            (out / "packed" / "stats.json").read_text())["prompts"][: cfg.n_samples])
    state.wait_for_everyone()
    return metrics


def held_out_overlap(run: RunDir, dataset: str) -> dict:
    """The data stage's measure of how much of the validation split is also in train (`pipeline.data.overlap`):
    a validation loss on sentences seen in training measures memorisation."""
    manifest = run.stage_dir("data") / "manifest.json"
    held_out = json.loads(manifest.read_text()).get(dataset, {}).get("held_out") if manifest.is_file() else None
    if not held_out:
        return {}
    return {"validation_sentences_in_train": held_out["sentence_share"],
            "validation_documents_in_train": held_out["document_share"]}


def prepare_blocks(cfg: Config, run: RunDir, tokenizer) -> dict:
    """packed/train.npy: full training blocks; packed/validation_stream.npy: the whole validation split's tokens
    after one leading <|endoftext|> (so the first document is predicted from a separator like every other)."""
    ds = run.dataset(cfg.dataset, where="pretrain.dataset")
    if "validation" not in ds:
        raise PipelineError(f"pretrain.dataset: {cfg.dataset!r} has no validation split (splits: {', '.join(ds)})")
    packed = run.stage_dir(NAME) / "packed"
    blocks, train = pack((row["text"] for row in ds["train"]), tokenizer, cfg.block_size)
    if len(blocks) == 0:
        raise PipelineError(f"pretrain.dataset: split 'train' of {cfg.dataset!r} is shorter than one block of {cfg.block_size} tokens")
    save_blocks(packed / "train.npy", blocks)
    stream, validation = validation_stream((row["text"] for row in ds["validation"]), tokenizer)
    if validation["bytes"] == 0:
        raise PipelineError(f"pretrain.dataset: split 'validation' of {cfg.dataset!r} has no text")
    save_blocks(packed / "validation_stream.npy", stream)
    return {"train": {**train, "blocks": len(blocks)},
            "validation": {**validation, "windows": len(windows(len(stream), cfg.block_size))},
            "prompts": [" ".join(t.split()[:4]) for t in ds["validation"][:10]["text"] if t.split()]}


def score_validation(trainer, tokenizer, stream, block_size: int) -> dict:
    """`bits_per_byte` of the trained model over the whole validation stream. Every rank scores the whole split
    (cheap next to training; identical numbers everywhere): DDP needs no collective for it, and FSDP / DeepSpeed
    ZeRO-3, whose wrapped model gathers its shards in each forward, need every rank in every forward anyway."""
    wrapped = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled
    return bits_per_byte(trainer.model_wrapped if wrapped else trainer.model, np.load(stream),
                         token_byte_lengths(tokenizer), block_size, trainer.args.per_device_eval_batch_size)


class PretrainTrainer(Trainer):
    """HF `Trainer` whose evaluation never drops a batch: `dataloader_drop_last` (full training batches) would
    otherwise also drop the last partial eval batch, and every batch of a split smaller than one."""

    def get_eval_dataloader(self, eval_dataset=None):
        drop_last, self.args.dataloader_drop_last = self.args.dataloader_drop_last, False
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.args.dataloader_drop_last = drop_last


class TrainTimer(TrainerCallback):
    """Splits a train() call's loop into training, evaluation and checkpoint-saving seconds.

    The clock laps at train begin and at each event: a step's end closes a training interval (data loading,
    forward, backward, optimizer, logging), `on_evaluate` an evaluation, `on_save` a save, so the time from a
    step's end to the end of the evaluation/save it triggers is overhead. Before a lap that opens an evaluation
    or save (and at the last step) the GPU is synchronized, so queued training work counts as training. Setup
    before the loop (checkpoint loading) and teardown after it count in `wall` only. `steps`: optimizer steps
    run in this process (a resumed run does not count the steps before its checkpoint)."""

    def __init__(self):
        self.train = self.eval = self.save = self.wall = 0.0
        self.steps, self._mark = 0, 0.0

    def _lap(self, bucket: str | None, sync: bool = True) -> None:
        if sync and torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        if bucket is not None:
            setattr(self, bucket, getattr(self, bucket) + now - self._mark)
        self._mark = now

    def on_train_begin(self, args, state, control, **kwargs):
        self._lap(None)

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1
        self._lap("train", sync=control.should_evaluate or control.should_save or control.should_training_stop)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._lap("train")

    def on_evaluate(self, args, state, control, **kwargs):
        self._lap("eval")

    def on_save(self, args, state, control, **kwargs):
        self._lap("save")


def summarize(cfg, args, trainer, result, timer: TrainTimer, validation: dict, model) -> dict:
    state = PartialState()
    step_tokens = args.per_device_train_batch_size * args.gradient_accumulation_steps * state.num_processes \
        * cfg.block_size
    metrics = {
        "train_loss": last_loss(trainer, result),
        "eval_loss": validation["nats_per_token"],  # mean loss over every predicted validation token
        "val_bpb": validation["bits_per_byte"],  # bits per byte of the validation text: tokenizer-independent
        "val_scored_tokens": validation["scored_tokens"],
        "val_bytes": validation["bytes"],
        # training-only: this train() call's steps over its training seconds (no evaluation, no checkpoints)
        "tokens_per_second": timer.steps * step_tokens / timer.train if timer.train > 0 else 0.0,
        "train_tokens": trainer.state.global_step * step_tokens,
        "timed_steps": timer.steps,
        "train_seconds": round(timer.train, 3),
        "eval_seconds": round(timer.eval, 3),
        "save_seconds": round(timer.save, 3),
        "train_wall_seconds": round(timer.wall, 3),  # the whole train() call
        "device": args.device.type,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
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
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
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
