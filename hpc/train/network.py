"""The networks (flax.linen): the MLP of the seed talks, a residual MLP, and a user's own module.

MLP:           f_θ = A_{m+1} ∘ σ ∘ A_m ∘ … ∘ σ ∘ A_1,     A_j x = W_j x + b_j
Residual MLP:  h_0 = A_0 x,  h_{j+1} = h_j + A''_j σ(A'_j LayerNorm(h_j)),  f_θ = A_out σ(h_m)

The skip connections keep gradients alive through deep stacks (the residual building block of
the third seed talk). Parameters are float32; ``dtype`` sets the compute dtype of the layers
(bfloat16 on GPUs), and the output is returned in float32.

A user's network (``network: {module: "path/to/file.py:ClassName" | "package.module:ClassName",
args: {...}}``) is a flax.linen Module class whose ``__call__`` maps (batch, features) to (batch,
outputs); ``args`` are its constructor's keyword arguments, and a constructor field named
``outputs`` (or ``out_features``, ``num_outputs``) receives the output count the data implies. A
flax.nnx Module class works too (through flax's linen bridge; parameters only, no batch
statistics): its constructor also gets ``in_features``, the data's feature count, and ``rngs``. A
file path is resolved against the training spec's folder. The network is imported as a model is
(hpc.models.loading.import_source): a file may import helper modules and packages of its own from
its folder, and the file's sha256 with its helpers' (or the package's version) is the network's
provenance, part of the spec's digest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from hpc.core.errors import SpecError
from hpc.models import loading

ACTIVATIONS = {
    "tanh": nn.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "softplus": nn.softplus,
    "elu": nn.elu,
}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class MLP(nn.Module):
    widths: Sequence[int]
    outputs: int
    activation: str = "tanh"
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x):
        act, dtype = ACTIVATIONS[self.activation], DTYPES[self.dtype]
        for width in self.widths:
            x = act(nn.Dense(width, dtype=dtype)(x))
        return nn.Dense(self.outputs, dtype=dtype)(x).astype(jnp.float32)


class ResidualMLP(nn.Module):
    width: int
    depth: int
    outputs: int
    activation: str = "gelu"
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x):
        act, dtype = ACTIVATIONS[self.activation], DTYPES[self.dtype]
        h = nn.Dense(self.width, dtype=dtype)(x)
        for _ in range(self.depth):
            z = nn.LayerNorm(dtype=dtype)(h)
            z = nn.Dense(self.width, dtype=dtype)(act(nn.Dense(self.width, dtype=dtype)(z)))
            h = h + z
        return nn.Dense(self.outputs, dtype=dtype)(act(h)).astype(jnp.float32)


OUTPUT_FIELDS = ("outputs", "out_features", "num_outputs")  # the output count goes to the first one a module has


def import_object(ref: str, base: Path | None, key: str):
    """The object ``ref`` names, ``path/to/file.py:ATTR`` (relative to ``base``) or
    ``package.module:ATTR``, imported as a model is (hpc.models.loading.import_source: a file's
    folder on sys.path while it runs, so it may import helpers beside it), with its provenance:
    {file, sha256, helpers (path relative to the file's folder: sha256; only where it has some)}
    for a file, {package, version (of its installed distribution, or None), sha256 (of the
    module's file)} for a module."""
    if not isinstance(ref, str) or ref.count(":") != 1 or not all(ref.split(":")):
        raise SpecError(key, f"{ref!r} is not FILE.py:NAME or package.module:NAME")
    module, source = loading.import_source(ref, base, key)
    if source.kind == "file":
        provenance = {"file": source.path, "sha256": source.sha256}
        if source.helpers:
            provenance["helpers"] = dict(source.helpers)
        where = Path(source.path).name
    else:
        # as for a model: the version of the distribution that installed it, and its file's hash
        # (an editable install keeps its version while its code changes)
        provenance = {"package": source.module, "version": source.version}
        if source.sha256:
            provenance["sha256"] = source.sha256
        where = source.module
    obj = module
    for part in source.attr.split("."):
        if not hasattr(obj, part):
            raise SpecError(key, f"{where} has no attribute {source.attr!r}")
        obj = getattr(obj, part)
    return obj, provenance


def _user_files(provenance: dict) -> set[str]:
    """The network's own files (its file and helpers), whose lines an error names first."""
    if "file" not in provenance:
        return set()
    folder = Path(provenance["file"]).parent
    return {provenance["file"], *(os.path.normpath(folder / rel) for rel in provenance.get("helpers") or {})}


INPUT_FIELDS = ("in_features",)  # an nnx module's constructor gets the data's feature count here


def _is_nnx(cls) -> bool:
    from flax import nnx

    return isinstance(cls, type) and issubclass(cls, nnx.Module)


def _module_fields(cls) -> set[str]:
    import dataclasses
    import inspect

    if _is_nnx(cls):  # its constructor's keyword arguments, less the random keys flax hands it
        return {n for n in list(inspect.signature(cls.__init__).parameters)[1:] if n != "rngs"}
    return {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()


def _instantiate(cls, kwargs: dict) -> nn.Module:
    """A linen module of ``cls`` with ``kwargs``; an nnx class through flax's linen bridge."""
    if _is_nnx(cls):
        from flax.nnx import bridge

        return bridge.ToLinen(cls, kwargs=kwargs)
    return cls(**kwargs)


def user_network(network: dict, outputs: int) -> nn.Module:
    """The user's module of a checked ``network`` section, built with its args (and ``outputs``)."""
    cls, _ = import_object(network["module"], Path(network["base"]) if network.get("base") else None,
                           "network.module")
    args = dict(network["args"])
    if network.get("outputs_field"):
        args[network["outputs_field"]] = outputs
    if network.get("inputs_field"):
        args[network["inputs_field"]] = network["features"]
    return _instantiate(cls, args)


def check_user_network(given: dict, base: Path | None, batch: int, features: int | None,
                       outputs: int | None) -> dict:
    """The checked ``network`` section of a user's module: imported, built with its args, and
    initialized and applied abstractly (jax.eval_shape) on a (batch, features) batch, whose output
    must be (batch, outputs) floats. ``features``/``outputs`` None: the data's shape is not known yet."""
    import jax

    ref = given["module"]
    cls, provenance = import_object(ref, base, "network.module")
    if not (isinstance(cls, type) and (issubclass(cls, nn.Module) or _is_nnx(cls))):
        raise SpecError("network.module", f"{ref} is not a flax.linen Module class ({type(cls).__name__})",
                        "subclass flax.linen.Module (or flax.nnx.Module) and define __call__(self, x)")
    args = dict(given.get("args", {}))
    fields = _module_fields(cls)
    outputs_field = next((f for f in OUTPUT_FIELDS if f in fields and f not in args), None)
    inputs_field = next((f for f in INPUT_FIELDS if f in fields and f not in args), None) if _is_nnx(cls) else None
    unknown = [a for a in args if a not in fields]
    if unknown:
        raise SpecError(f"network.args.{unknown[0]}", f"{cls.__name__} takes no argument {unknown[0]!r}",
                        "its fields: " + ", ".join(sorted(fields - {"parent", "name"})))
    checked = {"kind": "module", "module": ref, "args": args, "outputs_field": outputs_field,
               "provenance": provenance, "base": str(base) if base else None}
    if inputs_field:
        checked.update(inputs_field=inputs_field, features=features)
    if features is None or outputs is None:
        return checked
    try:
        module = _instantiate(cls, {**args, **({outputs_field: outputs} if outputs_field else {}),
                                    **({inputs_field: features} if inputs_field else {})})
        # Abstract throughout (the key too): no device is touched, so a job's processes can still
        # join jax.distributed after reading the spec.
        x = jax.ShapeDtypeStruct((batch, features), jnp.float32)
        variables = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), x)
        out = jax.eval_shape(module.apply, variables, x)
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError("network", f"{cls.__name__} fails on a ({batch}, {features}) batch: "
                        + loading.error_text(exc, _user_files(provenance))) from None
    if not hasattr(out, "shape") or tuple(out.shape) != (batch, outputs):
        shape = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
        raise SpecError("network", f"{cls.__name__} maps a ({batch}, {features}) batch to {shape}, "
                        f"not ({batch}, {outputs})",
                        "the data has %d outputs; " % outputs + ("it is passed as " + outputs_field if outputs_field
                                                                  else "give the module an 'outputs' field"))
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise SpecError("network", f"{cls.__name__} returns {out.dtype}, not floats")
    if "params" not in variables:
        raise SpecError("network", f"{cls.__name__} has no parameters to train")
    return checked


def build_network(network: dict, outputs: int) -> nn.Module:
    """The network a (checked) spec's ``network`` section describes, with ``outputs`` outputs."""
    if network["kind"] == "module":
        return user_network(network, outputs)
    if network["kind"] == "residual_mlp":
        return ResidualMLP(width=network["widths"][0], depth=len(network["widths"]), outputs=outputs,
                           activation=network["activation"], dtype=network["dtype"])
    return MLP(widths=tuple(network["widths"]), outputs=outputs, activation=network["activation"],
               dtype=network["dtype"])


def matmul_flops_per_sample(network: dict, features: int, outputs: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one forward pass; a training step costs about 3x."""
    if network["kind"] == "module":
        return 0  # unknown for a user's module
    widths = network["widths"]
    if network["kind"] == "residual_mlp":
        w = widths[0]
        macs = features * w + len(widths) * 2 * w * w + w * outputs
    else:
        dims = [features, *widths, outputs]
        macs = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    return 2 * macs
