"""The workflow on the emulated Slurm cluster: real sbatch/srun jobs through Snakemake's plugin.

Results do not depend on where or how a sweep ran: local, sharded on Slurm, multi-node
multi-process shards (srun, srun --mpi=pmi2) all give bitwise-identical data variables.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import xarray as xr
from conftest import PYTHON, REPO, SMALL_MCCALL, cluster_test, run_snakemake, write_spec
from user_models import mccall_file_model

from hpc.sweep import store

pytestmark = [*cluster_test, pytest.mark.usefixtures("slurm_cluster")]


def open_store(workdir, name):
    return xr.open_zarr(workdir / "results" / name / "sweep.zarr")


def assert_same_data(a: xr.Dataset, b: xr.Dataset) -> None:
    assert sorted(a.data_vars) == sorted(b.data_vars)
    for var in a.data_vars:
        if var == "shard_index":  # the plan, which differs by design between splits
            continue
        np.testing.assert_array_equal(a[var].values, b[var].values, err_msg=var)


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    """The small sweep in one local shard and one process."""
    workdir = tmp_path_factory.mktemp("local-ref")
    spec = write_spec(workdir, dict(SMALL_MCCALL, name="ref", shards=1, batch_size=2))
    run_snakemake(workdir, "--config", f"sweep={spec}")
    return open_store(workdir, "ref")


def test_default_sweep_on_slurm_is_bitwise_the_local_run(tmp_path):
    local, slurm = tmp_path / "local", tmp_path / "slurm"
    local.mkdir()
    slurm.mkdir()
    run_snakemake(local)
    # One job per shard, the profile's documented way out of its job arrays (the node-death test
    # below runs the arrays).
    result = run_snakemake(slurm, "--slurm-array-jobs", "none", profile="slurm")
    assert "Submitted array job" not in result.stdout + result.stderr
    a, b = open_store(local, "mccall-c-beta"), open_store(slurm, "mccall-c-beta")
    for var in a.data_vars:
        np.testing.assert_array_equal(a[var].values, b[var].values, err_msg=var)
    hosts = {s["host"] for s in store.read_shard_records(slurm / "results" / "mccall-c-beta" / "sweep.zarr")}
    assert hosts <= {"n1", "n2", "n3"} and hosts, hosts  # ran on the emulated nodes


@pytest.mark.parametrize("mpi", [False, True], ids=["srun", "srun-pmi2"])
def test_multinode_multiprocess_shards_match_one_process(tmp_path, local_reference, mpi):
    # The model comes from a user's file outside the repository (McCall's solve behind the user's
    # own Model): every rank on both nodes loads it, and the data are the built-in model's, bitwise.
    model = mccall_file_model(tmp_path / "user-model")
    spec = write_spec(tmp_path, dict(SMALL_MCCALL, name="multi", model=model, shards=2, batch_size=2, mpi=mpi,
                                     cpu_devices=2, resources={"nodes": 2, "tasks": 4, "mem_mb": 1000, "runtime": 10}))
    result = run_snakemake(tmp_path, "--config", f"sweep={spec}", profile="slurm")
    assert "nodes=2" in result.stderr + result.stdout
    ds = open_store(tmp_path, "multi")
    assert ds.attrs["model"] == model and len(ds.attrs["model_source"]["sha256"]) == 64
    assert_same_data(local_reference, ds)
    for shard in (0, 1):
        marker = json.loads((tmp_path / "results" / "multi" / "shards" / f"shard-{shard:04d}.json").read_text())
        assert marker["processes"] == 4 and marker["devices"] == 8
        assert len(set(marker["host"].split(","))) == 2, marker["host"]  # two nodes


def _squeue_running() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i %j %k"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@pytest.mark.fault('scancel of a running shard job', expect='rerun finishes; finished shards not rerun; bitwise equal')
def test_cancelled_shard_job_is_rerun_and_the_store_completes(tmp_path, local_reference):
    # A shard job runs for seconds (Snakemake's job step, JAX's start, the solve): long enough to catch.
    spec = write_spec(tmp_path, dict(SMALL_MCCALL, name="cancel", shards=3, batch_size=2))
    cmd = [PYTHON, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--profile", str(REPO / "profiles" / "slurm"),
           "--directory", str(tmp_path), "--config", f"sweep={spec}", "--retries", "0"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    before = set(subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True, text=True).stdout.split())
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    victim = None
    deadline = time.time() + 120
    while time.time() < deadline and victim is None:
        running = [j for j in _squeue_running() if j not in before]
        if running:
            victim = running[0]
        time.sleep(0.2)
    assert victim, "no shard job started"
    subprocess.run(["scancel", victim], check=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0, "the cancelled job must fail the first run"
    assert "CANCELLED" in out

    markers_before = {p.name: json.loads(p.read_text()) for p in (tmp_path / "results" / "cancel" / "shards").glob("*.json")}
    assert len(markers_before) < 3
    run_snakemake(tmp_path, "--config", f"sweep={spec}", profile="slurm")
    markers_after = {p.name: json.loads(p.read_text()) for p in (tmp_path / "results" / "cancel" / "shards").glob("*.json")}
    assert len(markers_after) == 3
    for name, marker in markers_before.items():
        assert markers_after[name]["start"] == marker["start"], f"finished {name} was run again"
    ds = open_store(tmp_path, "cancel")
    assert ds["point_done"].all()
    assert_same_data(local_reference, ds)


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _running_jobs(before: set[str]) -> list[tuple[str, str, str]]:
    """The shard jobs of this test running now: (JobID as Slurm shows it, e.g. 41_2 for an array
    task, its own raw id, its node)."""
    out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i %A %N"], capture_output=True, text=True).stdout
    rows = [line.split() for line in out.splitlines() if len(line.split()) == 3]
    return [(i, raw, node) for i, raw, node in rows if i not in before and raw not in before and node.startswith("n")]


def _task_order(job_id: str) -> list[int]:
    return [int(n) for n in job_id.replace("_", " ").split() if n.isdigit()]


@pytest.mark.fault('a node dies mid-job (kill -9 slurmd and every job process on it)',
                   expect='Slurm requeues its job, which completes; no other shard rerun; bitwise equal; node comes back')
def test_a_node_that_dies_mid_job_is_survived_by_retry(tmp_path, local_reference):
    """One shard job per node (each asks for more than half a node's CPUs), the profile's array
    of them running; kill -9 the node of the array's first task: its slurmd and every job process
    on it, as a power loss would. Slurm declares the node dead (NODE_FAIL) and requeues its job,
    which runs again elsewhere; the sweep completes, bitwise the local run, and no other shard was
    run twice (a non-first array task used to wait for the first task's marker, then fail, and
    delete it: hpc.execution.slurm_plugin.run_own_array_task). The node comes back."""
    from hpc.cluster import emulated as cluster

    cpus = cluster.cluster_status()["settings"]["cpus_per_node"] // 2 + 1  # (not memory: a retry doubles it)
    spec = write_spec(tmp_path, dict(SMALL_MCCALL, name="nodefail", shards=3, batch_size=2,
                                     resources={"cpus_per_task": cpus, "runtime": 10}))
    cmd = [PYTHON, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--profile", str(REPO / "profiles" / "slurm"),
           "--directory", str(tmp_path), "--config", f"sweep={spec}", "--retries", "2"]
    before = set(subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %A"], capture_output=True, text=True).stdout.split())
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    running: list = []
    deadline = time.time() + 180
    while time.time() < deadline and len(running) < 3:
        running = _running_jobs(before)
        time.sleep(0.2)
    assert len(running) == 3, f"the three shard jobs did not all start: {running}"
    victim, _, node = min(running, key=lambda r: _task_order(r[0]))  # an array's first task, or a plain job
    state = cluster.state_dir_path()
    slurmd = int((state / "run" / f"slurmd-{node}.pid").read_text())
    steps = [int(p) for raw in (r for _, r, n in running if n == node)
             for p in subprocess.run(["pgrep", "-f", rf"slurmstepd: \[{raw}\."], capture_output=True, text=True).stdout.split()]
    assert steps, f"no slurmstepd of {victim} on {node}"
    doomed = [slurmd] + [d for s in steps for d in [s, *_descendants(s)]]
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        out, _ = proc.communicate(timeout=420)
    finally:
        cluster.cluster_up(**cluster.cluster_status()["settings"])  # the node comes back
    assert proc.returncode == 0, out[-3000:]
    # Slurm's accounting keeps the run the node took down (sacct -D: every run of the job). The
    # plugin says NODE_FAIL too, but only where a poll of its falls between the node's death and
    # the requeue, so its output is not the evidence.
    runs, deadline = [], time.time() + 60
    while time.time() < deadline and "NODE_FAIL" not in runs:
        runs = subprocess.run(["sacct", "-X", "-D", "-n", "-P", "-j", victim, "-o", "State"], capture_output=True,
                              text=True, timeout=30).stdout.split()
        time.sleep(1)
    assert "NODE_FAIL" in runs and runs[-1] == "COMPLETED", (victim, runs, out[-3000:])
    assert "Submitted array job" in out  # the profile's job arrays
    ds = open_store(tmp_path, "nodefail")
    assert ds["point_done"].all()
    assert_same_data(local_reference, ds)
    markers = [json.loads(p.read_text()) for p in sorted((tmp_path / "results" / "nodefail" / "shards").glob("*.json"))]
    # Slurm's requeue is the same Snakemake attempt: no shard was retried by Snakemake.
    assert [m["snakemake_attempt"] for m in markers] == [1, 1, 1], out[-3000:]
    assert cluster.cluster_status()["nodes"][node] in ("idle", "mix", "alloc")
