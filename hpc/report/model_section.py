"""The model's own section: what ``Model.report_section`` returns, as tables of the page.

A model returns a ``ReportTable`` (or several); a model written before that returns an HTML
string, which goes in as it is. When the model's function raises, the rest of the report stands
and the failure is shown in the section.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from markupsafe import Markup

from hpc.models import ReportTable
from hpc.report.render import Table, fragment
from hpc.report.sweep_data import Sweep


@dataclass
class ModelTable(Table):
    title: str = ""
    caption: str = ""


@dataclass
class ModelSection:
    model: str
    tables: list[ModelTable] = field(default_factory=list)
    fragment: Markup | None = None  # an older model's HTML
    error: str = ""


def _tables(result) -> list[ReportTable]:
    items = [result] if isinstance(result, ReportTable) else list(result)
    for item in items:
        if not isinstance(item, ReportTable):
            raise TypeError(f"report_section returned {type(item).__name__}, not a ReportTable")
    return items


def model_section(sweep: Sweep) -> ModelSection | None:
    """The model's section, or None when it declares none or has nothing to add."""
    if sweep.model.report_section is None:
        return None
    section = ModelSection(sweep.model.name)
    try:
        result = sweep.model.report_section(sweep.ds)
        if isinstance(result, str):
            section.fragment = fragment(result) if result else None
        elif result is not None:
            section.tables = [ModelTable(list(t.columns), [list(r) for r in t.rows], id=f"model-table-{i + 1}",
                                         title=t.title, caption=t.caption) for i, t in enumerate(_tables(result))]
    except Exception as exc:  # the rest of the report still stands; the failure is shown, not hidden
        print(f"hpc report: {sweep.model.name}.report_section failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        section.error = f"{type(exc).__name__}: {exc}"
    if not (section.tables or section.fragment or section.error):
        return None
    return section
