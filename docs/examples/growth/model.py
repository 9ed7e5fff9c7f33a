"""Brock and Mirman (1972) growth with log utility and full depreciation, by value iteration.

A planner chooses next period's capital k' from output A k^alpha; what is not saved is consumed:

    v(k) = max_{0 < k' < A k^alpha}  log(A k^alpha - k') + beta v(k')

With log utility and full depreciation the policy has the closed form k' = alpha beta A k^alpha,
which docs/models.md uses to check this solver. Here v is found by value iteration on a fixed
grid of capital (k' is chosen on the same grid), so the model runs for any (alpha, beta, A).

This file is what a user writes: it imports hpc.models only, and the sweep spec beside it names
it as ``model: model.py:MODEL``.
"""

import jax
import jax.numpy as jnp
import numpy as np

from hpc.models import DIAGNOSTICS, Model, Output, Parameter


def capital_grid(params):
    """The grid of capital: n_k points from k_min to k_max (shape parameters: one grid per sweep)."""
    return np.linspace(params["k_min"], params["k_max"], params["n_k"])


def solve(dynamic, static):
    dtype = static["dtype"]
    alpha, beta, A = dynamic["alpha"], dynamic["beta"], dynamic["A"]
    k = jnp.asarray(capital_grid(static), dtype)
    # consumption for each (k today, k' tomorrow); infeasible choices get -inf utility
    c = A * k[:, None] ** alpha - k[None, :]
    utility = jnp.where(c > 0, jnp.log(jnp.where(c > 0, c, 1)), -jnp.inf)

    def bellman(v):
        return jnp.max(utility + beta * v[None, :], axis=1)

    def keep_going(state):
        _, it, err = state
        return (err > static["tol"]) & (it < static["max_iter"])

    def step(state):
        v, it, _ = state
        new = bellman(v)
        return new, it + 1, jnp.max(jnp.abs(new - v))

    v0 = jnp.zeros_like(k)
    v, iterations, error = jax.lax.while_loop(keep_going, step, (v0, jnp.int32(0), jnp.asarray(jnp.inf, dtype)))
    choice = jnp.argmax(utility + beta * v[None, :], axis=1)
    policy = k[choice]
    return {
        "capital_policy": policy,
        "consumption": A * k ** alpha - policy,
        "value": v,
        "iterations": iterations,
        "error": error.astype(dtype),
        "converged": error <= static["tol"],
    }


MODEL = Model(
    name="growth",
    doc="Brock-Mirman growth, log utility, full depreciation: value iteration on a capital grid",
    parameters=(
        Parameter("alpha", "float", 0.3, bounds=(0.05, 0.95), doc="capital share"),
        Parameter("beta", "float", 0.95, bounds=(0.5, 0.995), doc="discount factor"),
        Parameter("A", "float", 1.0, bounds=(0.1, 10.0), doc="total factor productivity"),
        Parameter("n_k", "int", 200, role="shape", bounds=(10, 5000), doc="capital grid points"),
        Parameter("k_min", "float", 0.05, role="shape", bounds=(1e-6, None), doc="smallest capital on the grid"),
        Parameter("k_max", "float", 0.5, role="shape", bounds=(1e-6, None), doc="largest capital on the grid"),
        Parameter("tol", "float", 1e-5, role="static", bounds=(0.0, None), doc="sup-norm tolerance of value iteration"),
        Parameter("max_iter", "int", 2000, role="static", bounds=(1, None), doc="iteration cap"),
    ),
    outputs=(
        Output("capital_policy", ("capital",), doc="next period's capital k'(k)"),
        Output("consumption", ("capital",), doc="consumption c(k) = A k^alpha - k'(k)"),
        Output("value", ("capital",), doc="value v(k)"),
        *DIAGNOSTICS,
    ),
    solve=solve,
    coords=lambda params: {"capital": capital_grid(params)},
)
