"""The report of a sweep or training run: one self-contained HTML page built from the stores alone.

Reads what the sweep and training stages wrote; imports hpc.core, hpc.models, hpc.sweep and
hpc.train, and nothing imports it but the CLI and the workflow's report rules.
"""
