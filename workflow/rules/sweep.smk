# Rules of a sweep. Paths come from hpc.core.paths (the one place that builds them).

NAME = SPEC.name
SWEEP_DIR = str(paths.sweep_dir(NAME))
SHARDS = [f"{i:04d}" for i in range(SPEC.shards)]


def _grows_with_attempt(value):
    return lambda wildcards, attempt: value * attempt


def shard_resources():
    """The spec's resources override the profile's default-resources for this sweep only.

    Memory and time grow with the attempt, so a retry (--retries) of a job killed for running
    out of either asks for more.
    """
    res = dict(SPEC.resources)
    for key in ("mem_mb", "runtime"):
        if key in res:
            res[key] = _grows_with_attempt(res[key])
    gpus = res.pop("gpus", 0)
    if gpus:
        res["gpu"] = gpus
    if res.get("tasks", 1) > 1:
        # The shard starts its own processes (`hpc run-shard --tasks`: srun inside the job);
        # this tells the Slurm plugin not to wrap the command in a one-task srun.
        res["mpi"] = "srun --mpi=pmi2" if SPEC.mpi else "srun"
    return res


LAUNCH = f"--tasks {SPEC.resources.get('tasks', 1)}" + (" --mpi" if SPEC.mpi else "") + (
    f" --cpu-devices {SPEC.cpu_devices}" if SPEC.cpu_devices else "")


rule plan:
    input:
        spec=SWEEP_FILE,
    output:
        plan=f"{SWEEP_DIR}/plan.json",
    params:
        digest=SPEC.digest(),  # a changed spec replans (and is refused if the store holds another)
    localrule: True
    run:
        # In Snakemake's own process: the spec is already loaded and checked.
        store.plan_sweep(SPEC, output.plan)


if SPEC.backend == "dask":

    rule run_dask:
        input:
            plan=f"{SWEEP_DIR}/plan.json",
        output:
            markers=expand(f"{SWEEP_DIR}/shards/shard-{{shard}}.json", shard=SHARDS),
        params:
            digest=SPEC.digest(),
            dask=json.dumps(SPEC.dask),
        resources:
            mem_mb=2000,
            runtime=SPEC.dask.get("walltime_min", 30) * 4,
        log:
            f"{SWEEP_DIR}/logs/dask.log",
        shell:
            "PYTHONPATH={REPO} {HPC} run-dask {input.plan:q} --settings {params.dask:q} 2> {log:q}"


rule run_shard:
    input:
        plan=f"{SWEEP_DIR}/plan.json",
    output:
        marker=f"{SWEEP_DIR}/shards/shard-{{shard}}.json",
    wildcard_constraints:
        shard=r"\d{4}",
    params:
        digest=SPEC.digest(),
    resources:
        **shard_resources(),
    log:
        f"{SWEEP_DIR}/logs/shard-{{shard}}.log",
    conda:
        JAX_ENV
    shell:
        "PYTHONPATH={REPO} {HPC} run-shard {input.plan:q} {wildcards.shard} --marker {output.marker:q} {LAUNCH} 2> {log:q}"


rule aggregate:
    input:
        plan=f"{SWEEP_DIR}/plan.json",
        markers=expand(f"{SWEEP_DIR}/shards/shard-{{shard}}.json", shard=SHARDS),
    output:
        summary=f"{SWEEP_DIR}/aggregate.json",
    localrule: True
    run:
        from hpc.sweep.aggregate import aggregate

        aggregate(input.plan, output.summary)


rule report:
    input:
        plan=f"{SWEEP_DIR}/plan.json",
        summary=f"{SWEEP_DIR}/aggregate.json",
    output:
        report=report(f"{SWEEP_DIR}/report.html", caption="../report/sweep_report.rst", category="Sweep",
                      labels={"sweep": NAME, "file": "report.html"}),
    localrule: True
    run:
        from hpc.report.build import write_report

        write_report(NAME, paths.root_of_plan(input.plan), output.report)
