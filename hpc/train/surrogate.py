"""A trained network as a function in the model's units, and what one evaluation costs.

    f = load_surrogate("mccall-surrogate")
    f(c=[20.0], beta=[0.95], wage=[30.0])      # v(w; c, β), shape (1, 1)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from hpc.core import paths
from hpc.train.checkpoint import load_state
from hpc.train.network import build_network

COST_POINTS = 16  # parameter points timed for the cost comparison
COST_REPEATS = 3


class Surrogate:
    """x (model units) → standardize → network → de-standardize → target (model units)."""

    def __init__(self, network, params, normalization: dict, inputs: list[str], output_dims: dict | None = None):
        import jax

        self.network, self.params, self.inputs = network, params, list(inputs)
        self.output_dims = output_dims or {}
        self.x_mean, self.x_std, self.y_mean, self.y_std = (np.asarray(normalization[k], np.float32)
                                                            for k in ("x_mean", "x_std", "y_mean", "y_std"))
        self._apply = jax.jit(lambda p, x: network.apply({"params": p}, x))

    def __call__(self, **values) -> np.ndarray:
        """The target at the given inputs (arrays of one length, one per input name)."""
        missing = [n for n in self.inputs if n not in values]
        if missing:
            raise TypeError(f"missing inputs: {', '.join(missing)} (inputs: {', '.join(self.inputs)})")
        rows = np.atleast_1d(np.asarray(values[self.inputs[0]])).shape[0]
        x = np.concatenate([np.asarray(values[n], np.float32).reshape(rows, -1) for n in self.inputs], axis=1)
        return self.predict_standardized((x - self.x_mean) / self.x_std)

    def predict_standardized(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._apply(self.params, x)) * self.y_std + self.y_mean


def load_surrogate(name: str, root: Path | None = None, step: int | None = None) -> Surrogate:
    """The surrogate of run ``name`` from its latest (or the given) checkpoint."""
    state, meta = load_state(paths.checkpoint_dir(name, root), step)
    outputs = len(meta["normalization"]["y_mean"])
    network = build_network(meta["network"], outputs)
    return Surrogate(network, state["params"], meta["normalization"], meta["data"]["inputs"],
                     meta["data"].get("output_dims"))


def _best_time(fn, repeats: int = COST_REPEATS) -> float:
    fn()  # compile and warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _model_seconds_per_point(sweep, heldout_params: dict[str, np.ndarray], n: int) -> tuple[float, int]:
    """One model solve per point: jit(vmap(solve)) over n held-out points sharing static values."""
    import jax
    import jax.numpy as jnp

    from hpc.models import get_model

    model = get_model(sweep.model)

    def value(name, i):
        p = model.parameter(name)
        raw = heldout_params[name][i] if name in heldout_params else sweep.fixed[name]
        return {"int": int, "bool": bool, "float": float}.get(p.kind, lambda v: v)(raw)

    statics = [p.name for p in model.parameters if p.role != "dynamic"]
    count = len(next(iter(heldout_params.values())))
    first = tuple(value(s, 0) for s in statics)
    chosen = [i for i in range(count) if tuple(value(s, i) for s in statics) == first][:n]
    static = dict(zip(statics, first), dtype=jnp.float32)
    device = jax.local_devices()[0]
    dynamic = {p.name: jax.device_put(np.asarray([value(p.name, i) for i in chosen],
                                                 np.float32 if p.kind == "float" else np.int32), device)
               for p in model.parameters if p.role == "dynamic"}
    solve = jax.jit(jax.vmap(lambda d: model.solve(d, static)))
    return _best_time(lambda: jax.block_until_ready(solve(dynamic))) / len(chosen), len(chosen)


def compare_cost(spec, dataset, network, params) -> dict:
    """Seconds per parameter point: the surrogate (every row of the point) against a model solve,
    both batched over the same held-out points on one device of this process."""
    import jax

    from hpc.train.data import synthetic_function

    device = jax.local_devices()[0]
    params = jax.device_put(params, device)
    apply = jax.jit(lambda p, x: network.apply({"params": p}, x))
    n_points = dataset.points["heldout"]
    rows_per_point = max(1, len(dataset.x_heldout) // max(1, n_points))
    if spec.data.kind == "zarr":  # no model to compare with: the surrogate's cost alone
        model_s, reference, timed = float("nan"), "none (a user's data set)", len(dataset.x_heldout)
        rows_per_point = 1
    elif spec.data.kind == "synthetic":
        n = min(len(dataset.x_heldout), 4096)
        x_model = dataset.heldout_params["x"][:n].astype(np.float64)
        model_s = _best_time(lambda: synthetic_function(x_model, dataset.outputs, spec.data.synthetic["seed"])) / n
        reference, timed = "synthetic function (numpy)", n
    else:
        model_s, timed = _model_seconds_per_point(spec.data.sweep, dataset.heldout_params, COST_POINTS)
        reference = f"{spec.data.sweep.model} solve (jit(vmap), float32)"
    x = jax.device_put(dataset.x_heldout[: timed * rows_per_point], device)
    surrogate_s = _best_time(lambda: jax.block_until_ready(apply(params, x))) / timed
    return {"surrogate_s_per_point": surrogate_s, "model_s_per_point": model_s,
            "speedup": model_s / surrogate_s if surrogate_s > 0 and model_s == model_s else None, "cost_points": timed,
            "rows_per_point": rows_per_point, "cost_reference": reference,
            "cost_device": str(device)}
