"""The report of a sweep or training run: one self-contained HTML page built from the stores alone.

Reads what the sweep and training stages wrote; imports hpc.core, hpc.models, hpc.execution (the
dask settings a spec asked for) and hpc.sweep (it reads train.zarr as hpc.train.metrics lays it
out, without importing hpc.train), and nothing imports it but the CLI and the workflow's report
rules.

Modules: build (the entry points and the page's sections), sweep_data (what is read of a sweep),
summary, results, model_section, failures, execution and training (one section each, as data),
training_sweep (the page comparing the points of a sweep of training runs, from their train.zarr),
figures (matplotlib, PNG data URIs), formatting (values as text), render (Jinja2; the templates
are in templates/).
"""

from hpc.report.build import build_report, write_report

__all__ = ["build_report", "write_report"]
