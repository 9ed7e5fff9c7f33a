"""Shared by the training tests: a small McCall sweep's store (made once per session) and specs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import xarray as xr
from conftest import run_snakemake, write_spec

from hpc.train.checkpoint import load_state

# 80 (c, β) points × 21 wages: 1,680 rows of v(w; c, β).
MCCALL_DATA = {
    "name": "mc-data",
    "model": "mccall",
    "params": {"n_wages": 21, "tol": 1.0e-6},
    "sweep": {"c": {"linspace": [10, 30, 10]}, "beta": {"linspace": [0.90, 0.97, 8]}},
    "shards": 1,
}

# A small surrogate: trains in a few seconds on one CPU process.
MCCALL_SURROGATE = {
    "name": "mc-surr",
    "data": {"sweep": "sweep.yaml", "inputs": ["c", "beta", "wage"], "target": "value", "holdout": 0.2},
    "network": {"kind": "mlp", "width": 32, "depth": 2, "activation": "tanh"},
    "optimizer": {"name": "adam", "learning_rate": 1.0e-2,
                  "schedule": {"kind": "cosine", "warmup_steps": 20, "end_factor": 0.05}},
    "batch_size": 64,
    "steps": 1000,
    "eval_every": 100,
    "checkpoint_every": 100,
    "seed": 0,
}

# The surrogate must reach this held-out RMSE, as a share of the held-out targets' standard
# deviation (about 460 value units here; values run from about 100 to 2,000).
HELDOUT_RMSE_BOUND = 0.06
# 1 process against 4 (2 devices against 4 and 1 ...): the same batches, gradients summed in
# another order, so per-step losses agree to float32 rounding that grows slowly over the run.
LOSS_RTOL = 1e-3


_STORES: dict[str, Path] = {}


def mccall_store(tmp_path_factory) -> Path:
    """A workdir holding the finished sweep (results/mc-data) and its spec (sweep.yaml); made once."""
    if "mccall" not in _STORES:
        workdir = tmp_path_factory.mktemp("mc-data")
        spec = write_spec(workdir, MCCALL_DATA, "sweep.yaml")
        run_snakemake(workdir, "results/mc-data/aggregate.json", "--config", f"sweep={spec}")
        _STORES["mccall"] = workdir
    return _STORES["mccall"]


def workdir_with_store(store_dir: Path, workdir: Path, train: dict, filename: str = "train.yaml") -> Path:
    """``workdir`` with a copy of the finished sweep and the training spec; returns the spec's path."""
    shutil.copy2(store_dir / "sweep.yaml", workdir / "sweep.yaml")  # its time too: the sweep is up to date
    if not (workdir / "results" / "mc-data").exists():
        shutil.copytree(store_dir / "results" / "mc-data", workdir / "results" / "mc-data")
    return write_spec(workdir, train, filename)


def open_run(workdir, name="mc-surr") -> xr.Dataset:
    return xr.open_zarr(workdir / "results" / name / "train.zarr", consolidated=False).load()


def final_params(workdir, name="mc-surr"):
    state, meta = load_state(workdir / "results" / name / "checkpoints")
    return state["params"], meta


def assert_same_params(a, b) -> None:
    import jax

    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(x, y)
