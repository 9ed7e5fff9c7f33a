"""Spec files, sweep and training alike: the YAML on disk, its JSON schema (package data in
hpc/core/schemas/, so an installed package validates outside a checkout), the schema's
defaults, and the digest.

The schema is the one place a spec's shape and its defaults are written: ``check_schema``
turns its violations into one SpecError naming the key, ``with_defaults`` fills in every
``default:`` it states. Defaults that depend on other values (a training run's ``eval_every``
is steps/10) are left to the code that reads the spec.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.resources
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml

from hpc.core.errors import SpecError

KINDS = ("sweep", "train")
SAFE_PATH_RE = re.compile(r"^[A-Za-z0-9_./+=@%:,-]+$")


@lru_cache(maxsize=None)
def schema(kind: str) -> dict:
    """The JSON schema of a ``kind`` spec ("sweep" or "train"), read from the package."""
    text = importlib.resources.files("hpc.core").joinpath("schemas", f"{kind}.schema.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


@lru_cache(maxsize=None)
def _validator(kind: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(kind))


def digest(normalized: dict) -> str:
    """A short hash of a spec's normalized form: what decides the results, not where they run."""
    blob = json.dumps(normalized, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- the file ---------------------------------------------------------------------------------


def check_spec_path(path: str | Path, key: str = "sweep") -> None:
    """Refuse a spec path a shell would interpret.

    Snakemake hands ``--config`` values to the jobs it starts on their command lines, through a
    shell: a path such as ``x$(cmd).yaml`` would run ``cmd``. So only plain paths are allowed.
    """
    if not SAFE_PATH_RE.match(str(path)):
        raise SpecError(key, f"the path {str(path)!r} has characters a shell would interpret",
                        "move or rename the file: letters, digits and _ . / + = @ % : , - only")


def read_spec_file(path: str | Path) -> tuple[str, Any]:
    """The text of the spec file at ``path`` and its YAML; a SpecError if missing or not YAML."""
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


# --- the schema -------------------------------------------------------------------------------


def _shown(name: Any) -> str:
    """A key as it appears in a key path: as written, or quoted where it is empty or has odd characters."""
    text = str(name)
    return text if text and text.isprintable() and text.strip() == text else repr(text)


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(_shown(p) for p in error.absolute_path)


def _join(key: str, name: Any) -> str:
    return f"{key}.{_shown(name)}" if key else _shown(name)


def check_schema(kind: str, data: Any, entry_forms: Mapping[str, str] | None = None) -> None:
    """Raise one SpecError, naming the key, for the most relevant violation of the ``kind`` schema.

    ``entry_forms`` maps a top-level key whose entries take one of several forms (a sweep's
    dimensions) to a line that lists those forms: a bad entry there is reported with it.
    """
    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(data))
    if error is None:
        return
    key = _key_path(error)
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        raise SpecError(_join(key, extra[0]) if extra else key or "(top level)", "unknown key",
                        "allowed keys: " + ", ".join(allowed))
    if "propertyNames" in error.schema_path:
        name = error.instance
        raise SpecError(_join(key, name) if name else key, f"{name!r} is not allowed as a name here",
                        error.schema.get("description", error.message))
    forms = (entry_forms or {}).get(path[0]) if path else None
    if forms and len(path) == 2:
        raise SpecError(key, f"not a valid dimension: {error.instance!r}", forms)
    if forms and len(path) > 2:
        raise SpecError(key, error.message, forms)
    if error.validator == "not" and isinstance(error.validator_value, dict) and "required" in error.validator_value:
        first, *others = error.validator_value["required"]
        raise SpecError(_join(key, first), f"give either {first} or {' or '.join(others)}, not both")
    if key == "name" and error.validator == "not":
        raise SpecError("name", f"{error.instance!r} is not a plain file name here",
                        "'.', '..' and '.jax-cache' (the compilation cache) are reserved")
    if key == "name" and error.validator == "pattern":
        raise SpecError("name", f"{error.instance!r} is not a plain file name", "use letters, digits, '_', '.', '-' only")
    if error.validator == "required":
        raise SpecError(key or "(top level)", error.message)
    if error.validator == "enum":
        raise SpecError(key, f"{error.instance!r} is not allowed", "allowed: " + ", ".join(map(str, error.validator_value)))
    if error.validator == "type" and isinstance(error.instance, str) and "number" in str(error.validator_value):
        raise SpecError(key, f"expected a number, got text {error.instance!r}",
                        "write it as a number; YAML reads 1e-3 as text, write 1.0e-3")
    raise SpecError(key or "(top level)", error.message)


def fill_defaults(node_schema: Mapping, data: Any) -> Any:
    """A copy of ``data`` with the ``default:`` of every absent property of ``node_schema`` added.

    Recurses into nested objects that have ``properties``, including ones that are absent but
    whose schema gives them a default (``default: {}``, then filled in turn). Data that is not a
    mapping, and mappings of arbitrary keys (``additionalProperties`` only), are returned as
    they are.
    """
    props = node_schema.get("properties") if isinstance(node_schema, Mapping) else None
    if not props or not isinstance(data, dict):
        return copy.deepcopy(data)
    out = copy.deepcopy(data)
    for name, sub in props.items():
        if name not in out and isinstance(sub, Mapping) and "default" in sub:
            out[name] = copy.deepcopy(sub["default"])
        if name in out:
            out[name] = fill_defaults(sub, out[name])
    return out


def subschema(kind: str, at: str = "") -> dict:
    """The schema of the object at the dotted path ``at`` ("dask", "optimizer.schedule") of a ``kind`` spec."""
    node = schema(kind)
    for part in filter(None, at.split(".")):
        node = node["properties"][part]
    return node


def with_defaults(kind: str, data: Any, at: str = "") -> Any:
    """``data`` (a ``kind`` spec, or its object at the dotted path ``at``) with its schema's defaults filled in."""
    return fill_defaults(subschema(kind, at), data)


def defaults(kind: str, at: str = "") -> dict:
    """Every default the schema gives the object at ``at`` of a ``kind`` spec (the whole spec by default)."""
    return with_defaults(kind, {}, at)
