"""Word-word co-occurrence counts for GloVe, vectorised with numpy and bounded in memory.

    ids, starts = encode(open("corpus.txt"), vocab, max_sentence=10**9)   # a line is a sentence
    cooc = count_cooccurrences(ids, starts, len(vocab), window=10)        # COO, sorted by (row, col)
    cooc.rows, cooc.cols, cooc.values                                      # int32, int32, float64

What is counted (the Stanford C tool's `cooccur`, same conventions):

    pairs      ids[i] and ids[i + d] for d = 1..window when both are in the same sentence (the windows never
               cross a sentence start; out-of-vocabulary words were dropped by `encode` before, so distances
               are counted among in-vocabulary words, as the C tool does)
    weight     1/d (`distance_weighting=True`), else 1
    symmetric  X[a, b] and X[b, a] both get the weight (a word at distance d on either side is a context); a
               word next to itself (a == b) thus adds 2/d to X[a, a]. `symmetric=False`: left context only, the
               C tool's `-symmetric 0`: X[earlier word, later word]
    output     the nonzero entries, duplicates summed, sorted by (row, col); values in float64 (the C tool's
               `real` is double)

How (all numpy, no Python loop over tokens): the tokens are taken `chunk_pairs // window` at a time; for each
offset d the pairs of the chunk are encoded as one int64 key per pair, (min(a, b) * V + max(a, b)) * window +
(d - 1) when symmetric (a canonical key: each unordered pair is counted once and mirrored at the end), and one
np.sort plus a run-length pass turns them into unique (pair, weighted count) entries: a sorted "run". Runs are
merged (a stable argsort of concatenated sorted runs: timsort merges them) whenever more than `MERGE_RUNS`
are held or they hold more than `max_entries` entries; a merged run still larger than `max_entries // 2` is
spilled to `scratch_dir` as .npy files. At the end the spilled runs are merged block by block (a block is a
range of keys small enough to hold), so memory stays about `chunk_pairs + max_entries` entries plus the output.

`EmbeddingsError` (a `ValueError`) for a bad window, ids outside the vocabulary, or unsorted sentence starts.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.embeddings.vocab import EmbeddingsError

CHUNK_PAIRS = 1 << 24       # pair keys sorted at once: 128 MiB of int64 keys (+ the sort's own copy)
MAX_ENTRIES = 1 << 27       # unique entries held in memory before spilling sorted runs (~2 GiB keys + values)
MERGE_RUNS = 8              # merge the in-memory runs once this many are held (fewer duplicates, faster merges)


@dataclass
class Cooccurrences:
    """A sparse co-occurrence matrix in COO form: rows, cols (int32) and values, sorted by (row, col), unique."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    vocab_size: int

    def __len__(self) -> int:
        return len(self.values)

    def to_dense(self) -> np.ndarray:
        """The (vocab_size, vocab_size) matrix (for small vocabularies: tests, inspection)."""
        dense = np.zeros((self.vocab_size, self.vocab_size), dtype=self.values.dtype)
        dense[self.rows, self.cols] = self.values
        return dense


def _reduce_sorted(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum the values of equal adjacent keys of a sorted key array."""
    if len(keys) < 2:
        return keys, values
    first = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    if len(first) == len(keys):
        return keys, values
    return keys[first], np.add.reduceat(values, first)


def _merge(runs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One sorted run with unique keys from several sorted runs (timsort merges the concatenated runs)."""
    runs = [r for r in runs if len(r[0])]
    if not runs:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    if len(runs) == 1:
        return runs[0]
    keys = np.concatenate([k for k, _ in runs])
    values = np.concatenate([v for _, v in runs])
    order = np.argsort(keys, kind="stable")
    return _reduce_sorted(keys[order], values[order])


class _Runs:
    """Sorted runs of (key, value): merged in memory, spilled to disk past `max_entries`, merged at the end."""

    def __init__(self, max_entries: int, scratch_dir: str | Path | None):
        self.max_entries, self.scratch_parent = max_entries, scratch_dir
        self.held: list[tuple[np.ndarray, np.ndarray]] = []
        self.spilled: list[tuple[Path, Path]] = []
        self.scratch: Path | None = None

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        self.held.append((keys, values))
        if len(self.held) >= MERGE_RUNS or sum(len(k) for k, _ in self.held) > self.max_entries:
            self.held = [_merge(self.held)]
            if len(self.held[0][0]) > self.max_entries // 2:
                self._spill(*self.held.pop())

    def _spill(self, keys: np.ndarray, values: np.ndarray) -> None:
        if self.scratch is None:
            if self.scratch_parent is not None:
                Path(self.scratch_parent).mkdir(parents=True, exist_ok=True)
            self.scratch = Path(tempfile.mkdtemp(prefix="cooccur-", dir=self.scratch_parent))
        n = len(self.spilled)
        paths = self.scratch / f"run{n:05d}.keys.npy", self.scratch / f"run{n:05d}.values.npy"
        np.save(paths[0], keys)
        np.save(paths[1], values)
        self.spilled.append(paths)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """All runs merged into one sorted run with unique keys (spilled files are removed)."""
        if not self.spilled:
            return _merge(self.held)
        try:
            if self.held:
                self._spill(*_merge(self.held))
                self.held = []
            return self._merge_spilled()
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _merge_spilled(self) -> tuple[np.ndarray, np.ndarray]:
        runs = [(np.load(k, mmap_mode="r"), np.load(v, mmap_mode="r")) for k, v in self.spilled]
        total = sum(len(k) for k, _ in runs)
        blocks = max(1, -(-total // max(1, self.max_entries // 2)))
        step = max(1, total // (blocks * 64))
        sample = np.sort(np.concatenate([np.asarray(k[::step]) for k, _ in runs]))
        bounds = np.unique(sample[np.linspace(0, len(sample) - 1, blocks + 1).astype(np.int64)[1:-1]])
        bounds = np.concatenate(([np.iinfo(np.int64).min], bounds, [np.iinfo(np.int64).max]))
        out_keys, out_values = [], []
        for low, high in zip(bounds[:-1], bounds[1:]):          # keys in [low, high); the last block ends at max
            last = high == bounds[-1]
            parts = []
            for k, v in runs:
                i, j = np.searchsorted(k, low), (len(k) if last else np.searchsorted(k, high))
                parts.append((np.asarray(k[i:j]), np.asarray(v[i:j])))
            keys, values = _merge(parts)
            out_keys.append(keys)
            out_values.append(values)
        return np.concatenate(out_keys), np.concatenate(out_values)


def _positions(starts: np.ndarray, begin: int, stop: int) -> np.ndarray:
    """Position of each token begin..stop-1 within its sentence (int64)."""
    first = np.searchsorted(starts, begin, side="right")
    inside = starts[first:np.searchsorted(starts, stop, side="left")]
    sentence = np.zeros(stop - begin, dtype=np.int64)
    sentence[0] = starts[first - 1] if first > 0 else 0
    sentence[inside - begin] = inside
    return np.arange(begin, stop, dtype=np.int64) - np.maximum.accumulate(sentence)


def _count_chunk(ids: np.ndarray, starts: np.ndarray, begin: int, end: int, vocab_size: int, window: int,
                 symmetric: bool, distance_weighting: bool) -> tuple[np.ndarray, np.ndarray]:
    """The sorted unique (key, weighted count) of the pairs (i, i + d) with begin <= i < end: key = row * V + col
    (row <= col when symmetric)."""
    stop = min(end + window, len(ids))
    chunk = ids[begin:stop].astype(np.int64)
    position = _positions(starts, begin, stop)
    packing = window if distance_weighting else 1          # the offset d - 1 rides in the key's low digits
    parts = []
    for d in range(1, window + 1):
        m = min(end, len(ids) - d) - begin                  # left tokens whose right partner exists
        if m <= 0:
            break
        left, right = chunk[:m], chunk[d:d + m]
        same = position[d:d + m] >= d                       # no sentence start in (i, i + d]
        if symmetric:
            keys = np.minimum(left, right) * vocab_size + np.maximum(left, right)
        else:
            keys = left * vocab_size + right
        keys = keys[same]
        if distance_weighting:
            keys *= packing
            keys += d - 1
        parts.append(keys)
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    keys = np.sort(np.concatenate(parts))
    if not len(keys):
        return keys, np.empty(0, np.float64)
    first = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    counts = np.diff(np.append(first, len(keys))).astype(np.float64)
    keys = keys[first]
    if distance_weighting:
        counts /= keys % packing + 1
        keys //= packing
    return _reduce_sorted(keys, counts)


def _check(ids: np.ndarray, starts: np.ndarray, vocab_size: int, window: int, chunk_pairs: int) -> None:
    if window < 1:
        raise EmbeddingsError(f"window: expected >= 1, got {window}")
    if vocab_size < 1:
        raise EmbeddingsError(f"vocab_size: expected >= 1, got {vocab_size}")
    if chunk_pairs < 1:
        raise EmbeddingsError(f"chunk_pairs: expected >= 1, got {chunk_pairs}")
    if (vocab_size * vocab_size) * window >= 2 ** 62:
        raise EmbeddingsError(f"vocab_size {vocab_size} with window {window}: pair keys overflow int64")
    if ids.ndim != 1 or starts.ndim != 1:
        raise EmbeddingsError("ids and sentence_starts must be 1-D arrays")
    if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
        raise EmbeddingsError(f"ids must lie in [0, {vocab_size}), got [{ids.min()}, {ids.max()}]")
    if len(starts) and (np.any(np.diff(starts) < 0) or starts[0] < 0 or starts[-1] > len(ids)):
        raise EmbeddingsError("sentence_starts must be sorted positions in [0, len(ids)]")


def count_cooccurrences(ids, sentence_starts, vocab_size: int, window: int = 10, symmetric: bool = True,
                        distance_weighting: bool = True, chunk_pairs: int = CHUNK_PAIRS,
                        scratch_dir: str | Path | None = None, max_entries: int = MAX_ENTRIES,
                        progress=None) -> Cooccurrences:
    """Weighted co-occurrence counts of an id stream (see the module docstring). `chunk_pairs`: pair keys sorted
    at once; `max_entries`: unique entries held before sorted runs are spilled to `scratch_dir` (a temporary
    folder inside it, removed at the end; None: the system's temporary folder). `progress(tokens_done)` is
    called after each chunk."""
    ids = np.asarray(ids)
    starts = np.asarray(sentence_starts, dtype=np.int64)
    _check(ids, starts, vocab_size, window, chunk_pairs)
    runs = _Runs(max(2, max_entries), scratch_dir)
    tokens = max(1, chunk_pairs // window)
    for begin in range(0, len(ids), tokens):
        end = min(begin + tokens, len(ids))
        runs.add(*_count_chunk(ids, starts, begin, end, vocab_size, window, symmetric, distance_weighting))
        if progress is not None:
            progress(end)
    keys, values = runs.finish()
    rows, cols = keys // vocab_size, keys % vocab_size
    if not symmetric:
        return Cooccurrences(rows.astype(np.int32), cols.astype(np.int32), values, vocab_size)
    return _mirror(rows, cols, values, vocab_size)


def _mirror(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, vocab_size: int) -> Cooccurrences:
    """The symmetric matrix, sorted by (row, col), from its upper triangle sorted by (row, col): the diagonal
    doubles (a word next to itself is a context on both sides), each off-diagonal entry is mirrored."""
    values = values.copy()
    diagonal = rows == cols
    values[diagonal] *= 2
    off = np.flatnonzero(~diagonal)
    # the mirrored entries (col, row), stably sorted by col: within a row their cols (the old rows) ascend
    by_col = torch.sort(torch.from_numpy(cols[off].astype(np.int32)), stable=True).indices.numpy()
    low = off[by_col]                                        # mirrored entries: row = cols[low], col = rows[low]
    low_rows, up_rows = cols[low], rows
    n_low = np.bincount(low_rows, minlength=vocab_size)
    n_up = np.bincount(up_rows, minlength=vocab_size)
    row_start = np.concatenate(([0], np.cumsum(n_low + n_up)[:-1]))
    # in each row the mirrored entries (cols < row) come first, then the upper ones (cols >= row)
    low_first = np.concatenate(([0], np.cumsum(n_low)[:-1]))
    up_first = np.concatenate(([0], np.cumsum(n_up)[:-1]))
    low_at = row_start[low_rows] + np.arange(len(low)) - low_first[low_rows]
    up_at = row_start[up_rows] + n_low[up_rows] + np.arange(len(rows)) - up_first[up_rows]
    total = len(low) + len(rows)
    out_rows = np.empty(total, np.int32)
    out_cols = np.empty(total, np.int32)
    out_values = np.empty(total, values.dtype)
    out_rows[low_at], out_cols[low_at], out_values[low_at] = low_rows, rows[low], values[low]
    out_rows[up_at], out_cols[up_at], out_values[up_at] = up_rows, cols, values
    return Cooccurrences(out_rows, out_cols, out_values, vocab_size)
