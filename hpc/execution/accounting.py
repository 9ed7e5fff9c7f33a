"""What Slurm's accounting (``sacct``) says about the jobs that ran a sweep's shards.

``job_records(job_ids)`` asks sacct once for the jobs and their steps and returns, per job id (the
``SLURM_JOB_ID`` a shard's marker holds: for an array task its own raw id), the job's state, exit
code, nodes, submit/start/end, queue wait, elapsed and total CPU time, CPU efficiency (TotalCPU /
(Elapsed × AllocCPUS)), the peak RSS over its steps and the memory it asked for. ``attempts``
counts the Slurm jobs Snakemake submitted for the same shard (same job name, i.e. Snakemake run,
same workdir, same ``--comment rule_run_shard_wildcards_NNNN``).

``jobs_since(since)`` is what ``hpc status`` reads (hpc.sweep.status): every job since a time,
``sacct -X -D`` (the allocation lines alone; a requeued job once per run, the latest last, which
gives its restart count; and the jobs cancelled before they were ever eligible, held or waiting
on a dependency, which such a time window leaves out), with each job's name, comment, working
directory, pending reason and submit line. Both answers are built by the same parsers and ``records_from_rows``.

Where sacct is missing, fails, or the site has no accounting ("accounting storage is disabled"),
nothing is raised: the answers are empty (``job_records``) or None (``jobs_since``, ``sacct``) and
every field stays None.

Notes on what sacct prints (Slurm 22.05, checked on the emulated cluster):

- The job line's TotalCPU is 0 under ``-X`` (the allocation alone); without ``-X`` it is the sum
  over the steps. So one query without ``-X`` is made and job lines (no ``.`` in JobID) are told
  from step lines (``38.batch``, ``38.0``); MaxRSS is only on step lines.
- Durations: ``[DD-[HH:]]MM:SS[.mmm]`` (``1-02:03:04``, ``00:03.119``, ``12:34``).
- Memory: ``168432K``, ``500M``, ``2G``; older Slurm appends ``n`` (per node) or ``c`` (per CPU) to
  ReqMem (``4000Mn``, ``1Gc``). A bare MaxRSS number is bytes, a bare ReqMem number megabytes.
- The comment is stored only with ``AccountingStoreFlags=job_comment``; where it is not,
  ``--comment`` is read from SubmitLine. SubmitLine may hold newlines and ``|``: the query uses
  its own delimiter and SubmitLine comes last, so a row is put back together from its lines.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
import subprocess
import time
from typing import Iterable

from hpc.core import timefmt

FIELDS = ("JobID", "JobIDRaw", "JobName", "State", "ExitCode", "NodeList", "Submit", "Start", "End", "ElapsedRaw",
          "TotalCPU", "AllocCPUS", "ReqMem", "MaxRSS", "WorkDir", "Comment", "SubmitLine")
# jobs_since's query: the same and the pending reason (SubmitLine stays last: it may hold newlines)
LIST_FIELDS = FIELDS[:-1] + ("Reason", "SubmitLine")
DELIMITER = "\x1f"  # ASCII unit separator: in no field sacct prints
RECORD_KEYS = ("job_id", "array_task", "attempt", "state", "exit_code", "nodes", "submit", "job_start", "job_end",
               "queue_wait_s", "elapsed_s", "total_cpu_s", "alloc_cpus", "cpu_efficiency", "max_rss_mb",
               "req_mem_mb")
UNITS = {"": 1.0, "K": 1024.0, "M": 1024.0 ** 2, "G": 1024.0 ** 3, "T": 1024.0 ** 4, "P": 1024.0 ** 5}
TIMEOUT_S = 60


def empty_record(job_id=None) -> dict:
    """A record with every field None (no accounting for the job)."""
    return dict.fromkeys(RECORD_KEYS) | {"job_id": job_id}


# --------------------------------------------------------------------------------------------
# Parsers of sacct's fields


def parse_duration(text: str | None) -> float | None:
    """Slurm's ``[DD-[HH:]]MM:SS[.mmm]`` in seconds; None for empty, INVALID or Unknown."""
    if not text or not isinstance(text, str):
        return None
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)", text.strip())
    if not m:
        m = re.fullmatch(r"(?:(\d+)-)(\d+)", text.strip())  # "1-02": days and hours
        if not m:
            return None
        return int(m[1]) * 86400 + int(m[2]) * 3600
    days, hours, minutes, seconds = m.groups()
    if days and hours is None:  # "1-02:03" is days-hours:minutes
        hours, minutes, seconds = minutes, seconds, "0"
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)


def parse_memory_mb(text: str | None, bare_unit: str = "", cpus: int | None = None, nodes: int | None = None
                    ) -> float | None:
    """A memory field in MB (MiB): ``168432K``, ``4000M``, ``2G``, ``4000Mn`` (per node: times
    ``nodes``), ``1Gc`` (per CPU: times ``cpus``). A bare number is in ``bare_unit``."""
    if not text or not isinstance(text, str):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTP]?)([nc]?)", text.strip())
    if not m:
        return None
    value = float(m[1]) * UNITS[m[2] or bare_unit] / 1024.0 ** 2
    if m[3] == "c":
        value *= cpus or 1
    elif m[3] == "n":
        value *= nodes or 1
    return value


def parse_time(text: str | None) -> float | None:
    """sacct's local ``2026-12-01T10:26:28`` as epoch seconds; None for Unknown/None."""
    return timefmt.iso_epoch(text) if text and text.strip() not in ("Unknown", "None", "N/A") else None


def normal_state(state: str | None) -> str:
    """Slurm's state word: ``CANCELLED by 0`` is CANCELLED, ``RUNNING+`` RUNNING."""
    words = (state or "").split()
    return words[0].rstrip("+") if words else ""


def reason(text: str | None) -> str | None:
    """Why Slurm keeps a job waiting (``BeginTime``, ``Resources``, ``JobHeldUser``); None where it
    names none: Slurm writes ``None`` for a running job, and for a pending one that its scheduler
    has not looked at yet (slurmdbd's copy of a pending job's reason may stay so a while)."""
    text = (text or "").strip()
    return None if text in ("", "None", "(null)", "N/A") else text


def parse_exit(text: str | None) -> tuple[int | None, int | None]:
    """sacct's ExitCode ``3:0`` as (exit code, signal); (None, None) for anything else."""
    m = re.fullmatch(r"(\d+):(\d+)", (text or "").strip())
    return (int(m[1]), int(m[2])) if m else (None, None)


def submit_option(line: str | None, *names: str, before_wrap: bool = True) -> str | None:
    """An option's value in an sbatch command line (sacct's SubmitLine): by default before any
    ``--wrap`` (after it comes the job's own command, which may have options of the same name)."""
    line = line or ""
    if before_wrap:
        line = re.split(r"\s--wrap\b", line, maxsplit=1)[0]
    for name in names:
        m = re.search(rf"(?:^|\s){re.escape(name)}(?:=|\s+)('[^']*'|\"[^\"]*\"|\S+)", line)
        if m:
            try:
                return shlex.split(m[1])[0]
            except (ValueError, IndexError):
                return m[1]
    return None


def comment_of(row: dict) -> str | None:
    """The job's ``--comment``: stored by accounting, or else read from its submit line (before
    ``--wrap``, and anywhere in it where an sbatch line gives ``--wrap`` first)."""
    if row.get("Comment") and row["Comment"] not in ("(null)", "N/A"):
        return row["Comment"]
    line = row.get("SubmitLine")
    return submit_option(line, "--comment") or submit_option(line, "--comment", before_wrap=False)


def parse_rows(text: str, fields: tuple[str, ...] = FIELDS, delimiter: str = DELIMITER) -> list[dict]:
    """sacct ``--parsable2 --noheader`` output as one mapping per row; a row broken over lines
    by a newline inside its last field (SubmitLine) is put back together (a line without every
    delimiter continues the row before it)."""
    rows: list[dict] = []
    for line in text.splitlines():
        if line.count(delimiter) >= len(fields) - 1:
            rows.append(dict(zip(fields, line.split(delimiter, len(fields) - 1))))
        elif rows:  # the rest of the last field (SubmitLine) after a newline in it
            rows[-1][fields[-1]] += "\n" + line
    return rows


def records_from_rows(rows: list[dict]) -> dict[str, dict]:
    """Per job (keyed by its raw id, what ``SLURM_JOB_ID`` is inside the job) its record: the job
    line's fields, and the peak MaxRSS over its step lines."""
    jobs: dict[str, dict] = {}
    steps: dict[str, list[dict]] = {}
    runs: dict[str, int] = {}
    for row in rows:
        if "." in row["JobID"]:
            steps.setdefault(row["JobIDRaw"].split(".")[0], []).append(row)
        else:
            jobs[row["JobIDRaw"]] = row  # under -D a requeued job once per run, the latest last
            runs[row["JobIDRaw"]] = runs.get(row["JobIDRaw"], 0) + 1
    out = {}
    for raw, row in jobs.items():
        cpus = _int(row.get("AllocCPUS"))
        nodes = len(expand_nodes(row.get("NodeList")))
        submit, start, end = (parse_time(row.get(k)) for k in ("Submit", "Start", "End"))
        elapsed = _float(row.get("ElapsedRaw"))
        total_cpu = parse_duration(row.get("TotalCPU"))
        rss = [parse_memory_mb(s.get("MaxRSS"), bare_unit="") for s in steps.get(raw, [])]
        rss = [r for r in rss if r is not None]
        m = re.fullmatch(r"\d+_(\d+)", row["JobID"])
        out[raw] = {
            "job_id": raw,
            "array_task": int(m[1]) if m else None,
            "attempt": None,
            "state": normal_state(row.get("State")) or None,  # "CANCELLED by 0" -> CANCELLED
            "exit_code": row.get("ExitCode") or None,
            "nodes": row.get("NodeList") if row.get("NodeList") not in (None, "", "None assigned", "None") else None,
            "submit": submit,
            "job_start": start,
            "job_end": end,
            "queue_wait_s": round(start - submit, 3) if start is not None and submit is not None else None,
            "elapsed_s": elapsed,
            "total_cpu_s": total_cpu,
            "alloc_cpus": cpus,
            "cpu_efficiency": (round(total_cpu / (elapsed * cpus), 4)
                               if total_cpu is not None and elapsed and cpus else None),
            "max_rss_mb": round(max(rss), 3) if rss else None,
            "req_mem_mb": _round(parse_memory_mb(row.get("ReqMem"), bare_unit="M", cpus=cpus, nodes=nodes or 1)),
            # for counting attempts, and for jobs_since
            "_name": row.get("JobName"), "_workdir": row.get("WorkDir"), "_comment": comment_of(row),
            "_job_id": row["JobID"], "_state_text": row.get("State", ""), "_reason": reason(row.get("Reason")),
            "_submit_line": row.get("SubmitLine") or "", "_restarts": runs[raw] - 1,
        }
    return out


def expand_nodes(nodelist: str | None) -> list[str]:
    """``n[1-3,5],gpu1`` as its node names (enough of Slurm's hostlist syntax to count them)."""
    if not nodelist or nodelist in ("None assigned", "None"):
        return []
    names = []
    for m in re.finditer(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist):
        prefix, ranges = m[1], m[2]
        if not ranges:
            names.append(prefix)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            width = len(lo)
            for i in range(int(lo), int(hi or lo) + 1):
                names.append(f"{prefix}{i:0{width}d}")
    return names


def _int(text) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _float(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --------------------------------------------------------------------------------------------
# Asking sacct


def sacct(args: list[str], fields: tuple[str, ...] = FIELDS, runner=None) -> list[dict] | None:
    """Rows of ``sacct ARGS``; None where there is no sacct or it does not answer. ``runner``:
    what runs the command (``subprocess.run`` by default; tests give recorded answers)."""
    if not shutil.which("sacct"):
        return None
    cmd = ["sacct", *args, "--parsable2", "--noheader", f"--delimiter={DELIMITER}", "--format=" + ",".join(fields)]
    try:
        done = (runner or subprocess.run)(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0 or "accounting storage is disabled" in ((done.stderr or "") + done.stdout).lower():
        return None
    return parse_rows(done.stdout, fields)


def job_records(job_ids: Iterable, since: float | None = None) -> dict[str, dict]:
    """The accounting record of each job in ``job_ids`` (raw Slurm job ids) that sacct knows,
    with ``attempt``: how many Slurm jobs that shard had in the same Snakemake run up to this
    one (None where the job has no comment to tell its shard). Empty where there is no
    accounting; never raises for that."""
    ids = sorted({str(j) for j in job_ids if j not in (None, "")}, key=lambda j: (len(j), j))
    if not ids:
        return {}
    try:
        rows = sacct(["-j", ",".join(ids)])
        if rows is None:
            return {}
        found = records_from_rows(rows)
        records = {j: found[j] for j in ids if j in found}
        count_attempts(records, since)
    except Exception:  # accounting is a record of what ran: never a reason for aggregate to fail
        return {}
    return {j: {k: v for k, v in r.items() if not k.startswith("_")} for j, r in records.items()}


def count_attempts(records: dict[str, dict], since: float | None = None) -> None:
    """Fill each record's ``attempt``: the jobs with its job name (Snakemake's run id), workdir and
    comment (``rule_run_shard_wildcards_NNNN``) submitted no later than it (it included); left None
    where that run submitted array jobs (see below)."""
    names = sorted({r["_name"] for r in records.values() if r["_name"] and r["_comment"]})
    if not names:
        return
    submits = [r["submit"] for r in records.values() if r["submit"] is not None]
    start = since if since is not None else (min(submits) - 7 * 86400 if submits else time.time() - 7 * 86400)
    start_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start - 60))
    rows = sacct(["-X", "--name=" + ",".join(names), "-S", start_text, "-E", "now"])
    if rows is None:
        return
    every = records_from_rows(rows)
    # Array tasks all carry the comment of the array's first job (the plugin's): counting by
    # comment is wrong wherever the run submitted arrays; the marker's snakemake_attempt tells.
    arrays = {(r["_name"], r["_workdir"]) for r in every.values() if array_job_of(r["_job_id"])}
    for record in records.values():
        if not (record["_name"] and record["_comment"]) or (record["_name"], record["_workdir"]) in arrays:
            continue
        same = [r for r in every.values() if (r["_name"], r["_workdir"], r["_comment"]) ==
                (record["_name"], record["_workdir"], record["_comment"])
                and (r["submit"] is None or record["submit"] is None or r["submit"] <= record["submit"])]
        record["attempt"] = max(1, len(same))


def jobs_since(since: float | None = None, runner=None) -> list[dict] | None:
    """Every job Slurm's accounting has since ``since`` (epoch seconds; the last 7 days without),
    its latest run each, oldest first: its record (``RECORD_KEYS``; ``attempt`` left None) with
    ``job_name``, ``comment`` (stored, or from the submit line), ``workdir``, ``reason``,
    ``state_text`` (sacct's own, e.g. ``CANCELLED by 0``), ``submit_line`` and ``restarts`` (how
    often Slurm requeued it). None where there is no accounting to ask."""
    start = (time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since - 60)) if since is not None
             else "now-7days")
    # --endtime in the future: a job held by --begin becomes eligible then, and sacct leaves out a
    # job not eligible before the end of the window (by default: now).
    window = ["-X", "-D", "--starttime", start, "--endtime", "now+365days"]
    rows = sacct(window, LIST_FIELDS, runner)
    if rows is None:
        return None
    # A job cancelled before it was ever eligible (held by `scontrol hold` or `sbatch --hold`, or
    # waiting on a dependency) has no eligible time, and sacct leaves it out of a time window
    # unless a state is asked for: ask for those once more (Slurm 22.05, the emulated cluster).
    known = {r.get("JobIDRaw") for r in rows}
    extra = [r for r in sacct([*window, "--state", "CANCELLED"], LIST_FIELDS, runner) or []
             if r.get("JobIDRaw") not in known]
    if extra:  # in job id order, as sacct lists them (a requeued job's runs keep theirs)
        rows = sorted(rows + extra, key=lambda r: int(r["JobIDRaw"]) if r.get("JobIDRaw", "").isdigit() else 0)
    jobs = []
    for raw, record in records_from_rows([r for r in rows if r.get("JobIDRaw", "").isdigit()]).items():
        public = {k: v for k, v in record.items() if not k.startswith("_")}
        jobs.append(public | {
            "job_name": record["_name"] or "", "comment": record["_comment"] or "",
            "workdir": record["_workdir"] or "", "reason": record["_reason"],
            "state_text": record["_state_text"], "submit_line": record["_submit_line"],
            "restarts": record["_restarts"], "array_job_id": array_job_of(record["_job_id"]),
            "sacct_job_id": record["_job_id"],  # JobID: 38, an array task's 40_1, a pending rest's 40_[2-5]
        })
    return jobs


def array_job_of(job_id: str | None) -> str | None:
    """The array's job id of an array task's ``JobID`` (``40_1`` -> ``40``, and a pending rest of
    an array ``40_[2-5]`` -> ``40``); None otherwise."""
    m = re.fullmatch(r"(\d+)_(?:\d+|\[.*\])", job_id or "")
    return m[1] if m else None


def array_tasks(spec: str | None, limit: int = 100_000) -> list[int]:
    """The task ids of an array's pending rest as sacct (``40_[2-5,7]``, ``40_[2-9%2]``) or squeue
    (``2-5,7``) writes them; [] for anything else."""
    text = re.sub(r"^\d+_", "", spec or "").strip("[]").split("%")[0]
    tasks: list[int] = []
    for part in filter(None, text.split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?(?::(\d+))?", part)
        if not m:
            return []
        lo, hi, step = int(m[1]), int(m[2] or m[1]), int(m[3] or 1)
        tasks += range(lo, min(hi, lo + limit) + 1, step)
    return tasks


# --------------------------------------------------------------------------------------------
# Why a job failed, and whether another attempt can help


RETRY_CAUSES = {"OUT_OF_MEMORY": "memory", "TIMEOUT": "time", "DEADLINE": "time", "NODE_FAIL": "node",
                "BOOT_FAIL": "node", "PREEMPTED": "node"}
KILLED_FOR_MEMORY = (9,)  # SIGKILL: what OverMemoryKill (no cgroup memory) sends a step over its memory


def failure_cause(state: str | None, exit_code: str | None = None, step_states: tuple = ()) -> str | None:
    """Why a job that ended in ``state`` (sacct's) with ``exit_code`` (``N:S``) failed, as far as
    another attempt can help: ``memory`` (OUT_OF_MEMORY; or FAILED after a SIGKILL, which is how
    OverMemoryKill ends a step over its memory, or exit 137), ``time`` (TIMEOUT, DEADLINE), ``node``
    (NODE_FAIL, BOOT_FAIL, PREEMPTED: the same job on another node or later); ``unknown`` where
    there is no state to tell; None otherwise: the job's command failed (FAILED with an exit code,
    which sacct cannot tell apart further: hpc.execution.slurm_plugin asks the job) or it was
    CANCELLED (by a user or an admin)."""
    name = normal_state(state)
    if not name or name in ("UNKNOWN", "PENDING", "RUNNING", "COMPLETED"):
        return "unknown"
    if name in RETRY_CAUSES:
        return RETRY_CAUSES[name]
    code, sig = parse_exit(exit_code)
    if name == "FAILED" and (sig in KILLED_FOR_MEMORY or code == 128 + 9
                             or "OUT_OF_MEMORY" in {normal_state(s) for s in step_states}):
        return "memory"  # (a step killed by the cgroup's OOM handler while the batch step exits 1)
    return None


def job_outcome(job_id: str, runner=None) -> dict | None:
    """The accounting record of one job, by its id as Snakemake's Slurm plugin knows it (``38``, or
    an array task's ``40_1``), or None where sacct does not know it."""
    rows = sacct(["-j", str(job_id)], FIELDS, runner)
    if not rows:
        return None
    for row in rows:
        if str(job_id) in (row.get("JobID"), row.get("JobIDRaw")):
            record = records_from_rows([r for r in rows if r["JobIDRaw"].split(".")[0] == row["JobIDRaw"]])
            steps = tuple(r.get("State", "") for r in rows if r["JobIDRaw"].startswith(row["JobIDRaw"] + "."))
            return {k: v for k, v in record[row["JobIDRaw"]].items() if not k.startswith("_")} | {"step_states": steps}
    return None


__all__ = ["job_records", "jobs_since", "job_outcome", "failure_cause", "array_tasks", "sacct", "normal_state", "parse_exit", "submit_option", "comment_of", "parse_duration", "parse_memory_mb", "parse_rows", "records_from_rows", "expand_nodes",
           "empty_record", "RECORD_KEYS"]
