"""The report of a sweep or training run: one self-contained HTML file built from the store alone.

``build_report(NAME)`` reads ``results/NAME/sweep.zarr`` (with ``plan.json`` and the shard markers
beside it when present) and ``results/NAME/train.zarr`` when a training run wrote one, and returns
one HTML page with every figure embedded as a PNG ``data:`` URI: no script, no external resource,
so it opens offline and in any browser. Sections:

- Summary: the spec as written, the model, point counts (converged, not converged, non-finite),
  compute and wall time, throughput, hosts and devices, git commit and package versions.
- Results: every scalar output over the sweep (a line over one dimension, a heat map over two,
  small multiples of heat maps beyond two), every array output (a policy or value function) at
  the corners and the centre of the grid, summary statistics, and the model's own section
  (``Model.report_section``) when it declares one.
- Failures: every point that did not converge or is not finite, with its parameters and
  diagnostics.
- Execution: a timeline of the shards across hosts, per-shard duration and throughput, resumed
  and retried shards, and the plan (``plan.json``) against what ran (the markers).
- Training: every 1-D per-step variable of ``train.zarr`` as a curve, with checkpoint and resume
  events marked (see ``training_section`` for what is recognized).

Every figure has a title, labelled axes (with units where the model declares them) and a caption.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import LogNorm, Normalize

from hpc.core import paths, zarrio
from hpc.core.files import write_atomic
from hpc.models import get_model
from hpc.sweep import store
from hpc.sweep.plan import read_plan

FAILED_ROWS = 500  # failed points listed one by one; the rest are counted
GRID_ROWS = 200  # points listed in the table of every point
PANELS = 6  # small multiples at most per figure
CURVES = 5  # lines per panel for a second model dimension
DIAGNOSTIC_NAMES = ("iterations", "error", "converged")
TRAIN_STORE = "train.zarr"


# --------------------------------------------------------------------------------------------
# Reading the store


def open_sweep(name: str, root: Path | None = None):
    """The sweep's store as an xarray Dataset (use ``point_done`` to mask points not committed)."""
    return zarrio.open_dataset(paths.store_path(name, root))


def train_store_path(name: str, root: Path | None = None) -> Path:
    # The training pipeline writes results/NAME/train.zarr beside a sweep's files.
    return paths.sweep_dir(name, root) / TRAIN_STORE


@dataclass
class SweepAxis:
    """One sweep dimension: its name, its kind (values, zip, sample) and the parameters along it."""

    name: str
    kind: str
    params: dict[str, list]

    @property
    def size(self) -> int:
        return len(next(iter(self.params.values())))


def sweep_axes(ds) -> list[SweepAxis]:
    spec = json.loads(ds.attrs.get("spec", "{}"))
    axes = [SweepAxis(a["name"], a["kind"], a["values"]) for a in spec.get("axes", [])]
    if not axes:  # a store without the normalized spec: every dimension of point_done is a plain one
        axes = [SweepAxis(d, "values", {d: ds[d].values.tolist()}) for d in ds["point_done"].dims]
    return axes


@dataclass
class Sweep:
    """What the report reads: the dataset, its model, the plan and the shard records."""

    name: str
    root: Path | None
    ds: Any
    model: Any
    axes: list[SweepAxis]
    plan: Any = None
    shards: list[dict] = field(default_factory=list)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def dims(self) -> list[str]:
        return list(self.ds["point_done"].dims)

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


def load_sweep(name: str, root: Path | None = None) -> Sweep:
    ds = open_sweep(name, root)
    model = get_model(ds.attrs["model"])
    plan = None
    path = paths.plan_path(name, root)
    if path.exists():
        plan = read_plan(path)
        if plan.digest != ds.attrs.get("digest"):
            plan = None  # a plan file of another spec: the store alone speaks
    return Sweep(name, root, ds, model, sweep_axes(ds), plan, shard_records(name, root, ds, plan))


def shard_records(name: str, root: Path | None, ds, plan) -> list[dict]:
    """Per-shard execution: the store's attrs["shards"] (written at aggregation), completed by
    the markers of this plan where they are still on disk (they hold per-process detail)."""
    records = {int(s["shard"]): dict(s) for s in ds.attrs.get("shards", []) or []}
    if plan is not None:
        for shard, marker in store.valid_markers(plan, root).items():
            records[shard] = {**records.get(shard, {}), **marker}
    return [records[s] for s in sorted(records)]


# --------------------------------------------------------------------------------------------
# Formatting


def esc(value: Any) -> str:
    return html.escape(str(value))


def fmt(value: Any) -> str:
    """A number or value as a table shows it."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, np.integer):
        return str(int(value))
    return esc(value)


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None or not np.isfinite(seconds):
        return "unknown"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def fmt_time(epoch: float | None) -> str:
    if epoch is None:
        return "unknown"
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _cell(value: Any) -> str:
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    return f"<td class='num'>{fmt(value)}</td>" if numeric else f"<td>{fmt(value)}</td>"


def table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def key_values(pairs: list[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f"<table class='kv'>{rows}</table>"


def label(name: str, units: str = "") -> str:
    return f"{name} [{units}]" if units else name


class Figures:
    """Numbers the report's figures and embeds each one as a PNG ``data:`` URI."""

    def __init__(self):
        self.count = 0

    def add(self, fig, caption: str) -> str:
        import matplotlib.pyplot as plt

        self.count += 1
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        data = base64.b64encode(buf.getvalue()).decode()
        title = fig.get_suptitle() or (fig.axes[0].get_title() if fig.axes else "")
        return (f"<figure id='fig{self.count}'><img src='data:image/png;base64,{data}' alt='{esc(title)}'>"
                f"<figcaption><b>Figure {self.count}.</b> {esc(caption)}</figcaption></figure>")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------------------------
# Sweep axes as plot axes


def _is_numeric(values: np.ndarray) -> bool:
    return values.dtype.kind in "iuf" and values.size > 0 and bool(np.all(np.isfinite(values)))


def _is_geometric(values: np.ndarray) -> bool:
    if values.size < 3 or np.any(values <= 0):
        return False
    ratios = values[1:] / values[:-1]
    steps = np.diff(values)
    return bool(np.allclose(ratios, ratios[0], rtol=1e-6) and not np.allclose(steps, steps[0], rtol=1e-6))


def axis_coordinate(sweep: Sweep, dim: str) -> tuple[np.ndarray, str]:
    """The values to plot a sweep dimension against, and its axis label.

    A plain dimension plots against its parameter's values; a zipped one against its first
    parameter; a sampled one against its point index.
    """
    axis = next((a for a in sweep.axes if a.name == dim), None)
    if axis is None or axis.kind == "values":
        pname = dim
    elif axis.kind == "zip":
        pname = next(iter(axis.params))
    else:
        return np.arange(sweep.ds.sizes[dim]), f"{dim} (point index)"
    values = np.asarray(sweep.ds[pname].values)
    units = sweep.ds[pname].attrs.get("units", "")
    return values, label(pname, units)


def _is_even(values: np.ndarray) -> bool:
    steps = np.diff(values.astype(float))
    return bool(steps.size and np.allclose(steps, steps[0], rtol=1e-6, atol=0) and steps[0] != 0)


def _set_grid_axis(ax, which: str, values: np.ndarray, text: str) -> np.ndarray:
    """Place grid cells along ``which`` ('x' or 'y') and return their edges: at the values when
    they are evenly spaced, on a log scale when geometrically spaced, else one equal cell per
    value with the values as tick labels (a list like [0.9, 0.99, 0.995] stays legible)."""
    (ax.set_xlabel if which == "x" else ax.set_ylabel)(text)
    n = len(values)
    if _is_numeric(values) and n > 1 and (_is_even(values) or _is_geometric(values)):
        v = values.astype(float)
        if _is_geometric(v):
            (ax.set_xscale if which == "x" else ax.set_yscale)("log")
            lv = np.log(v)
            mids = np.exp((lv[1:] + lv[:-1]) / 2)
            return np.concatenate([[v[0] ** 2 / mids[0]], mids, [v[-1] ** 2 / mids[-1]]])
        mids = (v[1:] + v[:-1]) / 2
        return np.concatenate([[2 * v[0] - mids[0]], mids, [2 * v[-1] - mids[-1]]])
    positions = np.arange(n)
    ticks = positions[:: max(1, math.ceil(n / 10))]
    (ax.set_xticks if which == "x" else ax.set_yticks)(ticks)
    (ax.set_xticklabels if which == "x" else ax.set_yticklabels)([fmt(values[i]) for i in ticks],
                                                                  rotation=45 if which == "x" else 0)
    return np.arange(n + 1) - 0.5


def _color_norm(values: np.ndarray):
    """A log colour scale for positive values spanning more than three decades (e.g. solver errors)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Normalize(0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    if lo > 0 and hi / lo > 1e3:
        return LogNorm(lo, hi)
    return Normalize(lo, hi if hi > lo else lo + 1.0)


def _cell_centres(edges: np.ndarray) -> np.ndarray:
    return (edges[1:] + edges[:-1]) / 2


def evenly(n: int, k: int) -> list[int]:
    """Up to ``k`` indices spread over range(n), both ends included."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


def _coord_text(sweep: Sweep, dim: str, index: int) -> str:
    axis = next((a for a in sweep.axes if a.name == dim), None)
    if axis is None or axis.kind == "values":
        return f"{dim}={fmt(np.asarray(sweep.ds[dim].values)[index])}"
    return ", ".join(f"{p}={fmt(np.asarray(sweep.ds[p].values)[index])}" for p in axis.params)


# --------------------------------------------------------------------------------------------
# Results: scalar outputs


def _plot_layout(sweep: Sweep) -> tuple[list[str], list[str], dict[str, int]]:
    """How to draw a scalar over the grid: (plotted dims, panel dims, fixed dims -> index).

    Dimensions of length one are fixed. Of the others, the two longest are drawn (the first in
    spec order down the y axis, the second along x), the next longest gives the panels, and any
    further one is fixed at its middle value.
    """
    sizes = sweep.ds["point_done"].sizes
    varying = [d for d in sweep.dims if sizes[d] > 1]
    by_size = sorted(varying, key=lambda d: (-sizes[d], sweep.dims.index(d)))
    plotted = sorted(by_size[:2], key=sweep.dims.index)
    panels = by_size[2:3]
    fixed = {d: (sizes[d] // 2 if d in by_size[3:] else 0) for d in sweep.dims if d not in plotted + panels}
    return plotted, panels, fixed


def scalar_figure(sweep: Sweep, out, figures: Figures) -> str:
    """The figure of one scalar output over the sweep (line, heat map or small multiples)."""
    plt = _pyplot()
    da = sweep.ds[out.name]
    values = np.where(sweep.done, sweep.values(out.name).astype(float), np.nan)
    failed = sweep.failed
    units = da.attrs.get("units", "") or out.unit
    what = label(out.name, units)
    plotted, panels, fixed = _plot_layout(sweep)
    fixed_text = "; ".join(_coord_text(sweep, d, i) for d, i in fixed.items() if sweep.ds.sizes[d] > 1)
    fixed_note = f" Other dimensions fixed at {fixed_text}." if fixed_text else ""
    order = sweep.dims
    title = f"{out.name} over the sweep"

    def take(index: dict[str, int], array: np.ndarray) -> np.ndarray:
        sl = tuple(index.get(d, slice(None)) for d in order)
        sub = array[sl]
        kept = [d for d in order if d not in index]
        return np.transpose(sub, [kept.index(d) for d in plotted]) if len(plotted) > 1 else sub

    if not plotted:
        return ""
    if len(plotted) == 1:
        dim = plotted[0]
        x, xlabel = axis_coordinate(sweep, dim)
        y, bad = take(fixed, values), take(fixed, failed)
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        numeric = _is_numeric(x)
        xs = x.astype(float) if numeric else np.arange(len(x))
        orderx = np.argsort(xs, kind="stable")
        ax.plot(xs[orderx], y[orderx], marker="o", markersize=3, label=out.name)
        if bad.any():
            ax.plot(xs[bad], y[bad], "x", color="red", markersize=8, label="failed, not converged or not finite")
            ax.legend(fontsize=8)
        if numeric and _is_geometric(np.sort(xs)):
            ax.set_xscale("log")
        if isinstance(_color_norm(y), LogNorm):
            ax.set_yscale("log")
        if not numeric:
            ax.set_xticks(xs)
            ax.set_xticklabels([fmt(v) for v in x], rotation=45)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(what)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        caption = (f"{out.name} ({out.doc or 'model output'}) against {xlabel}."
                   + (" Red crosses mark points that failed, did not converge or are not finite." if bad.any() else "")
                   + fixed_note)
        return figures.add(fig, caption)

    ydim, xdim = plotted
    xv, xlabel = axis_coordinate(sweep, xdim)
    yv, ylabel = axis_coordinate(sweep, ydim)
    panel_dim = panels[0] if panels else None
    panel_index = evenly(sweep.ds.sizes[panel_dim], PANELS) if panel_dim else [None]
    slices = []
    for p in panel_index:
        index = dict(fixed, **({panel_dim: p} if panel_dim else {}))
        slices.append((p, take(index, values), take(index, failed)))
    norm = _color_norm(np.concatenate([s[1].ravel() for s in slices]))
    ncols = min(3, len(slices))
    nrows = math.ceil(len(slices) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols + 1.0, 3.6 * nrows), squeeze=False,
                             constrained_layout=True)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#bbbbbb")
    mesh = None
    for ax, (p, grid, bad) in zip(axes.flat, slices):
        xe = _set_grid_axis(ax, "x", xv, xlabel)
        ye = _set_grid_axis(ax, "y", yv, ylabel)
        mesh = ax.pcolormesh(xe, ye, np.ma.masked_invalid(grid), cmap=cmap, norm=norm, shading="flat")
        if bad.any():
            yi, xi = np.nonzero(bad)
            ax.plot(_cell_centres(xe)[xi], _cell_centres(ye)[yi], "x", color="red", markersize=7)
        ax.set_title(_coord_text(sweep, panel_dim, p) if panel_dim else title, fontsize=10)
    for ax in list(axes.flat)[len(slices):]:
        ax.set_visible(False)
    fig.colorbar(mesh, ax=axes, label=what, shrink=0.9)
    if panel_dim:
        fig.suptitle(title)
    shown = (f" One panel per value of {panel_dim}"
             + (f" ({len(panel_index)} of {sweep.ds.sizes[panel_dim]} shown)" if len(panel_index) < sweep.ds.sizes[panel_dim]
                else "") + "." if panel_dim else "")
    any_bad = any(bad.any() for _, _, bad in slices)
    caption = (f"{out.name} ({out.doc or 'model output'}) over {xlabel} and {ylabel}; grey cells are not computed "
               f"or not finite" + (", red crosses mark points that failed, did not converge or are not finite" if any_bad else "")
               + f".{shown}{fixed_note}")
    return figures.add(fig, caption)


def sample_scatter(sweep: Sweep, out, figures: Figures) -> str:
    """A sampled dimension: its points in the plane of its first two parameters, coloured by the output."""
    plt = _pyplot()
    axis = next(a for a in sweep.axes if a.kind == "sample")
    names = list(axis.params)[:2]
    if len(names) < 2 or len(sweep.dims) != 1:
        return scalar_figure(sweep, out, figures)
    values = np.where(sweep.done, sweep.values(out.name).astype(float), np.nan)
    x, y = (np.asarray(sweep.ds[n].values) for n in names)
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    sc = ax.scatter(x, y, c=values, cmap="viridis", s=30, edgecolors="k", linewidths=0.3)
    bad = sweep.failed
    if bad.any():
        ax.plot(x[bad], y[bad], "x", color="red", markersize=9)
    units = sweep.ds[out.name].attrs.get("units", "")
    fig.colorbar(sc, ax=ax, label=label(out.name, units))
    ax.set_xlabel(label(names[0], sweep.ds[names[0]].attrs.get("units", "")))
    ax.set_ylabel(label(names[1], sweep.ds[names[1]].attrs.get("units", "")))
    ax.set_title(f"{out.name} at the sampled points")
    return figures.add(fig, f"{out.name} ({out.doc or 'model output'}) at each sampled point, placed by {names[0]} "
                            f"and {names[1]}" + ("; red crosses mark points that failed, did not converge or are not finite"
                                                 if bad.any() else "") + ".")


# --------------------------------------------------------------------------------------------
# Results: array outputs at representative points


def representative_points(sweep: Sweep) -> list[tuple[str, dict[str, int]]]:
    """Corners and centre of the grid: every corner over up to two varying dimensions, the two
    opposite corners beyond, then the centre; committed points only, without repeats."""
    sizes = sweep.ds["point_done"].sizes
    varying = [d for d in sweep.dims if sizes[d] > 1]
    corners: list[dict[str, int]] = []
    if len(varying) <= 2:
        for bits in np.ndindex(*([2] * len(varying))):
            corners.append({d: (sizes[d] - 1) * b for d, b in zip(varying, bits)})
    else:
        corners = [{d: 0 for d in varying}, {d: sizes[d] - 1 for d in varying}]
    centre = {d: sizes[d] // 2 for d in varying}
    found, seen = [], set()
    for kind, point in [("corner", c) for c in corners] + [("centre", centre)]:
        full = {d: point.get(d, 0) for d in sweep.dims}
        key = tuple(full.values())
        if key in seen or not sweep.done[key]:
            continue
        seen.add(key)
        found.append((kind, full))
    return found


def _point_text(sweep: Sweep, point: dict[str, int]) -> str:
    return ", ".join(_coord_text(sweep, d, i) for d, i in point.items() if sweep.ds.sizes[d] > 1) or "the point"


def array_figure(sweep: Sweep, out, figures: Figures) -> str:
    """An array output (e.g. a value or policy function) at the representative points."""
    plt = _pyplot()
    points = representative_points(sweep)
    if not points:
        return ""
    da = sweep.ds[out.name]
    units = da.attrs.get("units", "") or out.unit
    model_dims = [d for d in da.dims if d not in sweep.dims]
    def tag(point):
        problem = sweep.problem(tuple(point.values()))
        return f" ({problem})" if problem else ""

    def coord(dim):
        values = np.asarray(sweep.ds[dim].values) if dim in sweep.ds.coords else np.arange(da.sizes[dim])
        return values, label(dim, sweep.ds[dim].attrs.get("units", "") if dim in sweep.ds.coords else "")

    title = f"{out.name} at the corners and centre of the grid"
    if len(model_dims) == 1:
        x, xlabel = coord(model_dims[0])
        fig, ax = plt.subplots(figsize=(6.8, 4.0))
        for kind, point in points:
            y = np.asarray(da.isel(point).values, dtype=float)
            ax.plot(x, y, label=f"{kind}: {_point_text(sweep, point)}{tag(point)}",
                    drawstyle="steps-mid" if da.dtype == bool else "default")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label(out.name, units))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        return figures.add(fig, f"{out.name} ({out.doc or 'model output'}) against {xlabel}, one line per "
                                "representative point of the sweep (its corners and its centre).")

    xdim, sdim = model_dims[0], model_dims[1]
    rest = {d: da.sizes[d] // 2 for d in model_dims[2:]}
    x, xlabel = coord(xdim)
    s, slabel = coord(sdim)
    ncols = min(3, len(points))
    nrows = math.ceil(len(points) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.5 * nrows), squeeze=False,
                             constrained_layout=True)
    boolean = da.dtype == bool
    for ax, (kind, point) in zip(axes.flat, points):
        block = np.asarray(da.isel({**point, **rest}).transpose(xdim, sdim).values, dtype=float)
        if boolean:
            ax.pcolormesh(_set_grid_axis(ax, "x", x, xlabel), _set_grid_axis(ax, "y", s, slabel), block.T,
                          cmap="Greys", vmin=0, vmax=1, shading="flat")
        else:
            for j in evenly(len(s), CURVES):
                ax.plot(x, block[:, j], label=f"{sdim}={fmt(s[j])}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label(out.name, units))
            ax.grid(alpha=0.3)
        ax.set_title(f"{kind}: {_point_text(sweep, point)}{tag(point)}", fontsize=8)
    if not boolean:
        axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(points):]:
        ax.set_visible(False)
    fig.suptitle(title)
    rest_note = (" Further model dimensions at their middle: " + ", ".join(f"{d}[{i}]" for d, i in rest.items())
                 + ".") if rest else ""
    how = (f"black where true, over {xlabel} and {slabel}" if boolean else
           f"against {xlabel}, one line per value of {sdim} (up to {CURVES})")
    return figures.add(fig, f"{out.name} ({out.doc or 'model output'}) {how}; one panel per representative point "
                            f"of the sweep (its corners and its centre).{rest_note}")


# --------------------------------------------------------------------------------------------
# Results: tables


def _param_at(sweep: Sweep, flat_index: int) -> str:
    index = np.unravel_index(flat_index, sweep.done.shape)
    return _point_text(sweep, dict(zip(sweep.dims, map(int, index))))


def summary_statistics(sweep: Sweep) -> str:
    rows = []
    for out in sweep.scalar_outputs():
        raw = sweep.values(out.name)
        if raw.dtype == bool:
            continue
        values = np.where(sweep.done, raw.astype(float), np.nan)
        finite = np.isfinite(values)
        units = sweep.ds[out.name].attrs.get("units", "") or out.unit
        if not finite.any():
            rows.append([out.name, units, 0, "", "", "", "", "", "", ""])
            continue
        v = values[finite]
        flat = np.where(finite.ravel(), values.ravel(), np.nan)
        rows.append([out.name, units, int(finite.sum()), v.min(), np.median(v), v.mean(), v.max(), v.std(),
                     _param_at(sweep, int(np.nanargmin(flat))), _param_at(sweep, int(np.nanargmax(flat)))])
    return table(["output", "units", "finite points", "min", "median", "mean", "max", "sd", "min at", "max at"], rows)


def grid_table(sweep: Sweep) -> str:
    """Every point (up to GRID_ROWS) with its parameters and scalar outputs."""
    outs = [o.name for o in sweep.scalar_outputs()]
    n = sweep.done.size
    params = [p for a in sweep.axes for p in a.params]
    rows = []
    for flat in range(min(n, GRID_ROWS)):
        index = np.unravel_index(flat, sweep.done.shape)
        point = dict(zip(sweep.dims, map(int, index)))
        row = [np.asarray(sweep.ds[p].values)[point[a.name]] for a in sweep.axes for p in a.params]
        if sweep.done[index]:
            row += [sweep.values(o)[index] for o in outs]
        else:
            row += ["not computed"] * len(outs)
        rows.append(row)
    more = f"<p>{n - GRID_ROWS} more points are in the store.</p>" if n > GRID_ROWS else ""
    return table(params + outs, rows, "wide") + more


# --------------------------------------------------------------------------------------------
# Summary


def _float_or_none(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _iso_epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def execution_totals(shards: list[dict], points: int) -> dict:
    """Compute time (summed over shards), wall time (first start to last end), throughput,
    hosts, and devices (as host/device, from the markers' per-process records when present)."""
    starts = [float(s["start"]) for s in shards if _float_or_none(s.get("start")) is not None]
    ends = [float(s["end"]) for s in shards if _float_or_none(s.get("end")) is not None]
    wall = (max(ends) - min(starts)) if starts and ends else None
    devices = sorted({f"{p.get('host')}/{d}" for s in shards for p in s.get("per_process", []) or []
                      for d in p.get("devices", [])})
    return {
        "compute_s": sum(float(s.get("duration_s") or 0.0) for s in shards),
        "wall_s": wall,
        "throughput": points / wall if wall else None,
        "hosts": sorted({h for s in shards for h in str(s.get("host") or "").split(",") if h}),
        "devices": devices,
        "max_devices": max((int(s["devices"]) for s in shards if isinstance(s.get("devices"), int)), default=None),
    }


def summary_section(sweep: Sweep) -> str:
    ds, model = sweep.ds, sweep.model
    done = sweep.done
    total = int(done.size)
    n_done = int(done.sum())
    finite, converged, raised = sweep.flag("finite"), sweep.flag("converged"), sweep.raised
    n_raised = int(raised.sum())
    n_nonfinite = int((done & ~finite & ~raised).sum())
    n_notconv = int((done & ~converged & ~raised).sum())
    n_failed = int(sweep.failed.sum())
    totals = execution_totals(sweep.shards, n_done)
    created, completed = ds.attrs.get("created"), ds.attrs.get("completed")
    span = (_iso_epoch(completed) - _iso_epoch(created)) if created and completed else None
    state = "aggregated" if completed else f"not aggregated ({n_done} of {total} points committed so far)"
    grid = " × ".join(f"{a.name}[{a.size}]" for a in sweep.axes) or "one point"
    pairs = [
        ("sweep", f"{esc(sweep.name)} ({esc(state)})"),
        ("model", f"<b>{esc(model.name)}</b>: {esc(model.doc)}"),
        ("grid", f"{esc(grid)} = {total} points; precision {esc(ds.attrs.get('precision', ''))}"),
        ("points", f"{n_done} computed; <b>{n_done - n_failed}</b> converged and finite; "
                   f"<b class='{'bad' if n_raised else ''}'>{n_raised}</b> failed (the model raised); "
                   f"<b class='{'bad' if n_notconv else ''}'>{n_notconv}</b> not converged; "
                   f"<b class='{'bad' if n_nonfinite else ''}'>{n_nonfinite}</b> not finite; "
                   f"{total - n_done} not computed"),
        ("compute time", f"{fmt_seconds(totals['compute_s'])} summed over {len(sweep.shards)} shards"),
        ("wall time", f"{fmt_seconds(totals['wall_s'])} from the first shard's start to the last one's end"
                      + (f"; {fmt_seconds(span)} from planning to aggregation" if span else "")),
        ("throughput", (f"{totals['throughput']:.3g} points per second of wall time; "
                        f"{n_done / totals['compute_s']:.3g} per second of shard compute time")
                       if totals["throughput"] and totals["compute_s"] else "unknown"),
        ("hosts", esc(", ".join(totals["hosts"]) or "unknown")),
        ("devices", esc(", ".join(totals["devices"]) if totals["devices"] else
                        (f"up to {totals['max_devices']} per shard" if totals["max_devices"] else "unknown"))),
        ("planned", f"{esc(created or 'unknown')}; aggregated {esc(completed or 'not yet')}"),
        ("git commit", f"<code>{esc(ds.attrs.get('git_commit', 'unknown'))}</code>"),
        ("versions", esc(", ".join(f"{k} {v}" for k, v in (ds.attrs.get("versions") or {}).items()))),
    ]
    spec_text = ds.attrs.get("spec_text") or _spec_as_yaml(ds)
    params = []
    for a in sweep.axes:
        for pname, values in a.params.items():
            p = _parameter(model, pname)
            arr = np.asarray(values)
            span_text = (f"{fmt(arr.min())} … {fmt(arr.max())}" if _is_numeric(arr) else
                         ", ".join(fmt(v) for v in values[:8]) + (" …" if len(values) > 8 else ""))
            params.append([a.name, a.kind, pname, p.doc if p else "", p.unit if p else "", len(values), span_text])
    return ("<h2 id='summary'>Summary</h2>" + key_values(pairs)
            + "<h3>Swept parameters</h3>"
            + table(["dimension", "kind", "parameter", "meaning", "units", "values", "range"], params)
            + "<h3>Spec as written</h3><pre>" + esc(spec_text) + "</pre>")


def _parameter(model, name):
    try:
        return model.parameter(name)
    except KeyError:
        return None


def _spec_as_yaml(ds) -> str:
    import yaml

    try:
        return yaml.safe_dump(json.loads(ds.attrs.get("spec", "{}")), sort_keys=False, default_flow_style=None, width=100)
    except json.JSONDecodeError:
        return ""


# --------------------------------------------------------------------------------------------
# Results section


def results_section(sweep: Sweep, figures: Figures) -> str:
    parts = ["<h2 id='results'>Results</h2>"]
    if not sweep.done.any():
        return "".join(parts) + "<p>No point is committed yet.</p>"
    scalars = [o for o in sweep.scalar_outputs() if o.name not in DIAGNOSTIC_NAMES and o.dtype != "bool"]
    diagnostics = [o for o in sweep.scalar_outputs() if o.name in DIAGNOSTIC_NAMES and o.dtype != "bool"]
    sampled = any(a.kind == "sample" for a in sweep.axes) and len(sweep.dims) == 1
    draw = sample_scatter if sampled else scalar_figure
    if not any(sweep.ds.sizes[d] > 1 for d in sweep.dims):
        parts.append("<p>The sweep has a single point: see the tables below.</p>")
    else:
        parts.append("<h3>Scalar outputs</h3><div class='figs'>")
        parts += [draw(sweep, o, figures) for o in scalars]
        parts.append("</div>")
        if diagnostics:
            parts.append("<h3>Solver diagnostics</h3><div class='figs'>")
            parts += [draw(sweep, o, figures) for o in diagnostics]
            parts.append("</div>")
    arrays = sweep.array_outputs()
    if arrays:
        parts.append("<h3>Array outputs at representative points</h3><div class='figs'>")
        parts += [array_figure(sweep, o, figures) for o in arrays]
        parts.append("</div>")
    parts.append("<h3>Summary statistics of the scalar outputs</h3>" + summary_statistics(sweep))
    parts.append("<details><summary>Every point</summary>" + grid_table(sweep) + "</details>")
    return "".join(parts)


def model_section(sweep: Sweep) -> str:
    if sweep.model.report_section is None:
        return ""
    try:
        body = sweep.model.report_section(sweep.ds)
    except Exception as exc:  # the rest of the report still stands; the failure is shown, not hidden
        print(f"hpc report: {sweep.model.name}.report_section failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        body = f"<p class='bad'>The model's section failed: {esc(type(exc).__name__)}: {esc(exc)}</p>"
    if not body:
        return ""
    return f"<h2 id='model'>{esc(sweep.model.name)}: model-specific results</h2>{body}"


# --------------------------------------------------------------------------------------------
# Failures


def shard_errors(sweep: Sweep) -> list[dict]:
    """The model's errors recorded in the shard markers: shard, static values and message."""
    return [dict(item, shard=record["shard"]) for record in sweep.shards for item in record.get("errors") or []]


def _point_parameters(sweep: Sweep, where: dict[str, int]) -> dict[str, Any]:
    """Every parameter's value at a grid point: the swept ones, then the fixed ones."""
    spec = json.loads(sweep.ds.attrs.get("spec", "{}"))
    values = dict(spec.get("fixed", {}))
    for a in sweep.axes:
        for p, vals in a.params.items():
            values[p] = vals[where[a.name]]
    return values


def _error_for(errors: list[dict], shard: int, params: dict[str, Any]) -> str:
    for item in errors:
        if item["shard"] == shard and all(params.get(k) == v for k, v in (item.get("static") or {}).items()):
            return item.get("error", "")
    return ""


def failures_section(sweep: Sweep) -> str:
    """Every point the model raised for, that did not converge or that is not finite (up to
    FAILED_ROWS), with its parameters, diagnostics, non-finite outputs and the model's error."""
    failed = sweep.failed
    not_done = int((~sweep.done).sum())
    parts = ["<h2 id='failures'>Failures</h2>"]
    n = int(failed.sum())
    errors = shard_errors(sweep)
    if not n:
        parts.append("<p>Every computed point converged and is finite.</p>")
    else:
        idx = np.argwhere(failed)[:FAILED_ROWS]
        params = [p for a in sweep.axes for p in a.params]
        float_outputs = [o.name for o in sweep.model.outputs if o.dtype == "float" and o.name in sweep.ds]
        nonfinite = {}
        for name in float_outputs:
            raw = sweep.ds[name]
            picked = raw.isel({d: _points_indexer(idx[:, k]) for k, d in enumerate(sweep.dims)})
            picked = np.asarray(picked.transpose("failed_point", ...).values, float).reshape(len(idx), -1)
            nonfinite[name] = ~np.isfinite(picked).all(axis=1)
        diag = {name: sweep.values(name)[tuple(idx.T)] for name in ("iterations", "error", "converged")
                if name in sweep.ds}
        raised = sweep.raised[tuple(idx.T)]
        shard = sweep.values("shard_index")[tuple(idx.T)] if "shard_index" in sweep.ds else None
        rows = []
        for r, point in enumerate(idx):
            where = dict(zip(sweep.dims, map(int, point)))
            row = [np.asarray(sweep.ds[p].values)[where[a.name]] for a in sweep.axes for p in a.params]
            if raised[r]:
                row += [""] * len(diag) + ["all (fill values)"]
            else:
                row += [diag[k][r] for k in diag]
                row.append(", ".join(name for name in float_outputs if nonfinite[name][r]) or "none")
            row.append(int(shard[r]) if shard is not None else "")
            if raised.any():
                row.append(_error_for(errors, int(shard[r]), _point_parameters(sweep, where))
                           if raised[r] and shard is not None else "")
            rows.append(row)
        parts.append(f"<p class='bad'>{n} computed points failed, did not converge or are not finite"
                     + (f"; the first {FAILED_ROWS} are listed" if n > FAILED_ROWS else "") + ".</p>")
        parts.append(table(params + list(diag) + ["non-finite outputs", "shard"]
                           + (["model error"] if raised.any() else []), rows, "wide"))
    if errors:
        rows = [[e["shard"], ", ".join(f"{k}={v}" for k, v in (e.get("static") or {}).items()), e.get("error", "")]
                for e in errors]
        parts.append("<h3>Errors the model raised</h3>" + table(["shard", "static values", "error"], rows))
    if not_done:
        parts.append(f"<p>{not_done} points are not computed yet (or their shard failed): "
                     f"<code>hpc status {esc(sweep.name)}</code> shows which shards.</p>")
    return "".join(parts)


def _points_indexer(values: np.ndarray):
    import xarray as xr

    return xr.DataArray(values, dims="failed_point")


# --------------------------------------------------------------------------------------------
# Execution


def shard_attempt(record: dict) -> Any:
    """The shard job's attempt number when the runner recorded it (Snakemake's ``attempt``, or
    Slurm's restart count + 1); None when it did not."""
    for key in ("attempt", "attempts"):
        if record.get(key) is not None:
            return record[key]
    if record.get("slurm_restart_count") is not None:
        return int(record["slurm_restart_count"]) + 1
    return None


def shard_job_id(record: dict) -> Any:
    for key in ("job_id", "slurm_job_id"):
        if record.get(key):
            return record[key]
    return None


def timeline_figure(sweep: Sweep, figures: Figures) -> str:
    plt = _pyplot()
    shards = [s for s in sweep.shards if _float_or_none(s.get("start")) is not None]
    if not shards:
        return ""
    t0 = min(s["start"] for s in shards)
    hosts = sorted({str(s.get("host")) for s in shards})
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.32 * len(shards)))
    for s in shards:
        host = str(s.get("host"))
        ax.barh(s["shard"], s["end"] - s["start"], left=s["start"] - t0, height=0.6,
                color=colors(hosts.index(host) % 10))
        attempt = shard_attempt(s)
        note = f" attempt {attempt}" if attempt is not None else ""
        if s.get("computed") is not None and s.get("points") and s["computed"] < s["points"]:
            note += " (resumed)"
        if note:
            ax.text(s["end"] - t0, s["shard"], note, va="center", fontsize=7)
    for i, host in enumerate(hosts):
        ax.barh([], [], color=colors(i % 10), label=host)
    ax.legend(title="host", fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_yticks([s["shard"] for s in shards])
    ax.set_ylim(max(s["shard"] for s in shards) + 0.7, min(s["shard"] for s in shards) - 0.7)
    ax.set_xlabel("seconds since the first shard started")
    ax.set_ylabel("shard")
    ax.set_title("Shard timeline")
    ax.grid(axis="x", alpha=0.3)
    return figures.add(fig, f"When each shard computed, coloured by host (time 0 is {fmt_time(t0)}). A bar spans "
                            "the shard's solve, from its first process's start to its last one's end; "
                            "job start-up and queueing are not included.")


def throughput_figure(sweep: Sweep, figures: Figures) -> str:
    plt = _pyplot()
    shards = [s for s in sweep.shards if s.get("duration_s")]
    if not shards:
        return ""
    ids = [s["shard"] for s in shards]
    duration = [float(s["duration_s"]) for s in shards]
    computed = [int(s.get("computed", s.get("points", 0)) or 0) for s in shards]
    rate = [c / d if d else 0.0 for c, d in zip(computed, duration)]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    a1.bar(ids, duration, color="#4c72b0")
    a1.set_xlabel("shard")
    a1.set_ylabel("duration [s]")
    a1.set_title("Duration per shard")
    a2.bar(ids, rate, color="#55a868")
    a2.set_xlabel("shard")
    a2.set_ylabel("throughput [points/s]")
    a2.set_title("Throughput per shard")
    for ax in (a1, a2):
        ax.set_xticks(ids if len(ids) <= 20 else ids[:: math.ceil(len(ids) / 20)])
    fig.suptitle("Per-shard duration and throughput")
    return figures.add(fig, "Seconds each shard took to solve its points (left) and the points it computed per "
                            "second (right); a resumed shard computed only its uncommitted chunks.")


def execution_section(sweep: Sweep, figures: Figures) -> str:
    parts = ["<h2 id='execution'>Execution</h2>"]
    shards = sweep.shards
    if not shards:
        parts.append("<p>No shard has committed yet.</p>")
    else:
        parts.append("<div class='figs'>" + timeline_figure(sweep, figures) + throughput_figure(sweep, figures)
                     + "</div>")
        has_attempt = any(shard_attempt(s) is not None for s in shards)
        has_job = any(shard_job_id(s) is not None for s in shards)
        t0 = min((s["start"] for s in shards if s.get("start")), default=0.0)
        header = ["shard"] + (["job"] if has_job else []) + (["attempt"] if has_attempt else []) + [
            "host", "start [s]", "end [s]", "duration [s]", "points", "computed", "points/s", "processes", "devices",
            "failed", "not converged", "non-finite"]
        rows = []
        for s in shards:
            duration = float(s.get("duration_s") or 0.0)
            computed = s.get("computed", s.get("points"))
            devices = s.get("devices")
            if not isinstance(devices, int):
                devices = sum(len(p.get("devices", [])) for p in s.get("per_process", [])) or devices
            rows.append([s["shard"]] + ([shard_job_id(s) or ""] if has_job else [])
                        + ([shard_attempt(s) or ""] if has_attempt else [])
                        + [s.get("host"), round(s["start"] - t0, 3) if s.get("start") else "",
                           round(s["end"] - t0, 3) if s.get("end") else "", duration, s.get("points"), computed,
                           round(computed / duration, 3) if computed and duration else "",
                           s.get("processes"), devices, s.get("failed", 0), s.get("not_converged"),
                           s.get("non_finite")])
        parts.append(f"<p>Times are seconds after {fmt_time(t0)}.</p>" + table(header, rows))
        parts.append(retries_text(sweep))
    parts.append(plan_versus_ran(sweep))
    return "".join(parts)


def retries_text(sweep: Sweep) -> str:
    resumed = [s["shard"] for s in sweep.shards
               if s.get("computed") is not None and s.get("points") and s["computed"] < s["points"]]
    retried = [s["shard"] for s in sweep.shards if (shard_attempt(s) or 1) > 1]
    lines = []
    if retried:
        lines.append(f"Shards run more than once (a retry or a resubmission): {', '.join(map(str, retried))}.")
    if resumed:
        lines.append(f"Shards resumed from chunks an earlier attempt had committed: {', '.join(map(str, resumed))}.")
    if not lines:
        known = any(shard_attempt(s) is not None for s in sweep.shards)
        lines.append("Every shard ran once and computed all of its points." if known else
                     "Every shard computed all of its points in its last attempt (no chunk was resumed). The "
                     "markers do not record attempt numbers, so retries that failed before committing any chunk "
                     "are not visible here.")
    return "<h3>Retries and resumes</h3><p>" + " ".join(lines) + "</p>"


def plan_versus_ran(sweep: Sweep) -> str:
    plan = sweep.plan
    spec = json.loads(sweep.ds.attrs.get("spec", "{}"))
    head = "<h3>The plan against what ran</h3>"
    if plan is None:
        n = spec.get("shards", sweep.ds.attrs.get("n_shards"))
        return head + (f"<p>No plan file of this spec beside the store; the spec asked for {esc(n)} shards and "
                       f"{len(sweep.shards)} committed.</p>")
    res = plan.resources or {}
    asked = ", ".join(f"{k}={v}" for k, v in res.items()) or "the profile's defaults"
    by_shard = {s["shard"]: s for s in sweep.shards}
    rows, differ = [], 0
    for shard in range(plan.n_shards):
        first, last = plan.shard_chunks[shard]
        ran = by_shard.get(shard)
        if ran is None:
            verdict = "not run (no marker)"
        else:
            notes = []
            tasks = int(res.get("tasks", 1) or 1)
            if ran.get("processes") not in (None, tasks):
                notes.append(f"{ran['processes']} processes for {tasks} tasks")
            if ran.get("points") != plan.shard_points(shard):
                notes.append("another point count")
            if ran.get("computed") is not None and ran["computed"] < plan.shard_points(shard):
                notes.append("resumed")
            verdict = "; ".join(notes) or "as planned"
        differ += verdict != "as planned"
        rows.append([shard, f"{first}..{last - 1}", plan.shard_points(shard),
                     ran.get("host") if ran else "", ran.get("processes") if ran else "",
                     (ran.get("computed") if ran else ""), verdict])
    return (head + f"<p>The plan (<code>plan.json</code>, what a dry run lists): {plan.n_shards} shard jobs over "
            f"{plan.n_chunks} chunks of {' × '.join(map(str, plan.chunks))} points, each asking for {esc(asked)}. "
            f"What ran (the shard markers): {len(sweep.shards)} shards; {differ} differ from the plan.</p>"
            + table(["shard", "chunks", "planned points", "host", "processes", "computed", "against the plan"], rows))


# --------------------------------------------------------------------------------------------
# Training runs

EVENT_WORDS = ("checkpoint", "resume", "restart")
EVENT_LINES = 40  # more events than this are listed, not drawn


def _attr_json(value):
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _spec_value(attrs: dict, key: str):
    """A top-level key of the spec a store records: its normalized form, else the text as written."""
    import yaml

    spec = _attr_json(attrs.get("spec"))
    if isinstance(spec, dict) and key in spec:
        return spec[key]
    try:
        written = yaml.safe_load(attrs.get("spec_text") or "")
    except yaml.YAMLError:
        return None
    return written.get(key) if isinstance(written, dict) else None


def training_events(ds) -> dict[str, list[float]]:
    """Checkpoint and resume events of a training store, as steps.

    Recognized, whatever wrote the store:
    - ``attrs["segments"]``, one record per attempt (hpc.train): an attempt that starts from a
      checkpoint (``restored_from``) is a resume there; one that stopped early saved a
      checkpoint at its ``last_step``; with ``checkpoint_every`` in ``attrs["spec"]``, every
      multiple of it up to the last step run is a checkpoint too;
    - a variable or coordinate named like ``checkpoint_step(s)`` or ``resume_step(s)`` (its
      values are steps), or a boolean per-step variable named ``checkpoint*``/``resume*``/
      ``restart*`` (the steps where it is true);
    - an attribute named ``checkpoint*``/``resume*``/``restart*`` holding a step, a list of
      steps, or a list of mappings with a ``step``.
    """
    events: dict[str, list[float]] = {}

    def kind_of(name: str) -> str | None:
        low = name.lower()
        for word in EVENT_WORDS:
            if word in low:
                return "checkpoint" if word == "checkpoint" else "resume"
        return None

    segments = _attr_json(ds.attrs.get("segments")) or []
    if isinstance(segments, list):
        last = max((int(s.get("last_step") or 0) for s in segments if isinstance(s, dict)), default=0)
        every = _spec_value(ds.attrs, "checkpoint_every")
        if every and last:
            events.setdefault("checkpoint", []).extend(float(t) for t in range(int(every), last + 1, int(every)))
        for seg in segments:
            if not isinstance(seg, dict):
                continue
            if seg.get("restored_from"):
                events.setdefault("resume", []).append(float(seg["restored_from"]))
            if seg.get("last_step"):  # an attempt saves a checkpoint when it stops and when it ends
                events.setdefault("checkpoint", []).append(float(seg["last_step"]))
    for name in list(ds.variables):
        kind = kind_of(str(name))
        if kind is None:
            continue
        var = ds[name]
        values = np.asarray(var.values)
        if values.dtype == bool and var.ndim == 1:
            steps = np.asarray(ds[var.dims[0]].values)[values] if var.dims[0] in ds.coords else np.nonzero(values)[0]
            events.setdefault(kind, []).extend(np.asarray(steps, float).tolist())
        elif values.dtype.kind in "iuf" and str(name).lower().endswith(("step", "steps")):
            events.setdefault(kind, []).extend(values[np.isfinite(values.astype(float))].astype(float).ravel().tolist())
    for key, value in ds.attrs.items():
        kind = kind_of(str(key))
        if kind is None:
            continue
        value = _attr_json(value)
        if isinstance(value, (int, float)):
            value = [value]
        if isinstance(value, list):
            for item in value:
                step = item.get("step") if isinstance(item, dict) else item
                if _float_or_none(step) is not None:
                    events.setdefault(kind, []).append(float(step))
    return {k: sorted(set(v)) for k, v in events.items()}


def per_step_variables(ds) -> list[str]:
    """Numeric 1-D data variables (one value per step) other than event markers."""
    found = []
    for name, var in ds.data_vars.items():
        if var.ndim == 1 and var.dtype.kind in "iuf" and var.sizes[var.dims[0]] > 0:
            if str(name).lower().endswith(("step", "steps")) and any(w in str(name).lower() for w in EVENT_WORDS):
                continue
            found.append(str(name))
    return found


def _metric_group(name: str) -> str:
    """Curves of one metric on different data share a figure: loss with eval_loss and heldout_loss,
    train_rmse with heldout_rmse, eval_accuracy with val_accuracy."""
    low = name.lower()
    for prefix in ("train_", "training_", "eval_", "evaluation_", "val_", "valid_", "validation_", "test_",
                   "heldout_", "held_out_"):
        if low.startswith(prefix):
            return low[len(prefix):]
    for suffix in ("_train", "_eval", "_val", "_test", "_heldout"):
        if low.endswith(suffix):
            return low[: -len(suffix)]
    return low


def _group_rank(group: str) -> tuple[int, str]:
    """Losses first, then other metrics, then speed (throughput, step time, rates)."""
    if "loss" in group:
        return (0, group)
    if any(w in group for w in ("throughput", "time", "per_s", "rate", "speed")):
        return (2, group)
    return (1, group)


def training_datasets(path: Path) -> list[tuple[str, Any]]:
    """The training store's root group, or each of its subgroups when the root holds no variable."""
    import xarray as xr
    import zarr

    ds = zarrio.open_dataset(path)
    if ds.data_vars:
        return [("", ds)]
    return [(name, xr.open_zarr(path, group=name, consolidated=False, chunks=None))
            for name, _ in sorted(zarr.open_group(str(path), mode="r").groups())]


def _event_lines(ax, events: dict[str, list[float]], xmax: float | None) -> list[str]:
    drawn = []
    for kind, style, words in (("checkpoint", dict(color="grey", ls=":"), "dotted grey lines mark checkpoints"),
                               ("resume", dict(color="red", ls="--"), "dashed red lines mark resumes")):
        steps = [t for t in events.get(kind, []) if xmax is None or t <= xmax]
        if not steps or len(steps) > EVENT_LINES:
            continue
        for i, step in enumerate(steps):
            ax.axvline(step, lw=1, label=kind if i == 0 else None, **style)
        drawn.append(words)
    return drawn


def training_curves(ds, figures: Figures, where: str = "") -> tuple[list[tuple[str, str]], str]:
    """(summary rows, figures) for one dataset of per-step variables."""
    plt = _pyplot()
    variables = per_step_variables(ds)
    events = training_events(ds)
    prefix = f"{where}/" if where else ""

    def steps_text(kind):
        steps = events.get(kind, [])
        if len(steps) > EVENT_LINES:
            return f"{len(steps)}, from step {fmt(steps[0])} to {fmt(steps[-1])}"
        return ", ".join(fmt(int(t) if float(t).is_integer() else t) for t in steps) or "none recorded"

    pairs = [(f"{prefix}per-step variables", esc(", ".join(variables) or "none")),
             (f"{prefix}steps", esc(", ".join(f"{d}: {ds.sizes[d]}" for d in sorted({ds[v].dims[0] for v in variables}))
                                    or "none")),
             (f"{prefix}checkpoints", esc(steps_text("checkpoint"))),
             (f"{prefix}resumes", esc(steps_text("resume")))]
    for v in variables:
        values = np.asarray(ds[v].values, float)
        finite = values[np.isfinite(values)]
        if finite.size:
            pairs.append((f"{prefix}{v}: last, min, max", f"{fmt(finite[-1])}, {fmt(finite.min())}, {fmt(finite.max())}"))
        if "step_time" in v.lower() and finite.size:
            pairs.append((f"{prefix}{v}: sum", fmt_seconds(float(finite.sum()))))
    groups: dict[str, list[str]] = {}
    for v in variables:
        groups.setdefault(_metric_group(v), []).append(v)
    parts = []
    for group in sorted(groups, key=_group_rank):
        members = sorted(groups[group], key=lambda v: (v.lower() != group, v))  # the plain name first
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        values, xmax = [], None
        for v in members:
            var = ds[v]
            dim = var.dims[0]
            x = np.asarray(ds[dim].values) if dim in ds.coords else np.arange(var.sizes[dim])
            y = np.asarray(var.values, float)
            values.append(y)
            if np.isfinite(y).any() and _is_numeric(x):
                xmax = max(xmax or -np.inf, float(x[np.isfinite(y)].max()))
            ax.plot(x, y, marker="o" if len(y) <= 30 else None, markersize=3, label=v)
        if isinstance(_color_norm(np.concatenate(values)), LogNorm):
            ax.set_yscale("log")
        marks = _event_lines(ax, events, xmax)
        units = ds[members[0]].attrs.get("units", "")
        ax.set_xlabel(" / ".join(sorted({ds[v].dims[0] for v in members})))
        ax.set_ylabel(label(group, units))
        ax.set_title(f"{prefix}{group} during training")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        docs = "; ".join(f"{v}: {ds[v].attrs['long_name']}" for v in members if ds[v].attrs.get("long_name"))
        parts.append(figures.add(fig, f"{', '.join(members)} against the training step" + (f" ({docs})" if docs else "")
                                      + (f"; {' and '.join(marks)}" if marks else "") + "."))
    others = [str(v) for v in ds.data_vars if str(v) not in variables]
    if others:
        pairs.append((f"{prefix}other variables", esc(", ".join(others))))
    return pairs, "".join(parts)


def _attempts_table(segments: list) -> str:
    """One row per attempt of a training run (hpc.train's ``segments``): resumes and stops."""
    if not segments or not all(isinstance(s, dict) for s in segments):
        return ""
    keys = ["first_step", "last_step", "restored_from", "start", "end", "hosts", "train_s", "compile_s", "reason"]
    rows = [[i + 1] + [", ".join(map(str, s[k])) if isinstance(s.get(k), list) else (s.get(k) if s.get(k) is not None
                                                                                      else "") for k in keys]
            for i, s in enumerate(segments)]
    return "<h3>Attempts (checkpoint and resume events)</h3>" + table(["attempt"] + keys, rows)


def training_section(path: Path, figures: Figures) -> str:
    """A training store: its spec and attributes, its attempts, and a curve for every 1-D
    per-step variable, grouped by metric (``loss`` with ``heldout_loss``), on a log scale when
    it spans decades, with checkpoint and resume events marked."""
    datasets = training_datasets(path)
    root_attrs = datasets[0][1].attrs if datasets and not datasets[0][0] else zarrio.open_dataset(path).attrs
    pairs, figs = [("store", f"<code>{esc(path)}</code>")], []
    for where, ds in datasets:
        rows, body = training_curves(ds, figures, where)
        pairs += rows
        figs.append(body)
    extra = []
    sources = [("", root_attrs)] + [(f"{where}/", ds.attrs) for where, ds in datasets if where]
    for prefix, attrs in sources:
        for key, value in attrs.items():
            value = _attr_json(value)
            if key in ("spec_text", "segments", "spec"):
                continue
            if isinstance(value, dict):
                extra.append(f"<h3>{esc(prefix + key)}</h3>" + key_values(
                    [(k, esc(v if not isinstance(v, (dict, list)) else json.dumps(v))) for k, v in value.items()]))
            else:
                pairs.append((prefix + key, esc(value if not isinstance(value, list) else json.dumps(value))[:300]))
    spec_text = root_attrs.get("spec_text")
    return ("<h2 id='training'>Training run</h2>" + key_values(pairs)
            + "<div class='figs'>" + "".join(figs) + "</div>"
            + _attempts_table(_attr_json(root_attrs.get("segments")) or [])
            + (f"<h3>Spec as written</h3><pre>{esc(spec_text)}</pre>" if spec_text else "")
            + ("<details><summary>Everything else the store records</summary>" + "".join(extra) + "</details>"
               if extra else ""))


# --------------------------------------------------------------------------------------------
# The page

STYLE = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;max-width:76em;margin:1.5em auto;padding:0 1em;color:#222;
line-height:1.4}
h1{border-bottom:2px solid #4c72b0;padding-bottom:.2em}h2{border-bottom:1px solid #ccc;margin-top:2em}
nav a{margin-right:1em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:2px 7px;text-align:left;vertical-align:top}td.num{text-align:right}
th{background:#f0f3f8}table.kv th{text-align:left;white-space:nowrap}table.kv td{text-align:left}
table.wide{display:block;overflow-x:auto;max-width:100%}
pre{background:#f4f4f4;padding:.8em;overflow-x:auto}
figure{margin:.8em 0;display:inline-block;vertical-align:top;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#444;max-width:40em}
.figs{display:flex;flex-wrap:wrap;gap:1em}
.bad{color:#b00020}
footer{margin-top:3em;font-size:.8em;color:#666}
"""


def _page(title: str, sections: list[tuple[str, str, str]]) -> str:
    nav = "".join(f"<a href='#{anchor}'>{esc(text)}</a>" for anchor, text, body in sections if body and text)
    body = "\n".join(body for _, _, body in sections if body)
    built = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{STYLE}</style></head>"
            f"<body><h1>{esc(title)}</h1><nav>{nav}</nav>\n{body}\n"
            f"<footer>Built by <code>hpc report</code> at {built} from the store alone.</footer></body></html>\n")


def build_report(name: str, root: Path | None = None) -> str:
    """The report of sweep (and/or training run) ``name`` as one self-contained HTML page."""
    figures = Figures()
    sections: list[tuple[str, str, str]] = []
    sweep_store = paths.store_path(name, root)
    train = train_store_path(name, root)
    if not (sweep_store / "zarr.json").exists() and not (train / "zarr.json").exists():
        from hpc.core.errors import SpecError

        raise SpecError("name", f"no sweep store or training store for {name!r} under "
                                f"{paths.sweep_dir(name, root).parent}", "run the sweep first")
    title = f"Training run {name}"
    if (sweep_store / "zarr.json").exists():
        sweep = load_sweep(name, root)
        title = f"Sweep {name}"
        sections += [
            ("summary", "Summary", summary_section(sweep)),
            ("results", "Results", results_section(sweep, figures)),
            ("model", "Model", model_section(sweep)),
            ("failures", "Failures", failures_section(sweep)),
            ("execution", "Execution", execution_section(sweep, figures)),
        ]
    if (train / "zarr.json").exists():
        sections.append(("training", "Training", training_section(train, figures)))
    return _page(title, sections)


def write_report(name: str, root: Path | None = None, output: str | Path | None = None) -> Path:
    out = Path(output) if output else paths.report_path(name, root)
    write_atomic(out, build_report(name, root))
    return out


