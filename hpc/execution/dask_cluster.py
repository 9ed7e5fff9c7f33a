"""A dask cluster for many small tasks: a dask-jobqueue SLURMCluster with adaptive workers, or a
LocalCluster on one machine.

Workers retire before their walltime (``--lifetime`` shorter than the job's time limit, with a
stagger) so the scheduler moves work off them cleanly instead of losing it to a kill. Knows
nothing of sweeps: hpc.sweep.dask_run hands it the tasks.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys

from hpc.core import checkout, specfile


def settings(spec_dask: dict | None) -> dict:
    """A sweep's ``dask:`` settings with every default of the sweep schema filled in.

    The schema (hpc/core/schemas/sweep.schema.yaml, ``dask``) says what each one means: cluster
    (slurm, local, or auto: slurm when a Slurm controller answers), min_workers and max_workers,
    cores and memory_mb per worker job, walltime_min, lifetime_min (a worker retires after this,
    below the walltime), interface (the network interface of the scheduler and workers, e.g. ib0),
    partition and account.
    """
    return specfile.with_defaults("sweep", dict(spec_dask or {}), "dask")


DEFAULTS = settings(None)  # the schema's, for reading


def slurm_answers() -> bool:
    if not shutil.which("sinfo"):
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def make_cluster(opts: dict):
    """A dask cluster per ``opts``: SLURMCluster with adaptive workers, or a LocalCluster."""
    kind = opts["cluster"]
    if kind == "auto":
        kind = "slurm" if slurm_answers() else "local"
    if kind == "local":
        from distributed import LocalCluster

        return LocalCluster(n_workers=max(1, opts["max_workers"]), threads_per_worker=1, processes=True,
                            dashboard_address=None)
    from dask_jobqueue import SLURMCluster

    walltime = int(opts["walltime_min"])
    lifetime = min(int(opts["lifetime_min"]), max(1, walltime - 2))
    extra = []
    if opts["partition"]:
        extra.append(f"--partition={opts['partition']}")
    if opts["account"]:
        extra.append(f"--account={opts['account']}")
    cluster = SLURMCluster(
        cores=opts["cores"], processes=1, memory=f"{opts['memory_mb']}MB",
        walltime=f"{walltime // 60:02d}:{walltime % 60:02d}:00", interface=opts["interface"],
        job_extra_directives=extra, python=sys.executable,
        worker_extra_args=["--lifetime", f"{lifetime}m", "--lifetime-stagger", "1m", "--lifetime-restart"],
        job_script_prologue=[f"export {k}={shlex.quote(v)}" for k, v in checkout.pythonpath_env().items()],
        scheduler_options={"dashboard_address": None},
    )
    cluster.adapt(minimum=opts["min_workers"], maximum=opts["max_workers"])
    return cluster
