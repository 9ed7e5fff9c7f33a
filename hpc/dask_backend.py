"""The dask backend: a sweep's chunks as many small tasks on a dask-jobqueue SLURMCluster.

For sweeps of thousands of points that each take seconds, one sbatch per shard would drown the
scheduler; here one Snakemake job starts a dask cluster whose workers are Slurm jobs (adaptive,
within the spec's limits), and every chunk of the plan is one task. A task solves its chunk on
its worker and writes it (a chunk has one writer: zarr v3 has no locks); when every chunk of a
shard is committed, this process writes the shard's marker, so aggregate and status read the
same store and markers as with one job per shard.

Workers retire before their walltime (``--lifetime`` shorter than the job's time limit, with a
stagger) so the scheduler moves work off them cleanly instead of losing it to a kill.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

from hpc import compile_cache, distributed, store
from hpc.plan import Plan, read_plan

DEFAULTS = {
    "cluster": "auto",  # slurm, local, or auto (slurm when a Slurm controller answers)
    "min_workers": 0,
    "max_workers": 4,
    "cores": 1,  # per worker job
    "memory_mb": 2000,  # per worker job
    "walltime_min": 30,
    "lifetime_min": 25,  # a worker retires after this (must be below walltime)
    "interface": None,  # network interface for the scheduler and workers, e.g. ib0
    "partition": None,
    "account": None,
}


def settings(spec_dask: dict | None) -> dict:
    return {**DEFAULTS, **(spec_dask or {})}


def slurm_answers() -> bool:
    if not shutil.which("sinfo"):
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def make_cluster(opts: dict):
    """A dask cluster per ``opts``: SLURMCluster with adaptive workers, or a LocalCluster."""
    kind = opts["cluster"]
    if kind == "auto":
        kind = "slurm" if slurm_answers() else "local"
    if kind == "local":
        from distributed import LocalCluster

        return LocalCluster(n_workers=max(1, opts["max_workers"]), threads_per_worker=1, processes=True,
                            dashboard_address=None)
    from dask_jobqueue import SLURMCluster

    walltime = int(opts["walltime_min"])
    lifetime = min(int(opts["lifetime_min"]), max(1, walltime - 2))
    extra = []
    if opts["partition"]:
        extra.append(f"--partition={opts['partition']}")
    if opts["account"]:
        extra.append(f"--account={opts['account']}")
    cluster = SLURMCluster(
        cores=opts["cores"], processes=1, memory=f"{opts['memory_mb']}MB",
        walltime=f"{walltime // 60:02d}:{walltime % 60:02d}:00", interface=opts["interface"],
        job_extra_directives=extra, python=sys.executable,
        worker_extra_args=["--lifetime", f"{lifetime}m", "--lifetime-stagger", "1m", "--lifetime-restart"],
        job_script_prologue=[f"export PYTHONPATH={Path(__file__).resolve().parent.parent}"],
        scheduler_options={"dashboard_address": None},
    )
    cluster.adapt(minimum=opts["min_workers"], maximum=opts["max_workers"])
    return cluster


@lru_cache(maxsize=8)
def _cached_plan(plan_file: str, digest: str) -> Plan:
    return read_plan(plan_file)


@lru_cache(maxsize=8)
def _cached_solver(plan_file: str, digest: str):
    """One solver per worker process and plan, so a worker compiles once, not once per task."""
    from hpc.models import get_model
    from hpc.runner import MeshSolver, device_batch_size

    plan = _cached_plan(plan_file, digest)
    compile_cache.enable(store.root_of_plan(plan_file))  # the first worker compiles, the others load
    return MeshSolver(get_model(plan.model), plan.precision, device_batch_size(plan))


def solve_chunk(plan_file: str, digest: str, chunk_id: int) -> dict:
    """One task: solve and commit one chunk (runs on a worker; compiled solvers are reused)."""
    from hpc.runner import configure_precision, run_shard

    plan = _cached_plan(plan_file, digest)
    configure_precision(plan.precision)
    root = store.root_of_plan(plan_file)
    shard = next(s for s in range(plan.n_shards) if chunk_id in plan.shard_chunk_ids(s))
    summary = run_shard(plan, shard, root, chunk_ids=[chunk_id], solver=_cached_solver(plan_file, digest))
    return dict(summary, chunk=chunk_id, shard=shard)


def run_sweep(plan_file: str, dask_opts: dict | None = None) -> dict:
    """Run every uncommitted chunk of the plan as dask tasks; write shard markers as shards finish."""
    from distributed import Client, as_completed

    from hpc.runner import commit_shard, merge_summaries

    plan = read_plan(plan_file)
    root = store.root_of_plan(plan_file)
    opts = settings(dask_opts)
    done_markers = store.valid_markers(plan, root)
    todo = [s for s in range(plan.n_shards) if s not in done_markers]
    chunks = [c for s in todo for c in plan.shard_chunk_ids(s)]
    started = time.time()
    print(f"dask: {len(chunks)} chunk tasks of {len(todo)} shards ({plan.n_shards - len(todo)} shards already done)",
          file=sys.stderr, flush=True)
    parts: dict[int, list[dict]] = {s: [] for s in todo}
    remaining = {s: len(plan.shard_chunk_ids(s)) for s in todo}
    with make_cluster(opts) as cluster, Client(cluster) as client:
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
            "host": distributed.node_name()}


__all__ = ["run_sweep", "solve_chunk", "make_cluster", "settings", "DEFAULTS"]
