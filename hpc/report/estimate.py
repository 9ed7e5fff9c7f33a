"""The cost preview beside what ran: the prediction `hpc plan --estimate` saved
(results/NAME/estimate.json, hpc.sweep.estimate) against the shards' records.

Per shard: the predicted runtime against the duration its marker records, and the predicted peak
memory against the peak RSS measured (Slurm's MaxRSS where accounting has it, else what the
process measured); in total, the predicted compute against the sum of the durations. Nothing is
shown when no prediction of this very spec (its digest) was saved.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpc.report.render import Table
from hpc.report.sweep_data import Sweep
from hpc.sweep import estimate


@dataclass
class EstimateVsRun:
    source: str  # where the probe ran: local or slurm
    host: str
    made: float  # when the prediction was made (epoch seconds)
    probe_s: float
    compute_pred_s: float
    compute_run_s: float | None  # None until every predicted shard has a record
    peak_pred_mb: float
    peak_run_mb: float | None
    table: Table
    warnings: list[str]


def _ratio(pred, ran):
    return round(pred / ran, 2) if pred is not None and ran else None


def measured_peak_mb(record: dict) -> float | None:
    """A shard's measured peak RSS: Slurm's accounting, else its processes' own."""
    for key in ("max_rss_mb", "process_max_rss_mb"):
        if record.get(key) is not None:
            return float(record[key])
    return None


def estimate_section(sweep: Sweep) -> EstimateVsRun | None:
    result = estimate.load(sweep.name, sweep.root, sweep.ds.attrs.get("digest"))
    if result is None:
        return None
    ran = {int(r["shard"]): r for r in sweep.shards if r.get("shard") is not None}
    rows = []
    for s in result["shards"]:
        r = ran.get(int(s["shard"]), {})
        duration, peak = r.get("duration_s"), measured_peak_mb(r)
        rows.append([s["shard"], s["points"], s["runtime_s"], duration, _ratio(s["runtime_s"], duration),
                     s["peak_memory_mb"], peak, _ratio(s["peak_memory_mb"], peak)])
    complete = all(row[3] is not None for row in rows)
    peaks = [row[6] for row in rows if row[6] is not None]
    return EstimateVsRun(
        source=result.get("source", "local"), host=result.get("calibration", {}).get("host", "?"),
        made=float(result.get("made", 0.0)), probe_s=float(result.get("probe_s", 0.0)),
        compute_pred_s=result["compute_s"],
        compute_run_s=round(sum(row[3] for row in rows), 3) if complete else None,
        peak_pred_mb=max(s["peak_memory_mb"] for s in result["shards"]),
        peak_run_mb=max(peaks) if peaks else None,
        table=Table(["shard", "points", "runtime predicted [s]", "ran [s]", "predicted / ran",
                     "peak predicted [MB]", "measured [MB]", "predicted / measured"], rows, id="estimate-shards"),
        warnings=list(result.get("warnings", [])))
