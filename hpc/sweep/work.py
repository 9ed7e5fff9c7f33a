"""A shard's work, built once: the chunks it still has to compute, every parameter's value at their
points, the points' static keys, and how the job's processes split the chunks.

The plan (hpc.sweep.plan) says which chunks a shard owns; ``shard_work`` turns the uncommitted ones
into what the runner solves and writes. Each process runs a contiguous run of the chunks. Every
process builds the same ShardWork, so all agree on the lockstep schedule: how many steps each
static group takes (the most any process needs) and which real point pads a step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hpc.models.base import Model
from hpc.sweep.plan import Plan


def static_names(model: Model) -> list[str]:
    """The parameters a compiled solver is specialized on: every one that is not dynamic."""
    return [p.name for p in model.parameters if p.role != "dynamic"]


def plain(value):
    """A numpy scalar as the Python value (static keys and marker bodies hold Python values)."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class Points:
    """Points to solve: every parameter's value at each (``table``) and each point's static key."""

    table: dict[str, np.ndarray]
    keys: list[tuple]

    @classmethod
    def of(cls, model: Model, fixed: dict, swept: dict[str, np.ndarray], n: int) -> "Points":
        """``n`` points: the ``swept`` values (name -> ``n`` values), else the ``fixed`` one."""
        table = {p.name: (np.asarray(swept[p.name]) if p.name in swept else np.full(n, fixed[p.name], dtype=object))
                 for p in model.parameters}
        names = static_names(model)
        keys = [tuple(plain(v) for v in key) for key in zip(*(table[s] for s in names))] if names else [()] * n
        return cls(table, keys)

    @property
    def n(self) -> int:
        return len(self.keys)

    def rows(self, first: int, stop: int) -> "Points":
        return Points({name: values[first:stop] for name, values in self.table.items()}, self.keys[first:stop])

    def groups(self) -> dict[tuple, np.ndarray]:
        """Each static key's points (indices, in order)."""
        members: dict[tuple, list[int]] = {}
        for i, key in enumerate(self.keys):
            members.setdefault(key, []).append(i)
        return {key: np.asarray(idx, dtype=int) for key, idx in members.items()}

    def group_steps(self, process_batch: int) -> dict[tuple, int]:
        """Steps of ``process_batch`` points each static group needs."""
        return {key: math.ceil(len(idx) / process_batch) for key, idx in self.groups().items()}

    def first_points(self, model: Model) -> dict[tuple, dict]:
        """Each static group's first point, its dynamic values: a real point to pad steps with."""
        out: dict[tuple, dict] = {}
        for i, key in enumerate(self.keys):
            if key not in out:
                out[key] = {p.name: plain(self.table[p.name][i]) for p in model.parameters if p.role == "dynamic"}
        return out


@dataclass(frozen=True)
class Chunk:
    """One chunk of the plan: its id, the block of the grid it covers, and its points' flat
    (C-order) grid indices, in C order within the block."""

    id: int
    region: tuple[slice, ...]
    flat: np.ndarray

    @property
    def block_shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.region)

    @property
    def size(self) -> int:
        return len(self.flat)


@dataclass(frozen=True)
class ProcessWork:
    """One process's contiguous run of a shard's chunks and their points, chunk after chunk."""

    chunks: tuple[Chunk, ...]
    points: Points


@dataclass(frozen=True)
class ShardWork:
    """What a shard's job computes: built once, the same on every process."""

    chunks: tuple[Chunk, ...]  # the chunks to compute, in plan order
    points: Points  # every point of the chunks, chunk after chunk
    processes: tuple[ProcessWork, ...]  # process index -> its run of chunks
    group_steps: dict[tuple, int]  # static key -> steps every process takes (lockstep)
    fillers: dict[tuple, dict]  # static key -> the group's first point (dynamic values)


def shard_work(plan: Plan, model: Model, chunk_ids: list[int], n_processes: int, process_batch: int) -> ShardWork:
    """The work of computing the chunks ``chunk_ids`` (of one shard, in plan order) with
    ``n_processes`` processes, each solving ``process_batch`` points per step."""
    chunks = [Chunk(c, plan.chunk_region(c), plan.region_points(plan.chunk_region(c))) for c in chunk_ids]
    flat = np.concatenate([c.flat for c in chunks]) if chunks else np.zeros(0, int)
    points = Points.of(model, plan.fixed_parameters, plan.point_values(flat), len(flat))
    first_row = np.cumsum([0] + [c.size for c in chunks])  # chunk i's points are rows first_row[i]...
    processes = []
    for run in np.array_split(np.arange(len(chunks)), n_processes):  # contiguous runs of chunks
        rows = (first_row[run[0]], first_row[run[-1] + 1]) if len(run) else (0, 0)
        processes.append(ProcessWork(tuple(chunks[i] for i in run), points.rows(*rows)))
    steps: dict[tuple, int] = {}
    for process in processes:
        for key, count in process.points.group_steps(process_batch).items():
            steps[key] = max(steps.get(key, 0), count)
    return ShardWork(tuple(chunks), points, tuple(processes), steps, points.first_points(model))
