"""Sweeps of training runs: a ``sweep:`` (and/or ``sample:``) block in a training spec.

The block takes the forms of a sweep spec's (lists, linspace, logspace, range, zip, sample) and is
parsed by the sweep spec's own code (hpc.sweep.spec: the schema of its entries, ``_axis``,
``_sample_axis``), over the training settings below instead of a model's parameters. A setting is
named by its place in the spec (``optimizer.learning_rate``) or by its last part where that is
unambiguous (``learning_rate``). The points are the product of the dimensions, in order (a zip or
sample dimension counts once); point ``i`` is an ordinary training run of the spec with that
point's values set, named ``NAME/points/pNNN`` (hpc.core.paths.train_point_name), so it writes to
results/NAME/points/pNNN/ and resumes from its own checkpoints.

Every point is checked at parse time as a training spec of its own (hpc.train.spec); a mistake
raises one SpecError naming the sweep key.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc.core import paths, specfile
from hpc.core.errors import SpecError
from hpc.models.base import Parameter
from hpc.sweep import spec as sweep_spec
from hpc.train.spec import TrainSpec, parse_train_spec

OPTIMIZERS = ("adam", "adamw", "sgd", "lion", "lamb")
ACTIVATIONS = ("tanh", "relu", "gelu", "silu", "softplus", "elu")
MAX_TRAIN_POINTS = 1000  # one Slurm job each
ARGS_PREFIX = "network.args."  # network.args.NAME: an argument of a user's module (network: {module: ...})

# place in the spec -> (kind, bounds or choices). Bounds are inclusive; the schema's exclusive ones
# (learning_rate > 0, holdout in (0, 1), ...) are checked on each point's spec.
SETTINGS: dict[str, tuple[str, Any]] = {
    "optimizer.learning_rate": ("float", (0.0, None)),
    "optimizer.weight_decay": ("float", (0.0, None)),
    "optimizer.momentum": ("float", (0.0, 1.0)),
    "optimizer.clip_norm": ("float", (0.0, None)),
    "optimizer.name": ("choice", OPTIMIZERS),
    "optimizer.schedule.kind": ("choice", ("constant", "cosine", "linear", "exponential")),
    "optimizer.schedule.warmup_steps": ("int", (0, None)),
    "optimizer.schedule.end_factor": ("float", (0.0, 1.0)),
    "network.kind": ("choice", ("mlp", "residual_mlp")),
    "network.width": ("int", (1, 1048576)),
    "network.depth": ("int", (1, 1000)),
    "network.activation": ("choice", ACTIVATIONS),
    "network.dtype": ("choice", ("float32", "bfloat16")),
    "data.holdout": ("float", (0.0, 1.0)),
    "batch_size": ("int", (1, None)),
    "steps": ("int", (1, 100000000)),
    "eval_every": ("int", (1, None)),
    "seed": ("int", (0, 4294967295)),
}


def _short_names() -> dict[str, str]:
    """Last parts of the settings' places that name one setting only (and no other key of the spec)."""
    last: dict[str, list[str]] = {}
    for place in _schema_places():
        last.setdefault(place.rsplit(".", 1)[-1], []).append(place)
    return {short: places[0] for short, places in last.items()
            if len(places) == 1 and places[0] in SETTINGS and short != places[0]}


def _schema_places(node: dict | None = None, prefix: str = "") -> list[str]:
    """Every key of the training schema, as a dotted place (data.holdout, resources.tasks, ...)."""
    node = specfile.schema("train") if node is None else node
    places = []
    for key, sub in (node.get("properties") or {}).items():
        if key in ("sweep", "sample"):
            continue
        place = f"{prefix}{key}"
        places.append(place)
        if isinstance(sub, dict) and sub.get("properties"):
            places += _schema_places(sub, place + ".")
    return places


class _Settings:
    """The sweepable settings in the shape hpc.sweep.spec expects of a model (name, parameter, parameter_names)."""

    name = "training spec"

    def __init__(self):
        self.aliases = _short_names()
        self.places = set(_schema_places())
        self._params = {}
        for place, (kind, extra) in SETTINGS.items():
            for name in (place, *[s for s, p in self.aliases.items() if p == place]):
                if kind == "choice":
                    self._params[name] = Parameter(name, "choice", extra[0], role="static", choices=extra)
                else:
                    self._params[name] = Parameter(name, kind, extra[0], bounds=extra)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(self._params)

    def place(self, name: str) -> str:
        return self.aliases.get(name, name)

    def parameter(self, name: str, key: str = "", values: list | None = None) -> Parameter:
        if name in self._params:
            return self._params[name]
        if key and name.startswith(ARGS_PREFIX) and len(name) > len(ARGS_PREFIX):
            # an argument of a user's module: its kind is that of the values given (the module's
            # constructor checks them on each point's spec)
            self._params[name] = _argument(name, key, values or [])
            return self._params[name]
        if key:  # a key the spec has but no sweep may vary, or no key at all
            listed = ", ".join(sorted(set(self.aliases) | (set(SETTINGS) - set(self.aliases.values())))) + \
                f", {ARGS_PREFIX}NAME (a user module's argument)"
            if name in self.places or any(p.rsplit(".", 1)[-1] == name for p in self.places):
                raise SpecError(key, f"{name} is not a sweepable training setting", "sweepable: " + listed)
            raise SpecError(key, f"unknown training setting {name!r}", "sweepable: " + listed)
        raise KeyError(name)


def _argument(name: str, key: str, values: list) -> Parameter:
    """A swept argument of a user's network module, of the kind its values share."""
    if values and all(isinstance(v, bool) for v in values):
        return Parameter(name, "bool", values[0], role="static")
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return Parameter(name, "int", values[0])
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return Parameter(name, "float", float(values[0]))
    if values and all(isinstance(v, str) for v in values):
        return Parameter(name, "choice", values[0], role="static", choices=tuple(values))
    raise SpecError(key, f"{values!r}: the values of a module argument are all numbers, all true/false or all text",
                    "sweep one kind of value per argument")


@dataclass(frozen=True)
class TrainSweep:
    """A checked sweep of training runs: its dimensions, and one checked TrainSpec per point."""

    name: str
    axes: tuple[sweep_spec.Axis, ...]
    points: tuple[dict, ...]  # per point: place -> value
    specs: tuple[TrainSpec, ...]  # per point, named NAME/points/pNNN
    path: str = ""

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(point_id(i) for i in range(len(self.points)))

    def spec(self, point: str) -> TrainSpec:
        try:
            return self.specs[self.ids.index(point)]
        except ValueError:
            raise SpecError("sweep", f"no point {point!r}", f"points: {self.ids[0]} .. {self.ids[-1]}") from None


def point_id(i: int) -> str:
    return f"p{i:03d}"


def is_sweep(data: Any) -> bool:
    return isinstance(data, dict) and ("sweep" in data or "sample" in data)


def _check_block_schema(block: dict, sample: dict | None) -> None:
    """The sweep spec's schema for the entries; the settings' dotted names are swapped for plain ones
    while it checks (a sweep spec's names have no dots) and swapped back in the error."""
    plain = {name: f"k{i}" for i, name in enumerate(
        [*block, *[p for e in block.values() if isinstance(e, dict) for p in (e.get("zip") or {})],
         *((sample or {}).get("ranges") or {})])}
    back = {v: k for k, v in plain.items()}

    def swap(entry):
        if isinstance(entry, dict) and isinstance(entry.get("zip"), dict):
            return {**entry, "zip": {plain[p]: v for p, v in entry["zip"].items()}}
        return entry

    doc = {"name": "x", "model": "x", "sweep": {plain[k]: swap(v) for k, v in block.items()}}
    if sample is not None:
        doc["sample"] = ({**sample, "ranges": {plain[p]: v for p, v in sample["ranges"].items()}}
                         if isinstance(sample.get("ranges"), dict) else sample)
    try:
        specfile.check_schema("sweep", doc, {"sweep": sweep_spec.DIMENSION_FORMS})
    except SpecError as exc:
        key = ".".join(back.get(part, part) for part in exc.key.split("."))
        raise SpecError(key, exc.problem, exc.hint) from None


def parse_train_sweep(data: dict, text: str = "", path: Path | None = None) -> TrainSweep:
    """Check a training spec with a sweep block and expand it into one checked TrainSpec per point."""
    base = {k: v for k, v in data.items() if k not in ("sweep", "sample")}
    block = data.get("sweep", {})
    sample = data.get("sample")
    if not isinstance(block, dict):
        raise SpecError("sweep", f"expected a mapping of settings to values, got {block!r}", sweep_spec.DIMENSION_FORMS)
    if sample is not None and not isinstance(sample, dict):
        raise SpecError("sample", f"expected {{method, n, ranges}}, got {sample!r}")
    _check_block_schema(block, sample)
    settings = _Settings()
    for key, entry in block.items():  # names first, with the training spec's words
        zipped = entry["zip"] if isinstance(entry, dict) and "zip" in entry else None
        for name in zipped or [key]:
            where = f"sweep.{key}.zip.{name}" if zipped else f"sweep.{key}"
            values = zipped[name] if zipped else entry if isinstance(entry, list) else None
            if values is None:  # linspace, logspace, range: numbers
                values = sweep_spec.expand_dimension(where, entry)
            settings.parameter(name, where, values)
    for name in (sample or {}).get("ranges", {}):
        settings.parameter(name, f"sample.ranges.{name}")
    axes = [sweep_spec._axis(settings, key, entry) for key, entry in block.items()]
    if sample is not None:
        axes.append(sweep_spec._sample_axis(settings, specfile.fill_defaults(specfile.subschema("sweep", "sample"), sample)))
    if not axes:
        raise SpecError("sweep", "nothing is swept", "add a setting under sweep (e.g. learning_rate: [1.0e-3, 3.0e-3])")
    seen: dict[str, str] = {}
    for axis in axes:
        where = "sample" if axis.kind == "sample" else f"sweep.{axis.name}"
        for name in axis.parameters:
            place = settings.place(name)
            if place in seen:
                raise SpecError(where, f"{place} is swept twice (also in {seen[place]})", "sweep each setting in one dimension")
            if _get(base, place) is not None:
                raise SpecError(where, f"{place} is both set and swept", f"remove {place} from the spec or from the sweep")
            seen[place] = where
    n = 1
    for axis in axes:
        n *= axis.size
    if n > MAX_TRAIN_POINTS:
        raise SpecError("sweep", f"{n:,} training runs is more than the {MAX_TRAIN_POINTS:,} one sweep may hold",
                        "sweep fewer values, or sample the space (sample: {method: sobol, n: ...})")
    points, specs = [], []
    for i, index in enumerate(itertools.product(*[range(a.size) for a in axes])):
        point = {settings.place(p): axis.values[p][j] for axis, j in zip(axes, index) for p in axis.parameters}
        raw = copy.deepcopy(base)
        for place, value in point.items():
            _set(raw, place, value)
        try:
            spec = parse_train_spec(raw, text=text, path=path)
        except SpecError as exc:
            where = next((seen[p] for p in point if exc.key == p or exc.key.startswith(p + ".")), "") or \
                next((seen[p] for p in point if p.startswith(exc.key + ".")), "")
            shown = ", ".join(f"{p}={v}" for p, v in point.items())
            raise SpecError(where or exc.key, f"point {point_id(i)} ({shown}): {exc.one_line()}") from None
        points.append(point)
        specs.append(dataclasses.replace(spec, name=paths.train_point_name(spec.name, point_id(i)), raw=data))
    return TrainSweep(name=base.get("name", ""), axes=tuple(axes), points=tuple(points), specs=tuple(specs),
                      path=str(path) if path else "")


def _get(data: dict, place: str) -> Any:
    node: Any = data
    for part in place.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(data: dict, place: str, value: Any) -> None:
    *parents, last = place.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _plain(value: Any) -> Any:
    """A setting's value as JSON writes it (a numpy scalar as its Python number)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def points_record(sweep: TrainSweep) -> dict:
    """What hpc status and hpc report read of a sweep of training runs: its points, each one's run
    name, digest (a completion marker of another digest is not this point's), steps and settings."""
    points = [{"point": point, "name": spec.name, "digest": spec.digest(), "steps": spec.steps,
               "settings": {k: _plain(v) for k, v in settings.items()}}
              for point, settings, spec in zip(sweep.ids, sweep.points, sweep.specs)]
    return {"kind": "train_sweep", "name": sweep.name,
            "spec_file": str(Path(sweep.path).resolve()) if sweep.path else "",
            "digest": specfile.digest({"points": [p["digest"] for p in points]}), "points": points}


def write_points(sweep: TrainSweep, path: str | Path | None = None) -> Path:
    """Record the sweep's points at ``path`` (default results/NAME/train-sweep.json; the workflow's
    train_sweep_points rule writes it before any point trains)."""
    import json

    from hpc.core.files import write_atomic

    path = Path(path) if path else paths.train_sweep_path(sweep.name)
    write_atomic(path, json.dumps(points_record(sweep), indent=1))
    return path


def read_points(name: str, root: Path | None = None) -> dict | None:
    """The record write_points left for sweep ``name`` under ``root``; None when there is none."""
    import json

    path = paths.train_sweep_path(name, root)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise SpecError("name", f"cannot read {path}: {exc}", "rerun the workflow to write it again") from None
    return record if isinstance(record, dict) and record.get("kind") == "train_sweep" else None


def load_train_sweep(path: str | Path) -> TrainSweep:
    text, data = specfile.read_spec_file(path)
    return parse_train_sweep(data, text=text, path=Path(path))


def load_train_point(path: str | Path, point: str) -> TrainSpec:
    """The training spec of one point of the sweep at ``path`` (what ``hpc train run --point`` trains)."""
    return load_train_sweep(path).spec(point)


def load_train_spec_or_sweep(path: str | Path) -> tuple[TrainSpec, TrainSweep | None]:
    """A training spec, or a sweep of them: (the spec, None) or (the first point's spec, the sweep)."""
    from hpc.train.spec import load_train_spec

    if is_sweep(specfile.read_spec_file(path)[1]):
        sweep = load_train_sweep(path)
        return sweep.specs[0], sweep
    return load_train_spec(path), None
