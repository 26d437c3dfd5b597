"""Win rate of policy A over policy B on the same prompts, judged by a reward model's scores.

Inputs, one per prompt: scores (the RM score of A's response) and other_scores (B's, same prompt). A prompt is a
win when scores > other_scores, a loss when <, a tie when equal (exactly, as floats). `pipeline eval` passes the
same score for both when A and B gave the same response, so padding noise never turns it into a win or loss. With n prompts, W wins,
T ties and L losses:

    win_rate = W / n, tie_rate = T / n, loss_rate = L / n
    win_rate_ci95           Wilson score interval (z = 1.96) of W successes in n trials
    decisive_win_rate       W / (W + L), ties left out; decisive_win_rate_ci95: Wilson, W in W + L trials
                            (None when every prompt is a tie)
    wins, ties, losses, prompts
"""

import math

import datasets
import evaluate
import numpy as np

Z95 = 1.96


def wilson(successes: int, trials: int, z: float = Z95) -> list[float]:
    """The Wilson score interval [low, high] of a binomial proportion."""
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return [centre - half, centre + half]


class WinRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description=__doc__,
            features=datasets.Features({"scores": datasets.Value("float64"),
                                        "other_scores": datasets.Value("float64")}))

    def _compute(self, scores, other_scores):
        a, b = np.asarray(scores, dtype=np.float64), np.asarray(other_scores, dtype=np.float64)
        if not len(a):
            raise ValueError("scores: no prompts to compare")
        wins, ties, losses, n = int((a > b).sum()), int((a == b).sum()), int((a < b).sum()), len(a)
        decisive = wins + losses
        return {"win_rate": wins / n, "tie_rate": ties / n, "loss_rate": losses / n, "win_rate_ci95": wilson(wins, n),
                "decisive_win_rate": wins / decisive if decisive else None,
                "decisive_win_rate_ci95": wilson(wins, decisive) if decisive else None,
                "wins": wins, "ties": ties, "losses": losses, "prompts": n}
