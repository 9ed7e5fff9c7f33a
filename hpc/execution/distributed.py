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

On GPU nodes each process passes the ``local_device_ids`` it can see (gpu_layout: one GPU per task
under ``--gpus-per-task=1``/``--ntasks-per-gpu=1``, its share where every task sees the node's
GPUs), and processes that share a GPU split its memory (xla_memory_env).
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


# GPUs a process can see, as CUDA/ROCm number them for it ("0,1"; UUIDs and MIG ids count too).
VISIBLE_DEVICE_VARS = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
# XLA's GPU memory settings: a user's own choice is left alone.
XLA_MEMORY_VARS = ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_ALLOCATOR")
# The share of a GPU's memory that the processes sharing it reserve between them (XLA's own
# default for one process is 0.75; the rest is CUDA's context and fragmentation headroom).
SHARED_GPU_MEMORY = 0.9


def _ids(value: str | None) -> list[str] | None:
    """A device list ("0,1", "GPU-5d3..", "3"); None where unset, [] where it hides every GPU."""
    if value is None:
        return None
    ids = []
    for item in (part.strip() for part in value.split(",")):
        if not item or item in ("-1", "NoDevFiles", "none", "void"):
            break  # CUDA stops at the first id it cannot use
        ids.append(item)
    return ids


def _count(spec: str | None) -> int:
    """Slurm's GPU counts, "2", "a100:2" or "a100:1,v100:1" -> 2."""
    total = 0
    for part in (spec or "").split(","):
        try:
            total += int(part.rsplit(":", 1)[-1])
        except ValueError:
            pass
    return total


def gpu_layout(env: dict[str, str] | None = None) -> tuple[list[int], int] | None:
    """(the local device ids this process takes, the processes of the job that share each one)
    or None where the process sees no GPU (a CPU node).

    Ids are in the process's own numbering, the one ``CUDA_VISIBLE_DEVICES`` gives it (Slurm
    renumbers a task's one GPU to 0), which is how ``jax.distributed.initialize(local_device_ids=)``
    uses them: it restricts the GPU client to those visible devices. JAX's own Slurm and mpi4py
    detection otherwise takes ``[local rank]`` (jax/_src/clusters/cluster.py), which is device 1,
    2, ... of a task that sees a single GPU ("invalid device ordinal"), and device 0 only of a task
    that sees all of its node's GPUs.

    - Slurm bound the task to its GPUs (``--gpus-per-task=g``: the task sees g; ``--ntasks-per-gpu``:
      it sees 1; or it sees fewer than the step has on the node): all of them, range(k).
    - One process on the node: all it sees.
    - Every process of the node sees all k GPUs (``--gpus=N``/``--gres`` without binding, or local
      processes): k >= n processes split them in contiguous shares; k < n processes share them
      round-robin ([local rank % k]).
    """
    env = os.environ if env is None else env
    visible = next((_ids(env[var]) for var in VISIBLE_DEVICE_VARS if var in env), None)
    step_gpus = _ids(env.get("SLURM_STEP_GPUS") if "SLURM_STEP_ID" in env else None)
    node_gpus = len(step_gpus) if step_gpus else (int(env["SLURM_GPUS_ON_NODE"]) if env.get("SLURM_GPUS_ON_NODE", "").isdigit()
                                                  else len(_ids(env.get("SLURM_JOB_GPUS")) or []))
    k = len(visible) if visible is not None else node_gpus
    if not k:
        return None
    rank, size = local_layout(env) or (0, 1)
    per_task = _count(env.get("SLURM_GPUS_PER_TASK"))
    per_gpu = int(env["SLURM_NTASKS_PER_GPU"]) if env.get("SLURM_NTASKS_PER_GPU", "").isdigit() else 0
    if per_gpu and k == 1:
        return [0], per_gpu
    if (per_task and k == per_task) or 0 < k < node_gpus or size < 2 or not 0 <= rank < size:
        return list(range(k)), 1
    if k >= size:
        share, extra = divmod(k, size)
        first = rank * share + min(rank, extra)
        return list(range(first, first + share + (rank < extra))), 1
    return [rank % k], -(-size // k)


def local_device_ids(env: dict[str, str] | None = None) -> list[int] | None:
    """The ``local_device_ids`` for ``jax.distributed.initialize``: see gpu_layout. None on CPU
    nodes and where the user set ``JAX_LOCAL_DEVICE_IDS`` (JAX reads that itself)."""
    env = os.environ if env is None else env
    if env.get("JAX_LOCAL_DEVICE_IDS"):
        return None
    layout = gpu_layout(env)
    return layout[0] if layout else None


def xla_memory_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """What to add to the environment before JAX starts where several processes of the job share
    one GPU: each JAX process otherwise reserves 75% of the GPU's memory, so the second one runs
    out. They split ``SHARED_GPU_MEMORY`` of it instead (``XLA_PYTHON_CLIENT_MEM_FRACTION``, still
    preallocated, so no process grows into another's share). Nothing where a GPU has one process
    or the user set any of XLA's memory variables."""
    env = os.environ if env is None else env
    layout = gpu_layout(env)
    if layout is None or layout[1] < 2 or any(var in env for var in XLA_MEMORY_VARS):
        return {}
    return {"XLA_PYTHON_CLIENT_MEM_FRACTION": f"{SHARED_GPU_MEMORY / layout[1]:.4g}"}


def start(launch: Launch) -> Launch:
    """Start JAX's distributed runtime for this launch (nothing for one process)."""
    if launch.method == "single":
        return launch
    bind_cpus()  # before JAX starts its thread pools, which take the mask they are born with
    os.environ.update(xla_memory_env())  # before JAX creates its GPU client, which reads them
    device_ids = local_device_ids()
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
        if launch.process_id == 0 and not os.environ.get("JAX_COORDINATOR_PORT"):
            # JAX's mpi4py detection takes rank 0's port from hash(hostname): two jobs whose rank 0
            # share a node (emulated nodes share one hostname too) may pick the same port, and
            # gRPC's SO_REUSEPORT then lets one job's ranks join the other's coordinator. Only rank
            # 0's value is used (it is broadcast): a port free now is this job's own.
            os.environ["JAX_COORDINATOR_PORT"] = str(free_port())
    if device_ids is not None:
        kwargs["local_device_ids"] = device_ids
    try:
        jax.distributed.initialize(**kwargs)
    except TypeError:  # older JAX without some keyword
        kwargs.pop("heartbeat_timeout_seconds", None)
        jax.distributed.initialize(**kwargs)
    return launch


def free_port() -> int:
    """A TCP port nothing listens on now, on every interface (ranks on other nodes connect to it)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


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
