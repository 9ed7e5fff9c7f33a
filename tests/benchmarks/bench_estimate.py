"""Accuracy of the cost preview: `hpc plan --estimate` against what the run then records.

For each sweep below, in a fresh results root: `hpc plan --estimate --json SPEC` (the probe, in a
process of its own, as a user runs it), then the sweep itself as the local profile runs it, one
shard job after the other (`hpc plan --output`, then `hpc run-shard PLAN i`, each a fresh
process, the compile cache shared as in the workflow). Printed side by side: the predicted total
compute against the sum of the markers' `duration_s`, and the predicted peak memory against the
markers' measured peak RSS (`process_max_rss_mb`), with the probe's own cost.

Goals: compute within ±25%, peak memory within ±30%, for every sweep.

    python tests/benchmarks/bench_estimate.py            # all four sweeps, a few minutes
    python tests/benchmarks/bench_estimate.py --only mccall
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

SWEEPS = {  # each shard a second or more of steps beside its program load and writes
    "mccall": {"model": "mccall", "params": {"tol": 1.0e-6, "n_wages": 501},
               "sweep": {"c": {"linspace": [10, 30, 2000]}, "beta": [0.9, 0.92, 0.94, 0.96, 0.98, 0.99]},
               "shards": 3, "batch_size": 64},
    "bianchi-small": {"model": "bianchi", "params": {"n_b": 100, "sim_periods": 20000},
                      "sweep": {"kappa": {"linspace": [0.25, 0.4, 200]}}, "shards": 2, "batch_size": 4},
    "bianchi-large": {"model": "bianchi", "params": {"n_b": 800, "sim_periods": 20000},
                      "sweep": {"kappa": {"linspace": [0.25, 0.4, 128]}}, "shards": 2, "batch_size": 4},
    "arellano": {"model": "arellano", "params": {"n_b": 101, "n_y": 21, "sim_periods": 20000},
                 "sweep": {"beta": {"linspace": [0.94, 0.96, 128]}}, "shards": 2, "batch_size": 4},
}


def hpc(args: list[str], env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "hpc", *args], capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"hpc {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done


def run_case(name: str, body: dict, workdir: Path) -> dict:
    root = workdir / "results"
    spec = workdir / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(dict(name=f"bench-{name}", **body)))
    env = dict(os.environ, HPC_RESULTS=str(root), PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    predicted = json.loads(hpc(["plan", "--estimate", "--json", str(spec)], env).stdout)
    probe_wall = time.perf_counter() - t0
    plan = root / f"bench-{name}" / "plan.json"
    hpc(["plan", str(spec), "--output", str(plan)], env)
    markers = []
    for shard in range(body["shards"]):
        hpc(["run-shard", str(plan), str(shard)], env)
        markers.append(json.loads((root / f"bench-{name}" / "shards" / f"shard-{shard:04d}.json").read_text()))
    measured_s = sum(m["duration_s"] for m in markers)
    measured_mb = max(m["process_max_rss_mb"] for m in markers)
    predicted_mb = max(s["peak_memory_mb"] for s in predicted["shards"])
    return {
        "sweep": name,
        "points": sum(m["points"] for m in markers),
        "shards": len(markers),
        "compute_pred_s": predicted["compute_s"],
        "compute_run_s": round(measured_s, 3),
        "compute_err": predicted["compute_s"] / measured_s - 1,
        "peak_pred_mb": predicted_mb,
        "peak_run_mb": round(measured_mb, 1),
        "peak_err": predicted_mb / measured_mb - 1,
        "probe_s": predicted["probe_s"],
        "probe_wall_s": round(probe_wall, 2),
        "longest_shard_pred_s": max(s["runtime_s"] for s in predicted["shards"]),
        "per_shard": [(s["runtime_s"], m["duration_s"]) for s, m in zip(predicted["shards"], markers)],
        "program_pred_s": [g["compile_s"] for g in predicted["calibration"]["groups"]],
        "program_run_s": [m["compile_s"] for m in markers],
        "step_s": [g["step_s"] for g in predicted["calibration"]["groups"]],
        "write_s_per_chunk": predicted["calibration"]["write_s_per_chunk"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(SWEEPS), action="append", help="run only these sweeps")
    args = ap.parse_args()
    rows = []
    for name in args.only or list(SWEEPS):
        with tempfile.TemporaryDirectory(prefix="bench-estimate-") as tmp:
            print(f"{name}: probing, then running ...", file=sys.stderr, flush=True)
            rows.append(run_case(name, SWEEPS[name], Path(tmp)))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} (at the end)")
    print(f"{'sweep':<14} {'points':>6} {'shards':>6} | {'compute pred':>12} {'run':>8} {'err':>6} | "
          f"{'peak pred':>9} {'run':>7} {'err':>6} | {'probe':>6} {'(wall)':>7}")
    ok = True
    for r in rows:
        good = abs(r["compute_err"]) <= 0.25 and abs(r["peak_err"]) <= 0.30
        ok &= good
        print(f"{r['sweep']:<14} {r['points']:>6} {r['shards']:>6} | {r['compute_pred_s']:>10.2f} s "
              f"{r['compute_run_s']:>6.2f} s {100 * r['compute_err']:>+5.0f}% | {r['peak_pred_mb']:>6.0f} MB "
              f"{r['peak_run_mb']:>4.0f} MB {100 * r['peak_err']:>+5.0f}% | {r['probe_s']:>4.1f} s {r['probe_wall_s']:>5.1f} s"
              f"{'' if good else '  <- outside the goal'}")
    print("goals (compute ±25%, peak memory ±30%): " + ("met" if ok else "NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
