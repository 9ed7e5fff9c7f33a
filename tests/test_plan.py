"""The plan: every grid point belongs to exactly one shard, and shards own whole chunks."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hpc.sweep.plan import Plan, chunk_shape, make_plan
from hpc.sweep.spec import parse_spec


@st.composite
def shapes_and_shards(draw):
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=4)))
    shards = draw(st.integers(1, math.prod(shape)))
    return shape, shards


@settings(max_examples=300, deadline=None)
@given(shapes_and_shards())
def test_chunks_tile_the_grid_and_shards_own_whole_chunks(case):
    shape, shards = case
    chunks = chunk_shape(shape, shards)
    grid = tuple(math.ceil(n / c) for n, c in zip(shape, chunks))
    assert math.prod(grid) >= shards
    n_chunks = math.prod(grid)
    bounds = [i * n_chunks // shards for i in range(shards + 1)]
    plan = Plan(digest="x", name="t", model="mccall", spec={"axes": []}, spec_text="", dims=tuple("abcd"[: len(shape)]),
                shape=shape, chunks=chunks, shard_chunks=tuple(zip(bounds[:-1], bounds[1:])), batch_size=8,
                precision="float32", resources={})
    owner = np.full(shape, -1)
    for shard in range(shards):
        assert len(plan.shard_chunk_ids(shard)) >= 1  # no idle shard
        for c in plan.shard_chunk_ids(shard):
            region = plan.chunk_region(c)
            # a chunk region is aligned to the chunk grid: nobody else can touch its chunk
            assert all(s.start % k == 0 for s, k in zip(region, chunks))
            assert (owner[region] == -1).all()
            owner[region] = shard
    assert (owner >= 0).all()
    assert np.array_equal(owner, plan.shard_of_points())
    assert sum(plan.shard_points(s) for s in range(shards)) == math.prod(shape)


def test_default_sweep_plan_round_trips():
    spec = parse_spec({"name": "t", "model": "mccall", "sweep": {"c": {"linspace": [10, 30, 25]}, "beta": [0.9, 0.95, 0.99]},
                       "shards": 5})
    plan = make_plan(spec)
    assert plan.chunks == (1, 3) and plan.n_shards == 5
    assert [len(plan.shard_chunk_ids(s)) for s in range(5)] == [5] * 5
    assert Plan.from_json(plan.to_json()) == plan
    values = plan.point_values(np.array([0, 4, 74]))
    assert values["c"][0] == 10.0 and values["beta"][1] == 0.95 and values["c"][2] == 30.0
