"""The correction to the Slurm executor plugin's status query (hpc.execution.slurm_plugin)."""

from __future__ import annotations

import asyncio
import logging
import shlex

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


def test_failed_nodes_keep_node_names_only():
    import snakemake_executor_plugin_slurm as plugin

    assert slurm_plugin.install()
    executor = object.__new__(plugin.Executor)  # no workflow: only the attribute is exercised
    executor._failed_nodes = {"n2", " "}
    executor._failed_nodes.add("None assigned")  # what sacct -o nodelist says of a requeued job
    executor._failed_nodes.add("n3 ")
    assert executor._failed_nodes == {"n2", "n3"}
    assert ",".join(sorted(executor._failed_nodes)) == "n2,n3"
