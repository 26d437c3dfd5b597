"""Sampled responses -> what PPO scores and trains on: cut after the first EOS, lengths, masks, EOS penalty.

Ours, not imported: TRL removed PPOTrainer in 1.13 and with it `truncate_response`/`first_true_indices`.
One thing is done differently on purpose: the length of a response comes from the position of its first EOS,
never from where padding starts. Many tokenizers use the EOS as the pad token, and TRL 1.12's
`first_true_indices(response == pad) - 1` then ends the response *before* its EOS, so the policy loss never
saw the token whose log-probability says "stop here".

Responses are right-padded (B, T) token ids, T the generation budget (`max_new_tokens`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Truncated(NamedTuple):
    """Result of `truncate_after_eos`; unpacks as `responses, lengths, ended = truncate_after_eos(...)`."""

    responses: torch.Tensor  # (B, T) every token after the first EOS replaced by pad; the EOS kept
    lengths: torch.Tensor  # (B,) long: index of the first EOS + 1, or T when there is none
    ended: torch.Tensor  # (B,) bool: the response holds an EOS (False: cut off by the token budget)


def truncate_after_eos(responses: torch.Tensor, eos_token_id: int, pad_token_id: int) -> Truncated:
    """Replace every token after the first `eos_token_id` of each row by `pad_token_id`.

    The reward model must score what the user would see: the text up to and including the EOS, not whatever
    the sampler produced after it (HF generation already pads finished rows, but a batched or custom sampler
    need not). Works when pad == eos.
    """
    if responses.dim() != 2:
        raise ValueError(f"responses must be (batch, tokens), got shape {tuple(responses.shape)}")
    width = responses.shape[1]
    positions = torch.arange(width, device=responses.device)
    is_eos = responses == eos_token_id
    ended = is_eos.any(dim=1)
    first_eos = torch.where(is_eos, positions, width).min(dim=1).values if width else ended.long()
    lengths = torch.where(ended, first_eos + 1, width)
    cut = torch.where(positions.unsqueeze(0) >= lengths.unsqueeze(1), pad_token_id, responses)
    return Truncated(cut, lengths, ended)


def response_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width) bool, True on the first `lengths[b]` tokens of row b: the tokens the policy chose."""
    positions = torch.arange(width, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def penalise_missing_eos(scores: torch.Tensor, ended: torch.Tensor, penalty: float) -> torch.Tensor:
    """`scores + penalty` where a response has no EOS (cut off by the budget), `scores` unchanged elsewhere.

    `penalty` is negative (e.g. -1.0): it is added. TRL's `missing_eos_penalty` is the same idea with the
    opposite sign convention (a positive number, subtracted); a positive value here is refused rather than
    silently turned into a bonus for rambling. Returns a new tensor; `scores` is not modified.
    """
    if penalty > 0:
        raise ValueError(
            f"penalty must be <= 0 (it is added to the score), got {penalty}; "
            f"TRL's missing_eos_penalty={penalty} corresponds to penalty={-penalty}"
        )
    ended = ended.to(device=scores.device, dtype=torch.bool)
    return torch.where(ended, scores, scores + penalty)
