"""word2vec CBOW and Skip-gram with negative sampling (pipeline/embeddings/word2vec.py)."""

import numpy as np
import pytest
import torch

from pipeline.embeddings.evaluation import nearest_neighbours
from pipeline.embeddings.vocab import (EmbeddingsError, Vocabulary, build_vocabulary, encode, keep_probabilities,
                                       noise_distribution)
from pipeline.embeddings.sampling import AliasTable, draw_noise, dynamic_windows, subsample
from pipeline.embeddings.word2vec import Word2VecSettings, batch_bounds, train_word2vec


def test_subsampling_keeps_each_word_at_its_formula_rate():
    counts = np.array([50_000, 5_000, 500, 50, 5], dtype=np.int64)
    keep = keep_probabilities(counts, 1e-3)                       # t N = 55.555
    assert keep[:2] == pytest.approx([(np.sqrt(50_000 / 55.555) + 1) * 55.555 / 50_000,
                                      (np.sqrt(5_000 / 55.555) + 1) * 55.555 / 5_000], rel=1e-4)
    assert keep[3:].tolist() == [1.0, 1.0]
    draws = 200_000
    words = torch.arange(len(counts)).repeat_interleave(draws)
    kept = subsample(words, torch.as_tensor(keep, dtype=torch.float32), torch.Generator().manual_seed(0))
    rate = kept.view(len(counts), draws).double().mean(1).numpy()
    sigma = np.sqrt(keep * (1 - keep) / draws)
    assert np.all(np.abs(rate - keep) <= 5 * sigma + 1e-12)


def test_negatives_follow_the_unigram_three_quarters_distribution():
    counts = np.array([1000, 400, 90, 30, 7, 1], dtype=np.int64)
    p = noise_distribution(counts)
    draws = 300_000
    ids = draw_noise(AliasTable.build(p), draws, torch.Generator().manual_seed(1))
    observed = np.bincount(ids.numpy(), minlength=len(counts))
    expected = p * draws
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 20.5                           # chi-square, 5 degrees of freedom: p = 0.001
    assert observed.sum() == draws


def test_alias_table_by_hand():
    # V = 3, p = (0.5, 0.3, 0.2): scaled (1.5, 0.9, 0.6). Vose pops the last small id (2) and large id (0):
    # accept[2] = 0.6, alias 0, id 0 keeps 1.5 - 0.4 = 1.1; then small 1 with large 0: accept[1] = 0.9, alias 0,
    # id 0 keeps 1.0 and accepts itself. P(0) = (1 + 0.1 + 0.4) / 3 = 0.5, P(1) = 0.9 / 3, P(2) = 0.6 / 3
    table = AliasTable.build(np.array([5.0, 3.0, 2.0]))  # unnormalised weights alike
    assert table.accept.tolist() == pytest.approx([1.0, 0.9, 0.6]) and table.alias.tolist() == [0, 0, 0]
    assert table.probabilities() == pytest.approx([0.5, 0.3, 0.2], abs=1e-15)
    counts = np.array([10**6, 12345, 999, 40, 3, 1])
    p = noise_distribution(counts)
    assert AliasTable.build(p).probabilities() == pytest.approx(p, rel=1e-12, abs=1e-15)


def test_dynamic_window_is_uniform_from_one_to_window():
    windows = dynamic_windows(100_000, 5, torch.Generator().manual_seed(2)).numpy()
    assert windows.min() == 1 and windows.max() == 5
    assert np.abs(np.bincount(windows, minlength=6)[1:] / 100_000 - 0.2).max() < 0.01


def test_batches_hold_whole_sentences():
    starts = np.array([0, 3, 10, 11, 30])
    bounds = batch_bounds(starts, 35, batch_words=10)
    assert bounds[0] == 0 and bounds[-1] == len(starts) and (np.diff(bounds) > 0).all()
    assert bounds.tolist() == [0, 2, 4, 5]


def planted_corpus(seed=0, sentences=4000):
    """Topics of 12 context words; in each topic two planted words (zorb/quax, ...) appear in the same contexts,
    never in the same sentence."""
    rng = np.random.default_rng(seed)
    planted = [("zorb", "quax"), ("blin", "frap"), ("mowk", "tesh"), ("gliv", "prun")]
    topics = [[f"{chr(97 + t)}{chr(97 + i)}{chr(97 + i)}" for i in range(12)] for t in range(len(planted))]
    lines = []
    for _ in range(sentences):
        t = rng.integers(len(planted))
        words = list(rng.choice(topics[t], size=8))
        words.insert(rng.integers(9), planted[t][rng.integers(2)])
        lines.append(" ".join(words))
    return lines, planted


@pytest.mark.parametrize("method, negative, hs", [("cbow", 5, False), ("skipgram", 5, False), ("cbow", 0, True),
                                                 ("skipgram", 0, True), ("skipgram", 5, True)])
def test_planted_synonyms_are_nearest_neighbours(method, negative, hs):
    lines, planted = planted_corpus()
    vocab = build_vocabulary(lines, min_count=1)
    ids, starts = encode(lines, vocab)
    settings = Word2VecSettings(method=method, vector_size=24, epochs=10, sample=0, batch_words=2048, seed=3,
                                row_cap=64, negative=negative, hs=hs)  # 56 words: each batch meets every word often
    vectors = train_word2vec(ids, starts, vocab, settings)
    assert vectors.words == vocab.words and vectors.matrix.shape == (len(vocab), 24)
    near = nearest_neighbours(vectors, [w for pair in planted for w in pair], k=1)
    for a, b in planted:
        assert near[a][0][0] == b and near[b][0][0] == a, (a, near[a], b, near[b])


def test_training_is_deterministic_for_a_seed_and_reports_progress():
    lines, _ = planted_corpus(sentences=300)
    vocab = build_vocabulary(lines, min_count=1)
    ids, starts = encode(lines, vocab)
    seen = []
    settings = Word2VecSettings(method="skipgram", vector_size=8, epochs=2, batch_words=500)
    first = train_word2vec(ids, starts, vocab, settings, progress=lambda done, total: seen.append((done, total)))
    second = train_word2vec(ids, starts, vocab, settings)
    assert np.array_equal(first.matrix, second.matrix)
    assert seen[-1] == (2 * len(ids), 2 * len(ids)) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    other = train_word2vec(ids, starts, vocab, Word2VecSettings(method="skipgram", vector_size=8, epochs=2,
                                                                batch_words=500, seed=1))
    assert not np.array_equal(first.matrix, other.matrix)


def test_divergence_is_an_error():
    lines, _ = planted_corpus(sentences=400)
    vocab = build_vocabulary(lines, min_count=1)
    ids, starts = encode(lines, vocab)
    with pytest.raises(EmbeddingsError, match="diverged"):
        train_word2vec(ids, starts, vocab, Word2VecSettings(method="skipgram", alpha=1e38, min_alpha=1e38,
                                                                  batch_words=100_000, row_cap=1e9))


def test_errors():
    with pytest.raises(EmbeddingsError, match="window: expected >= 1"):
        Word2VecSettings(window=0)
    with pytest.raises(EmbeddingsError, match="method"):
        Word2VecSettings(method="glove")
    with pytest.raises(EmbeddingsError, match="min_alpha"):
        Word2VecSettings(alpha=0.01, min_alpha=0.1)
    with pytest.raises(EmbeddingsError, match=r"negative: expected >= 1 \(without hs\), got 0"):
        Word2VecSettings(negative=0)
    assert Word2VecSettings(negative=0, hs=True).negative == 0   # hierarchical softmax alone
    vocab = Vocabulary(["a", "b"], [2, 1])
    with pytest.raises(EmbeddingsError, match="empty corpus"):
        train_word2vec(np.zeros(0, np.int32), np.zeros(0, np.int64), vocab, Word2VecSettings())
    with pytest.raises(EmbeddingsError, match="ids"):
        train_word2vec(np.array([0, 2], np.int32), np.array([0]), vocab, Word2VecSettings())
    with pytest.raises(EmbeddingsError, match="sentence_starts"):
        train_word2vec(np.array([0, 1], np.int32), np.array([1]), vocab, Word2VecSettings())


def test_shared_negatives_weigh_each_noise_word_negative_over_group_negatives(monkeypatch):
    """Two positions in one group share noise words y0 = 0.5, y1 = -1 (1-d vectors), each weighted
    negative / group_negatives = 4 / 2; lr 0.1, pair counts (weights) 1 and 2. By hand, with s = sigmoid:
      grad x0 = -0.1*2*1*(s(0.5)*0.5 + s(-1)*(-1)) = -0.2*(0.3112297 - 0.2689414)            = -0.0084577
      grad x1 = -0.1*2*2*(s(1)*0.5 + s(-2)*(-1))   = -0.4*(0.3655293 - 0.1192029)            = -0.0985306
      grad y0 = -0.1*2*(1*s(0.5)*1 + 2*s(1)*2)     = -0.2*(0.6224593 + 2.9242344)            = -0.7093387
      uses of each noise word = (1 + 2) * 4 / 2 = 6"""
    from pipeline.embeddings import word2vec

    monkeypatch.setattr(word2vec, "draw_noise", lambda cumulative, n, generator: torch.tensor([0, 1]))
    settings = Word2VecSettings(negative=4, negative_group=2, group_negatives=2)
    grad_x, ids, grad_rows, uses = word2vec._negative_step(
        torch.tensor([[1.0], [2.0]]), torch.tensor([[0.5], [-1.0]]), torch.tensor([1.0, 2.0]), 0.1, settings,
        None, None)
    assert ids.tolist() == [0, 1]
    assert grad_x[:, 0].tolist() == pytest.approx([-0.0084577, -0.0985306], abs=1e-7)
    assert grad_rows[0, 0].item() == pytest.approx(-0.7093387, abs=1e-7)
    assert uses.tolist() == [6.0, 6.0]


def test_cbow_batch_equals_a_loop_over_centres_and_their_contexts(monkeypatch):
    """The windowed (bmm) context sums against the definition, one centre at a time: h_i = mean of x_j over the
    context (kept words within i's own window, same sentence), y_i's gradient lr·(1 - s(h_i·y_i))·h_i, and every
    context word x_j gets the whole gradient of h_i (positive part + the shared-negative part)."""
    from pipeline.embeddings import word2vec

    length, dim, window, lr = 14, 3, 3, 0.05
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(length, dim, generator=g, dtype=torch.float64), torch.randn(length, dim, generator=g, dtype=torch.float64)
    # the batch's words are ids 0..13 (x: their input rows, y: their output rows), the noise words ids 14..19
    w_out = torch.cat([y, torch.randn(6, dim, generator=g, dtype=torch.float64)])
    windows = torch.tensor([1, 3, 2, 3, 1, 2, 3, 3, 1, 2, 2, 3, 1, 3])
    sentence = torch.tensor([0] * 6 + [1] * 5 + [2] * 3)
    noise = torch.tensor([0, 3, 5, 1] * 8) + length
    monkeypatch.setattr(word2vec, "draw_noise", lambda table, n, generator: noise[:n])
    settings = Word2VecSettings(window=window, negative_group=4, group_negatives=2)
    words = torch.arange(length)
    updates = word2vec._cbow_batch(word2vec._Model(x, w_out, None, None, None), words, windows, sentence, lr,
                                   settings, None)
    [(x_rows, grad_x, served)] = updates["w_in"]
    [(y_rows, grad_y, centre), (ids, neg_rows, uses)] = updates["w_out"]
    assert x_rows.tolist() == y_rows.tolist() == words.tolist() and ids.tolist() == noise[:8].tolist()
    assert updates["syn1"] == []

    contexts = [[j for j in range(length) if j != i and abs(j - i) <= windows[i] and sentence[j] == sentence[i]]
                for i in range(length)]
    hidden = torch.stack([x[c].mean(0) if c else torch.zeros(dim, dtype=x.dtype) for c in contexts])
    has = torch.tensor([1.0 if c else 0.0 for c in contexts], dtype=x.dtype)
    coef = (1 - torch.sigmoid((hidden * y).sum(1))) * lr * has
    neg_hidden, *_ = word2vec._negative_step(hidden, w_out, has, lr, settings, None, None)
    grad_hidden = coef[:, None] * y + neg_hidden
    expected = torch.zeros_like(x)
    for i, c in enumerate(contexts):
        for j in c:
            expected[j] += grad_hidden[i]
    torch.testing.assert_close(grad_x, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_y, coef[:, None] * hidden, rtol=0, atol=1e-12)
    assert served.tolist() == [sum(j in c for c in contexts) for j in range(length)]
    assert centre.tolist() == has.tolist()


def test_shared_negative_defaults_depend_on_the_method_and_an_explicit_value_wins():
    from pipeline.embeddings.word2vec import SHARED_NEGATIVES

    for method in ("cbow", "skipgram"):
        settings = Word2VecSettings(method=method)
        assert (settings.negative_group, settings.group_negatives) == SHARED_NEGATIVES[method]
    assert Word2VecSettings(method="cbow", negative_group=8).negative_group == 8
    with pytest.raises(EmbeddingsError, match="group_negatives"):
        Word2VecSettings(group_negatives=0)


def test_unwindowed_sum_sends_each_windowed_row_back_to_its_position():
    from pipeline.embeddings import word2vec

    rows = torch.arange(1.0, 6.0).unsqueeze(1)                          # positions 0..4, value = position + 1
    windowed = word2vec._windowed(rows, 2)                              # [i, k] = rows[i + k - 2] or 0
    assert windowed[0, :, 0].tolist() == [0, 0, 1, 2, 3] and windowed[4, :, 0].tolist() == [3, 4, 5, 0, 0]
    # position j is seen at (i, k) for every i within 2 of j: 5 times inside, fewer at the edges
    summed = word2vec._unwindowed_sum(windowed.contiguous(), 2)
    assert summed[:, 0].tolist() == [1 * 3, 2 * 4, 3 * 5, 4 * 4, 5 * 3]
