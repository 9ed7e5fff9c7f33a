"""Start the processes of a multi-process shard job: srun inside a Slurm allocation, mpiexec or
plain local processes elsewhere. Argument lists only; nothing goes through a shell."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from hpc.execution import distributed

# How long the remaining processes get to end after one of them failed.
KILL_GRACE_S = 10


def _mpiexec() -> str:
    beside = Path(sys.executable).with_name("mpiexec")  # PyPI's mpich wheel puts it there
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if not found:
        raise RuntimeError("mpiexec not found: pip install mpich mpi4py (or load your site's MPI)")
    return found


def srun_args(tasks: int, mpi: bool, env: dict[str, str]) -> list[str]:
    """The srun command that starts ``tasks`` processes as one step inside the job's allocation.

    What the allocation was made with is said again explicitly, since srun does not inherit all of
    it: since Slurm 22.05 srun no longer reads ``SLURM_CPUS_PER_TASK`` (sbatch still exports it),
    so without ``--cpus-per-task`` every task of the step would get one CPU. ``--ntasks-per-gpu``
    (``SLURM_NTASKS_PER_GPU``) and ``--gpus-per-task`` (``SLURM_GPUS_PER_TASK``) are passed on as
    they were given; srun refuses the two together, so only the first is, where both are set.
    ``--kill-on-bad-exit``: one failed rank ends the step instead of leaving the others waiting.
    """
    args = ["srun", "--kill-on-bad-exit=1", f"--ntasks={tasks}"]
    cpus = env.get("SRUN_CPUS_PER_TASK") or env.get("SLURM_CPUS_PER_TASK")
    if cpus:
        args.append(f"--cpus-per-task={cpus}")
    if env.get("SLURM_NTASKS_PER_GPU"):
        args.append(f"--ntasks-per-gpu={env['SLURM_NTASKS_PER_GPU']}")
    elif env.get("SLURM_GPUS_PER_TASK"):
        args.append(f"--gpus-per-task={env['SLURM_GPUS_PER_TASK']}")
    if mpi:
        args.append("--mpi=pmi2")
    return args


def srun_unset(args: list[str], env: dict[str, str]) -> list[str]:
    """Variables of the job's environment to keep from srun because ``args`` say the same thing.

    Slurm 23.11+ exports ``SLURM_TRES_PER_TASK`` (``cpu=2``, ``cpu=2,gres/gpu=1``) beside
    ``SLURM_CPUS_PER_TASK``, and srun reads it back as an input: with ``SLURM_NTASKS_PER_GPU`` it
    refuses to start ("SLURM_TRES_PER_TASK is mutually exclusive with --ntasks-per-gpu and
    SLURM_NTASKS_PER_GPU"). It is left out where every TRES in it is one that ``args`` pass, and
    ``SLURM_GPUS_PER_TASK`` where ``args`` pass ``--ntasks-per-gpu``, which srun refuses beside it.
    """
    tres = [item.strip() for item in env.get("SLURM_TRES_PER_TASK", "").split(",") if item.strip()]
    passed = {"cpu": any(a.startswith("--cpus-per-task=") for a in args),
              "gres/gpu": any(a.startswith(("--gpus-per-task=", "--ntasks-per-gpu=")) for a in args)}
    unset = ["SLURM_GPUS_PER_TASK"] if "SLURM_GPUS_PER_TASK" in env and any(
        a.startswith("--ntasks-per-gpu=") for a in args) else []
    if tres and all(any(item.startswith(name) and ok for name, ok in passed.items()) for item in tres):
        unset.append("SLURM_TRES_PER_TASK")
    return unset


def launcher(tasks: int, mpi: bool, env: dict[str, str]) -> list[str] | None:
    """The command prefix that starts ``tasks`` processes, or None to start them here, locally."""
    if "SLURM_JOB_ID" in env and shutil.which("srun"):
        return srun_args(tasks, mpi, env)
    if mpi:
        return [_mpiexec(), "-n", str(tasks)]
    return None


def run_processes(inner: list[str], tasks: int, mpi: bool = False, cpu_devices: int = 0) -> int:
    """Run ``inner`` (a python -m hpc ... command) as ``tasks`` processes of one job; exit status."""
    env = dict(os.environ)
    if cpu_devices:
        flags = env.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={cpu_devices}".strip()
    if tasks == 1 or distributed.detect_launch(env).method != "single":
        return subprocess.run(inner, env=env).returncode
    prefix = launcher(tasks, mpi, env)
    if prefix is not None:
        if prefix[0] == "srun":
            for var in srun_unset(prefix, env):
                env.pop(var)
        return subprocess.run([*prefix, *inner], env=env).returncode
    return _run_local(inner, tasks, env)


def _run_local(inner: list[str], tasks: int, env: dict[str, str]) -> int:
    """``tasks`` local processes that meet through jax.distributed on a free localhost port."""
    coordinator = f"127.0.0.1:{distributed.free_port()}"
    procs = []
    for rank in range(tasks):
        penv = dict(env, **{distributed.ENV_COORDINATOR: coordinator, distributed.ENV_NUM_PROCESSES: str(tasks),
                            distributed.ENV_PROCESS_ID: str(rank), distributed.ENV_LOCAL_RANK: str(rank),
                            distributed.ENV_LOCAL_SIZE: str(tasks)})
        procs.append(subprocess.Popen(inner, env=penv))
    status = 0
    while [p.poll() for p in procs].count(None):  # poll every process (any() would stop at the first)
        failed = [(rank, p) for rank, p in enumerate(procs) if p.returncode not in (None, 0)]
        if failed:
            rank, proc = failed[0]
            status = proc.returncode
            how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
            print(f"hpc: process {rank}/{tasks} (pid {proc.pid}) on {distributed.node_name()} {how}; "
                  f"stopping the other {tasks - 1}", file=sys.stderr, flush=True)
            break
        time.sleep(0.1)
    if status:
        deadline = time.time() + KILL_GRACE_S
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return 1 if status < 0 else status
    return next((p.returncode for p in procs if p.returncode), 0)
