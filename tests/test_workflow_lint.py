"""The workflow passes Snakemake's linter: every rule has a log, rule files hold rules only
(helpers live in hpc.sweep.resources and hpc.train.resources), shell commands read params only."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import PYTHON, REPO, write_spec

DASK_SWEEP = {"name": "lint-dask", "model": "mccall", "sweep": {"c": [10.0, 20.0]}, "backend": "dask",
              "dask": {"cluster": "local"}, "shards": 2}


def lint(*config: str) -> subprocess.CompletedProcess:
    cmd = [PYTHON, "-m", "snakemake", "--lint", "--snakefile", str(REPO / "Snakefile")]
    if config:
        cmd += ["--config", *config]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


@pytest.mark.parametrize("config", [
    (),  # the default sweep (workflow/sweeps/default.yaml)
    ("train=workflow/train/mccall-surrogate.yaml",),  # a training run and the sweep it trains on
    ("train=workflow/train/mccall-surrogate-sweep.yaml",),  # a sweep of training runs (workflow/rules/train_sweep.smk)
    ("sweep={dask}",),  # the dask backend's rule
    ("sweep=workflow/sweeps/mccall-adaptive.yaml",),  # an adaptive sweep's rules (workflow/rules/adaptive.smk)
], ids=["default-sweep", "training", "training-sweep", "dask-sweep", "adaptive-sweep"])
def test_snakemake_lint_reports_nothing(config, tmp_path):
    config = tuple(c.format(dask=write_spec(tmp_path, DASK_SWEEP)) for c in config)
    result = lint(*config)
    out = result.stdout + result.stderr
    # A finding is printed as "Lints for rule NAME (line N, FILE):" or "Lints for snakefile FILE:"
    # and makes the exit status 1.
    assert "Lints for" not in out, out[-6000:]
    assert result.returncode == 0, out[-6000:]
    assert "Congratulations, your workflow is in a good condition!" in out
