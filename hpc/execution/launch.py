"""Start the processes of a multi-process shard job: srun inside a Slurm allocation, mpiexec or
plain local processes elsewhere. Argument lists only; nothing goes through a shell."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from hpc.execution import distributed

# How long the remaining processes get to end after one of them failed.
KILL_GRACE_S = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mpiexec() -> str:
    beside = Path(sys.executable).with_name("mpiexec")  # PyPI's mpich wheel puts it there
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if not found:
        raise RuntimeError("mpiexec not found: pip install mpich mpi4py (or load your site's MPI)")
    return found


def launcher(tasks: int, mpi: bool, env: dict[str, str]) -> list[str] | None:
    """The command prefix that starts ``tasks`` processes, or None to start them here, locally."""
    if "SLURM_JOB_ID" in env and shutil.which("srun"):
        # --kill-on-bad-exit: one failed rank ends the step instead of leaving the others waiting.
        return ["srun", "--kill-on-bad-exit=1", f"--ntasks={tasks}", *(["--mpi=pmi2"] if mpi else [])]
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
        return subprocess.run([*prefix, *inner], env=env).returncode
    return _run_local(inner, tasks, env)


def _run_local(inner: list[str], tasks: int, env: dict[str, str]) -> int:
    """``tasks`` local processes that meet through jax.distributed on a free localhost port."""
    coordinator = f"127.0.0.1:{_free_port()}"
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
