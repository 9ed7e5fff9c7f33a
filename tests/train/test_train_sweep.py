"""Sweeps of training runs (hpc.train.sweep): a sweep: block in a training spec, one train job per
point, one comparison report."""

from __future__ import annotations

import contextlib
import html
import io
import json
import re
import shutil

import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import run_snakemake, write_spec

from hpc.core.errors import SpecError
from hpc.train.sweep import parse_train_sweep

BASE = {
    "name": "tsw",
    "data": {"synthetic": {"samples": 256, "features": 2, "outputs": 1, "seed": 0}, "holdout": 0.25},
    "network": {"kind": "mlp", "width": 8, "depth": 1},
    "optimizer": {"name": "adam", "learning_rate": 1.0e-2},
    "batch_size": 32,
    "steps": 30,
    "eval_every": 10,
    "checkpoint_every": 15,
}


def spec_with(sweep=None, sample=None, drop=(), **top):
    spec = json.loads(json.dumps(BASE))
    for place in drop:
        *parents, last = place.split(".")
        node = spec
        for part in parents:
            node = node[part]
        del node[last]
    spec.update(top)
    if sweep is not None:
        spec["sweep"] = sweep
    if sample is not None:
        spec["sample"] = sample
    return spec


def test_a_sweep_block_expands_to_one_checked_spec_per_point():
    sweep = parse_train_sweep(spec_with({"learning_rate": {"logspace": [1.0e-3, 1.0e-1, 3]},
                                         "shape": {"zip": {"width": [4, 16], "depth": [1, 2]}}},
                                        drop=["optimizer.learning_rate", "network.width", "network.depth"]))
    assert sweep.ids == ("p000", "p001", "p002", "p003", "p004", "p005")
    # the product of the dimensions in order, the zip counting once
    expected = [(lr, w, d) for lr in np.geomspace(1e-3, 1e-1, 3) for w, d in [(4, 1), (16, 2)]]
    got = [(s.optimizer["learning_rate"], s.network["widths"]) for s in sweep.specs]
    for (lr, w, d), (glr, widths) in zip(expected, got):
        assert glr == pytest.approx(lr, rel=1e-12) and widths == [w] * d
    assert [s.name for s in sweep.specs] == [f"tsw/points/p00{i}" for i in range(6)]
    assert len({s.digest() for s in sweep.specs}) == 6
    sampled = parse_train_sweep(spec_with(sample={"method": "sobol", "n": 4, "ranges": {"weight_decay": [0.0, 0.1]}},
                                          optimizer={"name": "adamw", "learning_rate": 1.0e-2}))
    assert len(sampled.specs) == 4 and all(0 <= s.optimizer["weight_decay"] <= 0.1 for s in sampled.specs)


def test_a_user_modules_arguments_are_swept_by_their_place():
    network = {"module": "hpc.train.network:MLP", "args": {"widths": [8]}}
    sweep = parse_train_sweep(spec_with({"network.args.activation": ["tanh", "relu"]}, network=network))
    assert [s.network["args"]["activation"] for s in sweep.specs] == ["tanh", "relu"]
    with pytest.raises(SpecError, match=r"^sweep\.network\.args\.activation: point p001 .*gelux"):
        parse_train_sweep(spec_with({"network.args.activation": ["tanh", "gelux"]}, network=network))
    with pytest.raises(SpecError, match=r"^sweep\.network\.args\.activation: .*all numbers"):
        parse_train_sweep(spec_with({"network.args.activation": ["tanh", 1]}, network=network))


@pytest.mark.parametrize("spec, key, words", [
    (spec_with({"learnin_rate": [0.1, 0.2]}), "sweep.learnin_rate", "unknown training setting"),
    (spec_with({"tasks": [1, 2]}), "sweep.tasks", "not a sweepable"),
    (spec_with({"name": ["a", "b"]}), "sweep.name", "not a sweepable"),
    (spec_with({"seed": [0, 1.5]}), "sweep.seed[1]", "expected an integer"),
    (spec_with({"width": [8, 0]}, drop=["network.width"]), "sweep.width[1]", "out of bounds"),
    (spec_with({"learning_rate": [0.0, 0.1]}, drop=["optimizer.learning_rate"]), "sweep.learning_rate",
     "point p000"),
    (spec_with({"seed": [1, 1]}), "sweep.seed", "more than once"),
    (spec_with({"activation": ["tanh", "sigmoid"]}), "sweep.activation[1]", "not allowed"),
    (spec_with({"learning_rate": [0.1, 0.2]}), "sweep.learning_rate", "both set and swept"),
    (spec_with({"seed": [0, 1], "s": {"zip": {"seed": [2, 3]}}}), "sweep.s", "swept twice"),
    (spec_with({"width": {"linspace": [1, 2]}}, drop=["network.width"]), "sweep.width.linspace", "too short"),
    (spec_with({"batch_size": [32, 33]}, drop=["batch_size"], resources={"tasks": 2}), "sweep.batch_size",
     "does not split"),
    (spec_with({}), "sweep", "nothing is swept"),
    (spec_with(sample={"method": "sobol", "n": 2, "ranges": {"activation": [0, 1]}}), "sample.ranges.activation",
     "float"),
])
def test_bad_sweeps_of_training_specs_are_refused_naming_the_key(spec, key, words):
    with pytest.raises(SpecError) as info:
        parse_train_sweep(spec)
    assert info.value.key == key, info.value
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_plain_training_spec_loader_refuses_a_sweep():
    from hpc.train.spec import parse_train_spec

    with pytest.raises(SpecError, match="^sweep: this spec is a sweep of training runs"):
        parse_train_spec(spec_with({"seed": [0, 1]}))


def test_hpc_train_validate_lists_the_points(tmp_path, capsys):
    from hpc.cli import main

    spec = write_spec(tmp_path, spec_with({"seed": [0, 1]}), "tsw.yaml")
    assert main(["train", "validate", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "a sweep of 2 training runs" in out and "tsw/points/p001: seed=1" in out


@pytest.mark.slow
def test_dry_run_lists_one_train_job_per_point(tmp_path):
    spec = write_spec(tmp_path, spec_with({"seed": [0, 1, 2]}), "tsw.yaml")
    result = run_snakemake(tmp_path, "-n", "--config", f"train={spec}")
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.M))
    assert counts["train"] == "3" and counts["train_sweep_report"] == "1", result.stdout
    assert counts["train_sweep_points"] == "1", result.stdout  # the points' record, for hpc status and report
    for p in ("p000", "p001", "p002"):
        assert f"results/tsw/points/{p}/train.json" in result.stdout


def _points_own_record(root):
    """Each point's final and best held-out RMSE from its own train.zarr and marker, independent of
    the report's and the status's reading."""
    final, best = {}, {}
    for p in ("p000", "p001"):
        run = root / "tsw" / "points" / p
        marker = json.loads((run / "train.json").read_text())
        ds = xr.open_zarr(run / "train.zarr", consolidated=False).load()
        assert marker["name"] == f"tsw/points/{p}" and ds.attrs["segments"][-1]["reason"] == "completed"
        final[p] = float(ds["heldout_rmse"].values[-1])
        assert marker["heldout_rmse"] == pytest.approx(final[p], rel=1e-6)
        best[p] = float(np.min(ds["heldout_rmse"].values))
    return final, best


def _table_rows(page: str) -> list[tuple[str, list[float]]]:
    table = page[page.index('id="training-sweep"'):]
    return [(p, [float(x) for x in re.findall(r'<td class="num">([^<]+)</td>', cells)])
            for p, cells in re.findall(r"<tr><td>(p\d+)</td>(.*?)</tr>", table)]


@pytest.fixture(scope="module")
def two_points(tmp_path_factory):
    """One 2-point sweep of training runs through Snakemake, shared by the tests below."""
    tmp_path = tmp_path_factory.mktemp("tsw")
    spec = write_spec(tmp_path, spec_with({"learning_rate": [1.0e-3, 3.0e-2]}, drop=["optimizer.learning_rate"]),
                      "tsw.yaml")
    run_snakemake(tmp_path, "--config", f"train={spec}")
    return tmp_path / "results"


@pytest.mark.slow
def test_two_points_train_and_the_report_compares_them(two_points):
    final, best = _points_own_record(two_points)
    page = html.unescape((two_points / "tsw" / "report.html").read_text())
    rows = _table_rows(page)
    assert [r[0] for r in rows] == ["p000", "p001"]
    for p, numbers in rows:
        lr, fin, bst = numbers[0], numbers[1], numbers[2]
        assert lr == pytest.approx({"p000": 1e-3, "p001": 3e-2}[p])
        assert fin == pytest.approx(final[p], rel=1e-5) and bst == pytest.approx(best[p], rel=1e-5)
    winner = min(final, key=final.get)
    assert re.search(rf"Best point: <b>{winner}</b>", page)
    assert page.count("<img") >= 2  # the loss and held-out curves overlaid


def _status(root, name="tsw", *flags):
    from hpc.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["status", name, "--results", str(root), *flags])
    return rc, out.getvalue()


@pytest.mark.slow
def test_hpc_status_of_a_sweep_of_training_runs_shows_each_points_state(two_points, tmp_path):
    from hpc.train.sweep_status import train_sweep_status

    final, _ = _points_own_record(two_points)
    rc, out = _status(two_points)
    assert rc == 0 and out.startswith("sweep of training runs tsw (") and ": 2 points: 2 done\n" in out, out
    for p, lr in (("p000", "0.001"), ("p001", "0.03")):
        assert re.search(rf"^{p}\s+{lr}\s+done\s+30/30\s+(\S+)", out, re.M), out
    status = train_sweep_status("tsw", two_points)
    assert [(p["point"], p["state"], p["step"], p["steps"]) for p in status["points"]] == \
        [("p000", "done", 30, 30), ("p001", "done", 30, 30)]
    for p in status["points"]:
        assert p["heldout_rmse"] == pytest.approx(final[p["point"]], rel=1e-6)
    assert f"best: {min(final, key=final.get)} " in out
    assert _status(two_points, "tsw", "--watch", "--interval", "0.01")[0] == 0  # all done: watch ends at once
    # One point's own run is a training run of its own: its status is one row.
    rc, out = _status(two_points, "tsw/points/p001")
    assert rc == 0 and out.startswith("training run tsw/points/p001: 1 done") and re.search(r"^done\s+30/30", out, re.M)

    # As an interrupted sweep leaves it (a copy): p001 stopped after step 15 with no marker yet ...
    root = tmp_path / "results"
    shutil.copytree(two_points / "tsw", root / "tsw")
    p001 = root / "tsw" / "points" / "p001"
    (p001 / "train.json").unlink()
    loss = zarr.open_group(str(p001 / "train.zarr"), mode="r+")["loss"]
    loss[15:] = np.nan  # the steps not run yet
    rc, out = _status(root)
    assert rc == 0 and ": 2 points: 1 done, 1 running\n" in out and re.search(r"^p001\s+0.03\s+running\s+15/30\s*$", out, re.M), out
    assert "best so far: p000 " in out
    # ... hpc report shows the points done and names the others ...
    from hpc.cli import main

    assert main(["report", "tsw", "--results", str(root)]) == 0
    page = html.unescape((root / "tsw" / "report.html").read_text())
    assert [r[0] for r in _table_rows(page)] == ["p000"] and "Not done yet, and left out: p001 (1 of 2 points)" in page
    # ... then p001's job died with a traceback, and p000 is not started (another sweep's copy).
    (p001 / "logs" / "train.log").write_text("train tsw/points/p001: 4 devices\nTraceback (most recent call last):\n"
                                             '  File "x.py", line 1, in <module>\nRuntimeError: the device went away\n')
    shutil.rmtree(root / "tsw" / "points" / "p000")
    rc, out = _status(root)
    assert ": 2 points: 1 failed, 1 not started\n" in out, out
    assert re.search(r"^p000\s+0.001\s+not started\s+0/30\s*$", out, re.M), out
    assert f"p001: failed: RuntimeError: the device went away (log: {p001 / 'logs' / 'train.log'})" in out
    # p000 done again, p001 still failed: nothing left to run, so --watch gives up (exit 1).
    shutil.copytree(two_points / "tsw" / "points" / "p000", root / "tsw" / "points" / "p000")
    rc, out = _status(root, "tsw", "--watch", "--interval", "0.01")
    assert rc == 1 and out.count(": 2 points: 1 done, 1 failed\n") == 2, out


@pytest.mark.slow
def test_hpc_report_of_a_sweep_of_training_runs_rebuilds_the_comparison(two_points, tmp_path):
    from hpc.cli import main

    out = tmp_path / "again.html"
    assert main(["report", "tsw", "--results", str(two_points), "--output", str(out)]) == 0
    rule = _table_rows(html.unescape((two_points / "tsw" / "report.html").read_text()))
    again = html.unescape(out.read_text())
    assert _table_rows(again) == rule and len(rule) == 2  # the same table as the workflow's rule built
    assert "Not done yet" not in again and again.count("<img") >= 2


@pytest.mark.parametrize("command", ["status", "report"])
def test_a_name_that_is_neither_a_sweep_nor_a_sweep_of_training_runs_is_one_line(tmp_path, capsys, command):
    from hpc.cli import main

    (tmp_path / "results" / "old" / "points" / "p000").mkdir(parents=True)  # points, but no record of them
    assert main([command, "nope", "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hpc {command}: error: name: no planned sweep 'nope', nor a training run or a sweep of "
                          f"training runs of that name, under {tmp_path / 'results'} (") and err.count("\n") == 1, err
    assert main([command, "old", "--results", str(tmp_path / "results")]) == 2
    assert "to record the sweep's points (train-sweep.json)" in capsys.readouterr().err
