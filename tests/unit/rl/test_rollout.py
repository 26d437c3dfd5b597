"""Rollout layout helpers against hand-built tensors."""

import torch

from pipeline.rl.rollout import position_ids, response_logits, token_logprobs, with_suffix

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


def test_response_logits_are_the_columns_that_predict_the_response():
    # logits[:, i] predicts token i + 1; prompt width 2, sequence length 5 -> columns 1, 2, 3 predict tokens 2, 3, 4
    logits = torch.arange(5, dtype=torch.float).view(1, 5, 1).expand(1, 5, 3).clone()
    assert response_logits(logits, 2, temperature=1.0)[0, :, 0].tolist() == [1.0, 2.0, 3.0]
    assert response_logits(logits, 2, temperature=2.0)[0, :, 0].tolist() == [0.5, 1.0, 1.5]


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
