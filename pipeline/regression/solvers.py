"""The solver behind `pipeline.regression.nonlinear`: batched Gauss–Newton, Levenberg and Levenberg–Marquardt
on torch, with the forward-mode Jacobian machinery. `_Engine(...).run(P0)` fits B independent problems of one
model at once; the public entry points (`curve_fit`, `least_squares_fit`, `curve_fit_batched`) wrap it.

Written here because no well-kept library does per-problem batched LM on torch: scipy's MINPACK fits one problem
per call on the CPU, the torch optimisers are first-order, and torchimize's `lsq_lma_parallel` (GPL) solves by
`lstsq` and stops the whole batch on one test for all problems.

Problem: minimise cost(p) = ½·Σ r², r = (f(x, *p) - y) / sigma, in float64, f written with torch ops. The
Jacobian comes from forward-mode differentiation: `dual.Dual` numbers with the parameters broadcast as (B, 1)
columns (sparse partials, 3× faster than torch.func) where `_Model.probe` finds that this reproduces torch.func
for the model, else torch.func.jvp vmapped over the parameter directions and the problems; or from a user
`jac(x, *p)`. Linear solves are Jacobi-equilibrated Cholesky factorisations of the (B, p, p) matrices,
unrolled over the entries for small p and many problems (`batched_linalg.DampedCholesky`), batched LAPACK otherwise.
  "gn"        Gauss–Newton, h = -(JᵀJ)⁻¹Jᵀr, backtracking (Armijo) line search; status -2 if JᵀJ is singular,
              -3 if no step length lowers the cost.
  "levenberg" (JᵀJ + λI)h = -Jᵀr, λ₀ = tau·max diag(JᵀJ).
  "lm"        Levenberg–Marquardt, (JᵀJ + λ·diag(D))h = -Jᵀr with D the running maximum of diag(JᵀJ) (as
              MINPACK), λ₀ = tau; plus geodesic acceleration (Transtrum & Sethna 2012, `accel`, on by default):
              the step is h + a/2 with a = -(JᵀJ + λD)⁻¹Jᵀr'' (r'' the second directional derivative of r
              along h: `dual.Jet`, or nested jvps), and steps with 2‖a‖/‖h‖ > accel are rejected. It is what
              takes BoxBOD and MGH10 from NIST's far start 1 to the certified values; accel=0 gives the
              textbook method.
  The damped methods accept a step iff it lowers the cost and update λ from the gain ratio ρ (actual /
  predicted reduction) by Nielsen's rule: accepted, λ *= max(1/3, 1-(2ρ-1)³), ν = 2; rejected, λ *= ν, ν *= 2.
  Once cost changes are below its rounding noise (eps·Σ|r|(|r| + 2|y|)), a step that shrinks the scaled
  gradient also counts as accepted (λ kept): float64 cannot resolve the last digits of the parameters from the
  cost alone on large-residual problems (NIST ENSO), but it can from the gradient.

Stopping rules (status > 0 is success; `STATUS_MESSAGES` has the texts):
  1 gtol   max_j |J_jᵀr| / (‖J_j‖·‖r‖) ≤ gtol (MINPACK's scale-free gradient test);
  2 ftol   |actual| and predicted cost reductions ≤ ftol·cost, actual ≤ 2·predicted (MINPACK's test);
  3 xtol   relative step ‖d∘h‖ ≤ xtol·(‖d∘p‖ + xtol), d = sqrt(D) (sqrt(diag JᵀJ) for gn / levenberg);
  4 the residuals are exactly zero;  5 λ overflowed: no step lowers the cost any more;
  0 max_iter iterations (accepted or not); -1 non-finite residuals/Jacobian at p0; -2, -3 see "gn".
Options (keyword arguments) and defaults: xtol = gtol = 1e-15, ftol = 1e-20 (a relative cost change below
~1e-16 is rounding, and stopping on a small one costs digits where the cost is flat: xtol and gtol end fits),
max_iter = 1000·(p+1), tau = 1e-3, accel = 0.75 for "lm" (0 = off; also accepted by "levenberg"). With them
"lm" reaches the NIST StRD certified values on all 27 problems from both starts (tests/unit/regression).
For speed on easy problems pass MINPACK-like tolerances (ftol = xtol = 1.5e-8).
Small CPU problems run with one intra-op thread (restored afterwards): OpenMP wake-ups cost more than their ops.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch.func import jvp, vmap

from pipeline.regression.batched_linalg import TINY as _TINY
from pipeline.regression.batched_linalg import (
    DampedCholesky,
    diagonal,
    row_finite,
    row_norm,
    row_sum,
)
from pipeline.regression.dual import Broadcast

METHODS = ("gn", "levenberg", "lm")
STATUS_MESSAGES = {
    1: "gtol: the residuals are orthogonal to the Jacobian columns within gtol",
    2: "ftol: actual and predicted relative cost reductions are below ftol",
    3: "xtol: the relative step size is below xtol",
    4: "the residuals are exactly zero",
    5: "no step lowers the cost (damping overflowed): converged to machine precision",
    0: "maximum number of iterations reached",
    -1: "non-finite residuals or Jacobian at the starting point",
    -2: "Gauss-Newton: singular normal equations (rank-deficient Jacobian)",
    -3: "Gauss-Newton: the line search found no step that lowers the cost",
}
_RUNNING = -99
_EPS = float(torch.finfo(torch.float64).eps)
_LAM_MAX = 1e290
_SMALL = 1 << 16  # working sets with fewer Jacobian entries than this run single-threaded on the CPU
_DEFAULTS = {"ftol": 1e-20, "xtol": 1e-15, "gtol": 1e-15, "max_iter": None, "tau": 1e-3, "accel": None}


# ----------------------------------------------------------------------------------------------- the engine
@contextlib.contextmanager
def _threads_for(numel: int, device: torch.device):
    """One intra-op thread for small CPU problems: their ops are far below what threads help with, and
    waking OpenMP workers for each of them costs more than the op (milliseconds on a busy machine)."""
    n = torch.get_num_threads()
    if device.type != "cpu" or n == 1 or numel > _SMALL:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class _Work:
    """Working set of the still-running problems; `keep(mask)` drops finished ones from every tensor."""

    def __init__(self, **tensors):
        self.__dict__.update(tensors)

    def keep(self, mask):
        rows = mask.nonzero().squeeze(-1)
        for k, v in list(self.__dict__.items()):
            if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == mask.shape[0]:
                setattr(self, k, v.index_select(0, rows))


class _Model:
    """f for the engine, over K problems: values (K, m), Jacobian written as Jᵀ into a (K, p, m) view of the
    engine's buffer, and second directional derivatives for geodesic acceleration.

    Fast path: `dual.Broadcast` (parameter columns broadcast against x, sparse forward-mode Duals, Jets for
    the second derivatives). It is used when `probe` finds it computes each of the first problems as vmap
    does; otherwise (a model that is not elementwise in its parameters, or uses an op without a Dual rule)
    every call goes through vmap over the problems with torch.func: a jvp per parameter direction, vmapped over
    the directions. A user `jac` always gives the Jacobian.
    """

    def __init__(self, f, yshape, x_batched, jac=None):
        self.user_jac, self.bcast, self.fast = jac, Broadcast(f, yshape), False
        dims = (0, 0 if x_batched else None)
        self.x_batched = x_batched

        def model(p, x):
            return torch.broadcast_to(f(x, *p.unbind(-1)), yshape).reshape(-1)

        self._F = vmap(model, in_dims=dims)
        if jac is not None:
            self._J = vmap(lambda p, x: torch.as_tensor(jac(x, *p.unbind(-1)), dtype=p.dtype)
                           .reshape(-1, p.shape[-1]), in_dims=dims)

    # ------------------------------------------------------------------- torch.func (general) path
    def _jac_func(self, P, X):
        def push(v):
            return jvp(lambda q: self._F(q, X), (P,), (v.expand_as(P),))

        out, Jt = vmap(push, out_dims=(None, 1))(torch.eye(P.shape[-1], dtype=P.dtype, device=P.device))
        return Jt, out

    def _along2_func(self, P, X, h):
        def along(q):
            return jvp(lambda z: self._F(z, X), (q,), (h,))[1]

        return jvp(along, (P,), (h,))[1]

    # --------------------------------------------------------------------------------- the interface
    def probe(self, P, X, second: bool):
        """Use the broadcast path iff it gives the values vmap gives on the first few problems and its
        Jacobian (and second directional derivatives if `second`) evaluate there. Its derivative rules are
        tested against torch.func (tests/unit/regression/test_dual.py); what can differ per model is whether
        broadcasting the parameters computes each problem as vmap does, which the values show. (A torch.func
        reference here would cost a second on the first jvp of a process.)"""
        k = min(P.shape[0], 3)
        P, X = P[:k], X[:k] if self.x_batched else X
        try:
            values, ref = self.bcast.values(P, X), self._F(P, X)
            atol = 1e-12 * float(torch.nan_to_num(ref, nan=0.0, posinf=0.0, neginf=0.0).abs().max())
            if not (values.shape == ref.shape and torch.allclose(values, ref, 1e-12, atol, equal_nan=True)):
                return self._use(False)
            if self.user_jac is None:
                self.bcast.jacobian(P, X, P.new_empty(k, P.shape[1], ref.shape[-1]))
            if second:
                self.bcast.along2(P, X, 1e-2 * (P.abs() + 1))
        except Exception:  # noqa: BLE001 - any failure of the broadcast path means: not for this model
            return self._use(False)
        return self._use(True)

    def _use(self, fast: bool) -> bool:
        self.fast = fast
        return fast

    def values(self, P, X):
        return self.bcast.values(P, X) if self.fast else self._F(P, X)

    def jacobian(self, P, X, out):
        """Jᵀ into out (K, p, m); returns the values."""
        if self.user_jac is not None:
            out.copy_(self._J(P, X).mT)
            return self.values(P, X)
        if self.fast:
            return self.bcast.jacobian(P, X, out)
        Jt, vals = self._jac_func(P, X)
        out.copy_(Jt)
        return vals

    def along2(self, P, X, h):
        return self.bcast.along2(P, X, h) if self.fast else self._along2_func(P, X, h)


class _Engine:
    def __init__(self, f, X, Y, W, x_batched, yshape, method, opts, history=None, jac=None):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        unknown = set(opts) - set(_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown option(s) {sorted(unknown)}; known: {sorted(_DEFAULTS)}")
        self.model = _Model(f, yshape, x_batched, jac)
        self.X, self.Y, self.W, self.x_batched = X, Y, W, x_batched
        self.method, self.o, self.history = method, {**_DEFAULTS, **opts}, history
        accel = self.o["accel"]
        self.accel = float(0.75 if accel is None and method == "lm" else accel or 0.0) if method != "gn" else 0.0

    def _eval(self, w, P, sel=None, jac=True):
        """Residuals r at P for the working-set rows `sel`; with jac also Jᵀ, JᵀJ, Jᵀr and the cost ½rᵀr.

        Jᵀ (K, p, m) and r share one buffer, so that one batched product [Jᵀ; rᵀ][J r] gives JᵀJ and Jᵀr
        together. It is laid out (p+1, K, m): each row of Jᵀ and r is a contiguous (K, m) slab, which the
        elementwise ops filling it need (on strided rows they run ~5× slower); bmm takes either layout."""
        x = self.X if not self.x_batched else (w.x if sel is None else w.x[sel])
        y = w.y if sel is None else w.y[sel]
        ww = w.w if w.w is None or sel is None else w.w[sel]
        if not jac:
            r = self.model.values(P, x) - y
            return r if ww is None else r * ww
        K, p = P.shape
        buf = P.new_empty(p + 1, K, y.shape[-1])
        B = buf.permute(1, 0, 2)
        r = torch.sub(self.model.jacobian(P, x, B[:, :p]), y, out=buf[p])
        if ww is not None:
            buf *= ww
        G = B @ B.mT
        # the cost as the line search computes it: same rounding, comparable costs
        return r, B[:, :p], G[:, :p, :p], G[:, :p, p], 0.5 * torch.linalg.vecdot(r, r)

    def run(self, P0):
        with _threads_for(P0.numel() * self.Y.shape[-1], P0.device):
            return self._run(P0)

    def _run(self, P0):
        B, p = P0.shape
        max_iter = self.o["max_iter"] or 1000 * (p + 1)
        w = _Work(idx=torch.arange(B, device=P0.device), p=P0.clone(), y=self.Y, w=self.W,
                  x=self.X if self.x_batched else None)
        w.ynorm = (self.Y if self.W is None else self.Y * self.W).norm(dim=-1)  # for the cost's rounding noise
        self.model.probe(P0, self.X, second=bool(self.accel))
        w.r, w.J, w.A, w.g, w.cost = self._eval(w, w.p)
        self._init_state(w)
        new = {"dtype": P0.dtype, "device": P0.device}
        self.out = {"p": P0.clone(), "cost": torch.full((B,), math.nan, **new), "A": torch.zeros(B, p, p, **new),
                    "status": torch.zeros(B, dtype=torch.long, device=P0.device), "nit": torch.zeros_like(w.idx)}
        bad = ~(torch.isfinite(w.cost) & torch.isfinite(w.A).flatten(1).all(-1))
        w.status = torch.where(bad, -1, _RUNNING)
        self._check_gradient(w, ~bad)
        self._record(w)
        self._retire(w)
        step = self._gn_step if self.method == "gn" else self._lm_step
        while w.idx.numel():
            running = w.status == _RUNNING
            with _threads_for(w.J.numel(), w.J.device):  # the working set shrinks as problems finish
                step(w)
            w.nit += running
            w.status = w.status.masked_fill((w.status == _RUNNING) & (w.nit >= max_iter), 0)
            self._record(w)
            self._retire(w)
        return self.out

    def _init_state(self, w):
        diag = diagonal(w.A)
        w.D = diag.clamp_min(_TINY) if self.method == "lm" else torch.ones_like(diag)
        tau = self.o["tau"]
        w.lam = torch.full_like(w.cost, tau) if self.method == "lm" else tau * diag.amax(-1).clamp_min(_TINY)
        w.nu = torch.full_like(w.cost, 2.0)
        w.nit = torch.zeros_like(w.idx)

    def _check_gradient(self, w, where):
        """Status 4 (zero residuals) or 1 (gtol) for running problems selected by `where`."""
        rn = (2 * w.cost).sqrt()
        cn = diagonal(w.A).sqrt()
        # max_j |g_j| / (‖J_j‖·‖r‖) ≤ gtol, without the division (a zero column has g_j = 0); NaN is not flat
        flat = row_sum((~(w.g.abs() <= self.o["gtol"] * cn * rn[:, None])).to(cn.dtype)) == 0
        run = where & (w.status == _RUNNING)
        w.status = w.status.masked_fill(run & (rn == 0), 4).masked_fill(run & (rn > 0) & flat, 1)

    def _update(self, w, acc, *new):
        """The trial point's p, r, Jᵀ, JᵀJ, Jᵀr and cost where `acc`; the rows not accepted keep theirs."""
        names = ("p", "r", "J", "A", "g", "cost")
        keep = (~acc).nonzero().squeeze(-1)
        for name, t in zip(names, new):
            if keep.numel():
                t.index_copy_(0, keep, getattr(w, name).index_select(0, keep))
            setattr(w, name, t)

    def _scale(self, w):
        return w.D.sqrt() if self.method == "lm" else diagonal(w.A).sqrt()

    def _small_step(self, w, h, d):
        xtol = self.o["xtol"]
        return row_norm(d * h) <= xtol * (row_norm(d * w.p) + xtol)

    def _ftol(self, cost_old, act, pred):
        rel = self.o["ftol"] * cost_old
        return (act.abs() <= rel) & (pred <= rel) & (act <= 2 * pred)

    def _lm_step(self, w):
        fac = DampedCholesky(w.A, w.lam, w.D)
        h, ok = fac.step(w.g)
        run = w.status == _RUNNING
        d = self._scale(w)
        xstop = ok & run & self._small_step(w, h, d)
        p_new = w.p + h
        if self.accel:
            a, ok = self._acceleration(w, h, fac, ok, d)
            p_new = p_new + 0.5 * a
        r_new, J_new, A_new, g_new, cost_new = self._eval(w, p_new)
        pred = 0.5 * row_sum(h * (w.lam[:, None] * w.D * h - w.g))
        act = w.cost - cost_new
        fin = torch.isfinite(cost_new) & row_finite(g_new)
        # Below the rounding noise of the cost (bounded by eps·Σ|r|(|r| + 2|y|)), a step is progress if it
        # shrinks the scaled gradient.
        d = d.clamp_min(_TINY)
        rn = (2 * w.cost).sqrt()
        noise = _EPS * rn * (rn + 2 * w.ynorm)
        quiet = (act <= 0) & (act >= -noise) & (row_norm(g_new / d) < row_norm(w.g / d))
        acc = ok & fin & (pred > 0) & run & ~xstop & ((act > 0) | quiet)
        rho = act / torch.where(pred > 0, pred, torch.ones_like(pred))
        fstop = ok & fin & run & ~xstop & self._ftol(w.cost, act, pred)
        self._update(w, acc, p_new, r_new, J_new, A_new, g_new, cost_new)
        if self.method == "lm":
            w.D = torch.where(acc[:, None], torch.maximum(w.D, diagonal(w.A)), w.D)
        shrink = torch.where(quiet, torch.ones_like(rho), torch.clamp(1 - (2 * rho - 1) ** 3, min=1 / 3))
        w.lam = torch.where(acc, w.lam * shrink, w.lam * w.nu)
        w.nu = torch.where(acc, torch.full_like(w.nu, 2.0), w.nu * 2)
        status = w.status.masked_fill(fstop, 2).masked_fill(xstop, 3)
        overflow = run & (status == _RUNNING) & ~(w.lam * w.D.amax(-1) < _LAM_MAX)
        w.status = status.masked_fill(overflow, 5)
        self._check_gradient(w, acc)

    def _acceleration(self, w, h, fac, ok, d):
        """Geodesic acceleration (Transtrum & Sethna 2012): a = -(JᵀJ + λD)⁻¹Jᵀr'', r'' the second directional
        derivative of the residuals along h (`_Model.along2`); a step with 2‖a‖/‖h‖ > accel (scaled
        norms) is rejected like a step that does not lower the cost."""
        rpp = self.model.along2(w.p, w.x if self.x_batched else self.X, h)
        if w.w is not None:
            rpp = rpp * w.w
        a, ok = fac.step((w.J @ rpp.unsqueeze(-1)).squeeze(-1), ok)
        ratio = 2 * row_norm(d * a) / row_norm(d * h).clamp_min(_TINY)
        return a, ok & (ratio <= self.accel)

    def _line_search(self, w, h, slope, run):
        """Backtracking (Armijo, c = 1e-4): step lengths t and trial costs; pending where none worked."""
        t, cost_new, pending = torch.ones_like(w.cost), w.cost.clone(), run.clone()
        for _ in range(60):
            sel = pending.nonzero().squeeze(-1)
            if sel.numel() == 0:
                break
            r_try = self._eval(w, w.p[sel] + t[sel, None] * h[sel], sel, jac=False)
            c_try = 0.5 * torch.linalg.vecdot(r_try, r_try)
            good = torch.isfinite(c_try) & (c_try <= w.cost[sel] + 1e-4 * t[sel] * slope[sel])
            cost_new[sel] = torch.where(good, c_try, cost_new[sel])
            pending[sel[good]] = False
            t[sel[~good]] *= 0.5
        return t, cost_new, pending

    def _gn_step(self, w):
        h, ok = DampedCholesky(w.A, torch.zeros_like(w.cost), w.D).step(w.g)
        run = w.status == _RUNNING
        status = w.status.masked_fill(~ok & run, -2)
        status = status.masked_fill(ok & run & self._small_step(w, h, self._scale(w)), 3)
        slope = row_sum(w.g * h)  # < 0: h is a descent direction
        t, cost_new, failed = self._line_search(w, h, slope, status == _RUNNING)
        status = status.masked_fill(failed, -3)
        acc = (status == _RUNNING) & (cost_new < w.cost)
        act, pred = w.cost - cost_new, (t - 0.5 * t * t) * (-slope)
        status = status.masked_fill((status == _RUNNING) & self._ftol(w.cost, act, pred), 2)
        p_new = w.p + t[:, None] * h
        self._update(w, acc, p_new, *self._eval(w, p_new))
        w.status = status.masked_fill((status == _RUNNING) & ~acc, 3)
        self._check_gradient(w, acc)

    def _record(self, w):
        if self.history is not None and w.idx.numel():
            self.history.append(float(w.cost[0]))

    def _retire(self, w):
        """Record finished problems and drop them from the working set, once they are a quarter of it (or all
        of it, or a single fit): a finished problem stays frozen in the meantime (never accepted, not counted),
        which costs less than copying every working tensor each time a few problems finish."""
        done = w.status != _RUNNING
        n = int(done.sum())
        if n == 0 or (4 * n < done.numel() and self.history is None):
            return
        i, o = w.idx[done], self.out
        o["p"][i], o["cost"][i], o["status"][i], o["nit"][i], o["A"][i] = (
            w.p[done], w.cost[done], w.status[done], w.nit[done], w.A[done])
        if self.history is not None:  # single fits keep J and r (SVD covariance, FitResult)
            o["J"], o["r"] = w.J[done][:1].mT.clone(), w.r[done][:1].clone()
        w.keep(~done)
