"""Reward: a reward model trained on preference pairs with TRL's `RewardTrainer`, LoRA optional.

    pipeline stage reward --run runs/tiny reward.model=pretrain
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml -m pipeline.stages.reward --run runs/x

`AutoModelForSequenceClassification` with one label, initialised from `<run>/<model>/final` (the SFT model by
default; a LoRA adapter there is merged into a scratch `<run>/reward/.base/`, removed once loaded). Reports
held-out pairwise accuracy overall and per rejection kind, the reward margin, and the calibration of
P(chosen preferred) = sigmoid(r_chosen - r_rejected) (`calibration.png`), on the held-out pairs the trainer
would keep (tokenized by TRL, none longer than `max_length`, scored whole; `pairs_skipped` counts the others;
see `pipeline.metrics.reward`). With `likelihood_weight` w > 0 it also reports the accuracy of the reward the
ppo stage optimises with the same w: the classifier's score + w × the reply's log-likelihood under the SFT model
(`accuracy_with_likelihood`, per kind too), and of that likelihood alone. The floor beside the accuracies:
`floor_shorter_reply`, the share of pairs whose chosen side is the shorter. Writes `<run>/reward/final/` (loads with `AutoModelForSequenceClassification`;
with `use_peft` and no `merge`, a LoRA adapter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from accelerate import PartialState
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import RewardConfig, RewardTrainer

from pipeline.artifacts import RunDir
from pipeline.errors import PipelineError
from pipeline.metrics.reward import (held_out_pairs, likelihood_report, pair_metrics, plot_calibration, score_pairs,
                                     shorter_reply_floor)
from pipeline.models.loading import is_adapter, load_causal_lm, load_reward_base
from pipeline.trainers import (FineTuneArguments, check_max_length, held_out, history, last_loss, runtime_args,
                               save_final, stage_callbacks, train_resuming)

NAME, NEEDS = "reward", ("data", "pretrain", "sft")
SAVES_ON_INTERRUPT = True  # Ctrl-C: checkpoint, then stop (pipeline.interrupts)
HEADLINE = ("accuracy", "margin_mean", "ece")
MODELS = ("sft", "pretrain")


def needs(cfg: "Config") -> tuple[str, ...]:
    return ("data", cfg.model, *(("sft",) if cfg.likelihood_weight > 0 and cfg.model != "sft" else ()))


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
    likelihood_weight: float = field(default=0.0, metadata={"help": "w > 0: also report the accuracy of score + w × log p_SFT(reply), the reward ppo optimises with its likelihood_weight w (0: off)."})

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model: expected one of {', '.join(MODELS)}, got {self.model!r}")
        if not (isinstance(self.likelihood_weight, (int, float)) and math.isfinite(self.likelihood_weight)
                and self.likelihood_weight >= 0):
            raise ValueError(f"likelihood_weight: expected a finite number >= 0 (0: off), got {self.likelihood_weight!r}")
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
    if not len(ds[cfg.eval_split]):
        raise PipelineError(f"reward.eval_split: split {cfg.eval_split!r} of {cfg.dataset!r} is empty")
    if cfg.use_peft and not cfg.merge and is_adapter(base):
        # the new adapter's base would be the merged SFT model, which is not kept (see load_reward_base)
        raise PipelineError(f"reward.use_peft: {base} is a LoRA adapter, so a reward adapter would have no base to "
                            "load with: set reward.merge=true (or sft.merge=true)")
    model = load_reward_base(base, run.stage_dir(NAME) / ".base")
    check_max_length(model, cfg.max_length, "reward.max_length", base)
    model.config.pad_token_id = tokenizer.pad_token_id
    columns = [c for c in ("prompt", "chosen", "rejected") if c in ds["train"].column_names]
    validation = held_out(ds)
    trainer = RewardTrainer(model=model, args=runtime_args(cfg, run, NAME, evaluate=validation is not None),
                            processing_class=tokenizer, train_dataset=ds["train"].select_columns(columns),
                            eval_dataset=validation.select_columns(columns) if validation is not None else None,
                            peft_config=cfg.lora_config("SEQ_CLS") if cfg.use_peft else None,
                            callbacks=stage_callbacks(NAME))
    test = ds[cfg.eval_split]  # tokenized and filtered by the trainer's own rule (on every rank: TRL syncs them)
    keep = [c for c in (*columns, "kind") if c in test.column_names]
    pairs, skipped = held_out_pairs(trainer, test.select_columns(keep))
    if cfg.likelihood_weight > 0 and "prompt" not in pairs.column_names:
        raise PipelineError(f"reward.likelihood_weight: {cfg.dataset!r} has no prompt column to tell the reply's "
                            "tokens from the prompt's")
    if not len(pairs):  # before training: nothing to evaluate on
        raise PipelineError(f"reward.max_length: all {skipped} pairs of {cfg.dataset!r} split {cfg.eval_split!r} are "
                            f"longer than {cfg.max_length} tokens")
    result = train_resuming(trainer, run, NAME)
    metrics = {"train_loss": last_loss(trainer, result), "loss_history": history(trainer, "loss")}
    out = run.stage_dir(NAME)
    final = save_final(trainer, tokenizer, out, merge=cfg.merge)  # every rank; the main one writes
    if state.is_main_process:
        metrics.update(evaluate(AutoModelForSequenceClassification.from_pretrained(final, use_safetensors=True)
                                if not cfg.use_peft or cfg.merge else trainer.model, pairs, skipped, out,
                                likelihood=(load_causal_lm(run.final("sft")), tokenizer, cfg.likelihood_weight)
                                if cfg.likelihood_weight > 0 else None))
    state.wait_for_everyone()
    return metrics


def evaluate(model, pairs, skipped: int, out, likelihood=None) -> dict:
    """Accuracy, margin and calibration on the held-out `pairs` (from `held_out_pairs`), scored whole; with
    `likelihood` = (SFT causal LM, tokenizer, w), also `likelihood_report`'s accuracies of score + w × L."""
    chosen, rejected = score_pairs(model, pairs)
    report = pair_metrics(chosen, rejected, pairs["kind"] if "kind" in pairs.column_names else None, skipped)
    plot_calibration(report, out / "calibration.png")
    extra = likelihood_report(likelihood[0], likelihood[1], pairs, chosen, rejected, likelihood[2]) if likelihood else {}
    return {**report, "ece": report["calibration"]["ece"], **shorter_reply_floor(pairs), **extra}


if __name__ == "__main__":
    from pipeline.runner import stage_main

    stage_main(NAME)
