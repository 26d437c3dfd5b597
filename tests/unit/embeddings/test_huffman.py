"""Hierarchical softmax: the Huffman tree by hand and against the definition, its probabilities, and the batched
gradients against autograd on log p(word | input)."""

import heapq

import numpy as np
import pytest
import torch

from pipeline.embeddings.huffman import HuffmanTree, hs_cbow, hs_skipgram
from pipeline.embeddings.vocab import EmbeddingsError


def path(tree: HuffmanTree, word: int) -> tuple[list[int], list[int]]:
    depth = int(tree.depths[word])
    return tree.points[word, :depth].tolist(), [int(c) for c in tree.codes[word, :depth].tolist()]


def test_tree_by_hand():
    """Counts 5, 3, 2, 1 (word2vec.c's construction): inner node 0 joins 1 (bit 0) and 2 (bit 1), count 3;
    inner 1 joins inner 0 (taken first: 3 is not < 3) and word 1 (bit 1), count 6; the root (inner 2) joins
    word 0 (bit 0) and inner 1 (bit 1). Paths from the root: word 0 [2] code 0; word 1 [2, 1] code 1 1;
    word 2 [2, 1, 0] code 1 0 1; word 3 [2, 1, 0] code 1 0 0."""
    tree = HuffmanTree.build([5, 3, 2, 1])
    assert [path(tree, w) for w in range(4)] == [([2], [0]), ([2, 1], [1, 1]), ([2, 1, 0], [1, 0, 1]),
                                                 ([2, 1, 0], [1, 0, 0])]
    assert tree.depths.tolist() == [1, 2, 3, 3]
    shuffled = HuffmanTree.build([2, 5, 1, 3])                  # the same tree, words named in another order
    assert [path(shuffled, w) for w in (1, 3, 0, 2)] == [path(tree, w) for w in range(4)]


def test_tree_is_optimal_and_probabilities_sum_to_one():
    counts = np.random.default_rng(0).zipf(1.5, size=60).clip(max=10 ** 6)
    tree = HuffmanTree.build(counts)
    heap = [int(c) for c in counts]                             # Huffman's cost: the sum of all merged weights
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    assert int((tree.depths.numpy() * counts).sum()) == cost    # expected code length: optimal
    generator = torch.Generator().manual_seed(1)
    syn1 = torch.randn(len(counts) - 1, 5, generator=generator, dtype=torch.float64)
    hidden = torch.randn(5, generator=generator, dtype=torch.float64)
    total = sum(tree.log_probability(syn1, hidden, w).exp() for w in range(len(counts)))
    assert total.item() == pytest.approx(1.0, abs=1e-12)


def test_one_word_is_an_error():
    with pytest.raises(EmbeddingsError, match="at least 2 words"):
        HuffmanTree.build([7])


def scatter_rows(shape, ids, rows):
    return torch.zeros(shape, dtype=rows.dtype).index_add_(0, ids, rows)


def test_cbow_gradients_are_lr_times_those_of_the_log_likelihood():
    tree = HuffmanTree.build([40, 20, 9, 9, 5, 3, 1])
    generator = torch.Generator().manual_seed(2)
    syn1 = (0.3 * torch.randn(6, 4, generator=generator, dtype=torch.float64)).requires_grad_()
    hidden = torch.randn(5, 4, generator=generator, dtype=torch.float64).requires_grad_()
    centres, weights, lr = torch.tensor([0, 6, 3, 3, 2]), torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64), 0.05
    objective = sum(weights[i] * tree.log_probability(syn1, hidden[i], int(c)) for i, c in enumerate(centres))
    objective.backward()
    grad_hidden, node_ids, grad_nodes, uses = hs_cbow(hidden.detach(), centres, weights, syn1.detach(), tree, lr)
    torch.testing.assert_close(grad_hidden, lr * hidden.grad, rtol=0, atol=1e-14)
    torch.testing.assert_close(scatter_rows(syn1.shape, node_ids, grad_nodes), lr * syn1.grad, rtol=0, atol=1e-14)
    assert uses.sum().item() == sum(int(tree.depths[c]) * w for c, w in zip(centres.tolist(), weights.tolist()))


def test_skipgram_gradients_are_lr_times_those_of_the_log_likelihood():
    tree = HuffmanTree.build([40, 20, 9, 9, 5, 3, 1])
    generator = torch.Generator().manual_seed(3)
    syn1 = (0.3 * torch.randn(6, 4, generator=generator, dtype=torch.float64)).requires_grad_()
    inputs = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64).requires_grad_()   # (N, C, d)
    centres, lr = torch.tensor([1, 5, 0]), 0.025
    context = torch.tensor([[1, 1, 0, 1, 0], [0, 0, 0, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float64)
    objective = sum(context[i, c] * tree.log_probability(syn1, inputs[i, c], int(centres[i]))
                    for i in range(3) for c in range(5))
    objective.backward()
    grad_inputs, node_ids, grad_nodes, uses = hs_skipgram(inputs.detach(), centres, context, syn1.detach(), tree, lr)
    torch.testing.assert_close(grad_inputs, lr * inputs.grad, rtol=0, atol=1e-14)
    torch.testing.assert_close(scatter_rows(syn1.shape, node_ids, grad_nodes), lr * syn1.grad, rtol=0, atol=1e-14)
    assert uses.sum().item() == sum(int(tree.depths[c]) * context[i].sum().item() for i, c in enumerate(centres))
