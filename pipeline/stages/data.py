"""Data: builds every dataset the run needs, in TRL's formats, each with a Hugging Face dataset card.

    pipeline stage data --config recipes/tiny.yaml
    accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml -m pipeline.stages.data --run runs/tiny

The embedded default is a seeded synthetic world (`pipeline.data.world`): corpus, dialogue, preferences,
prompts, qa_eval, analogies and regression, all with ground truth. Real data comes from `sources` entries
(local files or Hub ids, mapped by `pipeline.data.sources`). Output, read by later stages through
`datasets.load_from_disk`:

    <run>/data/<name>/                   DatasetDict (save_to_disk) + README.md (its dataset card)
    <run>/data/analogies/questions-words.txt
    <run>/data/manifest.json             format, rows per split, features, origin, cleaning report, and for text
                                         datasets `held_out`: validation sentences/documents also in train
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pyarrow.compute as pc
from accelerate import PartialState

from pipeline.artifacts import RunDir, atomic_write, check_plain_name, replace_dir, write_json
from pipeline.config import to_plain
from pipeline.data import cards
from pipeline.data.overlap import split_overlap
from pipeline.data.sources import SourceConfig, load_source
from pipeline.data.world import WorldConfig, build_world, questions_words

NAME, NEEDS = "data", ()
HEADLINE = ("datasets", "rows", "corpus_mb", "corpus_validation_sentences_in_train")
FORMATS = {"corpus": "text", "dialogue": "messages", "preferences": "preferences", "prompts": "prompts",
           "qa_eval": "qa", "analogies": "analogies", "regression": "regression"}


@dataclass
class Config:
    synthetic: bool = field(default=True, metadata={"help": "Build the synthetic world's datasets (the embedded default)."})
    world: WorldConfig = field(default_factory=WorldConfig, metadata={"help": "Size and splits of the synthetic world."})
    sources: list[SourceConfig] = field(default_factory=list, metadata={"help": "Real datasets from local files or Hub ids, each mapped to a TRL format."})

    def __post_init__(self):
        if not self.synthetic and not self.sources:
            raise ValueError("sources: empty, and synthetic is false: nothing to build")
        for position, source in enumerate(self.sources):
            check_plain_name(source.name, f"sources[{position}].name")
        names = [s.name for s in self.sources] + (list(FORMATS) if self.synthetic else [])
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"sources: dataset name {name!r} is built twice (the synthetic world uses {', '.join(FORMATS)})")


def run(cfg: Config, run: RunDir) -> dict:
    state = PartialState()
    metrics = {}
    if state.is_main_process:  # the datasets are small next to training: one process builds, the others wait
        metrics = build_all(cfg, run.stage_dir(NAME), run.seed)
    state.wait_for_everyone()
    return metrics


def build_all(cfg: Config, out: Path, seed: int) -> dict:
    command = f"pipeline stage data --config recipe.yaml run.seed={seed}  # recipe.yaml: the data section below"
    manifest = {}
    if cfg.synthetic:
        settings = to_plain(cfg.world)
        for name, ds in build_world(cfg.world, seed).items():
            overlap = held_out_overlap(ds, FORMATS[name])
            card = cards.render(name, ds, settings, command=command, seed=seed, overlap=overlap)
            manifest[name] = save(out, name, ds, card, FORMATS[name], origin="synthetic world", overlap=overlap)
        write_questions_words(out)
    for src in cfg.sources:
        ds, report = load_source(src, seed, where="data.sources")
        overlap = held_out_overlap(ds, src.format)
        card = cards.render("source", ds, to_plain(src), command=command, report=report, overlap=overlap,
                            **source_variables(src))
        manifest[src.name] = save(out, src.name, ds, card, src.format, origin=src.path, report=report, overlap=overlap)
    write_json(out / "manifest.json", manifest)
    return summarize(manifest, out)


def held_out_overlap(ds: datasets.DatasetDict, fmt: str) -> dict | None:
    """For a text dataset with a non-empty validation split: how much of it also occurs in train."""
    if fmt != "text" or not len(ds.get("validation", ())):
        return None
    return split_overlap(ds["train"]["text"], ds["validation"]["text"])


def save(out: Path, name: str, ds: datasets.DatasetDict, card: str, fmt: str, origin: str, report: dict | None = None,
         overlap: dict | None = None) -> dict:
    """Write the dataset and its card under a temporary name, then move the finished folder into place."""
    tmp = out / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a bar per split is noise next to the one-line stage summary
    try:
        ds.save_to_disk(str(tmp))
    finally:
        if bars:
            datasets.enable_progress_bars()
    atomic_write(tmp / "README.md", card)
    replace_dir(tmp, out / name)
    first = next(iter(ds.values()))
    entry = {"format": fmt, "origin": origin, "splits": {k: len(v) for k, v in ds.items()},
             "features": first.features.to_dict()}
    if report is not None:
        entry["report"] = report
    if overlap is not None:
        entry["held_out"] = overlap  # validation sentences and documents also in train (pipeline.data.overlap)
    return entry


def write_questions_words(out: Path) -> None:
    analogies = datasets.load_from_disk(str(out / "analogies"))
    atomic_write(out / "analogies" / "questions-words.txt", questions_words(analogies["test"]))


def source_variables(src: SourceConfig) -> dict:
    return {"name": src.name, "path": src.path, "mapper": src.mapper, "format": src.format,
            "license": src.license, "description": src.description,
            "mapper_help": MAPPER_HELP.get(src.mapper, src.mapper), "format_help": FORMAT_HELP[src.format]}


MAPPER_HELP = {
    "auto": "columns renamed as the recipe says", "columns": "columns renamed as the recipe says",
    "hh": "Anthropic HH-RLHF transcripts split at the last Assistant turn",
    "oasst": "OpenAssistant message trees walked into conversations and ranked sibling replies",
    "dolly": "Dolly instruction/context/response records", "alpaca": "Alpaca and Self-Instruct instruction records",
    "text": "plain text split into documents",
}
FORMAT_HELP = {
    "text": "language modeling: one column `text`",
    "messages": "conversational: `messages`, a list of role/content turns ending with the assistant",
    "preferences": "conversational preference: `prompt` messages, `chosen` and `rejected` assistant replies",
    "prompts": "conversational prompt-only: `prompt` messages ending with a user turn",
}


def summarize(manifest: dict, out: Path) -> dict:
    metrics = {"datasets": len(manifest), "rows": sum(sum(e["splits"].values()) for e in manifest.values())}
    for name, entry in manifest.items():
        for split, rows in entry["splits"].items():
            metrics[f"{name}/{split}_rows"] = rows
    if "corpus" in manifest:
        corpus = datasets.load_from_disk(str(out / "corpus"))
        nbytes = sum(pc.sum(pc.binary_length(split.data.column("text"))).as_py() or 0 for split in corpus.values())
        metrics["corpus_mb"] = round(nbytes / 1e6, 3)
        if "held_out" in manifest["corpus"]:
            metrics["corpus_validation_sentences_in_train"] = manifest["corpus"]["held_out"]["sentence_share"]
    return metrics


if __name__ == "__main__":
    from pipeline.runner import stage_main

    stage_main(NAME)
