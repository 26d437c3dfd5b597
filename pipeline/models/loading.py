"""Load what a stage saved: a full `save_pretrained` model, or a LoRA adapter folder (merged on load)."""

from __future__ import annotations

import shutil
from pathlib import Path


def is_adapter(folder: str | Path) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()


def load_causal_lm(folder: str | Path):
    """`AutoModelForCausalLM` from a model folder; an adapter folder loads its base and merges the adapter."""
    if is_adapter(folder):
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(str(folder), use_safetensors=True).merge_and_unload()
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True)


def load_reward_base(folder: str | Path, scratch: Path):
    """`AutoModelForSequenceClassification` (one label) initialised from a causal LM folder. An adapter is merged
    and saved to `scratch` first, since the classifier must load from full weights: by the main process only (the
    other ranks of an `accelerate launch` wait, then read it), and `scratch` is removed once every rank holds the
    model, or when loading fails. The model's `name_or_path` is then `folder`, not the deleted `scratch`."""
    from accelerate import PartialState
    from transformers import AutoModelForSequenceClassification

    if not is_adapter(folder):
        return AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=1, use_safetensors=True)
    state = PartialState()
    try:
        with state.main_process_first():
            if state.is_main_process:
                load_causal_lm(folder).save_pretrained(scratch)
            model = AutoModelForSequenceClassification.from_pretrained(str(scratch), num_labels=1, use_safetensors=True)
        state.wait_for_everyone()  # every rank has read it
    finally:
        if state.is_main_process:
            shutil.rmtree(scratch, ignore_errors=True)
    model.name_or_path = model.config.name_or_path = str(folder)
    return model


def learned_positions(config) -> int | None:
    """How many positions a model with learned absolute position embeddings can read (GPT-2's `n_positions`):
    a longer sequence indexes past its position table. None for rotary models (Llama), which run on (untrained
    beyond their training length, but without an error)."""
    if getattr(config, "model_type", None) == "gpt2":
        return int(config.n_positions)
    return None
