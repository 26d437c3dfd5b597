"""Reward: a reward model trained on preference pairs with TRL's `RewardTrainer`, LoRA optional.

    pipeline stage reward --run runs/tiny reward.model=pretrain
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml -m pipeline.stages.reward --run runs/x

`AutoModelForSequenceClassification` with one label, initialised from `<run>/<model>/final` (the SFT model by
default). Reports held-out pairwise accuracy overall and per rejection kind, the reward margin, and the
calibration of P(chosen preferred) = sigmoid(r_chosen - r_rejected) (`calibration.png`). Writes
`<run>/reward/final/` (loads with `AutoModelForSequenceClassification`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from accelerate import PartialState
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import RewardConfig, RewardTrainer

from pipeline.artifacts import RunDir
from pipeline.errors import PipelineError
from pipeline.metrics.reward import (
    pairwise_report,
    plot_calibration,
    score_conversations,
)
from pipeline.models.loading import load_reward_base
from pipeline.trainers import FineTuneArguments, held_out, history, last_loss, runtime_args, save_final

NAME, NEEDS = "reward", ("data", "pretrain", "sft")
HEADLINE = ("accuracy", "margin_mean", "ece")
MODELS = ("sft", "pretrain")


def needs(cfg: "Config") -> tuple[str, ...]:
    return ("data", cfg.model)


@dataclass
class Config(FineTuneArguments, RewardConfig):
    dataset: str = field(default="preferences", metadata={"help": "Preference dataset (prompt, chosen, rejected[, kind]) built by the data stage."})
    model: str = field(default="sft", metadata={"help": "Stage whose final model initialises the reward model: sft or pretrain."})
    eval_split: str = field(default="test", metadata={"help": "Held-out split for accuracy and calibration."})
    # TRL defaults changed for small models:
    max_length: int = field(default=256, metadata={"help": "Pairs longer than this (in tokens) are dropped from training."})
    num_train_epochs: float = field(default=2.0, metadata={"help": "Passes over the preference train split."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Pairs per device per step."})
    learning_rate: float = field(default=3e-4, metadata={"help": "Peak learning rate."})
    center_rewards_coefficient: float | None = field(default=0.01, metadata={"help": "Weight of the penalty pushing mean reward to 0 (Eisenstein et al. 2023); null disables."})

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model: expected one of {', '.join(MODELS)}, got {self.model!r}")
        super().__post_init__()


def run(cfg: Config, run: RunDir) -> dict:
    state = PartialState()
    base = run.final(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    ds = run.dataset(cfg.dataset, where="reward.dataset")
    missing = {"chosen", "rejected"} - set(ds["train"].column_names)
    if missing:
        raise PipelineError(f"reward.dataset: {cfg.dataset!r} has no {', '.join(sorted(missing))} column")
    if cfg.eval_split not in ds:
        raise PipelineError(f"reward.eval_split: {cfg.dataset!r} has no split {cfg.eval_split!r} (splits: {', '.join(ds)})")
    model = load_reward_base(base, run.stage_dir(NAME) / ".base")
    model.config.pad_token_id = tokenizer.pad_token_id
    columns = [c for c in ("prompt", "chosen", "rejected") if c in ds["train"].column_names]
    validation = held_out(ds)
    trainer = RewardTrainer(model=model, args=runtime_args(cfg, run, NAME, evaluate=validation is not None),
                            processing_class=tokenizer, train_dataset=ds["train"].select_columns(columns),
                            eval_dataset=validation.select_columns(columns) if validation is not None else None,
                            peft_config=cfg.lora_config("SEQ_CLS") if cfg.use_peft else None)
    result = trainer.train(resume_from_checkpoint=run.last_checkpoint(NAME))
    metrics = {"train_loss": last_loss(trainer, result), "loss_history": history(trainer, "loss")}
    if state.is_main_process:
        out = run.stage_dir(NAME)
        final = save_final(trainer, tokenizer, out, merge=cfg.merge)
        metrics.update(evaluate(cfg, AutoModelForSequenceClassification.from_pretrained(final)
                                if not cfg.use_peft or cfg.merge else trainer.model, tokenizer, ds[cfg.eval_split], out))
    state.wait_for_everyone()
    return metrics


def evaluate(cfg: Config, model, tokenizer, split, out) -> dict:
    def conversations(column):
        prompts = split["prompt"] if "prompt" in split.column_names else [[] for _ in range(len(split))]
        return [p + c for p, c in zip(prompts, split[column])]

    chosen = score_conversations(model, tokenizer, conversations("chosen"), cfg.max_length)
    rejected = score_conversations(model, tokenizer, conversations("rejected"), cfg.max_length)
    report = pairwise_report(chosen, rejected, split["kind"] if "kind" in split.column_names else None)
    plot_calibration(report, out / "calibration.png")
    return {**report, "ece": report["calibration"]["ece"]}


if __name__ == "__main__":
    from pipeline.runner import stage_main

    stage_main(NAME)
