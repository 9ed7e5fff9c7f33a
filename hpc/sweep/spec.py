"""Sweep specs: read the YAML a user writes, check it, and turn it into axes of parameter values.

Checks run in two steps, before anything is planned or submitted: the JSON schema
(hpc/core/schemas/sweep.schema.yaml) for the shape of the file, then the model for names, types
and bounds. Every mistake raises one SpecError naming the key and the fix.

``model:`` is a built-in name, a file (``path/to/file.py:ATTR``, relative to the spec's folder),
a module (``package.module:ATTR``) or an installed package's entry point (hpc.models.loading).
A model that is not built in is also probed once at the spec's first point
(``loading.check_solve``: abstract, no solve runs), and its source's hash enters the digest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpc.core import specfile
from hpc.core.errors import SpecError
from hpc.models import loading, resolve_model
from hpc.models.base import Model, Parameter

MAX_POINTS = 10_000_000  # beyond this a sweep is refused: split it into several specs
SAMPLE_DIM = "sample"
# Variables every store holds beside the model's outputs.
STORE_VARIABLES = ("point_done", "finite", "failed", "shard_index")

DIMENSION_FORMS = (
    "a dimension is a list of values, {linspace: [start, stop, n]}, {logspace: [start, stop, n]}, "
    "{range: [start, stop, step]} or {zip: {param: [values], other: [values]}}"
)


@dataclass(frozen=True)
class Axis:
    """One dimension of the sweep: one parameter, or several that vary together (zip, sample)."""

    name: str
    values: dict[str, tuple]  # parameter name -> its values along this dimension
    kind: str = "values"  # "values", "zip" or "sample"

    @property
    def size(self) -> int:
        return len(next(iter(self.values.values())))

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(self.values)


@dataclass(frozen=True)
class Spec:
    """A checked sweep spec, with every swept dimension expanded to its values."""

    name: str
    model: str  # what resolves the model in any process (hpc.models.get_model): a name, /abs/file.py:ATTR, ...
    fixed: dict[str, Any]  # every non-swept parameter, defaults filled in
    axes: tuple[Axis, ...]
    shards: int
    batch_size: int
    precision: str
    resources: dict[str, int]
    # How the work is started, not what it computes: not part of the digest.
    mpi: bool = False
    cpu_devices: int = 0
    backend: str = "jax"
    dask: dict = field(default_factory=dict)
    text: str = ""  # the spec as written
    raw: dict = field(default_factory=dict)
    # Where the model comes from (hpc.models.loading.ModelRef); None: built in.
    model_ref: loading.ModelRef | None = None
    # An adaptive sweep (adaptive: instead of sweep:): its checked settings (hpc.sweep.adaptive); None: a grid.
    adaptive: dict | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(a.size for a in self.axes)

    @property
    def n_points(self) -> int:
        return math.prod(self.shape)

    @property
    def dims(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    def normalized(self) -> dict:
        """Everything that decides the store's contents, in a JSON-friendly form."""
        return {
            "name": self.name,
            # As written for a model not built in (its hash follows): a spec and its model moved together keep their digest.
            "model": self.model if self.model_ref is None or self.model_ref.builtin else self.model_ref.written,
            "fixed": self.fixed,
            "axes": [{"name": a.name, "kind": a.kind, "values": {k: list(v) for k, v in a.values.items()}} for a in self.axes],
            "shards": self.shards,
            "precision": self.precision,
            # A model not built in: its source's hash (and package version), not where it lies.
            **({"model_source": self.model_ref.digest_part()} if self.model_ref and not self.model_ref.builtin else {}),
            **({"adaptive": self.adaptive} if self.adaptive else {}),
        }

    def digest(self) -> str:
        """A hash of what the store holds; a store made from another digest is never mixed in."""
        return specfile.digest(self.normalized())


def check_schema(data: Any) -> None:
    """Raise one SpecError for the most relevant violation of the sweep schema, if any."""
    specfile.check_schema("sweep", data, {"sweep": DIMENSION_FORMS})


def load_spec(path: str | Path) -> Spec:
    """Read, check and expand the sweep spec at ``path`` (a model file's relative path is taken
    from the spec's folder)."""
    text, data = specfile.read_spec_file(path)
    return parse_spec(data, text=text, base=Path(path).resolve().parent)


def parse_spec(data: Any, text: str = "", base: str | Path | None = None) -> Spec:
    """Check the sweep spec ``data`` (as read from YAML) and expand it; one SpecError if it is wrong.

    ``base`` is the folder a relative model file is taken from (the spec file's; by default the
    working directory).
    """
    if not isinstance(data, dict):
        raise SpecError("(top level)", "a spec is a YAML mapping of keys (name, model, sweep, ...)")
    check_schema(data)
    full = specfile.with_defaults("sweep", data)  # every default the schema states
    model_ref, model = resolve_model(full["model"], base)
    fixed = model.defaults()
    for key, value in full["params"].items():
        param = _known_parameter(model, key, "params")
        fixed[key] = check_value(param, value, f"params.{key}")
    if "adaptive" in data:  # points chosen round by round (hpc.sweep.adaptive): no grid
        from hpc.sweep import adaptive

        settings = adaptive.check_settings(model, data, full)
        for pname in settings["box"]:
            fixed.pop(pname, None)
    else:
        settings = None

    axes = [_axis(model, key, entry) for key, entry in full["sweep"].items()]
    if "sample" in full:
        axes.append(_sample_axis(model, full["sample"]))
    _check_no_repeats(axes, full["params"])
    _check_store_names(model, axes)
    for axis in axes:
        for pname in axis.parameters:
            fixed.pop(pname, None)

    if not axes and settings is None:
        raise SpecError("sweep", "nothing is swept", "add a dimension under sweep (e.g. c: [10.0, 20.0]) or a sample block")
    n_points = settings["points_per_round"] if settings else math.prod(a.size for a in axes)
    if n_points > MAX_POINTS:
        raise SpecError("sweep", f"{n_points:,} points is more than the {MAX_POINTS:,} one sweep may hold",
                        "split it into several sweeps or sample the space (sample: {method: sobol, n: ...})")
    if "shards" in full:
        shards = full["shards"]
    elif "points_per_shard" in full:
        shards = math.ceil(n_points / full["points_per_shard"])
    else:
        shards = 1
    dask = full["dask"]
    if dask["lifetime_min"] >= dask["walltime_min"]:
        raise SpecError("dask.lifetime_min", "workers must retire before their walltime",
                        "make lifetime_min smaller than walltime_min")
    if dask["min_workers"] > dask["max_workers"]:
        raise SpecError("dask.min_workers", f"{dask['min_workers']} is more than max_workers ({dask['max_workers']})",
                        "make min_workers at most max_workers")
    if data.get("dask") and full["backend"] != "dask":
        raise SpecError("dask", "dask settings given but backend is not dask", "add backend: dask")
    if shards > n_points:
        raise SpecError("shards", f"{shards} shards for {n_points} points", f"use at most {n_points} shards")
    if not model_ref.builtin:
        first = {**fixed, **{p: values[0] for axis in axes for p, values in axis.values.items()},
                 **{p: lo for p, (lo, hi) in (settings or {}).get("box", {}).items()}}
        _probe(model, model_ref, first, full["precision"])
    return Spec(
        name=full["name"],
        model=model.name if model_ref.builtin else model_ref.ref,
        fixed=fixed,
        axes=tuple(axes),
        shards=shards,
        batch_size=full["batch_size"],
        precision=full["precision"],
        resources=full["resources"],
        mpi=full["mpi"],
        backend=full["backend"],
        dask=dask,
        cpu_devices=full["cpu_devices"],
        text=text,
        raw=data,
        model_ref=model_ref,
        adaptive=settings,
    )


_PROBED: dict[tuple, None] = {}


def _probe(model: Model, ref: loading.ModelRef, values: dict, precision: str) -> None:
    """``loading.check_solve`` once per model source, static values and precision in a process."""
    static = tuple((p.name, values[p.name]) for p in model.parameters if p.role != "dynamic")
    key = (ref.ref, ref.sha256, static, precision)
    if key not in _PROBED:
        loading.check_solve(model, values, precision, ref.written)
        _PROBED[key] = None


def _known_parameter(model: Model, name: str, where: str) -> Parameter:
    try:
        return model.parameter(name)
    except KeyError:
        raise SpecError(f"{where}", f"model {model.name!r} has no parameter {name!r}",
                        "its parameters: " + ", ".join(model.parameter_names)) from None


def check_value(param: Parameter, value: Any, key: str) -> Any:
    """``value`` converted to the parameter's kind, or a SpecError saying what is allowed."""
    if param.kind == "float":
        if isinstance(value, str):
            hint = "write it as a number; YAML reads 1e-6 as text, write 1.0e-6"
            raise SpecError(key, f"expected a number, got text {value!r}", hint)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(key, f"expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise SpecError(key, f"{value} is not a finite number")
    elif param.kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(key, f"expected an integer, got {value!r}")
    elif param.kind == "bool":
        if not isinstance(value, bool):
            raise SpecError(key, f"expected true or false, got {value!r}")
        return value
    elif param.kind == "choice":
        if value not in param.choices:
            raise SpecError(key, f"{value!r} is not allowed", "allowed: " + ", ".join(param.choices))
        return value
    lo, hi = param.bounds or (None, None)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise SpecError(key, f"{value} is out of bounds for {param.name}", f"allowed: [{lo_s}, {hi_s}]")
    return value


def _too_many(key: str, n: float) -> None:
    if n > MAX_POINTS:
        raise SpecError(key, f"{n:,.0f} values in one dimension", f"at most {MAX_POINTS:,} points per sweep")


def _check_finite(key: str, numbers: list) -> None:
    if not all(math.isfinite(x) for x in numbers):
        raise SpecError(key, f"{numbers} has a value that is not a finite number", "give finite numbers only")
    if not math.isfinite(numbers[1] - numbers[0]):
        raise SpecError(key, f"{numbers}: stop - start overflows", "give a narrower interval")


def expand_dimension(key: str, entry: Any) -> list:
    """The values of one swept dimension (list, linspace, logspace or range)."""
    if isinstance(entry, list):
        return list(entry)
    form = next(iter(entry))  # linspace, logspace or range (the schema allows one key)
    _check_finite(f"{key}.{form}", entry[form])
    if "linspace" in entry:
        start, stop, n = entry["linspace"]
        _too_many(key, n)
        return [float(x) for x in np.linspace(start, stop, n)]
    if "logspace" in entry:
        start, stop, n = entry["logspace"]
        _too_many(key, n)
        if start <= 0 or stop <= 0:
            raise SpecError(f"{key}.logspace", "start and stop must be positive",
                            "logspace: [start, stop, n] spaces n values geometrically from start to stop")
        return [float(x) for x in np.geomspace(start, stop, n)]
    start, stop, step = entry["range"]
    if step == 0 or (stop - start) / step <= 0:
        raise SpecError(f"{key}.range", f"range {entry['range']} is empty", "range: [start, stop, step], stop exclusive")
    n = math.ceil((stop - start) / step - 1e-9)
    _too_many(key, n)
    values = [start + i * step for i in range(n)]
    if all(isinstance(x, int) for x in (start, stop, step)):
        return [int(v) for v in values]
    return [float(v) for v in values]


def _checked_values(model: Model, pname: str, values: list, key: str) -> tuple:
    param = _known_parameter(model, pname, key)
    if param.role == "shape":
        raise SpecError(key, f"{pname} sets the shape of the model's outputs and cannot be swept",
                        f"fix it under params, or run one sweep per {pname}")
    checked = tuple(check_value(param, v, f"{key}[{i}]") for i, v in enumerate(values))
    if len(set(checked)) != len(checked):
        dup = next(v for v in checked if checked.count(v) > 1)
        raise SpecError(key, f"value {dup!r} appears more than once", "each value of a dimension must be distinct")
    return checked


def _axis(model: Model, key: str, entry: Any) -> Axis:
    where = f"sweep.{key}"
    if isinstance(entry, dict) and "zip" in entry:
        values = {p: _checked_values(model, p, list(v), f"{where}.zip.{p}") for p, v in entry["zip"].items()}
        lengths = {p: len(v) for p, v in values.items()}
        if len(set(lengths.values())) != 1:
            raise SpecError(f"{where}.zip", f"zipped lists differ in length: {lengths}", "zipped parameters vary together: give lists of one length")
        return Axis(key, values, "zip")
    values = expand_dimension(where, entry)
    return Axis(key, {key: _checked_values(model, key, values, where)})


def _sample_axis(model: Model, sample: dict) -> Axis:
    names = list(sample["ranges"])
    n = sample["n"]
    _too_many("sample.n", n)
    bounds = []
    for pname in names:
        param = _known_parameter(model, pname, f"sample.ranges.{pname}")
        if param.kind != "float" or param.role == "shape":
            raise SpecError(f"sample.ranges.{pname}", "only float parameters can be sampled", "parameters that set the output shape cannot vary")
        lo, hi = (check_value(param, v, f"sample.ranges.{pname}") for v in sample["ranges"][pname])
        if not lo < hi:
            raise SpecError(f"sample.ranges.{pname}", f"empty range [{lo}, {hi}]", "give [low, high] with low < high")
        if not math.isfinite(hi - lo):
            raise SpecError(f"sample.ranges.{pname}", f"[{lo}, {hi}]: high - low overflows", "give a narrower range")
        bounds.append((lo, hi))
    seed = sample["seed"]
    if sample["method"] == "sobol":
        from scipy.stats import qmc

        unit = qmc.Sobol(d=len(names), scramble=True, seed=seed).random(n)
    else:
        unit = np.random.default_rng(seed).random((n, len(names)))
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])
    points = lo + unit * (hi - lo)
    return Axis(SAMPLE_DIM, {p: tuple(float(x) for x in points[:, j]) for j, p in enumerate(names)}, "sample")


def _check_no_repeats(axes: list[Axis], fixed_in_spec: dict) -> None:
    seen: dict[str, str] = {}
    for axis in axes:
        for pname in axis.parameters:
            if pname in seen:
                raise SpecError(f"sweep.{axis.name}", f"{pname} is swept twice (also in {seen[pname]})", "sweep each parameter in one dimension")
            if pname in fixed_in_spec:
                raise SpecError(f"params.{pname}", f"{pname} is both fixed and swept", "remove it from params or from the sweep")
            seen[pname] = axis.name
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise SpecError("sample", "a dimension named 'sample' already exists", "rename it")


def store_names(model: Model, parameters: bool = True) -> dict[str, str]:
    """The names the store gives the model's parts (besides the sweep's dimensions), and what each is."""
    names = {name: "a status variable of the store" for name in STORE_VARIABLES}
    if parameters:
        names.update({p.name: f"a parameter of {model.name}" for p in model.parameters})
    names.update({o.name: f"an output of {model.name}" for o in model.outputs})
    names.update({d: f"a dimension of {model.name}'s outputs" for o in model.outputs for d in o.dims})
    return names


def _check_store_names(model: Model, axes: list[Axis]) -> None:
    """Every dimension, coordinate and variable of the store has a name of its own.

    A dimension of swept values is named after its parameter. A zipped or sampled dimension gets
    an index coordinate of its own name beside one coordinate per parameter: that name must not
    be a parameter's (its own parameters' included), nor an output's, a model dimension's or a
    status variable's.
    """
    for axis in axes:
        taken = store_names(model, parameters=axis.kind != "values")
        if axis.name in taken:
            where = "sample" if axis.kind == "sample" else f"sweep.{axis.name}"
            kind = {"values": "swept", "zip": "zipped", "sample": "sampled"}[axis.kind]
            raise SpecError(where, f"a {kind} dimension may not be named {axis.name!r}: that is {taken[axis.name]}",
                            "choose another name")
