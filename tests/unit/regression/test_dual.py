"""The batched solver's fast paths against their references: sparse Duals vs torch.func, unrolled vs LAPACK
Cholesky. Both must give the same numbers; where the Dual path cannot, the engine must notice and fall back."""

import math

import numpy as np
import pytest
import torch
from torch.func import jacfwd, jvp, vmap

from pipeline.regression import (
    batched_linalg,
    curve_fit_batched,
    least_squares_fit,
    parse_expression,
    solvers,
)
from pipeline.regression.dual import Broadcast

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

# Every rule in dual._RULES at least once, tensors on either side of the operators, parameters in exponents.
MODELS = {
    "exp_decay": (lambda x, a, b, c: a * torch.exp(-b * x) + c, [2.0, 0.7, 0.3]),
    "rational": (lambda x, a, b, c: (a + b * x) / (1 + c * x**2), [1.0, 0.5, 0.2]),
    "power": (lambda x, a, b: a * (x + 1) ** b + b**2.5, [1.5, 0.8]),
    "rpow": (lambda x, a, b: 2.0**a * x - torch.pow(b, x), [0.5, 1.3]),
    "trig": (lambda x, a, b: torch.sin(a * x) + torch.cos(b) * torch.tan(0.1 * a) - torch.atan(b * x)
             + torch.arctan(a), [0.9, 0.4]),
    "logs": (lambda x, a, b: torch.log(a * x + 2) + torch.log1p(b * x) - torch.log10(a + x) + torch.log2(b + 3),
             [1.2, 0.6]),
    "hyperbolic": (lambda x, a, b: torch.tanh(a * x) + torch.sinh(b) * torch.cosh(0.5 * a) + torch.sigmoid(b - x),
                   [0.7, 0.3]),
    "roots": (lambda x, a, b: torch.sqrt(a + x) + torch.square(b) * torch.reciprocal(1 + a) - torch.expm1(-b * x)
              + torch.erf(a * x - 1), [1.1, 0.9]),
    "ops": (lambda x, a, b: torch.add(x, a) * torch.sub(b, x) / torch.div(2 + x, b) - abs(a - 3 * x) - (-b)
            + torch.mul(x, torch.neg(a)) + (x - a) + (1 - b) / a, [1.3, 0.4]),
    "tensor_left": (lambda x, a, b: x * a + x / b - x ** a + (x - b) + torch.abs(x - a), [0.6, 1.7]),
    "constant_param": (lambda x, a, b: a * x + 0 * b + 5, [0.5, 2.0]),
}


def _x(m=7):
    return torch.linspace(0.1, 2.0, m, dtype=torch.float64)


def _params(p0, K=5):
    g = torch.Generator().manual_seed(0)
    return torch.tensor(p0, dtype=torch.float64) * (1 + 0.2 * torch.rand(K, len(p0), generator=g, dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_dual_jacobian_and_second_derivative_match_torch_func(name):
    f, p0 = MODELS[name]
    x, P = _x(), _params(p0)
    K, p, m = P.shape[0], P.shape[1], x.numel()
    single = lambda q: torch.broadcast_to(f(x, *q.unbind(-1)), (m,))  # noqa: E731
    bc = Broadcast(f, (m,))
    buf = torch.full((p, K, m), math.nan, dtype=torch.float64)  # the engine's layout: (K, p, m) strided view
    values = bc.jacobian(P, x, buf.permute(1, 0, 2))
    torch.testing.assert_close(values, vmap(single)(P), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(buf.permute(1, 0, 2), vmap(jacfwd(single))(P).mT, rtol=1e-12, atol=1e-12)
    h = torch.linspace(-0.3, 0.5, p, dtype=torch.float64).expand(K, p) * P
    second = vmap(lambda q, v: jvp(lambda z: jvp(single, (z,), (v,))[1], (q,), (v,))[1])(P, h)
    torch.testing.assert_close(bc.along2(P, x, h), second, rtol=1e-11, atol=1e-11)
    assert solvers._Model(f, (m,), False).probe(P, x, second=True)


def test_parsed_expressions_take_the_fast_path():
    e = parse_expression("b1*(1-exp(-b2*x)) + b3/sqrt(x) - pow(x, b4)*sin(b1)")
    x, P = _x(), _params([2.0, 0.5, 0.1, 0.3])
    model = solvers._Model(e, (x.numel(),), False)
    assert model.probe(P, x, second=True)


NOT_BROADCASTABLE = {
    "tensor_method": lambda x, a, b: (a * x).exp() + b,  # Dual has no .exp(): AttributeError
    "stack": lambda x, a, b: torch.stack([a * x, torch.exp(-b * x)]).sum(0),  # no Dual rule for stack
    "indexes_x": lambda x, a, b: a * x[0] + b * x[1],  # per-problem x (K, 2, m): x[0] is the first problem
}


@pytest.mark.parametrize("name", sorted(NOT_BROADCASTABLE))
def test_models_the_dual_path_cannot_take_fall_back_to_torch_func(name):
    f = NOT_BROADCASTABLE[name]
    rng = np.random.default_rng(1)
    B, m = 6, 12
    x = rng.uniform(0.1, 1.0, (B, 2, m))
    truth = rng.uniform(0.5, 1.5, (B, 2))
    Y = np.stack([f(torch.tensor(x[i]), *torch.tensor(truth[i])).numpy() for i in range(B)])
    Y += 1e-3 * rng.standard_normal(Y.shape)
    model = solvers._Model(f, (m,), True)
    assert not model.probe(torch.tensor(truth), torch.tensor(x), second=True)
    popt, _ = curve_fit_batched(f, x, Y, truth * 0.8, shared_x=False)
    for i in range(B):
        single = least_squares_fit(f, x[i], Y[i], truth[i] * 0.8)
        np.testing.assert_allclose(popt[i], single.params, rtol=1e-8)


def _spd(K, p, seed=0):
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(K, p, 3 * p, generator=g, dtype=torch.float64)
    J[:, 0] *= 1e3  # badly scaled columns: the equilibration matters
    return J @ J.mT


@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_unrolled_cholesky_matches_lapack(p, monkeypatch):
    K = batched_linalg.UNROLL_K
    A = _spd(K, p)
    A[3] = -A[3]  # not positive definite
    A[5, 0, 0] = math.nan
    lam = torch.full((K,), 1e-3, dtype=torch.float64)
    d = torch.diagonal(A, dim1=-2, dim2=-1).abs().clamp_min(1e-300)
    g = torch.randn(K, p, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fast = batched_linalg.DampedCholesky(A, lam, d)
    assert fast.unrolled
    monkeypatch.setattr(batched_linalg, "UNROLL_K", K + 1)
    slow = batched_linalg.DampedCholesky(A, lam, d)
    assert not slow.unrolled
    (h1, ok1), (h2, ok2) = fast.step(g), slow.step(g)
    assert torch.equal(ok1, ok2) and not ok1[3] and not ok1[5] and int(ok1.sum()) == K - 2
    torch.testing.assert_close(h1, h2, rtol=1e-10, atol=0)
    inv1, iok1 = batched_linalg.DampedCholesky(A, 0 * lam, torch.ones_like(d)).inverse()
    monkeypatch.setattr(batched_linalg, "UNROLL_K", 1)
    inv2, iok2 = batched_linalg.DampedCholesky(A, 0 * lam, torch.ones_like(d)).inverse()
    assert torch.equal(iok1, iok2)
    torch.testing.assert_close(inv1[iok1], inv2[iok2], rtol=1e-9, atol=0)
    torch.testing.assert_close(inv1[iok1], torch.linalg.inv(A[iok1]), rtol=1e-8, atol=0)


def test_large_batches_fit_the_same_with_either_factorisation(monkeypatch):
    rng = np.random.default_rng(2)
    B, x = 600, np.linspace(0, 4, 30)
    truth = np.column_stack([rng.uniform(1, 3, B), rng.uniform(0.3, 2, B), rng.uniform(-1, 1, B)])
    Y = truth[:, :1] * np.exp(-truth[:, 1:2] * x) + truth[:, 2:] + 0.02 * rng.standard_normal((B, x.size))
    f = MODELS["exp_decay"][0]
    fast = curve_fit_batched(f, x, Y, truth * 0.7, full_output=True)
    monkeypatch.setattr(batched_linalg, "UNROLL_K", B + 1)
    slow = curve_fit_batched(f, x, Y, truth * 0.7, full_output=True)
    assert fast[2].success.all() and slow[2].success.all()
    np.testing.assert_allclose(fast[0], slow[0], rtol=1e-9)
    np.testing.assert_allclose(fast[1], slow[1], rtol=1e-6)
    # with the default (tight) tolerances the last iterations chase rounding: most, not all, stop together
    assert (fast[2].nit == slow[2].nit).mean() > 0.9


@pytest.mark.parametrize("B", [6, 600])
def test_unidentifiable_parameters_give_a_pseudo_inverse_covariance(B):
    """(a + b)·x: JᵀJ is singular, the factorisation fails and the covariance is the pseudo-inverse."""
    x = np.linspace(0, 1, 10)
    Y = np.outer(np.linspace(1, 2, B), x)
    popt, pcov = curve_fit_batched(lambda x, a, b: (a + b) * x, x, Y, np.ones(2), absolute_sigma=True)
    np.testing.assert_allclose(popt.sum(1), np.linspace(1, 2, B), rtol=1e-9)  # LM's damping copes
    A = np.full((2, 2), (x**2).sum())
    np.testing.assert_allclose(pcov[0], np.linalg.pinv(A), rtol=1e-9)


def test_row_reductions_match_torch_and_survive_overflow():
    x = torch.randn(700, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(batched_linalg.row_sum(x), x.sum(-1), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(batched_linalg.row_norm(x), x.norm(dim=-1), rtol=1e-14, atol=0)
    big = x * 1e200  # the squares overflow: the scaled norm takes over
    torch.testing.assert_close(batched_linalg.row_norm(big), big.norm(dim=-1), rtol=1e-14, atol=0)
    x[5, 1], x[9, 2] = math.inf, math.nan
    assert batched_linalg.row_finite(x).tolist() == [i not in (5, 9) for i in range(700)]
