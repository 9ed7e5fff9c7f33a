"""The emulated Slurm cluster for tests and CI, as close to a production site as one machine
allows: several slurmd daemons on this machine (emulated), accounting with slurmdbd and a MariaDB
server of its own (accounting), memory limits enforced (limits), and the daemons' processes
(processes).

Imports hpc.core only; no other stage imports it.
"""
