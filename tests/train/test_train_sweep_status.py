"""`hpc status` of a sweep of training runs with Slurm's word on the points not done
(hpc.train.sweep_status): queued with Slurm's reason, running on a node, failed before the first
checkpoint with the job id; which jobs are a point's. The fast tests give Slurm's answer as
hpc.sweep.status.slurm_jobs returns it; the cluster test (test_train_sweep_status_slurm.py) makes
the states for real."""

from __future__ import annotations

import json
import re
import time

from conftest import PYTHON, write_spec
from test_train_sweep import spec_with

from hpc.core import paths
from hpc.train.sweep import parse_train_sweep, write_points
from hpc.train.sweep_status import format_train_status, train_sweep_status

RUN = "3a1c4737-afad-4e72-bcef-124618cd90a9"  # the workflow run's uuid: the plugin's --job-name


def record_sweep(workdir, seeds=(0, 1, 2)):
    """A sweep of training runs whose points are recorded (train-sweep.json), none trained."""
    spec = write_spec(workdir, spec_with({"seed": list(seeds)}), "tsw.yaml")
    sweep = parse_train_sweep(spec_with({"seed": list(seeds)}), path=spec)
    root = workdir / "results"
    write_points(sweep, paths.train_sweep_path(sweep.name, root))
    return root, spec, sweep


def job(point, state, job_id, workdir, *, spec=None, nodes="", reason=None, submit=None, run=RUN,
        exit_code=None, signal=None, comment=True):
    """A job as hpc.sweep.status.slurm_jobs gives it, submitted like the Slurm plugin does."""
    log = f"{workdir}/.snakemake/slurm_logs/rule_train/{point}/{job_id}.log"
    line = (f"sbatch --parsable --job-name {run} --output {workdir}/.snakemake/slurm_logs/rule_train/{point}/%j.log "
            f"--export=ALL --comment rule_train_wildcards_{point} -p debug -D {workdir} --wrap={PYTHON} -m snakemake "
            f"--target-jobs 'train:point={point}' --config 'train={spec}' --jobs 1" if spec else "")
    return {"job_id": str(job_id), "job_name": run, "comment": f"rule_train_wildcards_{point}" if comment else "",
            "state": state, "submit": time.time() if submit is None else submit, "start": None, "end": None,
            "nodes": nodes, "reason": reason, "workdir": str(workdir), "submit_line": line, "slurm_log": log,
            "exit_code": exit_code, "signal": signal, "restarts": 0}


def test_slurm_says_queued_running_or_failed_for_points_with_no_run_yet(tmp_path):
    root, spec, _ = record_sweep(tmp_path)
    jobs = [job("p000", "PENDING", 41, tmp_path, spec=spec, reason="JobHeldUser"),
            job("p001", "RUNNING", 42, tmp_path, spec=spec, nodes="n2"),
            job("p002", "OUT_OF_MEMORY", 43, tmp_path, spec=spec, nodes="n3", exit_code=0, signal=125)]
    status = train_sweep_status("tsw", root, jobs=jobs)
    assert [(p["point"], p["state"]) for p in status["points"]] == [("p000", "queued"), ("p001", "running"),
                                                                     ("p002", "failed")]
    assert status["counts"] == {"done": 0, "running": 1, "queued": 1, "failed": 1, "not started": 0}
    text = format_train_status(status)
    log = {p: root / "tsw" / "points" / p / "logs" / "train.log" for p in ("p001", "p002")}
    slurm_log = {p: tmp_path / ".snakemake" / "slurm_logs" / "rule_train" / p / f"{j}.log"
                 for p, j in (("p001", 42), ("p002", 43))}
    assert text.splitlines()[0] == f"sweep of training runs tsw ({spec}): 3 points: 1 running, 1 queued, 1 failed"
    assert re.search(r"^p000\s+0\s+queued\s+0/30$", text, re.M), text
    assert "p000: queued: job 41 PENDING, attempt 1; reason: JobHeldUser" in text.splitlines()
    assert (f"p001: running: job 42 RUNNING on n2, attempt 1 (log: {log['p001']}, Slurm's log: {slurm_log['p001']})"
            in text.splitlines())
    assert (f"p002: failed: job 43 OUT_OF_MEMORY on n3, exit 0 signal 125, attempt 1, before the first checkpoint "
            f"(log: {log['p002']}, Slurm's log: {slurm_log['p002']})") in text.splitlines()
    assert text.splitlines()[-1] == "from the points' files and Slurm's jobs: 3 jobs of this sweep"


def test_the_latest_job_decides_and_a_done_point_stays_done(tmp_path):
    root, spec, sweep = record_sweep(tmp_path)
    # p000 done (its marker); p001's first job died in training after a checkpoint, its retry is
    # queued; p002 was cancelled after its checkpoint at step 15.
    p000, p001, p002 = (paths.run_dir(paths.train_point_name("tsw", p), root) for p in ("p000", "p001", "p002"))
    p000.mkdir(parents=True)
    (p000 / "train.json").write_text(json.dumps({"digest": sweep.specs[0].digest(), "steps": 30, "heldout_rmse": 0.5}))
    (p001 / "logs").mkdir(parents=True)
    (p001 / "logs" / "train.log").write_text("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                                             "MemoryError\n")
    (p002 / "logs").mkdir(parents=True)
    (p002 / "logs" / "train.log").write_text("train tsw/points/p002: step 15\n")
    (p002 / "checkpoints" / "15").mkdir(parents=True)
    (p002 / "checkpoints" / "30.orbax-checkpoint-tmp-1").mkdir()  # being written: not a checkpoint
    jobs = [job("p000", "RUNNING", 50, tmp_path, spec=spec),  # (only the marker is read for a done point)
            job("p001", "FAILED", 51, tmp_path, spec=spec, nodes="n1", exit_code=1),
            job("p001", "PENDING", 60, tmp_path, spec=spec, reason="Priority"),
            job("p002", "CANCELLED by 0", 52, tmp_path, spec=spec, nodes="n2", exit_code=0, signal=15)]
    status = train_sweep_status("tsw", root, jobs=jobs)
    assert [p["state"] for p in status["points"]] == ["done", "queued", "failed"]
    assert status["points"][1]["job"]["jobs"] == ["51", "60"]
    lines = format_train_status(status).splitlines()
    assert "p001: queued: job 60 PENDING, attempt 2; reason: Priority" in lines
    assert "p001: the attempt before failed: MemoryError" in lines
    assert any(line.startswith("p002: failed: job 52 CANCELLED on n2, exit 0 signal 15, attempt 1, last checkpoint "
                               "at step 15 (log: ") for line in lines), lines
    # the log's own reason comes first where it has one
    (p002 / "logs" / "train.log").write_text("slurmstepd: error: *** JOB 52 ON n2 CANCELLED AT 2026-12-01T10:00:00 ***\n")
    failure = train_sweep_status("tsw", root, jobs=jobs)["points"][2]["failure"]
    assert failure == ("slurmstepd: error: *** JOB 52 ON n2 CANCELLED AT 2026-12-01T10:00:00 ***; "
                       "job 52 CANCELLED on n2, exit 0 signal 15, attempt 1, last checkpoint at step 15")


def test_only_this_sweeps_point_jobs_count_and_without_them_nothing_changes(tmp_path):
    root, spec, _ = record_sweep(tmp_path)
    before = paths.train_sweep_path("tsw", root).stat().st_mtime
    other = tmp_path / "other.yaml"
    others = [job("p000", "PENDING", 70, tmp_path, spec=other),  # another sweep's point, from the same folder
              job("p000", "PENDING", 71, tmp_path / "elsewhere", spec=spec),  # another working directory
              job("p001", "FAILED", 72, tmp_path, spec=spec, submit=before - 3600),  # before the points were recorded
              job("p009", "RUNNING", 73, tmp_path, spec=spec),  # no such point
              dict(job("p002", "RUNNING", 74, tmp_path, spec=spec), comment="rule_run_shard_wildcards_0002")]
    files_only = format_train_status(train_sweep_status("tsw", root, jobs=False))
    assert format_train_status(train_sweep_status("tsw", root, jobs=others)) == files_only
    assert "Slurm" not in files_only and ": 3 points: 3 not started" in files_only
    # The spec named relative to the job's folder is this sweep's; a job without a submit line
    # (squeue alone) or without the comment (sacct without job_comment: its log path tells) counts.
    mine = [job("p000", "PENDING", 80, tmp_path, spec="tsw.yaml"), job("p001", "PENDING", 81, tmp_path),
            job("p002", "PENDING", 82, tmp_path, spec=spec, comment=False)]
    assert [p["state"] for p in train_sweep_status("tsw", root, jobs=mine)["points"]] == ["queued"] * 3


def test_watch_gives_up_once_slurm_says_every_point_not_done_failed(tmp_path):
    import io

    from hpc.train.sweep_status import watch_train

    root, spec, _ = record_sweep(tmp_path, seeds=(0, 1))
    cancelled = [job("p000", "CANCELLED by 0", 90, tmp_path, spec=spec), job("p001", "TIMEOUT", 91, tmp_path, spec=spec)]
    out = io.StringIO()
    assert watch_train("tsw", root, 0.0, out, jobs=cancelled) == 1
    assert out.getvalue().count(": 2 points: 2 failed\n") == 2
