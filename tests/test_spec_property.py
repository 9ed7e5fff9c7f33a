"""Property-based tests of the spec parser: any input gives a Spec or one SpecError, nothing else."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from hpc.core import paths, zarrio
from hpc.core.errors import SpecError
from hpc.sweep import store
from hpc.sweep.spec import parse_spec
from hpc.sweep.store import plan_sweep

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


# --- Accepted specs plan into a store; refused ones name the key ------------------------------
#
# Specs in every form a user writes (lists, linspace, logspace, range, zip, sample, params,
# shards or points_per_shard, precision), valid and not, small enough to plan in milliseconds.
# Dimension names are drawn among the model's own names too (parameters, outputs, the model's
# dimension wage, the store's status variables) and names a file system or zarr would take amiss.

numbers = st.one_of(st.integers(-3, 60), st.floats(-5, 60, width=32),
                    st.sampled_from([0.5, 0.9, 0.95, 1.5, 20.0, float("inf"), float("nan"), -1e308, 1e308]))
entries = st.one_of(numbers, st.booleans(), st.sampled_from(["1e-6", "paper", ""]))
dim_names = st.sampled_from(["c", "beta", "a", "b", "tol", "max_iter", "n_wages", "pair", "z", "sample", "wage",
                             "value", "error", "point_done", "shard_index", "x1", "a.b", "a/b", "", "zarr.json"])
small_n = st.integers(-1, 5)
mccall_dimension = st.one_of(
    st.lists(entries, min_size=0, max_size=4),
    st.builds(lambda a, b, n: {"linspace": [a, b, n]}, numbers, numbers, small_n),
    st.builds(lambda a, b, n: {"logspace": [a, b, n]}, numbers, numbers, small_n),
    st.builds(lambda a, b, s: {"range": [a, b, s]}, numbers, numbers, numbers),
    st.builds(lambda d: {"zip": d}, st.dictionaries(st.sampled_from(["c", "beta", "a", "max_iter", "n_wages", "gamma"]),
                                                    st.lists(entries, min_size=1, max_size=3), min_size=0, max_size=3)),
)
sample_block = st.fixed_dictionaries(
    {"method": st.sampled_from(["random", "sobol", "grid"]), "n": st.integers(0, 5),
     "ranges": st.dictionaries(st.sampled_from(["c", "beta", "a", "n_wages", "max_iter"]),
                               st.lists(numbers, min_size=2, max_size=2), min_size=0, max_size=2)},
    optional={"seed": st.integers(-1, 3)})
# Values a McCall parameter takes (within its bounds), for specs that are mostly right.
GOOD_VALUES = {"c": st.floats(0, 60), "beta": st.floats(0.5, 0.99), "a": st.floats(1, 300),
               "max_iter": st.integers(1, 100), "tol": st.floats(1e-8, 1e-3)}


@st.composite
def good_dimension(draw, pname: str):
    """A dimension of ``pname`` in one of the forms, mostly valid (values may still repeat)."""
    values = GOOD_VALUES[pname]
    form = draw(st.sampled_from(["list", "linspace", "logspace", "range"]))
    if form == "list":
        return draw(st.lists(values, min_size=1, max_size=4, unique=True))
    lo, hi = sorted(draw(st.lists(values, min_size=2, max_size=2, unique=True)))
    n = draw(st.integers(1, 4))
    if form == "range":
        step = max((hi - lo) / n, 1 if pname == "max_iter" else 1e-3)
        return {"range": [lo, hi, int(step) if pname == "max_iter" else step]}
    return {form: [lo, hi, n]}


@st.composite
def zip_dimension(draw):
    n = draw(st.integers(1, 3))
    names = draw(st.lists(st.sampled_from(["c", "beta", "a", "max_iter"]), min_size=1, max_size=3, unique=True))
    return {"zip": {p: draw(st.lists(GOOD_VALUES[p], min_size=n, max_size=n, unique=True)) for p in names}}


@st.composite
def mostly_good_mccall(draw):
    spec = {"name": draw(st.sampled_from(["prop", "a.b-c_1"])), "model": "mccall"}
    sweep = {}
    for pname in draw(st.lists(st.sampled_from(sorted(GOOD_VALUES)), max_size=2, unique=True)):
        sweep[pname] = draw(good_dimension(pname))
    if draw(st.booleans()):
        sweep[draw(st.one_of(st.sampled_from(["pair", "cal", "x1"]), dim_names))] = draw(zip_dimension())
    if draw(st.integers(0, 3)) == 0:
        sweep[draw(dim_names)] = draw(mccall_dimension)  # anything at all, under any name
    spec["sweep"] = sweep
    if draw(st.booleans()):
        ranges = {p: sorted(draw(st.lists(GOOD_VALUES[p], min_size=2, max_size=2, unique=True)))
                  for p in draw(st.lists(st.sampled_from(["c", "beta", "a", "tol"]), min_size=1, max_size=2, unique=True))}
        spec["sample"] = {"method": draw(st.sampled_from(["random", "sobol"])), "n": draw(st.sampled_from([1, 2, 4])),
                          "ranges": ranges}
    if draw(st.booleans()):
        spec["params"] = {"n_wages": draw(st.integers(2, 6)),
                          **draw(st.dictionaries(st.sampled_from(["tol", "b", "w_max"]), st.floats(1e-6, 100), max_size=2))}
    layout = draw(st.sampled_from(["", "shards", "points_per_shard"]))
    if layout:
        spec[layout] = draw(st.integers(1, 4))
    if draw(st.booleans()):
        spec["precision"] = draw(st.sampled_from(["float32", "float64"]))
    return spec


mccall_specs = st.fixed_dictionaries(
    {"name": st.sampled_from(["prop", "a.b-c_1", "..", "x/y", ".jax-cache"]), "model": st.just("mccall")},
    optional={"sweep": st.dictionaries(dim_names, mccall_dimension, max_size=3),
              "params": st.dictionaries(st.sampled_from(["c", "beta", "a", "tol", "max_iter", "n_wages", "w_min"]),
                                        entries, max_size=3),
              "sample": sample_block,
              "shards": st.integers(0, 6), "points_per_shard": st.integers(0, 6),
              "precision": st.sampled_from(["float32", "float64", "half"])})
# Bianchi: choice and bool parameters (shocks, planner), swept as lists or zipped.
bianchi_dimension = st.one_of(
    st.lists(st.sampled_from(["paper", "teaching", "other", True, False, 0.1, 0.3]), min_size=1, max_size=3),
    st.builds(lambda d: {"zip": d}, st.dictionaries(st.sampled_from(["shocks", "planner", "kappa"]),
                                                    st.lists(st.sampled_from(["paper", "teaching", True, False, 0.1, 0.3]),
                                                             min_size=2, max_size=2), min_size=1, max_size=3)),
)
bianchi_specs = st.fixed_dictionaries(
    {"name": st.just("prop-bianchi"), "model": st.just("bianchi"), "params": st.just({"n_b": 10}),
     "sweep": st.dictionaries(st.sampled_from(["shocks", "planner", "kappa", "cal", "b", "y", "value"]),
                              bianchi_dimension, min_size=1, max_size=2)})


@pytest.mark.fault('bad spec: 60 generated specs in every form, planned (hypothesis)',
                   expect='an accepted spec plans into a store; a refused one raises one SpecError naming the key')
@settings(max_examples=60, deadline=None)
@given(st.one_of(mostly_good_mccall(), mostly_good_mccall(), mccall_specs, bianchi_specs))
def test_an_accepted_spec_plans_into_a_store(data):
    try:
        spec = parse_spec(data)
    except SpecError as exc:
        event("refused")
        assert exc.key and "\n" not in exc.one_line()
        return
    event("accepted")
    with tempfile.TemporaryDirectory() as tmp:
        plan_file = Path(tmp) / spec.name / "plan.json"
        plan, state = plan_sweep(spec, plan_file)
        assert state == "created" and plan_file.is_file()
        ds = zarrio.open_dataset(paths.store_path(spec.name, Path(tmp)))
        assert tuple(ds["point_done"].dims) == spec.dims and ds["point_done"].shape == spec.shape
        for axis in spec.axes:
            for pname in axis.parameters:
                assert ds[pname].dims == (axis.name,)


def test_a_store_that_fails_to_build_leaves_nothing_behind(tmp_path, monkeypatch):
    spec = parse_spec({"name": "fails", "model": "mccall", "sweep": {"c": [1.0, 2.0]}})

    def half_built(path, plan, model):
        path.mkdir(parents=True)
        (path / "zarr.json").write_text("{}")
        raise OSError("disk full")

    monkeypatch.setattr(store, "_build_store", half_built)
    with pytest.raises(OSError, match="disk full"):
        plan_sweep(spec, tmp_path / "results" / "fails" / "plan.json")
    assert not (tmp_path / "results" / "fails").exists()
