"""Property-based tests of the spec parser: any input gives a Spec or one SpecError, nothing else."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpc.core.errors import SpecError
from hpc.sweep.spec import parse_spec

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                        st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                      max_leaves=12)
keys = st.sampled_from(["name", "model", "params", "sweep", "sample", "shards", "points_per_shard", "batch_size",
                        "precision", "resources", "mpi", "cpu_devices", "backend", "dask", "description", "other"])
param_names = st.sampled_from(["c", "beta", "w_min", "n_wages", "tol", "max_iter", "a", "gamma"])
dimension = st.one_of(
    st.lists(scalars, max_size=6),
    st.builds(lambda a, b, n: {"linspace": [a, b, n]}, st.floats(-100, 100), st.floats(-100, 100), st.integers(-2, 50)),
    st.builds(lambda a, b, n: {"logspace": [a, b, n]}, st.floats(-10, 100), st.floats(-10, 100), st.integers(0, 50)),
    st.builds(lambda a, b, s: {"range": [a, b, s]}, st.floats(-100, 100), st.floats(-100, 100), st.floats(-10, 10)),
    st.builds(lambda d: {"zip": d}, st.dictionaries(param_names, st.lists(scalars, max_size=4), max_size=3)),
)
plausible = st.fixed_dictionaries(
    {"name": st.one_of(st.text(max_size=20), st.just("ok-name")), "model": st.sampled_from(["mccall", "nope", "synthetic"])},
    optional={"sweep": st.dictionaries(param_names, dimension, max_size=3),
              "params": st.dictionaries(param_names, scalars, max_size=3),
              "shards": st.integers(-3, 10**9), "precision": st.sampled_from(["float32", "float64", "half"])})


def check(data) -> None:
    try:
        spec = parse_spec(data)
    except SpecError as exc:
        assert exc.one_line() and "\n" not in exc.key
        return
    # Accepted specs are sane.
    assert 1 <= spec.shards <= spec.n_points
    assert spec.name and "/" not in spec.name and spec.name not in (".", "..")
    for axis in spec.axes:
        assert axis.size >= 1
        for vals in axis.values.values():
            assert len(set(vals)) == len(vals)
            assert all(not isinstance(v, float) or math.isfinite(v) for v in vals)


@pytest.mark.fault('bad spec: 400 random mappings (hypothesis)', expect='a Spec or one SpecError, never a crash')
@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, values, max_size=6))
def test_arbitrary_mappings_are_accepted_or_refused_cleanly(data):
    check(data)


@pytest.mark.fault('bad spec: 400 random near-valid specs (hypothesis)', expect='accepted specs are sane, others refused cleanly')
@settings(max_examples=400, deadline=None)
@given(plausible)
def test_plausible_specs_are_accepted_or_refused_cleanly(data):
    check(data)


@settings(max_examples=100, deadline=None)
@given(values)
def test_any_yaml_value_at_the_top(data):
    check(data)
