"""The report of a sweep of training runs (hpc.train.sweep): results/NAME/report.html.

Each point is an ordinary training run with its own train.zarr (hpc.train.metrics) under
results/NAME/points/pNNN/. The page compares them: one row per point with its swept settings, the
held-out RMSE at the last evaluation (final) and the smallest over the evaluations (best), and the
step it was reached; the point of the smallest final held-out RMSE is named best. One figure
overlays the points' training loss, one their held-out RMSE.

The workflow's rule builds it from the checked sweep once every point is done
(``write_training_sweep_report``); ``hpc report NAME`` builds it from the results alone, from the
sweep's record of its points (results/NAME/train-sweep.json, hpc.train.sweep.write_points), with
the points done so far (``write_report_from_results``) and the others named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from hpc.core import paths, timefmt
from hpc.core.errors import SpecError
from hpc.core.files import write_atomic
from hpc.report.figures import Figures, pyplot, spans_decades
from hpc.report.render import Table, render


@dataclass(frozen=True)
class PointResult:
    point: str
    settings: dict
    final_heldout_rmse: float
    best_heldout_rmse: float
    best_step: int
    final_loss: float
    steps: np.ndarray
    loss: np.ndarray
    eval_steps: np.ndarray
    heldout_rmse: np.ndarray


def read_point(name: str, point: str, settings: dict, root: Path) -> PointResult:
    """One point's figures, from its train.zarr."""
    group = zarr.open_group(str(paths.train_store_path(name, root)), mode="r")
    eval_steps = np.asarray(group["eval_step"][...])
    heldout = np.asarray(group["heldout_rmse"][...], dtype=np.float64)
    loss = np.asarray(group["loss"][...], dtype=np.float64)
    done = np.isfinite(heldout)
    if not done.any():
        raise ValueError(f"training run {name} has no held-out evaluation yet")
    last = np.flatnonzero(done)[-1]
    best = int(np.nanargmin(heldout))
    return PointResult(point, settings, float(heldout[last]), float(heldout[best]), int(eval_steps[best]),
                       float(loss[np.isfinite(loss)][-1]), np.asarray(group["step"][...]), loss, eval_steps, heldout)


def gather(sweep, root: Path) -> list[PointResult]:
    return [read_point(spec.name, point, settings, root)
            for point, settings, spec in zip(sweep.ids, sweep.points, sweep.specs)]


def gather_done(name: str, root: Path) -> tuple[list[PointResult], list[str]]:
    """The points of sweep ``name`` that are done (their marker holds the point's digest), read
    from their stores, and the ids of the others, from the sweep's record of its points."""
    from hpc.train.sweep import read_points
    from hpc.train.sweep_status import point_status

    record = read_points(name, root)
    if record is None:
        raise SpecError("name", f"{paths.train_sweep_path(name, root)} not found", "run the workflow first")
    done, waiting = [], []
    for p in record["points"]:
        if point_status(p["name"], p["digest"], p["steps"], root)["state"] == "done":
            done.append(read_point(p["name"], p["point"], p["settings"], root))
        else:
            waiting.append(p["point"])
    if not done:
        raise SpecError("name", f"no point of the sweep of training runs {name!r} is done yet "
                        f"({len(waiting)} points)", f"hpc status {name} shows where they are")
    return done, waiting


def best_point(results: list[PointResult]) -> PointResult:
    """The point of the smallest final held-out RMSE (a non-finite one never wins)."""
    return min(results, key=lambda r: r.final_heldout_rmse if math.isfinite(r.final_heldout_rmse) else math.inf)


def comparison_table(results: list[PointResult]) -> Table:
    settings = list(results[0].settings)
    best = best_point(results).point
    rows = [[r.point, *[r.settings[s] for s in settings], r.final_heldout_rmse, r.best_heldout_rmse, r.best_step,
             r.final_loss, "best" if r.point == best else ""] for r in results]
    return Table(["point", *settings, "final held-out RMSE", "best held-out RMSE", "best at step", "final loss", ""],
                 rows, id="training-sweep")


def _overlay(figures: Figures, results: list[PointResult], which: str):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        label = r.point + ": " + ", ".join(f"{k.rsplit('.', 1)[-1]}={v:.3g}" if isinstance(v, float) else
                                           f"{k.rsplit('.', 1)[-1]}={v}" for k, v in r.settings.items())
        if which == "loss":
            ax.plot(r.steps, r.loss, lw=1, label=label)
        else:
            ax.plot(r.eval_steps, r.heldout_rmse, marker=".", lw=1, label=label)
    values = np.concatenate([r.loss if which == "loss" else r.heldout_rmse for r in results])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size and spans_decades(values):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (standardized)" if which == "loss" else "held-out RMSE")
    ax.set_title("Training loss per point" if which == "loss" else "Held-out RMSE per point")
    ax.legend(fontsize=7)
    caption = ("The batch loss of every point, step by step." if which == "loss"
               else "The held-out RMSE of every point at each evaluation.")
    return figures.add(fig, caption)


def write_training_sweep_report(sweep, markers: list[str], out: str | Path) -> Path:
    """Gather the points' runs (their results root is the one their completion ``markers`` lie
    under) and write the comparison page to ``out``."""
    return _write(sweep.name, gather(sweep, paths.root_of_marker(markers[0], sweep.specs[0].name)), [], out)


def write_report_from_results(name: str, root: Path | None = None, out: str | Path | None = None) -> Path:
    """``hpc report NAME`` of a sweep of training runs: the page of its points done so far, from
    their stores and the sweep's record of its points (default out: results/NAME/report.html)."""
    root = Path(root) if root is not None else paths.RESULTS_ROOT
    done, waiting = gather_done(name, root)
    return _write(name, done, waiting, out or paths.report_path(name, root))


def _write(name: str, results: list[PointResult], waiting: list[str], out: str | Path) -> Path:
    figures = Figures()
    figs = [_overlay(figures, results, "loss"), _overlay(figures, results, "heldout")]
    best = best_point(results)
    html = render("training_sweep.html.j2", title=f"Sweep of training runs {name}", name=name,
                  n=len(results), best=best, comparison=comparison_table(results), figures=figs,
                  waiting=waiting, built=timefmt.now_iso())
    out = Path(out)
    write_atomic(out, html)
    return out
