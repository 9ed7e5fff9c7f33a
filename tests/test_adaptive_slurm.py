"""An adaptive sweep's round on the emulated Slurm cluster: its shard job runs on a node through
profiles/slurm and gives bitwise the results of the same round's plan run locally."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from conftest import cluster_test, run_hpc, run_snakemake, write_spec
from test_adaptive import BASE, reservation_wage

from hpc.core import paths
from hpc.sweep import adaptive

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
