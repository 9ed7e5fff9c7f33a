"""A report page read back with the standard library's html.parser: what a reader sees of it.

``parse(html)`` gives a ``Page``: its title, its headings, its tables (by id, each with its
column headings and rows of cell text), its figures (alt text and caption) and every ``src`` and
``href``; ``page.section(anchor)`` gives the same for one section (from its h2 to the next).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

BLOCKS = {"p", "h1", "h2", "h3", "tr", "li", "figcaption", "pre", "summary", "table", "div", "nav", "footer",
          "figure", "details"}


@dataclass
class Table:
    id: str
    css: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, str]:
        """A key-value table (one th and one td per row) as a mapping."""
        return {row[0]: row[1] for row in self.rows}

    def records(self) -> list[dict[str, str]]:
        """The rows as mappings from column heading to cell text."""
        return [dict(zip(self.columns, row)) for row in self.rows]

    def column(self, name: str) -> list[str]:
        j = self.columns.index(name)
        return [row[j] for row in self.rows]


@dataclass
class Figure:
    id: str
    src: str
    alt: str
    caption: str = ""


@dataclass
class Part:
    """The page, or one section of it."""

    headings: list[tuple[str, str, str]] = field(default_factory=list)  # (tag, id, text)
    tables: dict[str, Table] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # visible text, one line per block

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def heading_texts(self, tag: str) -> list[str]:
        return [text for t, _, text in self.headings if t == tag]

    @property
    def captions(self) -> dict[str, str]:
        """Figure title (alt text) -> caption, without its "Figure N." label."""
        return {f.alt: re.sub(r"^Figure \d+\.\s*", "", f.caption) for f in self.figures}


@dataclass
class Page(Part):
    title: str = ""
    doctype: str = ""
    nav: list[tuple[str, str]] = field(default_factory=list)  # (href, text)
    resources: list[str] = field(default_factory=list)  # every src and href
    tags: set[str] = field(default_factory=set)
    img_count: int = 0
    figcaption_count: int = 0
    pre: list[str] = field(default_factory=list)
    sections: dict[str, Part] = field(default_factory=dict)

    def section(self, anchor: str) -> Part:
        return self.sections[anchor]

    def table(self, table_id: str) -> Table:
        return self.tables[table_id]


class _Parser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.stack: list[str] = []
        self.current: Part | None = None  # the section being read
        self.table: Table | None = None
        self.row: list[str] | None = None
        self.row_in_head = False
        self.cell: list[str] | None = None
        self.heading: tuple[str, str, list[str]] | None = None
        self.figure: Figure | None = None
        self.caption: list[str] | None = None
        self.title: list[str] | None = None
        self.pre: list[str] | None = None
        self.line: list[str] = []

    def _parts(self) -> list[Part]:
        return [self.page] + ([self.current] if self.current is not None else [])

    def _end_line(self):
        text = re.sub(r"\s+", " ", "".join(self.line)).strip()
        if text:
            for part in self._parts():
                part.lines.append(text)
        self.line = []

    def handle_decl(self, decl):
        self.page.doctype = decl

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.page.tags.add(tag)
        for key in ("src", "href"):
            if key in a:
                self.page.resources.append(a[key] or "")
        if tag in BLOCKS:
            self._end_line()
        if tag == "title":
            self.title = []
        elif tag in ("h1", "h2", "h3"):
            if tag == "h2":
                self.current = Part()
                self.page.sections[a.get("id", "")] = self.current
            self.heading = (tag, a.get("id", ""), [])
        elif tag == "table":
            self.table = Table(a.get("id", ""), a.get("class", ""))
            for part in self._parts():
                part.tables[self.table.id] = self.table
        elif tag == "thead":
            self.row_in_head = True
        elif tag == "tbody":
            self.row_in_head = False
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []
            self.line.append(" ")
        elif tag == "img":
            self.page.img_count += 1
            if self.figure is not None:
                self.figure.src, self.figure.alt = a.get("src", ""), a.get("alt", "")
        elif tag == "figure":
            self.figure = Figure(a.get("id", ""), "", "")
            for part in self._parts():
                part.figures.append(self.figure)
        elif tag == "figcaption":
            self.page.figcaption_count += 1
            self.caption = []
        elif tag == "pre":
            self.pre = []
        elif tag == "a" and "nav" in self.stack:
            self.page.nav.append((a.get("href", ""), ""))
        if tag not in ("img", "meta", "br", "link", "input"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass
        if tag == "title":
            self.page.title = "".join(self.title).strip()
            self.title = None
        elif tag in ("h1", "h2", "h3") and self.heading:
            heading = (self.heading[0], self.heading[1], "".join(self.heading[2]).strip())
            for part in self._parts():
                part.headings.append(heading)
            self.heading = None
        elif tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append(re.sub(r"\s+", " ", "".join(self.cell)).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None and self.table is not None:
            if self.row_in_head:
                self.table.columns = self.row
            else:
                self.table.rows.append(self.row)
            self.row = None
        elif tag == "table":
            self.table = None
        elif tag == "figcaption" and self.caption is not None and self.figure is not None:
            self.figure.caption = re.sub(r"\s+", " ", "".join(self.caption)).strip()
            self.caption = None
        elif tag == "figure":
            self.figure = None
        elif tag == "pre" and self.pre is not None:
            self.page.pre.append("".join(self.pre))
            self.pre = None
        if tag in BLOCKS:
            self._end_line()

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "style":
            return
        for sink in (self.title, self.cell, self.caption, self.pre, self.heading[2] if self.heading else None):
            if sink is not None:
                sink.append(data)
        if self.page.nav and "nav" in self.stack and "a" in self.stack:
            href, text = self.page.nav[-1]
            self.page.nav[-1] = (href, text + data)
        self.line.append(data)


def parse(html: str) -> Page:
    parser = _Parser()
    parser.feed(html)
    parser.close()
    parser._end_line()
    return parser.page
