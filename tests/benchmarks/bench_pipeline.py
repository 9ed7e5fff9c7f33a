"""Pipeline overhead: wall time minus compute, per shard and in total, locally and on Slurm.

A sweep of the synthetic model (known cost per point: logistic-map steps) is cut into S shards
whose compute time is calibrated in this process first. Then the same sweep runs through
Snakemake with the local profile (one job at a time, so overhead adds up shard by shard) and
with the Slurm profile on the emulated cluster (all shards at once). Compute is what the shards
themselves measured (solve and write, from their markers); overhead is everything else:
Snakemake's planning and scheduling, sbatch and status polling, process and JAX start-up.

    python tests/benchmarks/bench_pipeline.py --shards 4 --shard-seconds 60
    python tests/benchmarks/bench_pipeline.py --quick        # 4 shards of about 5 s
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from hpc.models import get_model  # noqa: E402
from hpc.sweep.runner import MeshSolver, solve_points  # noqa: E402

POINTS_PER_SHARD = 8


def seconds_per_step(points: int) -> float:
    """Calibrate: compute seconds per logistic step for a batch of ``points`` points."""
    model = get_model("synthetic")
    swept = {"x0": np.linspace(0.1, 0.9, points)}
    steps = 2 * 10**8  # about a second: long enough that timer and dispatch do not count
    fixed = dict(model.defaults(), steps=steps)
    solver = MeshSolver(model, "float32", points)
    solve_points(model, fixed, swept, "float32", points, solver=solver)  # compile
    best = math.inf
    for _ in range(2):
        t0 = time.perf_counter()
        solve_points(model, fixed, swept, "float32", points, solver=solver)
        best = min(best, time.perf_counter() - t0)
    return best / steps


def run_sweep(workdir: Path, spec: Path, profile: str, extra: list[str]) -> tuple[float, list[dict]]:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--profile",
           str(REPO / "profiles" / profile), "--directory", str(workdir), "--config", f"sweep={spec}", *extra]
    t0, started = time.perf_counter(), time.time()
    result = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    wall = time.perf_counter() - t0
    if result.returncode != 0:
        sys.exit(f"snakemake failed:\n{result.stderr[-3000:]}")
    markers = [json.loads(p.read_text()) for p in sorted((workdir / "results").glob("*/shards/*.json"))]
    aggregated = next((workdir / "results").glob("*/aggregate.json")).stat().st_mtime
    times = {"started": started, "aggregated": aggregated, "ended": started + wall}
    return wall, markers, times


def report(label: str, wall: float, markers: list[dict], times: dict, sequential: bool) -> dict:
    compute = [m["duration_s"] for m in markers]
    busy = sum(compute) if sequential else max(compute)  # compute on the critical path
    overhead = wall - busy
    # Where the overhead went, from the clock: Snakemake's start to the first shard's compute;
    # the last shard's end to the aggregate being written (job end, Snakemake noticing it:
    # on Slurm the executor's status polling); aggregate and report to the end.
    first_start, last_end = min(m["start"] for m in markers), max(m["end"] for m in markers)
    parts = {"to_first_shard_s": first_start - times["started"], "last_shard_to_aggregate_s": times["aggregated"] - last_end,
             "aggregate_and_report_s": times["ended"] - times["aggregated"]}
    row = {"run": label, "shards": len(markers), "wall_s": round(wall, 1), "compute_sum_s": round(sum(compute), 1),
           "critical_compute_s": round(busy, 1), "overhead_s": round(overhead, 1),
           "overhead_per_shard_s": round(overhead / len(markers), 2) if sequential else None,
           "overhead_pct_of_compute": round(100 * overhead / busy, 1), **{k: round(v, 1) for k, v in parts.items()}}
    print(f"{label:28s} wall {wall:7.1f} s  compute(sum) {sum(compute):7.1f} s  critical compute {busy:7.1f} s  "
          f"overhead {overhead:6.1f} s ({row['overhead_pct_of_compute']:.1f}% of compute)"
          + (f", {row['overhead_per_shard_s']:.2f} s per shard" if sequential else ""))
    print(f"{'':28s} of which: start to first shard's compute {parts['to_first_shard_s']:.1f} s, last shard's end to "
          f"aggregate {parts['last_shard_to_aggregate_s']:.1f} s, aggregate and report {parts['aggregate_and_report_s']:.1f} s")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--shard-seconds", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true", help="shards of about 5 s")
    parser.add_argument("--skip-slurm", action="store_true")
    args = parser.parse_args()
    shard_seconds = 5.0 if args.quick else args.shard_seconds

    per_step = seconds_per_step(POINTS_PER_SHARD)
    needed = shard_seconds / per_step
    batches = max(1, int(np.ceil(needed / 1e9)))  # the loop count is 32-bit: more batches instead
    steps = max(1, int(needed / batches))
    points_per_shard = POINTS_PER_SHARD * batches
    print(f"calibration: {per_step * 1e9:.1f} ns per step for a batch of {POINTS_PER_SHARD} points; "
          f"{batches} batches of {steps:,} steps for about {shard_seconds:.0f} s of compute per shard")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = tmp / "bench.yaml"
        spec.write_text(yaml.safe_dump({
            "name": "pipeline-bench", "model": "synthetic", "params": {"steps": steps},
            "sweep": {"x0": {"linspace": [0.1, 0.9, points_per_shard * args.shards]}}, "shards": args.shards,
            "batch_size": POINTS_PER_SHARD}))
        local = tmp / "local"
        local.mkdir()
        rows.append(report("local, 1 job at a time", *run_sweep(local, spec, "local", ["--cores", "1"]), sequential=True))
        if not args.skip_slurm:
            slurm = tmp / "slurm"
            slurm.mkdir()
            rows.append(report("slurm (emulated), all at once", *run_sweep(slurm, spec, "slurm", []), sequential=False))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
