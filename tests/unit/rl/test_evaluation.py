"""pipeline.rl.evaluation on tiny random Llamas built here (a BPE trained in-process), and on stub models whose
logits are fixed tables, so the KL and the reward rendering are checked against numbers worked out by hand."""

import copy
import math
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from pipeline.metrics.qa import generate_replies, score_replies
from pipeline.models.tokenizer import train_bpe
from pipeline.rl.evaluation import (
    EvaluationError,
    compare,
    evaluate_policy,
    greedy_responses,
    kl_to_reference,
    log_likelihoods,
    prompt_ids,
    reference_pass,
    reward_scores,
    weighted_gain,
)

TEXTS = ["Mara lives in Lisbon. Her favourite colour is red.", "What is 8-0? It is 8.", "Tom likes blue and green.",
         "Who lives in Oslo? Ada does. She is 31 years old."]
PROMPTS = [  # different lengths, so every batch is padded
    [{"role": "user", "content": "Where does Mara live?"}],
    [{"role": "user", "content": "What is 8-0?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What colour does Tom like best of all?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Who lives in Oslo?"}, {"role": "assistant", "content": "Ada."},
     {"role": "user", "content": "How old is she?"}],
]


@pytest.fixture(scope="module")
def tok():
    return train_bpe(TEXTS * 20, vocab_size=300)


def config(tok, **extra):
    return LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None, **extra)


def tiny_lm(tok, seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(config(tok)).eval()


def tiny_rm(tok, seed=1):
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(config(tok, num_labels=1)).eval()


# ------------------------------------------------------------------------------------------------ greedy
def with_eos_bias(model, bias):
    """The model with `bias` added to the EOS logit (lm_head replaced by a Linear with a bias)."""
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[model.config.eos_token_id] = bias
    model.lm_head = head
    return model


def test_greedy_responses_end_at_the_first_eos_and_batching_changes_nothing(tok):
    eos = tok.eos_token_id
    model = tiny_lm(tok)
    # EOS margin at the first step: how far EOS is below the best other token, per prompt
    with torch.no_grad():
        margins = []
        for p in PROMPTS:
            logits = model(torch.tensor([prompt_ids(tok, p)])).logits[0, -1]
            margins.append(float(torch.cat([logits[:eos], logits[eos + 1:]]).max() - logits[eos]))
    order = sorted(margins)
    with_eos_bias(model, (order[1] + order[2]) / 2)  # the 2 prompts with the smallest margin stop at once
    stops_at_once = [m < order[2] for m in margins]
    assert sum(stops_at_once) == 2

    batched = greedy_responses(model, tok, PROMPTS, max_new_tokens=12, batch_size=3)
    single = [greedy_responses(model, tok, [p], max_new_tokens=12)[0] for p in PROMPTS]
    assert batched == single
    for response, at_once in zip(batched, stops_at_once):
        if at_once:
            assert response == [eos]  # the finished row's padding is not part of it
        else:
            assert response[0] != eos and eos not in response[:-1]
            assert response[-1] == eos or len(response) == 12
    # the same text the QA scorer decodes
    assert [tok.decode(r, skip_special_tokens=True).strip() for r in batched] == \
        generate_replies(model, tok, PROMPTS, max_new_tokens=12, batch_size=3)

    with_eos_bias(model, -1e4)  # never stops: all max_new_tokens ids, padding included if the model says pad
    assert all(len(r) == 7 and eos not in r for r in greedy_responses(model, tok, PROMPTS, max_new_tokens=7))
    with_eos_bias(model, 1e4)
    assert greedy_responses(model, tok, PROMPTS, max_new_tokens=7) == [[eos]] * len(PROMPTS)


# ------------------------------------------------------------------------------------------------ reward
class Recorder(torch.nn.Module):
    """A 'reward model' whose score is sum(ids * mask) + 1000 * mask.sum(): shows what it was fed."""

    def __init__(self, pad):
        super().__init__()
        self.config = SimpleNamespace(pad_token_id=pad)
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        assert (input_ids[attention_mask == 0] == self.config.pad_token_id).all()
        first_pad = attention_mask.sum(1)  # right padding: every row is 1...1 0...0
        assert (attention_mask == (torch.arange(input_ids.shape[1]) < first_pad[:, None])).all()
        score = (input_ids * attention_mask).sum(1) + 1000 * attention_mask.sum(1)
        return SimpleNamespace(logits=score[:, None].double())


RESPONSES = [[40, 41, 2], [50], [60, 0, 61, 2], [], [70, 71, 72, 73, 74, 75]]  # 0 = pad inside a response


def test_reward_scores_feed_template_prompt_then_response_right_padded(tok):
    scores = reward_scores(Recorder(tok.pad_token_id), tok, PROMPTS, RESPONSES, batch_size=4)
    newline = tok("\n", add_special_tokens=False)["input_ids"]  # what ChatML writes after <|im_end|>
    fed = [prompt_ids(tok, p) + r + (newline if r and r[-1] == tok.eos_token_id else []) for p, r in zip(PROMPTS, RESPONSES)]
    assert scores.tolist() == [sum(ids) + 1000 * len(ids) for ids in fed]
    assert [len(ids) - len(prompt_ids(tok, p)) - len(r) for ids, p, r in zip(fed, PROMPTS, RESPONSES)].count(1) == \
        sum(1 for r in RESPONSES if r and r[-1] == tok.eos_token_id) > 0
    assert prompt_ids(tok, PROMPTS[0]) == tok(tok.apply_chat_template(PROMPTS[0], tokenize=False,
                                                                      add_generation_prompt=True))["input_ids"]


def test_reward_scores_batched_equal_one_at_a_time_and_the_unpadded_forward(tok):
    rm = tiny_rm(tok)
    batched = reward_scores(rm, tok, PROMPTS, RESPONSES, batch_size=4)
    single = np.concatenate([reward_scores(rm, tok, [p], [r]) for p, r in zip(PROMPTS, RESPONSES)])
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-5)
    with torch.no_grad():
        newline = tok("\n", add_special_tokens=False)["input_ids"]
        direct = [float(rm(torch.tensor([prompt_ids(tok, p) + r + (newline if r[-1:] == [tok.eos_token_id] else [])]))
                        .logits[0, 0]) for p, r in zip(PROMPTS, RESPONSES)]
    np.testing.assert_allclose(batched, direct, rtol=0, atol=1e-5)
    assert batched.dtype == np.float64 and batched.shape == (5,)

    rm.config.pad_token_id = tok.eos_token_id  # it would read the score at the wrong token
    with pytest.raises(EvaluationError, match="pad_token_id"):
        reward_scores(rm, tok, PROMPTS, RESPONSES)
    with pytest.raises(EvaluationError):
        reward_scores(tiny_rm(tok), tok, PROMPTS, RESPONSES[:2])


# ------------------------------------------------------------------------------------------------ KL
class TableLM(torch.nn.Module):
    """logits[b, i] = table[input_ids[b, i]]: the next-token distribution depends only on the current token."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


def test_kl_is_the_hand_computed_sum_over_the_positions_that_predict_the_response(tok):
    V, A, B, M = len(tok), 5, 6, 7
    K = prompt_ids(tok, PROMPTS[0])[-1]  # every prompt ends "<|im_start|>assistant\n": its last token is K
    assert all(prompt_ids(tok, p)[-1] == K for p in PROMPTS)
    policy, reference = (torch.full((V, V), -1e4, dtype=torch.float64) for _ in "pq")  # exp(-1e4) == 0
    # after any token but K: p = (1/2, 1/2) on {A, B}, q = (1/4, 3/4)   KL = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3)
    policy[:, [A, B]] = 0.0
    reference[:, A], reference[:, B] = math.log(0.25), math.log(0.75)
    # after K: p = (1, 0) on {A, B}, q = (1/2, 1/2)                       KL = 1 ln(1 / (1/2)) = ln 2
    policy[K, B] = -1e4
    reference[K, [A, B]] = 0.0
    other, after_k = 0.5 * math.log(4 / 3), math.log(2)
    responses = [[M, M], [K, K, M], [M], [], [M, K, M, K]]
    # the logits at position i predict token i + 1: response token t is predicted after the prompt's last token
    # (K) for t = 0, after response token t - 1 otherwise; the last response token predicts nothing here
    expected = [after_k + other,            # after K, M
                3 * after_k,                # after K, K, K
                after_k,                    # after K
                0.0,                        # nothing to predict
                2 * after_k + 2 * other]    # after K, M, K, M
    for batch_size in (1, 2, 5):
        kl = kl_to_reference(TableLM(policy), TableLM(reference), tok, PROMPTS, responses, batch_size=batch_size)
        np.testing.assert_allclose(kl, expected, rtol=0, atol=1e-12)


def test_log_likelihood_is_the_hand_computed_sum_and_the_reference_pass_gives_the_same(tok):
    V, A, B, M = len(tok), 5, 6, 7
    K = prompt_ids(tok, PROMPTS[0])[-1]
    reference = torch.full((V, V), -1e4, dtype=torch.float64)
    reference[:, A], reference[:, B], reference[:, M] = math.log(0.25), math.log(0.5), math.log(0.25)
    reference[K, [A, B, M]] = torch.tensor([0.125, 0.125, 0.75], dtype=torch.float64).log()  # after the prompt
    responses = [[M, A], [B, B, M], [], [A]]
    # response token 0 is predicted after K, the others after the previous response token
    expected = [math.log(0.75) + math.log(0.25), math.log(0.125) + math.log(0.5) + math.log(0.25), 0.0,
                math.log(0.125)]
    for batch_size in (1, 3):
        found = log_likelihoods(TableLM(reference), tok, PROMPTS[:4], responses, batch_size=batch_size)
        np.testing.assert_allclose(found, expected, rtol=0, atol=1e-12)
    policy = torch.zeros((V, V), dtype=torch.float64)  # any policy: L depends on the reference alone
    kl, likelihood = reference_pass(TableLM(policy), TableLM(reference), tok, PROMPTS[:4], responses)
    np.testing.assert_allclose(likelihood, expected, rtol=0, atol=1e-12)
    assert kl[2] == 0.0 and (kl[[0, 1, 3]] > 0).all()


def test_kl_is_exactly_zero_against_itself_and_a_copy(tok):
    model = tiny_lm(tok)
    responses = greedy_responses(model, tok, PROMPTS, max_new_tokens=6)
    assert np.array_equal(kl_to_reference(model, model, tok, PROMPTS, responses, batch_size=2), np.zeros(5))
    assert np.array_equal(kl_to_reference(model, copy.deepcopy(model), tok, PROMPTS, responses), np.zeros(5))
    with pytest.raises(EvaluationError, match="peft"):
        kl_to_reference(model, None, tok, PROMPTS, responses)


def test_kl_of_a_peft_policy_is_against_its_base(tok):
    base = tiny_lm(tok)
    frozen = copy.deepcopy(base)
    policy = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    responses = greedy_responses(policy, tok, PROMPTS, max_new_tokens=6)
    assert np.array_equal(kl_to_reference(policy, None, tok, PROMPTS, responses), np.zeros(5))  # lora_B = 0
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    via_adapter = kl_to_reference(policy, None, tok, PROMPTS, responses, batch_size=2)
    via_copy = kl_to_reference(policy, frozen, tok, PROMPTS, responses)
    assert (via_adapter > 0).all()
    np.testing.assert_allclose(via_adapter, via_copy, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------------------------ evaluate
def qa_rows(replies):
    """QA rows whose answers are the given replies (rows 0, 2) or something no reply says (rows 1, 3)."""
    answers = [replies[0], "zzz never said", replies[2], "zzz never said"]
    return datasets.Dataset.from_dict({"prompt": PROMPTS[:4], "question": [p[-1]["content"] for p in PROMPTS[:4]],
                                       "answer": answers, "category": ["a", "a", "b", "b"]})


def test_evaluate_policy_numbers(tok):
    policy, rm = tiny_lm(tok), tiny_rm(tok)
    qa = qa_rows(generate_replies(policy, tok, PROMPTS[:4], max_new_tokens=8, batch_size=2))
    policy.train()
    result = evaluate_policy(policy, rm, tok, PROMPTS, qa=qa, reference=copy.deepcopy(policy), max_new_tokens=8,
                             batch_size=2)
    assert policy.training  # its mode is restored for the training loop that called it
    responses = greedy_responses(policy, tok, PROMPTS, max_new_tokens=8)
    scores = reward_scores(rm, tok, PROMPTS, responses)
    np.testing.assert_allclose(result["scores"], scores, rtol=0, atol=1e-5)
    assert result["score_mean"] == pytest.approx(np.mean(result["scores"]))
    assert result["score_std"] == pytest.approx(np.std(result["scores"]))  # ddof=0
    assert result["kl"] == [0.0] * 5 and result["kl_mean"] == 0.0
    assert result["response_length_mean"] == pytest.approx(np.mean([len(r) for r in responses]))
    assert result["eos_share"] == pytest.approx(np.mean([r[-1] == tok.eos_token_id for r in responses]))
    assert result["hits"] == [True, False, True, False] and result["exact_match"] == 0.5
    replies = generate_replies(policy, tok, PROMPTS[:4], max_new_tokens=8)
    assert result["contains_answer"] == score_replies(replies, qa)["contains_answer"]

    plain = evaluate_policy(policy, rm, tok, PROMPTS, max_new_tokens=8)
    assert not {"kl", "kl_mean", "hits", "exact_match", "contains_answer"} & set(plain)
    assert plain["scores"] == pytest.approx(result["scores"], abs=1e-5)
    peft_policy = get_peft_model(tiny_lm(tok), LoraConfig(r=2, target_modules=["q_proj"]))
    assert evaluate_policy(peft_policy, rm, tok, PROMPTS[:2], max_new_tokens=4)["kl"] == [0.0, 0.0]
    with pytest.raises(EvaluationError):
        evaluate_policy(policy, rm, tok, [], max_new_tokens=4)


# ------------------------------------------------------------------------------------------------ compare
def test_compare_flags_a_score_rise_with_an_exact_match_fall():
    before = {"scores": [0.0, 0.0, 0.0, 0.0], "hits": [True, True, True, True], "kl_mean": 0.0}
    after = {"scores": [1.0, 1.2, 0.8, 1.0], "hits": [False, False, False, True], "kl_mean": 2.5}
    report = compare(before, after)
    # score differences 1, 1.2, 0.8, 1: mean 1, sd = sqrt(0.08 / 3), half-width 1.96 sd / 2 = 0.16005...
    assert report["score_gain"] == pytest.approx(1.0)
    assert report["score_gain_ci95"] == pytest.approx([1 - 0.98 * math.sqrt(0.08 / 3), 1 + 0.98 * math.sqrt(0.08 / 3)])
    # hit differences -1, -1, -1, 0: mean -0.75, sd = sqrt(0.75 / 3) = 0.5, half-width 1.96 * 0.5 / 2 = 0.49
    assert report["exact_match_change"] == pytest.approx(-0.75)
    assert report["exact_match_change_ci95"] == pytest.approx([-1.24, -0.26])
    assert report["kl_after"] == 2.5 and report["reward_hacking"] is True


def test_compare_does_not_flag_changes_within_their_noise():
    before = {"scores": [0.0, 0.0, 0.0, 0.0], "hits": [True, True, True, True]}
    after = {"scores": [1.0, 1.2, 0.8, 1.0], "hits": [True, False, True, True]}
    report = compare(before, after)  # hit differences 0, -1, 0, 0: -0.25 +- 1.96 * 0.5 / 2 = [-0.74, 0.24]
    assert report["exact_match_change_ci95"] == pytest.approx([-0.74, 0.24])
    assert report["reward_hacking"] is False and report["kl_after"] is None
    # exact match fell beyond its noise, but the score did not rise beyond its own: -1, 1, -1, 1 -> 0 +- 0.98 * 1.1547
    report = compare({**before, "scores": [0.0] * 4},
                     {"scores": [-1.0, 1.0, -1.0, 1.0], "hits": [False, False, False, True]})
    assert report["score_gain"] == pytest.approx(0.0)
    assert report["score_gain_ci95"] == pytest.approx([-0.98 * math.sqrt(4 / 3), 0.98 * math.sqrt(4 / 3)])
    assert report["reward_hacking"] is False

    no_qa = compare({"scores": [0.0, 1.0]}, {"scores": [1.0, 3.0]})
    assert "likelihood_gain" not in no_qa
    assert no_qa["reward_hacking"] is None and "exact_match_change" not in no_qa
    with pytest.raises(EvaluationError):
        compare({"scores": [0.0, 1.0]}, {"scores": [1.0]})
    with pytest.raises(EvaluationError):
        compare({"scores": [0.0]}, {"scores": [1.0]})  # one pair has no spread
    with pytest.raises(EvaluationError):
        compare({"scores": [0.0, 1.0], "hits": [True, False]}, {"scores": [1.0, 3.0]})


def test_likelihood_and_weighted_gains_are_the_paired_means():
    before = {"scores": [0.0, 1.0, 2.0], "likelihood": [-4.0, -6.0, -5.0]}
    after = {"scores": [1.0, 1.0, 2.0], "likelihood": [-2.0, -5.0, -5.0]}
    report = compare(before, after)
    # likelihood differences 2, 1, 0: mean 1, sd 1, half-width 1.96 / sqrt(3)
    assert report["likelihood_gain"] == pytest.approx(1.0)
    assert report["likelihood_gain_ci95"] == pytest.approx([1 - 1.96 / math.sqrt(3), 1 + 1.96 / math.sqrt(3)])
    # with w = 0.5: (1 + 1, 0 + 0.5, 0 + 0) = (2, 0.5, 0): mean 2.5 / 3, sd sqrt(((7/6)^2 + (1/3)^2 + (5/6)^2) / 2)
    weighted = weighted_gain(before, after, 0.5)
    sd = math.sqrt(((7 / 6) ** 2 + (1 / 3) ** 2 + (5 / 6) ** 2) / 2)
    assert weighted["objective_gain"] == pytest.approx(2.5 / 3)
    assert weighted["objective_gain_ci95"] == pytest.approx([2.5 / 3 - 1.96 * sd / math.sqrt(3),
                                                             2.5 / 3 + 1.96 * sd / math.sqrt(3)])
