"""PPO's clipped surrogate policy loss and clipped value loss, per token, averaged over the valid tokens.

Ours, not imported: TRL removed PPOTrainer in 1.13 and no well-kept library has PPO for LMs on current TRL.
Same maths as TRL 1.12 (Schulman et al. 2017; the value clipping of OpenAI baselines), with two changes:
- masked entries are selected out *before* any exp or product, so garbage in padding (inf, nan, stale
  numbers) gives neither a nan loss nor a nan gradient;
- every statistic is a masked mean; TRL averaged `approxkl` and `ratio` over padding too, diluting them by
  the share of padding in the batch.
Statistics come back detached; only `loss` carries a gradient.
"""

from __future__ import annotations

import torch

from pipeline.rl.masked import masked_mean


def _select(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> dict[str, torch.Tensor]:
    """PPO-clip: masked mean of max(-A·ratio, -A·clip(ratio, 1-eps, 1+eps)), ratio = exp(logp - logp_old).

    Taking the max of the two losses is the pessimistic bound: once the ratio has moved past 1±eps in the
    direction A rewards, the clipped (constant) term wins and that token stops pushing.
    Returns loss, clip_fraction (share of valid tokens where the clipped term was strictly larger),
    approx_kl (mean of 0.5·logratio², the estimate in TRL and the N+ details), ratio_mean.
    """
    mask = mask.to(device=logprobs.device, dtype=torch.bool).expand_as(logprobs)
    log_ratio = _select(logprobs - old_logprobs.detach(), mask)
    advantages = _select(advantages.detach().to(logprobs.dtype), mask)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clip_fraction": masked_mean((clipped > unclipped).to(logprobs.dtype), mask),
            "approx_kl": masked_mean(0.5 * log_ratio**2, mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return {"loss": loss, **stats}


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float,
) -> dict[str, torch.Tensor]:
    """0.5 · masked mean of max((v - R)², (clip(v, v_old - eps_v, v_old + eps_v) - R)²).

    `old_values` are the value head's predictions at rollout time, `returns` the GAE targets. Returns loss and
    clip_fraction (share of valid tokens where the clipped error was strictly larger).
    """
    mask = mask.to(device=values.device, dtype=torch.bool).expand_as(values)
    values = _select(values, mask)
    old_values = _select(old_values.detach().to(values.dtype), mask)
    returns = _select(returns.detach().to(values.dtype), mask)
    clipped_values = torch.clamp(values, old_values - clip_range_value, old_values + clip_range_value)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped_error > unclipped_error).to(values.dtype), mask)
    return {"loss": loss, "clip_fraction": clip_fraction}
