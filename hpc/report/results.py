"""The Results section: every scalar output over the sweep (a line over one dimension, a heat map
over two, small multiples beyond), every array output at the corners and the centre of the grid,
summary statistics of the scalar outputs and a table of every point."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hpc.report.figures import (
    MAX_CELLS,
    MAX_LINE_POINTS,
    MAX_SCATTER,
    Figure,
    Figures,
    any_in_blocks,
    cell_centres,
    color_norm,
    evenly,
    is_geometric,
    is_numeric_array,
    pyplot,
    sampling_note,
    set_grid_axis,
    spans_decades,
    stride,
)
from hpc.report.formatting import fmt, label
from hpc.report.render import Table
from hpc.report.sweep_data import Sweep

GRID_ROWS = 200  # points listed in the table of every point
PANELS = 6  # small multiples at most per figure
CURVES = 5  # lines per panel for a second model dimension
DIAGNOSTIC_NAMES = ("iterations", "error", "converged")


@dataclass
class Results:
    any_done: bool
    single_point: bool  # no dimension varies: nothing to plot over
    scalars: list[Figure]
    diagnostics: list[Figure]
    arrays: list[Figure]
    statistics: Table
    points: Table
    points_left: int  # points beyond GRID_ROWS, not listed


# --------------------------------------------------------------------------------------------
# Scalar outputs


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


def scalar_figure(sweep: Sweep, out, figures: Figures) -> Figure | None:
    """The figure of one scalar output over the sweep (line, heat map or small multiples)."""
    plt = pyplot()
    da = sweep.ds[out.name]
    values = np.where(sweep.done, sweep.values(out.name).astype(float), np.nan)
    failed = sweep.failed
    units = da.attrs.get("units", "") or out.unit
    what = label(out.name, units)
    plotted, panels, fixed = _plot_layout(sweep)
    fixed_text = "; ".join(sweep.coord_text(d, i) for d, i in fixed.items() if sweep.ds.sizes[d] > 1)
    fixed_note = f" Other dimensions fixed at {fixed_text}." if fixed_text else ""
    order = sweep.dims
    title = f"{out.name} over the sweep"

    def take(index: dict[str, int], array: np.ndarray) -> np.ndarray:
        sl = tuple(index.get(d, slice(None)) for d in order)
        sub = array[sl]
        kept = [d for d in order if d not in index]
        return np.transpose(sub, [kept.index(d) for d in plotted]) if len(plotted) > 1 else sub

    if not plotted:
        return None
    if len(plotted) == 1:
        dim = plotted[0]
        x, xlabel = sweep.coordinate(dim)
        y, bad = take(fixed, values), take(fixed, failed)
        step = stride(len(x), MAX_LINE_POINTS)  # a long line: every step-th point, crosses per block
        sampled = sampling_note([(dim, step, len(x))])
        x, y, bad = x[::step], y[::step], any_in_blocks(bad, 0, step)
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        numeric = is_numeric_array(x)
        xs = x.astype(float) if numeric else np.arange(len(x))
        orderx = np.argsort(xs, kind="stable")
        ax.plot(xs[orderx], y[orderx], marker="o", markersize=3, label=out.name)
        if bad.any():
            ax.plot(xs[bad], y[bad], "x", color="red", markersize=8, label="failed, not converged or not finite")
            ax.legend(fontsize=8)
        if numeric and is_geometric(np.sort(xs)):
            ax.set_xscale("log")
        if spans_decades(y):
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
                   + fixed_note + sampled)
        return figures.add(fig, caption)

    ydim, xdim = plotted
    xv, xlabel = sweep.coordinate(xdim)
    yv, ylabel = sweep.coordinate(ydim)
    panel_dim = panels[0] if panels else None
    panel_index = evenly(sweep.ds.sizes[panel_dim], PANELS) if panel_dim else [None]
    # A large grid is drawn at every k-th value of each axis (a cell per block, crossed where any
    # point of the block failed): pcolormesh's cost and the PNG grow with the cells, not the page.
    sx, sy = stride(len(xv), MAX_CELLS), stride(len(yv), MAX_CELLS)
    sampled = sampling_note([(xdim, sx, len(xv)), (ydim, sy, len(yv))])
    xv, yv = xv[::sx], yv[::sy]
    slices = []
    for p in panel_index:
        index = dict(fixed, **({panel_dim: p} if panel_dim else {}))
        blocks = any_in_blocks(any_in_blocks(take(index, failed), 0, sy), 1, sx)
        slices.append((p, take(index, values)[::sy, ::sx], blocks))
    norm = color_norm(np.concatenate([s[1].ravel() for s in slices]))
    ncols = min(3, len(slices))
    nrows = math.ceil(len(slices) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols + 1.0, 3.6 * nrows), squeeze=False,
                             constrained_layout=True)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#bbbbbb")
    mesh = None
    for ax, (p, grid, bad) in zip(axes.flat, slices):
        xe = set_grid_axis(ax, "x", xv, xlabel)
        ye = set_grid_axis(ax, "y", yv, ylabel)
        mesh = ax.pcolormesh(xe, ye, np.ma.masked_invalid(grid), cmap=cmap, norm=norm, shading="flat")
        if bad.any():
            yi, xi = np.nonzero(bad)
            ax.plot(cell_centres(xe)[xi], cell_centres(ye)[yi], "x", color="red", markersize=7)
        ax.set_title(sweep.coord_text(panel_dim, p) if panel_dim else title, fontsize=10)
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
               + f".{shown}{fixed_note}{sampled}")
    return figures.add(fig, caption)


def sample_scatter(sweep: Sweep, out, figures: Figures) -> Figure | None:
    """A sampled dimension: its points in the plane of its first two parameters, coloured by the output."""
    plt = pyplot()
    axis = next(a for a in sweep.axes if a.kind == "sample")
    names = list(axis.parameters)[:2]
    if len(names) < 2 or len(sweep.dims) != 1:
        return scalar_figure(sweep, out, figures)
    values = np.where(sweep.done, sweep.values(out.name).astype(float), np.nan)
    x, y = (np.asarray(sweep.ds[n].values) for n in names)
    bad = sweep.failed
    step = stride(len(values), MAX_SCATTER)  # many points: every step-th, and every failed one up to the limit
    shown = (f" {len(values[::step])} of the {len(values)} points are drawn (one in {step}), with up to {MAX_SCATTER} "
             "of those that failed." if step > 1 else "")
    failed_at = np.flatnonzero(bad)[:MAX_SCATTER]
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    sc = ax.scatter(x[::step], y[::step], c=values[::step], cmap="viridis", s=30 if step == 1 else 8,
                    edgecolors="k", linewidths=0.3 if step == 1 else 0)
    if bad.any():
        ax.plot(x[failed_at], y[failed_at], "x", color="red", markersize=9)
    units = sweep.ds[out.name].attrs.get("units", "")
    fig.colorbar(sc, ax=ax, label=label(out.name, units))
    ax.set_xlabel(label(names[0], sweep.ds[names[0]].attrs.get("units", "")))
    ax.set_ylabel(label(names[1], sweep.ds[names[1]].attrs.get("units", "")))
    ax.set_title(f"{out.name} at the sampled points")
    return figures.add(fig, f"{out.name} ({out.doc or 'model output'}) at each sampled point, placed by {names[0]} "
                            f"and {names[1]}" + ("; red crosses mark points that failed, did not converge or are not finite"
                                                 if bad.any() else "") + "." + shown)


# --------------------------------------------------------------------------------------------
# Array outputs at representative points


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


def array_figure(sweep: Sweep, out, figures: Figures) -> Figure | None:
    """An array output (e.g. a value or policy function) at the representative points."""
    plt = pyplot()
    points = representative_points(sweep)
    if not points:
        return None
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
            ax.plot(x, y, label=f"{kind}: {sweep.point_text(point)}{tag(point)}",
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
            ax.pcolormesh(set_grid_axis(ax, "x", x, xlabel), set_grid_axis(ax, "y", s, slabel), block.T,
                          cmap="Greys", vmin=0, vmax=1, shading="flat")
        else:
            for j in evenly(len(s), CURVES):
                ax.plot(x, block[:, j], label=f"{sdim}={fmt(s[j])}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label(out.name, units))
            ax.grid(alpha=0.3)
        ax.set_title(f"{kind}: {sweep.point_text(point)}{tag(point)}", fontsize=8)
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
# Tables


def summary_statistics(sweep: Sweep) -> Table:
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
                     sweep.flat_point_text(int(np.nanargmin(flat))), sweep.flat_point_text(int(np.nanargmax(flat)))])
    return Table(["output", "units", "finite points", "min", "median", "mean", "max", "sd", "min at", "max at"], rows,
                 id="summary-statistics")


def grid_table(sweep: Sweep) -> Table:
    """Every point (up to GRID_ROWS) with its parameters and scalar outputs."""
    outs = [o.name for o in sweep.scalar_outputs()]
    rows = []
    for flat in range(min(sweep.done.size, GRID_ROWS)):
        index = np.unravel_index(flat, sweep.done.shape)
        row = sweep.parameter_values(dict(zip(sweep.dims, map(int, index))))
        if sweep.done[index]:
            row += [sweep.values(o)[index] for o in outs]
        else:
            row += ["not computed"] * len(outs)
        rows.append(row)
    return Table(sweep.parameters + outs, rows, id="every-point", css="wide")


def results_section(sweep: Sweep, figures: Figures) -> Results:
    scalars = [o for o in sweep.scalar_outputs() if o.name not in DIAGNOSTIC_NAMES and o.dtype != "bool"]
    diagnostics = [o for o in sweep.scalar_outputs() if o.name in DIAGNOSTIC_NAMES and o.dtype != "bool"]
    sampled = any(a.kind == "sample" for a in sweep.axes) and len(sweep.dims) == 1
    draw = sample_scatter if sampled else scalar_figure
    any_done = bool(sweep.done.any())
    single = not any(sweep.ds.sizes[d] > 1 for d in sweep.dims)

    def drawn(outputs, how):
        if not any_done:
            return []
        return [f for f in (how(sweep, o, figures) for o in outputs) if f is not None]

    return Results(
        any_done=any_done,
        single_point=single,
        scalars=[] if single else drawn(scalars, draw),
        diagnostics=[] if single else drawn(diagnostics, draw),
        arrays=drawn(sweep.array_outputs(), array_figure),
        statistics=summary_statistics(sweep) if any_done else Table([]),
        points=grid_table(sweep) if any_done else Table([]),
        points_left=max(0, sweep.done.size - GRID_ROWS),
    )
