"""Progress of a sweep, read from its plan, its completion markers, its store and Slurm's queue.

A shard is
- ``done`` when its completion marker for this plan exists;
- otherwise, where Slurm knows the shard's jobs (``squeue``), what its latest job says:
  ``pending`` (queued), ``running``, or ``failed`` (failed, cancelled, timed out, out of memory,
  node failure, or completed without writing its marker);
- otherwise (no scheduler: a local run) ``failed`` when its log ends in an error, ``running``
  when it has started (a log, or committed chunks), else ``pending``.

Snakemake's Slurm executor plugin submits every job with ``--job-name`` set to the workflow run's
uuid, ``--comment rule_<rule>_wildcards_<values>`` (here ``rule_run_shard_wildcards_0003``) and
``-D`` the workflow's working directory. A Slurm job is taken to be one of this sweep's shard jobs
when its comment names ``run_shard``, its working directory holds the results root, and it was
submitted after the store was created. (Two sweeps running at once from one working directory
cannot be told apart this way. A shard's completion marker records the id of the job that
committed it, ``job_id``, which names a done shard's job once Slurm has forgotten it; a shard
still queued or running has no marker yet, so the queue is what finds its jobs.)
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np

from hpc.core import paths, timefmt, zarrio
from hpc.core.errors import SpecError
from hpc.sweep import store
from hpc.sweep.plan import read_plan

SHARD_COMMENT = re.compile(r"^rule_run_shard_wildcards_(\d+)$")
SQUEUE_FIELDS = ("job_id", "job_name", "comment", "state", "submit", "start", "end", "nodes", "reason", "workdir")
SQUEUE_FORMAT = "%i|%j|%k|%T|%V|%S|%e|%N|%r|%Z"  # workdir last: the one field that may hold a '|'
PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED",
                  "STOPPED", "SIGNALING"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "STAGE_OUT"}
FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
                 "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "COMPLETED"}  # COMPLETED here: no marker was written
ERROR_LINE = re.compile(r"Traceback|Error|failed:|Killed|CANCELLED|DUE TO TIME LIMIT")
PROGRESS_LINE = re.compile(r"^shard \d+: (\d+)/(\d+) points \(", re.M)  # hpc.sweep.runner's progress lines


shard_log_path = paths.shard_log_path  # where workflow/rules/sweep.smk sends a shard job's stderr


# --------------------------------------------------------------------------------------------
# Slurm


def squeue_jobs(runner=subprocess.run) -> list[dict] | None:
    """Every job Slurm still lists (``squeue -t all``), or None where there is no Slurm to ask."""
    if not shutil.which("squeue"):
        return None
    try:
        result = runner(["squeue", "-h", "-t", "all", "-o", SQUEUE_FORMAT], capture_output=True, text=True,
                        timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    jobs = []
    for line in result.stdout.splitlines():
        parts = line.split("|", len(SQUEUE_FIELDS) - 1)
        if len(parts) != len(SQUEUE_FIELDS):
            continue
        job = dict(zip(SQUEUE_FIELDS, (p.strip() for p in parts)))
        for key in ("submit", "start", "end"):
            job[key] = timefmt.iso_epoch(job[key])  # the cluster's local time, no zone; None for N/A
        jobs.append(job)
    return jobs


def _holds(workdir: str, root: Path) -> bool:
    """The job's working directory is the results root's parent or another ancestor of it."""
    if not workdir or workdir in ("(null)", "N/A"):
        return False
    try:
        return root.resolve().is_relative_to(Path(workdir).resolve())
    except OSError:
        return False


def sweep_jobs(jobs: list[dict], n_shards: int, root: Path, created: float | None) -> dict[int, list[dict]]:
    """This sweep's shard jobs, by shard, oldest first (see the module docstring for the match)."""
    found: dict[int, list[dict]] = {}
    for job in jobs:
        match = SHARD_COMMENT.match(job.get("comment", ""))
        if not match or int(match.group(1)) >= n_shards or not _holds(job.get("workdir", ""), root):
            continue
        if created is not None and job.get("submit") is not None and job["submit"] < created - 60:
            continue  # a job of an earlier sweep under this name
        found.setdefault(int(match.group(1)), []).append(job)
    for shard_jobs in found.values():
        shard_jobs.sort(key=lambda j: int(re.sub(r"\D.*", "", j["job_id"]) or 0))
    return found


# --------------------------------------------------------------------------------------------
# The status


def _log_tail(path: Path, size: int = 4000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - size))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def log_progress(path: Path) -> float | None:
    """The fraction of its points a running shard has solved, from its log's last progress line.

    The runner commits a shard's chunks once it has solved them, so between commits the log is
    the only sign of progress. (With several processes, the line is one process's own.)
    """
    found = PROGRESS_LINE.findall(_log_tail(path))
    if not found:
        return None
    done, total = map(int, found[-1])
    return done / total if total else None


def sweep_status(name: str, root: Path | None = None, *, jobs: list[dict] | None | bool = True,
                 now: float | None = None) -> dict:
    """Shards done, running, pending and failed, points done, throughput and time left.

    ``jobs``: True asks Slurm (``squeue``) when it is there; False does not; a list is taken as
    squeue's answer (tests).
    """
    root = Path(root) if root is not None else paths.RESULTS_ROOT
    path = paths.plan_path(name, root)
    if not path.exists():
        raise SpecError("name", f"no planned sweep {name!r} under {paths.sweep_dir(name, root).parent}",
                        "run the workflow (or `hpc plan SPEC --output ...`) first")
    now = time.time() if now is None else now
    plan = read_plan(path)
    attrs = zarrio.read_attrs(paths.store_path(name, root))
    markers = store.valid_markers(plan, root)
    group = store.open_arrays(name, root, mode="r")
    done = np.asarray(group["point_done"][...], bool)
    finite = np.asarray(group["finite"][...], bool)
    converged = np.asarray(group["converged"][...], bool) if "converged" in group else np.ones_like(done)
    raised = np.asarray(group["failed"][...], bool) if "failed" in group else np.zeros_like(done)
    flagged = np.argwhere(done & (raised | ~(finite & converged)))
    owner = np.asarray(group["shard_index"][...])
    committed = np.bincount(owner[done].ravel(), minlength=plan.n_shards)

    created = timefmt.iso_epoch(attrs.get("created"))
    if jobs is True:
        jobs = squeue_jobs()
    elif jobs is False:
        jobs = None
    by_shard = sweep_jobs(jobs, plan.n_shards, root, created) if jobs is not None else {}

    shards = []
    for shard in range(plan.n_shards):
        record = {"shard": shard, "points": plan.shard_points(shard), "committed": int(committed[shard]),
                  "jobs": by_shard.get(shard, [])}
        latest = record["jobs"][-1] if record["jobs"] else None
        log = shard_log_path(name, shard, root)
        if shard in markers:
            state = "done"
        elif latest is not None:
            slurm_state = latest["state"].split()[0].rstrip("+")
            state = ("pending" if slurm_state in PENDING_STATES else "running" if slurm_state in RUNNING_STATES
                     else "failed" if slurm_state in FAILED_STATES else "running")
        elif log.exists() and ERROR_LINE.search(_log_tail(log)):
            state = "failed"
        elif log.exists() or record["committed"]:
            state = "running"
        else:
            state = "pending"
        record["state"] = state
        if latest is not None:
            record.update(job_id=latest["job_id"], slurm_state=latest["state"], host=latest["nodes"],
                          attempts=len(record["jobs"]), started=latest["start"], reason=latest["reason"])
        if shard in markers:
            record.update(host=markers[shard].get("host"), duration_s=markers[shard].get("duration_s"))
            if not record.get("job_id") and markers[shard].get("job_id"):  # the job that committed it
                record["job_id"] = markers[shard]["job_id"]
        if state == "failed":
            record["log"] = str(log)
        record["solved"] = record["committed"]
        if state == "running":
            fraction = log_progress(log)
            if fraction is not None:
                record["solved"] = max(record["committed"], int(round(fraction * record["points"])))
        shards.append(record)

    counts = {s: sum(r["state"] == s for r in shards) for s in ("done", "running", "pending", "failed")}
    points_done = int(done.sum())
    starts = [m["start"] for m in markers.values() if m.get("start")]
    starts += [j["start"] for js in by_shard.values() for j in js if j.get("start") and j["start"] <= now]
    since = min(starts) if starts else (created if points_done else None)
    finished = points_done == plan.n_points and len(markers) == plan.n_shards
    until = max((m["end"] for m in markers.values() if m.get("end")), default=now) if finished else now
    elapsed = (until - since) if since is not None else None
    # Points solved, committed or not: committed chunks, plus what running shards' logs report.
    solved = points_done + sum(r["solved"] - r["committed"] for r in shards)
    throughput = solved / elapsed if elapsed and elapsed > 0 and solved else None
    remaining = plan.n_points - solved
    aggregated = attrs.get("completed") is not None
    return {
        "name": name,
        "digest": plan.digest,
        "shards_total": plan.n_shards,
        "shards_done": len(markers),
        "shard_counts": counts,
        "shards": shards,
        "points_total": plan.n_points,
        "points_done": points_done,
        "points_solved": solved,
        "flagged": [_point_label(plan, idx) for idx in flagged[:50]],
        "n_flagged": len(flagged),
        "compute_s": sum(m.get("duration_s", 0.0) for m in markers.values()),
        "since": since,
        "elapsed_s": elapsed,
        "throughput": throughput,
        "eta_s": 0.0 if remaining == 0 else (remaining / throughput if throughput else None),
        "slurm": jobs is not None,
        "slurm_jobs": sum(len(js) for js in by_shard.values()),
        "aggregated": aggregated,
        "stopped": not aggregated and counts["failed"] > 0 and counts["running"] == 0 and counts["pending"] == 0,
    }


def _point_label(plan, index) -> str:
    flat = np.ravel_multi_index(tuple(index), plan.shape)
    values = plan.point_values(np.array([flat]))
    return ", ".join(f"{k}={v[0]}" for k, v in values.items())


# --------------------------------------------------------------------------------------------
# Showing it


def progress_bar(done: int, total: int, solved: int | None = None, width: int = 40) -> str:
    """``[####++----]  42.0%``: # committed, + solved by running shards but not yet committed."""
    solved = max(done, solved or done)
    filled = int(width * done / total) if total else width
    extra = (int(width * solved / total) if total else width) - filled
    percent = 100 * solved / total if total else 100.0
    return "[" + "#" * filled + "+" * extra + "-" * (width - filled - extra) + f"] {percent:5.1f}%"


def format_status(status: dict, bar: bool = False) -> str:
    """The status as lines of text; ``bar`` adds a progress bar (for a terminal)."""
    counts = status.get("shard_counts", {})
    lines = [
        f"sweep {status['name']} (plan {status['digest']}): "
        f"{status['shards_done']}/{status['shards_total']} shards done, "
        f"{status['points_done']}/{status['points_total']} points done"
        + (", aggregated" if status["aggregated"] else ""),
    ]
    if bar:
        lines.append(progress_bar(status["points_done"], status["points_total"], status.get("points_solved")))
    if counts:
        source = (f"the markers and Slurm's queue, {status['slurm_jobs']} jobs of this sweep" if status.get("slurm_jobs")
                  else "the markers, the store and the shard logs")
        lines.append(f"shards: {counts['done']} done, {counts['running']} running, {counts['pending']} pending, "
                     f"{counts['failed']} failed (from {source})")
    solved = status.get("points_solved", status["points_done"])
    if solved > status["points_done"]:
        lines.append(f"points: {status['points_done']} committed, about {solved - status['points_done']} more solved "
                     "by running shards and not yet committed (from their logs)")
    if status.get("throughput"):
        lines.append(f"throughput: {status['throughput']:.3g} points/s over {timefmt.duration(status['elapsed_s'])}; "
                     + ("finished" if status["points_done"] == status["points_total"]
                        else f"about {timefmt.duration(status['eta_s'])} left"))
    elif status["points_done"] < status["points_total"]:
        lines.append("throughput: no point solved yet; time left unknown")
    for record in status.get("shards", []):
        if record["state"] == "running":
            where = f" on {record['host']}" if record.get("host") else ""
            job = f" (job {record['job_id']})" if record.get("job_id") else ""
            solved = (f", about {record['solved']} solved" if record.get("solved", 0) > record["committed"] else "")
            lines.append(f"  shard {record['shard']:04d} running{where}{job}: "
                         f"{record['committed']}/{record['points']} points committed{solved}")
        elif record["state"] == "failed":
            job = (f"job {record['job_id']} {record['slurm_state']}, attempt {record['attempts']}; "
                   if record.get("job_id") else "")
            lines.append(f"  shard {record['shard']:04d} FAILED ({job}log {record['log']})")
        elif record["state"] == "pending" and record.get("reason") and record["reason"] not in ("None", ""):
            lines.append(f"  shard {record['shard']:04d} pending ({record['reason']})")
    if status.get("stopped"):
        lines.append("the sweep has stopped: failed shards and nothing running or queued; fix and rerun the workflow")
    if status["n_flagged"]:
        lines.append(f"{status['n_flagged']} points failed, did not converge or are not finite:")
        lines += [f"  {label}" for label in status["flagged"]]
        if status["n_flagged"] > len(status["flagged"]):
            lines.append(f"  ... and {status['n_flagged'] - len(status['flagged'])} more (see the report)")
    return "\n".join(lines)


def watch(name: str, root: Path | None = None, interval: float = 10.0, stream: TextIO | None = None,
          max_updates: int | None = None, jobs: bool = True) -> int:
    """Print the status every ``interval`` seconds until the sweep is aggregated (0) or has
    stopped with failed shards (1). On a terminal the screen is redrawn with a progress bar;
    otherwise each update is a block of plain lines, separated by a blank line."""
    stream = stream or sys.stdout
    tty = stream.isatty()
    updates = 0
    while True:
        status = sweep_status(name, root, jobs=jobs)
        text = format_status(status, bar=tty)
        stamp = dt.datetime.now().strftime("%H:%M:%S")
        if tty:
            stream.write("\x1b[H\x1b[2J")
        stream.write(f"{stamp} {text}\n" + ("" if tty else "\n"))
        stream.flush()
        updates += 1
        if status["aggregated"]:
            return 0
        if status["stopped"]:
            return 1
        if max_updates is not None and updates >= max_updates:
            return 0
        time.sleep(interval)
