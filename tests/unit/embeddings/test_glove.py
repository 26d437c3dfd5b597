"""GloVe: the weighting, the loss and one AdaGrad step against hand computation; planted synonyms."""

import math

import numpy as np
import pytest
import torch

from pipeline.embeddings.cooccurrence import Cooccurrences, count_cooccurrences
from pipeline.embeddings.evaluation import nearest_neighbours
from pipeline.embeddings.glove import (GloVeModel, GloVeSettings, Workspace, glove_loss, glove_step, train_glove,
                                      weighting)
from pipeline.embeddings.vocab import EmbeddingsError, build_vocabulary, encode


def test_weighting_below_at_and_above_x_max():
    x = np.array([1.0, 5.0, 10.0, 20.0])
    expected = [0.1 ** 0.75, 0.5 ** 0.75, 1.0, 1.0]                 # 0.17783, 0.59460, 1, 1
    np.testing.assert_allclose(weighting(x, 10.0, 0.75), expected, rtol=1e-12)
    np.testing.assert_allclose(weighting(torch.tensor(x), 10.0, 0.75).numpy(), expected, rtol=1e-12)
    assert weighting(np.array([50.0]), 100.0, 0.5)[0] == pytest.approx(math.sqrt(0.5))


def test_loss_of_a_two_word_example():
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    w_context = torch.tensor([[0.5, 0.5], [1.0, -1.0]], dtype=torch.float64)
    b, b_context = torch.tensor([0.1, -0.2], dtype=torch.float64), torch.tensor([0.3, 0.0], dtype=torch.float64)
    rows, cols, counts = torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([2.0, 20.0], dtype=torch.float64)
    # X_01 = 2: w_0.w~_1 = 1, + b_0 + b~_1 = 1.1, - log 2; f(2) = 0.2^0.75
    # X_10 = 20: w_1.w~_0 = 0.5, + b_1 + b~_0 = 0.6, - log 20; f(20) = 1 (above x_max)
    expected = 0.2 ** 0.75 * (1.1 - math.log(2)) ** 2 + 1.0 * (0.6 - math.log(20)) ** 2
    loss = glove_loss(w, w_context, b, b_context, rows, cols, counts, x_max=10.0, alpha=0.75)
    assert loss.item() == pytest.approx(expected, rel=1e-12)         # 0.04950 + 5.73953


def small_model(dtype=torch.float64):
    model = GloVeModel(2, 2, dtype=dtype)
    model.word.copy_(torch.tensor([[1.0, 0.0, 0.1], [0.0, 1.0, -0.2]], dtype=dtype))       # [w_i, b_i]
    model.context.copy_(torch.tensor([[0.5, 0.5, 0.3], [1.0, -1.0, 0.0]], dtype=dtype))    # [w~_j, b~_j]
    return model


def test_one_adagrad_step_as_the_c_tool():
    model = small_model()
    eta = 0.05
    cost = glove_step(model, torch.tensor([0]), torch.tensor([1]), torch.tensor([math.log(2)], dtype=torch.float64),
                      torch.tensor([0.2 ** 0.75], dtype=torch.float64), learning_rate=eta)
    diff = 1.0 + 0.1 + 0.0 - math.log(2)
    fdiff = 0.2 ** 0.75 * diff
    assert cost.item() == pytest.approx(0.5 * fdiff * diff, rel=1e-12)
    # gradsq starts at 1: the first step is eta * gradient (vectors), fdiff (biases); then G += step^2
    t_word = [fdiff * 1.0 * eta, fdiff * -1.0 * eta]                 # fdiff * w~_1
    t_context = [fdiff * 1.0 * eta, fdiff * 0.0 * eta]              # fdiff * w_0
    np.testing.assert_allclose(model.word[0].numpy(), [1.0 - t_word[0], 0.0 - t_word[1], 0.1 - fdiff], rtol=1e-12)
    np.testing.assert_allclose(model.context[1].numpy(), [1.0 - t_context[0], -1.0 - t_context[1], 0.0 - fdiff],
                               rtol=1e-12)
    np.testing.assert_allclose(model.word_gradsq[0].numpy(), [1 + t_word[0] ** 2, 1 + t_word[1] ** 2, 1 + fdiff ** 2],
                               rtol=1e-12)
    np.testing.assert_allclose(model.context_gradsq[1].numpy(),
                               [1 + t_context[0] ** 2, 1 + t_context[1] ** 2, 1 + fdiff ** 2], rtol=1e-12)
    np.testing.assert_array_equal(model.word[1].numpy(), [0.0, 1.0, -0.2])             # untouched rows
    np.testing.assert_array_equal(model.word_gradsq[1].numpy(), [1.0, 1.0, 1.0])
    # a second step reads the grown G: the step shrinks to t / sqrt(1 + t_first^2)
    second = small_model()
    second.word_gradsq[0, 2] = 1 + fdiff ** 2
    glove_step(second, torch.tensor([0]), torch.tensor([1]), torch.tensor([math.log(2)], dtype=torch.float64),
               torch.tensor([0.2 ** 0.75], dtype=torch.float64), learning_rate=eta)
    assert second.word[0, 2].item() == pytest.approx(0.1 - fdiff / math.sqrt(1 + fdiff ** 2), rel=1e-12)


def test_a_row_repeated_in_a_batch_takes_one_folded_step():
    model = small_model()
    rows, cols = torch.tensor([0, 0]), torch.tensor([0, 1])
    log_counts = torch.tensor([math.log(3), math.log(30)], dtype=torch.float64)
    weights = torch.tensor([0.3 ** 0.75, 1.0], dtype=torch.float64)
    glove_step(model, rows, cols, log_counts, weights, learning_rate=0.05)
    fdiffs = [0.3 ** 0.75 * (0.5 + 0.1 + 0.3 - math.log(3)), 1.0 * (1.0 + 0.1 + 0.0 - math.log(30))]
    # word 0's bias: two steps summed T, against G = 1 + S / 2 (S their squared sum, k = 2); then G += S
    total, squared = sum(fdiffs), sum(f * f for f in fdiffs)
    assert model.word[0, 2].item() == pytest.approx(0.1 - total / math.sqrt(1 + squared / 2), rel=1e-12)
    assert model.word_gradsq[0, 2].item() == pytest.approx(1 + squared, rel=1e-12)
    # each context row is met once: the plain step
    assert model.context[0, 2].item() == pytest.approx(0.3 - fdiffs[0], rel=1e-12)
    assert model.context[1, 2].item() == pytest.approx(0.0 - fdiffs[1], rel=1e-12)


def planted_corpus(sentences: int = 3000, seed: int = 0) -> list[str]:
    """Six topics, each a different distribution over 40 shared context words; a sentence is 8 context words of
    one topic with that topic's centre word put among them. Topic 0's centre is "mango" or "papaya" at random:
    the two have the same contexts in expectation and never meet."""
    rng = np.random.default_rng(seed)
    names = "abcdefghijklmnopqrstuvwxyz"
    contexts = [f"ctx{names[k // 26]}{names[k % 26]}" for k in range(40)]
    topics = rng.dirichlet(np.full(len(contexts), 0.5), size=6)
    centres = [["mango", "papaya"]] + [[f"centre{names[t]}"] for t in range(1, 6)]
    lines = []
    for _ in range(sentences):
        topic = int(rng.integers(len(topics)))
        words = list(rng.choice(contexts, 8, p=topics[topic]))
        words.insert(int(rng.integers(9)), str(rng.choice(centres[topic])))
        lines.append(" ".join(words))
    return lines


@pytest.mark.parametrize("workers", [1, 2])
def test_planted_synonyms_are_nearest_neighbours(workers):
    lines = planted_corpus()
    vocab = build_vocabulary(lines, min_count=1)
    ids, starts = encode(lines, vocab)
    cooc = count_cooccurrences(ids, starts, len(vocab), window=5)
    assert cooc.to_dense()[vocab.index["mango"], vocab.index["papaya"]] == 0          # never together
    costs = []
    vectors = train_glove(cooc, vocab.words, GloVeSettings(vector_size=16, epochs=40, batch_size=64, seed=3,
                                                           workers=workers),
                          progress=lambda epoch, cost, seconds: costs.append(cost))
    assert vectors.matrix.shape == (len(vocab), 16) and vectors.matrix.dtype == np.float32
    assert costs[-1] < costs[0] / 5
    neighbours = nearest_neighbours(vectors, ["mango", "papaya"], k=1)
    assert neighbours["mango"][0][0] == "papaya"
    assert neighbours["papaya"][0][0] == "mango"


def test_same_seed_same_vectors_and_bad_input():
    cooc = count_cooccurrences(np.array([0, 1, 2, 0, 1, 1, 2]), np.array([0]), 3, window=2)
    settings = GloVeSettings(vector_size=4, epochs=3, batch_size=2)
    first = train_glove(cooc, ["a", "b", "c"], settings)
    np.testing.assert_array_equal(first.matrix, train_glove(cooc, ["a", "b", "c"], settings).matrix)
    assert first.words == ["a", "b", "c"]
    with pytest.raises(EmbeddingsError, match="words"):
        train_glove(cooc, ["a", "b"], settings)
    empty = Cooccurrences(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0), 3)
    with pytest.raises(EmbeddingsError, match="no co-occurrences"):
        train_glove(empty, ["a", "b", "c"], settings)


def test_workspace_groups_a_batch_as_torch_unique():
    model = GloVeModel(50, 3)
    workspace = Workspace(model, batch_size=64)
    index = torch.tensor([7, 3, 7, 49, 0, 3, 7])
    unique, inverse, counts = workspace.group(index)
    assert unique.tolist() == [0, 3, 7, 49] and counts.tolist() == [1, 2, 3, 1]
    assert inverse.tolist() == [2, 1, 2, 3, 0, 1, 2]                   # unique[inverse] == index
    random = torch.randint(0, 50, (64,), generator=torch.Generator().manual_seed(0))
    for mine, torchs in zip(workspace.group(random), torch.unique(random, return_inverse=True, return_counts=True)):
        assert torch.equal(mine, torchs)
