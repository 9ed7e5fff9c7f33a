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
IS_ROOT = os.geteuid() == 0


def _have_slurm() -> bool:
    from hpc.cluster.processes import which

    return all(which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged", "slurmdbd", "mariadbd"))


HAVE_SLURM = _have_slurm()
needs_root = pytest.mark.skipif(not IS_ROOT, reason="the emulated cluster needs root")
cluster_test = [
    pytest.mark.slow,
    pytest.mark.cluster,
    needs_root,
    pytest.mark.skipif(not HAVE_SLURM and not os.environ.get("CI"),
                       reason="slurm/munge not installed (make test installs them)"),
]


@pytest.fixture(scope="session")
def slurm_cluster():
    """A 3-node emulated cluster for the session; torn down only if this session started it.

    Skipped on a machine without root or Slurm, except in CI, where it must run.
    """
    from hpc.cluster import emulated as cluster

    if not IS_ROOT or not HAVE_SLURM:
        if os.environ.get("CI"):
            pytest.fail("CI must run the cluster tests: run as root with slurm installed (make test)")
        pytest.skip("needs root and the slurm/munge packages")
    before = cluster.cluster_status()
    # "Was up" by daemons, not node states: nodes busy with someone's jobs are still up.
    was_up = all(d["running"] for d in before["daemons"].values())
    settings = dict(before["settings"]) if was_up else {}  # keyword arguments of cluster_up
    settings["nodes"] = max(3, settings.get("nodes", 3))
    status = cluster.cluster_up(**settings)
    yield status
    if not was_up:
        cluster.cluster_down()


def write_spec(directory: Path, spec: dict, filename: str = "spec.yaml") -> Path:
    path = Path(directory) / filename
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_hpc(*args: str, cwd: Path | None = None, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([PYTHON, "-m", "hpc", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})), timeout=600)
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


# ---------------------------------------------------------------- the faults table (issue 7)
# Tests marked @pytest.mark.fault("what is injected or tried") are collected here. With
# `--faults-doc PATH` (`make faults-doc` passes docs/faults.md), a run that executed every one of
# them writes the table of their outcomes to PATH, so the table in the docs is produced by the
# tests and cannot drift from them. Without the option a test run writes nothing into the tree.

_fault_rows: list[tuple[str, str, str, str]] = []
_fault_items: list = []


def pytest_addoption(parser):
    parser.addoption("--faults-doc", metavar="PATH", default=None,
                     help="write the table of faults injected and their outcomes to PATH (docs/faults.md)")


def pytest_collection_modifyitems(session, config, items):
    _fault_items[:] = [item for item in items if item.get_closest_marker("fault")]


def pytest_runtest_logreport(report):
    if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    for item in _fault_items:
        if item.nodeid == report.nodeid:
            marker = item.get_closest_marker("fault")
            params = getattr(getattr(item, "callspec", None), "params", {})
            text = marker.args[0].format(**params) if params else marker.args[0]
            expected = marker.kwargs.get("expect", "")
            _fault_rows.append((text, expected, report.outcome, item.nodeid.split("::")[0]))


def faults_table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["# Faults injected and bad inputs tried", "",
             "Written by the test suite (tests/conftest.py) from the outcome of every test marked `fault`;",
             "`make faults-doc` runs every test and refreshes it.", "",
             "| fault or input | what must happen | result | test file |", "|---|---|---|---|"]
    cases: dict[tuple[str, str, str], list[str]] = {}  # a parametrized test whose text names no parameter: one row
    for text, expected, outcome, path in rows:
        cases.setdefault((text, expected, path), []).append(outcome)
    for (text, expected, path), outcomes in cases.items():
        cell = text.replace("|", "\\|").replace("\n", "\\n")
        if len(outcomes) > 1:
            cell += f" ({len(outcomes)} cases)"
        failed = [o for o in outcomes if o != "passed"]
        outcome = "passed" if not failed else f"{len(failed)} of {len(outcomes)} {failed[0]}"
        lines.append(f"| {cell} | {expected} | {outcome} | {path} |")
    return "\n".join(lines) + "\n"


def pytest_sessionfinish(session, exitstatus):
    target = session.config.getoption("--faults-doc")
    if not target:
        return
    if not _fault_items or len(_fault_rows) < len(_fault_items):
        sys.stderr.write(f"\nfaults table not written: {len(_fault_rows)} of {len(_fault_items)} fault tests ran\n")
        return  # a partial run leaves the table as it was
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_text(faults_table(_fault_rows))
