"""Adaptive sweeps: points chosen round by round by a python-adaptive learner, each round solved as
a sweep of its own through the plan, store and runner of a grid sweep.

A spec with an ``adaptive:`` block (instead of ``sweep:``) names a box of float parameters, the
scalar output(s) to learn, a stopping rule and the points per round. Round r (from 0):

1. ``ask_round``: rebuild the learner (Learner1D, Learner2D or LearnerND for 1, 2, 3+ parameters)
   from the sweep's store, tell it every committed point, and either decide to stop (loss at most
   ``stop.loss``, ``stop.max_points`` solved, or ``stop.max_rounds`` rounds) or ask it for the
   round's batch; written atomically to ``rounds/round-RRRR/ask.json`` (kept once written, so
   a resumed controller runs exactly the points asked before).
2. ``plan_round``: the round as a sweep of explicit points (one sampled dimension ``point``) named
   ``round-RRRR`` under the results root ``results/NAME/rounds``: plan, store and shard jobs are
   those of any sweep (hpc.sweep.store.plan_sweep, hpc.sweep.runner), so backends, bitwise
   invariance, chunk-by-chunk resume and fault handling are the same. With ``backend: jax`` the
   round's shards are shard jobs (``hpc run-shard``); with ``backend: dask`` its chunks are dask
   tasks of one ``hpc run-dask`` job (hpc.sweep.dask_run: a SLURMCluster or a LocalCluster per
   ``dask:``), which writes the same shard markers.
3. ``merge_round``: once every shard of the round is committed, its points are appended to the
   sweep's store ``results/NAME/sweep.zarr`` along ``point`` (one coordinate per box parameter,
   ``round``, the model's outputs, ``finite``, ``failed``, ``point_done`` last). The store's
   ``point`` chunks are ``points_per_round`` long and a round starts on a chunk boundary, so each
   round writes whole chunks of its own; only this one step (in the controller) writes the store.
   The round is recorded in the store's ``rounds`` attribute; a merge killed before that is
   redone over the same chunks. Then the outputs' arrays of the round's own store are removed
   (``drop_round_outputs``), so a point's data is kept once; after the round is recorded nothing
   reads them again (a merge of a recorded round only writes ``merged.json``). Its status arrays
   and coordinates stay, for ``hpc status round-RRRR``.

Points where the model failed or gave a non-finite output are kept in the store but not told to
the learner.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from hpc.core import paths, zarrio
from hpc.core.errors import SpecError
from hpc.core.files import write_atomic
from hpc.core.timefmt import now_iso
from hpc.models.base import Model

POINT_DIM = "point"
ROUND_VAR = "round"
ROUNDS_DIR = "rounds"
# What a merged round's own store keeps: the arrays hpc status reads (hpc.sweep.store.committed_points).
ROUND_STATUS_KEPT = ("point_done", "finite", "failed", "converged", "shard_index")


# --- the spec --------------------------------------------------------------------------------


def check_settings(model: Model, data: dict, full: dict) -> dict:
    """The checked ``adaptive:`` block of a spec (``data`` as written, ``full`` with defaults), in
    a JSON-friendly form; one SpecError naming the key otherwise."""
    from hpc.sweep.spec import check_value, store_names

    block = full["adaptive"]
    for other in ("sweep", "sample"):
        if other in data:
            raise SpecError(other, f"both {other}: and adaptive: given", f"an adaptive sweep chooses its own points: remove {other}:")
    box = {}
    for pname, pair in block["box"].items():
        key = f"adaptive.box.{pname}"
        try:
            param = model.parameter(pname)
        except KeyError:
            raise SpecError(key, f"model {model.name!r} has no parameter {pname!r}",
                            "its parameters: " + ", ".join(model.parameter_names)) from None
        if param.kind != "float" or param.role == "shape":
            raise SpecError(key, f"{pname} is not a float parameter that may vary",
                            "a box holds float parameters that do not set the outputs' shape")
        if pname in full["params"]:
            raise SpecError(f"params.{pname}", f"{pname} is both fixed and in the adaptive box", "remove it from one")
        lo, hi = (check_value(param, v, key) for v in pair)
        if not lo < hi:
            raise SpecError(key, f"empty or inverted range [{lo}, {hi}]", "give [low, high] with low < high")
        if not math.isfinite(hi - lo):
            raise SpecError(key, f"[{lo}, {hi}]: high - low overflows", "give a narrower range")
        box[pname] = [lo, hi]
    wanted = block["output"] if isinstance(block["output"], list) else [block["output"]]
    outputs = {o.name: o for o in model.outputs}
    for name in wanted:
        if name not in outputs:
            raise SpecError("adaptive.output", f"model {model.name!r} has no output {name!r}",
                            "its outputs: " + ", ".join(outputs))
        if outputs[name].dims or outputs[name].dtype == "bool":
            raise SpecError("adaptive.output", f"{name} is not a scalar number (dims {list(outputs[name].dims)}, "
                            f"{outputs[name].dtype})", "learn a scalar float or int output")
    taken = store_names(model, parameters=False)
    for name in (POINT_DIM, ROUND_VAR):
        if name in taken:
            raise SpecError("adaptive", f"the store's {name!r} would clash with {taken[name]}", "rename it in the model")
    stop = block["stop"]
    per_round = block["points_per_round"]
    return {"box": box, "outputs": wanted, "points_per_round": per_round,
            "stop": {"loss": stop.get("loss"), "max_points": stop["max_points"], "max_rounds": stop["max_rounds"]}}


# --- paths -----------------------------------------------------------------------------------


def rounds_root(name: str, root: Path | None = None) -> Path:
    """The results root the rounds' own sweeps live under: results/NAME/rounds."""
    return paths.run_dir(name, root) / ROUNDS_DIR


def round_name(r: int) -> str:
    return f"round-{r:04d}"


def ask_path(name: str, r: int, root: Path | None = None) -> Path:
    return paths.run_dir(round_name(r), rounds_root(name, root)) / "ask.json"


def round_plan_path(name: str, r: int, root: Path | None = None) -> Path:
    return paths.plan_path(round_name(r), rounds_root(name, root))


def merged_path(name: str, r: int, root: Path | None = None) -> Path:
    return paths.run_dir(round_name(r), rounds_root(name, root)) / "merged.json"


def dask_summary_path(name: str, r: int, root: Path | None = None) -> Path:
    """What round r's ``hpc run-dask`` job printed (backend: dask): written once all its chunks ran."""
    return paths.run_dir(round_name(r), rounds_root(name, root)) / "dask.json"


# --- the learner -----------------------------------------------------------------------------


def make_learner(settings: dict):
    """An empty python-adaptive learner over the box (its function is never called: the sweep's
    shard jobs solve the points)."""
    import adaptive

    bounds = [tuple(v) for v in settings["box"].values()]
    if len(bounds) == 1:
        return adaptive.Learner1D(None, bounds=bounds[0])
    if len(bounds) == 2:
        return adaptive.Learner2D(None, bounds=bounds)
    return adaptive.LearnerND(None, bounds=bounds)


def _key(settings: dict, row: np.ndarray):
    return float(row[0]) if len(settings["box"]) == 1 else tuple(float(x) for x in row)


def _value(settings: dict, row: np.ndarray):
    return float(row[0]) if len(settings["outputs"]) == 1 else np.asarray(row, float)


def learner_from(settings: dict, points: np.ndarray, values: np.ndarray):
    """A learner told ``points`` (n x parameters) and their ``values`` (n x outputs), in order."""
    learner = make_learner(settings)
    if len(points):
        learner.tell_many([_key(settings, p) for p in points], [_value(settings, v) for v in values])
    return learner


def learner_loss(learner) -> float:
    """The learner's loss (inf while it has too few points to tell)."""
    try:
        return float(learner.loss())
    except Exception:  # e.g. a triangulation of too few points (scipy's QhullError)
        return math.inf


# --- the sweep's store -----------------------------------------------------------------------


def read_points(name: str, root: Path | None = None) -> dict[str, np.ndarray] | None:
    """Everything merged into the sweep's store so far (None when there is no store): each box
    parameter, ``round``, ``finite``, ``failed`` and each learned output, over the merged points."""
    path = paths.store_path(name, root)
    if not (path / "zarr.json").exists():
        return None
    group = zarr.open_group(str(path), mode="r", zarr_format=3)
    n = sum(r["n"] for r in group.attrs.get("rounds", []))
    settings = group.attrs["adaptive"]
    names = [*settings["box"], ROUND_VAR, "finite", "failed", *settings["outputs"]]
    return {k: np.asarray(group[k][:n]) for k in names}


def merged_rounds(name: str, root: Path | None = None) -> list[dict]:
    return list(zarrio.read_attrs(paths.store_path(name, root)).get("rounds", []))


def _told(settings: dict, held: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ok = held["finite"] & ~held["failed"]
    points = np.stack([held[p] for p in settings["box"]], axis=1)[ok]
    values = np.stack([np.asarray(held[o], float) for o in settings["outputs"]], axis=1)[ok]
    return points, values


def create_store(spec, root: Path | None = None) -> str:
    """The sweep's store with no point yet ("created"), or the one made from this spec ("kept")."""
    from hpc.models import get_model
    from hpc.sweep import store

    path = paths.store_path(spec.name, root)
    if zarrio.refuse_other_digest(path, spec.digest(), "sweep"):
        return "kept"
    settings = spec.adaptive
    model = get_model(spec.model, spec.normalized().get("model_source"))
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = (settings["points_per_round"],)
    group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    model_coords = model.coords(spec.fixed)
    for dim, values in model_coords.items():
        zarrio.create_array(group, dim, np.asarray(values), dims=[dim], attrs={"units": model.dim_units.get(dim, "")})
    coords = {"coordinates": " ".join([*settings["box"], ROUND_VAR])}
    for pname in settings["box"]:
        p = model.parameter(pname)
        zarrio.create_array(group, pname, shape=(0,), dtype=np.float64, chunks=chunk, dims=[POINT_DIM],
                            attrs={"long_name": p.doc or pname, "units": p.unit})
    zarrio.create_array(group, ROUND_VAR, shape=(0,), dtype=np.int32, chunks=chunk, dims=[POINT_DIM],
                        attrs={"long_name": "adaptive round that asked for the point"})
    for out in model.outputs:
        extra = tuple(len(model_coords[d]) for d in out.dims)
        zarrio.create_array(group, out.name, shape=(0,) + extra, dtype=store.output_dtype(out.dtype, spec.precision),
                            chunks=chunk + extra, dims=(POINT_DIM,) + out.dims,
                            attrs={"long_name": out.doc, "units": out.unit, **coords})
    for name, doc in (("point_done", "the point's data are written and committed"),
                      ("finite", "every output of the point is finite"),
                      ("failed", "the model raised for this point")):
        zarrio.create_array(group, name, shape=(0,), dtype=bool, chunks=chunk, dims=[POINT_DIM],
                            attrs={"long_name": doc, **coords})
    normalized = spec.normalized()
    group.attrs.update({
        "title": f"adaptive sweep {spec.name}", "kind": "adaptive", "digest": spec.digest(), "model": spec.model,
        **({"model_source": {**normalized["model_source"], "ref": spec.model}} if "model_source" in normalized else {}),
        "spec": json.dumps(normalized), "spec_text": spec.text, "precision": spec.precision,
        "adaptive": settings, "fixed": spec.fixed, "rounds": [], "git_commit": store.git_commit(),
        "versions": store.package_versions(), "created": now_iso(),
    })
    shutil.rmtree(path, ignore_errors=True)  # only ever a store of this digest that lost its zarr.json
    tmp.rename(path)
    return "created"


# --- the rounds ------------------------------------------------------------------------------


def decide(spec, root: Path | None = None) -> dict:
    """What round ``len(merged rounds)`` does: stop (with the reason) or the points to solve."""
    settings = spec.adaptive
    stop = settings["stop"]
    held = read_points(spec.name, root)
    r = len(merged_rounds(spec.name, root))
    n_held = len(held[ROUND_VAR]) if held else 0
    points, values = _told(settings, held) if held else (np.zeros((0, len(settings["box"]))), np.zeros((0, 1)))
    learner = learner_from(settings, points, values)
    loss = learner_loss(learner) if len(points) else math.inf
    body: dict[str, Any] = {"round": r, "points_before": n_held, "told": int(len(points)), "loss": loss}
    reason = None
    if r >= stop["max_rounds"]:
        reason = f"max_rounds: {r} rounds run"
    elif n_held >= stop["max_points"]:
        reason = f"max_points: {n_held} points solved"
    elif stop["loss"] is not None and loss <= stop["loss"]:
        reason = f"loss: {loss:.4g} <= {stop['loss']}"
    elif n_held % settings["points_per_round"]:
        reason = "the last round was short: the learner had no more points to give"
    if reason:
        return {**body, "stop": True, "reason": reason}
    n = min(settings["points_per_round"], stop["max_points"] - n_held)
    asked, _ = learner.ask(n)
    asked = [np.atleast_1d(np.asarray(p, float)) for p in asked]
    if held is not None:  # never solve a point twice (a learner may repeat one it was not told: a failed point)
        seen = {tuple(p) for p in np.stack([held[q] for q in settings["box"]], 1)}
        asked = [p for p in asked if tuple(p) not in seen]
    if not asked:
        return {**body, "stop": True, "reason": "the learner asked for no new point"}
    return {**body, "stop": False,
            "points": {p: [float(a[j]) for a in asked] for j, p in enumerate(settings["box"])}}


def ask_round(spec, r: int, out: str | Path, root: Path | None = None, log: str | Path | None = None) -> dict:
    """Round ``r``'s decision, written atomically to ``out`` (kept as it is when already there;
    also to ``log``)."""
    out = Path(out)
    if out.exists():
        return json.loads(out.read_text())
    create_store(spec, root)
    merged = len(merged_rounds(spec.name, root))
    if merged != r:
        raise RuntimeError(f"round {r} asked with {merged} rounds merged into {spec.name}'s store")
    body = decide(spec, root)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(body, indent=1))
    if body["stop"]:
        _record(spec.name, root, final={"rounds": r, "loss": body["loss"], "reason": body["reason"]})
    _log(log, body)
    return body


def _log(log: str | Path | None, body: dict) -> None:
    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        Path(log).write_text(json.dumps(body, indent=1) + "\n")


def round_spec(spec, r: int, points: dict[str, list]):
    """Round ``r`` as a sweep spec of its own: the asked points along one sampled dimension."""
    from hpc.sweep.spec import Axis

    n = len(next(iter(points.values())))
    axis = Axis(POINT_DIM, {p: tuple(float(v) for v in values) for p, values in points.items()}, "sample")
    return dataclasses.replace(spec, name=round_name(r), axes=(axis,), adaptive=None, shards=min(spec.shards, n))


def round_shards(ask: dict, spec) -> int:
    return 0 if ask["stop"] else min(spec.shards, len(next(iter(ask["points"].values()))))


def plan_round(spec, ask_file: str | Path, plan_file: str | Path):
    """The plan stage of round r (its points from ``ask_file``), under results/NAME/rounds."""
    from hpc.sweep import store

    ask = json.loads(Path(ask_file).read_text())
    return store.plan_sweep(round_spec(spec, ask["round"], ask["points"]), plan_file)


def merge_round(spec, plan_file: str | Path, out: str | Path, root: Path | None = None,
                log: str | Path | None = None) -> dict:
    """Append round r's committed points to the sweep's store (whole chunks of its own), record
    the round, and write ``out``. A round merged already is left as it is."""
    from hpc.sweep.plan import read_plan

    plan = read_plan(plan_file)
    r = int(plan.name.split("-")[1])
    rounds = merged_rounds(spec.name, root)
    round_store = paths.store_path(plan.name, paths.root_of_plan(plan_file))
    if r < len(rounds):
        body = rounds[r]
    else:
        if r != len(rounds):
            raise RuntimeError(f"round {r} merged after only {len(rounds)} rounds")
        settings = spec.adaptive
        sub = zarr.open_group(str(round_store), mode="r", zarr_format=3)
        done = np.asarray(sub["point_done"][...])
        if not done.all():
            raise RuntimeError(f"{int((~done).sum())} points of round {r} are not committed")
        n = int(done.size)
        first = sum(x["n"] for x in rounds)
        if first % settings["points_per_round"]:
            raise RuntimeError(f"round {r} would start inside a chunk (point {first})")
        group = zarr.open_group(str(paths.store_path(spec.name, root)), mode="r+", zarr_format=3)
        rows = slice(first, first + n)
        names = [k for k in group.array_keys() if group[k].metadata.dimension_names[:1] == (POINT_DIM,)]
        for k in names:
            arr = group[k]
            if arr.shape[0] < first + n:
                arr.resize((first + n,) + arr.shape[1:])
        for k in names:
            if k == "point_done":
                continue
            if k == ROUND_VAR:
                group[k][rows] = np.full(n, r, np.int32)
            elif k in settings["box"]:
                group[k][rows] = np.asarray(sub[k][...], np.float64)
            else:
                group[k][rows] = np.asarray(sub[k][...])
        group["point_done"][rows] = True  # last: the commit of the round's chunks
        told = json.loads(ask_path(spec.name, r, root).read_text())
        body = {"round": r, "first": first, "n": n, "shards": plan.n_shards, "loss_before": told["loss"],
                "failed": int(np.asarray(sub["failed"][...]).sum()),
                "non_finite": int((~np.asarray(sub["finite"][...])).sum()),
                "execution": round_execution(spec, plan, plan_file, dask_summary_path(spec.name, r, root)),
                "merged": now_iso()}
        _record(spec.name, root, round=body)
    drop_round_outputs(spec, round_store, root)
    write_atomic(out, json.dumps(body, indent=1))
    _log(log, body)
    return body


def round_execution(spec, plan, plan_file: str | Path, summary: Path) -> dict:
    """How round r's points ran, for its record (``execution``), from the spec and what the round
    wrote: its shards' markers (the Slurm jobs, hosts and dask workers that ran its chunks) and,
    with ``backend: dask``, its run-dask job's ``summary`` (``dask_summary_path``: the cluster it
    started).

    ``backend`` is ``jax`` (shard jobs: ``slurm`` true when they ran as Slurm jobs) or ``dask``
    (``cluster`` slurm or local, None where the summary did not say and the spec has ``auto``;
    ``max_workers``, and ``worker`` the resources of one worker job on a SLURMCluster). ``jobs``
    are the Slurm job ids the markers hold (the worker jobs on a SLURMCluster), ``hosts`` the nodes,
    ``processes`` the shard jobs' processes or the distinct dask workers."""
    root = paths.root_of_plan(plan_file)
    markers = [json.loads(m.read_text()) for m in (paths.marker_path(plan.name, s, root) for s in range(plan.n_shards))
               if m.exists()]
    jobs = list(dict.fromkeys(j for m in markers for j in (m.get("job_ids") or [m.get("job_id")]) if j))
    hosts = sorted({h for m in markers for h in str(m.get("host") or "").split(",") if h})
    record: dict[str, Any] = {"backend": spec.backend, "jobs": jobs, "hosts": hosts}
    if spec.backend != "dask":
        return {**record, "slurm": bool(jobs), "processes": sum(int(m.get("processes") or 0) for m in markers)}
    cluster = json.loads(summary.read_text()).get("cluster") if summary.exists() else None
    if cluster is None and spec.dask.get("cluster") in ("slurm", "local"):
        cluster = spec.dask["cluster"]
    workers = {p.get("worker") for m in markers for p in m.get("per_process", []) if p.get("worker")}
    record.update(cluster=cluster, processes=len(workers), max_workers=spec.dask.get("max_workers"))
    if cluster == "slurm":
        record["worker"] = {k: spec.dask.get(k) for k in ("cores", "memory_mb", "walltime_min", "partition")}
    else:
        record["jobs"] = []  # a LocalCluster's workers share the job of the run-dask process (if any): none of their own
    return record


def describe_execution(record: dict | None) -> str:
    """One line saying how a round ran (its ``execution`` record); "not recorded" for a round
    merged before rounds recorded it."""
    if not record:
        return "not recorded"
    hosts = f" on {', '.join(record['hosts'])}" if record.get("hosts") else ""
    jobs = record.get("jobs") or []
    ids = f" ({', '.join(jobs[:6])}{', ...' if len(jobs) > 6 else ''})" if jobs else ""
    n = record.get("processes") or 0
    if record.get("backend") != "dask":
        if record.get("slurm"):
            return f"shard jobs on Slurm: {len(jobs)} job{'s' * (len(jobs) != 1)}{ids}{hosts}"
        return f"shard jobs, local (no Slurm job){hosts}"
    cluster = record.get("cluster")
    if cluster == "slurm":
        w = record.get("worker") or {}
        size = (f"{w.get('cores')} core{'s' * (w.get('cores') != 1)}, {w.get('memory_mb')} MB, "
                f"{w.get('walltime_min')} min walltime{', partition ' + w['partition'] if w.get('partition') else ''}")
        return (f"dask on a SLURMCluster: {n} worker{'s' * (n != 1)} in {len(jobs)} Slurm job{'s' * (len(jobs) != 1)}"
                f"{ids}{hosts}, at most {record.get('max_workers')} workers of {size}")
    if cluster == "local":
        return f"dask on a LocalCluster: {n} worker{'s' * (n != 1)}{hosts}, at most {record.get('max_workers')}"
    return f"dask (cluster not recorded): {n} worker{'s' * (n != 1)}{hosts}"


def drop_round_outputs(spec, round_store: Path, root: Path | None = None) -> None:
    """Once a round is recorded in the sweep's store, remove its own store's copy of the model's
    outputs (the sweep's store holds them); its status arrays (``ROUND_STATUS_KEPT``) and
    coordinates stay. Repeatable: a merge killed halfway removes the rest when run again."""
    group = zarr.open_group(str(paths.store_path(spec.name, root)), mode="r", zarr_format=3)
    keep = {*spec.adaptive["box"], ROUND_VAR, *ROUND_STATUS_KEPT}
    for k in group.array_keys():
        if group[k].metadata.dimension_names[:1] == (POINT_DIM,) and k not in keep:
            shutil.rmtree(Path(round_store) / k, ignore_errors=True)


def _record(name: str, root: Path | None, round: dict | None = None, final: dict | None = None) -> None:
    group = zarr.open_group(str(paths.store_path(name, root)), mode="r+", zarr_format=3)
    if round is not None:
        group.attrs["rounds"] = [*group.attrs.get("rounds", []), round]
    if final is not None:
        group.attrs["final"] = final


def round_done_input(checkpoints, spec):
    """The Snakemake input function of a round's merge: its shards' markers (their number from the
    round's ask, so after that checkpoint), or with ``backend: dask`` the summary of the round's
    run-dask job (which writes those markers)."""
    def done(wildcards) -> list[str]:
        r = int(wildcards.round)
        if spec.backend == "dask":
            return [str(dask_summary_path(spec.name, r))]
        ask = json.loads(Path(checkpoints.adaptive_ask.get(round=wildcards.round).output.ask).read_text())
        return [str(paths.marker_path(round_name(r), s, rounds_root(spec.name))) for s in range(round_shards(ask, spec))]
    return done


def rounds_input(checkpoints, spec):
    """The Snakemake input function of the last step: every round's merge, walking the rounds'
    checkpoints (evaluated again after each) until one says stop; then that ask."""
    def rounds(wildcards) -> list[str]:
        done, r = [], 0
        while True:
            ask = checkpoints.adaptive_ask.get(round=f"{r:04d}").output.ask
            if json.loads(Path(ask).read_text())["stop"]:
                return [*done, ask]
            done.append(str(merged_path(spec.name, r)))
            r += 1
    return rounds


def finalize(spec, out: str | Path, root: Path | None = None) -> dict:
    """After the last round: consolidate the store's metadata and write the summary ``out``."""
    path = paths.store_path(spec.name, root)
    attrs = zarrio.read_attrs(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(str(path))
    rounds = attrs.get("rounds", [])
    summary = {"name": spec.name, "digest": spec.digest(), "rounds": len(rounds), "points": sum(r["n"] for r in rounds),
               "final": attrs.get("final"), "completed": now_iso()}
    write_atomic(out, json.dumps(summary, indent=1))
    return summary


def describe_first_round(spec, root: Path | None = None, limit: int | None = None) -> str:
    """What the next round would solve (for a dry run and ``hpc plan``), nothing written."""
    settings = spec.adaptive
    if (paths.store_path(spec.name, root) / "zarr.json").exists():
        decision = decide(spec, root)
    else:
        decision = {"round": 0, "stop": False, "points": {}, "points_before": 0}
        asked, _ = make_learner(settings).ask(min(settings["points_per_round"], settings["stop"]["max_points"]))
        for j, p in enumerate(settings["box"]):
            decision["points"][p] = [float(np.atleast_1d(a)[j]) for a in asked]
    box = ", ".join(f"{p} in [{lo:g}, {hi:g}]" for p, (lo, hi) in settings["box"].items())
    stop = settings["stop"]
    head = (f"adaptive sweep {spec.name!r}: model {spec.model}, learning {', '.join(settings['outputs'])} over {box}; "
            f"{settings['points_per_round']} points per round in {spec.shards} shard(s)"
            f"{' of dask tasks' if spec.backend == 'dask' else ''}; stop at loss "
            f"{stop['loss']}, {stop['max_points']} points or {stop['max_rounds']} rounds")
    if decision["stop"]:
        return head + f"\nround {decision['round']}: stop ({decision['reason']})"
    pts = decision["points"]
    n = len(next(iter(pts.values())))
    lines = [head, f"round {decision['round']} ({decision['points_before']} points solved so far): {n} points"]
    for i in range(n if limit is None else min(n, limit)):
        lines.append("  " + ", ".join(f"{p}={pts[p][i]:.6g}" for p in pts))
    if limit is not None and n > limit:
        lines.append(f"  ... and {n - limit} more")
    return "\n".join(lines)


def describe_progress(name: str, root: Path | None = None) -> str:
    """``hpc status`` of an adaptive sweep: its merged rounds, whether it stopped, where each
    round's own status is."""
    attrs = zarrio.read_attrs(paths.store_path(name, root))
    rounds = attrs.get("rounds", [])
    final = attrs.get("final")
    lines = [f"adaptive sweep {name} (digest {attrs.get('digest')}): {len(rounds)} rounds merged, "
             f"{sum(r['n'] for r in rounds)} points; "
             + (f"stopped after {final['rounds']} rounds: {final['reason']}" if final else "not stopped yet")]
    for r in rounds:
        lines.append(f"  round {r['round']}: {r['n']} points from point {r['first']}, {r['shards']} shards, "
                     f"loss before {r['loss_before']:.4g}, {r['failed']} failed, {r['non_finite']} non-finite; "
                     f"ran on: {describe_execution(r.get('execution'))}")
    lines.append(f"the shards of the round that runs: hpc status round-RRRR --results {rounds_root(name, root)}")
    return "\n".join(lines)
