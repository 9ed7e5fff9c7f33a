"""`hpc status` of one training run (no sweep: block) on the emulated cluster: its job submitted
held, before any file of the run exists (queued, with Slurm's reason and the job id), then
cancelled (failed before the first checkpoint), compared with what squeue says. The run never
trains: its job is cancelled while held, and the workflow stopped."""

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


def _status(root, name="surr", *flags) -> tuple[int, str, str]:
    from hpc.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["status", name, "--results", str(root), *flags])
    return rc, out.getvalue(), err.getvalue()


def _squeue(workdir) -> dict | None:
    """squeue's own word on the training run's job (comment rule_train) run from ``workdir``."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%k|%T|%r|%Z"], capture_output=True, text=True,
                         timeout=30).stdout
    for line in out.splitlines():
        job_id, comment, state, reason, where = line.split("|")
        if where == str(workdir) and comment == "rule_train":
            return {"id": job_id, "state": state, "reason": reason}
    return None


def _wait(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = condition()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"{what} within {timeout} s")


def test_a_held_training_run_is_queued_before_any_file_then_failed_once_cancelled(slurm_cluster, tmp_path):
    spec = write_spec(tmp_path, spec_with(name="surr"), "surr.yaml")
    root = tmp_path / "results"
    # Its train job submitted held (sbatch --hold): Slurm keeps it PENDING, reason JobHeldUser.
    cmd = [PYTHON, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--profile",
           str(REPO / "profiles" / "slurm"), "--directory", str(tmp_path), "--config", f"train={spec}",
           "--set-resources", "train:slurm_extra='--hold'", "train:runtime=5"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    job = None
    try:
        job = _wait(lambda: proc.poll() is None and _squeue(tmp_path), 120,
                    f"no held train job (snakemake: {proc.poll()})")
        assert (job["state"], job["reason"]) == ("PENDING", "JobHeldUser"), job
        assert not (root / "surr" / "train.zarr").exists()  # nothing of the run but what Slurm knows
        rc, text, _ = _status(root)
        assert rc == 0 and text.startswith("training run surr: 1 queued\n"), text
        assert f"surr: queued: job {job['id']} PENDING, attempt 1; reason: JobHeldUser" in text.splitlines(), text
        assert text.splitlines()[-1].endswith(": 1 jobs of this run"), text
        # The queue alone (no submit line there: the job's batch script names the spec) says the same.
        rc, text, _ = _status(root, "surr", "--slurm", "squeue")
        assert rc == 0 and f"surr: queued: job {job['id']} PENDING, attempt 1; reason: JobHeldUser" in text, text
        # Files alone (--slurm none), or a name that neither the files nor Slurm know (this job's spec
        # names surr): one line, as before.
        for name, flags in (("surr", ("--slurm", "none")), ("other", ()), ("other", ("--slurm", "squeue"))):
            rc, text, err = _status(root, name, *flags)
            assert rc == 2 and not text and err.startswith(f"hpc status: error: name: no planned sweep {name!r}, ") \
                and err.count("\n") == 1, (name, err)

        subprocess.run(["scancel", job["id"]], check=True, timeout=30)
        _wait(lambda: (_squeue(tmp_path) or {}).get("state") == "CANCELLED", 30, "the job not cancelled")
        rc, text, _ = _status(root)
        slurm_log = tmp_path / ".snakemake" / "slurm_logs" / "rule_train" / f"{job['id']}.log"
        assert rc == 0 and text.startswith("training run surr: 1 failed\n"), text
        failed = re.search(rf"^surr: failed: job {job['id']} CANCELLED(, exit 0)?, attempt 1, before the first "
                           rf"checkpoint \(log: (.*), Slurm's log: (.*)\)$", text, re.M)  # (exit 0: sacct's)
        assert failed and failed[3] == str(slurm_log), text
        assert failed[2] == str(root / "surr" / "logs" / "train.log")
    finally:  # the run never trains: its job cancelled, then the workflow stopped (its process group)
        if job:
            subprocess.run(["scancel", job["id"]], capture_output=True, timeout=30)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
