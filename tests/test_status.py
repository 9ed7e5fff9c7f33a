"""`hpc status`: shards done, running, pending and failed, throughput and time left, `--watch`."""

from __future__ import annotations

import io
import os
import subprocess
import time
from types import SimpleNamespace

import pytest
import yaml
from conftest import PYTHON, REPO, SMALL_MCCALL, cluster_test, run_hpc, write_spec

from hpc.core import paths
from hpc.execution import accounting, slurm_plugin
from hpc.sweep import status, store
from hpc.sweep.aggregate import aggregate
from hpc.sweep.runner import commit_shard, merge_summaries, run_shard
from hpc.sweep.spec import parse_spec

FOUR_SHARDS = dict(SMALL_MCCALL, name="four", sweep={"c": {"linspace": [15, 30, 8]}}, shards=4)


def plan_and_run(root, data, shards=()):
    spec = parse_spec(data, yaml.safe_dump(data, sort_keys=False))
    plan, _ = store.plan_sweep(spec, paths.plan_path(spec.name, root))
    for shard in shards:
        commit_shard(plan, shard, merge_summaries(plan, shard, [run_shard(plan, shard, root)]), root)
    return plan


def job(shard, state, job_id, workdir, submit=None, start=None, nodes="n1", reason="None"):
    now = time.time()
    return {"job_id": str(job_id), "job_name": "3a1c4737-afad-4e72-bcef-124618cd90a9",
            "comment": f"rule_run_shard_wildcards_{shard:04d}", "state": state, "submit": submit or now,
            "start": start, "end": None, "nodes": nodes, "reason": reason, "workdir": str(workdir)}


@pytest.fixture(scope="module")
def half_done(tmp_path_factory):
    """A sweep of four shards, two of them committed (0 and 2), not aggregated."""
    root = tmp_path_factory.mktemp("w") / "results"
    plan_and_run(root, FOUR_SHARDS, shards=[0, 2])
    return root


def test_states_from_slurm_queue(half_done):
    workdir = half_done.parent
    jobs = [
        job(1, "FAILED", 11, workdir, start=time.time() - 30),
        job(1, "RUNNING", 15, workdir, start=time.time() - 10, nodes="n2"),  # the retry: the latest job counts
        job(3, "PENDING", 16, workdir, reason="Resources"),
        job(3, "RUNNING", 99, "/elsewhere"),  # another workflow's directory
        job(7, "RUNNING", 98, workdir),  # no such shard in this plan
        dict(job(2, "RUNNING", 97, workdir), comment="rule_aggregate"),
    ]
    st = status.sweep_status("four", half_done, jobs=jobs)
    assert st["shard_counts"] == {"done": 2, "running": 1, "pending": 1, "failed": 0}
    assert [s["state"] for s in st["shards"]] == ["done", "running", "done", "pending"]
    running = st["shards"][1]
    assert running["job_id"] == "15" and running["attempts"] == 2 and running["host"] == "n2"
    assert st["points_done"] == 4 and st["points_total"] == 8 and st["slurm_jobs"] == 3
    assert st["throughput"] > 0 and st["eta_s"] > 0 and not st["aggregated"]
    text = status.format_status(st)
    assert "2/4 shards done, 4/8 points done" in text
    assert "shards: 2 done, 1 running, 1 pending, 0 failed" in text
    assert "shard 0001 running (job 15 RUNNING on n2, attempt 2): 0/2 points committed; log " in text
    assert "shard 0003 pending (job 16 PENDING on n1, attempt 1; reason: Resources)" in text
    assert "left" in text and "\x1b" not in text and "[#" not in text

    jobs[1] = dict(job(1, "TIMEOUT", 15, workdir, start=time.time() - 10), exit_code=0, signal=15,
                   slurm_log=f"{workdir}/.snakemake/slurm_logs/rule_run_shard/0001/15.log")
    st = status.sweep_status("four", half_done, jobs=jobs)
    assert st["shards"][1]["state"] == "failed" and not st["stopped"]  # shard 3 is still queued
    assert (f"shard 0001 FAILED (job 15 TIMEOUT on n1, exit 0 signal 15, attempt 2; log "
            f"{status.shard_log_path('four', 1, half_done)}, Slurm's log {workdir}/.snakemake/slurm_logs/"
            "rule_run_shard/0001/15.log)") in status.format_status(st)
    jobs[2] = job(3, "CANCELLED", 16, workdir)
    assert status.sweep_status("four", half_done, jobs=jobs)["stopped"]


def test_jobs_of_an_earlier_sweep_under_the_same_name_are_ignored(half_done):
    old = job(1, "FAILED", 3, half_done.parent, submit=time.time() - 86400)
    st = status.sweep_status("four", half_done, jobs=[old])
    assert st["slurm_jobs"] == 0 and st["shards"][1]["state"] == "pending"


def test_states_from_logs_without_a_scheduler(half_done, tmp_path):
    root = tmp_path / "results"
    import shutil

    shutil.copytree(half_done / "four", root / "four")
    status.shard_log_path("four", 1, root).parent.mkdir(parents=True, exist_ok=True)
    status.shard_log_path("four", 1, root).write_text(
        "shard 1: n1: 2 points in 2 chunks to compute\nshard 1: 1/2 points (50%), 0.4 s\n")
    status.shard_log_path("four", 3, root).write_text(
        "shard 3: n1: 2 points\nTraceback (most recent call last):\nRuntimeError: shard 3: n1 failed: boom\n")
    st = status.sweep_status("four", root, jobs=False)
    assert [s["state"] for s in st["shards"]] == ["done", "running", "done", "failed"]
    assert st["shards"][1]["solved"] == 1 and st["points_solved"] == 5
    text = status.format_status(st, bar=True)
    assert "[" + "#" * 20 + "+" * 5 + "-" * 15 + "]  62.5%" in text
    assert "about 1 more solved by running shards" in text
    assert (f"shard 0003 FAILED (RuntimeError: shard 3: n1 failed: boom; log "
            f"{status.shard_log_path('four', 3, root)})") in text
    assert st["stopped"] is False  # shard 1 still counts as running


def test_a_model_error_in_a_running_shard_log_is_not_a_failure(half_done, tmp_path):
    """A model's message with "Error" in it (the runner logs it and goes on) leaves the shard running;
    a traceback at the end, the runner's failure line or Slurm's kill line mean it died."""
    import shutil

    root = tmp_path / "results"
    shutil.copytree(half_done / "four", root / "four")
    log1, log3 = status.shard_log_path("four", 1, root), status.shard_log_path("four", 3, root)
    log1.parent.mkdir(parents=True, exist_ok=True)
    model_error = ("shard 1: n1: 2 points in 2 chunks to compute\n"
                   "shard 1: the model failed for {'c': 15.0}: ValueError: Error: value function failed: nan\n"
                   "shard 1: 1/2 points (50%), 0.4 s\n")
    log1.write_text(model_error)
    log3.write_text("shard 3: n1: 2 points\nUserWarning: Error estimate is large\nRuntimeError in a message\n")
    st = status.sweep_status("four", root, jobs=False)
    assert [s["state"] for s in st["shards"]] == ["done", "running", "done", "running"]

    assert status.log_failure(model_error) is None
    printed = ("Traceback (most recent call last):\n  File \"m.py\", line 3, in solve\nValueError: nan\n"
               "shard 1: the model failed for {'c': 15.0}: nan\nshard 1: 1/2 points (50%), 0.4 s\n")
    assert status.log_failure(printed) is None  # a traceback the model printed, and the runner went on
    died = model_error + ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                          "    run()\n    ^^^^^\nRuntimeError: shard 1: process 0/1 on n1 failed: "
                          "ValueError: bad\n")
    assert status.log_failure(died) == "RuntimeError: shard 1: process 0/1 on n1 failed: ValueError: bad"
    assert status.log_failure(model_error + "Traceback (most recent call last):\n  File \"x\", line 1\n"
                              "KeyboardInterrupt\n") == "KeyboardInterrupt"
    assert status.log_failure("shard 2: process 1/2 on n2 failed: OSError: disk\n").startswith("shard 2: process")
    for slurm_line in ("slurmstepd: error: *** JOB 41 ON n1 CANCELLED AT 2026-12-01T10:25:58 ***",
                       "slurmstepd: error: *** JOB 41 ON n1 CANCELLED AT 2026-12-01T10:25:58 DUE TO TIME LIMIT ***",
                       "slurmstepd: error: Detected 1 oom_kill event in StepId=41.batch. Some of the step "
                       "tasks have been OOM Killed."):
        assert status.log_failure(model_error + slurm_line + "\n") == slurm_line
    log1.write_text(died)
    st = status.sweep_status("four", root, jobs=False)
    assert st["shards"][1]["state"] == "failed" and "failed: ValueError: bad" in st["shards"][1]["failure"]
    assert "shard 0001 FAILED (RuntimeError: shard 1: process 0/1 on n1 failed" in status.format_status(st)


def test_watch_ends_when_a_shard_has_failed_on_two_polls(half_done, tmp_path):
    import shutil

    root = tmp_path / "results"
    shutil.copytree(half_done / "four", root / "four")
    log = status.shard_log_path("four", 1, root)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("Traceback (most recent call last):\n  File \"x\", line 1\nRuntimeError: shard 1: n1 failed: x\n")
    out = io.StringIO()
    assert status.watch("four", root, interval=0, stream=out, jobs=False) == 1
    assert out.getvalue().count("shards: 2 done, 0 running, 1 pending, 1 failed") == 2  # shard 3 has not started
    assert "failed for good (failed on two polls in a row): shard 0001" in out.getvalue()
    workdir = root.parent
    polls = iter([[job(1, "FAILED", 5, workdir)], [job(1, "FAILED", 5, workdir), job(1, "PENDING", 6, workdir)],
                  [job(1, "FAILED", 6, workdir)], [job(1, "FAILED", 6, workdir)]])
    real = status.sweep_status
    calls = []

    def fake(name, root, jobs, sources, cache=None):
        calls.append(1)
        return real(name, root, jobs=next(polls))

    status.sweep_status = fake
    try:  # a retry between two polls: the first failure is not for good, the retry's failure is
        assert status.watch("four", root, interval=0, stream=io.StringIO()) == 1 and len(calls) == 4
    finally:
        status.sweep_status = real


def test_a_done_shard_names_the_job_its_marker_records(half_done, tmp_path):
    import json
    import shutil

    root = tmp_path / "results"
    shutil.copytree(half_done / "four", root / "four")
    marker = paths.marker_path("four", 2, root)
    marker.write_text(json.dumps(dict(json.loads(marker.read_text()), job_id="777")))  # as under Slurm
    st = status.sweep_status("four", root, jobs=False)
    assert st["shards"][2]["job_id"] == "777" and "job_id" not in st["shards"][1]


def test_times_are_read_and_shown_one_way():
    from hpc.core import timefmt

    assert [timefmt.duration(s) for s in (None, float("nan"), -3, 0.0523, 12.34, 65, 3725)] == [
        "unknown", "unknown", "0 s", "0.0523 s", "12.3 s", "1 min 05 s", "1 h 02 min"]
    assert timefmt.iso_epoch("1970-01-01T00:01:00+00:00") == 60.0
    assert timefmt.iso_epoch("N/A") is None and timefmt.iso_epoch("") is None and timefmt.iso_epoch(None) is None
    assert timefmt.epoch_text(60.0) == "1970-01-01 00:01:00 UTC"
    assert abs(timefmt.iso_epoch(timefmt.now_iso()) - time.time()) < 5


def test_squeue_output_is_parsed(monkeypatch):
    out = "".join(status.DELIMITER.join(fields) + status.DELIMITER + "\n" for fields in [
        ["120", "3a1c", "rule_run_shard_wildcards_0002", "COMPLETED", "2026-11-23T03:00:36", "2026-11-23T03:00:36",
         "2026-11-23T03:01:09", "n1", "None", "1", "/tmp/a|b/.snakemake/slurm_logs/rule_run_shard/0002/%j.log",
         "/tmp/a|b", "120", "N/A"],
        ["121", "3a1c", "rule_run_shard_wildcards_0003", "PENDING", "2026-11-23T03:00:36", "N/A", "N/A", "",
         "Resources", "0", "slurm-%j.out", "/tmp/x", "121", "N/A"]])
    monkeypatch.setattr(status.shutil, "which", lambda name: "/usr/bin/squeue")
    calls = []

    def runner(cmd, **kwargs):
        calls.append(cmd)
        return SimpleNamespace(returncode=0, stdout=out)

    first, second = status.squeue_jobs(runner)
    assert first["array_job_id"] is None and first["array_task"] is None
    assert calls[0][:5] == ["squeue", "-h", "-t", "all", "-O"] and calls[0][5].startswith("JobID:|#|,Name:|#|,")
    assert first["workdir"] == "/tmp/a|b" and first["state"] == "COMPLETED" and first["end"] > first["start"]
    assert first["restarts"] == 1 and first["slurm_log"] == "/tmp/a|b/.snakemake/slurm_logs/rule_run_shard/0002/120.log"
    assert second["start"] is None and second["reason"] == "Resources" and second["nodes"] == ""
    assert second["slurm_log"] == "/tmp/x/slurm-121.out"
    assert status.squeue_jobs(lambda cmd, **kw: SimpleNamespace(returncode=1, stdout="")) is None


SUBMIT = ("sbatch --parsable --job-name {uuid} --output {wd}/.snakemake/slurm_logs/rule_run_shard/{s}/%j.log "
          "--export=ALL --comment rule_run_shard_wildcards_{s} -p debug -t 30 --mem 1000 --requeue -D {wd} "
          "--wrap=/usr/bin/python -m snakemake --comment x --output 'y'")


def sacct_line(**fields) -> str:
    """One line of ``sacct --parsable2`` in hpc.execution.accounting.LIST_FIELDS' order."""
    return accounting.DELIMITER.join(fields.get(f, "") for f in accounting.LIST_FIELDS)


def test_sacct_output_is_parsed(monkeypatch):
    """sacct -X -D: a requeued job once per run (its restarts), the comment from the submit line where
    slurm.conf lacks AccountingStoreFlags=job_comment, 'CANCELLED by 0' is CANCELLED, a submit line
    with a newline in its --wrap (the job was lost when status had its own sacct reader)."""
    wd = "/tmp/w|d"

    def line(job, name, comment, state, exit, submit, start, end, nodes, reason, submit_line, workdir):
        return sacct_line(JobID=job, JobIDRaw=job, JobName=name, Comment=comment, State=state, ExitCode=exit,
                          Submit=submit, Start=start, End=end, NodeList=nodes, Reason=reason,
                          SubmitLine=submit_line, WorkDir=workdir)
    out = "\n".join([
        line("28", "u1", "", "NODE_FAIL", "0:0", "2026-12-01T10:18:46", "2026-12-01T10:18:46",
             "2026-12-01T10:19:38", "n1", "None", SUBMIT.format(uuid="u1", wd=wd, s="0000"), wd),
        line("28", "u1", "", "COMPLETED", "0:0", "2026-12-01T10:19:38", "2026-12-01T10:21:48",
             "2026-12-01T10:21:53", "n2", "BeginTime", SUBMIT.format(uuid="u1", wd=wd, s="0000"), wd),
        line("29", "u1", "rule_run_shard_wildcards_0001", "CANCELLED by 0", "0:15", "2026-12-01T10:19:00",
             "Unknown", "2026-12-01T10:19:05", "None assigned", "None", "sbatch --wrap=true", wd),
        line("30", "u1", "", "FAILED", "3:0", "2026-12-01T10:19:00", "2026-12-01T10:19:01",
             "2026-12-01T10:19:02", "n3", "None", "sbatch -o out-%j.txt -J u1 x.sh", "/tmp/z"),
        line("31", "u1", "", "RUNNING", "0:0", "2026-12-01T10:19:00", "2026-12-01T10:19:01", "Unknown", "n3",
             "None", "sbatch --comment rule_run_shard_wildcards_0002 -D /tmp/z --wrap=python -c 'a = 1\nb = 2'",
             "/tmp/z"),
    ])
    monkeypatch.setattr(accounting.shutil, "which", lambda name: "/usr/bin/sacct")
    calls = []

    def runner(cmd, **kwargs):
        calls.append(cmd)
        return SimpleNamespace(returncode=0, stdout=out + "\n", stderr="")

    requeued, cancelled, failed, wrapped = status.sacct_jobs(time.time(), runner)
    assert calls[0][:3] == ["sacct", "-X", "-D"] and "--starttime" in calls[0] and "--parsable2" in calls[0]
    assert requeued["restarts"] == 1 and requeued["state"] == "COMPLETED" and requeued["nodes"] == "n2"
    assert requeued["comment"] == "rule_run_shard_wildcards_0000" and requeued["workdir"] == wd
    assert requeued["slurm_log"] == f"{wd}/.snakemake/slurm_logs/rule_run_shard/0000/28.log"
    assert requeued["reason"] == "BeginTime" and requeued["start"] == local("2026-12-01T10:21:48")
    assert cancelled["reason"] is None and failed["reason"] is None  # sacct's "None": Slurm names no reason
    assert (cancelled["comment"], cancelled["nodes"], cancelled["start"]) == ("rule_run_shard_wildcards_0001", "", None)
    assert status.normal_state(cancelled["state"]) == "CANCELLED" and cancelled["signal"] == 15
    assert (failed["exit_code"], failed["signal"], failed["slurm_log"]) == (3, 0, "/tmp/z/out-30.txt")
    assert failed["comment"] == ""
    assert wrapped["comment"] == "rule_run_shard_wildcards_0002" and wrapped["end"] is None
    assert wrapped["submit_line"].endswith("b = 2'")
    disabled = SimpleNamespace(returncode=1, stdout="", stderr="Slurm accounting storage is disabled")
    assert status.sacct_jobs(None, lambda cmd, **kw: disabled) is None


def local(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))  # sacct prints local time


def test_a_job_whose_comment_sacct_did_not_keep_is_found_by_its_log(half_done):
    job3 = dict(job(3, "OUT_OF_MEMORY", 40, half_done.parent), comment="", exit_code=0, signal=125,
                slurm_log=f"{half_done.parent}/.snakemake/slurm_logs/rule_run_shard/0003/40.log")
    st = status.sweep_status("four", half_done, jobs=[job3])
    assert st["shards"][3]["state"] == "failed" and st["shards"][3]["slurm_state"] == "OUT_OF_MEMORY"


def test_array_tasks_are_told_apart_by_the_plugins_tasks_file(half_done, monkeypatch):
    """Every task of an array carries the first job's comment (the Slurm plugin's sbatch): the
    shard of each task comes from the tasks file hpc.execution.slurm_plugin writes beside the
    array's logs; a pending rest of the array (sacct's 300_[3-4], squeue's 3-4) is one job per task."""
    wd = half_done.parent
    logs = wd / ".snakemake" / "slurm_logs" / "rule_run_shard"
    logs.mkdir(parents=True, exist_ok=True)
    # the plugin handed the shards 1 and 3 to tasks 1 and 2 of array 300, shards 0 and 2 to 3 and 4
    slurm_plugin.array_tasks_file(logs / "300_1.log", "300").write_text(
        "1 rule_run_shard_wildcards_0001\n2 rule_run_shard_wildcards_0003\n3 rule_run_shard_wildcards_0000\n"
        "4 rule_run_shard_wildcards_0002\n")
    submit = (f"sbatch --parsable --job-name u1 --output {logs}/%A_%a.log --export=ALL "
              f"--comment rule_run_shard_wildcards_0001 -p debug -D {wd} --array=1-4 --wrap=python -m snakemake")

    now = time.strftime("%Y-%m-%dT%H:%M:%S")  # after the store was created: a job of this sweep

    def line(job, raw, state, start, end, nodes):
        return sacct_line(JobID=job, JobIDRaw=raw, JobName="u1", State=state, ExitCode="0:0",
                          Submit=now, Start=start, End=end, NodeList=nodes, WorkDir=str(wd),
                          Comment="rule_run_shard_wildcards_0001", Reason="None", SubmitLine=submit)
    out = "\n".join([line("300_1", "301", "RUNNING", now, "Unknown", "n1"),
                     line("300_2", "302", "OUT_OF_MEMORY", now, now, "n2"),
                     line("300_[3-4]", "300", "PENDING", "Unknown", "Unknown", "None assigned")])
    monkeypatch.setattr(accounting.shutil, "which", lambda name: "/usr/bin/sacct")
    jobs = status.sacct_jobs(None, lambda cmd, **kw: SimpleNamespace(returncode=0, stdout=out + "\n", stderr=""))
    assert [(j["job_id"], j["comment"][-4:], j.get("raw_id")) for j in jobs] == [
        ("300_1", "0001", "301"), ("300_2", "0003", "302"), ("300_3", "0000", None), ("300_4", "0002", None)]
    assert jobs[1]["slurm_log"] == f"{logs}/300_2.log" and jobs[1]["array_task"] == 2
    st = status.sweep_status("four", half_done, jobs=jobs)
    by = {r["shard"]: r for r in st["shards"]}
    assert by[1]["state"] == "running" and by[1]["job_id"] == "300_1"
    assert by[3]["state"] == "failed" and by[3]["slurm_state"] == "OUT_OF_MEMORY" and by[3]["job_id"] == "300_2"
    assert by[3]["slurm_log"] == f"{logs}/300_2.log"
    assert [by[s]["state"] for s in (0, 2)] == ["done", "done"]  # their markers say so
    # Without the tasks file the tasks' shards are not known: no task is taken for shard 1's.
    slurm_plugin.array_tasks_file(logs / "300_1.log", "300").unlink()
    jobs = status.sacct_jobs(None, lambda cmd, **kw: SimpleNamespace(returncode=0, stdout=out + "\n", stderr=""))
    assert {j["comment"] for j in jobs} == {""}
    assert status.sweep_status("four", half_done, jobs=jobs)["slurm_jobs"] == 0


def test_squeue_array_tasks(monkeypatch, tmp_path):
    slurm_plugin.array_tasks_file(tmp_path / "x.log", "297").write_text("2 rule_run_shard_wildcards_0005\n"
                                                                        "3 rule_run_shard_wildcards_0006\n")
    row = ["298", "u1", "rule_run_shard_wildcards_0000", "RUNNING", "2026-11-23T03:00:36", "2026-11-23T03:00:37",
           "N/A", "n1", "None", "0", f"{tmp_path}/%A_%a.log", str(tmp_path)]
    out = "".join(status.DELIMITER.join(fields) + status.DELIMITER + "\n" for fields in [
        row + ["297", "2"], [row[0].replace("298", "297"), *row[1:3], "PENDING", *row[4:], "297", "3-4%2"]])
    monkeypatch.setattr(status.shutil, "which", lambda name: "/usr/bin/squeue")
    jobs = status.squeue_jobs(lambda cmd, **kw: SimpleNamespace(returncode=0, stdout=out))
    assert [(j["job_id"], j["comment"], j["state"]) for j in jobs] == [
        ("297_2", "rule_run_shard_wildcards_0005", "RUNNING"), ("297_3", "rule_run_shard_wildcards_0006", "PENDING"),
        ("297_4", "", "PENDING")]
    assert jobs[0]["slurm_log"] == f"{tmp_path}/297_2.log" and jobs[0]["raw_id"] == "298"


def test_array_task_ranges():
    assert accounting.array_tasks("300_[3-5,9]") == [3, 4, 5, 9]
    assert accounting.array_tasks("3-6%2") == [3, 4, 5, 6] and accounting.array_tasks("1-7:3") == [1, 4, 7]
    assert accounting.array_tasks("N/A") == [] and accounting.array_tasks(None) == []


def test_finished_sweep_and_watch(tmp_path):
    root = tmp_path / "results"
    plan_and_run(root, dict(FOUR_SHARDS, name="done", shards=2), shards=[0, 1])
    plain = io.StringIO()
    assert status.watch("done", root, interval=0, stream=plain, max_updates=2, jobs=False) == 0
    assert plain.getvalue().count("2/2 shards done, 8/8 points done") == 2  # not aggregated: it keeps watching
    aggregate(paths.plan_path("done", root))

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    assert status.watch("done", root, interval=0, stream=screen, jobs=False) == 0  # aggregated: it stops
    assert screen.getvalue().startswith("\x1b[H\x1b[2J") and "[" + "#" * 40 + "] 100.0%" in screen.getvalue()
    assert "8/8 points done, aggregated" in screen.getvalue() and "finished" in screen.getvalue()
    out = run_hpc("status", "done", "--results", root, "--watch", "--interval", "0.1").stdout
    assert "aggregated" in out and "\x1b" not in out
    missing = run_hpc("status", "nope", "--results", root, check=False)
    assert missing.returncode == 2 and "no planned sweep 'nope'" in missing.stderr


class TestOnTheCluster:
    pytestmark = cluster_test

    def test_status_follows_a_sweep_on_the_cluster(self, slurm_cluster, tmp_path):
        """Watch a real sweep on the emulated cluster: its shard jobs are found in Slurm's queue by
        the comment and directory the Slurm plugin gives them, and --watch ends once aggregated."""
        spec = write_spec(tmp_path, dict(SMALL_MCCALL, name="watched", shards=3))
        env = dict(os.environ, PYTHONPATH=str(REPO))
        workflow = subprocess.Popen(
            [PYTHON, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--profile", str(REPO / "profiles" / "slurm"),
             "--directory", str(tmp_path), "--config", f"sweep={spec}"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        root = tmp_path / "results"
        seen = []
        try:
            deadline = time.time() + 300
            while time.time() < deadline and not paths.plan_path("watched", root).exists():
                time.sleep(0.5)
            while time.time() < deadline:
                st = status.sweep_status("watched", root)
                seen.append(st)
                if st["shards_done"] == 3 or workflow.poll() is not None:
                    break
                time.sleep(0.5)
            watched = subprocess.run([PYTHON, "-m", "hpc", "status", "watched", "--results", str(root), "--watch",
                                      "--interval", "1"], cwd=tmp_path, capture_output=True, text=True, env=env,
                                     timeout=300)
            _, stderr = workflow.communicate(timeout=300)
        finally:
            if workflow.poll() is None:
                workflow.kill()
        assert workflow.returncode == 0, stderr[-3000:]
        assert watched.returncode == 0 and "3/3 shards done, 12/12 points done, aggregated" in watched.stdout
        live = [s for s in seen if s["shards_done"] < 3 and s["slurm_jobs"]]
        assert live, "never saw a shard job in Slurm's queue while the sweep ran"
        assert any(r.get("job_id") and r["state"] in ("running", "pending") for s in live for r in s["shards"])
        final = status.sweep_status("watched", root)
        assert final["slurm_jobs"] >= 3 and final["shard_counts"]["done"] == 3
        assert all(r["job_id"] and r["state"] == "done" for r in final["shards"])
