"""Arellano (2008) sovereign default with one-period debt.

A small open economy receives an endowment y whose log follows an AR(1),
log y' = ρ log y + σ_y ε, discretized by Tauchen on n_y points with transition matrix P
(``hpc.models.shocks.tauchen``). The
government holds one-period bonds b (b < 0 is debt) on a grid, and each period either repays
or defaults. Foreign lenders are risk neutral and price a bond that promises one unit next
period at

    q(b', y) = (1 - δ(b', y)) / (1 + r),    δ(b', y) = Σ_y' P(y, y') d(b', y'),

where d(b, y) = 1 when default is chosen. The values of repaying and of defaulting are

    v_c(b, y) = max_b'  u(y + b - q(b', y) b') + β Σ_y' P(y, y') v(b', y'),
    v_d(y)    = u(h(y)) + β Σ_y' P(y, y') [θ v(0, y') + (1 - θ) v_d(y')],
    v(b, y)   = max{v_c(b, y), v_d(y)},

with CRRA utility u(c) = (c^(1-γ) - 1)/(1 - γ) (log c at γ = 1; the constant shifts every value
alike and changes no decision) and output in default h(y) = min(κ E[y], y), κ = ``default_cost``,
where E[y] is the mean of y under the stationary distribution of the discretized chain. A
defaulting country is excluded from borrowing and re-enters with zero debt with probability θ
each period after the default.

The equilibrium is found by joint iteration on (v_c, v_d, q) until the largest sup-norm change
of the three is below the tolerance. The model is quarterly: β, r and the simulated statistics
follow Arellano's calibration to Argentina, and rates are annualized for reporting.

The income dimension is ``y_index`` (0..n_y-1), not the income level: ρ and σ_y are dynamic so
that a sweep over them compiles once, and the Tauchen grid they imply then differs from point to
point. The log-income levels of each point are returned as the output ``log_income``.

Simulated statistics (quarters after a burn-in, shocks fixed by ``seed``; the income path is
drawn by ``hpc.models.simulate.markov_chain_path_from_draws`` from the float32 Tauchen matrix of
the float32-rounded ρ and σ_y, the same array in a float32 and a float64 solve, so that both see
the same income path): ``default_frequency``
is default events per year in percent (4 × the share of quarters with a default);
``mean_spread`` and ``spread_volatility`` are the mean and sd, in percentage points, of the
annualized spread (1/q)^4 - (1+r)^4 over quarters in which the country borrows (b' < 0);
``mean_debt_to_output`` is the mean of -b'/y, in percent of quarterly output, over quarters with
market access.

Cost and memory: the repay step takes a max over b' of u(y + b - q b') + β E v on (y, b, b'),
n_b² n_y values (3.2 M at the defaults). The utility part depends on q alone; it is kept from step
to step (n_b² n_y floats, 25 MiB a point in float64 and 12.5 MiB in float32 at the defaults) and
computed again only after a step that moved q (``solve_equilibrium``). Under ``jax.vmap`` the
points of a batch run one after the other on a CPU, so a batch holds one point's cache at a time;
on an accelerator they run in lockstep and hold one each.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hpc.models.base import DIAGNOSTICS, Model, Output, Parameter
from hpc.models.shocks import stationary_distribution, tauchen
from hpc.models.simulate import markov_chain_path_from_draws

QUARTERS_PER_YEAR = 4


class ArellanoParams(NamedTuple):
    beta: jax.Array  # quarterly discount factor β
    gamma: jax.Array  # coefficient of relative risk aversion γ
    r: jax.Array  # quarterly risk-free rate
    rho: jax.Array  # persistence of log income
    sigma_y: jax.Array  # standard deviation of the innovation to log income
    theta: jax.Array  # probability of re-entering credit markets each period after a default
    default_cost: jax.Array  # κ in h(y) = min(κ E[y], y)


class Economy(NamedTuple):
    """Grids and transition of one parameter point."""

    bond_grid: jax.Array  # (n_b,) asset positions b; negative is debt
    log_income: jax.Array  # (n_y,) Tauchen grid of log y
    income: jax.Array  # (n_y,) y
    income_in_default: jax.Array  # (n_y,) h(y)
    transition: jax.Array  # (n_y, n_y) P[y, y']
    chain_transition: jax.Array  # (n_y, n_y) float32 P the simulation draws income from
    zero_debt: int  # index of b = 0 in bond_grid (static)


class Equilibrium(NamedTuple):
    value_repay: jax.Array  # v_c (n_b, n_y)
    value_default: jax.Array  # v_d (n_y,)
    bond_price: jax.Array  # q (n_b', n_y)


def bond_grid(b_min: float, b_max: float, n_b: int) -> np.ndarray:
    return np.linspace(b_min, b_max, n_b)


def zero_debt_index(grid: np.ndarray) -> int:
    """Index of the grid point nearest b = 0, where a country re-enters after default.

    The default grid (251 points on [-0.45, 0.45]) holds 0 exactly; other grids use the nearest.
    """
    return int(np.argmin(np.abs(grid)))


def crra(c, gamma):
    """u(c) = (c^(1-γ) - 1) / (1 - γ), and log c at γ = 1; -inf where c ≤ 0."""
    feasible = c > 0
    c_safe = jnp.where(feasible, c, 1.0)
    log_c = jnp.log(c_safe)
    one_minus_gamma = 1 - gamma
    near_log = jnp.abs(one_minus_gamma) < 1e-6
    power = jnp.expm1(one_minus_gamma * log_c) / jnp.where(near_log, 1.0, one_minus_gamma)
    u = jnp.where(near_log, log_c, power)
    return jnp.where(feasible, u, -jnp.inf)


def make_economy(params: ArellanoParams, static) -> Economy:
    dtype = static["dtype"]
    grid_np = bond_grid(static["b_min"], static["b_max"], static["n_b"])
    log_income, transition = tauchen(params.rho, params.sigma_y, static["n_y"], static["tauchen_m"], dtype)
    income = jnp.exp(log_income)
    # E[y] under the stationary distribution of the discretized chain: the mean income of the
    # economy actually solved.
    mean_income = stationary_distribution(transition) @ income
    # Computed in float32 from the float32-rounded (ρ, σ_y) in every precision: a float32 and a
    # float64 solve then draw the same income path (P computed in each precision differs in
    # the last float32 bit of most entries, enough to move a draw across a boundary now and
    # then in a long simulation).
    _, chain_transition = tauchen(jnp.asarray(params.rho, jnp.float32), jnp.asarray(params.sigma_y, jnp.float32),
                                  static["n_y"], static["tauchen_m"], jnp.float32)
    return Economy(
        bond_grid=jnp.asarray(grid_np, dtype),
        log_income=log_income,
        income=income,
        income_in_default=jnp.minimum(params.default_cost * mean_income, income),
        transition=transition,
        chain_transition=chain_transition,
        zero_debt=zero_debt_index(grid_np),
    )


def repay_utility(bond_price, econ: Economy, params: ArellanoParams):
    """u(y + b - q(b', y) b') on (y, b, b'): the part of the repay objective that depends on q alone.

    The choice b' is the last (contiguous) axis, so the max over it is a reduction along memory;
    with b' in the middle, small income grids ran several times slower on CPU.
    """
    cost = (bond_price * econ.bond_grid[:, None]).T  # (y, b'): q(b', y) b'
    consumption = econ.income[:, None, None] + econ.bond_grid[None, :, None] - cost[:, None, :]
    return crra(consumption, params.gamma)


UTILITY_CHUNK = 256  # (b', y) columns of the utility recomputed per pass of ``refresh_utility``


def refresh_utility(utility, old_price, new_price, econ: Economy, params: ArellanoParams):
    """``repay_utility(new_price)`` from ``utility = repay_utility(old_price)``, recomputing only the
    columns u(y + b - q(b', y) b') over b of the (b', y) whose price moved.

    Bitwise the full recomputation (the same operations on the same numbers), at a cost in
    proportion to the prices that moved: after the first steps a step moves a few hundred of the
    n_b n_y prices, then none. Columns go in passes of ``UTILITY_CHUNK``, as many as needed.
    """
    n_b, n_y = new_price.shape
    moved = (new_price != old_price).T.reshape(-1)  # over (y, b'), b' fastest
    count = jnp.sum(moved, dtype=jnp.int32)
    chunk = min(UTILITY_CHUNK, n_b * n_y)
    b_index = jnp.arange(n_b)

    def one_pass(cells, carry):
        start, u = carry
        cell = jax.lax.dynamic_slice(cells, (start,), (chunk,))
        y_i, b_next = cell // n_b, cell % n_b
        y_safe = jnp.minimum(y_i, n_y - 1)
        cost = new_price[b_next, y_safe] * econ.bond_grid[b_next]  # q(b', y) b'
        consumption = econ.income[y_safe][:, None] + econ.bond_grid[None, :] - cost[:, None]  # (cell, b)
        columns = crra(consumption, params.gamma)
        return start + chunk, u.at[y_i[:, None], b_index[None, :], b_next[:, None]].set(columns, mode="drop")

    def refresh():
        # the moved cells first, then n_b n_y: past the end, so that those updates are dropped
        cells = jnp.nonzero(moved, size=n_b * n_y + chunk, fill_value=n_b * n_y)[0].astype(jnp.int32)
        return jax.lax.while_loop(lambda carry: carry[0] < count, functools.partial(one_pass, cells),
                                  (jnp.int32(0), utility))[1]

    # a step that moved no price (most of them) skips even finding the moved ones
    return jax.lax.cond(count > 0, refresh, lambda: utility)


def continuation_value(eq: Equilibrium, econ: Economy):
    """(y, b'): Σ_y' P(y, y') v(b', y'), v = max(v_c, v_d)."""
    value = jnp.maximum(eq.value_repay, eq.value_default[None, :])
    return econ.transition @ value.T


def repay_objective(eq: Equilibrium, econ: Economy, params: ArellanoParams, utility=None):
    """u(y + b - q(b', y) b') + β E[v(b', y') | y] on (y, b, b'), before the max over b'.

    ``utility`` is ``repay_utility(eq.bond_price, ...)`` when the caller holds it already.
    """
    if utility is None:
        utility = repay_utility(eq.bond_price, econ, params)
    return utility + params.beta * continuation_value(eq, econ)[:, None, :]


def bellman_step(eq: Equilibrium, econ: Economy, params: ArellanoParams, utility=None) -> Equilibrium:
    """One joint update of (v_c, v_d, q); q is priced off the updated default decision.

    ``utility``: ``repay_utility(eq.bond_price, ...)``, if known (the step is the same either way).
    """
    value_repay = jnp.max(repay_objective(eq, econ, params, utility), axis=2).T
    value = jnp.maximum(eq.value_repay, eq.value_default[None, :])
    reentry = value[econ.zero_debt]
    value_default = crra(econ.income_in_default, params.gamma) + params.beta * econ.transition @ (
        params.theta * reentry + (1 - params.theta) * eq.value_default
    )
    return Equilibrium(value_repay, value_default, bond_price(value_repay, value_default, econ, params))


def default_decision(value_repay, value_default):
    """d(b, y): default exactly where defaulting is strictly better than repaying."""
    return value_default[None, :] > value_repay


def bond_price(value_repay, value_default, econ: Economy, params: ArellanoParams):
    """q(b', y) = (1 - δ(b', y)) / (1 + r), δ(b', y) = Σ_y' P(y, y') d(b', y')."""
    repays = (~default_decision(value_repay, value_default)).astype(econ.transition.dtype)
    # Summing the repayment mass makes q exactly 0 where default is certain; the clip removes
    # rounding in Σ P ≈ 1 where repayment is certain.
    repayment_probability = jnp.clip(repays @ econ.transition.T, 0, 1)
    return repayment_probability / (1 + params.r)


def sup_change(new: Equilibrium, old: Equilibrium):
    return jnp.max(jnp.stack([jnp.max(jnp.abs(n - o)) for n, o in zip(new, old)]))


def effective_tolerance(tol: float, value_repay):
    """tol, floored at 4 ulps of the largest |v_c|.

    A change below a few ulps of the values is rounding, not progress: in float32 an absolute
    1e-8 is below the resolution of values of order one, so the iteration could only stop by
    luck (landing on an exact float32 fixed point). At the defaults max |v_c| ≈ 4, so the floor
    is about 2e-6 in float32 and 4e-15 in float64, where it never binds.
    """
    ulp = jnp.finfo(value_repay.dtype).eps * jnp.max(jnp.abs(value_repay))
    return jnp.maximum(jnp.asarray(tol, value_repay.dtype), 4 * ulp)


def starting_point(econ: Economy, params: ArellanoParams) -> Equilibrium:
    """v_c = v_d = 0 and q = 1/(1+r): the last period of a finite-horizon economy."""
    dtype = econ.income.dtype
    n_b, n_y = econ.bond_grid.shape[0], econ.income.shape[0]
    return Equilibrium(
        value_repay=jnp.zeros((n_b, n_y), dtype),
        value_default=jnp.zeros((n_y,), dtype),
        bond_price=jnp.full((n_b, n_y), 1.0, dtype) / (1 + params.r),
    )


class IterationState(NamedTuple):
    eq: Equilibrium
    utility: jax.Array  # repay_utility(eq.bond_price): (n_y, n_b, n_b')
    error: jax.Array  # sup-norm change of the last step
    iterations: jax.Array  # int32


def first_state(econ: Economy, params: ArellanoParams) -> IterationState:
    start = starting_point(econ, params)
    return IterationState(start, repay_utility(start.bond_price, econ, params),
                          jnp.asarray(jnp.inf, econ.income.dtype), jnp.int32(0))


def iterate_once(state: IterationState, econ: Economy, params: ArellanoParams) -> tuple[IterationState, jax.Array]:
    """One Bellman step from the cached utility; also says whether q moved (the cache is then stale)."""
    new = bellman_step(state.eq, econ, params, state.utility)
    price_moved = jnp.any(new.bond_price != state.eq.bond_price)
    return IterationState(new, state.utility, sup_change(new, state.eq), state.iterations + 1), price_moved


def still_iterating(state: IterationState, tol: float, max_iter: int):
    return (state.error > effective_tolerance(tol, state.eq.value_repay)) & (state.iterations < max_iter)


BATCHINGS = ("auto", "map", "lockstep")


def solve_equilibrium(econ: Economy, params: ArellanoParams, tol: float, max_iter: int, batching: str = "auto"):
    """Iterate the joint operator from v_c = v_d = 0, q = 1/(1+r) until the sup-norm change of
    (v_c, v_d, q) is at most ``effective_tolerance(tol, v_c)``; return (equilibrium, error, iterations).

    Starting from zero values is backward induction from a last period: each iterate is the
    equilibrium of a finite-horizon economy one period longer.

    Every iterate is the plain joint update's (``bellman_step``), but u(y + b - q b') on
    (y, b, b'), which costs a log and an exp per entry, is computed again only after a step that
    moved q; otherwise the step reuses it and costs an add and a max per entry. q moves only while
    the default set does, which settles long before the values converge (at the defaults, after 29
    of 309 steps in float64), so about nine steps in ten skip the utility.

    Under ``jax.vmap`` (a sweep's batch), ``batching`` says how the points run:
    ``"map"``: one after the other (``lax.map``), each to its own stopping iteration and with its
    own skipping, so a batch costs the sum of its points alone; ``"lockstep"``: all points advance
    together, as vmap would batch the loop, until the slowest stops, recomputing the utility of
    the whole batch at a step where any point's q moved (a plain vmap of the loop would turn that
    choice into a select and compute it every step); ``"auto"``: map on a CPU, where batching
    gains nothing on this compute-bound loop, lockstep on an accelerator, whose width the batch
    fills.
    """
    if batching not in BATCHINGS:
        raise ValueError(f"batching must be one of {BATCHINGS}, not {batching!r}")
    zero_debt = econ.zero_debt

    def economy(arrays) -> Economy:
        grid, income, income_in_default, transition = arrays
        return Economy(grid, None, income, income_in_default, transition, None, zero_debt)

    def one_point(arrays, params):
        econ = economy(arrays)

        def body(old):
            state, _ = iterate_once(old, econ, params)
            return state._replace(utility=refresh_utility(state.utility, old.eq.bond_price, state.eq.bond_price,
                                                          econ, params))

        state = jax.lax.while_loop(lambda s: still_iterating(s, tol, max_iter), body, first_state(econ, params))
        return state.eq, state.error, state.iterations

    def lockstep(arrays, params):
        """The batch advanced together; a point that has stopped keeps its state."""
        step = jax.vmap(lambda s, a, p: iterate_once(s, economy(a), p))
        utility_of = jax.vmap(lambda q, a, p: repay_utility(q, economy(a), p))
        going = jax.vmap(lambda s: still_iterating(s, tol, max_iter))

        def body(state):
            active = going(state)
            new, price_moved = step(state, arrays, params)
            new = jax.tree.map(lambda n, o: jnp.where(active.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, state)
            stale = active & price_moved
            utility = jax.lax.cond(jnp.any(stale),
                                   lambda: jnp.where(stale[:, None, None, None],
                                                     utility_of(new.eq.bond_price, arrays, params), state.utility),
                                   lambda: state.utility)
            return new._replace(utility=utility)

        state = jax.vmap(lambda a, p: first_state(economy(a), p))(arrays, params)
        state = jax.lax.while_loop(lambda s: jnp.any(going(s)), body, state)
        return state.eq, state.error, state.iterations

    @jax.custom_batching.custom_vmap
    def run(arrays, params):
        return one_point(arrays, params)

    @run.def_vmap
    def run_batched(axis_size, in_batched, arrays, params):
        how = batching
        if how == "auto":
            how = "map" if jax.default_backend() == "cpu" else "lockstep"
        leaves, tree = jax.tree.flatten((arrays, params))
        flags = jax.tree.leaves(tuple(in_batched))
        if how == "map":
            # Only the batched inputs are mapped over; the others (the bond grid, often) stay
            # the constants they are in a single solve, which XLA folds into the step.
            def point(mapped):
                it = iter(mapped)
                return one_point(*jax.tree.unflatten(tree, [next(it) if f else x for x, f in zip(leaves, flags)]))

            out = jax.lax.map(point, [x for x, f in zip(leaves, flags) if f])
        else:
            full = [x if f else jnp.broadcast_to(x, (axis_size,) + jnp.shape(x)) for x, f in zip(leaves, flags)]
            out = lockstep(*jax.tree.unflatten(tree, full))
        return out, jax.tree.map(lambda _: True, out)

    arrays = (econ.bond_grid, econ.income, econ.income_in_default, econ.transition)
    return run(arrays, params)


def borrowing_policy(eq: Equilibrium, econ: Economy, params: ArellanoParams):
    """Index of the b' chosen when repaying, on (b, y)."""
    return jnp.argmax(repay_objective(eq, econ, params), axis=2).T.astype(jnp.int32)


def annual_spread(q, r):
    """Annualized yield of a bond priced q minus the annualized risk-free rate, in percent."""
    return 100 * ((1 / q) ** QUARTERS_PER_YEAR - (1 + r) ** QUARTERS_PER_YEAR)


def simulation_draws(seed: int, quarters: int):
    """(quarters, 2) float32 uniforms, whatever the solve's dtype: column 0 decides re-entry after
    a default, column 1 the next income state."""
    return jax.random.uniform(jax.random.PRNGKey(seed), (quarters, 2), jnp.float32)


def simulated_income(econ: Economy, draws):
    """Income indices y_0 .. y_{T-1} for T quarters of ``draws``, from the median income state.

    Inverse-CDF sampling on ``econ.chain_transition`` (float32 in every precision), so a float32
    and a float64 solve of the same point see the same path.
    """
    return markov_chain_path_from_draws(econ.chain_transition, econ.income.shape[0] // 2, draws[:-1, 1])


def simulate(eq: Equilibrium, econ: Economy, params: ArellanoParams, periods: int, burn_in: int, seed: int):
    """Simulate the economy for burn_in + periods quarters; return the long-run statistics.

    Starts at the median income with zero debt in good standing. Each quarter an excluded country
    re-enters with zero debt with probability θ; a country with market access defaults where
    d(b, y) = 1 (and is then excluded that quarter), otherwise borrows b'(b, y). The draws
    depend only on ``seed``, so every parameter point sees the same shocks.
    """
    dtype = econ.income.dtype
    defaults = default_decision(eq.value_repay, eq.value_default)
    policy = borrowing_policy(eq, econ, params)
    draws = simulation_draws(seed, burn_in + periods)
    income_path = simulated_income(econ, draws)

    def quarter(state, inputs):
        b_i, excluded = state
        reentry_draw, y_i = inputs
        reenters = excluded & (reentry_draw < params.theta)
        b_i = jnp.where(reenters, econ.zero_debt, b_i)
        in_market = ~excluded | reenters
        defaults_now = in_market & defaults[b_i, y_i]
        borrows = in_market & ~defaults_now
        b_next = jnp.where(borrows, policy[b_i, y_i], econ.zero_debt)
        b_next_level = econ.bond_grid[b_next]
        record = (
            defaults_now,
            borrows & (b_next_level < 0),
            eq.bond_price[b_next, y_i],
            jnp.where(borrows, -b_next_level / econ.income[y_i], 0.0),
            borrows,
        )
        return (b_next, excluded & ~reenters | defaults_now), record

    start = (jnp.int32(econ.zero_debt), jnp.bool_(False))
    _, (default_events, indebted, price, debt_ratio, borrows) = jax.lax.scan(
        quarter, start, (draws[:, 0], income_path))
    default_events, indebted, price, debt_ratio, borrows = (
        x[burn_in:] for x in (default_events, indebted, price, debt_ratio, borrows)
    )

    spread = annual_spread(jnp.where(indebted, price, 1 / (1 + params.r)), params.r)
    n_indebted = jnp.maximum(jnp.sum(indebted), 1)
    mean_spread = jnp.sum(jnp.where(indebted, spread, 0.0)) / n_indebted
    spread_var = jnp.sum(jnp.where(indebted, (spread - mean_spread) ** 2, 0.0)) / n_indebted
    return {
        "default_frequency": 100 * QUARTERS_PER_YEAR * jnp.mean(default_events.astype(dtype)),
        "mean_spread": mean_spread,
        "spread_volatility": jnp.sqrt(spread_var),
        "mean_debt_to_output": 100 * jnp.sum(debt_ratio) / jnp.maximum(jnp.sum(borrows), 1),
    }


def params_from(dynamic) -> ArellanoParams:
    return ArellanoParams(*(dynamic[name] for name in ArellanoParams._fields))


def solve(dynamic, static):
    params = params_from(dynamic)
    econ = make_economy(params, static)
    eq, err, it = solve_equilibrium(econ, params, static["tol"], static["max_iter"])
    stats = simulate(eq, econ, params, static["sim_periods"], static["sim_burn_in"], static["seed"])
    return {
        "value_repay": eq.value_repay,
        "value_default": eq.value_default,
        "bond_price": eq.bond_price,
        "default_policy": default_decision(eq.value_repay, eq.value_default),
        "log_income": econ.log_income,
        **stats,
        "iterations": it,
        "error": err,
        "converged": err <= effective_tolerance(static["tol"], eq.value_repay),
    }


def coords(static):
    grid = bond_grid(static["b_min"], static["b_max"], static["n_b"])
    return {"b": grid, "b_next": grid, "y_index": np.arange(static["n_y"])}


MODEL = Model(
    name="arellano",
    doc="Arellano (2008) sovereign default: joint iteration on the values of repaying and "
    "defaulting and the bond price, then a long simulation.",
    parameters=(
        Parameter("beta", "float", 0.953, bounds=(0.0, 0.9999), doc="quarterly discount factor β"),
        Parameter("gamma", "float", 2.0, bounds=(0.05, 20.0), doc="relative risk aversion γ (CRRA)"),
        Parameter("r", "float", 0.017, bounds=(0.0, 0.5), doc="quarterly risk-free rate", unit="per quarter"),
        Parameter("rho", "float", 0.945, bounds=(-0.999, 0.999), doc="persistence of log income"),
        Parameter("sigma_y", "float", 0.025, bounds=(1e-4, 0.5), doc="sd of the log-income innovation"),
        Parameter("theta", "float", 0.282, bounds=(0.0, 1.0), doc="quarterly re-entry probability after default"),
        Parameter("default_cost", "float", 0.969, bounds=(0.0, 1.0),
                  doc="κ: output in default is min(κ E[y], y)"),
        Parameter("n_y", "int", 51, role="shape", bounds=(3, 2001), doc="income states (Tauchen)"),
        Parameter("n_b", "int", 251, role="shape", bounds=(3, 20001), doc="bond grid points"),
        Parameter("b_min", "float", -0.45, role="shape", bounds=(None, 0.0), doc="lowest bond position (most debt)"),
        Parameter("b_max", "float", 0.45, role="shape", bounds=(0.0, None), doc="highest bond position"),
        Parameter("tauchen_m", "float", 3.0, role="static", bounds=(0.5, 10.0),
                  doc="income grid half-width in unconditional sds"),
        Parameter("tol", "float", 1e-8, role="static", bounds=(0.0, None),
                  doc="sup-norm tolerance on the change of (v_c, v_d, q)"),
        Parameter("max_iter", "int", 2_000, role="static", bounds=(1, 1_000_000), doc="iteration cap"),
        Parameter("sim_periods", "int", 200_000, role="static", bounds=(1, 100_000_000),
                  doc="simulated quarters used for the statistics"),
        Parameter("sim_burn_in", "int", 1_000, role="static", bounds=(0, 100_000_000),
                  doc="simulated quarters dropped first"),
        Parameter("seed", "int", 0, role="static", bounds=(0, 2**31 - 1), doc="seed of the simulation draws"),
    ),
    outputs=(
        Output("value_repay", ("b", "y_index"), "float", "v_c(b, y): value of repaying"),
        Output("value_default", ("y_index",), "float", "v_d(y): value of defaulting"),
        Output("bond_price", ("b_next", "y_index"), "float", "q(b', y): price of a bond paying 1 next quarter"),
        Output("default_policy", ("b", "y_index"), "bool", "d(b, y): the government defaults"),
        Output("log_income", ("y_index",), "float", "log y at each income index (Tauchen grid of this point)"),
        Output("default_frequency", (), "float", "defaults per year in the simulation", "percent per year"),
        Output("mean_spread", (), "float", "mean annualized spread over indebted quarters", "percentage points"),
        Output("spread_volatility", (), "float", "sd of the annualized spread over indebted quarters",
               "percentage points"),
        Output("mean_debt_to_output", (), "float", "mean of -b'/y over quarters with market access",
               "percent of quarterly output"),
        *DIAGNOSTICS,
    ),
    solve=solve,
    coords=coords,
    dim_units={"b": "units of output", "b_next": "units of output", "y_index": "index"},
)
