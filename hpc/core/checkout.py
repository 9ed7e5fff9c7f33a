"""Whether the hpc package this process runs is installed, or run from a source checkout.

Jobs that Snakemake or dask start are fresh Python processes. Where the package is installed
(``pip install .`` or ``pip install -e .``) they import it as any Python would; where it is run
from a checkout that is not installed (the Snakefile puts its folder on ``sys.path``), they need
``PYTHONPATH`` pointing at that folder, and only then.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import hpc

DISTRIBUTION = "hpc-sweeps"


def package_root() -> Path:
    """The folder that holds the imported ``hpc`` package."""
    return Path(hpc.__file__).resolve().parent.parent


def is_installed_here() -> bool:
    """True when a fresh Python imports this very ``hpc`` without any PYTHONPATH."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return False
    if Path(dist.locate_file("hpc/__init__.py")).resolve() == Path(hpc.__file__).resolve():
        return True  # a regular install, and this process runs it
    direct = dist.read_text("direct_url.json")
    if not direct:
        return False
    info = json.loads(direct)
    editable = info.get("dir_info", {}).get("editable", False)
    url = info.get("url", "")
    return editable and url.startswith("file://") and Path(url[len("file://"):]).resolve() == package_root()


def pythonpath_env() -> dict[str, str]:
    """What a job's environment needs so that it imports this ``hpc``: nothing, or PYTHONPATH."""
    return {} if is_installed_here() else {"PYTHONPATH": str(package_root())}
