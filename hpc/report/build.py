"""The report of a sweep or training run: one self-contained HTML file built from the stores alone.

``build_report(NAME)`` reads ``results/NAME/sweep.zarr`` (with ``plan.json`` and the shard markers
beside it when present) and ``results/NAME/train.zarr`` when a training run wrote one, and returns
one HTML page with every figure embedded as a PNG ``data:`` URI: no script, no external resource,
so it opens offline and in any browser. Sections, each built as data by its module and rendered by
its template (hpc/report/templates/):

- Summary (summary.py): the spec as written, the model, point counts (converged, not converged,
  non-finite), compute and wall time, throughput, hosts and devices, git commit and versions.
- Results (results.py): every scalar output over the sweep (a line over one dimension, a heat map
  over two, small multiples of heat maps beyond two), every array output (a policy or value
  function) at the corners and the centre of the grid, summary statistics, every point.
- Model (model_section.py): the model's own tables (``Model.report_section``) when it declares them.
- Failures (failures.py): every point that did not converge or is not finite, with its
  parameters and diagnostics.
- Execution (execution.py): a timeline of the shards across hosts, per-shard duration and
  throughput, requeued and resumed shards, and the plan (``plan.json``) against what ran.
- Predicted cost (estimate.py): the prediction of ``hpc plan --estimate`` beside what ran, when
  one of this spec was saved (``estimate.json``).
- Training (training.py): every per-step and per-evaluation variable of ``train.zarr`` as a
  curve, with checkpoint and resume events marked, and the run's attempts.

Every figure has a title, labelled axes (with units where the model declares them) and a caption.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc.core import paths, timefmt
from hpc.core.errors import SpecError
from hpc.core.files import write_atomic
from hpc.report.estimate import estimate_section
from hpc.report.execution import execution_section
from hpc.report.failures import failures_section
from hpc.report.figures import Figures
from hpc.report.model_section import model_section
from hpc.report.render import render
from hpc.report.results import results_section
from hpc.report.summary import summary_section
from hpc.report.sweep_data import load_sweep
from hpc.report.training import training_section


@dataclass
class Section:
    """One section of the page: its anchor, its link text in the navigation, its template and data."""

    anchor: str
    nav: str
    template: str
    data: Any


def sections(name: str, root: Path | None = None) -> tuple[str, list[Section]]:
    """The page's title and sections, built in page order (figures are numbered as they are drawn)."""
    sweep_store = paths.store_path(name, root)
    train = paths.train_store_path(name, root)
    have_sweep, have_train = (sweep_store / "zarr.json").exists(), (train / "zarr.json").exists()
    if not have_sweep and not have_train:
        raise SpecError("name", f"no sweep store or training store for {name!r} under "
                                f"{paths.sweep_dir(name, root).parent}", "run the sweep first")
    figures = Figures()
    found: list[Section] = []
    if have_sweep:
        sweep = load_sweep(name, root)
        found += [Section("summary", "Summary", "summary.html.j2", summary_section(sweep)),
                  Section("results", "Results", "results.html.j2", results_section(sweep, figures))]
        model = model_section(sweep)
        if model is not None:
            found.append(Section("model", "Model", "model.html.j2", model))
        found += [Section("failures", "Failures", "failures.html.j2", failures_section(sweep)),
                  Section("execution", "Execution", "execution.html.j2", execution_section(sweep, figures))]
        predicted = estimate_section(sweep)
        if predicted is not None:
            found.append(Section("estimate", "Predicted cost", "estimate.html.j2", predicted))
    if have_train:
        found.append(Section("training", "Training", "training.html.j2", training_section(train, figures)))
    return (f"Sweep {name}" if have_sweep else f"Training run {name}"), found


def build_report(name: str, root: Path | None = None) -> str:
    """The report of sweep (and/or training run) ``name`` as one self-contained HTML page."""
    title, found = sections(name, root)
    return render("page.html.j2", title=title, sections=found, built=timefmt.epoch_text(time.time()))


def write_report(name: str, root: Path | None = None, output: str | Path | None = None) -> Path:
    out = Path(output) if output else paths.report_path(name, root)
    write_atomic(out, build_report(name, root))
    return out
