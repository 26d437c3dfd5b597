"""What every HF/TRL trainer stage shares: the run-decided arguments, checkpoint resume and the final save.

A trainer stage's `Config` extends `TrainingArguments` (or a TRL config) and adds `precision`; the recipe never
sets `output_dir`, `seed` or `report_to`: the run does, here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import DistributedType
from transformers import TrainerCallback
from transformers.trainer_utils import TrainOutput

from pipeline.artifacts import RunDir, replace_dir
from pipeline.console import TrainerProgress
from pipeline.errors import PipelineError
from pipeline.interrupts import SaveOnInterrupt, any_rank

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected auto, fp32, bf16 or fp16, got {precision!r}")


def check_sizes(args) -> None:
    """Batch sizes and accumulation steps of a trainer config are at least 1 (`name: expected >= 1, got 0`)."""
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        value = getattr(args, name, 1)
        if value < 1:
            raise ValueError(f"{name}: expected >= 1, got {value}")


def check_max_length(model, max_length: int | None, field: str, folder) -> None:
    """A model with learned absolute positions (GPT-2, `learned_positions`) cannot read past them: `field`
    (a stage's `max_length`) must fit, or one line naming it, before any work."""
    from pipeline.models.loading import learned_positions

    limit = learned_positions(model.config)
    if limit is not None and (max_length is None or max_length > limit):
        raise PipelineError(f"{field}: {max_length} tokens, but the {model.config.model_type} model in {folder} "
                            f"learned {limit} positions (pretrain.block_size): set {field} <= {limit}")


def resolve_precision(precision: str) -> str:
    """fp32, bf16 or fp16 for a recipe's `precision`: auto is bf16 on a GPU that has it, fp32 elsewhere (on CPU,
    so that the saved model and the one trained agree)."""
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return precision


def held_out(ds, split: str = "validation"):
    """The split to compute validation loss on, or None when the dataset has none (or an empty one)."""
    return ds[split] if split in ds and len(ds[split]) else None


def runtime_args(cfg, run: RunDir, stage: str, evaluate: bool = True):
    """The recipe's config plus what only the run decides: folder, seed, trackers, precision, device;
    `evaluate=False` (no validation data) turns periodic evaluation off."""
    gpu = torch.cuda.is_available()
    precision = resolve_precision(cfg.precision)
    return dataclasses.replace(cfg, output_dir=str(run.stage_dir(stage)), seed=run.seed, data_seed=run.seed,
                               report_to=run.report_to, bf16=precision == "bf16", fp16=precision == "fp16",
                               use_cpu=not gpu, **({} if evaluate else {"eval_strategy": "no"}))


@dataclass
class LoraArguments:
    """LoRA (peft) fields shared by the trainer stages that fine-tune an existing model."""

    use_peft: bool = field(default=False, metadata={"help": "Train a LoRA adapter (peft) instead of all weights."})
    merge: bool = field(default=False, metadata={"help": "With use_peft: save base+adapter merged as the final model (the adapter goes to <stage>/adapter/)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "Modules to adapt: all-linear, or comma-separated names (q_proj,v_proj)."})

    def check_lora(self) -> None:
        if self.merge and not self.use_peft:
            raise ValueError("merge: only meaningful with use_peft: true")

    def lora_config(self, task_type: str):
        from peft import LoraConfig

        targets = self.lora_target_modules
        if targets != "all-linear":
            targets = [m.strip() for m in targets.split(",") if m.strip()]
        return LoraConfig(r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                          target_modules=targets, task_type=task_type)


@dataclass
class FineTuneArguments(LoraArguments):
    """Defaults shared by the stages that fine-tune with a TRL trainer (SFT, reward), changed from TRL's for
    small models on CPU. Put it first among the bases so its defaults win: `class Config(FineTuneArguments, SFTConfig)`."""

    precision: str = field(default="auto", metadata={"help": "auto: bf16 on a GPU that has it, else fp32; or fp32, bf16, fp16."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "transformers scheduler name."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warmup steps, or a fraction of all steps if < 1."})
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Deprecated name of activation_checkpointing."})
    activation_checkpointing: bool | None = field(default=False, metadata={"help": "Recompute activations (saves memory, costs time)."})
    bf16: bool | None = field(default=False, metadata={"help": "Set by `precision` at run time."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to compute validation loss: epoch, steps or no."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to checkpoint (resume after interruption)."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep the last N checkpoints."})
    optim: str = field(default="adamw_torch", metadata={"help": "transformers optimizer name."})

    def __post_init__(self):
        check_precision(self.precision)
        check_sizes(self)
        self.check_lora()
        if getattr(self, "trust_remote_code", False):
            raise ValueError("trust_remote_code: never enabled here; models are stock transformers architectures")
        super().__post_init__()


def save_final(trainer, tokenizer, out: Path, merge: bool = False) -> Path:
    """The trained model into `out/final/` (safetensors, with the tokenizer), atomically: the full model, or
    a peft adapter; with `merge`, base+adapter merged, and the adapter alone in `out/adapter/`.

    Call it on every process: the full state dict is gathered through the accelerator (a collective under
    FSDP or DeepSpeed ZeRO-3, where each rank holds a shard), and only the main process writes. `merge` needs
    the whole model in one process, so it is refused under FSDP (merge later, from the saved adapter)."""
    state = PartialState()
    if merge and state.distributed_type == DistributedType.FSDP:
        raise PipelineError("merge: not supported under FSDP; save the adapter (merge: false) and merge it afterwards")
    weights = trainer.accelerator.get_state_dict(trainer.model)  # every rank
    model = trainer.accelerator.unwrap_model(trainer.model)
    if state.is_main_process:
        tmp = out / ".final.tmp"
        if merge:
            model.save_pretrained(out / ".adapter.tmp", state_dict=weights)
            replace_dir(out / ".adapter.tmp", out / "adapter")
            model.merge_and_unload().save_pretrained(tmp)
        else:
            model.save_pretrained(tmp, state_dict=weights)
        tokenizer.save_pretrained(tmp)
        replace_dir(tmp, out / "final")
    state.wait_for_everyone()
    return out / "final"


def history(trainer, key: str) -> list[list[float]]:
    """[[step, value], ...] of one logged quantity (loss, grad_norm, eval_loss), one entry per step."""
    return [[step, value] for step, value in
            sorted({h["step"]: h[key] for h in trainer.state.log_history if key in h}.items())]


def last_loss(trainer, train_output) -> float:
    """The last logged training loss (the final logging window), or the run's mean if none was logged."""
    logged = history(trainer, "loss")
    return logged[-1][1] if logged else train_output.metrics.get("train_loss", train_output.training_loss)


class StopOnNonFinite(TrainerCallback):
    """Stops a HF `Trainer` before an optimizer step whose gradient holds a NaN or an infinity (a NaN loss gives
    NaN gradients): a `PipelineError` naming the step and the last good checkpoint, which stays as it was
    (the weights in memory were not updated with the bad gradient either). Off under fp16, whose loss scaler
    expects and skips infinite gradients."""

    def __init__(self, stage: str):
        self.stage = stage

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if args.fp16:  # the loss scaler owns infinite gradients there: it skips that step and lowers the scale
            return control
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        finite = bool(torch.stack(torch._foreach_norm(grads)).isfinite().all()) if grads else True
        if any_rank(not finite):
            out = Path(args.output_dir)
            last = RunDir(out.parent).last_checkpoint(out.name)
            raise PipelineError(f"{self.stage}: non-finite gradient (NaN or inf) at step {state.global_step + 1}; "
                                f"stopped before the update; last good checkpoint: {last or 'none yet'}")
        return control


class _AlreadyTrained(Exception):
    """Raised by `StopWhenAlreadyTrained` out of `Trainer.train`; caught by `train_resuming`."""


class StopWhenAlreadyTrained(TrainerCallback):
    """Ends `Trainer.train` before its first step when the resumed checkpoint is already at `max_steps`.

    transformers checks for the end of training only after a step, so resuming a checkpoint saved at the last
    step (a process killed between that save and the final one) trains one step more than asked for, unlike
    the uninterrupted run. The checkpoint's weights and state are loaded by then; nothing has been updated."""

    def on_step_begin(self, args, state, control, **kwargs):
        if 0 < state.max_steps <= state.global_step:
            raise _AlreadyTrained
        return control


def train_resuming(trainer, run: RunDir, stage: str) -> TrainOutput:
    """`trainer.train()`, resumed from the stage's last complete checkpoint if it has one. A checkpoint taken at
    the last step gives the trainer that checkpoint's weights and state and trains no further step (its
    `TrainOutput` then has no metrics: the loss history is in `trainer.state.log_history`)."""
    trainer.add_callback(StopWhenAlreadyTrained())
    try:
        return trainer.train(resume_from_checkpoint=run.last_checkpoint(stage))
    except _AlreadyTrained:
        return TrainOutput(trainer.state.global_step, float("nan"), {})


def stage_callbacks(stage: str) -> list[TrainerCallback]:
    """What every HF trainer stage adds: the progress line, checkpoint-and-stop on Ctrl-C, stop on NaN/inf."""
    return [TrainerProgress(), SaveOnInterrupt(stage), StopOnNonFinite(stage)]
