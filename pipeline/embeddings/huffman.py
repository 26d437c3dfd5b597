"""Hierarchical softmax for word2vec (Mikolov et al. 2013, word2vec.c's `CreateBinaryTree`): a Huffman tree over
the vocabulary and the batched gradients of the words' paths in it.

    tree = HuffmanTree.build(vocab.counts)
    tree.points[w, :tree.depths[w]], tree.codes[w, :tree.depths[w]]   # inner nodes root first, branch bits

The model: the V - 1 inner nodes of the tree each have an output vector v_n (the rows of `syn1`, zero at the
start). Word w is the leaf reached from the root through the inner nodes n_1 .. n_L (`points`) taking branch c_k
(`codes`) at n_k, and its probability given an input vector h is

    p(w | h) = prod_k sigma(h . v_{n_k}) if c_k = 0 else sigma(-h . v_{n_k})

so each inner node splits its probability between its two children and sum_w p(w | h) = 1 for any h. Training
maximises log p(w | h); its derivative with respect to the score s_k = h . v_{n_k} is g_k = 1 - c_k - sigma(s_k)
(word2vec.c's `g`, times the learning rate there): h moves by g_k v_{n_k} and v_{n_k} by g_k h.

The tree (word2vec.c's construction, same ties): leaves in order of count descending; two queues, the leaves from
the rarest up and the inner nodes in the order they are made; each new inner node joins the two smallest heads
(a leaf only when strictly smaller than the inner node at the head of the other queue); of the two, the second
taken gets branch bit 1. Frequent words get short paths: the depth of word w is about log2(N / count_w).

Ours: no library builds word2vec's tree for torch (gensim's is inside its Cython trainer). The gradients are
batched with padding to the batch's deepest path (`hs_cbow`, `hs_skipgram`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.embeddings.vocab import EmbeddingsError


@dataclass
class HuffmanTree:
    """Each word's path from the root: `points` (V, L) inner-node ids in [0, V - 1) (the root is V - 2), `codes`
    (V, L) branch bits as floats, `depths` (V,); entries past a word's depth are 0. L is the deepest path."""

    points: torch.Tensor
    codes: torch.Tensor
    depths: torch.Tensor

    @classmethod
    def build(cls, counts, device="cpu") -> "HuffmanTree":
        counts = np.asarray(counts, dtype=np.int64)
        size = len(counts)
        if size < 2:
            raise EmbeddingsError(f"hierarchical softmax needs at least 2 words in the vocabulary, got {size}")
        order = np.argsort(-counts, kind="stable")             # leaf position -> word id (our vocabulary: 0, 1, ..)
        weight = np.concatenate([counts[order], np.full(size - 1, np.iinfo(np.int64).max)])
        parent = np.zeros(2 * size - 1, dtype=np.int64)
        bit = np.zeros(2 * size - 1, dtype=np.int8)
        leaf, inner = size - 1, size                            # heads of the two queues
        for node in range(size, 2 * size - 1):
            children = []
            for _ in range(2):
                if leaf >= 0 and weight[leaf] < weight[inner]:
                    children.append(leaf)
                    leaf -= 1
                else:
                    children.append(inner)
                    inner += 1
            weight[node] = weight[children[0]] + weight[children[1]]
            parent[children] = node
            bit[children[1]] = 1
        root = 2 * size - 2
        depth = np.zeros(2 * size - 1, dtype=np.int64)
        for node in range(root - 1, -1, -1):                   # a parent is always made after its children
            depth[node] = depth[parent[node]] + 1
        leaf_depths = depth[:size]
        width = int(leaf_depths.max())
        points = np.zeros((size, width), dtype=np.int64)
        codes = np.zeros((size, width), dtype=np.float32)
        current, leaves = np.arange(size), np.arange(size)
        for up in range(width):                                 # all leaves climb together, one level a pass
            climbing = leaf_depths > up
            column = leaf_depths[climbing] - 1 - up             # the path position, counted from the root
            codes[leaves[climbing], column] = bit[current[climbing]]
            points[leaves[climbing], column] = parent[current[climbing]] - size
            current = np.where(climbing, parent[current], current)
        by_word = np.empty(size, dtype=np.int64)
        by_word[order] = np.arange(size)                        # word id -> leaf position
        return cls(torch.as_tensor(points[by_word], device=device), torch.as_tensor(codes[by_word], device=device),
                   torch.as_tensor(leaf_depths[by_word], device=device))

    def paths(self, words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(points, labels 1 - code, on-path 0/1), each (len(words), D) with D the deepest of these words."""
        depths = self.depths.index_select(0, words)
        width = int(depths.max())
        points = self.points[:, :width].index_select(0, words)
        labels = 1.0 - self.codes[:, :width].index_select(0, words)
        on_path = (torch.arange(width, device=words.device) < depths.unsqueeze(1)).to(labels.dtype)
        return points, labels, on_path

    def log_probability(self, syn1: torch.Tensor, hidden: torch.Tensor, word: int) -> torch.Tensor:
        """log p(word | hidden) (module docstring), for tests and inspection."""
        depth = int(self.depths[word])
        scores = syn1[self.points[word, :depth]] @ hidden
        signs = 1.0 - 2.0 * self.codes[word, :depth].to(scores.dtype)
        return torch.nn.functional.logsigmoid(signs * scores).sum()


def hs_cbow(hidden: torch.Tensor, centres: torch.Tensor, weights: torch.Tensor, syn1: torch.Tensor,
            tree: HuffmanTree, lr: float):
    """Hierarchical-softmax step of CBOW: inputs `hidden` (N, d) predicting the words `centres` (N,), each
    weighted (0 for a centre without context). Returns lr x the gradient ascent direction for `hidden` (N, d), and
    for the inner nodes: their ids, rows of lr x gradient and uses (N x D each, padded entries 0)."""
    size, dim = hidden.shape
    points, labels, on_path = tree.paths(centres)
    nodes = syn1.index_select(0, points.view(-1)).view(size, -1, dim)        # (N, D, d)
    scores = torch.bmm(nodes, hidden.unsqueeze(2)).squeeze(2)               # (N, D)
    uses = on_path * weights.unsqueeze(1)
    g = (labels - torch.sigmoid(scores)).mul_(uses).mul_(lr)
    grad_hidden = torch.bmm(g.unsqueeze(1), nodes).squeeze(1)
    grad_nodes = g.unsqueeze(2) * hidden.unsqueeze(1)
    return grad_hidden, points.view(-1), grad_nodes.view(-1, dim), uses.view(-1)


def hs_skipgram(windowed_inputs: torch.Tensor, centres: torch.Tensor, context: torch.Tensor, syn1: torch.Tensor,
                tree: HuffmanTree, lr: float):
    """Hierarchical-softmax step of Skip-gram: every context word j of centre i (`context` (N, C) 0/1 over the
    columns of `windowed_inputs` (N, C, d), the input vectors around each centre) predicts word i. Returns lr x the
    gradient ascent direction for each (centre, column) input (N, C, d), and for the inner nodes: ids, rows of
    lr x gradient and uses (pairs through the node), N x D each."""
    size, _, dim = windowed_inputs.shape
    points, labels, on_path = tree.paths(centres)
    nodes = syn1.index_select(0, points.view(-1)).view(size, -1, dim)        # (N, D, d)
    scores = torch.bmm(nodes, windowed_inputs.transpose(1, 2))              # (N, D, C)
    g = (labels.unsqueeze(2) - torch.sigmoid(scores)).mul_(on_path.unsqueeze(2)).mul_(context.unsqueeze(1))
    g.mul_(lr)
    grad_inputs = torch.bmm(g.transpose(1, 2), nodes)                        # (N, C, d)
    grad_nodes = torch.bmm(g, windowed_inputs)                               # (N, D, d)
    uses = on_path * context.sum(1, keepdim=True)
    return grad_inputs, points.view(-1), grad_nodes.view(-1, dim), uses.view(-1)
