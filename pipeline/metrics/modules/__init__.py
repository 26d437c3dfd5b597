"""The project's metrics as `evaluate` modules, loaded from this folder by path (never from the Hub).

    import evaluate
    from pipeline.metrics.modules import path
    exact = evaluate.load(path("qa_exact_match"))          # or evaluate.load("<this folder>/qa_exact_match")
    exact.compute(predictions=["Mara lives in Lisbon."], references=["Lisbon"], subjects=["Mara"],
                  answer_types=["choice"], candidates=[["Lisbon", "Porto"]], categories=["town"])

Each module is a thin `evaluate.Metric` over the library function that defines the number (its docstring says
which), and the stages compute their metrics through the same modules (`load`), so a stage's number and
`pipeline eval`'s agree to the last digit on the same model and data:

    qa_exact_match    strict exact match, contains-answer, per category, per-row hits   (pipeline.metrics.qa)
    bits_per_byte     bits per UTF-8 byte from per-token losses and byte lengths         (pipeline.metrics.lm)
    reward_accuracy   pairwise accuracy, per rejection kind, margin, calibration (ECE)   (pipeline.metrics.reward)
    win_rate          wins / ties / losses of one policy over another by RM score, Wilson 95% intervals
    word_analogy      analogy accuracy, per section, semantic/syntactic, answered/skipped (pipeline.embeddings)
    word_similarity   Spearman (average ranks) and Pearson of model vs human word-pair scores (pipeline.embeddings)
"""

from __future__ import annotations

import functools
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAMES = ("qa_exact_match", "bits_per_byte", "reward_accuracy", "win_rate", "word_analogy", "word_similarity")


def path(name: str) -> str:
    """The folder `evaluate.load` takes for module `name`."""
    if name not in NAMES:
        raise ValueError(f"no metric module {name!r} (have: {', '.join(NAMES)})")
    return str(HERE / name)


@functools.lru_cache(maxsize=None)
def load(name: str):
    """`evaluate.load` of module `name`, kept in memory (no cache file, so processes never share one)."""
    import evaluate

    return evaluate.load(path(name), keep_in_memory=True)
