"""Slurm job arrays against one job per shard: sbatch calls and wall time beyond compute.

A sweep of tiny points (the synthetic model, 1,000 logistic steps a point: milliseconds of
compute) cut into S shards runs twice through Snakemake with the Slurm profile on the emulated
cluster, in the same process one after the other: with ``--slurm-array-jobs run_shard`` (shard
jobs as array jobs, the profile's default) and with ``--slurm-array-jobs none`` (one sbatch per shard). Every sbatch call the
plugin makes is counted and timed by a shim ahead of the real sbatch on PATH. Compute is what the
shards measured themselves (their markers' ``duration_s``); what is beyond it is Snakemake's
scheduling, sbatch, Slurm's queue and job start, Snakemake's job step and Python/JAX start-up in
each job, and the plugin's status polling.

    python tests/benchmarks/bench_arrays.py --shards 200
    python tests/benchmarks/bench_arrays.py --shards 20      # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from hpc.execution import accounting  # noqa: E402

SHIM = """#!/bin/sh
start=$(date +%s.%N)
{real} "$@"
rc=$?
echo "$start $(date +%s.%N) $rc" >> {log}
exit $rc
"""


def run(workdir: Path, spec: Path, extra: list[str]) -> dict:
    shim_dir, calls = workdir / "shim", workdir / "sbatch-calls.txt"
    shim_dir.mkdir(parents=True)
    (shim_dir / "sbatch").write_text(SHIM.format(real=shutil.which("sbatch"), log=calls))
    (shim_dir / "sbatch").chmod(0o755)
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=f"{shim_dir}:{os.environ['PATH']}")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--profile",
           str(REPO / "profiles" / "slurm"), "--directory", str(workdir), "--config", f"sweep={spec}", *extra]
    started = time.time()
    t0 = time.perf_counter()
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if result.returncode != 0:
        sys.exit(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    markers = [json.loads(p.read_text()) for p in sorted((workdir / "results").glob("*/shards/*.json"))]
    sbatch = [tuple(map(float, line.split()[:2])) for line in calls.read_text().splitlines()]
    jobs = []
    for _ in range(30):  # slurmdbd records the last jobs a moment after they end
        jobs = [j for j in accounting.jobs_since(started) or [] if j["workdir"] == str(workdir)]
        if len(jobs) >= len(markers) and all(j["job_end"] for j in jobs):
            break
        time.sleep(2)
    waits = [j["queue_wait_s"] for j in jobs if j["queue_wait_s"] is not None]
    compute = sum(m["duration_s"] for m in markers)
    return {"shards": len(markers), "wall_s": round(wall, 1), "compute_sum_s": round(compute, 1),
            "beyond_compute_s": round(wall - compute, 1), "sbatch_calls": len(sbatch),
            "sbatch_s": round(sum(e - s for s, e in sbatch), 1),
            "slurm_jobs": len({j.get("array_job_id") or j["job_id"] for j in jobs}), "array_tasks": len(jobs),
            "to_last_submission_s": round(max(e for _, e in sbatch) - started, 1) if sbatch else None,
            "queue_wait_mean_s": round(sum(waits) / len(waits), 1) if waits else None,
            "queue_wait_max_s": round(max(waits), 1) if waits else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=200)
    parser.add_argument("--mem-mb", type=int, default=1000, help="per shard job")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = tmp / "arrays.yaml"
        spec.write_text(yaml.safe_dump({
            "name": "arrays-bench", "model": "synthetic", "params": {"steps": 1000},
            "sweep": {"x0": {"linspace": [0.01, 0.99, args.shards]}}, "shards": args.shards,
            "resources": {"mem_mb": args.mem_mb, "runtime": 10}}))
        for label, extra in (("array jobs", ["--slurm-array-jobs", "run_shard"]),
                             ("one job per shard", ["--slurm-array-jobs", "none"])):
            workdir = tmp / label.split()[0]
            workdir.mkdir()
            rows[label] = row = run(workdir, spec, extra)
            print(f"{label:30s} {row['shards']} shards: wall {row['wall_s']:7.1f} s, compute {row['compute_sum_s']:5.1f} s, "
                  f"beyond compute {row['beyond_compute_s']:7.1f} s; {row['sbatch_calls']} sbatch calls "
                  f"({row['sbatch_s']:.1f} s in sbatch, last submission {row['to_last_submission_s']} s after the "
                  f"start), {row['slurm_jobs']} Slurm jobs / {row['array_tasks']} tasks, queue wait mean "
                  f"{row['queue_wait_mean_s']} s, max {row['queue_wait_max_s']} s", flush=True)
    a, b = rows.values()
    print(f"arrays: {b['sbatch_calls'] / max(1, a['sbatch_calls']):.0f}x fewer sbatch calls, wall beyond compute "
          f"{a['beyond_compute_s']} s against {b['beyond_compute_s']} s ({b['beyond_compute_s'] / a['beyond_compute_s']:.2f}x)")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
