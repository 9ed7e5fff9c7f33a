"""Reading Slurm's accounting (hpc.execution.accounting): its parsers on sacct output captured from
the emulated cluster (Slurm 22.05, slurmdbd + MariaDB), a site without accounting, and one live job
submitted and read back."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time

import pytest
from conftest import cluster_test

from hpc.execution import accounting

# sacct -j 38,40,41,42,43,44 -P --noheader --format=<accounting.FIELDS>, as the cluster answered:
# 38 a 150 MB python busy loop (a newline inside its --wrap: SubmitLine spans two lines);
# 40 an array of 2 (40_0 has raw id 41); 42 (exit 1) and 43 (srun step of 200 MB, 2 CPUs) the
# same comment and job name, as Snakemake resubmits a shard; 44 --mem-per-cpu=500M with 2 CPUs.
CAPTURED_STEPS = """\
38|38|test-uuid-1|COMPLETED|0:0|n1|2026-12-01T10:26:28|2026-12-01T10:26:28|2026-12-01T10:26:32|4|00:03.119|1|500M||/tmp/trace_jobs||sbatch --wrap python3 -c "a=bytearray(150*1024*1024); import time; s=time.time()
while time.time()-s<3: pass" --mem=500M -c 1 --comment rule_run_shard_wildcards_0007 -J test-uuid-1 -o %j.out
38.batch|38.batch|batch|COMPLETED|0:0|n1|2026-12-01T10:26:28|2026-12-01T10:26:28|2026-12-01T10:26:32|4|00:03.119|1||168432K|||
40_0|41|wrap|COMPLETED|0:0|n1|2026-12-01T10:26:28|2026-12-01T10:26:28|2026-12-01T10:26:30|2|00:00.002|1|2G||/tmp/trace_jobs||sbatch --wrap sleep 1 -a 0-1 --mem=2G -o %A_%a.out
40_0.batch|41.batch|batch|COMPLETED|0:0|n1|2026-12-01T10:26:28|2026-12-01T10:26:28|2026-12-01T10:26:30|2|00:00.002|1|||||
40_1|40|wrap|COMPLETED|0:0|n1|2026-12-01T10:26:28|2026-12-01T10:26:28|2026-12-01T10:26:30|2|00:00.002|1|2G||/tmp/trace_jobs||sbatch --wrap sleep 1 -a 0-1 --mem=2G -o %A_%a.out
40_1.batch|40.batch|batch|COMPLETED|0:0|n1|2026-12-01T10:26:28|2026-12-01T10:26:28|2026-12-01T10:26:30|2|00:00.002|1|||||
42|42|run-uuid-A|FAILED|1:0|n1|2026-12-01T10:28:55|2026-12-01T10:28:56|2026-12-01T10:28:56|0|00:00.001|1|1G||/tmp/trace_jobs2||sbatch -J run-uuid-A --comment rule_run_shard_wildcards_0003 --mem=1G -o %j.out --wrap exit 1
42.batch|42.batch|batch|FAILED|1:0|n1|2026-12-01T10:28:56|2026-12-01T10:28:56|2026-12-01T10:28:56|0|00:00.001|1|||||
43|43|run-uuid-A|COMPLETED|0:0|n1|2026-12-01T10:28:57|2026-12-01T10:28:59|2026-12-01T10:29:03|4|00:04.138|2|1G||/tmp/trace_jobs2||sbatch -J run-uuid-A --comment rule_run_shard_wildcards_0003 -c 2 --mem=1G -o %j.out --wrap srun python3 -c "a=bytearray(200*1024*1024); import time; s=time.time()
while time.time()-s<4: pass"
43.batch|43.batch|batch|COMPLETED|0:0|n1|2026-12-01T10:28:59|2026-12-01T10:28:59|2026-12-01T10:29:03|4|00:00.009|2||10572K|||
43.0|43.0|python3|COMPLETED|0:0|n1|2026-12-01T10:28:59|2026-12-01T10:28:59|2026-12-01T10:29:03|4|00:04.129|2||218224K|||srun python3 -c a=bytearray(200*1024*1024); import time; s=time.time()
while time.time()-s<4: pass
44|44|run-uuid-A|COMPLETED|0:0|n1|2026-12-01T10:28:57|2026-12-01T10:28:59|2026-12-01T10:29:02|3|00:00.114|2|1000M||/tmp/trace_jobs2||sbatch -J run-uuid-A --comment rule_run_shard_wildcards_0004 -c 2 --mem-per-cpu=500M -o %j.out --wrap python3 -c "a=bytearray(50*1024*1024); import time; time.sleep(3)"
44.batch|44.batch|batch|COMPLETED|0:0|n1|2026-12-01T10:28:59|2026-12-01T10:28:59|2026-12-01T10:29:02|3|00:00.114|2||66120K|||
"""

# sacct -X --name=run-uuid-A -S 2026-12-01T00:00:00 -E now: note the job lines' TotalCPU, 0 under -X.
CAPTURED_X = """\
42|42|run-uuid-A|FAILED|1:0|n1|2026-12-01T10:28:55|2026-12-01T10:28:56|2026-12-01T10:28:56|0|00:00:00|1|1G||/tmp/trace_jobs2||sbatch -J run-uuid-A --comment rule_run_shard_wildcards_0003 --mem=1G -o %j.out --wrap exit 1
43|43|run-uuid-A|COMPLETED|0:0|n1|2026-12-01T10:28:57|2026-12-01T10:28:59|2026-12-01T10:29:03|4|00:00:00|2|1G||/tmp/trace_jobs2||sbatch -J run-uuid-A --comment rule_run_shard_wildcards_0003 -c 2 --mem=1G -o %j.out --wrap srun python3 -c "a=bytearray(200*1024*1024); import time; s=time.time()
while time.time()-s<4: pass"
44|44|run-uuid-A|COMPLETED|0:0|n1|2026-12-01T10:28:57|2026-12-01T10:28:59|2026-12-01T10:29:02|3|00:00:00|2|1000M||/tmp/trace_jobs2||sbatch -J run-uuid-A --comment rule_run_shard_wildcards_0004 -c 2 --mem-per-cpu=500M -o %j.out --wrap python3 -c "a=bytearray(50*1024*1024); import time; time.sleep(3)"
"""


def local(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()  # sacct prints local time


def records(text=CAPTURED_STEPS):
    return accounting.records_from_rows(accounting.parse_rows(text, delimiter="|"))


@pytest.mark.parametrize("text, seconds", [
    ("00:03.119", 3.119), ("00:00:04", 4), ("12:34", 754), ("1-02:03:04", 93784), ("10-00:00:00", 864000),
    ("2-03:04", 2 * 86400 + 3 * 3600 + 4 * 60), ("01:02:03.5", 3723.5), ("", None), ("INVALID", None),
    (None, None)])
def test_slurm_durations(text, seconds):
    got = accounting.parse_duration(text)
    assert got == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize("text, kwargs, mb", [
    ("168432K", {}, 168432 / 1024), ("500M", {}, 500), ("2G", {}, 2048), ("4000Mn", {"nodes": 2}, 8000),
    ("1Gc", {"cpus": 4}, 4096), ("4000", {"bare_unit": "M"}, 4000), ("1048576", {}, 1.0), ("0", {}, 0.0),
    ("", {}, None), ("16?", {}, None)])
def test_memory_fields(text, kwargs, mb):
    got = accounting.parse_memory_mb(text, **kwargs)
    assert got == (pytest.approx(mb) if mb is not None else None)


def test_node_lists():
    assert accounting.expand_nodes("n[1-3,5],gpu01") == ["n1", "n2", "n3", "n5", "gpu01"]
    assert accounting.expand_nodes("node[008-010]") == ["node008", "node009", "node010"]
    assert accounting.expand_nodes("None assigned") == []


def test_rows_put_back_together_where_the_submit_line_has_a_newline():
    rows = accounting.parse_rows(CAPTURED_STEPS, delimiter="|")
    assert [r["JobID"] for r in rows] == ["38", "38.batch", "40_0", "40_0.batch", "40_1", "40_1.batch", "42",
                                          "42.batch", "43", "43.batch", "43.0", "44", "44.batch"]
    assert rows[0]["SubmitLine"].endswith("-J test-uuid-1 -o %j.out") and "\n" in rows[0]["SubmitLine"]


def test_job_records_from_captured_output():
    got = records()
    assert sorted(got) == ["38", "40", "41", "42", "43", "44"]  # keyed by raw id: SLURM_JOB_ID in the job
    job = got["38"]
    assert (job["state"], job["exit_code"], job["nodes"], job["array_task"]) == ("COMPLETED", "0:0", "n1", None)
    assert job["submit"] == local("2026-12-01T10:26:28") and job["job_end"] == local("2026-12-01T10:26:32")
    assert job["queue_wait_s"] == 0.0 and job["elapsed_s"] == 4.0
    assert job["total_cpu_s"] == pytest.approx(3.119)
    assert job["cpu_efficiency"] == pytest.approx(3.119 / (4 * 1), abs=1e-4)
    assert job["max_rss_mb"] == pytest.approx(168432 / 1024, abs=1e-3)  # from the batch step
    assert job["req_mem_mb"] == 500
    assert job["_comment"] == "rule_run_shard_wildcards_0007"  # not stored: read from SubmitLine
    assert got["41"]["array_task"] == 0 and got["40"]["array_task"] == 1
    assert got["42"]["state"] == "FAILED" and got["42"]["exit_code"] == "1:0" and got["42"]["cpu_efficiency"] is None
    srun = got["43"]  # the peak over the steps: the srun step's 218224K, not the batch step's
    assert srun["max_rss_mb"] == pytest.approx(218224 / 1024, abs=1e-3)
    assert srun["queue_wait_s"] == local("2026-12-01T10:28:59") - local("2026-12-01T10:28:57") == 2
    assert srun["cpu_efficiency"] == pytest.approx(4.138 / (4 * 2), abs=1e-4)
    assert got["44"]["req_mem_mb"] == 1000  # --mem-per-cpu=500M on 2 CPUs: Slurm 22.05 prints the total


def test_attempts_count_the_jobs_of_a_shard_in_one_snakemake_run(monkeypatch):
    rows = accounting.parse_rows(CAPTURED_X, delimiter="|")
    monkeypatch.setattr(accounting, "sacct", lambda args, fields=accounting.FIELDS: rows)
    found = records()
    chosen = {j: found[j] for j in ("42", "43", "44", "38")}
    accounting.count_attempts(chosen)
    assert {j: r["attempt"] for j, r in chosen.items()} == {"42": 1, "43": 2, "44": 1, "38": 1}
    # 38 (another job name) is not in this answer: it is at least its own first attempt
    assert rows[0]["TotalCPU"] == "00:00:00"  # why job_records does not read TotalCPU under -X


def test_no_sacct_or_no_accounting_gives_empty_records_and_never_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert accounting.job_records(["38"]) == {}
    fake = tmp_path / "sacct"
    fake.write_text("#!/bin/sh\necho 'sacct: error: Slurm accounting storage is disabled' >&2\nexit 1\n")
    fake.chmod(0o755)
    assert accounting.job_records(["38"]) == {}
    fake.write_text("#!/bin/sh\necho 'garbage without fields'\n")
    assert accounting.job_records(["38"]) == {}
    assert accounting.job_records([None, ""]) == {}


def test_a_live_job_read_back(tmp_path, slurm_cluster):
    script = "python3 -c 'a = bytearray(120 * 1024 * 1024); import time; time.sleep(2)'"
    out = subprocess.run(["sbatch", "--parsable", "-J", "trace-live", "--comment", "rule_run_shard_wildcards_0001",
                          "--mem=700M", "-D", str(tmp_path), "-o", str(tmp_path / "%j.out"), "--wrap", script],
                         capture_output=True, text=True, check=True)
    job = out.stdout.strip().split(";")[0]
    deadline = time.time() + 120
    record = {}
    while time.time() < deadline:
        record = accounting.job_records([job]).get(job, {})
        # slurmdbd completes a job's record in steps (state, then the steps' usage, then the rest)
        if (record.get("state") not in (None, "PENDING", "RUNNING") and record.get("max_rss_mb")
                and record.get("req_mem_mb")):
            break
        time.sleep(2)
    assert record["state"] == "COMPLETED" and record["exit_code"] == "0:0", record
    assert record["req_mem_mb"] == 700 and record["attempt"] == 1
    assert 120 <= record["max_rss_mb"] < 700
    assert record["elapsed_s"] >= 2 and record["queue_wait_s"] >= 0
    assert record["job_end"] - record["job_start"] == pytest.approx(record["elapsed_s"], abs=1)
    assert record["nodes"] and os.path.exists(tmp_path / f"{job}.out")


for _mark in cluster_test:  # slow, cluster, root, Slurm installed
    test_a_live_job_read_back = _mark(test_a_live_job_read_back)


@pytest.mark.parametrize("state, exit_code, cause", [
    ("OUT_OF_MEMORY", "0:125", "memory"), ("TIMEOUT", "0:15", "time"), ("DEADLINE", "0:0", "time"),
    ("NODE_FAIL", "0:0", "node"), ("PREEMPTED", "0:15", "node"), ("BOOT_FAIL", "0:0", "node"),
    ("FAILED", "0:9", "memory"), ("FAILED", "137:0", "memory"),  # OverMemoryKill's SIGKILL
    ("COMPLETED", "0:0", "unknown"), ("FAILED", "1:0", None), ("FAILED", "3:0", None), ("CANCELLED by 0", "0:15", None), ("CANCELLED", "0:0", None),
    (None, None, "unknown"), ("", "", "unknown"), ("PENDING", "0:0", "unknown")])
def test_failure_causes(state, exit_code, cause):
    """Which failures another attempt can help (the cause), and which it cannot (None)."""
    assert accounting.failure_cause(state, exit_code) == cause


def test_an_array_tasks_outcome_by_its_task_id(monkeypatch):
    rows = accounting.parse_rows(CAPTURED_STEPS, delimiter="|")
    asked = []

    def sacct(args, fields=accounting.FIELDS, runner=None):
        asked.append(args)
        return [r for r in rows if r["JobID"] == args[-1] or r["JobIDRaw"] == args[-1]]
    monkeypatch.setattr(accounting, "sacct", sacct)
    got = accounting.job_outcome("40_0")
    assert asked[-1] == ["-j", "40_0"] and got["job_id"] == "41" and got["array_task"] == 0
    assert accounting.job_outcome("42")["state"] == "FAILED" and accounting.job_outcome("99") is None
