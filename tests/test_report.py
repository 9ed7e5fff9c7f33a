"""The report, built from stores made by real (in-process) sweeps and a training store laid out by
hpc.train.metrics, read back with html.parser (tests/report_page.py) and checked against what the
stores and the shard markers hold."""

from __future__ import annotations

import base64
import dataclasses
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
from report_page import parse

from hpc.core import paths, timefmt
from hpc.models import ReportTable, get_model
from hpc.report import build_report
from hpc.report.figures import Figures
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
SWEEP_SECTIONS = ["Summary", "Results", "Failures", "Execution"]


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
    original = Figures.add

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

    monkeypatch.setattr(Figures, "add", add)
    return seen


# --------------------------------------------------------------------------------------------
# Reading what the store and the markers hold, and what the page says


def open_store(name, root):
    return xr.open_zarr(paths.store_path(name, root), chunks=None)


def markers(name, root, shards):
    return [json.loads(paths.marker_path(name, s, root).read_text()) for s in range(shards)]


def seconds(text: str) -> float:
    """A duration as the page writes it ("0.612 s", "4 min 05 s", "1 h 02 min") in seconds."""
    if m := re.fullmatch(r"(\d+) h (\d+) min", text):
        return int(m[1]) * 3600 + int(m[2]) * 60
    if m := re.fullmatch(r"(\d+) min (\d+) s", text):
        return int(m[1]) * 60 + int(m[2])
    m = re.fullmatch(r"([0-9.e+-]+) s", text)
    assert m, f"not a duration: {text!r}"
    return float(m[1])


def counts(points_text: str) -> dict[str, int]:
    """"8 computed; 8 converged and finite; 0 failed (the model raised); ..." as a mapping."""
    return {what: int(n) for n, what in re.findall(r"(\d+) ([^;]+?)(?:;|$)", points_text)}


def expected_counts(ds) -> dict[str, int]:
    done = ds["point_done"].values.astype(bool)
    raised = done & ds["failed"].values.astype(bool)
    finite, converged = ds["finite"].values.astype(bool), ds["converged"].values.astype(bool)
    bad = done & (raised | ~(finite & converged))
    return {"computed": int(done.sum()), "converged and finite": int((done & ~bad).sum()),
            "failed (the model raised)": int(raised.sum()), "not converged": int((done & ~converged & ~raised).sum()),
            "not finite": int((done & ~finite & ~raised).sum()), "not computed": int((~done).sum())}


def check_self_contained(html: str):
    """One file: a doctype, no script, nothing fetched from outside, every image a PNG in a
    numbered figure with a caption. Returns the parsed page."""
    from PIL import Image

    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    page = parse(html)
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    assert all(r.startswith(("data:", "#")) for r in page.resources), "a resource outside the page"
    assert page.figures and page.img_count == page.figcaption_count == len(page.figures)
    assert [f.id for f in page.figures] == [f"fig{i + 1}" for i in range(len(page.figures))]
    for f in page.figures:
        assert f.src.startswith("data:image/png;base64,") and f.caption.startswith(f"Figure {f.id[3:]}.")
        Image.open(io.BytesIO(base64.b64decode(f.src.split(",", 1)[1]))).verify()
    assert [href for href, _ in page.nav] == [f"#{anchor}" for tag, anchor, _ in page.headings if tag == "h2"]
    return page


def check_summary(page, name, root, shards):
    """The summary's counts, times and provenance against the store and the markers."""
    ds = open_store(name, root)
    facts = page.table("summary-facts").as_dict()
    assert counts(facts["points"]) == expected_counts(ds)
    records = markers(name, root, shards)
    compute, n_shards = re.fullmatch(r"(.*) summed over (\d+) shards", facts["compute time"]).groups()
    assert int(n_shards) == shards
    assert seconds(compute) == pytest.approx(sum(r["duration_s"] for r in records), rel=5e-3)
    wall = max(r["end"] for r in records) - min(r["start"] for r in records)
    assert seconds(facts["wall time"].split(" from ")[0]) == pytest.approx(wall, rel=5e-3)
    per_wall = float(facts["throughput"].split(" points per second")[0])
    assert per_wall == pytest.approx(int(ds["point_done"].sum()) / wall, rel=5e-3)
    assert facts["hosts"] == ", ".join(sorted({r["host"] for r in records}))
    assert facts["git commit"] == ds.attrs["git_commit"]
    assert facts["versions"] == ", ".join(f"{k} {v}" for k, v in ds.attrs["versions"].items())
    assert facts["planned"] == f"{ds.attrs['created']}; aggregated {ds.attrs['completed']}"
    assert page.pre[0] == ds.attrs["spec_text"]
    swept = page.table("swept-parameters").records()
    axes = json.loads(ds.attrs["spec"])["axes"]
    assert [(r["dimension"], r["kind"], r["parameter"], int(r["values"])) for r in swept] == [
        (a["name"], a["kind"], p, len(v)) for a in axes for p, v in a["values"].items()]
    return facts


def check_every_point(page, name, root):
    """The table of every point: the swept parameters and the scalar outputs of the store."""
    ds = open_store(name, root)
    table = page.table("every-point")
    assert len(table.rows) == ds["point_done"].size
    done = ds["point_done"].values.ravel()
    for output in ("reservation_wage", "iterations"):
        if output in ds:
            shown = table.column(output)
            stored = ds[output].values.ravel()
            for text, value, is_done in zip(shown, stored, done):
                assert text == "not computed" if not is_done else float(text) == pytest.approx(float(value), rel=1e-5)


# --------------------------------------------------------------------------------------------
# Sweeps


def test_one_dimensional_sweep_summary_and_line_plots(results, checked_figures):
    page = check_self_contained(build_report("line", results))
    assert page.title == "Sweep line" and page.heading_texts("h2") == SWEEP_SECTIONS
    facts = check_summary(page, "line", results, shards=1)
    assert facts["model"].startswith("mccall: McCall (1970)") and facts["sweep"] == "line (aggregated)"
    assert page.table("swept-parameters").records()[0]["units"] == "wage units"
    titles = [t for t, _ in checked_figures]
    assert "reservation_wage over the sweep" in titles and "value at the corners and centre of the grid" in titles
    assert [f.alt for f in page.figures] == titles  # every figure drawn is on the page, in order
    line = page.captions["reservation_wage over the sweep"]
    assert "against c [wage units]" in line and "Red crosses" not in line  # every point converged
    ds = open_store("line", results)
    stats = {r["output"]: r for r in page.table("summary-statistics").records()}
    wage = ds["reservation_wage"].values
    assert int(stats["reservation_wage"]["finite points"]) == wage.size
    for column, value in (("min", wage.min()), ("median", np.median(wage)), ("max", wage.max())):
        assert float(stats["reservation_wage"][column]) == pytest.approx(float(value), rel=1e-5)
    assert stats["reservation_wage"]["min at"] == f"c={float(ds.c[wage.argmin()]):g}"
    check_every_point(page, "line", results)
    assert "Every computed point converged and is finite." in page.section("failures").lines
    assert "failed-points" not in page.tables


def test_two_dimensional_sweep_heat_map_and_shards(results, checked_figures):
    page = check_self_contained(build_report("grid", results))
    heat = page.captions["reservation_wage over the sweep"]
    assert "over beta and c [wage units]" in heat
    # The value function at the four corners of the 6 × 2 grid and its centre (c[3], beta[1]).
    from hpc.report.results import representative_points
    from hpc.report.sweep_data import load_sweep

    points = [p for _, p in representative_points(load_sweep("grid", results))]
    assert {(p["c"], p["beta"]) for p in points} == {(0, 0), (0, 1), (5, 0), (5, 1), (3, 1)}
    check_summary(page, "grid", results, shards=3)
    check_every_point(page, "grid", results)
    assert "Shard timeline" in [t for t, _ in checked_figures]
    execution = page.section("execution")
    shards = execution.tables["shards"]
    assert shards.columns[:2] == ["shard", "host"]  # no job column: no Slurm here
    records = markers("grid", results, 3)
    assert len(shards.rows) == len(records) == 3
    for row, record in zip(shards.records(), records):
        assert float(row["duration [s]"]) == pytest.approx(record["duration_s"], rel=1e-5)
        assert row["host"] == record["host"] and int(row["processes"]) == record["processes"]
    ds = open_store("grid", results)
    per_shard = np.bincount(ds["shard_index"].values.ravel()).tolist()
    assert [int(r["points"]) for r in shards.records()] == [int(r["computed"]) for r in shards.records()] == per_shard
    assert execution.tables["plan-against-ran"].column("against the plan") == ["as planned"] * 3


def test_three_dimensional_sweep_with_failed_points(results, checked_figures):
    ds = open_store("cube", results)
    failed = ~ds["converged"].values
    assert 0 < failed.sum() < failed.size  # the spec is made so that some points fail
    page = check_self_contained(build_report("cube", results))
    heat = page.captions["reservation_wage over the sweep"]
    assert "One panel per value of" in heat and "red crosses" in heat
    failures = page.section("failures")
    assert f"{int(failed.sum())} computed points failed, did not converge or are not finite." in failures.lines
    table = failures.tables["failed-points"]
    rows = table.records()
    assert len(rows) == failed.sum()
    where = np.argwhere(failed)
    expected = {(float(ds.c[i]), float(ds.beta[j]), float(ds.tol[k])): (int(ds["iterations"].values[i, j, k]),
                                                                         int(ds["shard_index"].values[i, j, k]))
                for i, j, k in where}
    shown = {(float(r["c"]), float(r["beta"]), float(r["tol"])): (int(r["iterations"]), int(r["shard"])) for r in rows}
    assert shown == expected
    assert all(r["iterations"] == "100" and r["converged"] == "no" and r["non-finite outputs"] == "none" for r in rows)
    check_summary(page, "cube", results, shards=2)


def test_non_finite_points_are_listed_with_the_outputs_at_fault(results, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(results / "grid", root / "grid")
    group = zarr.open_group(str(paths.store_path("grid", root)), mode="r+")
    group["reservation_wage"][2, 1] = np.nan
    group["finite"][2, 1] = False
    page = parse(build_report("grid", root))
    assert counts(page.table("summary-facts").as_dict()["points"]) == expected_counts(open_store("grid", root))
    assert counts(page.table("summary-facts").as_dict()["points"])["not finite"] == 1
    (row,) = page.table("failed-points").records()
    assert row["c"] == "21" and row["beta"] == "0.98" and row["non-finite outputs"] == "reservation_wage"
    assert row["converged"] == "yes"


def test_points_the_model_raised_for_are_listed_with_its_error(tmp_path, monkeypatch, checked_figures):
    from hpc import models

    monkeypatch.setitem(models._MODULES, "faulty", "faulty_model")  # tests/faulty_model.py
    run_sweep(tmp_path, {"name": "faulty", "model": "faulty",
                         "sweep": {"x": [0.1, 0.2, 0.3], "variant": ["fine", "broken"]}, "shards": 1})
    page = check_self_contained(build_report("faulty", tmp_path))
    ds = open_store("faulty", tmp_path)
    assert counts(page.table("summary-facts").as_dict()["points"])["failed (the model raised)"] == int(ds["failed"].sum()) == 3
    (marker,) = markers("faulty", tmp_path, 1)
    (error,) = marker["errors"]
    assert error["static"]["variant"] == "broken"
    rows = page.table("failed-points").records()
    assert [(r["x"], r["variant"]) for r in rows] == [("0.1", "broken"), ("0.2", "broken"), ("0.3", "broken")]
    assert all(r["model error"] == error["error"] == "NotImplementedError: variant 'broken' has no solver"
               and r["non-finite outputs"] == "all (fill values)" for r in rows)
    static = ", ".join(f"{k}={v}" for k, v in error["static"].items())
    assert page.table("model-errors").rows == [["0", static, error["error"]]]
    heat = dict(checked_figures)["iterations over the sweep"]
    assert "over variant and x" in heat and "red crosses" in heat


def test_sampled_sweep_plots_points_in_parameter_plane(results, checked_figures):
    page = check_self_contained(build_report("sampled", results))
    assert "placed by x0 and r" in page.captions["state at the sampled points"]
    swept = page.table("swept-parameters").records()
    assert [(r["dimension"], r["kind"], r["parameter"]) for r in swept] == [("sample", "sample", "x0"),
                                                                             ("sample", "sample", "r")]
    check_summary(page, "sampled", results, shards=1)


def test_partial_sweep_and_a_requeued_resumed_shard(results, tmp_path, checked_figures):
    # The 2-D sweep as it stood with shard 1 not run yet, and shard 2 committed by a Slurm job
    # that Slurm had requeued once and that found some of its chunks committed.
    root = tmp_path / "results"
    shutil.copytree(results / "grid", root / "grid")
    paths.marker_path("grid", 1, root).unlink()
    group = zarr.open_group(str(paths.store_path("grid", root)), mode="r+")
    group["point_done"][...] = group["shard_index"][...] != 1
    attrs = dict(group.attrs)
    del attrs["completed"]
    group.attrs.put(attrs)
    store.write_shard_records(group, [s for s in store.read_shard_records(group) if s["shard"] == 0])  # markers only
    zarr.consolidate_metadata(str(paths.store_path("grid", root)))
    marker = paths.marker_path("grid", 2, root)
    body = json.loads(marker.read_text())
    body.update(job_id="4242", slurm_restart_count=1, computed=body["points"] - 1)  # as the runner records them
    marker.write_text(json.dumps(body))

    page = check_self_contained(build_report("grid", root))
    facts = page.table("summary-facts").as_dict()
    assert facts["sweep"] == "grid (not aggregated (8 of 12 points committed so far))"
    assert counts(facts["points"])["not computed"] == 4
    assert "4 points are not computed yet (or their shard failed): hpc status grid shows which shards." in \
        page.section("failures").lines
    shards = page.table("shards")
    assert shards.columns[:3] == ["shard", "job", "Slurm restarts"]
    assert [(r["shard"], r["job"], r["Slurm restarts"]) for r in shards.records()] == [("0", "", "0"), ("2", "4242", "1")]
    retries = page.section("execution").text
    assert "Shards whose Slurm job was requeued and restarted: 2." in retries
    assert "Shards resumed from chunks an earlier attempt had committed: 2." in retries
    assert page.table("plan-against-ran").column("against the plan") == ["as planned", "not run (no marker)", "resumed"]
    not_computed = page.table("every-point").column("reservation_wage").count("not computed")
    assert not_computed == int((open_store("grid", root)["shard_index"] == 1).sum()) == 4
    assert "grey cells are not computed" in page.captions["reservation_wage over the sweep"]
    assert [t for t, _ in checked_figures][-2:] == ["Shard timeline", "Per-shard duration and throughput"]


# --------------------------------------------------------------------------------------------
# A model's own section


def with_section(monkeypatch, report_section):
    import hpc.report.sweep_data as sweep_data

    model = dataclasses.replace(get_model("mccall"), report_section=report_section)
    monkeypatch.setattr(sweep_data, "get_model", lambda name: model)


def test_a_models_tables_land_between_results_and_failures(results, monkeypatch):
    def section(ds):
        c = ds["c"].values
        return [ReportTable("Compensation", ["c", "reservation wage"],
                            [[float(v), float(w)] for v, w in zip(c, ds["reservation_wage"].values)],
                            caption=f"{ds.sizes['c']} values <of c>"),
                ReportTable("Nothing else", ["what"], [["a & b"], [None]])]

    with_section(monkeypatch, section)
    page = check_self_contained(build_report("line", results))
    assert page.heading_texts("h2") == ["Summary", "Results", "mccall: model-specific results", "Failures", "Execution"]
    model = page.section("model")
    assert model.heading_texts("h3") == ["Compensation", "Nothing else"]
    ds = open_store("line", results)
    first = model.tables["model-table-1"]
    assert first.columns == ["c", "reservation wage"]
    assert [float(c) for c in first.column("c")] == pytest.approx(ds["c"].values.tolist(), rel=1e-5)
    assert "8 values <of c>" in model.lines  # text, escaped: not markup
    assert model.tables["model-table-2"].rows == [["a & b"], [""]]


def test_a_section_returned_as_html_still_shows_and_a_failing_one_does_not_sink_the_report(results, monkeypatch):
    with_section(monkeypatch, lambda ds: f"<p>paper table for {ds.sizes['c']} values</p>")  # a model of before
    html = build_report("line", results)
    assert "<p>paper table for 8 values</p>" in html
    assert "paper table for 8 values" in parse(html).section("model").lines

    def broken(ds):
        raise ValueError("no paper here")

    with_section(monkeypatch, broken)
    page = parse(build_report("line", results))
    assert "The model's section failed: ValueError: no paper here" in page.section("model").lines
    assert page.heading_texts("h2")[-2:] == ["Failures", "Execution"]
    with_section(monkeypatch, lambda ds: None)  # nothing to add: no section
    assert parse(build_report("line", results)).heading_texts("h2") == SWEEP_SECTIONS


def test_bianchi_section_sets_the_papers_table_beside_the_sweeps_numbers():
    from hpc.models.bianchi import PAPER_TABLE, paper_table_section

    kappa, planner = [0.3, 0.32, 0.34], [False, True]
    rng = np.random.default_rng(0)
    data = {name: (("kappa", "planner"), rng.uniform(1, 9, (3, 2))) for name, *_ in PAPER_TABLE}
    data["point_done"] = (("kappa", "planner"), np.array([[True, True], [True, True], [False, True]]))
    ds = xr.Dataset(data, coords={"kappa": kappa, "planner": planner, "b": np.arange(40)})
    table = paper_table_section(ds)
    assert isinstance(table, ReportTable) and len(table.rows) == len(PAPER_TABLE)
    assert "40 bond grid points" in table.caption
    for row, (name, text, paper_de, paper_sp) in zip(table.rows, PAPER_TABLE):
        assert row[:2] == [text, paper_de] and row[3] == ("—" if paper_sp is None else paper_sp)
        for column, p in ((2, 0), (4, 1)):
            values = ds[name].values[:, p][ds["point_done"].values[:, p]]
            assert row[column] == f"{np.median(values):.2f} [{values.min():.2f}, {values.max():.2f}]"


# --------------------------------------------------------------------------------------------
# Training runs

TRAIN = {"name": "run", "data": {"synthetic": {"samples": 100}},
         "network": {"kind": "mlp", "width": 8, "depth": 1}, "optimizer": {"name": "adam", "learning_rate": 0.01},
         "batch_size": 10, "steps": 120, "eval_every": 20, "checkpoint_every": 40}


def write_training_store(root):
    """results/run/train.zarr as hpc.train writes it (hpc.train.metrics), for a run stopped by
    SIGTERM after step 60 and resumed from that checkpoint; returns what it wrote."""
    from hpc.train import metrics
    from hpc.train.spec import parse_train_spec

    spec = parse_train_spec(TRAIN, yaml.safe_dump(TRAIN, sort_keys=False))
    path = paths.train_store_path("run", root)
    layout = {"processes": 1, "devices": 1, "device_kind": "cpu", "platform": "cpu", "shard_params": False}
    group = metrics.open_or_create(path, spec, "wage units", {"data": {"inputs": ["x"], "units": "wage units"},
                                                               "layout": layout, "batch_size": 10, "steps": 120})
    steps = np.arange(1, 121)
    rows = {"loss": (2.0 * np.exp(-steps / 30) + 0.01).astype(np.float32),
            "learning_rate": np.full(120, 0.01, np.float32), "step_time": np.full(120, 0.02),
            "samples_per_second": np.full(120, 500.0)}
    metrics.write_steps(group, 1, rows)
    evals = metrics.eval_steps(120, 20)
    for t in evals:
        metrics.write_eval(group, int(t), {"heldout_rmse": float(np.exp(-t / 40)), "heldout_max_error": float(3 * np.exp(-t / 40)),
                                           "heldout_loss": float(2.2 * np.exp(-t / 30)), "train_rmse": float(0.9 * np.exp(-t / 40)),
                                           "train_max_error": float(2 * np.exp(-t / 40))})
    segments = [{"first_step": 1, "start": timefmt.now_iso(), "hosts": ["n1"], "restored_from": None, "compile_s": 0.5,
                 **layout, "last_step": 60, "end": timefmt.now_iso(), "train_s": 1.2, "reason": "stopped (SIGTERM)"},
                {"first_step": 61, "start": timefmt.now_iso(), "hosts": ["n2"], "restored_from": 60, "compile_s": 0.4,
                 **layout, "last_step": 120, "end": timefmt.now_iso(), "train_s": 1.1, "reason": "completed"}]
    group.attrs.update({"segments": segments, "completed": timefmt.now_iso(),
                        "final": {"heldout_rmse": float(np.exp(-3)), "samples_per_second": 500.0}})
    metrics.finalize(path)
    return spec, rows, segments


def test_training_store_curves_events_and_attempts(tmp_path, checked_figures):
    spec, rows, segments = write_training_store(tmp_path)
    page = check_self_contained(build_report("run", tmp_path))
    assert page.title == "Training run run" and page.heading_texts("h1") == ["Training run run"]
    assert page.heading_texts("h2") == ["Training run"] and page.nav == [("#training", "Training")]
    titles = [t for t, _ in checked_figures]
    assert titles[0] == "loss during training"  # losses first
    assert set(titles) == {f"{n} during training" for n in ("loss", "rmse", "max_error", "learning_rate",
                                                             "samples_per_second", "step_time")}
    captions = page.captions
    assert "loss, heldout_loss against the training step" in captions["loss during training"]
    assert "heldout_rmse, train_rmse" in captions["rmse during training"]
    assert "checkpoints" in captions["loss during training"] and "resumes" in captions["loss during training"]

    facts = page.table("training-facts").as_dict()
    checkpoints = sorted(set(range(TRAIN["checkpoint_every"], 121, TRAIN["checkpoint_every"]))
                         | {s["last_step"] for s in segments})
    assert facts["checkpoints"] == ", ".join(map(str, checkpoints)) == "40, 60, 80, 120"
    assert facts["resumes"] == "60"
    assert facts["recorded steps"] == f"eval_step: {len(range(0, 121, 20))}, step: 120"
    last, low, high = (float(v) for v in facts["loss: last, min, max"].split(", "))
    assert (last, low, high) == pytest.approx((rows["loss"][-1], rows["loss"].min(), rows["loss"].max()), rel=1e-5)
    assert seconds(facts["step_time: sum"]) == pytest.approx(rows["step_time"].sum(), rel=5e-3)
    assert facts["store"] == str(paths.train_store_path("run", tmp_path)) and facts["kind"] == "train"
    attempts = page.table("training-attempts").records()
    assert [(a["attempt"], a["first_step"], a["last_step"], a["restored_from"], a["hosts"], a["reason"]) for a in attempts] \
        == [("1", "1", "60", "", "n1", "stopped (SIGTERM)"), ("2", "61", "120", "60", "n2", "completed")]
    assert page.pre == [spec.text]
    final = page.table("training-final").as_dict()
    assert float(final["heldout_rmse"]) == pytest.approx(np.exp(-3))
    assert page.table("training-layout").as_dict()["devices"] == "1"


def test_hpc_report_rebuilds_from_the_store_alone(results, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(results / "cube", root / "cube")
    (root / "cube" / "plan.json").unlink()
    shutil.rmtree(root / "cube" / "shards")
    out = run_hpc("report", "cube", "--results", root).stdout.strip()
    assert out == str(root / "cube" / "report.html")
    page = check_self_contained((root / "cube" / "report.html").read_text())
    assert "Shard timeline" in page.captions
    ds = open_store("cube", root)
    assert (f"No plan file of this spec beside the store; the spec asked for {json.loads(ds.attrs['spec'])['shards']} "
            f"shards and {len(store.read_shard_records(paths.store_path('cube', root)))} committed.") in \
        page.section("execution").lines
    assert len(page.table("shards").rows) == len(store.read_shard_records(paths.store_path("cube", root)))
    missing = run_hpc("report", "nothing-here", "--results", root, check=False)
    assert missing.returncode == 2 and "no planned sweep 'nothing-here', nor a training run" in missing.stderr
    assert "Traceback" not in missing.stderr
