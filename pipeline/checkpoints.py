"""What a path names, and loading it: the one place `pipeline chat`, `generate` and `eval` learn what a folder holds.

- What a folder is: `model_kind` says causal LM, reward model (sequence classifier) or neither, from a LoRA
  adapter's task, config.json's architectures, or a ppo `checkpoint-<step>` of a run; `run_of` places a
  `<run>/<stage>/final` or `checkpoint-<step>` in its run; `describe` says in words what any folder is, for errors.
- Which model a path means: `identify` checks a folder holds a model (a `ModelFolder`); `causal_lm_folder` follows
  a run folder to its `newest_policy` (ppo/final, else sft/final, else pretrain/final) and a stage folder to its
  `final/`, and checks the result is a causal LM; `run_models` lists a run's finished models (and checkpoints).
- Loading: `load_model` gives vanilla transformers (a LoRA adapter merged; a ppo checkpoint's policy through
  `load_policy_checkpoint`, in the architecture of the run's sft/final); `tokenizer_folder` finds the tokenizer
  (saved with the model, else its stage's final/, the run's sft/final or tokenizer/final) and `load_tokenizer`
  loads it. Every failure is a one-line `PipelineError` naming the folder; remote code is never trusted.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.models.loading import is_adapter

CAUSAL_LM, REWARD_MODEL = "causal_lm", "reward_model"
MODEL_STAGES = ("pretrain", "sft", "reward", "ppo")    # stages that save models, in run order
POLICY_STAGES = ("ppo", "sft", "pretrain")             # a run folder means the newest of these that has a final/
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
CAUSAL_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")
ADAPTER_TASKS = {None: CAUSAL_LM, "CAUSAL_LM": CAUSAL_LM, "SEQ_CLS": REWARD_MODEL}


# ---------------------------------------------------------------- what a folder is
def read_json(path: Path) -> dict:
    """A JSON object from `path`; a one-line error when it is not valid JSON or not an object."""
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise PipelineError(f"{path}: expected a JSON object")
    return value


def verify_files(folder: Path) -> None:
    """A one-line error naming the first file of a saved model or tokenizer folder that cannot be read
    (`artifacts.files_damage`: headers and JSON, not the weights)."""
    from pipeline.artifacts import files_damage

    damage = files_damage(folder)
    if damage:
        raise PipelineError(f"{folder}: {damage}")


def is_run_folder(path: Path) -> bool:
    return (path / "config.yaml").is_file() and not (path / "config.json").exists()


def run_of(folder: Path) -> tuple[Path | None, str | None, int | None]:
    """(run folder, stage, step) when `folder` is `<run>/<stage>/final` or `<run>/<stage>/checkpoint-<step>` of a
    model stage; (None, None, None) otherwise. The run folder is absolute."""
    folder = folder.resolve()
    stage_dir, run = folder.parent, folder.parent.parent
    if stage_dir.name not in MODEL_STAGES or not (run / "config.yaml").is_file():
        return None, None, None
    step = re.fullmatch(r"checkpoint-(\d+)", folder.name)
    if folder.name != "final" and not step:
        return None, None, None
    return run, stage_dir.name, int(step.group(1)) if step else None


def is_policy_checkpoint(folder: Path) -> bool:
    """A ppo `checkpoint-<step>` of a run: an accelerate state whose model.safetensors holds `policy.*` (and
    `value_model.*` or `value_head.*`) keys, no config.json (`load_policy_checkpoint`)."""
    _, stage, step = run_of(folder)
    return stage == "ppo" and step is not None and (folder / "model.safetensors").is_file()


def model_kind(folder: Path) -> str | None:
    """CAUSAL_LM, REWARD_MODEL or None, from a LoRA adapter's task_type (none: causal LM), else config.json's
    architectures (or model_type, when it names none), else whether it is a ppo checkpoint (its policy)."""
    if is_adapter(folder):
        return ADAPTER_TASKS.get(read_json(folder / "adapter_config.json").get("task_type"))
    if (folder / "config.json").is_file():
        return architecture_kind(read_json(folder / "config.json"))
    return CAUSAL_LM if is_policy_checkpoint(folder) else None


def architecture_kind(config: dict) -> str | None:
    architectures = config.get("architectures") or []
    if any(a.endswith(CAUSAL_LM_SUFFIXES) for a in architectures):
        return CAUSAL_LM
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return REWARD_MODEL
    if not architectures and config.get("model_type"):  # no architectures saved: a causal LM type loads as one
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        if config["model_type"] in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            return CAUSAL_LM
    return None


def describe(folder: Path) -> str:
    """What `folder` holds, in a few words: a model's kind and architecture, or what a folder without one is."""
    return describe_model(folder) or describe_non_model(folder)


def describe_model(folder: Path) -> str | None:
    """A LoRA adapter's task, or config.json's architecture and kind; None for a folder with neither."""
    if is_adapter(folder):
        task = read_json(folder / "adapter_config.json").get("task_type")
        if task in (None, "CAUSAL_LM"):
            return "a LoRA adapter of a causal language model"
        return f"a LoRA adapter for task {task}" + (" (a reward model's)" if task == "SEQ_CLS" else "")
    if is_policy_checkpoint(folder):
        return "a ppo checkpoint (the policy and value model in an accelerate state)"
    if not (folder / "config.json").is_file():
        return None
    config = read_json(folder / "config.json")
    architectures = ", ".join(config.get("architectures") or []) or f"model_type {config.get('model_type')!r}"
    kind = architecture_kind(config)
    if kind == CAUSAL_LM:
        return f"a causal language model ({architectures})"
    if kind == REWARD_MODEL:
        labels = config.get("num_labels", len(config.get("id2label") or [0]))
        return f"{'a reward (or value) model' if labels == 1 else 'a sequence classifier'} ({architectures})"
    return f"a model of architecture {architectures}"


def describe_non_model(folder: Path) -> str:
    """What a folder without a model (config.json, adapter_config.json or ppo checkpoint) is, in a few words."""
    if not folder.is_dir():
        return "a file, not a model folder"
    names = {p.name for p in folder.iterdir()}
    if not names:
        return "an empty folder, not a model folder (config.json, adapter_config.json) or run folder (config.yaml)"
    if folder.name.startswith("checkpoint-") and "trainer_state.json" in names:
        return ("a training checkpoint without config.json (an accelerate state, not a saved model; a ppo "
                f"checkpoint loads only inside its run folder): use {folder.parent / 'final'}")
    if names & set(TOKENIZER_FILES) and not any(n.endswith((".safetensors", ".bin")) for n in names):
        return "a tokenizer without a model"
    if "value_head.safetensors" in names:
        return "a PPO value head (value_head.safetensors), not a saved model"
    return "not a model folder (no config.json or adapter_config.json) and not a run folder (no config.yaml)"


# ---------------------------------------------------------------- which model a path means
@dataclass(frozen=True)
class ModelFolder:
    """A folder holding a model: its kind, and the run, stage and step it belongs to (None outside a run)."""

    folder: Path
    kind: str                       # CAUSAL_LM or REWARD_MODEL
    run: Path | None = None
    stage: str | None = None
    step: int | None = None

    @property
    def label(self) -> str:
        """`<stage>-<step>` for a checkpoint, `<stage>` for a final model, else the folder's name."""
        return f"{self.stage}-{self.step}" if self.step is not None else (self.stage or self.folder.name)


def identify(folder: Path) -> ModelFolder:
    """The model in `folder` with its place in a run; a one-line error saying what the folder is otherwise."""
    kind = model_kind(folder)
    if kind is None:
        what = describe_model(folder)
        raise PipelineError(f"{folder}: {what}, neither a causal language model nor a reward model" if what
                            else f"{folder}: {describe_non_model(folder)}")
    return ModelFolder(folder, kind, *run_of(folder))


def require_causal_lm(folder: Path) -> None:
    """A one-line error, saying what the folder is, unless it holds a causal LM (a LoRA adapter, a ppo checkpoint)."""
    if model_kind(folder) == CAUSAL_LM:
        return
    what = describe_model(folder)
    if what is None:
        raise PipelineError(f"{folder}: {describe_non_model(folder)}")
    advice = ": give a policy such as <run>/ppo/final" if model_kind(folder) == REWARD_MODEL else ""
    raise PipelineError(f"{folder}: {what}, not a causal language model{advice}")


def stage_final(folder: Path) -> Path:
    """A stage folder's `final/` (said on stderr); any other folder as is."""
    if (folder / "final").is_dir() and not (folder / "config.json").exists() and not is_run_folder(folder):
        print(f"{folder}: using {folder / 'final'}", file=sys.stderr)
        return folder / "final"
    return folder


def newest_policy(run: Path) -> Path:
    """`ppo/final`, else `sft/final`, else `pretrain/final` of a run folder; which one is said on stderr."""
    for stage in POLICY_STAGES:
        final = run / stage / "final"
        if final.is_dir():
            print(f"{run}: using {stage}/final, the run's newest policy", file=sys.stderr)
            return final
    looked = ", ".join(f"{stage}/final" for stage in POLICY_STAGES)
    raise PipelineError(f"{run}: a run folder without a trained policy (no {looked})")


def causal_lm_folder(path_or_id: str) -> Path:
    """The folder of the causal LM that `path_or_id` names: a model folder, LoRA adapter or checkpoint as is, a
    stage folder's final/, a run folder's newest policy, a Hub id's download (`pipeline.hub.local_folder`)."""
    from pipeline.hub import local_folder

    folder = local_folder(path_or_id)
    if not folder.is_dir():
        raise PipelineError(f"{folder}: a file, not a model folder")
    folder = newest_policy(folder) if is_run_folder(folder) else stage_final(folder)
    require_causal_lm(folder)
    return folder


def run_models(run: Path, checkpoints: bool = False) -> list[Path]:
    """The final/ of each finished model stage of a run folder (with `checkpoints`, then each `checkpoint-<step>`
    by step), in run order; a one-line error when there is none."""
    found = []
    for stage in MODEL_STAGES:
        folders = [run / stage / "final"] if (run / stage / "_SUCCESS").is_file() else []
        if checkpoints:
            folders += sorted(run.joinpath(stage).glob("checkpoint-*"), key=checkpoint_step)
        found += [f for f in folders if f.is_dir()]
    if not found:
        raise PipelineError(f"{run}: a run folder with no finished model stage ({', '.join(MODEL_STAGES)})")
    return found


def checkpoint_step(folder: Path) -> int:
    step = folder.name.rpartition("-")[2]
    return int(step) if step.isdigit() else -1


# ---------------------------------------------------------------- loading
def device():
    """The GPU when there is one, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(folder: Path, kind: str | None = None):
    """The model in `folder` (of `kind`, default `model_kind`), in eval mode on `device()`: vanilla transformers,
    a LoRA adapter merged into its base, a ppo checkpoint's policy. A one-line error when it cannot load."""
    from pipeline.models.loading import load_causal_lm

    kind = kind or identify(folder).kind
    verify_files(folder)
    try:
        if kind == CAUSAL_LM:
            model = load_policy_checkpoint(folder) if is_policy_checkpoint(folder) else load_causal_lm(folder)
        elif is_adapter(folder):
            from peft import AutoPeftModelForSequenceClassification

            model = AutoPeftModelForSequenceClassification.from_pretrained(str(folder), use_safetensors=True).merge_and_unload()
        else:
            from transformers import AutoModelForSequenceClassification

            model = AutoModelForSequenceClassification.from_pretrained(str(folder), use_safetensors=True)
    except (OSError, ValueError, KeyError) as e:
        raise PipelineError(f"{folder}: cannot load the model: {' '.join(str(e).split())[:300]}") from None
    return model.to(device()).eval()


def load_policy_checkpoint(folder: Path):
    """The policy of a ppo `checkpoint-<step>` (accelerate's state of policy + value, keys "policy.*"), in the
    architecture of its run's sft/final (the policy PPO started from)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    run, stage, _ = run_of(folder)
    if stage != "ppo":
        raise PipelineError(f"{folder}: not a ppo checkpoint-<step> of a run folder (<run>/ppo/checkpoint-<step>)")
    sft = run / "sft" / "final"
    if not (sft / "config.json").is_file():
        raise PipelineError(f"{folder}: a ppo checkpoint of a LoRA policy (or without {sft}) cannot be loaded "
                            f"alone: use {folder.parent / 'final'}")
    weights = load_file(str(folder / "model.safetensors"))
    policy = {k[len("policy."):]: v for k, v in weights.items() if k.startswith("policy.")}
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(sft)))
    missing, unexpected = model.load_state_dict(policy, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:  # a tied LM head is saved once
        raise PipelineError(f"{folder}: its policy weights do not fit {sft}'s architecture")
    model.tie_weights()
    return model


def tokenizer_folder(folder: Path) -> Path:
    """Where the model's tokenizer is: `folder` itself, else (for a `final/` or `checkpoint-<step>/`) its stage's
    `final/`, the run's `sft/final/`, the run's `tokenizer/final/`; a fallback is said on stderr."""
    candidates = [folder]
    if folder.name == "final" or folder.name.startswith("checkpoint-"):
        stage_dir = folder.parent
        run = stage_dir.parent
        candidates += [stage_dir / "final", run / "sft" / "final", run / "tokenizer" / "final"]
    candidates = list(dict.fromkeys(candidates))  # a final/ is its stage's final/
    for candidate in candidates:
        if any((candidate / name).is_file() for name in TOKENIZER_FILES):
            if candidate != folder:
                print(f"{folder}: no tokenizer saved with the model; using {candidate}'s", file=sys.stderr)
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise PipelineError(f"{folder}: no tokenizer (looked in {looked}); save one with the model or keep the run's "
                        "tokenizer/final")


def load_tokenizer(folder: Path):
    """The tokenizer of the model in `folder` (`tokenizer_folder`)."""
    from transformers import AutoTokenizer

    path = tokenizer_folder(folder)
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as e:
        raise PipelineError(f"{path}: cannot load the tokenizer: {' '.join(str(e).split())[:300]}") from None
