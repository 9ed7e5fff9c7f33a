"""The Failures section: every point the model raised for, that did not converge or that is not
finite, with its parameters, diagnostics, non-finite outputs, shard and the model's error; the
errors the shard markers record; and how many points are not computed yet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hpc.report.render import Table
from hpc.report.sweep_data import Sweep

FAILED_ROWS = 500  # failed points listed one by one; the rest are counted
DIAGNOSTICS = ("iterations", "error", "converged")


@dataclass
class Failures:
    name: str
    failed: int  # computed points that failed, did not converge or are not finite
    listed: int  # of them, listed in ``points``
    points: Table
    errors: Table
    not_done: int


def shard_errors(sweep: Sweep) -> list[dict]:
    """The model's errors recorded in the shard markers: shard, static values and message."""
    return [dict(item, shard=record["shard"]) for record in sweep.shards for item in record.get("errors") or []]


def _point_parameters(sweep: Sweep, where: dict[str, int]) -> dict[str, Any]:
    """Every parameter's value at a grid point: the fixed ones, then the swept ones."""
    values = dict(sweep.spec.get("fixed", {}))
    for a in sweep.axes:
        for p, vals in a.values.items():
            values[p] = vals[where[a.name]]
    return values


def _error_for(errors: list[dict], shard: int, params: dict[str, Any]) -> str:
    for item in errors:
        if item["shard"] == shard and all(params.get(k) == v for k, v in (item.get("static") or {}).items()):
            return item.get("error", "")
    return ""


def _points_indexer(values: np.ndarray):
    import xarray as xr

    return xr.DataArray(values, dims="failed_point")


def failed_points(sweep: Sweep, errors: list[dict]) -> Table:
    """The failed points (up to FAILED_ROWS): parameters, diagnostics, non-finite outputs, shard
    and, where the model raised for some, its error."""
    idx = np.argwhere(sweep.failed)[:FAILED_ROWS]
    float_outputs = [o.name for o in sweep.model.outputs if o.dtype == "float" and o.name in sweep.ds]
    nonfinite = {}
    for name in float_outputs:
        picked = sweep.ds[name].isel({d: _points_indexer(idx[:, k]) for k, d in enumerate(sweep.dims)})
        picked = np.asarray(picked.transpose("failed_point", ...).values, float).reshape(len(idx), -1)
        nonfinite[name] = ~np.isfinite(picked).all(axis=1)
    where_idx = tuple(idx.T)
    diag = {name: sweep.values(name)[where_idx] for name in DIAGNOSTICS if name in sweep.ds}
    raised = sweep.raised[where_idx]
    shard = sweep.values("shard_index")[where_idx]
    rows = []
    for r, point in enumerate(idx):
        where = dict(zip(sweep.dims, map(int, point)))
        row = sweep.parameter_values(where)
        if raised[r]:
            row += [""] * len(diag) + ["all (fill values)"]
        else:
            row += [diag[k][r] for k in diag]
            row.append(", ".join(name for name in float_outputs if nonfinite[name][r]) or "none")
        row.append(int(shard[r]))
        if raised.any():
            row.append(_error_for(errors, int(shard[r]), _point_parameters(sweep, where)) if raised[r] else "")
        rows.append(row)
    columns = sweep.parameters + list(diag) + ["non-finite outputs", "shard"] + (["model error"] if raised.any() else [])
    return Table(columns, rows, id="failed-points", css="wide")


def failures_section(sweep: Sweep) -> Failures:
    n = int(sweep.failed.sum())
    errors = shard_errors(sweep)
    error_rows = [[e["shard"], ", ".join(f"{k}={v}" for k, v in (e.get("static") or {}).items()), e.get("error", "")]
                  for e in errors]
    return Failures(
        name=sweep.name,
        failed=n,
        listed=min(n, FAILED_ROWS),
        points=failed_points(sweep, errors) if n else Table([], id="failed-points"),
        errors=Table(["shard", "static values", "error"], error_rows, id="model-errors"),
        not_done=int((~sweep.done).sum()),
    )
