"""How work is started and where it runs: the processes of a job (launch, distributed: JAX's
distributed runtime, MPI, CPU binding), the persistent compilation cache, and dask clusters
(dask_cluster). Knows nothing of sweeps or training.

Imports hpc.core only.
"""
