"""The correction to the Slurm executor plugin's status query (hpc.execution.slurm_plugin)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import secrets
import shlex
import subprocess
import sys
import zlib
from types import SimpleNamespace

import pytest

from hpc.execution import slurm_plugin


def test_state_names():
    assert slurm_plugin.state_name("CANCELLED by 0") == "CANCELLED"
    assert slurm_plugin.state_name("OUT_OF_MEMORY") == "OUT_OF_MEMORY"
    assert slurm_plugin.state_name("") == ""


def test_the_plugin_then_sees_a_cancelled_job_as_cancelled():
    import snakemake_executor_plugin_slurm as plugin

    # What sacct prints for a job scancel'ed by root, run for real through the plugin's own query.
    command = shlex.join(["printf", r"41|CANCELLED by 0\n42|COMPLETED\n43|OUT_OF_MEMORY\n"])
    assert slurm_plugin.install()
    assert slurm_plugin.install()  # a second install does not wrap twice
    assert plugin.query_job_status.__wrapped__.__module__ == "snakemake_executor_plugin_slurm.job_status_query"
    raw, _ = asyncio.run(plugin.query_job_status.__wrapped__(command, logging.getLogger("test")))
    fixed, _ = asyncio.run(plugin.query_job_status(command, logging.getLogger("test")))
    assert raw["41"] == "CANCELLED by 0"  # the plugin on its own: not one of its failure states
    assert fixed == {"41": "CANCELLED", "42": "COMPLETED", "43": "OUT_OF_MEMORY"}


def test_array_tasks_are_asked_of_sacct_as_jobid_task():
    """The plugin knows array task 1 of array 346 as 346_1; asked for JobIdRaw sacct names it 347,
    and the plugin fell back to 346: the raw id of task 3, whose state every task then took."""
    import snakemake_executor_plugin_slurm as plugin
    from snakemake_executor_plugin_slurm.job_status_query import query_job_status_sacct

    assert slurm_plugin.install()
    command = query_job_status_sacct("run-uuid")
    assert "--format=JobIdRaw,State" in command  # the plugin's own query
    seen = []

    async def recording(cmd, logger):
        seen.append(cmd)
        return {"346_1": "COMPLETED"}, 0.0
    got, _ = asyncio.run(slurm_plugin._query_with(recording)(command, logging.getLogger("test")))
    assert got == {"346_1": "COMPLETED"} and plugin.query_job_status.__wrapped__ is not recording
    assert "--format=JobID,State" in seen[0] and "JobIdRaw" not in seen[0]


def test_failed_nodes_keep_node_names_only():
    import snakemake_executor_plugin_slurm as plugin

    assert slurm_plugin.install()
    executor = object.__new__(plugin.Executor)  # no workflow: only the attribute is exercised
    executor._failed_nodes = {"n2", " "}
    executor._failed_nodes.add("None assigned")  # what sacct -o nodelist says of a requeued job
    executor._failed_nodes.add("n3 ")
    assert executor._failed_nodes == {"n2", "n3"}
    assert ",".join(sorted(executor._failed_nodes)) == "n2,n3"


def test_an_array_per_set_of_resources_and_a_job_alone_as_a_plain_job(monkeypatch):
    """Plugin 2.8.0 gives every task of an array the first job's resources: a retry with twice the
    memory, handed over beside first attempts, would not get it."""
    import snakemake_executor_plugin_slurm as plugin

    assert slurm_plugin.install()
    submitted = []
    monkeypatch.setattr(plugin.Executor, "run_job_pre", lambda self, job: None, raising=False)
    executor = object.__new__(plugin.Executor)
    executor._job_submission_executor = SimpleNamespace(submit=lambda fn, jobs: submitted.append(
        ("array", [j.name for j in jobs])))
    executor._submit_job = lambda job: submitted.append(("job", job.name))
    executor.format_job_exec = lambda job: f"python -m snakemake --target-jobs run_shard:shard={job.name}"
    jobs = [SimpleNamespace(name=f"s{i}", resources={"mem_mb": mem, "runtime": 30, "_cores": 1})
            for i, mem in enumerate([1000, 1000, 2000, 1000, 4000, 4000])]
    executor._submit_array_jobs(jobs)
    assert submitted == [("array", ["s0", "s1", "s3"]), ("job", "s2"), ("array", ["s4", "s5"])]
    assert plugin.pending_jobs_for_rule(None, "run_shard") == 0  # what it is handed is submitted


def test_array_tasks_file(tmp_path):
    path = slurm_plugin.array_tasks_file(tmp_path / "rule_run_shard" / "300_2.log", "300")
    assert path == tmp_path / "rule_run_shard" / "300.tasks"
    assert slurm_plugin.read_array_tasks(path) == {}
    path.parent.mkdir()
    path.write_text("1 rule_run_shard_wildcards_0004\n2 rule_run_shard_wildcards_0007\ngarbage\n")
    assert slurm_plugin.read_array_tasks(path) == {1: "rule_run_shard_wildcards_0004", 2: "rule_run_shard_wildcards_0007"}


def test_which_errors_of_a_job_are_final():
    assert slurm_plugin.is_final(RuntimeError("model bug: no solution method"))
    assert slurm_plugin.is_final(NotImplementedError("variant 'broken' has no solver"))
    assert not slurm_plugin.is_final(MemoryError())
    assert not slurm_plugin.is_final(OSError(28, "No space left on device"))
    assert not slurm_plugin.is_final(RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 4 GB"))
    assert not slurm_plugin.is_final(RuntimeError("DEADLINE_EXCEEDED: Barrier timed out; gloo connection closed"))
    assert slurm_plugin.no_retry_path("results/x/logs/shard-0001.log").name == "shard-0001.log.noretry"


def _array_execs(commands: dict[int, str]) -> str:
    """--slurm-jobstep-array-execs as plugin 2.8.0 writes it: base64 of JSON, task -> zlib hex."""
    return base64.b64encode(json.dumps({str(t): zlib.compress(c.encode(), 9).hex() for t, c in commands.items()})
                            .encode()).decode()


def test_an_array_task_runs_its_own_job_not_the_first_tasks(tmp_path):
    """Every task of an array runs the array's batch script, Snakemake's job step for the first
    job: in task 3 that Snakemake waited for the first job's outputs after task 3's own command and,
    failing, deleted them. Task 3's batch process must become task 3's command; the first task (the
    index the commands leave out) keeps its own, whatever SLURM_ARRAY_TASK_MIN says."""
    from snakemake_executor_plugin_slurm_jobstep import _decompress_array_task_call

    payload = _array_execs({2: "echo shard 0002", 3: "echo shard 0000 > out"})
    assert _decompress_array_task_call(payload, 3) == "echo shard 0000 > out"  # the job step reads it so
    outer = ["snakemake", "--target-jobs", "run_shard:shard=0001", "--executor", "slurm-jobstep",
             f"--slurm-jobstep-array-execs={payload}"]
    assert slurm_plugin.own_array_task_command(outer, {"SLURM_ARRAY_TASK_ID": "3"}) == "echo shard 0000 > out"
    assert slurm_plugin.own_array_task_command(outer[:-1] + ["--slurm-jobstep-array-execs", payload],
                                               {"SLURM_ARRAY_TASK_ID": "2"}) == "echo shard 0002"
    exec_calls = []
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1"}
    slurm_plugin.run_own_array_task(outer, env, execv=lambda *a: exec_calls.append(a))
    assert exec_calls == [("/bin/sh", ["/bin/sh", "-c", "echo shard 0000 > out"])]

    # The first task: not among the commands, so it runs this process's own job; a requeued first
    # task whose SLURM_ARRAY_TASK_MIN were another index is still taken for the first.
    first = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "2"}
    slurm_plugin.run_own_array_task(outer, first, execv=lambda *a: exec_calls.append(a))
    assert len(exec_calls) == 1 and first["SLURM_ARRAY_TASK_MIN"] == "1"
    # A plain job, or a process outside an array: nothing happens.
    plain = {"SLURM_JOB_ID": "9"}
    slurm_plugin.run_own_array_task(outer[:-1], {"SLURM_ARRAY_TASK_ID": "3"}, execv=lambda *a: exec_calls.append(a))
    slurm_plugin.run_own_array_task(outer, plain, execv=lambda *a: exec_calls.append(a))
    assert len(exec_calls) == 1 and plain == {"SLURM_JOB_ID": "9"}

    # For real: the process is replaced by the task's command (nothing after the call runs).
    code = "import sys; from hpc.execution import slurm_plugin; slurm_plugin.run_own_array_task(); print('first job')"
    run = subprocess.run([sys.executable, "-c", code, *outer[1:]], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(os.environ, SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_TASK_MIN="1"), timeout=60)
    assert run.returncode == 0 and run.stdout == "", run.stderr
    assert (tmp_path / "out").read_text() == "shard 0000\n"


def test_arrays_are_cut_where_their_sbatch_command_line_fits(tmp_path):
    """Plugin 2.8.0 puts every task's command on one sbatch command line, which sh -c gets as one
    argument: beyond Linux's 128 KiB an array of 120 shard jobs could not be submitted at all."""
    # Shard jobs' commands, made incompressible (a real one is about 1.5 KB once compressed).
    commands = [f"/x/.venv/bin/python -m snakemake --target-jobs run_shard:shard={i:04d} --x {secrets.token_hex(800)}"
                for i in range(120)]
    parts = slurm_plugin.array_parts([slurm_plugin.array_exec_size(c) for c in commands])
    assert [i for part in parts for i in part] == list(range(120)) and len(parts) > 1

    def sbatch_line(part):  # what the plugin runs for one array (run_array_jobs, --wrap)
        payload = _array_execs({t: commands[i] for t, i in enumerate(part, start=1) if t > 1})
        return (f"true sbatch --parsable --array=1-{len(part)} -p debug --mem 1000 "
                f'--wrap="{commands[part[0]]} --slurm-jobstep-array-execs={payload}"')

    for part in parts:
        subprocess.run(sbatch_line(part), shell=True, check=True)  # each array's line is accepted
        assert len(sbatch_line(part)) < slurm_plugin.ARG_STRLEN
    with pytest.raises(OSError, match="Argument list too long"):
        subprocess.run(sbatch_line(list(range(120))), shell=True)  # one array of all: refused
