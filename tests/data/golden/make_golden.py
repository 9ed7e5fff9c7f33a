"""Write the reference stores the golden test compares against (tests/test_golden_stores.py).

Run once with the code whose results are the reference, from the repository root:

    .venv/bin/python tests/data/golden/make_golden.py

Each spec here runs through the real workflow (Snakemake, local profile) in a temporary folder;
every array of its store is saved to NAME.npz beside the spec, with the versions it was made
with in golden.json. The stores these were first written from predate the layout change of
issue 11 (commit e8623b0), so the test shows that change left the results bitwise as they were.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent


def store_arrays(store: Path) -> dict[str, np.ndarray]:
    import zarr

    group = zarr.open_group(str(store), mode="r")
    return {name: np.asarray(array[...]) for name, array in group.arrays()}


def run_sweep(spec: Path, workdir: Path) -> Path:
    subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                    "--profile", str(REPO / "profiles" / "local"), "--directory", str(workdir),
                    "--config", f"sweep={spec}"], check=True, capture_output=True, timeout=1200)
    import yaml

    name = yaml.safe_load(spec.read_text())["name"]
    return workdir / "results" / name / "sweep.zarr"


def main() -> None:
    import jax

    meta = {"jax": jax.__version__, "numpy": np.__version__, "machine": platform.machine(), "stores": {}}
    for spec in sorted(HERE.glob("*.yaml")):
        with tempfile.TemporaryDirectory() as tmp:
            arrays = store_arrays(run_sweep(spec, Path(tmp)))
        np.savez_compressed(HERE / f"{spec.stem}.npz", **{k: v.astype(object) if v.dtype.kind in "OTU" else v
                                                          for k, v in arrays.items()})
        meta["stores"][spec.stem] = sorted(arrays)
        print(f"{spec.name}: {len(arrays)} arrays", file=sys.stderr)
    (HERE / "golden.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
