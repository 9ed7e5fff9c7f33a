"""A sweep's shard jobs share compiled programs through the results root; results do not change."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import REPO, run_hpc, write_spec

from hpc.execution.compile_cache import CACHE_DIR_NAME, cache_dir, machine_key

# Bianchi compiles for about 2 s: above the cache's threshold, so its programs are written.
BIANCHI = {"name": "cached", "model": "bianchi", "params": {"n_b": 60, "sim_periods": 3000},
           "sweep": {"kappa": [0.3, 0.32, 0.34, 0.36]}, "shards": 2, "batch_size": 2}
VARS = ("bond_policy", "value", "crisis_probability", "mean_debt_to_gdp", "iterations", "converged", "point_done")


# Two logical CPUs of one x86 machine, as /proc/cpuinfo lists them.
CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse2 avx avx2 avx512f
bogomips\t: 4899.99

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse2 avx avx2 avx512f
bogomips\t: 4901.02
"""
ARM_CPUINFO = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd sve\nCPU implementer\t: 0x41\n"


def test_machine_key_changes_with_the_instruction_set_and_nothing_else():
    key = machine_key(CPUINFO)
    assert key.startswith(platform.machine() + "-") and "/" not in key
    # a program compiled for AVX-512 must not be loaded on a CPU without it
    assert machine_key(CPUINFO.replace(" avx512f", "")) != key
    assert machine_key(CPUINFO.replace("7B13", "7763")) != key  # another CPU model
    # the flags' order and the per-core lines (bogomips) are no difference
    assert machine_key(CPUINFO.replace("fpu sse2 avx avx2 avx512f", "avx512f avx2 avx sse2 fpu")) == key
    assert machine_key(CPUINFO.replace("4899.99", "4500.00")) == key
    # ARM names its flags "Features" and has no model name
    assert machine_key(ARM_CPUINFO) != machine_key(ARM_CPUINFO.replace(" sve", ""))
    # without /proc/cpuinfo the key still names the architecture, and differs from a CPU's
    assert machine_key("") != key and machine_key("").startswith(platform.machine() + "-")


def test_this_process_is_keyed_by_its_cpuinfo_the_same_in_every_process():
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        assert machine_key() == machine_key(cpuinfo.read_text())
    # another process (another interpreter, hash seed and start time) finds the same directory
    other = subprocess.run([sys.executable, "-c", "from hpc.execution.compile_cache import machine_key; "
                            "print(machine_key())"], capture_output=True, text=True, check=True,
                           env=dict(os.environ, PYTHONPATH=str(REPO), PYTHONHASHSEED="123"))
    assert other.stdout.strip() == machine_key()


def test_the_cache_sits_under_the_results_root_keyed_by_this_cpu(tmp_path):
    assert cache_dir(tmp_path, env={}) == tmp_path / CACHE_DIR_NAME / machine_key()
    assert cache_dir(tmp_path, env={"HPC_JAX_CACHE": str(tmp_path / "elsewhere")}) == tmp_path / "elsewhere" / machine_key()
    assert cache_dir(tmp_path, env={"HPC_JAX_CACHE": "none"}) is None
    assert cache_dir(tmp_path, env={"HPC_JAX_CACHE": " None "}) is None


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
