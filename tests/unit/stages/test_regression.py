"""The regression stage on the world's curves: LM recovers the truth, OLS = LM = MLE on the linear curve, artifacts,
headline metrics, and a bad method named in one line."""

import json
import shutil

import numpy as np
import pytest
import torch

from pipeline.cli import main
from pipeline.regression import parse_expression
from tests.conftest import make_run, stage

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
HEADLINE = ("lm_converged", "lm_max_rel_error", "gn_converged", "mean_iterations_lm")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = make_run(tmp_path_factory.mktemp("run") / "r")
    stage("data", folder)
    stage("regression", folder)
    out = folder / "regression"
    return folder, json.loads((out / "results.json").read_text())


def fits(results, method):
    return {r["curve"]: r for r in results["fits"] if r["method"] == method}


def implied_stderr(curve: dict, sd: float) -> np.ndarray:
    """The standard errors the noise level implies: sd·sqrt(diag (JᵀJ)⁻¹), J at the true parameters."""
    f, x = parse_expression(curve["function"]), torch.tensor(curve["x"], dtype=torch.float64)
    J = torch.func.jacfwd(lambda p: torch.broadcast_to(f(x, *p.unbind()), x.shape))(torch.tensor(curve["true"]))
    return sd * torch.linalg.inv(J.T @ J).diagonal().sqrt().numpy()


def test_lm_converges_and_recovers_the_true_parameters(built):
    folder, results = built
    import datasets

    data = datasets.load_from_disk(str(folder / "data" / "regression"))["train"]
    lm = fits(results, "lm")
    assert set(lm) == {c["curve"] for c in results["curves"]} and len(lm) == 5
    for curve in results["curves"]:
        r = lm[curve["curve"]]
        assert r["converged"], (curve["curve"], r["message"])
        assert r["p0"] != r["true"]  # it started away from the truth
        assert max(abs(z) for z in r["z"]) < 5, r
        # Relative error bound from the noise level: the data stage adds N(0, sd²) noise with
        # sd = 3% of the curve's range of y, so the least-squares estimate of parameter j has standard deviation
        # sd·sqrt((JᵀJ)⁻¹_jj) (J at the truth); 5 of those, over |p_j|, bounds |p̂_j - p_j|/|p_j| except with
        # probability ~6e-7 per parameter. On this world it is 2-60%: loosest for the parameters near 0 (the
        # linear intercept, the decay's offset), whose relative error is large however good the fit.
        rows = [row for row in data if row["curve"] == curve["curve"]]
        curve = {**curve, "x": [row["x"] for row in rows]}
        bound = 5 * implied_stderr(curve, rows[0]["noise_sd"]) / np.abs(curve["true"])
        assert np.all(np.array(r["rel_error"]) < bound), (curve["curve"], r["rel_error"], bound)
        assert np.all(bound < 0.75)
        # the rss agrees with the noise: rss/sd² ~ chi-square with n - p degrees of freedom
        dof = curve["n"] - len(curve["true"])
        assert 0.4 < r["rss"] / (rows[0]["noise_sd"] ** 2 * dof) < 1.8, r["rss"]


def test_ols_matches_lm_and_mle_on_the_linear_curve(built):
    _, results = built
    ols, lm = fits(results, "ols"), fits(results, "lm")
    assert set(ols) == {"linear"}  # the other curves are not linear in their parameters
    a, b = ols["linear"], lm["linear"]
    assert a["converged"] and a["iterations"] == 0
    np.testing.assert_allclose(a["params"], b["params"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a["stderr"], b["stderr"], rtol=1e-6)
    assert a["rss"] == pytest.approx(b["rss"], rel=1e-10)
    assert a["mle"]["max_coef_diff"] == 0.0
    assert a["mle"]["sigma2"] == pytest.approx(a["mle"]["rss_over_n"], rel=1e-12)
    assert a["mle"]["sigma2"] < a["mle"]["sigma2_ols"]  # rss/n < rss/(n - p)


def test_artifacts_and_headline_metrics(built):
    folder, results = built
    out = folder / "regression"
    assert (out / "_SUCCESS").is_file()
    assert (out / "fits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "results.md").read_text().startswith("| curve | method |")
    assert {r["method"] for r in results["fits"]} == {"ols", "gn", "levenberg", "lm"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(HEADLINE) <= set(metrics)
    assert metrics["lm_converged"] == 1.0 and metrics["curves"] == 5 and metrics["linear_curves"] == 1
    assert metrics["ols_vs_lm_max_rel_diff"] < 1e-9 and metrics["ols_vs_mle_max_coef_diff"] == 0.0
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_methods_iteration_cap_and_no_plot(built, tmp_path):
    folder, _ = built
    copy = tmp_path / "r"
    shutil.copytree(folder, copy, ignore=lambda where, names: ["regression"] if where == str(folder) else [])
    stage("regression", copy, "regression.methods=[lm]", "regression.max_iter=2", "regression.plot=false")
    out = copy / "regression"
    records = json.loads((out / "results.json").read_text())["fits"]
    assert {r["method"] for r in records} == {"lm"} and not (out / "fits.png").exists()
    assert all(r["iterations"] <= 2 for r in records)
    assert any(not r["converged"] and "maximum number of iterations" in r["message"] for r in records)
    assert json.loads((out / "metrics.json").read_text())["lm_converged"] < 1


def test_unknown_method_exits_2_with_one_line(tmp_path, capsys):
    folder = make_run(tmp_path / "bad", regression={"methods": ["ols", "newton"]})
    assert main(["stage", "regression", "--run", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "regression.methods: unknown method 'newton' (valid: ols, gn, levenberg, lm)" in err
