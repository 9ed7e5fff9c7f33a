"""Arellano (2008): convergence, equilibrium shape, simulated moments, vmap and precision.

float64 needs JAX's x64 mode; ``jax.enable_x64`` switches it on only inside a ``with`` block, so
the rest of the session keeps the default float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from hpc.models import get_model
from hpc.models.arellano import stationary_distribution, tauchen

MODEL = get_model("arellano")
DYNAMIC = [p.name for p in MODEL.parameters if p.role == "dynamic"]
STATS = ("default_frequency", "mean_spread", "spread_volatility", "mean_debt_to_output")
# A small economy for the tests that solve several points; the defaults are 251 x 51.
SMALL = {"n_b": 101, "n_y": 15, "sim_periods": 20_000}
TINY = {"n_b": 61, "n_y": 9, "sim_periods": 10_000}


def static_of(dtype, **overrides):
    return MODEL.static_defaults(dtype, **overrides)


def dynamic_of(dtype, **overrides):
    values = dict(MODEL.defaults(), **overrides)
    return {name: jnp.asarray(values[name], dtype) for name in DYNAMIC}


@functools.cache
def compiled_solve(dtype, static_items):
    """jit(solve) for one set of static values, compiled once per test session."""
    static = static_of(dtype, **dict(static_items))
    return jax.jit(lambda d: MODEL.solve(d, static))


def solve_point(dtype, static_overrides=None, **dynamic_overrides):
    """One solve, as NumPy arrays (converted inside the x64 block when it is float64)."""
    solver = compiled_solve(dtype, tuple(sorted((static_overrides or {}).items())))
    out = solver(dynamic_of(dtype, **dynamic_overrides))
    return {k: np.asarray(v) for k, v in out.items()}


tauchen_jit = jax.jit(tauchen, static_argnums=(2, 3, 4))


@pytest.fixture(scope="module")
def default64():
    with jax.enable_x64(True):
        return solve_point(jnp.float64)


@pytest.fixture(scope="module")
def default32():
    return solve_point(jnp.float32)


def reference_tauchen(rho, sigma, n, n_std):
    """Tauchen's matrix written independently with scipy, in float64."""
    width = n_std * sigma / np.sqrt(1 - rho**2)
    x = np.linspace(-width, width, n)
    half = (x[1] - x[0]) / 2
    cut = np.concatenate([[-np.inf], (x[:-1] + half), [np.inf]])
    mean = rho * x[:, None]
    cdf = norm.cdf((cut[None, :] - mean) / sigma)
    return x, np.diff(cdf, axis=1)


# --- income process -----------------------------------------------------------------------------

def test_tauchen_matches_an_independent_construction():
    with jax.enable_x64(True):
        grid, transition = tauchen_jit(0.945, 0.025, 51, 3.0, jnp.float64)
        pi = np.asarray(jax.jit(stationary_distribution)(transition))
    x, p = reference_tauchen(0.945, 0.025, 51, 3.0)
    np.testing.assert_allclose(np.asarray(grid), x, atol=1e-14)
    np.testing.assert_allclose(np.asarray(transition), p, atol=1e-13)
    np.testing.assert_allclose(np.asarray(transition).sum(axis=1), 1, atol=1e-12)
    np.testing.assert_allclose(pi @ np.asarray(transition), pi, atol=1e-12)
    # the discretized chain keeps the AR(1)'s unconditional sd within a few percent
    sd = np.sqrt(pi @ x**2)
    assert sd == pytest.approx(0.025 / np.sqrt(1 - 0.945**2), rel=0.05)


def test_tauchen_float32_keeps_tail_masses():
    _, p32 = tauchen_jit(0.945, 0.025, 51, 3.0, jnp.float32)
    _, p = reference_tauchen(0.945, 0.025, 51, 3.0)
    big = p > 1e-30
    np.testing.assert_allclose(np.asarray(p32)[big], p[big], rtol=1e-3, atol=1e-7)


# --- the equilibrium at the defaults ------------------------------------------------------------

def test_converges_at_the_defaults_in_float64(default64):
    # The reference float64 implementation takes 399 iterations. This one starts from zero values
    # with u = (c^(1-γ) - 1)/(1-γ), whose fixed point lies nearer zero, and takes 309 (385 with
    # u = c^(1-γ)/(1-γ)).
    assert default64["converged"]
    assert default64["error"] <= 1e-8
    assert 250 <= default64["iterations"] <= 450
    assert default64["value_repay"].dtype == np.float64


def test_outputs_have_the_declared_shapes(default64):
    coords = MODEL.coords(static_of(jnp.float64))
    for output in MODEL.outputs:
        value = default64[output.name]
        assert value.shape == tuple(len(coords[d]) for d in output.dims), output.name
        kind = {"float": "f", "int": "i", "bool": "b"}[output.dtype]
        assert value.dtype.kind == kind, output.name
        if kind == "f":
            assert np.isfinite(value).all(), output.name
    assert coords["b"][0] == -0.45 and coords["b"][-1] == 0.45 and 0.0 in coords["b"]


def test_bond_price_is_bounded_and_falls_with_debt(default64):
    q = default64["bond_price"]
    r = MODEL.parameter("r").default
    assert q.min() >= 0 and q.max() <= 1 / (1 + r) + 1e-15
    # b' is assets: more debt is a lower b', so q is non-decreasing along b'
    assert (np.diff(q, axis=0) >= -1e-15).all()
    # saving is riskless, and lenders price enough of the deepest debt at zero
    b = MODEL.coords(static_of(jnp.float64))["b_next"]
    np.testing.assert_allclose(q[b >= 0], 1 / (1 + r), rtol=1e-14)
    assert (q[0] < 1e-6).any()


def test_default_is_likelier_with_more_debt_and_less_income(default64):
    d = default64["default_policy"].astype(int)  # (b, y_index), b from most debt to most assets
    assert (np.diff(d, axis=0) <= 0).all(), "default set must shrink as assets rise"
    assert (np.diff(d, axis=1) <= 0).all(), "default set must shrink as income rises"
    b = MODEL.coords(static_of(jnp.float64))["b"]
    assert not d[b >= 0].any(), "no default on positive assets"
    assert d[0, 0] == 1 and 0.05 < d.mean() < 0.6
    # the debt at which default starts is larger at higher income
    threshold = (d == 1).sum(axis=0)
    assert threshold[0] > threshold[-1]


def test_simulated_moments_near_arellano(default64):
    # Arellano (2008) reports a 3% annual default probability; this discretization gives about
    # 3.2% with 200,000 simulated quarters (sampling sd about 0.1 point). The band is wide
    # enough for other seeds, narrow enough to catch a wrong timing or annualization.
    assert 2.0 <= default64["default_frequency"] <= 4.5
    assert 2.0 <= default64["mean_spread"] <= 8.0
    assert 2.0 <= default64["spread_volatility"] <= 10.0
    assert 1.0 <= default64["mean_debt_to_output"] <= 10.0


def test_float32_agrees_with_float64(default32, default64):
    assert default32["converged"] and default32["value_repay"].dtype == np.float32
    assert default32["iterations"] < default64["iterations"]  # stops at its resolution floor
    assert np.abs(default32["bond_price"] - default64["bond_price"]).max() < 1e-5
    assert (default32["default_policy"] != default64["default_policy"]).mean() < 1e-3
    assert np.abs(default32["value_repay"] - default64["value_repay"]).max() < 1e-3
    # same draws (taken in float32 for both), so the moments differ only through the solution
    assert abs(default32["default_frequency"] - default64["default_frequency"]) < 0.05
    assert abs(default32["mean_spread"] - default64["mean_spread"]) < 0.05
    assert abs(default32["spread_volatility"] - default64["spread_volatility"]) < 0.05


# --- small economies: determinism, vmap, sweeps over the shock process ------------------------

def test_simulation_is_determined_by_the_seed():
    a = solve_point(jnp.float32, SMALL)
    b = solve_point(jnp.float32, SMALL)
    c = solve_point(jnp.float32, dict(SMALL, seed=1))
    for name in STATS:
        assert a[name] == b[name], name
    assert any(a[name] != c[name] for name in STATS)
    np.testing.assert_array_equal(a["bond_price"], c["bond_price"])


def test_vmap_matches_single_solves():
    # float64, so that rounding cannot move the stopping iteration between the two programs
    points = {
        "beta": np.array([0.953, 0.94, 0.96]),
        "gamma": np.array([2.0, 1.0, 3.0]),
        "rho": np.array([0.945, 0.9, 0.945]),
        "sigma_y": np.array([0.025, 0.03, 0.02]),
    }
    with jax.enable_x64(True):
        static = static_of(jnp.float64, **TINY)
        batch = {name: jnp.asarray(points.get(name, np.full(3, MODEL.parameter(name).default)), jnp.float64)
                 for name in DYNAMIC}
        batched = jax.jit(jax.vmap(lambda d: MODEL.solve(d, static)))(batch)
        batched = {k: np.asarray(v) for k, v in batched.items()}
        single = jax.jit(lambda d: MODEL.solve(d, static))
        singles = [{k: np.asarray(v) for k, v in single({n: x[i] for n, x in batch.items()}).items()}
                   for i in range(3)]
    for i, one in enumerate(singles):
        assert batched["iterations"][i] == one["iterations"]
        for name in ("value_repay", "value_default", "bond_price", "log_income", *STATS):
            np.testing.assert_allclose(batched[name][i], one[name], rtol=1e-10, atol=1e-12, err_msg=name)
        np.testing.assert_array_equal(batched["default_policy"][i], one["default_policy"])
    # rho and sigma_y are dynamic: each point carries its own income grid
    assert not np.allclose(batched["log_income"][0], batched["log_income"][1])
    assert batched["converged"].all()


def test_log_utility_and_calmer_income_are_solved():
    log_case = solve_point(jnp.float32, SMALL, gamma=1.0)
    assert log_case["converged"] and np.isfinite(log_case["value_repay"]).all()
    calm = solve_point(jnp.float32, SMALL, sigma_y=0.01)
    assert calm["converged"]
    # with less income risk the stationary income grid is narrower
    assert np.ptp(calm["log_income"]) < np.ptp(log_case["log_income"])


def test_iteration_cap_is_reported_as_not_converged():
    capped = solve_point(jnp.float32, dict(TINY, max_iter=5))
    assert capped["iterations"] == 5 and not capped["converged"] and capped["error"] > 1e-3


def test_registered_with_the_house_interface():
    assert MODEL.name == "arellano"
    roles = {p.name: p.role for p in MODEL.parameters}
    assert roles["n_y"] == roles["n_b"] == "shape"
    assert all(roles[n] == "dynamic" for n in ("beta", "gamma", "r", "rho", "sigma_y", "theta", "default_cost"))
    assert {"iterations", "error", "converged"} <= {o.name for o in MODEL.outputs}
