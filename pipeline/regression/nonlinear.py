"""Nonlinear least squares on torch: Gauss–Newton, Levenberg and Levenberg–Marquardt, single and batched.

The public API: `curve_fit` (scipy.optimize.curve_fit's contract), `least_squares_fit` (a `FitResult`, never
raises on non-convergence) and `curve_fit_batched` (B problems of one model at once). One engine serves all
three (`pipeline.regression.solvers`, whose docstring has the methods, stopping rules and options): the single
fits run it on a batch of one.

Covariance as scipy.optimize.curve_fit: pcov = (JᵀJ)⁺ (times rss/(m-p) unless absolute_sigma), from an SVD for
single fits and an equilibrated Cholesky inverse for batches; inf where it cannot be estimated.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.regression.batched_linalg import TINY as _TINY
from pipeline.regression.batched_linalg import DampedCholesky
from pipeline.regression.solvers import METHODS, STATUS_MESSAGES, _Engine

__all__ = [
    "METHODS",
    "STATUS_MESSAGES",
    "BatchedFitResult",
    "FitResult",
    "curve_fit",
    "curve_fit_batched",
    "least_squares_fit",
]


@dataclass
class FitResult:
    """One fit. cost = ½·Σr² (r weighted by 1/sigma); cost_history[k] = cost after k iterations."""

    params: np.ndarray | torch.Tensor
    cov: np.ndarray | torch.Tensor
    cost: float
    status: int
    message: str
    nit: int
    success: bool
    cost_history: list[float] = field(repr=False)
    residuals: np.ndarray | torch.Tensor = field(repr=False)
    jac: np.ndarray | torch.Tensor = field(repr=False)


@dataclass
class BatchedFitResult:
    """B fits: params (B,p), cov (B,p,p), cost/status/nit (B,); `messages` gives the status texts."""

    params: np.ndarray | torch.Tensor
    cov: np.ndarray | torch.Tensor
    cost: np.ndarray | torch.Tensor
    status: np.ndarray | torch.Tensor
    nit: np.ndarray | torch.Tensor
    success: np.ndarray | torch.Tensor

    @property
    def messages(self) -> list[str]:
        return [STATUS_MESSAGES[int(s)] for s in self.status]


# ------------------------------------------------------------------------------------------------- covariance
def _pinv_cov_svd(J):
    """(JᵀJ)⁺ from the SVD of J, dropping singular values below eps·max(m, p)·s_max (as scipy)."""
    if not bool(torch.isfinite(J).all()):
        return torch.full((J.shape[-1], J.shape[-1]), math.inf, dtype=J.dtype, device=J.device)
    _, s, Vh = torch.linalg.svd(J, full_matrices=False)
    keep = s > torch.finfo(J.dtype).eps * max(J.shape[-2:]) * s[..., :1]
    inv_s2 = torch.where(keep, 1.0 / s.clamp_min(_TINY) ** 2, torch.zeros_like(s))
    return (Vh.mT * inv_s2[..., None, :]) @ Vh


def _pinv_cov_chol(A):
    """(A)⁻¹ via a Jacobi-equilibrated Cholesky (`batched_linalg.DampedCholesky`), SVD pseudo-inverse where that fails."""
    inv, ok = DampedCholesky(A, A.new_zeros(A.shape[0]), A.new_ones(A.shape[:2])).inverse()
    if not bool(ok.all()):
        inv[~ok] = torch.linalg.pinv(A[~ok], hermitian=True)
    return inv


# ------------------------------------------------------------------------------------------------ public API
def _to_tensor(a, device=None):
    if isinstance(a, torch.Tensor):
        return a.detach().to(device=device if device is not None else a.device, dtype=torch.float64)
    if isinstance(a, tuple):
        return tuple(_to_tensor(v, device) for v in a)
    return torch.as_tensor(np.asarray(a, dtype=np.float64), device=device)


def _output(t, as_numpy):
    return t.cpu().numpy() if as_numpy else t


def _default_p0(f):
    if isinstance(getattr(f, "params", None), tuple):  # a parsed Expression
        return np.ones(len(f.params))
    params = list(inspect.signature(f).parameters.values())[1:]
    if not params or any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        raise ValueError("p0 is required when the number of parameters cannot be read from f's signature")
    return np.ones(len(params))


def _scale_cov(cov, cost, m, p, absolute_sigma):
    """scipy's rule: pcov·rss/(m-p) unless absolute_sigma; inf where m ≤ p or pcov is not finite."""
    if not absolute_sigma:
        cov = cov * (2 * cost / (m - p))[..., None, None] if m > p else torch.full_like(cov, math.inf)
    bad = ~torch.isfinite(cov).flatten(-2).all(-1)
    return torch.where(bad[..., None, None], torch.full_like(cov, math.inf), cov)


def _weights(sigma, shape, device):
    """1/sigma broadcast to `shape` and flattened per problem, or None (unweighted)."""
    if sigma is None:
        return None
    s = _to_tensor(sigma, device)
    if s.ndim >= 2 and s.shape[-1] == s.shape[-2] and tuple(s.shape) != tuple(shape[-s.ndim:]):
        raise ValueError("sigma must hold per-point standard deviations; a covariance matrix is not supported")
    return torch.broadcast_to(1.0 / s, shape).reshape(shape[0], -1).clone()


def least_squares_fit(f, xdata, ydata, p0=None, method="lm", sigma=None, *, absolute_sigma=False, jac=None,
                      **options) -> FitResult:
    """Fit ydata ≈ f(xdata, *params) by nonlinear least squares and return a `FitResult`; it never raises on
    non-convergence (check `success` / `status`). options: ftol, xtol, gtol, max_iter, tau, accel (module
    docstring). jac(x, *params) -> (n, p): optional analytic Jacobian of f (default: forward-mode autograd;
    geodesic acceleration still differentiates f with torch, pass accel=0 if f cannot be).
    Arrays come back as numpy unless ydata is a torch tensor (then torch, on ydata's device)."""
    as_numpy = not isinstance(ydata, torch.Tensor)
    y = _to_tensor(ydata, None if as_numpy else ydata.device)
    x = _to_tensor(xdata, y.device)
    P0 = _to_tensor(_default_p0(f) if p0 is None else p0, y.device).reshape(1, -1)
    W = _weights(sigma, (1, *y.shape), y.device)
    history: list[float] = []
    eng = _Engine(f, x, y.reshape(1, -1), W, False, y.shape, method, options, history, jac)
    out = eng.run(P0)
    cov = _scale_cov(_pinv_cov_svd(out["J"][0]), out["cost"][0], y.numel(), P0.shape[1], absolute_sigma)
    status = int(out["status"][0])
    return FitResult(
        params=_output(out["p"][0], as_numpy), cov=_output(cov, as_numpy), cost=float(out["cost"][0]),
        status=status, message=STATUS_MESSAGES[status], nit=int(out["nit"][0]), success=status > 0,
        cost_history=history, residuals=_output(out["r"][0], as_numpy), jac=_output(out["J"][0], as_numpy))


def curve_fit(f, xdata, ydata, p0=None, method="lm", sigma=None, *, absolute_sigma=False, full_output=False,
              jac=None, **options):
    """scipy.optimize.curve_fit's contract on torch: returns (popt, pcov), or (popt, pcov, FitResult) with
    full_output. f(x, *params) uses torch ops; xdata reaches f as a float64 tensor (or a tuple of them);
    p0 defaults to ones. Raises RuntimeError when the fit does not converge (status ≤ 0) and warns
    (OptimizeWarning-like RuntimeWarning) when pcov cannot be estimated (then it is all inf)."""
    res = least_squares_fit(f, xdata, ydata, p0, method, sigma, absolute_sigma=absolute_sigma, jac=jac,
                            **options)
    if not res.success:
        raise RuntimeError(f"Optimal parameters not found: {res.message}")
    if not bool(np.isfinite(np.asarray(res.cov.cpu() if isinstance(res.cov, torch.Tensor) else res.cov)).all()):
        warnings.warn("Covariance of the parameters could not be estimated", RuntimeWarning, stacklevel=2)
    return (res.params, res.cov, res) if full_output else (res.params, res.cov)


def curve_fit_batched(f, X, Y, P0, method="lm", sigma=None, *, absolute_sigma=False, shared_x=None,
                      full_output=False, jac=None, **options):
    """Fit B independent problems Y[b] ≈ f(X[b], *P[b]) of one model at once.

    Y: (B, n...); P0: (B, p), or (p,) for all; X: per problem (B, ...) or shared; by default X is per problem
    when X.ndim == Y.ndim and X.shape[0] == B, shared otherwise (shared_x=True/False decides). sigma:
    (B, n...) or (n...). Runs on Y's device (CPU or GPU); each problem keeps its own damping and stops on its
    own criteria, and finished problems leave the working set. Returns (popt (B, p), pcov (B, p, p)), plus a
    `BatchedFitResult` with full_output; numpy unless Y is a torch tensor. Unconverged problems are returned
    as they stand, with a RuntimeWarning (their status is ≤ 0). jac, options: as `least_squares_fit`.
    """
    as_numpy = not isinstance(Y, torch.Tensor)
    Yt = _to_tensor(Y, None if as_numpy else Y.device)
    B = Yt.shape[0]
    Xt = _to_tensor(X, Yt.device)
    if shared_x is None:
        shared_x = not (isinstance(Xt, torch.Tensor) and Xt.ndim == Yt.ndim and Xt.shape[0] == B)
    P = _to_tensor(P0, Yt.device)
    P = P.expand(B, -1).clone() if P.ndim == 1 else P.clone()
    if P.shape[0] != B:
        raise ValueError(f"P0 has {P.shape[0]} rows for {B} problems")
    W = _weights(sigma, Yt.shape, Yt.device)
    eng = _Engine(f, Xt, Yt.reshape(B, -1), W, not shared_x, Yt.shape[1:], method, options, None, jac)
    out = eng.run(P)
    cov = _scale_cov(_pinv_cov_chol(out["A"]), out["cost"], Yt[0].numel(), P.shape[1], absolute_sigma)
    status = out["status"]
    failed = int((status <= 0).sum())
    if failed:
        warnings.warn(f"{failed} of {B} problems did not converge (see status)", RuntimeWarning, stacklevel=2)
    popt, pcov = _output(out["p"], as_numpy), _output(cov, as_numpy)
    if not full_output:
        return popt, pcov
    res = BatchedFitResult(params=popt, cov=pcov, cost=_output(out["cost"], as_numpy),
                           status=_output(status, as_numpy), nit=_output(out["nit"], as_numpy),
                           success=_output(status > 0, as_numpy))
    return popt, pcov, res
