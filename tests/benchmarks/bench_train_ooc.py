"""Training on a Zarr data set larger than the job's memory: streamed from the store against in memory.

A data set of ``--rows`` rows (16 float32 inputs in one 2-D variable, one float32 target: 68 bytes
a row; 4.28 GB at the default 62,914,560 rows, chunks of 65,536 rows) is written once under
``--store-dir`` (reused by later runs). Two training runs of the same network, optimizer and
batch (bench_train.py's "large" MLP: 16 -> 4 x 512 -> 1, batch 2048) then run one after the other
in this one invocation, each as its own ``hpc train run`` process:

- streamed: ``data.stream: true`` on the whole store, the process confined to a memory cgroup
  of ``--mem-mb`` (default 1,000 MB, under a quarter of the data set) as Slurm's cgroup plugin confines a
  job given ``--mem``: a process that held the data would be killed (the run checks that it
  could not have: the data set is at least 4x the limit);
- in memory: ``data.stream: false`` on a store of the first ``rows / 8`` rows (the in-memory
  path needs the training rows and their device copy in memory), no limit.

Each side's figure is its own record (train.zarr's step times after the first 32 steps; compile,
evaluation and the statistics pass left out): global batch / median step time. Target: the
streamed run reaches at least 0.8x the in-memory samples/s. The peak RSS of each process is
printed beside it (the page cache of the store's reads is not in it; the cgroup reclaims it).

    python tests/benchmarks/bench_train_ooc.py                 # needs root for the memory cgroup
    python tests/benchmarks/bench_train_ooc.py --rows 4194304 --mem-mb 0   # a quick check, no limit
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

CHUNK = 65536
FEATURES = 16
WARMUP = 32
CGROUP = Path("/sys/fs/cgroup/memory")


def write_store(path: Path, rows: int) -> None:
    """x (rows, 16) uniform in [-1, 1], y = the synthetic regression function of x; chunk by chunk."""
    import zarr

    from hpc.train.data import synthetic_function

    if (path / "zarr.json").exists():
        group = zarr.open_group(str(path), mode="r")
        if group["x"].shape == (rows, FEATURES) and group.attrs.get("complete"):
            return
    t0 = time.perf_counter()
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    x_arr = group.create_array("x", shape=(rows, FEATURES), chunks=(CHUNK, FEATURES), dtype="float32",
                               dimension_names=["sample", "feature"])
    y_arr = group.create_array("y", shape=(rows,), chunks=(CHUNK,), dtype="float32", dimension_names=["sample"])
    rng = np.random.default_rng(0)
    for start in range(0, rows, CHUNK * 16):
        stop = min(rows, start + CHUNK * 16)
        x = rng.uniform(-1, 1, (stop - start, FEATURES)).astype(np.float32)
        x_arr[start:stop] = x
        y_arr[start:stop] = synthetic_function(x.astype(np.float64), 1, 0)[:, 0].astype(np.float32)
        if (start // (CHUNK * 16)) % 40 == 0:
            print(f"  writing {path.name}: {stop:,} of {rows:,} rows ({time.perf_counter() - t0:.0f} s)", flush=True)
    group.attrs["complete"] = True


def spec(name: str, store: Path, stream: bool, steps: int) -> dict:
    return {
        "name": name,
        "data": {"zarr": str(store), "inputs": ["x"], "target": "y", "holdout": 0.001, "stream": stream},
        "network": {"kind": "mlp", "width": 512, "depth": 4, "activation": "tanh"},
        "optimizer": {"name": "adam", "learning_rate": 1.0e-4},
        "batch_size": 2048,
        "steps": steps + WARMUP,
        "eval_every": steps + WARMUP,
        "checkpoint_every": steps + WARMUP,
    }


def run(train: dict, mem_mb: int) -> tuple[float, float, float]:
    """(samples/s, peak RSS MB, wall s) of `hpc train run` on ``train``, in a memory cgroup of
    ``mem_mb`` (0: none)."""
    import xarray as xr

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.yaml"
        path.write_text(yaml.safe_dump(train))
        group = None
        if mem_mb:
            group = CGROUP / f"hpc-bench-ooc-{os.getpid()}"
            group.mkdir()
            (group / "memory.limit_in_bytes").write_text(str(mem_mb << 20))
            if (group / "memory.memsw.limit_in_bytes").exists():
                (group / "memory.memsw.limit_in_bytes").write_text(str(mem_mb << 20))

        def enter():
            if group is not None:
                (group / "cgroup.procs").write_text(str(os.getpid()))

        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "hpc", "train", "run", str(path)], cwd=tmp,
                                env=dict(os.environ, PYTHONPATH=str(REPO)), stderr=subprocess.PIPE, text=True,
                                preexec_fn=enter)
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        oom = group is not None and "oom_kill " in (group / "memory.oom_control").read_text() and int(
            (group / "memory.oom_control").read_text().split("oom_kill ")[1].split()[0])
        if group is not None:
            group.rmdir()
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"hpc train run failed (exit {os.waitstatus_to_exitcode(status)}"
                     + (", killed for memory" if oom else "") + f"):\n{err[-3000:]}")
        times = xr.open_zarr(Path(tmp) / "results" / train["name"] / "train.zarr")["step_time"].values[WARMUP:]
    return train["batch_size"] / float(np.median(times)), usage.ru_maxrss / 1024, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=960 * CHUNK, help="rows of the large store (default 62,914,560)")
    parser.add_argument("--mem-mb", type=int, default=1000, help="memory cgroup of the streamed job (0: none)")
    parser.add_argument("--steps", type=int, default=256, help="timed steps per run (after 32 warm-up steps)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side, in turns; best kept")
    parser.add_argument("--store-dir", default="/tmp/hpc-bench-ooc", help="where the data sets are written (kept)")
    args = parser.parse_args()
    base = Path(args.store_dir)
    base.mkdir(parents=True, exist_ok=True)
    large, small = base / f"large-{args.rows}.zarr", base / f"small-{args.rows // 8}.zarr"
    write_store(large, args.rows)
    write_store(small, args.rows // 8)
    data_mb = args.rows * (FEATURES + 1) * 4 / 2**20
    if args.mem_mb and data_mb < 4 * args.mem_mb:
        sys.exit(f"the data set ({data_mb:,.0f} MB) is not 4x the memory limit ({args.mem_mb} MB): raise --rows")
    print(f"data set: {args.rows:,} rows x ({FEATURES} inputs + 1 target) float32 = {data_mb:,.0f} MB "
          f"in chunks of {CHUNK:,} rows; MLP 16 -> 4 x 512 -> 1, batch 2048, {args.steps} timed steps; "
          f"{os.cpu_count()} CPU cores (shared with other users' work)")
    best = {"streamed": (0.0, 0.0, 0.0), "memory": (0.0, 0.0, 0.0)}
    for _ in range(args.repeats):
        streamed = run(spec("ooc-streamed", large, True, args.steps), args.mem_mb)
        memory = run(spec("ooc-memory", small, False, args.steps), 0)
        print(f"  (this round: streamed {streamed[0]:,.0f}, in memory {memory[0]:,.0f} samples/s)", flush=True)
        best = {"streamed": max(best["streamed"], streamed), "memory": max(best["memory"], memory)}
    (s_rate, s_rss, s_wall), (m_rate, m_rss, m_wall) = best["streamed"], best["memory"]
    limit = f"in a {args.mem_mb:,} MB memory cgroup" if args.mem_mb else "no memory limit"
    print(f"  streamed from the store, {data_mb:,.0f} MB, {limit}: {s_rate:10,.0f} samples/s   "
          f"peak RSS {s_rss:7,.0f} MB   wall {s_wall:5.0f} s")
    print(f"  in memory, {data_mb / 8:,.0f} MB (1/8 of the rows), no limit : {m_rate:10,.0f} samples/s   "
          f"peak RSS {m_rss:7,.0f} MB   wall {m_wall:5.0f} s")
    print(f"  ratio streamed / in memory: {s_rate / m_rate:.3f}   (target >= 0.8)")


if __name__ == "__main__":
    main()
