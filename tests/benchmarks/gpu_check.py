"""The GPU figures, from one machine with one GPU, each beside its CPU baseline where that is cheap.

    .venv/bin/python tests/benchmarks/gpu_check.py                 # everything, about 5-8 minutes
    .venv/bin/python tests/benchmarks/gpu_check.py --only sweep    # one part: bianchi, sweep, arellano, train
    .venv/bin/python tests/benchmarks/gpu_check.py --no-cpu        # skip the CPU baselines

1. Bianchi n_b = 800: compile and run time of one solve, equilibrium (DE) and planner (SP), from
   bench_bianchi.py's own fresh-process solver child (target: DE under 0.25 s on an H100).
2. A 1,024-point Bianchi sweep (κ × β, equilibrium, n_b = 400) as one jit(vmap(solve)) call,
   with the statistics simulated (80,000 periods) and exact (the default): points/s; CPU
   baseline: 16 of the same points on this machine's CPU.
3. Arellano at the defaults: bench_arellano.py as it is (float64 and float32, one solve and a
   batch of 8; it prints its 2-core CPU reference beside its figures).
4. Training MFU: bench_train.py --gpu-mfu (bf16 MLP, width 8192, depth 8, batch 16,384), with the
   dense bf16 peak of the GPU found (H100/H200 989 TFLOP/s, A100 312, L40S 362; --peak-tflops).

Every part runs in its own process under its own time limit, so one that fails or runs long
leaves the others' figures. Refuses, making up nothing, where JAX sees no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}
SWEEP_POINTS, SWEEP_N_B, SWEEP_CPU_POINTS = 1024, 400, 16


def child_env(platform: str | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(HERE)]))
    if platform:
        env["JAX_PLATFORMS"] = platform
    return env


def run(cmd: list[str], timeout: int, platform: str | None = None, capture: bool = False) -> str | None:
    """Run one part; its output goes straight through unless captured. None where it failed."""
    start = time.perf_counter()
    try:
        result = subprocess.run(cmd, env=child_env(platform), timeout=timeout, text=True,
                                capture_output=capture)
    except subprocess.TimeoutExpired:
        print(f"  !! timed out after {timeout} s: {' '.join(cmd[1:3])}", flush=True)
        return None
    if result.returncode != 0:
        tail = (result.stderr or "")[-2000:] if capture else ""
        print(f"  !! exit status {result.returncode} after {time.perf_counter() - start:.0f} s {tail}", flush=True)
        return None
    return result.stdout if capture else ""


def gpu_kind() -> str | None:
    probe = "import jax; d = jax.devices()[0]; print(d.platform, '|', d.device_kind, '|', len(jax.devices()))"
    out = subprocess.run([sys.executable, "-c", probe], env=child_env(), capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        return None
    platform, kind, count = (part.strip() for part in out.stdout.strip().splitlines()[-1].split("|"))
    return f"{kind} (x{count})" if platform == "gpu" else None


def child_sweep(n_points: int, n_b: int, statistics: str = "simulated") -> dict:
    """Points/s of one jit(vmap(solve)) over n_points DE points (bench_bianchi's model and values),
    the long-run statistics ``statistics`` (simulated, or exact: the model's default)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from bench_bianchi import MODEL, dynamic_values, static_values

    side = int(round(np.sqrt(n_points)))
    kappa, beta = np.meshgrid(np.linspace(0.28, 0.36, side), np.linspace(0.89, 0.93, n_points // side), indexing="ij")
    static = static_values(n_b=n_b, sim_periods=80_000, statistics=statistics)
    batch = {k: jnp.full((kappa.size,), v) for k, v in dynamic_values().items()}
    batch["kappa"], batch["beta"] = jnp.asarray(kappa.ravel(), jnp.float32), jnp.asarray(beta.ravel(), jnp.float32)
    start = time.perf_counter()
    compiled = jax.jit(jax.vmap(lambda d: MODEL.solve(d, static))).lower(batch).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(batch))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(batch))
        times.append(time.perf_counter() - start)
    run_s = min(times)
    return {"points": int(kappa.size), "n_b": n_b, "statistics": statistics,
            "device": jax.devices()[0].device_kind, "compile_s": compile_s,
            "run_s": run_s, "points_per_s": kappa.size / run_s,
            "iterations": [int(out["iterations"].min()), int(out["iterations"].max())]}


def part_bianchi() -> None:
    print("\n== 1. Bianchi, one solve at n_b = 800 (bench_bianchi.py solver child; fastest of 5) ==", flush=True)
    for planner in (False, True):
        args = json.dumps({"n_b": 800, "planner": planner, "repeats": 5})
        out = run([sys.executable, str(HERE / "bench_bianchi.py"), "--child", "solver", args], 600, capture=True)
        if out:
            row = json.loads(out.strip().splitlines()[-1])
            print(f"  GPU {'SP' if planner else 'DE'}: compile {row['compile_s']:.2f} s, run {row['run_s']:.3f} s, "
                  f"XLA temp {row.get('temp_mib', float('nan')):.0f} MiB", flush=True)
    print("  CPU baseline: tests/benchmarks/README.md, section 1 (the 2-core VM; too slow to rerun here)",
          flush=True)


def part_sweep(no_cpu: bool) -> None:
    print(f"\n== 2. Bianchi sweep: {SWEEP_POINTS} DE points (κ × β), n_b = {SWEEP_N_B}, one jit(vmap) ==", flush=True)
    me = str(Path(__file__).resolve())
    sides = [("GPU", SWEEP_POINTS, None)] + ([] if no_cpu else [("CPU", SWEEP_CPU_POINTS, "cpu")])
    for statistics in ("simulated", "exact"):  # the simulation of the first GPU figures, and the default
        rates = {}
        for label, n, platform in sides:
            out = run([sys.executable, me, "--child-sweep", str(n), str(SWEEP_N_B), statistics], 600, platform,
                      capture=True)
            if out:
                row = json.loads(out.strip().splitlines()[-1])
                rates[label] = row["points_per_s"]
                print(f"  {label} ({row['device']}, {row['points']} points, statistics {statistics}): compile "
                      f"{row['compile_s']:.1f} s, run {row['run_s']:.2f} s, {row['points_per_s']:,.1f} points/s, "
                      f"iterations {row['iterations'][0]}-{row['iterations'][1]}", flush=True)
        if len(rates) == 2:
            print(f"  GPU / CPU points per second ({statistics}): {rates['GPU'] / rates['CPU']:.1f}x "
                  f"(CPU: {os.cpu_count()} cores of this machine)", flush=True)


def part_arellano() -> None:
    print("\n== 3. Arellano at the defaults (bench_arellano.py) ==", flush=True)
    run([sys.executable, str(HERE / "bench_arellano.py"), "--batch", "8"], 600)


def part_train(peak: float | None, kind: str) -> None:
    if peak is None:
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in kind.upper()), 989.0)
    print(f"\n== 4. Training MFU, bf16 (bench_train.py --gpu-mfu, peak {peak:g} TFLOP/s) ==", flush=True)
    run([sys.executable, str(HERE / "bench_train.py"), "--gpu-mfu", "--peak-tflops", str(peak), "--repeats", "2"], 600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=["bianchi", "sweep", "arellano", "train"])
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU baselines")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the GPU (found from its name)")
    parser.add_argument("--child-sweep", nargs=3, help=argparse.SUPPRESS)  # points, n_b, statistics
    args = parser.parse_args()
    if args.child_sweep:
        n_points, n_b, statistics = args.child_sweep
        print(json.dumps(child_sweep(int(n_points), int(n_b), statistics)))
        return
    kind = gpu_kind()
    if kind is None:
        sys.exit("gpu_check.py needs a GPU: JAX sees none here (jax[cuda12] installed? a GPU visible?). "
                 "No figures made up.")
    print(f"GPU {kind}, {os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    parts = args.only or ["bianchi", "sweep", "arellano", "train"]
    if "bianchi" in parts:
        part_bianchi()
    if "sweep" in parts:
        part_sweep(args.no_cpu)
    if "arellano" in parts:
        part_arellano()
    if "train" in parts:
        part_train(args.peak_tflops, kind)


if __name__ == "__main__":
    main()
