"""Run one shard: the model on the shard's points, over every device of every process.

This is where ``jit``, ``vmap`` and the device mesh are applied to a model's one-point ``solve``.

- The shard's chunks are split among the job's processes in contiguous runs; each process
  writes only the chunks it owns (zarr v3 has no locks).
- One mesh spans all processes' devices. Each step, every process contributes the same number of
  points per local device; ``shard_map`` runs ``vmap(solve)`` on each device's block, so a
  device's iterations never wait on another device (no collective inside the solve).
- Every device solves blocks of exactly ``device_batch`` points (padded with a real point), a
  size that depends on the sweep alone: the compiled per-device program, and so every bit of
  every result, is the same however the sweep is split into shards, processes and devices.
- Points are grouped by their static parameter values (one compilation per group), and the
  groups are walked in one global order, so all processes run the same steps in lockstep.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Callable, Iterable

import numpy as np

from hpc.core import paths, zarrio
from hpc.core.files import write_atomic
from hpc.execution import compile_cache, distributed
from hpc.models import get_model
from hpc.models.base import Model
from hpc.sweep import store
from hpc.sweep.plan import Plan, read_plan


def configure_precision(precision: str) -> None:
    """float64 needs JAX's x64 mode, which must be switched on before any array is made."""
    import jax

    jax.config.update("jax_enable_x64", precision == "float64")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def static_names(model: Model) -> list[str]:
    return [p.name for p in model.parameters if p.role != "dynamic"]


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def parameter_table(model: Model, fixed: dict, swept: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Every parameter's value at each of ``n`` points (swept values, else the fixed one)."""
    return {p.name: (np.asarray(swept[p.name]) if p.name in swept else np.full(n, fixed[p.name], dtype=object))
            for p in model.parameters}


def static_keys(model: Model, table: dict[str, np.ndarray], n: int) -> list[tuple]:
    names = static_names(model)
    if not names:
        return [()] * n
    return [tuple(_plain(v) for v in key) for key in zip(*(table[s] for s in names))]


class ModelError(Exception):
    """The model raised while being traced or compiled for one set of static values."""


class MeshSolver:
    """``jit(shard_map(vmap(solve)))`` over a 1-D mesh of all devices, one per static group."""

    def __init__(self, model: Model, precision: str, device_batch: int):
        import jax
        from jax.sharding import Mesh

        self.model = model
        self.precision = precision
        self.device_batch = device_batch
        self.mesh = Mesh(np.array(jax.devices()), ("points",))
        self.local_devices = len(jax.local_devices())
        self._compiled: dict[tuple, Callable] = {}
        self.compile_s = 0.0  # seconds spent compiling (one compilation per static group)

    @property
    def process_batch(self) -> int:
        return self.device_batch * self.local_devices

    def _solver(self, key: tuple) -> Callable:
        if key not in self._compiled:
            import jax
            import jax.numpy as jnp
            from jax.sharding import PartitionSpec as P

            static = dict(zip(static_names(self.model), key))
            static["dtype"] = jnp.float64 if self.precision == "float64" else jnp.float32
            batch = jax.vmap(lambda dynamic: self.model.solve(dynamic, static))
            self._compiled[key] = jax.jit(jax.shard_map(batch, mesh=self.mesh, in_specs=P("points"),
                                                        out_specs=P("points"), check_vma=False))
        return self._compiled[key]

    @staticmethod
    def collect(out: dict) -> dict[str, np.ndarray]:
        """This process's rows of a submitted step's outputs (waits for them)."""
        return {name: _local_rows(value) for name, value in out.items()}

    def submit(self, key: tuple, dynamic: dict[str, np.ndarray]) -> dict:
        """Start solving this process's ``process_batch`` points (compiling first if need be); every
        process calls this in lockstep. The outputs are device arrays still being computed:
        ``collect`` them."""
        import jax
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        sharding = NamedSharding(self.mesh, P("points"))
        args = {name: jax.make_array_from_process_local_data(sharding, value) for name, value in dynamic.items()}
        function = self._solver(key)
        if not isinstance(function, jax.stages.Compiled):
            t0 = time.perf_counter()
            try:  # a model's own error shows here; a failure at run time (memory, device) is not caught
                function = self._compiled[key] = function.lower(args).compile()
            except Exception as exc:
                raise ModelError(f"{type(exc).__name__}: {exc}") from exc
            finally:
                self.compile_s += time.perf_counter() - t0
        return function(args)


def _local_rows(array) -> np.ndarray:
    """This process's rows of a points-sharded global array, in the order it contributed them."""
    shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.concatenate([np.asarray(s.data) for s in shards])


def solve_points(model: Model, fixed: dict, swept: dict[str, np.ndarray], precision: str, batch_size: int,
                 progress: Callable[[int, int], None] | None = None, *, solver: MeshSolver | None = None,
                 group_steps: dict[tuple, int] | None = None, errors: dict | None = None) -> dict[str, np.ndarray]:
    """Solve the model at this process's ``n`` points (``swept`` maps names to ``n`` values),
    ``batch_size`` points per device per step.

    With several processes, ``group_steps`` (static key -> number of steps, the same on every
    process) keeps them in lockstep; a process with fewer points pads with its own or, when it
    has none in a group, skips nothing: it feeds copies of the group's first point (``fixed``
    values) and discards the results. Returns every output with a leading axis of length ``n``,
    and ``failed``: points whose static group the model could not be built for (the model raised);
    their messages go into ``errors`` (static key -> message) when given.
    """
    n = len(next(iter(swept.values()))) if swept else 1
    solver = solver or MeshSolver(model, precision, batch_size)
    table = parameter_table(model, fixed, swept, n)
    keys = static_keys(model, table, n)
    members: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    if group_steps is None:
        group_steps = {key: math.ceil(len(idx) / solver.process_batch) for key, idx in members.items()}
    dynamic = [p for p in model.parameters if p.role == "dynamic"]
    float_dtype = store.float_dtype(precision)
    filler = group_fillers(model, fixed, swept)

    results: dict[str, np.ndarray] = {}
    failures: dict[tuple, str] = {}
    done = 0
    pending: list = []  # (points, outputs still computing) of the step submitted last

    def collect_pending() -> None:
        nonlocal done
        for idx, submitted in pending:
            for name, value in solver.collect(submitted).items():
                if name not in results:
                    results[name] = np.empty((n,) + value.shape[1:], value.dtype)
                results[name][idx] = value[: len(idx)]
            done += len(idx)
            if progress and len(idx):
                progress(done, n)
        pending.clear()

    # One step in flight: the next step is submitted before the last one's outputs are fetched and
    # stored, so the host's work overlaps the devices'.
    for key in sorted(group_steps, key=repr):
        idx_all = np.asarray(members.get(key, []), dtype=int)
        for step in range(group_steps[key]) if key not in failures else ():
            idx = idx_all[step * solver.process_batch:(step + 1) * solver.process_batch]
            args = {}
            for p in dynamic:
                dt = float_dtype if p.kind == "float" else np.int32
                if len(idx):
                    values = table[p.name][idx]
                    values = np.concatenate([values, np.repeat(values[-1:], solver.process_batch - len(idx))])
                else:
                    values = np.full(solver.process_batch, filler.get(key, {}).get(p.name, fixed.get(p.name)))
                args[p.name] = values.astype(dt)
            try:
                submitted = solver.submit(key, args)
            except ModelError as exc:
                failures[key] = str(exc)  # every process fails alike: the same code and static values
                break
            finally:
                collect_pending()
            pending.append((idx, submitted))
    collect_pending()
    failed = np.zeros(n, bool)
    for key, message in failures.items():
        members_of_key = np.asarray(members.get(key, []), dtype=int)
        failed[members_of_key] = True
        if errors is not None and len(members_of_key):
            errors[key] = message
    results["failed"] = failed
    return fill_failed(model, fixed, results, n, precision)


def fill_failed(model: Model, fixed: dict, results: dict, n: int, precision: str) -> dict:
    """Failed points get fill values (NaN, 0, False) in every output, never a number."""
    sizes = {dim: len(values) for dim, values in model.coords(fixed).items()}
    failed = results["failed"]
    for out in model.outputs:
        dtype = store.output_dtype(out.dtype, precision)
        if out.name not in results:
            results[out.name] = np.full((n,) + tuple(sizes[d] for d in out.dims), zarrio.fill_value(dtype), dtype)
        elif failed.any():
            results[out.name][failed] = zarrio.fill_value(dtype)
    return results


def group_fillers(model: Model, fixed: dict, swept: dict[str, np.ndarray]) -> dict[tuple, dict]:
    """A valid dynamic point for each static group (the first one), for padding steps."""
    n = len(next(iter(swept.values()))) if swept else 1
    table = parameter_table(model, fixed, swept, n)
    out: dict[tuple, dict] = {}
    for i, key in enumerate(static_keys(model, table, n)):
        if key not in out:
            out[key] = {p.name: _plain(table[p.name][i]) for p in model.parameters if p.role == "dynamic"}
    return out


def finite_mask(model: Model, outputs: dict[str, np.ndarray]) -> np.ndarray:
    """True where every float output of a point is finite."""
    n = len(next(iter(outputs.values())))
    ok = np.ones(n, bool)
    for out in model.outputs:
        value = outputs[out.name]
        if value.dtype.kind == "f":
            ok &= np.isfinite(value.reshape(n, -1)).all(axis=1)
    return ok


def device_batch_size(plan: Plan) -> int:
    """Points per device per step: fixed by the sweep, not by how it is split."""
    return max(1, min(plan.batch_size, plan.n_points))


def split_chunks(chunk_ids: list[int], parts: int) -> list[list[int]]:
    """Contiguous runs of chunks, one per process."""
    return [list(part) for part in np.array_split(np.asarray(chunk_ids, dtype=int), parts)]


def run_shard(plan: Plan, shard: int, root=None, chunk_ids: Iterable[int] | None = None,
              launch: distributed.Launch | None = None, solver: MeshSolver | None = None) -> dict:
    """Compute and commit this process's chunks of ``shard`` (or the given subset of them).

    Chunks already committed (``point_done``) are not recomputed: an interrupted shard resumes.
    Returns this process's summary for the shard's completion marker.
    """
    import jax

    launch = launch or distributed.Launch("single")
    model = get_model(plan.model)
    group = store.open_arrays(plan.name, root)
    chunk_ids = list(plan.shard_chunk_ids(shard) if chunk_ids is None else chunk_ids)
    todo_all = [c for c in chunk_ids if not store.region_done(group, plan.chunk_region(c))]
    per_process = split_chunks(todo_all, jax.process_count())
    solver = solver or MeshSolver(model, plan.precision, device_batch_size(plan))

    # Every process knows every process's points, so all agree on the lockstep schedule.
    fixed = plan.spec["fixed"]
    steps: dict[tuple, int] = {}
    for chunks in per_process:
        flat = [plan.region_points(plan.chunk_region(c)) for c in chunks]
        if not flat:
            continue
        values = plan.point_values(np.concatenate(flat))
        n = len(next(iter(values.values()))) if values else len(np.concatenate(flat))
        counts: dict[tuple, int] = {}
        for key in static_keys(model, parameter_table(model, fixed, values, n), n):
            counts[key] = counts.get(key, 0) + 1
        for key, count in counts.items():
            steps[key] = max(steps.get(key, 0), math.ceil(count / solver.process_batch))

    mine = per_process[jax.process_index()]
    regions = [plan.chunk_region(c) for c in mine]
    flat = [plan.region_points(r) for r in regions]
    n_points = sum(len(f) for f in flat)
    started = time.time()
    who = distributed.where() if launch.method != "single" else distributed.node_name()
    _log(f"shard {shard}: {who}: {n_points} points in {len(mine)} chunks to compute "
         f"({len(chunk_ids) - len(todo_all)} of the shard's {len(chunk_ids)} chunks already committed), "
         f"{jax.device_count()} devices")

    def progress(done: int, total: int) -> None:
        _log(f"shard {shard}: {done}/{total} points ({100 * done / total:.0f}%), {time.time() - started:.1f} s")

    summary = {"non_finite": 0, "not_converged": 0, "failed": 0, "errors": []}
    errors: dict[tuple, str] = {}
    if steps:
        all_flat = np.concatenate(flat) if flat else np.zeros(0, int)
        swept = plan.point_values(all_flat) if n_points else {}
        if not n_points:
            # No points of our own: feed padding in lockstep with the others, write nothing.
            swept = {k: v[:0] for k, v in plan.point_values(np.zeros(1, int)).items()}
        outputs = solve_points(model, fixed, swept, plan.precision, solver.device_batch, progress,
                               solver=solver, group_steps=steps, errors=errors)
        if n_points:
            finite = finite_mask(model, outputs)
            failed = outputs["failed"]
            summary["failed"] = int(failed.sum())
            summary["non_finite"] = int((~finite & ~failed).sum())
            if "converged" in outputs:
                summary["not_converged"] = int((~outputs["converged"].astype(bool) & ~failed).sum())
            names = static_names(model)
            summary["errors"] = [{"static": dict(zip(names, key)), "error": message} for key, message in errors.items()]
            for item in summary["errors"]:
                _log(f"shard {shard}: the model failed for {item['static']}: {item['error']}")
            offset = 0
            for region, points in zip(regions, flat):
                block_shape = tuple(s.stop - s.start for s in region)
                sl = slice(offset, offset + len(points))
                blocks = {name: value[sl].reshape(block_shape + value.shape[1:]) for name, value in outputs.items()}
                store.write_region(group, region, blocks, finite[sl].reshape(block_shape))
                offset += len(points)
    ended = time.time()
    summary.update({
        "computed": n_points,
        "start": started,
        "end": ended,
        "duration_s": round(ended - started, 3),
        "host": distributed.node_name(),
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
        "process": jax.process_index(),
        "devices": [str(d) for d in jax.local_devices()],
        "compile_s": round(solver.compile_s, 3),
        "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    })
    return summary


def merge_summaries(plan: Plan, shard: int, parts: list[dict]) -> dict:
    """One marker body from every process's summary."""
    hosts = sorted({p["host"] for p in parts})
    return {
        "points": plan.shard_points(shard),
        "computed": sum(p["computed"] for p in parts),
        "non_finite": sum(p["non_finite"] for p in parts),
        "failed": sum(p.get("failed", 0) for p in parts),
        "errors": [e for p in parts[:1] for e in p.get("errors", [])],
        "not_converged": sum(p["not_converged"] for p in parts),
        "start": min(p["start"] for p in parts),
        "end": max(p["end"] for p in parts),
        "duration_s": round(max(p["end"] for p in parts) - min(p["start"] for p in parts), 3),
        "host": ",".join(hosts),
        "processes": len(parts),
        "job_id": parts[0].get("job_id"),
        "slurm_restart_count": parts[0].get("slurm_restart_count", 0),
        "devices": sum(len(p["devices"]) for p in parts),
        "compile_s": max((p.get("compile_s", 0.0) for p in parts), default=0.0),
        "per_process": parts,
    }


def commit_shard(plan: Plan, shard: int, summary: dict, root=None, marker=None) -> None:
    """Write the shard's completion marker: the last step, and only once every chunk is committed."""
    group = store.open_arrays(plan.name, root, mode="r")
    for c in plan.shard_chunk_ids(shard):
        if not store.region_done(group, plan.chunk_region(c)):
            raise RuntimeError(f"shard {shard}: chunk {c} is not committed; refusing to mark the shard done")
    body = dict(summary, shard=shard, digest=plan.digest, name=plan.name)
    write_atomic(marker or paths.marker_path(plan.name, shard, root), json.dumps(body, indent=1))


def run_and_commit(plan_file: str, shard: int, marker: str | None = None) -> dict:
    """Run a shard from its plan file (results/NAME/plan.json) in this process (one of the job's)
    and, on process 0 once every process is done, commit it."""
    plan = read_plan(plan_file)
    root = paths.root_of_plan(plan_file)
    configure_precision(plan.precision)
    launch = distributed.start(distributed.detect_launch())
    compile_cache.enable(root)
    try:
        part = run_shard(plan, shard, root, launch=launch)
    except Exception as exc:
        raise RuntimeError(f"shard {shard}: {distributed.where()} failed: {type(exc).__name__}: {exc}") from exc
    parts = distributed.gather(launch, part)
    summary = merge_summaries(plan, shard, parts)
    if part["process"] == 0:
        commit_shard(plan, shard, summary, root, marker)
        _log(f"shard {shard}: committed {summary['points']} points from {summary['processes']} processes on "
             f"{summary['host']} in {summary['duration_s']} s ({summary['failed']} failed, "
             f"{summary['non_finite']} non-finite, {summary['not_converged']} not converged)")
    distributed.barrier(launch, f"shard-{shard}-committed")
    return summary
