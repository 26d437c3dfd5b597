"""ols / polyfit / mle: NIST StRD linear problems to the certified digits, and the likelihood bookkeeping."""

import math
import warnings

import numpy as np
import pytest
import torch

from pipeline.regression import RankDeficientWarning, mle, ols, polyfit
from pipeline.regression.nist import LINEAR_NAMES, load_linear, lre
from tests.conftest import needs_nist as needs_data


def _fit(prob):
    if prob.degree is None:
        return ols(prob.x, prob.y, intercept=prob.intercept)
    return polyfit(prob.x, prob.y, prob.degree, intercept=prob.intercept)


@needs_data
@pytest.mark.parametrize("name", LINEAR_NAMES)
def test_nist_linear_certified_digits(name):
    prob = load_linear(name)
    fit = _fit(prob)
    coef_lre, se_lre = lre(fit.coef, prob.certified).min(), lre(fit.stderr, prob.certified_sd).min()
    assert coef_lre >= 7, f"{name}: coefficient LRE {coef_lre:.1f} < 7"
    assert se_lre >= 7, f"{name}: standard-error LRE {se_lre:.1f} < 7"
    assert lre(fit.rss, prob.certified_rss) >= 7, f"{name}: rss {fit.rss!r} vs {prob.certified_rss!r}"
    assert lre(fit.r2, prob.certified_r2) >= 7, f"{name}: r2 {fit.r2!r} vs {prob.certified_r2!r}"
    assert lre(math.sqrt(fit.sigma2), prob.certified_rsd) >= 7, f"{name}: residual sd"


@needs_data
def test_filip_with_float64_powers_still_meets_target():
    """Building the degree-10 design in float64 by hand and calling ols also reaches LRE ≥ 7."""
    prob = load_linear("Filip")
    X = np.stack([prob.x**k for k in range(1, 11)], axis=1)
    fit = ols(X, prob.y)
    assert lre(fit.coef, prob.certified).min() >= 7
    assert lre(fit.stderr, prob.certified_sd).min() >= 7


def _random_problem(n=40, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, k))
    y = 1.5 + X @ np.array([2.0, -1.0, 0.5]) + rng.normal(scale=0.3, size=n)
    return X, y


def test_matches_lstsq_and_accepts_torch():
    X, y = _random_problem()
    fit = ols(torch.tensor(X), torch.tensor(y))
    A = np.column_stack([np.ones(len(y)), X])
    ref = np.linalg.lstsq(A, y, rcond=None)[0]
    np.testing.assert_allclose(fit.coef, ref, rtol=1e-12)
    cov = fit.sigma2 * np.linalg.inv(A.T @ A)
    np.testing.assert_allclose(fit.cov, cov, rtol=1e-10)
    np.testing.assert_allclose(fit.stderr, np.sqrt(np.diag(cov)), rtol=1e-10)
    np.testing.assert_allclose(fit.fitted + fit.residuals, y, rtol=1e-12)
    assert isinstance(fit.coef, np.ndarray) and fit.coef.dtype == np.float64


def test_sigma2_unbiased_and_mle_relation():
    X, y = _random_problem()
    fit = ols(X, y)
    n, p = len(y), X.shape[1] + 1
    assert fit.df_resid == n - p
    assert fit.sigma2 == pytest.approx(fit.rss / (n - p), rel=1e-14)
    assert fit.sigma2_mle == pytest.approx(fit.rss / n, rel=1e-14)
    assert fit.sigma2_mle == pytest.approx(fit.sigma2 * (n - p) / n, rel=1e-14)


def test_loglik_aic_bic_hand_formula():
    X, y = _random_problem()
    fit = ols(X, y)
    n, k = len(y), X.shape[1] + 1 + 1  # coefficients + the noise variance
    s2 = np.sum((y - fit.fitted) ** 2) / n
    loglik = np.sum(-0.5 * np.log(2 * np.pi * s2) - (y - fit.fitted) ** 2 / (2 * s2))
    assert fit.loglik == pytest.approx(loglik, rel=1e-12)
    assert fit.aic == pytest.approx(2 * k - 2 * loglik, rel=1e-12)
    assert fit.bic == pytest.approx(k * np.log(n) - 2 * loglik, rel=1e-12)


def _gauss_loglik(y, X1, b, s2):
    r = y - X1 @ b
    return np.sum(-0.5 * np.log(2 * np.pi * s2) - r**2 / (2 * s2))


def test_mle_is_the_likelihood_maximum():
    X, y = _random_problem()
    X1 = np.column_stack([np.ones(len(y)), X])
    m, fit = mle(X, y), ols(X, y)
    np.testing.assert_array_equal(m.coef, fit.coef)
    assert m.sigma2 == pytest.approx(fit.rss / len(y), rel=1e-14)
    best = _gauss_loglik(y, X1, m.coef, m.sigma2)
    assert m.loglik == pytest.approx(best, rel=1e-12)
    rng = np.random.default_rng(1)
    for _ in range(20):
        db = rng.normal(scale=1e-3, size=m.coef.shape)
        assert _gauss_loglik(y, X1, m.coef + db, m.sigma2) < best
        assert _gauss_loglik(y, X1, m.coef, m.sigma2 * (1 + rng.choice([-1, 1]) * 1e-3)) < best
    np.testing.assert_allclose(m.cov, fit.cov * (len(y) - X1.shape[1]) / len(y), rtol=1e-12)


def test_no_intercept_uses_uncentred_r2():
    X, y = _random_problem()
    fit = ols(X, y, intercept=False)
    assert len(fit.coef) == X.shape[1]
    assert fit.r2 == pytest.approx(1 - fit.rss / np.sum(y**2), rel=1e-12)


def test_rank_deficient_warns_and_returns_min_norm():
    X, y = _random_problem()
    Xd = np.column_stack([X, X[:, 0] + X[:, 1]])
    with pytest.warns(RankDeficientWarning, match="rank deficient"):
        fit = ols(Xd, y)
    assert fit.rank == 4
    A = np.column_stack([np.ones(len(y)), Xd])
    ref = np.linalg.lstsq(A, y, rcond=None)[0]
    np.testing.assert_allclose(fit.fitted, A @ ref, rtol=1e-10)
    np.testing.assert_allclose(fit.coef, ref, rtol=1e-8, atol=1e-10)
    assert np.all(np.isfinite(fit.stderr))


def test_full_rank_does_not_warn():
    X, y = _random_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ols(X, y)


def test_polyfit_matches_numpy_on_an_easy_problem():
    rng = np.random.default_rng(3)
    x = np.linspace(-1, 2, 30)
    y = 1 - 2 * x + 0.5 * x**3 + rng.normal(scale=0.01, size=x.size)
    fit = polyfit(x, y, 3)
    np.testing.assert_allclose(fit.coef, np.polynomial.polynomial.polyfit(x, y, 3), rtol=1e-9)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        ols(np.ones((5, 2)), np.ones(4))
    with pytest.raises(ValueError):
        polyfit([1.0, 2.0], [1.0, 2.0], 0)
