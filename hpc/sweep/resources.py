"""What a sweep's jobs ask the scheduler for, and how a shard job starts its processes.

Pure functions of a checked spec (hpc.sweep.spec.Spec), used by workflow/rules/sweep.smk. The
spec's ``resources`` override the profile's default-resources for this sweep only.
"""

from __future__ import annotations

from typing import Callable

from hpc.sweep.spec import Spec

DASK_DRIVER_MEM_MB = 2000  # the job that runs the dask scheduler client (hpc run-dask)
DASK_DRIVER_WALLTIMES = 4  # it outlives its workers' walltime this many times over


def grows_with_attempt(value: int) -> Callable:
    """A Snakemake resource callable: ``value`` on the first attempt, twice it on the second, ..."""
    return lambda wildcards, attempt: value * attempt


def shard_resources(spec: Spec) -> dict:
    """The Snakemake resources of one shard job.

    Memory and time grow with the attempt, so a retry (--retries) of a job killed for running
    out of either asks for more. ``gpus`` becomes the Slurm plugin's ``gpu``; a shard of several
    tasks starts its own processes (``hpc run-shard --tasks``: srun inside the job), and ``mpi``
    tells the Slurm plugin not to wrap the command in a one-task srun.
    """
    res: dict = dict(spec.resources)
    for key in ("mem_mb", "runtime"):
        if key in res:
            res[key] = grows_with_attempt(res[key])
    gpus = res.pop("gpus", 0)
    if gpus:
        res["gpu"] = gpus
        if res.get("tasks", 1) == gpus:
            # One process per GPU. For a GPU job the Slurm plugin asks sbatch for
            # --ntasks-per-gpu=<tasks_per_gpu>, which defaults to the job's task count: 8 tasks
            # on 8 GPUs would become 64 tasks.
            res["tasks_per_gpu"] = 1
    if res.get("tasks", 1) > 1:
        res["mpi"] = "srun --mpi=pmi2" if spec.mpi else "srun"
    return res


def launch_args(spec: Spec) -> str:
    """The options of ``hpc run-shard`` that say how a shard job starts its processes."""
    args = f"--tasks {spec.resources.get('tasks', 1)}"
    if spec.mpi:
        args += " --mpi"
    if spec.cpu_devices:
        args += f" --cpu-devices {spec.cpu_devices}"
    return args


def dask_resources(spec: Spec) -> dict:
    """The resources of the job that drives a dask sweep (its workers are jobs of their own)."""
    return {"mem_mb": DASK_DRIVER_MEM_MB, "runtime": spec.dask["walltime_min"] * DASK_DRIVER_WALLTIMES}
