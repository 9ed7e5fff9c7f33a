"""Jinja2 for the report: the templates under hpc/report/templates/, the filters they format
values with, and the table every section hands them.

Autoescape is on: every value a template writes is escaped, so Python hands templates data
(numbers, text, figures), never markup. The one exception is a model's report section written
before models returned data: its HTML string is wrapped in ``Markup`` (see ``fragment``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from hpc.core import timefmt
from hpc.report.formatting import fmt, is_numeric


@dataclass
class Table:
    """A table of the page: column headings and rows of values (formatted by the template: numbers
    to six significant digits and aligned right, bools as yes/no, None as an empty cell).

    ``id`` names the table in the page (tests and readers find it by it); ``css`` is its class;
    ``note`` a sentence under it (e.g. which rows of a longer table it lists).
    """

    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    id: str = ""
    css: str = ""
    note: str = ""


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(loader=PackageLoader("hpc.report", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["fmt"] = fmt
    env.filters["duration"] = timefmt.duration
    env.filters["epoch"] = timefmt.epoch_text
    env.filters["sig3"] = lambda value: f"{value:.3g}"
    env.tests["numeric"] = is_numeric
    return env


def render(template: str, **data: Any) -> str:
    return environment().get_template(template).render(**data)


def fragment(html: str) -> Markup:
    """An HTML fragment built elsewhere (an older model's report section), put in the page as it is."""
    return Markup(html)
