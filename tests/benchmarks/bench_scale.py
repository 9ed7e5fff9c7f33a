"""Sweeps of 10^4-10^6 points in 100-5,000 shards: what each stage of the pipeline costs.

For McCall sweeps (c x beta grids, float32, 51 wages) of each size and shard count, this prints
the wall time of `hpc validate`, `hpc plan`, `snakemake -n` (the DAG), the shard runs, `hpc
aggregate`, `hpc report` (with its peak RSS), `hpc status` (the local path: `--slurm none`) and
opening the store with xarray (`xr.open_zarr`, then its attributes and one variable).

Every `hpc` command runs as a fresh process (`python -m hpc`), timed from outside, its peak RSS
from the kernel (wait4; this process stays small, since a child's peak counts what it was
forked from). The shards are computed in one child process, one shard after another, with
one compiled solver per plan (`hpc.sweep.runner.run_shard`, then the shard's marker as the
runner writes it): the same store and markers as `hpc run-shard` would leave, without 5,000
JAX start-ups. ``--e2e POINTS:SHARDS`` also runs one sweep end to end through Snakemake with the
local profile (two jobs at a time).

With ``--baseline REV`` (a git revision), aggregate, report, status and opening also run with
the package as it was at REV (``git archive``, put first on PYTHONPATH) on a copy of the same
shards' store and markers, side by side: the "before" column.

Before aggregation, a copy of the shards' results is turned into a sweep still running
(``make_running``): the second half of the shards lose their markers, the first
``RUNNING_SHARDS`` of those keep half their chunks committed and get a log with a progress line
(running), the others lose every chunk file (not started). On it: `hpc status --slurm none` (a
fresh process, before and after), and three polls of ``sweep_status`` in one process as `hpc
status --watch` makes them (the first, and the fastest later one; after: with the cache `watch`
keeps between polls). The text `hpc status` prints must be the same before and after (but for
its throughput line, which depends on the clock); the benchmark stops if it is not.

    python tests/benchmarks/bench_scale.py                      # the matrix below, about 15 min
    python tests/benchmarks/bench_scale.py --baseline HEAD~3 --e2e 1000000:50
    python tests/benchmarks/bench_scale.py --quick              # 10^4 points, 100 shards
    python tests/benchmarks/bench_scale.py --no-dry --status-only --baseline HEAD --run 1e6:5000

The default matrix: validate and plan for every (points, shards) pair; `snakemake -n` at 10^6
points for each shard count (the DAG depends on the shards alone); the shard runs and every
later stage for 10^4 x {100, 1000, 5000}, 10^5 x {100, 1000} and 10^6 x {100, 5000}.
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

GRIDS = {10**4: (100, 100), 10**5: (400, 250), 10**6: (1000, 1000)}  # c values x beta values
RUN = [(10**4, 100), (10**4, 1000), (10**4, 5000), (10**5, 100), (10**5, 1000), (10**6, 100), (10**6, 5000)]
DRY = [(10**6, 100), (10**6, 1000), (10**6, 5000)]
SIZES, SHARDS = (10**4, 10**5, 10**6), (100, 1000, 5000)


def spec_for(points: int, shards: int) -> dict:
    nc, nb = GRIDS[points]
    return {"name": f"scale-{points}-{shards}", "model": "mccall", "params": {"tol": 1.0e-6},
            "sweep": {"c": {"linspace": [10, 30, nc]}, "beta": {"linspace": [0.9, 0.99, nb]}},
            "shards": shards, "precision": "float32", "batch_size": 1024,
            "resources": {"nodes": 1, "tasks": 1, "runtime": 30, "mem_mb": 2000}}


def timed(cmd: list[str], cwd: Path, pythonpath: Path = REPO) -> tuple[float, float, str]:
    """Run ``cmd``; (wall seconds, peak RSS in MB, its stderr tail). Exits on failure."""
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace")[-3000:]
        if proc.returncode != 0:
            out.seek(0)
            sys.exit(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{out.read().decode()[-2000:]}\n{tail}")
    return wall, usage.ru_maxrss / 1024, tail


def hpc(*args) -> list[str]:
    return [sys.executable, "-m", "hpc", *map(str, args)]


def run_shards(plan_file: Path) -> float:
    """Every shard of the plan, one after another in this process (one compiled solver); seconds."""
    from hpc.core import paths
    from hpc.models import get_model
    from hpc.sweep import runner
    from hpc.sweep.plan import read_plan

    plan = read_plan(plan_file)
    root = paths.root_of_plan(plan_file)
    runner.configure_precision(plan.precision)
    solver = runner.MeshSolver(get_model(plan.model), plan.precision, runner.device_batch_size(plan))
    t0 = time.perf_counter()
    for shard in range(plan.n_shards):
        part = runner.run_shard(plan, shard, root, solver=solver)
        runner.commit_shard(plan, shard, runner.merge_summaries(plan, shard, [part]), root)
    return time.perf_counter() - t0


OPEN_PROBE = """
import json, sys, time, warnings
t0 = time.perf_counter()
import xarray as xr
t1 = time.perf_counter()
warnings.simplefilter("ignore")
ds = xr.open_zarr(sys.argv[1], chunks=None)
t2 = time.perf_counter()
attrs = dict(ds.attrs)
t3 = time.perf_counter()
rw = ds["reservation_wage"].values
t4 = time.perf_counter()
meta = len(open(sys.argv[1] + "/zarr.json").read())
print(json.dumps({"open_s": t2 - t1, "attrs_s": t3 - t2, "read_var_s": t4 - t3, "root_meta_kb": meta / 1024,
                  "attrs_kb": len(json.dumps(attrs, default=str)) / 1024}))
"""


def open_store(store: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", OPEN_PROBE, str(store)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def later_stages(work: Path, name: str, pythonpath: Path) -> dict:
    """aggregate, report, status, open: one column of the table."""
    results = work / "results"
    plan = results / name / "plan.json"
    row = {}
    row["aggregate_s"], row["aggregate_mb"], _ = timed(hpc("aggregate", plan, "--output",
                                                           results / name / "aggregate.json"), work, pythonpath)
    row["report_s"], row["report_mb"], _ = timed(hpc("report", name, "--results", results), work, pythonpath)
    row["report_html_mb"] = (results / name / "report.html").stat().st_size / 2**20
    row["status_s"], row["status_mb"], _ = timed(hpc("status", name, "--results", results, "--slurm", "none"),
                                                 work, pythonpath)
    row.update(open_store(results / name / "sweep.zarr"))
    return row


RUNNING_SHARDS = 8  # of the running copy's unfinished shards, those half committed and with a log


def make_running(run_dir: Path) -> dict:
    """Turn a copy of a finished run's shards (results/NAME, not aggregated) into a sweep still
    running: markers of the second half of the shards removed; of those shards, the first
    ``RUNNING_SHARDS`` keep the first half of their chunks and get a log with the runner's
    progress line, the others lose every chunk file of every per-point array (as before their
    job starts). Returns the counts made."""
    import numpy as np
    import zarr

    from hpc.core import paths
    from hpc.sweep.plan import read_plan

    plan = read_plan(run_dir / "plan.json")
    root = run_dir.parent
    group = zarr.open_group(str(run_dir / "sweep.zarr"), mode="r")
    nd = len(plan.shape)
    per_point = [group[n] for n in group.array_keys() if n != "shard_index" and group[n].shape[:nd] == plan.shape
                 and tuple(group[n].chunks[:nd]) == plan.chunks]
    unfinished = range(plan.n_shards // 2, plan.n_shards)
    removed = 0
    for i, shard in enumerate(unfinished):
        paths.marker_path(plan.name, shard, root).unlink()
        chunks = list(plan.shard_chunk_ids(shard))
        keep = len(chunks) // 2 if i < RUNNING_SHARDS else 0
        if i < RUNNING_SHARDS:
            log = paths.shard_log_path(plan.name, shard, root)
            log.parent.mkdir(parents=True, exist_ok=True)
            n = plan.shard_points(shard)
            log.write_text(f"shard {shard}: n1: {n} points in {len(chunks)} chunks to compute\n"
                           f"shard {shard}: {n * 3 // 4}/{n} points (75%), 1.0 s\n")
        for chunk in chunks[keep:]:
            coords = tuple(int(c) for c in np.unravel_index(chunk, plan.chunk_grid))
            for array in per_point:
                key = array.metadata.encode_chunk_key(coords + (0,) * (array.ndim - nd))
                path = run_dir / "sweep.zarr" / array.path / key
                if path.exists():
                    path.unlink()
                    removed += 1
    return {"unfinished": len(unfinished), "running": min(RUNNING_SHARDS, len(unfinished)), "chunk_files_removed": removed}


POLL_PROBE = """
import inspect, json, sys, time
from pathlib import Path
from hpc.sweep.status import format_status, sweep_status
cache = {} if "cache" in inspect.signature(sweep_status).parameters else None
times = []
for _ in range(3):
    t0 = time.perf_counter()
    kw = {} if cache is None else {"cache": cache}
    format_status(sweep_status(sys.argv[1], Path(sys.argv[2]), jobs=False, **kw))
    times.append(time.perf_counter() - t0)
print(json.dumps({"poll_first_s": times[0], "poll_later_s": min(times[1:])}))
"""


def running_status(work: Path, name: str, pythonpath: Path) -> tuple[dict, str]:
    """`hpc status` of the running copy (a fresh process) and the watch polls; and what it printed."""
    results = work / "results"
    cmd = hpc("status", name, "--results", results, "--slurm", "none")
    row = {}
    row["running_status_s"], row["running_status_mb"], _ = timed(cmd, work, pythonpath)
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    text = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    out = subprocess.run([sys.executable, "-c", POLL_PROBE, name, str(results)], cwd=work, env=env,
                         capture_output=True, text=True, check=True)
    row.update(json.loads(out.stdout.strip().splitlines()[-1]))
    return row, "\n".join(line for line in text.splitlines() if not line.startswith("throughput:"))


def baseline_tree(rev: str) -> Path:
    where = Path(tempfile.mkdtemp(prefix="hpc-baseline-"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "hpc"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10^4 points in 100 shards only")
    ap.add_argument("--run", help="points:shards pairs to run end to end, comma-separated (default: the matrix; "
                                  "none: only validate, plan and snakemake -n)")
    ap.add_argument("--baseline", help="a git revision: run the later stages with its package too, side by side")
    ap.add_argument("--e2e", help="POINTS:SHARDS: one sweep through Snakemake with the local profile")
    ap.add_argument("--no-dry", action="store_true", help="skip validate, plan and snakemake -n")
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    ap.add_argument("--status-only", action="store_true",
                    help="after the shard runs, only the status of the running copy (no aggregate, report, ...)")
    ap.add_argument("--run-shards", help=argparse.SUPPRESS)  # a plan file: run its shards here (a child process)
    args = ap.parse_args()
    if args.run_shards:
        print(f"{run_shards(Path(args.run_shards)):.3f}")
        return
    pairs = ([] if args.run == "none" else [tuple(int(float(x)) for x in p.split(":")) for p in args.run.split(",")]
             if args.run else [(10**4, 100)] if args.quick else RUN)
    base = baseline_tree(args.baseline) if args.baseline else None
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"working in {work}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    try:
        if not args.no_dry:
            print("\n| points | shards | hpc validate [s] | hpc plan [s] | snakemake -n [s] |")
            print("|---|---|---|---|---|")
            for points in (SIZES[:1] if args.quick else SIZES):
                for shards in (SHARDS[:1] if args.quick else SHARDS):
                    spec = work / "specs" / f"{points}-{shards}.yaml"
                    spec.parent.mkdir(parents=True, exist_ok=True)
                    spec.write_text(yaml.safe_dump(spec_for(points, shards)))
                    v, _, _ = timed(hpc("validate", spec), work)
                    p, _, _ = timed(hpc("plan", spec), work)
                    dry = "" if (points, shards) not in DRY or args.quick else None
                    if dry is None:
                        d, _, _ = timed([sys.executable, "-m", "snakemake", "-n", "--snakefile", REPO / "Snakefile",
                                         "--profile", REPO / "profiles" / "local", "--directory", work / "dry",
                                         "--config", f"sweep={spec}"], work)
                        dry = f"{d:.1f}"
                    print(f"| {points:,} | {shards:,} | {v:.1f} | {p:.1f} | {dry} |", flush=True)

        rows = []
        for points, shards in pairs:
            spec = work / "specs" / f"{points}-{shards}.yaml"
            spec.parent.mkdir(parents=True, exist_ok=True)
            spec.write_text(yaml.safe_dump(spec_for(points, shards)))
            name = spec_for(points, shards)["name"]
            here = work / "new"
            here.mkdir(exist_ok=True)
            plan_s, _, _ = timed(hpc("plan", spec, "--output", here / "results" / name / "plan.json"), here)
            run_s, _, _ = timed([sys.executable, __file__, "--run-shards", here / "results" / name / "plan.json"], here)
            row = {"points": points, "shards": shards, "plan_output_s": plan_s, "run_s": run_s,
                   "before": {}, "after": {}}
            live = work / "live"  # a copy of the shards' results made to look like a running sweep
            shutil.copytree(here / "results" / name, live / "results" / name)
            row["running"] = make_running(live / "results" / name)
            for col, tree in (("before", base), ("after", REPO)) if base is not None else (("after", REPO),):
                got, text = running_status(live, name, tree)
                row[col].update(got)
                row[col + "_text"] = text
            if base is not None and row["before_text"] != row["after_text"]:
                sys.exit("hpc status of the running sweep printed otherwise before and after:\n"
                         f"{row['before_text']}\n----\n{row['after_text']}")
            print(f"status of the running copy ({row['running']}), first lines:\n"
                  + "\n".join(row.pop("after_text").splitlines()[:4])
                  + ("\n(the same before and after)" if row.pop("before_text", None) is not None else ""), flush=True)
            shutil.rmtree(live / "results" / name)
            if base is not None and not args.status_only:  # the same shards' results, finalized by the old package
                old = work / "old"
                shutil.rmtree(old / "results" / name, ignore_errors=True)
                shutil.copytree(here / "results" / name, old / "results" / name)
                row["before"].update(later_stages(old, name, base))
                shutil.rmtree(old / "results" / name)
            if not args.status_only:
                row["after"].update(later_stages(here, name, REPO))
            if base is None:
                del row["before"]
            shutil.rmtree(here / "results" / name)
            rows.append(row)
            print(json.dumps(row, default=lambda x: round(x, 3)), flush=True)
            print_table(rows)

        if args.e2e:
            points, shards = (int(float(x)) for x in args.e2e.split(":"))
            print_e2e(work, points, shards)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)


STAGES = [("running_status_s", "hpc status, running sweep [s]"), ("poll_first_s", "status poll, first [s]"),
          ("poll_later_s", "status poll, later [s]"), ("aggregate_s", "aggregate [s]"), ("aggregate_mb", "aggregate peak [MB]"), ("report_s", "report [s]"),
          ("report_mb", "report peak [MB]"), ("report_html_mb", "report.html [MB]"), ("status_s", "hpc status [s]"),
          ("open_s", "xr.open_zarr [s]"), ("attrs_kb", "attrs [KB]"), ("read_var_s", "read one variable [s]")]


def print_table(rows: list[dict]) -> None:
    both = any("before" in r for r in rows)
    head = ["points", "shards", "plan --output [s]", "shard runs [s]"]
    stages = [(k, t) for k, t in STAGES if any(k in r.get(c, {}) for r in rows for c in ("before", "after"))]
    for _, text in stages:
        head += [f"{text} before", f"{text} after"] if both else [text]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        cells = [f"{r['points']:,}", f"{r['shards']:,}", f"{r['plan_output_s']:.1f}", f"{r['run_s']:.1f}"]
        for key, _ in stages:
            for col in (("before", "after") if both else ("after",)):
                value = r.get(col, {}).get(key)
                cells.append("" if value is None else f"{value:.2f}" if value < 10 else f"{value:.0f}")
        print("| " + " | ".join(cells) + " |")
    print(flush=True)


def print_e2e(work: Path, points: int, shards: int) -> None:
    """One sweep end to end through Snakemake (local profile), then the stage times from its logs."""
    spec = work / "specs" / f"e2e-{points}-{shards}.yaml"
    spec.parent.mkdir(parents=True, exist_ok=True)
    body = dict(spec_for(points, shards), name=f"e2e-{points}-{shards}")
    spec.write_text(yaml.safe_dump(body))
    e2e = work / "e2e"
    e2e.mkdir()
    t0 = time.time()
    wall, rss, _ = timed([sys.executable, "-m", "snakemake", "--snakefile", REPO / "Snakefile", "--profile",
                          REPO / "profiles" / "local", "--directory", e2e, "--config", f"sweep={spec}"], e2e)
    run_dir = e2e / "results" / body["name"]
    markers = [json.loads(p.read_text()) for p in sorted((run_dir / "shards").glob("*.json"))]
    first = min(m["start"] for m in markers)
    last = max(m["end"] for m in markers)
    aggregated = (run_dir / "aggregate.json").stat().st_mtime
    reported = (run_dir / "report.html").stat().st_mtime
    print(f"\nend to end, {points:,} points in {shards} shards through Snakemake (local profile): {wall:.0f} s "
          f"(Snakemake's peak RSS, aggregate and report inside it: {rss:.0f} MB); start to first shard "
          f"{first - t0:.0f} s, shards {last - first:.0f} s (compute summed {sum(m['duration_s'] for m in markers):.0f} s), "
          f"last shard to aggregated {aggregated - last:.1f} s, report {reported - aggregated:.1f} s", flush=True)


if __name__ == "__main__":
    main()
