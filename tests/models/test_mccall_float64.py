"""McCall in float64 (JAX's x64 mode is global, so this runs in its own process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import REPO


def test_float64_vfi_matches_equation_to_1e8():
    code = textwrap.dedent("""
        import numpy as np
        from scipy.optimize import brentq
        from hpc.models import get_model
        from hpc.models.mccall import _static_arrays, reservation_wage_equation
        from hpc.sweep.runner import configure_precision, solve_points
        configure_precision("float64")
        m = get_model("mccall")
        fixed = dict(m.defaults(), tol=1e-12)
        out = solve_points(m, fixed, {"c": np.array([25.0, 12.0]), "beta": np.array([0.99, 0.93])}, "float64", 8)
        w, p = _static_arrays(fixed)
        for i, (c, b) in enumerate([(25.0, 0.99), (12.0, 0.93)]):
            exact = brentq(lambda x: reservation_wage_equation(x, w, p, c, b), 0, 1e4, xtol=1e-13)
            assert out["reservation_wage"].dtype == np.float64
            assert abs(out["reservation_wage"][i] - exact) < 1e-8 * exact, (out["reservation_wage"][i], exact)
        assert out["converged"].all()
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
