"""What a sweep's jobs ask the scheduler for, and how a shard job starts its processes.

Pure functions of a checked spec (hpc.sweep.spec.Spec), used by workflow/rules/sweep.smk. The
spec's ``resources`` override the profile's default-resources for this sweep only.
"""

from __future__ import annotations

from typing import Any, Callable

from hpc.execution import slurm_plugin
from hpc.sweep.spec import Spec

DASK_DRIVER_MEM_MB = 2000  # the job that runs the dask scheduler client (hpc run-dask)
DASK_DRIVER_WALLTIMES = 4  # it outlives its workers' walltime this many times over


GROWS_FOR = {"mem_mb": "memory", "runtime": "time"}  # which failure makes a resource grow


def grown_for(value: int, cause: str, causes: list, attempt: int) -> int:
    """``value`` once more for each earlier attempt that failed for ``cause`` (``memory``, ``time``)
    or for a cause not known (no record: as if for every cause): ``causes`` are the earlier
    attempts' (hpc.execution.accounting.failure_cause), in order."""
    known = list(causes)[:max(0, attempt - 1)]
    known += ["unknown"] * (max(0, attempt - 1) - len(known))
    return int(value * (1 + sum(c in (cause, "unknown") for c in known)))


def grows_for_cause(value: int, cause: str, rule: str) -> Callable:
    """A Snakemake resource callable for ``rule``'s jobs: ``value`` on the first attempt; on a retry
    more only where the earlier attempts failed for ``cause`` (as recorded in Snakemake's process
    by hpc.execution.slurm_plugin: memory after OUT_OF_MEMORY, time after TIMEOUT, the same after a
    node failure). Without a record (another executor, or Snakemake inside the job) every failure
    counts: ``value`` times the attempt."""
    def resource(wildcards, attempt):
        return grown_for(value, cause, slurm_plugin.earlier_causes(rule, wildcards), attempt)
    return resource


def profile_default(workflow: Any, name: str) -> int | None:
    """The profile's default-resources value of ``name`` at the first attempt (``1000*attempt`` is
    1000), or None where it has none or it is not a plain number of the attempt."""
    try:
        resource = workflow.resource_settings._parsed_default_resources.get(name)
        raw = getattr(resource, "raw", None)
        if raw is None and resource is not None and not resource.is_evaluable():
            raw = resource.value
        value = eval(str(raw), {"__builtins__": {}}, {"attempt": 1}) if raw is not None else None
    except Exception:  # an expression of something else (input, threads): leave it to the profile
        return None
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def shard_resources(spec: Spec, workflow: Any = None, rule: str = "run_shard") -> dict:
    """The Snakemake resources of one shard job.

    Memory (``mem_mb``) and time (``runtime``): the spec's, else the profile's default at the first
    attempt (``workflow``), grown on a retry for the cause of the earlier failures
    (``grows_for_cause``). ``hpc_attempt`` is Snakemake's attempt, handed to the job
    (SNAKEMAKE_ATTEMPT, recorded in the shard's marker). ``gpus`` becomes the Slurm plugin's
    ``gpu``; a shard of several tasks starts its own processes (``hpc run-shard --tasks``: srun
    inside the job), and ``mpi`` tells the Slurm plugin not to wrap the command in a one-task srun.
    """
    res: dict = dict(spec.resources)
    for key, cause in GROWS_FOR.items():
        base = res.get(key) or (profile_default(workflow, key) if workflow is not None else None)
        if base:
            res[key] = grows_for_cause(base, cause, rule)
    res["hpc_attempt"] = lambda wildcards, attempt: attempt
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
