"""GPUs and CPUs inside the allocation: the srun a shard job runs, the local devices each process
hands to jax.distributed, and XLA's memory settings for a shared GPU, for each layout.

No GPU here: the environments are written as Slurm sets them. What sbatch exports to the batch
script (sbatch(1), OUTPUT ENVIRONMENT VARIABLES): SLURM_JOB_ID, SLURM_NTASKS, SLURM_JOB_NUM_NODES,
SLURM_TASKS_PER_NODE ("2(x2)"), SLURM_CPUS_PER_TASK (only with --cpus-per-task),
SLURM_GPUS_PER_TASK (only with --gpus-per-task), SLURM_NTASKS_PER_GPU (only with --ntasks-per-gpu),
SLURM_GPUS (only with --gpus), SLURM_JOB_GPUS (the node's allocated GPUs, global ids),
SLURM_GPUS_ON_NODE, and since 23.11 SLURM_TRES_PER_TASK ("cpu=2", srun reads it back); the GPU
plugin sets CUDA_VISIBLE_DEVICES. What srun adds in each task (srun(1), OUTPUT ENVIRONMENT
VARIABLES): SLURM_STEP_ID, SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID, SLURM_STEP_NUM_TASKS,
SLURM_STEP_TASKS_PER_NODE, SLURM_STEP_GPUS (the step's GPUs on the node, global ids) and a
CUDA_VISIBLE_DEVICES of the task's own: with --gpus-per-task (implying --gpu-bind=per_task) or
--ntasks-per-gpu (implying --gpu-bind=single) one id, renumbered to 0 where the device cgroup is
constrained; without either, every task of the node sees all of the node's GPUs.
"""

from __future__ import annotations

import pytest

from hpc.execution import distributed, launch
from hpc.execution.distributed import gpu_layout, local_device_ids, xla_memory_env
from hpc.execution.launch import launcher, srun_args, srun_unset

KILL = "--kill-on-bad-exit=1"


def batch(**extra: str) -> dict[str, str]:
    """The batch script's environment: one job's allocation, no step yet."""
    return {"SLURM_JOB_ID": "4242", "SLURM_JOBID": "4242", "SLURM_SUBMIT_DIR": "/home/u/run",
            "SLURM_CLUSTER_NAME": "cluster", "SLURMD_NODENAME": "n001", **extra}


def task(job: dict[str, str], procid: int, localid: int, nodeid: int, tasks: int, per_node: str,
         **extra: str) -> dict[str, str]:
    """One task of the step ``srun --ntasks=<tasks>`` started from ``job``'s batch script."""
    return {**job, "SLURM_STEP_ID": "0", "SLURM_STEPID": "0", "SLURM_PROCID": str(procid),
            "SLURM_LOCALID": str(localid), "SLURM_NODEID": str(nodeid),
            "SLURM_STEP_NUM_TASKS": str(tasks), "SLURM_STEP_TASKS_PER_NODE": per_node, **extra}


# sbatch --nodes=1 --ntasks=4 --cpus-per-task=2
CPU_1x4 = batch(SLURM_NTASKS="4", SLURM_NPROCS="4", SLURM_JOB_NUM_NODES="1", SLURM_NNODES="1",
                SLURM_TASKS_PER_NODE="4", SLURM_CPUS_PER_TASK="2", SLURM_TRES_PER_TASK="cpu=2",
                SLURM_JOB_CPUS_PER_NODE="8", SLURM_CPUS_ON_NODE="8")
# sbatch --nodes=2 --ntasks=4
CPU_2x4 = batch(SLURM_NTASKS="4", SLURM_NPROCS="4", SLURM_JOB_NUM_NODES="2", SLURM_NNODES="2",
                SLURM_TASKS_PER_NODE="2(x2)", SLURM_JOB_CPUS_PER_NODE="2(x2)", SLURM_CPUS_ON_NODE="2")
# sbatch --nodes=2 --ntasks=8 --gpus-per-task=1 --cpus-per-task=8: 4 GPUs of each node
GPU_PER_TASK = batch(SLURM_NTASKS="8", SLURM_JOB_NUM_NODES="2", SLURM_TASKS_PER_NODE="4(x2)",
                     SLURM_CPUS_PER_TASK="8", SLURM_GPUS_PER_TASK="1", SLURM_TRES_PER_TASK="cpu=8,gres/gpu=1",
                     SLURM_JOB_GPUS="4,5,6,7", SLURM_GPUS_ON_NODE="4", CUDA_VISIBLE_DEVICES="0,1,2,3")
# sbatch --nodes=2 --gpus=8 --ntasks-per-gpu=1 --cpus-per-task=4 (the Slurm plugin's gpu=8,
# tasks_per_gpu=1, cpus_per_task=4)
TASKS_PER_GPU = batch(SLURM_NTASKS="8", SLURM_JOB_NUM_NODES="2", SLURM_TASKS_PER_NODE="4(x2)",
                      SLURM_CPUS_PER_TASK="4", SLURM_NTASKS_PER_GPU="1", SLURM_GPUS="8",
                      SLURM_TRES_PER_TASK="cpu=4", SLURM_JOB_GPUS="0,1,2,3", SLURM_GPUS_ON_NODE="4",
                      CUDA_VISIBLE_DEVICES="0,1,2,3")
# sbatch --nodes=1 --ntasks=4 --gpus=4 (no per-task binding: every task sees the node's 4 GPUs)
GPUS_UNBOUND = batch(SLURM_NTASKS="4", SLURM_JOB_NUM_NODES="1", SLURM_TASKS_PER_NODE="4",
                     SLURM_GPUS="4", SLURM_JOB_GPUS="0,1,2,3", SLURM_GPUS_ON_NODE="4",
                     CUDA_VISIBLE_DEVICES="0,1,2,3")
# sbatch --nodes=1 --ntasks=2 --gpus=1 (two processes on one GPU)
ONE_GPU_2_TASKS = batch(SLURM_NTASKS="2", SLURM_JOB_NUM_NODES="1", SLURM_TASKS_PER_NODE="2",
                        SLURM_GPUS="1", SLURM_JOB_GPUS="3", SLURM_GPUS_ON_NODE="1", CUDA_VISIBLE_DEVICES="0")


# -- 3. the srun that starts the processes --------------------------------------------------------

@pytest.mark.parametrize("job, tasks, mpi, args, unset", [
    (CPU_1x4, 4, False, ["srun", KILL, "--ntasks=4", "--cpus-per-task=2"], ["SLURM_TRES_PER_TASK"]),
    (CPU_2x4, 4, False, ["srun", KILL, "--ntasks=4"], []),
    (GPU_PER_TASK, 8, False, ["srun", KILL, "--ntasks=8", "--cpus-per-task=8", "--gpus-per-task=1"],
     ["SLURM_TRES_PER_TASK"]),
    (TASKS_PER_GPU, 8, False, ["srun", KILL, "--ntasks=8", "--cpus-per-task=4", "--ntasks-per-gpu=1"],
     ["SLURM_TRES_PER_TASK"]),
    (GPUS_UNBOUND, 4, False, ["srun", KILL, "--ntasks=4"], []),
    (CPU_1x4, 4, True, ["srun", KILL, "--ntasks=4", "--cpus-per-task=2", "--mpi=pmi2"], ["SLURM_TRES_PER_TASK"]),
    (CPU_2x4, 4, True, ["srun", KILL, "--ntasks=4", "--mpi=pmi2"], []),
], ids=["cpu-1x4-c2", "cpu-2x4", "gpus-per-task", "ntasks-per-gpu", "gpus-unbound", "mpi-1x4-c2", "mpi-2x4"])
def test_srun_says_cpus_and_gpus_per_task_again(job, tasks, mpi, args, unset):
    assert srun_args(tasks, mpi, job) == args
    assert srun_unset(args, job) == unset


def test_srun_keeps_tres_it_does_not_pass():
    """A TRES srun is not told again (a license, say) keeps SLURM_TRES_PER_TASK for srun to read."""
    job = batch(SLURM_CPUS_PER_TASK="2", SLURM_TRES_PER_TASK="cpu=2,license/matlab=1")
    assert srun_unset(srun_args(2, False, job), job) == []


def test_srun_cpus_per_task_of_the_users_own_choice():
    """SRUN_CPUS_PER_TASK, Slurm 22.05's way of giving srun its CPUs, wins over the allocation's."""
    assert srun_args(2, False, batch(SLURM_CPUS_PER_TASK="8", SRUN_CPUS_PER_TASK="4"))[3] == "--cpus-per-task=4"


def test_ntasks_per_gpu_and_gpus_per_task_are_never_both_passed():
    job = batch(SLURM_NTASKS_PER_GPU="1", SLURM_GPUS_PER_TASK="1")
    args = srun_args(2, False, job)
    assert args == ["srun", KILL, "--ntasks=2", "--ntasks-per-gpu=1"]
    assert srun_unset(args, job) == ["SLURM_GPUS_PER_TASK"]


def test_launcher_inside_and_outside_slurm(monkeypatch):
    monkeypatch.setattr(launch.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(launch, "_mpiexec", lambda: "/venv/bin/mpiexec")
    assert launcher(4, False, CPU_1x4) == ["srun", KILL, "--ntasks=4", "--cpus-per-task=2"]
    assert launcher(4, True, CPU_2x4) == ["srun", KILL, "--ntasks=4", "--mpi=pmi2"]
    assert launcher(4, True, {}) == ["/venv/bin/mpiexec", "-n", "4"]  # no Slurm, MPI: mpiexec
    assert launcher(4, False, {}) is None  # no Slurm: local processes
    monkeypatch.setattr(launch.shutil, "which", lambda name: None)
    assert launcher(4, True, CPU_2x4) == ["/venv/bin/mpiexec", "-n", "4"]  # a job without srun


def test_run_processes_keeps_the_tres_srun_would_refuse(monkeypatch):
    seen = {}
    monkeypatch.setattr(launch.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(launch.subprocess, "run",
                        lambda cmd, env: seen.update(cmd=cmd, env=env) or type("R", (), {"returncode": 0}))
    for var in list(launch.os.environ):
        if var.startswith(("SLURM_", "PMI_", "OMPI_", "HPC_")):
            monkeypatch.delenv(var)
    for var, value in TASKS_PER_GPU.items():
        monkeypatch.setenv(var, value)
    assert launch.run_processes(["python", "-m", "hpc", "x"], 8) == 0
    assert seen["cmd"] == ["srun", KILL, "--ntasks=8", "--cpus-per-task=4", "--ntasks-per-gpu=1",
                           "python", "-m", "hpc", "x"]
    assert "SLURM_TRES_PER_TASK" not in seen["env"] and seen["env"]["SLURM_NTASKS_PER_GPU"] == "1"


# -- 1. the devices each process takes ------------------------------------------------------------

def test_cpu_nodes_have_no_device_ids():
    for rank in range(4):
        env = task(CPU_1x4, rank, rank, 0, 4, "4")
        assert local_device_ids(env) is None and gpu_layout(env) is None and xla_memory_env(env) == {}
    assert local_device_ids(task(CPU_2x4, 3, 1, 1, 4, "2(x2)")) is None


@pytest.mark.parametrize("step_gpus", ["0,1,2,3", None], ids=["step-lists-node", "step-lists-task"])
def test_gpus_per_task_each_process_takes_the_one_it_sees(step_gpus):
    """--gpus-per-task=1: CUDA_VISIBLE_DEVICES holds the task's one GPU, renumbered to 0. JAX's
    Slurm detection would ask task 5 (local id 1) for its device 1, which it does not have."""
    for procid in range(8):
        localid, nodeid = procid % 4, procid // 4
        env = task(GPU_PER_TASK, procid, localid, nodeid, 8, "4(x2)", CUDA_VISIBLE_DEVICES="0",
                   SLURM_STEP_GPUS=step_gpus or str(4 + localid))
        assert local_device_ids(env) == [0]
        assert xla_memory_env(env) == {}


def test_gpus_per_task_without_renumbering():
    """A site without a constrained device cgroup leaves the global id: still the task's only GPU."""
    env = task(GPU_PER_TASK, 6, 2, 1, 8, "4(x2)", CUDA_VISIBLE_DEVICES="2", SLURM_STEP_GPUS="0,1,2,3")
    assert local_device_ids(env) == [0]


def test_two_gpus_per_task():
    env = task(GPU_PER_TASK, 1, 1, 0, 2, "2", SLURM_GPUS_PER_TASK="2", CUDA_VISIBLE_DEVICES="0,1",
               SLURM_STEP_GPUS="0,1,2,3")
    assert local_device_ids(env) == [0, 1]


def test_ntasks_per_gpu_each_process_takes_its_gpu():
    for procid in range(8):
        env = task(TASKS_PER_GPU, procid, procid % 4, procid // 4, 8, "4(x2)", CUDA_VISIBLE_DEVICES="0",
                   SLURM_STEP_GPUS="0,1,2,3")
        assert local_device_ids(env) == [0]
        assert xla_memory_env(env) == {}


def test_two_tasks_per_gpu_share_its_memory():
    job = batch(SLURM_NTASKS="4", SLURM_TASKS_PER_NODE="4", SLURM_NTASKS_PER_GPU="2", SLURM_GPUS="2",
                SLURM_JOB_GPUS="0,1", SLURM_GPUS_ON_NODE="2", CUDA_VISIBLE_DEVICES="0,1")
    env = task(job, 3, 3, 0, 4, "4", CUDA_VISIBLE_DEVICES="0", SLURM_STEP_GPUS="0,1")
    assert gpu_layout(env) == ([0], 2)
    assert xla_memory_env(env) == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.45"}


def test_unbound_gpus_are_split_by_local_rank():
    """--gpus=4 and 4 tasks, no binding: every task sees 0,1,2,3 and takes [SLURM_LOCALID]."""
    for rank in range(4):
        env = task(GPUS_UNBOUND, rank, rank, 0, 4, "4", SLURM_STEP_GPUS="0,1,2,3")
        assert local_device_ids(env) == [rank]
        assert xla_memory_env(env) == {}


def test_unbound_gpus_split_in_shares():
    """8 GPUs, 2 tasks on the node: 4 each; 3 GPUs, 2 tasks: 2 and 1."""
    job = batch(CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7", SLURM_GPUS_ON_NODE="8")
    assert [local_device_ids(task(job, r, r, 0, 2, "2")) for r in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    job = batch(CUDA_VISIBLE_DEVICES="0,1,2", SLURM_GPUS_ON_NODE="3")
    assert [local_device_ids(task(job, r, r, 0, 2, "2")) for r in range(2)] == [[0, 1], [2]]


def test_one_process_per_node_takes_all_its_gpus():
    """2 nodes x 1 task x 4 GPUs: all four (JAX's detection would take [SLURM_LOCALID] = [0])."""
    job = batch(SLURM_NTASKS="2", SLURM_TASKS_PER_NODE="1(x2)", SLURM_GPUS_PER_NODE="4",
                SLURM_JOB_GPUS="0,1,2,3", SLURM_GPUS_ON_NODE="4", CUDA_VISIBLE_DEVICES="0,1,2,3")
    env = task(job, 1, 0, 1, 2, "1(x2)", SLURM_STEP_GPUS="0,1,2,3")
    assert local_device_ids(env) == [0, 1, 2, 3]


def test_processes_sharing_one_gpu_split_its_memory():
    for rank in range(2):
        env = task(ONE_GPU_2_TASKS, rank, rank, 0, 2, "2", SLURM_STEP_GPUS="3")
        assert gpu_layout(env) == ([0], 2)
        assert xla_memory_env(env) == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.45"}
    four = task(dict(ONE_GPU_2_TASKS, SLURM_NTASKS="4"), 3, 3, 0, 4, "4", SLURM_STEP_GPUS="3")
    assert xla_memory_env(four) == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.225"}
    two_on_four = batch(CUDA_VISIBLE_DEVICES="0,1", SLURM_GPUS_ON_NODE="2")  # 2 GPUs, 4 tasks
    assert [gpu_layout(task(two_on_four, r, r, 0, 4, "4")) for r in range(4)] == [([0], 2), ([1], 2)] * 2


@pytest.mark.parametrize("var, value", [("XLA_PYTHON_CLIENT_PREALLOCATE", "false"),
                                        ("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.3"),
                                        ("XLA_PYTHON_CLIENT_ALLOCATOR", "platform")])
def test_the_users_xla_memory_settings_are_left_alone(var, value):
    env = task(ONE_GPU_2_TASKS, 1, 1, 0, 2, "2", SLURM_STEP_GPUS="3", **{var: value})
    assert xla_memory_env(env) == {}


def test_mpi_launches_read_the_same_layout():
    """srun --mpi=pmi2 (PMI_RANK beside SLURM_LOCALID) and MPICH's mpiexec (MPI_LOCALRANKID)."""
    pmi = task(GPUS_UNBOUND, 2, 2, 0, 4, "4", PMI_RANK="2", PMI_SIZE="4", SLURM_STEP_GPUS="0,1,2,3")
    assert local_device_ids(pmi) == [2]
    hydra = {"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2",
             "CUDA_VISIBLE_DEVICES": "0,1"}
    assert local_device_ids(hydra) == [1]


def test_local_processes_split_the_visible_gpus():
    """hpc run-shard --tasks 2 outside Slurm on a 2-GPU machine (the local launcher's variables)."""
    for rank in range(2):
        env = {"HPC_LOCAL_RANK": str(rank), "HPC_LOCAL_SIZE": "2", "HPC_PROCESS_ID": str(rank),
               "HPC_NUM_PROCESSES": "2", "HPC_COORDINATOR": "127.0.0.1:1234", "CUDA_VISIBLE_DEVICES": "0,1"}
        assert local_device_ids(env) == [rank]
    rocm = {"HPC_LOCAL_RANK": "1", "HPC_LOCAL_SIZE": "2", "ROCR_VISIBLE_DEVICES": "0,1"}
    assert local_device_ids(rocm) == [1]
    uuids = {"HPC_LOCAL_RANK": "1", "HPC_LOCAL_SIZE": "2", "CUDA_VISIBLE_DEVICES": "GPU-8f1a,GPU-77c2"}
    assert local_device_ids(uuids) == [1]


@pytest.mark.parametrize("env", [
    {"CUDA_VISIBLE_DEVICES": "", "SLURM_LOCALID": "1", "SLURM_STEP_TASKS_PER_NODE": "2"},  # GPUs hidden
    {"CUDA_VISIBLE_DEVICES": "-1"},
    {"CUDA_VISIBLE_DEVICES": "NoDevFiles"},
    {"CUDA_VISIBLE_DEVICES": "0,1", "JAX_LOCAL_DEVICE_IDS": "1"},  # the user's own: JAX reads it
])
def test_no_device_ids_to_pass(env):
    assert local_device_ids(env) is None


def test_start_passes_the_device_ids_and_memory_settings(monkeypatch):
    """distributed.start: XLA's variables in the environment and local_device_ids in initialize()."""
    import jax

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(jax.config, "update", lambda *a: None)
    monkeypatch.setattr(distributed, "bind_cpus", lambda env=None: None)
    for var in list(distributed.os.environ):
        if var.startswith(("SLURM_", "PMI_", "OMPI_", "HPC_", "XLA_PYTHON_", "CUDA_", "ROCR_", "HIP_", "JAX_LOCAL")):
            monkeypatch.delenv(var)
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)  # start() sets it; undone after
    for var, value in task(ONE_GPU_2_TASKS, 1, 1, 0, 2, "2", SLURM_STEP_GPUS="3").items():
        monkeypatch.setenv(var, value)
    distributed.start(distributed.detect_launch())
    assert calls[0]["local_device_ids"] == [0]
    assert distributed.os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.45"
    distributed.os.environ.pop("XLA_PYTHON_CLIENT_MEM_FRACTION")
    for var in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_GPUS", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var)
    distributed.start(distributed.detect_launch())  # a CPU node: nothing passed, nothing set
    assert "local_device_ids" not in calls[1] and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in distributed.os.environ
