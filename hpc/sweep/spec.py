"""Sweep specs: read the YAML a user writes, check it, and turn it into axes of parameter values.

Checks run in two steps, before anything is planned or submitted: the JSON schema
(hpc/core/schemas/sweep.schema.yaml) for the shape of the file, then the model for names, types
and bounds. Every mistake raises one SpecError naming the key and the fix.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml

from hpc.core import specfile
from hpc.core.errors import SpecError
from hpc.models import get_model
from hpc.models.base import Model, Parameter

MAX_POINTS = 10_000_000  # beyond this a sweep is refused: split it into several specs
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
SAMPLE_DIM = "sample"

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
    model: str
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
            "model": self.model,
            "fixed": self.fixed,
            "axes": [{"name": a.name, "kind": a.kind, "values": {k: list(v) for k, v in a.values.items()}} for a in self.axes],
            "shards": self.shards,
            "precision": self.precision,
        }

    def digest(self) -> str:
        """A hash of what the store holds; a store made from another digest is never mixed in."""
        return specfile.digest(self.normalized())


def _schema() -> dict:
    return specfile.schema("sweep")


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path)


def check_schema(data: Any) -> None:
    """Raise SpecError for the most relevant schema violation, if any."""
    validator = jsonschema.Draft202012Validator(_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is None:
        return
    key = _key_path(error)
    props = _schema().get("properties", {})
    if error.validator == "additionalProperties" and not error.absolute_path:
        unknown = sorted(set(data) - set(props))
        raise SpecError(unknown[0] if unknown else key, "unknown key", "allowed keys: " + ", ".join(props))
    if error.validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        raise SpecError(f"{key}.{extra[0]}" if extra else key, "unknown key", "allowed keys: " + ", ".join(allowed))
    if len(error.absolute_path) == 2 and error.absolute_path[0] == "sweep":
        raise SpecError(key, f"not a valid dimension: {error.instance!r}", DIMENSION_FORMS)
    if len(error.absolute_path) > 2 and error.absolute_path[0] == "sweep":
        raise SpecError(key, error.message, DIMENSION_FORMS)
    if error.validator == "not" and not error.absolute_path:
        raise SpecError("shards", "give either shards or points_per_shard, not both")
    if error.validator == "not" and key == "name":
        raise SpecError("name", f"{error.instance!r} is not a plain file name here",
                        "'.', '..' and '.jax-cache' (the compilation cache) are reserved")
    if error.validator == "pattern" and key == "name":
        raise SpecError("name", f"{error.instance!r} is not a plain file name", "use letters, digits, '_', '.', '-' only")
    if error.validator == "required":
        raise SpecError(key or "(top level)", error.message)
    if error.validator == "enum":
        raise SpecError(key, f"{error.instance!r} is not allowed", "allowed: " + ", ".join(map(str, error.validator_value)))
    raise SpecError(key or "(top level)", error.message)


SAFE_PATH_RE = re.compile(r"^[A-Za-z0-9_./+=@%:,-]+$")


def check_spec_path(path: str | Path, key: str = "sweep") -> None:
    """Refuse a spec path a shell would interpret.

    Snakemake hands ``--config`` values to the jobs it starts on their command lines, through a
    shell: a path such as ``x$(cmd).yaml`` would run ``cmd``. So only plain paths are allowed.
    """
    if not SAFE_PATH_RE.match(str(path)):
        raise SpecError(key, f"the path {str(path)!r} has characters a shell would interpret",
                        "move or rename the file: letters, digits and _ . / + = @ % : , - only")


def read_spec_file(path: str | Path) -> tuple[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SpecError("", f"spec file {str(path)!r} not found", "pass an existing YAML file")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError("", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", "fix the YAML syntax") from None
    return text, data


def load_spec(path: str | Path) -> Spec:
    """Read, check and expand the sweep spec at ``path``."""
    text, data = read_spec_file(path)
    return parse_spec(data, text=text)


def parse_spec(data: Any, text: str = "") -> Spec:
    if not isinstance(data, dict):
        raise SpecError("(top level)", "a spec is a YAML mapping of keys (name, model, sweep, ...)")
    check_schema(data)
    model = get_model(data["model"])
    fixed = model.defaults()
    for key, value in (data.get("params") or {}).items():
        param = _known_parameter(model, key, "params")
        fixed[key] = check_value(param, value, f"params.{key}")

    axes = [_axis(model, key, entry) for key, entry in (data.get("sweep") or {}).items()]
    if "sample" in data:
        axes.append(_sample_axis(model, data["sample"]))
    _check_no_repeats(axes, data.get("params") or {})
    for axis in axes:
        for pname in axis.parameters:
            fixed.pop(pname, None)

    n_points = math.prod(a.size for a in axes)
    if n_points > MAX_POINTS:
        raise SpecError("sweep", f"{n_points:,} points is more than the {MAX_POINTS:,} one sweep may hold",
                        "split it into several sweeps or sample the space (sample: {method: sobol, n: ...})")
    if "shards" in data:
        shards = data["shards"]
    elif "points_per_shard" in data:
        shards = math.ceil(n_points / data["points_per_shard"])
    else:
        shards = 1
    dask = data.get("dask") or {}
    if dask.get("lifetime_min", 25) >= dask.get("walltime_min", 30):
        raise SpecError("dask.lifetime_min", "workers must retire before their walltime",
                        "make lifetime_min smaller than walltime_min")
    if dask and data.get("backend", "jax") != "dask":
        raise SpecError("dask", "dask settings given but backend is not dask", "add backend: dask")
    if shards > n_points:
        raise SpecError("shards", f"{shards} shards for {n_points} points", f"use at most {n_points} shards")
    return Spec(
        name=data["name"],
        model=model.name,
        fixed=fixed,
        axes=tuple(axes),
        shards=shards,
        batch_size=data.get("batch_size", 256),
        precision=data.get("precision", "float32"),
        resources=dict(data.get("resources") or {}),
        mpi=data.get("mpi", False),
        backend=data.get("backend", "jax"),
        dask=dict(data.get("dask") or {}),
        cpu_devices=data.get("cpu_devices", 0),
        text=text,
        raw=data,
    )


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


def expand_dimension(key: str, entry: Any) -> list:
    """The values of one swept dimension (list, linspace, logspace or range)."""
    if isinstance(entry, list):
        return list(entry)
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
        if key in model.parameter_names and key not in values:
            raise SpecError(where, f"a zipped dimension may not be named after the parameter {key!r}", "choose another name")
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
        bounds.append((lo, hi))
    seed = sample.get("seed", 0)
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
