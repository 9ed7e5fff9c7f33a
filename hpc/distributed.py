"""The processes of one shard job: who they are, how they start JAX, how they meet.

A shard job may run as several processes (``srun -n N``, ``srun --mpi=pmi2``, ``mpiexec -n N``,
or explicit variables for a run without either). Each process calls ``jax.distributed.initialize``
so that JAX sees every process's devices; the runner builds one mesh over all of them.

Launch detection, in order:
- ``HPC_COORDINATOR``, ``HPC_NUM_PROCESSES``, ``HPC_PROCESS_ID`` set by the user: explicit.
- an MPI launch (``PMI_SIZE``/``PMI_RANK`` from mpiexec or ``srun --mpi=pmi2``,
  ``OMPI_COMM_WORLD_SIZE``): JAX's mpi4py cluster detection, and MPI for gathering results.
- a Slurm step of several tasks (``SLURM_STEP_NUM_TASKS`` > 1): JAX's Slurm auto-detection.
- otherwise one process, and ``jax.distributed`` is not started.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

ENV_COORDINATOR = "HPC_COORDINATOR"
ENV_NUM_PROCESSES = "HPC_NUM_PROCESSES"
ENV_PROCESS_ID = "HPC_PROCESS_ID"
# A dead peer must fail the job within a bounded time, not hang it.
HEARTBEAT_TIMEOUT_S = 30
INIT_TIMEOUT_S = 120


@dataclass(frozen=True)
class Launch:
    method: str  # "single", "explicit", "mpi" or "slurm"
    process_id: int = 0
    num_processes: int = 1
    coordinator: str | None = None


def detect_launch(env: dict[str, str] | None = None) -> Launch:
    env = os.environ if env is None else env
    if env.get(ENV_NUM_PROCESSES):
        n = int(env[ENV_NUM_PROCESSES])
        return Launch("explicit", int(env.get(ENV_PROCESS_ID, 0)), n, env.get(ENV_COORDINATOR))
    for size_var, rank_var in (("PMI_SIZE", "PMI_RANK"), ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")):
        if int(env.get(size_var, "1")) > 1:
            return Launch("mpi", int(env.get(rank_var, 0)), int(env[size_var]))
    if int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")) or 1) > 1 and "SLURM_STEP_ID" in env:
        return Launch("slurm", int(env.get("SLURM_PROCID", 0)), int(env.get("SLURM_STEP_NUM_TASKS") or env["SLURM_NTASKS"]))
    return Launch("single")


def start(launch: Launch) -> Launch:
    """Start JAX's distributed runtime for this launch (nothing for one process)."""
    import jax

    if launch.method == "single":
        return launch
    # CPU devices of different processes talk over gloo (harmless where GPUs do the work). No
    # JAX call may come before initialize(), not even asking for the backend.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs: dict[str, Any] = {"initialization_timeout": INIT_TIMEOUT_S, "heartbeat_timeout_seconds": HEARTBEAT_TIMEOUT_S}
    if launch.method == "explicit":
        if not launch.coordinator:
            raise RuntimeError(f"{ENV_NUM_PROCESSES} is set but {ENV_COORDINATOR} (host:port) is not")
        kwargs.update(coordinator_address=launch.coordinator, num_processes=launch.num_processes,
                      process_id=launch.process_id)
    elif launch.method == "mpi":
        kwargs["cluster_detection_method"] = "mpi4py"
    try:
        jax.distributed.initialize(**kwargs)
    except TypeError:  # older JAX without some keyword
        kwargs.pop("heartbeat_timeout_seconds", None)
        jax.distributed.initialize(**kwargs)
    return launch


def node_name() -> str:
    """This node's name: Slurm's name for it inside a job (emulated nodes share one hostname)."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def where() -> str:
    """'process i/n on node' for messages."""
    import jax

    return f"process {jax.process_index()}/{jax.process_count()} on {node_name()}"


def gather(launch: Launch, record: dict) -> list[dict]:
    """Every process's ``record`` on every process: MPI where the job was launched by MPI, else JAX."""
    if launch.method == "single":
        return [record]
    if launch.method == "mpi":
        from mpi4py import MPI

        return MPI.COMM_WORLD.allgather(record)
    import json

    import numpy as np
    from jax.experimental import multihost_utils

    blob = np.frombuffer(json.dumps(record).encode().ljust(4096), dtype=np.uint8)
    if blob.size > 4096:
        raise ValueError("record too large to gather")
    gathered = multihost_utils.process_allgather(blob)
    return [json.loads(bytes(row).decode().strip()) for row in np.asarray(gathered)]


def barrier(launch: Launch, name: str) -> None:
    if launch.method == "single":
        return
    if launch.method == "mpi":
        from mpi4py import MPI

        MPI.COMM_WORLD.Barrier()
        return
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)
