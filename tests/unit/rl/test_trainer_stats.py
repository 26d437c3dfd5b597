"""Per-episode rollout metrics against numbers worked out by hand."""

import torch

import pytest

from pipeline.rl.rollout import Rollout
from pipeline.rl.trainer import PPOSettings, episode_statistics, shaped_scores


def two_episodes(**extra) -> Rollout:
    """Two responses of width 3: the first ends at its 2nd token (EOS), the second is cut without one."""
    return Rollout(query_responses=torch.zeros(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 5),
                   prompt_width=2, responses=torch.zeros(2, 3, dtype=torch.long),
                   lengths=torch.tensor([2, 3]), ended=torch.tensor([True, False]),
                   logprobs=torch.zeros(2, 3), ref_logprobs=torch.zeros(2, 3),
                   values=torch.tensor([[1.0, 3.0, 99.0], [2.0, 2.0, 5.0]]), scores=torch.tensor([0.5, -1.0]), **extra)


def test_shaped_scores_by_hand():
    rollout = two_episodes(ref_likelihood=torch.tensor([-2.0, -6.0]))
    assert shaped_scores(rollout, PPOSettings(missing_eos_penalty=0.0)).tolist() == [0.5, -1.0]
    # the second has no EOS: -1 - 1 = -2
    assert shaped_scores(rollout, PPOSettings(missing_eos_penalty=-1.0)).tolist() == [0.5, -2.0]
    # 0.25 per token: 0.5 - 0.5 = 0 ; -1 - 0.75 = -1.75
    assert shaped_scores(rollout, PPOSettings(missing_eos_penalty=0.0, length_penalty=0.25)).tolist() == [0.0, -1.75]
    # w = 0.5: 0.5 + 0.5 x -2 = -0.5 ; -1 + 0.5 x -6 = -4
    assert shaped_scores(rollout, PPOSettings(missing_eos_penalty=0.0, likelihood_weight=0.5)).tolist() == [-0.5, -4.0]
    with pytest.raises(ValueError, match="likelihood=True"):
        shaped_scores(two_episodes(), PPOSettings(likelihood_weight=0.5))
    for bad in (-0.1, float("nan"), "high"):
        with pytest.raises(ValueError, match="likelihood_weight"):
            PPOSettings(likelihood_weight=bad).check_ppo()


def test_episode_statistics_by_hand():
    rollout = two_episodes()
    kl = torch.tensor([[0.1, 0.2, 7.0], [0.3, -0.1, 0.4]])  # 7.0 sits past the first response: not counted
    stats = episode_statistics(rollout, torch.tensor([0.5, -2.0]), kl)
    assert torch.allclose(stats["kl"], torch.tensor([0.3, 0.6]))           # 0.1+0.2 ; 0.3-0.1+0.4
    assert torch.allclose(stats["value_mean"], torch.tensor([2.0, 3.0]))   # (1+3)/2 ; (2+2+5)/3
    assert stats["response_length"].tolist() == [2.0, 3.0] and stats["eos_share"].tolist() == [1.0, 0.0]
    assert stats["score"].tolist() == [0.5, -1.0] and stats["shaped_score"].tolist() == [0.5, -2.0]
