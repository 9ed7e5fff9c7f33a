"""Benchmark the Arellano (2008) solve against a brute-force value function iteration written here,
in the same process: time, iterations, agreement, memory per point, and a jit(vmap) batch against
sequential solves.

    .venv/bin/python tests/benchmarks/bench_arellano.py            # defaults, float64 and float32
    .venv/bin/python tests/benchmarks/bench_arellano.py --quick    # 101 x 15 grid, float32 only
    .venv/bin/python tests/benchmarks/bench_arellano.py --moments  # simulated moments (docs/arellano.md)

The baseline (``brute_force``) is the straightforward JAX VFI of the model's equations: every
iteration evaluates u(y + b - q b') + β E v at every (y, b, b') and maximizes over b', then prices
q off the new default set, from the same start, on the same grid, to the same tolerance. Goal:
the model's equilibrium at least 4x faster, with q within 1e-9 and the values within 1e-7 of it.
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
from hpc.models.arellano import (  # noqa: E402
    effective_tolerance,
    make_economy,
    params_from,
    simulate,
    solve_equilibrium,
)

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


def brute_force(dynamic, static):
    """Plain value iteration of the model's equations; returns (v_c, v_d, q, iterations, last change).

    Written here, apart from the model's solver: it shares only the economy (grid, Tauchen chain,
    h(y)) and the stopping rule. Each iteration, with v = max(v_c, v_d):
        v_c(b, y) = max over every b' of u(y + b - q(b', y) b') + β Σ P(y, y') v(b', y'),
        v_d(y)    = u(h(y)) + β Σ P(y, y') [θ v(0, y') + (1 - θ) v_d(y')],
        q(b', y)  = Σ P(y, y') [1 - d(b', y')] / (1 + r), d = 1 where the new v_d > the new v_c,
    from v_c = v_d = 0, q = 1/(1+r), until the largest change of the three is at most the
    tolerance (floored at 4 ulps of max |v_c|, as the model's, which binds in float32 only).
    """
    p = params_from(dynamic)
    econ = make_economy(p, static)
    b, y, P, zero = econ.bond_grid, econ.income, econ.transition, econ.zero_debt
    dtype = y.dtype

    def u(c):
        log_c = jnp.log(jnp.where(c > 0, c, 1.0))
        power = jnp.where(p.gamma == 1, log_c, jnp.expm1((1 - p.gamma) * log_c) / jnp.where(p.gamma == 1, 1.0, 1 - p.gamma))
        return jnp.where(c > 0, power, -jnp.inf)

    def body(state):
        v_c, v_d, q, _, it = state
        v = jnp.maximum(v_c, v_d[None, :])  # (b, y)
        expected = P @ v.T  # (y, b')
        consumption = y[:, None, None] + b[None, :, None] - (q * b[:, None]).T[:, None, :]  # (y, b, b')
        new_v_c = jnp.max(u(consumption) + p.beta * expected[:, None, :], axis=2).T
        new_v_d = u(econ.income_in_default) + p.beta * P @ (p.theta * v[zero] + (1 - p.theta) * v_d)
        repays = (new_v_d[None, :] <= new_v_c).astype(dtype)
        new_q = jnp.clip(repays @ P.T, 0, 1) / (1 + p.r)
        change = jnp.max(jnp.stack([jnp.max(jnp.abs(new_v_c - v_c)), jnp.max(jnp.abs(new_v_d - v_d)),
                                    jnp.max(jnp.abs(new_q - q))]))
        return new_v_c, new_v_d, new_q, change, it + 1

    def going(state):
        v_c, _, _, change, it = state
        return (change > effective_tolerance(static["tol"], v_c)) & (it < static["max_iter"])

    n_b, n_y = b.shape[0], y.shape[0]
    start = (jnp.zeros((n_b, n_y), dtype), jnp.zeros((n_y,), dtype), jnp.full((n_b, n_y), 1 / (1 + p.r), dtype),
             jnp.asarray(jnp.inf, dtype), jnp.int32(0))
    v_c, v_d, q, change, it = jax.lax.while_loop(going, body, start)
    return v_c, v_d, q, it, change


def bench_single(name: str, dtype, overrides: dict, repeat: int) -> dict:
    """The equilibrium: brute force against the model's solver, then the model's whole solve."""
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

    brute_compile_s, brute = compile_timed(lambda d: brute_force(d, static), dynamic)
    compile_s, loop = compile_timed(equilibrium_only, dynamic)
    # alternate the two so that a change of the machine's load hits both
    brute_s, ours_s = np.inf, np.inf
    for _ in range(repeat):
        t, (b_vc, b_vd, b_q, b_it, b_err) = timed(brute, dynamic)
        brute_s = min(brute_s, t)
        t, (eq, err, iterations) = timed(loop, dynamic)
        ours_s = min(ours_s, t)
    q_diff = float(jnp.max(jnp.abs(eq.bond_price - b_q)))
    v_diff = max(float(jnp.max(jnp.abs(eq.value_repay - b_vc))), float(jnp.max(jnp.abs(eq.value_default - b_vd))))
    same_default = bool(jnp.all((eq.value_default[None, :] > eq.value_repay) == (b_vd[None, :] > b_vc)))
    agree = q_diff <= 1e-9 and v_diff <= 1e-7
    _, solve = compile_timed(lambda d: MODEL.solve(d, static), dynamic)
    solve_s, out = timed(solve, dynamic)
    _, sim = compile_timed(simulation_only, dynamic, eq)
    sim_s, _ = timed(sim, dynamic, eq)
    iterations, b_it = int(iterations), int(b_it)
    print(f"{name} equilibrium: brute force {brute_s:.2f} s ({b_it} iterations, {1000 * brute_s / b_it:.1f} ms each, "
          f"last change {float(b_err):.1e}) | model {ours_s:.2f} s ({iterations} iterations, "
          f"{1000 * ours_s / iterations:.1f} ms each, last change {float(err):.1e}) | "
          f"speed-up {brute_s / ours_s:.1f}x (goal >= 4x) | {load()}")
    print(f"    agreement: max |q - q_brute| {q_diff:.1e} (goal <= 1e-9), max |v - v_brute| {v_diff:.1e} "
          f"(goal <= 1e-7), same default set {same_default} -> {'AGREE' if agree else 'DISAGREE'} | "
          f"compile brute force {brute_compile_s:.2f} s, model {compile_s:.2f} s | "
          f"temp memory: brute force {temp_mb(brute):.1f} MiB, model {temp_mb(loop):.1f} MiB")
    print(f"{name} whole solve (equilibrium, policy, {static['sim_periods']:,}-quarter simulation): {solve_s:.2f} s, "
          f"of which simulation {sim_s:.2f} s | temp memory {temp_mb(solve):.1f} MiB/point | {load()}")
    print(f"    default_frequency {float(out['default_frequency']):.3f} %/yr, mean_spread "
          f"{float(out['mean_spread']):.3f} pp, spread_volatility {float(out['spread_volatility']):.3f} pp, "
          f"mean_debt_to_output {float(out['mean_debt_to_output']):.3f} % of quarterly y", flush=True)
    return {"brute_s": brute_s, "model_s": ours_s, "agree": agree}


def bench_batch(name: str, dtype, overrides: dict, batch: int, lockstep: bool, repeat: int) -> None:
    """``batch`` whole solves one after the other against one jit(vmap) of them (as a sweep runs)."""
    static = static_for(dtype, overrides)
    points = dynamic_for(dtype, batch)
    one = jax.jit(lambda d: MODEL.solve(d, static)).lower(dynamic_for(dtype)).compile()
    many = jax.jit(jax.vmap(lambda d: MODEL.solve(d, static))).lower(points).compile()

    def sequential(points):
        return [one({n: v[i] for n, v in points.items()}) for i in range(batch)]

    # alternated, best of ``repeat`` each, so that a change of the machine's load hits both; the
    # process's CPU time beside the wall time says how much of a difference is the load
    seq_s = vmap_s = seq_cpu = vmap_cpu = np.inf
    for _ in range(repeat):
        cpu = time.process_time()
        t, seq_out = timed(sequential, points)
        seq_s, seq_cpu = min(seq_s, t), min(seq_cpu, time.process_time() - cpu)
        cpu = time.process_time()
        t, vmap_out = timed(many, points)
        vmap_s, vmap_cpu = min(vmap_s, t), min(vmap_cpu, time.process_time() - cpu)
    seq_it = [int(o["iterations"]) for o in seq_out]
    agree = all(np.allclose(np.asarray(vmap_out["bond_price"][i]), np.asarray(seq_out[i]["bond_price"]),
                            atol=1e-5) for i in range(batch))
    print(f"{name} batch of {batch} (beta 0.945..0.96): sequential {seq_s:.2f} s ({batch / seq_s:.2f} points/s, "
          f"iterations {min(seq_it)}..{max(seq_it)}) | jit(vmap) {vmap_s:.2f} s ({batch / vmap_s:.2f} points/s; "
          f"{jax.default_backend()}: points {'one after the other' if jax.default_backend() == 'cpu' else 'in lockstep'}) "
          f"| vmap / sequential {vmap_s / seq_s:.2f} (goal <= 1; CPU time {vmap_cpu:.2f} s / {seq_cpu:.2f} s = "
          f"{vmap_cpu / seq_cpu:.2f}) | temp memory {temp_mb(many) / batch:.1f} MiB/point "
          f"in the batch | results agree {agree} | {load()}", flush=True)
    if lockstep:
        def lockstep_equilibrium(d):
            params = params_from(d)
            econ = make_economy(params, static)
            return solve_equilibrium(econ, params, static["tol"], static["max_iter"], batching="lockstep")

        def map_equilibrium(d):
            params = params_from(d)
            econ = make_economy(params, static)
            return solve_equilibrium(econ, params, static["tol"], static["max_iter"], batching="map")

        ls = jax.jit(jax.vmap(lockstep_equilibrium)).lower(points).compile()
        mp = jax.jit(jax.vmap(map_equilibrium)).lower(points).compile()
        map_s, _ = timed(mp, points)
        ls_s, (_, _, ls_it) = timed(ls, points)
        print(f"    equilibrium alone, the two batchings: one after the other {map_s:.2f} s | lockstep {ls_s:.2f} s "
              f"(all points run {int(np.max(ls_it))} iterations) | temp memory lockstep "
              f"{temp_mb(ls) / batch:.1f} MiB/point | {load()}", flush=True)


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
    parser.add_argument("--repeat", type=int, default=1, help="timed repetitions, alternated: brute force and model, sequential and vmap (best kept)")
    parser.add_argument("--batch-only", action="store_true", help="only the batch comparison")
    parser.add_argument("--no-lockstep", action="store_true", help="skip the lockstep batching's timing")
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
    print(f"the public JAX teaching code of the model, measured beside this project on 2026-12-01 (float64, "
          f"defaults, 2-core CPU): {REFERENCE['iterations']} iterations, ~{REFERENCE['ms_per_iteration']:.0f} "
          f"ms/iteration, ~{REFERENCE['solve_s']:.0f} s per solve (not rerun here)")
    results = {} if args.batch_only else {name: bench_single(name, DTYPES[name], overrides, args.repeat)
                                          for name in precisions}
    for name in precisions:
        bench_batch(name, DTYPES[name], overrides, args.batch, lockstep=not args.no_lockstep, repeat=args.repeat)
    if results:
        print("summary: " + " | ".join(
            f"{name} equilibrium {r['brute_s'] / r['model_s']:.1f}x faster than brute force, "
            f"{'same answer' if r['agree'] else 'ANSWERS DIFFER'}" for name, r in results.items()))

if __name__ == "__main__":
    main()
