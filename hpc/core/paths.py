"""Every path under the results root: nobody else builds these.

For a sweep or training run named NAME under the results root (``HPC_RESULTS``, default
``results``, relative to the working directory)::

    results/NAME/plan.json              the plan (grid, chunks, shard assignment)
    results/NAME/sweep.zarr             the Zarr v3 store every shard writes into
    results/NAME/shards/shard-0003.json completion marker of shard 3 (written last, atomically)
    results/NAME/logs/shard-0003.log    shard 3's job log (stderr)
    results/NAME/aggregate.json         written once every shard is committed
    results/NAME/train.zarr             a training run's per-step and held-out metrics
    results/NAME/checkpoints/           its orbax checkpoints, one directory per step
    results/NAME/train.json             its completion marker
    results/NAME/logs/train.log         its job log
    results/NAME/report.html            the report (sweep or training run, or sweep of training runs)
    results/NAME/points/p003/           point 3 of a sweep of training runs: an ordinary training
                                        run named NAME/points/p003 (train.zarr, checkpoints, ...)
    results/NAME/train-sweep.json       that sweep's points (settings, digests), for hpc status/report
    results/.jax-cache/                 compiled programs (hpc.execution.compile_cache)
"""

from __future__ import annotations

import os
from pathlib import Path

RESULTS_ROOT = Path(os.environ.get("HPC_RESULTS", "results"))


def run_dir(name: str, root: Path | None = None) -> Path:
    """The folder of one sweep or training run."""
    return Path(root or RESULTS_ROOT) / name


sweep_dir = run_dir


def plan_path(name: str, root: Path | None = None) -> Path:
    return run_dir(name, root) / "plan.json"


def root_of_plan(plan_file: str | Path) -> Path:
    """The results root a plan file lives under (ROOT/NAME/plan.json)."""
    return Path(plan_file).resolve().parent.parent


def store_path(name: str, root: Path | None = None) -> Path:
    return run_dir(name, root) / "sweep.zarr"


def marker_path(name: str, shard: int, root: Path | None = None) -> Path:
    """Shard ``shard``'s completion marker."""
    return run_dir(name, root) / "shards" / f"shard-{shard:04d}.json"


def shard_log_path(name: str, shard: int, root: Path | None = None) -> Path:
    """Where workflow/rules/sweep.smk sends a shard job's stderr."""
    return run_dir(name, root) / "logs" / f"shard-{shard:04d}.log"


def aggregate_path(name: str, root: Path | None = None) -> Path:
    return run_dir(name, root) / "aggregate.json"


def report_path(name: str, root: Path | None = None) -> Path:
    return run_dir(name, root) / "report.html"


def train_store_path(name: str, root: Path | None = None) -> Path:
    return run_dir(name, root) / "train.zarr"


def checkpoint_dir(name: str, root: Path | None = None) -> Path:
    return run_dir(name, root) / "checkpoints"


def train_marker_path(name: str, root: Path | None = None) -> Path:
    return run_dir(name, root) / "train.json"


def train_log_path(name: str, root: Path | None = None) -> Path:
    return run_dir(name, root) / "logs" / "train.log"


def root_of_marker(marker: str | Path, name: str = "") -> Path:
    """The results root a training marker lives under (ROOT/NAME/train.json; NAME may have parts,
    as a point of a sweep of training runs has: ROOT/NAME/points/p003/train.json)."""
    root = Path(marker).resolve().parent.parent
    for _ in range(name.count("/")):
        root = root.parent
    return root


def train_point_name(name: str, point: str) -> str:
    """The run name of point ``point`` (p003) of the sweep of training runs ``name``: its folder is
    results/NAME/points/POINT (hpc.train.sweep)."""
    return f"{name}/points/{point}"


def train_sweep_path(name: str, root: Path | None = None) -> Path:
    """The record of a sweep of training runs' points (hpc.train.sweep.write_points)."""
    return run_dir(name, root) / "train-sweep.json"
