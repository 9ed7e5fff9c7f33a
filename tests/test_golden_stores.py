"""The stores the example sweeps produce are bitwise those written before the layout change.

tests/data/golden/*.npz were written by tests/data/golden/make_golden.py with the code before
issue 11's restructuring (commit e8623b0); each spec there is run again here through the real
workflow (Snakemake, local profile) and every array compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_snakemake

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
SPECS = sorted(p.stem for p in GOLDEN.glob("*.yaml"))


def _same_software() -> bool:
    import jax

    return json.loads((GOLDEN / "golden.json").read_text())["jax"] == jax.__version__


@pytest.mark.slow
@pytest.mark.parametrize("stem", SPECS)
def test_store_is_bitwise_the_reference(tmp_path, stem):
    import zarr

    spec = GOLDEN / f"{stem}.yaml"
    run_snakemake(tmp_path, "--config", f"sweep={spec}")
    name = yaml.safe_load(spec.read_text())["name"]
    group = zarr.open_group(str(tmp_path / "results" / name / "sweep.zarr"), mode="r")
    reference = np.load(GOLDEN / f"{stem}.npz", allow_pickle=True)
    assert sorted(name for name, _ in group.arrays()) == sorted(reference.files)
    for key in reference.files:
        got, want = np.asarray(group[key][...]), reference[key]
        if want.dtype == object:
            assert [str(x) for x in got.ravel()] == [str(x) for x in want.ravel()], key
        elif _same_software():
            assert got.dtype == want.dtype, key
            assert np.array_equal(got, want, equal_nan=want.dtype.kind == "f"), key
        else:  # another JAX may compile other instructions: then agree to rounding
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9, err_msg=key)
