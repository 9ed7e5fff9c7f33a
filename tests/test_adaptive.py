"""Adaptive sweeps (hpc.sweep.adaptive): bad adaptive: blocks refused at parse time with the key,
and one small McCall sweep end to end through Snakemake (profiles/local) whose controller is
killed mid-round, resumed, checked against an independent reservation wage, and rerun (nothing):
with shard jobs, and with backend: dask (a local dask cluster), bitwise the shard-job sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import PYTHON, REPO, run_snakemake, write_spec
from scipy.stats import betabinom

from hpc.core.errors import SpecError
from hpc.sweep import adaptive
from hpc.sweep.spec import parse_spec

BASE = {
    "name": "mccall-adaptive",
    "model": "mccall",
    "params": {"n_wages": 21, "tol": 1.0e-5},
    "adaptive": {"box": {"c": [10.0, 40.0], "beta": [0.9, 0.98]}, "output": "reservation_wage",
                 "points_per_round": 6, "stop": {"max_points": 12}},
}


def with_adaptive(**changes):
    spec = json.loads(json.dumps(BASE))
    spec["adaptive"].update(changes)
    return spec


BAD = [
    ("unknown parameter", with_adaptive(box={"kappa": [0.1, 0.2]}), "adaptive.box.kappa", "no parameter"),
    ("unknown output", with_adaptive(output="wage_bill"), "adaptive.output", "no output"),
    ("non-scalar output", with_adaptive(output="value"), "adaptive.output", "not a scalar"),
    ("one of several outputs not scalar", with_adaptive(output=["reservation_wage", "value"]), "adaptive.output", "not a scalar"),
    ("inverted box", with_adaptive(box={"c": [40.0, 10.0]}), "adaptive.box.c", "inverted"),
    ("empty box range", with_adaptive(box={"c": [20.0, 20.0]}), "adaptive.box.c", "empty"),
    ("no box at all", with_adaptive(box={}), "adaptive.box", ""),
    ("out of the parameter's bounds", with_adaptive(box={"beta": [0.9, 1.5]}), "adaptive.box.beta", "out of bounds"),
    ("shape parameter", with_adaptive(box={"n_wages": [10, 20]}), "adaptive.box.n_wages", "float parameter"),
    ("no max_points", with_adaptive(stop={"loss": 0.01}), "adaptive.stop", "max_points"),
    ("unknown stop key", with_adaptive(stop={"max_points": 10, "patience": 3}), "adaptive.stop", "patience"),
    ("zero points per round", with_adaptive(points_per_round=0), "adaptive.points_per_round", ""),
    ("both sweep and adaptive", dict(BASE, sweep={"c": [10.0, 20.0]}), "sweep", "both"),
    ("both sample and adaptive", dict(BASE, sample={"method": "sobol", "n": 4, "ranges": {"c": [1.0, 2.0]}}), "sample", "both"),
    ("fixed and in the box", dict(BASE, params={"c": 20.0}), "params.c", "both fixed"),
    ("more shards than points per round", dict(BASE, shards=7), "shards", "7 shards"),
    ("dask settings without backend: dask", dict(BASE, dask={"cluster": "local"}), "dask", "backend is not dask"),
]


@pytest.mark.fault("bad adaptive: blocks (unknown parameter/output, non-scalar output, empty or inverted box, "
                   "sweep: and adaptive:, ...)", expect="one-line SpecError naming the key, at parse time")
@pytest.mark.parametrize("label, spec, key, words", BAD, ids=[b[0] for b in BAD])
def test_bad_adaptive_block_is_refused_with_its_key(label, spec, key, words):
    with pytest.raises(SpecError) as err:
        parse_spec(spec)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(key), message
    assert words in message, message


def test_a_good_block_is_checked_and_digested():
    spec = parse_spec(BASE)
    assert spec.adaptive == {"box": {"c": [10.0, 40.0], "beta": [0.9, 0.98]}, "outputs": ["reservation_wage"],
                             "points_per_round": 6, "stop": {"loss": None, "max_points": 12, "max_rounds": 50}}
    assert "c" not in spec.fixed and "beta" not in spec.fixed
    assert parse_spec(with_adaptive(points_per_round=5)).digest() != spec.digest()
    # a round is a sweep of explicit points: one sampled dimension named point
    r = adaptive.round_spec(spec, 1, {"c": [11.0, 12.0], "beta": [0.91, 0.92]})
    assert (r.name, r.dims, r.shape, r.adaptive) == ("round-0001", ("point",), (2,), None)
    # backend: dask is taken (its rounds run as dask tasks), and a round keeps it
    dask = parse_spec(dict(BASE, backend="dask", dask={"cluster": "local"}))
    assert dask.adaptive == spec.adaptive and dask.digest() == spec.digest()  # how points run is not what they are
    assert adaptive.round_spec(dask, 0, {"c": [11.0], "beta": [0.91]}).backend == "dask"


def test_dry_run_description_shows_the_first_round_and_writes_nothing(tmp_path):
    text = adaptive.describe_first_round(parse_spec(BASE), root=tmp_path)
    lines = text.splitlines()
    assert lines[1] == "round 0 (0 points solved so far): 6 points"
    assert lines[2:6] == ["  c=10, beta=0.9", "  c=10, beta=0.98", "  c=40, beta=0.9", "  c=40, beta=0.98"]  # the corners
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("source", ["builtin", "file"])
def test_one_parameter_rounds_in_process_stop_at_the_loss_goal(tmp_path, source):
    """The controller's steps without Snakemake, for Learner1D: ask, plan, run the shard, merge;
    the next ask stops once the loss is under the goal. The same for McCall's model from a file."""
    from user_models import mccall_file_model

    from hpc.sweep.runner import run_and_commit

    model = "mccall" if source == "builtin" else mccall_file_model(tmp_path / "models")
    spec = parse_spec(dict(BASE, name="mccall-1d", model=model, params={"n_wages": 21, "tol": 1.0e-5, "beta": 0.95},
                           adaptive={"box": {"c": [10.0, 40.0]}, "output": "reservation_wage", "points_per_round": 3,
                                     "stop": {"loss": 10.0, "max_points": 30}}))
    root = tmp_path / "results"
    ask = adaptive.ask_round(spec, 0, adaptive.ask_path(spec.name, 0, root), root=root)
    assert ask["stop"] is False and sorted(ask["points"]["c"]) == [10.0, 25.0, 40.0]  # ends, then the middle
    plan_file = adaptive.round_plan_path(spec.name, 0, root)
    plan, _ = adaptive.plan_round(spec, adaptive.ask_path(spec.name, 0, root), plan_file)
    run_and_commit(str(plan_file), 0)
    round_store = plan_file.parent / "sweep.zarr"
    assert (round_store / "reservation_wage" / "zarr.json").exists()
    adaptive.merge_round(spec, plan_file, adaptive.merged_path(spec.name, 0, root), root=root)
    assert_outputs_kept_once(round_store, box=("c",))
    assert adaptive.merge_round(spec, plan_file, root / "again.json", root=root)["n"] == 3  # merged again: nothing read
    stop = adaptive.ask_round(spec, 1, adaptive.ask_path(spec.name, 1, root), root=root)
    assert stop["stop"] and stop["reason"].startswith("loss") and 0 < stop["loss"] <= 10.0
    ds = xr.open_zarr(root / "mccall-1d" / "sweep.zarr", consolidated=False)
    np.testing.assert_allclose(ds["reservation_wage"].values, [reservation_wage(c, 0.95) for c in ds["c"].values], rtol=1e-3)
    assert ("model_source" in ds.attrs) == (source == "file")  # a file's sha256 is recorded, as in a grid sweep
    # how the round ran: its shard ran here, in no Slurm job (run_and_commit in this process)
    from hpc.execution.distributed import node_name

    here = None if os.environ.get("SLURM_JOB_ID") else node_name()
    if here is not None:
        assert ds.attrs["rounds"][0]["execution"] == {"backend": "jax", "jobs": [], "hosts": [here], "slurm": False,
                                                      "processes": 1}
    if source == "builtin":
        from hpc.report.adaptive import adaptive_section, write_adaptive_report

        page = write_adaptive_report(spec.name, root).read_text()
        cell = page.split('id="adaptive-execution">', 1)[1].split("</td>", 1)[0]
        if here is not None:
            assert cell == f"shard jobs, local (no Slurm job) on {here} (1 round)", cell
        assert "<th>ran on</th>" in page.split('id="adaptive-rounds"', 1)[1]
        # a store merged before rounds recorded how they ran says so
        group = zarr.open_group(str(root / spec.name / "sweep.zarr"), mode="r+", zarr_format=3)
        group.attrs["rounds"] = [{k: v for k, v in r.items() if k != "execution"} for r in group.attrs["rounds"]]
        old = adaptive_section(spec.name, root)
        assert old["execution"] == "not recorded (1 round)" and old["rounds"].rows[0][-1] == "not recorded"
        assert adaptive.describe_progress(spec.name, root).splitlines()[1].endswith("; ran on: not recorded")
    with pytest.raises(RuntimeError, match="round 0 asked with 1 rounds merged"):  # a stale round is never asked again
        adaptive.ask_round(spec, 0, tmp_path / "other-ask.json", root=root)


def assert_outputs_kept_once(round_store, box=("c", "beta")):
    """A merged round's own store keeps its status arrays (for hpc status of the round), not the
    outputs, which the sweep's store holds."""
    kept = {*box, "point", "point_done", "finite", "failed", "converged", "shard_index", "wage"}  # no output but converged
    assert {p.name for p in round_store.iterdir() if p.is_dir()} == kept


def reservation_wage(c: float, beta: float, n_wages: int = 21) -> float:
    """The McCall reservation wage from its scalar equation, by bisection (no value iteration):
    w/(1-β) = c + β Σ p(w') max(w', w)/(1-β), offers BetaBinomial(n-1, 200, 100) on 10..60."""
    w = np.linspace(10.0, 60.0, n_wages)
    p = betabinom(n_wages - 1, 200.0, 100.0).pmf(np.arange(n_wages))
    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid / (1 - beta) - c - beta * np.sum(p * np.maximum(w, mid)) / (1 - beta) > 0:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def round_dir(tmp_path, r, name="mccall-adaptive"):
    return tmp_path / "results" / name / "rounds" / f"round-{r:04d}"


@pytest.mark.slow
@pytest.mark.fault("adaptive sweep: Snakemake controller killed (SIGKILL) mid-round",
                   expect="rerun finishes the round; no committed round solved again; same points asked; rerun does nothing")
def test_adaptive_mccall_sweep_killed_mid_round_resumes_and_rerun_does_nothing(tmp_path):
    spec = write_spec(tmp_path, BASE)
    cmd = [PYTHON, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--profile", str(REPO / "profiles" / "local"),
           "--directory", str(tmp_path), "--config", f"sweep={spec}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    deadline = time.time() + 300
    while time.time() < deadline and not (round_dir(tmp_path, 1) / "plan.json").exists() and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the controller and round 1's running shard jobs die at once
    proc.wait()
    assert (round_dir(tmp_path, 0) / "merged.json").exists() and not (round_dir(tmp_path, 1) / "merged.json").exists()
    round0 = {m.name: m.read_text() for m in (round_dir(tmp_path, 0) / "shards").glob("*.json")}
    asked1 = (round_dir(tmp_path, 1) / "ask.json").read_text()
    assert len(round0) == 1
    assert_outputs_kept_once(round_dir(tmp_path, 0) / "sweep.zarr")

    run_snakemake(tmp_path, "--unlock", "--config", f"sweep={spec}")
    run_snakemake(tmp_path, "--config", f"sweep={spec}")
    # round 0 was not solved again, round 1 solved the points asked before the kill
    assert {m.name: m.read_text() for m in (round_dir(tmp_path, 0) / "shards").glob("*.json")} == round0
    assert (round_dir(tmp_path, 1) / "ask.json").read_text() == asked1
    ds = xr.open_zarr(tmp_path / "results" / "mccall-adaptive" / "sweep.zarr")
    assert ds.sizes["point"] == 12 and ds["point_done"].all()
    assert ds["round"].values.tolist() == [0] * 6 + [1] * 6
    pairs = set(zip(ds["c"].values.tolist(), ds["beta"].values.tolist()))
    assert len(pairs) == 12, "a point was solved twice"
    assert {(10.0, 0.9), (10.0, 0.98), (40.0, 0.9), (40.0, 0.98)} <= pairs  # Learner2D starts at the box's corners
    asked = json.loads(asked1)["points"]
    assert sorted(zip(asked["c"], asked["beta"])) == sorted(zip(ds["c"].values[6:], ds["beta"].values[6:]))
    expected = [reservation_wage(c, b) for c, b in zip(ds["c"].values, ds["beta"].values)]
    # VFI stops at a relative change of tol = 1e-5, within beta/(1-beta) tol max|v| of the fixed point
    # in v, so w = (1-beta)(c + beta p.v) within beta^2 tol max|v| <= 0.03 (max|v| = 60/(1-0.98)) of it: 1e-3 of w >= 40.
    np.testing.assert_allclose(ds["reservation_wage"].values, expected, rtol=1e-3)
    attrs = ds.attrs
    assert [r["n"] for r in attrs["rounds"]] == [6, 6]
    assert attrs["final"]["reason"].startswith("max_points")
    assert np.isinf(attrs["rounds"][0]["loss_before"]) and np.isfinite(attrs["rounds"][1]["loss_before"])
    status = adaptive.describe_progress("mccall-adaptive", tmp_path / "results")  # what hpc status prints
    assert "2 rounds merged, 12 points; stopped after 2 rounds: max_points" in status
    # merging a merged round again (a merge killed after recording it) changes nothing
    before = ds["reservation_wage"].values.copy()
    again_merge = adaptive.merge_round(parse_spec(BASE), round_dir(tmp_path, 1) / "plan.json", tmp_path / "m.json",
                                       root=tmp_path / "results")
    assert again_merge == attrs["rounds"][1]
    after = xr.open_zarr(tmp_path / "results" / "mccall-adaptive" / "sweep.zarr", consolidated=False)
    assert after.sizes["point"] == 12 and np.array_equal(after["reservation_wage"].values, before)
    page = (tmp_path / "results" / "mccall-adaptive" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and 'id="adaptive-rounds"' in page

    again = run_snakemake(tmp_path, "-n", "--config", f"sweep={spec}")
    assert "Nothing to be done" in again.stdout + again.stderr
    assert "round 2: stop (max_points" in again.stderr


DASK = dict(BASE, name="mccall-adaptive-dask", shards=2, backend="dask", dask={"cluster": "local", "max_workers": 1})


def shard_job_sweep(spec, root):
    """The sweep with the shard-job backend, its controller's steps in this process: ask, plan,
    every shard as run-shard runs it, merge, until an ask says stop."""
    from hpc.sweep.runner import run_and_commit

    r = 0
    while not adaptive.ask_round(spec, r, adaptive.ask_path(spec.name, r, root), root=root)["stop"]:
        plan_file = adaptive.round_plan_path(spec.name, r, root)
        plan, _ = adaptive.plan_round(spec, adaptive.ask_path(spec.name, r, root), plan_file)
        for shard in range(plan.n_shards):
            run_and_commit(str(plan_file), shard)
        adaptive.merge_round(spec, plan_file, adaptive.merged_path(spec.name, r, root), root=root)
        r += 1
    return zarr.open_group(str(root / spec.name / "sweep.zarr"), mode="r", zarr_format=3)


@pytest.mark.slow
@pytest.mark.fault("adaptive sweep with backend: dask, Snakemake controller killed (SIGKILL) while a round's dask job runs",
                   expect="rerun finishes the round from the points asked before; every array bitwise the shard-job sweep's")
def test_adaptive_dask_sweep_killed_mid_round_resumes_bitwise_the_shard_job_sweep(tmp_path):
    name = DASK["name"]
    spec = write_spec(tmp_path, DASK)
    cmd = [PYTHON, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--profile", str(REPO / "profiles" / "local"),
           "--directory", str(tmp_path), "--config", f"sweep={spec}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    dask_log = round_dir(tmp_path, 1, name) / "logs" / "dask.log"
    deadline = time.time() + 300
    while time.time() < deadline and not dask_log.exists() and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the controller, round 1's run-dask job and its dask workers die at once
    proc.wait()
    assert dask_log.exists(), "round 1's dask job never started"
    assert (round_dir(tmp_path, 0, name) / "merged.json").exists() and not (round_dir(tmp_path, 1, name) / "merged.json").exists()
    round0 = {m.name: m.read_text() for m in (round_dir(tmp_path, 0, name) / "shards").glob("*.json")}
    asked1 = (round_dir(tmp_path, 1, name) / "ask.json").read_text()
    assert len(round0) == 2  # the run-dask job wrote both shards' markers

    run_snakemake(tmp_path, "--unlock", "--config", f"sweep={spec}")
    run_snakemake(tmp_path, "--config", f"sweep={spec}")
    assert {m.name: m.read_text() for m in (round_dir(tmp_path, 0, name) / "shards").glob("*.json")} == round0
    assert (round_dir(tmp_path, 1, name) / "ask.json").read_text() == asked1
    ran = [json.loads((round_dir(tmp_path, r, name) / "dask.json").read_text()) for r in (0, 1)]
    assert ran[0]["shards"] == 2 and ran[0]["chunks"] > 2  # one task per chunk, not per shard
    assert ran[1]["shards"] <= 2  # the rerun: the shards the kill left unfinished
    for r in (0, 1):
        assert_outputs_kept_once(round_dir(tmp_path, r, name) / "sweep.zarr")
        assert len(list((round_dir(tmp_path, r, name) / "shards").glob("*.json"))) == 2

    got = zarr.open_group(str(tmp_path / "results" / name / "sweep.zarr"), mode="r", zarr_format=3)
    want = shard_job_sweep(parse_spec(dict(BASE, name=name, shards=2)), tmp_path / "reference")
    assert sorted(got.array_keys()) == sorted(want.array_keys())
    assert got["c"].shape == (12,) and np.asarray(got["point_done"][...]).all()
    for key in want.array_keys():
        a, b = np.asarray(got[key][...]), np.asarray(want[key][...])
        assert a.dtype == b.dtype and a.shape == b.shape, key
        assert a.tobytes() == b.tobytes(), f"{key} differs from the shard-job sweep's"
    assert [(r["first"], r["n"], r["shards"]) for r in got.attrs["rounds"]] == [(0, 6, 2), (6, 6, 2)]
    assert [(r["execution"]["backend"], r["execution"]["cluster"]) for r in got.attrs["rounds"]] == [("dask", "local")] * 2
    assert got.attrs["final"]["reason"] == want.attrs["final"]["reason"]
    np.testing.assert_allclose(got["reservation_wage"][...],
                               [reservation_wage(c, b) for c, b in zip(got["c"][...], got["beta"][...])], rtol=1e-3)

    again = run_snakemake(tmp_path, "-n", "--config", f"sweep={spec}")
    assert "Nothing to be done" in again.stdout + again.stderr
