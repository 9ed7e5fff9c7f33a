"""What the workflow's jobs ask the scheduler for: pure functions of the checked spec."""

from __future__ import annotations

import copy
from types import SimpleNamespace

from hpc.execution import slurm_plugin
from hpc.sweep import resources as sweep_resources
from hpc.sweep.spec import parse_spec
from hpc.train import resources as train_resources
from hpc.train.spec import parse_train_spec

SWEEP = {"name": "res", "model": "mccall", "sweep": {"c": [10.0, 20.0]}}
TRAIN = {"name": "res-train", "data": {"synthetic": {"samples": 100}}, "network": {"width": 4, "depth": 1},
         "optimizer": {"learning_rate": 1.0e-3}, "batch_size": 8, "steps": 10}


def sweep(**changes):
    return parse_spec({**copy.deepcopy(SWEEP), **changes})


def train(**changes):
    return parse_train_spec({**copy.deepcopy(TRAIN), **changes})


def profile(*defaults):
    """What Snakemake holds of a profile's default-resources (its own parser and settings)."""
    from snakemake.resources import Resources
    from snakemake.settings.types import ResourceSettings

    return SimpleNamespace(resource_settings=ResourceSettings(
        default_resources=Resources.parse(list(defaults), allow_expressions=True)))


def test_a_sweep_without_resources_leaves_the_profile_defaults_alone():
    spec = sweep()
    res = sweep_resources.shard_resources(spec)
    assert set(res) == {"hpc_attempt"} and res["hpc_attempt"](None, 3) == 3
    assert sweep_resources.launch_args(spec) == "--tasks 1"


def test_memory_and_time_grow_with_the_attempt_where_the_cause_is_not_known():
    res = sweep_resources.shard_resources(sweep(resources={"mem_mb": 1000, "runtime": 10, "nodes": 1}))
    assert res["nodes"] == 1
    assert [res["mem_mb"]({"shard": "0009"}, attempt) for attempt in (1, 2, 3)] == [1000, 2000, 3000]
    assert res["runtime"]({"shard": "0009"}, 2) == 20


def test_memory_grows_after_out_of_memory_and_time_after_timeout_only(monkeypatch):
    monkeypatch.setattr(slurm_plugin, "CAUSES", {})
    res = sweep_resources.shard_resources(sweep(resources={"mem_mb": 1000, "runtime": 10}))
    shard = {"shard": "0003"}
    slurm_plugin.record_cause("run_shard", shard, "memory")  # attempt 1: OUT_OF_MEMORY
    assert (res["mem_mb"](shard, 2), res["runtime"](shard, 2)) == (2000, 10)
    slurm_plugin.record_cause("run_shard", shard, "time")  # attempt 2: TIMEOUT
    assert (res["mem_mb"](shard, 3), res["runtime"](shard, 3)) == (2000, 20)
    slurm_plugin.record_cause("run_shard", shard, "node")  # attempt 3: NODE_FAIL, the same again
    assert (res["mem_mb"](shard, 4), res["runtime"](shard, 4)) == (2000, 20)
    other = {"shard": "0004"}  # nothing recorded for it: as if for every cause
    assert (res["mem_mb"](other, 2), res["runtime"](other, 2)) == (2000, 20)


def test_without_spec_resources_the_profile_default_is_the_base():
    workflow = profile("mem_mb=1500*attempt", "runtime=30", "cpus_per_task=threads")
    res = sweep_resources.shard_resources(sweep(), workflow)
    assert res["mem_mb"]({"shard": "0000"}, 1) == 1500 and res["runtime"]({"shard": "0000"}, 1) == 30
    res = sweep_resources.shard_resources(sweep(resources={"mem_mb": 700}), workflow)
    assert res["mem_mb"]({"shard": "0000"}, 1) == 700
    assert sweep_resources.profile_default(workflow, "cpus_per_task") is None  # not a number of the attempt
    assert sweep_resources.profile_default(profile("runtime=30"), "mem_mb") is None


def test_gpus_and_several_tasks():
    res = sweep_resources.shard_resources(sweep(resources={"gpus": 2, "tasks": 2}))
    res.pop("hpc_attempt")
    # one process per GPU: the plugin's --ntasks-per-gpu must be 1, not the task count
    assert res == {"gpu": 2, "tasks": 2, "tasks_per_gpu": 1, "mpi": "srun"}
    spec = sweep(resources={"tasks": 4}, mpi=True, cpu_devices=2)
    assert sweep_resources.shard_resources(spec)["mpi"] == "srun --mpi=pmi2"
    assert sweep_resources.launch_args(spec) == "--tasks 4 --mpi --cpu-devices 2"
    assert "mpi" not in sweep_resources.shard_resources(sweep(resources={"gpus": 0}))


def test_the_dask_driver_outlives_its_workers():
    spec = sweep(backend="dask", dask={"walltime_min": 20, "lifetime_min": 15})
    assert sweep_resources.dask_resources(spec) == {"mem_mb": 2000, "runtime": 80}
    assert sweep_resources.dask_resources(sweep(backend="dask"))["runtime"] == 120  # the schema's 30 min


def test_training_resources():
    spec = train()
    assert train_resources.train_resources(spec) == {"slurm_extra": "--signal=TERM@120"}
    assert train_resources.launch_args(spec) == "--tasks 1"
    res = train_resources.train_resources(train(resources={"nodes": 2, "tasks": 4, "signal_s": 60, "runtime": 5}))
    assert res == {"nodes": 2, "tasks_per_node": 2, "mpi": "srun", "runtime": 5, "slurm_extra": "--signal=TERM@60"}
    res = train_resources.train_resources(train(resources={"tasks": 2, "gpus": 2}))
    assert res == {"tasks_per_node": 2, "gpu": 2, "tasks_per_gpu": 1, "mpi": "srun", "slurm_extra": "--signal=TERM@120"}
    res = train_resources.train_resources(train(batch_size=12, resources={"nodes": 2, "tasks": 3}))
    assert res["tasks"] == 3 and "tasks_per_node" not in res  # uneven: Slurm places them
    assert train_resources.launch_args(train(cpu_devices=4, resources={"tasks": 2})) == "--tasks 2 --cpu-devices 4"
