"""pipeline.rl against numbers worked out by hand (in the comments), never against the same formula re-typed.

Small explicit float64 tensors; padding is filled with garbage (huge, inf, nan) to show it changes nothing.
"""

import json
import math

import pytest
import torch

from pipeline import rl

GARBAGE = (1e6, -1e30, math.inf, math.nan)


def t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def close(actual, expected, atol=1e-9):
    expected = expected if isinstance(expected, torch.Tensor) else t(expected)
    torch.testing.assert_close(actual.detach().to(expected.dtype), expected, rtol=0, atol=atol)


def fill_masked(x, mask, value):
    """A copy of x with value wherever mask is False (the padding)."""
    return torch.where(mask, x, torch.full_like(x, value))


# ------------------------------------------------------------------------------------------------ masked
ROWS = t([[1.0, 2.0, 0.0], [4.0, 0.0, 0.0]])
ROWS_MASK = torch.tensor([[True, True, False], [True, False, False]])


@pytest.mark.parametrize("garbage", GARBAGE)
def test_masked_mean_over_all_and_per_row(garbage):
    x = fill_masked(ROWS, ROWS_MASK, garbage)
    close(rl.masked_mean(x, ROWS_MASK), 7.0 / 3.0)  # (1 + 2 + 4) / 3
    close(rl.masked_mean(x, ROWS_MASK, dim=1), [1.5, 4.0])  # (1 + 2) / 2 and 4 / 1
    close(rl.masked_mean(x, ROWS_MASK.long()), 7.0 / 3.0)  # 0/1 numbers work as a mask too


VEC_MASK = torch.tensor([True, True, True, False])


@pytest.mark.parametrize("garbage", GARBAGE)
def test_masked_var_and_whiten(garbage):
    x = t([1.0, 2.0, 3.0, garbage])  # mean 2; squared deviations 1, 0, 1 (sum 2)
    close(rl.masked_var(x, VEC_MASK), 1.0)  # 2 / (3 - 1)
    close(rl.masked_var(x, VEC_MASK, unbiased=False), 2.0 / 3.0)  # 2 / 3
    with pytest.raises(ValueError, match="at least 2"):
        rl.masked_var(t([5.0, 7.0]), torch.tensor([True, False]))
    # mean 2, unbiased var 1: (x - 2) / sqrt(1 + 1e-8) = -1, 0, 1 (to 5e-9); the padding comes back as 0
    close(rl.masked_whiten(x, VEC_MASK), [-1.0, 0.0, 1.0, 0.0], atol=1e-8)
    # shift_mean=False adds the mean 2 back: 1, 2, 3
    close(rl.masked_whiten(x, VEC_MASK, shift_mean=False), [1.0, 2.0, 3.0, 0.0], atol=1e-8)


LN4 = 1.3862943611198906  # entropy of a uniform choice among 4
H_QUARTER = 0.5623351446188083  # probabilities 1/4, 3/4: 0.25·ln 4 + 0.75·ln(4/3) = 0.3465736 + 0.2157616


@pytest.mark.parametrize("garbage", GARBAGE)
def test_masked_entropy_from_logits(garbage):
    ninf = -math.inf
    logits = t([[[0.0, 0.0, 0.0, 0.0],  # uniform over 4: ln 4
                 [0.0, ninf, ninf, ninf],  # certain (a filtered vocabulary): 0, not nan
                 [0.0, math.log(3.0), ninf, ninf],  # softmax 1/4, 3/4
                 [garbage, 1.0, -garbage, 0.0]]])  # padding
    mask = torch.tensor([[True, True, True, False]])
    close(rl.entropy_from_logits(logits[:, :3]), [[LN4, 0.0, H_QUARTER]])
    close(rl.masked_entropy_from_logits(logits, mask), (LN4 + 0.0 + H_QUARTER) / 3)  # 0.6495431686


def test_entropy_gradient_is_finite_with_filtered_logits():
    ninf = -math.inf
    logits = t([[[0.0, 0.0, 0.0, 0.0], [0.0, ninf, ninf, ninf], [0.0, math.log(3.0), ninf, ninf]]])
    logits.requires_grad_(True)
    rl.masked_entropy_from_logits(logits, torch.ones(1, 3, dtype=torch.bool)).backward()
    # dH/dz_i = -p_i·(ln p_i + H): 0 for a uniform or a certain row; for p = 1/4, 3/4 (H = 0.5623351446):
    #   -0.25·(ln 0.25 + H) = 0.25·0.8239592165 = 0.2059898041,  -0.75·(ln 0.75 + H) = -0.2059898041; /3 tokens
    g = 0.2059898041 / 3
    close(logits.grad, [[[0.0] * 4, [0.0] * 4, [g, -g, 0.0, 0.0]]], atol=1e-10)


# --------------------------------------------------------------------------------------------- responses
def test_truncate_after_eos_pads_after_the_first_eos_and_keeps_it():
    eos, pad = 2, 0
    responses = torch.tensor([[5, 7, 2, 9, 9],  # EOS at 2: keep 5 7 2, pad the rest; length 3
                              [5, 6, 7, 8, 9],  # no EOS: unchanged, length 5 (the budget), not ended
                              [2, 3, 2, 4, 4]])  # EOS first: only the EOS survives (the second 2 too is cut)
    cut, lengths, ended = rl.truncate_after_eos(responses, eos, pad)
    assert cut.tolist() == [[5, 7, 2, 0, 0], [5, 6, 7, 8, 9], [2, 0, 0, 0, 0]]
    assert lengths.tolist() == [3, 5, 1]
    assert ended.tolist() == [True, False, True]
    assert responses[0].tolist() == [5, 7, 2, 9, 9]  # input untouched
    assert rl.response_mask(lengths, 5).tolist() == [[True, True, True, False, False],
                                                     [True, True, True, True, True],
                                                     [True, False, False, False, False]]
    # pad == eos (GPT-2 style): the length still counts the EOS (TRL's "first pad - 1" stopped before it)
    responses = torch.tensor([[5, 2, 2, 2], [5, 6, 7, 8], [1, 1, 1, 2]])
    cut, lengths, ended = rl.truncate_after_eos(responses, eos_token_id=2, pad_token_id=2)
    assert cut.tolist() == responses.tolist()
    assert lengths.tolist() == [2, 4, 4]  # EOS on the last budget token: full length, but ended
    assert ended.tolist() == [True, False, True]


def test_missing_eos_gets_the_penalty_and_an_ended_response_does_not():
    scores = t([1.0, 2.0, 0.5])
    ended = torch.tensor([True, False, True])
    close(rl.penalise_missing_eos(scores, ended, -1.0), [1.0, 1.0, 0.5])  # only the middle one: 2 - 1
    close(rl.penalise_missing_eos(scores, ended, 0.0), [1.0, 2.0, 0.5])
    close(scores, [1.0, 2.0, 0.5])  # not modified in place
    with pytest.raises(ValueError, match="missing_eos_penalty"):
        rl.penalise_missing_eos(scores, ended, 1.0)  # TRL's sign: refused, not a bonus


# -------------------------------------------------------------------------------------------- advantages
def test_kl_estimators_by_hand():
    logp, ref = t([-1.0, -2.0]), t([-1.5, -1.0])
    close(rl.kl_per_token(logp, ref, "k1"), [0.5, -1.0])  # logp - ref; k1 can be negative per token
    # log r = ref - logp = -0.5, 1.0;  k3 = (e^-0.5 - 1) + 0.5 = 0.1065306597,  (e - 1) - 1 = 0.7182818285
    close(rl.kl_per_token(logp, ref, "k3"), [0.10653065971263342, 0.7182818284590451])
    with pytest.raises(ValueError, match="k2"):
        rl.kl_per_token(logp, ref, "k2")


def test_kl_is_exactly_zero_at_the_reference_and_k3_is_never_negative():
    g = torch.Generator().manual_seed(1)
    logp = -torch.rand(1000, generator=g, dtype=torch.float64) * 20
    ref = -torch.rand(1000, generator=g, dtype=torch.float64) * 20
    for estimator in rl.KL_ESTIMATORS:
        assert torch.equal(rl.kl_per_token(logp, logp.clone(), estimator), torch.zeros_like(logp))
    assert (rl.kl_per_token(logp, ref, "k3") >= 0).all()
    assert (rl.kl_per_token(logp, ref, "k1") < 0).any()  # while k1 is, somewhere


@pytest.mark.parametrize("garbage", GARBAGE)
def test_token_rewards_by_hand(garbage):
    lengths = torch.tensor([3, 2])
    mask = rl.response_mask(lengths, 4)
    kl = fill_masked(t([[0.1, 0.2, 0.3, 0.0], [0.5, -0.4, 0.0, 0.0]]), mask, garbage)
    rewards = rl.token_rewards(t([2.0, -1.0]), kl, 0.5, lengths)
    # row 0: -0.5·kl = -0.05, -0.1, -0.15; the score 2 on token 2 (lengths - 1): -0.15 + 2 = 1.85
    # row 1: -0.25, +0.2; the score -1 on token 1: 0.2 - 1 = -0.8; padding 0
    close(rewards, [[-0.05, -0.1, 1.85, 0.0], [-0.25, -0.8, 0.0, 0.0]])


def test_token_rewards_on_a_response_using_the_whole_budget_and_impossible_lengths():
    rewards = rl.token_rewards(t([3.0]), t([[0.0, 0.0, 0.0, 0.0]]), 0.1, torch.tensor([4]))
    close(rewards, [[0.0, 0.0, 0.0, 3.0]])  # the last budget token gets the score
    for bad in (0, 5):  # an empty response has no last token; 5 > the width 4
        with pytest.raises(ValueError, match="lengths"):
            rl.token_rewards(t([1.0]), t([[0.0] * 4]), 0.1, torch.tensor([bad]))


GAE_MASK = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])


@pytest.mark.parametrize("garbage", GARBAGE)
def test_gae_by_hand(garbage):
    rewards = fill_masked(t([[-0.1, 0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]]), GAE_MASK, garbage)
    values = fill_masked(t([[0.5, 0.4, 0.3, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]]), GAE_MASK, garbage)
    advantages, returns = rl.gae(rewards, values, GAE_MASK, gamma=0.9, lam=0.8)  # gamma·lam = 0.72
    # row 0, the value after token 2 is 0 (episode ends):
    #   t=2: delta = 1.0 + 0.9·0   - 0.3 =  0.7     A2 = 0.7
    #   t=1: delta = 0.0 + 0.9·0.3 - 0.4 = -0.13    A1 = -0.13 + 0.72·0.7   = 0.374
    #   t=0: delta = -0.1 + 0.9·0.4 - 0.5 = -0.24   A0 = -0.24 + 0.72·0.374 = 0.02928
    #   returns = A + V = 0.52928, 0.774, 1.0
    # row 1, V = 0, a reward of 1 on the last token only: A_t = 0.72^(4-t) = 0.26873856, 0.373248, 0.5184, 0.72, 1
    close(advantages, [[0.02928, 0.374, 0.7, 0.0, 0.0], [0.26873856, 0.373248, 0.5184, 0.72, 1.0]])
    close(returns, [[0.52928, 0.774, 1.0, 0.0, 0.0], [0.26873856, 0.373248, 0.5184, 0.72, 1.0]])


def test_gae_limits():
    rewards, values = t([[-0.1, 0.0, 1.0]]), t([[0.5, 0.4, 0.3]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    # gamma = lam = 1: returns are the rewards still to come (0.9, 1.0, 1.0), whatever the values
    advantages, returns = rl.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    close(returns, [[0.9, 1.0, 1.0]])
    close(advantages, [[0.4, 0.6, 0.7]])  # returns - values
    # lam = 0: one-step TD errors, the deltas of test_gae_by_hand
    advantages, _ = rl.gae(rewards, values, mask, gamma=0.9, lam=0.0)
    close(advantages, [[-0.24, -0.13, 0.7]])


# ------------------------------------------------------------------------------------------------ losses
def _policy_inputs(ratios, advantages, garbage=0.0):
    mask = torch.tensor([True] * len(ratios) + [False])
    logprobs = t([math.log(r) for r in ratios] + [garbage]).requires_grad_(True)
    old = t([0.0] * len(ratios) + [-garbage])
    return logprobs, old, t(list(advantages) + [garbage]), mask


def test_policy_loss_inside_the_clip_range_is_minus_advantage_times_ratio():
    logprobs, old, adv, mask = _policy_inputs([1.1, 0.9, 1.0], [2.0, -1.0, 0.5])
    out = rl.policy_loss(logprobs, old, adv, mask, clip_range=0.2)
    close(out["loss"], (-2.2 + 0.9 - 0.5) / 3)  # -A·ratio: -2.2, 0.9, -0.5; mean -0.6
    close(out["clip_fraction"], 0.0)
    close(out["ratio_mean"], 1.0)  # (1.1 + 0.9 + 1.0) / 3
    # 0.5 · mean(ln²1.1, ln²0.9, 0) = 0.5 · (0.0090840304 + 0.0111008383) / 3
    close(out["approx_kl"], 0.00336414477, atol=1e-10)
    out["loss"].backward()  # d/dlogp of -A·ratio/3 is -A·ratio/3
    close(logprobs.grad, [-2.2 / 3, 0.9 / 3, -0.5 / 3, 0.0])


@pytest.mark.parametrize("garbage", GARBAGE)
def test_policy_loss_outside_the_clip_range(garbage):
    logprobs, old, adv, mask = _policy_inputs([1.5, 0.5, 0.5, 1.5], [1.0, -1.0, 1.0, -1.0], garbage)
    out = rl.policy_loss(logprobs, old, adv, mask, clip_range=0.2)
    # A=+1, r=1.5: max(-1.5, -1.2) = -1.2  clipped (gain capped at 1 + eps)
    # A=-1, r=0.5: max( 0.5,  0.8) =  0.8  clipped (gain capped at 1 - eps)
    # A=+1, r=0.5: max(-0.5, -0.8) = -0.5  not clipped (the pessimistic term is the unclipped one)
    # A=-1, r=1.5: max( 1.5,  1.2) =  1.5  not clipped
    close(out["loss"], (-1.2 + 0.8 - 0.5 + 1.5) / 4)  # 0.15
    close(out["clip_fraction"], 0.5)  # exactly the first two
    close(out["ratio_mean"], 1.0)  # (1.5 + 0.5 + 0.5 + 1.5) / 4
    # 0.5 · (2·ln²1.5 + 2·ln²0.5) / 4 = 0.5 · (0.1644019539 + 0.4804530139) / 2
    close(out["approx_kl"], 0.16121374196, atol=1e-10)
    out["loss"].backward()  # clipped tokens give no gradient; the others -A·ratio/4; the padding 0
    close(logprobs.grad, [0.0, 0.0, -0.5 / 4, 1.5 / 4, 0.0])
    assert not out["clip_fraction"].requires_grad and not out["approx_kl"].requires_grad


def _value_inputs(values, old, returns, garbage=0.0):
    mask = torch.tensor([True] * len(values) + [False])
    v = t(list(values) + [garbage]).requires_grad_(True)
    return v, t(list(old) + [-garbage]), t(list(returns) + [garbage]), mask


@pytest.mark.parametrize("garbage", GARBAGE)
def test_value_loss_by_hand(garbage):
    v, old, ret, mask = _value_inputs([0.5, 0.1, 0.5, 0.3], [0.0] * 4, [1.0, 1.0, -1.0, 0.1], garbage)
    out = rl.value_loss(v, old, ret, mask, clip_range_value=0.2)  # clipped values: 0.2, 0.1, 0.2, 0.2
    # v=0.5 R=1:    (0.5-1)² = 0.25, (0.2-1)² = 0.64  -> 0.64  clipped
    # v=0.1 R=1:    inside the range: 0.81 both        -> 0.81
    # v=0.5 R=-1:   1.5² = 2.25, 1.2² = 1.44           -> 2.25
    # v=0.3 R=0.1:  0.2² = 0.04, 0.1² = 0.01           -> 0.04
    close(out["loss"], 0.5 * (0.64 + 0.81 + 2.25 + 0.04) / 4)  # 0.4675
    close(out["clip_fraction"], 0.25)
    out["loss"].backward()  # unclipped: (v - R)/4; the clipped one and the padding: 0
    close(v.grad, [0.0, (0.1 - 1.0) / 4, (0.5 + 1.0) / 4, (0.3 - 0.1) / 4, 0.0])
    # all inside the clip range: half the mean squared error
    v, old, ret, mask = _value_inputs([0.1, -0.1], [0.0, 0.0], [0.5, -0.5])
    out = rl.value_loss(v, old, ret, mask, clip_range_value=0.2)
    close(out["loss"], 0.5 * (0.16 + 0.16) / 2)  # errors 0.4² each: 0.08
    close(out["clip_fraction"], 0.0)


# -------------------------------------------------------------------------------------------- KL control
def test_controllers_by_hand():
    fixed = rl.FixedKLController(0.05)
    assert fixed.update(100.0, 512) == 0.05 and fixed.value == 0.05  # fixed: update changes nothing
    ctl = rl.AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    # KL 9: error 9/6 - 1 = 0.5, clipped to 0.2; beta = 0.1 · (1 + 0.2·256/10000) = 0.1 · 1.00512 = 0.100512
    assert ctl.update(9.0, n_steps=256) == pytest.approx(0.100512, abs=1e-15)
    # KL 5.4: error 5.4/6 - 1 = -0.1 (inside the clip); beta = 0.100512 · (1 - 0.1·512/10000)
    #   = 0.100512 · 0.99488 = 0.100512 - 0.00051462144 = 0.09999737856
    ctl.update(torch.tensor(5.4, dtype=torch.float64), n_steps=512)  # a tensor KL is accepted
    assert ctl.value == pytest.approx(0.09999737856, abs=1e-15)


def test_controller_state_round_trip_continues_identically():
    ctl = rl.AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(9.0, 256)
    state = json.loads(json.dumps(ctl.state_dict()))  # plain numbers: fits any checkpoint
    resumed = rl.AdaptiveKLController(0.2, target=1.0, horizon=5)  # what a fresh start would build
    resumed.load_state_dict(state)
    assert resumed.state_dict() == ctl.state_dict()
    assert resumed.update(3.0, 64) == ctl.update(3.0, 64)
    fixed = rl.FixedKLController(1.0)
    fixed.load_state_dict(json.loads(json.dumps(rl.FixedKLController(0.05).state_dict())))
    assert fixed.value == 0.05
    # a state of the other kind, or an impossible target, is refused
    with pytest.raises(ValueError, match="fixed"):
        rl.AdaptiveKLController(0.1, 6.0, 10000).load_state_dict(rl.FixedKLController(0.1).state_dict())
    with pytest.raises(ValueError, match="target"):
        rl.AdaptiveKLController(0.1, target=0.0, horizon=10000)


# ---------------------------------------------------------------------------------------------- together
def test_a_rollout_batch_end_to_end_by_hand():
    # Two responses, eos 2, pad 0: the first ends at token 1 (score 1), the second never ends (score 1, -1 penalty)
    cut, lengths, ended = rl.truncate_after_eos(torch.tensor([[4, 2, 7], [4, 5, 6]]), 2, 0)
    mask = rl.response_mask(lengths, 3)
    scores = rl.penalise_missing_eos(t([1.0, 1.0]), ended, -1.0)  # 1, 0
    logp = t([[-1.0, -1.0, 5.0], [-1.0, -1.0, -1.0]])  # token 2 of row 0 is padding (garbage logprob)
    kl = rl.kl_per_token(logp, logp, "k3")  # policy == reference: zero KL, rewards are the scores alone
    rewards = rl.token_rewards(scores, kl, 0.1, lengths)
    close(rewards, [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    advantages, returns = rl.gae(rewards, torch.zeros(2, 3, dtype=torch.float64), mask, gamma=1.0, lam=0.5)
    close(advantages, [[0.5, 1.0, 0.0], [0.0, 0.0, 0.0]])  # A1 = 1, A0 = 0 + 1·0.5·1
    # whitening the 5 valid advantages 0.5, 1, 0, 0, 0: mean 0.3, deviations 0.2, 0.7, -0.3 ×3,
    # squares sum 0.04 + 0.49 + 3·0.09 = 0.8, unbiased var 0.8/4 = 0.2, std 0.4472135955:
    # 0.2/std = 0.4472135955, 0.7/std = 1.5652475842, -0.3/std = -0.6708203932
    close(rl.masked_whiten(advantages, mask),
          [[0.4472135955, 1.5652475842, 0.0], [-0.6708203932, -0.6708203932, -0.6708203932]], atol=1e-7)
