"""The cost preview (hpc.sweep.estimate, `hpc plan --estimate`): the prediction's arithmetic
against hand computation, the shards' shapes against the plan, bad flags refused, and one real
probe of a tiny McCall sweep against a real run of it (and the report's prediction-vs-actual)."""

from __future__ import annotations

import json
import math

import pytest
from conftest import cluster_test, run_hpc, run_snakemake, write_spec

from hpc.cli import main
from hpc.sweep import estimate
from hpc.sweep.estimate import Calibration, GroupCost, ShardShape, makespan, predict

NAMES = ["planner"]  # one static parameter: keys are (False,) and (True,)


def calibration(**over) -> Calibration:
    groups = [GroupCost({"planner": False}, compile_s=0.5, probe_compile_s=2.0, cached=True, step_s=0.1,
                        steps_timed=4, batch_peak_mb=1.5, output_bytes_per_point=2048.0),
              GroupCost({"planner": True}, compile_s=1.0, probe_compile_s=3.0, cached=True, step_s=0.25,
                        steps_timed=4, batch_peak_mb=4.0, output_bytes_per_point=1024.0)]
    body = dict(groups=groups, process_batch=8, write_s_per_chunk=0.02, shard_rss_mb=200.0, probe_rss_mb=300.0,
                probe_s=5.0)
    body.update(over)
    return Calibration(**body)


SHAPES = [ShardShape(points=40, group_steps={(False,): 3, (True,): 2}, process_points=40, chunks=4, process_chunks=4),
          ShardShape(points=16, group_steps={(True,): 2}, process_points=16, chunks=2, process_chunks=2),
          ShardShape(points=1024, group_steps={(False,): 128}, process_points=512, chunks=8, process_chunks=4)]


def test_a_shards_runtime_and_peak_memory_are_the_sums_of_its_groups_steps_and_writes():
    p = predict(SHAPES, calibration(), NAMES, {})
    # shard 0: both programs (0.5 + 1.0), 3 steps of 0.1 and 2 of 0.25, 4 chunk writes of 0.02
    # peak: 200 MB + the larger batch (4.0 MB) + 40 points × 2048 bytes (the larger output per point)
    # shard 1: 1.0 + 2 × 0.25 + 2 × 0.02; 200 + 4.0 + 16 × 1024 bytes
    # shard 2: 0.5 + 128 × 0.1 + 4 × 0.02 (its process writes 4 of the 8 chunks); 200 + 1.5 + 512 × 2048 bytes
    expected = [(1.5 + 0.3 + 0.5 + 0.08, 200 + 4.0 + 40 * 2048 / 2**20),
                (1.0 + 0.5 + 0.04, 200 + 4.0 + 16 * 1024 / 2**20),
                (0.5 + 12.8 + 0.08, 200 + 1.5 + 512 * 2048 / 2**20)]
    assert [s["points"] for s in p["shards"]] == [40, 16, 1024]
    for shard, (runtime, peak) in zip(p["shards"], expected):
        assert shard["runtime_s"] == pytest.approx(runtime, abs=1e-3)
        assert shard["peak_memory_mb"] == pytest.approx(peak, abs=0.05)
    assert p["compute_s"] == pytest.approx(2.38 + 1.54 + 13.38, abs=3e-3)


def test_totals_count_each_jobs_cores_and_gpus_and_the_wall_time_runs_shards_at_the_parallelism_asked():
    p = predict(SHAPES, calibration(), NAMES, {"tasks": 2, "cpus_per_task": 3, "gpus": 2}, jobs=2)
    compute = 2.38 + 1.54 + 13.38
    assert p["core_hours"] == pytest.approx(compute * 6 / 3600, rel=1e-3)
    assert p["gpu_hours"] == pytest.approx(compute * 2 / 3600, rel=1e-3)
    # two slots: shard 0 (2.38) and shard 1 (1.54) start at once; shard 2 takes the slot freed at 1.54
    assert p["wall_s"] == pytest.approx(1.54 + 13.38, abs=3e-3)
    assert predict(SHAPES, calibration(), NAMES, {})["wall_s"] == pytest.approx(13.38, abs=2e-3)  # all at once
    assert predict(SHAPES, calibration(), NAMES, {})["gpu_hours"] is None
    assert makespan([3, 1, 2, 2], 2) == 5 and makespan([3, 1, 2, 2], 1) == 8 and makespan([3, 1, 2, 2], 9) == 3


def test_a_shard_over_the_specs_runtime_or_memory_is_flagged_with_a_shard_count_and_resources_that_fit():
    p = predict(SHAPES, calibration(), NAMES, {"runtime": 1, "mem_mb": 1000})
    assert p["warnings"] == []  # 13.4 s × 1.2 is under a minute, 202.5 MB × 1.2 under 1000 MB
    slow = calibration(groups=[GroupCost({"planner": False}, 0.5, 2.0, True, 10.0, 4, 1.5, 2048.0),
                               GroupCost({"planner": True}, 1.0, 3.0, True, 25.0, 4, 4.0, 1024.0)])
    p = predict(SHAPES, slow, NAMES, {"runtime": 2, "mem_mb": 244})
    runtimes = [1.5 + 30 + 50 + 0.08, 1.0 + 50 + 0.04, 0.5 + 1280 + 0.08]
    assert [s["runtime_s"] for s in p["shards"]] == pytest.approx(runtimes, abs=1e-3)
    runtime_warning, memory_warning = p["warnings"]
    # over 120 s / 1.2: shard 2 alone (1280.6 s); shard 0 (81.6 s × 1.2 = 97.9 s) fits
    assert runtime_warning.startswith("1 of 3 shards may exceed resources.runtime = 2 min")
    # the shards' time beyond getting programs, 1413.2 - 3.0 = 1410.2 s, in shards of 100 s less the
    # most a shard spends on programs (1.5 s): ceil(1410.2 / 98.5) = 15 shards
    scalable = sum(runtimes) - (1.5 + 1.0 + 0.5)
    assert p["suggested"]["shards"] == math.ceil(scalable / (120 / 1.2 - 1.5)) == 15
    assert "shards: 15" in runtime_warning
    assert p["suggested"]["runtime"] == math.ceil(1280.58 * 1.2 / 60) == 26
    # memory: peaks 204.08, 204.02 and 202.5 MB; × 1.2: 244.9, 244.8 (over 244) and 243.0 (under):
    # 2 of 3, and 204.08 × 1.2 rounded up to 100 MB is 300
    assert memory_warning.startswith("2 of 3 shards may exceed resources.mem_mb = 244")
    assert p["suggested"]["mem_mb"] == 300 and "mem_mb: 300" in memory_warning


def test_the_shards_shapes_are_the_runners_work_every_point_once(tmp_path):
    from hpc.models import get_model
    from hpc.sweep.plan import make_plan
    from hpc.sweep.spec import load_spec

    spec = load_spec(write_spec(tmp_path, {"name": "shapes", "model": "bianchi",
                                           "sweep": {"kappa": {"linspace": [0.2, 0.4, 7]}, "planner": [False, True]},
                                           "shards": 3, "batch_size": 2}))
    plan = make_plan(spec)
    shapes = estimate.shard_shapes(plan, get_model("bianchi"), tasks=2, process_batch=2)
    assert sum(s.points for s in shapes) == 14 and sum(s.chunks for s in shapes) == plan.n_chunks
    for shard, s in enumerate(shapes):
        assert s.points == plan.shard_points(shard)
        # two processes split the chunks in contiguous runs; each step holds 2 points of one group
        assert s.process_chunks == math.ceil(s.chunks / 2)
        assert sum(s.group_steps.values()) >= math.ceil(s.process_points / 2)
        assert {k[0] for k in s.group_steps} <= {True, False}  # planner is the first static parameter


SHAPE_SPECS = {
    # the static planner on the last axis
    "bianchi": {"model": "bianchi", "sweep": {"kappa": {"linspace": [0.2, 0.4, 7]}, "planner": [False, True]},
                "shards": 3, "batch_size": 2},
    # static parameters on two axes, one of them zipped with a dynamic one, a dynamic axis between
    # them, chunks cutting the zipped axis
    "mccall-zip": {"model": "mccall", "params": {"n_wages": 11},
                   "sweep": {"tol": [1.0e-6, 1.0e-5], "c": {"linspace": [10, 30, 7]},
                             "run": {"zip": {"beta": [0.9, 0.95, 0.99], "max_iter": [100, 200, 300]}}},
                   "shards": 5, "batch_size": 3},
}


@pytest.mark.parametrize("tasks", [1, 3])
@pytest.mark.parametrize("which", sorted(SHAPE_SPECS))
def test_shapes_counted_from_the_axes_are_the_work_shard_jobs_build(tmp_path, which, tasks):
    """shard_shapes counts each chunk's points per static key from the grid's axes; the shard jobs
    build their work point by point (hpc.sweep.work.shard_work): the same shapes, groups in the
    same order; and the probe's samples of a group are its points as a full listing has them."""
    import numpy as np

    from hpc.models import get_model
    from hpc.sweep.plan import make_plan
    from hpc.sweep.spec import load_spec
    from hpc.sweep.work import Points, shard_work

    body = dict(SHAPE_SPECS[which], name=f"shapes-{which}")
    plan = make_plan(load_spec(write_spec(tmp_path, body)))
    model = get_model(body["model"])
    batch = body["batch_size"]
    shapes = estimate.shard_shapes(plan, model, tasks=tasks, process_batch=batch)
    assert len(shapes) == plan.n_shards
    for shard, shape in enumerate(shapes):
        work = shard_work(plan, model, list(plan.shard_chunk_ids(shard)), tasks, batch)
        assert shape.points == work.points.n and shape.chunks == len(work.chunks)
        assert shape.process_points == max(p.points.n for p in work.processes)
        assert shape.process_chunks == max(len(p.chunks) for p in work.processes)
        assert list(shape.group_steps.items()) == list(work.group_steps.items())

    every = Points.of(model, plan.fixed_parameters, plan.point_values(np.arange(plan.n_points)), plan.n_points)
    axes = estimate.StaticAxes(plan, model)
    assert sorted(axes.keys(), key=repr) == sorted(set(every.keys), key=repr)
    assert len(axes.keys()) == (2 if which == "bianchi" else 6)  # planner; tol x max_iter
    for key in axes.keys():
        members = [i for i, k in enumerate(every.keys) if k == key]
        assert axes.n_members(key) == len(members)
        for start in (0, 1, len(members) - 2, len(members)):
            assert axes.members(key, start, start + 3).tolist() == members[start:start + 3]


BAD_FLAGS = [
    (["--estimate=cloud"], "--estimate"),
    (["--estimate", "--jobs", "0"], "--jobs"),
    (["--estimate", "--probe-fraction", "1.5"], "--probe-fraction"),
    (["--estimate", "--probe-max-s", "0"], "--probe-max-s"),
    (["--json"], "--json"),
    (["--estimate", "--partition", "debug"], "--partition"),
]


@pytest.mark.parametrize("flags,key", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
@pytest.mark.fault("hpc plan {flags} SPEC", expect="refused in one line naming the flag, exit 2, nothing probed or written")
def test_bad_estimate_flags_are_refused_in_one_line(tmp_path, capsys, monkeypatch, flags, key):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, {"name": "flags", "model": "mccall", "sweep": {"c": [10, 20]}, "shards": 1})
    assert main(["plan", *flags, str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"hpc plan: error: {key}:")
    assert not (tmp_path / "results").exists()


TINY = {"name": "est-tiny", "model": "mccall", "params": {"n_wages": 31},
        "sweep": {"c": {"linspace": [10, 30, 12]}, "beta": [0.9, 0.95, 0.99]}, "shards": 2, "batch_size": 4,
        "resources": {"runtime": 1, "mem_mb": 100}}


@pytest.mark.slow
def test_a_probe_of_a_tiny_sweep_predicts_its_run_and_the_report_puts_them_side_by_side(tmp_path):
    """`hpc plan --estimate --json` as a user runs it, then the sweep's shards as the workflow runs
    them (one process each, the same results root and compile cache), then aggregate and report."""
    spec = write_spec(tmp_path, TINY)
    env = {"HPC_RESULTS": str(tmp_path / "results")}
    out = run_hpc("plan", "--estimate", "--json", spec, cwd=tmp_path, env=env)
    result = json.loads(out.stdout)
    assert {"compute_s", "shards", "core_hours", "wall_s", "warnings"} <= set(result)
    assert [set(s) >= {"runtime_s", "peak_memory_mb"} for s in result["shards"]] == [True, True]
    assert result["compute_s"] == pytest.approx(sum(s["runtime_s"] for s in result["shards"]), abs=2e-3)
    # 100 MB is below any JAX process: the memory is flagged, with a request that fits
    assert any(w.startswith("2 of 2 shards may exceed resources.mem_mb = 100") for w in result["warnings"])
    assert result["suggested"]["mem_mb"] >= 1.2 * max(s["peak_memory_mb"] for s in result["shards"])
    saved = tmp_path / "results" / "est-tiny" / "estimate.json"
    assert json.loads(saved.read_text())["digest"] == result["digest"]

    plan = tmp_path / "results" / "est-tiny" / "plan.json"
    run_hpc("plan", spec, "--output", plan, cwd=tmp_path, env=env)
    markers = []
    for shard in range(2):
        run_hpc("run-shard", plan, shard, cwd=tmp_path, env=env)
        markers.append(json.loads((tmp_path / "results" / "est-tiny" / "shards" / f"shard-{shard:04d}.json").read_text()))
    ran = sum(m["duration_s"] for m in markers)
    peak = max(m["process_max_rss_mb"] for m in markers)
    # A tiny sweep's shard is mostly start-up (program load, first writes), which other processes
    # on the cores stretch at random: within a factor of 4 in time (bench_estimate.py holds larger
    # sweeps to ±25%); memory, which load does not change, within ±30%.
    assert ran / 4 <= result["compute_s"] <= ran * 4, (result["compute_s"], ran)
    predicted_peak = max(s["peak_memory_mb"] for s in result["shards"])
    assert 0.7 * peak <= predicted_peak <= 1.3 * peak, (predicted_peak, peak)

    from hpc.report.build import build_report
    from hpc.sweep.aggregate import aggregate

    aggregate(str(plan), str(tmp_path / "results" / "est-tiny" / "aggregate.json"))
    page = build_report("est-tiny", tmp_path / "results")
    assert 'id="estimate-shards"' in page and "Predicted and actual cost" in page
    assert f"against {ran:.3g} s recorded by the shards" in page


@pytest.mark.usefixtures("slurm_cluster")
class TestOnSlurm:
    pytestmark = cluster_test

    def test_estimate_on_slurm_runs_the_probe_as_one_job_on_a_node(self, tmp_path):
        spec = write_spec(tmp_path, dict(TINY, name="est-slurm", resources={"runtime": 5, "mem_mb": 2000}))
        results = tmp_path / "results"
        out = run_hpc("plan", "--estimate=slurm", "--json", spec, cwd=tmp_path, env={"HPC_RESULTS": str(results)})
        result = json.loads(out.stdout)
        assert result["source"] == "slurm" and result["job_id"].isdigit()
        assert result["calibration"]["host"] in {"n1", "n2", "n3"}  # the probe ran on a node, not here
        assert {"compute_s", "shards", "core_hours", "wall_s", "warnings"} <= set(result)
        assert json.loads((results / "est-slurm" / "estimate.json").read_text())["source"] == "slurm"


@pytest.mark.slow
def test_a_dry_run_with_estimate_true_prints_the_preview_and_a_bad_value_is_refused(tmp_path):
    spec = write_spec(tmp_path, dict(TINY, name="est-dry", resources={"runtime": 1, "mem_mb": 2000}))
    out = run_snakemake(tmp_path, "-n", "--config", f"sweep={spec}", "estimate=true")
    assert "estimate of sweep 'est-dry'" in out.stderr and "total: compute" in out.stderr
    saved = json.loads((tmp_path / "results" / "est-dry" / "estimate.json").read_text())
    assert len(saved["shards"]) == 2 and not (tmp_path / "results" / "est-dry" / "plan.json").exists()
    bad = run_snakemake(tmp_path, "-n", "--config", f"sweep={spec}", "estimate=cloud", check=False)
    assert bad.returncode != 0 and "estimate=cloud: use true (this machine) or slurm" in bad.stderr
