"""Bianchi (2011), "Overborrowing and Systemic Externalities in the Business Cycle".

A small open economy with tradable endowment y_T and nontradable endowment y_N borrows in a
one-period bond at the world rate r (b < 0 is debt). Preferences are E Σ β^t u(c_t) with
u(c) = c^(1-σ)/(1-σ) and the composite c = [ω c_T^(-η) + (1-ω) c_N^(-η)]^(-1/η). Budget and
credit constraint:

    b' + c_T + p_N c_N = (1+r) b + y_T + p_N y_N,        b' ≥ -κ (y_T + p_N y_N).

In equilibrium c_N = y_N and p_N = ((1-ω)/ω) (c_T / y_N)^(1+η), so the value of the collateral
rises with tradable consumption c_T = (1+r) b + y_T - b'. Write u_T = ∂u/∂c_T and R = 1 + r.

Decentralized equilibrium (DE). Households take p_N as given; since individual and aggregate
bonds coincide, the equilibrium is the fixed point of the household Euler equation

    u_T(t) = β R E_t u_T(t+1) + μ_t,   μ_t ≥ 0,   μ_t [b' + κ (y_T + p_N y_N)] = 0.

Social planner (SP). It chooses b' knowing that c_T moves p_N. With ψ = κ y_N ∂p_N/∂c_T =
κ (1+η) ((1-ω)/ω) (c_T/y_N)^η its Euler equation carries the pecuniary externality:

    u_T(t) = μ_t (1 - ψ_t) + β R E_t λ(t+1),   λ = u_T + μ ψ  (the planner's value of wealth).

Algorithm: time iteration on the tradable-consumption policy c_T(b, s) by the endogenous grid
method. For every next-period bond b' on the grid, the expectation E λ(b', s') needs no
interpolation; inverting u_T gives the unconstrained c_T and hence the current b that chooses b'.
Interpolating back onto the grid gives the unconstrained policy. Where the constraint binds, c_T
is the largest tradable consumption the collateral allows, the lower root of

    c_T - κ y_N p_N(c_T) = R b + (1+κ) y_T,

which depends on parameters and the grid only, so it is solved once per point. The grid ends
b_min and b_max bound b' as well (Bianchi's code does the same). Each iteration costs
O(n_b · S²) for S shock states; no (b, b') candidate array exists.

Shocks: log(y_T, y_N) follows a VAR(1) discretized by Tauchen–Hussey with 4 nodes per variable
(16 states; see ``shock_process``).

Where the statistics come from (the static parameter ``statistics``):

- ``exact`` (the default): expectations under the stationary distribution of the solved policy
  on the grid, an off-grid b' split between its two neighbouring grid points by linear weights
  (``stationary_bond_distribution``, a power iteration), events (the constraint binds, a crisis)
  read over next period's b' with each grid point's mass spread over its cell and carried by the
  policy, so that they move smoothly with the parameters instead of in grid-sized lumps
  (``distribution_statistics``). No sampling noise; at the paper's calibration every statistic
  lies within two sampling standard deviations of an 80,000-period simulation's
  (tests/models/test_bianchi.py). The planner's crisis severities
  are read at the DE's crisis dates, which needs the joint law of both economies' debt: those
  two still come from the simulation. Bitwise the same in every layout of a sweep (processes ×
  devices, tests/test_distributed.py), as the simulated statistics are.
- ``simulated``: one simulation of ``sim_periods`` periods after ``sim_burn_in`` periods, on the
  Markov chain itself, from a fixed jax.random key (``seed``); the default before the exact
  statistics existed (a store without the parameter was simulated).

Statistics (percent). A crisis (paper): the constraint binds in period t and the current account
CA_t = b_{t+1} - b_t exceeds the mean plus one standard deviation of the decentralized
equilibrium's current account. As in Bianchi's own code, the planner is judged against the
decentralized economy's volatility on the same shock path, and its consumption drop and real
depreciation are read at the decentralized economy's crisis dates (how the planner fares under
the shocks that cause crises without regulation); ``crisis_probability_own_sd`` uses the
economy's own volatility instead. Consumption drop and depreciation are medians over those dates
of the deviation from the long-run mean of the composite c and of the real exchange rate 1/P,
P = [ω^(1/(1+η)) + (1-ω)^(1/(1+η)) p_N^(η/(1+η))]^((1+η)/η) being the CPI in tradables. Debt/GDP
is the mean of -b_t / (y_T + p_N y_N)_t. A planner point also solves the decentralized
equilibrium, which roughly doubles its cost.

Where the constraint binds the bond policy falls with b: more wealth raises c_T, hence p_N and the
collateral, so the limit -κ (y_T + p_N y_N) loosens: the price feedback behind the crises, seen from the
other side. The policy is monotone (increasing) in b only where the constraint is slack; c_T is
increasing in b everywhere. For the same reason the DE value can dip with b near the edge of the
binding region (the extra collateral is overborrowed); the planner's value rises with b.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hpc.models.base import DIAGNOSTICS, Model, Output, Parameter, ReportTable
from hpc.models.shocks import stationary_distribution, tauchen_hussey_var
from hpc.models.simulate import (
    interp_columns,
    markov_chain_path,
    masked_median,
    sequential_under_vmap,
    uniform_grid_weights,
)


class BianchiParams(NamedTuple):
    r: jax.Array  # world interest rate
    sigma: jax.Array  # risk aversion σ
    eta: jax.Array  # η, elasticity of substitution 1/(1+η)
    omega: jax.Array  # weight of tradables ω
    beta: jax.Array  # discount factor β
    kappa: jax.Array  # share of income that can be pledged κ


# log(y_T, y_N)' = A log(y_T, y_N) + ε, ε ~ N(0, Ω), with A acting on the column vector (y_T, y_N).
# The paper prints its estimate as [[0.901, 0.495], [-0.453, 0.225]] in the row-vector convention
# x_t' = x_{t-1}' A: read that way the VAR implies σ(y_T) = 5.8%, σ(y_N) = 5.7% and a correlation
# of 0.82 (Argentina's moments; 5.8% is also the σ(y_T) in Bianchi's code). Read as acting on a
# column vector it would give a correlation of -0.27 and σ(y_T) = 9.6%.
PAPER_VAR = (
    np.array([[0.901, -0.453], [0.495, 0.225]]),
    np.array([[0.00219, 0.00162], [0.00162, 0.00167]]),
)
# Yamada (2023) estimate used by a JAX teaching version (column-vector convention, as published).
TEACHING_VAR = (
    np.array([[0.2425, 0.3297], [-0.1984, 0.7576]]),
    np.array([[0.0052, 0.002], [0.002, 0.0059]]),
)
_VARS = {"paper": PAPER_VAR, "teaching": TEACHING_VAR}
NODES_PER_SHOCK = 4


@lru_cache(maxsize=None)
def shock_process(shocks: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y_T, y_N, P): endowment levels of the 16 states and P[s, s'] = Prob(s' | s).

    State s = 4 i + j, where i indexes the first Gauss–Hermite coordinate (y_T takes 4 values)
    and j the second; y_N varies with both, since the nodes follow the innovation covariance.
    """
    persistence, innovation_cov = _VARS[shocks]
    nodes, transition = tauchen_hussey_var(persistence, innovation_cov, NODES_PER_SHOCK)
    levels = np.exp(nodes)
    return levels[:, 0], levels[:, 1], transition


def bond_grid(static) -> np.ndarray:
    return np.linspace(static["b_min"], static["b_max"], static["n_b"])


# --- preferences and prices, in the paper's notation --------------------------------------------


def composite(c_T, y_N, p: BianchiParams):
    """c = [ω c_T^(-η) + (1-ω) y_N^(-η)]^(-1/η)."""
    return (p.omega * c_T ** (-p.eta) + (1 - p.omega) * y_N ** (-p.eta)) ** (-1 / p.eta)


def utility(c, p: BianchiParams):
    """u(c) = c^(1-σ)/(1-σ), log c at σ = 1."""
    near_log = jnp.abs(p.sigma - 1) < 1e-6
    safe = jnp.where(near_log, 2.0, p.sigma)
    return jnp.where(near_log, jnp.log(c), c ** (1 - safe) / (1 - safe))


def marginal_utility_tradable(c_T, y_N, p: BianchiParams):
    """u_T = ∂u/∂c_T = ω c_T^(-1-η) c^(1+η-σ)."""
    return p.omega * c_T ** (-1 - p.eta) * composite(c_T, y_N, p) ** (1 + p.eta - p.sigma)


def price_nontradable(c_T, y_N, p: BianchiParams):
    """p_N = ((1-ω)/ω) (c_T / y_N)^(1+η): the market-clearing relative price."""
    return (1 - p.omega) / p.omega * (c_T / y_N) ** (1 + p.eta)


def collateral_slope(c_T, y_N, p: BianchiParams):
    """ψ = κ y_N ∂p_N/∂c_T: how much the borrowing limit loosens per unit of c_T."""
    return p.kappa * (1 + p.eta) * (1 - p.omega) / p.omega * (c_T / y_N) ** p.eta


def consumer_price_index(p_N, p: BianchiParams):
    """CPI in units of tradables, P = [ω^(1/(1+η)) + (1-ω)^(1/(1+η)) p_N^(η/(1+η))]^((1+η)/η)."""
    e = 1 / (1 + p.eta)
    return (p.omega**e + (1 - p.omega) ** e * p_N ** (p.eta * e)) ** (1 / (p.eta * e))


def invert_marginal_utility(target, y_N, p: BianchiParams, steps: int = 6):
    """c_T with u_T(c_T, y_N) = target, by Newton's method on x = log c_T.

    In logs, with a = ω e^(-η x) and d = (1-ω) y_N^(-η),

        log u_T = log ω - (1+η) x - ((1+η-σ)/η) log(a + d),

    smooth, decreasing and close to linear in x: its slope is -(1+η) + (1+η-σ) a/(a+d). Each step
    costs one exp and one log. The start is exact when c_T = y_N, so a few steps reach machine
    precision.
    """
    log_target = jnp.log(target)
    d = (1 - p.omega) * y_N ** (-p.eta)
    # Start: u_T(c, c) = ω c^(-σ) (the composite equals c when c_T = c_N = c).
    x = (jnp.log(p.omega) - log_target) / p.sigma

    def newton(_, x):
        a = p.omega * jnp.exp(-p.eta * x)
        residual = (jnp.log(p.omega) - (1 + p.eta) * x
                    - (1 + p.eta - p.sigma) / p.eta * jnp.log(a + d) - log_target)
        slope = -(1 + p.eta) + (1 + p.eta - p.sigma) * a / (a + d)
        return x - residual / slope

    return jnp.exp(jax.lax.fori_loop(0, steps, newton, x))


_NEVER_BINDS = 1e6  # a finite stand-in for +∞ so that interpolation stays finite


def binding_consumption(cash, y_T, y_N, p: BianchiParams, steps: int = 24):
    """The largest c_T the credit constraint allows, given cash = R b + y_T.

    Solves g(c) = c - a c^(1+η) = cash + κ y_T, a = κ ((1-ω)/ω) y_N^(-η), on the increasing branch
    of the concave g (below c* where ψ = 1). If the right side exceeds max g the constraint cannot
    bind and a large finite value is returned. Newton's method from c_0 = right side stays left
    of the root (g lies below its tangents and g(c) ≤ c) and rises to it monotonically; it is
    slow only for roots next to c*, where c_bind is far above any unconstrained choice.
    """
    rhs = cash + p.kappa * y_T
    a = p.kappa * (1 - p.omega) / p.omega * y_N ** (-p.eta)
    c_star = (a * (1 + p.eta)) ** (-1 / p.eta)
    g_max = c_star * p.eta / (1 + p.eta)
    tiny = jnp.asarray(1e-6, rhs.dtype)
    start = jnp.clip(rhs, tiny, c_star)

    def newton(_, c):
        g = c - a * c ** (1 + p.eta)
        slope = 1 - a * (1 + p.eta) * c**p.eta
        return jnp.clip(c - (g - rhs) / jnp.maximum(slope, 1e-12), tiny, c_star)

    root = jax.lax.fori_loop(0, steps, newton, start)
    return jnp.where(rhs >= g_max, _NEVER_BINDS, jnp.where(rhs > 0, root, tiny))


# --- the Euler-equation operators -----------------------------------------------------------------


class Economy(NamedTuple):
    """Arrays that stay fixed while the policy is iterated."""

    b: jax.Array  # bond grid, (n_b,)
    y_T: jax.Array  # (S,)
    y_N: jax.Array  # (S,)
    transition: jax.Array  # (S, S)
    cash: jax.Array  # R b + y_T on the grid, (n_b, S)
    c_bind: jax.Array  # tradable consumption at which the constraint binds, (n_b, S)


def _unconstrained_consumption(expected, econ: Economy, p: BianchiParams):
    """Endogenous grid step: from β R E[·](b', s) on the b' grid to c_T(b, s) on the b grid.

    ``expected`` (n_b, S) is β R Σ_s' P[s, s'] λ(b', s') at b' = grid. The Euler equation gives
    c_T at each b'; the budget then gives the b that chooses it, b = (b' + c_T - y_T) / R. The
    resulting map b → b' is interpolated at the grid, with b' clamped to [b_min, b_max].
    """
    R = 1 + p.r
    c_euler = invert_marginal_utility(expected, econ.y_N[None, :], p)
    b_endogenous = (econ.b[:, None] + c_euler - econ.y_T[None, :]) / R
    b_next = interp_columns(jnp.broadcast_to(econ.b[:, None], b_endogenous.shape), b_endogenous, econ.b)
    return econ.cash - b_next


def _expectation(values, econ: Economy, p: BianchiParams):
    """β R Σ_s' P[s, s'] values(b', s'), shape (n_b, S)."""
    return p.beta * (1 + p.r) * values @ econ.transition.T


def de_step(c_T, econ: Economy, p: BianchiParams):
    """One time-iteration step of the decentralized equilibrium: c_T ↦ c_T'."""
    expected = _expectation(marginal_utility_tradable(c_T, econ.y_N[None, :], p), econ, p)
    c_unconstrained = _unconstrained_consumption(expected, econ, p)
    return jnp.minimum(c_unconstrained, econ.c_bind), c_unconstrained


def sp_step(c_T, multiplier, econ: Economy, p: BianchiParams):
    """One time-iteration step of the planner: (c_T, μ) ↦ (c_T', μ').

    Where the constraint binds, μ = [u_T(c_bind) - β R E λ(b'_bind)] / (1 - ψ), with the
    expectation interpolated at the off-grid b'_bind.
    """
    y_N = econ.y_N[None, :]
    lam = marginal_utility_tradable(c_T, y_N, p) + multiplier * collateral_slope(c_T, y_N, p)
    expected = _expectation(lam, econ, p)
    c_unconstrained = _unconstrained_consumption(expected, econ, p)
    binds = econ.c_bind < c_unconstrained
    c_new = jnp.where(binds, econ.c_bind, c_unconstrained)
    expected_at_choice = interp_columns(econ.cash - c_new, econ.b, expected)
    gap = marginal_utility_tradable(c_new, y_N, p) - expected_at_choice
    mu = jnp.where(binds, jnp.maximum(gap, 0.0) / (1 - collateral_slope(c_new, y_N, p)), 0.0)
    return c_new, mu, c_unconstrained


def solve_policy(econ: Economy, p: BianchiParams, planner: bool, tol: float, max_iter: int):
    """Iterate the DE or SP operator from c_T = min(r b + y_T, c_bind) until sup|Δb'| ≤ tol.

    Returns (c_T, c_unconstrained, iterations, error). Δb' = -Δc_T on a fixed grid, so the error
    is the sup-norm change of the bond policy, in units of tradables.
    """
    c0 = jnp.minimum(econ.cash - econ.b[:, None], econ.c_bind)
    zeros = jnp.zeros_like(c0)
    dtype = c0.dtype

    def cond(state):
        *_, err, it = state
        return (err > tol) & (it < max_iter)

    def body(state):
        c, mu, _, _, it = state
        if planner:
            c_new, mu_new, c_unc = sp_step(c, mu, econ, p)
        else:
            c_new, c_unc = de_step(c, econ, p)
            mu_new = mu
        return c_new, mu_new, c_unc, jnp.max(jnp.abs(c_new - c)), it + 1

    init = (c0, zeros, c0, jnp.asarray(jnp.inf, dtype), jnp.int32(0))
    c, _, c_unc, err, it = jax.lax.while_loop(cond, body, init)
    return c, c_unc, it, err


def evaluate_policy(c_T, econ: Economy, p: BianchiParams, tol: float, max_iter: int):
    """V(b, s) = u(c(b, s)) + β Σ_s' P[s, s'] V(b'(b, s), s'), V linear in b between grid points.

    Iterated from V = u / (1 - β) until the sup-norm change relative to max|V| is below tol.
    """
    flow = utility(composite(c_T, econ.y_N[None, :], p), p)
    index, weight = uniform_grid_weights(econ.cash - c_T, econ.b[0], econ.b[-1], econ.b.shape[0])

    def cond(state):
        _, err, it = state
        return (err > tol) & (it < max_iter)

    def body(state):
        v, _, it = state
        continuation = v @ econ.transition.T  # Σ_s' P[s, s'] V(b_i, s'), (n_b, S)
        at_choice = ((1 - weight) * jnp.take_along_axis(continuation, index, axis=0)
                     + weight * jnp.take_along_axis(continuation, index + 1, axis=0))
        v_new = flow + p.beta * at_choice
        return v_new, jnp.max(jnp.abs(v_new - v)) / jnp.max(jnp.abs(v_new)), it + 1

    init = (flow / (1 - p.beta), jnp.asarray(jnp.inf, flow.dtype), jnp.int32(0))
    v, err, it = jax.lax.while_loop(cond, body, init)
    return v, err


# --- simulation and the paper's statistics ---------------------------------------------------------


def simulate_bonds(b_next_unc, b_next_bind, b_grid, states: jax.Array, b0):
    """Bond path b_0 .. b_T and binding flags for the shock path ``states`` (length T).

    b' = max(b'_unconstrained(b, s), b'_binding(b, s)), both interpolated linearly in b on the
    uniform ``b_grid``, so the binding flag is exact up to interpolation rather than a tolerance
    on the distance to the limit. The four values a step needs sit in one row of a table: the scan
    is bound by per-step costs, and one gather per step is the cheapest.
    """
    n_b, n_s = b_next_unc.shape
    table = jnp.stack([b_next_unc[:-1], b_next_unc[1:], b_next_bind[:-1], b_next_bind[1:]], axis=-1)
    table = table.reshape((n_b - 1) * n_s, 4)  # row i·S + s: the segment [b_i, b_{i+1}] in state s

    def step(b, s):
        i, w = uniform_grid_weights(b, b_grid[0], b_grid[-1], n_b)
        row = table[i * n_s + s]
        unc = (1 - w) * row[0] + w * row[1]
        bind = (1 - w) * row[2] + w * row[3]
        binds = bind >= unc
        b_next = jnp.maximum(unc, bind)
        return b_next, (b_next, binds)

    _, (path, binds) = jax.lax.scan(step, jnp.asarray(b0, b_next_unc.dtype), states)
    return jnp.concatenate([jnp.asarray(b0, path.dtype)[None], path]), binds


def simulation_statistics(bonds, binds, reference_bonds, reference_binds, states, y_T, y_N, p: BianchiParams):
    """The paper's long-run statistics, in percent, from a simulated path.

    ``bonds`` b_0..b_T and ``binds`` (length T) describe the economy reported on; ``reference_*``
    the decentralized equilibrium on the same shock path ``states`` (s_0..s_{T-1}). As in the paper,
    a current-account reversal is large when it exceeds the mean plus one standard deviation of
    the decentralized current account, and the planner's consumption drop and depreciation are
    read at the decentralized economy's crisis dates (the same shocks). For the decentralized
    equilibrium itself the reference is the economy.
    """
    b, b_next = bonds[:-1], bonds[1:]
    yT, yN = y_T[states], y_N[states]
    c_T = (1 + p.r) * b + yT - b_next
    p_N = price_nontradable(c_T, yN, p)
    gdp = yT + p_N * yN
    current_account = b_next - b
    reference_ca = reference_bonds[1:] - reference_bonds[:-1]
    threshold = jnp.mean(reference_ca) + jnp.std(reference_ca)
    crisis = binds & (current_account > threshold)
    own_sd_crisis = binds & (current_account > jnp.mean(current_account) + jnp.std(current_account))
    event = reference_binds & (reference_ca > threshold)
    c = composite(c_T, yN, p)
    rer = 1 / consumer_price_index(p_N, p)
    consumption_dev = 100 * (c / jnp.mean(c) - 1)
    rer_dev = 100 * (rer / jnp.mean(rer) - 1)
    dtype = c_T.dtype

    def share(flags):  # in the working precision: jnp.mean of a bool array is float32 even under x64
        return 100 * jnp.mean(flags, dtype=dtype)

    return {
        "crisis_probability": share(crisis),
        "crisis_probability_own_sd": share(own_sd_crisis),
        "constraint_binding_frequency": share(binds),
        "mean_debt_to_gdp": 100 * jnp.mean(-b / gdp),
        "crisis_consumption_drop": masked_median(consumption_dev, event),
        "crisis_rer_depreciation": masked_median(rer_dev, event),
    }


# --- the exact stationary distribution and the statistics under it ---------------------------------


class Lottery(NamedTuple):
    """Where the lottery sends mass from each grid point (b_i, s): to b_j and b_{j+1} around b'(b_i, s).

    The sum over sources by target is done without a scatter (whose order is not fixed on a GPU;
    on a CPU ``ScatterLottery`` is faster): the sources of a
    column are sorted by b' once, so that the targets j and j + 1 of the k-th source never
    decrease with k, and the mass arriving at b_j is a difference of cumulative sums at the
    positions where the target changes.
    """

    order: jax.Array  # (n_b, S): column s's sources by increasing b'
    weight: jax.Array  # (n_b, S): w of the k-th source (1 - w to b_j, w to b_{j+1})
    ends: jax.Array  # (n_b, S): how many of column s's sources have their lower target ≤ j

    @classmethod
    def of(cls, b_next, econ: Economy) -> "Lottery":
        n_b = b_next.shape[0]
        order = jnp.argsort(b_next, axis=0)
        index, weight = uniform_grid_weights(jnp.take_along_axis(b_next, order, axis=0), econ.b[0], econ.b[-1], n_b)
        ends = jax.vmap(lambda col: jnp.searchsorted(col, jnp.arange(n_b), side="right"), in_axes=1,
                        out_axes=1)(index)
        return cls(order, weight, ends)

    def move(self, mass):
        """Mass (n_b, S, ...) at the sources to the grid points it is sent to, column by column."""
        n_b, n_s = mass.shape[:2]
        flat = mass.reshape(n_b, n_s, -1)  # trailing axes moved together, a row per (b_i, s)
        column = jnp.arange(n_s)[None, :]
        zero = jnp.zeros((1, n_s, flat.shape[2]), mass.dtype)
        sorted_mass = flat[self.order, column]
        weight = self.weight[:, :, None]

        def through(cumulative):  # Σ over sources k < position, per column
            return jnp.concatenate([zero, cumulative])[self.ends, column]

        low = through(jnp.cumsum((1 - weight) * sorted_mass, axis=0))  # sent to some b_j, j ≤ ·
        high = through(jnp.cumsum(weight * sorted_mass, axis=0))  # sent to b_{j+1}, j ≤ ·
        arriving = jnp.diff(low, axis=0, prepend=zero) + jnp.diff(jnp.concatenate([zero, high[:-1]]), axis=0,
                                                                  prepend=zero)
        return arriving.reshape(mass.shape)


class ScatterLottery(NamedTuple):
    """The same lottery as ``Lottery``, its sums over sources by target done by two scatter-adds.

    On a CPU, XLA runs a scatter as one loop over the sources in their order, so the sums are the
    same in every program, and no sort is needed: 20 steps at n_b = 800 take 0.5 ms against 2.9
    ms for ``Lottery`` (its sort alone 0.75 ms). On a GPU a scatter-add is done with atomics, in
    no fixed order, hence ``Lottery`` there.
    """

    index: jax.Array  # (n_b, S): the lower target j of source (b_i, s)
    weight: jax.Array  # (n_b, S): w (1 - w to b_j, w to b_{j+1})
    column: jax.Array  # (n_b, S): s

    @classmethod
    def of(cls, b_next, econ: Economy) -> "ScatterLottery":
        index, weight = uniform_grid_weights(b_next, econ.b[0], econ.b[-1], b_next.shape[0])
        return cls(index, weight, jnp.broadcast_to(jnp.arange(b_next.shape[1])[None, :], index.shape))

    def move(self, mass):
        """Mass (n_b, S) at the sources to the grid points it is sent to, column by column."""
        arriving = jnp.zeros_like(mass).at[self.index, self.column].add((1 - self.weight) * mass)
        return arriving.at[self.index + 1, self.column].add(self.weight * mass)


def lottery_rows(mass, b_next, econ: Economy):
    """Mass (n_b, S, ...) at the atoms b'(b_i, s), sent to grid points by the lottery and summed over s.

    One scatter-add of whole rows (the ... axes): done once, outside any loop, with rows this
    wide, it is the cheap way on CPU.
    """
    n_b = b_next.shape[0]
    index, weight = uniform_grid_weights(b_next, econ.b[0], econ.b[-1], n_b)
    extra = (None,) * (mass.ndim - 2)
    rows = jnp.zeros((n_b,) + mass.shape[2:], mass.dtype)
    rows = rows.at[index.ravel()].add(((1 - weight)[(...,) + extra] * mass).reshape((-1,) + mass.shape[2:]))
    return rows.at[index.ravel() + 1].add((weight[(...,) + extra] * mass).reshape((-1,) + mass.shape[2:]))


def stationary_bond_distribution(b_next, econ: Economy, shock_distribution, tol: float, max_iter: int,
                                 scatter: bool | None = None):
    """Stationary distribution π(b_i, s) of the policy's chain on the grid, by power iteration.

    From (b_i, s) the economy moves to b' = b'(b_i, s) and to s' with probability P[s, s']; an
    off-grid b' in [b_j, b_{j+1}] is split between the two grid points with the linear weights
    that reproduce it, 1 - w at b_j and w at b_{j+1} (a lottery that keeps the mean of b').

    A step moves every column's mass to where its b' lie (``Lottery``) and then mixes the columns
    by P. It starts from ``shock_distribution`` (the shocks'
    invariant distribution, a NumPy array) spread evenly over b and stops when the total-variation
    change Σ|π' - π| is at most ``tol`` (at the paper's calibration the chain forgets its start in
    a few dozen periods). Returns (π, last change).

    ``scatter`` picks the ``ScatterLottery`` (default: where JAX's default backend is the CPU) or
    the sorted ``Lottery``; both give π to rounding (tests/models/test_bianchi.py).
    """
    n_b, n_s = b_next.shape
    if scatter is None:
        scatter = jax.default_backend() == "cpu"
    lottery = (ScatterLottery if scatter else Lottery).of(b_next, econ)

    def step(pi):
        return lottery.move(pi) @ econ.transition

    def cond(state):
        _, err, it = state
        return (err > tol) & (it < max_iter)

    def body(state):
        pi, _, it = state
        new = step(pi)
        return new, jnp.sum(jnp.abs(new - pi)), it + 1

    # The start is divided here in NumPy, not in the program: XLA folds `constant / n_b` at compile
    # time in some programs and turns it into `constant * (1 / n_b)` (rounded twice) in others (a
    # shard_map over several devices did), which moved the last bit of every statistic.
    pi0 = jnp.asarray(np.broadcast_to(np.asarray(shock_distribution, np.float64)[None, :] / n_b, (n_b, n_s)),
                      b_next.dtype)
    pi, err, _ = jax.lax.while_loop(cond, body, (pi0, jnp.asarray(jnp.inf, b_next.dtype), jnp.int32(0)))
    return pi / jnp.sum(pi), err


def weighted_medians(values, weights, half_width):
    """Medians of K distributions over the same groups; NaN where the groups have no mass.

    In distribution k, group g has mass ``weights[g]`` (≥ 0) spread evenly over ``values[k, g]``
    ± ``half_width[k, g]`` (a point mass where the half width is 0). Each median is the smallest v
    with mass(≤ v) ≥ half, to within the precision, found by bisection on v between the lowest and
    the highest reach of a group with mass: one masked sum per halving, which costs far less on
    CPU than a sort, and the K bisections share one loop.
    """
    axes = tuple(range(1, values.ndim))
    live = weights > 0
    total = jnp.sum(weights)
    start = values - half_width
    point = half_width <= 0
    inverse_width = jnp.where(point, 0.0, 1 / jnp.where(point, 1.0, 2 * half_width))
    lo = jnp.min(jnp.where(live, start, jnp.inf), axis=axes)
    hi = jnp.max(jnp.where(live, values + half_width, -jnp.inf), axis=axes)
    halvings = 30 if values.dtype.itemsize == 4 else 50

    def below(v):  # mass at or below v, for each distribution
        v = v.reshape(v.shape + (1,) * len(axes))
        share = jnp.where(point, (values <= v).astype(values.dtype), jnp.clip((v - start) * inverse_width, 0.0, 1.0))
        return jnp.sum(weights * share, axis=axes)

    def halve(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        enough = below(mid) >= 0.5 * total
        return jnp.where(enough, lo, mid), jnp.where(enough, mid, hi)

    # mass(≤ lo) < half ≤ mass(≤ hi) stays true; start lo just below the lowest reach
    lo, hi = jax.lax.fori_loop(0, halvings, halve, (lo - jnp.abs(lo) * 1e-6 - 1e-30, hi))
    return jnp.where(total > 0, hi, jnp.nan)


def next_period_atoms(pi, b_next, econ: Economy):
    """The next period's distribution as atoms: (b, mass), b of shape (n_b, S, 1), mass (n_b, S, S).

    Under the stationary π over (b_i, s), the next state is (b'(b_i, s), s') with mass
    π(b_i, s) P[s, s'], atom [i, s, s']: the off-grid b' themselves, before the lottery moves
    them to grid points. Events read at these atoms treat b as the simulation does (policies
    interpolated in b at the very value reached), and π stays stationary: its lottery of the
    atoms is π again.
    """
    return b_next[:, :, None], pi[:, :, None] * econ.transition[None, :, :]


def cell_intervals(conditions):
    """Where events {x : f_k(x) ≥ 0 for every k} hold in each grid cell [b_j, b_{j+1}].

    ``conditions``: the f_k at the grid points, (E, K, n_b) for E events. Each f_k is linear in b
    within a cell (the policies are interpolated linearly), so an event holds on one interval of
    the cell, [lo, hi] in the cell's own coordinate t ∈ [0, 1] (empty where hi ≤ lo). Returns
    (before, lo, hi), each (E, n_b): ``before`` the event's length in cells 0 .. j - 1; the last
    lo, hi are padding.
    """
    f0, f1 = conditions[..., :-1], conditions[..., 1:]
    cross = f0 / jnp.where(f0 == f1, 1, f0 - f1)  # f's zero, where f0 and f1 differ in sign
    lo = jnp.max(jnp.where(f0 >= 0, 0.0, jnp.where(f1 >= 0, cross, 1.0)), axis=1)
    hi = jnp.min(jnp.where(f1 >= 0, 1.0, jnp.where(f0 >= 0, cross, 0.0)), axis=1)
    pad = jnp.zeros(lo.shape[:1] + (1,), lo.dtype)
    return (jnp.concatenate([pad, jnp.cumsum(jnp.maximum(hi - lo, 0.0), axis=1)], axis=1),
            jnp.concatenate([lo, pad + 1], axis=1), jnp.concatenate([hi, pad], axis=1))


def half_cell_images(policy, econ: Economy):
    """Where the halves of each source cell go, beyond b'(b_i, s) itself: [(index, weight, the
    half's share of the mass)] of the far ends of the cell's halves, b'(b_i - step/2, s) and
    b'(b_i + step/2, s), all (n_b, S), both policies interpolated at those points.

    The mass of (b_i, s) is read as spread evenly over its cell [b_i - step/2, b_i + step/2] (half
    a cell at the grid's ends), each half's image as covered evenly (b' is linear there, up to the
    kink where the constraint starts to bind).
    """
    unc, bind = policy
    n_b = econ.b.shape[0]

    def at_half(shift):  # b' halfway to the row below (shift 1) or above (-1); the row itself at the ends
        def neighbour(a):
            return jnp.concatenate([a[:1], a[:-1]]) if shift == 1 else jnp.concatenate([a[1:], a[-1:]])
        return jnp.maximum(0.5 * (unc + neighbour(unc)), 0.5 * (bind + neighbour(bind)))

    rows = jnp.arange(n_b)[:, None]
    left = jnp.broadcast_to(jnp.where(rows == 0, 0.0, jnp.where(rows == n_b - 1, 1.0, 0.5)).astype(unc.dtype),
                            unc.shape)
    grid = (econ.b[0], econ.b[-1], n_b)
    return [(*uniform_grid_weights(at_half(1), *grid), left), (*uniform_grid_weights(at_half(-1), *grid), 1 - left)]


def segment_shares(events, centre, ends):
    """The share of the mass of each atom (b'(b_i, s), s') that lands where each event holds.

    ``events``: the events' conditions at the grid points, (E, K, n_b, S') (``cell_intervals``);
    ``centre``: (index, weight) of the atoms b'(b_i, s) on the grid, (n_b, S); ``ends`` from
    ``half_cell_images``. Where a half's image is a point (b' flat in b, as where
    the planner keeps b' at the edge of the binding region) the event is read at that point.
    Returns (E, n_b, S, S') shares in [0, 1].

    One target state s' at a time (``lax.map``): the (n_b, S) images are made once and read by
    every step, where a program over (n_b, S, S') at once had XLA redo them for each s'.
    """
    index, weight = centre

    def target(conditions):  # the events' conditions for one s', (E, K, n_b) -> shares (E, n_b, S)
        before, lo, hi = cell_intervals(conditions)

        def below(ix, w):  # each event's length below the points, as (whole cells, the part in their own cell)
            return before[:, ix], jnp.maximum(jnp.minimum(w, hi[:, ix]) - lo[:, ix], 0.0)

        whole, part = below(index, weight)
        at_point = ((lo[:, index] <= weight) & (weight <= hi[:, index])).astype(weight.dtype)
        share = jnp.zeros_like(part)
        for end_index, end_weight, mass_share in ends:
            end_whole, end_part = below(end_index, end_weight)
            # in cells, whole cells apart exactly: widths of 1e-4 cells are not lost to the rounding of j + t
            width = (end_index - index).astype(weight.dtype) + (end_weight - weight)
            flat = jnp.abs(width) <= 1e-4
            # times an explicit reciprocal: XLA may turn a division by the broadcast width into
            # that in one program and not in another, and the bits must not depend on the layout
            fraction = ((end_whole - whole) + (end_part - part)) * (1 / jnp.where(flat, 1.0, width))
            share = share + mass_share * jnp.where(flat, at_point, jnp.clip(fraction, 0.0, 1.0))
        return share

    return jnp.moveaxis(jax.lax.map(target, jnp.moveaxis(events, -1, 0)), 0, -1)


def distribution_statistics(pi, policy, reference, econ: Economy, p: BianchiParams):
    """The paper's long-run statistics, in percent, as expectations under the stationary ``pi``.

    ``pi`` and ``policy`` = (b'_unconstrained, b'_binding) on the grid (n_b, S) describe the
    economy reported on; ``reference`` = (π, policy) of the decentralized equilibrium, None for
    the DE itself. The definitions are those of ``simulation_statistics``, sample means replaced
    by expectations:

    - means of smooth functions of the state (debt / GDP, c and 1/CPI, the mean and sd of
      CA = b' - b) are sums over the grid weighted by π;
    - a share of periods (the constraint binds, a crisis) is the mass of next period's states
      (b', s') where it happens, with b'' = max(b'_unconstrained, b'_binding) interpolated at b'
      and the constraint binding where b'_binding ≥ b'_unconstrained there, as in the
      simulation. The mass π(b_i, s) P[s, s'] of an atom of ``next_period_atoms`` is read as
      spread evenly over b_i's cell and carried by the policy: each half of the cell to the
      segment between b'(b_i, s) and b' at the half's far end (``half_cell_images``), covered
      evenly, and the event's share of each segment is exact, the policies being linear in each
      grid cell (``segment_shares``). Read at the atoms alone, a share jumped by an atom's mass
      each time an atom crossed the event's edge, which made a sweep's curve zig-zag at the
      grid's scale; an indicator read at grid points, or mass spread over a fixed width, would
      be off by O(grid step) for the planner, which keeps much of its mass right at the edge of
      the binding region, b' flat in b there: a segment shorter than 1e-4 of a cell is read at
      its point;
    - the crisis severities are medians of the deviations of c and 1/CPI from their means
      (interpolated in b from the grid) over the economy's own crisis mass at the atoms, grouped by the grid
      point (b_j, s') the lottery sends them to (``lottery_rows``), each group spread evenly over
      its mean ± √3 sd (a median of 12,800 groups at n_b = 800 instead of 204,800 atoms; grouping
      at the mean alone would be off by O(grid step)). These are the paper's for
      the DE; the planner's (read at the DE's crisis dates, a joint law of both economies' debt)
      are left to the caller.
    """
    b = econ.b[:, None]
    y_T, y_N = econ.y_T[None, :], econ.y_N[None, :]

    def moments(pi, policy):
        ca = jnp.maximum(*policy) - b
        mean = jnp.sum(pi * ca)
        return mean, jnp.sqrt(jnp.maximum(jnp.sum(pi * (ca - mean) ** 2), 0.0))

    ca_mean, ca_sd = moments(pi, policy)
    ref_mean, ref_sd = (ca_mean, ca_sd) if reference is None else moments(*reference)
    b_next = jnp.maximum(*policy)
    c_T = econ.cash - b_next
    p_N = price_nontradable(c_T, y_N, p)
    c = composite(c_T, y_N, p)
    rer = 1 / consumer_price_index(p_N, p)
    consumption_dev = 100 * (c / jnp.sum(pi * c) - 1)
    rer_dev = 100 * (rer / jnp.sum(pi * rer) - 1)

    # the grid's values at the atoms: b is b'(b_i, s) for every s', so one gather of a grid row
    # (all s') per (b_i, s) and one linear weight, (n_b, S) -> (n_b, S, S)
    atom_b, mass = next_period_atoms(pi, b_next, econ)
    index, weight = uniform_grid_weights(atom_b[..., 0], econ.b[0], econ.b[-1], econ.b.shape[0])
    weight = weight[..., None]

    def at(grid_values):
        return (1 - weight) * grid_values[index] + weight * grid_values[index + 1]

    floor = econ.b[0] + 1e-6 * (econ.b[-1] - econ.b[0])

    # each atom's share of mass where an event holds, its source's cell spread over its image
    ends = half_cell_images(policy, econ)
    unc_grid, bind_grid = policy
    binding = bind_grid - unc_grid

    events = [[binding, bind_grid - b - (ref_mean + ref_sd)], [binding, binding]]
    if reference is not None:  # the DE's own volatility is the reference's: the same event as a crisis
        events.append([binding, bind_grid - b - (ca_mean + ca_sd)])
    event_mass = mass * segment_shares(jnp.stack([jnp.stack(e) for e in events]), (index, weight[..., 0]), ends)

    # the crisis atoms' mass and its moments, moved to the grid points of their state s' by the
    # lottery on their b: each grid point then stands for the atoms sent to it
    crisis_mass = event_mass[0]
    crisis_probability = 100 * jnp.sum(crisis_mass)
    moments = [crisis_mass]
    for x in (at(consumption_dev), at(rer_dev)):
        moments += [crisis_mass * x, crisis_mass * x**2]
    moved = lottery_rows(jnp.stack(moments, axis=-1), b_next, econ)
    crisis_mass = moved[..., 0]
    safe = jnp.where(crisis_mass > 0, crisis_mass, 1)

    # each group spread evenly over mean ± √3 sd, the uniform with its mean and sd; divided moment
    # by moment, as x / safe: XLA turns a division by a broadcast safe into a product with 1 / safe
    # in some programs and not in others, which moved the medians' last bits between layouts
    mean = jnp.stack([moved[..., k] / safe for k in (1, 3)])
    half_width = jnp.sqrt(3 * jnp.maximum(jnp.stack([moved[..., k] / safe for k in (2, 4)]) - mean**2, 0.0))
    drop, depreciation = weighted_medians(mean, crisis_mass, half_width)
    return {
        "crisis_probability": crisis_probability,
        "crisis_probability_own_sd": crisis_probability if reference is None else 100 * jnp.sum(event_mass[2]),
        "constraint_binding_frequency": 100 * jnp.sum(event_mass[1]),
        # b' at the floor is flat in b (the grid's end bounds it): read at the atoms themselves
        "grid_bound_frequency": 100 * jnp.sum(jnp.where(jnp.maximum(at(unc_grid), at(bind_grid)) <= floor, mass, 0.0)),
        "mean_debt_to_gdp": 100 * jnp.sum(pi * (-b / (y_T + p_N * y_N))),
        "crisis_consumption_drop": drop,
        "crisis_rer_depreciation": depreciation,
    }


# --- the model entry point ----------------------------------------------------------------------


def make_economy(static, p: BianchiParams) -> Economy:
    dtype = static["dtype"]
    y_T_np, y_N_np, transition_np = shock_process(static["shocks"])
    b = jnp.asarray(bond_grid(static), dtype)
    y_T, y_N = jnp.asarray(y_T_np, dtype), jnp.asarray(y_N_np, dtype)
    cash = (1 + p.r) * b[:, None] + y_T[None, :]
    c_bind = binding_consumption(cash, y_T[None, :], y_N[None, :], p)
    return Economy(b, y_T, y_N, jnp.asarray(transition_np, dtype), cash, c_bind)


def _params(dynamic, dtype) -> BianchiParams:
    return BianchiParams(*(jnp.asarray(dynamic[name], dtype) for name in BianchiParams._fields))


def solve_equilibrium(dynamic, static, planner: bool | None = None):
    """Policies of one point: (params, economy, c_T, c_T unconstrained, iterations, error)."""
    p = _params(dynamic, static["dtype"])
    econ = make_economy(static, p)
    planner = bool(static["planner"]) if planner is None else planner
    c_T, c_unc, it, err = solve_policy(econ, p, planner, static["tol"], static["max_iter"])
    return p, econ, c_T, c_unc, it, err


def long_run_statistics(policy, reference, econ: Economy, p: BianchiParams, states, static):
    """Simulate the policy (and the DE ``reference`` policy, None for the DE itself) on ``states``.

    A policy is the pair (b'_unconstrained, b'_binding) on the grid. Paths start mid-grid and the
    first ``sim_burn_in`` periods are dropped. Under vmap the simulations run point by point: a
    batched 80,000-step scan is slower per point than one on its own.
    """
    burn_in = static["sim_burn_in"]
    b0 = 0.5 * (static["b_min"] + static["b_max"])

    def run(policy, reference, b, y_T, y_N, p, states):
        bonds, binds = simulate_bonds(*policy, b, states, b0)
        reference_bonds, reference_binds = (bonds, binds) if reference is None else simulate_bonds(
            *reference, b, states, b0)
        stats = simulation_statistics(bonds[burn_in:], binds[burn_in:], reference_bonds[burn_in:],
                                      reference_binds[burn_in:], states[burn_in:], y_T, y_N, p)
        # b' at the grid's lower end: that ad hoc bound, not the collateral, limits the debt there
        at_floor = bonds[burn_in + 1:] <= b[0] + 1e-6 * (b[-1] - b[0])
        return dict(stats, grid_bound_frequency=100 * jnp.mean(at_floor, dtype=bonds.dtype))

    return sequential_under_vmap(run)(policy, reference, econ.b, econ.y_T, econ.y_N, p, states)


def exact_long_run_statistics(policy, reference, econ: Economy, p: BianchiParams, static):
    """The statistics under the stationary distributions of the policy (and of the DE ``reference``).

    A policy is the pair (b'_unconstrained, b'_binding) on the grid, as for the simulation; the
    economy chooses the larger and the constraint binds where b'_binding ≥ b'_unconstrained.
    Returns (statistics, largest last change of a distribution, the tolerance it was held to).
    The tolerance is ``dist_tol`` but no less than 100 machine epsilons of the precision.
    """
    tol = max(float(static["dist_tol"]), 100 * float(jnp.finfo(econ.b.dtype).eps))
    shock_pi = stationary_distribution(shock_process(static["shocks"])[2])

    def chain(policy):
        return stationary_bond_distribution(jnp.maximum(*policy), econ, shock_pi, tol, static["max_iter"])

    pi, err = chain(policy)
    ref = None
    if reference is not None:
        ref_pi, ref_err = chain(reference)
        ref, err = (ref_pi, reference), jnp.maximum(err, ref_err)
    return distribution_statistics(pi, policy, ref, econ, p), err, tol


def shock_path(static) -> jax.Array:
    """The simulation's shock states s_0 .. s_{T-1}, T = sim_burn_in + sim_periods, from ``seed``.

    They depend on static values alone (the shock process and the seed), so they are drawn once,
    when a program is traced, and enter it as a constant: not an 80,000-step scan in every call.
    The path is the one the same draws give inside a program (tests/models/test_bianchi.py). It
    is drawn on this process's CPU whatever the program runs on: a scan of one small step per
    period is what a GPU does worst, and every platform then sees the same path.
    """
    with jax.ensure_compile_time_eval(), jax.default_device(jax.local_devices(backend="cpu")[0]):
        transition = jnp.asarray(shock_process(static["shocks"])[2], jnp.float32)  # the path reads it in float32
        return markov_chain_path(transition, 0, static["sim_burn_in"] + static["sim_periods"],
                                 jax.random.PRNGKey(static["seed"]))


def solve(dynamic, static):
    """One parameter point: policy, value and the paper's statistics (see the module docstring).

    The planner's statistics need the decentralized equilibrium at the same parameters (its
    current-account volatility and crisis dates), so a planner point solves both.
    """
    p = _params(dynamic, static["dtype"])
    econ = make_economy(static, p)
    tol, max_iter = static["tol"], static["max_iter"]
    c_T, c_unc, it, err = solve_policy(econ, p, bool(static["planner"]), tol, max_iter)
    value, value_err = evaluate_policy(c_T, econ, p, static["value_tol"], max_iter)
    b_next_bind = econ.cash - econ.c_bind
    policy = (econ.cash - c_unc, b_next_bind)
    reference = None
    if static["planner"]:
        _, c_unc_de, it_de, err_de = solve_policy(econ, p, False, tol, max_iter)
        reference = (econ.cash - c_unc_de, b_next_bind)
        it, err = jnp.maximum(it, it_de), jnp.maximum(err, err_de)

    converged = (err <= tol) & (value_err <= static["value_tol"])
    mode = static.get("statistics", "exact")
    if mode not in STATISTICS:
        raise ValueError(f"statistics must be one of {STATISTICS}, not {mode!r}")
    if mode == "exact":
        stats, dist_err, dist_tol = exact_long_run_statistics(policy, reference, econ, p, static)
        converged = converged & (dist_err <= dist_tol)
    if mode == "simulated" or static["planner"]:
        states = shock_path(static)
        simulated = long_run_statistics(policy, reference, econ, p, states, static)
        if mode == "simulated":
            stats = simulated
        else:  # the planner at the DE's crisis dates: a joint law of both economies, so simulated
            stats.update({k: simulated[k] for k in SIMULATED_IN_EXACT_PLANNER})
    return {
        "bond_policy": econ.cash - c_T,
        "value": value,
        **stats,
        "iterations": it,
        "error": err,
        "converged": converged,
    }


STATISTICS = ("exact", "simulated")
# the planner's statistics that ``statistics: exact`` still takes from the simulation
SIMULATED_IN_EXACT_PLANNER = ("crisis_consumption_drop", "crisis_rer_depreciation")


# Bianchi (2011), Table 4: long-run statistics of the two economies.
PAPER_TABLE = (
    ("crisis_probability", "probability of a crisis (%)", 5.5, 0.4),
    ("mean_debt_to_gdp", "average debt / GDP (%)", 29.2, 28.6),
    ("crisis_consumption_drop", "consumption drop in a median crisis (%)", -16.7, -10.1),
    ("crisis_rer_depreciation", "real exchange rate depreciation in a crisis (%)", 19.2, 1.1),
    ("constraint_binding_frequency", "constraint binds (% of periods)", 6.2, None),
)


def paper_table_section(ds) -> ReportTable:
    """The paper's table beside this sweep's numbers (median and range over its points), for the report.

    A sweep over ``statistics: [exact, simulated]`` gets a column for each beside the paper's;
    otherwise the caption says which the sweep used.
    """
    fixed = json.loads(ds.attrs.get("spec", "{}")).get("fixed", {})
    swept_modes = "statistics" in ds.dims
    modes = [str(m) for m in ds["statistics"].values] if swept_modes else [None]

    def column(planner: bool, mode):
        sub = ds.sel(statistics=mode) if swept_modes else ds
        if "planner" in sub.dims:
            sub = sub.sel(planner=planner) if planner in sub["planner"].values else None
        else:
            sub = sub if bool(fixed.get("planner", False)) == planner else None
        return None if sub is None else sub.where(sub["point_done"])

    def cell(sub, name):
        if sub is None or name not in sub:
            return "—"
        values = np.asarray(sub[name].values, float).ravel()
        values = values[np.isfinite(values)]
        if not values.size:
            return "—"
        median = f"{np.median(values):.2f}"
        return median if values.size == 1 else f"{median} [{values.min():.2f}, {values.max():.2f}]"

    de = [column(False, m) for m in modes]
    sp = [column(True, m) for m in modes]
    rows = [[label, paper_de, *(cell(c, name) for c in de), "—" if paper_sp is None else paper_sp,
             *(cell(c, name) for c in sp)]
            for name, label, paper_de, paper_sp in PAPER_TABLE]

    def headings(case):
        return [f"this sweep, {case}" + ("" if m is None else f" ({m})") for m in modes]

    n_b = ds.sizes.get("b", "?")
    if swept_modes:
        source = "exact: the stationary distribution of the policy; simulated: one simulation"
    elif "spec" in ds.attrs:
        # stores written before the parameter existed were simulated
        source = {"exact": "statistics from the stationary distribution of the policy (exact)",
                  "simulated": "statistics from one simulation"}.get(fixed.get("statistics", "simulated"), "")
    else:
        source = ""
    return ReportTable(
        title="Bianchi (2011): the paper's table beside this sweep",
        columns=["statistic", "paper, equilibrium", *headings("equilibrium"), "paper, planner", *headings("planner")],
        rows=rows,
        caption=(f"This sweep: median over its points [min, max], {n_b} bond grid points"
                 + (f"; {source}" if source else "") + " (the planner's crisis severities are simulated in "
                 "both). The paper's numbers are at its calibration (r = 0.04, σ = 2, η = 0.2048, ω = 0.31, "
                 "β = 0.91, κ = 0.32); they are comparable where the sweep's points are near it."))


def coords(static):
    return {"b": bond_grid(static), "y": np.arange(NODES_PER_SHOCK**2)}


MODEL = Model(
    name="bianchi",
    doc=("Bianchi (2011) overborrowing: decentralized equilibrium or social planner of a small open "
         "economy with a collateral constraint valued at the nontradable price, solved by "
         "endogenous-grid time iteration; long-run crisis statistics from the policy's stationary "
         "distribution (statistics: exact) or a simulation (statistics: simulated)."),
    parameters=(
        Parameter("r", "float", 0.04, bounds=(0.0, 0.2), doc="world interest rate r"),
        Parameter("sigma", "float", 2.0, bounds=(0.2, 10.0), doc="relative risk aversion σ"),
        Parameter("eta", "float", 1 / 0.83 - 1, bounds=(0.01, 5.0),
                  doc="η: the elasticity of substitution between c_T and c_N is 1/(1+η)"),
        Parameter("omega", "float", 0.31, bounds=(0.01, 0.99), doc="weight ω of tradables in the composite"),
        Parameter("beta", "float", 0.91, bounds=(0.5, 0.99), doc="discount factor β (β(1+r) < 1)"),
        Parameter("kappa", "float", 0.32, bounds=(0.0, 1.5), doc="κ: pledgeable share of income"),
        Parameter("planner", "bool", False, role="static",
                  doc="solve the social planner (True) or the decentralized equilibrium (False)"),
        Parameter("shocks", "choice", "paper", role="static", choices=("paper", "teaching"),
                  doc="endowment VAR: the paper's estimate or Yamada (2023)'s; Tauchen–Hussey, 4×4 nodes"),
        Parameter("n_b", "int", 400, role="shape", bounds=(10, 100_000), doc="bond grid points"),
        Parameter("b_min", "float", -1.02, role="shape", bounds=(None, 0.0),
                  doc="lowest bond position; must lie below the collateral limit (see grid_bound_frequency)"),
        Parameter("b_max", "float", -0.2, role="shape", bounds=(None, None), doc="highest bond position"),
        Parameter("statistics", "choice", "exact", role="static", choices=STATISTICS,
                  doc="exact: long-run statistics under the stationary distribution of the policy on the "
                      "grid (off-grid b' split between the neighbouring points); simulated: from one "
                      "simulation of sim_periods periods (the planner's crisis severities are simulated "
                      "in both)"),
        Parameter("dist_tol", "float", 1e-10, role="static", bounds=(0.0, None),
                  doc="total-variation change at which the stationary distribution's power iteration "
                      "stops (no less than 100 machine epsilons)"),
        Parameter("sim_periods", "int", 80_000, role="static", bounds=(100, 100_000_000),
                  doc="periods of the simulation the statistics are taken from (statistics: simulated; "
                      "the planner's crisis severities in both modes)"),
        Parameter("sim_burn_in", "int", 1_000, role="static", bounds=(0, 100_000_000),
                  doc="periods simulated and discarded before them"),
        Parameter("seed", "int", 0, role="static", bounds=(0, 2**31 - 1), doc="jax.random seed of the shock path"),
        Parameter("tol", "float", 1e-5, role="static", bounds=(0.0, None),
                  doc="sup-norm change of the bond policy at which time iteration stops"),
        Parameter("value_tol", "float", 1e-6, role="static", bounds=(0.0, None),
                  doc="relative sup-norm change at which policy evaluation stops"),
        Parameter("max_iter", "int", 5_000, role="static", bounds=(1, 10_000_000), doc="iteration cap of each loop"),
    ),
    outputs=(
        Output("bond_policy", ("b", "y"), "float", "next-period bonds b'(b, s)", "tradables"),
        Output("value", ("b", "y"), "float", "lifetime utility V(b, s) under the policy"),
        Output("crisis_probability", (), "float",
               "share of periods with a binding constraint and a current account above the "
               "decentralized equilibrium's mean + 1 sd (the paper's definition)", "%"),
        Output("crisis_probability_own_sd", (), "float",
               "as crisis_probability, with the economy's own current-account mean + 1 sd", "%"),
        Output("constraint_binding_frequency", (), "float", "share of periods the constraint binds", "%"),
        Output("grid_bound_frequency", (), "float",
               "share of periods with b' at b_min, where the grid end rather than the collateral "
               "limits debt (should be 0: otherwise lower b_min)", "%"),
        Output("mean_debt_to_gdp", (), "float", "mean of -b / (y_T + p_N y_N)", "%"),
        Output("crisis_consumption_drop", (), "float",
               "median deviation of composite consumption from its mean at the decentralized "
               "equilibrium's crisis dates", "%"),
        Output("crisis_rer_depreciation", (), "float",
               "median deviation of the real exchange rate 1/CPI from its mean at the decentralized "
               "equilibrium's crisis dates", "%"),
        *DIAGNOSTICS,
    ),
    solve=solve,
    coords=coords,
    report_section=paper_table_section,
    dim_units={"b": "tradables"},
)
