"""Benchmark the Arellano (2008) solve: compile time, solve time, iterations, time per iteration,
memory per point, and the throughput of a jit(vmap) batch against sequential solves.

    .venv/bin/python tests/benchmarks/bench_arellano.py            # defaults, float64 and float32
    .venv/bin/python tests/benchmarks/bench_arellano.py --quick    # 101 x 15 grid, float32 only
    .venv/bin/python tests/benchmarks/bench_arellano.py --moments  # simulated moments (docs/arellano.md)

Prints the reference figures beside its own (a public JAX teaching version of the model, run
beside this project's code on 2026-12-01): a float64 JAX solve at the defaults takes 399 iterations, about 40 ms per iteration on a 2-core CPU (16 s in all).
"""

from __future__ import annotations

import argparse
import os
import time

import jax

jax.config.update("jax_enable_x64", True)  # float64 must be available; float32 is asked for explicitly

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hpc.models import get_model  # noqa: E402
from hpc.models.arellano import make_economy, params_from, simulate, solve_equilibrium  # noqa: E402

MODEL = get_model("arellano")
DYNAMIC = [p.name for p in MODEL.parameters if p.role == "dynamic"]
REFERENCE = {"iterations": 399, "ms_per_iteration": 40.0, "solve_s": 16.0}
DTYPES = {"float64": jnp.float64, "float32": jnp.float32}


def static_for(dtype, overrides):
    return MODEL.static_defaults(dtype, **overrides)


def dynamic_for(dtype, batch: int | None = None):
    values = MODEL.defaults()
    if batch is None:
        return {n: jnp.asarray(values[n], dtype) for n in DYNAMIC}
    # a realistic small sweep: the discount factor around Arellano's 0.953
    columns = {n: np.full(batch, values[n]) for n in DYNAMIC}
    columns["beta"] = np.linspace(0.945, 0.96, batch)
    return {n: jnp.asarray(v, dtype) for n, v in columns.items()}


def timed(fn, *args, repeat: int = 1):
    """Best wall time of ``repeat`` calls, blocking on the result."""
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best, out


def compile_timed(fn, *args):
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return time.perf_counter() - start, compiled


def temp_mb(compiled) -> float:
    stats = compiled.memory_analysis()
    return float("nan") if stats is None else stats.temp_size_in_bytes / 2**20


def load() -> str:
    """The 1-minute load average: other jobs on the machine inflate every time printed here."""
    return f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"


def bench_single(name: str, dtype, overrides: dict, repeat: int) -> None:
    static = static_for(dtype, overrides)
    dynamic = dynamic_for(dtype)

    def equilibrium_only(d):
        params = params_from(d)
        econ = make_economy(params, static)
        return solve_equilibrium(econ, params, static["tol"], static["max_iter"])

    def simulation_only(d, eq):
        params = params_from(d)
        econ = make_economy(params, static)
        return simulate(eq, econ, params, static["sim_periods"], static["sim_burn_in"], static["seed"])

    compile_s, solve = compile_timed(lambda d: MODEL.solve(d, static), dynamic)
    solve_s, out = timed(solve, dynamic, repeat=repeat)
    _, loop = compile_timed(equilibrium_only, dynamic)
    loop_s, (eq, _, iterations) = timed(loop, dynamic, repeat=repeat)
    _, sim = compile_timed(simulation_only, dynamic, eq)
    sim_s, _ = timed(sim, dynamic, eq, repeat=repeat)
    iterations = int(iterations)
    print(f"{name}: compile {compile_s:.2f} s | solve+simulate {solve_s:.2f} s | "
          f"iterations {iterations} (converged {bool(out['converged'])}, error {float(out['error']):.1e}) | "
          f"equilibrium {loop_s:.2f} s = {1000 * loop_s / iterations:.1f} ms/iteration | "
          f"simulation {sim_s:.2f} s | temp memory {temp_mb(solve):.1f} MiB/point | {load()}")
    print(f"    default_frequency {float(out['default_frequency']):.3f} %/yr, mean_spread "
          f"{float(out['mean_spread']):.3f} pp, spread_volatility {float(out['spread_volatility']):.3f} pp, "
          f"mean_debt_to_output {float(out['mean_debt_to_output']):.3f} % of quarterly y", flush=True)


def bench_batch(name: str, dtype, overrides: dict, batch: int) -> None:
    static = static_for(dtype, overrides)
    points = dynamic_for(dtype, batch)
    one = jax.jit(lambda d: MODEL.solve(d, static))
    many = jax.jit(jax.vmap(lambda d: MODEL.solve(d, static)))
    compile_one = time.perf_counter()
    one = one.lower(dynamic_for(dtype)).compile()
    compile_one = time.perf_counter() - compile_one
    compile_many = time.perf_counter()
    many = many.lower(points).compile()
    compile_many = time.perf_counter() - compile_many

    def sequential(points):
        return [one({n: v[i] for n, v in points.items()}) for i in range(batch)]

    seq_s, seq_out = timed(sequential, points)
    vmap_s, vmap_out = timed(many, points)
    seq_it = [int(o["iterations"]) for o in seq_out]
    agree = all(np.allclose(np.asarray(vmap_out["bond_price"][i]), np.asarray(seq_out[i]["bond_price"]),
                            atol=1e-5) for i in range(batch))
    print(f"{name} batch of {batch} (beta 0.945..0.96): sequential {seq_s:.2f} s "
          f"({batch / seq_s:.2f} points/s, iterations {min(seq_it)}..{max(seq_it)}) | jit(vmap) {vmap_s:.2f} s "
          f"({batch / vmap_s:.2f} points/s, runs {int(np.max(vmap_out['iterations']))} iterations for all) | "
          f"compile single {compile_one:.2f} s, batch {compile_many:.2f} s | "
          f"temp memory {temp_mb(many) / batch:.1f} MiB/point in the batch | results agree {agree} | {load()}",
          flush=True)


STAT_NAMES = ("default_frequency", "mean_spread", "spread_volatility", "mean_debt_to_output")
# Published figures: only the default probability is confirmed by the project's reference notes.
PUBLISHED = {"default_frequency": "3 (confirmed)", "mean_spread": "3.58 (unverified)",
             "spread_volatility": "6.36 (unverified)", "mean_debt_to_output": "not known here"}


def moments_row(label: str, dtype, overrides: dict) -> dict:
    static = static_for(dtype, overrides)
    out = jax.jit(lambda d: MODEL.solve(d, static))(dynamic_for(dtype))
    row = {k: float(out[k]) for k in STAT_NAMES}
    row["iterations"] = int(out["iterations"])
    print(f"| {label} | " + " | ".join(f"{row[k]:.2f}" for k in STAT_NAMES) + f" | {row['iterations']} |",
          flush=True)
    return row


def moments() -> None:
    """The simulated moments at the defaults, their spread over seeds, and their grid dependence."""
    print("| run | default frequency (%/yr) | mean spread (pp) | spread sd (pp) | mean -b'/y (% of quarterly y) "
          "| iterations |")
    print("|---|---|---|---|---|---|")
    print("| Arellano (2008) | " + " | ".join(PUBLISHED[k] for k in STAT_NAMES) + " | |")
    moments_row("float64, defaults, seed 0", jnp.float64, {})
    rows = [moments_row(f"float32, defaults, seed {seed}", jnp.float32, {"seed": seed}) for seed in range(5)]
    mean = {k: np.mean([r[k] for r in rows]) for k in STAT_NAMES}
    sd = {k: np.std([r[k] for r in rows], ddof=1) for k in STAT_NAMES}
    print("| float32, seeds 0-4: mean ± sd | " + " | ".join(f"{mean[k]:.2f} ± {sd[k]:.2f}" for k in STAT_NAMES)
          + " | |")
    for overrides in ({"n_b": 151}, {"n_b": 401}, {"n_b": 601}, {"n_y": 21}, {"n_y": 101}):
        label = ", ".join(f"{k}={v}" for k, v in overrides.items())
        moments_row(f"float32, {label}, seed 0", jnp.float32, overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="101 x 15 grid, float32, short simulation")
    parser.add_argument("--batch", type=int, default=8, help="points in the batch comparison")
    parser.add_argument("--repeat", type=int, default=1, help="timed repetitions of each single solve (best kept)")
    parser.add_argument("--moments", action="store_true", help="print the simulated-moments table and stop")
    args = parser.parse_args()
    if args.moments:
        moments()
        return

    overrides = {"n_b": 101, "n_y": 15, "sim_periods": 20_000} if args.quick else {}
    precisions = ["float32"] if args.quick else ["float64", "float32"]
    grid = {**{k: MODEL.parameter(k).default for k in ("n_b", "n_y")}, **overrides}
    print(f"Arellano (2008) on {jax.devices()[0].device_kind} ({os.cpu_count()} CPUs visible), "
          f"jax {jax.__version__}, grid n_b={grid['n_b']} x n_y={grid['n_y']}")
    print(f"reference (float64, defaults, 2-core CPU): {REFERENCE['iterations']} iterations, "
          f"~{REFERENCE['ms_per_iteration']:.0f} ms/iteration, ~{REFERENCE['solve_s']:.0f} s per solve")
    for name in precisions:
        bench_single(name, DTYPES[name], overrides, args.repeat)
    for name in precisions:
        bench_batch(name, DTYPES[name], overrides, args.batch)


if __name__ == "__main__":
    main()
