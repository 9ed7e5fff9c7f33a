"""Where a training run's files live (nobody else builds these paths).

For a training run named NAME under the results root:

    results/NAME/train.zarr        per-step loss, throughput, step time; held-out metrics per evaluation
    results/NAME/checkpoints/      orbax checkpoints, one directory per step (only finished ones)
    results/NAME/train.json        completion marker: final metrics, written last, atomically
    results/NAME/logs/train.log    the job's log
    results/NAME/report.html       the report
"""

from __future__ import annotations

from pathlib import Path

from hpc import store


def run_dir(name: str, root: Path | None = None) -> Path:
    return store.sweep_dir(name, root)


def train_store_path(name: str, root: Path | None = None) -> Path:
    return run_dir(name, root) / "train.zarr"


def checkpoint_dir(name: str, root: Path | None = None) -> Path:
    return run_dir(name, root) / "checkpoints"


def marker_path(name: str, root: Path | None = None) -> Path:
    return run_dir(name, root) / "train.json"


def log_path(name: str, root: Path | None = None) -> Path:
    return run_dir(name, root) / "logs" / "train.log"


def report_path(name: str, root: Path | None = None) -> Path:
    return store.report_path(name, root)


def root_of_marker(marker: str | Path) -> Path:
    """The results root a marker lives under (ROOT/NAME/train.json)."""
    return Path(marker).resolve().parent.parent
