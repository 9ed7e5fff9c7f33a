"""The Summary section: the sweep, its model, point counts, compute and wall time, throughput,
hosts and devices, provenance, the swept parameters and the spec as written."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpc.core import timefmt
from hpc.report.figures import is_numeric_array
from hpc.report.formatting import fmt
from hpc.report.render import Table
from hpc.report.sweep_data import Sweep


@dataclass
class Summary:
    name: str
    aggregated: bool
    model: str
    model_doc: str
    grid: str
    precision: str
    total: int
    done: int
    good: int  # computed, converged and finite
    raised: int
    not_converged: int
    not_finite: int
    shards: int
    compute_s: float
    wall_s: float | None
    span_s: float | None  # planning to aggregation
    throughput: float | None  # points per second of wall time
    hosts: list[str]
    devices: list[str]
    max_devices: int | None
    created: str | None
    completed: str | None
    git_commit: str
    versions: dict
    parameters: Table
    spec_text: str
    model_source: str = ""  # a model not built in: its file (or module, package) and the source's sha256


def execution_totals(shards: list[dict], points: int) -> dict:
    """Compute time (summed over shards), wall time (first start to last end), throughput,
    hosts, and devices (as host/device, from the markers' per-process records when present)."""
    starts = [float(s["start"]) for s in shards if s.get("start") is not None]
    ends = [float(s["end"]) for s in shards if s.get("end") is not None]
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


def _parameter(model, name):
    try:
        return model.parameter(name)
    except KeyError:
        return None


def _spec_as_yaml(spec: dict) -> str:
    import yaml

    return yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=100)


def swept_parameters(sweep: Sweep) -> Table:
    rows = []
    for a in sweep.axes:
        for pname, values in a.values.items():
            p = _parameter(sweep.model, pname)
            arr = np.asarray(values)
            span = (f"{fmt(arr.min())} … {fmt(arr.max())}" if is_numeric_array(arr) else
                    ", ".join(fmt(v) for v in values[:8]) + (" …" if len(values) > 8 else ""))
            rows.append([a.name, a.kind, pname, p.doc if p else "", p.unit if p else "", len(values), span])
    return Table(["dimension", "kind", "parameter", "meaning", "units", "values", "range"], rows,
                 id="swept-parameters")


def summary_section(sweep: Sweep) -> Summary:
    ds = sweep.ds
    done = sweep.done
    n_done = int(done.sum())
    finite, converged, raised = sweep.flag("finite"), sweep.flag("converged"), sweep.raised
    totals = execution_totals(sweep.shards, n_done)
    created, completed = ds.attrs.get("created"), ds.attrs.get("completed")
    start, end = timefmt.iso_epoch(created), timefmt.iso_epoch(completed)
    return Summary(
        name=sweep.name,
        aggregated=bool(completed),
        model=sweep.model.name,
        model_doc=sweep.model.doc,
        grid=" × ".join(f"{a.name}[{a.size}]" for a in sweep.axes) or "one point",
        precision=ds.attrs.get("precision", ""),
        total=int(done.size),
        done=n_done,
        good=n_done - int(sweep.failed.sum()),
        raised=int(raised.sum()),
        not_converged=int((done & ~converged & ~raised).sum()),
        not_finite=int((done & ~finite & ~raised).sum()),
        shards=len(sweep.shards),
        compute_s=totals["compute_s"],
        wall_s=totals["wall_s"],
        span_s=(end - start) if start is not None and end is not None else None,
        throughput=totals["throughput"],
        hosts=totals["hosts"],
        devices=totals["devices"],
        max_devices=totals["max_devices"],
        created=created,
        completed=completed,
        git_commit=ds.attrs.get("git_commit", "unknown"),
        versions=ds.attrs.get("versions") or {},
        parameters=swept_parameters(sweep),
        spec_text=ds.attrs.get("spec_text") or _spec_as_yaml(sweep.spec),
        model_source=model_source_text(ds.attrs.get("model_source")),
    )


def model_source_text(source: dict | None) -> str:
    """``/x/growth.py:MODEL, sha256 1a2b...`` for a model not built in ('' for a built-in one)."""
    if not source:
        return ""
    parts = [source.get("ref") or source.get("written", "")]
    if source.get("kind") == "entry_point" and source.get("module"):
        parts[0] += f" = {source['module']}:{source.get('attr')}"
    if source.get("distribution"):
        parts.append(f"package {source['distribution']} {source.get('version') or ''}".strip())
    if source.get("sha256"):
        parts.append(f"sha256 {source['sha256']}")
    return ", ".join(parts)
