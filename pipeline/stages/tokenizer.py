"""Tokenizer: byte-level BPE trained on the run's corpus, with the chat template later stages use.

    pipeline stage tokenizer --run runs/tiny tokenizer.vocab_size=4096

Writes `<run>/tokenizer/final/` (a `PreTrainedTokenizerFast`: `AutoTokenizer.from_pretrained` loads it) and
reports compression (UTF-8 bytes per token) on the corpus's held-out split.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from accelerate import PartialState

from pipeline.artifacts import RunDir, replace_dir
from pipeline.errors import PipelineError
from pipeline.models.tokenizer import bytes_per_token, train_bpe

NAME, NEEDS = "tokenizer", ("data",)
HEADLINE = ("vocab_size", "bytes_per_token")


@dataclass
class Config:
    dataset: str = field(default="corpus", metadata={"help": "Text dataset (column `text`) built by the data stage."})
    vocab_size: int = field(default=2048, metadata={"help": "BPE vocabulary size, special tokens and the 256 byte tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "A merge must occur at least this often."})
    max_train_docs: int = field(default=0, metadata={"help": "Train on the first N documents only (0: all); BPE saturates long before 100 MB."})
    eval_docs: int = field(default=2000, metadata={"help": "Held-out documents used to measure bytes per token."})

    def __post_init__(self):
        if self.vocab_size < 300:
            raise ValueError(f"vocab_size: must be at least 300 (256 bytes + special tokens + merges), got {self.vocab_size}")


def run(cfg: Config, run: RunDir) -> dict:
    state = PartialState()
    metrics = {}
    if state.is_main_process:  # a few seconds of single-threaded work: no point in splitting it
        metrics = train(cfg, run)
    state.wait_for_everyone()
    return metrics


def train(cfg: Config, run: RunDir) -> dict:
    ds = run.dataset(cfg.dataset, where="tokenizer.dataset")
    if "text" not in ds["train"].column_names:
        raise PipelineError(f"tokenizer.dataset: {cfg.dataset!r} has no `text` column (columns: {', '.join(ds['train'].column_names)})")
    texts = (row["text"] for row in ds["train"])
    if cfg.max_train_docs:
        texts = itertools.islice(texts, cfg.max_train_docs)
    tokenizer = train_bpe(texts, cfg.vocab_size, cfg.min_frequency)
    held_out = ds["validation"] if "validation" in ds else ds["train"]
    metrics = {
        "vocab_size": len(tokenizer),
        "bytes_per_token": round(bytes_per_token(tokenizer, held_out[: cfg.eval_docs]["text"]), 4),
        "eval_split": "validation" if "validation" in ds else "train",
    }
    tmp = run.stage_dir(NAME) / ".final.tmp"
    tokenizer.save_pretrained(tmp)
    replace_dir(tmp, run.stage_dir(NAME) / "final")
    return metrics


if __name__ == "__main__":
    from pipeline.runner import stage_main

    stage_main(NAME)
