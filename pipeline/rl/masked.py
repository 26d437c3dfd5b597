"""Reductions over the valid tokens of a right-padded batch: mean, variance, whitening, entropy.

Ours, not imported: TRL removed these helpers with PPOTrainer in 1.13 (they lived in `trl.trainer.utils` and
`trl.experimental.ppo`), and no well-kept library ships PPO for language models on current TRL. The maths
follows TRL 1.12 (`masked_whiten` adds the mean back when `shift_mean=False`; variance is unbiased by default),
with one deliberate difference: masked entries are selected out with `torch.where`, never multiplied by 0, so
whatever sits there (inf, nan, last batch's numbers) cannot leak into a result or a gradient (0·inf is nan).

A mask is a bool tensor (or 0/1 numbers) broadcastable to `x`; True marks the entries that count.
"""

from __future__ import annotations

import torch

WHITEN_EPS = 1e-8  # added to the variance before the square root, as TRL does


def _bool_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return mask.to(device=x.device, dtype=torch.bool).expand_as(x)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None, all_reduce=None) -> torch.Tensor:
    """Mean of `x` over the entries where `mask` is True, over all of them (`dim=None`) or along `dim`.
    `all_reduce` (a function summing a tensor over processes, e.g. `accelerator.reduce`) makes the mean over the
    entries of every process (`dim=None` only).

    An all-masked reduction gives nan (0/0), as an empty mean should; callers that can meet one must check.
    """
    mask = _bool_mask(mask, x)
    kept = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    if dim is None:
        if all_reduce is not None:
            total, count = all_reduce(torch.stack([kept.sum(), mask.sum().to(x.dtype)]))
            return total / count
        return kept.sum() / mask.sum()
    return kept.sum(dim) / mask.sum(dim)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True, all_reduce=None) -> torch.Tensor:
    """Variance of the masked entries of `x` (all of them together, of every process with `all_reduce`), with
    Bessel's n/(n-1) when `unbiased`."""
    mask = _bool_mask(mask, x)
    mean = masked_mean(x, mask, all_reduce=all_reduce)
    var = masked_mean((x - mean) ** 2, mask, all_reduce=all_reduce)
    if unbiased:
        count = mask.sum()
        count = int(all_reduce(count.to(x.dtype)) if all_reduce is not None else count)
        if count < 2:
            raise ValueError(
                f"unbiased variance needs at least 2 valid entries, got {count} "
                "(whitening over a tiny mini-batch: use a bigger one, or unbiased=False)"
            )
        var = var * (count / (count - 1))
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, all_reduce=None) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-8) over the masked entries (of every process with `all_reduce`); the mean is
    added back when `shift_mean` is False (TRL's reward whitening keeps the rewards' sign that way). Masked
    entries of the result are 0."""
    mask = _bool_mask(mask, x)
    mean, var = masked_mean(x, mask, all_reduce=all_reduce), masked_var(x, mask, all_reduce=all_reduce)
    whitened = (x - mean) * torch.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, torch.zeros((), dtype=x.dtype, device=x.device))


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the last axis, per position: (..., V) -> (...).

    -Σ p·log p with 0·log 0 taken as 0, so logits of -inf (a vocabulary filtered out) give no nan. Computed
    in at least float32 (bf16 logits lose the small probabilities' share otherwise), returned in that dtype.
    """
    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    p = logp.exp()
    # select before multiplying: p·(-inf) would be nan in the value and in the gradient, even where unselected
    logp = torch.where(p > 0, logp, torch.zeros((), dtype=logp.dtype, device=logp.device))
    return -(p * logp).sum(-1)


def masked_entropy_from_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean per-token entropy (nats) of `logits` (B, T, V) over the tokens where `mask` (B, T) is True.

    Padding positions may hold anything, nan included: they are selected out before the mean.
    """
    mask = mask.to(device=logits.device, dtype=torch.bool)
    safe = torch.where(mask.unsqueeze(-1), logits, torch.zeros((), dtype=logits.dtype, device=logits.device))
    return masked_mean(entropy_from_logits(safe), mask)
