"""The world's regression set: points on known curves plus Gaussian noise, with the true parameters kept.

Each curve's `function` is an expression in x and named parameters, evaluated with the same safe parser the
regression stage fits with (`pipeline.regression.parse_expression`), so data and fits agree on one meaning.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from pipeline.errors import PipelineError
from pipeline.regression import ExpressionError, parse_expression

CURVES = {  # name: (function of x, {param: (low, high)}, (x low, x high))
    "linear": ("a + b*x", {"a": (-2.0, 2.0), "b": (0.5, 3.0)}, (0.0, 10.0)),
    "exp_rise": ("b1*(1 - exp(-b2*x))", {"b1": (5.0, 20.0), "b2": (0.1, 0.8)}, (0.0, 15.0)),
    "exp_decay": ("a*exp(-b*x) + c", {"a": (2.0, 10.0), "b": (0.2, 1.0), "c": (0.0, 3.0)}, (0.0, 10.0)),
    "logistic": ("b1/(1 + exp(-b2*(x - b3)))", {"b1": (5.0, 15.0), "b2": (0.5, 2.0), "b3": (3.0, 7.0)}, (0.0, 10.0)),
    "power": ("a*pow(x, b)", {"a": (0.5, 2.0), "b": (0.3, 1.5)}, (0.5, 10.0)),
}


def curve_value(function: str, x, params: dict) -> np.ndarray:
    """Evaluate a `regression.function` string at x (float or numpy array) with its named params."""
    try:
        expr = parse_expression(function, variables=("x",))
    except ExpressionError as e:
        raise PipelineError(str(e)) from e
    values = expr(torch.as_tensor(np.asarray(x, dtype=float)), *(torch.tensor(float(params[p])) for p in expr.params))
    return values.numpy()


def regression_rows(curves: list[str], n_points: int, noise: float, seed: int) -> list[dict]:
    """One row per point; the noise sd of each curve is `noise` times the curve's range on its x interval."""
    rng, rows = np.random.default_rng([seed, 7]), []
    for curve in curves:
        function, ranges, (lo, hi) = CURVES[curve]
        params = {k: round(float(rng.uniform(*r)), 3) for k, r in sorted(ranges.items())}
        x = np.sort(rng.uniform(lo, hi, n_points)).round(4)
        f = curve_value(function, x, params)
        sd = round(noise * float(f.max() - f.min()), 4)
        y = f + rng.normal(0.0, sd, x.shape)
        rows += [{"x": float(a), "y": float(b), "function": function, "curve": curve,
                  "true_params": json.dumps(params, sort_keys=True), "noise_sd": sd} for a, b in zip(x, y)]
    return rows
