"""What every stage shares: the user-error type, spec files and their schemas, every path under
the results root, atomic files, Zarr helpers and time formatting.

Imports nothing else of hpc: every other subpackage may import it.
"""
