"""Training networks as a pipeline workload: a surrogate of a sweep's model, or a scale test.

spec (YAML, ``hpc/core/schemas/train.schema.yaml``) → data (a sweep's store or a synthetic set,
split into training and held-out parameter points) → a data-parallel training loop over every
device of every process (``jax.distributed``, one mesh; flax network, optax optimizer, orbax
checkpoints) → ``results/NAME/train.zarr`` (per-step loss, throughput, step time; held-out
metrics per evaluation) and a completion marker → report.

Modules: ``spec`` (read and check a training spec), ``data`` (the data set and the data
order), ``network`` (the networks), ``optim`` (the optax optimizer and schedule), ``checkpoint``
(orbax), ``metrics`` (train.zarr), ``loop`` (the training job), ``surrogate`` (a trained network
as a function in the model's units), ``sweep`` (a sweep of training runs: one spec per point),
``sweep_status`` (hpc status of a sweep of training runs, or of one run).

Where a run's files live: hpc.core.paths. Imports hpc.core, hpc.models, hpc.execution and
hpc.sweep (a sweep's store as data); never hpc.report.
"""
