"""Reward gain at equal KL: two RLHF trainers compared where they have moved the same distance from the SFT
policy, read off each training's held-out trajectory. Used by `benchmarks/ppo_vs_trl.py --snapshot-every K`.

Why: at one β two trainers seldom end at the same KL, and a trainer that drifts further usually scores higher, so
"gain at the KL reached" mixes how far a trainer went with how well it used the distance. Reading every training
at the same KL budget removes the first part (the reward-vs-KL frontier of Gao et al., 2023, "Scaling laws for
reward model overoptimization", per training rather than per best-of-n).

Definitions, for one training (`trajectory`):

    points        (k_0, g_0) = (0, 0), the SFT policy itself, then (k_j, g_j) for j = 1..m, the policies saved
                  after updates u_1 < ... < u_m (the final policy last), in training order. k_j is the held-out
                  exact KL to SFT (`pipeline.rl.evaluation`'s `kl_mean` of that policy with the SFT policy as
                  reference: nats per greedy response) and g_j its held-out reward-model gain over SFT
                  (`compare(...)["score_gain"]`: mean over the held-out prompts of s_i(policy) − s_i(SFT)).
    gain_at(κ)    the gain where the trajectory first reaches KL κ: for the first j with k_j ≥ κ,
                  g_{j−1} + (κ − k_{j−1}) · (g_j − g_{j−1}) / (k_j − k_{j−1}) (linear between the two saved
                  policies around κ); None when no k_j ≥ κ (the training never got that far).
    reach         max_j k_j, the furthest the training went.

For two sides A and B with n_A and n_B trainings each (different seeds):

    common budget      min over all trainings of both sides of their reach: the largest κ every training reached,
                       so gain_at(κ) exists for all of them.
    side mean          mean over a side's trainings of gain_at(κ), ± 1.96 · sd / √n (sd with ddof 1).
    difference         mean_A − mean_B, with a 95% percentile bootstrap interval: `resamples` times, draw n_A of
                       A's values and n_B of B's with replacement (numpy `default_rng(seed)`), take the
                       difference of means; the interval is the 2.5th and 97.5th percentiles of those.

Nothing here trains or loads a model; `ppo_vs_trl.py` builds the trajectories.
"""

from __future__ import annotations

import statistics

import numpy as np

Z95 = 1.96


def gain_at(trajectory: list[tuple[float, float]], budget: float) -> float | None:
    """The held-out gain where `trajectory` [(KL, gain) of the saved policies in training order, without the SFT
    origin] first reaches KL `budget`, linear between the saved policies around it (module docstring); None if
    it never does."""
    if budget <= 0:
        return 0.0  # the SFT policy itself
    previous_kl, previous_gain = 0.0, 0.0
    for kl, gain in trajectory:
        if kl >= budget:
            return previous_gain + (budget - previous_kl) * (gain - previous_gain) / (kl - previous_kl)
        previous_kl, previous_gain = kl, gain
    return None


def reach(trajectory: list[tuple[float, float]]) -> float:
    """The largest KL to SFT along the trajectory (0 for none)."""
    return max((kl for kl, _ in trajectory), default=0.0)


def common_budget(*sides: list[list[tuple[float, float]]]) -> float:
    """The largest KL that every training of every side reached: min over trainings of `reach`."""
    return min(reach(trajectory) for side in sides for trajectory in side)


def side_mean(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width 1.96 · sd / √n (sd ddof 1; None for one value)."""
    spread = Z95 * statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None
    return statistics.fmean(values), spread


def difference(a: list[float], b: list[float], resamples: int = 20_000, seed: int = 0) -> tuple[float, float, float]:
    """mean(a) − mean(b) and its 95% percentile bootstrap interval over trainings (module docstring)."""
    rng = np.random.default_rng(seed)
    a_values, b_values = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a_means = a_values[rng.integers(0, len(a_values), size=(resamples, len(a_values)))].mean(axis=1)
    b_means = b_values[rng.integers(0, len(b_values), size=(resamples, len(b_values)))].mean(axis=1)
    low, high = np.percentile(a_means - b_means, [2.5, 97.5])
    return float(a_values.mean() - b_values.mean()), float(low), float(high)


def compare_at(budget: float, a: list[list[tuple[float, float]]], b: list[list[tuple[float, float]]]) -> dict:
    """Both sides' `gain_at(budget)` over their trainings, each side's mean ± interval, and the difference a − b
    with its bootstrap interval. Raises ValueError when a training never reached `budget`."""
    values = []
    for name, side in (("first", a), ("second", b)):
        gains = [gain_at(trajectory, budget) for trajectory in side]
        if any(g is None for g in gains):
            raise ValueError(f"KL budget {budget:.3f}: the {name} side has trainings that never reached it")
        values.append(gains)
    gap, low, high = difference(*values)
    return {"budget": budget, "gains": values, "means": [side_mean(v) for v in values],
            "difference": gap, "difference_ci95": (low, high)}
