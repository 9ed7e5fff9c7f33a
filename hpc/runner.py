"""Run one shard: the model on the shard's points, vmapped, written chunk by chunk into the store.

This is where ``jit`` and ``vmap`` are applied to a model's one-point ``solve``. Points are solved
in batches of a fixed size (the last one padded), so a shard compiles once per distinct set of
static parameter values, whatever its number of points.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Callable, Iterable

import numpy as np

from hpc import store
from hpc.models import get_model
from hpc.models.base import Model
from hpc.plan import Plan, read_plan, write_atomic


def configure_precision(precision: str) -> None:
    """float64 needs JAX's x64 mode, which must be switched on before any array is made."""
    import jax

    jax.config.update("jax_enable_x64", precision == "float64")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _static_names(model: Model) -> list[str]:
    return [p.name for p in model.parameters if p.role != "dynamic"]


def make_batch_solver(model: Model, static: dict, precision: str) -> Callable:
    """jit(vmap(solve)) for one set of static values: dynamic arrays of shape (batch,) in, outputs out."""
    import jax
    import jax.numpy as jnp

    static = dict(static, dtype=jnp.float64 if precision == "float64" else jnp.float32)

    def one_point(dynamic):
        return model.solve(dynamic, static)

    return jax.jit(jax.vmap(one_point))


def solve_points(model: Model, fixed: dict, swept: dict[str, np.ndarray], precision: str,
                 batch_size: int, progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Solve the model at ``n`` points: ``swept`` maps parameter name to ``n`` values, ``fixed`` the rest.

    Returns every declared output with a leading axis of length ``n``, as NumPy arrays.
    """
    import jax.numpy as jnp

    n = len(next(iter(swept.values()))) if swept else 1
    params = {p.name: (np.asarray(swept[p.name]) if p.name in swept else np.full(n, fixed[p.name], dtype=object))
              for p in model.parameters}
    static_names = _static_names(model)
    dynamic = [p for p in model.parameters if p.role == "dynamic"]
    float_dtype = store.float_dtype(precision)

    groups: dict[tuple, list[int]] = {}
    keys = list(zip(*(params[s] for s in static_names))) if static_names else [()] * n
    for i, key in enumerate(keys):
        groups.setdefault(tuple(_plain(v) for v in key), []).append(i)

    results: dict[str, np.ndarray] = {}
    done = 0
    for key, members in groups.items():
        solver = make_batch_solver(model, dict(zip(static_names, key)), precision)
        members = np.asarray(members)
        size = min(batch_size, len(members))
        for start in range(0, len(members), size):
            idx = members[start:start + size]
            padded = np.concatenate([idx, np.full(size - len(idx), idx[-1])])  # one shape, one compile
            args = {}
            for p in dynamic:
                dt = float_dtype if p.kind == "float" else np.int32
                args[p.name] = jnp.asarray(params[p.name][padded].astype(dt))
            out = solver(args)
            for name, value in out.items():
                value = np.asarray(value)[: len(idx)]
                if name not in results:
                    results[name] = np.empty((n,) + value.shape[1:], value.dtype)
                results[name][idx] = value
            done += len(idx)
            if progress:
                progress(done, n)
    return results


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def finite_mask(model: Model, outputs: dict[str, np.ndarray]) -> np.ndarray:
    """True where every float output of a point is finite."""
    n = len(next(iter(outputs.values())))
    ok = np.ones(n, bool)
    for out in model.outputs:
        value = outputs[out.name]
        if value.dtype.kind == "f":
            ok &= np.isfinite(value.reshape(n, -1)).all(axis=1)
    return ok


def run_shard(plan: Plan, shard: int, root=None, chunk_ids: Iterable[int] | None = None) -> dict:
    """Compute and commit the chunks of ``shard`` (or the given subset of them).

    Chunks already committed (``point_done``) are not recomputed: an interrupted shard resumes.
    Returns a summary for the shard's completion marker.
    """
    configure_precision(plan.precision)
    import jax

    model = get_model(plan.model)
    group = store.open_arrays(plan.name, root)
    chunk_ids = list(plan.shard_chunk_ids(shard) if chunk_ids is None else chunk_ids)
    todo = [c for c in chunk_ids if not store.region_done(group, plan.chunk_region(c))]
    regions = [plan.chunk_region(c) for c in todo]
    flat = [plan.region_points(r) for r in regions]
    n_points = sum(len(f) for f in flat)
    started = time.time()
    _log(f"shard {shard}: {n_points} points in {len(todo)} chunks to compute "
         f"({len(chunk_ids) - len(todo)} chunks already committed) on {socket.gethostname()}")

    def progress(done: int, total: int) -> None:
        _log(f"shard {shard}: {done}/{total} points ({100 * done / total:.0f}%), {time.time() - started:.1f} s")

    summary = {"non_finite": 0, "not_converged": 0}
    if n_points:
        all_flat = np.concatenate(flat)
        outputs = solve_points(model, plan.spec["fixed"], plan.point_values(all_flat), plan.precision,
                               plan.batch_size, progress)
        finite = finite_mask(model, outputs)
        summary["non_finite"] = int((~finite).sum())
        if "converged" in outputs:
            summary["not_converged"] = int((~outputs["converged"].astype(bool)).sum())
        offset = 0
        for region, points in zip(regions, flat):
            block_shape = tuple(s.stop - s.start for s in region)
            sl = slice(offset, offset + len(points))
            blocks = {name: value[sl].reshape(block_shape + value.shape[1:]) for name, value in outputs.items()}
            store.write_region(group, region, blocks, finite[sl].reshape(block_shape))
            offset += len(points)
    ended = time.time()
    summary.update({
        "points": plan.shard_points(shard),
        "computed": n_points,
        "start": started,
        "end": ended,
        "duration_s": round(ended - started, 3),
        "host": socket.gethostname(),
        "devices": [str(d) for d in jax.local_devices()],
        "processes": 1,
    })
    return summary


def commit_shard(plan: Plan, shard: int, summary: dict, root=None, marker=None) -> None:
    """Write the shard's completion marker: the last step, and only once every chunk is committed."""
    group = store.open_arrays(plan.name, root, mode="r")
    for c in plan.shard_chunk_ids(shard):
        if not store.region_done(group, plan.chunk_region(c)):
            raise RuntimeError(f"shard {shard}: chunk {c} is not committed; refusing to mark the shard done")
    body = dict(summary, shard=shard, digest=plan.digest, name=plan.name)
    write_atomic(marker or store.marker_path(plan.name, shard, root), json.dumps(body, indent=1))


def run_and_commit(plan_file: str, shard: int, marker: str | None = None) -> dict:
    """Run a shard from its plan file (results/NAME/plan.json) and commit it."""
    plan = read_plan(plan_file)
    root = store.root_of_plan(plan_file)
    summary = run_shard(plan, shard, root)
    commit_shard(plan, shard, summary, root, marker)
    _log(f"shard {shard}: committed {summary['points']} points in {summary['duration_s']} s "
         f"({summary['non_finite']} non-finite, {summary['not_converged']} not converged)")
    return summary
