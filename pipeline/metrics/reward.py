"""Reward-model quality on held-out preference pairs: pairwise accuracy (overall and per rejection kind),
reward margin, and calibration of P(chosen preferred) = sigmoid(r_chosen - r_rejected) in bins."""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def score_conversations(model, tokenizer, conversations: list[list[dict]], max_length: int = 512,
                        batch_size: int = 32) -> np.ndarray:
    """One scalar reward per conversation, each rendered with the chat template as the trainer saw it."""
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    model.eval()
    scores = []
    try:
        for start in range(0, len(conversations), batch_size):
            texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations[start:start + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length,
                            add_special_tokens=False).to(model.device)
            scores.append(model(**enc).logits[:, 0].float().cpu().numpy())
    finally:
        tokenizer.padding_side = side
    return np.concatenate(scores) if scores else np.zeros(0)


def pairwise_report(chosen: np.ndarray, rejected: np.ndarray, kinds: list[str] | None = None, bins: int = 10) -> dict:
    margin = chosen - rejected
    report = {"accuracy": float(np.mean(margin > 0)), "margin_mean": float(np.mean(margin)),
              "margin_std": float(np.std(margin)), "pairs": int(len(margin))}
    if kinds is not None:
        report["accuracy_by_kind"] = {k: float(np.mean(margin[np.asarray(kinds) == k] > 0)) for k in sorted(set(kinds))}
    report["calibration"] = calibration(margin, bins)
    return report


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
