"""Co-occurrence counting: hand-computed counts of a tiny id stream, a brute-force reference, and spilling."""

import numpy as np
import pytest

from pipeline.embeddings.cooccurrence import count_cooccurrences
from pipeline.embeddings.vocab import EmbeddingsError

# two sentences: [0 1 2 0] and [1 1]; window 2
IDS = np.array([0, 1, 2, 0, 1, 1], dtype=np.int32)
STARTS = np.array([0, 4], dtype=np.int64)


def brute_force(ids, starts, vocab_size, window, symmetric=True, distance_weighting=True):
    """The C tool's loop: each word against the `window` words before it in its sentence."""
    dense = np.zeros((vocab_size, vocab_size))
    bounds = list(starts) + [len(ids)]
    for begin, end in zip(bounds[:-1], bounds[1:]):
        for j in range(begin, end):
            for k in range(max(begin, j - window), j):
                weight = 1.0 / (j - k) if distance_weighting else 1.0
                dense[ids[k], ids[j]] += weight
                if symmetric:
                    dense[ids[j], ids[k]] += weight
    return dense


def test_hand_computed_symmetric_distance_weighted():
    cooc = count_cooccurrences(IDS, STARTS, 3, window=2)
    # sentence 1: (0,1) (1,2) (2,0) at distance 1, (0,2) (1,0) at distance 2 (weight 1/2), both directions;
    # sentence 2: 1 next to 1 counts on both sides: X[1,1] = 2. The last 0 and the first 1 of sentence 2
    # are neighbours in the stream but not in a sentence: nothing.
    expected = np.array([[0.0, 1.5, 1.5],
                         [1.5, 2.0, 1.0],
                         [1.5, 1.0, 0.0]])
    np.testing.assert_allclose(cooc.to_dense(), expected)
    assert cooc.rows.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert cooc.cols.tolist() == [1, 2, 0, 1, 2, 0, 1]
    assert cooc.rows.dtype == np.int32 and cooc.cols.dtype == np.int32 and len(cooc) == 7


def test_hand_computed_left_context_and_unweighted():
    left = count_cooccurrences(IDS, STARTS, 3, window=2, symmetric=False)
    np.testing.assert_allclose(left.to_dense(), [[0.0, 1.0, 0.5],     # X[earlier word, later word]
                                                 [0.5, 1.0, 1.0],
                                                 [1.0, 0.0, 0.0]])
    plain = count_cooccurrences(IDS, STARTS, 3, window=2, distance_weighting=False)
    np.testing.assert_allclose(plain.to_dense(), [[0, 2, 2], [2, 2, 1], [2, 1, 0]])
    narrow = count_cooccurrences(IDS, STARTS, 3, window=1)
    np.testing.assert_allclose(narrow.to_dense(), [[0, 1, 1], [1, 2, 1], [1, 1, 0]])


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("distance_weighting", [True, False])
def test_random_streams_match_brute_force_with_and_without_spilling(tmp_path, symmetric, distance_weighting):
    rng = np.random.default_rng(0)
    for trial in range(10):
        vocab_size, n = int(rng.integers(1, 12)), int(rng.integers(1, 300))
        ids = rng.integers(0, vocab_size, n).astype(np.int32)
        starts = np.unique(np.concatenate([[0], rng.integers(0, n, rng.integers(0, 12))]))
        window = int(rng.integers(1, 7))
        expected = brute_force(ids, starts, vocab_size, window, symmetric, distance_weighting)
        whole = count_cooccurrences(ids, starts, vocab_size, window, symmetric, distance_weighting)
        spilled = count_cooccurrences(ids, starts, vocab_size, window, symmetric, distance_weighting,
                                      chunk_pairs=5, max_entries=4, scratch_dir=tmp_path / "scratch")
        np.testing.assert_allclose(whole.to_dense(), expected, rtol=1e-12)
        for cooc in (whole, spilled):
            keys = cooc.rows.astype(np.int64) * vocab_size + cooc.cols
            assert np.all(np.diff(keys) > 0) and np.all(cooc.values > 0)   # sorted, unique, nonzero
        np.testing.assert_array_equal(spilled.rows, whole.rows)
        np.testing.assert_array_equal(spilled.cols, whole.cols)
        np.testing.assert_allclose(spilled.values, whole.values, rtol=1e-12)
    assert not any((tmp_path / "scratch").iterdir())                           # spilled runs removed


def test_spilling_a_larger_stream_matches(tmp_path):
    rng = np.random.default_rng(1)
    ids = rng.zipf(1.3, 20000).clip(max=500).astype(np.int32) - 1
    starts = np.unique(np.concatenate([[0], rng.integers(0, len(ids), 400)]))
    whole = count_cooccurrences(ids, starts, 500, window=10)
    spilled = count_cooccurrences(ids, starts, 500, window=10, chunk_pairs=3000, max_entries=2000,
                                  scratch_dir=tmp_path)
    np.testing.assert_array_equal(spilled.rows, whole.rows)
    np.testing.assert_array_equal(spilled.cols, whole.cols)
    np.testing.assert_allclose(spilled.values, whole.values, rtol=1e-12)
    np.testing.assert_allclose(whole.to_dense(), brute_force(ids, starts, 500, 10), rtol=1e-12)


def test_empty_and_bad_input():
    empty = count_cooccurrences(np.zeros(0, np.int32), np.zeros(0, np.int64), 4)
    assert len(empty) == 0
    lonely = count_cooccurrences(np.array([0, 1, 2]), np.array([0, 1, 2]), 3)     # one-word sentences
    assert len(lonely) == 0
    with pytest.raises(EmbeddingsError, match="window"):
        count_cooccurrences(IDS, STARTS, 3, window=0)
    with pytest.raises(EmbeddingsError, match="ids must lie"):
        count_cooccurrences(IDS, STARTS, 2)
    with pytest.raises(EmbeddingsError, match="sentence_starts"):
        count_cooccurrences(IDS, np.array([4, 0]), 3)
