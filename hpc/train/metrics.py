"""results/NAME/train.zarr: what a training run measured, step by step (process 0 writes it).

Dimensions ``step`` (1..steps: the state after that many updates) and ``eval_step`` (0, every
``eval_every`` steps, and the last step). Per step: ``loss`` (the batch's mean squared error on
standardized targets), ``learning_rate``, ``step_time`` (seconds; the mean over the block of at
most 32 steps between two host syncs) and ``samples_per_second`` (global batch / step time).
Per evaluation: ``heldout_rmse`` and ``heldout_max_error`` (model units, on held-out parameter
points), ``heldout_loss`` (standardized, comparable with ``loss``), ``train_rmse`` and
``train_max_error`` (on a fixed sample of training rows). Attributes: the spec (``spec``,
``spec_text``, ``digest``), the data (inputs, target, units, points), the normalization, the
layout, one record per attempt (``segments``: steps run, why it stopped) and, once finished, the
final held-out errors and the cost of a surrogate evaluation against a model solve.

A resumed run rewrites the rows after its checkpoint with the same values (the data order and the
arithmetic are the same); only timings differ.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import zarr

from hpc.core import paths, zarrio
from hpc.core.timefmt import now_iso
from hpc.sweep import store

STEP_VARS = {
    "loss": "mean squared error of the batch (standardized targets)",
    "learning_rate": "learning rate used at the step",
    "step_time": "seconds per step (mean over the steps between two host syncs)",
    "samples_per_second": "training samples per second at the step (global batch / step time)",
}
EVAL_VARS = {
    "heldout_rmse": "root mean squared error on held-out parameter points",
    "heldout_max_error": "largest absolute error on held-out parameter points",
    "heldout_loss": "mean squared error on held-out points (standardized targets)",
    "train_rmse": "root mean squared error on a sample of training rows",
    "train_max_error": "largest absolute error on a sample of training rows",
}
STEP_CHUNK = 65536


def eval_steps(steps: int, every: int) -> np.ndarray:
    return np.unique(np.r_[np.arange(0, steps + 1, every), steps]).astype(np.int64)


def check_not_another_run(spec, root: Path | None = None) -> None:
    """Refuse early a spec whose name holds a training run made from another spec."""
    zarrio.refuse_other_digest(paths.train_store_path(spec.name, root), spec.digest(), "training run")


def open_or_create(path: Path, spec, units: str, attrs: dict) -> zarr.Group:
    """The run's train.zarr: created on the first attempt, reopened (same digest) on a resume."""
    path = Path(path)
    if zarrio.refuse_other_digest(path, spec.digest(), "training run"):
        return zarr.open_group(str(path), mode="r+", zarr_format=3)
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    steps = spec.steps
    zarrio.create_array(group, "step", np.arange(1, steps + 1, dtype=np.int64), dims=["step"],
                        attrs={"long_name": "updates done"})
    for name, doc in STEP_VARS.items():
        unit = {"step_time": "s", "samples_per_second": "1/s"}.get(name, "")
        zarrio.create_array(group, name, shape=(steps,), dtype=_dtype(name), chunks=(min(steps, STEP_CHUNK),),
                            dims=["step"], attrs={"long_name": doc, "units": unit})
    evals = eval_steps(steps, spec.eval_every)
    zarrio.create_array(group, "eval_step", evals, dims=["eval_step"],
                        attrs={"long_name": "updates done at the evaluation"})
    for name, doc in EVAL_VARS.items():
        unit = "" if name == "heldout_loss" else units
        zarrio.create_array(group, name, shape=(len(evals),), dtype=_dtype(name), dims=["eval_step"],
                            attrs={"long_name": doc, "units": unit})
    group.attrs.update({
        "title": f"training run {spec.name}",
        "kind": "train",
        "name": spec.name,
        "digest": spec.digest(),
        "spec": json.dumps(spec.as_dict()),
        "spec_text": spec.text,
        "git_commit": store.git_commit(),
        "versions": _versions(),
        "created": now_iso(),
        "segments": [],
        **attrs,
    })
    return group


def _versions() -> dict:
    import importlib.metadata

    versions = store.package_versions()
    for name in ("flax", "optax", "orbax-checkpoint"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _dtype(name: str) -> np.dtype:
    """Timings in float64; losses and errors in float32, as the network computes them."""
    return np.dtype(np.float64 if name in ("step_time", "samples_per_second") else np.float32)


def write_steps(group: zarr.Group, first_step: int, rows: dict[str, np.ndarray]) -> None:
    """Rows for steps first_step, first_step + 1, ... (1-based)."""
    for name, values in rows.items():
        if len(values):
            group[name][first_step - 1:first_step - 1 + len(values)] = values


def write_eval(group: zarr.Group, step: int, values: dict[str, float]) -> None:
    index = int(np.searchsorted(group["eval_step"][...], step))
    for name, value in values.items():
        group[name][index] = value


def finalize(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(str(path))
