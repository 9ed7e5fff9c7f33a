"""The report of an adaptive sweep (hpc.sweep.adaptive): the sampled points over the box coloured
by round, the learned output interpolated over the box from those points, the learner's loss
after each round, and how the rounds ran (shard jobs or dask, on Slurm or local: the rounds'
``execution`` records); read from the sweep's store alone (its ``point`` arrays and ``rounds``)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import zarr

from hpc.core import paths, timefmt
from hpc.core.files import write_atomic
from hpc.report.figures import Figures, pyplot
from hpc.report.render import Table, render
from hpc.sweep.adaptive import describe_execution


def load(name: str, root: Path | None = None) -> dict:
    """The store's merged points (each box parameter, round, outputs, finite, failed) and attributes."""
    group = zarr.open_group(str(paths.store_path(name, root)), mode="r", zarr_format=3)
    attrs = dict(group.attrs)
    n = sum(r["n"] for r in attrs.get("rounds", []))
    settings = attrs["adaptive"]
    data = {k: np.asarray(group[k][:n]) for k in [*settings["box"], "round", "finite", "failed", *settings["outputs"]]}
    units = {k: group[k].attrs.get("units", "") for k in [*settings["box"], *settings["outputs"]]}
    return {"attrs": attrs, "settings": settings, "data": data, "n": n, "units": units}


def _label(name: str, units: dict) -> str:
    return f"{name} ({units[name]})" if units.get(name) else name


def adaptive_section(name: str, root: Path | None = None, figures: Figures | None = None) -> dict:
    figures = figures or Figures()
    found = load(name, root)
    settings, data, units, attrs = found["settings"], found["data"], found["units"], found["attrs"]
    box = list(settings["box"])
    out = settings["outputs"][0]
    plt = pyplot()
    ok = data["finite"] & ~data["failed"]
    rounds = data["round"]
    figs = []
    # 1. The points over the box, coloured by round.
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    x = data[box[0]]
    y = data[box[1]] if len(box) > 1 else data[out]
    sc = ax.scatter(x, y, c=rounds, cmap="viridis", s=18, edgecolors="k", linewidths=0.3)
    fig.colorbar(sc, ax=ax, label="round")
    ax.set_xlabel(_label(box[0], units))
    ax.set_ylabel(_label(box[1] if len(box) > 1 else out, units))
    ax.set_title("Sampled points" + (" over the box" if len(box) > 1 else ""))
    figs.append(figures.add(fig, f"The {found['n']} points the learner asked for, coloured by the round that asked for them"
                            + (f" (the first two of {len(box)} parameters)." if len(box) > 2 else ".")))
    # 2. The learned output, interpolated from the points.
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    if len(box) == 1:
        order = np.argsort(x[ok])
        ax.plot(x[ok][order], data[out][ok][order], "-", lw=1)
        ax.set_xlabel(_label(box[0], units))
        ax.set_ylabel(_label(out, units))
        caption = f"{out} interpolated linearly between the sampled points."
    else:
        from scipy.interpolate import LinearNDInterpolator

        (x0, x1), (y0, y1) = settings["box"][box[0]], settings["box"][box[1]]
        gx, gy = np.meshgrid(np.linspace(x0, x1, 120), np.linspace(y0, y1, 120))
        if len(box) == 2 and ok.sum() >= 3:
            surface = LinearNDInterpolator(np.stack([x[ok], y[ok]], 1), data[out][ok].astype(float))(gx, gy)
            mesh = ax.pcolormesh(gx, gy, surface, shading="auto", cmap="magma")
            fig.colorbar(mesh, ax=ax, label=_label(out, units))
            caption = f"{out} interpolated linearly over the triangulation of the sampled points (black)."
        else:
            sc = ax.scatter(x[ok], y[ok], c=data[out][ok], cmap="magma", s=18)
            fig.colorbar(sc, ax=ax, label=_label(out, units))
            caption = f"{out} at the sampled points (first two parameters; no surface over more than two)."
        ax.plot(x[ok], y[ok], "k.", ms=2)
        ax.set_xlabel(_label(box[0], units))
        ax.set_ylabel(_label(box[1], units))
    ax.set_title(f"Learned {out}")
    figs.append(figures.add(fig, caption))
    # 3. The learner's loss per round (before each round, and at the stop).
    history = [(r["round"], sum(q["n"] for q in attrs["rounds"][: r["round"]]), r["loss_before"]) for r in attrs["rounds"]]
    final = attrs.get("final")
    if final:
        history.append((final["rounds"], found["n"], final["loss"]))
    finite = [(r, n, loss) for r, n, loss in history if loss is not None and math.isfinite(loss)]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if finite:
        ax.semilogy([n for _, n, _ in finite], [loss for _, _, loss in finite], "o-")
    ax.set_xlabel("points solved")
    ax.set_ylabel("learner's loss")
    ax.set_title("Loss per round")
    goal = settings["stop"].get("loss")
    if goal:
        ax.axhline(goal, color="grey", ls="--", lw=1, label="goal")
        ax.legend()
    figs.append(figures.add(fig, "The learner's loss over the points told to it, before each round and at the stop "
                            "(infinite while it has too few points, not drawn)."))
    table = Table(["round", "first point", "points", "shards", "loss before", "failed", "non-finite", "ran on"],
                  [[r["round"], r["first"], r["n"], r["shards"], r["loss_before"], r["failed"], r["non_finite"],
                    describe_execution(r.get("execution"))] for r in attrs["rounds"]], id="adaptive-rounds")
    return {"name": name, "model": attrs.get("model"), "spec_text": attrs.get("spec_text", ""),
            "settings": settings, "n": found["n"], "good": int(ok.sum()), "final": final, "figures": figs,
            "rounds": table, "execution": execution_summary(attrs["rounds"]), "learner": {1: "Learner1D", 2: "Learner2D"}.get(len(box), "LearnerND"),
            "spec": json.loads(attrs.get("spec", "{}"))}


def execution_summary(rounds: list[dict]) -> str:
    """How the rounds ran (their ``execution`` records, hpc.sweep.adaptive.round_execution): one
    phrase per way they ran, with the Slurm jobs, hosts and workers of those rounds together;
    "not recorded" for rounds merged before rounds recorded it."""
    if not rounds:
        return "no round merged yet"
    groups: dict[str, list[dict]] = {}
    unrecorded = 0
    for r in rounds:
        record = r.get("execution")
        if not record:
            unrecorded += 1
            continue
        how = {k: v for k, v in record.items() if k not in ("jobs", "hosts", "processes")}
        groups.setdefault(json.dumps(how, sort_keys=True), []).append(record)
    parts = []
    for records in groups.values():
        together = dict(records[0], jobs=list(dict.fromkeys(j for x in records for j in x.get("jobs") or [])),
                        hosts=sorted({h for x in records for h in x.get("hosts") or []}),
                        processes=sum(x.get("processes") or 0 for x in records))
        parts.append(f"{describe_execution(together)} ({len(records)} round{'s' * (len(records) != 1)})")
    if unrecorded:
        parts.append(f"not recorded ({unrecorded} round{'s' * (unrecorded != 1)})")
    return "; ".join(parts)


def build_adaptive_report(name: str, root: Path | None = None) -> str:
    from hpc.report.build import Section

    section = Section("adaptive", "Adaptive sampling", "adaptive.html.j2", adaptive_section(name, root))
    return render("page.html.j2", title=f"Adaptive sweep {name}", sections=[section], built=timefmt.epoch_text(time.time()))


def write_adaptive_report(name: str, root: Path | None = None, output: str | Path | None = None) -> Path:
    out = Path(output) if output else paths.report_path(name, root)
    write_atomic(out, build_adaptive_report(name, root))
    return out
