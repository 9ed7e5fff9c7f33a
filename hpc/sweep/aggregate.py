"""Aggregate: check that every shard committed under this plan, read the accounting of the jobs
that committed the shards, then finalize the store (with each shard's execution trace)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hpc.core import paths, timefmt
from hpc.core.files import write_atomic
from hpc.execution import accounting
from hpc.sweep import store
from hpc.sweep.plan import read_plan


def aggregate(plan_file: str | Path, output: str | Path | None = None) -> dict:
    """Finalize the store and return (and write to ``output``) a summary of the sweep."""
    plan = read_plan(plan_file)
    root = paths.root_of_plan(plan_file)
    markers = store.valid_markers(plan, root)
    missing = sorted(set(range(plan.n_shards)) - set(markers))
    if missing:
        raise RuntimeError(f"sweep {plan.name}: shards {missing} have no completion marker for plan {plan.digest}")
    store.finalize_store(plan, markers, root, read_accounting(plan, markers, root))
    summary = {
        "name": plan.name,
        "digest": plan.digest,
        "points": plan.n_points,
        "shards": plan.n_shards,
        "failed": sum(m.get("failed", 0) for m in markers.values()),
        "non_finite": sum(m.get("non_finite", 0) for m in markers.values()),
        "not_converged": sum(m.get("not_converged", 0) for m in markers.values()),
        "compute_s": round(sum(m.get("duration_s", 0.0) for m in markers.values()), 3),
        "first_start": min(m["start"] for m in markers.values()),
        "last_end": max(m["end"] for m in markers.values()),
    }
    if output:
        write_atomic(output, json.dumps(summary, indent=1))
    print(f"sweep {plan.name}: {plan.n_points} points from {plan.n_shards} shards aggregated "
          f"({summary['failed']} failed, {summary['non_finite']} non-finite, {summary['not_converged']} not converged)", file=sys.stderr)
    return summary


def read_accounting(plan, markers: dict[int, dict], root=None) -> dict[str, dict]:
    """Slurm's accounting of the jobs named by the markers (empty without Slurm jobs or sacct);
    attempts are counted among jobs submitted since the store was created."""
    job_ids = {m.get("job_id") for m in markers.values() if m.get("job_id")}
    if not job_ids:
        return {}
    try:
        created = store.open_arrays(plan.name, root, mode="r").attrs.get("created")
        return accounting.job_records(job_ids, since=timefmt.iso_epoch(created))
    except Exception as exc:  # the trace is a record of what ran, never a reason to fail the sweep
        print(f"sweep {plan.name}: no job accounting ({type(exc).__name__}: {exc})", file=sys.stderr)
        return {}
