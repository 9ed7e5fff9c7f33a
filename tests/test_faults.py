"""Faults and hostile input: nothing half-written is read as data, nothing is executed by a shell."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import SMALL_MCCALL, run_snakemake, write_spec

from hpc.core import paths
from hpc.core.errors import SpecError
from hpc.sweep import store
from hpc.sweep.plan import make_plan
from hpc.sweep.runner import commit_shard, merge_summaries, run_shard
from hpc.sweep.spec import parse_spec


@pytest.mark.fault('zarr .partial leftovers of a killed writer', expect='never read; removed at aggregate; chunk recomputed')
def test_leftovers_of_a_killed_writer_are_never_read_and_are_removed(tmp_path):
    plan = make_plan(parse_spec(SMALL_MCCALL))
    store.create_store(plan, tmp_path)
    reference_root = tmp_path / "ref"
    store.create_store(plan, reference_root)
    for shard in range(plan.n_shards):
        commit_shard(plan, shard, merge_summaries(plan, shard, [run_shard(plan, shard, reference_root)]), reference_root)

    # A writer killed mid-chunk: zarr writes each chunk to a .partial file and renames it, so
    # what is left is a .partial file (never read) and point_done still false.
    chunk = plan.chunk_region(0)
    path = paths.store_path(plan.name, tmp_path)
    torn = path / "reservation_wage" / "c" / "0" / "0.1b2c3d.partial"
    torn.parent.mkdir(parents=True, exist_ok=True)
    torn.write_bytes(b"\x28\xb5\x2f\xfd garbage from a killed writer")
    ds = xr.open_zarr(path, consolidated=False)
    assert not ds["point_done"].any()
    assert np.isnan(ds["reservation_wage"].values).all()  # nothing computed reads as missing

    summary = merge_summaries(plan, 0, [run_shard(plan, 0, tmp_path)])
    assert summary["computed"] == plan.shard_points(0)
    got = zarr.open_group(str(path), mode="r")["reservation_wage"][chunk]
    want = zarr.open_group(str(paths.store_path(plan.name, reference_root)), mode="r")["reservation_wage"][chunk]
    np.testing.assert_array_equal(got, want)
    for shard in range(1, plan.n_shards):
        commit_shard(plan, shard, merge_summaries(plan, shard, [run_shard(plan, shard, tmp_path)]), tmp_path)
    store.finalize_store(plan, store.valid_markers(plan, tmp_path), tmp_path)
    assert not list(path.rglob("*.partial"))


@pytest.mark.parametrize("name", ["$(touch pwned)", "a;touch pwned", "../../escape", "/abs/path", "x\ny", "quote'\"",
                                  "ｆｕｌｌ", "naïve", "a b", "..", ".", "-rf"])
@pytest.mark.fault('hostile name {name!r}', expect='refused, or stays inside results/')
def test_hostile_names_are_refused_or_harmless(name):
    try:
        spec = parse_spec(dict(SMALL_MCCALL, name=name))
    except SpecError as exc:
        assert exc.key == "name"
        return
    # Only plain names pass; they stay inside results/.
    assert name == "-rf"
    assert paths.sweep_dir(spec.name).resolve().parent == paths.RESULTS_ROOT.resolve()


@pytest.mark.fault("spec path with $(...), quotes, ';'", expect='refused; no command runs')
@pytest.mark.slow
def test_spec_path_with_shell_metacharacters_is_refused_and_never_executed(tmp_path):
    # Snakemake passes --config values to its job processes through a shell; a path with
    # $(...) once ran its command there, so such paths are refused before any job starts.
    weird = tmp_path / "dir with 'quotes' and $(touch pwned-dir)"
    weird.mkdir()
    spec = write_spec(weird, dict(SMALL_MCCALL, name="safe", shards=1), filename="s;touch pwned-file.yaml")
    result = run_snakemake(tmp_path, "--config", f"sweep={spec}", check=False)
    assert result.returncode != 0
    assert "has characters a shell would interpret" in result.stderr
    assert not list(tmp_path.rglob("pwned*")) and not (tmp_path / "results").exists()


@pytest.mark.fault('shell and HTML text inside a spec', expect='never executed, escaped in the report')
@pytest.mark.slow
def test_hostile_text_inside_a_spec_is_only_data(tmp_path):
    spec = write_spec(tmp_path, dict(SMALL_MCCALL, name="safe", shards=1,
                                     description="$(touch pwned-desc); `touch pwned-tick` <script>alert(1)</script>"))
    run_snakemake(tmp_path, "--config", f"sweep={spec}")
    assert not list(tmp_path.rglob("pwned*"))
    report = (tmp_path / "results" / "safe" / "report.html").read_text()
    assert "<script>alert(1)</script>" not in report  # escaped in the report


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 256 KiB that the test can grow: a results directory that fills up."""
    import subprocess as sp

    mount = tmp_path / "disk"
    mount.mkdir()
    if sp.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    sp.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
@pytest.mark.fault("the disk fills up mid-shard (a 256 KiB tmpfs)",
                   expect="shard fails naming shard, host and cause; no marker; rerun after freeing space completes")
def test_disk_full_mid_shard_fails_cleanly_and_resumes(small_disk, tmp_path):
    import subprocess as sp

    from conftest import run_hpc

    spec = write_spec(tmp_path, dict(SMALL_MCCALL, name="full", params={"n_wages": 4000}, shards=1, batch_size=4))
    plan = small_disk / "results" / "full" / "plan.json"
    run_hpc("plan", spec, "--output", plan, cwd=small_disk)
    failed = run_hpc("run-shard", plan, 0, cwd=small_disk, check=False)
    assert failed.returncode != 0
    assert "shard 0: process 0/1 on" in failed.stderr and "No space left on device" in failed.stderr
    assert not (plan.parent / "shards" / "shard-0000.json").exists()
    group = zarr.open_group(str(plan.parent / "sweep.zarr"), mode="r")
    assert not group["point_done"][...].all()  # what was not committed stays not done

    sp.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    run_hpc("run-shard", plan, 0, cwd=small_disk)
    ds = xr.open_zarr(plan.parent / "sweep.zarr", consolidated=False)
    assert ds["point_done"].all() and ds["converged"].all()
    assert np.isfinite(ds["value"]).all()


def test_the_faults_table_gives_a_parametrized_fault_one_row_with_its_cases_and_failures():
    from conftest import faults_table

    rows = [("bad block", "refused", "passed", "tests/a.py")] * 3 + [
        ("bad block", "refused", "failed", "tests/a.py"),
        ("a killed rank", "fails fast", "passed", "tests/b.py"),
    ]
    table = faults_table(rows).splitlines()[7:]
    assert table == ["| bad block (4 cases) | refused | 1 of 4 failed | tests/a.py |",
                     "| a killed rank | fails fast | passed | tests/b.py |"]
