"""Training throughput: the pipeline's training loop against a bare jit-compiled optax loop.

Both train the same flax MLP with the same optimizer and the same global batch on one process.
The pipeline's figure is its own record (train.zarr's step times, measured per block of 32 steps
between host syncs; compile, evaluation and checkpoints left out); the bare loop is timed the same
way, in blocks of 32 steps, and feeds one batch that already sits on the device (no data order at
all): the tightest baseline. A second bare loop draws its batch on the device each step
(jax.random rows of the data set), the least a real training loop does. Each side's figure is the global batch over its median step time,
and the best of ``--repeats`` runs, taken in turns: a shared machine's other loads come and go.
Target: the pipeline reaches at least 0.95x the bare loop's samples per second.

Then the same run on 1 and on 2 processes of this machine (jax.distributed, gloo), for scaling, beside
one process confined to one core (one process's XLA threads already use every core).

    python tests/benchmarks/bench_train.py            # a large and a small MLP, then 1 -> 2 processes
    python tests/benchmarks/bench_train.py --quick    # fewer steps

GPU mode (not run on CPU-only machines; its numbers come only from a real GPU):

    python tests/benchmarks/bench_train.py --gpu-mfu [--peak-tflops 989]

trains a large bf16 MLP (width 8192, depth 8, batch 16384) with the pipeline's loop and with the
bare loop on the GPU, and prints samples/s and the model FLOPs utilization, MFU = 3 x forward
matmul FLOPs x samples/s / peak (the H100 SXM's dense bf16 peak, 989 TFLOP/s, by default).
"""

from __future__ import annotations

import argparse
import json
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

WARMUP = 32  # steps left out of both measurements
BLOCK = 32  # steps between host syncs (the pipeline's SYNC_EVERY)

CASES = {
    "large": {"width": 512, "depth": 4, "batch": 2048, "features": 16, "outputs": 1, "samples": 65536, "steps": 192},
    "small": {"width": 64, "depth": 3, "batch": 256, "features": 3, "outputs": 1, "samples": 16384, "steps": 1024},
    "gpu": {"width": 8192, "depth": 8, "batch": 16384, "features": 256, "outputs": 16, "samples": 1 << 20,
            "steps": 200, "dtype": "bfloat16"},
}


def train_spec(name: str, case: dict) -> dict:
    steps = case["steps"] + WARMUP
    return {
        "name": name,
        "data": {"synthetic": {"samples": case["samples"], "features": case["features"], "outputs": case["outputs"]},
                 "holdout": 0.01},
        "network": {"kind": "mlp", "width": case["width"], "depth": case["depth"], "activation": "tanh",
                    "dtype": case.get("dtype", "float32")},
        "optimizer": {"name": "adam", "learning_rate": 1.0e-4},
        "batch_size": case["batch"],
        "steps": steps,
        "eval_every": steps,
        "checkpoint_every": steps,
    }


def pipeline_samples_per_second(case: dict, tasks: int = 1, cores: str | None = None) -> float:
    """Run `hpc train run` and read its own per-step record (steps after the warm-up); ``cores``
    (taskset's list, e.g. "0") confines every process of the run to those cores."""
    import xarray as xr

    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "train.yaml"
        spec.write_text(yaml.safe_dump(train_spec("bench", case)))
        cmd = [sys.executable, "-m", "hpc", "train", "run", str(spec), "--tasks", str(tasks)]
        if cores is not None:
            cmd = ["taskset", "-c", cores, *cmd]
        result = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
        if result.returncode != 0:
            sys.exit(f"hpc train run failed:\n{result.stderr[-3000:]}")
        times = xr.open_zarr(Path(tmp) / "results" / "bench" / "train.zarr")["step_time"].values[WARMUP:]
    return case["batch"] / float(np.median(times))


def bare_loop(case: dict) -> float:
    """The baseline: jit(value_and_grad + optax adam) on one device-resident batch; with
    ``case["sample"]``, on a batch drawn on the device each step (jax.random rows of the data)."""
    import jax
    import jax.numpy as jnp
    import optax

    from hpc.train.network import MLP

    model = MLP(widths=(case["width"],) * case["depth"], outputs=case["outputs"], activation="tanh",
                dtype=case.get("dtype", "float32"))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (case["batch"], case["features"])), jnp.float32)
    y = jnp.asarray(rng.normal(size=(case["batch"], case["outputs"])), jnp.float32)
    params = model.init(jax.random.key(0), x[:1])["params"]
    tx = optax.adam(1e-4)
    opt_state = tx.init(params)

    sample = case.get("sample", False)
    x_all = jnp.asarray(rng.uniform(-1, 1, (case["samples"], case["features"])), jnp.float32)
    y_all = jnp.asarray(rng.normal(size=(case["samples"], case["outputs"])), jnp.float32)

    @jax.jit(donate_argnums=(0, 1))  # updated in place, as the pipeline's state is
    def step(params, opt_state, x, y, i):
        if sample:
            rows = jax.random.randint(jax.random.fold_in(jax.random.key(0), i), (case["batch"],), 0, len(x_all))
            x, y = x_all[rows], y_all[rows]
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    steps = [jnp.int32(i) for i in range(BLOCK)]
    for i in range(WARMUP):
        params, opt_state, loss = step(params, opt_state, x, y, steps[i % BLOCK])
    jax.block_until_ready(loss)
    per_step = []
    for _ in range(max(1, case["steps"] // BLOCK)):
        t0 = time.perf_counter()
        for i in range(BLOCK):
            params, opt_state, loss = step(params, opt_state, x, y, steps[i])
        jax.block_until_ready(loss)
        per_step.append((time.perf_counter() - t0) / BLOCK)
    return case["batch"] / float(np.median(per_step))


def bare_samples_per_second(case: dict) -> float:
    """The bare loop in a fresh process, like the pipeline's."""
    cmd = [sys.executable, __file__, "--bare-loop", json.dumps(case)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    if result.returncode != 0:
        sys.exit(f"bare loop failed:\n{result.stderr[-3000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def describe(name: str, case: dict) -> str:
    return (f"{name}: MLP {case['features']} -> {case['depth']} x {case['width']} -> {case['outputs']} "
            f"({case.get('dtype', 'float32')}), global batch {case['batch']}, {case['steps']} timed steps")


def compare(name: str, case: dict, repeats: int) -> float:
    print(describe(name, case))
    bare, sampled, ours = 0.0, 0.0, 0.0
    for _ in range(repeats):
        bare = max(bare, bare_samples_per_second(case))
        sampled = max(sampled, bare_samples_per_second(dict(case, sample=True)))
        ours = max(ours, pipeline_samples_per_second(case))
    print(f"  bare loop, one fixed batch          : {bare:12,.0f} samples/s")
    print(f"  bare loop, jax.random batch per step: {sampled:12,.0f} samples/s")
    print(f"  pipeline loop (data order, stop flag, metrics): {ours:12,.0f} samples/s   ratio {ours / bare:.3f} "
          f"to the fixed batch, {ours / sampled:.3f} to the sampled one (target >= 0.95)")
    return ours / bare


def gpu_mfu(peak_tflops: float, repeats: int) -> None:
    import jax

    from hpc.train.network import matmul_flops_per_sample

    if jax.devices()[0].platform != "gpu":
        sys.exit("--gpu-mfu needs a GPU (jax.devices() has none); no figures made up here")
    case = CASES["gpu"]
    print(describe("gpu", case), f"on {jax.devices()[0].device_kind}")
    network = {"kind": "mlp", "widths": [case["width"]] * case["depth"]}
    train_flops = 3 * matmul_flops_per_sample(network, case["features"], case["outputs"])  # forward + backward
    for label, rate in (("bare jit+optax loop", max(bare_samples_per_second(case) for _ in range(repeats))),
                        ("bare loop, sampled", max(bare_samples_per_second(dict(case, sample=True))
                                                   for _ in range(repeats))),
                        ("pipeline loop", max(pipeline_samples_per_second(case) for _ in range(repeats)))):
        mfu = train_flops * rate / (peak_tflops * 1e12)
        print(f"  {label:20s}: {rate:12,.0f} samples/s, {train_flops * rate / 1e12:7.1f} TFLOP/s, MFU {mfu:.1%} "
              f"(of {peak_tflops:g} TFLOP/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, one run each")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, best kept (default 3)")
    parser.add_argument("--gpu-mfu", action="store_true", help="bf16 large MLP on a GPU: samples/s and MFU")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100 SXM: 989)")
    parser.add_argument("--case", choices=["large", "small", "scaling"], action="append",
                        help="only this part (repeatable): a comparison with the bare loop, or the scaling run")
    parser.add_argument("--bare-loop", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_loop:
        print(bare_loop(json.loads(args.bare_loop)))
        return
    if args.gpu_mfu:
        gpu_mfu(args.peak_tflops, args.repeats)
        return
    import jax

    print(f"jax {jax.__version__}, {os.cpu_count()} CPU cores, device {jax.devices()[0].device_kind}")
    cases = {k: dict(v) for k, v in CASES.items() if k != "gpu"}
    if args.quick:
        args.repeats = 1
        for case in cases.values():
            case["steps"] //= 3
    for name, case in cases.items():
        if not args.case or name in args.case:
            compare(name, case, args.repeats)
    if args.case and "scaling" not in args.case:
        return
    case = cases["large"]
    print("scaling, " + describe("large", case) + " (one device per process)")
    one_core = max(pipeline_samples_per_second(case, tasks=1, cores="0") for _ in range(args.repeats))
    one = max(pipeline_samples_per_second(case, tasks=1) for _ in range(args.repeats))
    two = max(pipeline_samples_per_second(case, tasks=2) for _ in range(args.repeats))
    cores = os.cpu_count()
    print(f"  1 process on 1 core      : {one_core:12,.0f} samples/s")
    print(f"  1 process on {cores} cores     : {one:12,.0f} samples/s   (XLA's threads already use every core)")
    print(f"  2 processes on {cores} cores   : {two:12,.0f} samples/s   speed-up {two / one:.2f}x over 1 process, "
          f"{two / one_core:.2f}x over 1 core (efficiency {two / (2 * one_core):.2f} per added process and core)")


if __name__ == "__main__":
    main()
