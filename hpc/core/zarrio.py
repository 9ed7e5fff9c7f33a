"""Zarr v3 helpers shared by the sweep store and the training metrics store.

Zarr v3 has no locks: every writer owns whole chunks, and these helpers never write an array
another process may be writing.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path


def read_attrs(path: str | Path) -> dict:
    """The root attributes of the store at ``path`` ({} when there is no store there)."""
    meta = Path(path) / "zarr.json"
    return json.loads(meta.read_text()).get("attributes", {}) if meta.exists() else {}


def is_consolidated(path: str | Path) -> bool:
    meta = json.loads((Path(path) / "zarr.json").read_text())
    return meta.get("consolidated_metadata") is not None


def open_dataset(path: str | Path):
    """A Zarr store as an xarray Dataset, lazily indexed (no dask): a slice reads only its chunks."""
    import xarray as xr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, message=".*consolidated.*")
        return xr.open_zarr(path, consolidated=is_consolidated(path), chunks=None)
