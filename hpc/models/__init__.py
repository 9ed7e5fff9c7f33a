"""The model registry: models by name, imported on first use."""

from __future__ import annotations

import importlib

from hpc.core.errors import SpecError
from hpc.models.base import DIAGNOSTICS, Model, Output, Parameter, ReportTable

__all__ = ["Model", "Output", "Parameter", "ReportTable", "DIAGNOSTICS", "get_model", "model_names"]

_MODULES = {
    "arellano": "hpc.models.arellano",
    "bianchi": "hpc.models.bianchi",
    "mccall": "hpc.models.mccall",
    "synthetic": "hpc.models.synthetic",
}


def model_names() -> tuple[str, ...]:
    return tuple(sorted(_MODULES))


def get_model(name: str) -> Model:
    """The registered model called ``name``; a SpecError naming the known ones otherwise."""
    if name not in _MODULES:
        raise SpecError("model", f"unknown model {name!r}", "known models: " + ", ".join(model_names()))
    return importlib.import_module(_MODULES[name]).MODEL
