"""How the emulated cluster enforces a job's memory (``--mem``), as a production site does.

Where the machine has a writable cgroup v1 memory hierarchy (containers often do), slurmd's
cgroup task plugin puts every step in a memory cgroup of its allocation: a step over it is
killed by the kernel's OOM handler and the job ends OUT_OF_MEMORY, exactly as on a site with
``TaskPlugin=task/cgroup``. Elsewhere the accounting gatherer polls each task's RSS every 2 s
and kills a step over its limit (``JobAcctGatherParams=OverMemoryKill``): the job then ends
FAILED with signal 9 and "Exceeded job memory limit" in its log, as on sites without cgroups.
``hpc cluster status`` says which one is in force.
"""

from __future__ import annotations

import os
from pathlib import Path

from hpc.cluster.processes import ClusterError

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_CONF = Path("/etc/slurm/cgroup.conf")
MARKER = "# hpc-cluster: written by hpc.cluster"


def cgroup_v1_memory_usable(root: Path = CGROUP_ROOT) -> bool:
    """True when a cgroup v1 memory hierarchy is mounted here and we may create groups in it."""
    memory = root / "memory"
    if not (memory / "memory.limit_in_bytes").exists():
        return False
    probe = memory / f"hpc-cluster-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError:
        return False
    return True


def memory_enforcement(root: Path = CGROUP_ROOT) -> str:
    """"cgroup" or "jobacct": which mechanism the cluster will use (see the module docstring)."""
    return "cgroup" if cgroup_v1_memory_usable(root) else "jobacct"


def slurm_conf_lines(enforcement: str) -> list[str]:
    if enforcement == "cgroup":
        # Each step in a memory cgroup of its allocation: over --mem, the job ends OUT_OF_MEMORY.
        return ["TaskPlugin=task/cgroup", "JobAcctGatherParams=NoOverMemoryKill"]
    # No usable cgroups: the gatherer kills a step whose RSS exceeds its --mem.
    return ["TaskPlugin=task/none", "JobAcctGatherParams=OverMemoryKill"]


def render_cgroup_conf(root: Path = CGROUP_ROOT) -> str:
    return "\n".join([
        f"{MARKER} (memory limits of the emulated cluster's jobs).",
        "CgroupPlugin=cgroup/v1",
        f"CgroupMountpoint={root}",
        "ConstrainRAMSpace=yes",
        "ConstrainSwapSpace=no",
        # Cores and devices stay unconstrained: the emulated nodes share this machine's cores.
        "ConstrainCores=no",
        "ConstrainDevices=no",
        "",
    ])


def write_cgroup_conf(path: Path = CGROUP_CONF, root: Path = CGROUP_ROOT) -> None:
    """slurmd reads cgroup.conf beside slurm.conf; a site's own file is never overwritten."""
    if path.exists() and not path.read_text().startswith(MARKER):
        raise ClusterError(f"{path} exists and was not written by hpc.cluster; refusing to overwrite it (move it away)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_cgroup_conf(root))
