"""Model cards of pushed models: YAML metadata (license, base_model, datasets, tags, library_name, pipeline_tag)
and a `model-index` of the stage's evaluated numbers (`evaluated_results`), with a body that says what the model
is, how to load it with vanilla transformers, what each number means, and the stage's config section.

Used by `pipeline.hub` (which knows repos and uploads); this module only writes card text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from pipeline.artifacts import RunDir

if TYPE_CHECKING:
    from pipeline.hub import StageContext

LICENSE = "apache-2.0"  # as the data stage's cards (pipeline/data/cards/*.md); "other" once a dataset says otherwise


@dataclass(frozen=True)
class Metric:
    """A number of a stage's metrics.json that goes into the model card's model-index."""

    key: str               # in metrics.json
    metric_type: str       # model-index metric type
    name: str
    dataset_field: str     # the stage's config field naming the dataset it was measured on
    split_field: str       # the stage's config field naming the split ("" : `split`)
    split: str
    definition: str


METRICS: dict[str, tuple[str, tuple[Metric, ...]]] = {  # stage -> (model-index task type, metrics)
    "pretrain": ("text-generation", (
        Metric("val_bpb", "bits_per_byte", "validation bits per byte", "dataset", "", "validation",
               "bits of every scored token over the UTF-8 bytes of the text they decode to (lower is better; "
               "tokenizer-independent)"),)),
    "sft": ("text-generation", (
        Metric("exact_match", "exact_match", "strict exact match", "eval_dataset", "", "test",
               "share of held-out questions whose greedy reply, once the question's subject is removed, names "
               "exactly one value of the answer's type and it is the answer (pipeline.metrics.qa)"),
        Metric("contains_answer", "contains_answer", "contains the answer", "eval_dataset", "", "test",
               "share of held-out questions whose greedy reply contains the answer (loose)"))),
    "reward": ("text-classification", (
        Metric("accuracy", "accuracy", "pairwise accuracy", "dataset", "eval_split", "test",
               "share of held-out preference pairs where the chosen reply scores above the rejected one"),)),
    "ppo": ("text-generation", (
        Metric("exact_match_after", "exact_match", "strict exact match", "eval_dataset", "", "test",
               "strict exact match (as for sft: exactly one value named, and it is the answer) after PPO"),
        Metric("score_mean_after", "reward_score", "mean reward-model score", "dataset", "eval_split", "test",
               "mean reward-model score of greedy replies to held-out prompts, after PPO"),
        Metric("kl_after", "kl_divergence", "KL to the reference policy", "dataset", "eval_split", "test",
               "exact KL divergence to the SFT policy along the greedy replies, in nats per reply"))),
}


def evaluated_results(run: Path, stage: str, dataset_repo=lambda name: name) -> list:
    """The model-index entries of a stage: its headline numbers from `<run>/<stage>/metrics.json`, each with the
    dataset (`dataset_repo(name)`: its Hub id) and split it was measured on. The one place to add other sources
    of evaluated results (such as `pipeline eval`'s `<run>/eval/<stage>.json`)."""
    from huggingface_hub import EvalResult

    if stage not in METRICS:
        return []
    metrics = RunDir(run).metrics(stage)
    section = (yaml.safe_load((Path(run) / "config.yaml").read_text()) or {}).get(stage) or {}
    task_type, specs = METRICS[stage]
    results = []
    for spec in specs:
        if not isinstance(metrics.get(spec.key), (int, float)) or not section.get(spec.dataset_field):
            continue
        dataset = section[spec.dataset_field]
        results.append(EvalResult(
            task_type=task_type, dataset_type=dataset_repo(dataset), dataset_name=dataset,
            dataset_split=section.get(spec.split_field) or spec.split,
            metric_type=spec.metric_type, metric_name=spec.name, metric_value=float(metrics[spec.key])))
    return results


def model_card(folder: Path, repo_id: str, context: StageContext | None, base_repo: str | None) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    adapter = (folder / "adapter_config.json").is_file()
    stage = context.stage if context else None
    reward = stage == "reward" or _is_classifier(folder)
    results = evaluated_results(context.run.root, stage, context.run.dataset_repo) if context else []
    datasets = [context.run.dataset_repo(name) for name in context.datasets()] if context and context.run.prefix else []
    data = ModelCardData(
        license=model_license(context.run.root) if context else LICENSE, base_model=base_repo,
        datasets=datasets or None, library_name="peft" if adapter else "transformers",
        pipeline_tag="text-classification" if reward else "text-generation",
        tags=["pipeline", "chatgpt-recipe", *([stage] if stage else []), *(["lora"] if adapter else [])],
        model_name=repo_id.split("/")[-1], eval_results=results or None)
    body = card_body(repo_id, folder, context, results, adapter, reward)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}").content


def card_body(repo_id: str, folder: Path, context: StageContext | None, results: list, adapter: bool,
              reward: bool) -> str:
    stage = context.stage if context else None
    auto = "AutoModelForSequenceClassification" if reward else "AutoModelForCausalLM"
    if adapter:
        auto = "AutoPeftModelForSequenceClassification" if reward else "AutoPeftModelForCausalLM"
    module = "peft" if adapter else "transformers"
    lines = [f"# {repo_id.split('/')[-1]}", "", STAGE_DESCRIPTIONS.get(stage, "A model pushed with `pipeline push`."),
             "", "## How to use", "", "```python",
             f"from {module} import {auto}" if adapter else f"from transformers import {auto}, AutoTokenizer",
             *(["from transformers import AutoTokenizer"] if adapter else []), "", f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
             f'model = {auto}.from_pretrained("{repo_id}")', "```", "",
             "Stock architectures and safetensors weights: no `trust_remote_code`."]
    if stage == "ppo":
        lines += ["The value model trained alongside is in `value/` "
                  f'(`from_pretrained("{repo_id}", subfolder="value")` when it is a full model).']
    if results:
        lines += ["", "## Evaluation", "", "| metric | value | dataset | split | definition |",
                  "| --- | ---: | --- | --- | --- |"]
        definitions = {spec.name: spec.definition for spec in METRICS[stage][1]}
        lines += [f"| {r.metric_name} | {r.metric_value:.4g} | {r.dataset_type} | {r.dataset_split} | "
                  f"{definitions[r.metric_name]} |" for r in results]
    if context:
        from pipeline.hub import redacted  # hub knows the token in use

        section = redacted(yaml.safe_dump({stage: context.section}, sort_keys=False)).strip()
        lines += ["", "## Training", "", f"Stage `{stage}` of the run `{context.run.root.name}`, trained with the "
                  "`pipeline` package. The run's whole resolved recipe is `config.yaml` in this repo "
                  f"(`pipeline run config.yaml` rebuilds it); the `{stage}` section:", "",
                  "<details><summary>config</summary>", "", "```yaml", section, "```", "", "</details>"]
    return "\n".join(lines) + "\n"


STAGE_DESCRIPTIONS = {
    "pretrain": "A causal language model pretrained from scratch on the run's text corpus (next-token prediction).",
    "sft": "The pretrained model fine-tuned on dialogues (supervised, loss on the assistant's tokens only): a chat "
           "model. Its chat template is in the tokenizer.",
    "reward": "A reward model: a sequence classifier with one label whose logit scores a conversation; trained on "
              "preference pairs (chosen over rejected), starting from an earlier stage's model (`base_model`).",
    "ppo": "The chat model after RLHF: PPO against the reward model, with a KL penalty to the fine-tuned policy.",
}


def _is_classifier(folder: Path) -> bool:
    config = folder / "config.json"
    architectures = json.loads(config.read_text()).get("architectures") or [] if config.is_file() else []
    return any(name.endswith("ForSequenceClassification") for name in architectures)


def model_license(root: Path) -> str:
    """apache-2.0 like the data cards, unless a dataset of the run declares another licence: then "other"."""
    from huggingface_hub import DatasetCard

    licenses = {str(DatasetCard.load(folder / "README.md").data.license or LICENSE)
                for folder in sorted(p.parent for p in (root / "data").glob("*/dataset_dict.json"))
                if (folder / "README.md").is_file()}
    return LICENSE if licenses <= {LICENSE} else "other"
