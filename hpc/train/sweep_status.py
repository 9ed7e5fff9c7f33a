"""Progress of a sweep of training runs (hpc.train.sweep), or of one training run: ``hpc status NAME``.

The sweep's points come from results/NAME/train-sweep.json (hpc.train.sweep.write_points: each
point's run name, digest, steps and settings, written by the workflow before any point trains).
Each point is an ordinary training run under results/NAME/points/pNNN/, and its state is read
from its files alone (not from Slurm):

- ``done``: its completion marker (train.json) holds the point's digest; its held-out RMSE is the
  marker's (the last evaluation);
- ``failed``: no such marker, and its log (logs/train.log) ends the way a dead job's does (a
  Python traceback, or Slurm's CANCELLED / TIME LIMIT / oom-kill lines: hpc.sweep.status.log_failure);
- ``running``: it has started (its train.zarr of this digest, its log or its checkpoints exist)
  and has not finished; a run stopped by SIGTERM that waits to be requeued shows as running,
  with the attempt's reason;
- ``not started``: nothing of it yet (or only a run of another spec in its folder, named).

The step is the last one train.zarr holds a loss for (a resumed run rewrites the steps after its
checkpoint, so it may go back a little after a preemption).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TextIO

import numpy as np

from hpc.core import paths, zarrio
from hpc.core.errors import SpecError
from hpc.sweep.status import log_failure
from hpc.train.sweep import read_points

STATES = ("done", "running", "failed", "not started")


def _tail(path: Path, size: int = 4000) -> str:
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - size))
        return f.read().decode("utf-8", "replace")


def _last_step(loss) -> int:
    """The last step with a loss written: the chunks read from the end until one holds a value (a
    chunk not written yet costs no read), so a long run's status does not read every step."""
    size = loss.chunks[0]
    for start in range(((loss.shape[0] - 1) // size) * size, -1, -size):
        written = np.flatnonzero(np.isfinite(np.asarray(loss[start:start + size])))
        if written.size:
            return start + int(written[-1]) + 1
    return 0


def point_status(name: str, digest: str | None, steps: int | None, root: Path | None = None) -> dict:
    """The state of training run ``name`` made from the spec of ``digest`` (None: whichever its
    store holds) under ``root``: state, step, steps, held-out RMSE (done), failure, notes."""
    record = {"name": name, "state": "not started", "step": 0, "steps": steps, "heldout_rmse": None,
              "units": "", "failure": None, "note": None, "log": str(paths.train_log_path(name, root))}
    store = paths.train_store_path(name, root)
    attrs = zarrio.read_attrs(store)
    digest = digest or attrs.get("digest")
    started = False
    if attrs:
        if attrs.get("digest") != digest:
            record["note"] = f"{store.parent} holds a run of another spec (digest {attrs.get('digest')})"
        else:
            started = True
            import zarr

            loss = zarr.open_group(str(store), mode="r")["loss"]
            record["step"] = _last_step(loss)
            record["steps"] = record["steps"] or loss.shape[0]
            segments = attrs.get("segments") or []
            if segments and str(segments[-1].get("reason", "")).startswith("stopped"):
                record["note"] = (f"attempt {len(segments)} {segments[-1]['reason']} at step "
                                  f"{segments[-1].get('last_step')}; it resumes from its checkpoint when it runs again")
    try:
        marker = json.loads(paths.train_marker_path(name, root).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        marker = None
    log = paths.train_log_path(name, root)
    if marker is not None and marker.get("digest") == digest:
        record.update(state="done", step=marker.get("steps") or record["steps"], heldout_rmse=marker.get("heldout_rmse"),
                      units=marker.get("units") or "", note=None)
        record["steps"] = record["steps"] or record["step"]
    elif log.exists() and (reason := log_failure(_tail(log))):
        record.update(state="failed", failure=reason)
    elif started or log.exists() or paths.checkpoint_dir(name, root).exists():
        record["state"] = "running"
    return record


def train_sweep_status(name: str, root: Path | None = None) -> dict:
    """Every point of the sweep of training runs ``name``: its settings and point_status."""
    root = Path(root) if root is not None else paths.RESULTS_ROOT
    record = read_points(name, root)
    if record is None:
        raise SpecError("name", f"{paths.train_sweep_path(name, root)} not found", "run the workflow first")
    points = [{"point": p["point"], "settings": p["settings"], **point_status(p["name"], p["digest"], p["steps"], root)}
              for p in record["points"]]
    done = [p for p in points if p["state"] == "done" and p["heldout_rmse"] is not None]
    best = min(done, key=lambda p: p["heldout_rmse"] if np.isfinite(p["heldout_rmse"]) else np.inf) if done else None
    report = paths.report_path(name, root)
    return {"kind": "train_sweep", "name": name, "spec_file": record.get("spec_file", ""), "points": points,
            "counts": {s: sum(p["state"] == s for p in points) for s in STATES},
            "best": best and best["point"], "report": str(report) if report.exists() else None}


def train_run_status(name: str, root: Path | None = None) -> dict:
    """One training run (results/NAME/train.zarr), as a sweep of one point."""
    root = Path(root) if root is not None else paths.RESULTS_ROOT
    point = {"point": "-", "settings": {}, **point_status(name, None, None, root)}
    report = paths.report_path(name, root)
    return {"kind": "train", "name": name, "spec_file": "", "points": [point],
            "counts": {s: int(point["state"] == s) for s in STATES}, "best": None,
            "report": str(report) if report.exists() else None}


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_train_status(status: dict) -> str:
    """The status as a table, one row per point."""
    points, counts = status["points"], status["counts"]
    what = "sweep of training runs" if status["kind"] == "train_sweep" else "training run"
    head = f"{what} {status['name']}" + (f" ({status['spec_file']})" if status["spec_file"] else "")
    lines = [head + ": " + (f"{len(points)} points: " if status["kind"] == "train_sweep" else "") +
             ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s])]
    settings = list(points[0]["settings"]) if points and status["kind"] == "train_sweep" else []
    header = (["point"] if status["kind"] == "train_sweep" else []) + settings + ["state", "step", "held-out RMSE"]
    rows = []
    for p in points:
        step = f"{p['step']}/{p['steps']}" if p["steps"] else str(p["step"])
        rmse = "" if p["heldout_rmse"] is None else _number(float(p["heldout_rmse"])) + (f" {p['units']}" if p["units"] else "")
        rows.append(([p["point"]] if status["kind"] == "train_sweep" else []) +
                    [_number(p["settings"][s]) for s in settings] + [p["state"], step, rmse])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    for p in points:
        label = p["point"] if status["kind"] == "train_sweep" else p["name"]
        if p["failure"]:
            lines.append(f"{label}: failed: {p['failure']} (log: {p['log']})")
        if p["note"]:
            lines.append(f"{label}: {p['note']}")
    if status["best"]:
        best = next(p for p in points if p["point"] == status["best"])
        lines.append(f"best so far: {best['point']} (held-out RMSE {_number(float(best['heldout_rmse']))})"
                     if counts["done"] < len(points) else
                     f"best: {best['point']} (held-out RMSE {_number(float(best['heldout_rmse']))})")
    if status["report"]:
        lines.append(f"report: {status['report']}")
    return "\n".join(lines)


def watch_train(name: str, root: Path | None, interval: float, stream: TextIO, kind: str = "train_sweep") -> int:
    """Print the status every ``interval`` seconds; 0 once every point is done, 1 once none is
    left to run (each done or failed, some failed) on two refreshes in a row."""
    stuck = 0
    while True:
        status = train_sweep_status(name, root) if kind == "train_sweep" else train_run_status(name, root)
        print(format_train_status(status), file=stream, flush=True)
        counts = status["counts"]
        if counts["done"] == len(status["points"]):
            return 0
        stuck = stuck + 1 if counts["failed"] and counts["done"] + counts["failed"] == len(status["points"]) else 0
        if stuck >= 2:
            return 1
        time.sleep(interval)
        print(file=stream)
