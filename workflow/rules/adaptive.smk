# Rules of an adaptive sweep (a spec with adaptive: instead of sweep:; hpc.sweep.adaptive).
#
# Round r (RRRR, from 0000): the checkpoint adaptive_ask rebuilds the learner from the sweep's
# store, tells it every committed point and writes the round's points (or the decision to stop);
# adaptive_plan plans the round as a sweep of its own under results/NAME/rounds/round-RRRR/;
# adaptive_shard runs its shard jobs exactly as run_shard does for a grid sweep (same command,
# resources, retries), or with backend: dask adaptive_dask runs its chunks as dask tasks exactly
# as run_dask does (one job, the same shard markers); adaptive_merge appends the round to
# results/NAME/sweep.zarr and removes the outputs from the round's own store. The input function of
# adaptive_aggregate walks the rounds until a checkpoint says stop.

from hpc.sweep import adaptive
from hpc.sweep import resources as sweep_resources

NAME = SPEC.name
SWEEP_DIR = str(paths.sweep_dir(NAME))
ROUNDS_DIR = str(adaptive.rounds_root(NAME))
ROUND_DIR = f"{ROUNDS_DIR}/round-{{round}}"

# What the next round solves (the first, for a new sweep): shown before the jobs, dry run included.
if workflow.is_main_process:
    sys.stderr.write(adaptive.describe_first_round(SPEC, limit=12) + "\n")


checkpoint adaptive_ask:
    input:
        spec=SWEEP_FILE,
        previous=lambda w: [] if int(w.round) == 0 else f"{ROUNDS_DIR}/{adaptive.round_name(int(w.round) - 1)}/merged.json",
    output:
        ask=f"{ROUND_DIR}/ask.json",
    wildcard_constraints:
        round=r"\d{4}",
    params:
        digest=SPEC.digest(),
    log:
        f"{ROUND_DIR}/logs/ask.log",
    localrule: True
    run:
        adaptive.ask_round(SPEC, int(wildcards.round), output.ask, log=log[0])


rule adaptive_plan:
    input:
        ask=f"{ROUND_DIR}/ask.json",
    output:
        plan=f"{ROUND_DIR}/plan.json",
    wildcard_constraints:
        round=r"\d{4}",
    params:
        digest=SPEC.digest(),
    log:
        f"{ROUND_DIR}/logs/plan.log",
    localrule: True
    run:
        from hpc.sweep.plan import describe

        plan, state = adaptive.plan_round(SPEC, input.ask, output.plan)
        Path(log[0]).write_text(f"store {state}\n{describe(plan)}\n")


rule adaptive_shard:
    input:
        plan=f"{ROUND_DIR}/plan.json",
    output:
        marker=f"{ROUND_DIR}/shards/shard-{{shard}}.json",
    wildcard_constraints:
        round=r"\d{4}",
        shard=r"\d{4}",
    params:
        digest=SPEC.digest(),
        hpc=lambda wildcards, resources: HPC,
        launch=lambda wildcards, resources: sweep_resources.launch_args(SPEC),
    resources:
        **sweep_resources.shard_resources(SPEC, workflow),
    log:
        f"{ROUND_DIR}/logs/shard-{{shard}}.log",
    conda:
        JAX_ENV
    shell:
        "SNAKEMAKE_ATTEMPT={resources.hpc_attempt} {params.hpc} run-shard {input.plan:q} {wildcards.shard} "
        "--marker {output.marker:q} {params.launch} 2> {log:q}"


if SPEC.backend == "dask":

    rule adaptive_dask:
        input:
            plan=f"{ROUND_DIR}/plan.json",
        output:
            summary=f"{ROUND_DIR}/dask.json",
        wildcard_constraints:
            round=r"\d{4}",
        params:
            digest=SPEC.digest(),
            dask=json.dumps(SPEC.dask),
            hpc=lambda wildcards, resources: HPC,
        resources:
            **sweep_resources.dask_resources(SPEC),
        log:
            f"{ROUND_DIR}/logs/dask.log",
        conda:
            JAX_ENV
        shell:
            "{params.hpc} run-dask {input.plan:q} --settings {params.dask:q} > {output.summary:q}.partial 2> {log:q} "
            "&& mv {output.summary:q}.partial {output.summary:q}"


rule adaptive_merge:
    input:
        plan=f"{ROUND_DIR}/plan.json",
        done=adaptive.round_done_input(checkpoints, SPEC),  # the round's shard markers, or its dask run
    output:
        merged=f"{ROUND_DIR}/merged.json",
    wildcard_constraints:
        round=r"\d{4}",
    log:
        f"{ROUND_DIR}/logs/merge.log",
    localrule: True
    run:
        adaptive.merge_round(SPEC, input.plan, output.merged, log=log[0])


rule adaptive_aggregate:
    input:
        adaptive.rounds_input(checkpoints, SPEC),  # every round's merge, up to the ask that says stop
    output:
        summary=f"{SWEEP_DIR}/aggregate.json",
    log:
        f"{SWEEP_DIR}/logs/aggregate.log",
    localrule: True
    run:
        Path(log[0]).write_text(json.dumps(adaptive.finalize(SPEC, output.summary), indent=1) + "\n")


rule adaptive_report:
    input:
        summary=f"{SWEEP_DIR}/aggregate.json",
    output:
        report=report(f"{SWEEP_DIR}/report.html", caption="../report/sweep_report.rst", category="Sweep",
                      labels={"sweep": NAME, "file": "report.html"}),
    log:
        f"{SWEEP_DIR}/logs/report.log",
    localrule: True
    run:
        from hpc.report.adaptive import write_adaptive_report

        Path(log[0]).write_text(f"wrote {write_adaptive_report(NAME, paths.RESULTS_ROOT, output.report)}\n")
