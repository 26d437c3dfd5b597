"""Batched Levenberg–Marquardt on torch vs a Python loop over scipy.optimize.leastsq (MINPACK) and vs a plain
batched LM: what batching alone gives, and what our engineering adds on top.

Problem: N noisy curves y = a·exp(-b·x) + c on one shared grid of 50 points in [0, 5]; true a ~ U(1, 5),
b ~ U(0.2, 2), c ~ U(-1, 1), noise sd 0.05, seeded. Every solver starts from the same data-driven guess.

The rows, and what each one really runs:
  scipy  `leastsq` in a Python loop, one curve per call, with the analytic Jacobian (Dfun): MINPACK's lmder, a
         trust-region Levenberg–Marquardt (Moré 1978). Each step solves the damped problem by a QR factorisation
         (column pivoting) of the Jacobian, extended to the damping term by Givens rotations, never forming JᵀJ;
         the damping is whatever makes the scaled step fit the trust radius, and the radius follows the gain
         ratio. The Jacobian is evaluated at accepted points only. Stops on ftol (actual and predicted relative
         reductions of the sum of squares ≤ ftol), xtol (trust radius ≤ xtol·‖D·p‖) or gtol, with its defaults
         ftol = xtol = 1.49e-8, gtol = 0, and after maxfev = 400 function evaluations (its default with Dfun,
         100·(p+1)).
  plain  `plain_batched_lm` below: a textbook batched LM in plain torch, the peer for "batching alone". The
         method of ours with accel=0: damped normal equations (JᵀJ + λ·D)h = -Jᵀr, D the running maximum of
         diag(JᵀJ) (Marquardt's scaling, as MINPACK's), λ₀ = 1e-3, Nielsen's λ update, our ftol/xtol/gtol tests
         and tolerances, at most 400 iterations. Written the obvious way: the hand-written Jacobian (`model_jac`,
         the formula of scipy's Dfun) as a (K, m, p) tensor, JᵀJ and Jᵀr by batched matmul, batched LAPACK
         Cholesky (`cholesky_ex`, `cholesky_solve`), and every curve kept in the batch until all have stopped
         (finished ones frozen by masks, never removed). Hand-written because no library offers this peer:
         scipy and lmfit fit one problem per call, torch.optim has no least-squares solver, and the one batched
         torch LM we know of (torchimize's lsq_lma_parallel) stops the whole batch on a single test over all
         problems and solves with lstsq, a different method; written here it is exactly ours minus our
         engineering, which is what the "vs plain batched" column needs.
  (1)-(4) `curve_fit_batched`: the same damped normal equations, Cholesky and Nielsen update as plain, plus our
         engineering: finished curves leave the working set, JᵀJ and Jᵀr come from one product over a
         (p+1, K, m) buffer, the Cholesky is Jacobi-equilibrated and, for p ≤ 4 and 512 curves or more, unrolled
         over whole columns of K problems (`pipeline.regression.batched_linalg`), small working sets run on one
         thread, and the Jacobian comes from sparse forward-mode Duals (`pipeline.regression.dual`) unless jac=
         is given. Two rules plain lacks: a step within the cost's
         rounding noise that shrinks the gradient counts as accepted, and λ overflowing ends a fit as converged.
         (1) "lm" with geodesic acceleration (its default; a second directional derivative per iteration, which
             neither MINPACK nor plain computes), scipy's tolerances, at most 400 iterations;
         (2) accel=0, otherwise as (1);
         (3) accel=0 with the hand-written jac=: plain's method and Jacobian (on these curves both take the same
             iterations to the same parameters), so its ratio to plain is our engineering alone;
         (4) all its defaults: geodesic acceleration, ftol = 1e-20, xtol = gtol = 1e-15, at most 4000 iterations.

Where ours and plain differ from MINPACK: an iteration is one trial step, with f and J evaluated at the trial
point, and the cap counts iterations, not function evaluations (400 of either allows about the same number of f
evaluations, but MINPACK needs fewer J evaluations); the xtol test is on the proposed step, ‖D^½·h‖ ≤
xtol·(‖D^½·p‖ + xtol), not on a trust radius. The ftol and gtol tests are MINPACK's.

Each timing is the best of --repeat runs (the first doubles as warm-up). Ratios: "vs scipy" and "vs plain
batched" are that row's fits/s over theirs. Accuracy: relative difference to scipy's parameters (median and max
over the curves both converged on) and the median absolute error of each against the truth.

    python benchmarks/regression_vs_scipy.py                 # 10,000 curves on the CPU
    python benchmarks/regression_vs_scipy.py --n 1000 --repeat 1    # a quick check that it runs
    python benchmarks/regression_vs_scipy.py --n 2000 --threads 0   # torch's default thread count
    python benchmarks/regression_vs_scipy.py --device cuda   # scipy still runs on the CPU
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import math
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.regression import curve_fit_batched

M = 50
MINPACK_TOL = 1.49012e-08  # scipy leastsq's default ftol and xtol, sqrt(float64 eps)
CAP = 400  # leastsq's default maxfev with Dfun, 100·(p+1) function evaluations; our rows: max_iter iterations
TAU = 1e-3  # initial λ of curve_fit_batched's "lm" (λ multiplies the scaling D)


def tune_malloc() -> bool:
    """Keep glibc from mmap-ing and unmapping every multi-MB temporary (page faults dominate the batched
    Jacobian otherwise; the usual cure on CPU torch is jemalloc/tcmalloc or these settings). Applies to the
    whole process, scipy's loop included. Returns False where it cannot be done (not glibc)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 30)
                    and libc.mallopt(m_top_pad, 64 << 20))
    except (OSError, AttributeError, TypeError):
        return False


def make_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 5.0, M)
    truth = np.column_stack([rng.uniform(1, 5, n), rng.uniform(0.2, 2, n), rng.uniform(-1, 1, n)])
    Y = truth[:, :1] * np.exp(-truth[:, 1:2] * x) + truth[:, 2:] + 0.05 * rng.standard_normal((n, M))
    return x, Y, truth


def initial_guess(x, Y):
    """c from the tail, a from the head, b from where the curve has fallen by 1/e."""
    c0 = Y[:, -3:].mean(1)
    a0 = Y[:, :3].mean(1) - c0
    level = c0 + a0 / np.e
    fallen = (Y - level[:, None]) * np.sign(a0)[:, None] < 0
    first = np.where(fallen.any(1), fallen.argmax(1), M - 1)
    b0 = 1.0 / np.maximum(x[first], x[1])
    return np.column_stack([a0, b0, c0])


def model(x, a, b, c):
    return a * torch.exp(-b * x) + c


def model_jac(x, a, b, c):
    """The hand-written Jacobian (scipy's Dfun in torch): (m, 3) for scalar parameters, (K, m, 3) for columns."""
    e = torch.exp(-b * x)
    return torch.stack([e, -a * x * e, torch.ones_like(e)], -1)


def best_time(fn, repeat):
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_scipy(x, Y, P0, repeat):
    """Returns params, converged (ier 1-4), seconds, and per curve the f and J evaluations MINPACK made."""
    from scipy.optimize import leastsq

    def fun(p, y):
        return p[0] * np.exp(-p[1] * x) + p[2] - y

    def dfun(p, y):
        e = np.exp(-p[1] * x)
        return np.column_stack([e, -p[0] * x * e, np.ones_like(x)])

    def loop():
        out, ok = np.empty_like(P0), np.empty(len(Y), bool)
        evals = np.empty((len(Y), 2))
        for i in range(len(Y)):
            p, _, info, _, ier = leastsq(fun, P0[i], args=(Y[i],), Dfun=dfun, full_output=True,
                                         ftol=MINPACK_TOL, xtol=MINPACK_TOL, gtol=0.0, maxfev=CAP)
            out[i], ok[i], evals[i] = p, ier in (1, 2, 3, 4), (info["nfev"], info["njev"])
        return out, ok, evals

    (out, ok, evals), dt = best_time(loop, repeat)
    return out, ok, dt, evals


def run_torch(x, Y, P0, device, repeat, **kw):
    xt, Yt, Pt = (torch.as_tensor(a, dtype=torch.float64, device=device) for a in (x, Y, P0))

    def fit():
        out = curve_fit_batched(model, xt, Yt, Pt, full_output=True, **kw)
        synchronize(device)
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # non-converged curves are counted in the table
        (popt, _, res), dt = best_time(fit, repeat)
    return popt.cpu().numpy(), res.success.cpu().numpy(), dt, res.nit.cpu().numpy()


def plain_batched_lm(x, Y, P0, *, ftol, xtol, gtol, max_iter, tau=TAU):
    """Textbook batched Levenberg–Marquardt (the module docstring's "plain"): popt, pcov, converged, iterations.

    curve_fit_batched's "lm" with accel=0, written the obvious way: the hand-written (K, m, p) Jacobian, every
    curve in the batch until all have stopped (finished ones frozen by masks), batched LAPACK Cholesky."""
    K, p = P0.shape

    def evaluate(P):  # residuals, Jacobian, JᵀJ, Jᵀr and cost ½‖r‖² of every curve
        cols = P.unsqueeze(-1).unbind(1)  # a, b, c as (K, 1) columns against x (m,)
        r, J = model(x, *cols) - Y, model_jac(x, *cols)
        return r, J, J.mT @ J, (J.mT @ r.unsqueeze(-1)).squeeze(-1), 0.5 * (r * r).sum(-1)

    def diag(A):
        return torch.diagonal(A, dim1=-2, dim2=-1)

    def gradient_small(A, g, cost):  # MINPACK's gtol test: max_j |J_jᵀr| / (‖J_j‖·‖r‖) ≤ gtol
        return (g.abs() <= gtol * diag(A).sqrt() * (2 * cost).sqrt()[:, None]).all(-1)

    P = P0.clone()
    r, J, A, g, cost = evaluate(P)
    D = diag(A).clamp_min(1e-300)
    lam, nu = torch.full_like(cost, tau), torch.full_like(cost, 2.0)
    status = torch.where(gradient_small(A, g, cost), 1, 0)  # 0 running; converged by 1 gtol, 2 ftol, 3 xtol
    nit = torch.zeros_like(status)
    for _ in range(max_iter):
        running = status == 0
        if not bool(running.any()):
            break
        L, info = torch.linalg.cholesky_ex(A + torch.diag_embed(lam[:, None] * D))
        h = torch.cholesky_solve(-g.unsqueeze(-1), L).squeeze(-1)
        solved = running & (info == 0) & torch.isfinite(h).all(-1)
        h = torch.where(solved[:, None], h, 0.0)
        d = D.sqrt()
        small_step = solved & (torch.linalg.vector_norm(d * h, dim=-1)
                               <= xtol * (torch.linalg.vector_norm(d * P, dim=-1) + xtol))
        P_new = P + h
        trial = (P_new, *evaluate(P_new))  # p, r, J, JᵀJ, Jᵀr, cost at the trial point
        cost_new = trial[-1]
        act, pred = cost - cost_new, 0.5 * ((lam[:, None] * D * h - g) * h).sum(-1)
        judged = solved & ~small_step & torch.isfinite(cost_new)
        accept = judged & (pred > 0) & (act > 0)
        small_change = judged & (act.abs() <= ftol * cost) & (pred <= ftol * cost) & (act <= 2 * pred)
        P, r, J, A, g, cost = (torch.where(accept.reshape(-1, *(1,) * (new.ndim - 1)), new, old)
                               for new, old in zip(trial, (P, r, J, A, g, cost)))
        D = torch.where(accept[:, None], torch.maximum(D, diag(A)), D)
        rho = act / torch.where(pred > 0, pred, 1.0)
        rejected = running & ~accept
        lam = torch.where(accept, lam * (1 - (2 * rho - 1) ** 3).clamp_min(1 / 3),
                          torch.where(rejected, lam * nu, lam))
        nu = torch.where(accept, 2.0, torch.where(rejected, 2 * nu, nu))
        nit += running
        status = status.masked_fill(small_change, 2).masked_fill(small_step, 3)
        status = status.masked_fill(accept & (status == 0) & gradient_small(A, g, cost), 1)
    pcov = torch.linalg.pinv(A, hermitian=True) * (2 * cost / (Y.shape[1] - p))[:, None, None]  # curve_fit's rule
    return P, pcov, status > 0, nit


def run_plain(x, Y, P0, device, repeat, **kw):
    xt, Yt, Pt = (torch.as_tensor(a, dtype=torch.float64, device=device) for a in (x, Y, P0))

    def fit():
        out = plain_batched_lm(xt, Yt, Pt, **kw)
        synchronize(device)
        return out

    (popt, _, ok, nit), dt = best_time(fit, repeat)
    return popt.cpu().numpy(), ok.cpu().numpy(), dt, nit.cpu().numpy()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="number of curves (default 10000)")
    ap.add_argument("--device", default="cpu", help="torch device for the batched solvers (cpu, cuda)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op CPU threads (default 1, like scipy's loop; 0 = torch's own choice). "
                         "On a busy machine OpenMP threads can make every op wait for a time slice")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each solver; the best is reported")
    ap.add_argument("--malloc", choices=("tuned", "default"), default="tuned",
                    help="tuned: glibc mallopt keeps large freed blocks (see tune_malloc); default: leave it")
    args = ap.parse_args(argv)
    print("$ " + shlex.join(["python", sys.argv[0], *argv]))
    malloc = "glibc mallopt tuned" if args.malloc == "tuned" and tune_malloc() else "default malloc"
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x, Y, truth = make_data(args.n, args.seed)
    P0 = initial_guess(x, Y)
    ref, ref_ok, t_ref, ref_evals = run_scipy(x, Y, P0, args.repeat)
    scipy_tol = {"ftol": MINPACK_TOL, "xtol": MINPACK_TOL, "gtol": 0.0, "max_iter": CAP}
    k = args.repeat
    plain_label = "plain batched LM (torch, no compaction, LAPACK Cholesky, analytic J)"
    runs = {
        plain_label: run_plain(x, Y, P0, device, k, **scipy_tol),
        "(1) curve_fit_batched: LM + geodesic accel. (default), forward-mode J": run_torch(
            x, Y, P0, device, k, **scipy_tol),
        "(2) curve_fit_batched: LM (accel=0), forward-mode J": run_torch(x, Y, P0, device, k, accel=0, **scipy_tol),
        "(3) curve_fit_batched: LM (accel=0), analytic jac=": run_torch(
            x, Y, P0, device, k, accel=0, jac=model_jac, **scipy_tol),
        "(4) curve_fit_batched: all defaults (accel., tight tolerances)": run_torch(x, Y, P0, device, k),
    }
    t_plain = runs[plain_label][2]
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"\n{args.n} curves × {M} points; torch {torch.__version__} on {device}{gpu}, "
          f"{torch.get_num_threads()} torch thread(s) of {os.cpu_count()} CPUs, {malloc}; scipy loop single-threaded\n")
    print("| solver | fits/s | vs scipy | vs plain batched | converged | mean iterations (scipy: f / J evaluations) "
          "| median / max rel. diff to scipy | median abs. error vs truth (a, b, c) |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    def error_vs_truth(popt):
        return ", ".join(f"{e:.2e}" for e in np.median(np.abs(popt - truth), 0))

    nfev, njev = ref_evals.mean(0)
    print(f"| scipy leastsq loop: MINPACK lmder (trust region, QR), analytic Dfun | {args.n / t_ref:,.0f} | 1.0× "
          f"| {t_plain / t_ref:.2f}× | {ref_ok.sum()} | {nfev:.1f} / {njev:.1f} | – | {error_vs_truth(ref)} |")
    for name, (popt, ok, dt, nit) in runs.items():
        both = ok & ref_ok
        rel = np.abs(popt[both] - ref[both]) / np.maximum(np.abs(ref[both]), 1e-12)
        print(f"| {name} | {args.n / dt:,.0f} | {t_ref / dt:.1f}× | {t_plain / dt:.2f}× | {ok.sum()} "
              f"| {nit.mean():.1f} | {np.median(rel):.1e} / {rel.max():.1e} | {error_vs_truth(popt)} |")
    print(f"""
Tolerances: scipy, plain and (1)-(3) ftol = xtol = {MINPACK_TOL:.3g}, gtol = 0 (leastsq's defaults);
  (4) ftol = 1e-20, xtol = gtol = 1e-15.
Caps: scipy stops after maxfev = {CAP} function evaluations (J is evaluated at accepted points only);
  plain and (1)-(3) after {CAP} iterations, each one trial step with f and J evaluated there; (4) after 4000.
Stopping rules: all use MINPACK's ftol test (actual and predicted relative cost reductions ≤ ftol) and its gtol test.
  xtol differs: MINPACK tests its trust radius (≤ xtol·‖D·p‖), plain and ours the proposed step
  (‖D^½·h‖ ≤ xtol·(‖D^½·p‖ + xtol)). Ours also ends a fit as converged when λ overflows, and accepts a step within
  the cost's rounding noise that shrinks the gradient; plain does neither.
Converged: scipy ier 1-4; plain and ours status > 0.""")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
