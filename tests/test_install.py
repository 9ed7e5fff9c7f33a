"""`pip install .` (not editable) gives a package that works outside the checkout: the schemas
come from package data, and nothing reads a file of the checkout.

The wheel is built from a copy of the checkout's package files, so that setuptools' build/ and
*.egg-info land in a temporary folder, not in the working tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import PYTHON, REPO

pytestmark = pytest.mark.slow

# Runs `hpc ARGS...` as `python -m hpc` does, and reports every file it opened inside the
# checkout (the interpreter's own environment, which may live there, aside).
AUDITED = r"""
import json, os, runpy, sys
repo, args = sys.argv[1], sys.argv[2:]
outside = (os.path.realpath(sys.prefix) + os.sep,)
opened = []
def audit(event, info):
    if event == "open" and isinstance(info[0], (str, bytes, os.PathLike)):
        path = os.path.realpath(os.fsdecode(info[0]))
        if path.startswith(repo + os.sep) and not path.startswith(outside):
            opened.append(path)
sys.addaudithook(audit)
import hpc
print("HPC_FILE=" + hpc.__file__, file=sys.stderr)
sys.argv = ["hpc", *args]
code = 0
try:
    runpy.run_module("hpc", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
print("OPENED_IN_CHECKOUT=" + json.dumps(sorted(set(opened))), file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The wheel of this checkout, installed (without dependencies) into a folder of its own."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "hpc", src / "hpc", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp / "wheels"
    build = subprocess.run([PYTHON, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                            str(src)], capture_output=True, text=True, timeout=600, cwd=tmp)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = wheels.glob("hpc_sweeps-*.whl")
    target = tmp / "site"
    install = subprocess.run([PYTHON, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                             capture_output=True, text=True, timeout=600, cwd=tmp)
    assert install.returncode == 0, install.stdout + install.stderr
    assert (target / "hpc" / "core" / "schemas" / "sweep.schema.yaml").is_file()
    return target


def hpc(site: Path, cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HPC_RESULTS")}
    result = subprocess.run([PYTHON, "-c", AUDITED, str(REPO.resolve()), *args], cwd=cwd, capture_output=True,
                            text=True, timeout=600, env=dict(env, PYTHONPATH=str(site)))
    lines = result.stderr.splitlines()
    hpc_file = next(line.split("=", 1)[1] for line in lines if line.startswith("HPC_FILE="))
    assert Path(hpc_file).is_relative_to(site), f"imported {hpc_file}, not the installed package"
    opened = next(yaml.safe_load(line.split("=", 1)[1]) for line in lines if line.startswith("OPENED_IN_CHECKOUT="))
    user_lines = "\n".join(line for line in lines if not line.startswith(("HPC_FILE=", "OPENED_IN_CHECKOUT=")))
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout, user_lines), opened


@pytest.fixture
def workdir(tmp_path) -> Path:
    shutil.copy2(REPO / "workflow" / "sweeps" / "default.yaml", tmp_path / "default.yaml")
    return tmp_path


def test_validate_and_plan_outside_the_checkout(site, workdir):
    result, opened = hpc(site, workdir, "validate", "default.yaml")
    assert result.returncode == 0, result.stderr
    assert "default.yaml: ok (mccall, 75 points, 5 shards)" in result.stdout
    assert opened == []
    result, opened = hpc(site, workdir, "plan", "default.yaml", "--output", "results/mccall-c-beta/plan.json")
    assert result.returncode == 0, result.stderr
    assert "5 shards" in result.stdout and "created" in result.stderr
    assert (workdir / "results" / "mccall-c-beta" / "plan.json").is_file()
    assert (workdir / "results" / "mccall-c-beta" / "sweep.zarr" / "zarr.json").is_file()
    assert opened == []
    assert (site / "bin" / "hpc").is_file()  # the console script


def test_a_bad_spec_gives_one_line_outside_the_checkout(site, workdir):
    spec = yaml.safe_load((workdir / "default.yaml").read_text())
    spec["sweep"] = {"wage": {"zip": {"c": [10.0, 20.0]}}}
    (workdir / "bad.yaml").write_text(yaml.safe_dump(spec))
    for command in ("validate", "plan"):
        result, _ = hpc(site, workdir, command, "bad.yaml")
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
        assert "sweep.wage" in result.stderr and "a dimension of mccall's outputs" in result.stderr
    assert not (workdir / "results").exists()


def dry_run_shard_command(directory: Path, pythonpath: str | None) -> str:
    """The shell command of a shard job in a dry run of the checkout's Snakefile."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    result = subprocess.run([PYTHON, "-m", "snakemake", "-n", "-p", "--snakefile", str(REPO / "Snakefile"),
                             "--profile", str(REPO / "profiles" / "local"), "--directory", str(directory)],
                            cwd=directory, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return next(line for line in (result.stdout + result.stderr).splitlines() if " run-shard " in line)


def test_the_workflow_sets_no_pythonpath_where_the_package_is_installed(tmp_path):
    from hpc.core import checkout

    if not checkout.is_installed_here():
        pytest.skip("this checkout is not installed in the test's environment")
    assert "PYTHONPATH=" not in dry_run_shard_command(tmp_path, None)


def test_the_workflow_points_jobs_at_the_checkout_where_another_hpc_comes_first(site, tmp_path):
    """Jobs import the very package the Snakefile does: where the Python that runs Snakemake would
    import another copy (here the wheel's, first on PYTHONPATH), the jobs get the checkout first on
    their PYTHONPATH, and the user's entries after it."""
    assert f"PYTHONPATH={REPO}:{site} " in dry_run_shard_command(tmp_path, str(site))
