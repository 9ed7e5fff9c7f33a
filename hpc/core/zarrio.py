"""Zarr v3 helpers shared by the sweep store and the training metrics store: creating an array
(fill values, strings), refusing a store made from another spec, reading a store's attributes
and opening it as a Dataset.

Zarr v3 has no locks: every writer owns whole chunks, and these helpers never write an array
another process may be writing.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from hpc.core.errors import SpecError


def fill_value(dtype: np.dtype):
    """What an unwritten (or failed) element holds: NaN for floats, False for booleans, else 0."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.nan
    return False if dtype.kind == "b" else 0


def create_array(group, name: str, data=None, *, shape=None, dtype=None, chunks=None, dims, attrs=None):
    """Array ``name`` of ``group`` with its dimension names and attributes: holding ``data`` if
    given, else of ``shape`` and ``dtype`` and unwritten (``fill_value``). Chunks default to one
    chunk; text (numpy ``U``) is stored as zarr v3's variable-length strings."""
    if data is not None:
        data = np.asarray(data)
        shape, dtype = data.shape, data.dtype
    fill = fill_value(dtype)
    if np.dtype(dtype).kind == "U":
        dtype, fill = str, ""
    arr = group.create_array(name, shape=shape, dtype=dtype, chunks=chunks or shape or (1,),
                             fill_value=fill, dimension_names=list(dims), attributes=attrs or {})
    if data is not None:
        arr[...] = data
    return arr


def refuse_other_digest(path: str | Path, digest: str, what: str) -> bool:
    """True if the store at ``path`` was made from the spec of ``digest``, False if there is none;
    SpecError if it was made from another spec (``what``: "sweep", "training run")."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        return False
    existing = read_attrs(path).get("digest")
    if existing != digest:
        raise SpecError("name", f"{path.parent} holds a {what} made from another spec (digest {existing}, "
                        f"this spec {digest})", "choose a new name, or delete that directory to start over")
    return True


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
