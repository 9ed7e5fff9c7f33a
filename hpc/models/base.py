"""What a model declares: its parameters, its outputs and a pure JAX solve.

A model knows nothing of Snakemake, Slurm or Zarr. The runner (hpc/runner.py) applies
``jit`` and ``vmap`` at the edge: ``solve`` is written for one parameter point.

Parameter roles
---------------
- ``dynamic``: a traced scalar, vmapped over the points of a shard (e.g. ``beta``).
- ``static``: a hashable Python value passed at trace time (e.g. ``planner``, the shock
  calibration, simulation length). It may be swept: the runner groups a shard's points by
  their static values and compiles once per group.
- ``shape``: static and decides the shape of some output (e.g. the number of grid points).
  It cannot be swept, since every point of the store must have the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

ROLES = ("dynamic", "static", "shape")
KINDS = ("float", "int", "bool", "choice")


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: str  # one of KINDS
    default: Any
    role: str = "dynamic"
    bounds: tuple[float, float] | None = None  # inclusive (lo, hi); None side is open
    choices: tuple[str, ...] | None = None  # for kind == "choice"
    doc: str = ""
    unit: str = ""

    def __post_init__(self):
        assert self.kind in KINDS, self.kind
        assert self.role in ROLES, self.role
        if self.kind == "choice":
            assert self.choices and self.default in self.choices
        if self.kind in ("bool", "choice"):
            # Non-numeric values cannot be traced through vmap.
            assert self.role != "dynamic", f"{self.name}: {self.kind} parameters must be static"


@dataclass(frozen=True)
class Output:
    name: str
    dims: tuple[str, ...] = ()  # model dimensions beyond the sweep dimensions
    dtype: str = "float"  # "float" (follows the sweep's precision), "int" (int32) or "bool"
    doc: str = ""
    unit: str = ""


@dataclass(frozen=True)
class ReportTable:
    """A table a model adds to the report: a title, column headings, rows of values and a caption.

    Cells are plain values (numbers, text, None for an empty cell); the report formats and
    escapes them. A model imports nothing about HTML.
    """

    title: str
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass(frozen=True)
class Model:
    """A registered model.

    ``solve(dynamic, static)`` takes ``dynamic``, a mapping of parameter name to a 0-d JAX array
    (already cast to the sweep's float dtype, or int32), and ``static``, a mapping of the static and
    shape parameters to Python values plus ``"dtype"`` (``jnp.float32`` or ``jnp.float64``). It
    returns a mapping of every declared output name to an array of shape ``[len(coords[d]) for d
    in output.dims]``. It must be pure and traceable (no Python control flow on traced values).

    ``coords(static)`` gives the coordinate values of every model dimension used by the outputs.
    It may depend on ``shape`` parameters only: they are the same at every point of a sweep, so
    one coordinate serves the whole store (a grid bound that moves the grid is a shape parameter).
    A model whose outputs are all scalars may leave it out (no model dimensions).

    Every model returns the diagnostics ``iterations`` (int), ``error`` (float) and
    ``converged`` (bool) among its outputs.

    ``report_section(ds)``, optional, adds the model's own section to the report: given the store
    as an xarray Dataset, it returns a ReportTable, a sequence of them, or None (nothing to add).
    Returning data is the way now; a str is still taken, as an HTML fragment put in the page as it
    is (the model must escape what it interpolates), so that older models keep working.
    """

    name: str
    doc: str
    parameters: tuple[Parameter, ...]
    outputs: tuple[Output, ...]
    solve: Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any]]
    coords: Callable[[Mapping[str, Any]], Mapping[str, np.ndarray]] | None = None  # None: no model dimensions
    # Optional extra section for the report: (store as xarray.Dataset) -> table(s); see above.
    report_section: Callable[[Any], ReportTable | Sequence[ReportTable] | str | None] | None = None
    dim_units: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.coords is None:
            object.__setattr__(self, "coords", no_model_dimensions)

    def parameter(self, name: str) -> Parameter:
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.parameters}

    def static_defaults(self, dtype, **overrides) -> dict[str, Any]:
        """``solve``'s static argument at the defaults, with ``dtype`` and any ``overrides``."""
        return {**{p.name: p.default for p in self.parameters if p.role != "dynamic"}, "dtype": dtype, **overrides}

    def dynamic_defaults(self, dtype, **overrides) -> dict[str, Any]:
        """``solve``'s dynamic argument at the defaults (and ``overrides``), as ``dtype`` arrays."""
        import jax.numpy as jnp

        values = {**{p.name: p.default for p in self.parameters if p.role == "dynamic"}, **overrides}
        return {name: jnp.asarray(value, dtype) for name, value in values.items()}


def no_model_dimensions(params: Mapping[str, Any]) -> dict:
    """The coordinates of a model whose outputs are all scalars: none."""
    return {}


DIAGNOSTICS = (
    Output("iterations", (), "int", "iterations of the solver until it stopped"),
    Output("error", (), "float", "sup-norm change at the last iteration (relative where the model says so)"),
    Output("converged", (), "bool", "the solver met its tolerance within its iteration cap"),
)
