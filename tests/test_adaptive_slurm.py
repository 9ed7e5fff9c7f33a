"""Adaptive sweeps on the emulated Slurm cluster, through profiles/slurm: a round's shard job runs
on a node and gives bitwise the results of the same round's plan run locally; with backend: dask
and dask: {cluster: slurm} each round's run-dask job starts a dask-jobqueue SLURMCluster whose
workers are Slurm jobs of their own (seen in sacct, gone from the queue once the round is done),
and the store is bitwise the shard-job sweep's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import PYTHON, REPO, cluster_test, run_hpc, run_snakemake, write_spec
from test_adaptive import BASE, DASK, reservation_wage, shard_job_sweep

from hpc.core import paths
from hpc.execution import accounting
from hpc.sweep import adaptive
from hpc.sweep.spec import parse_spec

pytestmark = [*cluster_test, pytest.mark.usefixtures("slurm_cluster")]


def test_one_adaptive_round_on_slurm_is_bitwise_the_round_run_locally(tmp_path):
    spec_file = write_spec(tmp_path, dict(BASE, name="adaptive-slurm", adaptive=dict(BASE["adaptive"], stop={"max_points": 6})))
    run_snakemake(tmp_path, "--config", f"sweep={spec_file}", profile="slurm")
    results = tmp_path / "results"
    ds = xr.open_zarr(results / "adaptive-slurm" / "sweep.zarr")
    assert ds.sizes["point"] == 6 and ds["point_done"].all() and ds.attrs["final"]["reason"].startswith("max_points")
    rounds = adaptive.rounds_root("adaptive-slurm", results)
    marker = json.loads(paths.marker_path("round-0000", 0, rounds).read_text())
    assert marker["host"] in {"n1", "n2", "n3"}, marker["host"]  # ran on an emulated node
    record = ds.attrs["rounds"][0]["execution"]  # what the report's "ran on" says
    assert record == {"backend": "jax", "slurm": True, "jobs": [marker["job_id"]], "hosts": [marker["host"]],
                      "processes": 1}, record
    np.testing.assert_allclose(ds["reservation_wage"].values,
                               [reservation_wage(c, b) for c, b in zip(ds["c"].values, ds["beta"].values)], rtol=1e-3)

    # The same round's plan, run here by run-shard alone: bitwise the same
    from hpc.sweep.spec import load_spec

    spec = load_spec(spec_file)
    local = tmp_path / "local" / "rounds"
    plan_file = paths.plan_path("round-0000", local)
    adaptive.plan_round(spec, adaptive.ask_path("adaptive-slurm", 0, results), plan_file)
    run_hpc("run-shard", str(plan_file), "0", "--marker", str(paths.marker_path("round-0000", 0, local)), cwd=tmp_path)
    here = xr.open_zarr(paths.store_path("round-0000", local), consolidated=False)
    for var in ("reservation_wage", "value", "iterations", "error", "converged"):
        np.testing.assert_array_equal(ds[var].values, here[var].values, err_msg=var)


WORKER_JOB = "dask-worker"  # dask-jobqueue's job name for a SLURMCluster's worker jobs
WORKERS = {"cluster": "slurm", "max_workers": 2, "cores": 1, "memory_mb": 1000, "walltime_min": 5, "lifetime_min": 3}


def queued(workdir) -> list[str]:
    """The ids of dask worker jobs started from ``workdir`` that Slurm's queue still holds."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%j|%Z"], capture_output=True, text=True, check=True, timeout=60).stdout
    return [i for i, name, wd in (line.split("|", 2) for line in out.splitlines() if line.strip())
            if name == WORKER_JOB and wd == str(workdir)]


def test_adaptive_dask_sweep_on_a_slurm_cluster_runs_its_workers_as_slurm_jobs_bitwise_the_shard_jobs(tmp_path):
    """Two rounds of 6 points, each one run-dask job (itself a Slurm job, through profiles/slurm)
    whose SLURMCluster submits its worker jobs from the node it runs on."""
    name = "adaptive-dask-slurm"
    spec_file = write_spec(tmp_path, dict(DASK, name=name, dask=WORKERS))
    since = time.time()
    run_snakemake(tmp_path, "--config", f"sweep={spec_file}", profile="slurm")
    results = tmp_path / "results"
    rounds = adaptive.rounds_root(name, results)

    # The store: every array bitwise the shard-job sweep's, the reservation wage that of its equation
    got = zarr.open_group(str(results / name / "sweep.zarr"), mode="r", zarr_format=3)
    want = shard_job_sweep(parse_spec(dict(BASE, name=name, shards=2)), tmp_path / "reference")
    assert sorted(got.array_keys()) == sorted(want.array_keys())
    assert got["c"].shape == (12,) and np.asarray(got["point_done"][...]).all()
    for key in want.array_keys():
        a, b = np.asarray(got[key][...]), np.asarray(want[key][...])
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), f"{key} differs"
    assert [(r["first"], r["n"], r["shards"]) for r in got.attrs["rounds"]] == [(0, 6, 2), (6, 6, 2)]
    np.testing.assert_allclose(got["reservation_wage"][...],
                               [reservation_wage(c, b) for c, b in zip(got["c"][...], got["beta"][...])], rtol=1e-3)

    # Who ran the chunks: the markers name the worker jobs, Slurm's accounting has them as dask's
    # worker jobs, submitted from this sweep's directory with the spec's resources, on the emulated nodes
    ran = {}
    for r in (0, 1):
        markers = [json.loads(paths.marker_path(adaptive.round_name(r), s, rounds).read_text()) for s in (0, 1)]
        ran[r] = {j for m in markers for j in m["job_ids"]}
        assert ran[r], f"round {r}'s chunks ran in no Slurm job"
        assert {m["host"] for m in markers} <= {"n1", "n2", "n3"}
    assert not ran[0] & ran[1], "each round starts a cluster of its own"
    deadline = time.time() + 60  # accounting records a cancelled job's end within seconds
    while True:
        jobs = accounting.jobs_since(since) or []
        worker_jobs = {j["job_id"]: j for j in jobs if j["job_name"] == WORKER_JOB and j["workdir"] == str(tmp_path)}
        if all(j["state"] in ("CANCELLED", "COMPLETED") for j in worker_jobs.values()) or time.time() > deadline:
            break
        time.sleep(1)
    assert ran[0] | ran[1] <= set(worker_jobs), (ran, worker_jobs)
    for job in worker_jobs.values():
        assert job["state"] in ("CANCELLED", "COMPLETED"), job  # closed with its cluster, not left running
        assert abs(job["req_mem_mb"] - 1000e6 / 2**20) < 1, job  # dask-jobqueue asks for 1000 MB as MiB
        if job["job_id"] in ran[0] | ran[1]:  # (a worker asked for while the round ends is cancelled pending)
            assert job["nodes"] in {"n1", "n2", "n3"} and job["alloc_cpus"] == 1, job
    drivers = [j for j in jobs if j["comment"].startswith("rule_adaptive_dask_") and j["workdir"] == str(tmp_path)]
    assert sorted(j["comment"] for j in drivers) == ["rule_adaptive_dask_wildcards_0000", "rule_adaptive_dask_wildcards_0001"]
    assert all(j["state"] == "COMPLETED" for j in drivers), drivers
    # no worker job is left in the queue (a cancelled one leaves it within seconds)
    deadline = time.time() + 30
    while queued(tmp_path) and time.time() < deadline:
        time.sleep(1)
    assert queued(tmp_path) == []

    # The rounds' records, and the report, say so
    for r in (0, 1):
        record = got.attrs["rounds"][r]["execution"]
        assert record["backend"] == "dask" and record["cluster"] == "slurm", record
        assert set(record["jobs"]) == ran[r] and record["max_workers"] == 2
        assert record["worker"] == {"cores": 1, "memory_mb": 1000, "walltime_min": 5, "partition": None}
        assert json.loads(adaptive.dask_summary_path(name, r, results).read_text())["cluster"] == "slurm"  # as run-dask saw it
    assert [r["execution"]["backend"] for r in want.attrs["rounds"]] == ["jax", "jax"]
    page = (results / name / "report.html").read_text()
    cell = page.split('id="adaptive-execution">', 1)[1].split("</td>", 1)[0]
    assert cell.startswith("dask on a SLURMCluster: ") and cell.endswith("(2 rounds)"), cell
    assert all(j in cell for j in ran[0] | ran[1]) and "1 core, 1000 MB, 5 min walltime" in cell, cell
    status = adaptive.describe_progress(name, results)  # what hpc status prints
    assert status.count("ran on: dask on a SLURMCluster: ") == 2, status


def squeue_state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=60).stdout.strip()


@pytest.mark.fault("adaptive dask round: its run-dask job stopped by SIGTERM (scancel, time limit) while its worker job "
                   "waits in the queue of a full cluster", expect="the cluster is closed on the way out: the pending worker "
                   "job is cancelled, none left in the queue; exit status 143; no shard marked done")
def test_a_run_dask_job_stopped_by_sigterm_cancels_its_pending_worker_jobs(tmp_path):
    name = "adaptive-dask-stop"
    spec = parse_spec(dict(DASK, name=name, dask=WORKERS))
    results = tmp_path / "results"
    ask = adaptive.ask_path(name, 0, results)
    adaptive.ask_round(spec, 0, ask, root=results)
    plan_file = adaptive.round_plan_path(name, 0, results)
    plan, _ = adaptive.plan_round(spec, ask, plan_file)
    # every node taken, so the round's worker job stays PENDING
    blocker = subprocess.run(["sbatch", "--parsable", "-N", "3", "--exclusive", "-t", "5", "-J", "hpc-test-blocker",
                              "-D", str(tmp_path), "--wrap", "sleep 300"], capture_output=True, text=True, check=True,
                             timeout=60).stdout.strip().split(";")[0]
    proc = None
    try:
        deadline = time.time() + 60
        while squeue_state(blocker) != "RUNNING" and time.time() < deadline:
            time.sleep(0.5)
        assert squeue_state(blocker) == "RUNNING"
        proc = subprocess.Popen([PYTHON, "-m", "hpc", "run-dask", str(plan_file), "--settings", json.dumps(WORKERS)],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        deadline = time.time() + 90
        while not queued(tmp_path) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        pending = queued(tmp_path)
        assert pending and all(squeue_state(j) == "PENDING" for j in pending), (pending, proc.poll())
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        deadline = time.time() + 15  # scancel's effect: the job leaves the queue within seconds
        while queued(tmp_path) and time.time() < deadline:
            time.sleep(0.5)
        assert queued(tmp_path) == [], f"a worker job of the stopped round is left in the queue (exit {proc.returncode})"
        assert proc.returncode == 143, (proc.returncode, err[-2000:])
        assert "stopped by SIGTERM" in err
        never_ran = {j["job_id"]: j for j in accounting.jobs_since(time.time() - 600) or [] if j["job_id"] in pending}
        assert set(never_ran) == set(pending), never_ran  # cancelled before it ever had a node
        assert all(j["state"] == "CANCELLED" and j["nodes"] is None for j in never_ran.values()), never_ran
        assert not any(paths.marker_path(plan.name, s, paths.root_of_plan(plan_file)).exists() for s in range(plan.n_shards))
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        subprocess.run(["scancel", blocker], timeout=60)
        deadline = time.time() + 60  # leave the nodes free for the next test
        while squeue_state(blocker) and time.time() < deadline:
            time.sleep(0.5)
