"""The plan: every grid point belongs to exactly one shard, and shards own whole chunks.

Plans are made by ``make_plan`` from real specs; what they promise is checked against
computations written here (NumPy's own C-order indexing, itertools.product over the axes).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hpc.sweep.plan import CHUNKS_PER_SHARD, Plan, make_plan
from hpc.sweep.spec import parse_spec

# Up to four swept Arellano parameters, each with values inside its bounds.
AXES = {"beta": (0.90, 0.96), "gamma": (1.0, 4.0), "r": (0.01, 0.03), "rho": (0.5, 0.95)}


@st.composite
def specs(draw):
    sizes = draw(st.lists(st.integers(1, 9), min_size=1, max_size=4))
    shards = draw(st.integers(1, math.prod(sizes)))
    sweep = {name: np.linspace(lo, hi, n).tolist() for (name, (lo, hi)), n in zip(AXES.items(), sizes)}
    return parse_spec({"name": "t", "model": "arellano", "sweep": sweep, "shards": shards}), tuple(sizes), shards


@settings(max_examples=300, deadline=None)
@given(specs())
def test_chunks_tile_the_grid_and_shards_own_whole_chunks(case):
    spec, shape, shards = case
    plan = make_plan(spec)
    assert plan.shape == shape and plan.n_shards == shards
    # enough chunks for every shard to resume chunk by chunk (CHUNKS_PER_SHARD each where the
    # grid has the points for it)
    assert plan.n_chunks >= min(math.prod(shape), shards * CHUNKS_PER_SHARD)
    per_shard = [len(plan.shard_chunk_ids(s)) for s in range(shards)]
    assert min(per_shard) >= 1 and max(per_shard) - min(per_shard) <= 1  # no idle shard, even split
    flat = np.arange(math.prod(shape)).reshape(shape)  # NumPy's C order
    owner = np.full(shape, -1)
    for shard in range(shards):
        for c in plan.shard_chunk_ids(shard):
            region = plan.chunk_region(c)
            # a chunk region is aligned to the chunk grid: nobody else can touch its chunk
            assert all(s.start % k == 0 for s, k in zip(region, plan.chunks))
            assert (owner[region] == -1).all()
            owner[region] = shard
            np.testing.assert_array_equal(plan.region_points(region), flat[region].ravel())
    assert (owner >= 0).all()
    assert np.array_equal(owner, plan.shard_of_points())
    assert [plan.shard_points(s) for s in range(shards)] == [int((owner == s).sum()) for s in range(shards)]


def test_point_values_follow_the_axes_in_c_order_and_survive_json():
    spec = parse_spec({"name": "t", "model": "mccall", "sweep": {"c": {"linspace": [10, 30, 25]}, "beta": [0.9, 0.95, 0.99]},
                       "shards": 5})
    plan = make_plan(spec)
    # 75 points for 5 x 4 chunks: a chunk keeps the trailing (beta) axis whole, 3 points
    assert plan.chunks == (1, 3) and plan.n_chunks == 25
    values = plan.point_values(np.arange(75))
    expected = list(itertools.product(np.linspace(10, 30, 25), [0.9, 0.95, 0.99]))  # first axis slowest
    np.testing.assert_array_equal(np.c_[values["c"], values["beta"]], np.array(expected))
    again = Plan.from_json(plan.to_json())
    assert again == plan
    np.testing.assert_array_equal(again.point_values(np.arange(75))["c"], values["c"])
