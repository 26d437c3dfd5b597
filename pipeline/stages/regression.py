"""Regression: the world's curves fitted by least squares, Gauss–Newton, Levenberg and Levenberg–Marquardt.

Every curve of the world's regression dataset is fitted by each method and scored against the true parameters
it was drawn from.

    pipeline stage regression --run runs/tiny regression.methods=[gn,lm] regression.max_iter=50

Each curve's `function` is parsed with `pipeline.regression.parse_expression` (its parameters are the named
ones) and fitted from a deterministic start, p0 = start_scale · true parameters (0.5: every parameter off by
half, never the truth itself), with each nonlinear method via `least_squares_fit`. A curve linear in its
parameters (its Jacobian does not depend on them, as `a + b*x`) is also solved directly with `ols` on that
Jacobian as design matrix, and checked against `mle` (same coefficients, sigma2 = rss/n). Per (curve, method):
status, iterations, estimates, standard errors (scipy's rule, sigma² = rss/(n-p)), relative errors
|p̂ - p|/|p| and z-scores (p̂ - p)/se against the truth, rss. Output:

    <run>/regression/results.json   every (curve, method) record
    <run>/regression/results.md     the same as a markdown table
    <run>/regression/fits.png       data, true curve and each method's fit per curve, with residual panels
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import PartialState

from pipeline.artifacts import RunDir, atomic_write, write_json
from pipeline.errors import PipelineError
from pipeline.regression import METHODS, ExpressionError, least_squares_fit, mle, ols, parse_expression

NAME, NEEDS = "regression", ("data",)
HEADLINE = ("lm_converged", "lm_max_rel_error", "gn_converged", "mean_iterations_lm")
VALID = ("ols", *METHODS)  # ols: curves linear in their parameters only
COLUMNS = ("x", "y", "function", "curve", "true_params")


@dataclass
class Config:
    dataset: str = field(default="regression", metadata={"help": "Regression dataset built by the data stage (columns x, y, function, curve, true_params)."})
    methods: list[str] = field(default_factory=lambda: list(VALID), metadata={"help": f"Fitting methods, from: {', '.join(VALID)} (ols only on curves linear in their parameters)."})
    max_iter: int = field(default=0, metadata={"help": "Iteration cap of the nonlinear methods (0: the library default, 1000·(p+1))."})
    start_scale: float = field(default=0.5, metadata={"help": "Start every fit from p0 = start_scale · true parameters (1.0 would start at the truth)."})
    plot: bool = field(default=True, metadata={"help": "Save fits.png: data, true curve, each method's fit and residuals per curve."})

    def __post_init__(self):
        for method in self.methods:
            if method not in VALID:
                raise ValueError(f"methods: unknown method {method!r} (valid: {', '.join(VALID)})")
        if not self.methods:
            raise ValueError(f"methods: empty (valid: {', '.join(VALID)})")
        if self.max_iter < 0:
            raise ValueError(f"max_iter: must be 0 (library default) or positive, got {self.max_iter}")


def run(cfg: Config, run: RunDir) -> dict:
    state = PartialState()
    metrics = {}
    if state.is_main_process:  # a few dozen small fits: one process does them, the others wait
        metrics = fit_all(cfg, run)
    state.wait_for_everyone()
    return metrics


def fit_all(cfg: Config, run: RunDir) -> dict:
    curves = load_curves(run.dataset(cfg.dataset, where="regression.dataset"), cfg.dataset)
    records = []
    for curve in curves:
        p0 = cfg.start_scale * curve["true"]
        for method in cfg.methods:
            if method != "ols":
                res = least_squares_fit(curve["f"], curve["x"], curve["y"], p0, method=method, max_iter=cfg.max_iter or None)
                records.append(score(curve, method, p0, res.params, np.sqrt(np.diag(res.cov)), 2 * res.cost,
                                     res.success, res.message, res.nit))
            elif (design := linear_design(curve["f"], curve["x"], curve["true"])) is not None:
                records.append(fit_linear(curve, p0, *design))
    out = run.stage_dir(NAME)
    write_json(out / "results.json", {"curves": [describe(c) for c in curves], "fits": records})
    atomic_write(out / "results.md", markdown(records))
    if cfg.plot:
        plot(curves, records, out / "fits.png")
    return summarize(curves, records, cfg.methods)


def load_curves(ds, name: str) -> list[dict]:
    """The dataset's curves in order of appearance: parsed function, x, y (float64) and true parameters."""
    split = ds["train"] if "train" in ds else next(iter(ds.values()))
    missing = [c for c in COLUMNS if c not in split.column_names]
    if missing:
        raise PipelineError(f"regression.dataset: {name!r} has no column {missing[0]!r} (columns: {', '.join(split.column_names)})")
    table = split.select_columns(list(COLUMNS) + (["noise_sd"] if "noise_sd" in split.column_names else []))
    names = table["curve"]
    curves = []
    for curve in dict.fromkeys(names):
        rows = [i for i, n in enumerate(names) if n == curve]
        part = table.select(rows)
        try:
            f = parse_expression(part[0]["function"])
        except ExpressionError as e:
            raise PipelineError(f"regression.dataset: curve {curve!r}: {e}") from None
        true = json.loads(part[0]["true_params"])
        if set(true) != set(f.params):
            raise PipelineError(f"regression.dataset: curve {curve!r}: true_params {sorted(true)} do not match the parameters {list(f.params)} of {f.text!r}")
        x = np.asarray(part["x"], dtype=np.float64)
        at_truth = f(torch.as_tensor(x), *(torch.tensor(float(true[p]), dtype=torch.float64) for p in f.params))
        if not bool(torch.isfinite(torch.as_tensor(at_truth)).all()):
            raise PipelineError(f"regression.dataset: curve {curve!r}: {f.text!r} is not finite at its true_params "
                                f"on the curve's x (an overflowing exponent?)")
        curves.append({"name": curve, "f": f, "x": x,
                       "y": np.asarray(part["y"], dtype=np.float64), "true": np.array([true[p] for p in f.params]),
                       "noise_sd": part[0].get("noise_sd")})
    return curves


def describe(curve: dict) -> dict:
    return {"curve": curve["name"], "function": curve["f"].text, "params": list(curve["f"].params),
            "true": curve["true"].tolist(), "n": len(curve["x"]), "noise_sd": curve["noise_sd"]}


def linear_design(f, x, p: np.ndarray):
    """(J, offset) with f(x, p) = J·p + offset for every p when f is linear in its parameters, else None.

    Linear iff the Jacobian is the same at two unrelated points and predicts the change of f between them."""
    xt = torch.as_tensor(x, dtype=torch.float64)

    def model(q):
        return torch.broadcast_to(f(xt, *q.unbind()), xt.shape)

    pa = torch.as_tensor(p, dtype=torch.float64)
    pb = 2 * pa + 1.0
    Ja, Jb = torch.func.jacfwd(model)(pa), torch.func.jacfwd(model)(pb)
    fa, fb = model(pa), model(pb)
    scale = float(fa.abs().max() + fb.abs().max() + 1.0)
    if not (torch.isfinite(Ja).all() and torch.allclose(Ja, Jb, rtol=1e-10, atol=1e-12 * scale)):
        return None
    if not torch.allclose(fb - fa, Ja @ (pb - pa), rtol=1e-10, atol=1e-10 * scale):
        return None
    return Ja.numpy(), (fa - Ja @ pa).numpy()


def fit_linear(curve: dict, p0, X: np.ndarray, offset: np.ndarray) -> dict:
    """ols on the Jacobian (no added intercept), and mle seen alongside: same coefficients, sigma2 = rss/n."""
    fit, ml = ols(X, curve["y"] - offset, intercept=False), mle(X, curve["y"] - offset, intercept=False)
    rec = score(curve, "ols", p0, fit.coef, fit.stderr, fit.rss, True, "direct solve (QR, refined)", 0)
    rec["mle"] = {"max_coef_diff": float(np.abs(ml.coef - fit.coef).max()), "sigma2": ml.sigma2,
                  "rss_over_n": fit.rss / fit.n, "sigma2_ols": fit.sigma2}
    return rec


def score(curve, method, p0, est, se, rss, converged, message, nit) -> dict:
    """One (curve, method) record: estimates against the truth. A zero true value gets the absolute error."""
    est, se, true = np.asarray(est, dtype=float), np.asarray(se, dtype=float), curve["true"]
    err = est - true
    rel = np.abs(err) / np.where(true != 0, np.abs(true), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, err / se, np.where(err == 0, 0.0, np.inf))
    return {"curve": curve["name"], "method": method, "converged": bool(converged), "message": message,
            "iterations": int(nit), "names": list(curve["f"].params), "true": _clean(true), "p0": _clean(p0),
            "params": _clean(est), "stderr": _clean(se),
            "rel_error": _clean(rel), "z": _clean(z), "max_rel_error": _num(rel.max()),
            "max_abs_z": _num(np.abs(z).max()), "rss": _num(rss)}


def summarize(curves: list[dict], records: list[dict], methods: list[str]) -> dict:
    metrics = {"curves": len(curves), "linear_curves": sum(r["method"] == "ols" for r in records)}
    for method in methods:
        mine = [r for r in records if r["method"] == method]
        if not mine:
            continue
        metrics[f"{method}_converged"] = round(sum(r["converged"] for r in mine) / len(mine), 4)
        metrics[f"{method}_max_rel_error"] = _worst(r["max_rel_error"] for r in mine)
        metrics[f"{method}_max_abs_z"] = _worst(r["max_abs_z"] for r in mine)
        if method != "ols":
            metrics[f"mean_iterations_{method}"] = round(sum(r["iterations"] for r in mine) / len(mine), 2)
    lm = {r["curve"]: r for r in records if r["method"] == "lm"}
    diffs = [max(abs(a - b) / max(abs(b), 1e-300) for a, b in zip(r["params"], lm[r["curve"]]["params"]))
             for r in records if r["method"] == "ols" and r["curve"] in lm]
    if diffs:
        metrics["ols_vs_lm_max_rel_diff"] = float(max(diffs))
    mle_diffs = [r["mle"]["max_coef_diff"] for r in records if r["method"] == "ols"]
    if mle_diffs:
        metrics["ols_vs_mle_max_coef_diff"] = float(max(mle_diffs))
    return metrics


def markdown(records: list[dict]) -> str:
    lines = ["| curve | method | converged | iterations | estimate ± stderr (true) | max rel error | max abs z | rss |",
             "| --- | --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for r in records:
        params = ", ".join(f"{n} = {_g(p)} ± {_g(s)} ({_g(t)})"
                           for n, p, s, t in zip(r["names"], r["params"], r["stderr"], r["true"]))
        lines.append(f"| {r['curve']} | {r['method']} | {'yes' if r['converged'] else 'no: ' + r['message']} | "
                     f"{r['iterations']} | {params} | {_g(r['max_rel_error'])} | {_g(r['max_abs_z'])} | {_g(r['rss'])} |")
    return "\n".join(lines) + "\n"


def plot(curves: list[dict], records: list[dict], path) -> None:
    """One column per curve (up to three a row): data, true curve and fits above, residuals y - fit below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(curves))
    rows = math.ceil(len(curves) / cols)
    fig = plt.figure(figsize=(5 * cols, 5.4 * rows))
    outer = fig.add_gridspec(rows, cols, hspace=0.3, wspace=0.25)
    styles = {"ols": ("tab:green", ":"), "gn": ("tab:blue", "-"), "levenberg": ("tab:orange", "-."), "lm": ("tab:red", "--")}
    for i, curve in enumerate(curves):
        inner = outer[divmod(i, cols)].subgridspec(2, 1, height_ratios=[3, 1.2], hspace=0.06)
        top = fig.add_subplot(inner[0])
        bottom = fig.add_subplot(inner[1], sharex=top)
        x, y, f = curve["x"], curve["y"], curve["f"]
        grid_x = np.linspace(x.min(), x.max(), 200)
        top.plot(x, y, "o", ms=3, color="black", alpha=0.6, label="data")
        top.plot(grid_x, _eval(f, grid_x, curve["true"]), color="black", lw=1, label="true")
        starts = [r["p0"] for r in records if r["curve"] == curve["name"]]
        if starts:
            top.plot(grid_x, _eval(f, grid_x, starts[0]), color="darkgray", lw=1, ls=":", label="start (p0)")
        for r in (r for r in records if r["curve"] == curve["name"]):
            color, ls = styles.get(r["method"], ("tab:purple", "-"))
            label = r["method"] + ("" if r["converged"] else " (failed)")
            top.plot(grid_x, _eval(f, grid_x, r["params"]), color=color, ls=ls, lw=1.5, label=label)
            bottom.plot(x, y - _eval(f, x, r["params"]), ".", ms=4, color=color, label=r["method"])
        bottom.axhline(0, color="black", lw=0.8)
        top.set_title(f"{curve['name']}: {f.text}", fontsize=10)
        top.tick_params(labelbottom=False)
        top.legend(fontsize=7, loc="best")
        bottom.set_xlabel("x")
        bottom.set_ylabel("y - fit", fontsize=8)
        top.set_ylabel("y")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def _eval(f, x, params) -> np.ndarray:
    p = [math.nan if v is None else float(v) for v in params]
    with torch.no_grad():
        out = f(torch.as_tensor(x, dtype=torch.float64), *torch.tensor(p, dtype=torch.float64).unbind())
    return torch.broadcast_to(out, (len(x),)).numpy()


def _num(v) -> float | None:
    """A JSON-safe float: None where it is not finite."""
    v = float(v)
    return v if math.isfinite(v) else None


def _clean(a) -> list:
    return [_num(v) for v in np.asarray(a, dtype=float).reshape(-1)]


def _worst(values) -> float:
    values = list(values)
    return math.inf if any(v is None for v in values) else float(max(values))


def _g(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"


if __name__ == "__main__":
    from pipeline.runner import stage_main

    stage_main(NAME)
