"""What the workflow's jobs ask the scheduler for: pure functions of the checked spec."""

from __future__ import annotations

import copy

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


def test_a_sweep_without_resources_leaves_the_profile_defaults_alone():
    spec = sweep()
    assert sweep_resources.shard_resources(spec) == {}
    assert sweep_resources.launch_args(spec) == "--tasks 1"


def test_memory_and_time_grow_with_the_attempt():
    res = sweep_resources.shard_resources(sweep(resources={"mem_mb": 1000, "runtime": 10, "nodes": 1}))
    assert res["nodes"] == 1
    assert [res["mem_mb"](None, attempt) for attempt in (1, 2, 3)] == [1000, 2000, 3000]
    assert res["runtime"](None, 2) == 20


def test_gpus_and_several_tasks():
    res = sweep_resources.shard_resources(sweep(resources={"gpus": 2, "tasks": 2}))
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
