"""Progress of a sweep, read from its plan, its completion markers and its store."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpc import store
from hpc.errors import SpecError
from hpc.plan import read_plan


def sweep_status(name: str, root: Path | None = None) -> dict:
    path = store.plan_path(name, root)
    if not path.exists():
        raise SpecError("name", f"no planned sweep {name!r} under {store.sweep_dir(name, root).parent}",
                        "run the workflow (or `hpc plan SPEC --output ...`) first")
    plan = read_plan(path)
    markers = store.valid_markers(plan, root)
    group = store.open_arrays(name, root, mode="r")
    done = group["point_done"][...]
    finite = group["finite"][...]
    converged = group["converged"][...] if "converged" in group else np.ones_like(done)
    flagged = np.argwhere(done & ~(finite & converged.astype(bool)))
    return {
        "name": name,
        "digest": plan.digest,
        "shards_total": plan.n_shards,
        "shards_done": len(markers),
        "points_total": plan.n_points,
        "points_done": int(done.sum()),
        "flagged": [_point_label(plan, idx) for idx in flagged[:50]],
        "n_flagged": len(flagged),
        "compute_s": sum(m.get("duration_s", 0.0) for m in markers.values()),
        "aggregated": store.read_store_attrs(store.store_path(name, root)).get("completed") is not None,
    }


def _point_label(plan, index) -> str:
    flat = np.ravel_multi_index(tuple(index), plan.shape)
    values = plan.point_values(np.array([flat]))
    return ", ".join(f"{k}={v[0]}" for k, v in values.items())


def format_status(status: dict) -> str:
    lines = [
        f"sweep {status['name']} (plan {status['digest']}): "
        f"{status['shards_done']}/{status['shards_total']} shards done, "
        f"{status['points_done']}/{status['points_total']} points done"
        + (", aggregated" if status["aggregated"] else ""),
    ]
    if status["n_flagged"]:
        lines.append(f"{status['n_flagged']} points not converged or not finite:")
        lines += [f"  {label}" for label in status["flagged"]]
    return "\n".join(lines)
