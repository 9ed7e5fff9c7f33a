"""Spec checks: every mistake is one SpecError naming the key; good specs expand as written."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from hpc.core.errors import SpecError
from hpc.sweep.spec import MAX_POINTS, load_spec, parse_spec

GOOD = {
    "name": "ok",
    "model": "mccall",
    "sweep": {"c": {"linspace": [10, 30, 5]}, "beta": [0.9, 0.95]},
    "shards": 2,
}


def with_(**changes):
    spec = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


BAD = [
    ("unknown top-level key", with_(shardz=2), "shardz", "allowed keys"),
    ("missing model", with_(model=None), "(top level)", "'model' is a required property"),
    ("unknown model", with_(model="nope"), "model", "known models: "),
    ("path in name", with_(name="../evil"), "name", "plain file name"),
    ("slash in name", with_(name="a/b"), "name", "plain file name"),
    ("dot-dot name", with_(name=".."), "name", "plain file name"),
    ("the compilation cache's name", with_(name=".jax-cache"), "name", "reserved"),
    ("shell metacharacters in name", with_(name="x; rm -rf ~"), "name", "plain file name"),
    ("unknown swept parameter", with_(sweep={"gamma": [1, 2]}), "sweep.gamma", "its parameters: c, beta"),
    ("unknown fixed parameter", with_(params={"gamma": 1.0}), "params", "has no parameter 'gamma'"),
    ("text for a number", with_(params={"tol": "1e-6"}), "params.tol", "write 1.0e-6"),
    ("bool for a number", with_(params={"c": True}), "params.c", "expected a number"),
    ("out of bounds", with_(sweep={"beta": [0.5, 1.5]}), "sweep.beta[1]", "allowed: [0.0, 0.9999]"),
    ("negative compensation", with_(params={"c": -1.0}), "params.c", "out of bounds"),
    ("nan value", with_(sweep={"c": [1.0, float("nan")]}), "sweep.c[1]", "not a finite number"),
    ("inf value", with_(params={"c": float("inf")}), "params.c", "not a finite number"),
    ("empty dimension", with_(sweep={"c": []}), "sweep.c", "not a valid dimension"),
    ("duplicate values", with_(sweep={"c": [1.0, 2.0, 1.0]}), "sweep.c", "appears more than once"),
    ("bad linspace", with_(sweep={"c": {"linspace": [1, 2]}}), "sweep.c.linspace", "too short"),
    ("linspace of zero points", with_(sweep={"c": {"linspace": [1, 2, 0]}}), "sweep.c.linspace.2", "minimum of 1"),
    ("empty range", with_(sweep={"c": {"range": [5, 1, 1]}}), "sweep.c.range", "is empty"),
    ("zero step", with_(sweep={"c": {"range": [1, 5, 0]}}), "sweep.c.range", "is empty"),
    ("logspace through zero", with_(sweep={"c": {"logspace": [0, 10, 3]}}), "sweep.c.logspace", "positive"),
    ("zip lengths differ", with_(sweep={"cal": {"zip": {"c": [1.0, 2.0], "beta": [0.9]}}}), "sweep.cal.zip", "differ in length"),
    ("swept twice", with_(sweep={"c": [1.0, 2.0], "cal": {"zip": {"c": [3.0, 4.0]}}}), "sweep.cal", "swept twice"),
    ("fixed and swept", with_(params={"c": 20.0}), "params.c", "both fixed and swept"),
    ("shape parameter swept", with_(sweep={"n_wages": [11, 21]}), "sweep.n_wages", "cannot be swept"),
    ("too many shards", with_(shards=11), "shards", "use at most 10 shards"),
    ("zero shards", with_(shards=0), "shards", "minimum"),
    ("shards and points_per_shard", with_(points_per_shard=3), "shards", "not both"),
    ("bad precision", with_(precision="float16"), "precision", "allowed: float32, float64"),
    ("unknown resource", with_(resources={"gpu": 1}), "resources.gpu", "allowed keys"),
    ("negative memory", with_(resources={"mem_mb": -5}), "resources.mem_mb", "minimum"),
    ("enormous sweep", with_(sweep={"c": {"linspace": [1, 2, 100000]}, "beta": {"linspace": [0.5, 0.9, 100000]}}),
     "sweep", "more than the"),
    ("enormous dimension", with_(sweep={"c": {"linspace": [1, 2, 10**12]}}), "sweep.c", "at most"),
    ("sample range reversed", with_(sweep=None, sample={"method": "sobol", "n": 8, "ranges": {"c": [5.0, 1.0]}}),
     "sample.ranges.c", "empty range"),
    ("not a mapping", ["name", "x"], "(top level)", "YAML mapping"),
]


@pytest.mark.fault('bad spec: {label}', expect='refused before anything runs, message names the key')
@pytest.mark.parametrize("label,data,key,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_spec_is_rejected_with_key_and_hint(label, data, key, fragment):
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert info.value.key == key, info.value.one_line()
    assert fragment in info.value.one_line()


@pytest.mark.fault('bad spec: malformed YAML', expect='refused, message names the line')
def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodel: mccall\nsweep: {c: [1, 2\n")
    with pytest.raises(SpecError, match=r"not valid YAML at line \d+"):
        load_spec(path)


def test_missing_file():
    with pytest.raises(SpecError, match="not found"):
        load_spec("/nonexistent/spec.yaml")


def test_grid_dimensions_in_spec_order():
    spec = parse_spec(GOOD)
    assert spec.dims == ("c", "beta")
    assert spec.shape == (5, 2)
    assert spec.axes[0].values["c"] == tuple(np.linspace(10, 30, 5))
    assert spec.fixed["n_wages"] == 51 and "c" not in spec.fixed


def test_logspace_is_geometric_between_endpoints_and_range_excludes_stop():
    spec = parse_spec(with_(sweep={"c": {"logspace": [1, 100, 3]}, "beta": {"range": [0.5, 0.8, 0.1]}}))
    assert spec.axes[0].values["c"] == pytest.approx((1.0, 10.0, 100.0))
    assert spec.axes[1].values["beta"] == pytest.approx((0.5, 0.6, 0.7))


def test_zip_and_sample_dimensions():
    spec = parse_spec(with_(sweep={"cal": {"zip": {"c": [10.0, 20.0, 30.0], "beta": [0.9, 0.95, 0.99]}}},
                            sample={"method": "sobol", "n": 8, "seed": 3, "ranges": {"a": [100.0, 300.0]}}))
    assert spec.dims == ("cal", "sample")
    assert spec.shape == (3, 8)
    again = parse_spec(with_(sweep={"cal": {"zip": {"c": [10.0, 20.0, 30.0], "beta": [0.9, 0.95, 0.99]}}},
                             sample={"method": "sobol", "n": 8, "seed": 3, "ranges": {"a": [100.0, 300.0]}}))
    assert spec.axes[1].values == again.axes[1].values  # reproducible from the seed
    assert all(100.0 <= v <= 300.0 for v in spec.axes[1].values["a"])


def test_points_per_shard_and_digest():
    spec = parse_spec(with_(shards=None, points_per_shard=3))
    assert spec.shards == math.ceil(10 / 3)
    assert parse_spec(GOOD).digest() == parse_spec(copy.deepcopy(GOOD)).digest()
    assert parse_spec(GOOD).digest() != parse_spec(with_(params={"tol": 1e-5})).digest()


@pytest.mark.fault('bad spec: 10^7+ points', expect='refused before the grid is built')
def test_max_points_is_checked_before_building_the_grid():
    side = int(math.isqrt(MAX_POINTS)) + 10
    with pytest.raises(SpecError, match="more than the"):
        parse_spec(with_(sweep={"c": {"linspace": [1, 2, side]}, "beta": {"linspace": [0.1, 0.9, side]}}))
