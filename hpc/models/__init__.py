"""The model interface and the registry: models by name, by file, by module or by entry point.

``get_model`` is the one way every stage loads a model (hpc.models.loading says how each form
resolves); the built-in models are imported on first use.
"""

from __future__ import annotations

from typing import Any, Mapping

from hpc.models.base import DIAGNOSTICS, Model, Output, Parameter, ReportTable

__all__ = ["Model", "Output", "Parameter", "ReportTable", "DIAGNOSTICS", "get_model", "model_names",
           "resolve_model"]

# The built-in models: name -> module holding MODEL.
_MODULES = {
    "arellano": "hpc.models.arellano",
    "bianchi": "hpc.models.bianchi",
    "mccall": "hpc.models.mccall",
    "synthetic": "hpc.models.synthetic",
}


def model_names() -> tuple[str, ...]:
    """The built-in models' names."""
    return tuple(sorted(_MODULES))


def get_model(name: str, source: Mapping[str, Any] | None = None) -> Model:
    """The model ``name`` refers to: a built-in name, an absolute ``/path/file.py:ATTR``,
    ``package.module:ATTR`` or an entry-point name; a SpecError naming the known ones otherwise.
    With ``source`` (the provenance recorded when the sweep was planned), a model file whose
    sha256 changed since is refused."""
    from hpc.models import loading

    return loading.load(name, source)


def resolve_model(written: str, base=None):
    """(``ModelRef``, ``Model``) for ``model:`` as a spec wrote it, a relative file path taken from
    ``base`` (the spec's folder); see hpc.models.loading."""
    from hpc.models import loading

    return loading.resolve(written, base)
