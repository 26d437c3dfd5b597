"""PPO for language models: the algorithm pieces, as plain functions and small classes on torch tensors.

Ours because TRL >= 1.13 removed PPOTrainer and no well-kept library has PPO for LMs on current TRL; the maths
follows TRL 1.12's trainer and "The N+ Implementation Details of RLHF with PPO" (Huang et al. 2024), with the
differences named in each module's docstring. A trainer loop composes them per rollout batch:

    from pipeline import rl
    responses, lengths, ended = rl.truncate_after_eos(responses, eos_token_id, pad_token_id)
    mask = rl.response_mask(lengths, responses.shape[1])
    scores = rl.penalise_missing_eos(scores, ended, penalty=-1.0)
    kl = rl.kl_per_token(logprobs, ref_logprobs, "k1")
    rewards = rl.token_rewards(scores, kl, kl_ctl.value, lengths)
    advantages, returns = rl.gae(rewards, values, mask, gamma=1.0, lam=0.95)
    advantages = rl.masked_whiten(advantages, mask)
    ...  # then per mini-batch: rl.policy_loss(...)["loss"] + vf_coef * rl.value_loss(...)["loss"]
    ...  # (PPO-ptx: + ptx_coef * rl.causal_lm_loss(policy, ptx_blocks.rows(position, rows)), a `rl.PTXBlocks`)
    kl_ctl.update(torch.where(mask, kl, 0).sum(1).mean(), n_steps=len(responses))  # mean KL per response
"""

from pipeline.rl.advantages import KL_ESTIMATORS, gae, kl_per_token, token_rewards
from pipeline.rl.kl_control import AdaptiveKLController, FixedKLController
from pipeline.rl.losses import policy_loss, value_loss
from pipeline.rl.masked import (
    entropy_from_logits,
    masked_entropy_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
)
from pipeline.rl.ptx import PTXBlocks, causal_lm_loss
from pipeline.rl.responses import Truncated, penalise_missing_eos, response_mask, truncate_after_eos

__all__ = [
    "KL_ESTIMATORS",
    "AdaptiveKLController",
    "FixedKLController",
    "PTXBlocks",
    "Truncated",
    "causal_lm_loss",
    "entropy_from_logits",
    "gae",
    "kl_per_token",
    "masked_entropy_from_logits",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "penalise_missing_eos",
    "policy_loss",
    "response_mask",
    "token_rewards",
    "truncate_after_eos",
    "value_loss",
]
