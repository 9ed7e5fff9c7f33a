"""The sweep store (results/NAME/sweep.zarr, path from hpc.core.paths): its layout and its writes.

Inside the store: one dimension per swept parameter (named and ordered as in the spec) with its
coordinate values; zipped and sampled dimensions have an index coordinate and one coordinate per
parameter along them; model dimensions (e.g. ``wage``) with their coordinates; one data variable
per model output; ``point_done`` (a point's data are final), ``finite`` and ``failed`` (the model raised) per
grid point;
``shard_index`` (the plan: which shard owns each point).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import zarr

from hpc.core import checkout, paths, zarrio
from hpc.core.errors import SpecError
from hpc.core.files import write_atomic
from hpc.core.timefmt import now_iso
from hpc.models import get_model
from hpc.models.base import Model
from hpc.sweep.plan import Plan, make_plan
from hpc.sweep.spec import STORE_VARIABLES

STATUS_VARS = STORE_VARIABLES  # beside the model's outputs
PACKAGES = ("hpc-sweeps", "jax", "jaxlib", "numpy", "zarr", "xarray", "snakemake", "snakemake-executor-plugin-slurm")


def float_dtype(precision: str) -> np.dtype:
    return np.dtype(np.float64 if precision == "float64" else np.float32)


def output_dtype(kind: str, precision: str) -> np.dtype:
    return {"float": float_dtype(precision), "int": np.dtype(np.int32), "bool": np.dtype(bool)}[kind]


def git_commit() -> str:
    """The commit of the checkout the package runs from ("unknown" for an installed package, which
    may sit in a virtualenv inside somebody else's repository)."""
    here = checkout.package_root()
    if not (here / ".git").exists() or not (here / "hpc" / "__init__.py").exists():
        return "unknown"
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def create_store(plan: Plan, root: Path | None = None) -> str:
    """Create the empty store for ``plan``; keep an existing one made from the same plan.

    Returns "created" or "kept". A store made from another spec under the same name is refused,
    never mixed with this one. The store is built beside its final path and renamed into place,
    so a half-created store is never found there.
    """
    path = paths.store_path(plan.name, root)
    if zarrio.refuse_other_digest(path, plan.digest, "sweep"):
        return "kept"
    model = get_model(plan.model, plan.spec.get("model_source"))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _build_store(tmp, plan, model)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed build leaves nothing behind
        raise
    return "created"


def plan_sweep(spec, plan_file: str | Path) -> tuple[Plan, str]:
    """The plan stage: plan ``spec``, create (or keep) its store, then write the plan file.

    ``plan_file`` must be ROOT/NAME/plan.json; the plan file is written last, so its presence
    means the store is ready.
    """
    plan = make_plan(spec)
    root = paths.root_of_plan(plan_file)
    expected = paths.plan_path(plan.name, root)
    if Path(plan_file).resolve() != expected.resolve():
        raise SpecError("name", f"the plan of {plan.name!r} belongs at {expected}, not {plan_file}")
    run_dir = paths.run_dir(plan.name, root)
    fresh = not run_dir.exists()
    try:
        state = create_store(plan, root)
        write_atomic(plan_file, plan.to_json())
    except BaseException:
        if fresh:  # made here and (once the store's build is cleaned up) empty: remove it
            try:
                run_dir.rmdir()
            except OSError:
                pass
        raise
    return plan, state


def check_not_another_spec(spec, root: Path | None = None) -> None:
    """Refuse early (before any job) a spec whose name holds a store made from another spec
    (or from another version of the model's file)."""
    path = paths.store_path(spec.name, root)
    made = zarrio.read_attrs(path)
    before, now = (made.get("model_source") or {}).get("sha256"), getattr(spec.model_ref, "sha256", None)
    if made.get("digest") not in (None, spec.digest()) and before and now and before != now:
        raise SpecError("model", f"{made['model_source'].get('ref') or spec.model} changed since "
                        f"{path.parent} was made (sha256 {now[:12]}, the store's {before[:12]})",
                        "restore the model, choose a new sweep name, or delete that directory to start over")
    zarrio.refuse_other_digest(path, spec.digest(), "sweep")


def _build_store(path: Path, plan: Plan, model: Model) -> None:
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    _axis_coordinates(group, plan, model)
    model_coords = model.coords(plan.fixed_parameters)
    for dim, values in model_coords.items():
        zarrio.create_array(group, dim, np.asarray(values), dims=[dim], attrs={"units": model.dim_units.get(dim, "")})
    _point_arrays(group, plan, model, model_coords)
    group.attrs.update({
        "title": f"sweep {plan.name}",
        "digest": plan.digest,
        "model": plan.model,
        # A model not built in: its file or module, the source's sha256, the package's version.
        **({"model_source": {**plan.spec["model_source"], "ref": plan.model}} if "model_source" in plan.spec else {}),
        "spec": json.dumps(plan.spec),
        "spec_text": plan.spec_text,
        "precision": plan.precision,
        "n_shards": plan.n_shards,
        "git_commit": git_commit(),
        "versions": package_versions(),
        "created": now_iso(),
    })


def _axis_coordinates(group: zarr.Group, plan: Plan, model: Model) -> None:
    """One coordinate per swept axis; a zipped or sampled axis: an index, and one per parameter along it."""
    for axis in plan.spec["axes"]:
        dims = [axis["name"]]
        if axis["kind"] != "values":
            n = len(next(iter(axis["values"].values())))
            zarrio.create_array(group, axis["name"], np.arange(n), dims=dims, attrs={"long_name": f"{axis['kind']} index"})
        for pname, values in axis["values"].items():
            p = model.parameter(pname)
            name = axis["name"] if axis["kind"] == "values" else pname
            zarrio.create_array(group, name, np.asarray(values), dims=dims,
                                attrs={"long_name": p.doc or pname, "units": p.unit})


def _point_arrays(group: zarr.Group, plan: Plan, model: Model, model_coords: dict) -> None:
    """The outputs and the per-point status arrays (chunked as the plan says), and the shard index."""
    non_index = [p for a in plan.spec["axes"] if a["kind"] != "values" for p in a["values"]]
    coord_attr = {"coordinates": " ".join(non_index)} if non_index else {}
    for out in model.outputs:
        extra = tuple(len(model_coords[d]) for d in out.dims)
        zarrio.create_array(group, out.name, shape=plan.shape + extra, dtype=output_dtype(out.dtype, plan.precision),
                            chunks=plan.chunks + extra, dims=plan.dims + out.dims,
                            attrs={"long_name": out.doc, "units": out.unit, **coord_attr})
    for name, doc in (("point_done", "the point's data are written and committed"),
                      ("finite", "every output of the point is finite"),
                      ("failed", "the model raised for this point (its message is in the shard's marker)")):
        zarrio.create_array(group, name, shape=plan.shape, dtype=bool, chunks=plan.chunks, dims=plan.dims,
                            attrs={"long_name": doc, **coord_attr})
    zarrio.create_array(group, "shard_index", plan.shard_of_points(), dims=plan.dims,
                        attrs={"long_name": "shard that computes the point", **coord_attr})


def open_arrays(name: str, root: Path | None = None, mode: str = "r+") -> zarr.Group:
    return zarr.open_group(str(paths.store_path(name, root)), mode=mode, zarr_format=3)


def write_region(group: zarr.Group, region: tuple[slice, ...], outputs: dict[str, np.ndarray], finite: np.ndarray) -> None:
    """Write one chunk's outputs, then commit it by setting ``point_done``.

    ``region`` must be a whole chunk of the plan: the caller owns it, nobody else writes there.
    """
    for name, block in outputs.items():
        group[name][region] = block
    group["finite"][region] = finite
    group["point_done"][region] = True  # last: the commit of this chunk


def region_done(group: zarr.Group, region: tuple[slice, ...]) -> bool:
    return bool(np.all(group["point_done"][region]))


def read_marker(name: str, shard: int, root: Path | None = None) -> dict | None:
    try:
        return json.loads(paths.marker_path(name, shard, root).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def valid_markers(plan: Plan, root: Path | None = None, cache: dict | None = None) -> dict[int, dict]:
    """Markers of shards committed under this very plan; stale ones from another digest are ignored.

    The markers' folder is listed once (a shard without a marker costs no open). ``cache``, a dict
    kept between calls (`hpc status --watch`), keeps what each marker file held by its size and
    modification time, so that a poll reads only the markers written or changed since the last."""
    folder = paths.marker_path(plan.name, 0, root).parent
    try:
        with os.scandir(folder) as listing:
            entries = {entry.name: entry for entry in listing}
    except (FileNotFoundError, NotADirectoryError):
        return {}
    found = {}
    for shard in range(plan.n_shards):
        entry = entries.get(paths.marker_path(plan.name, shard, root).name)
        if entry is None:
            continue
        if cache is None:
            marker = read_marker(plan.name, shard, root)
        else:
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            seen = cache.get(shard)
            if seen is None or seen[0] != (stat.st_mtime_ns, stat.st_size):
                seen = cache[shard] = ((stat.st_mtime_ns, stat.st_size), read_marker(plan.name, shard, root))
            marker = seen[1]
        if marker and marker.get("digest") == plan.digest:
            found[shard] = marker
    return found


def finalize_store(plan: Plan, markers: dict[int, dict], root: Path | None = None,
                   accounting: dict[str, dict] | None = None) -> None:
    """Record per-shard execution in the store (``write_shard_records``) and consolidate its metadata.

    Each shard's record holds its marker's summary and its execution trace
    (``execution_trace``): from Slurm's accounting where ``accounting`` (job id -> record, from
    hpc.execution.accounting.job_records) has the shard's job, else what its processes measured.
    """
    path = paths.store_path(plan.name, root)
    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    if not np.all(group["point_done"][...]):
        missing = int(np.size(group["point_done"]) - np.count_nonzero(group["point_done"][...]))
        raise RuntimeError(f"{missing} points of {plan.name} are not committed; rerun the sweep to finish them")
    leftovers = list(path.rglob("*.partial"))  # from writers killed mid-write; zarr never reads them
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    keys = ("shard", "host", "start", "end", "duration_s", "points", "computed", "processes", "devices", "failed",
            "non_finite", "not_converged", "errors", "job_id", "slurm_restart_count", "per_process")
    shards = [{**{k: markers[s].get(k) for k in keys}, **execution_trace(markers[s], accounting or {})}
              for s in sorted(markers)]
    write_shard_records(group, shards)
    group.attrs.update({"completed": now_iso(), "removed_partial_files": len(leftovers)})
    with warnings.catch_warnings():  # consolidated metadata is a zarr-python extension of v3; xarray reads it
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(str(path))


SHARD_RECORDS = "shard-records"  # the group of the per-shard records (no dimension or output has a '-')


def write_shard_records(group: zarr.Group, shards: list[dict]) -> None:
    """The shards' records as one JSON text per shard, in the array ``record`` of the group
    ``SHARD_RECORDS``: off the root attributes, so opening the store (``xr.open_zarr``, which
    ignores groups) does not parse thousands of them, and beside no variable of the Dataset."""
    sub = group.create_group(SHARD_RECORDS, overwrite=True,
                             attributes={"description": "one JSON record per shard: its marker's summary and "
                                                        "its execution trace (hpc.sweep.store.finalize_store)"})
    texts = np.array([json.dumps(r, separators=(",", ":")) for r in shards] or [""], dtype=object)
    sub.create_array("record", shape=texts.shape, dtype=str, chunks=texts.shape, fill_value="",
                     dimension_names=["shard"])[...] = texts
    if "shards" in group.attrs:  # a store aggregated by an earlier version: its records move here
        del group.attrs["shards"]


def read_shard_records(path_or_group) -> list[dict]:
    """The per-shard records that aggregation wrote (``write_shard_records``); a store aggregated
    by an earlier version keeps them in its ``shards`` attribute; [] before aggregation."""
    group = (path_or_group if isinstance(path_or_group, zarr.Group)
             else zarr.open_group(str(path_or_group), mode="r", zarr_format=3))
    try:
        texts = group[f"{SHARD_RECORDS}/record"][...]
    except KeyError:
        return list(group.attrs.get("shards") or [])
    return [json.loads(t) for t in np.asarray(texts).ravel() if t]


def counts_every_point_good(record: dict) -> bool:
    """Whether one shard's marker (or record) says that each of its points is committed, finite,
    converged and not failed: its last job computed all its points (a resumed shard's counts
    cover only what it computed) and counted no failed, non-finite or unconverged point."""
    return (record.get("points") is not None and record.get("computed") == record.get("points")
            and not (record.get("failed") or record.get("non_finite") or record.get("not_converged")))


def every_point_good(records, n_shards: int) -> bool:
    """Whether the shards' ``records`` (this plan's markers, or the store's shard records) say that
    every point is committed, finite, converged and not failed: one record per shard, each of
    which ``counts_every_point_good``. Then `hpc status` need not read the status arrays, one
    chunk file at a time (20,000 chunks for 10^6 points in 5,000 shards)."""
    records = list(records)
    if len(records) != n_shards or {r.get("shard") for r in records} != set(range(n_shards)):
        return False
    return all(counts_every_point_good(r) for r in records)


def shard_sizes(plan: Plan) -> np.ndarray:
    """Each shard's number of points (``plan.shard_points`` of every shard, in one pass over the
    chunk grid rather than a region per chunk)."""
    sizes = np.ones(plan.n_chunks, np.int64)
    for axis, (n, c, k) in enumerate(zip(plan.shape, plan.chunks, plan.chunk_grid)):
        along = np.minimum(c, n - c * np.arange(k))  # the last chunk along an axis may be short
        shape = [1] * len(plan.shape)
        shape[axis] = k
        sizes *= np.broadcast_to(along.reshape(shape), plan.chunk_grid).ravel()
    return np.add.reduceat(sizes, [first for first, _ in plan.shard_chunks])


def committed_points(plan: Plan, root: Path | None, markers: dict[int, dict],
                     cache: dict | None = None) -> tuple[int, np.ndarray, np.ndarray]:
    """Points committed, committed points per shard, and the grid indices (in C order) of
    committed points that failed, did not converge or are not finite.

    A shard whose marker for this plan ``counts_every_point_good`` has all its points committed
    and good: its chunks are not read. The others' chunks are read from the store's status
    arrays (``chunk_status``): a shard without a marker (running, pending or failed) or whose
    marker counts bad points. ``cache`` (a dict kept between calls, `hpc status --watch`) keeps
    what a committed chunk held, which cannot change under one plan."""
    sizes = shard_sizes(plan)
    if every_point_good(markers.values(), plan.n_shards):
        return int(sizes.sum()), sizes, np.zeros((0, len(plan.shape)), int)
    per_shard = np.zeros(plan.n_shards, np.int64)
    to_read = []
    for shard in range(plan.n_shards):
        if shard in markers and counts_every_point_good(markers[shard]):
            per_shard[shard] = sizes[shard]
        else:
            to_read.append(shard)
    chunk_ids = [c for shard in to_read for c in plan.shard_chunk_ids(shard)]
    owner = np.repeat(np.arange(plan.n_shards), [last - first for first, last in plan.shard_chunks])
    flagged = [np.zeros((0, len(plan.shape)), int)]
    for chunk_id, (done, bad) in chunk_status(plan, root, chunk_ids, cache).items():
        per_shard[owner[chunk_id]] += done
        flagged.append(bad)
    flagged = np.concatenate(flagged)
    flagged = flagged[np.lexsort(flagged.T[::-1])] if len(flagged) > 1 else flagged
    return int(per_shard.sum()), per_shard, flagged


def stored_chunk_keys(array_dir: Path, keys) -> set[str]:
    """Those of the chunk ``keys`` (relative to the array's folder, ``c/3/1``) that have a file:
    one listing per folder that holds them, not a file system call per chunk. Zarr writes no
    chunk that holds only the fill value, so a key without a file reads as the fill value."""
    folders: dict[str, set[str]] = {}
    for key in keys:
        head, _, tail = key.rpartition("/")
        folders.setdefault(head, set()).add(tail)
    found = set()
    for head, wanted in folders.items():
        try:
            with os.scandir(array_dir / head) as listing:
                names = {entry.name for entry in listing}
        except (FileNotFoundError, NotADirectoryError):
            continue
        found.update(f"{head}/{name}" if head else name for name in wanted & names)
    return found


def read_regions(array: zarr.Array, regions: list[tuple[slice, ...]]) -> list[np.ndarray]:
    """The blocks ``regions`` of ``array``, read concurrently in one call (zarr's asynchronous
    array), or, where they are more than half of its chunks, from one read of the whole array."""
    if not regions:
        return []
    if 2 * len(regions) > array.nchunks:
        whole = np.asarray(array[...])
        return [whole[region] for region in regions]
    import asyncio

    from zarr.core.sync import sync

    async def read_all():
        limit = asyncio.Semaphore(64)

        async def one(region):
            async with limit:
                return await array.async_array.getitem(region)

        return await asyncio.gather(*(one(region) for region in regions))

    return [np.asarray(block) for block in sync(read_all())]


def chunk_status(plan: Plan, root: Path | None, chunk_ids, cache: dict | None = None) -> dict[int, tuple[int, np.ndarray]]:
    """For each of the plan's chunks ``chunk_ids`` that is committed, its committed points and the
    grid indices of those that failed, did not converge or are not finite (one row each).

    Only chunks whose ``point_done`` file exists are read (a chunk not yet committed has none),
    and of ``finite``, ``converged`` and ``failed`` only their stored chunks (a missing one holds
    the array's fill value); the reads go concurrently (``read_regions``). ``cache``: chunk id ->
    its answer, for chunks found committed before (still committed: their file is still there)."""
    path = paths.store_path(plan.name, root)
    group = open_arrays(plan.name, root, mode="r")
    arrays = {name: group[name] for name in ("point_done", "finite", "converged", "failed") if name in group}
    grid = plan.chunk_grid

    def stored(name, ids):
        array = arrays[name]
        ids = list(ids)
        coords = np.stack(np.unravel_index(np.asarray(ids, np.int64), grid), axis=1).tolist() if ids else []
        keys = {c: array.metadata.encode_chunk_key(tuple(xy)) for c, xy in zip(ids, coords)}
        if getattr(array, "shards", None) is not None:  # chunks inside shard files: cannot tell by listing
            return set(ids)
        there = stored_chunk_keys(path / name, keys.values())
        return {c for c, k in keys.items() if k in there}

    committed = stored("point_done", chunk_ids)
    out = {c: cache[c] for c in committed if cache is not None and c in cache}
    fresh = sorted(committed - set(out))
    if not fresh:
        return out
    regions = [plan.chunk_region(c) for c in fresh]
    blocks = {"point_done": read_regions(arrays["point_done"], regions)}
    for name in ("finite", "converged", "failed"):
        if name not in arrays:
            continue
        have = stored(name, fresh)
        read = dict(zip([c for c in fresh if c in have],
                        read_regions(arrays[name], [r for c, r in zip(fresh, regions) if c in have])))
        fill = np.bool_(arrays[name].fill_value)
        blocks[name] = [read[c] if c in read else np.full(tuple(s.stop - s.start for s in r), fill)
                        for c, r in zip(fresh, regions)]
    for i, (chunk_id, region) in enumerate(zip(fresh, regions)):
        done = np.asarray(blocks["point_done"][i], bool)
        finite = np.asarray(blocks["finite"][i], bool)
        converged = np.asarray(blocks["converged"][i], bool) if "converged" in blocks else np.ones_like(done)
        raised = np.asarray(blocks["failed"][i], bool) if "failed" in blocks else np.zeros_like(done)
        bad = np.argwhere(done & (raised | ~(finite & converged))) + [s.start for s in region]
        out[chunk_id] = (int(done.sum()), bad)
        if cache is not None and done.all():
            cache[chunk_id] = out[chunk_id]
    return out


TRACE_KEYS = ("job_id", "array_task", "attempt", "state", "exit_code", "nodes", "submit", "job_start", "job_end",
              "queue_wait_s", "elapsed_s", "total_cpu_s", "alloc_cpus", "cpu_efficiency", "max_rss_mb",
              "req_mem_mb")


def execution_trace(marker: dict, accounting: dict[str, dict]) -> dict:
    """A shard's execution trace: ``trace_source`` "slurm" with the fields of its job's accounting
    record (``TRACE_KEYS``), or "process" (no job, or no accounting for it) with what the shard's
    processes measured themselves: elapsed (the solve's wall time), CPU seconds summed over the
    processes, their peak RSS; and always ``device_peak_mb`` (the devices' peak memory, where the
    backend reports it) and ``snakemake_attempt`` (where the rule passed it)."""
    record = accounting.get(str(marker.get("job_id"))) if marker.get("job_id") else None
    trace = dict.fromkeys(TRACE_KEYS)
    trace["job_id"] = marker.get("job_id")
    if record:
        trace.update({k: record.get(k) for k in TRACE_KEYS}, trace_source="slurm")
        if trace["attempt"] is None:
            trace["attempt"] = marker.get("snakemake_attempt")
    else:
        trace.update(trace_source="process", elapsed_s=marker.get("duration_s"),
                     total_cpu_s=marker.get("process_cpu_s"), max_rss_mb=marker.get("process_max_rss_mb"),
                     attempt=marker.get("snakemake_attempt"))
    trace.update(job_ids=marker.get("job_ids"), snakemake_attempt=marker.get("snakemake_attempt"),
                 process_cpu_s=marker.get("process_cpu_s"), process_max_rss_mb=marker.get("process_max_rss_mb"),
                 device_peak_mb=marker.get("device_peak_mb"))
    return trace
