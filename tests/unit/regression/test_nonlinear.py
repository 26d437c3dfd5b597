"""curve_fit / least_squares_fit / curve_fit_batched: methods, stopping, scipy agreement, batching."""

import numpy as np
import pytest
import torch

from pipeline.regression import (
    STATUS_MESSAGES,
    curve_fit,
    curve_fit_batched,
    least_squares_fit,
)
from pipeline.regression.nist import load_nonlinear, lre

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

from tests.conftest import needs_nist as needs_data


def expdecay(x, a, b, c):
    return a * torch.exp(-b * x) + c


def _decay_data(seed=0, n=40, noise=0.05):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 4, n)
    return x, 2.5 * np.exp(-1.3 * x) + 0.5 + noise * rng.standard_normal(n)


@needs_data
@pytest.mark.parametrize("method", ["gn", "levenberg", "lm"])
@pytest.mark.parametrize("name, start", [("Misra1a", 2), ("DanWood", 1), ("DanWood", 2), ("Chwirut2", 2)])
def test_all_methods_solve_easy_nist_problems(method, name, start):
    prob = load_nonlinear(name)
    res = least_squares_fit(prob.model, prob.x, prob.y, prob.start1 if start == 1 else prob.start2, method=method)
    assert res.success, res.message
    assert lre(res.params, prob.certified).min() >= 6, (method, name, start, res.params)


@needs_data
def test_gauss_newton_fails_where_lm_converges():
    """MGH17 from start 1: Gauss–Newton's normal equations go singular; LM reaches the certified values."""
    prob = load_nonlinear("MGH17")
    gn = least_squares_fit(prob.model, prob.x, prob.y, prob.start1, method="gn")
    assert not gn.success or lre(gn.params, prob.certified).min() < 2
    lm = least_squares_fit(prob.model, prob.x, prob.y, prob.start1, method="lm")
    assert lm.success and lre(lm.params, prob.certified).min() >= 6
    with pytest.raises(RuntimeError, match="Optimal parameters not found"):
        curve_fit(prob.model, prob.x, prob.y, prob.start1, method="gn")


@needs_data
def test_geodesic_acceleration_is_what_rescues_boxbod_start1():
    prob = load_nonlinear("BoxBOD")
    plain = least_squares_fit(prob.model, prob.x, prob.y, prob.start1, accel=0)
    assert lre(plain.params, prob.certified).min() < 2  # the b2 → ∞ plateau, like MINPACK
    default = least_squares_fit(prob.model, prob.x, prob.y, prob.start1)
    assert default.success and lre(default.params, prob.certified).min() >= 6
    lev = least_squares_fit(prob.model, prob.x, prob.y, prob.start2, method="levenberg", accel=0.75)
    assert lev.success and lre(lev.params, prob.certified).min() >= 6


@pytest.mark.parametrize("weighted", [False, True])
def test_curve_fit_agrees_with_scipy(weighted):
    scipy_optimize = pytest.importorskip("scipy.optimize")
    x, y = _decay_data()
    sigma = np.linspace(0.03, 0.1, x.size) if weighted else None
    popt, pcov = curve_fit(expdecay, x, y, p0=[1.0, 1.0, 0.0], sigma=sigma)
    ref_popt, ref_pcov = scipy_optimize.curve_fit(
        lambda x, a, b, c: a * np.exp(-b * x) + c, x, y, p0=[1.0, 1.0, 0.0], sigma=sigma,
        method="lm", ftol=1e-14, xtol=1e-14, gtol=1e-14)
    assert isinstance(popt, np.ndarray) and pcov.shape == (3, 3)
    np.testing.assert_allclose(popt, ref_popt, rtol=1e-9)
    np.testing.assert_allclose(pcov, ref_pcov, rtol=1e-6)
    _, pcov_abs = curve_fit(expdecay, x, y, p0=[1.0, 1.0, 0.0], sigma=sigma, absolute_sigma=True)
    ref_abs = scipy_optimize.curve_fit(lambda x, a, b, c: a * np.exp(-b * x) + c, x, y, p0=[1.0, 1.0, 0.0],
                                       sigma=sigma, absolute_sigma=True, method="lm", ftol=1e-14, xtol=1e-14)[1]
    np.testing.assert_allclose(pcov_abs, ref_abs, rtol=1e-6)


def test_torch_inputs_give_torch_outputs_and_full_output():
    x, y = _decay_data(1)
    popt, pcov, res = curve_fit(expdecay, torch.tensor(x), torch.tensor(y), p0=[1.0, 1.0, 0.0], full_output=True)
    assert isinstance(popt, torch.Tensor) and popt.dtype == torch.float64 and pcov.shape == (3, 3)
    assert res.success and res.status in (1, 2, 3, 4, 5) and res.message == STATUS_MESSAGES[res.status]
    assert res.nit == len(res.cost_history) - 1
    hist = np.array(res.cost_history)
    assert np.all(np.diff(hist) <= 1e-12 * hist[0])  # accepted steps only lower the cost (up to rounding)
    assert res.cost == pytest.approx(0.5 * float((res.residuals**2).sum()))
    assert tuple(res.jac.shape) == (x.size, 3)


def test_stopping_rules_and_options():
    x, y = _decay_data(2)
    res = least_squares_fit(expdecay, x, y, [1.0, 1.0, 0.0], max_iter=2)
    assert res.status == 0 and not res.success and res.nit == 2
    with pytest.raises(RuntimeError, match="maximum number of iterations"):
        curve_fit(expdecay, x, y, [1.0, 1.0, 0.0], max_iter=2)
    loose = least_squares_fit(expdecay, x, y, [1.0, 1.0, 0.0], ftol=1e-6, xtol=1e-6)
    tight = least_squares_fit(expdecay, x, y, [1.0, 1.0, 0.0])
    assert loose.success and loose.nit <= tight.nit
    exact = least_squares_fit(expdecay, x, expdecay(torch.tensor(x), 2.0, 1.0, 0.5).numpy(), [1.0, 1.0, 0.0])
    assert exact.success and np.allclose(exact.params, [2.0, 1.0, 0.5], rtol=1e-12)
    bad = least_squares_fit(lambda x, a: a * torch.log(x - 10), x, y, [1.0])
    assert bad.status == -1 and not bad.success
    with pytest.raises(TypeError, match="unknown option"):
        least_squares_fit(expdecay, x, y, [1.0, 1.0, 0.0], maxfev=10)
    with pytest.raises(ValueError, match="method"):
        least_squares_fit(expdecay, x, y, [1.0, 1.0, 0.0], method="trf")


def test_default_p0_from_signature_and_analytic_jacobian():
    x, y = _decay_data(3)
    ref = least_squares_fit(expdecay, x, y)  # p0 = ones
    jac = least_squares_fit(
        expdecay, x, y, jac=lambda x, a, b, c: torch.stack([torch.exp(-b * x), -a * x * torch.exp(-b * x),
                                                            torch.ones_like(x)], -1))
    np.testing.assert_allclose(jac.params, ref.params, rtol=1e-10)


def _batch(n_problems=12, seed=0):
    """Curves of very different difficulty: noise from 0 to large, starts from near to far."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 4, 30)
    truth = np.column_stack([rng.uniform(1, 5, n_problems), rng.uniform(0.3, 2.5, n_problems),
                             rng.uniform(-1, 1, n_problems)])
    noise = np.linspace(0.0, 0.3, n_problems)
    clean = truth[:, :1] * np.exp(-truth[:, 1:2] * x) + truth[:, 2:]
    Y = clean + noise[:, None] * rng.standard_normal((n_problems, 30))
    P0 = truth * rng.uniform(0.2, 3.0, truth.shape)
    return x, Y, P0


@pytest.mark.parametrize("method", ["lm", "levenberg", "gn"])
def test_batched_matches_single_fits(method):
    x, Y, P0 = _batch()
    popt, pcov, res = curve_fit_batched(expdecay, x, Y, P0, method=method, full_output=True)
    assert popt.shape == (len(Y), 3) and pcov.shape == (len(Y), 3, 3)
    nits = []
    for i in range(len(Y)):
        single = least_squares_fit(expdecay, x, Y[i], P0[i], method=method)
        # Same arithmetic per problem; allow a step or two of slack where rounding differs between batch sizes.
        assert single.success and res.success[i] and abs(single.nit - int(res.nit[i])) <= 2, i
        np.testing.assert_allclose(popt[i], single.params, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(pcov[i], single.cov, rtol=1e-6, atol=1e-14)
        nits.append(single.nit)
    assert len(set(nits)) > 3, "problems of different difficulty should stop at different iterations"


def test_converged_problems_are_masked():
    """A problem that cannot converge does not change the others, which stop at their own iteration."""
    x, Y, P0 = _batch(6)
    Y_bad, P_bad = Y.copy(), P0.copy()
    Y_bad[2, :] = np.nan  # non-finite from the start
    popt, _, res = curve_fit_batched(expdecay, x, Y, P0, full_output=True)
    with pytest.warns(RuntimeWarning, match="1 of 6 problems did not converge"):
        popt2, _, res2 = curve_fit_batched(expdecay, x, Y_bad, P_bad, full_output=True)
    keep = np.arange(6) != 2
    np.testing.assert_array_equal(popt2[keep], popt[keep])
    np.testing.assert_array_equal(res2.nit[keep], res.nit[keep])
    assert res2.status[2] == -1 and not res2.success[2] and res2.nit[2] == 0
    np.testing.assert_array_equal(popt2[2], P_bad[2])
    with pytest.warns(RuntimeWarning, match="did not converge"):
        capped = curve_fit_batched(expdecay, x, Y, P0, max_iter=3, full_output=True)[2]
    assert np.all(capped.nit <= 3) and np.all((capped.status == 0) == (res.nit > 3))


def test_batched_x_layouts_and_torch():
    x, Y, P0 = _batch(5)
    shared = curve_fit_batched(expdecay, torch.tensor(x), torch.tensor(Y), torch.tensor(P0))[0]
    per_problem = curve_fit_batched(expdecay, np.tile(x, (5, 1)), Y, P0)[0]
    assert isinstance(shared, torch.Tensor)
    np.testing.assert_allclose(shared.numpy(), per_problem, rtol=1e-12)
    one_p0 = curve_fit_batched(expdecay, x, Y, P0[0])[0]
    assert one_p0.shape == (5, 3)
    sigma = np.full(x.size, 0.1)
    weighted = curve_fit_batched(expdecay, x, Y, P0, sigma=sigma)
    np.testing.assert_allclose(weighted[0], per_problem, rtol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_batched_on_gpu_matches_cpu():
    x, Y, P0 = _batch(600)  # >= 512 problems: the unrolled factorisation runs on the GPU too
    cpu = curve_fit_batched(expdecay, torch.tensor(x), torch.tensor(Y), torch.tensor(P0))
    gpu = curve_fit_batched(expdecay, torch.tensor(x).cuda(), torch.tensor(Y).cuda(), torch.tensor(P0).cuda())
    assert gpu[0].device.type == "cuda"
    np.testing.assert_allclose(gpu[0].cpu().numpy(), cpu[0].numpy(), rtol=1e-8)
