"""McCall: value iteration agrees with the scalar reservation-wage equation and the published figure.

The reference figures are those QuantEcon's lecture "Job Search I: The McCall Search Model"
(Julia edition) checks its own code against, for the same offers (51 wages on [10, 60],
BetaBinomial(50, 200, 100)): w̄ = 47.316499766546 at c = 25, β = 0.99.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import betabinom

from hpc.models import get_model
from hpc.models.mccall import _static_arrays, reservation_wage_equation
from hpc.sweep.runner import solve_points

MODEL = get_model("mccall")
# The lecture's figures come from iterations stopped at a change of 1e-6 in v; that leaves the
# reservation wage (1-β) β Σ p v within β² 1e-6 < 1e-6 of the exact one.
LECTURE_TOL = 1e-6


def scalar_reservation_wage(c: float, beta: float) -> float:
    w, p = _static_arrays(MODEL.defaults())
    return brentq(lambda wb: reservation_wage_equation(wb, w, p, c, beta), 0.0, 1e4, xtol=1e-12)


def test_offer_distribution_is_scipys_beta_binomial():
    w, p = _static_arrays(MODEL.defaults())
    np.testing.assert_allclose(w, np.linspace(10, 60, 51), rtol=0, atol=1e-13)
    np.testing.assert_allclose(p, betabinom.pmf(np.arange(51), 50, 200, 100), rtol=1e-12, atol=1e-300)


def test_float32_vfi_matches_the_reservation_wage_equation():
    c = np.array([10.0, 25.0, 25.0, 30.0])
    beta = np.array([0.9, 0.9, 0.99, 0.95])
    out = solve_points(MODEL, MODEL.defaults(), {"c": c, "beta": beta}, "float32", batch_size=3)
    expected = np.array([scalar_reservation_wage(ci, bi) for ci, bi in zip(c, beta)])
    assert out["converged"].all()
    # Stopped at a relative change err of max|v|, v lies within β/(1-β) err max|v| of the fixed
    # point (a β-contraction), so w̄ = (1-β)(c + β Σ p v) within β² err max|v|; float32 rounding
    # (an ulp of max|v| per step, summed over 1/(1-β) steps) adds a few ulps of max|v| to w̄.
    scale = np.abs(out["value"]).max(axis=1)
    bound = beta**2 * out["error"] * scale + 4 * np.finfo(np.float32).eps * scale
    assert (np.abs(out["reservation_wage"] - expected) <= bound).all(), (out["reservation_wage"] - expected, bound)
    assert out["value"].shape == (4, 51)
    # the value is flat below the reservation wage and w/(1-β) above it
    w = _static_arrays(MODEL.defaults())[0]
    above = w > expected[2] + 1
    np.testing.assert_allclose(out["value"][2][above], w[above] / (1 - 0.99), rtol=1e-5)
    below = w < expected[2] - 1
    np.testing.assert_allclose(out["value"][2][below], expected[2] / (1 - 0.99), rtol=1e-5)


def test_published_default_reservation_wage():
    assert scalar_reservation_wage(25.0, 0.99) == pytest.approx(47.316499766546215, abs=LECTURE_TOL)
