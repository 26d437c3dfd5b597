"""Recipes: a YAML file plus `section.key=value` overrides, resolved once into typed dataclass configs.

    pipeline validate recipes/tiny.yaml
    pipeline run recipes/tiny.yaml pretrain.max_steps=50 run.output_dir=/tmp/r

A recipe has a `run:` section (RunConfig) and one section per stage, named as the stage. Every section is
a dataclass (trainer stages extend the HF/TRL config, field names unchanged). Loading is strict: unknown
sections and keys are errors that list the valid ones, values are type-checked against the dataclass
annotations, and every message starts with where the problem is:

    recipes/x.yaml: sft.learning_rate: expected float, got 'fast'
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline import registry
from pipeline.artifacts import check_plain_name
from pipeline.errors import PipelineError

REPORT_TO = ("none", "tensorboard", "wandb", "all")


class ConfigError(PipelineError):
    """A recipe that does not type-check."""


@dataclass
class RunConfig:
    name: str = field(default="run", metadata={"help": "Run name; the run folder is runs/<name> unless output_dir is set."})
    output_dir: str = field(default="", metadata={"help": "Run folder. Empty: runs/<name> under the current directory."})
    seed: int = field(default=0, metadata={"help": "Seeds python, numpy and torch before every stage, and data generation."})
    stages: list[str] = field(default_factory=list, metadata={"help": "Stages to run, in pipeline order. Empty: every stage with a section in the recipe."})
    report_to: list[str] = field(default_factory=lambda: ["none"], metadata={"help": "Experiment trackers for trainer stages: none, tensorboard, wandb or all."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push each stage to the Hub as it finishes (pipeline.hub: models, datasets, cards); needs hub_repo_prefix and a login."})
    hub_repo_prefix: str = field(default="", metadata={"help": "namespace/name: stage X goes to the model repo <prefix>-X, dataset D to the dataset repo <prefix>-D."})

    def __post_init__(self):
        check_plain_name(self.name, "name")
        if self.push_to_hub and not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", self.hub_repo_prefix):
            raise ValueError(f"hub_repo_prefix: push_to_hub needs a Hub repo id namespace/name, got {self.hub_repo_prefix!r}")
        for name in self.stages:
            if name not in registry.STAGES:
                raise ValueError(f"stages: unknown stage {name!r} (valid: {', '.join(registry.STAGES)})")
        for tracker in self.report_to:
            if tracker not in REPORT_TO:
                raise ValueError(f"report_to: unknown tracker {tracker!r} (valid: {', '.join(REPORT_TO)})")

    @property
    def folder(self) -> Path:
        return Path(self.output_dir or Path("runs") / self.name)


@dataclass
class Recipe:
    """A resolved recipe: the run settings and one config object per stage it runs."""

    source: str                     # where it came from, for messages
    run: RunConfig
    sections: dict[str, Any]        # stage name -> config dataclass, every registered stage
    given: tuple[str, ...] = ()     # sections the recipe wrote out

    @property
    def stages(self) -> list[str]:
        chosen = self.run.stages or [s for s in registry.STAGES if s in self.given]
        return [s for s in registry.STAGES if s in chosen]

    def to_dict(self) -> dict:
        """Plain, fully resolved dict (defaults filled in); `load_recipe` reads it back unchanged."""
        out = {"run": to_plain(self.run)}
        for name in self.stages + [s for s in self.given if s not in self.stages]:
            out[name] = to_plain(self.sections[name])
        return out

    def fingerprint(self, stage: str) -> str:
        """Hash of what decides a stage's output: its section and the seed, less the `TrainingArguments`
        fields that cannot change the result (`result_neutral`)."""
        section = to_plain(self.sections[stage])
        for name in result_neutral(self.sections[stage]):
            section.pop(name, None)
        blob = json.dumps(_canonical({"seed": self.run.seed, stage: section}), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _canonical(value):
    """`value` with every integral float written as an int: a recipe's `save_steps: 500` and the `500.0` that
    config.yaml gives back after a float field is coerced are one setting, so they must give one fingerprint."""
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# `TrainingArguments` fields left out of a trainer stage's fingerprint: changing one neither changes the trained
# model nor the stage's headline metrics, so it must not rerun the stage and everything after it.
RESULT_NEUTRAL_FIELDS = (
    # Logging: when the train loss / grad norm are logged, and at what verbosity. The model and the eval_loss are
    # the same; only the logged history in metrics.json (loss_history, and train_loss, the last logging window)
    # is sampled differently. Not logging_nan_inf_filter: it also drops non-finite losses from eval_loss.
    "logging_strategy", "logging_steps", "logging_first_step", "log_on_each_node", "log_level", "log_level_replica",
    # Progress and trackers: the progress bar and where logs are sent (report_to is set by the run anyway).
    "disable_tqdm", "report_to", "run_name", "project", "trackio_space_id", "trackio_bucket_id",
    "trackio_static_space_id",
    # Checkpoints: how often and how many. Resume restores model, optimizer, scheduler, RNG and data position
    # from any checkpoint, so an interrupted run ends the same. Not save_only_model (its checkpoints lack the
    # optimizer state, so a resumed run differs) nor save_on_each_node / enable_jit_checkpoint (whether and
    # where a checkpoint to resume from exists). With load_best_model_at_end the saved steps are the candidates
    # for the final model: see `BEST_MODEL_FIELDS`.
    "save_strategy", "save_steps", "save_total_limit",
    # Hub: whether and where the Trainer uploads checkpoints; what is trained is the same.
    "push_to_hub", "hub_token", "hub_private_repo", "hub_model_id", "hub_strategy", "hub_always_push", "hub_revision",
    # Loading speed: the sampler runs in the main process and DataLoader yields batches in sampler order whatever
    # the worker count; our collators draw no random numbers. Not dataloader_persistent_workers (reusing the
    # iterator skips one draw from the torch RNG per epoch), nor dataloader_in_order (False reorders batches).
    "dataloader_num_workers", "dataloader_pin_memory", "dataloader_prefetch_factor",
    # Set by the run at run time (pipeline.trainers.runtime_args): the section's value is never used.
    "output_dir",
)
# With load_best_model_at_end the final model is the best *saved* checkpoint: these are then hashed again.
BEST_MODEL_FIELDS = ("save_strategy", "save_steps")


def result_neutral(section: Any) -> tuple[str, ...]:
    """The fields of a stage section that its fingerprint leaves out: those its class declares in a
    `RESULT_NEUTRAL` class attribute, else RESULT_NEUTRAL_FIELDS for a `TrainingArguments` (HF or TRL config),
    nothing for any other section."""
    declared = getattr(type(section), "RESULT_NEUTRAL", None)
    if declared is not None:
        return tuple(declared)
    training_args = sys.modules.get("transformers.training_args")  # a section can only be one if it is loaded
    if training_args is None or not isinstance(section, training_args.TrainingArguments):
        return ()
    if getattr(section, "load_best_model_at_end", False):
        return tuple(name for name in RESULT_NEUTRAL_FIELDS if name not in BEST_MODEL_FIELDS)
    return RESULT_NEUTRAL_FIELDS


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read a recipe file, apply `section.key=value` overrides, and build every config strictly."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such recipe file")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except (UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"{path}: cannot read the recipe as UTF-8 text ({type(e).__name__})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    for item in overrides:
        apply_override(data, item)
    return resolve(data, source=str(path))


def resolve(data: dict, source: str) -> Recipe:
    valid = ["run", *registry.STAGES]
    for section, body in data.items():
        if section not in valid:
            raise ConfigError(f"{source}: {section}: unknown section (valid: {', '.join(valid)})")
        if body is not None and not isinstance(body, dict):
            raise ConfigError(f"{source}: {section}: expected a mapping, got {_show(body)}")
    run = build(RunConfig, data.get("run") or {}, f"{source}: run")
    sections = {name: build(registry.config_class(name), data.get(name) or {}, f"{source}: {name}") for name in registry.STAGES}
    given = tuple(s for s in registry.STAGES if s in data)
    return Recipe(source=source, run=run, sections=sections, given=given)


class _Override(str):
    """An override's raw text, carrying its YAML-parsed value: a `str` field keeps the text as typed."""

    parsed: Any


def apply_override(data: dict, item: str) -> None:
    """`section.key=value` (nested keys with dots); the value is parsed as YAML."""
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ConfigError(f"override {item!r}: expected section.key=value")
    value = _Override(text)
    try:
        value.parsed = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value.parsed = text
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(parts[:i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def build(cls: type, data: Any, where: str):
    """Instantiate dataclass `cls` from plain data, checking keys and types; errors name `where.key`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_show(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (valid: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    kwargs = {key: coerce(hints[key], value, f"{where}.{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # a __post_init__ check; "field: problem" becomes where.field: problem
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        sep = "." if re.match(r"[A-Za-z_][\w.\[\]]*: ", message) else ": "
        raise ConfigError(f"{where}{sep}{message}") from None


def coerce(tp: Any, value: Any, where: str) -> Any:
    """Check `value` against annotation `tp`, converting where YAML is loose (ints for floats, '1e-4')."""
    if isinstance(value, _Override):
        if tp is str or (_is_union(tp) and str in typing.get_args(tp)):
            return str(value)
        value = value.parsed
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if _is_union(tp):
        if value is None and type(None) in args:
            return None
        for arm in (a for a in args if a is not type(None)):
            try:
                return coerce(arm, value, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {_name(tp)}, got {_show(value)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: expected one of {', '.join(map(repr, args))}, got {_show(value)}")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {_show(value)}")
        item = args[0] if args else Any
        return [coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_show(value)}")
        kt, vt = args if args else (Any, Any)
        return {coerce(kt, k, where): coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"{where}: expected one of {', '.join(repr(m.value) for m in tp)}, got {_show(value)}") from None
    return _scalar(tp, value, where)


def _scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # an annotation we do not model (callables, classes): pass through
        return value
    raise ConfigError(f"{where}: expected {_name(tp)}, got {_show(value)}")


def to_plain(obj: Any) -> Any:
    """Dataclasses, enums and containers as plain YAML/JSON values (init fields only)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def dump_yaml(recipe: Recipe) -> str:
    header = f"# Resolved from {recipe.source}. Rerun: pipeline run <this file>\n"
    return header + yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _name(tp: Any) -> str:
    if _is_union(tp):
        return " or ".join(_name(a) for a in typing.get_args(tp) if a is not type(None))
    return getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
    return "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list) else repr(value)
