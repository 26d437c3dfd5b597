"""NIST StRD reader, and Levenberg–Marquardt with default settings on all 27 nonlinear problems × 2 starts.

The certified parameters must be reached to LRE ≥ 6 from both starts on every problem except those listed in
START1_KNOWN_FAILURES, now empty: 27/27 from each start (for scale: scipy's MINPACK lm with tight tolerances
misses MGH09, MGH17, BoxBOD and Bennett5 from start 1).
"""

import numpy as np
import pytest
import torch

from pipeline.regression import least_squares_fit
from pipeline.regression.nist import LINEAR_NAMES, NIST_MODELS, NONLINEAR_NAMES, data_dir, load_nonlinear, lre

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

from tests.conftest import NIST_STRD
from tests.conftest import needs_nist as needs_data

# Problems whose start 1 is not expected to reach LRE ≥ 6 with the default settings (none since geodesic
# acceleration is on by default; without it, accel=0, BoxBOD and MGH10 fail from start 1, see test_nonlinear).
START1_KNOWN_FAILURES: set[str] = set()
EXPECTED_DIMS = {"Misra1a": 2, "Chwirut2": 3, "Chwirut1": 3, "Lanczos3": 6, "Gauss1": 8, "Gauss2": 8,
                 "DanWood": 2, "Misra1b": 2, "Kirby2": 5, "Hahn1": 7, "Nelson": 3, "MGH17": 5, "Lanczos1": 6,
                 "Lanczos2": 6, "Gauss3": 8, "Misra1c": 2, "Misra1d": 2, "Roszman1": 4, "ENSO": 9, "MGH09": 4,
                 "Thurber": 7, "BoxBOD": 2, "Rat42": 3, "MGH10": 3, "Eckerle4": 3, "Rat43": 4, "Bennett5": 3}
N_OBS = {"Misra1a": 14, "Chwirut1": 214, "Gauss1": 250, "Nelson": 128, "ENSO": 168, "BoxBOD": 6, "Bennett5": 154}


def test_reads_the_copy_shipped_with_the_tests():
    """Not marked needs_data: a missing or incomplete tests/data/nist_strd fails here instead of skipping."""
    assert data_dir() == NIST_STRD
    assert sorted(p.name for p in (NIST_STRD / "nonlinear").iterdir()) == sorted(f"{n}.dat" for n in NONLINEAR_NAMES)
    assert sorted(p.name for p in (NIST_STRD / "linear").iterdir()) == sorted(f"{n}.json" for n in LINEAR_NAMES)


def test_lre_definition():
    assert lre(1.0, 1.0) == 11
    assert lre(1.0001, 1.0) == pytest.approx(4.0, abs=1e-6)
    assert lre(1e-8, 0.0) == pytest.approx(8.0)
    assert lre(np.nan, 1.0) == 0 and lre(5.0, 1.0) == 0
    np.testing.assert_allclose(lre([1.0, 2.000002], [1.0, 2.0]), [11, 6], atol=1e-6)


@needs_data
@pytest.mark.parametrize("name", NONLINEAR_NAMES)
def test_parse_and_models_reproduce_certified_rss(name):
    prob = load_nonlinear(name)
    assert len(NONLINEAR_NAMES) == 27 and set(NIST_MODELS) == set(EXPECTED_DIMS)
    assert prob.n_params == EXPECTED_DIMS[name] == len(prob.start1) == len(prob.start2) == len(prob.certified_sd)
    if name in N_OBS:
        assert prob.y.shape == (N_OBS[name],)
    assert prob.x.shape[-1] == prob.y.shape[0]
    assert prob.difficulty in ("Lower", "Average", "Higher") and prob.model_text
    out = prob.model(torch.tensor(prob.x), *torch.tensor(prob.certified))
    rss = float(((out.numpy() - prob.y) ** 2).sum())
    # Lanczos1's certified rss (1.4e-25) is below the rounding of the 11-digit certified parameters.
    assert lre(rss, prob.certified_rss) >= (0 if name == "Lanczos1" else 8), (name, rss, prob.certified_rss)


@needs_data
def test_nelson_uses_log_response_and_two_predictors():
    prob = load_nonlinear("Nelson")
    assert prob.x.shape == (2, 128) and prob.model_text.startswith("log[y]")
    assert np.all(prob.y < 3)  # log of responses up to ~16


CASES = [
    pytest.param(name, start, marks=pytest.mark.xfail(run=False, reason=f"{name} start 1: known failure")
                 if start == 1 and name in START1_KNOWN_FAILURES else ())
    for name in NONLINEAR_NAMES for start in (1, 2)
]


@needs_data
@pytest.mark.parametrize("name, start", CASES)
def test_lm_default_settings_reach_certified_values(name, start):
    prob = load_nonlinear(name)
    res = least_squares_fit(prob.model, prob.x, prob.y, prob.start1 if start == 1 else prob.start2)
    score = lre(res.params, prob.certified).min()
    assert res.success, f"{name} start {start}: {res.message}"
    assert score >= 6, f"{name} start {start}: min LRE {score:.1f} < 6 ({res.message}, {res.nit} iterations)"
    if name != "Lanczos1":  # its certified rss (1.4e-25) is below the rounding of the data
        assert lre(2 * res.cost, prob.certified_rss) >= 6, f"{name} start {start}: rss {2 * res.cost!r}"
