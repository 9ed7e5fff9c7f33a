"""The `hpc` command: subcommands that call library functions, and print user mistakes in one line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hpc.core import paths
from hpc.core.errors import SpecError


def _cmd_validate(args) -> int:
    from hpc.sweep.spec import load_spec

    spec = load_spec(args.spec)
    if spec.adaptive:
        a = spec.adaptive
        print(f"{args.spec}: ok ({spec.model}, adaptive: up to {a['stop']['max_points']} points in rounds of "
              f"{a['points_per_round']}, {spec.shards} shards per round)")
        return 0
    print(f"{args.spec}: ok ({spec.model}, {spec.n_points} points, {spec.shards} shards)")
    return 0


def _cmd_plan(args) -> int:
    from hpc.sweep import store
    from hpc.sweep.plan import describe, make_plan
    from hpc.sweep.spec import load_spec

    _plan_estimate_args(args)
    spec = load_spec(args.spec)
    if spec.adaptive:  # its rounds are planned as they come (hpc.sweep.adaptive): show the next one
        from hpc.sweep.adaptive import describe_first_round

        if args.output or args.estimate:
            raise SpecError("adaptive", "an adaptive sweep plans each round when it comes",
                            "run it with snakemake; hpc plan SPEC shows its next round")
        print(describe_first_round(spec))
        return 0
    if args.output:
        plan, state = store.plan_sweep(spec, args.output)
        print(f"store {paths.store_path(plan.name, paths.root_of_plan(args.output))}: {state}", file=sys.stderr)
    else:
        plan = make_plan(spec)
    if args.estimate:
        return _plan_estimate(args, spec, plan)
    print(describe(plan))
    return 0


def _plan_estimate_args(args) -> None:
    """Check plan's estimate options. ``--estimate SPEC`` reads as --estimate with SPEC as its value:
    the value is the spec when no spec follows."""
    if args.estimate not in (None, "local", "slurm") and args.spec is None:
        args.spec, args.estimate = args.estimate, "local"
    if args.spec is None:
        raise SpecError("spec", "no sweep spec given", "hpc plan [--estimate[=slurm]] SPEC")
    if args.estimate not in (None, "local", "slurm"):
        raise SpecError("--estimate", f"unknown probe place {args.estimate!r}", "--estimate (this machine) or --estimate=slurm")
    if not args.estimate:
        used = [flag for flag, value in (("--json", args.json), ("--jobs", args.jobs), ("--probe-max-s", args.probe_max_s),
                                         ("--probe-fraction", args.probe_fraction), ("--partition", args.partition))
                if value not in (None, False)]
        if used:
            raise SpecError(used[0], "only goes with --estimate", f"hpc plan --estimate {used[0]} ... SPEC")
    if args.jobs is not None and args.jobs < 1:
        raise SpecError("--jobs", f"must be at least 1, not {args.jobs}", "shard jobs running at once")
    if args.probe_max_s is not None and not args.probe_max_s > 0:
        raise SpecError("--probe-max-s", f"must be above 0, not {args.probe_max_s}", "seconds of timed steps at most")
    if args.probe_fraction is not None and not 0 < args.probe_fraction <= 1:
        raise SpecError("--probe-fraction", f"must be in (0, 1], not {args.probe_fraction}",
                        "the probe's share of one shard's predicted runtime")
    if args.partition is not None and args.estimate != "slurm":
        raise SpecError("--partition", "only goes with --estimate=slurm", "hpc plan --estimate=slurm --partition P SPEC")


def _plan_estimate(args, spec, plan) -> int:
    import json

    from hpc.sweep import estimate
    from hpc.sweep.plan import describe

    options = {"max_s": args.probe_max_s or estimate.PROBE_MAX_S,
               "fraction": args.probe_fraction or estimate.PROBE_FRACTION, "jobs": args.jobs}
    root = paths.root_of_plan(args.output) if args.output else None
    if args.estimate == "slurm":
        passed = [f"--probe-max-s={options['max_s']}", f"--probe-fraction={options['fraction']}"]
        if args.jobs:
            passed.append(f"--jobs={args.jobs}")
        result = estimate.slurm_estimate(args.spec, spec, passed, root, args.partition)
    else:
        result = estimate.estimate(spec, root, **options)
    saved = estimate.save(result, root)
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(describe(plan))
        print(estimate.describe(result))
        print(f"(saved to {saved})", file=sys.stderr)
    return 0


def _cmd_run_shard(args) -> int:
    if args.tasks > 1 or args.cpu_devices:
        from hpc.execution.launch import run_processes

        inner = [sys.executable, "-m", "hpc", "run-shard", args.plan, str(args.shard)]
        if args.marker:
            inner += ["--marker", args.marker]
        return run_processes(inner, args.tasks, args.mpi, args.cpu_devices)
    from hpc.sweep.runner import run_and_commit

    run_and_commit(args.plan, args.shard, args.marker)
    return 0


def _cmd_run_dask(args) -> int:
    import json

    from hpc.sweep.dask_run import run_sweep

    print(json.dumps(run_sweep(args.plan, json.loads(args.settings) if args.settings else None)))
    return 0


def _cmd_aggregate(args) -> int:
    from hpc.sweep.aggregate import aggregate

    aggregate(args.plan, args.output)
    return 0


def _results_kind(name: str, root: Path) -> str:
    """What results/NAME holds: a sweep of training runs, a training run, or a sweep (adaptive
    or not); one line naming ``name`` when it is none of them."""
    from hpc.core import zarrio

    if paths.train_sweep_path(name, root).exists():
        return "train_sweep"
    if paths.plan_path(name, root).exists() or (paths.store_path(name, root) / "zarr.json").exists():
        return "adaptive" if zarrio.read_attrs(paths.store_path(name, root)).get("kind") == "adaptive" else "sweep"
    if (paths.train_store_path(name, root) / "zarr.json").exists():
        return "train"
    hint = "run its workflow first: snakemake --profile profiles/local --config sweep=SPEC (or train=SPEC)"
    if (paths.run_dir(name, root) / "points").is_dir():
        hint = "rerun its workflow (--config train=SPEC) to record the sweep's points (train-sweep.json)"
    raise SpecError("name", f"no planned sweep {name!r}, nor a training run or a sweep of training runs of that name, "
                    f"under {root}", hint)


def _cmd_report(args) -> int:
    from hpc.core import zarrio
    from hpc.report.build import write_report

    if _results_kind(args.name, Path(args.results)) == "train_sweep":
        from hpc.report.training_sweep import write_report_from_results

        print(write_report_from_results(args.name, Path(args.results), args.output))
        return 0
    if zarrio.read_attrs(paths.store_path(args.name, Path(args.results))).get("kind") == "adaptive":
        from hpc.report.adaptive import write_adaptive_report

        print(write_adaptive_report(args.name, Path(args.results), args.output))
        return 0
    print(write_report(args.name, Path(args.results), args.output))
    return 0


def _cmd_status(args) -> int:
    from hpc.core import zarrio
    from hpc.sweep.status import format_status, sweep_status, watch

    jobs = args.slurm != "none"
    sources = ("sacct", "squeue") if args.slurm == "auto" else (args.slurm,)
    status = None
    try:
        kind = _results_kind(args.name, Path(args.results))
    except SpecError:
        # Nothing on disk yet (a training run whose job is still queued, or died before writing
        # anything): a training run all the same where Slurm has its job.
        from hpc.train import sweep_status

        if not jobs:
            raise
        status = sweep_status.train_run_status(args.name, Path(args.results), jobs=True, sources=sources)
        if not status["slurm_jobs"]:
            raise
        kind = "train"
    if kind in ("train_sweep", "train"):  # from the points' files and Slurm (hpc.train.sweep_status)
        from hpc.train import sweep_status

        if args.watch:
            try:
                return sweep_status.watch_train(args.name, Path(args.results), args.interval, sys.stdout, kind,
                                                jobs=jobs, sources=sources)
            except KeyboardInterrupt:
                return 130
        if status is None:
            status = (sweep_status.train_sweep_status if kind == "train_sweep" else sweep_status.train_run_status)(
                args.name, Path(args.results), jobs=jobs, sources=sources)
        print(sweep_status.format_train_status(status))
        return 0
    if zarrio.read_attrs(paths.store_path(args.name, Path(args.results))).get("kind") == "adaptive":
        from hpc.sweep.adaptive import describe_progress

        print(describe_progress(args.name, Path(args.results)))
        return 0
    if args.watch:
        try:
            return watch(args.name, Path(args.results), args.interval, jobs=jobs, sources=sources)
        except KeyboardInterrupt:
            return 130
    print(format_status(sweep_status(args.name, Path(args.results), jobs=jobs, sources=sources),
                        bar=sys.stdout.isatty()))
    return 0


def _cmd_train(args) -> int:
    if args.action == "validate":
        from hpc.core import specfile
        from hpc.train.spec import load_train_spec
        from hpc.train.sweep import is_sweep, load_train_sweep

        if is_sweep(specfile.read_spec_file(args.spec)[1]):
            sweep = load_train_sweep(args.spec)
            print(f"{args.spec}: ok (a sweep of {len(sweep.specs)} training runs)")
            for point, spec in zip(sweep.points, sweep.specs):
                print(f"  {spec.name}: " + ", ".join(f"{k}={v}" for k, v in point.items()))
            return 0
        spec = load_train_spec(args.spec)
        print(f"{args.spec}: ok ({spec.summary()})")
        return 0
    if args.tasks > 1 or args.cpu_devices:
        import signal

        from hpc.execution.launch import run_processes

        # The ranks take SIGTERM (checkpoint, then exit 143); this launcher waits for them.
        signal.signal(signal.SIGTERM, lambda *_: None)
        inner = [sys.executable, "-m", "hpc", "train", "run", args.spec]
        if args.marker:
            inner += ["--marker", args.marker]
        if args.point:
            inner += ["--point", args.point]
        return run_processes(inner, args.tasks, False, args.cpu_devices)
    from hpc.train.loop import run_training

    return run_training(args.spec, args.marker, point=args.point)


def _cmd_cluster(args) -> int:
    from hpc.cluster import emulated as cluster

    if args.action == "up":
        info = cluster.cluster_up(nodes=args.nodes)
        print(cluster.format_status(info))
    elif args.action == "down":
        cluster.cluster_down()
        print("cluster stopped")
    else:
        print(cluster.format_status(cluster.cluster_status()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpc", description="Sweeps of JAX models on Slurm, into one Zarr store.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a sweep spec (schema, then the model)")
    p.add_argument("spec")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("plan", help="show the grid and the shards of a spec; with --output, create the store; "
                                    "with --estimate, predict its cost from a short probe")
    p.add_argument("spec", nargs="?")
    p.add_argument("--output", help="write the plan here (results/NAME/plan.json) and create the empty store")
    p.add_argument("--estimate", nargs="?", const="local", metavar="local|slurm",
                   help="probe the model on this machine (or, =slurm, in one short job on the cluster's nodes) "
                        "and predict each shard's runtime and peak memory, the core-hours and the wall time; "
                        "saved to results/NAME/estimate.json")
    p.add_argument("--json", action="store_true", help="with --estimate: print the prediction as one JSON object")
    p.add_argument("--jobs", type=int, help="with --estimate: shard jobs running at once (default: all)")
    p.add_argument("--probe-max-s", type=float,
                   help="with --estimate: seconds of timed steps at most, compiling aside (default 60)")
    p.add_argument("--probe-fraction", type=float,
                   help="with --estimate: the timed steps' share of one shard's predicted runtime at most (default 0.1)")
    p.add_argument("--partition", help="with --estimate=slurm: the partition of the probe job")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("run-shard", help="compute one shard of a planned sweep (run by the workflow)")
    p.add_argument("plan")
    p.add_argument("shard", type=int)
    p.add_argument("--marker", help="completion marker to write (default: results/NAME/shards/shard-NNNN.json)")
    p.add_argument("--tasks", type=int, default=1,
                   help="processes for this shard: srun inside a Slurm job, mpiexec with --mpi, else local processes")
    p.add_argument("--mpi", action="store_true", help="launch the processes with MPI (srun --mpi=pmi2 or mpiexec)")
    p.add_argument("--cpu-devices", type=int, default=0,
                   help="virtual CPU devices per process (XLA's --xla_force_host_platform_device_count)")
    p.set_defaults(func=_cmd_run_shard)

    p = sub.add_parser("run-dask", help="run a planned sweep's chunks as tasks on a dask(-jobqueue) cluster")
    p.add_argument("plan")
    p.add_argument("--settings", help="the spec's dask settings as JSON")
    p.set_defaults(func=_cmd_run_dask)

    p = sub.add_parser("aggregate", help="check every shard is committed and finalize the store")
    p.add_argument("plan")
    p.add_argument("--output", help="write the sweep's summary (JSON) here")
    p.set_defaults(func=_cmd_aggregate)

    p = sub.add_parser("report", help="build results/NAME/report.html from the store alone (a sweep of training "
                                      "runs: its points done so far)")
    p.add_argument("name")
    p.add_argument("--results", default="results", help="results root (default: results)")
    p.add_argument("--output", help="where to write the report (default: results/NAME/report.html)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("status", help="shards done/running/pending/failed, points done, throughput and time left; "
                                      "of a training run (or a sweep of them: each point's): its state, step and held-out RMSE")
    p.add_argument("name")
    p.add_argument("--results", default="results", help="results root (default: results)")
    p.add_argument("--watch", action="store_true",
                   help="refresh until the sweep is aggregated (exit 0) or a shard has failed for good: failed, "
                        "with the same latest job, on two refreshes in a row (exit 1)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between refreshes with --watch (default 10)")
    p.add_argument("--slurm", choices=["auto", "sacct", "squeue", "none"], default="auto",
                   help="where to read the shards' (a training run's or its sweep's points') Slurm jobs: auto (sacct's accounting and squeue's queue, "
                        "whichever answers), only one of them, or none (markers, store and logs only)")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("train", help="check a training spec, or train (run by the workflow; resumes from a checkpoint)")
    p.add_argument("action", choices=["validate", "run"])
    p.add_argument("spec")
    p.add_argument("--marker", help="completion marker to write (default: results/NAME/train.json)")
    p.add_argument("--point", help="of a sweep of training runs (hpc.train.sweep): the point to train, e.g. p003")
    p.add_argument("--tasks", type=int, default=1,
                   help="processes: srun inside a Slurm job, else local processes")
    p.add_argument("--cpu-devices", type=int, default=0,
                   help="virtual CPU devices per process (XLA's --xla_force_host_platform_device_count)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("cluster", help="an emulated multi-node Slurm cluster on this machine")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--nodes", type=int, default=3, help="number of emulated nodes (up)")
    p.set_defaults(func=_cmd_cluster)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SpecError as exc:
        print(f"hpc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from hpc.cluster.processes import ClusterError

        if not isinstance(exc, ClusterError):
            raise  # a bug: the traceback says where
        print(f"hpc {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
