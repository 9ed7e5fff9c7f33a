"""A synthetic workload of known cost, for measuring the pipeline rather than a model.

Each point iterates the logistic map x ← r x (1 − x) for ``steps`` steps from ``x0``: the cost
per point is proportional to ``steps`` and nothing else, so a shard's compute time is set by the
spec. Used by the pipeline-overhead benchmark (tests/benchmarks/bench_pipeline.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hpc.models.base import DIAGNOSTICS, Model, Output, Parameter


def logistic_orbit(x0, r, steps: int):
    """x_steps of the logistic map from x0."""
    return jax.lax.fori_loop(0, steps, lambda _, x: r * x * (1 - x), x0)


def solve(dynamic, static):
    x = logistic_orbit(dynamic["x0"], dynamic["r"], static["steps"])
    return {
        "state": x,
        "iterations": jnp.int32(static["steps"]),
        "error": jnp.zeros((), static["dtype"]),
        "converged": jnp.bool_(True),
    }


MODEL = Model(
    name="synthetic",
    doc="Logistic-map iterations of known cost per point (a benchmark workload, not economics).",
    parameters=(
        Parameter("x0", "float", 0.3, bounds=(0.0, 1.0), doc="starting point"),
        Parameter("r", "float", 3.9, bounds=(0.0, 4.0), doc="logistic map parameter"),
        Parameter("steps", "int", 1000, role="static", bounds=(1, 2**31 - 1), doc="iterations per point (a 32-bit loop count)"),
    ),
    outputs=(Output("state", (), "float", "x after the iterations"), *DIAGNOSTICS),
    solve=solve,
    coords=lambda static: {},
)

__all__ = ["MODEL", "logistic_orbit"]
