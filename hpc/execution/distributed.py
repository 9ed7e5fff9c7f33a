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
# Where several processes of a job share a node: this one's index there and their number.
ENV_LOCAL_RANK = "HPC_LOCAL_RANK"
ENV_LOCAL_SIZE = "HPC_LOCAL_SIZE"
# "none" leaves every process free to run on every core of the node.
ENV_CPU_BIND = "HPC_CPU_BIND"
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


def _tasks_per_node(spec: str) -> list[int]:
    """Slurm's compressed counts, "2(x3),1" -> [2, 2, 2, 1]."""
    counts: list[int] = []
    for part in spec.split(","):
        count, _, repeat = part.partition("(x")
        counts += [int(count)] * int(repeat.rstrip(")") or 1)
    return counts


def local_layout(env: dict[str, str] | None = None) -> tuple[int, int] | None:
    """(this process's index among the job's processes on its node, their number), where known."""
    env = os.environ if env is None else env
    try:
        if env.get(ENV_LOCAL_SIZE):
            return int(env.get(ENV_LOCAL_RANK, 0)), int(env[ENV_LOCAL_SIZE])
        if "SLURM_LOCALID" in env and env.get("SLURM_STEP_TASKS_PER_NODE"):
            counts = _tasks_per_node(env["SLURM_STEP_TASKS_PER_NODE"])
            return int(env["SLURM_LOCALID"]), counts[min(int(env.get("SLURM_NODEID", 0)), len(counts) - 1)]
        if env.get("MPI_LOCALNRANKS"):  # MPICH's Hydra (mpiexec)
            return int(env.get("MPI_LOCALRANKID", 0)), int(env["MPI_LOCALNRANKS"])
    except ValueError:
        return None
    return None


def bind_cpus(env: dict[str, str] | None = None) -> list[int] | None:
    """Confine this process to its share of the node's cores when several processes of the job
    share the node: each one's threads then keep to their own cores instead of every process
    spreading its thread pool over all of them (on 2 cores, 2 processes of a CPU sweep ran at 0.82x
    the throughput of 2 pinned ones). Left alone where Slurm has bound the task already
    (``--cpu-bind``), with ``HPC_CPU_BIND=none``, or where there are fewer cores than processes.
    Returns the cores kept, or None when nothing was changed.
    """
    env = os.environ if env is None else env
    if env.get(ENV_CPU_BIND, "").lower() == "none" or not hasattr(os, "sched_setaffinity"):
        return None
    if any(kind in env.get("SLURM_CPU_BIND_TYPE", "") for kind in ("mask", "map", "cores", "threads", "sockets", "ldoms")):
        return None
    layout = local_layout(env)
    if layout is None or layout[1] < 2:
        return None
    rank, size = layout
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < size or not 0 <= rank < size:
        return None
    share, extra = divmod(len(cores), size)
    first = rank * share + min(rank, extra)
    mine = cores[first:first + share + (rank < extra)]
    os.sched_setaffinity(0, mine)
    return mine


def start(launch: Launch) -> Launch:
    """Start JAX's distributed runtime for this launch (nothing for one process)."""
    if launch.method == "single":
        return launch
    bind_cpus()  # before JAX starts its thread pools, which take the mask they are born with
    import jax

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

    # Records differ in size (a 256-core node's CPU list, a model's error messages): gather the
    # sizes first, then every record padded to the largest.
    blob = np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([blob.size], dtype=np.int64))).reshape(-1)
    padded = np.zeros(int(sizes.max()), dtype=np.uint8)
    padded[:blob.size] = blob
    gathered = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
    return [json.loads(bytes(row[:size]).decode()) for row, size in zip(gathered, sizes)]


def barrier(launch: Launch, name: str) -> None:
    if launch.method == "single":
        return
    if launch.method == "mpi":
        from mpi4py import MPI

        MPI.COMM_WORLD.Barrier()
        return
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)
