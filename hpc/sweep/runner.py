"""Run one shard: the model on the shard's points, over every device of every process.

This is where ``jit``, ``vmap`` and the device mesh are applied to a model's one-point ``solve``.

- A shard's work (hpc.sweep.work) is built once: its uncommitted chunks, their points'
  parameters and static keys, and the split of the chunks among the job's processes in
  contiguous runs; each process writes only the chunks it owns (zarr v3 has no locks).
- ``run_shard`` walks it in named steps: select the uncommitted chunks, build the work, solve
  this process's points (``solve_schedule``), write and commit its chunks, return its summary.
- One mesh spans all processes' devices. Each step, every process contributes the same number of
  points per local device; ``shard_map`` runs ``vmap(solve)`` on each device's block, so a
  device's iterations never wait on another device (no collective inside the solve).
- Every device solves blocks of exactly ``device_batch`` points (padded with a real point), a
  size that depends on the sweep alone: the compiled per-device program, and so every bit of
  every result, is the same however the sweep is split into shards, processes and devices.
- Points are grouped by their static parameter values (one compilation per group), and the
  groups are walked in one global order, so all processes run the same steps in lockstep; a
  process with fewer points in a group than another pads its extra steps with the group's
  first point and drops their results.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from hpc.core import paths, zarrio
from hpc.core.files import write_atomic
from hpc.execution import compile_cache, distributed, slurm_plugin
from hpc.models import get_model
from hpc.models.base import Model
from hpc.sweep import store
from hpc.sweep.plan import Plan, read_plan
from hpc.sweep.work import Chunk, Points, shard_work, static_names


def configure_precision(precision: str) -> None:
    """float64 needs JAX's x64 mode, which must be switched on before any array is made."""
    import jax

    jax.config.update("jax_enable_x64", precision == "float64")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
                 progress: Callable[[int, int], None] | None = None, *,
                 solver: MeshSolver | None = None) -> dict[str, np.ndarray]:
    """Solve the model at ``n`` points in this process alone (``swept`` maps names to ``n``
    values; every other parameter at its ``fixed`` value), ``batch_size`` points per device per
    step. Returns what ``solve_schedule`` returns, less the error messages."""
    n = len(next(iter(swept.values()))) if swept else 1
    solver = solver or MeshSolver(model, precision, batch_size)
    points = Points.of(model, fixed, swept, n)
    outputs, _ = solve_schedule(solver, fixed, points, points.group_steps(solver.process_batch),
                                points.first_points(model), progress)
    return outputs


def solve_schedule(solver: MeshSolver, fixed: dict, points: Points, group_steps: dict[tuple, int],
                   fillers: dict[tuple, dict], progress: Callable[[int, int], None] | None = None
                   ) -> tuple[dict[str, np.ndarray], dict[tuple, str]]:
    """Solve this process's ``points`` in the lockstep schedule ``group_steps`` (static key ->
    steps, the same on every process), padding a step past this process's points of a group
    with that group's point in ``fillers``.

    Returns every output with a leading axis of length ``points.n``, and ``failed`` (the points
    whose static group the model could not be built for: the model raised), filled as
    ``fill_failed`` says; and the model's message for each failed group these points are in.
    """
    groups = points.groups()
    rows = _Rows(points.n, progress)
    failures: dict[tuple, str] = {}
    pending = None  # (points, outputs still computing) of the step submitted last
    # One step in flight: the next step is submitted before the last one's outputs are fetched and
    # stored, so the host's work overlaps the devices'.
    for key, idx in lockstep_steps(groups, group_steps, solver.process_batch):
        if key in failures:
            continue
        args = step_inputs(solver, points, key, idx, fillers)
        try:
            submitted = solver.submit(key, args)
        except ModelError as exc:
            failures[key] = str(exc)  # every process fails alike: the same code and static values
            submitted = None
        rows.add(pending)
        pending = (idx, submitted) if submitted is not None else None
    rows.add(pending)
    failed = np.zeros(points.n, bool)
    errors = {}
    for key, message in failures.items():
        if key in groups:
            failed[groups[key]] = True
            errors[key] = message
    outputs = dict(rows.outputs, failed=failed)
    return fill_failed(solver.model, fixed, outputs, points.n, solver.precision), errors


def lockstep_steps(groups: dict[tuple, np.ndarray], group_steps: dict[tuple, int], process_batch: int):
    """(static key, this process's points in the step) for every step, in the one order every
    process walks: the groups in the order of their keys' repr, each group's steps in turn. A step
    past this process's points in the group has none."""
    for key in sorted(group_steps, key=repr):
        members = groups.get(key, np.zeros(0, int))
        for step in range(group_steps[key]):
            yield key, members[step * process_batch:(step + 1) * process_batch]


def step_inputs(solver: MeshSolver, points: Points, key: tuple, idx: np.ndarray,
                fillers: dict[tuple, dict]) -> dict[str, np.ndarray]:
    """The dynamic parameters of one step's ``process_batch`` points: the points ``idx``, padded
    with copies of the last; with no points, copies of the group's point in ``fillers``."""
    float_dtype = store.float_dtype(solver.precision)
    args = {}
    for p in solver.model.parameters:
        if p.role != "dynamic":
            continue
        if len(idx):
            values = points.table[p.name][idx]
            values = np.concatenate([values, np.repeat(values[-1:], solver.process_batch - len(idx))])
        else:
            values = np.full(solver.process_batch, fillers[key][p.name])
        args[p.name] = values.astype(float_dtype if p.kind == "float" else np.int32)
    return args


class _Rows:
    """A process's outputs, one row per point, filled in step by step."""

    def __init__(self, n: int, progress: Callable[[int, int], None] | None):
        self.n, self.progress = n, progress
        self.done = 0
        self.outputs: dict[str, np.ndarray] = {}

    def add(self, step: tuple[np.ndarray, dict] | None) -> None:
        """Wait for a submitted step's outputs and store its points' rows (the padding's are dropped)."""
        if step is None:
            return
        idx, submitted = step
        for name, value in MeshSolver.collect(submitted).items():
            if name not in self.outputs:
                self.outputs[name] = np.empty((self.n,) + value.shape[1:], value.dtype)
            self.outputs[name][idx] = value[: len(idx)]
        self.done += len(idx)
        if self.progress and len(idx):
            self.progress(self.done, self.n)


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


def run_shard(plan: Plan, shard: int, root=None, chunk_ids: Iterable[int] | None = None,
              launch: distributed.Launch | None = None, solver: MeshSolver | None = None) -> dict:
    """Compute and commit this process's chunks of ``shard`` (or the given subset of them).

    Chunks already committed (``point_done``) are not recomputed: an interrupted shard resumes.
    Returns this process's summary for the shard's completion marker.
    """
    import jax

    model = get_model(plan.model, plan.spec.get("model_source"))  # a changed model file is refused
    group = store.open_arrays(plan.name, root)
    chunk_ids = list(plan.shard_chunk_ids(shard) if chunk_ids is None else chunk_ids)
    todo = [c for c in chunk_ids if not store.region_done(group, plan.chunk_region(c))]
    solver = solver or MeshSolver(model, plan.precision, device_batch_size(plan))
    work = shard_work(plan, model, todo, jax.process_count(), solver.process_batch)
    mine = work.processes[jax.process_index()]
    started, usage = time.time(), process_usage()
    who = distributed.where() if launch and launch.method != "single" else distributed.node_name()
    _log(f"shard {shard}: {who}: {mine.points.n} points in {len(mine.chunks)} chunks to compute "
         f"({len(chunk_ids) - len(todo)} of the shard's {len(chunk_ids)} chunks already committed), "
         f"{jax.device_count()} devices")

    def progress(done: int, total: int) -> None:
        _log(f"shard {shard}: {done}/{total} points ({100 * done / total:.0f}%), {time.time() - started:.1f} s")

    outcome = {"non_finite": 0, "not_converged": 0, "failed": 0, "errors": []}
    if work.group_steps:  # every process takes every step: with no points of its own, padding alone
        outputs, errors = solve_schedule(solver, plan.fixed_parameters, mine.points, work.group_steps,
                                         work.fillers, progress)
        if mine.points.n:
            finite = finite_mask(model, outputs)
            outcome = count_outcome(model, outputs, finite, errors)
            for item in outcome["errors"]:
                _log(f"shard {shard}: the model failed for {item['static']}: {item['error']}")
            write_chunks(group, mine.chunks, outputs, finite)
    return dict(outcome, **run_record(started, mine.points.n, solver, usage))


def count_outcome(model: Model, outputs: dict[str, np.ndarray], finite: np.ndarray, errors: dict[tuple, str]) -> dict:
    """How many points failed, came out non-finite or did not converge, and the model's message
    for each static group it failed for."""
    failed = outputs["failed"]
    converged = outputs["converged"].astype(bool) if "converged" in outputs else np.ones_like(failed)
    names = static_names(model)
    return {
        "non_finite": int((~finite & ~failed).sum()),
        "not_converged": int((~converged & ~failed).sum()),
        "failed": int(failed.sum()),
        "errors": [{"static": dict(zip(names, key)), "error": message} for key, message in errors.items()],
    }


def write_chunks(group, chunks: tuple[Chunk, ...], outputs: dict[str, np.ndarray], finite: np.ndarray) -> None:
    """Write and commit each chunk from its rows of ``outputs`` (the chunks' points, chunk after chunk)."""
    offset = 0
    for chunk in chunks:
        rows = slice(offset, offset + chunk.size)
        blocks = {name: value[rows].reshape(chunk.block_shape + value.shape[1:]) for name, value in outputs.items()}
        store.write_region(group, chunk.region, blocks, finite[rows].reshape(chunk.block_shape))
        offset += chunk.size


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB. On Linux from VmHWM, which counts this program
    alone: ru_maxrss of a process started by fork and exec keeps the forking parent's size (a shard
    started from a large Snakemake or pytest process would report that process's memory)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    scale = 1024.0 ** 2 if sys.platform == "darwin" else 1024.0  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def process_usage() -> dict:
    """What this process has used so far: CPU seconds (user + system) of it and of its waited-for
    children, and the peak resident memory of each (``peak_rss_mb``; the children's from getrusage)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    scale = 1024.0 ** 2 if sys.platform == "darwin" else 1024.0
    return {"cpu_s": me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime,
            "max_rss_mb": max(peak_rss_mb(), children.ru_maxrss / scale)}


def device_peak_mb() -> list[float] | None:
    """Each local device's peak memory in use (MB), where the backend reports it (GPUs do; CPU
    devices do not: None)."""
    import jax

    peaks = []
    for device in jax.local_devices():
        try:
            stats = device.memory_stats()
        except Exception:
            stats = None
        if not stats or "peak_bytes_in_use" not in stats:
            return None
        peaks.append(round(stats["peak_bytes_in_use"] / 1024.0 ** 2, 3))
    return peaks or None


def run_record(started: float, computed: int, solver: MeshSolver, usage: dict | None = None) -> dict:
    """Where, when and on what this process ran its part of a shard (for the marker), and what it
    used meanwhile: CPU seconds (of it and its children) since ``usage`` (``process_usage()`` at the
    start), its peak RSS so far and its devices' peak memory."""
    import jax

    ended = time.time()
    now = process_usage()
    attempt = os.environ.get("SNAKEMAKE_ATTEMPT")  # where the rule passes Snakemake's attempt
    return {
        "computed": computed,
        "start": started,
        "end": ended,
        "duration_s": round(ended - started, 3),
        "host": distributed.node_name(),
        "pid": os.getpid(),
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
        "snakemake_attempt": int(attempt) if attempt and attempt.isdigit() else None,
        "process": jax.process_index(),
        "devices": [str(d) for d in jax.local_devices()],
        "compile_s": round(solver.compile_s, 3),
        "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_s": round(now["cpu_s"] - (usage or {}).get("cpu_s", 0.0), 3),
        "max_rss_mb": round(now["max_rss_mb"], 3),
        "device_peak_mb": device_peak_mb(),
    }


def process_key(part: dict) -> tuple:
    """Which process a summary came from: (host, its dask worker, or its process index in the job).
    Under dask each chunk is a summary of its own, and a worker runs many of them."""
    return (part.get("host"), part.get("worker") or part.get("process"))


def merge_processes(parts: list[dict]) -> list[dict]:
    """One entry per process (``process_key``): the parts of a dask worker summed into one."""
    merged: dict[tuple, dict] = {}
    for part in sorted(parts, key=lambda p: p.get("start", 0.0)):
        key = process_key(part)
        if key not in merged:
            merged[key] = dict(part, parts=1)
            continue
        m = merged[key]
        m["parts"] += 1
        m["computed"] += part.get("computed", 0)
        for name in ("non_finite", "not_converged", "failed"):
            m[name] = m.get(name, 0) + part.get(name, 0)
        m["errors"] = merge_errors([m, part])
        m["start"], m["end"] = min(m["start"], part["start"]), max(m["end"], part["end"])
        m["duration_s"] = round(m["end"] - m["start"], 3)
        m["cpu_s"] = round((m.get("cpu_s") or 0.0) + (part.get("cpu_s") or 0.0), 3)
        for name in ("max_rss_mb", "compile_s"):
            m[name] = max((v for v in (m.get(name), part.get(name)) if v is not None), default=None)
        if part.get("device_peak_mb"):
            m["device_peak_mb"] = [max(a, b) for a, b in zip(m.get("device_peak_mb") or part["device_peak_mb"],
                                                             part["device_peak_mb"])]
    return sorted(merged.values(), key=lambda p: (str(p.get("host")), p.get("process", 0), str(p.get("worker"))))


def merge_errors(parts: list[dict]) -> list[dict]:
    """The model's errors of every part, one per static key (the first message for it)."""
    seen: dict[str, dict] = {}
    for part in parts:
        for error in part.get("errors", []):
            seen.setdefault(json.dumps(error["static"], sort_keys=True, default=str), error)
    return list(seen.values())


def merge_summaries(plan: Plan, shard: int, parts: list[dict]) -> dict:
    """One marker body from every process's summary (or, under dask, every chunk's).

    Counts add up over the parts; the model's errors are those of every part, one per static key;
    processes and devices count distinct processes (``process_key``), not parts."""
    hosts = sorted({p["host"] for p in parts})
    processes = merge_processes(parts)
    job_ids = list(dict.fromkeys(p.get("job_id") for p in parts if p.get("job_id")))
    attempts = [p["snakemake_attempt"] for p in parts if p.get("snakemake_attempt")]
    rss = [p["max_rss_mb"] for p in parts if p.get("max_rss_mb") is not None]
    peaks = [v for p in processes for v in (p.get("device_peak_mb") or [])]
    return {
        "points": plan.shard_points(shard),
        "computed": sum(p["computed"] for p in parts),
        "non_finite": sum(p["non_finite"] for p in parts),
        "failed": sum(p.get("failed", 0) for p in parts),
        "errors": merge_errors(parts),
        "not_converged": sum(p["not_converged"] for p in parts),
        "start": min(p["start"] for p in parts),
        "end": max(p["end"] for p in parts),
        "duration_s": round(max(p["end"] for p in parts) - min(p["start"] for p in parts), 3),
        "host": ",".join(hosts),
        "processes": len(processes),
        "job_id": job_ids[0] if len(job_ids) == 1 else None,
        "job_ids": job_ids,
        "slurm_restart_count": max((p.get("slurm_restart_count", 0) or 0 for p in parts), default=0),
        "snakemake_attempt": max(attempts) if attempts else None,
        "devices": sum(len(p["devices"]) for p in processes),
        "compile_s": max((p.get("compile_s", 0.0) for p in parts), default=0.0),
        "process_cpu_s": round(sum(p.get("cpu_s") or 0.0 for p in parts), 3) if any("cpu_s" in p for p in parts) else None,
        "process_max_rss_mb": max(rss) if rss else None,
        "device_peak_mb": max(peaks) if peaks else None,
        "per_process": processes,
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
    # A model or code error fails alike on every attempt: say so beside the log, for the Slurm
    # executor not to retry it (hpc.execution.slurm_plugin); an earlier attempt's word is void.
    no_retry = slurm_plugin.no_retry_path(paths.shard_log_path(plan.name, shard, root))
    no_retry.unlink(missing_ok=True)
    try:
        part = run_shard(plan, shard, root, launch=launch)
    except Exception as exc:
        if slurm_plugin.is_final(exc):
            write_atomic(no_retry, f"{type(exc).__name__}: {exc}"[:2000] + "\n")
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
