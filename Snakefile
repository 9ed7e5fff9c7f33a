# The sweep pipeline: spec -> plan -> one run_shard job per shard -> aggregate -> report.
#
#   snakemake --profile profiles/local                                   # the default sweep
#   snakemake --profile profiles/local --config sweep=workflow/sweeps/x.yaml
#   snakemake -n --profile profiles/slurm --config sweep=...              # dry run
#   snakemake --profile profiles/slurm --config sweep=...                 # submit to Slurm
#
# The spec is read and checked here, at parse time, so a bad spec stops the workflow before
# any job is planned, submitted or written.

import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, workflow.basedir)  # the hpc package next to this file, installed or not

from hpc.execution import slurm_plugin

# In a Slurm array task's batch process, before anything else: run that task's own job only
# (a task but the first becomes its own command here; hpc.execution.slurm_plugin).
slurm_plugin.run_own_array_task()

from hpc.core import checkout, paths
from hpc.core.errors import SpecError
from hpc.core.specfile import check_spec_path
from hpc.sweep import store
from hpc.sweep.spec import load_spec

# sacct's "CANCELLED by <uid>" must read as CANCELLED to the Slurm executor (hpc.execution.slurm_plugin).
slurm_plugin.install()

TRAIN_FILE = config.get("train")  # a training spec: the default target becomes its report
if TRAIN_FILE:
    from hpc.train.sweep import load_train_spec_or_sweep

    try:
        check_spec_path(TRAIN_FILE, "train")
        # A sweep of training runs (a sweep: block): TRAIN is its first point, TRAIN_SWEEP all of them.
        TRAIN, TRAIN_SWEEP = load_train_spec_or_sweep(TRAIN_FILE)
    except SpecError as exc:
        sys.stderr.write(f"Error: bad training spec {TRAIN_FILE}: {exc}\n")
        sys.exit(2)

# A training run on a sweep's store loads that sweep too: its rules make the store (one DAG).
SWEEP_FILE = (TRAIN_FILE and TRAIN.sweep_file) or config.get("sweep") or os.path.join(
    workflow.basedir, "workflow", "sweeps", "default.yaml")
try:
    check_spec_path(SWEEP_FILE)
    SPEC = load_spec(SWEEP_FILE)
    store.check_not_another_spec(SPEC)
except SpecError as exc:
    sys.stderr.write(f"Error: bad sweep spec {SWEEP_FILE}: {exc}\n")
    sys.exit(2)


try:
    from snakemake.settings.types import DeploymentMethod

    USES_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
except Exception:
    USES_CONDA = False

# How a job runs the hpc command. Inside a conda env the env's python runs the package from this
# checkout (it is not installed there); otherwise the python that runs Snakemake does, so an
# unactivated virtualenv works too, and PYTHONPATH points at this checkout only where that
# python would not import this very package by itself (hpc.core.checkout).
JOB_ENV = {"PYTHONPATH": str(checkout.package_root())} if USES_CONDA else checkout.pythonpath_env()
HPC = "".join(f"{k}={shlex.quote(v)} " for k, v in JOB_ENV.items()) + (
    "python" if USES_CONDA else shlex.quote(sys.executable)) + " -m hpc"
# conda: paths are relative to the rule file (workflow/rules/).
JAX_ENV = "../../envs/" + ("jax-cuda.yaml" if config.get("gpu", False) else "jax-cpu.yaml")


if SPEC.adaptive:  # adaptive: instead of sweep: points chosen round by round

    include: "workflow/rules/adaptive.smk"

else:

    include: "workflow/rules/sweep.smk"

if TRAIN_FILE:

    include: "workflow/rules/train.smk"


rule all:
    default_target: True
    input:
        TRAIN_TARGETS if TRAIN_FILE else f"{SWEEP_DIR}/report.html",
