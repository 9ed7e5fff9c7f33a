"""A model the user brings: a file (relative to the spec's folder), a module, or an installed
package's entry point; the parse-time checks; provenance in the digest and the store; the
shard job of a node that cannot read the model file. The files live in temporary folders outside
the repository, as a user's own would."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest
import yaml
from conftest import PYTHON, REPO, run_hpc, write_spec
from user_models import TINY, write_model

from hpc.core.errors import SpecError
from hpc.models import get_model
from hpc.sweep import store
from hpc.sweep.plan import make_plan
from hpc.sweep.spec import load_spec, parse_spec

SPEC = {"name": "mine", "model": "my_model.py:MODEL", "sweep": {"a": [0.5, 1.0, 2.0]}, "shards": 1}


def spec_file(folder, **changes):
    folder.mkdir(parents=True, exist_ok=True)
    return write_spec(folder, {**SPEC, **changes})


def refused(folder, source: str, precision: str = "float32") -> SpecError:
    write_model(folder, source)
    with pytest.raises(SpecError) as info:
        load_spec(spec_file(folder, precision=precision))
    error = info.value
    assert error.key == "model" and "\n" not in str(error), str(error)
    return error


def test_a_file_model_is_found_relative_to_the_spec_folder_from_any_working_directory(tmp_path, monkeypatch):
    model = write_model(tmp_path / "project" / "models")
    spec = spec_file(tmp_path / "project" / "specs", model="../models/my_model.py:MODEL")
    monkeypatch.chdir(tmp_path)
    loaded = load_spec(spec)
    assert loaded.model == f"{model.resolve()}:MODEL"
    assert loaded.model_ref.sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    assert loaded.fixed == {} and loaded.axes[0].values == {"a": (0.5, 1.0, 2.0)}
    assert get_model(loaded.model).name == "tiny"  # what shard jobs and the report load
    # An absolute path works too, wherever the spec is.
    assert load_spec(spec_file(tmp_path / "elsewhere", model=f"{model}:MODEL")).model == loaded.model


@pytest.mark.parametrize("change, cause", [
    (lambda s: s.replace('"y": y,', '"y": y, "z": y,'), "solve returns undeclared output(s) z"),
    (lambda s: s.replace('"y": y,', ""), "solve does not return the declared output(s) y"),
    (lambda s: s.replace('"y": y,', '"y": y[:2],'), "output 'y' has shape (2,) for one point, expected (3,) from its dims (k)"),
    (lambda s: s.replace('"iterations": jnp.int32(1)', '"iterations": jnp.float32(1)'),
     "output 'iterations' is float32, declared int"),
    (lambda s: s.replace('    a = dynamic["a"]\n', '    a = dynamic["a"]\n    if a > 0:\n        a = -a\n'),
     "solve fails to trace at the spec's first point: TracerBoolConversionError"),
    (lambda s: s.replace("MODEL = Model(", "OTHER = Model("), "has no attribute 'MODEL' (its Model objects: OTHER)"),
    (lambda s: s + "\nMODEL = {'name': 'tiny'}\n", "my_model.py:MODEL is of type dict, not an hpc.models.Model"),
    (lambda s: s.replace("MODEL = Model(", "import no_such_package_xyz\nMODEL = Model("),
     "failed: ModuleNotFoundError: No module named 'no_such_package_xyz'"),
    (lambda s: s.replace("def solve(dynamic, static):", "def solve(dynamic, static)"), "failed: SyntaxError"),
], ids=["undeclared", "missing", "shape", "dtype", "trace", "attribute", "not-a-model", "import", "syntax"])
def test_a_bad_model_file_is_refused_at_parse_time_in_one_line_naming_the_cause(tmp_path, change, cause):
    assert cause in str(refused(tmp_path, change(TINY)))


def test_the_users_exception_and_line_are_named(tmp_path):
    source = TINY.replace("def solve(dynamic, static):", "SCALE = 1 / 0\n\n\ndef solve(dynamic, static):")
    line = source.splitlines().index("SCALE = 1 / 0") + 1
    error = refused(tmp_path, source)
    assert f"ZeroDivisionError: division by zero ({tmp_path / 'my_model.py'}, line {line})" in str(error)
    trace = TINY.replace('    a = dynamic["a"]\n', '    a = dynamic["a"]\n    a = a * jnp.ones(5)\n')
    error = refused(tmp_path, trace)  # (5,) times (3,) does not broadcast, on the next line
    line = trace.splitlines().index('    a = a * jnp.ones(5)') + 2
    assert "solve fails to trace" in str(error) and f"my_model.py, line {line})" in str(error)


def test_a_missing_file_says_where_it_looked_and_that_nodes_must_share_it(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(spec_file(tmp_path, model="models/nope.py:MODEL"))
    assert info.value.key == "model"
    assert f"model file {tmp_path / 'models' / 'nope.py'} not found" in str(info.value)
    assert "filesystem every node shares" in str(info.value)


def test_dtypes_are_checked_at_the_sweeps_precision(tmp_path):
    pinned = TINY.replace('"error": jnp.zeros((), static["dtype"])', '"error": jnp.zeros((), jnp.float32)')
    write_model(tmp_path, pinned)
    load_spec(spec_file(tmp_path))  # float32: right
    error = refused(tmp_path, pinned, precision="float64")
    assert "output 'error' is float32, declared float (float64 at precision float64)" in str(error)


def test_the_model_source_enters_the_digest_not_its_folder(tmp_path):
    write_model(tmp_path / "a")
    write_model(tmp_path / "b")
    a, b = load_spec(spec_file(tmp_path / "a")), load_spec(spec_file(tmp_path / "b"))
    assert a.model != b.model and a.digest() == b.digest()  # moved together: the same sweep
    write_model(tmp_path / "b", TINY.replace("a ** 2", "a ** 2 * 1.0"))
    assert load_spec(spec_file(tmp_path / "b")).digest() != a.digest()
    assert a.normalized()["model_source"]["sha256"] == a.model_ref.sha256
    builtin = parse_spec({"name": "m", "model": "mccall", "sweep": {"c": [10.0, 20.0]}})
    assert builtin.model == "mccall" and "model_source" not in builtin.normalized()


@pytest.mark.fault("model file edited after its sweep was planned", expect="same name refused at parse time; shard job refuses")
def test_a_changed_model_file_under_an_existing_name_is_refused(tmp_path):
    model = write_model(tmp_path / "user")
    spec = load_spec(spec_file(tmp_path / "user"))
    root = tmp_path / "results"
    plan, state = store.plan_sweep(spec, root / spec.name / "plan.json")
    attrs = json.loads((root / spec.name / "sweep.zarr" / "zarr.json").read_text())["attributes"]
    assert attrs["model"] == f"{model}:MODEL"
    assert attrs["model_source"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    store.check_not_another_spec(spec, root)  # unchanged: fine

    model.write_text(TINY.replace("a ** 2", "a ** 3"))
    changed = load_spec(spec_file(tmp_path / "user"))
    with pytest.raises(SpecError, match=r"^model: .*my_model.py:MODEL changed since .* was made \(sha256 "):
        store.check_not_another_spec(changed, root)
    with pytest.raises(SpecError, match=r"my_model.py changed since the sweep was planned"):
        get_model(plan.model, plan.spec["model_source"])  # what a shard job does with the old plan


def test_a_module_model_records_its_module_and_file_hash(tmp_path, monkeypatch):
    package = tmp_path / "site" / "userpkg_mod"
    write_model(package, "", "__init__.py")
    source = write_model(package, TINY, "growth.py")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = parse_spec({**SPEC, "model": "userpkg_mod.growth:MODEL"})
    assert spec.model == "userpkg_mod.growth:MODEL" and spec.model_ref.kind == "module"
    assert spec.model_ref.module == "userpkg_mod.growth"
    assert spec.model_ref.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    with pytest.raises(SpecError, match="^model: no module named 'userpkg_missing'"):
        parse_spec({**SPEC, "model": "userpkg_missing.growth:MODEL"})


def test_an_installed_package_registers_a_model_by_name(tmp_path, monkeypatch):
    # What pip install of the user's package leaves on sys.path: the module and its dist-info.
    site = tmp_path / "site"
    write_model(site / "tiny_models_pkg", "", "__init__.py")
    write_model(site / "tiny_models_pkg", TINY, "core.py")
    info = site / "tiny_models-1.2.3.dist-info"
    write_model(info, "Metadata-Version: 2.1\nName: tiny-models\nVersion: 1.2.3\n", "METADATA")
    write_model(info, "[hpc_sweeps.models]\ntinymodel = tiny_models_pkg.core:MODEL\n", "entry_points.txt")
    write_model(info, "tiny_models_pkg\n", "top_level.txt")
    monkeypatch.syspath_prepend(str(site))
    spec = parse_spec({**SPEC, "model": "tinymodel"})
    ref = spec.model_ref
    assert (spec.model, ref.kind, ref.module, ref.attr) == ("tinymodel", "entry_point", "tiny_models_pkg.core", "MODEL")
    assert (ref.distribution, ref.version) == ("tiny-models", "1.2.3")
    assert spec.normalized()["model_source"]["version"] == "1.2.3"
    assert get_model("tinymodel").name == "tiny"
    store.plan_sweep(spec, tmp_path / "results" / spec.name / "plan.json")  # the store records the package
    source = json.loads((tmp_path / "results" / spec.name / "sweep.zarr" / "zarr.json").read_text())["attributes"]["model_source"]
    assert (source["distribution"], source["version"], source["module"]) == ("tiny-models", "1.2.3", "tiny_models_pkg.core")
    from hpc.report.summary import model_source_text

    assert model_source_text(source).startswith("tinymodel = tiny_models_pkg.core:MODEL, package tiny-models 1.2.3, sha256 ")
    with pytest.raises(SpecError) as error:
        parse_spec({**SPEC, "model": "tinymodl"})
    assert "unknown model 'tinymodl'" in str(error.value) and "from installed packages: tinymodel" in str(error.value)


def test_a_model_of_scalars_may_leave_out_coords(tmp_path):
    source = TINY.replace("y = a ** 2 * jnp.arange(1, 4, dtype=static[\"dtype\"])", "y = a ** 2") \
                 .replace('Output("y", ("k",))', 'Output("y")').replace("    coords=lambda params: {\"k\": [0, 1, 2]},\n", "")
    write_model(tmp_path, source)
    spec = load_spec(spec_file(tmp_path))
    assert get_model(spec.model).coords({}) == {}


# A model file that imports a file and a package of its own from its folder, as `python my_model.py` would.
WITH_HELPERS = TINY.replace("from hpc.models import", "from growth_helpers import scaled\nfrom tools import OFFSET\n"
                            "from hpc.models import").replace('    return {"y": y,', '    return {"y": scaled(y) + OFFSET,')


def write_helpers(folder, scale: float, offset: float = 0.0):
    write_model(folder, f"SCALE = {scale}\n\n\ndef scaled(x):\n    return SCALE * x\n", "growth_helpers.py")
    write_model(folder / "tools", f"OFFSET = {offset}\n", "__init__.py")
    return write_model(folder, WITH_HELPERS)


def test_a_model_file_imports_its_own_helpers_and_only_its_own(tmp_path):
    import sys

    import jax.numpy as jnp
    import numpy as np

    path_before = list(sys.path)
    folders = {"a": (2.0, 0.5), "b": (3.0, -1.0)}  # the same helper names, other values, two folders
    specs = {}
    for name, (scale, offset) in folders.items():
        write_helpers(tmp_path / name, scale, offset)
        specs[name] = load_spec(spec_file(tmp_path / name))  # parse: import, probe
    assert sys.path == path_before and "growth_helpers" not in sys.modules and "tools" not in sys.modules
    for name, (scale, offset) in folders.items():
        got = get_model(specs[name].model).solve({"a": jnp.float32(1.5)}, {"dtype": jnp.float32})["y"]
        np.testing.assert_allclose(np.asarray(got), scale * 1.5 ** 2 * np.array([1.0, 2.0, 3.0]) + offset, rtol=1e-6)
        helpers = specs[name].normalized()["model_source"]["helpers"]
        assert helpers == {h: hashlib.sha256((tmp_path / name / h).read_bytes()).hexdigest()
                           for h in ("growth_helpers.py", os.path.join("tools", "__init__.py"))}
    # The model files are the same bytes: only the helpers tell the sweeps apart.
    assert specs["a"].model_ref.sha256 == specs["b"].model_ref.sha256 and specs["a"].digest() != specs["b"].digest()
    write_model(tmp_path / "plain")
    assert "helpers" not in load_spec(spec_file(tmp_path / "plain")).normalized()["model_source"]
    # An edited helper: a new digest, and a plan made before refuses it (what a shard job checks).
    plan = make_plan(specs["a"])
    write_helpers(tmp_path / "a", 2.5, 0.5)
    assert load_spec(spec_file(tmp_path / "a")).digest() != specs["a"].digest()
    with pytest.raises(SpecError, match=r"^model: .*growth_helpers\.py, a helper of .*my_model\.py, changed since"):
        get_model(plan.model, plan.spec["model_source"])


@pytest.mark.slow
@pytest.mark.fault("a node cannot read the model file (not on a shared filesystem)",
                   expect="shard job fails; its log names the file, the host and the shared-filesystem rule")
def test_a_shard_job_that_cannot_read_the_model_file_says_so_in_its_log(tmp_path):
    import numpy as np
    import xarray as xr

    # Shard 0 runs in a fresh process with the model's own helpers (imported from its folder) ...
    model = write_helpers(tmp_path / "user", 2.0, 0.5)
    spec = spec_file(tmp_path / "user", shards=2)
    plan = tmp_path / "results" / "mine" / "plan.json"
    run_hpc("plan", spec, "--output", plan, cwd=tmp_path)
    run_hpc("run-shard", plan, "0", cwd=tmp_path)
    ds = xr.open_zarr(tmp_path / "results" / "mine" / "sweep.zarr", consolidated=False)
    done = np.asarray(ds["point_done"].values)
    assert done.any() and not done.all()
    expected = 2.0 * np.asarray(ds["a"].values)[:, None] ** 2 * np.array([1.0, 2.0, 3.0]) + 0.5
    np.testing.assert_allclose(np.asarray(ds["y"].values)[done], expected[done], rtol=1e-6)
    # ... shard 1 on a node that does not see the user's folder fails, saying why.
    model.rename(model.with_suffix(".moved"))
    log = tmp_path / "shard-1.log"
    with log.open("w") as err:
        result = subprocess.run([PYTHON, "-m", "hpc", "run-shard", str(plan), "1"], cwd=tmp_path, stderr=err,
                                env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    text = log.read_text()
    assert result.returncode != 0
    assert f"model: model file {model} not found on {os.uname().nodename}" in text.splitlines()[-1], text[-2000:]
    assert "filesystem every node shares" in text.splitlines()[-1]
    assert not (tmp_path / "results" / "mine" / "shards" / "shard-0001.json").exists()


def test_the_plan_carries_the_resolved_model_and_its_hash(tmp_path):
    write_model(tmp_path)
    spec = load_spec(spec_file(tmp_path))
    plan = make_plan(spec)
    assert plan.model == spec.model and os.path.isabs(plan.model.rsplit(":", 1)[0])
    assert plan.spec["model"] == "my_model.py:MODEL" and plan.spec["model_source"]["sha256"] == spec.model_ref.sha256
    assert yaml.safe_load(spec.text)["model"] == "my_model.py:MODEL"
