"""Times as the project writes and shows them: one implementation for the stores, status and the report.

- ``now_iso()``: the current time as ISO 8601 in UTC, to the millisecond (what the stores and
  markers record: ``2026-11-23T03:00:36.125+00:00``).
- ``iso_epoch(text)``: ISO 8601 text as epoch seconds; a time without a zone is local time (as
  Slurm's ``squeue`` prints it); None for empty or unreadable text (``N/A``).
- ``epoch_text(epoch)``: epoch seconds as ``2026-11-23 03:00:36 UTC``.
- ``duration(seconds)``: a span as a person reads it: ``0.052 s``, ``12.3 s``, ``4 min 05 s``,
  ``1 h 02 min``.
"""

from __future__ import annotations

import datetime as dt
import math

UNKNOWN = "unknown"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def iso_epoch(text: str | None) -> float | None:
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return dt.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        return None


def epoch_text(epoch: float | None) -> str:
    if epoch is None or not math.isfinite(epoch):
        return UNKNOWN
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """Three significant digits under a minute, then minutes and seconds, then hours and minutes."""
    if seconds is None or not math.isfinite(seconds):
        return UNKNOWN
    seconds = max(0.0, float(seconds))
    if seconds < 59.95:
        return f"{seconds:.3g} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"
