# Rules of a sweep. Paths come from hpc.core.paths (the one place that builds them), resources
# from hpc.sweep.resources.
#
# A rule's params are what Snakemake compares to rerun a finished job (rerun-triggers: params):
# the spec's digest, for what a job computes. How a job starts (the hpc command, its launch
# options) is handed over as params that are functions of the job's resources, which Snakemake
# does not compare: a changed interpreter path or an install of the package reruns nothing.

from hpc.sweep import resources as sweep_resources
from hpc.sweep.plan import describe

NAME = SPEC.name
SWEEP_DIR = str(paths.sweep_dir(NAME))
SHARDS = [f"{i:04d}" for i in range(SPEC.shards)]

# --config estimate=true (or =slurm): the cost preview (hpc plan --estimate, hpc.sweep.estimate),
# printed before the jobs, dry run included, and saved to results/NAME/estimate.json for the
# report. Once, in Snakemake's own process (not again in each job's).
ESTIMATE = str(config.get("estimate", "false")).lower()
if ESTIMATE not in ("false", "0", "no") and workflow.is_main_process:
    import subprocess

    if ESTIMATE not in ("true", "1", "yes", "local", "slurm"):
        sys.stderr.write(f"Error: --config estimate={ESTIMATE}: use true (this machine) or slurm\n")
        sys.exit(2)
    _where = "slurm" if ESTIMATE == "slurm" else "local"
    _probe = subprocess.run([sys.executable, "-m", "hpc", "plan", SWEEP_FILE, f"--estimate={_where}"],
                            capture_output=True, text=True, env=dict(os.environ, **JOB_ENV))
    if _probe.returncode != 0:
        sys.stderr.write(f"Error: the cost preview failed: {_probe.stderr.strip().splitlines()[-1:]}\n")
        sys.exit(2)
    sys.stderr.write(_probe.stdout)


rule plan:
    input:
        spec=SWEEP_FILE,
    output:
        plan=f"{SWEEP_DIR}/plan.json",
    params:
        digest=SPEC.digest(),  # a changed spec replans (and is refused if the store holds another)
    log:
        f"{SWEEP_DIR}/logs/plan.log",
    localrule: True
    run:
        # In Snakemake's own process: the spec is already loaded and checked.
        plan, state = store.plan_sweep(SPEC, output.plan)
        Path(log[0]).write_text(f"store {state}\n{describe(plan)}\n")


if SPEC.backend == "dask":

    rule run_dask:
        input:
            plan=f"{SWEEP_DIR}/plan.json",
        output:
            markers=expand(f"{SWEEP_DIR}/shards/shard-{{shard}}.json", shard=SHARDS),
        params:
            digest=SPEC.digest(),
            dask=json.dumps(SPEC.dask),
            hpc=lambda wildcards, resources: HPC,
        resources:
            **sweep_resources.dask_resources(SPEC),
        log:
            f"{SWEEP_DIR}/logs/dask.log",
        conda:
            JAX_ENV
        shell:
            "{params.hpc} run-dask {input.plan:q} --settings {params.dask:q} 2> {log:q}"


rule run_shard:
    input:
        plan=f"{SWEEP_DIR}/plan.json",
    output:
        marker=f"{SWEEP_DIR}/shards/shard-{{shard}}.json",
    wildcard_constraints:
        shard=r"\d{4}",
    params:
        digest=SPEC.digest(),
        hpc=lambda wildcards, resources: HPC,
        launch=lambda wildcards, resources: sweep_resources.launch_args(SPEC),
    resources:
        # memory and time grown on a retry for the cause of the failure; hpc_attempt: Snakemake's attempt
        **sweep_resources.shard_resources(SPEC, workflow),
    log:
        f"{SWEEP_DIR}/logs/shard-{{shard}}.log",
    conda:
        JAX_ENV
    shell:
        "SNAKEMAKE_ATTEMPT={resources.hpc_attempt} {params.hpc} run-shard {input.plan:q} {wildcards.shard} "
        "--marker {output.marker:q} {params.launch} 2> {log:q}"


rule aggregate:
    input:
        plan=f"{SWEEP_DIR}/plan.json",
        markers=expand(f"{SWEEP_DIR}/shards/shard-{{shard}}.json", shard=SHARDS),
    output:
        summary=f"{SWEEP_DIR}/aggregate.json",
    log:
        f"{SWEEP_DIR}/logs/aggregate.log",
    localrule: True
    run:
        from hpc.sweep.aggregate import aggregate

        Path(log[0]).write_text(json.dumps(aggregate(input.plan, output.summary), indent=1) + "\n")


rule report:
    input:
        plan=f"{SWEEP_DIR}/plan.json",
        summary=f"{SWEEP_DIR}/aggregate.json",
    output:
        report=report(f"{SWEEP_DIR}/report.html", caption="../report/sweep_report.rst", category="Sweep",
                      labels={"sweep": NAME, "file": "report.html"}),
    log:
        f"{SWEEP_DIR}/logs/report.log",
    localrule: True
    run:
        from hpc.report.build import write_report

        Path(log[0]).write_text(f"wrote {write_report(NAME, paths.root_of_plan(input.plan), output.report)}\n")
