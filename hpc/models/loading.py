"""Where a sweep's model comes from, and the checks a model brought by a user passes at parse time.

``model:`` in a sweep spec is one of

- a built-in name (``mccall``; the table in hpc.models);
- ``path/to/file.py:ATTR``: a Python file, a relative path taken from the spec file's folder;
- ``package.module:ATTR``: a module Python can import (the user's installed package);
- a name an installed package registers in the entry-point group ``hpc_sweeps.models``.

``resolve`` turns what the spec wrote into a ``ModelRef`` (a reference that resolves the same on
every node and process: a file's absolute path, a module's dotted name, an entry point's name)
and the ``Model`` itself; every stage (spec parsing, shard jobs and their ranks, dask workers,
the store, the report) loads a model through it, via ``hpc.models.get_model``. A file model's
provenance is the sha256 of its file; a package model's is its module, the module file's sha256
and the distribution's version. ``check_solve`` probes a model once, abstractly
(``jax.eval_shape``: no solve is run), for what the runner relies on: the declared outputs, each
of its shape and dtype.

A model file is imported as ``python path/to/file.py`` would run it: its folder comes first on
``sys.path`` while it is imported, so it may import files and packages of its own beside it
(``from growth_helpers import f``). Those helpers are the file's alone: once it is imported they
leave ``sys.modules`` (the model keeps what it imported), so two model files with helpers of one
name in two folders each get their own in one process. The helpers' sha256, by their path
relative to the model's folder, go into the provenance beside the file's (``helpers``).

Every failure is one SpecError on the key ``model``.

``import_source`` is the importing part alone (a file or a module, no built-in names or entry
points): a training spec's own network (hpc.train.network) is imported through it, so a network
file follows the same rules (its helpers beside it, their hashes, errors naming file and line),
its failures on the key ``network.module``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import sys
import threading
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from hpc.core.errors import SpecError
from hpc.models.base import Model

ENTRY_POINT_GROUP = "hpc_sweeps.models"
KEY = "model"
FORMS = "a built-in name, path/to/file.py:ATTR, package.module:ATTR or a name registered under the " \
        f"entry-point group {ENTRY_POINT_GROUP}"
SHARED_FS = "a relative path is taken from the spec's folder, which must be on a filesystem every node shares"
_ATTR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_MODULE_RE = _ATTR_RE


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from: ``kind`` (builtin, file, module or entry_point), ``ref`` (what
    resolves it in any process: a built-in or entry-point name, /abs/path.py:ATTR or
    package.module:ATTR), ``written`` (as the spec wrote it) and its provenance."""

    kind: str
    ref: str
    written: str
    attr: str | None = None
    path: str | None = None  # the file: the model's own (file), or its module's (module, entry point)
    sha256: str | None = None
    module: str | None = None
    distribution: str | None = None
    version: str | None = None
    # a file model's own helper files (imported from its folder): (path relative to it, sha256)
    helpers: tuple[tuple[str, str], ...] | None = None

    @property
    def builtin(self) -> bool:
        return self.kind == "builtin"

    def digest_part(self) -> dict:
        """What of the source decides the results (for the spec digest): not where the file lies,
        so a spec and its model moved together keep their digest."""
        body = {"kind": self.kind, "written": self.written, "attr": self.attr, "sha256": self.sha256,
                "module": self.module if self.kind != "file" else None, "distribution": self.distribution,
                "version": self.version, "helpers": dict(self.helpers) if self.helpers else None}
        return {k: v for k, v in body.items() if v is not None}

    def provenance(self) -> dict:
        """Everything known of the source (for the store's attributes and the report)."""
        body = {**asdict(self), "helpers": dict(self.helpers) if self.helpers else None}
        return {k: v for k, v in body.items() if v is not None}

    def describe(self) -> str:
        """One line for people: ``/x/growth.py:MODEL (sha256 1a2b3c4d5e6f)``."""
        if self.builtin:
            return f"{self.ref} (built in)"
        what = self.ref if self.kind != "entry_point" else f"{self.ref} = {self.module}:{self.attr}"
        extra = [f"sha256 {self.sha256[:12]}"] if self.sha256 else []
        if self.distribution:
            extra.append(f"{self.distribution} {self.version or ''}".strip())
        return what + (f" ({', '.join(extra)})" if extra else "")


def _builtins() -> Mapping[str, str]:
    from hpc import models

    return models._MODULES


def entry_point_names() -> tuple[str, ...]:
    return tuple(sorted({ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}))


def known_names() -> str:
    names = sorted(_builtins())
    plugins = [n for n in entry_point_names() if n not in names]
    return ", ".join(names) + (f"; from installed packages: {', '.join(plugins)}" if plugins else "")


def resolve(written: str, base: str | Path | None = None) -> tuple[ModelRef, Model]:
    """The model ``written`` names (see the module docstring) and where it comes from; a relative
    file path is taken from ``base`` (the spec's folder; the working directory if None)."""
    if not isinstance(written, str) or not written.strip():
        raise SpecError(KEY, f"{written!r} names no model", FORMS)
    written = written.strip()
    builtins = _builtins()
    if written in builtins:
        module = importlib.import_module(builtins[written])
        return ModelRef("builtin", written, written), module.MODEL
    if ":" in written:
        module, ref = import_source(written, base)
        return ref, _attribute(module, ref.attr, ref.path if ref.kind == "file" else ref.module)
    return _from_entry_point(written)


def import_source(written: str, base: str | Path | None = None, key: str = KEY) -> tuple[Any, ModelRef]:
    """The module of ``path/to/file.py:ATTR`` (a relative path taken from ``base``, else the
    working directory) or ``package.module:ATTR``, and where it comes from (a ``ModelRef`` of kind
    file or module; ATTR is checked to be a name, not looked up). The one importer of a user's
    code: models and training networks (hpc.train.network) alike, so both follow the module
    docstring's rules (helpers beside a file, their hashes, errors naming file and line). Every
    failure is one SpecError on ``key``."""
    written = written.strip()
    left, _, attr = written.rpartition(":")
    forms = FORMS if key == KEY else "write path/to/file.py:NAME or package.module:NAME"
    if not left or not _ATTR_RE.match(attr):
        raise SpecError(key, f"{written!r}: {attr!r} is not an attribute name", "write FILE.py:ATTR or module:ATTR")
    if left.endswith(".py") or "/" in left or os.sep in left:
        return _from_file(written, left, attr, base, key)
    if not _MODULE_RE.match(left):
        raise SpecError(key, f"{written!r}: {left!r} is neither a .py file nor a module name", forms)
    return _from_module(written, left, attr, key)


def load(ref: str, source: Mapping[str, Any] | None = None) -> Model:
    """The model of a resolved reference (a plan's or a store's ``model``); with ``source`` (the
    provenance recorded at planning) a source whose sha256 changed since is refused."""
    found, model = resolve(ref)
    expected = (source or {}).get("sha256")
    if expected and found.sha256 != expected:
        raise SpecError(KEY, f"{found.path} changed since the sweep was planned on {platform.node()} "
                        f"(sha256 {found.sha256[:12]}, planned {expected[:12]})",
                        "restore the file, or run the changed model as a sweep of another name")
    if expected and found.kind == "file":
        planned, now = dict((source or {}).get("helpers") or {}), dict(found.helpers or ())
        changed = sorted(h for h in set(planned) | set(now) if planned.get(h) != now.get(h))
        if changed:
            folder = Path(found.path).parent
            raise SpecError(KEY, f"{folder / changed[0]}, a helper of {found.path}, changed since the sweep was "
                            f"planned on {platform.node()} (sha256 {(now.get(changed[0]) or 'none')[:12]}, "
                            f"planned {(planned.get(changed[0]) or 'none')[:12]})",
                            "restore the file, or run the changed model as a sweep of another name")
    return model


# --- files --------------------------------------------------------------------------------------

# (file, sha256) -> (its module, its helpers' hashes): a file is imported once per process and version
_FILE_MODULES: dict[tuple[str, str], tuple[Any, tuple[tuple[str, str], ...]]] = {}
_IMPORTING = threading.RLock()  # sys.path and sys.modules are the process's: one model file at a time


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _from_file(written: str, file: str, attr: str, base, key: str) -> tuple[Any, ModelRef]:
    path = Path(file).expanduser()
    if not path.is_absolute():
        path = Path(base or os.getcwd()) / path
    path = Path(os.path.abspath(path))
    host, noun = platform.node(), key.split(".")[0]  # "model file ...", "network file ..."
    if not path.is_file():
        raise SpecError(key, f"{noun} file {path} not found on {host}", SHARED_FS)
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise SpecError(key, f"cannot read {noun} file {path} on {host}: {exc.strerror or exc}", SHARED_FS) from None
    digest = hashlib.sha256(source).hexdigest()
    with _IMPORTING:
        module, helpers = _FILE_MODULES.get((str(path), digest), (None, ()))
        if module is None or not _same_helpers(path.parent, helpers):  # an edited helper: import again
            module, helpers = _exec_file(path, digest, key)
            _FILE_MODULES[(str(path), digest)] = (module, helpers)
    return module, ModelRef("file", f"{path}:{attr}", written, attr=attr, path=str(path), sha256=digest,
                            helpers=helpers or None)


def _exec_file(path: Path, digest: str, key: str = KEY):
    """Import the file as a module of its own (named after the file, its place and its hash, so a
    changed file is a new module), registered in sys.modules while and after it runs, as an import would, with
    its folder first on sys.path while it runs. Modules it imported from its folder (its helpers:
    top-level names new to this process, found there) leave sys.modules afterwards, so another
    model file's helpers of the same name are imported afresh from their own folder. Returns the
    module and its helpers' (relative path, sha256), sorted."""
    stem = re.sub(r"\W", "_", path.stem)
    where = hashlib.sha256(f"{path}\0{digest}".encode()).hexdigest()[:12]  # two folders' same file: two modules
    name = f"hpc_user_models.{stem}_{where}"
    folder = str(path.parent)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    before = set(sys.modules)
    sys.modules[name] = module
    sys.path.insert(0, folder)
    importlib.invalidate_caches()  # a helper written since this folder was last looked at
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise SpecError(key, f"importing {path} failed: {error_text(exc, {str(path)})}") from None
    finally:
        sys.path.remove(folder)
        helpers = _forget_helpers(path.parent, before | {name})
    return module, helpers


def _forget_helpers(folder: Path, before: set[str]) -> tuple[tuple[str, str], ...]:
    """Take the modules imported from ``folder`` (top-level names not in ``before`` whose module or
    package lies directly in it, and their submodules) out of sys.modules; their files' (path
    relative to ``folder``, sha256)."""
    found = {}
    for top in {n.split(".")[0] for n in set(sys.modules) - before}:
        if top in before or _home(sys.modules.get(top)) != folder:
            continue
        for mod in [n for n in sys.modules if (n == top or n.startswith(top + ".")) and n not in before]:
            file = getattr(sys.modules.pop(mod), "__file__", None)
            if file and Path(file).is_file():
                found[os.path.relpath(os.path.abspath(file), folder)] = sha256_of(Path(file))
    return tuple(sorted(found.items()))


def _home(module) -> Path | None:
    """The folder a top-level module was found in (a package's: the folder holding the package)."""
    file = getattr(module, "__file__", None)
    if file:
        where = Path(os.path.abspath(file)).parent
        return where.parent if Path(file).name.startswith("__init__.") else where
    paths_ = list(getattr(module, "__path__", None) or [])  # a namespace package: its folders
    return Path(os.path.abspath(paths_[0])).parent if paths_ else None


def _same_helpers(folder: Path, helpers: tuple[tuple[str, str], ...]) -> bool:
    try:
        return all(sha256_of(folder / rel) == sha for rel, sha in helpers)
    except OSError:
        return False


# --- modules and entry points -------------------------------------------------------------------


def _from_module(written: str, module_name: str, attr: str, key: str) -> tuple[Any, ModelRef]:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise SpecError(key, f"no module named {exc.name!r} (for {written!r})",
                            "install the package that holds it, or write a path ending in .py") from None
        raise SpecError(key, f"importing {module_name} failed: {error_text(exc, set())}") from None
    except Exception as exc:
        raise SpecError(key, f"importing {module_name} failed: {error_text(exc, set())}") from None
    return module, _package_ref("module", written, written, module, attr)


def _from_entry_point(written: str) -> tuple[ModelRef, Model]:
    found = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == written]
    if not found:
        raise SpecError(KEY, f"unknown model {written!r}", f"known models: {known_names()}; or {FORMS}")
    ep = found[0]
    module_name, _, attr = ep.value.partition(":")
    module_name, attr = module_name.strip(), attr.strip()
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise SpecError(KEY, f"importing {module_name} (entry point {written!r}) failed: {error_text(exc, set())}") from None
    if not attr:
        raise SpecError(KEY, f"entry point {written!r} = {ep.value!r} names a module, not a Model",
                        "register it as package.module:ATTR")
    model = _attribute(module, attr, f"{module_name} (entry point {written!r})")
    ref = _package_ref("entry_point", written, written, module, attr)
    if ep.dist is not None:
        ref = ModelRef(**{**asdict(ref), "distribution": ep.dist.name, "version": ep.dist.version})
    return ref, model


def _package_ref(kind: str, ref: str, written: str, module, attr: str) -> ModelRef:
    file = getattr(module, "__file__", None)
    sha = sha256_of(Path(file)) if file and Path(file).is_file() else None
    dist = version = None
    top = module.__name__.split(".")[0]
    try:
        names = importlib.metadata.packages_distributions().get(top) or []
        if names:
            dist, version = names[0], importlib.metadata.version(names[0])
    except Exception:
        pass
    return ModelRef(kind, ref, written, attr=attr, path=file, sha256=sha, module=module.__name__,
                    distribution=dist, version=version)


def _attribute(module, attr: str, where: str) -> Model:
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            models = [n for n, v in vars(module).items() if isinstance(v, Model)]
            hint = f"its Model objects: {', '.join(models)}" if models else "it defines no hpc.models.Model"
            raise SpecError(KEY, f"{where} has no attribute {attr!r}", hint)
        obj = getattr(obj, part)
    if not isinstance(obj, Model):
        raise SpecError(KEY, f"{where}:{attr} is of type {type(obj).__name__}, not an hpc.models.Model",
                        "build it as Model(name=..., doc=..., parameters=..., outputs=..., solve=..., coords=...)")
    return obj


# --- the probe ----------------------------------------------------------------------------------


def error_text(exc: BaseException, files: set[str]) -> str:
    """``Type: message (FILE, line N)``: the exception and the deepest line of ``files`` it passed
    (the user's), or for a syntax error its own line; else the deepest line outside jax and hpc."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f"{type(exc).__name__}: {exc.msg} ({exc.filename}, line {exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if f.filename in files]
    if not mine:
        skip = (os.sep + "jax" + os.sep, os.sep + "jaxlib" + os.sep, os.sep + "hpc" + os.sep, "<frozen ")
        mine = [f for f in frames if not any(s in f.filename for s in skip)]
    if mine:
        text += f" ({mine[-1].filename}, line {mine[-1].lineno})"
    return text


def _solve_files(model: Model) -> set[str]:
    code = getattr(model.solve, "__code__", None)
    module = sys.modules.get(getattr(model.solve, "__module__", "") or "")
    return {f for f in (code and code.co_filename, getattr(module, "__file__", None)) if f}


def check_solve(model: Model, values: Mapping[str, Any], precision: str, label: str) -> None:
    """Trace ``model.solve`` once, abstractly, at ``values`` (every parameter's value: the spec's
    first point) and check that it returns every declared output, no other, each of the shape its
    dimensions' coordinates give and of its declared dtype. ``label`` names the model in errors."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    floating = jnp.float64 if precision == "float64" else jnp.float32
    files = _solve_files(model)
    try:
        coords = {d: np.asarray(v) for d, v in dict(model.coords(dict(values))).items()}
    except Exception as exc:
        raise SpecError(KEY, f"{label}: coords failed: {error_text(exc, files)}") from None
    static = {p.name: values[p.name] for p in model.parameters if p.role != "dynamic"}
    static["dtype"] = floating
    with jax.enable_x64(precision == "float64"):
        dynamic = {p.name: jax.ShapeDtypeStruct((), floating if p.kind == "float" else jnp.int32)
                   for p in model.parameters if p.role == "dynamic"}
        try:
            out = jax.eval_shape(lambda d: model.solve(d, static), dynamic)
        except Exception as exc:
            raise SpecError(KEY, f"{label}: solve fails to trace at the spec's first point: {error_text(exc, files)}",
                            "solve must be pure JAX: no Python if/for on traced values (use jnp.where, lax.while_loop)"
                            ) from None
    if not isinstance(out, Mapping):
        raise SpecError(KEY, f"{label}: solve returns a {type(out).__name__}, not a mapping of output name to array")
    declared = [o.name for o in model.outputs]
    missing = [n for n in declared if n not in out]
    extra = sorted(str(n) for n in out if n not in declared)
    if missing:
        raise SpecError(KEY, f"{label}: solve does not return the declared output(s) {', '.join(missing)}",
                        "return every output the model declares")
    if extra:
        raise SpecError(KEY, f"{label}: solve returns undeclared output(s) {', '.join(extra)}",
                        "declare each one as an Output, or do not return it")
    kinds = {"float": np.dtype(floating), "int": np.dtype(np.int32), "bool": np.dtype(bool)}
    for o in model.outputs:
        unknown = [d for d in o.dims if d not in coords]
        if unknown:
            raise SpecError(KEY, f"{label}: coords gives no values for dimension {unknown[0]!r} of output {o.name!r}",
                            "coords(params) must return every model dimension the outputs use")
        shape = tuple(len(coords[d]) for d in o.dims)
        got = out[o.name]
        if not hasattr(got, "shape") or not hasattr(got, "dtype"):
            raise SpecError(KEY, f"{label}: output {o.name!r} is a {type(got).__name__}, not an array")
        if tuple(got.shape) != shape:
            dims = "(" + ", ".join(o.dims) + ")"
            raise SpecError(KEY, f"{label}: output {o.name!r} has shape {tuple(got.shape)} for one point, "
                            f"expected {shape} from its dims {dims}",
                            "solve is written for one point; the runner adds the sweep's dimensions")
        if np.dtype(got.dtype) != kinds[o.dtype]:
            raise SpecError(KEY, f"{label}: output {o.name!r} is {np.dtype(got.dtype)}, declared {o.dtype} "
                            f"({kinds[o.dtype]} at precision {precision})",
                            "cast it (float outputs follow static['dtype'], int outputs are int32)")
