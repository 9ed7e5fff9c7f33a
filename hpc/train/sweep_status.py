"""Progress of a sweep of training runs (hpc.train.sweep), or of one training run: ``hpc status NAME``.

The sweep's points come from results/NAME/train-sweep.json (hpc.train.sweep.write_points: each
point's run name, digest, steps and settings, written by the workflow before any point trains).
Each point is an ordinary training run under results/NAME/points/pNNN/, and its state is read
from its files:

- ``done``: its completion marker (train.json) holds the point's digest; its held-out RMSE is the
  marker's (the last evaluation);
- ``failed``: no such marker, and its log (logs/train.log) ends the way a dead job's does (a
  Python traceback, or Slurm's CANCELLED / TIME LIMIT / oom-kill lines: hpc.sweep.status.log_failure);
- ``running``: it has started (its train.zarr of this digest, its log or its checkpoints exist)
  and has not finished; a run stopped by SIGTERM that waits to be requeued shows as running,
  with the attempt's reason;
- ``not started``: nothing of it yet (or only a run of another spec in its folder, named).

and, for a point not done, from Slurm where Slurm knows the point's jobs (its accounting and its
queue, read by hpc.sweep.status.slurm_jobs as for a grid sweep): the point's latest job decides,
``queued`` (PENDING, with Slurm's reason, or requeued), ``running`` (on its nodes) or ``failed``
(FAILED, CANCELLED, OUT_OF_MEMORY, TIMEOUT, NODE_FAIL, ..., or COMPLETED without the marker; with
the job id and whether it died before the first checkpoint). A Slurm job is taken for point pNNN's
when the Slurm plugin's comment is ``rule_train_wildcards_pNNN`` (or, where that was not kept, its
log is under ``slurm_logs/rule_train/pNNN/``), its working directory holds the results root, it was
submitted after the points were recorded (train-sweep.json's time, less a minute) and, where the
submit line names it (``--config train=SPEC``), its spec is this sweep's. Without Slurm (a local
run), or where Slurm knows no job of the sweep, the states are the files' alone, as above.

One training run (a spec without ``sweep:``; results/NAME/train.zarr, rule ``train`` without
wildcards) is shown as a sweep of one point, ``-``, read the same way: from its files, and from
its Slurm jobs, those whose comment is the plugin's ``rule_train`` (or, where that was not kept,
whose log is ``slurm_logs/rule_train/JOBID.log``), whose working directory holds the results root
and, where the submit line names the spec, whose spec's ``name`` is NAME (a folder may run several
training runs one after the other; a job whose spec can no longer be read is not taken). Such a
run is shown while its job waits in the queue, before any of its files exists, and a job cancelled,
timed out or killed before the run wrote anything shows it failed.

A job that only Slurm's queue knows (the accounting lags a few seconds behind a submission, or the
site keeps none) has no submit line: its batch script, which holds the workflow's command
(``scontrol write batch_script``), is read instead while Slurm keeps the job.

The step is the last one train.zarr holds a loss for (a resumed run rewrites the steps after its
checkpoint, so it may go back a little after a preemption).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import TextIO

import numpy as np

from hpc.core import paths, specfile, zarrio
from hpc.core.errors import SpecError
from hpc.sweep import status as grid
from hpc.sweep.status import log_failure
from hpc.train.sweep import read_points

STATES = ("done", "running", "queued", "failed", "not started")
TRAIN_COMMENT = re.compile(r"^rule_train_wildcards_(p\d+)$")  # the Slurm plugin's --comment of a point's job
TRAIN_SLURM_LOG = re.compile(r"/rule_train/(p\d+)/[^/]*$")  # the plugin's --output for it
RUN = "-"  # the one point of a training run that is not a sweep's
RUN_COMMENT = "rule_train"  # the plugin's --comment of its job (rule train, no wildcards)
RUN_SLURM_LOG = re.compile(r"/rule_train/\d+\.log$")  # the plugin's --output for it (%j.log; never an array task)


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


# --------------------------------------------------------------------------------------------
# Slurm: which jobs are a point's (read by hpc.sweep.status, as for a grid sweep)


def _point_of(job: dict) -> str | None:
    """The point whose job ``job`` is (``RUN``: a training run's that is not a sweep's), or None."""
    comment = job.get("comment") or ""
    if comment:
        match = TRAIN_COMMENT.match(comment)
        return RUN if comment == RUN_COMMENT else match.group(1) if match else None
    log = job.get("slurm_log") or ""  # a comment that sacct did not keep: the plugin's log path
    match = TRAIN_SLURM_LOG.search(log)
    return RUN if RUN_SLURM_LOG.search(log) else match.group(1) if match else None


def _spec_of(job: dict) -> Path | None:
    """The training spec a job's workflow was given (``--config train=SPEC`` in the command that
    its submit line wraps), relative paths taken from the job's working directory; None where the
    submit line is not known or names none. A job that only the queue knows (the accounting lags
    by a few seconds, or the site has none) has its batch script read instead (sbatch --wrap's
    command: ``scontrol write batch_script``) while Slurm keeps it."""
    line = job.get("submit_line") or ""
    if not line and job.get("source") == "squeue" and grid.normal_state(job.get("state") or "") in \
            grid.PENDING_STATES | grid.RUNNING_STATES:
        line = _batch_script(job["job_id"])
    if "--config" not in line:
        return None
    try:
        words = shlex.split(line.replace("--wrap=", "--wrap "))
    except ValueError:
        return None
    for i, word in enumerate(words):
        if word != "--config":
            continue
        for value in words[i + 1:]:
            if value.startswith("-"):
                break
            if value.startswith("train="):
                spec = Path(value.removeprefix("train="))
                return spec if spec.is_absolute() else Path(job.get("workdir") or ".") / spec
    return None


def _batch_script(job_id: str) -> str:
    """The batch script of a job Slurm still holds, or "" where it cannot be read."""
    if not shutil.which("scontrol"):
        return ""
    try:
        result = subprocess.run(["scontrol", "write", "batch_script", job_id, "-"], capture_output=True, text=True,
                                timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout if result.returncode == 0 else ""


def _same_file(a: Path, b: str) -> bool:
    try:
        return a.resolve() == Path(b).resolve()
    except OSError:
        return str(a) == b


def _spec_name(spec: Path, names: dict) -> str | None:
    """The ``name`` in the YAML of the spec file ``spec`` (read once per status: ``names``), or None
    where it cannot be read."""
    if spec not in names:
        try:
            data = specfile.read_spec_file(spec)[1]
        except (SpecError, OSError, UnicodeDecodeError):
            data = None
        names[spec] = str(data["name"]) if isinstance(data, dict) and "name" in data else None
    return names[spec]


def point_jobs(jobs: list[dict], record: dict, root: Path, since: float | None) -> dict[str, list[dict]]:
    """The Slurm jobs of each point of the sweep ``record`` (read_points), oldest first: see the
    module docstring for the match. ``since``: when the points were recorded (epoch seconds; None:
    any time). A record of kind ``train`` (``{"kind": "train", "name": NAME, "points": [{"point":
    RUN}]}``) is one training run's: its jobs are rule train's without wildcards whose spec names NAME."""
    points = {p["point"] for p in record["points"]}
    spec_file = record.get("spec_file") or ""
    one_run = record.get("kind") == "train"
    names: dict = {}
    found: dict[str, list[dict]] = {}
    for job in jobs:
        point = _point_of(job)
        if point not in points or not grid._holds(job.get("workdir", ""), root):
            continue
        if since is not None and job.get("submit") is not None and job["submit"] < since - 60:
            continue  # a job of an earlier sweep under this name
        spec = _spec_of(job)
        if spec is not None and one_run and _spec_name(spec, names) != record["name"]:
            continue  # another training run's, run from the same folder (or a spec that is gone)
        if spec is not None and spec_file and not _same_file(spec, spec_file):
            continue  # another sweep's point of the same name, run from the same folder
        found.setdefault(point, []).append(job)
    for point_jobs_ in found.values():
        point_jobs_.sort(key=lambda j: [int(n) for n in re.findall(r"\d+", j["job_id"])])
    return found


def _last_checkpoint(name: str, root: Path | None) -> int | None:
    """The step of the run's latest complete checkpoint (orbax names each by its step; one being
    written has a temporary name), or None."""
    try:
        with os.scandir(paths.checkpoint_dir(name, root)) as listing:
            steps = [int(e.name) for e in listing if e.name.isdigit()]
    except (FileNotFoundError, NotADirectoryError):
        return None
    return max(steps) if steps else None


def _job_record(jobs: list[dict]) -> dict:
    """What status shows of a point's latest job (the keys of hpc.sweep.status's shard records)."""
    latest = jobs[-1]
    run = [j for j in jobs if j.get("job_name") == latest.get("job_name")]  # this workflow run's: its attempts
    return {"job_id": latest["job_id"], "slurm_state": grid.normal_state(latest["state"]),
            "slurm_state_text": latest["state"], "nodes": latest.get("nodes") or "",
            "exit_code": latest.get("exit_code"), "signal": latest.get("signal"), "attempts": len(run),
            "restarts": latest.get("restarts") or 0, "reason": latest.get("reason"),
            "slurm_log": latest.get("slurm_log"), "jobs": [j["job_id"] for j in jobs]}


def point_status(name: str, digest: str | None, steps: int | None, root: Path | None = None,
                 jobs: list[dict] | None = None) -> dict:
    """The state of training run ``name`` made from the spec of ``digest`` (None: whichever its
    store holds) under ``root``: state, step, steps, held-out RMSE (done), failure, notes, and
    ``job``: its latest Slurm job of ``jobs`` (its Slurm jobs, oldest first), which decides the
    state of a run not done (None without Slurm jobs)."""
    record = {"name": name, "state": "not started", "step": 0, "steps": steps, "heldout_rmse": None,
              "units": "", "failure": None, "note": None, "log": str(paths.train_log_path(name, root)),
              "job": None}
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
    if jobs and record["state"] != "done":
        _from_slurm(record, _job_record(jobs), root)
    return record


def _from_slurm(record: dict, job: dict, root: Path | None) -> None:
    """The state of a run not done, from its latest Slurm job: queued, running or failed."""
    record["job"] = job
    state = job["slurm_state"]
    if state in grid.FAILED_STATES:
        checkpoint = _last_checkpoint(record["name"], root)
        when = "before the first checkpoint" if checkpoint is None else f"last checkpoint at step {checkpoint}"
        what = grid._job_text(job) + (" without writing its marker" if state == "COMPLETED" else "") + ", " + when
        record.update(state="failed", failure=f"{record['failure']}; {what}" if record["failure"] else what)
        return
    if state not in grid.PENDING_STATES | grid.RUNNING_STATES:
        return  # a state this code does not know: the files' word stands
    record["state"] = "queued" if state in grid.PENDING_STATES else "running"
    if record["failure"]:  # the log's last lines: of the attempt before (queued), or of this one
        note = (f"the attempt before failed: {record['failure']}" if record["state"] == "queued"
                else f"its log ends in: {record['failure']}")
        record.update(note=f"{record['note']}; {note}" if record["note"] else note, failure=None)


def _slurm_point_jobs(jobs: list[dict] | None | bool, record: dict, root: Path, since: float | None,
                      sources) -> tuple[dict[str, list[dict]], list[str]]:
    """point_jobs of Slurm's answer (``jobs``: True asks it, False does not, a list is its answer),
    and which sources answered."""
    answered: list[str] = []
    if jobs is True:
        jobs, answered = grid.slurm_jobs(since, sources)
    elif jobs is False:
        jobs = None
    else:
        answered = ["given"]
    return (point_jobs(jobs, record, root, since) if jobs is not None else {}), answered


def train_sweep_status(name: str, root: Path | None = None, *, jobs: list[dict] | None | bool = True,
                       sources=("sacct", "squeue")) -> dict:
    """Every point of the sweep of training runs ``name``: its settings and point_status.

    ``jobs``: True asks Slurm (``sources``: its accounting, sacct, and its queue, squeue, as
    hpc.sweep.status.slurm_jobs does for a grid sweep) where it is there; False does not; a list is
    taken as Slurm's answer (tests)."""
    root = Path(root) if root is not None else paths.RESULTS_ROOT
    record = read_points(name, root)
    if record is None:
        raise SpecError("name", f"{paths.train_sweep_path(name, root)} not found", "run the workflow first")
    try:
        since = paths.train_sweep_path(name, root).stat().st_mtime
    except OSError:
        since = None
    by_point, answered = _slurm_point_jobs(jobs, record, root, since, sources)
    points = [{"point": p["point"], "settings": p["settings"],
               **point_status(p["name"], p["digest"], p["steps"], root, by_point.get(p["point"]))}
              for p in record["points"]]
    done = [p for p in points if p["state"] == "done" and p["heldout_rmse"] is not None]
    best = min(done, key=lambda p: p["heldout_rmse"] if np.isfinite(p["heldout_rmse"]) else np.inf) if done else None
    report = paths.report_path(name, root)
    return {"kind": "train_sweep", "name": name, "spec_file": record.get("spec_file", ""), "points": points,
            "counts": {s: sum(p["state"] == s for p in points) for s in STATES},
            "best": best and best["point"], "report": str(report) if report.exists() else None,
            "slurm_sources": answered, "slurm_jobs": sum(len(js) for js in by_point.values())}


def train_run_status(name: str, root: Path | None = None, *, jobs: list[dict] | None | bool = True,
                     sources=("sacct", "squeue")) -> dict:
    """One training run (results/NAME/train.zarr), as a sweep of one point (``RUN``), from its files
    and its Slurm jobs (``jobs``, ``sources``: as for train_sweep_status). Its ``slurm_jobs`` counts
    them: a run that nothing is on disk of yet is known to Slurm alone where that is not 0."""
    root = Path(root) if root is not None else paths.RESULTS_ROOT
    by_point, answered = _slurm_point_jobs(jobs, {"kind": "train", "name": name, "points": [{"point": RUN}]},
                                           root, None, sources)
    point = {"point": RUN, "settings": {}, **point_status(name, None, None, root, by_point.get(RUN))}
    report = paths.report_path(name, root)
    return {"kind": "train", "name": name, "spec_file": "", "points": [point],
            "counts": {s: int(point["state"] == s) for s in STATES}, "best": None,
            "report": str(report) if report.exists() else None,
            "slurm_sources": answered, "slurm_jobs": len(by_point.get(RUN, []))}


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
        job = p.get("job")
        slurm_log = f", Slurm's log: {job['slurm_log']}" if job and job.get("slurm_log") else ""
        if p["failure"]:
            lines.append(f"{label}: failed: {p['failure']} (log: {p['log']}{slurm_log})")
        elif job and p["state"] == "queued":
            lines.append(f"{label}: queued: {grid._job_text(job)}" + (f"; reason: {job['reason']}" if job["reason"] else ""))
        elif job and p["state"] == "running":
            lines.append(f"{label}: running: {grid._job_text(job)} (log: {p['log']}{slurm_log})")
        if p["note"]:
            lines.append(f"{label}: {p['note']}")
    if status["best"]:
        best = next(p for p in points if p["point"] == status["best"])
        lines.append(f"best so far: {best['point']} (held-out RMSE {_number(float(best['heldout_rmse']))})"
                     if counts["done"] < len(points) else
                     f"best: {best['point']} (held-out RMSE {_number(float(best['heldout_rmse']))})")
    if status["report"]:
        lines.append(f"report: {status['report']}")
    if status.get("slurm_jobs"):
        asked = {"sacct": "Slurm's accounting (sacct)", "squeue": "Slurm's queue (squeue)", "given": "Slurm's jobs"}
        slurm = " and ".join(asked[s] for s in status.get("slurm_sources", []) if s in asked)
        lines.append(f"from the points' files and {slurm}: {status['slurm_jobs']} jobs of this sweep"
                     if status["kind"] == "train_sweep" else
                     f"from the run's files and {slurm}: {status['slurm_jobs']} jobs of this run")
    return "\n".join(lines)


def watch_train(name: str, root: Path | None, interval: float, stream: TextIO, kind: str = "train_sweep",
                jobs: bool = True, sources=("sacct", "squeue")) -> int:
    """Print the status every ``interval`` seconds; 0 once every point is done, 1 once none is
    left to run (each done or failed, some failed) on two refreshes in a row. ``jobs``, ``sources``:
    whether and where to ask Slurm (train_sweep_status)."""
    stuck = 0
    while True:
        status = (train_sweep_status(name, root, jobs=jobs, sources=sources) if kind == "train_sweep"
                  else train_run_status(name, root, jobs=jobs, sources=sources))
        print(format_train_status(status), file=stream, flush=True)
        counts = status["counts"]
        if counts["done"] == len(status["points"]):
            return 0
        stuck = stuck + 1 if counts["failed"] and counts["done"] + counts["failed"] == len(status["points"]) else 0
        if stuck >= 2:
            return 1
        time.sleep(interval)
        print(file=stream)
