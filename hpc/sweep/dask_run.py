"""The dask backend of a sweep: a sweep's chunks as many small tasks on a dask-jobqueue SLURMCluster.

For sweeps of thousands of points that each take seconds, one sbatch per shard would drown the
scheduler; here one Snakemake job starts a dask cluster whose workers are Slurm jobs (adaptive,
within the spec's limits), and every chunk of the plan is one task. A task solves its chunk on
its worker and writes it (a chunk has one writer: zarr v3 has no locks); when every chunk of a
shard is committed, this process writes the shard's marker, so aggregate and status read the
same store and markers as with one job per shard. The marker merges the shard's chunk summaries:
errors of every chunk, ``processes`` the distinct workers that ran its chunks, and ``job_id`` the
worker job's only where one Slurm job ran them all (``job_ids`` lists them).

The cluster itself (SLURMCluster or LocalCluster, adaptive workers that retire before their
walltime) comes from hpc.execution.dask_cluster.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from contextlib import contextmanager
from functools import lru_cache

from hpc.core import paths
from hpc.execution import compile_cache, distributed
from hpc.execution.dask_cluster import make_cluster, settings
from hpc.sweep import store
from hpc.sweep.plan import Plan, read_plan


@lru_cache(maxsize=8)
def _cached_plan(plan_file: str, digest: str) -> Plan:
    return read_plan(plan_file)


@lru_cache(maxsize=8)
def _cached_solver(plan_file: str, digest: str):
    """One solver per worker process and plan, so a worker compiles once, not once per task."""
    from hpc.models import get_model
    from hpc.sweep.runner import MeshSolver, device_batch_size

    plan = _cached_plan(plan_file, digest)
    compile_cache.enable(paths.root_of_plan(plan_file))  # the first worker compiles, the others load
    return MeshSolver(get_model(plan.model, plan.spec.get("model_source")), plan.precision, device_batch_size(plan))


def solve_chunk(plan_file: str, digest: str, chunk_id: int) -> dict:
    """One task: solve and commit one chunk (runs on a worker; compiled solvers are reused)."""
    from hpc.sweep.runner import configure_precision, run_shard

    plan = _cached_plan(plan_file, digest)
    configure_precision(plan.precision)
    root = paths.root_of_plan(plan_file)
    shard = plan.shard_of_chunk(chunk_id)
    summary = run_shard(plan, shard, root, chunk_ids=[chunk_id], solver=_cached_solver(plan_file, digest))
    return dict(summary, chunk=chunk_id, shard=shard, worker=worker_name())


def worker_name() -> str | None:
    """The dask worker running this task (its address): what a shard's ``processes`` counts, since
    every chunk is a task and one worker runs many (merge_summaries, process_key)."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return None


@contextmanager
def stop_on_sigterm():
    """SIGTERM (the driver job cancelled or at its time limit, Snakemake stopping its jobs) as
    SystemExit(143), so the ``with`` blocks around it close the cluster on the way out: a
    SLURMCluster cancels its worker jobs, pending ones included. Python's default for SIGTERM
    ends the process at once, and a worker job still pending then stays in the queue, to start
    later and wait for a scheduler that is gone. A second SIGTERM while closing is ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("dask: stopped by SIGTERM: closing the cluster (its worker jobs are cancelled)", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def run_sweep(plan_file: str, dask_opts: dict | None = None) -> dict:
    """Run every uncommitted chunk of the plan as dask tasks; write shard markers as shards finish."""
    from distributed import Client, as_completed

    from hpc.sweep.runner import commit_shard, merge_summaries

    plan = read_plan(plan_file)
    root = paths.root_of_plan(plan_file)
    opts = settings(dask_opts)
    done_markers = store.valid_markers(plan, root)
    todo = [s for s in range(plan.n_shards) if s not in done_markers]
    chunks = [c for s in todo for c in plan.shard_chunk_ids(s)]
    started = time.time()
    print(f"dask: {len(chunks)} chunk tasks of {len(todo)} shards ({plan.n_shards - len(todo)} shards already done)",
          file=sys.stderr, flush=True)
    parts: dict[int, list[dict]] = {s: [] for s in todo}
    remaining = {s: len(plan.shard_chunk_ids(s)) for s in todo}
    with stop_on_sigterm(), make_cluster(opts) as cluster, Client(cluster) as client:
        kind = "slurm" if type(cluster).__name__ == "SLURMCluster" else "local"  # cluster: auto resolved
        futures = [client.submit(solve_chunk, str(plan_file), plan.digest, c, key=f"chunk-{plan.digest}-{c}",
                                 pure=False, retries=2) for c in chunks]
        finished = 0
        for future in as_completed(futures):
            part = future.result()
            shard = part["shard"]
            parts[shard].append(part)
            remaining[shard] -= 1
            finished += 1
            if remaining[shard] == 0:
                commit_shard(plan, shard, merge_summaries(plan, shard, parts[shard]), root)
            if finished % max(1, len(chunks) // 20) == 0 or finished == len(chunks):
                elapsed = time.time() - started
                print(f"dask: {finished}/{len(chunks)} chunks, {elapsed:.1f} s, "
                      f"{finished / max(elapsed, 1e-9):.1f} chunks/s", file=sys.stderr, flush=True)
    return {"chunks": len(chunks), "shards": len(todo), "seconds": round(time.time() - started, 3),
            "host": distributed.node_name(), "cluster": kind}


__all__ = ["run_sweep", "solve_chunk"]
