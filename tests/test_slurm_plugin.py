"""The correction to the Slurm executor plugin's status query (hpc.execution.slurm_plugin)."""

from __future__ import annotations

import asyncio
import logging
import shlex
from types import SimpleNamespace

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
