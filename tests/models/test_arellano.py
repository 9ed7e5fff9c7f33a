"""Arellano (2008) against independent computations.

- The equilibrium: a brute-force value function iteration of the same equations, written here
  in NumPy on small grids (every (b, y, b') candidate each iteration, q priced off the default
  set), with its own Tauchen matrix (scipy) and stationary distribution (eigenvector).
- The simulated statistics: the economy simulated here, quarter by quarter, from the brute-force
  solution and the same uniform draws.
- At the defaults: the bond price a public JAX version of the model gives with the same two
  readings of the paper, and the paper's default frequency.
- Properties Arellano proves (default sets shrink with assets and with income; risk-free
  saving), the precision bounds of float32 against float64, vmap, seeds and compilation.

float64 needs JAX's x64 mode; ``jax.enable_x64`` switches it on only inside a ``with`` block, so
the rest of the session keeps the default float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from scipy.stats import norm

from hpc.models import arellano, get_model

MODEL = get_model("arellano")
DYNAMIC = [p.name for p in MODEL.parameters if p.role == "dynamic"]
STATS = ("default_frequency", "mean_spread", "spread_volatility", "mean_debt_to_output")
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


@pytest.fixture(scope="module")
def default64():
    with jax.enable_x64(True):
        return solve_point(jnp.float64)


@pytest.fixture(scope="module")
def default32():
    return solve_point(jnp.float32)


# --- a brute-force solution of the same equations ----------------------------------------------


def scipy_tauchen(rho, sigma, n, n_std):
    width = n_std * sigma / np.sqrt(1 - rho**2)
    x = np.linspace(-width, width, n)
    cuts = np.concatenate([[-np.inf], (x[:-1] + x[1:]) / 2, [np.inf]])
    return x, np.diff(norm.cdf((cuts[None, :] - rho * x[:, None]) / sigma), axis=1)


def crra(c, gamma):
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.log(c) if gamma == 1 else (c ** (1 - gamma) - 1) / (1 - gamma)
    return np.where(c > 0, u, -np.inf)


def brute_force(static, values, tol, max_iter=100_000):
    """Arellano's equilibrium by plain value iteration, in float64 NumPy.

    From v_c = v_d = 0 and q = 1/(1+r), each iteration computes, with v = max(v_c, v_d),

        v_c(b, y) = max over all b' of u(y + b - q(b', y) b') + β Σ P(y, y') v(b', y'),
        v_d(y)    = u(h(y)) + β Σ P(y, y') [θ v(0, y') + (1 - θ) v_d(y')],
        q(b', y)  = Σ P(y, y') [1 - d(b', y')] / (1 + r),  d = 1 where v_d > v_c (the new ones),

    h(y) = min(κ E[y], y) with E[y] under the chain's stationary distribution, until the largest
    change of (v_c, v_d, q) is at most ``tol`` or after ``max_iter`` iterations.
    """
    b = np.linspace(static["b_min"], static["b_max"], static["n_b"])
    log_y, P = scipy_tauchen(values["rho"], values["sigma_y"], static["n_y"], static["tauchen_m"])
    y = np.exp(log_y)
    eigenvalues, left = scipy.linalg.eig(P, left=True, right=False)
    pi = np.real(left[:, np.argmin(np.abs(eigenvalues - 1))])
    pi /= pi.sum()
    h = np.minimum(values["default_cost"] * (pi @ y), y)
    zero = int(np.argmin(np.abs(b)))
    beta, gamma, r, theta = (values[k] for k in ("beta", "gamma", "r", "theta"))

    v_c, v_d, q = np.zeros((len(b), len(y))), np.zeros(len(y)), np.full((len(b), len(y)), 1 / (1 + r))
    for iteration in range(1, max_iter + 1):
        v = np.maximum(v_c, v_d[None, :])
        expected = v @ P.T  # (b', y): Σ_y' P(y, y') v(b', y')
        consumption = y[None, None, :] + b[:, None, None] - (q * b[:, None])[None, :, :]  # (b, b', y)
        objective = crra(consumption, gamma) + beta * expected[None, :, :]
        new_v_c = objective.max(axis=1)
        new_v_d = crra(h, gamma) + beta * P @ (theta * v[zero] + (1 - theta) * v_d)
        default = new_v_d[None, :] > new_v_c
        new_q = (~default) @ P.T / (1 + r)
        change = max(np.abs(new_v_c - v_c).max(), np.abs(new_v_d - v_d).max(), np.abs(new_q - q).max())
        v_c, v_d, q = new_v_c, new_v_d, new_q
        if change <= tol:
            break
    v = np.maximum(v_c, v_d[None, :])
    consumption = y[None, None, :] + b[:, None, None] - (q * b[:, None])[None, :, :]
    policy = (crra(consumption, gamma) + beta * (v @ P.T)[None, :, :]).argmax(axis=1)
    return {"value_repay": v_c, "value_default": v_d, "bond_price": q, "default_policy": v_d[None, :] > v_c,
            "borrowing_policy": policy, "iterations": iteration, "log_income": log_y, "bond_grid": b,
            "income": y, "zero_debt": zero}


# Static grids (one compile each) and the parameter points solved on them.
BRUTE_TOL = 1e-10
BRUTE_CASES = [
    ({"n_b": 41, "n_y": 9}, {}),
    ({"n_b": 41, "n_y": 9}, {"gamma": 1.0, "theta": 0.1, "rho": 0.9, "sigma_y": 0.035}),  # log utility
    ({"n_b": 61, "n_y": 11}, {"beta": 0.94, "r": 0.01, "default_cost": 0.95}),
]


@pytest.fixture(scope="module", params=range(len(BRUTE_CASES)),
                ids=["defaults-41x9", "log-utility-41x9", "other-point-61x11"])
def brute_case(request):
    grid, point = BRUTE_CASES[request.param]
    static_overrides = dict(grid, tol=BRUTE_TOL, sim_periods=20_000, sim_burn_in=100)
    with jax.enable_x64(True):
        ours = solve_point(jnp.float64, static_overrides, **point)
    values = dict(MODEL.defaults(), **point)
    return ours, brute_force(static_of(jnp.float64, **static_overrides), values, BRUTE_TOL), values, static_overrides


def test_equilibrium_is_the_brute_force_fixed_point(brute_case):
    ours, brute, values, _ = brute_case
    assert ours["converged"]
    # Same start and same update: the two stop at the same iteration (±1 where rounding moves
    # the last change across the tolerance).
    assert abs(int(ours["iterations"]) - brute["iterations"]) <= 1
    np.testing.assert_allclose(ours["log_income"], brute["log_income"], rtol=0, atol=1e-15)
    # The default sets agree, hence q up to the rounding of a sum of n_y probabilities.
    np.testing.assert_array_equal(ours["default_policy"], brute["default_policy"])
    np.testing.assert_allclose(ours["bond_price"], brute["bond_price"], rtol=0, atol=1e-12)
    # Each stops with a last change ≤ tol, so lies within β/(1-β) tol of the fixed point
    # (a contraction of modulus β); the two are within twice that of each other.
    bound = 2 * values["beta"] / (1 - values["beta"]) * BRUTE_TOL
    np.testing.assert_allclose(ours["value_repay"], brute["value_repay"], rtol=0, atol=bound)
    np.testing.assert_allclose(ours["value_default"], brute["value_default"], rtol=0, atol=bound)
    # not a trivial economy: the country defaults somewhere and prices some debt below 1/(1+r)
    assert ours["default_policy"].any() and not ours["default_policy"].all()
    assert (ours["bond_price"] < 0.99 / (1 + values["r"])).any()


def test_every_iterate_is_the_brute_force_iterate():
    """The solver keeps u(y + b - q b') from step to step and computes it again only after a step
    that moved q. Stopped by the cap while q still moves (3, 12 steps on this grid) and after it
    has settled (40), it holds the brute force's iterate of that step: a utility kept one step
    too long, or never refreshed, gives another q and other values."""
    for steps in (3, 12, 40):
        static = static_of(jnp.float64, n_b=41, n_y=9)
        with jax.enable_x64(True):
            dynamic = dynamic_of(jnp.float64)

            def capped(d):
                params = arellano.params_from(d)
                return arellano.solve_equilibrium(arellano.make_economy(params, static), params, 0.0, steps)

            eq, _, iterations = jax.tree.map(np.asarray, jax.jit(capped)(dynamic))
        brute = brute_force(static, MODEL.defaults(), 0.0, max_iter=steps)
        assert int(iterations) == brute["iterations"] == steps
        np.testing.assert_allclose(eq.bond_price, brute["bond_price"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(eq.value_repay, brute["value_repay"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(eq.value_default, brute["value_default"], rtol=0, atol=1e-12)


def test_q_still_moves_in_the_first_capped_steps():
    """What the test above needs: on its grid q changes between step 3 and step 12 and not after 40
    (the brute force alone)."""
    static = static_of(jnp.float64, n_b=41, n_y=9)
    q = {k: brute_force(static, MODEL.defaults(), 0.0, max_iter=k)["bond_price"] for k in (3, 12, 40, 80)}
    assert np.abs(q[12] - q[3]).max() > 1e-3
    np.testing.assert_array_equal(q[40], q[80])


def simulate_by_hand(brute, values, chain_transition, seed, quarters, burn_in):
    """The economy simulated quarter by quarter, as the model's docstring describes it.

    Start: median income state, zero debt, good standing. Each quarter an excluded country
    re-enters with zero debt when the first uniform is below θ; a country with market access
    defaults where d(b, y) (and is excluded), or else borrows b'(b, y). Income moves by the
    inverse CDF of the second uniform on the float32 chain matrix.
    """
    draws = np.asarray(jax.random.uniform(jax.random.PRNGKey(seed), (quarters, 2), jnp.float32))
    cdf = np.cumsum(np.asarray(chain_transition, np.float32), axis=1, dtype=np.float32)
    r, theta = values["r"], values["theta"]
    b_grid, income, zero = brute["bond_grid"], brute["income"], brute["zero_debt"]
    y, b, excluded = len(income) // 2, zero, False
    defaults, spreads, ratios = 0, [], []
    for t in range(quarters):
        if excluded and draws[t, 0] < theta:
            excluded, b = False, zero
        counted = t >= burn_in
        if not excluded and brute["default_policy"][b, y]:
            excluded, b = True, zero
            defaults += counted
        elif not excluded:
            b = brute["borrowing_policy"][b, y]
            if counted:
                ratios.append(-b_grid[b] / income[y])
                if b_grid[b] < 0:
                    spreads.append(100 * ((1 / brute["bond_price"][b, y]) ** 4 - (1 + r) ** 4))
        else:
            b = zero
        y = min(int(np.sum(cdf[y] < draws[t, 1])), len(income) - 1)
    periods = quarters - burn_in
    return {"default_frequency": 100 * 4 * defaults / periods, "mean_spread": np.mean(spreads),
            "spread_volatility": np.std(spreads), "mean_debt_to_output": 100 * np.mean(ratios)}


def test_simulated_statistics_match_a_simulation_by_hand(brute_case):
    ours, brute, values, static_overrides = brute_case
    static = static_of(jnp.float64, **static_overrides)
    # the income chain is the model's own float32 matrix (input data; its sampling is tested in
    # tests/models/test_shocks.py)
    params = arellano.ArellanoParams(*(np.float32(values[k]) for k in arellano.ArellanoParams._fields))
    chain = arellano.make_economy(params, static_of(jnp.float32, **static_overrides)).chain_transition
    by_hand = simulate_by_hand(brute, values, chain, static["seed"], static["sim_burn_in"] + static["sim_periods"],
                               static["sim_burn_in"])
    assert by_hand["default_frequency"] > 0
    for name in STATS:
        np.testing.assert_allclose(ours[name], by_hand[name], rtol=1e-9, err_msg=name)


# --- the defaults: published figures --------------------------------------------------------------


def test_bond_price_matches_the_teaching_code_at_the_defaults(default64):
    """QuantEcon's JAX lecture on Arellano's model ("Default Risk and Income Fluctuations"), with
    E[y] taken under the stationary distribution and re-entry at b = 0 as here, gives
    q = 0.56320 at b index 100, y index 25 (251 x 51 grid); with the grid mean of y it gives
    0.42008, so this also pins the reading of E[y]."""
    assert default64["converged"] and default64["error"] <= 1e-8
    assert default64["bond_price"][100, 25] == pytest.approx(0.56320, abs=5e-6)


def test_default_frequency_near_arellano(default64):
    # Arellano (2008) reports a 3% annual default probability. Over 200,000 simulated quarters
    # the sampling sd of this statistic is about 0.1 point (seeds 0-4), so 3 ± 0.5 allows five.
    assert default64["default_frequency"] == pytest.approx(3.0, abs=0.5)


# --- the theory's properties -----------------------------------------------------------------------


def test_bond_price_is_bounded_and_falls_with_debt(default64):
    q = default64["bond_price"]
    r = MODEL.parameter("r").default
    assert q.min() >= 0 and q.max() <= 1 / (1 + r) + 1e-15
    # b' is assets: more debt is a lower b', so q is non-decreasing along b' (default sets shrink
    # with assets, Arellano 2008, Proposition 3)
    assert (np.diff(q, axis=0) >= -1e-15).all()
    # saving is riskless (no default on positive assets), and the deepest debt is priced at zero
    b = MODEL.coords(static_of(jnp.float64))["b_next"]
    np.testing.assert_allclose(q[b >= 0], 1 / (1 + r), rtol=1e-14)
    assert (q[0] < 1e-6).any()


def test_default_is_likelier_with_more_debt_and_less_income(default64):
    d = default64["default_policy"].astype(int)  # (b, y_index), b from most debt to most assets
    assert (np.diff(d, axis=0) <= 0).all(), "default set must shrink as assets rise"
    assert (np.diff(d, axis=1) <= 0).all(), "default set must shrink as income rises"
    b = MODEL.coords(static_of(jnp.float64))["b"]
    assert not d[b >= 0].any(), "no default on positive assets"
    # the debt at which default starts is larger at higher income
    threshold = (d == 1).sum(axis=0)
    assert threshold[0] > threshold[-1]


def test_outputs_have_the_declared_shapes(default64):
    coords = MODEL.coords(static_of(jnp.float64))
    for output in MODEL.outputs:
        value = default64[output.name]
        assert value.shape == tuple(len(coords[d]) for d in output.dims), output.name
        kind = {"float": "f", "int": "i", "bool": "b"}[output.dtype]
        assert value.dtype.kind == kind, output.name
        if kind == "f":
            assert np.isfinite(value).all(), output.name


# --- float32 against float64 ---------------------------------------------------------------------


def test_float32_agrees_with_float64_within_its_stopping_bound(default32, default64):
    beta = MODEL.parameter("beta").default
    eps32 = np.finfo(np.float32).eps
    scale = np.abs(default64["value_repay"]).max()
    assert default32["converged"] and default32["value_repay"].dtype == np.float32
    # float32 cannot resolve an absolute 1e-8: it stops at its floor of 4 ulps of max |v_c|
    assert 1e-8 < default32["error"] <= 4 * eps32 * np.abs(default32["value_repay"]).max()
    # Stopped with a last change ≤ 4 ulps, float32 lies within β/(1-β) of that of its fixed
    # point, and its own rounding (an ulp or two per step) adds up to 2 ulps / (1-β).
    bound = (4 * beta + 2) * eps32 * scale / (1 - beta)
    assert np.abs(default32["value_repay"] - default64["value_repay"]).max() < bound
    assert np.abs(default32["value_default"] - default64["value_default"]).max() < bound
    # a default decision may differ only where the two values are that close in float64
    differs = default32["default_policy"] != default64["default_policy"]
    gap = np.abs(default64["value_repay"] - default64["value_default"][None, :])
    assert (gap[differs] < 2 * bound).all()
    # where the default sets of every y' agree, q differs by the float32 rounding of a sum of
    # n_y probabilities
    same_rows = ~differs.any(axis=1)
    n_y = default64["bond_price"].shape[1]
    assert np.abs(default32["bond_price"] - default64["bond_price"])[same_rows].max() <= n_y * eps32


def test_float32_and_float64_see_the_same_income_path():
    """At the defaults (51 states, 201,000 quarters). With a CDF in each solve's precision, as
    this model had, the two paths differed in 19 and 32 quarters at seeds 0 and 1."""
    def path(dtype, seed):
        static = static_of(dtype)
        quarters = static["sim_burn_in"] + static["sim_periods"]
        run = jax.jit(lambda d: arellano.simulated_income(arellano.make_economy(arellano.params_from(d), static),
                                                          arellano.simulation_draws(seed, quarters)))
        return np.asarray(run(dynamic_of(dtype)))

    for seed in (0, 1):
        path32 = path(jnp.float32, seed)
        with jax.enable_x64(True):
            path64 = path(jnp.float64, seed)
        assert path32.shape == (201_000,)
        np.testing.assert_array_equal(path32, path64)


# --- determinism, vmap, compilation, the iteration cap ------------------------------------------


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


@pytest.mark.parametrize("batching", ["map", "lockstep"])
def test_both_batchings_match_single_solves(batching):
    """Under vmap the points run one after the other ("map", a CPU's default) or together until
    the slowest stops ("lockstep", an accelerator's); either way each point stops at its own
    iteration with its own equilibrium. The points stop at different iterations and move q at
    different steps, so a point that kept going, or a utility refreshed for one point only in
    another's step, would show. Also batched over one parameter only (the others broadcast)."""
    betas = np.array([0.94, 0.953, 0.96])
    gammas = np.array([2.0, 1.0, 3.0])

    def equilibrium(static, d):
        params = arellano.params_from(d)
        econ = arellano.make_economy(params, static)
        return arellano.solve_equilibrium(econ, params, static["tol"], static["max_iter"], batching)

    with jax.enable_x64(True):
        static = static_of(jnp.float64, **TINY)
        base = dynamic_of(jnp.float64)
        batch = dict({n: jnp.full(3, x) for n, x in base.items()}, beta=jnp.asarray(betas), gamma=jnp.asarray(gammas))
        batched = jax.jit(jax.vmap(functools.partial(equilibrium, static)))(batch)
        beta_only = jax.jit(jax.vmap(functools.partial(equilibrium, static),
                                     in_axes=({n: (0 if n == "beta" else None) for n in DYNAMIC},)))(
            dict(base, beta=jnp.asarray(betas)))
        single = jax.jit(functools.partial(equilibrium, static))
        for run, gamma_of in ((batched, gammas), (beta_only, np.full(3, 2.0))):
            (eq, error, iterations) = jax.tree.map(np.asarray, run)
            its = []
            for i in range(3):
                one_eq, one_error, one_it = jax.tree.map(
                    np.asarray, single(dict(base, beta=jnp.float64(betas[i]), gamma=jnp.float64(gamma_of[i]))))
                its.append(int(one_it))
                assert iterations[i] == one_it and error[i] <= 1e-8
                for got, want in zip(eq, one_eq):
                    np.testing.assert_allclose(got[i], want, rtol=0, atol=1e-12)
            assert len(set(its)) == 3


def test_unknown_batching_is_refused():
    with pytest.raises(ValueError, match="batching must be one of"):
        arellano.solve_equilibrium(None, None, 1e-6, 10, "serial")


def test_new_income_processes_do_not_recompile():
    """ρ and σ_y are dynamic: a sweep over the income process compiles once."""
    static = static_of(jnp.float32, **TINY)
    single = jax.jit(lambda d: MODEL.solve(d, static))
    first = single(dynamic_of(jnp.float32))
    second = single(dynamic_of(jnp.float32, rho=0.9, sigma_y=0.04, gamma=1.0))
    assert single._cache_size() == 1
    assert bool(first["converged"]) and bool(second["converged"])
    assert np.ptp(np.asarray(second["log_income"])) != np.ptp(np.asarray(first["log_income"]))


def test_iteration_cap_is_reported_as_not_converged():
    capped = solve_point(jnp.float32, dict(TINY, max_iter=5))
    assert capped["iterations"] == 5 and not capped["converged"] and capped["error"] > 1e-3
