"""Shards write real Zarr chunks; the store opens with xarray; interrupted shards resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from conftest import SMALL_MCCALL

from hpc.core import paths
from hpc.core.errors import SpecError
from hpc.core.files import write_atomic
from hpc.models import get_model
from hpc.sweep import store
from hpc.sweep.aggregate import aggregate
from hpc.sweep.plan import make_plan
from hpc.sweep.runner import commit_shard, merge_summaries, run_shard, solve_points
from hpc.sweep.spec import parse_spec
from hpc.sweep.work import shard_work


@pytest.fixture
def planned(tmp_path):
    plan = make_plan(parse_spec(SMALL_MCCALL))
    assert store.create_store(plan, tmp_path) == "created"
    write_atomic(paths.plan_path(plan.name, tmp_path), plan.to_json())
    return plan, tmp_path


def test_store_layout_before_any_shard(planned):
    plan, root = planned
    ds = xr.open_zarr(paths.store_path(plan.name, root), consolidated=False)
    assert ds["reservation_wage"].dims == ("c", "beta")
    assert ds["value"].dims == ("c", "beta", "wage")
    assert ds.sizes == {"c": 6, "beta": 2, "wage": 21}
    assert ds["reservation_wage"].encoding["chunks"] == plan.chunks
    np.testing.assert_allclose(ds["c"], np.linspace(15, 30, 6))
    assert not ds["point_done"].any()
    assert np.isnan(ds["reservation_wage"]).all()  # nothing computed reads as missing, not as a number
    assert ds.attrs["digest"] == plan.digest and json.loads(ds.attrs["spec"])["model"] == "mccall"
    assert set(np.unique(ds["shard_index"])) == {0, 1, 2}


def test_shards_fill_the_store_with_the_direct_solution(planned):
    plan, root = planned
    for shard in range(plan.n_shards):
        commit_shard(plan, shard, merge_summaries(plan, shard, [run_shard(plan, shard, root)]), root)
    summary = aggregate(paths.plan_path(plan.name, root))
    assert summary["points"] == 12 and summary["non_finite"] == 0
    ds = xr.open_zarr(paths.store_path(plan.name, root))
    assert ds["point_done"].all() and ds["finite"].all() and ds["converged"].all()
    model = get_model("mccall")
    c, beta = np.meshgrid(ds["c"].values, ds["beta"].values, indexing="ij")
    direct = solve_points(model, plan.spec["fixed"], {"c": c.ravel(), "beta": beta.ravel()}, "float32", 64)
    np.testing.assert_array_equal(ds["reservation_wage"].values.ravel(), direct["reservation_wage"])
    records = store.read_shard_records(paths.store_path(plan.name, root))
    assert [s["shard"] for s in records] == [0, 1, 2]
    assert all(s["host"] and s["duration_s"] > 0 for s in records)


@pytest.mark.fault('shard killed after its first chunk', expect='rerun computes only the missing chunks')
def test_interrupted_shard_resumes_only_missing_chunks(planned):
    plan, root = planned
    chunk_ids = list(plan.shard_chunk_ids(1))
    assert len(chunk_ids) > 1, "shard 1 owns several chunks"
    partial = run_shard(plan, 1, root, chunk_ids=chunk_ids[:1])  # as if killed after its first chunk
    first = plan.chunk_region(chunk_ids[0])
    assert partial["computed"] == int(np.prod([s.stop - s.start for s in first]))
    resumed = run_shard(plan, 1, root)
    assert resumed["computed"] == plan.shard_points(1) - partial["computed"]
    assert run_shard(plan, 1, root)["computed"] == 0  # a committed shard is not recomputed


@pytest.mark.fault('marker before every chunk is committed', expect='refused')
def test_marker_refused_until_every_chunk_is_committed(planned):
    plan, root = planned
    with pytest.raises(RuntimeError, match="not committed"):
        commit_shard(plan, 0, {"points": 0}, root)
    assert not paths.marker_path(plan.name, 0, root).exists()


@pytest.mark.fault('stale completion marker from an older spec', expect='ignored; the shard is not counted done')
def test_stale_marker_from_another_plan_is_not_trusted(planned):
    plan, root = planned
    write_atomic(paths.marker_path(plan.name, 0, root), json.dumps({"digest": "0000", "shard": 0}))
    assert 0 not in store.valid_markers(plan, root)
    with pytest.raises(RuntimeError, match=r"shards \[0, 1, 2\]"):
        aggregate(paths.plan_path(plan.name, root))


@pytest.mark.fault('changed spec under an existing name', expect='refused, store untouched')
def test_same_name_with_another_spec_is_refused(planned):
    plan, root = planned
    other = make_plan(parse_spec(dict(SMALL_MCCALL, params={"n_wages": 31})))
    with pytest.raises(SpecError, match="another spec"):
        store.create_store(other, root)
    assert store.create_store(plan, root) == "kept"


@pytest.mark.fault('the model raises for some points', expect='those points stored as failed with the error; the rest kept')
def test_points_the_model_raises_for_are_recorded_failed_and_the_rest_kept(tmp_path, monkeypatch):
    from hpc import models

    monkeypatch.setitem(models._MODULES, "faulty", "faulty_model")
    spec = parse_spec({"name": "faulty", "model": "faulty", "sweep": {"x": [0.1, 0.2, 0.3], "variant": ["fine", "broken"]},
                       "shards": 1})
    plan = make_plan(spec)
    store.create_store(plan, tmp_path)
    summary = merge_summaries(plan, 0, [run_shard(plan, 0, tmp_path)])
    commit_shard(plan, 0, summary, tmp_path)
    assert summary["failed"] == 3 and summary["non_finite"] == 0
    assert summary["errors"] == [{"static": {"variant": "broken"}, "error": "NotImplementedError: variant 'broken' has no solver"}]
    ds = xr.open_zarr(paths.store_path("faulty", tmp_path), consolidated=False)
    assert ds["point_done"].all()
    np.testing.assert_array_equal(ds["failed"].values, [[False, True]] * 3)
    assert np.isnan(ds["y"].sel(variant="broken")).all()  # never a number
    np.testing.assert_allclose(ds["y"].sel(variant="fine").values[:, 0], np.sin([0.1, 0.2, 0.3]), rtol=1e-6)


def test_a_shards_work_splits_its_chunks_in_runs_and_schedules_every_group_alike(monkeypatch):
    from hpc import models

    monkeypatch.setitem(models._MODULES, "faulty", "faulty_model")
    spec = parse_spec({"name": "faulty", "model": "faulty", "shards": 1,
                       "sweep": {"variant": ["fine", "broken"], "x": [0.1, 0.2, 0.3, 0.4, 0.5]}})
    plan = make_plan(spec)
    chunk_ids = list(plan.shard_chunk_ids(0))
    work = shard_work(plan, get_model("faulty"), chunk_ids, 3, process_batch=2)
    assert [c.id for p in work.processes for c in p.chunks] == chunk_ids  # contiguous runs, in order
    assert sum(p.points.n for p in work.processes) == work.points.n == plan.n_points
    for process in work.processes:
        flat = np.concatenate([c.flat for c in process.chunks]) if process.chunks else np.zeros(0, int)
        np.testing.assert_array_equal(process.points.table["x"], plan.point_values(flat)["x"])
    # Every process takes, for each static group, the steps the process with most of its points needs.
    most = {key: max(p.points.keys.count(key) for p in work.processes) for key in [("fine",), ("broken",)]}
    assert work.group_steps == {key: -(-count // 2) for key, count in most.items()}
    # A step with none of a process's points is padded with a real point of the group.
    assert work.fillers == {("fine",): {"x": 0.1}, ("broken",): {"x": 0.1}}
