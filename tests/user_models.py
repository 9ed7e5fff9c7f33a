"""Model files as a user writes them, put in folders outside the repository by the tests."""

from __future__ import annotations

from pathlib import Path

# A small model of its own: y_k = a^2 (k + 1) on a 3-point dimension, plus the diagnostics.
TINY = '''
import jax.numpy as jnp
from hpc.models import DIAGNOSTICS, Model, Output, Parameter


def solve(dynamic, static):
    a = dynamic["a"]
    y = a ** 2 * jnp.arange(1, 4, dtype=static["dtype"])
    return {"y": y, "iterations": jnp.int32(1), "error": jnp.zeros((), static["dtype"]), "converged": jnp.bool_(True)}


MODEL = Model(
    name="tiny",
    doc="a squared times (k + 1)",
    parameters=(Parameter("a", "float", 1.0, bounds=(-10.0, 10.0)),),
    outputs=(Output("y", ("k",)), *DIAGNOSTICS),
    solve=solve,
    coords=lambda params: {"k": [0, 1, 2]},
)
'''

# McCall's model through a user's own file and Model object (its solve, so its numbers are the
# built-in model's): what the invariance tests run in several processes, on dask and on Slurm.
MCCALL = '''
from hpc.models import Model
from hpc.models import mccall

MODEL = Model(name="my-mccall", doc="McCall job search, from a user's file", parameters=mccall.MODEL.parameters,
              outputs=mccall.MODEL.outputs, solve=mccall.MODEL.solve, coords=mccall.MODEL.coords,
              dim_units=mccall.MODEL.dim_units)
'''


def write_model(folder: Path, source: str = TINY, filename: str = "my_model.py") -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    path.write_text(source)
    return path


def mccall_file_model(folder: Path) -> str:
    """``model:`` for McCall's model in a file in ``folder`` (an absolute path)."""
    return f"{write_model(folder, MCCALL, 'my_mccall.py')}:MODEL"
