"""The sweep pipeline, stage by stage: spec (check a YAML spec, expand its axes) → plan (grid,
chunks, shards) → store (create the Zarr store, write chunks) → work (a shard's chunks, points and
process split, built once) → runner (solve a shard's points on every device of every process;
dask_run: every chunk as a dask task) → aggregate (check and finalize) → status (what is done,
running, failed). resources: what a shard job asks Slurm for.

Imports hpc.core, hpc.models and hpc.execution; never hpc.train or hpc.report.
"""
