"""Matplotlib for the report: figures numbered in page order and embedded as PNG ``data:`` URIs,
and the helpers that place a sweep's values along a plot axis or a colour scale."""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

import numpy as np
from matplotlib.colors import LogNorm, Normalize

from hpc.report.formatting import fmt


@dataclass(frozen=True)
class Figure:
    """One figure of the page: its number, the PNG as a ``data:`` URI, its title (the image's alt
    text) and its caption."""

    number: int
    uri: str
    alt: str
    caption: str


class Figures:
    """Numbers the report's figures in the order they are drawn (the order of the page)."""

    def __init__(self):
        self.count = 0

    def add(self, fig, caption: str) -> Figure:
        plt = pyplot()
        self.count += 1
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        title = fig.get_suptitle() or (fig.axes[0].get_title() if fig.axes else "")
        uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        return Figure(self.count, uri, title, caption)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------------------------
# Values along a plot axis


def is_numeric_array(values: np.ndarray) -> bool:
    """Finite numbers only (a plot axis can be placed at them)."""
    return values.dtype.kind in "iuf" and values.size > 0 and bool(np.all(np.isfinite(values)))


def is_geometric(values: np.ndarray) -> bool:
    if values.size < 3 or np.any(values <= 0):
        return False
    ratios = values[1:] / values[:-1]
    steps = np.diff(values)
    return bool(np.allclose(ratios, ratios[0], rtol=1e-6) and not np.allclose(steps, steps[0], rtol=1e-6))


def is_even(values: np.ndarray) -> bool:
    steps = np.diff(values.astype(float))
    return bool(steps.size and np.allclose(steps, steps[0], rtol=1e-6, atol=0) and steps[0] != 0)


def set_grid_axis(ax, which: str, values: np.ndarray, text: str) -> np.ndarray:
    """Place grid cells along ``which`` ('x' or 'y') and return their edges: at the values when
    they are evenly spaced, on a log scale when geometrically spaced, else one equal cell per
    value with the values as tick labels (a list like [0.9, 0.99, 0.995] stays legible)."""
    (ax.set_xlabel if which == "x" else ax.set_ylabel)(text)
    n = len(values)
    if is_numeric_array(values) and n > 1 and (is_even(values) or is_geometric(values)):
        v = values.astype(float)
        if is_geometric(v):
            (ax.set_xscale if which == "x" else ax.set_yscale)("log")
            lv = np.log(v)
            mids = np.exp((lv[1:] + lv[:-1]) / 2)
            return np.concatenate([[v[0] ** 2 / mids[0]], mids, [v[-1] ** 2 / mids[-1]]])
        mids = (v[1:] + v[:-1]) / 2
        return np.concatenate([[2 * v[0] - mids[0]], mids, [2 * v[-1] - mids[-1]]])
    positions = np.arange(n)
    ticks = positions[:: max(1, math.ceil(n / 10))]
    (ax.set_xticks if which == "x" else ax.set_yticks)(ticks)
    (ax.set_xticklabels if which == "x" else ax.set_yticklabels)([fmt(values[i]) for i in ticks],
                                                                  rotation=45 if which == "x" else 0)
    return np.arange(n + 1) - 0.5


def color_norm(values: np.ndarray):
    """A log colour scale for positive values spanning more than three decades (e.g. solver errors)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Normalize(0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    if lo > 0 and hi / lo > 1e3:
        return LogNorm(lo, hi)
    return Normalize(lo, hi if hi > lo else lo + 1.0)


def spans_decades(values: np.ndarray) -> bool:
    """Positive values over more than three decades: drawn on a log scale."""
    return isinstance(color_norm(values), LogNorm)


def cell_centres(edges: np.ndarray) -> np.ndarray:
    return (edges[1:] + edges[:-1]) / 2


# A figure summarizes a large sweep by sampling it: never more than these many cells along a heat
# map's axis or points along a line or in a scatter plot (matplotlib's cost grows with them).
MAX_CELLS = 300
MAX_LINE_POINTS = 2000
MAX_SCATTER = 5000


def stride(n: int, limit: int) -> int:
    """The step that takes at most ``limit`` of ``n`` values, evenly (every ``stride``-th)."""
    return max(1, math.ceil(n / limit))


def any_in_blocks(flags: np.ndarray, axis: int, step: int) -> np.ndarray:
    """Along ``axis``, whether any flag is set in each block of ``step`` values (the block a
    sampled value stands for)."""
    if step == 1 or flags.shape[axis] == 0:
        return flags
    return np.logical_or.reduceat(flags, np.arange(0, flags.shape[axis], step), axis=axis)


def sampling_note(parts: list[tuple[str, int, int]]) -> str:
    """`` Sampled: one value in 4 of c (250 of 1000) ...``: how a figure sampled its axes (name, step, length)."""
    texts = [f"{name}, one value in {k} ({math.ceil(n / k)} of {n})" for name, k, n in parts if k > 1]
    return (" Sampled to keep the figure light: " + "; ".join(texts) + " drawn, each standing for its block of "
            "the grid (a red cross marks a block with a point that failed).") if texts else ""


def evenly(n: int, k: int) -> list[int]:
    """Up to ``k`` indices spread over range(n), both ends included."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})
