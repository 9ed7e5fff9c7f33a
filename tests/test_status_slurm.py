"""`hpc status` on the emulated cluster: every state a shard's job can end in, produced for real by
sbatch jobs shaped like the Slurm plugin's (its --job-name, --comment, -D and --output), read from
Slurm's accounting (sacct) with the queue (squeue) left out, as once MinJobAge has passed.

The jobs run at once: a real shard (COMPLETED, its marker written), `exit 3` twice in this run
after a failure in an earlier run (FAILED, attempt 2), 300 MB under --mem=100 (OUT_OF_MEMORY),
`sleep` past `-t 1` (TIMEOUT, about 60-90 s: Slurm checks time limits every 30 s), a job
cancelled while running (CANCELLED), and one held by --begin (PENDING). NODE_FAIL and a requeue:
tests/test_workflow_slurm.py (a killed slurmd).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import time
import uuid

import pytest
import yaml
from conftest import PYTHON, REPO, SMALL_MCCALL, cluster_test, run_hpc

from hpc.cluster import limits
from hpc.core import paths
from hpc.sweep import status, store
from hpc.sweep.spec import parse_spec

pytestmark = cluster_test

NAME = "states"
SPEC = dict(SMALL_MCCALL, name=NAME, shards=6)


def sbatch(workdir, run, shard, command, *options, env=None) -> str:
    """Submit like snakemake-executor-plugin-slurm 2.8.0 does, the shard's stderr to our log."""
    s = f"{shard:04d}"
    slurm_log = workdir / ".snakemake" / "slurm_logs" / "rule_run_shard" / s / "%j.log"
    slurm_log.parent.mkdir(parents=True, exist_ok=True)
    ours = paths.shard_log_path(NAME, shard, paths.RESULTS_ROOT)  # relative: results/NAME/logs/...
    cmd = ["sbatch", "--parsable", "--job-name", run, "--output", str(slurm_log), "--export=ALL",
           "--comment", f"rule_run_shard_wildcards_{s}", "-p", "debug", *options, "-D", str(workdir),
           f"--wrap=( {command} ) 2> {ours}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60,
                         env=dict(os.environ, **(env or {}))).stdout
    return out.strip().split(";")[0]


def test_every_end_state_from_slurm_accounting(slurm_cluster, tmp_path):
    workdir = tmp_path
    root = workdir / "results"
    spec = parse_spec(SPEC, yaml.safe_dump(SPEC, sort_keys=False))
    store.plan_sweep(spec, paths.plan_path(NAME, root))
    paths.shard_log_path(NAME, 0, root).parent.mkdir(parents=True, exist_ok=True)
    run, earlier = str(uuid.uuid4()), str(uuid.uuid4())
    plan = paths.plan_path(NAME, paths.RESULTS_ROOT)
    ids = {}
    ids[3] = sbatch(workdir, run, 3, "sleep 150", "-t", "1", "--mem", "100")
    ids[0] = sbatch(workdir, run, 0, f"{PYTHON} -m hpc run-shard {plan} 0 --marker "
                    f"{paths.marker_path(NAME, 0, paths.RESULTS_ROOT)}", "-t", "10", "--mem", "2000",
                    env={"PYTHONPATH": str(REPO)})
    old = sbatch(workdir, earlier, 1, "exit 1", "-t", "1", "--mem", "100")
    # Shard 1's jobs run one after the other, as retries do: the last one writes the shard's log last.
    first = sbatch(workdir, run, 1, "echo retried >&2; exit 3", "-t", "1", "--mem", "100",
                   f"--dependency=afterany:{old}")
    ids[1] = sbatch(workdir, run, 1, "echo 'shard 1: about to fail' >&2; exit 3", "-t", "1", "--mem", "100",
                    f"--dependency=afterany:{first}")
    ids[2] = sbatch(workdir, run, 2, f"{PYTHON} -c \"x = b'1' * (300 << 20); import time; time.sleep(10)\"",
                    "-t", "1", "--mem", "100")
    ids[4] = sbatch(workdir, run, 4, "sleep 150", "-t", "5", "--mem", "100")
    ids[5] = sbatch(workdir, run, 5, "true", "-t", "1", "--mem", "100", "--begin", "now+1hour")
    everything = [*ids.values(), old, first]
    oom = "OUT_OF_MEMORY" if limits.memory_enforcement() == "cgroup" else "FAILED"  # OverMemoryKill: signal 9
    try:
        seen_running, cancelled = {}, False
        deadline = time.time() + 240
        while time.time() < deadline:
            live = status.sweep_status(NAME, root)  # sacct and squeue, as `hpc status` reads them
            for r in live["shards"]:
                if r.get("slurm_state") == "RUNNING":
                    seen_running[r["shard"]] = r
            if not cancelled and live["shards"][4].get("slurm_state") == "RUNNING":
                subprocess.run(["scancel", ids[4]], check=True, timeout=30)
                cancelled = True
            accounted = status.sweep_status(NAME, root, sources=("sacct",))
            ended = [r.get("slurm_state") for r in accounted["shards"][:5]]
            # slurmctld hands finished jobs to slurmdbd a little later, more so on a busy machine:
            # wait until accounting lists every shard's job as ended.
            if cancelled and all(s is not None and s not in status.PENDING_STATES | status.RUNNING_STATES
                                 for s in ended) and accounted["shards"][0]["state"] == "done" \
                    and accounted["shards"][5].get("slurm_state") is not None:  # the held job, recorded too
                break
            time.sleep(2)
        else:
            pytest.fail(f"the jobs did not all end within 240 s: {ended}")

        # While they ran: RUNNING, on a node, with both logs named.
        assert {3, 4} <= set(seen_running), seen_running.keys()
        assert seen_running[3]["state"] == "running" and re.fullmatch(r"n[1-3]", seen_running[3]["nodes"])

        # Read from sacct alone: right where squeue is not asked (or has forgotten the jobs).
        assert accounted["slurm_sources"] == ["sacct"]
        by = {r["shard"]: r for r in accounted["shards"]}
        expected = {0: ("done", "COMPLETED", 0), 1: ("failed", "FAILED", 3), 2: ("failed", oom, None),
                    3: ("failed", "TIMEOUT", None), 4: ("failed", "CANCELLED", None), 5: ("pending", "PENDING", None)}
        for shard, (state, slurm_state, exit_code) in expected.items():
            r = by[shard]
            assert (r["state"], r["slurm_state"], r["job_id"]) == (state, slurm_state, ids[shard]), r
            if exit_code is not None:
                assert r["exit_code"] == exit_code, r
            assert r["log"] == str(paths.shard_log_path(NAME, shard, root))
            assert r["slurm_log"] == str(workdir / ".snakemake" / "slurm_logs" / "rule_run_shard" / f"{shard:04d}"
                                         / f"{ids[shard]}.log")
            if shard != 5:
                assert re.fullmatch(r"n[1-3]", r["nodes"]), r
                assert os.path.exists(r["log"]) and os.path.exists(r["slurm_log"]), r
        # slurmdbd may have recorded the held job before the scheduler gave it a reason: sacct then
        # says None (shown as no reason); the queue has slurmctld's own.
        assert by[5]["nodes"] == "" and by[5]["reason"] in ("BeginTime", None), by[5]
        assert by[4]["slurm_state_text"].startswith("CANCELLED")  # "CANCELLED by 0" in sacct
        assert by[1]["attempts"] == 2 and [j["job_id"] for j in by[1]["jobs"]] == [old, first, ids[1]]
        assert by[0]["attempts"] == 1 and by[0]["restarts"] == 0
        assert "shard 1: about to fail" in open(by[1]["log"]).read()
        if oom == "OUT_OF_MEMORY":
            assert by[2]["signal"] or by[2]["exit_code"]  # 0:125 on 22.05
        # Slurm's own lines in its log are what a local reading of a log takes for a death, too.
        assert "DUE TO TIME LIMIT" in status.log_failure(open(by[3]["slurm_log"]).read())
        assert "CANCELLED AT" in status.log_failure(open(by[4]["slurm_log"]).read())
        assert accounted["shard_counts"] == {"done": 1, "running": 0, "pending": 1, "failed": 4}
        assert accounted["slurm_jobs"] == 8 and not accounted["stopped"]  # shard 5 is still queued

        # The queue, while it still lists them, says the same (no exit codes there).
        queued = status.sweep_status(NAME, root, sources=("squeue",))
        assert [r.get("slurm_state") for r in queued["shards"]] == [by[s]["slurm_state"] for s in range(6)]
        assert queued["shards"][5]["reason"] == "BeginTime"  # slurmctld's own, from the queue
        assert all(r.get("exit_code") is None for r in queued["shards"])

        text = run_hpc("status", NAME, "--results", root, "--slurm", "sacct", cwd=workdir).stdout
        assert "from the markers and Slurm's accounting (sacct), 8 jobs of this sweep" in text
        assert (f"shard 0001 FAILED (job {ids[1]} FAILED on {by[1]['nodes']}, exit 3, attempt 2; "
                f"log {by[1]['log']}, Slurm's log {by[1]['slurm_log']})") in text
        assert f"shard 0003 FAILED (job {ids[3]} TIMEOUT on " in text
        assert f"shard 0002 FAILED (job {ids[2]} {oom} on " in text
        assert f"shard 0004 FAILED (job {ids[4]} CANCELLED on " in text
        waiting = f"shard 0005 pending (job {ids[5]} PENDING, attempt 1"
        assert f"{waiting}; reason: BeginTime)" in text or f"{waiting})" in text, text
        both = run_hpc("status", NAME, "--results", root, cwd=workdir).stdout  # sacct and squeue: the queue's reason
        assert f"{waiting}; reason: BeginTime)" in both, both
        out = io.StringIO()
        assert status.watch(NAME, root, interval=0, stream=out, sources=("sacct",)) == 1
        assert "failed for good (failed on two polls in a row): shard 0001 (job " in out.getvalue()
    finally:
        subprocess.run(["scancel", *everything], capture_output=True, timeout=30)
