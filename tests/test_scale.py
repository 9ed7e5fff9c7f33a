"""Sweeps of many points in many shards: what the store, the report and `hpc status` do at scale,
checked on small sweeps (the figures themselves are in tests/benchmarks/bench_scale.py).

- The per-shard records live in their own node of the store, not in its root attributes, so
  opening the store does not parse one record per shard; a store aggregated before keeps its
  records readable.
- The report summarizes a large sweep: a heat map is drawn at a sample of the grid (each cell
  standing for its block, crossed where a point of the block failed), the timeline of many shards
  keeps a fixed size, per-shard tables list a bounded number of rows.
- `hpc status` of a finished sweep whose markers count no bad point reads no status array.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import xarray as xr
import yaml
import zarr
from report_page import parse

from hpc.core import paths, zarrio
from hpc.models import get_model
from hpc.report import build_report, execution
from hpc.report.figures import MAX_CELLS, Figures, stride
from hpc.sweep import store
from hpc.sweep.aggregate import aggregate
from hpc.sweep.plan import make_plan
from hpc.sweep.runner import (
    MeshSolver,
    commit_shard,
    device_batch_size,
    merge_summaries,
    run_shard,
)
from hpc.sweep.spec import parse_spec
from hpc.sweep.status import sweep_status

N_C = 700  # more c values than a heat map draws (MAX_CELLS)


def run_sweep(root, data):
    """Plan, run (one compiled solver for every shard) and aggregate a sweep in this process."""
    spec = parse_spec(data, yaml.safe_dump(data, sort_keys=False))
    plan, _ = store.plan_sweep(spec, paths.plan_path(spec.name, root))
    solver = MeshSolver(get_model(plan.model), plan.precision, device_batch_size(plan))
    for shard in range(plan.n_shards):
        commit_shard(plan, shard, merge_summaries(plan, shard, [run_shard(plan, shard, root, solver=solver)]), root)
    aggregate(paths.plan_path(spec.name, root))
    return plan


def small(name, shards, points=None):
    return {"name": name, "model": "mccall", "params": {"n_wages": 5, "tol": 1.0e-4},
            "sweep": {"c": {"linspace": [10, 30, points or 2 * shards]}}, "shards": shards}


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A c × β sweep of 1,400 points in 70 shards (more than the report draws shard by shard);
    the iteration cap is met at β = 0.9 except at the highest c, never at β = 0.995."""
    root = tmp_path_factory.mktemp("results")
    data = {"name": "big", "model": "mccall", "params": {"n_wages": 5, "tol": 1.0e-6, "max_iter": 31},
            "sweep": {"c": {"linspace": [10, 30, N_C]}, "beta": [0.9, 0.995]}, "shards": 70}
    return run_sweep(root, data), root


def test_opening_a_store_does_not_read_the_shard_records(tmp_path):
    root = tmp_path / "results"
    few, many = run_sweep(root, small("few", 2, 80)), run_sweep(root, small("many", 40, 80))
    meta = {p.name: len((paths.store_path(p.name, root) / "zarr.json").read_text()) for p in (few, many)}
    # The root metadata (what xr.open_zarr parses) does not grow with the shards: 40 records of
    # about 1 KB each were in it before.
    assert meta["many"] - meta["few"] < 300, meta
    ds = xr.open_zarr(paths.store_path("many", root))
    assert "shards" not in ds.attrs and "shards" not in zarrio.read_attrs(paths.store_path("many", root))
    assert not any(name.startswith("shard-records") or name == "record" for name in ds.variables)
    records = store.read_shard_records(paths.store_path("many", root))
    assert [r["shard"] for r in records] == list(range(40))
    for record in records:  # what the marker says, and the execution trace beside it
        marker = json.loads(paths.marker_path("many", record["shard"], root).read_text())
        assert (record["host"], record["points"], record["duration_s"]) == (marker["host"], 2, marker["duration_s"])
        assert record["trace_source"] == "process"


def test_a_store_aggregated_before_keeps_its_shard_records(tmp_path):
    root = tmp_path / "results"
    plan = run_sweep(root, small("old", 3))
    path = paths.store_path("old", root)
    records = store.read_shard_records(path)
    group = zarr.open_group(str(path), mode="r+")
    del group[store.SHARD_RECORDS]
    group.attrs["shards"] = records  # where an earlier version kept them
    zarr.consolidate_metadata(str(path))
    assert store.read_shard_records(path) == records
    page = parse(build_report("old", root))
    assert len(page.table("shards").rows) == 3
    aggregate(paths.plan_path(plan.name, root))  # aggregating again moves them off the attributes
    assert "shards" not in zarrio.read_attrs(path) and store.read_shard_records(path) == records


def test_the_report_of_a_large_grid_samples_its_heat_maps(big, monkeypatch):
    plan, root = big
    drawn = []
    original = Figures.add

    def add(self, fig, caption):
        drawn.append((fig.get_suptitle() or fig.axes[0].get_title(), fig, caption))
        return original(self, fig, caption)

    monkeypatch.setattr(Figures, "add", add)
    page = parse(build_report("big", root))
    ds = xr.open_zarr(paths.store_path("big", root), chunks=None)
    step = stride(N_C, MAX_CELLS)
    assert step > 1
    _, fig, caption = next(d for d in drawn if d[0] == "reservation_wage over the sweep")
    mesh = fig.axes[0].collections[0]
    cells = np.asarray(mesh.get_array()).reshape(-1, 2)  # c down the y axis (first in the spec), beta along x
    assert cells.shape[0] == len(range(0, N_C, step)) <= MAX_CELLS
    # Each drawn cell is the store's value at every step-th c.
    np.testing.assert_array_equal(cells, ds["reservation_wage"].values[::step].astype(float))
    assert f"c, one value in {step} ({cells.shape[0]} of {N_C})" in caption
    # A red cross per block of step values of c holding a point that failed (here: did not
    # converge), counted from the store.
    bad = ~(ds["converged"].values & ds["finite"].values) | ds["failed"].values
    blocks = sum(bad[i:i + step, j].any() for i in range(0, N_C, step) for j in range(2))
    assert 0 < blocks < 2 * cells.shape[0]  # one row fails, the other does not
    (crosses,) = [line for line in fig.axes[0].lines if line.get_marker() == "x"]
    assert len(crosses.get_xdata()) == blocks
    assert "reservation_wage over the sweep" in page.captions


def test_the_report_of_many_shards_keeps_figures_and_tables_bounded(big, monkeypatch):
    plan, root = big
    drawn = []
    original = Figures.add

    def add(self, fig, caption):
        drawn.append((fig.get_suptitle() or fig.axes[0].get_title(), tuple(fig.get_size_inches())))
        return original(self, fig, caption)

    monkeypatch.setattr(Figures, "add", add)
    monkeypatch.setattr(execution, "SHARD_ROWS", 25)
    page = parse(build_report("big", root))
    sizes = dict(drawn)
    assert plan.n_shards > execution.MANY_SHARDS
    assert sizes["Shard timeline"][1] <= 6  # was 0.9 + 0.32 in per shard: 23 in for 70 shards
    # Every shard has unconverged points (β = 0.995): the first 25 of them are listed.
    assert [r["shard"] for r in page.table("shards").records()] == [str(s) for s in range(25)]
    assert ("25 of 70 shards listed: the 25 shards with failed, unconverged or non-finite points, or resumed or "
            "requeued, then shards spread evenly over the others.") in page.section("execution").text
    # Resource use: the largest peak first, then shards spread over all the others, in shard order.
    shards = [int(r["shard"]) for r in page.table("resource-use").records()]
    records = store.read_shard_records(paths.store_path("big", root))
    peak = max(r["max_rss_mb"] for r in records)
    at_peak = [r["shard"] for r in records if r["max_rss_mb"] == peak]
    assert len(shards) == 25 and shards == sorted(shards) and set(at_peak[:25]) <= set(shards)
    if len(at_peak) < 25:
        assert plan.n_shards - 1 in shards  # the others spread up to the last one
    assert len(page.table("plan-against-ran").rows) == 25


def test_status_of_a_finished_clean_sweep_reads_no_status_array(tmp_path):
    root = tmp_path / "results"
    plan = run_sweep(root, small("clean", 10))
    before = sweep_status("clean", root, jobs=False)
    assert before["points_done"] == plan.n_points and before["n_flagged"] == 0
    # Each of these arrays is one chunk file per chunk of the plan (20 here, 20,000 for 10^6
    # points in 5,000 shards): with every marker counting no bad point, none is read.
    for name in ("point_done", "finite", "converged", "failed"):
        shutil.rmtree(paths.store_path("clean", root) / name / "c", ignore_errors=True)
    after = sweep_status("clean", root, jobs=False)
    assert after["points_done"] == plan.n_points and after["n_flagged"] == 0
    assert [s["committed"] for s in after["shards"]] == [plan.shard_points(s) for s in range(plan.n_shards)]


def test_status_still_reads_the_store_where_a_marker_counts_bad_points(big):
    plan, root = big
    status = sweep_status("big", root, jobs=False)
    ds = xr.open_zarr(paths.store_path("big", root), chunks=None)
    bad = ~(ds["converged"].values & ds["finite"].values) | ds["failed"].values
    assert status["n_flagged"] == int(bad.sum()) > 0 and status["points_done"] == plan.n_points


def test_status_of_a_running_sweep_reads_only_the_unfinished_shards_chunks(tmp_path):
    """A sweep caught running: shard 0 done with every point good, shard 1 not started, shard 2
    done with unconverged points, shard 3 half committed (no marker yet). Committed points per
    shard and the flagged points (in grid order) are those the store holds, counted here from
    the whole arrays; shard 0's chunks are not read (its marker counts every point good), so
    removing their files changes nothing; `watch`'s cache keeps no answer past a new commit."""
    root = tmp_path / "results"
    # β first: shards 0 and 1 solve β = 0.9 (13-32 iterations), 2 and 3 β = 0.995 (50: the cap is 40).
    data = {"name": "live", "model": "mccall", "params": {"n_wages": 5, "tol": 1.0e-6, "max_iter": 40},
            "sweep": {"beta": [0.9, 0.995], "c": {"linspace": [10, 30, 8]}}, "shards": 4}
    spec = parse_spec(data, yaml.safe_dump(data, sort_keys=False))
    plan, _ = store.plan_sweep(spec, paths.plan_path("live", root))
    solver = MeshSolver(get_model(plan.model), plan.precision, device_batch_size(plan))
    for shard in (0, 2):
        commit_shard(plan, shard, merge_summaries(plan, shard, [run_shard(plan, shard, root, solver=solver)]), root)
    chunks3 = list(plan.shard_chunk_ids(3))
    run_shard(plan, 3, root, chunk_ids=chunks3[:2], solver=solver)  # a job still at work on shard 3

    def expected():
        ds = xr.open_zarr(paths.store_path("live", root), chunks=None)
        done = ds["point_done"].values
        bad = done & (ds["failed"].values | ~(ds["finite"].values & ds["converged"].values))
        owner = ds["shard_index"].values
        labels = [f"beta={ds['beta'].values[i]}, c={ds['c'].values[j]}" for i, j in zip(*np.nonzero(bad))]
        return [int((done & (owner == s)).sum()) for s in range(4)], labels

    committed, labels = expected()
    assert committed[0] == committed[2] == plan.shard_points(0) and committed[1] == 0
    assert 0 < committed[3] < plan.shard_points(3) and labels  # β = 0.995 did not converge
    marker0 = json.loads(paths.marker_path("live", 0, root).read_text())
    assert store.counts_every_point_good(marker0)
    marker2 = json.loads(paths.marker_path("live", 2, root).read_text())
    assert marker2["not_converged"] == plan.shard_points(2)
    for c in plan.shard_chunk_ids(0):  # not read: shard 0's marker answers for them
        coords = tuple(int(i) for i in np.unravel_index(c, plan.chunk_grid))
        for name in ("point_done", "finite", "converged", "failed"):
            (paths.store_path("live", root) / name / "c" / "/".join(map(str, coords))).unlink(missing_ok=True)

    cache: dict = {}
    for _ in range(2):  # a fresh status, then a poll of `watch` with what the first one kept
        status = sweep_status("live", root, jobs=False, cache=cache)
        assert [s["committed"] for s in status["shards"]] == committed
        assert [s["state"] for s in status["shards"]] == ["done", "pending", "done", "running"]
        assert status["points_done"] == sum(committed) and status["flagged"] == labels[:50]
        assert status["n_flagged"] == len(labels)
    assert sweep_status("live", root, jobs=False)["flagged"] == labels[:50]  # without a cache, the same

    run_shard(plan, 3, root, chunk_ids=chunks3[2:], solver=solver)  # the job goes on: committed since the last poll
    status = sweep_status("live", root, jobs=False, cache=cache)
    assert [s["committed"] for s in status["shards"]] == [plan.shard_points(s) if s != 1 else 0 for s in range(4)]
    assert status["n_flagged"] == 2 * plan.shard_points(2)  # every β = 0.995 point, shard 3's too


def test_shard_sizes_count_each_shards_points_on_an_uneven_grid():
    data = {"name": "uneven", "model": "mccall", "params": {"n_wages": 5},
            "sweep": {"c": {"linspace": [10, 30, 7]}, "beta": {"linspace": [0.9, 0.99, 13]}}, "shards": 2}
    plan = make_plan(parse_spec(data, yaml.safe_dump(data, sort_keys=False)))
    assert plan.chunks == (1, 11) and plan.n_chunks == 14  # 13 betas: chunks of 11 and of 2
    np.testing.assert_array_equal(store.shard_sizes(plan), np.bincount(plan.shard_of_points().ravel()))
