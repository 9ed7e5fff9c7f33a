"""Retries by cause on the emulated cluster (hpc.execution.slurm_plugin, hpc.sweep.resources), through
the Slurm profile as a user runs it (retries: 1), with --slurm-array-jobs: one sweep of two shards, one over its
memory, one whose model raises when it runs.

- The shard over its memory ends OUT_OF_MEMORY (the cgroup kills it) and is retried with twice the
  memory and the same time, and completes.
- The shard whose model raises fails at once: one Slurm job in accounting, the model's message in
  Snakemake's error, no second attempt with more memory. (Its job says so: the runner writes
  ``<shard log>.noretry``; sacct's FAILED 1:0 alone cannot tell a model error from srun unable to
  start a step on a dead node, which tests/test_workflow_slurm.py's node death retries.)
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from conftest import PYTHON, REPO, cluster_test, write_spec

from hpc.cluster import limits
from hpc.execution import accounting
from hpc.sweep import status

pytestmark = cluster_test

MODEL = '''
import time

import jax
import jax.numpy as jnp
import numpy as np

from hpc.models.base import DIAGNOSTICS, Model, Output, Parameter


def _hungry(x, mb):
    block = np.ones(mb << 20, np.uint8)  # every page touched
    time.sleep(2)
    return np.float32(x + block[-1] - 1)


def _crash(x):
    raise RuntimeError("model bug: no solution method for mode 'crash'")


def solve(dynamic, static):
    x = dynamic["x"].astype(jnp.float32)
    shape = jax.ShapeDtypeStruct((), jnp.float32)
    if static["mode"] == "crash":
        y = jax.pure_callback(_crash, shape, x, vmap_method="sequential")
    else:
        y = jax.pure_callback(lambda v: _hungry(v, static["alloc_mb"]), shape, x, vmap_method="sequential")
    return {"y": y, "iterations": jnp.int32(1), "error": jnp.zeros((), static["dtype"]), "converged": jnp.bool_(True)}


MODEL = Model(
    name="retries", doc="allocates alloc_mb MB when it runs (hungry) or raises (crash)",
    parameters=(Parameter("x", "float", 1.0),
                Parameter("mode", "choice", "hungry", role="static", choices=("hungry", "crash")),
                Parameter("alloc_mb", "int", 0, role="static")),
    outputs=(Output("y", (), "float"), *DIAGNOSTICS),
    solve=solve,
)
'''
MEM_MB = 1500  # the first attempt's; the hungry shard allocates as much besides Python, JAX and Snakemake


@pytest.mark.fault("a shard over its memory and a model that raises when it runs, retries: 1",
                   expect="OUT_OF_MEMORY retried with twice the memory, completes; the model error fails at "
                          "once (one job), with its message")
def test_only_failures_that_resources_can_help_are_retried(slurm_cluster, tmp_path):
    if limits.memory_enforcement() != "cgroup":
        pytest.skip("memory is not enforced by the cgroup plugin here: no OUT_OF_MEMORY to retry")
    (tmp_path / "retry_model.py").write_text(MODEL)
    spec = write_spec(tmp_path, {"name": "retries", "model": "retry_model.py:MODEL", "params": {"alloc_mb": MEM_MB},
                                 "sweep": {"mode": ["hungry", "crash"]}, "shards": 2,
                                 "resources": {"mem_mb": MEM_MB, "runtime": 10}})
    started = time.time()
    cmd = [PYTHON, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--profile", str(REPO / "profiles" / "slurm"),
           "--directory", str(tmp_path), "--config", f"sweep={spec}", "--keep-going", "--slurm-array-jobs", "run_shard"]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]  # the crashed shard fails the workflow
    assert "Submitted array job" in out, out[-3000:]  # the two shards as one array
    assert "not retried" in out and "model bug: no solution method for mode 'crash'" in out, out[-4000:]

    root = tmp_path / "results"
    said = (root / "retries" / "logs" / "shard-0001.log.noretry").read_text()  # what the job said of itself
    assert "model bug" in said and not (root / "retries" / "logs" / "shard-0000.log.noretry").exists()
    markers = sorted(p.name for p in (root / "retries" / "shards").glob("*.json"))
    assert markers == ["shard-0000.json"]  # the hungry shard completed on its second attempt
    assert json.loads((root / "retries" / "shards" / "shard-0000.json").read_text())["snakemake_attempt"] == 2

    # What Slurm's accounting says, read as hpc status reads it (slurmdbd may lag a little).
    deadline = time.time() + 60
    while True:
        st = status.sweep_status("retries", root, sources=("sacct",))
        jobs = {r["shard"]: r["jobs"] for r in st["shards"]}
        if (len(jobs[0]) == 2 and all(j.get("end") for js in jobs.values() for j in js)) or time.time() > deadline:
            break
        time.sleep(2)
    hungry, crashed = jobs[0], jobs[1]
    assert [status.normal_state(j["state"]) for j in crashed] == ["FAILED"], crashed  # one job: not retried
    assert crashed[0]["exit_code"] == 1 and "_" in crashed[0]["job_id"]  # an array task, JOBID_TASK
    assert status.normal_state(hungry[1]["state"]) == "COMPLETED", hungry
    # The cgroup's OOM handler killed it: Slurm says OUT_OF_MEMORY, or (as a non-first array task,
    # where the batch step itself exits 1) FAILED with an OUT_OF_MEMORY step.
    outcome = accounting.job_outcome(hungry[0]["job_id"])
    assert accounting.failure_cause(outcome["state"], outcome["exit_code"], outcome["step_states"]) == "memory"
    by = {r["shard"]: r for r in st["shards"]}
    assert by[0]["state"] == "done" and by[1]["state"] == "failed" and by[1]["attempts"] == 1

    asked = accounting.job_records([j.get("raw_id") or j["job_id"] for j in hungry], since=started)
    first, second = (asked[j.get("raw_id") or j["job_id"]] for j in hungry)
    assert MEM_MB <= first["req_mem_mb"] < 1.1 * MEM_MB  # (the plugin adds a little to an array's memory)
    assert second["req_mem_mb"] == 2 * MEM_MB  # grown for OUT_OF_MEMORY
    assert second["max_rss_mb"] > MEM_MB  # it did need more than the first attempt had
    second_line = hungry[1]["submit_line"]
    assert " -t 10 " in second_line + " ", second_line  # the time did not grow: memory was the cause
