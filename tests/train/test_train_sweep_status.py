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


# --------------------------------------------------------------------------------------------
# One training run (no sweep: block): rule train without wildcards, the plugin's comment
# ``rule_train`` and log slurm_logs/rule_train/JOBID.log; its spec's name tells it from another
# run's submitted from the same folder.


def run_job(state, job_id, workdir, *, spec=None, comment=True, **fields):
    """A single training run's job as slurm_jobs gives it, submitted like the Slurm plugin does."""
    line = (f"sbatch --parsable --job-name {RUN} --output {workdir}/.snakemake/slurm_logs/rule_train/%j.log "
            f"--export=ALL --comment rule_train -p debug -D {workdir} --wrap={PYTHON} -m snakemake "
            f"--target-jobs 'train:' --config 'train={spec}' --jobs 1" if spec else "")
    return dict(job("-", state, job_id, workdir, **fields), comment="rule_train" if comment else "",
                submit_line=line, slurm_log=f"{workdir}/.snakemake/slurm_logs/rule_train/{job_id}.log")


def one_run(workdir, name="surr"):
    """A training spec without a sweep: block, nothing of its run on disk; the results root and the spec."""
    return workdir / "results", write_spec(workdir, spec_with(name=name), f"{name}.yaml")


def test_a_single_run_queued_before_any_file_exists_shows_slurms_reason(tmp_path):
    from hpc.train.sweep_status import train_run_status

    root, spec = one_run(tmp_path)
    assert not root.exists()
    status = train_run_status("surr", root, jobs=[run_job("PENDING", 41, tmp_path, spec=spec, reason="Resources")])
    assert status["points"][0]["state"] == "queued" and status["slurm_jobs"] == 1
    lines = format_train_status(status).splitlines()
    assert lines[0] == "training run surr: 1 queued"
    assert re.fullmatch(r"queued\s+0", lines[2]), lines
    assert "surr: queued: job 41 PENDING, attempt 1; reason: Resources" in lines
    assert lines[-1] == "from the run's files and Slurm's jobs: 1 jobs of this run"
    # without Slurm's word (--slurm none): the files alone, as before
    assert format_train_status(train_run_status("surr", root, jobs=False)).splitlines()[0] == \
        "training run surr: 1 not started"


def test_a_single_run_cancelled_or_timed_out_before_its_first_checkpoint_has_failed(tmp_path):
    import io

    from hpc.train.sweep_status import train_run_status, watch_train

    root, spec = one_run(tmp_path)
    timeout = run_job("TIMEOUT", 51, tmp_path, spec=spec, nodes="n1", exit_code=0, signal=15)
    status = train_run_status("surr", root, jobs=[timeout])
    slurm_log = tmp_path / ".snakemake" / "slurm_logs" / "rule_train" / "51.log"
    assert status["points"][0]["state"] == "failed"
    assert (f"surr: failed: job 51 TIMEOUT on n1, exit 0 signal 15, attempt 1, before the first checkpoint "
            f"(log: {root / 'surr' / 'logs' / 'train.log'}, Slurm's log: {slurm_log})") in \
        format_train_status(status).splitlines()
    # started (its log), then cancelled after a checkpoint: the files said running, Slurm says failed
    (root / "surr" / "logs").mkdir(parents=True)
    (root / "surr" / "logs" / "train.log").write_text("train surr: step 15\n")
    (root / "surr" / "checkpoints" / "15").mkdir(parents=True)
    assert train_run_status("surr", root, jobs=False)["points"][0]["state"] == "running"
    cancelled = run_job("CANCELLED by 0", 52, tmp_path, spec=spec, nodes="n2", exit_code=0, signal=15)
    failed = train_run_status("surr", root, jobs=[timeout, cancelled])["points"][0]
    assert (failed["state"], failed["failure"]) == \
        ("failed", "job 52 CANCELLED on n2, exit 0 signal 15, attempt 2, last checkpoint at step 15")

    class Refreshes(io.StringIO):  # --watch of a run that never ends would loop: stop it after a few
        def write(self, text):
            if self.getvalue().count("training run surr:") > 3:
                raise AssertionError("watch did not stop on a failed run")
            return super().write(text)

    out = Refreshes()
    assert watch_train("surr", root, 0.0, out, kind="train", jobs=[cancelled]) == 1
    assert out.getvalue().count("training run surr: 1 failed\n") == 2


def test_another_runs_jobs_in_the_same_folder_are_not_this_runs(tmp_path):
    from hpc.train.sweep_status import train_run_status

    root, spec = one_run(tmp_path)
    _, other = one_run(tmp_path, "other")
    gone = tmp_path / "gone.yaml"  # a spec that is no longer there: whose run it was cannot be told
    others = [run_job("PENDING", 70, tmp_path, spec=other),  # another training run, from the same folder
              run_job("PENDING", 71, tmp_path / "elsewhere", spec=spec),  # another working directory
              run_job("FAILED", 72, tmp_path, spec=gone),
              job("p000", "RUNNING", 73, tmp_path, spec=spec),  # a sweep's point
              dict(run_job("RUNNING", 74, tmp_path, spec=spec), comment="rule_run_shard_wildcards_0000")]
    files_only = format_train_status(train_run_status("surr", root, jobs=False))
    assert format_train_status(train_run_status("surr", root, jobs=others)) == files_only
    # Its spec named relative to the job's folder; a job without a submit line (squeue alone) or
    # without the comment (sacct without job_comment: its log path tells) counts.
    for mine in (run_job("PENDING", 80, tmp_path, spec="surr.yaml"), run_job("PENDING", 81, tmp_path),
                 run_job("PENDING", 82, tmp_path, spec=spec, comment=False)):
        assert train_run_status("surr", root, jobs=[*others, mine])["points"][0]["job"]["job_id"] == mine["job_id"]
    # and a single run's jobs are no sweep point's
    (tmp_path / "sw").mkdir()
    sweep_root, sweep_spec, _ = record_sweep(tmp_path / "sw")
    assert train_sweep_status("tsw", sweep_root, jobs=[run_job("PENDING", 90, tmp_path / "sw", spec=sweep_spec),
                                                        run_job("PENDING", 91, tmp_path / "sw", comment=False)]
                              )["counts"]["not started"] == 3


def test_a_done_single_run_stays_done_beside_an_old_failed_job(tmp_path):
    from hpc.train import metrics
    from hpc.train.spec import load_train_spec
    from hpc.train.sweep_status import train_run_status

    root, spec_file = one_run(tmp_path)
    spec = load_train_spec(spec_file)
    store = metrics.open_or_create(paths.train_store_path("surr", root), spec, "", {})
    store["loss"][:] = 1.0 / (1.0 + spec.steps - __import__("numpy").arange(spec.steps))
    (root / "surr" / "train.json").write_text(json.dumps({"digest": spec.digest(), "steps": spec.steps,
                                                          "heldout_rmse": 0.25}))
    old = run_job("OUT_OF_MEMORY", 60, tmp_path, spec=spec_file, nodes="n1", submit=time.time() - 3600)
    status = train_run_status("surr", root, jobs=[old])
    assert status["points"][0]["state"] == "done" and status["points"][0]["job"] is None
    assert format_train_status(status).splitlines()[:3] == ["training run surr: 1 done", "state  step   held-out RMSE",
                                                            "done   30/30  0.25"]
