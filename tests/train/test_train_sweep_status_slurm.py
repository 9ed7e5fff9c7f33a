"""`hpc status` of training runs on the emulated cluster. A sweep of them: points whose Slurm jobs
are held (queued, with Slurm's reason), released (running on a node) and cancelled before their
first checkpoint, compared with what squeue and sacct themselves say. One training run (no
sweep: block): its job held before any file of the run exists (queued, with the reason and the job
id), then cancelled (failed before the first checkpoint). Nothing trains to the end: the jobs are
cancelled and the workflow stopped once the states are seen (seconds of Slurm, no training)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import time

from conftest import PYTHON, REPO, cluster_test, write_spec
from test_train_sweep import spec_with

pytestmark = cluster_test


def _run_status(root, name, *flags) -> tuple[int, str, str]:
    """`hpc status NAME --results ROOT FLAGS`, in this process: (exit code, stdout, stderr)."""
    from hpc.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["status", name, "--results", str(root), *flags])
    return rc, out.getvalue(), err.getvalue()


def _status(root, *flags) -> str:
    rc, text, err = _run_status(root, "tsw", *flags)
    assert rc == 0, err
    return text


def _squeue(workdir) -> dict[str, dict]:
    """squeue's own word on the training jobs run from ``workdir``, by the point their comment
    names (``-``: the job of a training run that is not a sweep's, comment ``rule_train``)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%k|%T|%r|%N|%Z"], capture_output=True, text=True,
                         timeout=30).stdout
    jobs = {}
    for line in out.splitlines():
        job_id, comment, state, reason, nodes, where = line.split("|")
        if where == str(workdir) and (comment == "rule_train" or comment.startswith("rule_train_wildcards_")):
            point = "-" if comment == "rule_train" else comment.removeprefix("rule_train_wildcards_")
            jobs[point] = {"id": job_id, "state": state, "reason": reason, "nodes": nodes}
    return jobs


def _wait(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = condition()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"{what} within {timeout} s")


def _submit_held(tmp_path, spec) -> subprocess.Popen:
    """The workflow of ``spec`` through profiles/slurm, every train job submitted held (sbatch
    --hold): Slurm keeps it PENDING, reason JobHeldUser."""
    cmd = [PYTHON, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--profile",
           str(REPO / "profiles" / "slurm"), "--directory", str(tmp_path), "--config", f"train={spec}",
           "--set-resources", "train:slurm_extra='--hold'", "train:runtime=5"]
    return subprocess.Popen(cmd, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _stop(proc: subprocess.Popen, job_ids) -> None:
    """Nothing trains on: the jobs cancelled, then the workflow stopped (its process group)."""
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=30)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_held_points_are_queued_with_slurms_reason_then_running_and_cancelled(slurm_cluster, tmp_path):
    spec = write_spec(tmp_path, spec_with({"seed": [0, 1]}), "tsw.yaml")
    root = tmp_path / "results"
    proc = _submit_held(tmp_path, spec)
    jobs: dict[str, dict] = {}
    try:
        jobs = _wait(lambda: proc.poll() is None and len(found := _squeue(tmp_path)) == 2 and found, 120,
                     f"no two held train jobs (snakemake: {proc.poll()})")
        text = _status(root)
        assert ": 2 points: 2 queued\n" in text, text
        for point, job in jobs.items():
            assert (job["state"], job["reason"]) == ("PENDING", "JobHeldUser"), job
            assert f"{point}: queued: job {job['id']} PENDING, attempt 1; reason: JobHeldUser" in text.splitlines(), text
        assert text.splitlines()[-1].endswith(": 2 jobs of this sweep"), text
        assert _status(root, "--slurm", "none").count("not started") == 3  # files alone: as before (header + rows)

        # p000 released: running on a node (squeue's); p001 cancelled while held.
        subprocess.run(["scontrol", "release", jobs["p000"]["id"]], check=True, timeout=30)
        running = _wait(lambda: (j := _squeue(tmp_path)["p000"])["state"] == "RUNNING" and j, 60, "p000 not running")
        subprocess.run(["scancel", jobs["p001"]["id"]], check=True, timeout=30)
        _wait(lambda: _squeue(tmp_path)["p001"]["state"] == "CANCELLED", 30, "p001 not cancelled")
        text = _status(root)
        assert re.fullmatch(r"n[1-3]", running["nodes"]), running
        assert ": 2 points: 1 running, 1 failed\n" in text, text
        assert f"p000: running: job {jobs['p000']['id']} RUNNING on {running['nodes']}, attempt 1 (log: " in text, text
        slurm_log = tmp_path / ".snakemake" / "slurm_logs" / "rule_train" / "p001" / f"{jobs['p001']['id']}.log"
        failed = re.search(rf"^p001: failed: job {jobs['p001']['id']} CANCELLED(, exit 0)?, attempt 1, before the first "
                           rf"checkpoint \(log: (.*), Slurm's log: (.*)\)$", text, re.M)  # (exit 0: sacct's)
        assert failed and failed[3] == str(slurm_log), text
        assert failed[2] == str(root / "tsw" / "points" / "p001" / "logs" / "train.log")
        # sacct, asked alone (as once squeue has forgotten the job), says the same once slurmdbd has it.
        _wait(lambda: subprocess.run(["sacct", "-X", "-n", "-P", "-j", jobs["p001"]["id"], "-o", "State,WorkDir"],
                                     capture_output=True, text=True, timeout=30).stdout.startswith("CANCELLED by 0|/"),
              30, "sacct does not know p001's cancellation and folder")
        assert f"p001: failed: job {jobs['p001']['id']} CANCELLED, exit 0, attempt 1, before the first checkpoint (log: " \
            in _status(root, "--slurm", "sacct")
    finally:
        _stop(proc, [j["id"] for j in jobs.values()])


def test_a_held_training_run_is_queued_before_any_file_then_failed_once_cancelled(slurm_cluster, tmp_path):
    spec = write_spec(tmp_path, spec_with(name="surr"), "surr.yaml")
    root = tmp_path / "results"
    proc = _submit_held(tmp_path, spec)
    job = None
    try:
        job = _wait(lambda: proc.poll() is None and _squeue(tmp_path).get("-"), 120,
                    f"no held train job (snakemake: {proc.poll()})")
        assert (job["state"], job["reason"]) == ("PENDING", "JobHeldUser"), job
        assert not (root / "surr" / "train.zarr").exists()  # nothing of the run but what Slurm knows
        rc, text, _ = _run_status(root, "surr")
        assert rc == 0 and text.startswith("training run surr: 1 queued\n"), text
        assert f"surr: queued: job {job['id']} PENDING, attempt 1; reason: JobHeldUser" in text.splitlines(), text
        assert text.splitlines()[-1].endswith(": 1 jobs of this run"), text
        # The queue alone (no submit line there: the job's batch script names the spec) says the same.
        rc, text, _ = _run_status(root, "surr", "--slurm", "squeue")
        assert rc == 0 and f"surr: queued: job {job['id']} PENDING, attempt 1; reason: JobHeldUser" in text, text
        # Files alone (--slurm none), or a name that neither the files nor Slurm know (this job's spec
        # names surr): one line, as before.
        for name, flags in (("surr", ("--slurm", "none")), ("other", ()), ("other", ("--slurm", "squeue"))):
            rc, text, err = _run_status(root, name, *flags)
            assert rc == 2 and not text and err.startswith(f"hpc status: error: name: no planned sweep {name!r}, ") \
                and err.count("\n") == 1, (name, err)

        subprocess.run(["scancel", job["id"]], check=True, timeout=30)
        _wait(lambda: (_squeue(tmp_path).get("-") or {}).get("state") == "CANCELLED", 30, "the job not cancelled")
        rc, text, _ = _run_status(root, "surr")
        slurm_log = tmp_path / ".snakemake" / "slurm_logs" / "rule_train" / f"{job['id']}.log"
        assert rc == 0 and text.startswith("training run surr: 1 failed\n"), text
        failed = re.search(rf"^surr: failed: job {job['id']} CANCELLED(, exit 0)?, attempt 1, before the first "
                           rf"checkpoint \(log: (.*), Slurm's log: (.*)\)$", text, re.M)  # (exit 0: sacct's)
        assert failed and failed[3] == str(slurm_log), text
        assert failed[2] == str(root / "surr" / "logs" / "train.log")
    finally:
        _stop(proc, [job["id"]] if job else [])
