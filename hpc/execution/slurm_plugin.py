"""Corrections and additions to Snakemake's Slurm executor plugin (2.8.0), installed in Snakemake's
own process by the Snakefile. The first two show only where sacct answers, as on production sites.

States. The plugin learns that its jobs ended from ``sacct -X --format=JobIdRaw,State``, and compares
each state with its list of failure states as written. sacct writes a cancelled job's state as
``CANCELLED by <uid>`` (scancel by a user or an admin, a preemption, a node drained with
``scontrol``), which is not in that list, so plugin 2.8.0 takes such a job for a running one and
Snakemake waits for it forever. (The old Snakemake profile's status script had the same bug:
Snakemake-Profiles/slurm pull request 22.) Here every state is reduced to its first word, Slurm's
state name, before the plugin sees it.

Failed nodes. After a NODE_FAIL the plugin asks sacct for the job's node list and excludes those
nodes from every later submission (``sbatch --exclude``). Once Slurm has requeued the job, sacct
shows its new, pending record, whose node list reads ``None assigned``; the plugin then submits
every later job with ``--exclude=None assigned``, which sbatch refuses ("Unable to open file
assigned"), and the whole workflow fails. Here the plugin's set of failed nodes keeps node names
only.

Retries by cause. Snakemake retries every failed job (``retries``), whatever failed. Here each
failed job's cause is read from Slurm's accounting (``hpc.execution.accounting.failure_cause``):
OUT_OF_MEMORY, TIMEOUT, NODE_FAIL, PREEMPTED (and a FAILED step killed by SIGKILL, OverMemoryKill's
way) are retried, and the cause is recorded (``earlier_causes``) so that the job's resources grow
for it (hpc.sweep.resources: memory after OUT_OF_MEMORY, time after TIMEOUT, neither after a node
failure); a job that says another attempt cannot help it fails at once, with its reason in the
error, instead of being submitted again with twice the memory: a shard job whose model or code
raised writes ``<its log>.noretry`` (``no_retry_path``, ``is_final``: not for memory, filesystem or
peer-process errors), and a CANCELLED job (a user's or an admin's scancel) is not retried either.
A FAILED job without that file (Slurm's exit code is Snakemake's own 1 whatever failed inside,
e.g. srun unable to start a step on a node that died) is retried as before, every resource grown.
(Compare nf-core's rule: retry on the exit statuses of a
job killed by the scheduler, finish on any other.)

Job arrays (``--slurm-array-jobs``, profiles/slurm). Four defects of plugin 2.8.0's arrays:
- It knows a task as ``<array id>_<task>`` but asks sacct for ``JobIdRaw``, in which each task has
  its own number, and then falls back to the array's id: the id of one task (the last). Every task
  of an array took that task's state, so one task's failure failed them all and its end ended
  them all. Here the query asks for ``JobID`` (``346_1``), which is how the plugin knows them.
- It submits a rule's jobs as an array only once every job of the rule that is ready has reached
  it; the jobs Snakemake did not hand over (over the ``jobs`` limit) never reach it, and the ones it
  was handed are dropped unsubmitted: Snakemake then waits forever. Here the plugin submits, as one
  array per rule (cut at ``array_limit``), the jobs Snakemake hands it at once.
- One array takes the first job's resources for all of its tasks: a retry that asks for more
  memory, handed over with first attempts, would not get it. Here a rule's jobs are put into one
  array per set of resources (a job alone is submitted as a plain job).
- Every task of an array carries the comment of the first job (``rule_run_shard_wildcards_0000``),
  and the log the plugin names for a task (``rule_X/<wildcards>/<id>_<i>.log``) is not the one Slurm
  writes (``rule_X/%A_%a.log``). Here the task's log is named right, and each task's own comment is
  written to ``rule_X/<array id>.tasks`` beside the logs (``read_array_tasks``), which is how
  ``hpc status`` tells an array task's shard.
- Every task of an array runs the array's one batch script: Snakemake's job step for the array's
  first job, handed the other tasks' commands (``--slurm-jobstep-array-execs``). In any other task
  that Snakemake, its job the first job, runs the task's own command as a child and then handles
  the outcome as the first job's: on success it waits ``latency-wait`` seconds for the first job's
  outputs and fails the task when they are not there (the first task still running, requeued or
  failed); on failure it deletes the first job's outputs, a finished shard's marker among them. So
  when a node died under an array's first task, which Slurm requeued, the array's other tasks
  failed after their shards had completed, and were run again. Here (``run_own_array_task``, the
  Snakefile's first step) the batch process of any task but the first replaces itself with the
  task's own command before the workflow is built, as the batch process of a plain job is; and
  the first task is told by its index (the one the commands leave out), not by
  ``SLURM_ARRAY_TASK_MIN``.
- The plugin puts every task's command (about 2 KB each, base64) on the one sbatch command line,
  run through ``sh -c``: Linux refuses one argument over 128 KiB (MAX_ARG_STRLEN, E2BIG), so an
  array of more than about 60 shard jobs could not be submitted, and the plugin's fallback then
  wrote a job script with the option and the commands on lines of their own (every task exited
  127: ``--slurm-jobstep-array-execs: not found``). Here a rule's jobs are cut into arrays whose
  task commands fit 96 KiB (``array_parts``): 500 shards are about 10 sbatch calls.
"""

from __future__ import annotations

import os
import re
import sys
import zlib
from pathlib import Path

MARK = "_hpc_first_word_states"
ARRAY_TASK = re.compile(r"^(\d+)_(\d+)$")
LOG_LINE_CHARS = 400

# (rule, wildcards) -> the cause of each failed attempt of that job in this Snakemake run, in
# order (see hpc.execution.accounting.failure_cause)
CAUSES: dict[tuple, list] = {}


def state_name(state: str) -> str:
    """Slurm's state name from sacct's State column: "CANCELLED by 0" -> "CANCELLED"."""
    return state.split()[0] if state.split() else state


class NodeNames(set):
    """A set of Slurm node names that ignores what is not one ("None assigned", blanks)."""

    def __init__(self, names=()):
        super().__init__()
        for name in names:
            self.add(name)

    def add(self, name) -> None:
        name = str(name).strip()
        if name and not any(c.isspace() for c in name) and name.lower() not in ("none", "(null)"):
            super().add(name)


def _failed_nodes_property() -> property:
    def get(executor):
        return executor.__dict__.setdefault("_hpc_failed_nodes", NodeNames())

    def put(executor, value):
        executor.__dict__["_hpc_failed_nodes"] = NodeNames(value)

    return property(get, put, doc="nodes to exclude from later submissions (node names only)")


def job_key(rule: str, wildcards) -> tuple:
    """The key of a job in ``CAUSES``: its rule and its wildcards' values."""
    try:
        items = dict(wildcards.items()) if hasattr(wildcards, "items") else dict(wildcards or {})
    except (TypeError, ValueError):
        items = {}
    return (rule, tuple(sorted((str(k), str(v)) for k, v in items.items())))


def earlier_causes(rule: str, wildcards) -> list:
    """The causes of this job's failed attempts so far in this run (none recorded: [])."""
    return list(CAUSES.get(job_key(rule, wildcards), []))


def record_cause(rule: str, wildcards, cause) -> None:
    CAUSES.setdefault(job_key(rule, wildcards), []).append(cause)


def array_tasks_file(slurm_log: Path | str, array_job_id: str) -> Path:
    """Where the comments of an array's tasks are written: beside its logs (``%A_%a.log``)."""
    return Path(slurm_log).parent / f"{array_job_id}.tasks"


def read_array_tasks(path: Path | str) -> dict[int, str]:
    """Task id -> that task's own comment (``rule_run_shard_wildcards_0003``); {} without the file."""
    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    tasks = {}
    for line in text.splitlines():
        task, _, comment = line.partition(" ")
        if task.isdigit() and comment:
            tasks[int(task)] = comment.strip()
    return tasks


ARRAY_EXECS_OPTION = "--slurm-jobstep-array-execs"


def _array_execs_argument(argv) -> str | None:
    """The value of the job step's ``--slurm-jobstep-array-execs`` in a command line, or None."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg.startswith(ARRAY_EXECS_OPTION + "="):
            return arg.split("=", 1)[1]
        if arg == ARRAY_EXECS_OPTION and i + 1 < len(argv):
            return argv[i + 1]
    return None


def own_array_task_command(argv, environ) -> str | None:
    """The command of this array task's own job, where this process is the batch script of an
    array task that is not the array's first (its index among the commands the batch script was
    handed: ``--slurm-jobstep-array-execs``, base64 of JSON, task index -> zlib-compressed command
    in hex); None anywhere else: a plain job, the first task (whose own job is this process's), a
    process outside Slurm."""
    task = str(environ.get("SLURM_ARRAY_TASK_ID", "")).strip()
    payload = _array_execs_argument(argv)
    if payload is None or not task.isdigit():
        return None
    from snakemake_executor_plugin_slurm_jobstep import parse_array_execs

    hexed = parse_array_execs(payload).get(str(int(task)))
    return zlib.decompress(bytes.fromhex(hexed)).decode() if hexed else None


def run_own_array_task(argv=None, environ=None, execv=os.execv) -> None:
    """In an array task's batch process (see the module docstring): run the task's own job and
    nothing else. A task but the first becomes its own command (``/bin/sh -c``, as the job step
    runs it); in the first, ``SLURM_ARRAY_TASK_MIN`` is set to its index so that the job step takes
    it for the first whatever Slurm set after a requeue. Elsewhere it does nothing."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    command = own_array_task_command(argv, environ)
    if command is None:
        if _array_execs_argument(argv) is not None and str(environ.get("SLURM_ARRAY_TASK_ID", "")).isdigit():
            environ["SLURM_ARRAY_TASK_MIN"] = str(int(environ["SLURM_ARRAY_TASK_ID"]))
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    execv("/bin/sh", ["/bin/sh", "-c", command])


NO_RETRY_SUFFIX = ".noretry"
# Errors of the machine or of the job's peers, not of the model or code: another attempt may pass.
NOT_FINAL = ("RESOURCE_EXHAUSTED", "out of memory", "DEADLINE_EXCEEDED", "UNAVAILABLE", "Connection", "connection",
             "gloo", "Gloo", "heartbeat", "coordination")


def no_retry_path(log: Path | str) -> Path:
    """The file beside a job's log that says another attempt cannot help it (one line: why)."""
    return Path(str(log) + NO_RETRY_SUFFIX)


def is_final(exc: BaseException) -> bool:
    """Whether an error raised in a job's own work means another attempt would fail alike: any
    exception but memory (MemoryError, XLA's RESOURCE_EXHAUSTED), the filesystem (OSError: a full
    disk, a lost mount) and the links between a job's processes."""
    if isinstance(exc, (MemoryError, OSError)):
        return False
    text = f"{type(exc).__name__}: {exc}"
    return not any(word in text for word in NOT_FINAL)


def _no_retry_reason(job) -> str | None:
    """What the job wrote of its error: its first line, and its last where there are more (the
    original exception of a callback's traceback, say)."""
    for log in list(getattr(job, "log", None) or [])[:1]:
        try:
            lines = [line.strip() for line in no_retry_path(str(log)).read_text().splitlines() if line.strip()]
        except OSError:
            return None
        if not lines:
            return "no reason given"
        return lines[0][:LOG_LINE_CHARS] if len(lines) == 1 else f"{lines[0][:160]} ... {lines[-1][:LOG_LINE_CHARS]}"
    return None


def _log_line(job) -> str | None:
    """The last line of a job's (first) log file that says something: its error, as a rule."""
    for log in list(getattr(job, "log", None) or [])[:1]:
        try:
            with open(str(log), "rb") as fh:
                fh.seek(0, 2)
                fh.seek(max(0, fh.tell() - 8192))
                lines = [line.strip() for line in fh.read().decode(errors="replace").splitlines() if line.strip()]
        except OSError:
            return None
        return lines[-1][:LOG_LINE_CHARS] if lines else None
    return None


def _resources_key(job) -> tuple:
    try:
        return tuple(sorted((k, str(v)) for k, v in job.resources.items() if k not in ("_cores", "_nodes", "tmpdir")))
    except Exception:  # a resource that cannot be shown: the job goes alone
        return (id(job),)


# Linux's MAX_ARG_STRLEN: one argument of a program, here the sbatch command line that the plugin
# hands to `sh -c` (and, in the job, the task commands handed to Snakemake as one argument).
ARG_STRLEN = 131072
# The task commands of one array at most (base64 characters), leaving room for the rest of the
# sbatch command line (options, the first task's command: a few KB).
ARRAY_EXECS_BUDGET = 96 * 1024


def array_exec_size(command: str) -> int:
    """The characters a task's command takes among an array's task commands (its JSON entry,
    ``"123": "<zlib hex>", ``, as plugin 2.8.0 writes them, before base64)."""
    return len(zlib.compress(command.encode("utf-8"), 9).hex()) + 16


def array_parts(sizes: list[int], budget: int = ARRAY_EXECS_BUDGET) -> list[list[int]]:
    """A rule's jobs (by index, their ``array_exec_size``) cut into arrays whose task commands,
    base64-encoded, fit ``budget``: the first job of each is its batch script's own command."""
    parts: list[list[int]] = []
    used = 0
    for i, size in enumerate(sizes):
        if parts and used + size <= budget * 3 // 4:  # base64: 4 characters per 3 bytes
            parts[-1].append(i)
            used += size
        else:
            parts.append([i])
            used = 0  # the first task's command is not among the task commands
    return parts


def _install_arrays(plugin) -> None:
    executor = plugin.Executor
    # Submit what Snakemake hands over (see the module docstring): no job counts as still to come.
    plugin.pending_jobs_for_rule = lambda dag, rule_name: 0

    submit_array = executor._submit_array_jobs

    def _submit_array_jobs(self, jobs):
        groups: dict[tuple, list] = {}
        for job in jobs:
            groups.setdefault(_resources_key(job), []).append(job)
        for group in groups.values():
            for part in array_parts([array_exec_size(self.format_job_exec(job)) for job in group]):
                if len(part) == 1:
                    self._submit_job(group[part[0]])
                else:
                    submit_array(self, [group[i] for i in part])

    report_submission = executor.report_job_submission

    def report_job_submission(self, job_info, **kwargs):
        match = ARRAY_TASK.match(str(getattr(job_info, "external_jobid", "") or ""))
        job = getattr(job_info, "job", None)
        if match and job is not None and not job.is_group():
            try:
                from snakemake_executor_plugin_slurm.utils import get_job_wildcards

                wildcards = get_job_wildcards(job)
                comment = f"rule_{job.name}_wildcards_{wildcards}" if wildcards else f"rule_{job.name}"
                log = Path(self.slurm_logdir) / f"rule_{job.name}" / f"{match[1]}_{match[2]}.log"
                job_info.aux["slurm_logfile"] = log
                with open(array_tasks_file(log, match[1]), "a") as fh:
                    fh.write(f"{match[2]} {comment}\n")
            except Exception as exc:  # a record for hpc status: never a reason to fail the workflow
                self.logger.warning(f"could not record array task {job_info.external_jobid}: {exc}")
        return report_submission(self, job_info, **kwargs)

    executor._submit_array_jobs = _submit_array_jobs
    executor.report_job_submission = report_job_submission


def _install_retry_by_cause(plugin) -> None:
    executor = plugin.Executor
    report_error = executor.report_job_error

    def report_job_error(self, job_info, msg=None, **kwargs):
        job = getattr(job_info, "job", None)
        external = getattr(job_info, "external_jobid", None)
        if job is not None and external and not job.is_group():
            try:
                from hpc.execution import accounting

                record = accounting.job_outcome(external) or {}
                cause = accounting.failure_cause(record.get("state"), record.get("exit_code"),
                                                 record.get("step_states", ()))
                final = _no_retry_reason(job) if cause in (None, "unknown") else None
                if cause is None and accounting.normal_state(record.get("state")) == "FAILED" and not final:
                    cause = "unknown"  # e.g. srun could not start the step on a failed node: try again
                if final:
                    cause = None
                record_cause(job.rule.name, job.wildcards, cause)
                if cause is None:
                    why = (f"not retried: Slurm job {external} ended {record.get('state')} "
                           f"(exit code {record.get('exit_code')}), which more memory, time or another node "
                           "would not change")
                    line = final or _log_line(job)
                    msg = f"{msg}\n{why}" + (f"; the job's error: {line}" if line else "")
                    if job.restart_times > job.attempt - 1:
                        job.attempt = job.restart_times + 1  # Snakemake retries while attempts are left
                elif cause != "unknown":
                    msg = f"{msg}\nretried where attempts are left: cause {cause}"
            except Exception as exc:  # never a reason to lose the error itself
                self.logger.warning(f"could not tell why job {external} failed: {exc}")
        return report_error(self, job_info, msg=msg, **kwargs)

    executor.report_job_error = report_job_error


def _query_with(original):
    """The plugin's status query ``original``, asking for array tasks by JOBID_TASK and handing on
    state names."""
    async def query_job_status(command, logger):
        # Array tasks are known by JOBID_TASK; sacct's JobIdRaw names them by their own ids, so the
        # plugin's fall-back to the array's id took the state of the one task whose own id that is.
        command = command.replace("--format=JobIdRaw,State", "--format=JobID,State")
        statuses, duration = await original(command, logger)
        if statuses is not None:
            statuses = {job: state_name(state) for job, state in statuses.items()}
        return statuses, duration
    return query_job_status


def install() -> bool:
    """Wrap the plugin's status query so that it hands on state names, keep its failed nodes to
    node names, retry by cause and mend its arrays (see the module docstring); False without the
    plugin."""
    try:
        import snakemake_executor_plugin_slurm as plugin
    except ImportError:
        return False
    original = getattr(plugin, "query_job_status", None)
    if original is None:
        return False
    if getattr(original, MARK, False):
        return True
    if hasattr(plugin, "Executor"):
        plugin.Executor._failed_nodes = _failed_nodes_property()
        if hasattr(plugin.Executor, "_submit_array_jobs") and hasattr(plugin, "pending_jobs_for_rule"):
            _install_arrays(plugin)
        _install_retry_by_cause(plugin)

    query_job_status = _query_with(original)
    setattr(query_job_status, MARK, True)
    query_job_status.__wrapped__ = original
    plugin.query_job_status = query_job_status
    return True
