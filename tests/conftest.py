"""Shared fixtures: paths, writing specs, running the hpc CLI and Snakemake for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def write_spec(directory: Path, spec: dict, filename: str = "spec.yaml") -> Path:
    path = Path(directory) / filename
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_hpc(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([PYTHON, "-m", "hpc", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"hpc {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def run_snakemake(workdir: Path, *args: str, profile: str = "local", check: bool = True,
                  timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the project's Snakefile with a profile, in ``workdir`` (results go to workdir/results)."""
    cmd = [PYTHON, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--profile",
           str(REPO / "profiles" / profile), "--directory", str(workdir), *map(str, args)]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


SMALL_MCCALL = {
    "name": "mccall-small",
    "model": "mccall",
    "params": {"n_wages": 21},
    "sweep": {"c": {"linspace": [15, 30, 6]}, "beta": [0.95, 0.98]},
    "shards": 3,
}


@pytest.fixture
def small_spec(tmp_path) -> Path:
    return write_spec(tmp_path, SMALL_MCCALL)
