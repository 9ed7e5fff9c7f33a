"""McCall (1970) job search with IID wage offers.

An unemployed worker draws a wage offer w from a finite distribution p(w) each period,
accepts it (and earns w forever) or rejects it and receives compensation c. Bellman equation:

    v(w) = max{ w / (1 - β),  c + β Σ_w' p(w') v(w') }

Value iteration gives v; the reservation wage is w̄ = (1 - β) (c + β Σ p v), the wage at which
accepting and rejecting are equal. The scalar equation for w̄ (used to check the answer) is

    w̄ / (1 - β) = c + β Σ_w p(w) max(w, w̄) / (1 - β).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import betaln, gammaln

from hpc.models.base import DIAGNOSTICS, Model, Output, Parameter


class McCallParams(NamedTuple):
    c: jax.Array  # unemployment compensation
    beta: jax.Array  # discount factor


def wage_grid(w_min: float, w_max: float, n: int) -> np.ndarray:
    return np.linspace(w_min, w_max, n)


def beta_binomial_pmf(n_outcomes: int, a: float, b: float) -> np.ndarray:
    """P(k) for k = 0..n of a BetaBinomial(n, a, b), n = n_outcomes - 1."""
    n = n_outcomes - 1
    k = np.arange(n_outcomes)
    log_choose = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
    return np.exp(log_choose + betaln(k + a, n - k + b) - betaln(a, b))


def bellman(v: jax.Array, w: jax.Array, p: jax.Array, params: McCallParams) -> jax.Array:
    """T v (w) = max{ w / (1 - β), c + β Σ p(w') v(w') }."""
    accept = w / (1 - params.beta)
    reject = params.c + params.beta * p @ v
    return jnp.maximum(accept, reject)


def solve_vfi(w, p, params: McCallParams, tol: float, max_iter: int):
    """Value iteration from v0 = w / (1 - β) until the relative sup-norm change is below tol.

    The change is taken relative to max|v| so that one tolerance means the same in float32 and
    float64 (an absolute 1e-6 on values near 6000 is below float32's resolution).
    """
    v0 = w / (1 - params.beta)

    def cond(state):
        _, err, it = state
        return (err > tol) & (it < max_iter)

    def body(state):
        v, _, it = state
        v_new = bellman(v, w, p, params)
        return v_new, jnp.max(jnp.abs(v_new - v)) / jnp.max(jnp.abs(v_new)), it + 1

    v, err, it = jax.lax.while_loop(cond, body, (v0, jnp.asarray(jnp.inf, w.dtype), jnp.int32(0)))
    return v, err, it


def reservation_wage(v, p, params: McCallParams):
    """w̄ = (1 - β)(c + β Σ p v): the wage that makes accepting and rejecting equal."""
    return (1 - params.beta) * (params.c + params.beta * p @ v)


def reservation_wage_equation(w_bar, w, p, c, beta):
    """Residual of w̄/(1-β) = c + β Σ p max(w, w̄)/(1-β); zero at the reservation wage."""
    return w_bar / (1 - beta) - c - beta * np.sum(p * np.maximum(w, w_bar)) / (1 - beta)


def _static_arrays(static):
    w = wage_grid(static["w_min"], static["w_max"], static["n_wages"])
    p = beta_binomial_pmf(static["n_wages"], static["a"], static["b"])
    return w, p


def solve(dynamic, static):
    dtype = static["dtype"]
    w_np, p_np = _static_arrays(static)
    w, p = jnp.asarray(w_np, dtype), jnp.asarray(p_np, dtype)
    params = McCallParams(c=dynamic["c"], beta=dynamic["beta"])
    v, err, it = solve_vfi(w, p, params, static["tol"], static["max_iter"])
    converged = err <= static["tol"]
    return {
        "reservation_wage": reservation_wage(v, p, params),
        "value": v,
        "iterations": it,
        "error": err,
        "converged": converged,
    }


def coords(static):
    return {"wage": wage_grid(static["w_min"], static["w_max"], static["n_wages"])}


MODEL = Model(
    name="mccall",
    doc="McCall (1970) job search with IID BetaBinomial wage offers, solved by value iteration.",
    parameters=(
        Parameter("c", "float", 25.0, bounds=(0.0, None), doc="unemployment compensation", unit="wage units"),
        Parameter("beta", "float", 0.99, bounds=(0.0, 0.9999), doc="discount factor β"),
        Parameter("w_min", "float", 10.0, role="shape", bounds=(0.0, None), doc="lowest wage offer"),
        Parameter("w_max", "float", 60.0, role="shape", bounds=(0.0, None), doc="highest wage offer"),
        Parameter("n_wages", "int", 51, role="shape", bounds=(2, 100_000), doc="number of wage offers"),
        Parameter("a", "float", 200.0, role="static", bounds=(1e-9, None), doc="BetaBinomial a"),
        Parameter("b", "float", 100.0, role="static", bounds=(1e-9, None), doc="BetaBinomial b"),
        Parameter("tol", "float", 1e-6, role="static", bounds=(0.0, None), doc="relative sup-norm tolerance of VFI"),
        Parameter("max_iter", "int", 20_000, role="static", bounds=(1, 10_000_000), doc="iteration cap"),
    ),
    outputs=(
        Output("reservation_wage", (), "float", "wage above which an offer is accepted", "wage units"),
        Output("value", ("wage",), "float", "value of holding offer w while unemployed"),
        *DIAGNOSTICS,
    ),
    solve=solve,
    coords=coords,
    dim_units={"wage": "wage units"},
)
