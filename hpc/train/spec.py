"""Training specs: read the YAML a user writes, check it, and fill in the defaults.

Checks run before anything is submitted: the JSON schema (hpc/core/schemas/train.schema.yaml)
for the shape of the file, then the names (the sweep spec it trains on, its model's outputs and
parameters), then the layout (the global batch over the devices). Every mistake raises one
SpecError naming the key and the fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc.core import checkout, specfile
from hpc.core.errors import SpecError
from hpc.models import get_model
from hpc.sweep.spec import Spec, load_spec

DATA_FORMS = ("data is {sweep: FILE, inputs: [...], target: OUTPUT}, {zarr: STORE, inputs: [...], target: VARIABLE} "
              "or {synthetic: {samples: N}}")
NETWORK_KEYS = ("kind", "width", "depth", "widths", "activation", "dtype")  # of the built-in networks


@dataclass(frozen=True)
class DataSpec:
    """What the network learns: a sweep's store, a user's Zarr store, or a synthetic data set."""

    kind: str  # "sweep", "zarr" or "synthetic"
    holdout: float
    sweep_file: str | None = None  # resolved path of the sweep spec
    sweep: Spec | None = None
    inputs: tuple[str, ...] = ()
    target: str | None = None
    synthetic: dict | None = None  # samples, features, outputs, noise, seed
    features: int | None = None  # the network's inputs and outputs, where known before the data is read
    outputs: int | None = None
    zarr: str | None = None  # resolved path of a user's store
    store: dict | None = None  # its layout (hpc.train.zarrdata.inspect_store)
    stream: bool = False  # read the training rows from the store step by step

    def normalized(self) -> dict:
        if self.kind == "synthetic":
            return {"synthetic": self.synthetic, "holdout": self.holdout}
        if self.kind == "zarr":
            return {"zarr": self.zarr, "dim": self.store["dim"], "rows": self.store["rows"],
                    "chunk": self.store["chunk"], "inputs": list(self.inputs), "target": self.target,
                    "holdout": self.holdout}
        return {"sweep_digest": self.sweep.digest(), "sweep_name": self.sweep.name, "inputs": list(self.inputs),
                "target": self.target, "holdout": self.holdout}


@dataclass(frozen=True)
class TrainSpec:
    """A checked training spec with its defaults filled in."""

    name: str
    data: DataSpec
    network: dict  # kind, widths, activation, dtype
    optimizer: dict  # name, learning_rate, weight_decay, momentum, clip_norm, schedule
    batch_size: int
    steps: int
    eval_every: int
    seed: int
    checkpoint_every: int
    keep_checkpoints: int
    shard_params: bool
    cpu_devices: int
    resources: dict
    path: str = ""  # the spec file
    text: str = ""  # the spec as written
    raw: dict = field(default_factory=dict)

    @property
    def sweep_file(self) -> str | None:
        return self.data.sweep_file

    @property
    def tasks(self) -> int:
        return int(self.resources.get("tasks", 1))

    def normalized(self) -> dict:
        """Everything that decides the trained parameters and the metrics (not where they ran)."""
        return {
            "name": self.name,
            "data": self.data.normalized(),
            "network": network_identity(self.network),
            "optimizer": self.optimizer,
            "batch_size": self.batch_size,
            "steps": self.steps,
            "eval_every": self.eval_every,
            "seed": self.seed,
            "shard_params": self.shard_params,
        }

    def as_dict(self) -> dict:
        """The whole checked spec, defaults filled in: what it computes and where it runs."""
        return {**self.normalized(), "checkpoint_every": self.checkpoint_every,
                "keep_checkpoints": self.keep_checkpoints, "cpu_devices": self.cpu_devices,
                "resources": self.resources, "sweep_file": self.data.sweep_file}

    def summary(self) -> str:
        """One line: the network, the steps and the data (for ``hpc train validate``)."""
        net = self.network
        if net["kind"] == "module":
            prov = net["provenance"]
            source = f"sha256 {prov['sha256'][:12]}" if "sha256" in prov else f"version {prov.get('version')}"
            network = f"module {net['module']} ({source})"
        else:
            network = f"{net['kind']} {net['widths']}"
        if self.data.kind == "zarr":
            store = self.data.store
            data = (f"{self.data.zarr} ({store['train_rows']} training rows, {store['heldout_rows']} held out"
                    + (", streamed" if self.data.stream else "") + ")")
        else:
            data = self.data.sweep_file or f"{self.data.synthetic['samples']} synthetic samples"
        return f"{network}, {self.steps} steps of {self.batch_size}, data {data}, digest {self.digest()}"

    def digest(self) -> str:
        """A hash of what the run computes; checkpoints of another digest are never resumed."""
        return specfile.digest(self.normalized())

    def devices(self) -> int | None:
        """Devices of the job in all, where the spec decides it (CPU processes, or one per GPU)."""
        gpus = self.resources.get("gpus", 0)
        if gpus:
            return gpus
        return self.tasks * max(1, self.cpu_devices)


def network_identity(network: dict) -> dict:
    """What decides a network: for a user's module its reference, args and source hash (or package
    version), not where the file lies."""
    if network.get("kind") != "module":
        return network
    provenance = {k: v for k, v in network["provenance"].items() if k != "file"}
    return {"module": network["module"], "args": network["args"], "provenance": provenance}


def check_schema(data: Any) -> None:
    """Raise one SpecError for the most relevant violation of the training schema, if any."""
    specfile.check_schema("train", data)


def _checkout() -> Path | None:
    """The source checkout this package runs from (its example specs), or None where it is installed."""
    root = checkout.package_root()
    return root if (root / "Snakefile").is_file() and (root / "workflow").is_dir() else None


def resolve_sweep_file(value: str, spec_path: Path | None) -> Path:
    """A sweep spec named in a training spec: as given, else beside the training spec, else (when run
    from a source checkout) in the checkout, where the examples name workflow/train/sweeps/...."""
    path = Path(value)
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [Path.cwd() / path]
        if spec_path is not None:
            candidates.append(spec_path.resolve().parent / path)
        repo = _checkout()
        if repo is not None:
            candidates.append(repo / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SpecError("data.sweep", f"sweep spec {value!r} not found",
                    "looked in " + ", ".join(str(c.parent) for c in candidates))


def load_train_spec(path: str | Path) -> TrainSpec:
    """Read, check and complete the training spec at ``path`` (and the sweep spec it names)."""
    text, data = specfile.read_spec_file(path)
    return parse_train_spec(data, text=text, path=Path(path))


def parse_train_spec(data: Any, text: str = "", path: Path | None = None) -> TrainSpec:
    """Check the training spec ``data`` (as read from YAML) and complete it; one SpecError if it is wrong."""
    if not isinstance(data, dict):
        raise SpecError("(top level)", "a training spec is a YAML mapping of keys (name, data, network, ...)")
    check_schema(data)
    if "sweep" in data or "sample" in data:
        raise SpecError("sweep" if "sweep" in data else "sample", "this spec is a sweep of training runs, one per point",
                        "read it with hpc.train.sweep.load_train_sweep; hpc train run SPEC --point p000 trains one point")
    full = specfile.with_defaults("train", data)  # every default the schema states
    steps = full["steps"]
    resources = full["resources"]
    if resources.get("tasks", 1) < resources.get("nodes", 1):
        raise SpecError("resources.tasks", f"{resources.get('tasks', 1)} tasks on {resources['nodes']} nodes",
                        "give at least one task (process) per node")
    data_spec = _data(data["data"], full["data"], full["name"], path, full["seed"], resources)
    if data_spec.kind == "zarr" and data_spec.store["train_rows"] < full["batch_size"]:
        raise SpecError("batch_size", f"a global batch of {full['batch_size']} is more than the data set's "
                        f"{data_spec.store['train_rows']} training rows", "use a smaller batch or more data")
    spec = TrainSpec(
        name=full["name"],
        data=data_spec,
        network=_network(data["network"], full["network"], path, full["batch_size"], data_spec),
        optimizer=_optimizer(data["optimizer"], full["optimizer"], steps),
        batch_size=full["batch_size"],
        steps=steps,
        eval_every=full.get("eval_every", max(1, steps // 10)),  # defaults that depend on steps
        seed=full["seed"],
        checkpoint_every=full.get("checkpoint_every", max(1, steps // 4)),
        keep_checkpoints=full["keep_checkpoints"],
        shard_params=full["shard_params"],
        cpu_devices=full["cpu_devices"],
        resources=resources,
        path=str(path) if path else "",
        text=text,
        raw=data,
    )
    if spec.eval_every > steps:
        raise SpecError("eval_every", f"{spec.eval_every} is more than the {steps} steps", f"use at most {steps}")
    devices = spec.devices()
    if devices and spec.batch_size % devices:
        raise SpecError("batch_size", f"a global batch of {spec.batch_size} does not split over {devices} devices",
                        f"use a multiple of {devices} (tasks x cpu_devices, or gpus)")
    return spec


def _data(given: dict, data: dict, name: str, path: Path | None, seed: int, resources: dict) -> DataSpec:
    """The data section: ``given`` as written, ``data`` with its defaults."""
    holdout = data["holdout"]
    sweep_keys = [k for k in ("sweep", "inputs", "target") if k in given]
    for key in ("dim", "stream"):
        if key in given and "zarr" not in given:
            raise SpecError(f"data.{key}", "is for a zarr data set", DATA_FORMS)
    if "zarr" in given:
        return _zarr_data(given, data, path, seed, resources)
    if "synthetic" in given:
        if sweep_keys:
            raise SpecError(f"data.{sweep_keys[0]}", "a synthetic data set takes no sweep, inputs or target", DATA_FORMS)
        syn = data["synthetic"]
        held = round(syn["samples"] * holdout)
        if held < 1 or held >= syn["samples"]:
            raise SpecError("data.holdout", f"holds out {held} of {syn['samples']} samples",
                            "keep at least one sample for training and one held out")
        return DataSpec("synthetic", holdout, synthetic=syn, features=syn["features"], outputs=syn["outputs"])
    missing = [k for k in ("sweep", "inputs", "target") if k not in data]
    if missing:
        raise SpecError(f"data.{missing[0]}" if sweep_keys else "data", "missing", DATA_FORMS)

    sweep_file = resolve_sweep_file(data["sweep"], path)
    try:
        sweep = load_spec(sweep_file)
    except SpecError as exc:
        raise SpecError("data.sweep", f"bad sweep spec {sweep_file}: {exc}") from None
    if sweep.name == name:
        raise SpecError("name", f"the training run and its sweep are both named {name!r}",
                        "give the training run its own name (both write to results/<name>/)")
    model = get_model(sweep.model)
    outputs = {o.name: o for o in model.outputs}
    target = data["target"]
    float_outputs = [o.name for o in model.outputs if o.dtype == "float" and o.name != "error"]
    if target not in outputs or outputs[target].dtype != "float":
        raise SpecError("data.target", f"{target!r} is not a float output of model {model.name!r}",
                        "its outputs: " + ", ".join(float_outputs))
    model_dims = outputs[target].dims
    swept = [p for axis in sweep.axes for p in axis.parameters]
    for i, name_ in enumerate(data["inputs"]):
        if name_ in swept or name_ in model_dims:
            if name_ in swept and model.parameter(name_).kind == "choice":
                raise SpecError(f"data.inputs[{i}]", f"{name_} takes names, not numbers", "sweep it in separate runs")
            continue
        if name_ in model.parameter_names:
            raise SpecError(f"data.inputs[{i}]", f"{name_} is not swept in {sweep_file.name} (it is the same at every point)",
                            "inputs are swept parameters (" + ", ".join(swept) + ") or dimensions of the target ("
                            + ", ".join(model_dims) + ")")
        raise SpecError(f"data.inputs[{i}]", f"{name_!r} is neither a swept parameter nor a dimension of {target}",
                        "choose among " + ", ".join([*swept, *model_dims]))
    left_out = [p for p in swept if p not in data["inputs"]]
    if left_out:
        raise SpecError("data.inputs", f"the sweep varies {left_out[0]} but it is not an input",
                        f"add {left_out[0]} to inputs: otherwise one input has several targets")
    n_points = sweep.n_points
    held = round(n_points * holdout)
    if held < 1 or held >= n_points:
        raise SpecError("data.holdout", f"holds out {held} of the sweep's {n_points} points",
                        "keep at least one point for training and one held out")
    return DataSpec("sweep", holdout, sweep_file=str(sweep_file), sweep=sweep, inputs=tuple(data["inputs"]),
                    target=target, features=len(data["inputs"]),
                    outputs=_sweep_outputs(model, sweep, [d for d in model_dims if d not in data["inputs"]]))


def _sweep_outputs(model, sweep: Spec, out_dims: list[str]) -> int | None:
    """The network's outputs on a sweep's store: the sizes of the target's model dimensions that are
    not inputs (from the model's coords at the sweep's fixed values); None where they cannot be had."""
    if not out_dims:
        return 1
    try:
        coords = model.coords({**model.defaults(), **sweep.fixed})
        return math.prod(len(coords[d]) for d in out_dims)
    except Exception:
        return None


def _zarr_data(given: dict, data: dict, path: Path | None, seed: int, resources: dict) -> DataSpec:
    """A user's Zarr store: its variables checked (hpc.train.zarrdata), its blocks cut."""
    from hpc.train import zarrdata

    for key in ("sweep", "synthetic"):
        if key in given:
            raise SpecError(f"data.{key}", "a zarr data set takes no sweep or synthetic", DATA_FORMS)
    for key in ("inputs", "target"):
        if key not in given:
            raise SpecError(f"data.{key}", "missing", zarrdata.FORMS)
    store = Path(given["zarr"])
    if not store.is_absolute():
        store = (path.resolve().parent if path is not None else Path.cwd()) / store
    info = zarrdata.inspect_store(store.resolve(), list(given["inputs"]), given["target"], given.get("dim"))
    blocks = zarrdata.cut_blocks(info["rows"], info["chunk"], data["holdout"], seed)
    if info["rows"] * info["bytes_per_row"] <= zarrdata.CHECK_AT_PARSE_BYTES:  # else the job checks, before training
        zarrdata.StoreRows(store.resolve(), list(given["inputs"]), given["target"], blocks).statistics()
    info = {**info, "train_rows": blocks.n_train, "heldout_rows": blocks.heldout_rows(), "block_rows": blocks.size}
    stream = zarrdata.choose_stream(data["stream"], info, blocks, resources.get("mem_mb"))
    return DataSpec("zarr", data["holdout"], inputs=tuple(given["inputs"]), target=given["target"],
                    features=sum(info["columns"].values()), outputs=info["outputs"], zarr=str(store.resolve()),
                    store=info, stream=stream)


def _network(given: dict, net: dict, path: Path | None, batch_size: int, data: DataSpec) -> dict:
    """The network section: ``given`` as written, ``net`` with its defaults."""
    if "module" in given:
        from hpc.train.network import check_user_network

        mixed = [k for k in NETWORK_KEYS if k in given]
        if mixed:
            raise SpecError(f"network.{mixed[0]}", "is for the built-in networks",
                            "a module takes its settings in network.args")
        base = path.resolve().parent if path is not None else None
        return check_user_network(given, base, batch_size, data.features, data.outputs)
    if "args" in given:
        raise SpecError("network.args", "args are for a user's module", "give network.module too")
    kind = net["kind"]
    if "widths" in given:
        if kind != "mlp":
            raise SpecError("network.widths", "widths are for an mlp", "a residual_mlp takes width and depth")
        for key in ("width", "depth"):
            if key in given:
                raise SpecError(f"network.{key}", "give widths, or width and depth, not both")
        widths = list(net["widths"])
    else:
        widths = [net["width"]] * net["depth"]
    return {"kind": kind, "widths": widths, "activation": net["activation"], "dtype": net["dtype"]}


def _optimizer(given: dict, opt: dict, steps: int) -> dict:
    """The optimizer section: ``given`` as written, ``opt`` with its defaults."""
    name = opt["name"]
    if "momentum" in given and name != "sgd":
        raise SpecError("optimizer.momentum", f"{name} takes no momentum", "momentum is for sgd")
    if opt["weight_decay"] and name in ("adam", "sgd"):
        raise SpecError("optimizer.weight_decay", f"{name} takes no weight decay", "use adamw (decoupled decay)")
    schedule = opt["schedule"]
    if schedule["warmup_steps"] >= steps:
        raise SpecError("optimizer.schedule.warmup_steps", f"{schedule['warmup_steps']} warm-up steps of {steps}",
                        "warm up for fewer steps than the run has")
    out = {"name": name, "learning_rate": float(opt["learning_rate"]), "weight_decay": float(opt["weight_decay"]),
           "momentum": opt.get("momentum"), "clip_norm": opt.get("clip_norm"), "schedule": schedule}
    if not math.isfinite(out["learning_rate"]):
        raise SpecError("optimizer.learning_rate", "not a finite number")
    return out
