"""The sweep report: one self-contained HTML file (images embedded) built from the store alone."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from hpc import store
from hpc.models import get_model
from hpc.plan import write_atomic


def open_sweep(name: str, root: Path | None = None):
    """The sweep's store as an xarray Dataset (points not yet committed are masked to NaN)."""
    import xarray as xr

    path = store.store_path(name, root)
    ds = xr.open_zarr(path, consolidated=(path / "zarr.json").exists() and _is_consolidated(path))
    return ds


def _is_consolidated(path: Path) -> bool:
    meta = json.loads((path / "zarr.json").read_text())
    return meta.get("consolidated_metadata") is not None


def _figure_to_img(fig, alt: str) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _axis_label(ds, dim: str) -> str:
    units = ds[dim].attrs.get("units", "") if dim in ds.coords else ""
    return f"{dim} [{units}]" if units else dim


def scalar_plot(ds, var: str) -> str:
    """A line plot over a 1-D sweep, a heatmap over 2-D, the first two dims' slices otherwise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    da = ds[var].where(ds["point_done"])
    dims = list(da.dims)
    fig, ax = plt.subplots(figsize=(6, 4))
    if len(dims) == 1:
        ax.plot(da[dims[0]].values, da.values.astype(float), marker="o")
        ax.set_xlabel(_axis_label(ds, dims[0]))
        ax.set_ylabel(var)
    else:
        if len(dims) > 2:
            da = da.isel({d: da.sizes[d] // 2 for d in dims[2:]})
        mesh = ax.pcolormesh(da[dims[1]].values, da[dims[0]].values, da.values.astype(float), shading="auto")
        fig.colorbar(mesh, ax=ax, label=var)
        ax.set_xlabel(_axis_label(ds, dims[1]))
        ax.set_ylabel(_axis_label(ds, dims[0]))
    ax.set_title(f"{var} over the sweep")
    return _figure_to_img(fig, f"{var} over the sweep")


def summary_table(ds, scalar_vars: list[str]) -> str:
    rows = []
    for var in scalar_vars:
        values = ds[var].where(ds["point_done"]).values.astype(float).ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            rows.append(f"<tr><td>{html.escape(var)}</td><td colspan=4>no finite values</td></tr>")
            continue
        rows.append("<tr><td>{}</td><td>{:.6g}</td><td>{:.6g}</td><td>{:.6g}</td><td>{:.6g}</td></tr>".format(
            html.escape(var), values.min(), np.median(values), values.mean(), values.max()))
    return ("<table><tr><th>output</th><th>min</th><th>median</th><th>mean</th><th>max</th></tr>"
            + "".join(rows) + "</table>")


def grid_table(ds, scalar_vars: list[str], limit: int = 200) -> str:
    """Every point (up to ``limit``) with its parameters and scalar outputs."""
    frame = ds[scalar_vars].to_dataframe().reset_index()
    shown = frame.head(limit)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in shown.itertuples(index=False))
    more = f"<p>{len(frame) - limit} more points in the store.</p>" if len(frame) > limit else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.6g}"
    return html.escape(str(value))


def build_report(name: str, root: Path | None = None) -> str:
    ds = open_sweep(name, root)
    model = get_model(ds.attrs["model"])
    status_vars = set(store.STATUS_VARS)
    sweep_dims = set(ds["point_done"].dims)
    scalar_vars = [o.name for o in model.outputs if o.name in ds and set(ds[o.name].dims) == sweep_dims]
    main = scalar_vars[0]
    done = int(ds["point_done"].sum())
    flagged = int((ds["point_done"] & ~(ds["finite"] & ds["converged"].astype(bool))).sum()) if "converged" in ds else 0
    shards = ds.attrs.get("shards", [])
    parts = [
        f"<h1>Sweep {html.escape(name)}</h1>",
        f"<p>Model <b>{html.escape(model.name)}</b>: {html.escape(model.doc)}</p>",
        f"<p>{done} of {int(ds['point_done'].size)} points done; {flagged} not converged or not finite; "
        f"{len(shards)} shards; commit {html.escape(str(ds.attrs.get('git_commit')))}.</p>",
        "<h2>Spec</h2><pre>" + html.escape(ds.attrs.get("spec_text", "")) + "</pre>",
        "<h2>Results</h2>",
        f"<figure>{scalar_plot(ds, main)}<figcaption>{html.escape(main)} over the swept parameters.</figcaption></figure>",
        "<h3>Summary of scalar outputs</h3>" + summary_table(ds, scalar_vars),
        "<h3>Outputs over the grid</h3>" + grid_table(ds, scalar_vars),
    ]
    if model.report_section is not None:
        parts.append(model.report_section(ds))
    if shards:
        rows = "".join(f"<tr><td>{s['shard']}</td><td>{html.escape(str(s['host']))}</td><td>{s['points']}</td>"
                       f"<td>{s['duration_s']}</td></tr>" for s in shards)
        parts.append("<h2>Execution</h2><table><tr><th>shard</th><th>host</th><th>points</th><th>seconds</th></tr>"
                     + rows + "</table>")
    del status_vars
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}pre{background:#f4f4f4;padding:1em}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Sweep {html.escape(name)}</title>"
            f"<style>{style}</style></head><body>" + "\n".join(parts) + "</body></html>")


def write_report(name: str, root: Path | None = None, output: str | Path | None = None) -> Path:
    out = Path(output) if output else store.report_path(name, root)
    write_atomic(out, build_report(name, root))
    return out
