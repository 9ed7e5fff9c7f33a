# Rules of a training run (--config train=SPEC). Paths come from hpc.core.paths, resources from
# hpc.train.resources.
#
# When the data is a sweep's store, the sweep's completion (aggregate.json, written once every
# shard is committed) is the training rule's input: Snakemake runs or resumes the sweep first.
# The checkpoints and train.zarr are not declared outputs (Snakemake would delete them when a job
# fails); the marker train.json is, and is written last. As in sweep.smk, how the job starts is
# handed over as params that are functions of its resources, which Snakemake does not compare.

from hpc.train import resources as train_resources
from hpc.train.metrics import check_not_another_run

try:
    check_not_another_run(TRAIN)
except SpecError as exc:
    sys.stderr.write(f"Error: bad training spec {TRAIN_FILE}: {exc}\n")
    sys.exit(2)

TRAIN_NAME = TRAIN.name
TRAIN_DIR = str(paths.run_dir(TRAIN_NAME))
TRAIN_DATA = [f"{SWEEP_DIR}/aggregate.json"] if TRAIN.data.kind == "sweep" else []
TRAIN_TARGETS = [f"{TRAIN_DIR}/report.html"]


rule train:
    input:
        spec=TRAIN_FILE,
        data=TRAIN_DATA,
    output:
        marker=f"{TRAIN_DIR}/train.json",
    params:
        digest=TRAIN.digest(),  # a changed spec retrains (and is refused if the run holds another)
        hpc=lambda wildcards, resources: HPC,
        launch=lambda wildcards, resources: train_resources.launch_args(TRAIN),
    resources:
        **train_resources.train_resources(TRAIN),
    log:
        f"{TRAIN_DIR}/logs/train.log",
    conda:
        JAX_ENV
    shell:
        "{params.hpc} train run {input.spec:q} --marker {output.marker:q} {params.launch} 2> {log:q}"


rule train_report:
    input:
        marker=f"{TRAIN_DIR}/train.json",
    output:
        report=f"{TRAIN_DIR}/report.html",
    log:
        f"{TRAIN_DIR}/logs/report.log",
    localrule: True
    run:
        from hpc.report.build import write_report

        Path(log[0]).write_text(f"wrote {write_report(TRAIN_NAME, paths.root_of_marker(input.marker), output.report)}\n")
