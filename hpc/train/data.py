"""The data a network learns, and the order it sees them in.

A sweep's store gives one row per (parameter point, value of each model dimension among the
inputs): for McCall with inputs [c, beta, wage] and target ``value``, the row (c, beta, w) has the
target v(w; c, beta). Model dimensions of the target that are not inputs become outputs of the
network (Bianchi's ``bond_policy`` over the 16 shock states y, with inputs [..., b]). Points that
did not converge or are not finite are left out.

Held-out evaluation uses parameter points the network never saw: the points are split (by the
seed) before they are expanded to rows. Inputs and targets are standardized with the training
rows' mean and standard deviation; errors are reported back in the model's units.

Data order: the global batch at step s holds rows ``π_e(k mod N)`` for the positions
``k = s·B, …, s·B + B − 1`` of the stream of epochs, ``e = k div N``, where ``π_e`` is a keyed
pseudo-random permutation of the N training rows (a Feistel network over the next power of
four, cycle-walked into [0, N)). It is a pure function of (seed, step), evaluated element by
element on each device for its own rows, so the global batch at a step does not depend on how
many processes or devices there are, and a resumed run sees the same batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpc.core import paths, zarrio
from hpc.train.spec import TrainSpec

FEISTEL_ROUNDS = 4
SYNTHETIC_TERMS = 8


@dataclass
class Dataset:
    """Training and held-out rows; x standardized, y_train standardized, y_heldout in model units."""

    x_train: np.ndarray  # (N, F) float32
    y_train: np.ndarray  # (N, O) float32, standardized
    x_heldout: np.ndarray  # (M, F) float32, standardized
    y_heldout: np.ndarray  # (M, O) float32, model units
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray
    inputs: list[str]
    output_dims: dict[str, list] = field(default_factory=dict)  # model dims that are network outputs
    units: str = ""
    points: dict = field(default_factory=dict)  # counts of parameter points: train, heldout, dropped
    heldout_params: dict[str, np.ndarray] = field(default_factory=dict)  # swept values at held-out points
    # A user's Zarr store (hpc.train.zarrdata): its blocks, its reader; streamed: x_train/y_train are
    # None and the rows of each step are read from the store.
    blocks: object = None
    store: object = None
    streamed: bool = False

    @property
    def n_train(self) -> int:
        return self.blocks.n_train if self.blocks is not None else len(self.x_train)

    @property
    def features(self) -> int:
        return len(self.x_mean)

    @property
    def outputs(self) -> int:
        return len(self.y_mean)

    def order(self, position, epoch, seed: int, xp=np):
        """Training-row indices at ``position`` of ``epoch`` (the data order; elementwise)."""
        if self.blocks is not None:
            from hpc.train.zarrdata import order_indices

            return order_indices(position, epoch, seed, len(self.blocks.train), self.blocks.size, xp)
        return permute(position, epoch, seed, self.n_train, xp)

    def normalization(self) -> dict:
        return {k: [float(v) for v in getattr(self, k)] for k in ("x_mean", "x_std", "y_mean", "y_std")}

    def describe(self) -> dict:
        return {"inputs": self.inputs, "output_dims": self.output_dims, "units": self.units,
                "train_rows": int(self.n_train), "heldout_rows": int(self.blocks.heldout_rows() if self.blocks is not None else len(self.x_heldout)),
                "points": self.points}


def load_dataset(spec: TrainSpec, root=None, stream: bool | None = None) -> Dataset:
    if spec.data.kind == "synthetic":
        return synthetic_dataset(spec.data.synthetic, spec.data.holdout, spec.seed)
    if spec.data.kind == "zarr":
        return zarr_dataset(spec, spec.data.stream if stream is None else stream)
    return sweep_dataset(spec, root)


COST_ROWS = 4096  # held-out rows kept in memory from a zarr data set (the surrogate's cost, its check)


def zarr_dataset(spec: TrainSpec, stream: bool) -> Dataset:
    """A user's Zarr store (hpc.train.zarrdata): the training rows in memory (in the order of
    their blocks) or, streamed, read from the store step by step; the standardization from one
    pass over the store either way."""
    from hpc.train import zarrdata

    data = spec.data
    blocks = zarrdata.cut_blocks(data.store["rows"], data.store["chunk"], data.holdout, spec.seed)
    cache = -(-spec.batch_size // blocks.size) + 3  # the blocks one step can touch, and the next
    rows = zarrdata.StoreRows(Path(data.zarr), list(data.inputs), data.target, blocks, cache_blocks=cache)
    rows.statistics(f"train {spec.name}")
    x_train = y_train = None
    if not stream:
        parts = [rows.standardized(*blocks.span(b)) for b in blocks.train]
        x_train = np.concatenate([p[0] for p in parts])
        y_train = np.concatenate([p[1] for p in parts])
    sample = next(rows.heldout_blocks(COST_ROWS))
    columns = [f"{n}[{j}]" if k > 1 else n for n, k in data.store["columns"].items() for j in range(k)]
    return Dataset(
        x_train=x_train, y_train=y_train, x_heldout=sample[0], y_heldout=sample[1],
        x_mean=rows.x_mean, x_std=rows.x_std, y_mean=rows.y_mean, y_std=rows.y_std,
        inputs=list(data.inputs), units=_units(data.zarr, data.target),
        points={"train": blocks.n_train, "heldout": blocks.heldout_rows(), "dropped": 0,
                "block_rows": blocks.size, "columns": columns},
        heldout_params={"x": sample[0]}, blocks=blocks, store=rows, streamed=stream,
    )


def _units(path, name: str) -> str:
    import zarr

    return str(zarr.open_group(str(path), mode="r")[name].attrs.get("units", ""))


def _standardize(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(axis=0, dtype=np.float64)
    std = train.std(axis=0, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    return mean, std


def _split(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out and training indices of n items: a seeded shuffle, the first round(holdout·n) held out."""
    order = np.random.default_rng([seed, 0x5EED]).permutation(n)
    held = max(1, min(n - 1, round(n * holdout)))
    return np.sort(order[held:]), np.sort(order[:held])


def sweep_dataset(spec: TrainSpec, root=None) -> Dataset:
    """Rows of (inputs, target) from the sweep's store, split by parameter point."""
    sweep = spec.data.sweep
    path = paths.store_path(sweep.name, root)
    if not (path / "zarr.json").exists():
        raise FileNotFoundError(f"{path}: the sweep's store is missing; run the sweep first")
    ds = zarrio.open_dataset(path)
    sweep_dims = list(sweep.dims)
    model_dims = [d for d in ds[spec.data.target].dims if d not in sweep_dims]
    row_dims = [d for d in model_dims if d in spec.data.inputs]  # a point's rows: one per value of these
    out_dims = [d for d in model_dims if d not in spec.data.inputs]  # the network's outputs
    target = ds[spec.data.target].transpose(*sweep_dims, *row_dims, *out_dims)
    n_points = math.prod(sweep.shape)
    rows_per_point = math.prod(ds.sizes[d] for d in row_dims)
    y = np.asarray(target.values, dtype=np.float64).reshape(n_points, rows_per_point, -1)
    valid = _usable_points(ds, y, sweep.name)
    per_point = _swept_values(ds, sweep)
    row_grids = np.meshgrid(*[np.arange(ds.sizes[d]) for d in row_dims], indexing="ij")
    per_row = {d: np.asarray(ds[d].values, dtype=np.float64)[g.reshape(-1)] for d, g in zip(row_dims, row_grids)}

    def rows(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The points' rows: (inputs, targets), a point's rows one after the other."""
        cols = [np.repeat(per_point[name][points], rows_per_point) if name in per_point
                else np.tile(per_row[name], len(points)) for name in spec.data.inputs]
        return np.stack(cols, axis=1), y[points].reshape(len(points) * rows_per_point, -1)

    train_idx, held_idx = _split(len(valid), spec.data.holdout, spec.seed)
    train_points, held_points = valid[train_idx], valid[held_idx]
    return _standardized(
        *rows(train_points), *rows(held_points),
        inputs=list(spec.data.inputs),
        output_dims={d: [_plain(v) for v in ds[d].values] for d in out_dims},
        units=str(target.attrs.get("units", "")),
        points={"train": int(len(train_points)), "heldout": int(len(held_points)),
                "dropped": int(n_points - len(valid))},
        heldout_params={p: v[held_points] for p, v in per_point.items()},
    )


def _usable_points(ds, y: np.ndarray, name: str) -> np.ndarray:
    """Flat indices of the points committed, finite and converged, with finite targets (at least 2)."""
    n_points = len(y)
    ok = np.asarray(ds["point_done"].values).reshape(n_points).astype(bool)
    ok &= np.asarray(ds["finite"].values).reshape(n_points).astype(bool)
    if "converged" in ds:
        ok &= np.asarray(ds["converged"].values).reshape(n_points).astype(bool)
    ok &= np.isfinite(y).reshape(n_points, -1).all(axis=1)
    valid = np.flatnonzero(ok)
    if len(valid) < 2:
        raise RuntimeError(f"{name}: {len(valid)} usable points (finite and converged); need at least 2")
    return valid


def _swept_values(ds, sweep) -> dict[str, np.ndarray]:
    """Every swept parameter's value at every point, in the store's (C) order of the sweep dims."""
    grids = np.meshgrid(*[np.arange(len(ds[d])) for d in sweep.dims], indexing="ij")
    per_point: dict[str, np.ndarray] = {}
    for axis, grid in zip(sweep.axes, grids):
        for pname in axis.parameters:
            per_point[pname] = np.asarray(ds[pname].values, dtype=np.float64)[grid.reshape(-1)]
    return per_point


def _standardized(x_train, y_train, x_held, y_held, **described) -> Dataset:
    """The Dataset of these rows: inputs and training targets standardized with the training rows'
    mean and standard deviation, held-out targets kept in model units."""
    x_mean, x_std = _standardize(x_train)
    y_mean, y_std = _standardize(y_train)
    return Dataset(
        x_train=((x_train - x_mean) / x_std).astype(np.float32),
        y_train=((y_train - y_mean) / y_std).astype(np.float32),
        x_heldout=((x_held - x_mean) / x_std).astype(np.float32),
        y_heldout=y_held.astype(np.float32),
        x_mean=x_mean, x_std=x_std, y_mean=y_mean, y_std=y_std,
        **described,
    )


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def synthetic_function(x: np.ndarray, outputs: int, seed: int) -> np.ndarray:
    """y_o(x) = Σ_k a_ok sin(w_ok · x + b_ok), a smooth function with random (seeded) coefficients."""
    features = x.shape[1]
    rng = np.random.default_rng([seed, 0xF00D])
    w = rng.normal(0, 2.0 / math.sqrt(features), (outputs, SYNTHETIC_TERMS, features))
    b = rng.uniform(0, 2 * math.pi, (outputs, SYNTHETIC_TERMS))
    a = rng.normal(0, 1 / math.sqrt(SYNTHETIC_TERMS), (outputs, SYNTHETIC_TERMS))
    return np.einsum("ok,nok->no", a, np.sin(np.einsum("okf,nf->nok", w, x) + b))


def synthetic_dataset(syn: dict, holdout: float, seed: int) -> Dataset:
    """``samples`` uniform points of [-1, 1]^features and the synthetic function there (plus noise)."""
    n, features, outputs = syn["samples"], syn["features"], syn["outputs"]
    rng = np.random.default_rng([syn["seed"], 0xDA7A])
    x = rng.uniform(-1, 1, (n, features)).astype(np.float32)
    y = np.empty((n, outputs), np.float32)
    block = max(1, 2**22 // (SYNTHETIC_TERMS * outputs))
    for start in range(0, n, block):
        y[start:start + block] = synthetic_function(x[start:start + block].astype(np.float64), outputs, syn["seed"])
    if syn["noise"]:
        y += rng.normal(0, syn["noise"], y.shape).astype(np.float32)
    train_idx, held_idx = _split(n, holdout, seed)
    return _standardized(
        x[train_idx], y[train_idx], x[held_idx], y[held_idx],
        inputs=[f"x{i}" for i in range(features)],
        points={"train": int(len(train_idx)), "heldout": int(len(held_idx)), "dropped": 0},
        heldout_params={"x": x[held_idx]},
    )


# --- data order ------------------------------------------------------------------------------

_M1, _M2, _GOLDEN = 0x7FEB352D, 0x846CA68B, 0x9E3779B9


def _hash32(x, xp):
    """A 32-bit integer mixer (lowbias32); the same bits in numpy and jax.numpy."""
    x = x ^ (x >> xp.uint32(16))
    x = x * xp.uint32(_M1)
    x = x ^ (x >> xp.uint32(15))
    x = x * xp.uint32(_M2)
    return x ^ (x >> xp.uint32(16))


def _half_bits(n: int) -> int:
    bits = max(2, math.ceil(math.log2(max(n, 2))))
    return (bits + 1) // 2


def _feistel(x, seed: int, epoch, half: int, xp):
    mask = xp.uint32((1 << half) - 1)
    base = _hash32(xp.asarray(seed, xp.uint32) ^ xp.uint32(_GOLDEN), xp)
    left, right = x >> xp.uint32(half), x & mask
    for r in range(FEISTEL_ROUNDS):
        key = _hash32(base ^ _hash32(epoch * xp.uint32(FEISTEL_ROUNDS) + xp.uint32(r + 1), xp), xp)
        left, right = right, left ^ (_hash32(right ^ key, xp) & mask)
    return (left << xp.uint32(half)) | right


def permute(index, epoch, seed: int, n: int, xp=np):
    """π_epoch(index): a keyed permutation of [0, n), elementwise (numpy or jax.numpy, same bits)."""
    half = _half_bits(n)
    x = xp.asarray(index).astype(xp.uint32)
    epoch = xp.asarray(epoch).astype(xp.uint32)
    if xp is np:
        with np.errstate(over="ignore"):  # uint32 products wrap, as they do in jax
            x = _feistel(x, seed, epoch, half, xp)
            while np.any(x >= n):  # cycle-walk into [0, n): a few rounds on average
                x = np.where(x >= n, _feistel(x, seed, epoch, half, xp), x)
        return x.astype(np.int64)
    import jax

    x = _feistel(x, seed, epoch, half, xp)
    x = jax.lax.while_loop(lambda v: xp.any(v >= n), lambda v: xp.where(v >= n, _feistel(v, seed, epoch, half, xp), v), x)
    return x.astype(xp.int32)


def batch_origin(step: int, batch_size: int, n: int) -> tuple[int, int]:
    """(epoch, offset) of the first position of step ``step``'s batch (exact Python integers)."""
    first = step * batch_size
    return first // n, first % n


def batch_indices(seed: int, step: int, batch_size: int, n: int) -> np.ndarray:
    """The training rows of step ``step``'s global batch (reference, in numpy)."""
    epoch0, offset = batch_origin(step, batch_size, n)
    within = offset + np.arange(batch_size, dtype=np.int64)
    return permute(within % n, epoch0 + within // n, seed, n)
