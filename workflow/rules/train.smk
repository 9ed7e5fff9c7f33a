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
    for _spec in TRAIN_SWEEP.specs if TRAIN_SWEEP else [TRAIN]:
        check_not_another_run(_spec)
except SpecError as exc:
    sys.stderr.write(f"Error: bad training spec {TRAIN_FILE}: {exc}\n")
    sys.exit(2)

TRAIN_NAME = TRAIN_SWEEP.name if TRAIN_SWEEP else TRAIN.name
TRAIN_DIR = str(paths.run_dir(TRAIN_NAME))
TRAIN_DATA = [f"{SWEEP_DIR}/aggregate.json"] if TRAIN.data.kind == "sweep" else []
TRAIN_TARGETS = [f"{TRAIN_DIR}/report.html"]


if TRAIN_SWEEP:  # a sweep of training runs (hpc.train.sweep): one train job per point, one report

    include: "train_sweep.smk"

else:

    include: "train_run.smk"
