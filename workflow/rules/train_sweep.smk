# A sweep of training runs (workflow/rules/train.smk includes it when the spec has a sweep: block):
# one train job per point, each an ordinary training run of the point's expanded spec under
# results/NAME/points/pNNN/ (hpc --point), resumable and preemption-safe like a single run; then
# one report comparing the points (hpc.report.training_sweep). Before any point trains, the
# sweep's points are recorded in results/NAME/train-sweep.json, which `hpc status NAME` and
# `hpc report NAME` read (hpc.train.sweep.write_points).

from hpc.train.sweep import points_record, write_points

TRAIN_POINTS = dict(zip(TRAIN_SWEEP.ids, TRAIN_SWEEP.specs))


wildcard_constraints:
    point="p[0-9]+",


rule train_sweep_points:
    input:
        spec=TRAIN_FILE,
    output:
        points=f"{TRAIN_DIR}/train-sweep.json",
    params:
        digest=points_record(TRAIN_SWEEP)["digest"],  # other points: written again
    log:
        f"{TRAIN_DIR}/logs/train-sweep.log",
    localrule: True
    run:
        Path(log[0]).write_text(f"wrote {write_points(TRAIN_SWEEP, output.points)}\n")


rule train:
    input:
        spec=TRAIN_FILE,
        data=TRAIN_DATA,
        points=ancient(f"{TRAIN_DIR}/train-sweep.json"),  # written first; its time retrains nothing
    output:
        marker=f"{TRAIN_DIR}/points/{{point}}/train.json",
    params:
        digest=lambda wildcards: TRAIN_POINTS[wildcards.point].digest(),  # a changed point retrains
        hpc=lambda wildcards, resources: HPC,
        launch=lambda wildcards, resources: train_resources.launch_args(TRAIN_POINTS[wildcards.point]),
    resources:
        **train_resources.train_resources(TRAIN),  # resources are not swept: the same for every point
    log:
        f"{TRAIN_DIR}/points/{{point}}/logs/train.log",
    conda:
        JAX_ENV
    shell:
        "{params.hpc} train run {input.spec:q} --point {wildcards.point} --marker {output.marker:q} {params.launch} 2> {log:q}"


rule train_sweep_report:
    input:
        markers=expand(f"{TRAIN_DIR}/points/{{point}}/train.json", point=list(TRAIN_POINTS)),
    output:
        report=f"{TRAIN_DIR}/report.html",
    log:
        f"{TRAIN_DIR}/logs/report.log",
    localrule: True
    run:
        from hpc.report.training_sweep import write_training_sweep_report

        Path(log[0]).write_text(f"wrote {write_training_sweep_report(TRAIN_SWEEP, input.markers, output.report)}\n")
