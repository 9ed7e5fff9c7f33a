"""The execution trace: what each shard's processes measured and Slurm's accounting of its job, in
the store's ``shards`` attribute and in the report; and markers that merge every part's errors and
count processes, not parts (under dask every chunk is a part)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
import zarr
from report_page import parse
from test_execution_accounting import CAPTURED_STEPS

from hpc.core import paths
from hpc.execution import accounting
from hpc.report import build_report
from hpc.sweep import aggregate as aggregate_module
from hpc.sweep import store
from hpc.sweep.aggregate import aggregate
from hpc.sweep.plan import make_plan
from hpc.sweep.runner import commit_shard, merge_summaries, run_shard
from hpc.sweep.spec import parse_spec

BROKEN = "NotImplementedError: variant 'broken' has no solver"
# 2 × 12 points in one shard of 4 chunks of 1 × 6: chunks 0-1 are all variant=fine, 2-3 all broken.
FAULTY = {"name": "faulty-dask", "model": "faulty", "batch_size": 2, "shards": 1,
          "sweep": {"variant": ["fine", "broken"], "x": {"linspace": [0.1, 0.9, 12]}}}
LOCAL = {"name": "traced", "model": "mccall", "params": {"n_wages": 21}, "shards": 2,
         "sweep": {"c": {"linspace": [15, 30, 4]}, "beta": [0.95, 0.98]}}


@pytest.fixture
def faulty(monkeypatch):
    from hpc import models

    monkeypatch.setitem(models._MODULES, "faulty", "faulty_model")  # tests/faulty_model.py


def planned(root, data):
    spec = parse_spec(data, yaml.safe_dump(data, sort_keys=False))
    plan, _ = store.plan_sweep(spec, paths.plan_path(spec.name, root))
    return plan


def part(host, worker, computed, errors=(), start=0.0, cpu_s=1.0, rss=100.0, job_id=None):
    """A chunk's summary as dask_run.solve_chunk returns it (the fields merge_summaries reads)."""
    return {"computed": computed, "non_finite": 0, "not_converged": 0, "failed": 3 * len(errors),
            "errors": [{"static": {"variant": v}, "error": f"error for {v}"} for v in errors],
            "start": start, "end": start + 1.0, "duration_s": 1.0, "host": host, "pid": 1, "job_id": job_id,
            "slurm_restart_count": 0, "process": 0, "devices": ["TFRT_CPU_0"], "compile_s": 0.5, "cpus": [0],
            "cpu_s": cpu_s, "max_rss_mb": rss, "device_peak_mb": None, "worker": worker}


def test_merge_keeps_every_parts_errors_once_and_counts_workers_not_chunks(faulty):
    plan = make_plan(parse_spec(FAULTY))
    parts = [part("a", "tcp://a:1", 3, start=0), part("a", "tcp://a:2", 3, start=1),
             part("a", "tcp://a:1", 3, ["broken"], start=2, rss=300.0), part("b", "tcp://b:1", 3, ["broken", "other"], 3)]
    merged = merge_summaries(plan, 0, parts)
    assert merged["errors"] == [{"static": {"variant": "broken"}, "error": "error for broken"},
                                {"static": {"variant": "other"}, "error": "error for other"}]
    assert merged["processes"] == 3 and merged["devices"] == 3  # three workers ran the four chunks
    assert [(p["host"], p["worker"], p["computed"], p["parts"]) for p in merged["per_process"]] == [
        ("a", "tcp://a:1", 6, 2), ("a", "tcp://a:2", 3, 1), ("b", "tcp://b:1", 3, 1)]
    assert merged["computed"] == 12 and merged["failed"] == 9
    assert merged["process_cpu_s"] == 4.0 and merged["process_max_rss_mb"] == 300.0
    assert merged["job_id"] is None and merged["job_ids"] == []
    # The processes of one multi-process job: one part each, one job id.
    job = merge_summaries(plan, 0, [dict(part("a", None, 6, job_id="7"), process=0),
                                    dict(part("b", None, 6, ["broken"], job_id="7"), process=1)])
    assert (job["processes"], job["devices"], job["job_id"], job["job_ids"]) == (2, 2, "7", ["7"])
    assert job["errors"] == [{"static": {"variant": "broken"}, "error": "error for broken"}]


@pytest.mark.slow
def test_dask_markers_hold_every_chunks_errors_and_the_workers_that_ran_them(tmp_path, faulty):
    import distributed  # noqa: F401  (before dask.config.set: see below)
    from dask import config as dask_config

    from hpc.sweep import dask_run

    # The workers are fresh processes: they learn of the test's model from a preload.
    preload = tmp_path / "register_faulty.py"
    preload.write_text("from hpc import models\nmodels._MODULES['faulty'] = 'faulty_model'\n")
    root = tmp_path / "results"
    plan = planned(root, dict(FAULTY, backend="dask", dask={"cluster": "local", "max_workers": 2}))
    # dask.config.set undoes a key it added by removing it: set before distributed was imported, it
    # added the whole "distributed" section, which the import then filled with every default, and
    # its exit removed them all, for every later test (xr.open_zarr then failed: KeyError 'distributed').
    with dask_config.set({"distributed.worker.preload": [str(preload)]}):
        result = dask_run.run_sweep(str(paths.plan_path(plan.name, root)), {"cluster": "local", "max_workers": 2})
    assert result["chunks"] == plan.n_chunks == 4 and plan.chunks == (1, 6)
    marker = json.loads(paths.marker_path(plan.name, 0, root).read_text())
    assert marker["errors"] == [{"static": {"variant": "broken"}, "error": BROKEN}]
    assert marker["failed"] == 12 and marker["computed"] == 24
    workers = {p["worker"] for p in marker["per_process"]}
    assert 1 <= len(workers) <= 2 and None not in workers
    assert marker["processes"] == len(workers) == len(marker["per_process"])
    assert marker["devices"] == len(workers)  # one CPU device per worker
    assert sum(p["parts"] for p in marker["per_process"]) == plan.n_chunks  # every chunk counted once
    assert sum(p["computed"] for p in marker["per_process"]) == 24
    group = zarr.open_group(str(paths.store_path(plan.name, root)), mode="r")
    np.testing.assert_array_equal(group["failed"][...], [[False] * 12, [True] * 12])

    aggregate(paths.plan_path(plan.name, root))
    page = parse(build_report(plan.name, root))
    assert page.table("plan-against-ran").column("against the plan") == ["as planned"]
    (record,) = store.read_shard_records(paths.store_path(plan.name, root))
    assert record["processes"] == len(workers) and record["trace_source"] == "process"


def run_local(root, data=LOCAL):
    plan = planned(root, data)
    for shard in range(plan.n_shards):
        commit_shard(plan, shard, merge_summaries(plan, shard, [run_shard(plan, shard, root)]), root)
    return plan


def test_a_local_run_records_what_its_processes_measured(tmp_path):
    root = tmp_path / "results"
    plan = run_local(root)
    aggregate(paths.plan_path(plan.name, root))
    records = store.read_shard_records(paths.store_path(plan.name, root))
    for shard, record in enumerate(records):
        marker = json.loads(paths.marker_path(plan.name, shard, root).read_text())
        (proc,) = marker["per_process"]
        assert record["trace_source"] == "process" and record["job_id"] is None
        assert record["elapsed_s"] == marker["duration_s"]
        assert record["total_cpu_s"] == proc["cpu_s"] > 0
        assert record["max_rss_mb"] == proc["max_rss_mb"] > 50  # a Python process with JAX loaded
        assert record["req_mem_mb"] is None and record["cpu_efficiency"] is None and record["state"] is None
    page = parse(build_report(plan.name, root))
    table = page.table("resource-use")
    assert table.columns == ["shard", "host", "processes", "elapsed [s]", "CPU time [s]", "peak RSS [MB]",
                             "device peak [MB]"]
    for row, record in zip(table.records(), records):
        assert float(row["elapsed [s]"]) == pytest.approx(record["elapsed_s"], rel=1e-5)
        assert float(row["CPU time [s]"]) == pytest.approx(record["total_cpu_s"], rel=1e-5)
        assert float(row["peak RSS [MB]"]) == pytest.approx(record["max_rss_mb"], rel=1e-5)
    assert "right-sizing" not in [h for h in page.section("execution").lines]
    assert not any(line.startswith("Shards used at most") for line in page.section("execution").lines)


def test_slurm_accounting_in_the_store_and_the_reports_right_sizing(tmp_path, monkeypatch):
    # A sweep whose shards were committed by Slurm jobs 43 and 44: their accounting is the one
    # captured from the cluster (tests/test_execution_accounting.py), as sacct would give it.
    root = tmp_path / "results"
    plan = run_local(root)
    for shard, job in enumerate(("43", "44")):
        marker = paths.marker_path(plan.name, shard, root)
        marker.write_text(json.dumps(dict(json.loads(marker.read_text()), job_id=job, job_ids=[job])))
    captured = accounting.records_from_rows(accounting.parse_rows(CAPTURED_STEPS, delimiter="|"))
    asked = []

    def job_records(job_ids, since=None):
        asked.append((sorted(job_ids), since))
        return {j: dict({k: v for k, v in captured[j].items() if not k.startswith("_")}, attempt=int(j) - 41)
                for j in job_ids}

    monkeypatch.setattr(aggregate_module.accounting, "job_records", job_records)
    aggregate(paths.plan_path(plan.name, root))
    assert asked[0][0] == ["43", "44"] and asked[0][1] is not None  # since the store was created
    records = store.read_shard_records(paths.store_path(plan.name, root))
    for record, job in zip(records, ("43", "44")):
        assert record["trace_source"] == "slurm" and record["job_id"] == job
        for key in ("state", "exit_code", "nodes", "submit", "job_start", "job_end", "queue_wait_s", "elapsed_s",
                    "total_cpu_s", "cpu_efficiency", "max_rss_mb", "req_mem_mb", "array_task"):
            assert record[key] == captured[job][key], key
        assert record["process_cpu_s"] > 0  # what the runner measured stays beside it
    assert [r["attempt"] for r in records] == [2, 3]

    page = parse(build_report(plan.name, root))
    rows = page.table("resource-use").records()
    # Independently: 43 asked 1G and peaked at 218224K over 4 s on 2 CPUs using 4.138 s of CPU;
    # 44 asked 2 × 500M and peaked at 66120K over 3 s on 2 CPUs using 0.114 s.
    want = {"43": (1024, 218224 / 1024, 4.138 / (4 * 2), 2, 4), "44": (1000, 66120 / 1024, 0.114 / (3 * 2), 2, 3)}
    for row in rows:
        req, rss, eff, wait, run = want[row["job"]]
        assert float(row["requested memory [MB]"]) == pytest.approx(req)
        assert float(row["peak RSS [MB]"]) == pytest.approx(rss, abs=1e-3)
        assert float(row["memory used [%]"]) == pytest.approx(100 * rss / req, abs=0.051)
        assert float(row["CPU efficiency [%]"]) == pytest.approx(100 * eff, abs=0.051)
        assert (float(row["queue wait [s]"]), float(row["run time [s]"])) == (wait, run)
        assert row["state"] == "COMPLETED" and row["nodes"] == "n1"
    share = max(218224 / 1024 / 1024, 66120 / 1024 / 1000)
    advised = math.ceil(218224 / 1024 * 1.2 / 100) * 100
    assert advised == 300
    sentence = (f"Shards used at most {100 * share:.0f}% of the 1000–1024 MB requested "
                f"(peak {218224 / 1024:.0f} MB): {advised} MB would do.")
    assert sentence in page.section("execution").lines


def test_a_process_started_by_a_large_parent_records_its_own_peak_memory_not_the_parents():
    """A shard job is started by fork and exec from Snakemake (or pytest), which may hold far more
    memory than the shard: ru_maxrss of the child keeps the parent's size at the fork, so the
    marker's process_max_rss_mb was the parent's (1.5 GB recorded for a 250 MB shard in CI)."""
    import subprocess
    import sys

    ballast = bytearray(800 * 2**20)  # the parent holds 800 MB, touched
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    code = "from hpc.sweep.runner import process_usage; print(process_usage()['max_rss_mb'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    child_mb = float(out.stdout)
    # a Python importing numpy and the runner is some tens of MB; the parent's ballast alone is 800
    assert child_mb < 400, child_mb
    del ballast
