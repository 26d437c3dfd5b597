"""Every stage, in pipeline order: one literal dict, name -> module.

One name everywhere: `pipeline/stages/<name>.py` is the `<name>:` recipe section, the `pipeline stage <name>`
verb and the `<run>/<name>/` folder. A stage module defines NAME, NEEDS (stages whose outputs it may read;
optionally `needs(cfg)` narrows them to what a config actually reads),
HEADLINE (metric keys for the summary table), a `Config` dataclass and `run(cfg, run) -> dict[str, float]`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

STAGES: dict[str, str] = {
    "data": "pipeline.stages.data",
    "tokenizer": "pipeline.stages.tokenizer",
    "pretrain": "pipeline.stages.pretrain",
    "sft": "pipeline.stages.sft",
    "reward": "pipeline.stages.reward",
    "ppo": "pipeline.stages.ppo",
    "embeddings": "pipeline.stages.embeddings",
    "regression": "pipeline.stages.regression",
}


def module(name: str) -> ModuleType:
    if name not in STAGES:
        from pipeline.errors import PipelineError

        raise PipelineError(f"unknown stage {name!r} (valid: {', '.join(STAGES)})")
    return importlib.import_module(STAGES[name])


def config_class(name: str) -> type:
    return module(name).Config
