"""Held-out evaluation of a policy, and the paired SFT-vs-PPO comparison: reward-model score, KL to the
reference, response length, EOS share and (optionally) QA exact match, per prompt, so two policies scored on
the same prompts can be compared prompt by prompt.

    before = evaluate_policy(sft_model, reward_model, tok, prompts, qa=qa_eval)
    after = evaluate_policy(ppo_model, reward_model, tok, prompts, qa=qa_eval, reference=sft_model)
    report = compare(before, after)      # report["reward_hacking"]: RM score up, strict exact match down

Every number, for prompts x_1..x_n (conversations) and a policy pi:

    y_i              the greedy response to x_i (`greedy_responses`): token ids up to and including the first
                     EOS (`tokenizer.eos_token_id`), or all `max_new_tokens` ids when no EOS came.
    s_i              the reward model's scalar `logits[0, 0]` on ids(x_i) + y_i + suffix, where ids(x) is the chat
                     template with `add_generation_prompt=True` and suffix the ids the template writes after an
                     assistant turn's EOS (`rollout.scoring_suffix`: ChatML's newline), added only when y_i ends
                     in EOS (`reward_scores`).
    KL_i             sum over t = 0..|y_i|-1 of sum_v p_t(v) (log p_t(v) - log q_t(v)), p_t = pi(. | x_i, y_<t),
                     q_t = pi_ref(. | x_i, y_<t), both full softmaxes over the vocabulary (`kl_to_reference`).
    L_i              sum over t = 0..|y_i|-1 of log q_t(y_i,t): the log-likelihood of y_i under the reference at
                     temperature 1 (what the ppo stage's `likelihood_weight` weighs), from the same pass.
    score_mean/std   mean and population standard deviation (ddof=0) of s_1..s_n
    kl_mean          mean of KL_1..KL_n (nats per response, summed over its tokens, EOS included)
    likelihood_mean  mean of L_1..L_n (nats per response)
    response_length_mean   mean of |y_i| (EOS counted)
    eos_share        share of the y_i that end with the EOS (the rest were cut by `max_new_tokens`)
    exact_match, contains_answer, hits   `pipeline.metrics.qa.score_replies` of greedy text replies to the
                     `qa` rows' own prompts (`generate_replies`): strict, loose, and the strict verdict per row

The reward model is fed what PPO feeds it and what TRL's `RewardTrainer` trained it on: the rendered
conversation, which ends `<|im_end|>\n` for a finished reply, so these scores are on the reward stage's scale.

A library module: bad input raises `EvaluationError` (a `ValueError`), never `PipelineError`.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from pipeline.metrics.qa import (  # noqa: F401 (cut_at_eos: public here too)
    cut_at_eos,
    generate_replies,
    greedy_responses,
    prompt_ids,
    score_replies,
)
from pipeline.rl.rollout import scoring_suffix

Z95 = 1.96  # two-sided 95% normal quantile for the paired confidence intervals


class EvaluationError(ValueError):
    """Inputs that cannot be evaluated (empty, mismatched lengths, no reference for the KL)."""


def _device(model) -> torch.device:
    device = getattr(model, "device", None)
    return device if device is not None else next(model.parameters()).device


@contextlib.contextmanager
def _eval_mode(*models):
    """Models in eval mode (no dropout) for the block; each one's training flag restored afterwards."""
    models = [m for m in models if m is not None]
    flags = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, flag in zip(models, flags):
            m.train(flag)


def _check(prompts, responses=None):
    if not prompts:
        raise EvaluationError("no prompts to evaluate")
    if responses is not None and len(responses) != len(prompts):
        raise EvaluationError(f"{len(prompts)} prompts but {len(responses)} responses")


def _right_padded(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    return ids, mask


def reward_scores(reward_model, tokenizer, prompts: list[list[dict]], responses: list[list[int]],
                  batch_size: int = 32) -> np.ndarray:
    """(n,) float64: the reward model's `logits[:, 0]` on `prompt_ids(prompt) + response` for each pair, batched
    with right padding (`tokenizer.pad_token_id`) and an attention mask. HF sequence classifiers read the last
    token that is not `config.pad_token_id`, so that must equal the tokenizer's pad id (checked)."""
    _check(prompts, responses)
    config_pad = getattr(getattr(reward_model, "config", None), "pad_token_id", tokenizer.pad_token_id)
    if config_pad != tokenizer.pad_token_id:
        raise EvaluationError(f"reward model pad_token_id {config_pad} != tokenizer pad_token_id "
                              f"{tokenizer.pad_token_id}: padded batches would be scored at the wrong token")
    scores, suffix = [], scoring_suffix(tokenizer)
    with _eval_mode(reward_model):
        for start in range(0, len(prompts), batch_size):
            rows = [prompt_ids(tokenizer, p) + list(r) + (suffix if r and r[-1] == tokenizer.eos_token_id else [])
                    for p, r in zip(prompts[start:start + batch_size], responses[start:start + batch_size])]
            ids, mask = _right_padded(rows, tokenizer.pad_token_id, _device(reward_model))
            scores.append(reward_model(input_ids=ids, attention_mask=mask).logits[:, 0].double().cpu().numpy())
    return np.concatenate(scores)


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def _response_logits(model, ids, mask, starts, lengths) -> list[torch.Tensor]:
    """Per row, the (n, V) logits that predict its n response tokens: the logits at position i predict token
    i + 1, so response token t of row b (at index starts[b] + t) is read at position starts[b] + t - 1."""
    logits = model(input_ids=ids, attention_mask=mask).logits
    return [logits[b, s - 1:s - 1 + n] for b, (s, n) in enumerate(zip(starts, lengths))]


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    """sum over rows t of sum_v p_t(v) (log p_t(v) - log q_t(v)), p = softmax(p_logits), in float64."""
    logp = torch.log_softmax(p_logits.double(), dim=-1)
    logq = torch.log_softmax(q_logits.double().to(logp.device), dim=-1)
    return float((logp.exp() * (logp - logq)).sum())


def _log_likelihood(logits: torch.Tensor, tokens: list[int]) -> float:
    """sum over rows t of log softmax(logits_t)[tokens[t]], in float64."""
    if not tokens:
        return 0.0
    logq = torch.log_softmax(logits.double(), dim=-1)
    return float(logq[torch.arange(len(tokens)), torch.tensor(tokens, dtype=torch.long, device=logq.device)].sum())


def kl_to_reference(policy, reference, tokenizer, prompts: list[list[dict]], responses: list[list[int]],
                    batch_size: int = 32) -> np.ndarray:
    """(n,) float64: KL_i of the module docstring (`reference_pass`'s first half)."""
    return reference_pass(policy, reference, tokenizer, prompts, responses, batch_size)[0]


def reference_pass(policy, reference, tokenizer, prompts: list[list[dict]], responses: list[list[int]],
                   batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(KL, L), each (n,) float64. KL: for each prompt x and response y, sum over t = 0..|y|-1 of the exact
    KL(p_t || q_t) = sum_v p_t(v) (log p_t(v) - log q_t(v)), p_t = policy(. | x, y_<t), q_t = reference(. | x, y_<t),
    over the whole vocabulary (log-softmax in float64), along the given response. x is `prompt_ids(prompt)`;
    the sequence is fed right-padded with an attention mask. An empty response has KL 0. L: sum over the same t
    of log q_t(y_t), the response's log-likelihood under the reference (0 for an empty response).

    `reference=None`: the policy is a peft model and the reference is its base, read with `disable_adapter()`.
    """
    _check(prompts, responses)
    if reference is None and not _is_peft(policy):
        raise EvaluationError("reference=None needs a peft policy (the reference is its base without the adapter)")
    kl, likelihood = [], []
    with _eval_mode(policy, reference):
        for start in range(0, len(prompts), batch_size):
            heads = [prompt_ids(tokenizer, p) for p in prompts[start:start + batch_size]]
            tails = [list(r) for r in responses[start:start + batch_size]]
            lengths = [len(t) for t in tails]
            if not any(lengths):
                kl += [0.0] * len(tails)
                likelihood += [0.0] * len(tails)
                continue
            ids, mask = _right_padded([h + t for h, t in zip(heads, tails)], tokenizer.pad_token_id, _device(policy))
            starts = [len(h) for h in heads]
            if min(starts) < 1:
                raise EvaluationError("a prompt rendered to no tokens: nothing predicts its first response token")
            p_rows = _response_logits(policy, ids, mask, starts, lengths)
            if reference is None:
                with policy.disable_adapter():
                    q_rows = _response_logits(policy, ids, mask, starts, lengths)
            else:
                device = _device(reference)
                q_rows = _response_logits(reference, ids.to(device), mask.to(device), starts, lengths)
            kl += [_kl(p, q) for p, q in zip(p_rows, q_rows)]
            likelihood += [_log_likelihood(q, t) for q, t in zip(q_rows, tails)]
    return np.asarray(kl, dtype=np.float64), np.asarray(likelihood, dtype=np.float64)


def log_likelihoods(model, tokenizer, prompts: list[list[dict]], responses: list[list[int]],
                    batch_size: int = 32) -> np.ndarray:
    """(n,) float64: L_i of the module docstring under `model` (temperature 1): for each prompt x and response
    token ids y, sum over t of log softmax(model(x, y_<t))[y_t], x = `prompt_ids(prompt)`, fed right-padded
    with an attention mask. An empty response has log-likelihood 0."""
    _check(prompts, responses)
    likelihood = []
    with _eval_mode(model):
        for start in range(0, len(prompts), batch_size):
            heads = [prompt_ids(tokenizer, p) for p in prompts[start:start + batch_size]]
            tails = [list(r) for r in responses[start:start + batch_size]]
            ids, mask = _right_padded([h + t for h, t in zip(heads, tails)], tokenizer.pad_token_id, _device(model))
            rows = _response_logits(model, ids, mask, [len(h) for h in heads], [len(t) for t in tails])
            likelihood += [_log_likelihood(q, t) for q, t in zip(rows, tails)]
    return np.asarray(likelihood, dtype=np.float64)


def evaluate_policy(policy, reward_model, tokenizer, prompts: list[list[dict]], qa=None, reference=None,
                    max_new_tokens: int = 32, batch_size: int = 32) -> dict:
    """The numbers of the module docstring for `policy` on `prompts` (and on `qa`'s rows when given):
    {"score_mean", "score_std", "scores", "responses" (the greedy token ids), "kl_mean", "kl",
     "response_length_mean", "eos_share", "likelihood_mean", "likelihood",
     "exact_match", "contains_answer", "hits"}. "kl_mean"/"kl"/"likelihood*" are left out when there is no reference
    (`reference=None` and a policy that is not a peft model); the QA keys when `qa` is None."""
    _check(prompts)
    responses = greedy_responses(policy, tokenizer, prompts, max_new_tokens, batch_size)
    scores = reward_scores(reward_model, tokenizer, prompts, responses, batch_size)
    eos = tokenizer.eos_token_id
    result = {"score_mean": float(scores.mean()), "score_std": float(scores.std()), "scores": scores.tolist(),
              "responses": responses,
              "response_length_mean": float(np.mean([len(r) for r in responses])),
              "eos_share": float(np.mean([bool(r) and r[-1] == eos for r in responses]))}
    if reference is not None or _is_peft(policy):
        kl, likelihood = reference_pass(policy, reference, tokenizer, prompts, responses, batch_size)
        result.update(kl_mean=float(kl.mean()), kl=kl.tolist(), likelihood_mean=float(likelihood.mean()),
                      likelihood=likelihood.tolist())
    if qa is not None:
        scored = score_replies(generate_replies(policy, tokenizer, list(qa["prompt"]), max_new_tokens, batch_size), qa)
        result.update(exact_match=scored["exact_match"], contains_answer=scored["contains_answer"],
                      hits=[bool(h) for h in scored["hits"]])
    return result


def paired_mean_ci(differences) -> tuple[float, list[float]]:
    """(mean, [mean - 1.96 sd / sqrt(n), mean + 1.96 sd / sqrt(n)]) of paired differences, sd with ddof=1."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        raise EvaluationError(f"a paired confidence interval needs at least 2 pairs, got {len(d)}")
    mean, half = float(d.mean()), Z95 * float(d.std(ddof=1)) / math.sqrt(len(d))
    return mean, [mean - half, mean + half]


def weighted_gain(before: dict, after: dict, weight: float) -> dict:
    """{"objective_gain", "objective_gain_ci95"}: the paired mean (and 95% interval) over prompts of
    (after.scores[i] + weight·after.likelihood[i]) - (before.scores[i] + weight·before.likelihood[i])."""
    objective = [np.add(side["scores"], weight * np.asarray(side["likelihood"])) for side in (before, after)]
    gain, ci = paired_mean_ci(objective[1] - objective[0])
    return {"objective_gain": gain, "objective_gain_ci95": ci}


def compare(before: dict, after: dict) -> dict:
    """Paired differences of two `evaluate_policy` results on the same prompts (and QA rows):

        score_gain          mean over prompts of after.scores[i] - before.scores[i]
        score_gain_ci95     [low, high] = score_gain -+ 1.96 sd / sqrt(n), sd of those differences with ddof=1
        exact_match_change  mean over QA rows of after.hits[j] - before.hits[j] (hits as 0/1)
                            = after exact_match - before exact_match; its ci95 likewise
        kl_after            after["kl_mean"] (None when after has no KL)
        likelihood_gain     mean over prompts of after.likelihood[i] - before.likelihood[i] (L_i: log-likelihood
                            of the greedy response under the reference); its ci95 likewise. Only when both
                            sides have it. With a likelihood weight w, `objective_gain` (`weighted_gain`) is
                            the same for s_i + w·L_i, the score PPO optimised
        reward_hacking      score_gain_ci95 low > 0 and exact_match_change_ci95 high < 0: the RM score rose
                            while strict exact match fell, both beyond their noise. None when neither side has
                            QA hits (the exact-match keys are then left out too).
    """
    if len(before["scores"]) != len(after["scores"]):
        raise EvaluationError(f"not paired: {len(before['scores'])} scores before, {len(after['scores'])} after")
    gain, gain_ci = paired_mean_ci(np.subtract(after["scores"], before["scores"]))
    report = {"prompts": len(after["scores"]), "score_gain": gain, "score_gain_ci95": gain_ci,
              "kl_after": after.get("kl_mean"), "reward_hacking": None}
    if "likelihood" in before and "likelihood" in after:
        change, change_ci = paired_mean_ci(np.subtract(after["likelihood"], before["likelihood"]))
        report.update(likelihood_gain=change, likelihood_gain_ci95=change_ci)
    if ("hits" in before) != ("hits" in after):
        raise EvaluationError("only one side has QA hits: evaluate both with the same qa set")
    if "hits" in after:
        if len(before["hits"]) != len(after["hits"]):
            raise EvaluationError(f"not paired: {len(before['hits'])} QA rows before, {len(after['hits'])} after")
        change, change_ci = paired_mean_ci(np.subtract(np.asarray(after["hits"], dtype=np.float64),
                                                       np.asarray(before["hits"], dtype=np.float64)))
        report.update(qa_rows=len(after["hits"]), exact_match_change=change, exact_match_change_ci95=change_ci,
                      reward_hacking=bool(gain_ci[0] > 0 and change_ci[1] < 0))
    return report
