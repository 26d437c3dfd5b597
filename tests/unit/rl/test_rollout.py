"""Rollout layout helpers against hand-built tensors."""

from types import SimpleNamespace

import pytest
import torch

from pipeline.rl.rollout import position_ids, response_forward, token_logprobs, with_suffix
from tests.unit.rl.test_evaluation import tok  # noqa: F401 (the fixture: a BPE tokenizer with a chat template)

PAD, EOS, NL = 0, 2, 9


def test_position_ids_ignore_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    assert position_ids(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]]


def test_suffix_goes_right_after_the_eos_of_ended_responses_only():
    # prompt width 2; responses: [5, EOS, pad] (ended, length 2) and [6, 7, 8] (cut, length 3)
    ids = torch.tensor([[PAD, 4, 5, EOS, PAD], [3, 4, 6, 7, 8]])
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    out_ids, out_mask = with_suffix(ids, mask, 2, torch.tensor([2, 3]), torch.tensor([True, False]), [NL], PAD)
    assert out_ids.tolist() == [[PAD, 4, 5, EOS, NL, PAD], [3, 4, 6, 7, 8, PAD]]
    assert out_mask.tolist() == [[0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]]
    same = with_suffix(ids, mask, 2, torch.tensor([2, 3]), torch.tensor([True, False]), [], PAD)
    assert same[0] is ids and same[1] is mask


def test_response_forward_returns_the_columns_that_predict_the_response():
    # logits[:, i] predicts token i + 1; prompt width 2, sequence length 5, response width 3 -> columns 1, 2, 3
    class ColumnIndex(torch.nn.Module):  # a causal LM whose logits at column i are all i, honouring logits_to_keep
        def forward(self, input_ids, attention_mask, position_ids, logits_to_keep):
            logits = torch.arange(input_ids.shape[1], dtype=torch.float).view(1, -1, 1).expand(1, -1, 3)
            return SimpleNamespace(logits=logits[:, -logits_to_keep:])

    ids = torch.tensor([[4, 5, 6, 7, 8]])
    assert response_forward(ColumnIndex(), ids, torch.ones_like(ids), 3)[0, :, 0].tolist() == [1.0, 2.0, 3.0]


def test_token_logprobs_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]]]))
    got = token_logprobs(logits, torch.tensor([[0, 2]]))
    assert torch.allclose(got, torch.log(torch.tensor([[0.5, 0.7]])))


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    from pipeline.rl.rollout import nucleus

    probs = torch.tensor([[0.2, 0.5, 0.3]])
    assert torch.allclose(nucleus(probs, 0.7), torch.tensor([[0.0, 0.625, 0.375]]))
    assert torch.allclose(nucleus(probs, 0.5), torch.tensor([[0.0, 1.0, 0.0]]))
    assert torch.equal(nucleus(probs, 1.0), probs)


# ------------------------------------------------------------------ collect and trim on a real (tiny) model
def test_inverse_cdf_draws_by_hand_and_with_the_row_probabilities():
    from pipeline.rl.rollout import inverse_cdf

    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5], [0.2, 0.0, 0.8, 0.0]])
    # row 0: cumulative (0, .5, .5, 1); row 1: (.2, .2, 1, 1), first token whose cumulative exceeds u x total
    cases = [([0.0, 0.0], [1, 0]), ([0.49, 0.19], [1, 0]), ([0.5, 0.2], [3, 2]), ([0.999, 0.999], [3, 2])]
    for uniforms, expected in cases:
        assert inverse_cdf(probs, torch.tensor(uniforms)).tolist() == expected
    assert inverse_cdf(probs * 3, torch.tensor([0.6, 0.1])).tolist() == [3, 0]  # unnormalised rows alike
    generator = torch.Generator().manual_seed(0)
    row = torch.tensor([[0.1, 0.0, 0.6, 0.3]])
    draws = torch.cat([inverse_cdf(row, torch.rand(1, generator=generator)) for _ in range(20000)])
    shares = torch.bincount(draws, minlength=4).double() / len(draws)
    assert shares[1] == 0 and torch.allclose(shares, row[0].double(), atol=0.015)  # 4.5 sd of the binomial


def gpt2_models(tok, seed):
    """A tiny GPT-2 causal LM and a one-label GPT-2 classifier (learned absolute positions, its own cache)."""
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    config = dict(vocab_size=len(tok), n_embd=32, n_inner=64, n_layer=2, n_head=2, n_positions=256,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    lm = GPT2LMHeadModel(GPT2Config(**config)).eval()
    return lm, GPT2ForSequenceClassification(GPT2Config(**config, num_labels=1)).eval()


def rollout_of(tok, temperature=0.7, architecture="llama", likelihood=False):
    from pipeline.rl.rollout import PolicyAndValue, collect, encode_prompts, episode_generators
    from tests.unit.rl.test_evaluation import PROMPTS, tiny_lm, tiny_rm, with_eos_bias

    if architecture == "gpt2":
        (policy, value), (reference, reward) = gpt2_models(tok, 0), gpt2_models(tok, 2)
    else:
        policy, reference, reward, value = tiny_lm(tok, seed=0), tiny_lm(tok, seed=2), tiny_rm(tok, seed=1), tiny_rm(tok, seed=3)
    # an EOS bias makes responses of different lengths (a random model alone never ends in 12 tokens)
    both = PolicyAndValue(with_eos_bias(policy, 4.0), value).eval()
    ids, mask = encode_prompts(tok, PROMPTS, "cpu")
    rollout = collect(both, reference, reward, tok, ids, mask, max_new_tokens=12, temperature=temperature, top_p=1.0,
                      generators=episode_generators(0, list(range(len(PROMPTS))), "cpu"), likelihood=likelihood)
    return rollout, both, reference


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_collect_keeps_sampling_logprobs_that_a_full_forward_pass_recomputes(tok, architecture):
    from pipeline.rl.rollout import position_ids

    temperature = 0.7
    rollout, both, reference = rollout_of(tok, temperature, architecture)
    mask, width = rollout.mask, rollout.prompt_width
    assert rollout.responses.shape[1] == int(rollout.lengths.max())  # no column that every response pads
    args = dict(input_ids=rollout.query_responses, attention_mask=rollout.attention_mask,
                position_ids=position_ids(rollout.attention_mask))
    with torch.no_grad():  # full forward passes, every column, sliced by hand: logits[:, i] predicts token i + 1
        for model, kept in ((both.policy, rollout.logprobs), (reference, rollout.ref_logprobs)):
            full = torch.log_softmax(model(**args).logits[:, width - 1: -1] / temperature, -1)
            expected = full.gather(-1, rollout.responses.unsqueeze(-1)).squeeze(-1)
            torch.testing.assert_close(kept[mask], expected[mask], rtol=0, atol=1e-5)
        hidden = getattr(both.value_model, both.value_model.base_model_prefix)(**args).last_hidden_state
        values = both.value_model.score(hidden[:, width - 1: -1]).squeeze(-1)
        torch.testing.assert_close(rollout.values[mask], values[mask], rtol=0, atol=1e-5)
    assert (rollout.logprobs[~mask] == 0).all()


def test_ref_likelihood_is_the_reference_log_likelihood_at_temperature_one(tok):
    from pipeline.rl.evaluation import log_likelihoods
    from tests.unit.rl.test_evaluation import PROMPTS

    plain, _, _ = rollout_of(tok, temperature=0.7)
    rollout, _, reference = rollout_of(tok, temperature=0.7, likelihood=True)
    assert plain.ref_likelihood is None
    assert torch.equal(plain.responses, rollout.responses) and torch.equal(plain.ref_logprobs, rollout.ref_logprobs)
    responses = [row[:n].tolist() for row, n in zip(rollout.responses, rollout.lengths)]
    # the evaluation's own pass: one right-padded forward per batch, no position ids, no temperature
    expected = log_likelihoods(reference, tok, PROMPTS, responses, batch_size=2)
    torch.testing.assert_close(rollout.ref_likelihood.double(), torch.from_numpy(expected), rtol=0, atol=1e-4)
    assert torch.equal(rollout.select(torch.tensor([1, 3])).ref_likelihood, rollout.ref_likelihood[[1, 3]])


def test_trim_drops_only_columns_that_pad_every_row_and_changes_no_number(tok):
    rollout, both, _ = rollout_of(tok)
    lengths = rollout.lengths.tolist()
    rows = torch.tensor([i for i in range(len(lengths)) if lengths[i] < max(lengths)][:2])
    assert len(rows) == 2 and rollout.attention_mask[rows, 0].sum() == 0  # something to trim on both sides
    part = rollout.select(rows)
    first = int(rollout.attention_mask[rows, : rollout.prompt_width].any(0).long().argmax())
    assert part.prompt_width == rollout.prompt_width - first
    assert part.responses.shape[1] == max(lengths[i] for i in rows.tolist())
    assert part.query_responses.shape[1] == part.prompt_width + part.responses.shape[1]
    # the kept columns are the same tokens; what was cut was padding in every selected row
    assert torch.equal(part.query_responses, rollout.query_responses[rows, first: first + part.query_responses.shape[1]])
    assert rollout.attention_mask[rows][:, :first].sum() == 0
    assert rollout.attention_mask[rows][:, first + part.query_responses.shape[1]:].sum() == 0
    # and the model computes the same logits and values on the real tokens
    with torch.no_grad():
        logits, values, _ = both(part.query_responses, part.attention_mask, part.responses.shape[1])
        full_logits, full_values, _ = both(rollout.query_responses[rows], rollout.attention_mask[rows],
                                        rollout.responses.shape[1])
    width = part.responses.shape[1]
    torch.testing.assert_close(logits[part.mask], full_logits[:, :width][part.mask], rtol=0, atol=1e-5)
    torch.testing.assert_close(values[part.mask], full_values[:, :width][part.mask], rtol=0, atol=1e-5)
