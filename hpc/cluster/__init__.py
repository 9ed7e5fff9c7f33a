"""The emulated Slurm cluster for tests and CI: several slurmd daemons on one machine (emulated).

Imports hpc.core only; no other stage imports it.
"""
