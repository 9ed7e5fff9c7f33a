"""Spec files, sweep and training alike: the YAML on disk, its JSON schema (package data in
hpc/core/schemas/, so an installed package validates outside a checkout) and its digest."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
from functools import lru_cache

import yaml


@lru_cache(maxsize=None)
def schema(kind: str) -> dict:
    """The JSON schema of a ``kind`` spec ("sweep" or "train"), read from the package."""
    text = importlib.resources.files("hpc.core").joinpath("schemas", f"{kind}.schema.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def digest(normalized: dict) -> str:
    """A short hash of a spec's normalized form: what decides the results, not where they run."""
    blob = json.dumps(normalized, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
