"""The example of docs/models.md end to end: Brock-Mirman growth from docs/examples/growth/ (a
model file beside its spec, named relative to it), through Snakemake with the local profile,
checked against the model's closed form k' = alpha beta A k^alpha."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import xarray as xr
import yaml
from conftest import REPO, run_snakemake

EXAMPLE = REPO / "docs" / "examples" / "growth"


@pytest.mark.slow
def test_the_growth_example_runs_end_to_end_and_matches_the_closed_form(tmp_path):
    spec = EXAMPLE / "sweep.yaml"
    name = yaml.safe_load(spec.read_text())["name"]
    run_snakemake(tmp_path, "--config", f"sweep={spec}")  # from another folder: model.py is the spec's neighbour
    out = tmp_path / "results" / name
    ds = xr.open_zarr(out / "sweep.zarr")
    sha = hashlib.sha256((EXAMPLE / "model.py").read_bytes()).hexdigest()
    assert ds.attrs["model"] == f"{EXAMPLE / 'model.py'}:MODEL" and ds.attrs["model_source"]["sha256"] == sha
    assert ds["point_done"].all() and ds["converged"].all() and ds["finite"].all()

    k = ds["capital"].values
    step = k[1] - k[0]  # k' is chosen on the grid: the closed form's k' is at most one grid step away
    A = 1.0  # the model's default, not swept
    for alpha in ds["alpha"].values:
        for beta in ds["beta"].values:
            point = ds.sel(alpha=alpha, beta=beta)
            exact = alpha * beta * A * k ** alpha
            policy = point["capital_policy"].values.astype(float)
            assert np.abs(policy - exact).max() <= step, (alpha, beta)
            np.testing.assert_allclose(point["consumption"].values, A * k ** alpha - policy, rtol=1e-5)
            # Choices restricted to the grid cannot beat the true optimum: v <= v* (up to the
            # tolerance's bound beta tol / (1 - beta) and float32 rounding of |v| ~ 30).
            a1 = alpha / (1 - alpha * beta)
            a0 = (np.log(A * (1 - alpha * beta)) + alpha * beta / (1 - alpha * beta) * np.log(alpha * beta * A)) / (1 - beta)
            bound = beta * 1e-5 / (1 - beta) + 1e-5 * np.abs(a0 + a1 * np.log(k))
            assert (point["value"].values <= a0 + a1 * np.log(k) + bound).all(), (alpha, beta)

    page = (out / "report.html").read_text()
    assert f"{EXAMPLE / 'model.py'}:MODEL, sha256 {sha}" in page  # the report names the file and its hash
