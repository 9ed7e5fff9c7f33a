"""A sweep's shard jobs share compiled programs through the results root; results do not change."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from conftest import run_hpc, write_spec

from hpc.execution.compile_cache import CACHE_DIR_NAME, cache_dir, machine_key

# Bianchi compiles for about 2 s: above the cache's threshold, so its programs are written.
BIANCHI = {"name": "cached", "model": "bianchi", "params": {"n_b": 60, "sim_periods": 3000},
           "sweep": {"kappa": [0.3, 0.32, 0.34, 0.36]}, "shards": 2, "batch_size": 2}
VARS = ("bond_policy", "value", "crisis_probability", "mean_debt_to_gdp", "iterations", "converged", "point_done")


def test_the_cache_sits_under_the_results_root_keyed_by_this_cpu(tmp_path):
    assert machine_key() == machine_key() and "/" not in machine_key()
    assert cache_dir(tmp_path, env={}) == tmp_path / CACHE_DIR_NAME / machine_key()
    assert cache_dir(tmp_path, env={"HPC_JAX_CACHE": str(tmp_path / "elsewhere")}) == tmp_path / "elsewhere" / machine_key()
    assert cache_dir(tmp_path, env={"HPC_JAX_CACHE": "none"}) is None


def run_sweep(workdir, env: dict) -> tuple[dict, list[str]]:
    workdir.mkdir()
    spec = write_spec(workdir, BIANCHI)
    plan = workdir / "results" / "cached" / "plan.json"
    run_hpc("plan", spec, "--output", plan, cwd=workdir)
    logs = [run_hpc("run-shard", plan, shard, cwd=workdir, env=env).stderr for shard in range(2)]
    group = zarr.open_group(str(plan.parent / "sweep.zarr"), mode="r")
    return {v: group[v][...] for v in VARS}, logs


@pytest.mark.slow
def test_the_second_shard_loads_the_first_ones_program_and_results_are_bitwise_uncached(tmp_path):
    debug = {"JAX_LOG_COMPILES": "1"}  # JAX then logs each persistent cache hit
    cached, logs = run_sweep(tmp_path / "cached", debug)
    assert "Persistent compilation cache hit" not in logs[0]
    assert "Persistent compilation cache hit" in logs[1], logs[1][-2000:]
    assert any((tmp_path / "cached" / "results" / CACHE_DIR_NAME).rglob("*-cache"))

    uncached, logs = run_sweep(tmp_path / "uncached", dict(debug, HPC_JAX_CACHE="none"))
    assert not any("Persistent compilation cache hit" in log for log in logs)
    assert not (tmp_path / "uncached" / "results" / CACHE_DIR_NAME).exists()
    for var in VARS:
        np.testing.assert_array_equal(cached[var], uncached[var], err_msg=var)
