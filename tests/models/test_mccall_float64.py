"""McCall in float64 (JAX's x64 mode is global, so this runs in its own process).

Against the scalar reservation-wage equation to 1e-8, and the classic 625-point sweep (c over
linspace(10, 30, 25), β over linspace(0.9, 0.99, 25)) against the figures QuantEcon's lecture
"Job Search I: The McCall Search Model" (Julia edition) checks its code against: minimum
40.39579058732559, maximum 47.69960582438523, and 41.15851842606614 at c[3], β[3] (0-based).
Those come from iterations stopped at a change of 1e-6 in v, so agree to β² 1e-6 < 1e-6.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import REPO


def test_float64_vfi_matches_equation_to_1e8_and_the_lecture_sweep():
    code = textwrap.dedent("""
        import numpy as np
        from scipy.optimize import brentq
        from hpc.models import get_model
        from hpc.models.mccall import _static_arrays, reservation_wage_equation
        from hpc.sweep.runner import configure_precision, solve_points
        configure_precision("float64")
        m = get_model("mccall")
        fixed = dict(m.defaults(), tol=1e-12)
        w, p = _static_arrays(fixed)
        exact = lambda c, b: brentq(lambda x: reservation_wage_equation(x, w, p, c, b), 0, 1e4, xtol=1e-13)
        c, beta = (a.ravel() for a in np.meshgrid(np.linspace(10, 30, 25), np.linspace(0.9, 0.99, 25), indexing="ij"))
        out = solve_points(m, fixed, {"c": c, "beta": beta}, "float64", 125)
        assert out["reservation_wage"].dtype == np.float64 and out["converged"].all()
        wage = out["reservation_wage"]
        for i in (0, 3 * 25 + 3, 12 * 25 + 24, 624):
            want = exact(c[i], beta[i])
            assert abs(wage[i] - want) < 1e-8 * want, (i, wage[i], want)
        grid = wage.reshape(25, 25)
        for got, published in ((grid.min(), 40.39579058732559), (grid.max(), 47.69960582438523),
                               (grid[3, 3], 41.15851842606614)):
            assert abs(got - published) < 1e-6, (got, published)
        # the reservation wage rises with patience and with compensation
        assert (np.diff(grid, axis=0) > 0).all() and (np.diff(grid, axis=1) > 0).all()
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
