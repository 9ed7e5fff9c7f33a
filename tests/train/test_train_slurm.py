"""Training on the emulated Slurm cluster: one DAG from the sweep spec to the surrogate, 2 nodes
x 2 processes; SIGTERM mid-run then Snakemake's resubmission resumes to bitwise the same
parameters; 1 process and 4 give the same loss curve."""

from __future__ import annotations

import json
import os
import subprocess
import time

import numpy as np
import pytest
import train_helpers
from conftest import PYTHON, REPO, cluster_test, run_hpc, run_snakemake, write_spec
from train_helpers import assert_same_params, final_params, open_run

pytestmark = [*cluster_test, pytest.mark.usefixtures("slurm_cluster")]

TWO_BY_TWO = dict(train_helpers.MCCALL_SURROGATE, resources={"nodes": 2, "tasks": 4, "runtime": 10, "mem_mb": 1000})
TARGET = "results/mc-surr/train.json"  # the report is another stage (hpc.report)


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    """Sweep spec → sweep jobs → training job (2 nodes x 2 processes), in one Snakemake run."""
    workdir = tmp_path_factory.mktemp("slurm-train")
    write_spec(workdir, train_helpers.MCCALL_DATA, "sweep.yaml")
    spec = write_spec(workdir, TWO_BY_TWO, "train.yaml")
    result = run_snakemake(workdir, TARGET, "--config", f"train={spec}", profile="slurm")
    return workdir, result.stdout + result.stderr


def test_sweep_then_training_on_two_nodes_times_two_processes(slurm_run):
    workdir, log = slurm_run
    assert "rule run_shard:" in log and "rule train:" in log  # one DAG: the sweep ran first
    assert "nodes=2" in log and "tasks_per_node=2" in log
    ds = open_run(workdir)
    segment = ds.attrs["segments"][-1]
    assert segment["processes"] == 4 and segment["hosts"] == ["n1", "n2"], segment
    loss = ds["loss"].values
    assert loss[-50:].mean() < 0.02 * loss[:50].mean()
    marker = json.loads((workdir / TARGET).read_text())
    assert marker["heldout_rmse"] < train_helpers.HELDOUT_RMSE_BOUND * _heldout_std(workdir), marker
    assert (workdir / "results" / "mc-data" / "sweep.zarr").exists()


def _heldout_std(workdir) -> float:
    from hpc.train.data import load_dataset
    from hpc.train.spec import load_train_spec

    return float(np.std(load_dataset(load_train_spec(workdir / "train.yaml"), workdir / "results").y_heldout))


def test_one_process_gives_the_loss_curve_of_four(slurm_run, tmp_path):
    workdir, _ = slurm_run
    spec = train_helpers.workdir_with_store(workdir, tmp_path, train_helpers.MCCALL_SURROGATE)
    run_hpc("train", "run", spec, cwd=tmp_path)
    one, four = open_run(tmp_path), open_run(workdir)
    assert one.attrs["layout"]["processes"] == 1 and four.attrs["layout"]["processes"] == 4
    np.testing.assert_allclose(one["loss"].values, four["loss"].values, rtol=train_helpers.LOSS_RTOL)
    np.testing.assert_allclose(one["heldout_rmse"].values, four["heldout_rmse"].values, rtol=train_helpers.LOSS_RTOL)


def _running_jobs(before: set[str]) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True).stdout
    return [j for j in out.split() if j not in before]


def test_sigterm_mid_run_then_resubmission_resumes_to_bitwise_the_same_parameters(slurm_run, tmp_path):
    workdir, _ = slurm_run
    spec = train_helpers.workdir_with_store(workdir, tmp_path, TWO_BY_TWO)
    before = set(subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True, text=True).stdout.split())
    # The profile's retries: 1 resubmits the stopped job.
    cmd = [PYTHON, "-m", "snakemake", TARGET, "--snakefile", str(REPO / "Snakefile"), "--profile",
           str(REPO / "profiles" / "slurm"), "--directory", str(tmp_path), "--config", f"train={spec}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    checkpoints = tmp_path / "results" / "mc-surr" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir()):
            break
        time.sleep(0.05)
    jobs = _running_jobs(before)
    assert len(jobs) == 1, (jobs, proc.poll())
    # To the job's steps, not its batch shell: the ranks under srun get it (as from --signal).
    subprocess.run(["scancel", "--signal=TERM", jobs[0]], check=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]

    ds = open_run(tmp_path)
    stopped, resumed = ds.attrs["segments"]
    assert stopped["reason"] == "stopped (SIGTERM)" and 0 < stopped["last_step"] < 1000, stopped
    assert resumed["restored_from"] == stopped["last_step"] and resumed["reason"] == "completed"
    assert resumed["processes"] == 4 and resumed["hosts"] == ["n1", "n2"]
    reference = open_run(workdir)
    np.testing.assert_array_equal(ds["loss"].values, reference["loss"].values)
    assert_same_params(final_params(tmp_path)[0], final_params(workdir)[0])


def test_a_user_network_streaming_a_user_store_on_two_nodes_trains_as_in_memory_on_one_process(tmp_path):
    """network and data from files in a folder outside the repository (hpc.train.zarrdata), on
    Slurm: 2 nodes x 2 processes, each reading its own rows from the store; the same losses as one
    local process holding the rows in memory (float32 rounding: 4 gradients summed in another order)."""
    from test_train_byo import NET, byo_spec, make_store

    user = tmp_path / "user"
    user.mkdir()
    (user / "net.py").write_text(NET)
    make_store(user / "data.zarr")
    streamed = byo_spec(steps=100, cpu_devices=0, resources={"nodes": 2, "tasks": 4, "runtime": 10, "mem_mb": 1000})
    streamed["data"] = dict(streamed["data"], stream=True)
    spec = write_spec(user, streamed, "train.yaml")
    run_snakemake(tmp_path, "results/byo/train.json", "--config", f"train={spec}", profile="slurm")
    in_memory = dict(streamed, resources={}, cpu_devices=4)
    in_memory["data"] = dict(streamed["data"], stream=False, zarr=str(user / "data.zarr"))
    in_memory["network"] = dict(streamed["network"], module=f"{user / 'net.py'}:Tiny")
    local = tmp_path / "local"
    local.mkdir()
    run_hpc("train", "run", write_spec(local, in_memory, "train.yaml"), "--cpu-devices", "4", cwd=local)
    slurm, one = open_run(tmp_path, "byo"), open_run(local, "byo")
    segment = slurm.attrs["segments"][-1]
    assert segment["processes"] == 4 and segment["hosts"] == ["n1", "n2"] and slurm.attrs["data_streamed"] is True
    assert slurm.attrs["network"]["provenance"]["file"] == str(user / "net.py")
    np.testing.assert_allclose(slurm["loss"].values, one["loss"].values, rtol=train_helpers.LOSS_RTOL)
