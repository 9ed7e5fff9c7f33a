"""The workflow end to end with the local profile: real Snakemake, real JAX, real Zarr."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import xarray as xr
from conftest import PYTHON, REPO, SMALL_MCCALL, run_hpc, run_snakemake, write_spec

pytestmark = pytest.mark.slow


def markers(workdir, name):
    return sorted((workdir / "results" / name / "shards").glob("shard-*.json"))


def test_local_sweep_end_to_end_and_rerun_does_nothing(tmp_path, small_spec):
    run_snakemake(tmp_path, "--config", f"sweep={small_spec}")
    out = tmp_path / "results" / "mccall-small"
    assert (out / "report.html").stat().st_size > 10_000  # an embedded plot
    ds = xr.open_zarr(out / "sweep.zarr")
    assert ds["point_done"].all() and ds["converged"].all()
    assert list(ds["reservation_wage"].dims) == ["c", "beta"]
    assert len(markers(tmp_path, "mccall-small")) == 3
    status = run_hpc("status", "mccall-small", "--results", tmp_path / "results").stdout
    assert "3/3 shards done, 12/12 points done, aggregated" in status

    again = run_snakemake(tmp_path, "--config", f"sweep={small_spec}")
    assert "Nothing to be done" in again.stdout + again.stderr

    # The same name with another spec is refused before any job, and the store is untouched.
    changed = write_spec(tmp_path, dict(SMALL_MCCALL, params={"n_wages": 31}), "changed.yaml")
    refused = run_snakemake(tmp_path, "--config", f"sweep={changed}", check=False)
    assert refused.returncode != 0
    assert "holds a sweep made from another spec" in refused.stderr and "Traceback" not in refused.stderr
    assert xr.open_zarr(out / "sweep.zarr").sizes["wage"] == 21


@pytest.mark.fault('bad spec through snakemake', expect='one-line error, exit != 0, nothing written')
def test_bad_spec_stops_the_workflow_before_anything_is_written(tmp_path):
    spec = write_spec(tmp_path, dict(SMALL_MCCALL, sweep={"beta": [0.9, 1.5]}))
    result = run_snakemake(tmp_path, "--config", f"sweep={spec}", check=False)
    assert result.returncode != 0
    message = [line for line in result.stderr.splitlines() if "bad sweep spec" in line]
    assert len(message) == 1 and "sweep.beta[1]: 1.5 is out of bounds for beta (allowed: [0.0, 0.9999])" in message[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_dry_run_lists_one_shard_job_per_shard_with_resources(tmp_path, small_spec, profile):
    # No cluster is needed: Slurm's commands find no configuration, so none could reach a cluster.
    result = subprocess.run(
        [PYTHON, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"), "--profile", str(REPO / "profiles" / profile),
         "--directory", str(tmp_path), "--config", f"sweep={small_spec}"],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, SLURM_CONF="/nonexistent/slurm.conf", PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout + result.stderr
    assert text.count("rule run_shard:") == 3
    for shard in ("0000", "0001", "0002"):
        assert f"shard-{shard}.json" in text
    assert "mem_mb=" in text and "runtime=" in text
    assert not (tmp_path / "results").exists()


@pytest.mark.fault('Snakemake controller killed (SIGKILL) mid-sweep', expect='rerun finishes; no point computed twice; bitwise equal')
def test_killed_controller_resumes_only_unfinished_shards(tmp_path):
    spec = write_spec(tmp_path, dict(SMALL_MCCALL, name="mccall-kill", shards=6))
    cmd = [PYTHON, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--profile", str(REPO / "profiles" / "local"),
           "--directory", str(tmp_path), "--config", f"sweep={spec}", "--cores", "1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    deadline = time.time() + 300
    while time.time() < deadline and len(markers(tmp_path, "mccall-kill")) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the controller and its running shard die at once
    proc.wait()
    done_before = {m.name: json.loads(m.read_text()) for m in markers(tmp_path, "mccall-kill")}
    assert 2 <= len(done_before) < 6, "killed mid-sweep"

    run_snakemake(tmp_path, "--unlock", "--config", f"sweep={spec}")
    run_snakemake(tmp_path, "--config", f"sweep={spec}")
    after = {m.name: json.loads(m.read_text()) for m in markers(tmp_path, "mccall-kill")}
    assert len(after) == 6
    for name, marker in done_before.items():
        # Snakemake may rerun a job it had not yet recorded as finished when killed; the shard's
        # committed chunks are then found in the store and nothing is computed again.
        assert after[name]["start"] == marker["start"] or after[name]["computed"] == 0, f"{name} was recomputed"
    # No point was computed twice by runs that committed (the killed shard may have committed
    # chunks before it died, which its rerun then skipped).
    assert sum(m["computed"] for m in after.values()) <= 12
    ds = xr.open_zarr(tmp_path / "results" / "mccall-kill" / "sweep.zarr")
    assert ds["point_done"].all()

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    run_snakemake(fresh, "--config", f"sweep={spec}")
    ref = xr.open_zarr(fresh / "results" / "mccall-kill" / "sweep.zarr")
    for var in ref.data_vars:
        np.testing.assert_array_equal(ds[var].values, ref[var].values, err_msg=var)
