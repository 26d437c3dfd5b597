"""word2vec: CBOW and Skip-gram with negative sampling and/or hierarchical softmax (Mikolov et al. 2013), trained
in torch on CPU or GPU.

    vocab = build_vocabulary(open("corpus.txt"), min_count=5)
    ids, starts = encode(open("corpus.txt"), vocab)
    vectors = train_word2vec(ids, starts, vocab, Word2VecSettings(method="skipgram"), device="cuda")

Each word has an input vector (the rows of `w_in`, what we return) and an output vector (`w_out`). Both
methods slide over every kept position i of every sentence (a line; windows never cross lines):

    subsampling  each occurrence of a word of count c among N is kept with probability
                 min(1, (sqrt(c / (t N)) + 1) t N / c), t = `sample` (`vocab.keep_probabilities`), drawn afresh
                 every epoch; dropped words are removed before windows are taken (so windows reach further)
    window       dynamic: b_i uniform in [0, window), the context of i is the kept words at distance
                 <= window - b_i in the same sentence
    skipgram     every (context j, centre i) pair maximises log s(x_j . y_i) + sum_k log s(-x_j . y_k)
    cbow         h_i = mean of x_j over the context (cbow_mean); maximises log s(h_i . y_i) + sum log s(-h_i . y_k);
                 as in word2vec, the gradient w.r.t. h_i is added whole to every x_j of the context
    negatives    y_k for noise words drawn from P(w) = c_w^0.75 / sum c^0.75 (`vocab.noise_distribution`),
                 through an alias table (`pipeline.embeddings.sampling`)
    hs           (`hs=True`) the output side is also (with negative 0: only) a hierarchical softmax over a Huffman
                 tree of the vocabulary (`pipeline.embeddings.huffman`): log p(i | x_j) for Skip-gram, log p(i | h_i)
                 for CBOW, the path's inner-node vectors in `syn1` (zero at the start)
    updates      plain SGD with a learning rate decaying linearly from `alpha` to `min_alpha` over all words of
                 all epochs (word2vec's schedule); x initialised uniform(-0.5, 0.5) / dim, y at zero

What differs from word2vec.c and gensim (which update one pair at a time, Hogwild over threads):
- Large batches: a batch of `batch_words` corpus words (whole sentences) is processed at once. Its rows are
  gathered into contiguous tensors; the pairs at each offset 1..window are shifted slices of them (no per-pair
  gather), the sigmoid gradients are written out by hand (no autograd), and the updates are summed into the
  matrices with one `index_add_` each: the fused equivalent of sparse gradients with SGD. Gradients within a
  batch are computed from the same (stale) parameters; a word seen n times in a batch gets the sum of n updates,
  scaled by row_cap / n when n (counted in pairs) exceeds `row_cap`: unscaled sums diverge for frequent words
  in large batches. Staleness costs quality: on 2M words, 4096-word batches lose ~1 analogy point to 2048.
- Shared negatives: each group of `negative_group` consecutive positions shares `group_negatives` noise words,
  each weighted negative / group_negatives, so every pair still carries `negative` negatives' worth of gradient in
  expectation (the sharing of Ji et al. 2016, "Parallelizing word2vec in shared and distributed memory"); it turns
  the negative step into a batched matrix product and cuts the rows gathered per word from ~negative to
  group_negatives / negative_group (`SHARED_NEGATIVES`: 0.5 for CBOW, 4 for Skip-gram, whose quality needs them).
  A noise word equal to the positive one is not skipped (word2vec skips it).
- The exact sigmoid (word2vec clips |score| >= 6 and skips those updates; it reads a 1000-entry table).
- Words per second and progress count in-vocabulary corpus words (before subsampling).

We wrote our own because no Hugging Face library trains word2vec, and gensim (the reference we benchmark
against, benchmarks/_w2v_probe.py) runs on CPU only. Deterministic for a seed on CPU.
Hierarchical softmax is batched the same way: a batch's paths are padded to its deepest, Skip-gram scores every
inner node of a centre's path against all its context words in one `bmm` over the windowed input rows, and the
inner nodes' summed updates are capped like the rows' (the root is on every path). Not implemented:
multi-process training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from pipeline.embeddings.checkpoint import EpochCheckpoint, EpochState
from pipeline.embeddings.huffman import HuffmanTree, hs_cbow, hs_skipgram
from pipeline.embeddings.sampling import AliasTable, draw_noise, dynamic_windows, subsample
from pipeline.embeddings.vectors import WordVectors
from pipeline.embeddings.vocab import EmbeddingsError, Vocabulary, keep_probabilities, noise_distribution

METHODS = ("cbow", "skipgram")
# (negative_group, group_negatives) by method, measured on 20M words against gensim (benchmarks/embeddings_vs_gensim.py):
# CBOW at (64, 32) is within 0.2 analogy points of gensim at 0.93M words/s, (16, 64) 0.63M; Skip-gram at (16, 16)
# lost 2.9 points, (16, 64) is level with gensim
SHARED_NEGATIVES = {"cbow": (64, 32), "skipgram": (16, 64)}


@dataclass
class Word2VecSettings:
    method: str = "cbow"            # "cbow" (predict a word from its context's mean) or "skipgram"
    vector_size: int = 100          # word2vec's and gensim's default
    window: int = 5                 # max distance of a context word; each position draws its own in [1, window]
    negative: int = 5               # noise words per pair (word2vec: 5-20 for small corpora, 2-5 for large; 0: none)
    hs: bool = False                # also (with negative 0: only) hierarchical softmax (`pipeline.embeddings.huffman`)
    sample: float = 1e-3            # subsampling threshold t (gensim's default; 0: off)
    alpha: float = 0.025            # initial learning rate (gensim's default for both methods)
    min_alpha: float = 0.0001       # final learning rate, reached linearly at the end of the last epoch
    epochs: int = 5
    batch_words: int = 2048         # corpus words per batch (whole sentences): larger is faster, staler (4096:
                                    # -1 to -2 analogy points on 2M words; 16384 diverges without row_cap)
    negative_group: int | None = None   # consecutive positions sharing one draw of noise words
    group_negatives: int | None = None  # noise words drawn per group, each weighted negative / group_negatives
                                        # None: the method's SHARED_NEGATIVES
    ns_exponent: float = 0.75       # the unigram^0.75 noise distribution
    row_cap: float = 128.0          # a row updated by n > row_cap pairs in a batch gets its sum x row_cap / n
                                    # (skipgram diverged at 256 with 4096-word batches)
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise EmbeddingsError(f"method: expected one of {METHODS}, got {self.method!r}")
        group, per_group = SHARED_NEGATIVES[self.method]
        self.negative_group = group if self.negative_group is None else self.negative_group
        self.group_negatives = per_group if self.group_negatives is None else self.group_negatives
        for name in ("vector_size", "window", "epochs", "batch_words", "negative_group", "group_negatives",
                     "row_cap"):
            if getattr(self, name) < 1:
                raise EmbeddingsError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.negative < (0 if self.hs else 1):
            raise EmbeddingsError(f"negative: expected >= {0 if self.hs else 1} "
                                  f"({'with' if self.hs else 'without'} hs), got {self.negative}")
        if not 0 < self.min_alpha <= self.alpha:
            raise EmbeddingsError(f"alpha, min_alpha: expected 0 < min_alpha <= alpha, got {self.alpha}, "
                                  f"{self.min_alpha}")
        keep_probabilities(np.ones(1), self.sample)                    # validates sample


def batch_bounds(sentence_starts: np.ndarray, n_ids: int, batch_words: int) -> np.ndarray:
    """Sentence indices where batches start (plus the end): whole sentences, ~`batch_words` words each."""
    starts = np.asarray(sentence_starts, dtype=np.int64)
    targets = np.arange(0, n_ids, batch_words, dtype=np.int64)
    bounds = np.unique(np.searchsorted(starts, targets, side="left"))
    return np.append(bounds[bounds < len(starts)], len(starts))


def _pair_masks(windows: torch.Tensor, sentence: torch.Tensor, offset: int):
    """For pairs (i, i + offset): whether i + offset is in i's context, and whether i is in i + offset's."""
    same = sentence[:-offset] == sentence[offset:]
    return same & (windows[:-offset] >= offset), same & (windows[offset:] >= offset)


def _negative_step(inputs: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor, lr: float,
                   settings: Word2VecSettings, generator: torch.Generator, noise_table: AliasTable):
    """Shared negatives for `inputs` (L, d): gradient to the inputs, noise ids drawn and their gradients."""
    length, dim = inputs.shape
    group, per_group = settings.negative_group, settings.group_negatives
    groups = -(-length // group)
    pad = groups * group - length
    if pad:
        inputs = torch.cat([inputs, inputs.new_zeros(pad, dim)])
        weights = torch.cat([weights, weights.new_zeros(pad)])
    ids = draw_noise(noise_table, groups * per_group, generator)
    rows = noise.index_select(0, ids).view(groups, per_group, dim)
    grouped = inputs.view(groups, group, dim)
    scores = torch.bmm(grouped, rows.transpose(1, 2))                       # (groups, group, per_group)
    coef = torch.sigmoid(scores).mul_(-lr * settings.negative / per_group)
    coef.mul_(weights.view(groups, group, 1))
    grad_inputs = torch.bmm(coef, rows).view(-1, dim)[:length]
    grad_rows = torch.bmm(coef.transpose(1, 2), grouped).view(-1, dim)
    uses = weights.view(groups, group).sum(1, keepdim=True).mul_(settings.negative / per_group)
    return grad_inputs, ids, grad_rows, uses.expand(groups, per_group).reshape(-1)


@dataclass
class _Model:
    """What a batch reads: the input vectors, the negative-sampling output vectors and noise table (negative > 0),
    the hierarchical softmax's inner-node vectors and tree (hs)."""

    w_in: torch.Tensor
    w_out: torch.Tensor | None
    noise_table: AliasTable | None
    syn1: torch.Tensor | None
    tree: HuffmanTree | None

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in ("w_in", "w_out", "syn1") if getattr(self, name) is not None}


Updates = dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]  # matrix -> (rows, grads, uses) parts


def _skipgram_batch(model: _Model, words, windows, sentence, lr, settings, generator) -> Updates:
    """Gradient steps of a batch of kept positions, by matrix (`Updates`)."""
    x = model.w_in.index_select(0, words)        # index_select, not w_in[words]: the same rows, 5x faster on CPU
    updates: Updates = {"w_in": [], "w_out": [], "syn1": []}
    if settings.negative:
        y = model.w_out.index_select(0, words)
        grad_x, grad_y = torch.zeros_like(x), torch.zeros_like(y)
        pairs = torch.zeros(len(x), dtype=x.dtype, device=x.device)        # pairs each x_j is the input of
        centred = torch.zeros_like(pairs)                                   # pairs each y_i is the output of
        for offset in range(1, min(settings.window, len(x) - 1) + 1):
            later_in_ctx, earlier_in_ctx = _pair_masks(windows, sentence, offset)
            for mask, inp, out in ((later_in_ctx, slice(offset, None), slice(None, -offset)),
                                   (earlier_in_ctx, slice(None, -offset), slice(offset, None))):
                score = (x[inp] * y[out]).sum(1)
                g = (1 - torch.sigmoid(score)).mul_(mask).mul_(lr)        # lr * (1 - s(x_j . y_i)) on pairs
                grad_x[inp].addcmul_(g[:, None], y[out])
                grad_y[out].addcmul_(g[:, None], x[inp])
                pairs[inp] += mask
                centred[out] += mask
        neg_x, noise_ids, neg_rows, noise_uses = _negative_step(x, model.w_out, pairs, lr, settings, generator,
                                                                model.noise_table)
        updates["w_in"].append((words, grad_x.add_(neg_x), pairs))
        updates["w_out"] += [(words, grad_y, centred), (noise_ids, neg_rows, noise_uses)]
    if settings.hs:
        gather, scatter = _context_weights(windows, sentence, settings.window, x.dtype)
        grad_inputs, node_ids, grad_nodes, node_uses = hs_skipgram(_windowed(x, settings.window), words, gather,
                                                                   model.syn1, model.tree, lr)
        updates["w_in"].append((words, _unwindowed_sum(grad_inputs, settings.window), scatter.sum(1)))
        updates["syn1"].append((node_ids, grad_nodes, node_uses))
    return updates


def _windowed(rows: torch.Tensor, window: int) -> torch.Tensor:
    """(L, 2·window + 1, d) view: [i, k] is rows[i + k - window], zero outside [0, L)."""
    length, dim = rows.shape
    padded = torch.cat([rows.new_zeros(window, dim), rows, rows.new_zeros(window, dim)])
    return padded.as_strided((length, 2 * window + 1, dim), (dim, dim, 1))


def _unwindowed_sum(windowed: torch.Tensor, window: int) -> torch.Tensor:
    """The inverse direction of `_windowed` for gradients: (L, d) whose row j sums windowed[i, k] over the (i, k)
    with i + k - window = j."""
    length, columns, dim = windowed.shape
    padded = windowed.new_zeros(length + 2 * window, dim)
    for column in range(columns):
        padded[column:column + length] += windowed[:, column]
    return padded[window:window + length]


def _context_weights(windows, sentence, window: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(gather, scatter), each (L, 2·window + 1) of 0/1: gather[i, window + o] = 1 when i + o is in the context
    of centre i (0 < |o| <= windows[i], same sentence); scatter[j, window - o] = 1 when j is in the context of
    centre j - o (the same pairs, seen from the context word), so that rows_j of the context words = bmm(gather,
    windowed x) and the context words' gradient = bmm(scatter, windowed gradient of the centres)."""
    length, columns = len(windows), 2 * window + 1
    outside = sentence.new_full((window,), -1)                                  # no sentence: never the same
    padded = torch.cat([outside, sentence, outside])
    neighbours = padded.as_strided((length, columns), (1, 1))                  # [i, k]: sentence of i + k - window
    distance = (torch.arange(columns, device=windows.device) - window).abs()
    gather = (neighbours == sentence.unsqueeze(1)) & (distance <= windows.unsqueeze(1)) & (distance > 0)
    gather = gather.to(dtype)
    # scatter[j, k] = gather[j + k - window, 2·window - k]: the diagonal of the windowed view of gather's columns
    # reversed ([j, k, c] = gather[j + k - window, 2·window - c])
    scatter = _windowed(gather.flip(1), window).diagonal(dim1=1, dim2=2).contiguous()
    return gather, scatter


def _cbow_batch(model: _Model, words, windows, sentence, lr, settings, generator) -> Updates:
    x = model.w_in.index_select(0, words)
    gather, scatter = _context_weights(windows, sentence, settings.window, x.dtype)
    hidden = torch.bmm(gather.unsqueeze(1), _windowed(x, settings.window)).squeeze(1)
    count = gather.sum(1)
    centre = (count > 0).to(x.dtype)
    hidden.div_(count.clamp(min=1)[:, None])
    grad_hidden = torch.zeros_like(hidden)
    updates: Updates = {"w_in": [], "w_out": [], "syn1": []}
    if settings.negative:
        y = model.w_out.index_select(0, words)
        score = (hidden * y).sum(1)
        g = (1 - torch.sigmoid(score)).mul_(centre).mul_(lr)
        grad_hidden.addcmul_(y, g[:, None])
        neg_hidden, noise_ids, neg_rows, noise_uses = _negative_step(hidden, model.w_out, centre, lr, settings,
                                                                     generator, model.noise_table)
        grad_hidden.add_(neg_hidden)
        updates["w_out"] += [(words, hidden * g[:, None], centre), (noise_ids, neg_rows, noise_uses)]
    if settings.hs:
        hs_hidden, node_ids, grad_nodes, node_uses = hs_cbow(hidden, words, centre, model.syn1, model.tree, lr)
        grad_hidden.add_(hs_hidden)
        updates["syn1"].append((node_ids, grad_nodes, node_uses))
    # each context word gets the whole gradient of every centre it serves; `served` counts those centres
    grad_x = torch.bmm(scatter.unsqueeze(1), _windowed(grad_hidden, settings.window)).squeeze(1)
    updates["w_in"].append((words, grad_x, scatter.sum(1)))
    return updates


def _add_capped(matrix: torch.Tensor, parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], cap: float,
                tally: torch.Tensor):
    """Add each part's gradients (rows, grads, uses) into `matrix`, the gradients of rows updated by n > cap pairs
    in the batch (all parts together) scaled by cap / n: their summed (stale) update is at most cap times their
    average one. Sequential SGD shrinks each step as the row learns; a sum of n stale steps overshoots and, for
    frequent words in large batches, diverges. `tally`: zeros, at least as long as `matrix`, left zero (the
    uses are summed there for the batch's rows only: no pass over the whole vocabulary)."""
    for rows, _, uses in parts:
        tally.index_add_(0, rows, uses.to(tally.dtype))
    for rows, grads, _ in parts:
        scale = tally.index_select(0, rows).clamp_(min=cap).reciprocal_().mul_(cap)
        matrix.index_add_(0, rows, grads.mul_(scale.unsqueeze(1)))
    for rows, _, _ in parts:
        tally.index_fill_(0, rows, 0.0)


def train_word2vec(ids: np.ndarray, sentence_starts: np.ndarray, vocab: Vocabulary, settings: Word2VecSettings,
                   device: str | torch.device = "cpu",
                   progress: Callable[[int, int], None] | None = None,
                   checkpoint: EpochCheckpoint | None = None) -> WordVectors:
    """Train CBOW or Skip-gram (see the module docstring) on the encoded corpus (`vocab.encode`) and return the input
    vectors in vocabulary order. `progress(words_done, total_words)` is called after every batch. With
    `checkpoint`, training continues from its last finished epoch and saves after every epoch but the last."""
    device = torch.device(device)
    ids = np.asarray(ids)
    if not len(ids):
        raise EmbeddingsError("empty corpus: no in-vocabulary words to train on")
    if ids.min() < 0 or ids.max() >= len(vocab):
        raise EmbeddingsError(f"ids: expected word ids in [0, {len(vocab)}), got [{ids.min()}, {ids.max()}]")
    starts = np.asarray(sentence_starts, dtype=np.int64)
    if not len(starts) or starts[0] != 0 or (np.diff(starts) <= 0).any() or starts[-1] >= len(ids):
        raise EmbeddingsError("sentence_starts: expected increasing offsets into ids, the first 0")
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    dim, vocab_size = settings.vector_size, len(vocab)
    w_in = (torch.rand(vocab_size, dim, generator=generator, device=device) - 0.5) / dim
    negative, hs = settings.negative > 0, settings.hs
    noise = noise_distribution(vocab.counts, settings.ns_exponent)
    model = _Model(w_in, torch.zeros(vocab_size, dim, device=device) if negative else None,
                   AliasTable.build(noise, device) if negative else None,
                   torch.zeros(vocab_size - 1, dim, device=device) if hs else None,
                   HuffmanTree.build(vocab.counts, device) if hs else None)
    keep = torch.as_tensor(keep_probabilities(vocab.counts, settings.sample), dtype=torch.float32, device=device)
    tally = torch.zeros(vocab_size, device=device)   # `_add_capped`'s scratch
    corpus = torch.as_tensor(ids.astype(np.int64), device=device)
    lengths = torch.as_tensor(np.diff(np.append(starts, len(ids))), device=device)
    bounds = batch_bounds(starts, len(ids), settings.batch_words)
    step = _cbow_batch if settings.method == "cbow" else _skipgram_batch
    total, done, first_epoch = len(ids) * settings.epochs, 0, 0
    resumed = checkpoint.load() if checkpoint is not None else None
    if resumed is not None:
        for name, tensor in model.tensors().items():
            tensor.copy_(resumed.tensors[name])
        generator.set_state(resumed.generator_state)
        first_epoch, done = resumed.epoch, resumed.scalars["words_done"]
    for epoch in range(first_epoch, settings.epochs):
        for first, last in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            begin = int(starts[first])
            end = int(starts[last]) if last < len(starts) else len(ids)
            lr = settings.alpha - (settings.alpha - settings.min_alpha) * done / total
            words = corpus[begin:end]
            kept = subsample(words, keep, generator)
            sentence = torch.repeat_interleave(torch.arange(last - first, device=device), lengths[first:last])
            words, sentence = words[kept], sentence[kept]
            if len(words) > 1:
                windows = dynamic_windows(len(words), settings.window, generator, device)
                for name, parts in step(model, words, windows, sentence, lr, settings, generator).items():
                    if parts:
                        _add_capped(getattr(model, name), parts, settings.row_cap, tally)
            done += end - begin
            if progress is not None:
                progress(done, total)
        if checkpoint is not None and epoch + 1 < settings.epochs:
            checkpoint.save(EpochState(epoch + 1, model.tensors(), generator.get_state(), {"words_done": done}))
    if not torch.isfinite(w_in).all():
        raise EmbeddingsError(f"training diverged (non-finite vectors): lower row_cap ({settings.row_cap}), "
                              f"batch_words ({settings.batch_words}) or alpha ({settings.alpha})")
    return WordVectors(vocab.words, w_in.cpu().numpy())


def tqdm_progress(desc: str = "word2vec"):
    """A `progress` callback drawing a tqdm bar in words, with words/s."""
    from tqdm.auto import tqdm

    bar = None

    def update(done: int, total: int):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="word", unit_scale=True, smoothing=0.1)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update
