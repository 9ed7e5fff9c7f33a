"""The Training section: what a training run's ``train.zarr`` holds, as hpc.train writes it.

hpc.train.metrics writes per-step variables over ``step`` (loss, learning_rate, step_time,
samples_per_second) and per-evaluation ones over ``eval_step`` (heldout_rmse, heldout_max_error,
heldout_loss, train_rmse, train_max_error), and attributes: the spec (``spec``, normalized, as
JSON; ``spec_text`` as written), the data, normalization and layout, and one record per attempt
(``segments``, hpc.train.loop: first_step, last_step, restored_from, start, end, hosts, train_s,
compile_s, reason), then the final figures once finished.

The section: the store's facts, one curve per metric (its held-out and training variants in one
figure, on a log scale when it spans decades) with checkpoints and resumes marked, the attempts,
the spec as written, and every other attribute.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpc.core import timefmt, zarrio
from hpc.report.figures import Figure, Figures, is_numeric_array, pyplot, spans_decades
from hpc.report.formatting import fmt, label
from hpc.report.render import Table

EVENT_LINES = 40  # more events than this are listed, not drawn
ATTEMPT_KEYS = ("first_step", "last_step", "restored_from", "start", "end", "hosts", "train_s", "compile_s", "reason")
SHOWN_APART = ("spec_text", "segments", "spec")  # attributes the section shows in their own place
VARIANTS = ("train_", "heldout_")  # a metric on the training rows or the held-out points


@dataclass
class Training:
    store: str
    facts: list[tuple[str, str]]
    figures: list[Figure]
    attempts: Table
    spec_text: str
    records: list[tuple[str, list[tuple[str, str]]]]  # attributes that are mappings, one table each


def training_events(attrs: dict) -> dict[str, list[float]]:
    """Checkpoint and resume events of a training run, as steps, from its ``segments``.

    An attempt that starts from a checkpoint (``restored_from``) is a resume there; every attempt
    saves a checkpoint at its ``last_step`` (when it stops and when it ends), and at every multiple
    of the spec's ``checkpoint_every`` up to the last step run.
    """
    segments = attrs.get("segments") or []
    every = json.loads(attrs.get("spec") or "{}").get("checkpoint_every")
    last = max((int(s.get("last_step") or 0) for s in segments), default=0)
    checkpoints = [float(t) for t in range(int(every), last + 1, int(every))] if every and last else []
    checkpoints += [float(s["last_step"]) for s in segments if s.get("last_step")]
    resumes = [float(s["restored_from"]) for s in segments if s.get("restored_from")]
    events = {"checkpoint": sorted(set(checkpoints)), "resume": sorted(set(resumes))}
    return {k: v for k, v in events.items() if v}


def per_step_variables(ds) -> list[str]:
    """Numeric 1-D data variables (one value per step or per evaluation)."""
    return [str(name) for name, var in ds.data_vars.items()
            if var.ndim == 1 and var.dtype.kind in "iuf" and var.sizes[var.dims[0]] > 0]


def metric_group(name: str) -> str:
    """Curves of one metric share a figure: loss with heldout_loss, train_rmse with heldout_rmse."""
    low = name.lower()
    for prefix in VARIANTS:
        if low.startswith(prefix):
            return low[len(prefix):]
    return low


def _group_rank(group: str) -> tuple[int, str]:
    """Losses first, then other metrics, then rates and speed (learning rate, throughput, step time)."""
    if "loss" in group:
        return (0, group)
    if any(w in group for w in ("throughput", "time", "per_s", "rate", "speed")):
        return (2, group)
    return (1, group)


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


def _steps_text(steps: list[float]) -> str:
    if len(steps) > EVENT_LINES:
        return f"{len(steps)}, from step {fmt(steps[0])} to {fmt(steps[-1])}"
    return ", ".join(fmt(int(t) if float(t).is_integer() else t) for t in steps) or "none recorded"


def training_facts(ds, variables: list[str], events: dict[str, list[float]]) -> list[tuple[str, str]]:
    facts = [("per-step variables", ", ".join(variables) or "none"),
             ("recorded steps", ", ".join(f"{d}: {ds.sizes[d]}" for d in sorted({ds[v].dims[0] for v in variables})) or "none"),
             ("checkpoints", _steps_text(events.get("checkpoint", []))),
             ("resumes", _steps_text(events.get("resume", [])))]
    for v in variables:
        values = np.asarray(ds[v].values, float)
        finite = values[np.isfinite(values)]
        if finite.size:
            facts.append((f"{v}: last, min, max", f"{fmt(finite[-1])}, {fmt(finite.min())}, {fmt(finite.max())}"))
            if v == "step_time":
                facts.append((f"{v}: sum", timefmt.duration(float(finite.sum()))))
    others = [str(v) for v in ds.data_vars if str(v) not in variables]
    if others:
        facts.append(("other variables", ", ".join(others)))
    return facts


def training_curves(ds, variables: list[str], events: dict[str, list[float]], figures: Figures) -> list[Figure]:
    """One figure per metric, its variants together (the plain name first)."""
    plt = pyplot()
    groups: dict[str, list[str]] = {}
    for v in variables:
        groups.setdefault(metric_group(v), []).append(v)
    drawn = []
    for group in sorted(groups, key=_group_rank):
        members = sorted(groups[group], key=lambda v: (v.lower() != group, v))
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        values, xmax = [], None
        for v in members:
            var = ds[v]
            dim = var.dims[0]
            x = np.asarray(ds[dim].values) if dim in ds.coords else np.arange(var.sizes[dim])
            y = np.asarray(var.values, float)
            values.append(y)
            if np.isfinite(y).any() and is_numeric_array(x):
                xmax = max(xmax or -np.inf, float(x[np.isfinite(y)].max()))
            ax.plot(x, y, marker="o" if len(y) <= 30 else None, markersize=3, label=v)
        if spans_decades(np.concatenate(values)):
            ax.set_yscale("log")
        marks = _event_lines(ax, events, xmax)
        units = ds[members[0]].attrs.get("units", "")
        ax.set_xlabel(" / ".join(sorted({ds[v].dims[0] for v in members})))
        ax.set_ylabel(label(group, units))
        ax.set_title(f"{group} during training")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        docs = "; ".join(f"{v}: {ds[v].attrs['long_name']}" for v in members if ds[v].attrs.get("long_name"))
        drawn.append(figures.add(fig, f"{', '.join(members)} against the training step" + (f" ({docs})" if docs else "")
                                      + (f"; {' and '.join(marks)}" if marks else "") + "."))
    return drawn


def attempts_table(segments: list[dict]) -> Table:
    """One row per attempt of the run: where it started (a resume), where and why it stopped."""
    rows = [[i + 1] + [", ".join(map(str, s[k])) if isinstance(s.get(k), list) else s.get(k) for k in ATTEMPT_KEYS]
            for i, s in enumerate(segments)]
    return Table(["attempt", *ATTEMPT_KEYS], rows, id="training-attempts")


def _text(value) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def training_section(path: Path, figures: Figures) -> Training:
    ds = zarrio.open_dataset(path)
    variables = per_step_variables(ds)
    events = training_events(ds.attrs)
    facts = training_facts(ds, variables, events)
    records = []
    for key, value in ds.attrs.items():
        if key in SHOWN_APART:
            continue
        if isinstance(value, dict):
            records.append((key, [(k, _text(v)) for k, v in value.items()]))
        else:
            facts.append((key, _text(value)[:300]))
    return Training(
        store=str(path),
        facts=facts,
        figures=training_curves(ds, variables, events, figures),
        attempts=attempts_table(ds.attrs.get("segments") or []),
        spec_text=ds.attrs.get("spec_text") or "",
        records=records,
    )
