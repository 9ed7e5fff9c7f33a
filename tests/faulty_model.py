"""A test-only model that raises for one value of a static parameter (like a model with a
combination of options it does not implement)."""

from __future__ import annotations

import jax.numpy as jnp

from hpc.models.base import DIAGNOSTICS, Model, Output, Parameter


def solve(dynamic, static):
    if static["variant"] == "broken":
        raise NotImplementedError("variant 'broken' has no solver")
    y = jnp.sin(dynamic["x"]) * jnp.ones(3, static["dtype"])
    return {"y": y, "iterations": jnp.int32(1), "error": jnp.zeros((), static["dtype"]), "converged": jnp.bool_(True)}


MODEL = Model(
    name="faulty",
    doc="raises for variant=broken",
    parameters=(Parameter("x", "float", 0.0), Parameter("variant", "choice", "fine", role="static", choices=("fine", "broken"))),
    outputs=(Output("y", ("k",), "float"), *DIAGNOSTICS),
    solve=solve,
    coords=lambda static: {"k": [0, 1, 2]},
)
