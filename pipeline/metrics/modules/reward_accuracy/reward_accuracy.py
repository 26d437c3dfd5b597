"""Reward-model quality on preference pairs: pairwise accuracy, per rejection kind, margin and calibration.

Inputs, one per scored pair: chosen_rewards and rejected_rewards (the model's scalar for each side) and kinds
(the rejection kind, "" when unknown). With margin_i = chosen_i - rejected_i:

    accuracy          share of pairs with margin > 0 (a tie counts as wrong)
    accuracy_by_kind  the same per kind (left out when every kind is "")
    margin_mean, margin_std (population), pairs
    calibration       p_i = sigmoid(margin_i), each pair counted in both orders (p_i for "chosen first" with
                      outcome 1, 1 - p_i with outcome 0), in `bins` equal-width bins of [0, 1]; ece = sum over bins
                      of (share of the 2n predictions in the bin) x |mean p - observed frequency|

Compute kwargs: skipped (pairs too long to score, reported as pairs_skipped, not counted), bins (10).
See `pipeline.metrics.reward.pairwise_report`.
"""

import datasets
import evaluate

from pipeline.metrics.reward import pairwise_report


class RewardAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description=__doc__,
            features=datasets.Features({"chosen_rewards": datasets.Value("float64"),
                                        "rejected_rewards": datasets.Value("float64"),
                                        "kinds": datasets.Value("string")}))

    def _compute(self, chosen_rewards, rejected_rewards, kinds, skipped: int = 0, bins: int = 10):
        known = kinds if any(kinds) else None
        return pairwise_report(chosen_rewards, rejected_rewards, known, skipped, bins)
