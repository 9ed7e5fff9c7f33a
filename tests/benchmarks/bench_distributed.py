"""Scaling of a shard over processes, and the dask backend's cost per tiny task.

1. Points per second for a Bianchi sweep solved as one shard by 1 process and by 2 processes
   (local ranks meeting through jax.distributed, one CPU device each; this machine has 2 cores).
   Scaling efficiency = (points/s with 2) / (2 x points/s with 1).
2. A sweep of tiny points (synthetic model, a few steps each) on the emulated Slurm cluster:
   one sbatch job per shard (backend jax, profiles/slurm) against every chunk a task on a
   dask-jobqueue SLURMCluster (backend dask), wall time per shard-job and per task.

    python tests/benchmarks/bench_distributed.py            # both parts
    python tests/benchmarks/bench_distributed.py --skip-dask
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")


def hpc(*args, cwd, prefix=()):
    result = subprocess.run([*prefix, sys.executable, "-m", "hpc", *map(str, args)], cwd=cwd, env=ENV,
                            capture_output=True, text=True)
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    return result


def scaling(points: int, n_b: int) -> None:
    """One shard of ``points`` Bianchi points on 1 process (all cores, then one core) and on 2."""
    rates = {}
    for label, tasks, prefix in (("1 process", 1, ()), ("1 process, 1 core", 1, ("taskset", "-c", "0")),
                                 ("2 processes", 2, ())):
        with tempfile.TemporaryDirectory() as tmp:
            spec = Path(tmp) / "s.yaml"
            spec.write_text(yaml.safe_dump({
                "name": "scale", "model": "bianchi", "params": {"n_b": n_b, "sim_periods": 20000},
                "sweep": {"kappa": {"linspace": [0.28, 0.36, points // 2]}, "beta": [0.9, 0.91]},
                "shards": 1, "batch_size": 4}))
            plan = Path(tmp) / "results" / "scale" / "plan.json"
            hpc("plan", spec, "--output", plan, cwd=tmp)
            t0 = time.perf_counter()
            hpc("run-shard", plan, 0, "--tasks", tasks, cwd=tmp, prefix=prefix)
            wall = time.perf_counter() - t0
            marker = json.loads((plan.parent / "shards" / "shard-0000.json").read_text())
            compute, compile_s = marker["duration_s"], marker["compile_s"]
            rates[label] = (points / compute, points / (compute - compile_s))
            cpus = [p.get("cpus") for p in marker["per_process"]]
            print(f"{label:18s}: {points} points, compute {compute:5.1f} s of which compile {compile_s:4.1f} s; "
                  f"{rates[label][0]:6.2f} points/s, {rates[label][1]:6.2f} after compiling; job wall {wall:5.1f} s; "
                  f"cores per process {cpus}")
    for i, what in enumerate(("compile included", "after compiling")):
        one, pinned, two = rates["1 process"][i], rates["1 process, 1 core"][i], rates["2 processes"][i]
        print(f"scaling efficiency 1 -> 2 processes, {what}: {two / (2 * one):.2f} (target >= 0.85); "
              f"against 1 process on 1 core {two / (2 * pinned):.2f}")


def snakemake(workdir: Path, spec: Path) -> float:
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--profile",
                             str(REPO / "profiles" / "slurm"), "--directory", str(workdir), "--config", f"sweep={spec}"],
                            env=ENV, capture_output=True, text=True)
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    return time.perf_counter() - t0


def dask_overhead(shards: int) -> None:
    base = {"model": "synthetic", "params": {"steps": 10}, "sweep": {"x0": {"linspace": [0.1, 0.9, 4 * shards]}},
            "shards": shards, "batch_size": 1}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for label, extra in (("one sbatch per shard", {}),
                             ("dask tasks", {"backend": "dask", "dask": {"cluster": "slurm", "max_workers": 2,
                                                                         "memory_mb": 1000}})):
            work = tmp / label.replace(" ", "-")
            work.mkdir()
            spec = work / "s.yaml"
            spec.write_text(yaml.safe_dump({"name": "tiny", **base, **extra}))
            wall = snakemake(work, spec)
            plan = json.loads((work / "results" / "tiny" / "plan.json").read_text())
            tasks = sum(b - a for a, b in plan["shard_chunks"]) if extra else shards
            rows.append((label, wall, tasks))
            print(f"{label:22s}: wall {wall:6.1f} s for {tasks} jobs/tasks, {wall / tasks:5.2f} s each")
        print(f"per-unit cost ratio (sbatch job / dask task): {(rows[0][1] / rows[0][2]) / (rows[1][1] / rows[1][2]):.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=16)
    parser.add_argument("--n-b", type=int, default=200)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--skip-dask", action="store_true")
    args = parser.parse_args()
    scaling(args.points, args.n_b)
    if not args.skip_dask:
        dask_overhead(args.shards)


if __name__ == "__main__":
    main()
