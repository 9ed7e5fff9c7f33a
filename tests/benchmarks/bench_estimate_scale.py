"""The cost preview's own cost at many shards: `hpc plan --estimate --json` of a 10^6-point McCall
sweep in 5,000 shards (and 100), with the package as it is and, side by side in the same run,
as it was at a baseline revision (``git archive``, first on PYTHONPATH).

For each (points, shards) pair and each package: the command in a fresh process and a fresh
results root (its own compile cache, so both compile), timed from outside, its peak RSS from
the kernel (wait4: the process and the probe's fresh process it waits for); the predicted peak
memory of a shard it prints, beside shard 0 of the sweep then run for real (`hpc run-shard`, its
marker's peak RSS); and, in a process of its own, ``estimate.shard_shapes`` of the plan
alone (the per-shard part: what grows with the shards), whose result must be the same for both.

    python tests/benchmarks/bench_estimate_scale.py --baseline HEAD~1
    python tests/benchmarks/bench_estimate_scale.py --baseline REV --run 1e6:5000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
import bench_scale  # noqa: E402  (this folder is the script's first path entry)

SHAPES_ONLY = """
import hashlib, json, sys, time
import hpc
assert hpc.__file__.startswith(sys.argv[2]), (hpc.__file__, sys.argv[2])
from dataclasses import asdict
from hpc.models import get_model
from hpc.sweep import estimate
from hpc.sweep.plan import make_plan
from hpc.sweep.spec import load_spec
plan = make_plan(load_spec(sys.argv[1]))
t0 = time.perf_counter()
shapes = estimate.shard_shapes(plan, get_model(plan.model), 1, min(plan.batch_size, plan.n_points))
seconds = time.perf_counter() - t0
text = json.dumps([dict(asdict(s), group_steps=[[list(k), v] for k, v in s.group_steps.items()]) for s in shapes])
print(json.dumps({"shapes_s": seconds, "shapes_sha": hashlib.sha256(text.encode()).hexdigest()[:12]}))
"""


def spec_for(points: int, shards: int) -> dict:
    """bench_scale's McCall sweep of that size, under a name of its own."""
    return dict(bench_scale.spec_for(points, shards), name=f"est-scale-{points}-{shards}")


def timed(cmd: list, env: dict, cwd: Path) -> tuple[float, float, str]:
    """Run ``cmd`` in ``cwd`` (not the repository, whose ``hpc`` would come first on the path);
    (wall seconds, peak RSS in MB, stdout). Exits on failure."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"{' '.join(map(str, cmd))} failed:\n{err.read().decode(errors='replace')[-3000:]}")
        return wall, usage.ru_maxrss / 1024, out.read().decode()


def baseline_tree(rev: str) -> Path:
    where = Path(tempfile.mkdtemp(prefix="hpc-baseline-"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "hpc"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def measure(tree: Path, spec: Path, work: Path) -> dict:
    root = work / f"results-{hashlib.sha256(str(tree).encode()).hexdigest()[:6]}"
    env = dict(os.environ, PYTHONPATH=str(tree), HPC_RESULTS=str(root))
    wall, rss, out = timed([sys.executable, "-m", "hpc", "plan", "--estimate", "--json", spec], env, work)
    result = json.loads(out.strip().splitlines()[-1])
    _, _, shapes = timed([sys.executable, "-c", SHAPES_ONLY, spec, tree.resolve()], env, work)
    row = {"wall_s": wall, "peak_mb": rss, "probe_s": result["probe_s"], "shards": len(result["shards"]),
           "points": sum(s["points"] for s in result["shards"]),
           "shard_peak_mb": max(s["peak_memory_mb"] for s in result["shards"]),
           "shard_rss_mb": result["calibration"]["shard_rss_mb"], "json_kb": len(out) / 1024,
           "fields": sorted(result["shards"][0])}
    row.update(json.loads(shapes.strip().splitlines()[-1]))
    return row


def one_shard_peak(tree: Path, spec: Path, work: Path) -> float:
    """A real shard's peak RSS (its marker's process_max_rss_mb): shard 0 run by `hpc run-shard`."""
    root = work / "results-run"
    env = dict(os.environ, PYTHONPATH=str(tree), HPC_RESULTS=str(root))
    name = yaml.safe_load(spec.read_text())["name"]
    plan = root / name / "plan.json"
    timed([sys.executable, "-m", "hpc", "plan", spec, "--output", plan], env, work)
    timed([sys.executable, "-m", "hpc", "run-shard", plan, "0"], env, work)
    return json.loads((root / name / "shards" / "shard-0000.json").read_text())["process_max_rss_mb"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", help="a git revision: the same commands with its package, side by side")
    ap.add_argument("--tree", type=Path, default=REPO, help="the package to measure (default: this checkout)")
    ap.add_argument("--run", default="1e6:5000,1e6:100", help="points:shards pairs, comma-separated")
    args = ap.parse_args()
    pairs = [tuple(int(float(x)) for x in p.split(":")) for p in args.run.split(",")]
    trees = [("after", args.tree)] + ([("before", baseline_tree(args.baseline))] if args.baseline else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-estimate-scale-") as tmp:
        for points, shards in pairs:
            spec = Path(tmp) / f"scale-{points}-{shards}.yaml"
            spec.write_text(yaml.safe_dump(spec_for(points, shards), sort_keys=False))
            for label, tree in reversed(trees):  # the baseline first
                print(f"{points} points, {shards} shards, {label}: hpc plan --estimate --json ...",
                      file=sys.stderr, flush=True)
                row = dict(measure(tree, spec, Path(tmp)), label=label, pair=(points, shards))
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
            measured = one_shard_peak(args.tree, spec, Path(tmp))
            print(f"{points} points, {shards} shards: shard 0 run, peak RSS {measured:.0f} MB", file=sys.stderr)
            for row in rows[-len(trees):]:
                row["shard_run_mb"] = measured
    print(f"load average {os.getloadavg()[0]:.1f} (at the end)")
    print(f"{'points':>8} {'shards':>6} {'package':>7} | {'estimate':>8} {'peak RSS':>9} {'probe':>6} | "
          f"{'shard_shapes':>12} | {'shard peak pred':>15} {'(shard 0 ran)':>13} | {'shards out':>10} {'same shapes':>11}")
    ok = True
    for r in rows:
        other = [o for o in rows if o["pair"] == r["pair"]]
        same = len({o["shapes_sha"] for o in other}) == 1 and len({(o["shards"], o["points"]) for o in other}) == 1
        ok &= same and r["fields"] == other[0]["fields"]
        print(f"{r['pair'][0]:>8} {r['pair'][1]:>6} {r['label']:>7} | {r['wall_s']:>6.1f} s {r['peak_mb']:>6.0f} MB "
              f"{r['probe_s']:>4.1f} s | {r['shapes_s']:>10.2f} s | {r['shard_peak_mb']:>12.0f} MB {r['shard_run_mb']:>10.0f} MB | "
              f"{r['shards']:>10} {'yes' if same else 'NO':>11}")
    print("same shapes and JSON fields before and after: " + ("yes" if ok else "NO"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
