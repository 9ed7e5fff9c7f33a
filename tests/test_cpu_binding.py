"""Processes of one job that share a node each keep to their own share of its cores."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from conftest import PYTHON, REPO

from hpc.execution.distributed import bind_cpus, local_layout

CORES = sorted(os.sched_getaffinity(0))


@pytest.mark.parametrize("env, layout", [
    ({"HPC_LOCAL_RANK": "1", "HPC_LOCAL_SIZE": "2"}, (1, 2)),
    # srun: 2 tasks on each of the first two nodes, 1 on the third; this is the third node.
    ({"SLURM_LOCALID": "0", "SLURM_STEP_TASKS_PER_NODE": "2(x2),1", "SLURM_NODEID": "2"}, (0, 1)),
    ({"SLURM_LOCALID": "1", "SLURM_STEP_TASKS_PER_NODE": "2(x2),1", "SLURM_NODEID": "1"}, (1, 2)),
    ({"SLURM_LOCALID": "2", "SLURM_STEP_TASKS_PER_NODE": "3,1", "SLURM_NODEID": "0"}, (2, 3)),
    ({"MPI_LOCALRANKID": "3", "MPI_LOCALNRANKS": "4"}, (3, 4)),  # MPICH's mpiexec
    ({"SLURM_PROCID": "3"}, None),  # no node-local information: nothing to go on
])
def test_local_layout_is_read_from_each_launcher(env, layout):
    assert local_layout(env) == layout


@pytest.mark.parametrize("n_cores, size", [(7, 3), (16, 4), (5, 5), (64, 6), (3, 2)])
def test_shares_are_contiguous_and_even_on_any_node(monkeypatch, n_cores, size):
    """On nodes this machine does not have: the cores (a cpuset, not numbered from 0) are cut as
    numpy.array_split cuts them, contiguous runs whose sizes differ by at most one."""
    cores = list(range(8, 8 + 2 * n_cores, 2))
    applied = []
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(cores))
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, mask: applied.append(sorted(mask)))
    for rank, expected in enumerate(np.array_split(cores, size)):
        mine = bind_cpus({"HPC_LOCAL_RANK": str(rank), "HPC_LOCAL_SIZE": str(size)})
        assert mine == expected.tolist() and applied[-1] == mine


def binding_in_a_child(**env) -> list[int]:
    """The cores a fresh process keeps after hpc.distributed.bind_cpus() with ``env``."""
    code = "import json, os; from hpc.execution.distributed import bind_cpus; bind_cpus(); print(json.dumps(sorted(os.sched_getaffinity(0))))"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "HPC_", "MPI_", "PMI_"))}
    out = subprocess.run([PYTHON, "-c", code], env=dict(clean, PYTHONPATH=str(REPO), **env), capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


@pytest.mark.skipif(len(CORES) < 2, reason="needs at least 2 cores")
def test_ranks_on_one_node_split_its_cores_between_them():
    shares = [binding_in_a_child(HPC_LOCAL_RANK=str(r), HPC_LOCAL_SIZE="2") for r in range(2)]
    assert shares[0] and shares[1] and not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == CORES


@pytest.mark.skipif(len(CORES) < 2, reason="needs at least 2 cores")
@pytest.mark.parametrize("env", [
    {"HPC_CPU_BIND": "none"},  # the user's opt-out
    {"SLURM_CPU_BIND_TYPE": "mask_cpu:", "SLURM_CPU_BIND": "quiet,mask_cpu:0x1"},  # Slurm bound it already
    {"HPC_LOCAL_SIZE": "1"},  # alone on its node
], ids=["opt-out", "slurm-bound", "alone"])
def test_binding_is_left_alone_where_it_should_be(env):
    assert binding_in_a_child(HPC_LOCAL_RANK="1", **{"HPC_LOCAL_SIZE": "2", **env}) == CORES


def test_more_ranks_than_cores_are_not_bound():
    assert binding_in_a_child(HPC_LOCAL_RANK="0", HPC_LOCAL_SIZE=str(len(CORES) + 1)) == CORES
