"""Regression: linear least squares / Gaussian MLE and nonlinear least squares (Gauss–Newton, Levenberg,
Levenberg–Marquardt), single and batched on torch, plus a safe model-expression parser and a NIST StRD reader.

    from pipeline.regression import ols, curve_fit, curve_fit_batched, parse_expression
    fit = ols(X, y)                                   # coef, stderr, rss, r2, sigma2, sigma2_mle, loglik, aic, bic
    f = parse_expression("b1*(1-exp(-b2*x))")         # f.params == ("b1", "b2")
    popt, pcov = curve_fit(f, x, y, p0=[200, 0.5])    # scipy.optimize.curve_fit's contract, method="lm"
    P, C = curve_fit_batched(f, x, Y, P0)             # B problems at once, (B, p) and (B, p, p)
"""

from pipeline.regression.expr import Expression, ExpressionError, parse_expression
from pipeline.regression.linear import MLEResult, OLSResult, RankDeficientWarning, mle, ols, polyfit
from pipeline.regression.nonlinear import (
    METHODS,
    STATUS_MESSAGES,
    BatchedFitResult,
    FitResult,
    curve_fit,
    curve_fit_batched,
    least_squares_fit,
)

__all__ = [
    "METHODS",
    "STATUS_MESSAGES",
    "BatchedFitResult",
    "Expression",
    "ExpressionError",
    "FitResult",
    "MLEResult",
    "OLSResult",
    "RankDeficientWarning",
    "curve_fit",
    "curve_fit_batched",
    "least_squares_fit",
    "mle",
    "ols",
    "parse_expression",
    "polyfit",
]
