"""Correlation of a model's word-pair similarities with human judgements (wordsim353, SimLex-999), the numbers of
gensim's `KeyedVectors.evaluate_word_pairs` (which takes them from scipy.stats.spearmanr and pearsonr).

Inputs, one per word pair scored: human (the human score) and model (the model's similarity, e.g. the cosine).
With n pairs:

    spearman    the Pearson correlation of the ranks of human and of model, where tied values share the mean
                of the ranks they span (1-based, "average" ranks)
    pearson     the Pearson correlation of the values themselves: sum(dx dy) / sqrt(sum(dx^2) sum(dy^2)),
                dx = x - mean(x), in float64
                (both None when n < 2 or either side is constant)
    pairs       n

Compute kwarg skipped (pairs left out, e.g. with a word out of the vocabulary; 0): reported as skipped and
oov_ratio = 100 x skipped / (n + skipped), gensim's percentage of pairs with unknown words.
See `pipeline.embeddings.evaluation.similarity_spearman`, which computes through this module.
"""

import datasets
import evaluate
import numpy as np


def average_ranks(values) -> np.ndarray:
    """1-based ranks of `values`, ties sharing the mean of the ranks they span (scipy's rankdata "average")."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]          # where each run of equal values starts
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(x)]                          # one past each run's end
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = ((starts + 1 + ends) / 2)[np.cumsum(first) - 1]
    return ranks


def pearson(x, y):
    """The Pearson correlation of two float arrays, None when undefined (fewer than 2 values, or a constant)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    nx, ny = np.linalg.norm(dx), np.linalg.norm(dy)
    if nx == 0 or ny == 0:
        return None
    return float(np.clip(np.dot(dx / nx, dy / ny), -1.0, 1.0))


class WordSimilarity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description=__doc__,
            features=datasets.Features({"human": datasets.Value("float64"), "model": datasets.Value("float64")}))

    def _compute(self, human, model, skipped: int = 0):
        n = len(human)
        spearman = pearson(average_ranks(human), average_ranks(model)) if n else None
        return {"spearman": spearman, "pearson": pearson(human, model), "pairs": n, "skipped": skipped,
                "oov_ratio": 100 * skipped / (n + skipped) if n + skipped else 0.0}
