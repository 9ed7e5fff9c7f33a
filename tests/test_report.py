"""The report, built from stores made by real (in-process) sweeps and a small training store."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import numpy as np
import pytest
import xarray as xr
import yaml
import zarr
from conftest import run_hpc

from hpc.core import paths
from hpc.report import build as report
from hpc.sweep import store
from hpc.sweep.aggregate import aggregate
from hpc.sweep.runner import commit_shard, merge_summaries, run_shard
from hpc.sweep.spec import parse_spec

ONE_D = {"name": "line", "model": "mccall", "params": {"n_wages": 21},
         "sweep": {"c": {"linspace": [15, 30, 8]}}, "shards": 1}
TWO_D = {"name": "grid", "model": "mccall", "params": {"n_wages": 21},
         "sweep": {"c": {"linspace": [15, 30, 6]}, "beta": [0.95, 0.98]}, "shards": 3}
# An iteration cap that the tightest tolerance at the highest β cannot meet: some points fail.
THREE_D = {"name": "cube", "model": "mccall", "params": {"n_wages": 21, "max_iter": 100},
           "sweep": {"c": {"linspace": [15, 30, 4]}, "beta": [0.9, 0.99, 0.995], "tol": [1.0e-4, 1.0e-8]},
           "shards": 2}
SAMPLED = {"name": "sampled", "model": "synthetic", "params": {"steps": 50},
           "sample": {"method": "sobol", "n": 16, "seed": 0, "ranges": {"x0": [0.1, 0.9], "r": [2.5, 3.9]}},
           "shards": 1}


def run_sweep(root, data, shards=None, finish=True):
    """Plan, run and commit the shards of a sweep in this process (what the workflow's jobs do)."""
    spec = parse_spec(data, yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    plan, _ = store.plan_sweep(spec, paths.plan_path(spec.name, root))
    for shard in range(plan.n_shards) if shards is None else shards:
        commit_shard(plan, shard, merge_summaries(plan, shard, [run_shard(plan, shard, root)]), root)
    if finish:
        aggregate(paths.plan_path(spec.name, root))
    return plan


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    for data in (ONE_D, TWO_D, THREE_D, SAMPLED):
        run_sweep(root, data)
    return root


@pytest.fixture
def checked_figures(monkeypatch):
    """Every figure the report draws has a title, labelled axes and a caption."""
    seen = []
    original = report.Figures.add

    def add(self, fig, caption):
        suptitle = fig.get_suptitle()
        for ax in fig.axes:
            if not ax.get_visible():
                continue
            if getattr(ax, "_colorbar", None) is not None:
                assert ax.get_ylabel() or ax.get_xlabel(), "a colour bar without a label"
                continue
            assert ax.get_xlabel() and ax.get_ylabel(), f"unlabelled axes in {suptitle or ax.get_title()!r}"
            assert ax.get_title() or suptitle, "a figure without a title"
        assert len(caption) > 20
        seen.append((suptitle or fig.axes[0].get_title(), caption))
        return original(self, fig, caption)

    monkeypatch.setattr(report.Figures, "add", add)
    return seen


def images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r"src='data:image/png;base64,([^']+)'", page)]


def check_self_contained(page: str) -> None:
    from PIL import Image

    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"(src|href)=['\"](?!data:|#)", page), "a resource outside the page"
    assert "<script" not in page
    pngs = images(page)
    assert pngs and page.count("<figure") == page.count("<figcaption>") == len(pngs)
    for png in pngs:
        Image.open(io.BytesIO(png)).verify()


def section(page: str, anchor: str) -> str:
    start = page.index(f"<h2 id='{anchor}'>")
    end = page.find("<h2 id=", start + 1)
    return page[start:end if end > 0 else None]


def table_rows(html_table: str) -> list[list[str]]:
    body = html_table.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in body.split("</tr>") if "<td" in row]


def test_one_dimensional_sweep_summary_and_line_plots(results, checked_figures):
    page = report.build_report("line", results)
    check_self_contained(page)
    summary = section(page, "summary")
    for needed in ("mccall", "8 computed", "<b>8</b> converged and finite", "points per second",
                   "git commit", "jax 0.", "zarr 3", "linspace: [15, 30, 8]", "wage units"):
        assert needed in summary, needed
    titles = [t for t, _ in checked_figures]
    assert "reservation_wage over the sweep" in titles and "value at the corners and centre of the grid" in titles
    line = next(c for t, c in checked_figures if t == "reservation_wage over the sweep")
    assert "against c [wage units]" in line and "Red crosses" not in line  # every point converged
    stats = section(page, "results").split("Summary statistics", 1)[1]
    rows = {r[0]: r for r in table_rows(stats)}
    ds = xr.open_zarr(paths.store_path("line", results))
    assert float(rows["reservation_wage"][3]) == pytest.approx(float(ds["reservation_wage"].min()), rel=1e-5)
    assert "Every computed point converged" in section(page, "failures")


def test_two_dimensional_sweep_heat_map_and_representative_points(results, checked_figures):
    page = report.build_report("grid", results)
    check_self_contained(page)
    heat = next(c for t, c in checked_figures if t == "reservation_wage over the sweep")
    assert "over beta and c [wage units]" in heat
    sweep = report.load_sweep("grid", results)
    points = [p for _, p in report.representative_points(sweep)]
    assert {(p["c"], p["beta"]) for p in points} == {(0, 0), (0, 1), (5, 0), (5, 1), (3, 1)}
    execution = section(page, "execution")
    assert "Shard timeline" in [t for t, _ in checked_figures]
    plan_rows = table_rows(execution.split("The plan against what ran", 1)[1])
    assert [r[-1] for r in plan_rows] == ["as planned"] * 3


def test_three_dimensional_sweep_with_failed_points(results, checked_figures):
    ds = xr.open_zarr(paths.store_path("cube", results))
    failed = ~ds["converged"].values
    assert 0 < failed.sum() < failed.size  # the spec is made so that some points fail
    page = report.build_report("cube", results)
    check_self_contained(page)
    heat = next(c for t, c in checked_figures if t == "reservation_wage over the sweep")
    assert "One panel per value of" in heat and "red crosses" in heat
    failures = section(page, "failures")
    assert f"{int(failed.sum())} computed points failed, did not converge or are not finite" in failures
    rows = table_rows(failures)
    assert len(rows) == failed.sum()
    expected = {(float(ds.c[i]), float(ds.beta[j]), float(ds.tol[k])) for i, j, k in np.argwhere(failed)}
    assert {(float(r[0]), float(r[1]), float(r[2])) for r in rows} == expected
    assert all(r[3] == "100" and r[5] == "no" for r in rows)  # iterations at the cap, not converged
    assert f"<b class='bad'>{int(failed.sum())}</b> not converged" in section(page, "summary")


def test_non_finite_points_are_listed_with_the_outputs_at_fault(results, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(results / "grid", root / "grid")
    group = zarr.open_group(str(paths.store_path("grid", root)), mode="r+")
    group["reservation_wage"][2, 1] = np.nan
    group["finite"][2, 1] = False
    sweep = report.load_sweep("grid", root)
    assert "<b class='bad'>1</b> not finite" in report.summary_section(sweep)
    (row,) = table_rows(report.failures_section(sweep))
    assert row[0] == "21" and row[1] == "0.98" and row[-2] == "reservation_wage"


def test_points_the_model_raised_for_are_listed_with_its_error(tmp_path, monkeypatch, checked_figures):
    from hpc import models

    monkeypatch.setitem(models._MODULES, "faulty", "faulty_model")  # tests/faulty_model.py
    run_sweep(tmp_path, {"name": "faulty", "model": "faulty",
                         "sweep": {"x": [0.1, 0.2, 0.3], "variant": ["fine", "broken"]}, "shards": 1})
    page = report.build_report("faulty", tmp_path)
    check_self_contained(page)
    assert "<b class='bad'>3</b> failed (the model raised)" in section(page, "summary")
    failures = section(page, "failures")
    rows = table_rows(failures.split("Errors the model raised")[0])
    assert [(r[0], r[1]) for r in rows] == [("0.1", "broken"), ("0.2", "broken"), ("0.3", "broken")]
    assert all(r[-1] == "NotImplementedError: variant &#x27;broken&#x27; has no solver" for r in rows)
    assert "variant=broken" in failures.split("Errors the model raised")[1]
    heat = next(c for t, c in checked_figures if t == "iterations over the sweep")
    assert "over variant and x" in heat and "red crosses" in heat


def test_sampled_sweep_plots_points_in_parameter_plane(results, checked_figures):
    page = report.build_report("sampled", results)
    check_self_contained(page)
    caption = next(c for t, c in checked_figures if t == "state at the sampled points")
    assert "placed by x0 and r" in caption


def test_partial_sweep_report_and_recorded_attempts(results, tmp_path, checked_figures):
    # The 2-D sweep as it stood with shard 1 not run yet, and shard 2 retried and resumed.
    root = tmp_path / "results"
    shutil.copytree(results / "grid", root / "grid")
    paths.marker_path("grid", 1, root).unlink()
    group = zarr.open_group(str(paths.store_path("grid", root)), mode="r+")
    group["point_done"][...] = group["shard_index"][...] != 1
    marker = paths.marker_path("grid", 2, root)
    body = json.loads(marker.read_text())
    body.update(attempt=2, job_id="4242", computed=body["points"] - 1)  # as a retried, resumed job would record
    marker.write_text(json.dumps(body))
    sweep = report.load_sweep("grid", root)
    sweep.ds.attrs.pop("completed")
    sweep.ds.attrs["shards"] = [s for s in sweep.ds.attrs["shards"] if s["shard"] != 1]
    sweep.shards = report.shard_records("grid", root, sweep.ds, sweep.plan)
    assert "not aggregated (8 of 12 points committed so far)" in report.summary_section(sweep)
    assert "4 points are not computed yet" in report.failures_section(sweep)
    execution = report.execution_section(sweep, report.Figures())
    header = re.findall(r"<th>(.*?)</th>", execution.split("Times are seconds", 1)[1].split("</thead>")[0])
    assert header[:3] == ["shard", "job", "attempt"]
    assert "run more than once (a retry or a resubmission): 2" in execution
    assert "resumed from chunks an earlier attempt had committed: 2" in execution
    verdicts = [r[-1] for r in table_rows(execution.split("The plan against what ran", 1)[1])]
    assert verdicts == ["as planned", "not run (no marker)", "resumed"]
    assert [t for t, _ in checked_figures] == ["Shard timeline", "Per-shard duration and throughput"]
    page = report.build_report("grid", root)  # the whole page, with shard 1's points missing from the plots
    check_self_contained(page)
    assert "grey cells are not computed" in page


def test_model_section_is_included_and_its_failure_does_not_sink_the_report(results, monkeypatch):
    import dataclasses

    sweep = report.load_sweep("grid", results)
    assert report.model_section(sweep) == ""  # mccall declares none
    sweep.model = dataclasses.replace(sweep.model, report_section=lambda ds: f"<p>paper table for {ds.sizes['c']} values</p>")
    assert "<p>paper table for 6 values</p>" in report.model_section(sweep)

    def broken(ds):
        raise ValueError("no paper here")

    sweep.model = dataclasses.replace(sweep.model, report_section=broken)
    assert "ValueError: no paper here" in report.model_section(sweep)
    # The page calls it: a model's section lands between the results and the failures.
    monkeypatch.setattr(report, "model_section", lambda sweep: "<h2 id='model'>from the model</h2>")
    page = report.build_report("line", results)
    assert page.index("id='results'") < page.index("from the model") < page.index("id='failures'")


def write_training_store(path, group=None):
    """A small train.zarr: per-step and per-evaluation variables, events recorded two ways."""
    steps, evals = np.arange(1, 121), np.arange(0, 121, 20)
    data = {"loss": ("step", 2.0 * np.exp(-steps / 30) + 0.01, {"long_name": "training loss"}),
            "samples_per_second": ("step", np.full(120, 900.0), {"units": "1/s"}),
            "step_time": ("step", np.full(120, 0.02), {"units": "s"}),
            "heldout_loss": ("eval_step", 2.2 * np.exp(-evals / 30) + 0.02),
            "heldout_rmse": ("eval_step", np.exp(-evals / 40), {"units": "wage units"}),
            "train_rmse": ("eval_step", 0.9 * np.exp(-evals / 40), {"units": "wage units"}),
            "weights": (("step", "layer"), np.zeros((120, 2)))}
    if group:  # a generic layout: events as a variable and an attribute
        data["checkpoint_step"] = ("checkpoint", np.array([40, 80]))
        attrs = {"resumes": json.dumps([{"step": 80, "from": "checkpoint 80"}]), "optimizer": "adam"}
    else:  # hpc.train's layout: one segment per attempt, the spec, the final figures
        attrs = {"spec": json.dumps({"steps": 120, "checkpoint_every": 40}), "spec_text": "name: run\nsteps: 120\n",
                 "segments": [{"first_step": 1, "last_step": 60, "restored_from": None, "hosts": ["n1"],
                               "reason": "stopped (SIGTERM)"},
                              {"first_step": 61, "last_step": 120, "restored_from": 60, "hosts": ["n2"],
                               "reason": "completed"}],
                 "final": {"heldout_rmse": 0.05, "samples_per_second": 900.0}, "optimizer": "adam"}
    ds = xr.Dataset(data, coords={"step": steps, "eval_step": evals}, attrs=attrs)
    ds.to_zarr(path, group=group, zarr_format=3, mode="a" if group else "w", consolidated=False)


@pytest.mark.parametrize("group", [None, "metrics"])
def test_training_store_curves_and_events(tmp_path, checked_figures, group):
    write_training_store(report.train_store_path("run", tmp_path), group)
    page = report.build_report("run", tmp_path)
    check_self_contained(page)
    assert page.count("<h1>Training run run</h1>") == 1 and "id='summary'" not in page
    titles = [t for t, _ in checked_figures]
    prefix = f"{group}/" if group else ""
    assert titles[0] == f"{prefix}loss during training"  # losses first
    assert {f"{prefix}{n} during training" for n in ("loss", "rmse", "samples_per_second", "step_time")} == set(titles)
    captions = dict(checked_figures)
    assert "loss, heldout_loss against the training step" in captions[f"{prefix}loss during training"]
    assert "heldout_rmse, train_rmse" in captions[f"{prefix}rmse during training"]
    assert "checkpoints" in captions[f"{prefix}loss during training"]
    assert "resumes" in captions[f"{prefix}loss during training"]
    training = section(page, "training")
    assert "weights" in training and "adam" in training
    if group:
        assert "40, 80</td>" in training and f"{prefix}resumes</th><td>80</td>" in training
    else:
        assert "checkpoints</th><td>40, 60, 80, 120</td>" in training and "resumes</th><td>60</td>" in training
        attempts = table_rows(training.split("Attempts", 1)[1])
        assert [r[0] for r in attempts] == ["1", "2"] and attempts[1][3] == "60"
        assert "name: run" in training and "heldout_rmse" in training.split("<h3>final</h3>", 1)[1]


def test_hpc_report_rebuilds_from_the_store_alone(results, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(results / "cube", root / "cube")
    (root / "cube" / "plan.json").unlink()
    shutil.rmtree(root / "cube" / "shards")
    out = run_hpc("report", "cube", "--results", root).stdout.strip()
    assert out == str(root / "cube" / "report.html")
    page = (root / "cube" / "report.html").read_text()
    check_self_contained(page)
    assert "Shard timeline" in page and "No plan file of this spec" in page
    missing = run_hpc("report", "nothing-here", "--results", root, check=False)
    assert missing.returncode == 2 and "no sweep store or training store" in missing.stderr
    assert "Traceback" not in missing.stderr
