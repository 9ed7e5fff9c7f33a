# One training run (workflow/rules/train.smk includes it when the spec has no sweep: block).


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
