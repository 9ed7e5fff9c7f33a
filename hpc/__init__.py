"""hpc: the code that runs on the nodes of a sweep or training pipeline."""

__version__ = "0.1.0"
