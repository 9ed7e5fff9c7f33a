"""What a training job asks the scheduler for, and how it starts its processes.

Pure functions of a checked training spec (hpc.train.spec.TrainSpec), used by
workflow/rules/train.smk. The spec's ``resources`` override the profile's default-resources for
this run only.
"""

from __future__ import annotations

from hpc.train.spec import TrainSpec


def train_resources(spec: TrainSpec) -> dict:
    """The Snakemake resources of the training job.

    ``gpus`` becomes the Slurm plugin's ``gpu`` (one process per GPU when tasks == gpus); a run
    of several tasks starts its processes itself (``hpc train run --tasks N``: srun inside the
    job), with as many on every node when they divide evenly. Slurm sends SIGTERM ``signal_s``
    seconds before the time limit: the run saves a checkpoint and stops, and the resubmitted job
    (Snakemake's retries, or Slurm's --requeue) resumes from it.
    """
    res = {k: v for k, v in spec.resources.items() if k != "signal_s"}
    gpus = res.pop("gpus", 0)
    if gpus:
        res["gpu"] = gpus
        if res.get("tasks", 1) == gpus:
            res["tasks_per_gpu"] = 1  # one process per GPU (the plugin would otherwise ask tasks per GPU)
    if res.get("tasks", 1) > 1:
        res["mpi"] = "srun"
        per_node, rest = divmod(res["tasks"], res.get("nodes", 1))
        if per_node > 1 and not rest:
            # As many processes on every node (Slurm would otherwise fill the first node first).
            res["tasks_per_node"] = per_node
            del res["tasks"]
    res["slurm_extra"] = f"--signal=TERM@{spec.resources['signal_s']}"
    return res


def launch_args(spec: TrainSpec) -> str:
    """The options of ``hpc train run`` that say how the job starts its processes."""
    args = f"--tasks {spec.tasks}"
    if spec.cpu_devices:
        args += f" --cpu-devices {spec.cpu_devices}"
    return args
