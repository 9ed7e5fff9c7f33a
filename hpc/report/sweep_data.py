"""What the report reads of a sweep: its store as a Dataset, its model, its axes, its plan and
the record of every shard, and how a point of the grid is named.

The axes are the sweep's own (``hpc.sweep.spec.Axis``), rebuilt from the normalized spec the
store records in ``attrs["spec"]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpc.core import paths, zarrio
from hpc.models import get_model
from hpc.report.formatting import fmt, label
from hpc.sweep import store
from hpc.sweep.plan import read_plan
from hpc.sweep.spec import Axis


def open_sweep(name: str, root: Path | None = None):
    """The sweep's store as an xarray Dataset (use ``point_done`` to mask points not committed)."""
    return zarrio.open_dataset(paths.store_path(name, root))


def axes_from_normalized(spec: dict) -> list[Axis]:
    """The sweep's axes from its normalized spec (``Spec.normalized()``, as the store records it)."""
    return [Axis(a["name"], {p: tuple(v) for p, v in a["values"].items()}, a["kind"]) for a in spec["axes"]]


@dataclass
class Sweep:
    """What the report reads: the dataset, its model, its normalized spec and axes, the plan
    (None when no plan file of this spec is beside the store) and the shard records."""

    name: str
    root: Path | None
    ds: Any
    model: Any
    spec: dict
    axes: list[Axis]
    plan: Any = None
    shards: list[dict] = field(default_factory=list)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def dims(self) -> list[str]:
        return list(self.ds["point_done"].dims)

    @property
    def parameters(self) -> list[str]:
        """Every swept parameter, in the order of the axes."""
        return [p for a in self.axes for p in a.parameters]

    def axis(self, dim: str) -> Axis | None:
        return next((a for a in self.axes if a.name == dim), None)

    def values(self, var: str) -> np.ndarray:
        """A variable over the sweep grid, read once (these are one value per point)."""
        if var not in self._cache:
            self._cache[var] = np.asarray(self.ds[var].values)
        return self._cache[var]

    @property
    def done(self) -> np.ndarray:
        return self.values("point_done").astype(bool)

    def flag(self, var: str) -> np.ndarray:
        """A boolean status variable over the grid (True where absent)."""
        if var not in self.ds:
            return np.ones(self.done.shape, bool)
        return self.values(var).astype(bool)

    @property
    def raised(self) -> np.ndarray:
        """Committed points the model raised for (stored with fill values)."""
        if "failed" not in self.ds:
            return np.zeros(self.done.shape, bool)
        return self.done & self.values("failed").astype(bool)

    @property
    def failed(self) -> np.ndarray:
        """Committed points the model raised for, that did not converge or that are not finite."""
        return self.done & (self.raised | ~(self.flag("finite") & self.flag("converged")))

    def problem(self, index: tuple[int, ...]) -> str:
        """What went wrong at a point, in a few words ("" when nothing did)."""
        if self.raised[index]:
            return "the model raised"
        words = [w for w, bad in (("not converged", not self.flag("converged")[index]),
                                  ("not finite", not self.flag("finite")[index])) if bad]
        return ", ".join(words)

    def scalar_outputs(self) -> list:
        sweep_dims = set(self.dims)
        return [o for o in self.model.outputs if o.name in self.ds and set(self.ds[o.name].dims) == sweep_dims]

    def array_outputs(self) -> list:
        sweep_dims = set(self.dims)
        return [o for o in self.model.outputs if o.name in self.ds and set(self.ds[o.name].dims) > sweep_dims]

    # ----------------------------------------------------------------------------------------
    # Naming points of the grid

    def parameter_values(self, point: dict[str, int]) -> list:
        """The swept parameters' values at a grid point, in the order of ``parameters``."""
        return [np.asarray(self.ds[p].values)[point[a.name]] for a in self.axes for p in a.parameters]

    def coordinate(self, dim: str) -> tuple[np.ndarray, str]:
        """The values to plot a sweep dimension against, and its axis label.

        A plain dimension plots against its parameter's values; a zipped one against its first
        parameter; a sampled one against its point index.
        """
        axis = self.axis(dim)
        if axis is None or axis.kind == "values":
            pname = dim
        elif axis.kind == "zip":
            pname = axis.parameters[0]
        else:
            return np.arange(self.ds.sizes[dim]), f"{dim} (point index)"
        values = np.asarray(self.ds[pname].values)
        return values, label(pname, self.ds[pname].attrs.get("units", ""))

    def coord_text(self, dim: str, index: int) -> str:
        """``beta=0.95``: the value(s) of a dimension's parameter(s) at ``index``."""
        axis = self.axis(dim)
        if axis is None or axis.kind == "values":
            return f"{dim}={fmt(np.asarray(self.ds[dim].values)[index])}"
        return ", ".join(f"{p}={fmt(np.asarray(self.ds[p].values)[index])}" for p in axis.parameters)

    def point_text(self, point: dict[str, int]) -> str:
        """A grid point named by the dimensions that vary."""
        return ", ".join(self.coord_text(d, i) for d, i in point.items() if self.ds.sizes[d] > 1) or "the point"

    def flat_point_text(self, flat_index: int) -> str:
        index = np.unravel_index(flat_index, self.done.shape)
        return self.point_text(dict(zip(self.dims, map(int, index))))


def load_sweep(name: str, root: Path | None = None) -> Sweep:
    ds = open_sweep(name, root)
    model = get_model(ds.attrs["model"])
    spec = json.loads(ds.attrs["spec"])
    plan = None
    path = paths.plan_path(name, root)
    if path.exists():
        plan = read_plan(path)
        if plan.digest != ds.attrs.get("digest"):
            plan = None  # a plan file of another spec: the store alone speaks
    return Sweep(name, root, ds, model, spec, axes_from_normalized(spec), plan, shard_records(name, root, ds, plan))


def shard_records(name: str, root: Path | None, ds, plan) -> list[dict]:
    """Per-shard execution: the store's shard records (written at aggregation, read by
    ``hpc.sweep.store.read_shard_records``), completed by the markers of this plan where they
    are still on disk (they hold per-process detail).

    A record holds what hpc.sweep.runner's ``merge_summaries`` writes: shard, host, start, end,
    duration_s, points, computed, processes, devices, failed, not_converged, non_finite,
    errors, job_id (SLURM_JOB_ID, None outside Slurm), slurm_restart_count and per_process.
    """
    records = {int(s["shard"]): dict(s) for s in store.read_shard_records(paths.store_path(name, root))}
    if plan is not None:
        for shard, marker in store.valid_markers(plan, root).items():
            records[shard] = {**records.get(shard, {}), **marker}
    return [records[s] for s in sorted(records)]


def slurm_restarts(record: dict) -> int:
    """How often Slurm requeued and restarted the job that committed the shard (SLURM_RESTART_COUNT)."""
    return int(record.get("slurm_restart_count") or 0)


def resumed(record: dict) -> bool:
    """The shard's last job computed only some of its points: an earlier one had committed chunks."""
    return record.get("computed") is not None and bool(record.get("points")) and record["computed"] < record["points"]
