"""Load what a stage saved: a full `save_pretrained` model, or a LoRA adapter folder (merged on load)."""

from __future__ import annotations

from pathlib import Path


def is_adapter(folder: str | Path) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()


def load_causal_lm(folder: str | Path):
    """`AutoModelForCausalLM` from a model folder; an adapter folder loads its base and merges the adapter."""
    if is_adapter(folder):
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(str(folder)).merge_and_unload()
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder))


def load_reward_base(folder: str | Path, scratch: Path):
    """`AutoModelForSequenceClassification` (one label) initialised from a causal LM folder; an adapter is merged
    and saved to `scratch` first, since the classifier must load from full weights."""
    from transformers import AutoModelForSequenceClassification

    if is_adapter(folder):
        load_causal_lm(folder).save_pretrained(scratch)
        folder = scratch
    return AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=1)
