"""GloVe (Pennington, Socher and Manning 2014): weighted least squares on log co-occurrence counts, in torch.

    cooc = count_cooccurrences(ids, starts, len(vocab), window=10)
    vectors = train_glove(cooc, vocab.words, GloVeSettings(vector_size=100, epochs=15), device="cuda")

The model: a word vector w_i and bias b_i, a context vector w~_j and bias b~_j per word, fitted to the nonzero
entries X_ij of the co-occurrence matrix:

    J = sum_ij f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2        (`glove_loss`)
    f(x) = (x / x_max)^alpha if x < x_max else 1                       (`weighting`; x_max 10, alpha 0.75)

Optimisation, as the Stanford C tool (`glove.c`) does it: parameters start uniform in [-0.5, 0.5) / dim
(biases too); each epoch visits the nonzero entries in a random order; an entry's error diff = w_i . w~_j + b_i +
b~_j - log X_ij gives fdiff = f(X_ij) diff (the gradient of J / 2) and AdaGrad steps with squared-gradient sums
that start at 1:

    vectors   t = clip(fdiff * w~_j, +-100) * eta;   w_i -= t / sqrt(G_wi);   G_wi += t^2     (and w~_j alike)
    biases    b_i -= fdiff / sqrt(G_bi);              G_bi += fdiff^2        (no learning rate: as the C tool)

and the saved vector of a word is w_i + w~_i (the C tool's `-model 2`).

What differs from the C tool: the entries are taken `batch_size` at a time (a full random permutation per epoch,
seeded, where the C tool shuffles in memory-sized blocks and threads walk their own part): every entry of a batch
reads the parameters as they were at the start of the batch and the steps are applied with `index_add_`. This is
the batched form of the C tool's Hogwild threads, which also read parameters that other threads are updating. A
word that occurs k times in one batch gets one step, the sum T of its k entries' steps t, taken against G plus
(k - 1) / k of their squared sum S, and then G += S. For k = 1 that is the C tool's step exactly. For larger k
it keeps a frequent word's bias, whose steps have no learning rate, from moving k times as far as one entry
would move it (about sqrt(k) times instead, as k sequential AdaGrad steps would). Parameters are float32 (the
C tool uses double), so the fit runs on GPUs and uses the vector units on CPUs.

`workers` > 1 splits each epoch's batches among threads (every workers-th batch, one torch thread each) that update
the shared tables without locks, as the C tool's threads do; the result then varies from run to run.

Why our own code: no Hugging Face library trains GloVe (gensim reads GloVe files but does not train them), and
the C tool runs on one machine's CPU threads only; this runs on CPU or a GPU (`device`).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.embeddings.cooccurrence import Cooccurrences
from pipeline.embeddings.checkpoint import EpochCheckpoint, EpochState
from pipeline.embeddings.vectors import WordVectors
from pipeline.embeddings.vocab import EmbeddingsError


@dataclass
class GloVeSettings:
    vector_size: int = 100        # dimensions of each word vector
    x_max: float = 10.0           # counts at or above x_max get weight 1 (the paper's 100 suits corpora > 1B words)
    alpha: float = 0.75           # weighting exponent, the paper's
    learning_rate: float = 0.05   # AdaGrad's initial step for the vectors (biases take none: the C tool's eta)
    epochs: int = 15              # passes over the nonzero co-occurrences
    batch_size: int = 8192        # entries per batched update: larger is faster, and more stale within a batch
    seed: int = 0                 # initialisation and the order of the entries
    grad_clip: float = 100.0      # the C tool's clip on each vector-gradient component
    workers: int = 1              # threads taking batches at once, Hogwild as the C tool's (1: deterministic)


def weighting(x, x_max: float = 10.0, alpha: float = 0.75):
    """f(x) = (x / x_max)^alpha below x_max, else 1 (a tensor or array of counts, same type back)."""
    if isinstance(x, torch.Tensor):
        return torch.where(x < x_max, (x / x_max) ** alpha, torch.ones_like(x))
    x = np.asarray(x, dtype=np.float64)
    return np.where(x < x_max, (x / x_max) ** alpha, 1.0)


def glove_loss(w: torch.Tensor, w_context: torch.Tensor, b: torch.Tensor, b_context: torch.Tensor,
               rows: torch.Tensor, cols: torch.Tensor, counts: torch.Tensor, x_max: float = 10.0,
               alpha: float = 0.75) -> torch.Tensor:
    """J = sum f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2 over the entries (rows, cols, counts)."""
    diff = (w[rows] * w_context[cols]).sum(-1) + b[rows] + b_context[cols] - torch.log(counts)
    return (weighting(counts, x_max, alpha) * diff * diff).sum()


TABLES = ("word", "context", "word_gradsq", "context_gradsq")  # what an epoch checkpoint holds


class GloVeModel:
    """The parameters: `word` and `context` tables (V, dim + 1), the last column the bias, and their AdaGrad sums."""

    def __init__(self, vocab_size: int, dim: int, seed: int = 0, device="cpu", dtype=torch.float32):
        generator = torch.Generator().manual_seed(seed)
        init = (torch.rand(2, vocab_size, dim + 1, generator=generator, dtype=torch.float64) - 0.5) / dim
        self.word = init[0].to(device=device, dtype=dtype).contiguous()
        self.context = init[1].to(device=device, dtype=dtype).contiguous()
        self.word_gradsq = torch.ones_like(self.word)
        self.context_gradsq = torch.ones_like(self.context)
        self.dim = dim

    def vectors(self) -> np.ndarray:
        """W + W~ without the biases (the C tool's `-model 2`), float32 on the CPU."""
        return (self.word[:, :self.dim] + self.context[:, :self.dim]).float().cpu().numpy()


class Workspace:
    """One worker's scratch memory for `glove_step`, allocated once: the batch's gathered rows, their product and
    steps (`batch_size` x (dim + 1) each) and a word -> slot table for grouping a batch's repeated rows. Reusing it
    saves an allocation and its page faults per intermediate per batch (a third of the time on CPU)."""

    def __init__(self, model: GloVeModel, batch_size: int):
        table = model.word
        self.buffers = torch.empty(5, batch_size, table.shape[1], dtype=table.dtype, device=table.device)
        self.slot = torch.empty(len(table), dtype=torch.int64, device=table.device)
        self.positions = torch.arange(len(table), device=table.device)

    def group(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What `torch.unique(index, return_inverse=True, return_counts=True)` gives (unique ascending), by
        counting instead of sorting: O(batch + vocabulary), 2-3x faster than the sort on CPU."""
        counts = torch.bincount(index, minlength=len(self.slot))
        unique = torch.nonzero(counts).squeeze(1)
        self.slot.index_copy_(0, unique, self.positions[:len(unique)])
        return unique, torch.index_select(self.slot, 0, index), torch.index_select(counts, 0, unique)


def _adagrad(table: torch.Tensor, gradsq: torch.Tensor, index: torch.Tensor, descent: torch.Tensor,
             squares: torch.Tensor, workspace: Workspace) -> None:
    """Apply per-entry AdaGrad steps to rows `index` of `table`; `descent` holds the steps' negatives (already
    scaled by the learning rate) and `squares` is scratch of its shape. A row met k times takes
    T / sqrt(G + S (k - 1) / k), then G += S (T, S: sum and squared sum of its steps); for k = 1 that is the C
    tool's step."""
    unique, inverse, counts = workspace.group(index)
    total = torch.zeros(len(unique), descent.shape[1], dtype=descent.dtype, device=descent.device)
    total.index_add_(0, inverse, descent)
    squared = torch.zeros_like(total).index_add_(0, inverse, torch.mul(descent, descent, out=squares))
    denominator = torch.index_select(gradsq, 0, unique)
    gradsq.index_add_(0, unique, squared)
    counts = counts.to(descent.dtype).unsqueeze(1)
    denominator.addcmul_(squared, (counts - 1) / counts)
    table.index_add_(0, unique, total.div_(denominator.sqrt_()))   # index_add_ without alpha: 3x faster


def glove_step(model: GloVeModel, rows: torch.Tensor, cols: torch.Tensor, log_counts: torch.Tensor,
               weights: torch.Tensor, learning_rate: float, grad_clip: float = 100.0,
               workspace: Workspace | None = None) -> torch.Tensor:
    """One batched update on the entries (rows, cols) with log X and f(X) given; returns the batch's cost
    sum 0.5 f diff^2 (the C tool's), computed before the update. `workspace`: reusable scratch (one per worker)."""
    dim, size = model.dim, len(rows)
    workspace = workspace or Workspace(model, size)
    word, context, product, steps, squares = (buffer[:size] for buffer in workspace.buffers)
    torch.index_select(model.word, 0, rows, out=word)
    torch.index_select(model.context, 0, cols, out=context)
    torch.mul(word, context, out=product)                 # the whole rows' product, then the biases' taken out
    diff = product.sum(1) - product[:, dim] + word[:, dim] + context[:, dim] - log_counts
    fdiff = weights * diff
    cost = 0.5 * (fdiff * diff).sum()
    descent = (fdiff * -learning_rate).unsqueeze(1)       # clip(g) * eta = clip(g * eta, clip * eta) for eta > 0
    bound = grad_clip * learning_rate
    for table, gradsq, index, other in ((model.word, model.word_gradsq, rows, context),
                                        (model.context, model.context_gradsq, cols, word)):
        torch.mul(other, descent, out=steps)
        steps[:, :dim].clamp_(-bound, bound)
        steps[:, dim] = -fdiff                             # the bias: fdiff itself, no learning rate
        _adagrad(table, gradsq, index, steps, squares, workspace)
    return cost


def train_glove(cooc: Cooccurrences, vocab_words: list[str], settings: GloVeSettings | None = None,
                device="cpu", progress=None, checkpoint: EpochCheckpoint | None = None) -> WordVectors:
    """Fit GloVe to `cooc` (see the module docstring) and return W + W~ for `vocab_words` (row i = word id i).
    `progress(epoch, cost, seconds)` is called after each epoch with the mean 0.5 f diff^2 over the entries.
    With `checkpoint`, training continues from its last finished epoch and saves after every epoch but the last."""
    settings = settings or GloVeSettings()
    if len(vocab_words) != cooc.vocab_size:
        raise EmbeddingsError(f"{len(vocab_words)} words for a co-occurrence matrix of {cooc.vocab_size}")
    if not len(cooc):
        raise EmbeddingsError("no co-occurrences to train on (an empty corpus, or sentences of one word)")
    if settings.vector_size < 1 or settings.epochs < 0 or settings.batch_size < 1 or settings.x_max <= 0 \
            or settings.workers < 1:
        raise EmbeddingsError(f"GloVe settings out of range: {settings}")
    if np.any(np.asarray(cooc.values) <= 0):
        raise EmbeddingsError("co-occurrence values must be positive (their log is fitted)")
    device = torch.device(device)
    model = GloVeModel(cooc.vocab_size, settings.vector_size, settings.seed, device)
    counts = torch.from_numpy(np.asarray(cooc.values, dtype=np.float64))
    log_counts = torch.log(counts).float().to(device)
    weights = weighting(counts, settings.x_max, settings.alpha).float().to(device)
    rows = torch.from_numpy(np.asarray(cooc.rows, dtype=np.int64)).to(device)
    cols = torch.from_numpy(np.asarray(cooc.cols, dtype=np.int64)).to(device)
    del counts
    generator = torch.Generator().manual_seed(settings.seed)
    n, first_epoch = len(cooc), 1
    resumed = checkpoint.load() if checkpoint is not None else None
    if resumed is not None:
        for name in TABLES:
            getattr(model, name).copy_(resumed.tensors[name])
        generator.set_state(resumed.generator_state)
        first_epoch = resumed.epoch + 1
    starts = list(range(0, n, settings.batch_size))
    for epoch in range(first_epoch, settings.epochs + 1):
        began = time.perf_counter()
        order = torch.randperm(n, generator=generator).to(device)

        def fit(batch_starts: list[int]) -> torch.Tensor:
            cost = torch.zeros((), dtype=torch.float64, device=device)
            workspace = Workspace(model, settings.batch_size)
            for start in batch_starts:
                batch = order[start:start + settings.batch_size]
                entries = [torch.index_select(column, 0, batch) for column in (rows, cols, log_counts, weights)]
                cost += glove_step(model, *entries, settings.learning_rate, settings.grad_clip, workspace)
            return cost

        if settings.workers == 1:
            cost = fit(starts)
        else:  # Hogwild: each worker every workers-th batch, one torch thread each, no locks
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                with ThreadPoolExecutor(settings.workers) as pool:
                    cost = sum(job.result() for job in [pool.submit(fit, starts[worker::settings.workers])
                                                        for worker in range(settings.workers)])
            finally:
                torch.set_num_threads(threads)
        if progress is not None:
            progress(epoch, float(cost) / n, time.perf_counter() - began)
        if not math.isfinite(float(cost)):
            raise EmbeddingsError(f"GloVe diverged in epoch {epoch} (cost {float(cost)}): lower learning_rate "
                                  f"or batch_size")
        if checkpoint is not None and epoch < settings.epochs:
            checkpoint.save(EpochState(epoch, {name: getattr(model, name) for name in TABLES},
                                       generator.get_state(), {}))
    return WordVectors(list(vocab_words), model.vectors())
