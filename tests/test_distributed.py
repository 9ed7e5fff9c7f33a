"""Results do not depend on how a shard runs: 1 process, several local processes with several
virtual devices each, mpiexec, or dask tasks; a dead rank fails its job without a hang.

The several-process, mpiexec and dask runs load the model from a user's file in a folder outside
the repository (tests/user_models.py: McCall's solve behind the user's own Model) and must be
bitwise the built-in model in one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import zarr
from conftest import PYTHON, REPO, SMALL_MCCALL, run_hpc, write_spec
from user_models import mccall_file_model

pytestmark = pytest.mark.slow

VARS = ("reservation_wage", "value", "iterations", "error", "converged", "finite", "point_done")


def planned(workdir, spec: dict):
    path = write_spec(workdir, spec)
    plan = workdir / "results" / spec["name"] / "plan.json"
    run_hpc("plan", path, "--output", plan, cwd=workdir)
    return plan


def read_store(plan) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(plan.parent / "sweep.zarr"), mode="r")
    return {v: group[v][...] for v in VARS}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Every shard in one process with one device."""
    workdir = tmp_path_factory.mktemp("ref")
    plan = planned(workdir, dict(SMALL_MCCALL, name="inv", batch_size=2))
    for shard in range(3):
        run_hpc("run-shard", plan, shard, cwd=workdir)
    return read_store(plan)


@pytest.fixture(scope="module")
def file_model(tmp_path_factory) -> str:
    """``model:`` for McCall's model in a user's file, in a temporary folder outside the repository."""
    return mccall_file_model(tmp_path_factory.mktemp("user-model"))


def assert_bitwise(reference, plan):
    got = read_store(plan)
    assert got["point_done"].all()
    for var in VARS:
        np.testing.assert_array_equal(got[var], reference[var], err_msg=var)


@pytest.mark.parametrize("flags", [["--tasks", "2", "--cpu-devices", "2"], ["--tasks", "2", "--mpi", "--cpu-devices", "2"],
                                   ["--tasks", "3"]], ids=["2proc-2dev", "mpiexec-2proc-2dev", "3proc"])
def test_multiprocess_shards_are_bitwise_one_process(tmp_path, reference, file_model, flags):
    plan = planned(tmp_path, dict(SMALL_MCCALL, name="inv", batch_size=2, model=file_model))
    assert json.loads(plan.read_text())["model"] == file_model  # every rank loads the user's file
    for shard in range(3):
        result = run_hpc("run-shard", plan, shard, *flags, cwd=tmp_path)
        marker = json.loads((plan.parent / "shards" / f"shard-{shard:04d}.json").read_text())
        assert marker["processes"] == int(flags[1])
        assert "committed" in result.stderr
        cpus = [part["cpus"] for part in marker["per_process"]]
        if len(cpus) <= len(os.sched_getaffinity(0)):
            # Each rank kept to its own share of the cores (local ranks and mpiexec alike).
            assert sorted(c for part in cpus for c in part) == sorted(os.sched_getaffinity(0)), cpus
    assert_bitwise(reference, plan)


def test_dask_backend_on_a_local_cluster_is_bitwise_one_process(tmp_path, reference, file_model):
    plan = planned(tmp_path, dict(SMALL_MCCALL, name="inv", batch_size=2, backend="dask", model=file_model,
                                  dask={"cluster": "local", "max_workers": 2}))
    result = run_hpc("run-dask", plan, "--settings", json.dumps({"cluster": "local", "max_workers": 2}), cwd=tmp_path)
    assert json.loads(result.stdout)["chunks"] > 3  # many small tasks, not one per shard
    assert_bitwise(reference, plan)
    assert len(list((plan.parent / "shards").glob("*.json"))) == 3



def test_a_process_with_no_points_of_a_static_group_takes_its_steps_padded(tmp_path):
    # Each value of the static parameter a is owned by one of the two processes: each takes the
    # other group's steps too (lockstep), padded with that group's first point, and writes nothing.
    spec = dict(SMALL_MCCALL, name="groups", batch_size=2, shards=1, sweep={"a": [150.0, 200.0], "c": [15.0, 20.0, 25.0]})
    stores = {}
    for flags in ([], ["--tasks", "2"]):
        workdir = tmp_path / f"tasks-{len(flags)}"
        workdir.mkdir()
        plan = planned(workdir, spec)
        run_hpc("run-shard", plan, 0, *flags, cwd=workdir)
        marker = json.loads((plan.parent / "shards" / "shard-0000.json").read_text())
        stores[len(flags)] = read_store(plan), [p["computed"] for p in marker["per_process"]]
    (one, computed_one), (two, computed_two) = stores[0], stores[2]
    assert computed_one == [6] and computed_two == [3, 3]
    for var in VARS:
        np.testing.assert_array_equal(two[var], one[var], err_msg=var)

@pytest.mark.fault('one rank of a 2-process shard killed', expect='job fails within seconds naming rank and host; no marker')
def test_a_killed_rank_fails_the_job_quickly_and_names_it(tmp_path):
    # Slow points (synthetic model: 2e8 logistic steps each) so the ranks are caught mid-solve.
    plan = planned(tmp_path, {"name": "die", "model": "synthetic", "params": {"steps": 200_000_000},
                              "sweep": {"x0": {"linspace": [0.1, 0.9, 8]}}, "shards": 1, "batch_size": 1})
    proc = subprocess.Popen([PYTHON, "-m", "hpc", "run-shard", str(plan), "0", "--tasks", "2"], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    deadline = time.time() + 120
    while "".join(lines).count("points in") < 2:  # both ranks are solving
        assert time.time() < deadline and proc.poll() is None, "".join(lines)
        time.sleep(0.1)
    ranks = subprocess.run(["pgrep", "-f", f"hpc run-shard {plan} 0$"], capture_output=True, text=True).stdout.split()
    assert len(ranks) == 2, ranks
    time.sleep(0.5)
    killed_at = time.time()
    os.kill(int(ranks[-1]), signal.SIGKILL)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    rest = "".join(lines)
    assert proc.returncode != 0
    assert time.time() - killed_at < 30, "the surviving rank hung"
    assert "was killed by signal 9" in rest and "on " in rest
    assert not (plan.parent / "shards" / "shard-0000.json").exists()
    assert not subprocess.run(["pgrep", "-f", f"hpc run-shard {plan} 0$"], capture_output=True).stdout


BIANCHI = {"name": "bianchi-inv", "model": "bianchi", "params": {"n_b": 60, "sim_periods": 3000},
           "sweep": {"kappa": [0.3, 0.32, 0.34], "planner": [False, True]}, "shards": 2, "batch_size": 2}
BIANCHI_VARS = ("bond_policy", "value", "crisis_probability", "crisis_probability_own_sd", "constraint_binding_frequency",
                "grid_bound_frequency", "mean_debt_to_gdp", "crisis_consumption_drop", "crisis_rer_depreciation",
                "iterations", "error", "converged", "point_done")


def test_bianchi_sweep_is_bitwise_the_same_on_2_processes_x_2_devices(tmp_path):
    # the default statistics (exact: the stationary distribution); the planner simulates its two
    # crisis severities, so the simulation is covered too
    stores = {}
    for label, flags in (("one", []), ("mesh", ["--tasks", "2", "--cpu-devices", "2"])):
        workdir = tmp_path / label
        workdir.mkdir()
        plan = planned(workdir, BIANCHI)
        for shard in range(2):
            run_hpc("run-shard", plan, shard, *flags, cwd=workdir)
        group = zarr.open_group(str(plan.parent / "sweep.zarr"), mode="r")
        stores[label] = {v: group[v][...] for v in BIANCHI_VARS}
    assert stores["one"]["point_done"].all() and stores["one"]["converged"].all()
    for var in BIANCHI_VARS:
        np.testing.assert_array_equal(stores["mesh"][var], stores["one"][var], err_msg=var)
