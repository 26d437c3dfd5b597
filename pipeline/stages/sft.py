"""SFT: supervised dialogue fine-tuning with TRL's `SFTTrainer`, loss on assistant tokens only, LoRA optional.

    pipeline stage sft --run runs/tiny sft.use_peft=true sft.merge=true
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml -m pipeline.stages.sft --run runs/x

Starts from `<run>/pretrain/final`. Writes `<run>/sft/final/`: a full model (`AutoModelForCausalLM`), or with
`use_peft` and no `merge` a LoRA adapter (`peft.AutoPeftModelForCausalLM`); with `merge` the merged model, and
the adapter in `<run>/sft/adapter/`. Scores the pretrained and the fine-tuned model side by side on the world's
held-out questions (greedy decoding): strict `exact_match` and the loose `contains_answer`, overall and per
category, next to the floors of a model that echoes the question and one that gives each category's most
frequent answer (definitions: `pipeline.metrics.qa`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from accelerate import PartialState
from transformers import AutoTokenizer
from trl import SFTConfig, SFTTrainer

from pipeline.artifacts import RunDir
from pipeline.errors import PipelineError
from pipeline.metrics.qa import qa_floors, score_qa
from pipeline.models.loading import load_causal_lm
from pipeline.trainers import (FineTuneArguments, check_max_length, held_out, history, last_loss, runtime_args,
                               save_final, stage_callbacks, train_resuming)

NAME, NEEDS = "sft", ("data", "pretrain")
SAVES_ON_INTERRUPT = True  # Ctrl-C: checkpoint, then stop (pipeline.interrupts)
HEADLINE = ("eval_loss", "exact_match", "exact_match_base", "floor_majority", "contains_answer")


@dataclass
class Config(FineTuneArguments, SFTConfig):
    dataset: str = field(default="dialogue", metadata={"help": "Conversational dataset (`messages`) built by the data stage."})
    eval_dataset: str = field(default="qa_eval", metadata={"help": "Questions with known answers, scored by strict exact match ('' skips)."})
    eval_max_new_tokens: int = field(default=32, metadata={"help": "Reply length when scoring exact match."})
    # TRL defaults changed for small models trained from scratch:
    assistant_only_loss: bool = field(default=True, metadata={"help": "Loss on assistant tokens only (the chat template marks them)."})
    max_length: int = field(default=256, metadata={"help": "Truncate conversations to this many tokens."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Passes over the dialogue train split."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Conversations per device per step."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate (LoRA wants ~4x more)."})


def run(cfg: Config, run: RunDir) -> dict:
    state = PartialState()
    base_path = run.final("pretrain")
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = load_causal_lm(base_path)
    check_max_length(model, cfg.max_length, "sft.max_length", base_path)
    ds = run.dataset(cfg.dataset, where="sft.dataset")
    if "messages" not in ds["train"].column_names:
        raise PipelineError(f"sft.dataset: {cfg.dataset!r} has no `messages` column (columns: {', '.join(ds['train'].column_names)})")
    qa = run.dataset(cfg.eval_dataset, where="sft.eval_dataset")["test"] if cfg.eval_dataset else None
    missing = sorted({"prompt", "question", "answer", "category"} - set(qa.column_names)) if qa is not None else []
    if missing:
        raise PipelineError(f"sft.eval_dataset: {cfg.eval_dataset!r} has no {', '.join(missing)} column (columns: {', '.join(qa.column_names)})")
    metrics = {}
    if qa is not None and state.is_main_process:
        base = score_qa(model, tokenizer, qa, cfg.eval_max_new_tokens)
        floors = qa_floors(qa)
        metrics.update(exact_match_base=base["exact_match"], contains_answer_base=base["contains_answer"],
                       by_category_base=base["by_category"], qa_rows=base["rows"],
                       floor_echo=floors["echo"]["exact_match"], floor_majority=floors["majority"]["exact_match"],
                       floors=floors)
    validation = held_out(ds)
    trainer = SFTTrainer(model=model, args=runtime_args(cfg, run, NAME, evaluate=validation is not None),
                         processing_class=tokenizer, train_dataset=ds["train"], eval_dataset=validation,
                         peft_config=cfg.lora_config("CAUSAL_LM") if cfg.use_peft else None,
                         callbacks=stage_callbacks(NAME))
    result = train_resuming(trainer, run, NAME)
    if validation is not None:
        metrics["eval_loss"] = trainer.evaluate()["eval_loss"]
    metrics.update(train_loss=last_loss(trainer, result), loss_history=history(trainer, "loss"),
                   trainable_params=sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
                   params=sum(p.numel() for p in trainer.model.parameters()))
    final = save_final(trainer, tokenizer, run.stage_dir(NAME), merge=cfg.merge)  # every rank; the main one writes
    if state.is_main_process:
        if qa is not None:
            tuned = score_qa(load_causal_lm(final), tokenizer, qa, cfg.eval_max_new_tokens)
            metrics.update(exact_match=tuned["exact_match"], contains_answer=tuned["contains_answer"],
                           by_category=tuned["by_category"], examples=tuned["examples"])
    state.wait_for_everyone()
    return metrics


if __name__ == "__main__":
    from pipeline.runner import stage_main

    stage_main(NAME)
