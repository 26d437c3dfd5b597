"""`benchmarks/ppo_vs_trl.py`'s means over repeats, against numbers worked out by hand."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("ppo_vs_trl", Path(__file__).parents[3] / "benchmarks" / "ppo_vs_trl.py")
ppo_vs_trl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ppo_vs_trl)


def test_means_over_trainings_with_an_interval_over_trainings():
    held_out = [{"score_gain": 0.1, "kl_after": 0.5, "exact_match_after": 0.5},
                {"score_gain": 0.3, "kl_after": 1.5, "exact_match_after": 0.4},
                {"score_gain": 0.5, "kl_after": 1.0, "exact_match_after": 0.3}]
    # gains: mean 0.3, sd 0.2 (deviations -0.2, 0, +0.2; 0.08 / 2), 1.96 * 0.2 / sqrt(3) = 0.2263; KL mean 1.0
    assert ppo_vs_trl.over_repeats(held_out) == "n 3, gain +0.300 ± 0.226, KL 1.000, +0.300 per nat, EM 0.400"


def test_one_training_has_no_interval_and_no_questions_no_exact_match():
    held_out = [{"score_gain": -0.2, "kl_after": 0.4, "exact_match_after": None}]
    assert ppo_vs_trl.over_repeats(held_out) == "n 1, gain -0.200, KL 0.400, -0.500 per nat"
