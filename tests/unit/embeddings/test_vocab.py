"""Vocabulary, encoding and word2vec's two word distributions (pipeline/embeddings/vocab.py)."""

import numpy as np
import pytest

from pipeline.embeddings.vocab import (EmbeddingsError, Vocabulary, build_vocabulary, encode, keep_probabilities,
                                       noise_distribution, sentence_lengths, words_of)


def test_words_of_lowercases_to_letters():
    assert words_of("Don't STOP-me now, Zoë 42x!") == ["don", "t", "stop", "me", "now", "zo", "x"]
    assert words_of("  ") == []


def test_vocabulary_sorted_by_count_then_alphabetically_with_min_count_and_max_size():
    lines = ["b a c a", "c b d", "a e e"]            # a:3 b:2 c:2 e:2 d:1
    vocab = build_vocabulary(lines, min_count=2)
    assert vocab.words == ["a", "b", "c", "e"]
    assert vocab.counts.dtype == np.int64 and vocab.counts.tolist() == [3, 2, 2, 2]
    assert vocab.index == {"a": 0, "b": 1, "c": 2, "e": 3} and vocab.total == 9 and "d" not in vocab
    assert build_vocabulary(iter(lines), min_count=1, max_size=2).words == ["a", "b"]


def test_encode_drops_unknown_words_skips_empty_lines_and_cuts_long_sentences(tmp_path):
    vocab = Vocabulary(["a", "b", "c"], [5, 4, 3])
    path = tmp_path / "corpus.txt"
    path.write_text("a zz b\n\nzz\nc c a b c\nA\n")
    with open(path) as f:
        ids, starts = encode(f, vocab)
    assert ids.dtype == np.int32 and starts.dtype == np.int64
    assert ids.tolist() == [0, 1, 2, 2, 0, 1, 2, 0] and starts.tolist() == [0, 2, 7]
    ids, starts = encode(path.read_text().splitlines(), vocab, max_sentence=2)
    assert starts.tolist() == [0, 2, 4, 6, 7]
    assert sentence_lengths(starts, len(ids)).tolist() == [2, 2, 2, 1, 1]


def test_encode_streams_in_chunks(monkeypatch):
    import pipeline.embeddings.vocab as module

    monkeypatch.setattr(module, "_CHUNK", 3)
    vocab = Vocabulary(["a", "b"], [2, 2])
    ids, starts = encode(["a b", "b", "a a b", "b"], vocab)
    assert ids.tolist() == [0, 1, 1, 0, 0, 1, 1] and starts.tolist() == [0, 2, 3, 6]


def test_keep_probabilities_match_word2vecs_formula_on_hand_numbers():
    counts = np.array([1000, 100, 10, 1], dtype=np.int64)      # total 1111
    t = 0.01                                                     # threshold t * total = 11.11
    expected = [(np.sqrt(1000 / 11.11) + 1) * 11.11 / 1000,    # 0.11651...
                (np.sqrt(100 / 11.11) + 1) * 11.11 / 100,      # 0.44442...
                1.0, 1.0]                                       # capped
    assert keep_probabilities(counts, t) == pytest.approx(expected, rel=1e-12)
    assert expected[0] == pytest.approx(0.116514, abs=1e-6)
    assert keep_probabilities(counts, 0).tolist() == [1, 1, 1, 1]


def test_noise_distribution_is_counts_to_the_three_quarters_normalised():
    counts = np.array([16, 1, 81])
    p = noise_distribution(counts)
    assert p == pytest.approx(np.array([8, 1, 27]) / 36, rel=1e-12)    # 16^.75 = 8, 81^.75 = 27
    assert noise_distribution(counts, power=1.0) == pytest.approx(counts / 98)


def test_errors():
    with pytest.raises(EmbeddingsError, match="empty corpus"):
        build_vocabulary(["", "42 !!"], min_count=1)
    with pytest.raises(EmbeddingsError, match="empty vocabulary"):
        build_vocabulary(["a b a"], min_count=3)
    with pytest.raises(EmbeddingsError, match="min_count"):
        build_vocabulary(["a"], min_count=0)
    with pytest.raises(EmbeddingsError, match="sample"):
        keep_probabilities(np.array([1, 2]), -0.1)
    with pytest.raises(EmbeddingsError, match="duplicate"):
        Vocabulary(["a", "a"], [1, 1])
    assert issubclass(EmbeddingsError, ValueError)
