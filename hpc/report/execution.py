"""The Execution section: a timeline of the shards across hosts, per-shard duration and
throughput, a table of the shards, requeued and resumed shards, and the plan against what ran.

What a shard record holds is what hpc.sweep.runner writes (see ``sweep_data.shard_records``):
under Slurm, the id of the job that committed the shard (``job_id``) and how often Slurm had
requeued it (``slurm_restart_count``). A job Snakemake resubmits after a failure is a new job with
its own id, and the marker names only the last one; aggregate counts them (``attempt``).

The store's records also hold each shard's execution trace (hpc.sweep.store.execution_trace):
from Slurm's accounting (``trace_source`` "slurm": requested memory against peak RSS, CPU
efficiency, queue wait against run time), or what the processes measured themselves
("process": elapsed, CPU time, peak RSS). ``resource_use`` shows them, with one sentence of
right-sizing advice computed from the Slurm records: the peak RSS × 1.2, rounded up to 100 MB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import yaml

from hpc.core import timefmt
from hpc.execution import dask_cluster
from hpc.report.figures import Figure, Figures, evenly, pyplot
from hpc.report.render import Table
from hpc.report.sweep_data import Sweep, resumed, slurm_restarts


@dataclass
class PlanAgainstRan:
    n_shards: int
    n_chunks: int
    chunks: tuple[int, ...]  # the chunk shape
    asked: str  # resources each shard job asks for
    ran: int  # shards with a record
    differ: int
    table: Table


@dataclass
class ResourceUse:
    slurm: bool  # the table shows Slurm's accounting (else what the processes measured)
    table: Table
    advice: str | None  # one sentence of right-sizing advice (Slurm records only)


@dataclass
class Execution:
    figures: list[Figure]
    t0: float | None  # the first shard's start: the table's times are seconds after it
    shards: Table
    retries: list[str]  # sentences
    plan: PlanAgainstRan | None
    asked_shards: object = None  # without a plan file: the shards the spec asked for
    ran: int = 0
    resources: ResourceUse | None = None


MANY_SHARDS = 60  # beyond this, the timeline and the per-shard figures draw a line per shard, not a labelled bar
SHARD_ROWS = 200  # rows of a per-shard table at most; every shard's record is in the store


def listed(rows: list, first: list[bool], what_first: str) -> tuple[list, str]:
    """Up to SHARD_ROWS of a per-shard table's ``rows`` (in shard order): those ``first`` marks,
    then others spread evenly over the rest; and the table's note saying so ("" when all fit)."""
    if len(rows) <= SHARD_ROWS:
        return rows, ""
    marked = [i for i, m in enumerate(first) if m][:SHARD_ROWS]
    others = [i for i, m in enumerate(first) if not m]
    room = SHARD_ROWS - len(marked)
    keep = sorted(set(marked) | ({others[j] for j in evenly(len(others), room)} if room > 0 else set()))
    how = (f"the {len(marked)} {what_first}, then shards spread evenly over the others" if marked
           else "spread evenly over all of them")
    return ([rows[i] for i in keep],
            f"{len(keep)} of {len(rows)} shards listed: {how}. The store holds every shard's record "
            "(hpc.sweep.store.read_shard_records).")


def under_slurm(sweep: Sweep) -> bool:
    """Some shard was committed by a Slurm job (its record names the job)."""
    return any(s.get("job_id") for s in sweep.shards)


def timeline_figure(sweep: Sweep, figures: Figures) -> Figure | None:
    plt = pyplot()
    shards = [s for s in sweep.shards if s.get("start") is not None]
    if not shards:
        return None
    t0 = min(s["start"] for s in shards)
    hosts = sorted({str(s.get("host")) for s in shards})
    colors = plt.get_cmap("tab10")
    if len(shards) > MANY_SHARDS:
        return compact_timeline(shards, t0, hosts, colors, figures)
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.32 * len(shards)))
    for s in shards:
        host = str(s.get("host"))
        ax.barh(s["shard"], s["end"] - s["start"], left=s["start"] - t0, height=0.6,
                color=colors(hosts.index(host) % 10))
        note = f" requeued {slurm_restarts(s)}×" if slurm_restarts(s) else ""
        if resumed(s):
            note += " (resumed)"
        if note:
            ax.text(s["end"] - t0, s["shard"], note, va="center", fontsize=7)
    for i, host in enumerate(hosts):
        ax.barh([], [], color=colors(i % 10), label=host)
    ax.legend(title="host", fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_yticks([s["shard"] for s in shards])
    _timeline_axes(ax, shards, margin=0.7)
    return figures.add(fig, f"When each shard computed, coloured by host (time 0 is {timefmt.epoch_text(t0)}). A bar "
                            "spans the shard's solve, from its first process's start to its last one's end; "
                            "job start-up and queueing are not included.")


def _timeline_axes(ax, shards: list[dict], margin: float) -> None:
    """Labels and limits shared by both timelines: shard 0 at the top, time along x."""
    ax.set_ylim(max(s["shard"] for s in shards) + margin, min(s["shard"] for s in shards) - margin)
    ax.set_xlabel("seconds since the first shard started")
    ax.set_ylabel("shard")
    ax.set_title("Shard timeline")
    ax.grid(axis="x", alpha=0.3)


def compact_timeline(shards: list[dict], t0: float, hosts: list[str], colors, figures: Figures) -> Figure:
    """The timeline of many shards: one line per shard at a fixed size, requeued or resumed
    shards marked at their end."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    width = max(1.0, min(2.0, 300 / len(shards)))
    for i, host in enumerate(hosts):
        mine = [s for s in shards if str(s.get("host")) == host]
        ax.hlines([s["shard"] for s in mine], [s["start"] - t0 for s in mine], [s["end"] - t0 for s in mine],
                  colors=[colors(i % 10)], linewidth=width, label=host)
    marked = [s for s in shards if slurm_restarts(s) or resumed(s)]
    if marked:
        ax.plot([s["end"] - t0 for s in marked], [s["shard"] for s in marked], "|", color="red", markersize=6,
                label="requeued or resumed")
    ax.legend(title="host", fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    _timeline_axes(ax, shards, margin=0.5)
    return figures.add(fig, f"When each of the {len(shards)} shards computed, one line per shard coloured by host "
                            f"(time 0 is {timefmt.epoch_text(t0)}). A line spans the shard's solve, from its first "
                            "process's start to its last one's end; job start-up and queueing are not included."
                            + (" Red ticks mark requeued or resumed shards." if marked else ""))


def throughput_figure(sweep: Sweep, figures: Figures) -> Figure | None:
    plt = pyplot()
    shards = [s for s in sweep.shards if s.get("duration_s")]
    if not shards:
        return None
    ids = [s["shard"] for s in shards]
    duration = [float(s["duration_s"]) for s in shards]
    computed = [int(s.get("computed", s.get("points", 0)) or 0) for s in shards]
    rate = [c / d if d else 0.0 for c, d in zip(computed, duration)]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    many = len(ids) > MANY_SHARDS  # vertical lines, not thousands of bar patches
    (a1.vlines(ids, 0, duration, color="#4c72b0", linewidth=0.8) if many else a1.bar(ids, duration, color="#4c72b0"))
    a1.set_xlabel("shard")
    a1.set_ylabel("duration [s]")
    a1.set_title("Duration per shard")
    (a2.vlines(ids, 0, rate, color="#55a868", linewidth=0.8) if many else a2.bar(ids, rate, color="#55a868"))
    a2.set_xlabel("shard")
    a2.set_ylabel("throughput [points/s]")
    a2.set_title("Throughput per shard")
    for ax in (a1, a2):
        if not many:
            ax.set_xticks(ids if len(ids) <= 20 else ids[:: math.ceil(len(ids) / 20)])
    fig.suptitle("Per-shard duration and throughput")
    return figures.add(fig, "Seconds each shard took to solve its points (left) and the points it computed per "
                            "second (right); a resumed shard computed only its uncommitted chunks.")


def shard_table(sweep: Sweep, t0: float) -> Table:
    """One row per shard record; the job and Slurm's restart count where Slurm ran the shards."""
    slurm = under_slurm(sweep)
    columns = ["shard"] + (["job", "Slurm restarts"] if slurm else []) + [
        "host", "start [s]", "end [s]", "duration [s]", "points", "computed", "points/s", "processes", "devices",
        "failed", "not converged", "non-finite"]
    rows = []
    for s in sweep.shards:
        duration = float(s.get("duration_s") or 0.0)
        computed = s.get("computed", s.get("points"))
        devices = s.get("devices")
        if not isinstance(devices, int):
            devices = sum(len(p.get("devices", [])) for p in s.get("per_process", [])) or devices
        rows.append([s["shard"]] + ([s.get("job_id"), slurm_restarts(s)] if slurm else [])
                    + [s.get("host"), round(s["start"] - t0, 3) if s.get("start") else None,
                       round(s["end"] - t0, 3) if s.get("end") else None, duration, s.get("points"), computed,
                       round(computed / duration, 3) if computed and duration else None,
                       s.get("processes"), devices, s.get("failed", 0), s.get("not_converged"),
                       s.get("non_finite")])
    rows, note = listed(rows, [bool(s.get("failed") or s.get("not_converged") or s.get("non_finite") or resumed(s)
                                    or slurm_restarts(s)) for s in sweep.shards],
                        "shards with failed, unconverged or non-finite points, or resumed or requeued")
    return Table(columns, rows, id="shards", note=note)


def retries_text(sweep: Sweep) -> list[str]:
    requeued = [s["shard"] for s in sweep.shards if slurm_restarts(s)]
    resumed_shards = [s["shard"] for s in sweep.shards if resumed(s)]
    lines = []
    if requeued:
        lines.append(f"Shards whose Slurm job was requeued and restarted: {', '.join(map(str, requeued))}.")
    if resumed_shards:
        lines.append("Shards resumed from chunks an earlier attempt had committed: "
                     f"{', '.join(map(str, resumed_shards))}.")
    if not lines:
        lines.append("Every shard computed all of its points in its last attempt (no chunk was resumed"
                     + ("; no Slurm job was requeued" if under_slurm(sweep) else "") + ").")
    lines.append("A job that failed before committing any chunk, and was run again, leaves no trace in the "
                 "markers (each names only the job that committed its shard).")
    return lines


def spec_as_written(sweep: Sweep) -> dict:
    """The spec's text as the store keeps it (its backend and dask settings are not in the
    normalized spec); empty where it cannot be read."""
    try:
        data = yaml.safe_load(sweep.ds.attrs.get("spec_text") or "")
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def plan_against_ran(sweep: Sweep) -> PlanAgainstRan | None:
    plan = sweep.plan
    if plan is None:
        return None
    res = plan.resources or {}
    by_shard = {s["shard"]: s for s in sweep.shards}
    asked = spec_as_written(sweep)
    dask = asked.get("backend") == "dask" or any(p.get("worker") for s in sweep.shards
                                                   for p in s.get("per_process") or [])
    workers = int(dask_cluster.settings(asked.get("dask"))["max_workers"]) if dask else 1
    rows, differ = [], 0
    for shard in range(plan.n_shards):
        first, last = plan.shard_chunks[shard]
        planned = plan.shard_points(shard)
        ran = by_shard.get(shard)
        if ran is None:
            verdict = "not run (no marker)"
        else:
            notes = []
            tasks = int(res.get("tasks", 1) or 1)
            if dask:  # every chunk a task: the shard's processes are the workers that ran its chunks
                if ran.get("processes") is not None and ran["processes"] > workers:
                    notes.append(f"{ran['processes']} workers for at most {workers}")
            elif ran.get("processes") not in (None, tasks):
                notes.append(f"{ran['processes']} processes for {tasks} tasks")
            if ran.get("points") != planned:
                notes.append("another point count")
            if ran.get("computed") is not None and ran["computed"] < planned:
                notes.append("resumed")
            verdict = "; ".join(notes) or "as planned"
        differ += verdict != "as planned"
        rows.append([shard, f"{first}..{last - 1}", planned,
                     ran.get("host") if ran else None, ran.get("processes") if ran else None,
                     ran.get("computed") if ran else None, verdict])
    rows, note = listed(rows, [row[-1] != "as planned" for row in rows], "shards that differ from the plan")
    return PlanAgainstRan(
        n_shards=plan.n_shards, n_chunks=plan.n_chunks, chunks=tuple(plan.chunks),
        asked=", ".join(f"{k}={v}" for k, v in res.items()) or "the profile's defaults",
        ran=len(sweep.shards), differ=differ,
        table=Table(["shard", "chunks", "planned points", "host", "processes", "computed", "against the plan"], rows,
                    id="plan-against-ran", note=note))


HEADROOM = 1.2  # the advised request: the peak RSS times this, rounded up to ROUND_MB
ROUND_MB = 100


def slurm_traced(record: dict) -> bool:
    return record.get("trace_source") == "slurm"


def _percent(used, asked) -> float | None:
    return round(100.0 * used / asked, 1) if used is not None and asked else None


def right_sizing(records: list[dict]) -> str | None:
    """One sentence from the Slurm records with both a request and a peak: the largest share of
    its request a shard used, and the request that the largest peak × 1.2 (rounded up to 100 MB)
    would make."""
    sized = [r for r in records if slurm_traced(r) and r.get("req_mem_mb") and r.get("max_rss_mb") is not None]
    if not sized:
        return None
    peak = max(r["max_rss_mb"] for r in sized)
    share = max(r["max_rss_mb"] / r["req_mem_mb"] for r in sized)
    asked = sorted({round(r["req_mem_mb"]) for r in sized})
    asked_text = f"{asked[0]} MB" if len(asked) == 1 else f"{asked[0]}–{asked[-1]} MB"
    advised = advised_mem_mb(peak)
    head = f"Shards used at most {100 * share:.0f}% of the {asked_text} requested (peak {peak:.0f} MB)"
    if advised < asked[-1]:
        return f"{head}: {advised} MB would do."
    if advised == asked[-1]:
        return f"{head}: the request is right."
    return f"{head}: ask for {advised} MB to keep {100 * (HEADROOM - 1):.0f}% headroom."


def advised_mem_mb(peak_mb: float) -> int:
    return int(math.ceil(peak_mb * HEADROOM / ROUND_MB) * ROUND_MB)


def resource_use(sweep: Sweep) -> ResourceUse | None:
    """Per shard what it asked for against what it used (Slurm's accounting), or what its
    processes measured (a local run)."""
    records = [s for s in sweep.shards if s.get("trace_source")]
    if not records:
        return None
    slurm = any(slurm_traced(r) for r in records)
    if slurm:
        columns = ["shard", "job", "attempt", "state", "nodes", "requested memory [MB]", "peak RSS [MB]",
                   "memory used [%]", "CPUs", "CPU time [s]", "CPU efficiency [%]", "queue wait [s]",
                   "run time [s]", "device peak [MB]"]
        rows = [[r["shard"], r.get("job_id"), r.get("attempt"), r.get("state"), r.get("nodes"),
                 r.get("req_mem_mb"), r.get("max_rss_mb"), _percent(r.get("max_rss_mb"), r.get("req_mem_mb")),
                 r.get("alloc_cpus"), r.get("total_cpu_s"),
                 round(100 * r["cpu_efficiency"], 1) if r.get("cpu_efficiency") is not None else None,
                 r.get("queue_wait_s"), r.get("elapsed_s"), r.get("device_peak_mb")] for r in records]
    else:
        columns = ["shard", "host", "processes", "elapsed [s]", "CPU time [s]", "peak RSS [MB]", "device peak [MB]"]
        rows = [[r["shard"], r.get("host"), r.get("processes"), r.get("elapsed_s"), r.get("total_cpu_s"),
                 r.get("max_rss_mb"), r.get("device_peak_mb")] for r in records]
    peak = max((r.get("max_rss_mb") or 0 for r in records), default=0)
    rows, note = listed(rows, [bool(peak) and r.get("max_rss_mb") == peak for r in records],
                        "shards with the largest peak RSS")
    return ResourceUse(slurm=slurm, table=Table(columns, rows, id="resource-use", note=note),
                       advice=right_sizing(records) if slurm else None)


def execution_section(sweep: Sweep, figures: Figures) -> Execution:
    shards = sweep.shards
    t0 = min((s["start"] for s in shards if s.get("start")), default=0.0) if shards else None
    drawn = [timeline_figure(sweep, figures), throughput_figure(sweep, figures)] if shards else []
    return Execution(
        figures=[f for f in drawn if f is not None],
        t0=t0,
        shards=shard_table(sweep, t0) if shards else Table([], id="shards"),
        retries=retries_text(sweep) if shards else [],
        plan=plan_against_ran(sweep),
        asked_shards=sweep.spec.get("shards", sweep.ds.attrs.get("n_shards")),
        ran=len(shards),
        resources=resource_use(sweep) if shards else None,
    )
