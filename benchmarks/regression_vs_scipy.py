"""Batched Levenberg–Marquardt on torch vs a Python loop over scipy.optimize.leastsq (MINPACK).

Problem: N noisy curves y = a·exp(-b·x) + c on one shared grid of 50 points in [0, 5]; true a ~ U(1, 5),
b ~ U(0.2, 2), c ~ U(-1, 1), noise sd 0.05, seeded. Both solvers start from the same data-driven guess; scipy
runs leastsq with the analytic Jacobian (Dfun) and its default tolerances (ftol = xtol = 1.49e-8, 400
evaluations at most). curve_fit_batched runs with the same tolerances and cap, (1) with geodesic acceleration
(its default for "lm": a second directional derivative per iteration, which MINPACK does not compute), (2) as
textbook LM (accel=0): the same algorithm as MINPACK, so the like-for-like row, (3) textbook LM with the
hand-written Jacobian (jac=), and (4) with all its own defaults (tight tolerances). (1), (2) and (4) take the
Jacobian from the model itself (`pipeline.regression.dual`, forward mode). Each timing is the best of --repeat
runs (the first doubles as warm-up). Accuracy: relative difference to scipy's parameters (median and max over
the curves both converged on) and the median absolute error of each against the truth.

    python benchmarks/regression_vs_scipy.py                 # 10,000 curves on the CPU
    python benchmarks/regression_vs_scipy.py --n 2000 --threads 0   # torch's default thread count
    python benchmarks/regression_vs_scipy.py --device cuda   # scipy still runs on the CPU
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.regression import curve_fit_batched

M = 50
MINPACK_TOL = 1.49012e-08


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
    e = torch.exp(-b * x)
    return torch.stack([e, -a * x * e, torch.ones_like(x)], -1)


def best_time(fn, repeat):
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def run_scipy(x, Y, P0, repeat):
    from scipy.optimize import leastsq

    def fun(p, y):
        return p[0] * np.exp(-p[1] * x) + p[2] - y

    def dfun(p, y):
        e = np.exp(-p[1] * x)
        return np.column_stack([e, -p[0] * x * e, np.ones_like(x)])

    def loop():
        out, ok = np.empty_like(P0), np.empty(len(Y), bool)
        for i in range(len(Y)):
            p, _, _, _, ier = leastsq(fun, P0[i], args=(Y[i],), Dfun=dfun, full_output=True)
            out[i], ok[i] = p, ier in (1, 2, 3, 4)
        return out, ok

    (out, ok), dt = best_time(loop, repeat)
    return out, ok, dt


def run_torch(x, Y, P0, device, repeat, **kw):
    xt, Yt, Pt = (torch.as_tensor(a, dtype=torch.float64, device=device) for a in (x, Y, P0))

    def fit():
        out = curve_fit_batched(model, xt, Yt, Pt, full_output=True, **kw)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # non-converged curves are counted in the table
        (popt, _, res), dt = best_time(fit, repeat)
    return popt.cpu().numpy(), res.success.cpu().numpy(), dt, res.nit.cpu().numpy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="number of curves (default 10000)")
    ap.add_argument("--device", default="cpu", help="torch device for curve_fit_batched (cpu, cuda)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op CPU threads (default 1, like scipy's loop; 0 = torch's own choice). "
                         "On a busy machine OpenMP threads can make every op wait for a time slice")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each solver; the best is reported")
    ap.add_argument("--malloc", choices=("tuned", "default"), default="tuned",
                    help="tuned: glibc mallopt keeps large freed blocks (see tune_malloc); default: leave it")
    args = ap.parse_args(argv)
    malloc = "glibc mallopt tuned" if args.malloc == "tuned" and tune_malloc() else "default malloc"
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x, Y, truth = make_data(args.n, args.seed)
    P0 = initial_guess(x, Y)
    ref, ref_ok, t_ref = run_scipy(x, Y, P0, args.repeat)
    loose = {"ftol": MINPACK_TOL, "xtol": MINPACK_TOL, "gtol": 0.0, "max_iter": 400}
    k = args.repeat
    runs = {
        "(1) curve_fit_batched: LM + geodesic accel. (default), MINPACK tol.": run_torch(x, Y, P0, device, k,
                                                                                          **loose),
        "(2) curve_fit_batched: textbook LM (accel=0), MINPACK tol.": run_torch(x, Y, P0, device, k, accel=0,
                                                                                 **loose),
        "(3) curve_fit_batched: textbook LM, hand-written jac=, MINPACK tol.": run_torch(
            x, Y, P0, device, k, accel=0, jac=model_jac, **loose),
        "(4) curve_fit_batched: all defaults (tight tolerances)": run_torch(x, Y, P0, device, k),
    }
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"\n{args.n} curves × {M} points; torch {torch.__version__} on {device}{gpu}, "
          f"{torch.get_num_threads()} torch thread(s) of {os.cpu_count()} CPUs, {malloc}; scipy loop single-threaded\n")
    print("| solver | fits/s | speed-up | converged | mean iters | median / max rel. diff to scipy "
          "| median abs. error vs truth (a, b, c) |")
    print("|---|---:|---:|---:|---:|---|---|")
    err = np.median(np.abs(ref - truth), 0)
    print(f"| scipy.optimize.leastsq loop (Dfun) | {args.n / t_ref:,.0f} | 1.0× | {ref_ok.sum()} | – | – | "
          f"{err[0]:.2e}, {err[1]:.2e}, {err[2]:.2e} |")
    for name, (popt, ok, dt, nit) in runs.items():
        both = ok & ref_ok
        rel = np.abs(popt[both] - ref[both]) / np.maximum(np.abs(ref[both]), 1e-12)
        err = np.median(np.abs(popt - truth), 0)
        print(f"| {name} | {args.n / dt:,.0f} | {t_ref / dt:.1f}× | {ok.sum()} | {nit.mean():.1f} | "
              f"{np.median(rel):.1e} / {rel.max():.1e} | {err[0]:.2e}, {err[1]:.2e}, {err[2]:.2e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
