"""The training job on this machine: it learns, it resumes bitwise after SIGTERM, its checkpoints
survive a kill during a save, and sharding the parameters changes nothing but rounding."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import train_helpers
from conftest import PYTHON, REPO, run_hpc
from train_helpers import assert_same_params, final_params, open_run

from hpc.train.checkpoint import Checkpoints, load_state
from hpc.train.surrogate import load_surrogate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def mccall_store(tmp_path_factory):
    return train_helpers.mccall_store(tmp_path_factory)


@pytest.fixture(scope="module")
def trained(mccall_store, tmp_path_factory):
    """The small surrogate trained without interruption, one process, two CPU devices."""
    workdir = tmp_path_factory.mktemp("trained")
    spec = train_helpers.workdir_with_store(mccall_store, workdir,
                                            dict(train_helpers.MCCALL_SURROGATE, cpu_devices=2))
    run_hpc("train", "run", spec, "--cpu-devices", "2", cwd=workdir)
    return workdir


def test_the_surrogate_learns_and_reports_its_heldout_error(trained):
    ds = open_run(trained)
    assert ds.sizes == {"step": 1000, "eval_step": 11}
    assert not np.isnan(ds["loss"]).any() and not np.isnan(ds["heldout_rmse"]).any()
    loss = ds["loss"].values
    assert loss[-50:].mean() < 0.02 * loss[:50].mean()
    marker = json.loads((trained / "results" / "mc-surr" / "train.json").read_text())
    heldout_std = np.std(_heldout_targets(trained))
    assert marker["heldout_rmse"] < train_helpers.HELDOUT_RMSE_BOUND * heldout_std, (marker, heldout_std)
    assert marker["heldout_rmse"] == pytest.approx(float(ds["heldout_rmse"][-1]), rel=1e-6)
    assert marker["heldout_max_error"] >= marker["heldout_rmse"]
    assert marker["model_s_per_point"] > 0 and marker["surrogate_s_per_point"] > 0
    assert marker["layout"]["devices"] == 2 and ds.attrs["segments"][-1]["reason"] == "completed"
    assert ds["samples_per_second"].median() > 0 and (ds["learning_rate"][1:] > 0).all()  # warm-up from 0


def _heldout_targets(workdir):
    from hpc.train.data import load_dataset
    from hpc.train.spec import load_train_spec

    return load_dataset(load_train_spec(workdir / "train.yaml"), workdir / "results").y_heldout


def test_the_trained_surrogate_is_a_function_in_model_units(trained):
    from hpc.train.data import load_dataset
    from hpc.train.spec import load_train_spec

    f = load_surrogate("mc-surr", trained / "results")
    data = load_dataset(load_train_spec(trained / "train.yaml"), trained / "results")
    x = data.x_heldout * data.x_std + data.x_mean
    pred = f(c=x[:, 0], beta=x[:, 1], wage=x[:, 2])
    rmse = float(np.sqrt(np.mean((pred - data.y_heldout) ** 2)))
    marker = json.loads((trained / "results" / "mc-surr" / "train.json").read_text())
    assert rmse == pytest.approx(marker["heldout_rmse"], rel=1e-3)


def test_rerunning_a_finished_run_does_nothing(trained):
    before = (trained / "results" / "mc-surr" / "train.json").read_text()
    result = run_hpc("train", "run", trained / "train.yaml", cwd=trained)
    assert "already complete" in result.stderr
    assert (trained / "results" / "mc-surr" / "train.json").read_text() == before


def _start(spec, workdir, *extra):
    return subprocess.Popen([PYTHON, "-m", "hpc", "train", "run", str(spec), *extra], cwd=workdir,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for_checkpoint(workdir, proc, timeout=120, name="mc-surr") -> int:
    ckpts = workdir / "results" / name / "checkpoints"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        done = [int(p.name) for p in ckpts.glob("*") if p.name.isdigit()] if ckpts.exists() else []
        if done:
            return min(done)
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint appeared; output:\n{proc.communicate()[0] if proc.poll() is not None else ''}")


def test_sigterm_saves_then_a_rerun_resumes_to_bitwise_the_same_parameters(trained, mccall_store, tmp_path):
    spec = train_helpers.workdir_with_store(mccall_store, tmp_path,
                                            dict(train_helpers.MCCALL_SURROGATE, cpu_devices=2,
                                                 checkpoint_every=20))
    proc = _start(spec, tmp_path, "--cpu-devices", "2")
    first = _wait_for_checkpoint(tmp_path, proc)
    os.killpg(proc.pid, signal.SIGTERM)  # the launcher and the process, as Slurm signals a step
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    stopped = Checkpoints(tmp_path / "results" / "mc-surr" / "checkpoints").latest_step()
    assert first <= stopped < 1000, (first, stopped, out)
    assert f"stopped after step {stopped} on SIGTERM" in out

    result = run_hpc("train", "run", spec, "--cpu-devices", "2", cwd=tmp_path)
    assert f"resumed from checkpoint {stopped}" in result.stderr
    resumed, reference = open_run(tmp_path), open_run(trained)
    assert [s["reason"] for s in resumed.attrs["segments"]] == ["stopped (SIGTERM)", "completed"]
    np.testing.assert_array_equal(resumed["loss"].values, reference["loss"].values)
    np.testing.assert_array_equal(resumed["heldout_rmse"].values, reference["heldout_rmse"].values)
    params, meta = final_params(tmp_path)
    assert meta["step"] == 1000
    assert_same_params(params, final_params(trained)[0])


def test_sharded_parameters_over_two_processes_train_like_replicated_ones_on_one(trained, mccall_store, tmp_path):
    # FSDP-style over 2 processes (1 device each) against the replicated reference (1 process, 2
    # devices): the same batches, other collectives, so the same curve up to rounding.
    spec = train_helpers.workdir_with_store(mccall_store, tmp_path,
                                            dict(train_helpers.MCCALL_SURROGATE, shard_params=True))
    run_hpc("train", "run", spec, "--tasks", "2", cwd=tmp_path)
    sharded, reference = open_run(tmp_path), open_run(trained)
    assert sharded.attrs["layout"] == dict(reference.attrs["layout"], processes=2, shard_params=True)
    np.testing.assert_allclose(sharded["loss"].values, reference["loss"].values, rtol=train_helpers.LOSS_RTOL)
    np.testing.assert_allclose(sharded["heldout_rmse"].values, reference["heldout_rmse"].values,
                               rtol=train_helpers.LOSS_RTOL)
    params, _ = final_params(tmp_path)
    assert params["Dense_1"]["kernel"].shape == (32, 32)  # gathered whole from its shards


KILLED_SAVER = """
import sys
sys.path.insert(0, {repo!r})
import jax.numpy as jnp
from hpc.train.checkpoint import Checkpoints
ck = Checkpoints({directory!r}, keep=2, asynchronous=False)
for step in range((ck.latest_step() or 0) + 1, 100000):
    ck.save(step, {{"step": jnp.int32(step), "w": jnp.full((1000, 1000), float(step))}}, {{"step": step}})
    ck.wait()
    print("saved", step, flush=True)
"""


def test_a_kill_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    directory = tmp_path / "checkpoints"
    code = KILLED_SAVER.format(repo=str(REPO), directory=str(directory))
    left_half_written = 0
    for delay in (0.05, 0.13, 0.21, 0.29, 0.37):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        first = proc.stdout.readline()  # one save done: kill at some point of the following ones
        time.sleep(delay)
        proc.kill()
        out, _ = proc.communicate()
        saved = [int(line.split()[1]) for line in (first + out).splitlines() if line.startswith("saved")]
        left_half_written += any(".orbax-checkpoint-tmp" in p.name for p in directory.iterdir())
        state, meta = load_state(directory)
        latest = Checkpoints(directory).latest_step()
        assert saved and latest >= saved[-1], (saved, latest)  # nothing reported saved was lost
        assert meta["step"] == latest == int(state["step"])
        assert np.all(state["w"] == latest)  # the whole checkpoint, never a mix
    assert left_half_written, "no kill landed inside a save; the test proved nothing"
