"""The plan of a sweep: its grid, how the grid is cut into chunks, and which shard owns which chunks.

Zarr v3 has no locks, so two writers in one chunk lose data. The plan therefore cuts the grid
into chunks first and gives each shard a run of whole chunks (in C order over the chunk grid);
a shard, and later each process in it, only ever writes the chunks it owns.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpc.sweep.spec import Spec

PLAN_VERSION = 1
# Several chunks per shard let an interrupted shard resume chunk by chunk, let the processes of a
# multi-process shard each own whole chunks, and even out shard sizes.
CHUNKS_PER_SHARD = 4


def chunk_shape(shape: tuple[int, ...], n_chunks: int) -> tuple[int, ...]:
    """A chunk shape that tiles ``shape`` into at least ``n_chunks`` blocks of about equal size.

    Trailing dimensions are kept whole while they fit in the target block size; the first one
    that does not fit is cut, and the leading ones are cut to 1.
    """
    total = math.prod(shape)
    assert 1 <= n_chunks <= total
    target = max(1, total // n_chunks)
    chunks = list(shape)
    inner = 1
    for j in range(len(shape) - 1, -1, -1):
        if inner * shape[j] <= target:
            inner *= shape[j]
            continue
        chunks[j] = max(1, target // inner)
        for i in range(j):
            chunks[i] = 1
        break
    return tuple(chunks)


@dataclass(frozen=True)
class Plan:
    digest: str
    name: str
    model: str
    spec: dict  # Spec.normalized()
    spec_text: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    shard_chunks: tuple[tuple[int, int], ...]  # shard -> [first, last) chunk ids
    batch_size: int
    precision: str
    resources: dict

    @property
    def n_shards(self) -> int:
        return len(self.shard_chunks)

    @property
    def n_points(self) -> int:
        return math.prod(self.shape)

    @property
    def fixed_parameters(self) -> dict:
        """Every parameter that is not swept, at its value (which includes every shape parameter)."""
        return dict(self.spec["fixed"])

    @property
    def chunk_grid(self) -> tuple[int, ...]:
        return tuple(math.ceil(n / c) for n, c in zip(self.shape, self.chunks))

    @property
    def n_chunks(self) -> int:
        return math.prod(self.chunk_grid)

    def chunk_region(self, chunk_id: int) -> tuple[slice, ...]:
        """The block of the grid that chunk ``chunk_id`` covers."""
        index = [int(i) for i in np.unravel_index(chunk_id, self.chunk_grid)] if self.shape else []
        return tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, self.chunks, self.shape))

    def shard_chunk_ids(self, shard: int) -> range:
        if not 0 <= shard < self.n_shards:
            raise IndexError(f"shard {shard} out of range 0..{self.n_shards - 1}")
        return range(*self.shard_chunks[shard])

    def shard_of_chunk(self, chunk_id: int) -> int:
        return next(s for s, (first, last) in enumerate(self.shard_chunks) if first <= chunk_id < last)

    def region_points(self, region: tuple[slice, ...]) -> np.ndarray:
        """Flat (C-order) indices of the grid points in ``region``, in C order within it."""
        ranges = [np.arange(s.start, s.stop) for s in region]
        mesh = np.meshgrid(*ranges, indexing="ij")
        return np.ravel_multi_index([m.ravel() for m in mesh], self.shape) if self.shape else np.zeros(1, int)

    def shard_points(self, shard: int) -> int:
        return sum(math.prod(s.stop - s.start for s in self.chunk_region(c)) for c in self.shard_chunk_ids(shard))

    def shard_of_points(self) -> np.ndarray:
        """The owning shard of every grid point, as an int32 array of the grid's shape."""
        owner = np.empty(self.shape, np.int32)
        for shard in range(self.n_shards):
            for c in self.shard_chunk_ids(shard):
                owner[self.chunk_region(c)] = shard
        return owner

    def point_values(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Swept parameter values at the given flat grid indices."""
        index = np.unravel_index(flat, self.shape)
        out = {}
        for axis, idx in zip(self.spec["axes"], index):
            for pname, values in axis["values"].items():
                out[pname] = np.asarray(values)[idx]
        return out

    def to_json(self) -> str:
        body = dict(self.__dict__, version=PLAN_VERSION)
        return json.dumps(body, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        body = json.loads(text)
        if body.pop("version", None) != PLAN_VERSION:
            raise ValueError("plan file of another version: replan the sweep")
        body["dims"] = tuple(body["dims"])
        body["shape"] = tuple(body["shape"])
        body["chunks"] = tuple(body["chunks"])
        body["shard_chunks"] = tuple(tuple(x) for x in body["shard_chunks"])
        return cls(**body)


def make_plan(spec: Spec) -> Plan:
    """Cut the spec's grid into chunks and give each shard a contiguous run of whole chunks."""
    shape = spec.shape
    target = min(spec.n_points, spec.shards * CHUNKS_PER_SHARD)
    chunks = chunk_shape(shape, target) if shape else ()
    n_chunks = math.prod(math.ceil(n / c) for n, c in zip(shape, chunks))
    bounds = [i * n_chunks // spec.shards for i in range(spec.shards + 1)]
    return Plan(
        digest=spec.digest(),
        name=spec.name,
        model=spec.model,
        spec=spec.normalized(),
        spec_text=spec.text,
        dims=spec.dims,
        shape=shape,
        chunks=chunks,
        shard_chunks=tuple((bounds[i], bounds[i + 1]) for i in range(spec.shards)),
        batch_size=spec.batch_size,
        precision=spec.precision,
        resources=spec.resources,
    )


def read_plan(path: str | Path) -> Plan:
    return Plan.from_json(Path(path).read_text())


def describe(plan: Plan) -> str:
    """A human summary of the plan (for `hpc plan`)."""
    lines = [
        f"sweep {plan.name!r}: model {plan.model}, {plan.n_points} points over "
        + " x ".join(f"{d}[{n}]" for d, n in zip(plan.dims, plan.shape)),
        f"chunks of {' x '.join(map(str, plan.chunks))} points, {plan.n_chunks} in all; "
        f"{plan.n_shards} shards; precision {plan.precision}; digest {plan.digest}",
    ]
    for shard in range(plan.n_shards):
        first, last = plan.shard_chunks[shard]
        lines.append(f"  shard {shard}: {plan.shard_points(shard)} points (chunks {first}..{last - 1})")
    if plan.resources:
        lines.append("resources per shard job: " + ", ".join(f"{k}={v}" for k, v in plan.resources.items()))
    return "\n".join(lines)
