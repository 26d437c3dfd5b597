"""Reward-model quality on held-out preference pairs: pairwise accuracy (overall and per rejection kind),
reward margin, and calibration of P(chosen preferred) = sigmoid(r_chosen - r_rejected) in bins.

The held-out pairs are the ones the trainer would keep: tokenized by TRL's own `RewardTrainer` preprocessing
(`held_out_pairs`) and scored whole, never truncated (`score_pairs`). For the world's conversational pairs
(TRL 1.16) a side is the chat template applied to prompt + reply, the rendered text ending with the reply's
`<|im_end|>` and newline, no further EOS added; the reward is the classifier's logit at the last token that is not
padding (right padding). A pair whose chosen or rejected side is longer than `max_length` tokens (the reward
section's, 1024 by default) is one `RewardTrainer` drops from training; it is skipped here too and counted in
`pairs_skipped`.

    accuracy      share of the scored held-out pairs with r_chosen > r_rejected. A tie (r_chosen == r_rejected)
                  counts as wrong. Skipped pairs are not in the denominator: accuracy = correct / pairs.
    pairs         held-out pairs scored (the denominator of accuracy, margin and calibration)
    pairs_skipped held-out pairs not scored because a side is longer than max_length tokens
    margin_mean   mean of m_i = r_chosen_i - r_rejected_i; margin_std their population standard deviation (ddof 0)
    ece           expected calibration error of p_i = sigmoid(m_i), each pair counted in BOTH orders: (p_i,
                  outcome 1) and (1 - p_i, outcome 0), so the 2n predictions cover [0, 1]. Bins: 10 of equal width,
                  [k/10, (k+1)/10), p = 1 in the last; ece = sum over bins of (predictions in bin / 2n) x
                  |mean p in bin - share of outcome 1 in bin|. This symmetrised ECE is smaller than the one-sided
                  ECE of (p_i, 1) alone (on the tiny run 0.038 against 0.107): it measures whether the margin is
                  calibrated as a probability of preference, whichever reply is shown first.

With a likelihood weight w > 0 (`likelihood_report`), the reward whose accuracy is also reported is
r_i + w · L_i, L_i the reply's log-likelihood under a causal LM (the SFT model) at temperature 1: the sum over
the reply's tokens of log softmax(logits)[token], the reply's tokens being those of the pair's rendered side
after `prompt_ids(prompt)` (the prompt with its generation header) up to and including the first EOS, i.e.
without the template's trailing newline: what the ppo stage adds for a sampled response with the same w.

    accuracy_with_likelihood[_by_kind]   share of pairs with r_c + w·L_c > r_r + w·L_r (ties wrong)
    accuracy_likelihood_alone[_by_kind]  share of pairs with L_c > L_r: the LM alone, a reference point

The floor beside them (`shorter_reply_floor`): a scorer that prefers the shorter side.

    floor_shorter_reply[_by_kind]   share of pairs whose chosen side has fewer tokens than its rejected side
                                    (ties wrong). A summed log-likelihood favours short replies, so this is
                                    what length alone would give it.
"""

from __future__ import annotations

import numpy as np
import torch


def held_out_pairs(trainer, split):
    """`(kept, skipped)`: `split` (prompt?, chosen, rejected[, kind]) tokenized and filtered exactly as `trainer`
    (a TRL `RewardTrainer`) prepares its own data: `chosen_ids`/`rejected_ids` columns added, pairs with a side
    longer than `trainer.args.max_length` tokens dropped; `skipped` counts those. Call it on every process
    under `accelerate launch`: TRL's preprocessing synchronises them (main process first)."""
    kept = trainer._prepare_dataset(split, trainer.processing_class, trainer.args, "held-out")
    return kept, len(split) - len(kept)


@torch.no_grad()
def score_pairs(model, pairs, pad_token_id: int | None = None, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """`(r_chosen, r_rejected)`, one scalar reward per side of each pair, from `chosen_ids` and `rejected_ids`
    (as `held_out_pairs` makes them), whole: batched, padded and fed to the model as `RewardTrainer` does
    (TRL's `DataCollatorForPreference`: right padding with the pad token, attention mask)."""
    from trl.trainer.reward_trainer import DataCollatorForPreference

    pad = model.config.pad_token_id if pad_token_id is None else pad_token_id
    collate = DataCollatorForPreference(pad_token_id=pad)
    model.eval()
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        rows = pairs[start:start + batch_size]
        batch = collate([{"chosen_ids": c, "rejected_ids": r}
                         for c, r in zip(rows["chosen_ids"], rows["rejected_ids"])])
        rewards = model(input_ids=batch["input_ids"].to(model.device),
                        attention_mask=batch["attention_mask"].to(model.device)).logits[:, 0].float().cpu()
        c, r = rewards.chunk(2)
        chosen.append(c.numpy())
        rejected.append(r.numpy())
    return (np.concatenate(chosen), np.concatenate(rejected)) if chosen else (np.zeros(0), np.zeros(0))


def pairwise_report(chosen: np.ndarray, rejected: np.ndarray, kinds: list[str] | None = None, skipped: int = 0,
                    bins: int = 10) -> dict:
    """Accuracy (see the module docstring: ties are wrong, skipped pairs are not counted), margin and calibration
    of the scored pairs; `skipped` (pairs too long to score) is reported as `pairs_skipped`."""
    margin = np.asarray(chosen, dtype=np.float64) - np.asarray(rejected, dtype=np.float64)
    if not len(margin):
        raise ValueError("no scored pairs: accuracy is undefined")
    report = {"accuracy": float(np.mean(margin > 0)), "margin_mean": float(np.mean(margin)),
              "margin_std": float(np.std(margin)), "pairs": int(len(margin)), "pairs_skipped": int(skipped)}
    if kinds is not None:
        report["accuracy_by_kind"] = {k: float(np.mean(margin[np.asarray(kinds) == k] > 0)) for k in sorted(set(kinds))}
    report["calibration"] = calibration(margin, bins)
    return report


def pair_metrics(chosen, rejected, kinds: list[str] | None = None, skipped: int = 0) -> dict:
    """`pairwise_report` of scored pairs, computed by the `reward_accuracy` evaluate module
    (`pipeline.metrics.modules`): what the reward stage reports and `pipeline eval` recomputes."""
    from pipeline.metrics.modules import load

    chosen, rejected = np.asarray(chosen, dtype=np.float64), np.asarray(rejected, dtype=np.float64)
    if not len(chosen):
        raise ValueError("no scored pairs: accuracy is undefined")
    return load("reward_accuracy").compute(chosen_rewards=chosen.tolist(), rejected_rewards=rejected.tolist(),
                                           kinds=list(kinds) if kinds is not None else [""] * len(chosen),
                                           skipped=skipped)


def calibration(margin: np.ndarray, bins: int = 10) -> dict:
    """Reliability of p = sigmoid(margin). Each pair is counted in both orders (p for "chosen first", 1-p for
    "rejected first"), so predicted probabilities cover [0, 1] and a calibrated model has accuracy == p per bin.
    Returns the bins and the expected calibration error (ECE)."""
    p = 1 / (1 + np.exp(-margin))
    probs = np.concatenate([p, 1 - p])
    truth = np.concatenate([np.ones_like(p), np.zeros_like(p)])
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(probs, edges) - 1, 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            confidence, accuracy = float(probs[mask].mean()), float(truth[mask].mean())
            table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(mask.sum()),
                          "mean_predicted": confidence, "frequency": accuracy})
            ece += mask.mean() * abs(confidence - accuracy)
    return {"bins": table, "ece": float(ece)}


def plot_calibration(report: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = report["calibration"]["bins"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    ax.plot([b["mean_predicted"] for b in bins], [b["frequency"] for b in bins], "o-", label="reward model")
    ax.set_xlabel("predicted P(first reply preferred)")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"accuracy {report['accuracy']:.3f}, ECE {report['calibration']['ece']:.3f}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def reply_tokens(tokenizer, prompt: list[dict], rendered: list[int]) -> list[int]:
    """The reply's tokens inside a pair's rendered side `rendered` (prompt + reply through the chat template):
    after `prompt_ids(prompt)`, up to and including the first EOS. Raises ValueError when the side does not start
    with the prompt's rendering (a chat template whose prompt rendering is not a prefix)."""
    from pipeline.metrics.qa import cut_at_eos, prompt_ids

    head = prompt_ids(tokenizer, prompt)
    if list(rendered[:len(head)]) != head:
        raise ValueError("a preference side does not start with its prompt rendered with the generation header: "
                         "the reply's tokens cannot be told apart")
    return cut_at_eos(list(rendered[len(head):]), tokenizer.eos_token_id)


def likelihood_report(lm, tokenizer, pairs, chosen: np.ndarray, rejected: np.ndarray, weight: float) -> dict:
    """Accuracies of r + weight · L and of L alone on held-out `pairs` (with `prompt`, `chosen_ids`,
    `rejected_ids`[, `kind`]) whose classifier rewards are `chosen`/`rejected` (module docstring)."""
    from pipeline.rl.evaluation import log_likelihoods

    prompts = list(pairs["prompt"])
    sides = [log_likelihoods(lm, tokenizer, prompts, [reply_tokens(tokenizer, p, ids) for p, ids
                                                      in zip(prompts, pairs[column])])
             for column in ("chosen_ids", "rejected_ids")]
    kinds = np.asarray(pairs["kind"]) if "kind" in pairs.column_names else None
    report = {"likelihood_weight": weight}
    for name, (c, r) in (("with_likelihood", (chosen + weight * sides[0], rejected + weight * sides[1])),
                         ("likelihood_alone", (sides[0], sides[1]))):
        right = c > r
        report[f"accuracy_{name}"] = float(right.mean())
        if kinds is not None:
            report[f"accuracy_by_kind_{name}"] = {k: float(right[kinds == k].mean()) for k in sorted(set(kinds))}
    return report


def shorter_reply_floor(pairs) -> dict:
    """`floor_shorter_reply` (and `_by_kind` when `pairs` has `kind`) of the module docstring, from the token
    counts of `chosen_ids` and `rejected_ids`."""
    shorter = np.array([len(c) < len(r) for c, r in zip(pairs["chosen_ids"], pairs["rejected_ids"])])
    if not len(shorter):
        raise ValueError("no scored pairs: the floor is undefined")
    report = {"floor_shorter_reply": float(shorter.mean())}
    if "kind" in pairs.column_names:
        kinds = np.asarray(pairs["kind"])
        report["floor_shorter_reply_by_kind"] = {k: float(shorter[kinds == k].mean()) for k in sorted(set(kinds))}
    return report
