"""Progress of a sweep, read from its plan, its completion markers, its store, its logs and Slurm.

A shard is
- ``done`` when its completion marker for this plan exists;
- otherwise, where Slurm knows the shard's jobs, what its latest job says: ``pending`` (queued,
  or requeued), ``running``, or ``failed`` (FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL,
  PREEMPTED, ..., or COMPLETED without writing its marker);
- otherwise (no scheduler: a local run) ``failed`` when its log shows that the job died (see
  ``log_failure``), ``running`` when it has started (a log, or committed chunks), else ``pending``.

Slurm is asked two ways, and both answers are merged by job id:
- its accounting, ``sacct -X -D`` (every job since the store was created, finished ones too, for
  as long as the site keeps accounting; ``-D`` lists a requeued job once per run, which gives its
  restart count), read by ``hpc.execution.accounting.jobs_since``, the one reader of sacct that
  aggregate's execution trace uses too; absent where there is no ``sacct`` or the site has no
  accounting storage;
- its queue, ``squeue -t all``: live jobs, and finished ones for MinJobAge seconds (300 by
  default). Where a job is in both, the queue's state, nodes and reason win (slurmctld's own,
  while slurmdbd may lag by a second), the accounting's exit code and log path are kept (the
  queue's working directory and log where the accounting has none yet: a job cancelled before it
  started, for a few seconds).

Snakemake's Slurm executor plugin submits every job with ``--job-name`` set to the workflow run's
uuid, ``--comment rule_<rule>_wildcards_<values>`` (here ``rule_run_shard_wildcards_0003``),
``-D`` the workflow's working directory and ``--output`` its own log,
``.snakemake/slurm_logs/rule_run_shard/0003/%j.log``. A Slurm job is taken to be one of this
sweep's shard jobs when its comment names ``run_shard`` (sacct keeps a job's comment only where
slurm.conf has ``AccountingStoreFlags=job_comment``; otherwise the comment is read from the job's
submit line, which sacct keeps, or from squeue), its working directory holds the results root,
and it was submitted after the store was created. (Two sweeps running at once from one working
directory cannot be told apart this way. A shard's completion marker records the id of the job
that committed it, ``job_id``, which names a done shard's job once Slurm has forgotten it.)

A shard's ``attempts`` are its jobs in the latest workflow run (the jobs of its latest job's name,
the run's uuid: Snakemake's retries), its ``restarts`` how often Slurm requeued its latest job.
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
from hpc.execution import accounting, slurm_plugin
from hpc.sweep import store
from hpc.sweep.plan import read_plan

SHARD_COMMENT = re.compile(r"^rule_run_shard_wildcards_(\d+)$")
SHARD_SLURM_LOG = re.compile(r"/rule_run_shard/(\d+)/[^/]*$")  # the plugin's --output for a shard job
DELIMITER = "|#|"  # between squeue's fields: a directory may hold a '|'
SQUEUE_FIELDS = ("job_id", "job_name", "comment", "state", "submit", "start", "end", "nodes", "reason", "restarts",
                 "slurm_log", "workdir", "array_job", "array_spec")
SQUEUE_FORMAT = ",".join(f"{f}:{DELIMITER}" for f in ("JobID", "Name", "Comment", "State", "SubmitTime", "StartTime",
                                             "EndTime", "NodeList", "Reason", "RestartCnt", "STDOUT", "WorkDir",
                                             "ArrayJobID", "ArrayTaskID"))
PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED",
                  "STOPPED", "SIGNALING"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "STAGE_OUT"}
FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
                 "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "COMPLETED"}  # COMPLETED here: no marker was written
PROGRESS_LINE = re.compile(r"^shard \d+: (\d+)/(\d+) points \(", re.M)  # hpc.sweep.runner's progress lines

# What says that a shard's job died (log_failure), and nothing that a model may write: the runner
# logs a model's error as "shard N: the model failed for {...}: ..." and goes on.
TRACEBACK = "Traceback (most recent call last):"
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?::(?:\s.*)?)?$")  # RuntimeError: ..., KeyboardInterrupt
RUNNER_LINE = re.compile(r"^shard \d+: ")
RUNNER_FAILED = re.compile(r"^(?:[A-Za-z_][\w.]*: )?shard \d+: (?!the model failed for )[^:\n]* failed: .*$", re.M)
SLURM_KILLED = re.compile(r"^(?:slurmstepd|srun)[^:\n]*: error: .*(?:\*\*\* .*(?:CANCELLED|DUE TO TIME LIMIT|"
                          r"DUE TO NODE FAILURE|DUE TO PREEMPTION).*|Detected \d+ oom[-_]kill event.*)$", re.M)


shard_log_path = paths.shard_log_path  # where workflow/rules/sweep.smk sends a shard job's stderr


# --------------------------------------------------------------------------------------------
# Slurm


normal_state = accounting.normal_state  # Slurm's state word: ``CANCELLED by 0`` is CANCELLED


def _null(text: str) -> str:
    return "" if text in ("(null)", "N/A", "None assigned") else text


def _log_file(pattern: str | None, job: dict) -> str | None:
    """Slurm's log of a job from its ``--output`` pattern (Slurm's ``slurm-%j.out`` without one;
    an array task's ``%A_%a``: the array's job id and the task's)."""
    pattern = pattern or "slurm-%j.out"
    if pattern == "/dev/null":
        return pattern
    raw = job.get("raw_id") or job["job_id"]
    values = {"j": raw, "A": job.get("array_job_id") or raw, "a": str(job.get("array_task") or 4294967294),
              "x": job.get("job_name", ""), "u": os.environ.get("USER", ""), "%": "%"}
    path = re.sub(r"%(\d*)([jAaxu%])", lambda m: values[m.group(2)], pattern)
    if not os.path.isabs(path) and job.get("workdir"):
        path = os.path.join(job["workdir"], path)
    return path


def _as_array_tasks(job: dict, tasks: list[int] | None = None, cache: dict | None = None) -> list[dict]:
    """An array's job as one job per task, named ``<array id>_<task>`` as Slurm writes it (a pending
    rest of an array, ``tasks``, becomes each of its tasks), each with its own comment: the one the
    Slurm plugin's tasks file records (hpc.execution.slurm_plugin; sbatch gave every task the first
    one's), else none. Any other job as it is."""
    if not job.get("array_job_id"):
        return [job]
    cache = {} if cache is None else cache
    out = []
    for task in ([job["array_task"]] if tasks is None else tasks):
        one = dict(job, array_task=task, raw_id=job["job_id"] if tasks is None else None,
                   job_id=f"{job['array_job_id']}_{task}")
        one["slurm_log"] = _log_file(job.get("log_pattern"), one)
        where = str(slurm_plugin.array_tasks_file(one["slurm_log"], job["array_job_id"])) if one["slurm_log"] else ""
        if where not in cache:
            cache[where] = slurm_plugin.read_array_tasks(where) if where else {}
        one["comment"] = cache[where].get(task, "")
        out.append(one)
    return out


def sacct_jobs(since: float | None = None, runner=None) -> list[dict] | None:
    """Every job Slurm's accounting has since ``since`` (epoch seconds; the last 7 days without),
    its latest run each (an array's task each), or None where there is no accounting to ask
    (read by ``hpc.execution.accounting.jobs_since``)."""
    accounted = accounting.jobs_since(since, runner)
    if accounted is None:
        return None
    jobs, cache = [], {}
    for record in accounted:
        job = {"job_id": record["job_id"], "job_name": record["job_name"], "comment": record["comment"],
               "state": record["state_text"], "submit": record["submit"], "start": record["job_start"],
               "end": record["job_end"], "nodes": record["nodes"] or "", "reason": record["reason"],
               "submit_line": record["submit_line"], "workdir": record["workdir"], "restarts": record["restarts"],
               "array_job_id": record.get("array_job_id"), "array_task": record["array_task"], "source": "sacct"}
        job["exit_code"], job["signal"] = accounting.parse_exit(record["exit_code"])
        job["log_pattern"] = accounting.submit_option(record["submit_line"], "--output", "-o")
        job["slurm_log"] = _log_file(job["log_pattern"], job)
        rest = accounting.array_tasks(record.get("sacct_job_id")) if job["array_task"] is None else None
        jobs += _as_array_tasks(job, rest if job["array_job_id"] else None, cache)
    return jobs


def squeue_jobs(runner=subprocess.run) -> list[dict] | None:
    """Every job Slurm still lists (``squeue -t all``), or None where there is no Slurm to ask."""
    if not shutil.which("squeue"):
        return None
    try:
        result = runner(["squeue", "-h", "-t", "all", "-O", SQUEUE_FORMAT], capture_output=True, text=True,
                        timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    jobs, cache = [], {}
    for line in result.stdout.splitlines():
        parts = line.rstrip("\n").removesuffix(DELIMITER).split(DELIMITER)  # each field ends in one
        if len(parts) != len(SQUEUE_FIELDS):
            continue
        job = dict(zip(SQUEUE_FIELDS, (p.strip() for p in parts)))
        for key in ("submit", "start", "end"):
            job[key] = timefmt.iso_epoch(job[key])  # the cluster's local time, no zone; None for N/A
        for key in ("comment", "nodes", "workdir"):
            job[key] = _null(job[key])
        job["restarts"] = int(job["restarts"]) if job["restarts"].isdigit() else 0
        job["reason"] = accounting.reason(job["reason"])
        job["log_pattern"] = _null(job.pop("slurm_log")) or None
        array_job, spec = job.pop("array_job"), job.pop("array_spec")
        job["array_job_id"] = array_job if spec not in ("", "N/A") and array_job.isdigit() else None
        job["array_task"] = int(spec) if job["array_job_id"] and spec.isdigit() else None
        job["slurm_log"] = _log_file(job["log_pattern"], job)
        job["source"] = "squeue"
        rest = accounting.array_tasks(spec) if job["array_job_id"] and job["array_task"] is None else None
        jobs += _as_array_tasks(job, rest, cache)
    return jobs


def slurm_jobs(since: float | None = None, sources=("sacct", "squeue")) -> tuple[list[dict] | None, list[str]]:
    """Slurm's jobs from its accounting and its queue (see the module docstring), and which of
    them answered; (None, []) where neither did."""
    accounted = sacct_jobs(since) if "sacct" in sources else None
    queued = squeue_jobs() if "squeue" in sources else None
    answered = [name for name, got in (("sacct", accounted), ("squeue", queued)) if got is not None]
    if not answered:
        return None, []
    by_id = {job["job_id"]: job for job in accounted or []}
    for job in queued or []:
        known = by_id.get(job["job_id"])
        if known is None:
            by_id[job["job_id"]] = job
            continue
        # (slurmdbd may not have a job's working directory and submit line yet, for a few seconds
        # after a job that never started was cancelled: the queue's stand in)
        known.update(state=job["state"], reason=job["reason"], restarts=max(known["restarts"], job["restarts"]),
                     nodes=job["nodes"] or known["nodes"], comment=known["comment"] or job["comment"],
                     workdir=known["workdir"] or job["workdir"],
                     slurm_log=known["slurm_log"] if known.get("log_pattern") else job["slurm_log"] or known["slurm_log"],
                     source="sacct+squeue")
        for key in ("start", "end"):
            known[key] = job[key] if job[key] is not None else known[key]
    return list(by_id.values()), answered


def _holds(workdir: str, root: Path) -> bool:
    """The job's working directory is the results root's parent or another ancestor of it."""
    if not workdir or workdir in ("(null)", "N/A"):
        return False
    try:
        return root.resolve().is_relative_to(Path(workdir).resolve())
    except OSError:
        return False


def _shard_of(job: dict) -> int | None:
    match = SHARD_COMMENT.match(job.get("comment") or "")
    if match is None and not job.get("comment"):  # a comment that sacct did not keep: the plugin's log path
        match = SHARD_SLURM_LOG.search(job.get("slurm_log") or "")
    return int(match.group(1)) if match else None


def sweep_jobs(jobs: list[dict], n_shards: int, root: Path, created: float | None) -> dict[int, list[dict]]:
    """This sweep's shard jobs, by shard, oldest first (see the module docstring for the match)."""
    found: dict[int, list[dict]] = {}
    for job in jobs:
        shard = _shard_of(job)
        if shard is None or shard >= n_shards or not _holds(job.get("workdir", ""), root):
            continue
        if created is not None and job.get("submit") is not None and job["submit"] < created - 60:
            continue  # a job of an earlier sweep under this name
        found.setdefault(shard, []).append(job)
    for shard_jobs in found.values():
        shard_jobs.sort(key=lambda j: [int(n) for n in re.findall(r"\d+", j["job_id"])])  # 300_2: array 300, task 2
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


def log_failure(text: str) -> str | None:
    """The line of a shard's log that says its job died, or None: a Python traceback whose
    exception line no runner line follows (the process ended there), the runner's
    ``shard N: <where> failed: ...``, or Slurm's ``*** JOB ... CANCELLED ...`` / ``DUE TO TIME
    LIMIT`` / oom-kill lines. Anything else, a model's message with "Error" in it included, is not."""
    found = SLURM_KILLED.findall(text) or RUNNER_FAILED.findall(text)
    if found:
        return found[-1].strip()
    if TRACEBACK not in text:
        return None
    after = text[text.rindex(TRACEBACK) + len(TRACEBACK):].splitlines()
    for i, line in enumerate(after):
        if not line.strip() or line[0].isspace():
            continue  # the traceback's frames
        if not EXCEPTION_LINE.match(line):
            return None
        if any(RUNNER_LINE.match(later) for later in after[i + 1:]):
            return None  # a traceback printed by a model that the runner went on from
        return line.strip()
    return None


def log_progress(path: Path) -> float | None:
    """The fraction of its points a running shard has solved, from its log's last progress line.

    The runner commits a shard's chunks once it has solved them, so between commits the log is
    the only sign of progress. (With several processes, the line is one process's own.)
    """
    return _progress(_log_tail(path))


def _progress(tail: str) -> float | None:
    """``log_progress`` from the tail of the log."""
    found = PROGRESS_LINE.findall(tail)
    if not found:
        return None
    done, total = map(int, found[-1])
    return done / total if total else None


def _file_names(folder: Path) -> set[str]:
    try:
        with os.scandir(folder) as listing:
            return {entry.name for entry in listing}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def sweep_status(name: str, root: Path | None = None, *, jobs: list[dict] | None | bool = True,
                 sources=("sacct", "squeue"), now: float | None = None, cache: dict | None = None) -> dict:
    """Shards done, running, pending and failed, points done, throughput and time left, and each
    shard's latest Slurm job (state, exit code, attempts, restarts, nodes, logs).

    ``jobs``: True asks Slurm (``sources``: its accounting, sacct, and its queue, squeue) where it is
    there; False does not; a list is taken as Slurm's answer (tests). ``cache``: a dict kept
    between calls (``watch``) for what cannot change under one plan and store: the markers read
    (by file size and time) and the committed chunks' counts.

    What it reads: the markers (one listing of their folder, then each marker), the chunks of the
    status arrays of shards without a marker or whose marker counts bad points (only chunks that
    exist: see ``hpc.sweep.store.committed_points``), the logs' folder once and the tail of the
    log of a shard that is running, or not done and unknown to Slurm, and Slurm.
    """
    root = Path(root) if root is not None else paths.RESULTS_ROOT
    path = paths.plan_path(name, root)
    if not path.exists():
        raise SpecError("name", f"no planned sweep {name!r} under {paths.sweep_dir(name, root).parent}",
                        "run the workflow (or `hpc plan SPEC --output ...`) first")
    now = time.time() if now is None else now
    plan = read_plan(path)
    attrs = zarrio.read_attrs(paths.store_path(name, root))
    if cache is not None and cache.get("store") != (plan.digest, attrs.get("created")):
        cache.clear()  # another plan, or the store made again: nothing kept holds
        cache["store"] = (plan.digest, attrs.get("created"))
    markers = store.valid_markers(plan, root, None if cache is None else cache.setdefault("markers", {}))
    # Shards whose markers say every point is good from the markers, the others from their chunks.
    points_done, committed, flagged = store.committed_points(plan, root, markers,
                                                             None if cache is None else cache.setdefault("chunks", {}))

    created = timefmt.iso_epoch(attrs.get("created"))
    answered: list[str] = []
    if jobs is True:
        jobs, answered = slurm_jobs(created, sources)
    elif jobs is False:
        jobs = None
    else:
        answered = ["given"]
    by_shard = sweep_jobs(jobs, plan.n_shards, root, created) if jobs is not None else {}
    logs = _file_names(shard_log_path(name, 0, root).parent)
    sizes = store.shard_sizes(plan)

    shards = []
    for shard in range(plan.n_shards):
        record = {"shard": shard, "points": int(sizes[shard]), "committed": int(committed[shard]),
                  "jobs": by_shard.get(shard, [])}
        latest = record["jobs"][-1] if record["jobs"] else None
        log = shard_log_path(name, shard, root)
        record["log"] = str(log)
        slurm_state = normal_state(latest["state"]) if latest is not None else None
        has_log, tail = log.name in logs, None  # the tail read once, where it is needed
        if shard in markers:
            state = "done"
        elif latest is not None:
            state = ("pending" if slurm_state in PENDING_STATES else "running" if slurm_state in RUNNING_STATES
                     else "failed" if slurm_state in FAILED_STATES else "running")
        elif has_log and (reason := log_failure(tail := _log_tail(log))):
            state = "failed"
            record["failure"] = reason
        elif has_log or record["committed"]:
            state = "running"
        else:
            state = "pending"
        record["state"] = state
        if latest is not None:
            run = [j for j in record["jobs"] if j.get("job_name") == latest.get("job_name")]
            record.update(job_id=latest["job_id"], slurm_state=slurm_state, slurm_state_text=latest["state"],
                          exit_code=latest.get("exit_code"), signal=latest.get("signal"), host=latest["nodes"],
                          nodes=latest["nodes"], attempts=len(run), restarts=latest.get("restarts", 0),
                          started=latest["start"], ended=latest.get("end"), reason=latest.get("reason"),
                          slurm_log=latest.get("slurm_log"))
        if shard in markers:
            record.update(host=markers[shard].get("host"), duration_s=markers[shard].get("duration_s"))
            if not record.get("job_id") and markers[shard].get("job_id"):  # the job that committed it
                record["job_id"] = markers[shard]["job_id"]
        record["solved"] = record["committed"]
        if state == "running":
            fraction = _progress(tail if tail is not None else _log_tail(log) if has_log else "")
            if fraction is not None:
                record["solved"] = max(record["committed"], int(round(fraction * record["points"])))
        shards.append(record)

    counts = {s: sum(r["state"] == s for r in shards) for s in ("done", "running", "pending", "failed")}
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
        "slurm_sources": answered,
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


def _job_text(record: dict) -> str:
    """``job 15 TIMEOUT on n2, exit 0 signal 15, attempt 2, requeued 1 time``."""
    text = f"job {record['job_id']} {record['slurm_state']}"
    if record.get("nodes"):
        text += f" on {record['nodes']}"
    if record.get("exit_code") is not None and record["slurm_state"] not in PENDING_STATES | RUNNING_STATES:
        text += f", exit {record['exit_code']}" + (f" signal {record['signal']}" if record.get("signal") else "")
    text += f", attempt {record['attempts']}"
    if record.get("restarts"):
        text += f", requeued {record['restarts']} time" + ("s" if record["restarts"] > 1 else "")
    return text


def _logs_text(record: dict) -> str:
    return f"log {record['log']}" + (f", Slurm's log {record['slurm_log']}" if record.get("slurm_log") else "")


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
        asked = {"sacct": "Slurm's accounting (sacct)", "squeue": "Slurm's queue (squeue)", "given": "Slurm's jobs"}
        slurm = " and ".join(asked[s] for s in status.get("slurm_sources", []) if s in asked)
        source = (f"the markers and {slurm}, {status['slurm_jobs']} jobs of this sweep" if status.get("slurm_jobs")
                  else "the markers, the store and the shard logs"
                  + (f"; no job of this sweep in {slurm}" if slurm else ""))
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
        head = f"  shard {record['shard']:04d}"
        job = record.get("slurm_state") and _job_text(record)
        if record["state"] == "running":
            where = f" on {record['host']}" if record.get("host") and not job else ""
            solved = (f", about {record['solved']} solved" if record.get("solved", 0) > record["committed"] else "")
            lines.append(f"{head} running{where}{f' ({job})' if job else ''}: "
                         f"{record['committed']}/{record['points']} points committed{solved}; {_logs_text(record)}")
        elif record["state"] == "failed":
            why = job or record.get("failure") or ""
            lines.append(f"{head} FAILED ({why + '; ' if why else ''}{_logs_text(record)})")
        elif record["state"] == "pending" and job:
            reason = record.get("reason")
            lines.append(f"{head} pending ({job}{f'; reason: {reason}' if reason else ''})")
    if status.get("stopped"):
        lines.append("the sweep has stopped: failed shards and nothing running or queued; fix and rerun the workflow")
    if status["n_flagged"]:
        lines.append(f"{status['n_flagged']} points failed, did not converge or are not finite:")
        lines += [f"  {label}" for label in status["flagged"]]
        if status["n_flagged"] > len(status["flagged"]):
            lines.append(f"  ... and {status['n_flagged'] - len(status['flagged'])} more (see the report)")
    return "\n".join(lines)


def failed_shards(status: dict) -> set[tuple[int, str | None]]:
    """(shard, its latest job) of each failed shard: its latest job ended failed (or, without
    Slurm, its log says it died) and it has no job pending or running."""
    return {(r["shard"], r.get("job_id")) for r in status["shards"] if r["state"] == "failed"}


def watch(name: str, root: Path | None = None, interval: float = 10.0, stream: TextIO | None = None,
          max_updates: int | None = None, jobs: bool = True, sources=("sacct", "squeue")) -> int:
    """Print the status every ``interval`` seconds until the sweep is aggregated (0) or a shard has
    failed for good (1): the same shard failed, with the same latest job, on two polls in a row.
    (One poll is not enough: Snakemake resubmits a failed job, when retries are left, only at its
    next status check; with a long gap between the plugin's checks give a longer ``interval``.)
    On a terminal the screen is redrawn with a progress bar; otherwise each update is a block of
    plain lines, separated by a blank line."""
    stream = stream or sys.stdout
    tty = stream.isatty()
    updates = 0
    seen: set = set()
    cache: dict = {}  # what cannot change between polls: markers read, committed chunks' counts
    while True:
        status = sweep_status(name, root, jobs=jobs, sources=sources, cache=cache)
        failed = failed_shards(status)
        for_good = sorted(failed & seen)
        text = format_status(status, bar=tty)
        if for_good and not status["aggregated"]:
            text += "\nfailed for good (failed on two polls in a row): " + ", ".join(
                f"shard {s:04d}" + (f" (job {j})" if j else "") for s, j in for_good)
        stamp = dt.datetime.now().strftime("%H:%M:%S")
        if tty:
            stream.write("\x1b[H\x1b[2J")
        stream.write(f"{stamp} {text}\n" + ("" if tty else "\n"))
        stream.flush()
        updates += 1
        if status["aggregated"]:
            return 0
        if for_good:
            return 1
        seen = failed
        if max_updates is not None and updates >= max_updates:
            return 0
        time.sleep(interval)
