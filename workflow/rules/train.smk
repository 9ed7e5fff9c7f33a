# Rules of a training run (--config train=SPEC). Paths come from hpc.core.paths.
#
# When the data is a sweep's store, the sweep's completion (aggregate.json, written once every
# shard is committed) is the training rule's input: Snakemake runs or resumes the sweep first.
# The checkpoints and train.zarr are not declared outputs (Snakemake would delete them when a job
# fails); the marker train.json is, and is written last.

from hpc.train.metrics import check_not_another_run

try:
    check_not_another_run(TRAIN)
except SpecError as exc:
    sys.stderr.write(f"Error: bad training spec {TRAIN_FILE}: {exc}\n")
    sys.exit(2)

TRAIN_DIR = str(paths.run_dir(TRAIN.name))
TRAIN_DATA = [f"{SWEEP_DIR}/aggregate.json"] if TRAIN.data.kind == "sweep" else []
TRAIN_TARGETS = [f"{TRAIN_DIR}/report.html"]


def train_resources():
    """The spec's resources override the profile's defaults for this run only."""
    res = {k: v for k, v in TRAIN.resources.items() if k != "signal_s"}
    gpus = res.pop("gpus", 0)
    if gpus:
        res["gpu"] = gpus
        if res.get("tasks", 1) == gpus:
            res["tasks_per_gpu"] = 1  # one process per GPU (the plugin would otherwise ask tasks per GPU)
    if res.get("tasks", 1) > 1:
        # `hpc train run --tasks N` starts the processes itself (srun inside the job).
        res["mpi"] = "srun"
        per_node, rest = divmod(res["tasks"], res.get("nodes", 1))
        if per_node > 1 and not rest:
            # As many processes on every node (Slurm would otherwise fill the first node first).
            res["tasks_per_node"] = per_node
            del res["tasks"]
    # Slurm sends SIGTERM this long before the time limit: the run saves a checkpoint and stops,
    # and the resubmitted job (Snakemake's retries, or Slurm's --requeue) resumes from it.
    res["slurm_extra"] = f"--signal=TERM@{TRAIN.resources['signal_s']}"
    return res


TRAIN_LAUNCH = f"--tasks {TRAIN.tasks}" + (f" --cpu-devices {TRAIN.cpu_devices}" if TRAIN.cpu_devices else "")


rule train:
    input:
        spec=TRAIN_FILE,
        data=TRAIN_DATA,
    output:
        marker=f"{TRAIN_DIR}/train.json",
    params:
        digest=TRAIN.digest(),  # a changed spec retrains (and is refused if the run holds another)
    resources:
        **train_resources(),
    log:
        f"{TRAIN_DIR}/logs/train.log",
    conda:
        JAX_ENV
    shell:
        "PYTHONPATH={REPO} {HPC} train run {input.spec:q} --marker {output.marker:q} {TRAIN_LAUNCH} 2> {log:q}"


rule train_report:
    input:
        marker=f"{TRAIN_DIR}/train.json",
    output:
        report=f"{TRAIN_DIR}/report.html",
    localrule: True
    run:
        from hpc.report.build import write_report

        write_report(TRAIN.name, paths.root_of_marker(input.marker), output.report)
