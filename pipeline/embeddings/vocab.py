"""Words of a corpus, its vocabulary, the corpus as word ids, and word2vec's two word distributions.

    vocab = build_vocabulary(open("corpus.txt"), min_count=5)      # words by count (desc), ties alphabetical
    ids, starts = encode(open("corpus.txt"), vocab)                 # int32 ids of in-vocabulary words, int64 starts
    keep = keep_probabilities(vocab.counts, sample=1e-3)            # frequent-word subsampling
    noise = noise_distribution(vocab.counts, power=0.75)            # negative-sampling distribution

    words      a line lowercased, then its runs of the letters a-z ("Don't" -> "don", "t"): the issue's
               "lowercasing to letters"; a line is a sentence (word windows never cross lines)
    vocabulary words seen at least `min_count` times, optionally only the `max_size` most frequent, sorted by
               count descending then alphabetically; a word's id is its rank
    encode     sentence i is ids[starts[i]:starts[i + 1]] (the last one runs to the end); out-of-vocabulary words
               are dropped before windows are taken (as word2vec and gensim do), lines left empty are no sentence,
               and a sentence longer than `max_sentence` (gensim's 10,000) is cut into several
    keep       word2vec's subsampling: a word of count c among N (in-vocabulary) words is kept with probability
               min(1, (sqrt(c / (t N)) + 1) * t N / c), t = `sample`; sample=0 keeps everything
    noise      P(w) = c_w^power / sum_v c_v^power (power 0.75: word2vec's unigram^0.75 table)

`EmbeddingsError` (a `ValueError`) is what the embeddings code raises for input it cannot train on: an empty
corpus, a vocabulary emptied by min_count, a window below 1, ...
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

MAX_SENTENCE = 10_000         # gensim's (and word2vec.c's MAX_SENTENCE_LENGTH) cap on words per sentence
_CHUNK = 1 << 20              # ids converted to a numpy chunk every ~1M words while encoding
_LETTERS = re.compile(r"[a-z]+")


class EmbeddingsError(ValueError):
    """Input the embeddings code cannot train on (empty corpus or vocabulary, bad settings)."""


def words_of(line: str) -> list[str]:
    """The words of a line: lowercased, then the runs of letters a-z."""
    return _LETTERS.findall(line.lower())


@dataclass
class Vocabulary:
    """Words by count descending (ties alphabetical), their int64 counts, and word -> id (its rank)."""

    words: list[str]
    counts: np.ndarray
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        self.words = list(self.words)
        self.counts = np.asarray(self.counts, dtype=np.int64)
        if self.counts.shape != (len(self.words),):
            raise EmbeddingsError(f"{len(self.words)} words need {len(self.words)} counts, "
                                  f"got shape {self.counts.shape}")
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise EmbeddingsError("duplicate words in the vocabulary")

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    @property
    def total(self) -> int:
        """Number of in-vocabulary words in the corpus (the sum of the counts)."""
        return int(self.counts.sum())


def build_vocabulary(lines: Iterable[str], min_count: int = 5, max_size: int | None = None) -> Vocabulary:
    """Count the words of `lines` (any iterable of str, e.g. an open file: read once, streaming) and keep those
    seen at least `min_count` times, at most the `max_size` most frequent."""
    if min_count < 1:
        raise EmbeddingsError(f"min_count: expected >= 1, got {min_count}")
    if max_size is not None and max_size < 1:
        raise EmbeddingsError(f"max_size: expected >= 1 or None, got {max_size}")
    counter: Counter[str] = Counter()
    for line in lines:
        counter.update(words_of(line))
    if not counter:
        raise EmbeddingsError("empty corpus: no words (runs of letters a-z) in the lines")
    kept = sorted(((w, c) for w, c in counter.items() if c >= min_count), key=lambda wc: (-wc[1], wc[0]))
    if not kept:
        raise EmbeddingsError(f"empty vocabulary: none of the {len(counter)} distinct words occurs "
                              f"min_count={min_count} times (the most frequent occurs {max(counter.values())})")
    if max_size is not None:
        kept = kept[:max_size]
    return Vocabulary([w for w, _ in kept], np.array([c for _, c in kept], dtype=np.int64))


def encode(lines: Iterable[str], vocab: Vocabulary, max_sentence: int = MAX_SENTENCE) -> tuple[np.ndarray,
                                                                                               np.ndarray]:
    """The in-vocabulary words of `lines` as int32 ids, and the int64 start of each sentence in them (a line
    with at least one in-vocabulary word; longer than `max_sentence` words: several). Streams over `lines`."""
    if max_sentence < 1:
        raise EmbeddingsError(f"max_sentence: expected >= 1, got {max_sentence}")
    index = vocab.index
    id_chunks, start_chunks = [], []
    ids: list[int] = []
    starts: list[int] = []
    done = 0                                              # ids already moved into id_chunks
    for line in lines:
        line_ids = [i for i in map(index.get, words_of(line)) if i is not None]
        for cut in range(0, len(line_ids), max_sentence):
            starts.append(done + len(ids) + cut)
        ids.extend(line_ids)
        if len(ids) >= _CHUNK:
            id_chunks.append(np.array(ids, dtype=np.int32))
            start_chunks.append(np.array(starts, dtype=np.int64))
            done += len(ids)
            ids, starts = [], []
    id_chunks.append(np.array(ids, dtype=np.int32))
    start_chunks.append(np.array(starts, dtype=np.int64))
    return np.concatenate(id_chunks), np.concatenate(start_chunks)


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    """word2vec's subsampling: the probability of keeping each occurrence of a word of count c, among
    N = sum(counts) words: min(1, (sqrt(c / (t N)) + 1) * t N / c) with t = `sample` (0: keep all). float64."""
    counts = np.asarray(counts, dtype=np.float64)
    if not 0 <= sample < 1:
        raise EmbeddingsError(f"sample: expected a threshold in [0, 1) (0: no subsampling), got {sample}")
    if sample == 0 or not len(counts):
        return np.ones_like(counts)
    threshold = sample * counts.sum()
    with np.errstate(divide="ignore"):
        keep = (np.sqrt(counts / threshold) + 1) * threshold / counts
    return np.minimum(keep, 1.0)


def noise_distribution(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
    """Negative-sampling probabilities c^power / sum(c^power) (word2vec's unigram^0.75 table). float64."""
    weights = np.asarray(counts, dtype=np.float64) ** power
    total = weights.sum()
    if not len(weights) or not total > 0:
        raise EmbeddingsError("noise distribution: no positive counts")
    return weights / total


def sentence_lengths(starts: np.ndarray, n_ids: int) -> np.ndarray:
    """Length of each sentence given the `starts` and the number of ids `encode` returned."""
    return np.diff(np.append(np.asarray(starts, dtype=np.int64), n_ids))
