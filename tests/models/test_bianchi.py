"""Bianchi (2011): the paper's statistics, the policy's shape, precision, determinism, vmap and jit.

The validation bands are checked at the paper's calibration with the paper's shocks on n_b = 400
bond points and an 80,000-period simulation, in float32. At that size the statistics have settled
in the grid (n_b = 100 and 800 give the same first decimals) and in the seed (the standard
deviation across seeds is about 0.07 percentage points for the DE crisis probability).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO

from hpc.models import bianchi, get_model
from hpc.models.shocks import (
    chain_moments,
    stationary_distribution,
    unconditional_covariance,
)
from hpc.sweep.runner import solve_points

MODEL = get_model("bianchi")
STATS = ("crisis_probability", "crisis_probability_own_sd", "constraint_binding_frequency",
         "grid_bound_frequency", "mean_debt_to_gdp", "crisis_consumption_drop", "crisis_rer_depreciation")


def static_values(**overrides) -> dict:
    return MODEL.static_defaults(jnp.float32, **overrides)


def dynamic_values(dtype=jnp.float32, **overrides) -> dict:
    return MODEL.dynamic_defaults(dtype, **overrides)


def as_numpy(out) -> dict:
    return {k: np.asarray(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def paper():
    """DE and SP at the paper's calibration, n_b = 400, 80,000 periods, float32."""
    results = {}
    for case, planner in (("DE", False), ("SP", True)):
        static = static_values(planner=planner, n_b=400)
        results[case] = as_numpy(jax.jit(lambda d, s=static: MODEL.solve(d, s))(dynamic_values()))
    return results


# --- shocks ------------------------------------------------------------------------------------


def test_shock_process_is_a_reproducible_tauchen_hussey_chain():
    y_T, y_N, P = bianchi.shock_process("paper")
    assert y_T.shape == y_N.shape == (16,) and P.shape == (16, 16)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-12)
    assert (P > 0).all()
    # y_T takes 4 values (first quadrature coordinate), in blocks of 4 states
    assert len(np.unique(np.round(y_T, 12))) == 4 and np.all(np.diff(y_T.reshape(4, 4), axis=1) == 0)
    # the chain reproduces the VAR's moments: σ(log y_T) = 5.8%, σ(log y_N) = 5.7%, correlation 0.82
    mean, cov, autocov = chain_moments(np.log(np.c_[y_T, y_N]), P)
    target = unconditional_covariance(*bianchi.PAPER_VAR)
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), np.sqrt(np.diag(target)), rtol=0.05)
    corr = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])
    assert abs(corr - 0.823) < 0.03
    assert abs(stationary_distribution(P) @ P - stationary_distribution(P)).max() < 1e-12
    # exact, not simulated: the same numbers on every call
    again = bianchi.shock_process.__wrapped__("paper")
    for a, b in zip((y_T, y_N, P), again):
        np.testing.assert_array_equal(a, b)
    y_T2, y_N2, P2 = bianchi.shock_process("teaching")
    assert P2.shape == (16, 16) and not np.allclose(y_N2, y_N)


# --- the paper's table ------------------------------------------------------------------------


def test_paper_calibration_matches_the_paper(paper):
    de, sp = paper["DE"], paper["SP"]
    assert de["converged"] and sp["converged"]
    assert de["grid_bound_frequency"] == 0 and sp["grid_bound_frequency"] == 0  # b_min never binds
    assert 4.0 <= de["crisis_probability"] <= 7.0  # paper 5.5%
    assert sp["crisis_probability"] < 1.5  # paper 0.4%
    assert 27.0 <= de["mean_debt_to_gdp"] <= 31.0  # paper 29.2%
    assert 27.0 <= sp["mean_debt_to_gdp"] <= 31.0  # paper 28.6%
    assert sp["mean_debt_to_gdp"] <= de["mean_debt_to_gdp"]  # the planner borrows less
    # crises are deeper without regulation (paper: consumption -16.7% vs -10.1%, RER 19.2% vs 1.1%)
    assert de["crisis_consumption_drop"] < sp["crisis_consumption_drop"] < 0
    assert de["crisis_rer_depreciation"] > sp["crisis_rer_depreciation"] > 0
    assert sp["constraint_binding_frequency"] < de["constraint_binding_frequency"]
    # in the DE the reference volatility is its own
    assert de["crisis_probability_own_sd"] == de["crisis_probability"]


def test_policy_shape(paper):
    """c_T rises with b everywhere; b' rises with b where the constraint is slack and falls where it
    binds (more wealth, higher p_N, more collateral). The planner's value rises with b and is at
    least the decentralized one (the DE allocation is feasible for the planner). The DE value
    need not rise with b where the constraint binds: the extra collateral is overborrowed."""
    p = bianchi.BianchiParams(*(np.float64(MODEL.parameter(k).default) for k in bianchi.BianchiParams._fields))
    b = bianchi.bond_grid(static_values(n_b=400))
    y_T, y_N, _ = bianchi.shock_process("paper")
    for case in ("DE", "SP"):
        b_next = paper[case]["bond_policy"].astype(np.float64)
        c_T = (1 + p.r) * b[:, None] + y_T[None, :] - b_next
        assert (c_T > 0).all()
        assert (np.diff(c_T, axis=0) > -1e-5).all()
        limit = -p.kappa * (y_T + bianchi.price_nontradable(c_T, y_N, p) * y_N)
        assert (b_next >= limit - 1e-4).all()  # the credit constraint holds
        assert (b_next >= b[0] - 1e-6).all() and (b_next <= b[-1] + 1e-6).all()
        binds = b_next - limit < 1e-5
        step = np.diff(b_next, axis=0)
        slack_pairs = ~binds[1:] & ~binds[:-1]
        bind_pairs = binds[1:] & binds[:-1]
        assert slack_pairs.sum() > 1000 and bind_pairs.sum() > 10
        assert (step[slack_pairs] > -1e-5).all()
        assert (step[bind_pairs] < 1e-5).all()
    assert (np.diff(paper["SP"]["value"], axis=0) > 0).all()
    assert (paper["SP"]["value"] >= paper["DE"]["value"] - 1e-5).all()


@pytest.fixture(scope="module")
def small_planner():
    """A planner on a small grid and a short simulation, jitted once."""
    static = static_values(planner=True, n_b=100, sim_periods=5_000)
    return static, jax.jit(lambda d: MODEL.solve(d, static))


# --- against a brute-force planner --------------------------------------------------------------


def planner_by_value_iteration(n_b: int, tol=1e-6, max_iter=3000):
    """SP by plain value iteration over every (b, b') pair (float32), b' on the grid."""
    p = bianchi.BianchiParams(*dynamic_values().values())
    b = jnp.asarray(bianchi.bond_grid(static_values(n_b=n_b)), jnp.float32)
    y_T, y_N, P = (jnp.asarray(x, jnp.float32) for x in bianchi.shock_process("paper"))
    c_T = (1 + p.r) * b[:, None, None] + y_T - b[None, :, None]  # (b, b', s)
    c_pos = jnp.maximum(c_T, 1e-6)
    limit = -p.kappa * (y_T + bianchi.price_nontradable(c_pos, y_N, p) * y_N)
    feasible = (c_T > 0) & (b[None, :, None] >= limit)
    reward = jnp.where(feasible, bianchi.utility(bianchi.composite(c_pos, y_N, p), p), -1e10)

    @jax.jit  # arrays as arguments, not as constants baked into the loop
    def iterate(reward, P, beta):
        def body(state):
            v, _, it = state
            v_new = jnp.max(reward + beta * (v @ P.T)[None], axis=1)
            return v_new, jnp.max(jnp.abs(v_new - v)), it + 1

        v, _, _ = jax.lax.while_loop(lambda s: (s[1] > tol) & (s[2] < max_iter), body,
                                     (jnp.zeros((n_b, 16), jnp.float32), jnp.float32(jnp.inf), 0))
        return jnp.argmax(reward + beta * (v @ P.T)[None], axis=1)

    policy = iterate(reward, P, p.beta)
    return np.asarray(b[policy]), float(b[1] - b[0])


def test_planner_agrees_with_brute_force_value_iteration(small_planner):
    static, single = small_planner
    ours = single(dynamic_values())
    brute, step = planner_by_value_iteration(static["n_b"])
    gap = np.abs(np.asarray(ours["bond_policy"]) - brute) / step
    # a grid-restricted choice is within a grid step of the continuous one
    assert gap.max() <= 1.5 and gap.mean() <= 0.5, (gap.max(), gap.mean())


# --- precision, determinism, vmap, jit ------------------------------------------------------------


def test_float64_agrees_with_float32(paper, tmp_path):
    """float64 in its own process (x64 is global). The shock path is the same in both precisions."""
    target = tmp_path / "f64.npz"
    code = textwrap.dedent(f"""
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp, numpy as np
        from hpc.models.bianchi import MODEL
        out = {{}}
        for case, planner in (("DE", False), ("SP", True)):
            static = MODEL.static_defaults(jnp.float64, planner=planner, n_b=400, tol=1e-8)
            dyn = MODEL.dynamic_defaults(jnp.float64)
            res = jax.jit(lambda d: MODEL.solve(d, static))(dyn)
            assert res["bond_policy"].dtype == jnp.float64
            for k, v in res.items():
                out[case + "/" + k] = np.asarray(v)
        np.savez({str(target)!r}, **out)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    f64 = np.load(target)
    for case in ("DE", "SP"):
        assert f64[f"{case}/converged"]
        # float32 stops when the bond policy moves by less than tol = 1e-5 (about 6e-6 apart here)
        gap = np.abs(f64[f"{case}/bond_policy"] - paper[case]["bond_policy"]).max()
        assert gap < 2e-5, gap
        np.testing.assert_allclose(paper[case]["value"], f64[f"{case}/value"], rtol=1e-5)
        for k in STATS:  # the same shock path in both precisions: statistics agree to 1e-4 here
            assert abs(float(f64[f"{case}/{k}"]) - float(paper[case][k])) < 0.01, (case, k)


def test_same_seed_same_statistics(paper):
    static = static_values(planner=False, n_b=400)
    again = as_numpy(jax.jit(lambda d: MODEL.solve(d, static))(dynamic_values()))
    for k in (*STATS, "bond_policy", "value"):
        np.testing.assert_array_equal(again[k], paper["DE"][k])


def test_vmapped_sweep_equals_single_solves(small_planner):
    static, single = small_planner
    swept = {"kappa": np.array([0.30, 0.32, 0.34]), "beta": np.array([0.90, 0.91, 0.92])}
    fixed = {k: v for k, v in static.items() if k != "dtype"}
    fixed.update({p.name: p.default for p in MODEL.parameters if p.role == "dynamic"})
    batched = solve_points(MODEL, fixed, swept, "float32", batch_size=2)  # the runner's jit(vmap)
    assert batched["bond_policy"].shape == (3, 100, 16) and batched["converged"].all()
    for i in range(3):
        one = as_numpy(single(dynamic_values(kappa=swept["kappa"][i], beta=swept["beta"][i])))
        # identical on CPU; the tolerance leaves room for other fusion on other backends
        np.testing.assert_allclose(batched["bond_policy"][i], one["bond_policy"], atol=1e-6)
        np.testing.assert_allclose(batched["value"][i], one["value"], rtol=1e-6)
        assert batched["iterations"][i] == one["iterations"]
        for k in STATS:
            np.testing.assert_allclose(batched[k][i], one[k], atol=1e-4, err_msg=k)
    # more collateral, more borrowing
    assert np.all(np.diff(batched["mean_debt_to_gdp"]) > 0)


def test_new_dynamic_values_do_not_recompile(small_planner):
    _, single = small_planner
    single(dynamic_values(kappa=0.31))
    before = single._cache_size()
    out = single(dynamic_values(kappa=0.33, beta=0.905, sigma=2.5, eta=0.3, omega=0.33, r=0.035))
    assert single._cache_size() == before == 1
    assert bool(out["converged"])


def test_teaching_shocks_solve():
    static = static_values(shocks="teaching", n_b=200, sim_periods=20_000)
    out = jax.jit(lambda d: MODEL.solve(d, static))(dynamic_values(kappa=0.3235))
    assert bool(out["converged"])
    assert 0 < float(out["crisis_probability"]) < 15 and 15 < float(out["mean_debt_to_gdp"]) < 40
    assert MODEL.coords(static)["b"].shape == (200,) and MODEL.coords(static)["y"].shape == (16,)
