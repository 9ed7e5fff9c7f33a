"""What a sweep will cost, before it is submitted: a short calibration probe and a prediction.

``probe(spec)`` runs what a shard runs (hpc.sweep.work and hpc.sweep.runner): for each static
group of the sweep it compiles the group's ``jit(shard_map(vmap(solve)))`` into the compile cache
(hpc.execution.compile_cache; every program is kept, however fast it compiled, so the shards
load it), times a few steady-state steps of real points of the group, spread over the sweep,
through ``runner.solve_schedule``, and reads XLA's compiled memory analysis of a step
(arguments, outputs and temporaries of one batch). Then a fresh Python process does what a
shard's process does before and beside its steps: gets each program (from the cache), runs a
step of each group and writes a few chunks into a scratch copy of the store; its times and peak
RSS (the JAX runtime, the programs, a step in flight, the writes) are a shard's.

The timed steps take at most ``PROBE_FRACTION`` of the longest shard's predicted runtime and
``PROBE_MAX_S`` (and ``MAX_TIMED_STEPS`` per group); compiling, which the sweep then saves, and
the fresh process's start-up come on top.

The shards' shapes (``shard_shapes``: each one's steps per static group, points per process and
chunks) are counted from the grid's axes (``StaticAxes``), not built point by point as a shard
job builds its work, and so are the probe's samples of a group: neither the probe nor its fresh
process holds every point of the grid (at 10^6 points that was 2-4 s and 150 MB, which the fresh
process's peak RSS, and so every shard's predicted memory, carried), and shards alike are one
shape, computed once.

``predict(shards, calibration, ...)`` is plain arithmetic on that calibration and the plan (each
shard's steps per static group, points per process and chunks), so it is unit-tested by hand:

- a shard's runtime (what its marker records as ``duration_s``, compile included) is, summed
  over its static groups, the time to get the group's program (a load from the compile
  cache, where the probe stored it; a compilation without the cache) plus steps × seconds per
  step, plus its process's chunks × the time to write and commit one;
- its peak memory is the fresh process's peak RSS plus a second step in flight (XLA's peak of a
  batch) and the outputs it holds until they are written (its process's points × the output
  bytes per point from XLA's memory analysis);
- compute is the sum of the shards' runtimes; core-hours (GPU-hours) count each shard job's
  cores (GPUs) for its runtime; the wall time is the shards run at the parallelism asked for
  (all at once by default, as Slurm runs them given the nodes), each waiting for a free slot.

A shard whose runtime or memory × ``MARGIN`` exceeds the spec's ``runtime`` (minutes) or
``mem_mb`` is flagged, with a shard count and resources that fit.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hpc.core import paths
from hpc.core.errors import SpecError
from hpc.core.files import write_atomic
from hpc.sweep.plan import Plan, make_plan
from hpc.sweep.work import Points, plain, static_names

PROBE_MAX_S = 60.0  # the probe's time for timed steps never exceeds this (besides compiling)
PROBE_FRACTION = 0.1  # ... nor this share of one shard's predicted runtime
MAX_TIMED_STEPS = 8  # steps timed per static group at most
WRITE_CHUNKS = 3  # chunks written into the scratch store to time the writes
MARGIN = 1.2  # a shard is flagged when its prediction × MARGIN exceeds the request
ESTIMATE_FILE = "estimate.json"  # results/NAME/estimate.json: the prediction, for the report


@dataclass
class GroupCost:
    """The calibration of one static group (one compiled program)."""

    static: dict  # the static parameter values
    compile_s: float  # what a shard spends getting the program: a compile, or a cache load
    probe_compile_s: float  # the probe's own compile (or cache load) of it
    cached: bool  # the probe's program is in the compile cache: shards load it
    step_s: float  # seconds per steady-state step of process_batch points
    steps_timed: int
    batch_peak_mb: float  # XLA: arguments + outputs + temporaries - aliased, of one step
    output_bytes_per_point: float  # XLA: the outputs of one step / its points


@dataclass
class Calibration:
    """What the probe measured on this machine."""

    groups: list[GroupCost]
    process_batch: int  # points per step of one process (device batch × local devices)
    write_s_per_chunk: float  # writing and committing one chunk of the plan
    shard_rss_mb: float  # a fresh process's peak RSS: runtime, programs, a step, chunk writes
    probe_rss_mb: float  # the probe's own peak RSS (compiling included)
    probe_s: float  # the probe's wall time
    host: str = ""
    devices: list[str] = field(default_factory=list)

    def group(self, key: tuple, names: list[str]) -> GroupCost:
        wanted = dict(zip(names, key))
        for g in self.groups:
            if g.static == wanted:
                return g
        raise KeyError(f"no calibration for static values {wanted}")


@dataclass(frozen=True)
class ShardShape:
    """What the prediction needs of one shard's work (from hpc.sweep.work.ShardWork)."""

    points: int
    group_steps: dict  # static key -> steps every process takes
    process_points: int  # the most points one process of the shard computes and holds
    chunks: int
    process_chunks: int  # the most chunks one process writes


class StaticAxes:
    """The grid's static keys, axis by axis, without building them point by point.

    A point's static key (hpc.sweep.work.Points) is the values of the model's static parameters
    there: each one fixed, or carried by one axis of the grid. Since the grid is the product of
    its axes and a chunk a block of it, the points of a block per static key are the products of
    each axis's counts over the block's slice of that axis; a 10^6-point grid in 20,000 chunks
    is counted from a few distinct slices per axis instead of 10^6 keys."""

    def __init__(self, plan: Plan, model):
        self.plan = plan
        self.names = static_names(model)
        axes = plan.spec["axes"]
        source = {}  # static name -> the axis carrying it (the last, as plan.point_values reads)
        for j, axis in enumerate(axes):
            for pname in axis["values"]:
                if pname in self.names:
                    source[pname] = j
        self.fixed = {n: plan.fixed_parameters[n] for n in self.names if n not in source}
        self.static_axes = sorted(set(source.values()))
        self.axis_names = {j: [n for n in self.names if source.get(n) == j] for j in self.static_axes}
        # axis j -> its static values at each of its indices, a tuple per index (in axis_names order)
        self.sub = {j: list(zip(*(map(plain, np.asarray(axes[j]["values"][n])) for n in self.axis_names[j])))
                    for j in self.static_axes}
        self._slices: dict = {}
        self._blocks: dict = {}

    def key(self, subs: tuple) -> tuple:
        """The static key of the sub-keys ``subs`` (one per static axis)."""
        values = dict(self.fixed)
        for j, sub in zip(self.static_axes, subs):
            values.update(zip(self.axis_names[j], sub))
        return tuple(values[n] for n in self.names)

    def keys(self) -> list[tuple]:
        """Every static key of the grid (each combination of the axes' values occurs)."""
        distinct = [list(dict.fromkeys(self.sub[j])) for j in self.static_axes]
        return [self.key(subs) for subs in itertools.product(*distinct)]

    def _slice_counts(self, j: int, start: int, stop: int) -> dict:
        if (j, start, stop) not in self._slices:
            counts: dict = {}
            for sub in self.sub[j][start:stop]:
                counts[sub] = counts.get(sub, 0) + 1
            self._slices[j, start, stop] = counts
        return self._slices[j, start, stop]

    def block_counts(self, region: tuple[slice, ...]) -> dict[tuple, int]:
        """Points of the block ``region`` per static key, keys in the order of their first point
        (C order within the block, as the runner lists a chunk's points)."""
        spans = tuple((s.start, s.stop) for s in region)
        if spans not in self._blocks:
            others = math.prod(b - a for j, (a, b) in enumerate(spans) if j not in self.sub)
            counts: dict = {}
            if others:
                per_axis = [self._slice_counts(j, *spans[j]).items() for j in self.static_axes]
                for combo in itertools.product(*per_axis):  # first axis slowest: C order
                    key = self.key(tuple(sub for sub, _ in combo))
                    counts[key] = counts.get(key, 0) + math.prod(n for _, n in combo) * others
            self._blocks[spans] = counts
        return self._blocks[spans]

    def members(self, key: tuple, start: int, stop: int) -> np.ndarray:
        """Flat grid indices of the ``start``-th to ``stop``-th point (C order) with static ``key``."""
        wanted = dict(zip(self.names, key))
        per_axis = []
        for j, n in enumerate(self.plan.shape):
            if j in self.sub:
                sub = tuple(wanted[name] for name in self.axis_names[j])
                per_axis.append(np.flatnonzero([s == sub for s in self.sub[j]]))
            else:
                per_axis.append(np.arange(n))
        sizes = tuple(len(a) for a in per_axis)
        pos = np.arange(start, min(stop, math.prod(sizes)))
        index = np.unravel_index(pos, sizes)
        return np.ravel_multi_index([a[i] for a, i in zip(per_axis, index)], self.plan.shape)

    def n_members(self, key: tuple) -> int:
        wanted = dict(zip(self.names, key))
        return math.prod(sum(s == tuple(wanted[name] for name in self.axis_names[j]) for s in self.sub[j])
                         if j in self.sub else n for j, n in enumerate(self.plan.shape))


def shard_shapes(plan: Plan, model, tasks: int, process_batch: int) -> list[ShardShape]:
    """Each shard's work as its job builds it (hpc.sweep.work.shard_work: every chunk still to do,
    ``tasks`` processes, each a contiguous run of the chunks), counted from the axes
    (StaticAxes) rather than built point by point; shards whose chunks count alike are one shape,
    computed once."""
    axes = StaticAxes(plan, model)
    chunk_counts = [axes.block_counts(plan.chunk_region(c)) for c in range(plan.n_chunks)]
    by_counts: dict = {}
    shapes = []
    for shard in range(plan.n_shards):
        ids = list(plan.shard_chunk_ids(shard))
        signature = tuple(tuple(chunk_counts[c].items()) for c in ids)
        if signature not in by_counts:
            by_counts[signature] = _shape_of([chunk_counts[c] for c in ids], tasks, process_batch)
        shapes.append(by_counts[signature])
    return shapes


def _shape_of(chunks: list[dict], tasks: int, process_batch: int) -> ShardShape:
    """A shard's shape from its chunks' points per static key (what shard_work computes)."""
    steps: dict = {}
    process_points = process_chunks = 0
    for run in np.array_split(np.arange(len(chunks)), tasks):
        counts: dict = {}
        for c in run:
            for key, n in chunks[c].items():
                counts[key] = counts.get(key, 0) + n
        for key, n in counts.items():
            steps[key] = max(steps.get(key, 0), math.ceil(n / process_batch))
        process_points = max(process_points, sum(counts.values()))
        process_chunks = max(process_chunks, len(run))
    points = sum(n for c in chunks for n in c.values())
    return ShardShape(points, steps, process_points, len(chunks), process_chunks)


def job_cores(resources: dict) -> int:
    """CPU cores one shard job holds: its tasks × CPUs per task."""
    return resources.get("tasks", 1) * resources.get("cpus_per_task", 1)


def makespan(runtimes: list[float], jobs: int) -> float:
    """Wall time of running ``runtimes`` in order on ``jobs`` slots, each job taking the first free one."""
    slots = [0.0] * max(1, min(jobs, len(runtimes) or 1))  # a heap: the first free slot on top
    for t in runtimes:
        heapq.heapreplace(slots, slots[0] + t)
    return max(slots)


def predict(shards: list[ShardShape], cal: Calibration, names: list[str], resources: dict,
            jobs: int | None = None) -> dict:
    """The prediction from ``cal`` for shards of the given shapes (see the module docstring).

    ``names``: the static parameters' names (the keys' order); ``resources``: the spec's, per
    shard job; ``jobs``: shards running at once (default: all of them)."""
    out_shards = []
    costs: dict = {}
    for i, s in enumerate(shards):
        runtime = s.process_chunks * cal.write_s_per_chunk
        out_bytes = batch_mb = 0.0
        for key, steps in s.group_steps.items():
            g = costs[key] if key in costs else costs.setdefault(key, cal.group(key, names))
            runtime += g.compile_s + steps * g.step_s
            out_bytes = max(out_bytes, g.output_bytes_per_point)
            batch_mb = max(batch_mb, g.batch_peak_mb)
        # the fresh process held one step; a shard keeps a second in flight and its outputs
        peak = cal.shard_rss_mb + batch_mb + s.process_points * out_bytes / 2**20
        out_shards.append({"shard": i, "points": s.points, "chunks": s.chunks,
                           "runtime_s": round(runtime, 3), "peak_memory_mb": round(peak, 1)})
    runtimes = [s["runtime_s"] for s in out_shards]
    compute = sum(runtimes)
    jobs = len(shards) if jobs is None else jobs
    gpus = resources.get("gpus", 0)
    result = {
        "compute_s": round(compute, 3),
        "core_hours": round(compute * job_cores(resources) / 3600, 6),
        "gpu_hours": round(compute * gpus / 3600, 6) if gpus else None,
        "wall_s": round(makespan(runtimes, jobs), 3),
        "jobs": jobs,
        "shards": out_shards,
    }
    result["warnings"], result["suggested"] = check_limits(shards, out_shards, cal, names, resources)
    return result


def _fixed_s(shape: ShardShape, cal: Calibration, names: list[str]) -> float:
    """A shard's runtime that does not shrink with its points: getting its programs."""
    return sum(cal.group(key, names).compile_s for key in shape.group_steps)


def check_limits(shapes: list[ShardShape], shards: list[dict], cal: Calibration, names: list[str],
                 resources: dict) -> tuple[list[str], dict]:
    """Warnings for shards over the spec's runtime or mem_mb (with MARGIN), and what would fit:
    ``runtime`` (minutes) and ``mem_mb`` covering the largest shard × MARGIN, and the shard
    count at which every shard fits in the spec's runtime."""
    longest = max(s["runtime_s"] for s in shards)
    biggest = max(s["peak_memory_mb"] for s in shards)
    suggested = {"runtime": max(1, math.ceil(longest * MARGIN / 60)),
                 "mem_mb": int(math.ceil(biggest * MARGIN / 100) * 100), "shards": len(shards)}
    warnings = []
    limit_s = resources.get("runtime", 0) * 60
    if limit_s:
        over = [s for s in shards if s["runtime_s"] * MARGIN > limit_s]
        if over:
            fixed = max(_fixed_s(shape, cal, names) for shape in shapes)
            scalable = sum(s["runtime_s"] for s in shards) - sum(_fixed_s(shape, cal, names) for shape in shapes)
            room = limit_s / MARGIN - fixed
            fits = math.ceil(scalable / room) if room > 0 else None
            points = sum(s["points"] for s in shards)
            if fits is not None and fits <= points:
                suggested["shards"] = max(fits, len(shards))
            hint = (f"shards: {suggested['shards']}" if fits is not None and fits <= points else
                    "fewer points per shard cannot help (compiling alone takes that long)")
            warnings.append(f"{len(over)} of {len(shards)} shards may exceed resources.runtime = "
                            f"{resources['runtime']} min (longest {longest:.1f} s × margin {MARGIN}): "
                            f"{hint}, or runtime: {suggested['runtime']}")
    mem = resources.get("mem_mb", 0)
    if mem:
        over = [s for s in shards if s["peak_memory_mb"] * MARGIN > mem]
        if over:
            warnings.append(f"{len(over)} of {len(shards)} shards may exceed resources.mem_mb = {mem} "
                            f"(largest peak {biggest:.0f} MB × margin {MARGIN}): mem_mb: {suggested['mem_mb']}")
    return warnings, suggested


# --- the probe --------------------------------------------------------------------------------

def _rss_mb() -> float:
    """This process's peak RSS (the runner's measure, so probe and shards count alike)."""
    from hpc.sweep.runner import peak_rss_mb

    return peak_rss_mb()


def _log(message: str) -> None:
    print(f"estimate: {message}", file=sys.stderr, flush=True)


def _group_sample(plan: Plan, axes: StaticAxes, model, key: tuple, batch: int, k: int) -> Points:
    """Up to ``k`` full steps of ``batch`` points of static group ``key``: the middle step of
    each of ``k`` equal stretches of the group (the points' cost may vary along the sweep)."""
    n_steps = max(1, axes.n_members(key) // batch)
    k = min(k, n_steps)
    starts = np.unique(((np.arange(k) + 0.5) * n_steps / k).astype(int)) * batch
    idx = np.concatenate([axes.members(key, s, s + batch) for s in starts])
    return _points_at(plan, model, idx)


def _points_at(plan: Plan, model, flat: np.ndarray) -> Points:
    return Points.of(model, plan.fixed_parameters, plan.point_values(flat), len(flat))


def _timed(solver, plan: Plan, points: Points) -> tuple[float, dict, int]:
    """Run ``points`` (one group) through the runner's schedule: seconds, outputs, steps."""
    from hpc.sweep.runner import solve_schedule

    steps = points.group_steps(solver.process_batch)
    t0 = time.perf_counter()
    outputs, errors = solve_schedule(solver, plan.fixed_parameters, points, steps, points.first_points(solver.model))
    if errors:
        raise SpecError("model", f"the model failed while probing: {next(iter(errors.values()))}")
    return time.perf_counter() - t0, outputs, sum(steps.values())


def probe(spec, root: Path | None = None, max_s: float = PROBE_MAX_S, fraction: float = PROBE_FRACTION,
          tasks: int | None = None) -> tuple[Plan, list[ShardShape], Calibration]:
    """Calibrate the sweep of ``spec`` on this machine (see the module docstring)."""
    from hpc.execution import compile_cache
    from hpc.models import get_model
    from hpc.sweep import runner

    started = time.perf_counter()
    plan = make_plan(spec)
    model = get_model(plan.model)
    runner.configure_precision(plan.precision)
    cache = compile_cache.enable(root or paths.RESULTS_ROOT)
    if cache:  # every program the probe compiles is kept, however fast: the shards load it
        import jax

        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    solver = runner.MeshSolver(model, plan.precision, runner.device_batch_size(plan))
    batch = solver.process_batch
    tasks = tasks or spec.resources.get("tasks", 1)
    shapes = shard_shapes(plan, model, tasks, batch)
    axes = StaticAxes(plan, model)
    keys = sorted({k for s in shapes for k in s.group_steps}, key=repr)
    names = static_names(model)
    _log(f"{len(keys)} static group(s), {batch} points per step, cache {'on' if cache else 'off'}")

    # First pass: compile each group and run one step of it; the compile goes to the cache.
    first: dict[tuple, tuple] = {}
    stored: dict[tuple, bool] = {}
    for key in keys:
        points = _group_sample(plan, axes, model, key, batch, 1)
        c0, entries = solver.compile_s, _entries(cache)
        seconds, outputs, steps = _timed(solver, plan, points)
        compile_s = solver.compile_s - c0
        stored[key] = bool(cache) and _entries(cache) > entries  # JAX kept the program: shards load it
        first[key] = (compile_s, max(seconds - compile_s, 1e-6) / steps, outputs)
        _log(f"{dict(zip(names, key))}: compiled in {compile_s:.2f} s, a step {first[key][1] * 1e3:.1f} ms")

    # Budget for the timed steps: a share of the longest shard as the first pass predicts it.
    rough = Calibration([_cost(dict(zip(names, k)), first[k][0], first[k][0], False, first[k][1], 1, solver, k)
                         for k in keys], batch, 0.0, 0.0, 0.0, 0.0)
    longest = max(s["runtime_s"] for s in predict(shapes, rough, names, spec.resources)["shards"])
    budget = min(max_s, fraction * longest) / len(keys)

    groups = []
    for key in keys:
        compile_s, step_s, outputs = first[key]
        k = int(min(MAX_TIMED_STEPS, budget // step_s))
        timed = 1
        if k >= 1:
            # k steps, one from each of k equal stretches of the group (a point's cost may change
            # along the sweep), each timed alone: their mean is the mean step's cost.
            sample = _group_sample(plan, axes, model, key, batch, k)
            times = []
            for i in range(0, sample.n, batch):
                seconds, outputs, _ = _timed(solver, plan, sample.rows(i, i + batch))
                times.append(seconds)
            step_s, timed = float(np.mean(times)), len(times)
        groups.append((key, compile_s, step_s, timed, outputs))

    # A shard's own start-up: a fresh process gets each group's program (from the cache where the
    # probe stored it), runs a step and writes chunks, as a shard job's process does.
    fresh = _replay(plan, root or paths.RESULTS_ROOT)
    import jax

    costs = [_cost(dict(zip(names, key)), load_s, compile_s, stored[key], step_s, timed, solver, key)
             for (key, compile_s, step_s, timed, _), load_s in zip(groups, fresh["compile_s"])]
    cal = Calibration(costs, batch, fresh["write_s_per_chunk"], fresh["rss_mb"], round(_rss_mb(), 1),
                      round(time.perf_counter() - started, 3), runner.distributed.node_name(),
                      [str(d) for d in jax.local_devices()])
    return plan, shapes, cal


def _replay(plan: Plan, root: Path) -> dict:
    """Run ``replay`` in a fresh Python process; its measurements."""
    import subprocess

    from hpc.core import checkout

    with tempfile.TemporaryDirectory(prefix="hpc-estimate-") as tmp:
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(plan.to_json())
        code = "import sys; from hpc.sweep.estimate import replay_main; replay_main(sys.argv[1:])"
        done = subprocess.run([sys.executable, "-c", code, str(plan_file), str(root)], capture_output=True, text=True,
                              env=dict(os.environ, **checkout.pythonpath_env()))
    if done.returncode != 0:
        raise RuntimeError(f"the probe's fresh process failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def replay_main(argv: list[str]) -> None:
    """In a fresh process (``_replay``): what a shard process spends before and beside its steps."""
    from hpc.execution import compile_cache
    from hpc.models import get_model
    from hpc.sweep import runner, store

    plan_file, root = argv
    plan = Plan.from_json(Path(plan_file).read_text())
    model = get_model(plan.model)
    runner.configure_precision(plan.precision)
    compile_cache.enable(root)
    solver = runner.MeshSolver(model, plan.precision, runner.device_batch_size(plan))
    axes = StaticAxes(plan, model)
    keys = sorted(axes.keys(), key=repr)
    compile_s, outputs = [], None
    for key in keys:
        c0 = solver.compile_s
        _, out, _ = _timed(solver, plan, _group_sample(plan, axes, model, key, solver.process_batch, 1))
        compile_s.append(round(solver.compile_s - c0, 4))
        outputs = outputs or out
    write_s = _time_writes(plan, model, store, runner, outputs)
    print(json.dumps({"compile_s": compile_s, "write_s_per_chunk": write_s, "rss_mb": round(_rss_mb(), 1)}))


def _entries(cache: Path | None) -> int:
    """Files in the compile cache (a new one: JAX stored the program just compiled)."""
    return sum(1 for _ in cache.iterdir()) if cache and cache.is_dir() else 0


def _cost(static: dict, shard_compile: float, compile_s: float, cached: bool, step_s: float, timed: int,
          solver, key: tuple) -> GroupCost:
    stats = solver._compiled[key].memory_analysis()
    peak = out = 0.0
    if stats is not None:
        out = float(stats.output_size_in_bytes)
        peak = (stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
                - stats.alias_size_in_bytes)
    return GroupCost(static, round(shard_compile, 4), round(compile_s, 4), cached, step_s, timed,
                     round(peak / 2**20, 3), out / solver.process_batch)


def _time_writes(plan: Plan, model, store, runner, outputs: dict) -> float:
    """Seconds to write and commit one chunk, timed on a few chunks of a scratch store with real
    outputs (those of the probe's steps, repeated to the chunk's size)."""
    from hpc.sweep.work import Chunk

    n_out = len(next(iter(outputs.values())))
    with tempfile.TemporaryDirectory(prefix="hpc-estimate-") as tmp:
        store.create_store(plan, Path(tmp))
        group = store.open_arrays(plan.name, Path(tmp))
        written, seconds = 0, 0.0
        for c in range(min(WRITE_CHUNKS, plan.n_chunks)):  # the plan's chunks are alike in size
            chunk = Chunk(c, plan.chunk_region(c), plan.region_points(plan.chunk_region(c)))
            rows = np.arange(chunk.size) % n_out
            data = {name: value[rows] for name, value in outputs.items()}
            finite = runner.finite_mask(model, data)
            t0 = time.perf_counter()
            runner.write_chunks(group, (chunk,), data, finite)
            seconds += time.perf_counter() - t0
            written += 1
    return seconds / max(1, written)


def estimate(spec, root: Path | None = None, max_s: float = PROBE_MAX_S, fraction: float = PROBE_FRACTION,
             jobs: int | None = None, tasks: int | None = None) -> dict:
    """Probe and predict: the prediction as one JSON-ready dict."""
    plan, shapes, cal = probe(spec, root, max_s, fraction, tasks)
    from hpc.models import get_model

    names = static_names(get_model(plan.model))
    result = predict(shapes, cal, names, spec.resources, jobs)
    result.update(name=plan.name, digest=plan.digest, made=time.time(), source="local",
                  probe_s=cal.probe_s, calibration=asdict(cal))
    if (spec.resources.get("tasks", 1) > 1 and spec.resources.get("nodes", 1) < spec.resources.get("tasks", 1)):
        result["warnings"].append("several processes per node: the probe timed one process with this "
                                  "machine's cores; processes sharing a node each get a share of them")
    return result


def save(result: dict, root: Path | None = None) -> Path:
    """Keep the prediction beside the sweep's results (the report reads it)."""
    out = paths.run_dir(result["name"], root) / ESTIMATE_FILE
    write_atomic(out, json.dumps(result, indent=1, default=str))
    return out


def load(name: str, root: Path | None = None, digest: str | None = None) -> dict | None:
    """The saved prediction of sweep ``name`` (of that spec's ``digest`` when given), or None."""
    try:
        body = json.loads((paths.run_dir(name, root) / ESTIMATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if digest is not None and body.get("digest") != digest:
        return None
    return body


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def describe(result: dict, resources: dict | None = None) -> str:
    """The prediction as a short table (for `hpc plan --estimate`)."""
    cal = result.get("calibration", {})
    lines = [f"estimate of sweep {result['name']!r} ({result['source']} probe on {cal.get('host', '?')}, "
             f"{result['probe_s']:.1f} s):",
             f"{'shard':>6} {'points':>8} {'runtime':>10} {'peak MB':>9}"]
    shards = result["shards"]
    shown = shards if len(shards) <= 12 else shards[:5] + [None] + shards[-5:]
    for s in shown:
        lines.append("   ..." if s is None else
                     f"{s['shard']:>6} {s['points']:>8} {_duration(s['runtime_s']):>10} {s['peak_memory_mb']:>9.0f}")
    hours = f"{result['core_hours']:.4g} core-hours"
    if result.get("gpu_hours"):
        hours += f", {result['gpu_hours']:.4g} GPU-hours"
    lines.append(f"total: compute {_duration(result['compute_s'])} ({hours}); wall {_duration(result['wall_s'])} "
                 f"with {result['jobs']} shard job(s) at once")
    for w in result["warnings"]:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def slurm_estimate(spec_file: str, spec, args: list[str], root: Path | None = None,
                   partition: str | None = None) -> dict:
    """Run ``hpc plan --estimate --json`` as one short job on the cluster's nodes (sbatch --wait)
    and return its prediction (which the job also saved as results/NAME/estimate.json)."""
    import shutil
    import subprocess

    from hpc.core import checkout

    if not shutil.which("sbatch"):
        raise SpecError("--estimate", "slurm: sbatch is not on PATH", "use --estimate (this machine) instead")
    run_dir = paths.run_dir(spec.name, root).resolve()
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    out, log = run_dir / "logs" / "estimate-job.json", run_dir / "logs" / "estimate-job.log"
    out.unlink(missing_ok=True)
    res = spec.resources
    inner = " ".join([f"'{sys.executable}'", "-m", "hpc", "plan", f"'{Path(spec_file).resolve()}'",
                      "--estimate", "--json", *args])
    env = dict(os.environ, **checkout.pythonpath_env(), HPC_RESULTS=str(Path(root or paths.RESULTS_ROOT).resolve()))
    cmd = ["sbatch", "--wait", "--parsable", "--job-name", f"hpc-estimate-{spec.name}", "--nodes", "1",
           "--ntasks", "1", "--cpus-per-task", str(res.get("cpus_per_task", 1)),
           "--mem", str(res.get("mem_mb", 2000)), "--time", "10", "--output", str(log),
           "--chdir", os.getcwd(), "--wrap", f"{inner} > '{out}'"]
    if partition:
        cmd[1:1] = ["--partition", partition]
    if res.get("gpus"):
        cmd[1:1] = [f"--gpus={res['gpus']}"]
    _log(f"submitting the probe: {' '.join(cmd[:-2])} ...")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not out.exists() or not out.stat().st_size:
        tail = log.read_text()[-1500:] if log.exists() else ""
        raise RuntimeError(f"the probe job failed ({done.stderr.strip() or 'exit ' + str(done.returncode)}): {tail}")
    result = json.loads(out.read_text())
    result["source"] = "slurm"
    result["job_id"] = done.stdout.strip().split(";")[0]
    return result
