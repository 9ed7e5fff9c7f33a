"""McCall: value iteration agrees with the scalar reservation-wage equation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq

from hpc.models import get_model
from hpc.models.mccall import _static_arrays, reservation_wage_equation
from hpc.sweep.runner import solve_points

MODEL = get_model("mccall")


def scalar_reservation_wage(c: float, beta: float) -> float:
    w, p = _static_arrays(MODEL.defaults())
    return brentq(lambda wb: reservation_wage_equation(wb, w, p, c, beta), 0.0, 1e4, xtol=1e-12)


def test_beta_binomial_probabilities_sum_to_one():
    _, p = _static_arrays(MODEL.defaults())
    assert p.shape == (51,) and abs(p.sum() - 1) < 1e-12 and (p > 0).all()


@pytest.mark.parametrize("precision,tol", [("float32", 2e-3)])
def test_vfi_matches_the_reservation_wage_equation(precision, tol):
    c = np.array([10.0, 25.0, 25.0, 30.0])
    beta = np.array([0.9, 0.9, 0.99, 0.95])
    out = solve_points(MODEL, MODEL.defaults(), {"c": c, "beta": beta}, precision, batch_size=3)
    expected = np.array([scalar_reservation_wage(ci, bi) for ci, bi in zip(c, beta)])
    assert out["converged"].all()
    np.testing.assert_allclose(out["reservation_wage"], expected, rtol=tol)
    assert out["value"].shape == (4, 51)
    # the value is flat below the reservation wage and w/(1-β) above it
    w = _static_arrays(MODEL.defaults())[0]
    above = w > expected[2] + 1
    np.testing.assert_allclose(out["value"][2][above], w[above] / (1 - 0.99), rtol=1e-5)


def test_published_default_reservation_wage():
    # c = 25, β = 0.99 on the default offer distribution: the classic answer is about 47.3
    assert scalar_reservation_wage(25.0, 0.99) == pytest.approx(47.32, abs=0.05)
