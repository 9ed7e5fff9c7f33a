"""Spec checks: every mistake is one SpecError naming the key; good specs expand as written."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest

from hpc.core import specfile
from hpc.core.errors import SpecError
from hpc.execution import dask_cluster
from hpc.sweep.spec import MAX_POINTS, STORE_VARIABLES, load_spec, parse_spec

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIGEST = "c22425520aa89b17"  # written before the schema gave the defaults

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
    ("nothing swept", with_(sweep=None), "sweep", "nothing is swept"),
    # Names in the store: a zipped or sampled dimension has an index coordinate of its own name.
    ("zipped dimension named like a model dimension", with_(sweep={"wage": {"zip": {"c": [1.0, 2.0]}}}),
     "sweep.wage", "a dimension of mccall's outputs"),
    ("zipped dimension named like an output", with_(sweep={"value": {"zip": {"c": [1.0, 2.0]}}}),
     "sweep.value", "an output of mccall"),
    ("zipped dimension named like a status variable", with_(sweep={"point_done": {"zip": {"c": [1.0, 2.0]}}}),
     "sweep.point_done", "a status variable"),
    ("zipped dimension named after its own parameter",
     with_(sweep={"c": {"zip": {"c": [1.0, 2.0], "beta": [0.9, 0.95]}}}), "sweep.c", "a parameter of mccall"),
    ("zipped dimension named after a fixed parameter", with_(sweep={"a": {"zip": {"c": [1.0, 2.0]}}}),
     "sweep.a", "a parameter of mccall"),
    ("dot in a dimension name", with_(sweep={"a.b": {"zip": {"c": [1.0, 2.0]}}}), "sweep.a.b", "letters, digits and '_'"),
    ("slash in a dimension name", with_(sweep={"a/b": {"zip": {"c": [1.0, 2.0]}}}), "sweep.a/b", "not allowed as a name"),
    ("empty dimension name", with_(sweep={"": {"zip": {"c": [1.0, 2.0]}}}), "sweep", "not allowed as a name"),
    ("zarr.json as a dimension name", with_(sweep={"zarr.json": {"zip": {"c": [1.0, 2.0]}}}), "sweep.zarr.json",
     "not allowed as a name"),
    ("parameter name with a newline", with_(params={"a\nb": 1.0}), "params.'a\\nb'", "not allowed as a name"),
    ("unknown key of spaces", with_(**{" ": 1}), "' '", "unknown key"),
    # Numbers a dimension is spaced from.
    ("infinite range", with_(sweep={"c": {"range": [0, float("inf"), 1]}}), "sweep.c.range", "not a finite number"),
    ("nan range step", with_(sweep={"c": {"range": [0, 1, float("nan")]}}), "sweep.c.range", "not a finite number"),
    ("range overflowing", with_(sweep={"c": {"range": [-1e308, 1e308, 1e307]}}), "sweep.c.range", "overflows"),
    ("infinite linspace", with_(sweep={"c": {"linspace": [0, float("inf"), 3]}}), "sweep.c.linspace",
     "not a finite number"),
    ("nan logspace", with_(sweep={"c": {"logspace": [float("nan"), 1, 3]}}), "sweep.c.logspace", "not a finite number"),
    ("dask workers the wrong way round", with_(backend="dask", dask={"min_workers": 5, "max_workers": 2}),
     "dask.min_workers", "at most max_workers"),
    ("dask settings without the dask backend", with_(dask={"cores": 2}), "dask", "add backend: dask"),
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


def test_defaults_come_from_the_schema():
    spec = parse_spec(GOOD)
    schema = specfile.schema("sweep")["properties"]
    assert spec.batch_size == schema["batch_size"]["default"] == 256
    assert spec.precision == "float32" and spec.backend == "jax" and spec.mpi is False and spec.cpu_devices == 0
    assert spec.dask == specfile.defaults("sweep", "dask") == dask_cluster.settings(None)
    assert spec.dask["interface"] is None and spec.dask["lifetime_min"] < spec.dask["walltime_min"]
    sampled = parse_spec(with_(sweep=None, sample={"method": "random", "n": 4, "ranges": {"c": [1.0, 2.0]}}))
    again = parse_spec(with_(sweep=None, sample={"method": "random", "n": 4, "seed": 0, "ranges": {"c": [1.0, 2.0]}}))
    assert sampled.axes[0].values == again.axes[0].values  # seed: 0 by default
    assert parse_spec(GOOD).raw == GOOD  # the spec as written is kept apart from its defaults


def test_fill_defaults_recurses_into_objects_with_properties_only():
    node = {"properties": {"a": {"default": 1}, "b": {"type": "object", "default": {},
                                                       "properties": {"c": {"default": 2}, "d": {}}},
                           "e": {"type": "object", "additionalProperties": {"default": 3}},
                           "f": {"type": "object", "properties": {"g": {"default": 4}}}}}
    assert specfile.fill_defaults(node, {}) == {"a": 1, "b": {"c": 2}}
    given = {"a": 5, "b": {"d": 6}, "e": {"x": {}}, "f": {}}
    assert specfile.fill_defaults(node, given) == {"a": 5, "b": {"c": 2, "d": 6}, "e": {"x": {}}, "f": {"g": 4}}
    assert given == {"a": 5, "b": {"d": 6}, "e": {"x": {}}, "f": {}}  # a copy: the input is left as it was
    assert specfile.fill_defaults(node, [1]) == [1]


def test_every_default_in_the_schemas_is_valid_there():
    import jsonschema

    def walk(node, where):
        if isinstance(node, dict):
            if "default" in node:
                jsonschema.Draft202012Validator(node).validate(node["default"])
                yield where
            for key, sub in node.items():
                yield from walk(sub, f"{where}.{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                yield from walk(sub, f"{where}[{i}]")

    for kind in specfile.KINDS:
        assert list(walk(specfile.schema(kind), kind))


def test_the_digest_of_a_spec_is_unchanged():
    # Results are refused under their name when the digest changes: pin it for the default sweep.
    assert load_spec(REPO / "workflow" / "sweeps" / "default.yaml").digest() == DEFAULT_DIGEST


def test_store_variables_are_what_a_store_holds_beside_outputs_and_coordinates(tmp_path):
    import zarr

    from hpc.models import get_model
    from hpc.sweep import store

    spec = parse_spec({"name": "vars", "model": "mccall", "params": {"n_wages": 5}, "sweep": {"c": [10.0, 20.0]}})
    store.plan_sweep(spec, tmp_path / "vars" / "plan.json")
    group = zarr.open_group(str(tmp_path / "vars" / "sweep.zarr"), mode="r")
    model = get_model("mccall")
    beside = {name for name, _ in group.arrays()} - {o.name for o in model.outputs} - {"c", "wage"}
    assert beside == set(STORE_VARIABLES)
