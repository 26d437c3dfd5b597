"""Per-token KL, per-token rewards and GAE for PPO on language models (one response = one episode).

Ours, not imported: TRL removed PPOTrainer in 1.13 and no well-kept library has PPO for LMs on current TRL.
The recipe is Ziegler et al. 2019 / Stiennon et al. 2020 as written up in "The N+ Implementation Details of
RLHF with PPO" (Huang et al. 2024): every response token is an action, its reward is -kl_coef·KL(policy‖ref)
at that token, and the reward model's score for the whole response is added at its last token.

Two choices differ from TRL 1.12's trainer, on purpose:
- the score goes on the last response token (the EOS, index lengths-1), inside the policy's mask. TRL put it
  one position past what it counted as the response (`sequence_lengths_p1`): on the first pad after the EOS
  when pad != eos (the episode one padding token longer, bootstrapping from the value predicted there), or on
  the EOS when pad == eos, which its policy loss then masked out;
- the episode ends at the last response token: the value after it is 0, also for a response cut off by the
  token budget (it is an episode end here, and `penalise_missing_eos` is how such responses are discouraged).

Shapes: (B, T) per token, (B,) per response; `lengths` (B,) counts the valid tokens of each right-padded row.
"""

from __future__ import annotations

import torch

KL_ESTIMATORS = ("k1", "k3")


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy ‖ reference) from the sampled tokens' log-probabilities.

    Schulman's approximations (http://joschu.net/blog/kl-approx.html), with r = p_ref / p = exp(logp_ref - logp):
    "k1" = logp - logp_ref (unbiased, any sign per token); "k3" = (r - 1) - log r (unbiased, >= 0, lower variance).
    Both are exactly 0 where logprobs == ref_logprobs. Padding positions give garbage: mask them afterwards.
    """
    if estimator == "k1":
        return logprobs - ref_logprobs
    if estimator == "k3":
        log_r = ref_logprobs - logprobs
        return torch.expm1(log_r) - log_r
    raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")


def _check_lengths(lengths: torch.Tensor, width: int) -> None:
    if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > width):
        raise ValueError(f"lengths must lie in [1, {width}], got min {int(lengths.min())}, max {int(lengths.max())}")


def token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, kl_coef: float, lengths: torch.Tensor
) -> torch.Tensor:
    """Per-token rewards (B, T): -kl_coef·kl on every response token, plus `scores[b]` on token lengths[b]-1.

    Positions at or beyond `lengths` are 0, whatever `kl` holds there.
    """
    batch, width = kl.shape
    if scores.shape != (batch,):
        raise ValueError(f"scores must be (batch,) = ({batch},), got {tuple(scores.shape)}")
    lengths = lengths.to(kl.device)
    _check_lengths(lengths, width)
    positions = torch.arange(width, device=kl.device).unsqueeze(0)
    valid = positions < lengths.unsqueeze(1)
    last = positions == (lengths - 1).unsqueeze(1)
    zero = torch.zeros((), dtype=kl.dtype, device=kl.device)
    rewards = torch.where(valid, -kl_coef * kl, zero)
    return torch.where(last, rewards + scores.to(kl.dtype).unsqueeze(1), rewards)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), backwards over the tokens of each row.

        delta_t = r_t + gamma·V_{t+1} - V_t,    A_t = delta_t + gamma·lam·A_{t+1},    returns_t = A_t + V_t

    with V and A taken as 0 past the last valid token (the episode ends there). `mask` (B, T) marks the valid
    tokens, a prefix of each row; a masked position ends the episode. Masked entries of both outputs are 0,
    whatever `rewards` and `values` hold there. Returns (advantages, returns), neither requiring grad.
    """
    mask = mask.to(device=rewards.device, dtype=torch.bool).expand_as(rewards)
    zero = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    rewards = torch.where(mask, rewards.detach(), zero)
    values = torch.where(mask, values.detach().to(rewards.dtype), zero)
    width = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(width)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = torch.where(mask[:, t], delta + gamma * lam * next_advantage, zero)
        advantages[:, t] = advantage
        next_value, next_advantage = values[:, t], advantage
    returns = torch.where(mask, advantages + values, zero)
    return advantages, returns
