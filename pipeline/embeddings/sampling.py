"""word2vec's random draws: the reduced window of each position, which occurrences subsampling keeps, and noise
words from an alias table (Walker's method, Vose's construction). Plain functions of a `torch.Generator`, so a
seed fixes every draw (`pipeline.embeddings.word2vec` uses them; the distributions are tested against their
formulas)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def dynamic_windows(n: int, window: int, generator: torch.Generator, device="cpu") -> torch.Tensor:
    """Effective window of each of n positions: window - b with b uniform in [0, window), i.e. uniform in
    [1, window] (word2vec's reduced window)."""
    b = torch.randint(0, window, (n,), generator=generator, device=device)
    return window - b


def subsample(words: torch.Tensor, keep: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Which occurrences of `words` to keep: each independently with probability keep[word]."""
    return torch.rand(len(words), generator=generator, device=words.device) < keep.index_select(0, words)


@dataclass
class AliasTable:
    """A discrete distribution over V ids in the form of Walker's alias method: id i is drawn as i itself with
    probability accept[i] / V and as the alias of the ids j with alias[j] = i with probability (1 - accept[j]) / V,
    so P(i) = (accept[i] + sum over j with alias[j] = i, j != i of (1 - accept[j])) / V. Two random numbers per
    draw, no search (word2vec reads a 1e8-entry table, gensim bisects a table of running sums)."""

    accept: torch.Tensor  # (V,) float64 in [0, 1]
    alias: torch.Tensor   # (V,) int64

    @classmethod
    def build(cls, probabilities: np.ndarray, device="cpu") -> "AliasTable":
        """Vose's construction: ids whose scaled probability V·p is below 1 are topped up by one above it."""
        p = np.asarray(probabilities, dtype=np.float64)
        scaled = p / p.sum() * len(p)
        accept, alias = np.ones(len(p)), np.arange(len(p))
        small = [i for i in range(len(p)) if scaled[i] < 1.0]
        large = [i for i in range(len(p)) if scaled[i] >= 1.0]
        while small and large:
            low, high = small.pop(), large.pop()
            accept[low], alias[low] = scaled[low], high
            scaled[high] -= 1.0 - scaled[low]
            (small if scaled[high] < 1.0 else large).append(high)
        return cls(torch.as_tensor(accept, device=device), torch.as_tensor(alias, device=device))

    def probabilities(self) -> np.ndarray:
        """The distribution the table draws from (the formula in the class docstring)."""
        accept, alias = self.accept.cpu().numpy(), self.alias.cpu().numpy()
        p = accept.copy()
        np.add.at(p, alias, 1.0 - accept)
        return p / len(p)


def draw_noise(table: AliasTable, n: int, generator: torch.Generator) -> torch.Tensor:
    """n word ids drawn from the noise distribution `table`."""
    device = table.accept.device
    ids = torch.randint(0, len(table.accept), (n,), generator=generator, device=device)
    accept = table.accept.index_select(0, ids)
    keep = torch.rand(n, generator=generator, device=device, dtype=torch.float64) < accept
    return torch.where(keep, ids, table.alias.index_select(0, ids))
