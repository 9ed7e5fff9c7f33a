"""Whether a fresh Python imports the hpc package this process runs, or needs PYTHONPATH for it.

Jobs that Snakemake or dask start are fresh Python processes. Where the package is installed
(``pip install .`` or ``pip install -e .``) they import it as any Python would; where it is run
from a checkout that is not installed (the Snakefile puts its folder on ``sys.path``), or where
another copy of hpc would come first, they need ``PYTHONPATH`` pointing at this package's
folder, and only then.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import hpc


def package_root() -> Path:
    """The folder that holds the imported ``hpc`` package."""
    return Path(hpc.__file__).resolve().parent.parent


@lru_cache(maxsize=None)
def _fresh_import(python: str, pythonpath: str) -> str | None:
    """Where a fresh ``python`` with this PYTHONPATH finds ``hpc`` (from a neutral folder)."""
    env = dict(os.environ, PYTHONPATH=pythonpath) if pythonpath else {k: v for k, v in os.environ.items()
                                                                        if k != "PYTHONPATH"}
    try:
        res = subprocess.run([python, "-c", "import hpc; print(hpc.__file__)"], cwd="/", env=env,
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def is_installed_here() -> bool:
    """True when a fresh Python (this interpreter, this environment) imports this very ``hpc``."""
    found = _fresh_import(sys.executable, os.environ.get("PYTHONPATH", ""))
    return found is not None and Path(found).resolve() == Path(hpc.__file__).resolve()


def pythonpath_env() -> dict[str, str]:
    """What a job's environment needs so that it imports this ``hpc``: nothing, or PYTHONPATH with
    this package's folder first (and the user's own entries after it)."""
    if is_installed_here():
        return {}
    rest = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(package_root()) + (os.pathsep + rest if rest else "")}
