"""Benchmark of the Bianchi (2011) solver against brute-force value iteration, and of a vmapped sweep.

    python tests/benchmarks/bench_bianchi.py            # full run (a few minutes on 2 CPU cores)
    python tests/benchmarks/bench_bianchi.py --quick    # smaller grids and sweep (about a minute)
    python tests/benchmarks/bench_bianchi.py --statistics   # section 4 alone (exact vs simulated)

Prints, from one run:

1. The model's solver (endogenous-grid time iteration, hpc.models.bianchi) for the decentralized
   equilibrium (DE) and the social planner (SP) at several grid sizes: compile time, run time after
   compile (fastest of several calls), XLA's temporary buffer size and the process's peak resident memory.
   Each grid size runs in a fresh process so that peak memory is its own. A planner point solves
   the DE too (its statistics need the DE's crisis dates), so SP times include one DE solve.
2. A brute-force baseline written here: value iteration over every (b, b') pair for every (B, y),
   float32, the DE by optimistic policy iteration on the perceived law of motion B' = H(B, y) and
   the SP by value iteration with Howard steps. Reports its time, the time ratio, and the distance
   between the two answers (bond policies and simulated statistics).
3. Sweep throughput: the same 64 points (κ × β) solved by one jit(vmap(solve)) call and by 64
   sequential calls of jit(solve), fastest of interleaved repeats; efficiency = sequential time /
   vmapped time (1.0 = no loss from batching, above 1 = batching also amortizes per-call costs).

4. Statistics: exact (the stationary distribution of the policy, the default) against simulated
   (80,000 periods): a whole point (policy, value, statistics) in each mode beside the policy
   solve alone, at n_b = 800, fastest of interleaved repeats in one process; an exact DE point by
   stage (policy, with the value, with the stationary distribution, whole); and the smoothness
   of the crisis probability along κ: a 21-point sweep (0.28-0.36) and 31 points in 0.30-0.33 at
   two grid sizes, exact against simulated, the simulation both as the model runs it (one shock
   path for every point) and with a path of each point's own (its sampling noise), second
   differences' largest value and root mean square.

Sections 1-3 time the simulated statistics (``statistics: simulated``), as before.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hpc.models import bianchi  # noqa: E402
from hpc.models.bianchi import BianchiParams  # noqa: E402
from hpc.models.simulate import markov_chain_path, uniform_grid_weights  # noqa: E402

MODEL = bianchi.MODEL
STAT_NAMES = ("crisis_probability", "constraint_binding_frequency", "mean_debt_to_gdp",
              "crisis_consumption_drop", "crisis_rer_depreciation")


def static_values(**overrides) -> dict:
    return MODEL.static_defaults(jnp.float32, **{"statistics": "simulated", **overrides})


def dynamic_values(dtype=jnp.float32, **overrides) -> dict:
    return MODEL.dynamic_defaults(dtype, **overrides)


def timed(fn, *args, repeats: int = 5):
    """(fastest of ``repeats`` calls in seconds, last result); the caller has compiled fn already.

    The fastest call, not the median: on a shared machine the slower ones measure the neighbours.
    """
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.min(times)), out


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- 1. the model's solver, one process per grid size --------------------------------------------


def child_solver(n_b: int, planner: bool, repeats: int) -> dict:
    static = static_values(n_b=n_b, planner=planner)
    dynamic = dynamic_values()
    rss_before = peak_rss_mib()
    start = time.perf_counter()
    compiled = jax.jit(lambda d: MODEL.solve(d, static)).lower(dynamic).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(dynamic))
    run_s, out = timed(compiled, dynamic, repeats=repeats)
    policy_only = jax.jit(lambda d: bianchi.solve_equilibrium(d, static)[2])
    jax.block_until_ready(policy_only(dynamic))
    policy_s, _ = timed(policy_only, dynamic, repeats=repeats)
    memory = compiled.memory_analysis()
    temp_mib = getattr(memory, "temp_size_in_bytes", float("nan")) / 2**20 if memory is not None else float("nan")
    return {
        "n_b": n_b, "planner": planner, "compile_s": compile_s, "run_s": run_s, "policy_s": policy_s,
        "temp_mib": temp_mib,
        "rss_before_mib": rss_before, "peak_rss_mib": peak_rss_mib(),
        "iterations": int(out["iterations"]), "converged": bool(out["converged"]),
        **{k: float(out[k]) for k in STAT_NAMES},
    }


def run_child(kind: str, **kwargs) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, json.dumps(kwargs)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def section_solver(grids, repeats: int) -> list[dict]:
    print("\n== 1. Endogenous-grid solver (float32, paper calibration, 80,000 simulated periods) ==")
    print("(run = the whole solve: policy, value, simulation, statistics; policy = the time iteration alone)")
    print(f"{'case':>4} {'n_b':>5} {'compile s':>9} {'run s':>8} {'policy ms':>9} {'XLA temp MiB':>12} "
          f"{'peak RSS MiB':>12} {'iters':>5} {'crisis %':>8} {'debt/GDP %':>10}")
    rows = []
    for planner in (False, True):
        for n_b in grids:
            row = run_child("solver", n_b=n_b, planner=planner, repeats=repeats)
            rows.append(row)
            print(f"{'SP' if planner else 'DE':>4} {n_b:>5} {row['compile_s']:>9.2f} {row['run_s']:>8.3f} "
                  f"{1e3 * row['policy_s']:>9.2f} {row['temp_mib']:>12.1f} {row['peak_rss_mib']:>12.0f} "
                  f"{row['iterations']:>5} {row['crisis_probability']:>8.2f} {row['mean_debt_to_gdp']:>10.2f}")
    print("(peak RSS includes the JAX runtime: about "
          f"{rows[0]['rss_before_mib']:.0f} MiB before the first compile)")
    return rows


# --- 2. brute-force value iteration --------------------------------------------------------------

PENALTY = -1e10  # utility of an infeasible choice (finite, so that no inf - inf appears)


class Grids(NamedTuple):
    """Arrays of the brute-force problems, passed to jit as arguments (not baked-in constants)."""

    b: jax.Array  # (n_b,)
    y_T: jax.Array  # (S,)
    y_N: jax.Array
    P: jax.Array  # (S, S)
    c_T: jax.Array  # c_T[i, j, s] of a household with b_i choosing b_j in state s
    u: jax.Array  # its utility, PENALTY where c_T ≤ 0


def make_grids(n_b: int, p: BianchiParams) -> Grids:
    static = static_values(n_b=n_b)
    y_T, y_N, transition = bianchi.shock_process(static["shocks"])
    b = jnp.asarray(bianchi.bond_grid(static), jnp.float32)
    y_T, y_N = jnp.asarray(y_T, jnp.float32), jnp.asarray(y_N, jnp.float32)
    # c_N = y_N in equilibrium; fixing it off the diagonal b ≠ B too leaves the equilibrium
    # Euler equation unchanged (at b = B the household's optimal c_N is y_N).
    c_T = (1 + p.r) * b[:, None, None] + y_T[None, None, :] - b[None, :, None]
    composite = bianchi.composite(jnp.maximum(c_T, 1e-6), y_N[None, None, :], p)
    u = jnp.where(c_T > 0, bianchi.utility(composite, p), PENALTY)
    return Grids(b, y_T, y_N, jnp.asarray(transition, jnp.float32), c_T, u)


def grid_step(g: Grids):
    return g.b[1] - g.b[0]


def brute_force_planner(g: Grids, p: BianchiParams, tol=1e-5, howard=20, max_iter=2000):
    """SP: V(b, s) = max_{b'} u(c) + β E V(b', s') over all (b, b') pairs, b' meeting the constraint
    at the price its own c_T implies. Returns (policy index (n_b, S), binding (n_b, S), iterations)."""
    p_N = bianchi.price_nontradable(jnp.maximum(g.c_T, 1e-6), g.y_N[None, None, :], p)
    limit = -p.kappa * (g.y_T[None, None, :] + p_N * g.y_N[None, None, :])
    feasible = (g.b[None, :, None] >= limit) & (g.c_T > 0)
    reward = jnp.where(feasible, g.u, PENALTY)  # (i, j, s)
    first_feasible = jnp.argmax(feasible, axis=1)  # (i, s)

    def improve(v):
        ev = v @ g.P.T  # (j, s)
        q = reward + p.beta * ev[None, :, :]
        return jnp.max(q, axis=1), jnp.argmax(q, axis=1)

    def evaluate(v, policy):
        ev = v @ g.P.T
        r = jnp.take_along_axis(reward, policy[:, None, :], axis=1)[:, 0, :]
        return r + p.beta * jnp.take_along_axis(ev, policy, axis=0)

    def cond(state):
        _, err, it = state
        return (err > tol) & (it < max_iter)

    def body(state):
        v, _, it = state
        v_new, policy = improve(v)
        v_new = jax.lax.fori_loop(0, howard, lambda _, w: evaluate(w, policy), v_new)
        return v_new, jnp.max(jnp.abs(v_new - v)) / jnp.max(jnp.abs(v_new)), it + 1

    v0 = jnp.max(reward, axis=1) / (1 - p.beta)
    v, err, it = jax.lax.while_loop(cond, body, (v0, jnp.float32(jnp.inf), jnp.int32(0)))
    _, policy = improve(v)
    return policy, policy == first_feasible, it


def brute_force_equilibrium(g: Grids, p: BianchiParams, tol=5e-4, howard=10, damping=0.5, max_outer=400):
    """DE by optimistic policy iteration on the perceived law of motion H(B, s).

    Household: v(b, B, s) = max_{b'} u(c_T(b, b')) + β E v(b', H(B, s), s'), b' ≥ -κ(y_T + p_N(B, s) y_N),
    with v linear in B between grid points. Each outer step does one Bellman step over all
    (b, b', B) for every s (16 n_b³ candidates), ``howard`` evaluation steps, then moves H halfway to
    the diagonal choice h(B, B, s). The discrete choice never settles exactly: h keeps flipping
    between neighbouring grid points at a few states, so |h - H| stalls at 1 to 1.6 grid steps and
    the relative change of v near 1e-4 (measured at n_b = 100 and 200; a bond tolerance below the
    grid step would never be met). It stops when H is within two grid steps of h and v changes by
    less than ``tol`` (relative), or after ``max_outer`` steps.
    """
    n_b, R = g.b.shape[0], 1 + p.r
    diag = jnp.arange(n_b)

    def market(H):
        C_T = R * g.b[:, None] + g.y_T[None, :] - H  # aggregate (B, s)
        p_N = bianchi.price_nontradable(jnp.maximum(C_T, 1e-6), g.y_N[None, :], p)
        limit = -p.kappa * (g.y_T[None, :] + p_N * g.y_N[None, :])
        allowed = g.b[:, None, None] >= limit[None, :, :]  # (j, B, s)
        idx, w = uniform_grid_weights(H, g.b[0], g.b[-1], n_b)  # position of H(B, s) on the B axis
        return allowed, idx, w

    def expected(v, idx, w):
        m = jnp.einsum("jkt,st->jks", v, g.P)  # Σ_s' P[s, s'] v(b_j, B_k, s'), (j, k, s)
        lo = jnp.take_along_axis(m, jnp.broadcast_to(idx[None], m.shape), axis=1)
        hi = jnp.take_along_axis(m, jnp.broadcast_to(idx[None] + 1, m.shape), axis=1)
        return (1 - w)[None] * lo + w[None] * hi  # E v(b_j, H(B, s), s'), (j, B, s)

    def improve(v, allowed, idx, w):
        ev = jnp.where(allowed, p.beta * expected(v, idx, w), PENALTY)  # (j, B, s)

        def one_state(args):
            u_s, ev_s = args  # (i, j), (j, B)
            q = u_s[:, :, None] + ev_s[None, :, :]  # (i, j, B): the n_b³ candidates of state s
            return jnp.max(q, axis=1), jnp.argmax(q, axis=1)

        v_new, policy = jax.lax.map(one_state, (jnp.moveaxis(g.u, 2, 0), jnp.moveaxis(ev, 2, 0)))
        return jnp.moveaxis(v_new, 0, 2), jnp.moveaxis(policy, 0, 2)  # (i, B, s)

    def evaluate(v, policy, allowed, idx, w):
        ev = jnp.where(allowed, p.beta * expected(v, idx, w), PENALTY)  # (j, B, s)
        u = jnp.take_along_axis(g.u[:, :, None, :], policy[:, None, :, :], axis=1)[:, 0]  # (i, B, s)
        return u + jnp.take_along_axis(ev, policy, axis=0)

    def cond(state):
        *_, err_v, err_h, it = state
        return ((err_v > tol) | (err_h > 2 * grid_step(g))) & (it < max_outer)

    def body(state):
        v, H, _, _, _, it = state
        allowed, idx, w = market(H)
        v_new, policy = improve(v, allowed, idx, w)
        v_new = jax.lax.fori_loop(0, howard, lambda _, x: evaluate(x, policy, allowed, idx, w), v_new)
        h = g.b[policy[diag, diag, :]]  # (B, s): the choice of a household holding b = B
        err_h = jnp.max(jnp.abs(h - H))
        H_new = H + damping * (h - H)
        err_v = jnp.max(jnp.abs(v_new - v)) / jnp.max(jnp.abs(v_new))
        return v_new, H_new, policy, err_v, err_h, it + 1

    H0 = jnp.broadcast_to(g.b[:, None], (n_b, g.y_T.shape[0]))
    v0 = jnp.broadcast_to(jnp.max(g.u, axis=1)[:, None, :] / (1 - p.beta), (n_b, n_b, g.y_T.shape[0]))
    policy0 = jnp.zeros((n_b, n_b, g.y_T.shape[0]), jnp.int32)
    init = (v0, H0, policy0, jnp.float32(jnp.inf), jnp.float32(jnp.inf), jnp.int32(0))
    v, H, policy, err_v, err_h, it = jax.lax.while_loop(cond, body, init)
    allowed, _, _ = market(H)
    h_index = policy[diag, diag, :]
    first_allowed = jnp.argmax(allowed, axis=0)  # (B, s)
    return h_index, h_index == first_allowed, it, err_h, err_v


def simulate_index_policy(policy, binding, states, n_b):
    """Bond index path k_0..k_T of a grid policy from mid-grid, and the binding flag each period."""

    def step(k, s):
        return policy[k, s], (policy[k, s], binding[k, s])

    k0 = jnp.int32(n_b // 2)
    _, (path, binds) = jax.lax.scan(step, k0, states)
    return jnp.concatenate([k0[None], path]), binds


def section_brute_force(grids, sim_periods: int) -> list[dict]:
    print("\n== 2. Brute-force VFI over all (b, b') pairs vs the endogenous-grid solver (float32) ==")
    print("(times compare the policy solves only; statistics of both from the same 80,000-period shock path,"
          " the brute-force ones from its grid policy, binding = the lowest feasible grid point chosen)")
    p = BianchiParams(*(jnp.asarray(v, jnp.float32) for v in dynamic_values().values()))
    rows = []
    for n_b in grids:
        g = make_grids(n_b, p)
        step = float(grid_step(g))
        burn_in = 1_000
        states = markov_chain_path(g.P, 0, burn_in + sim_periods, jax.random.PRNGKey(0))

        results = {}
        for name, fn in (("DE", brute_force_equilibrium), ("SP", brute_force_planner)):
            start = time.perf_counter()
            compiled = jax.jit(fn).lower(g, p).compile()
            compile_s = time.perf_counter() - start
            run_s, out = timed(compiled, g, p, repeats=1)
            results[name] = (compile_s, run_s, out)

        def stats_of(policy, binding, ref_policy, ref_binding):
            k, binds = simulate_index_policy(policy, binding, states, n_b)
            k_ref, binds_ref = simulate_index_policy(ref_policy, ref_binding, states, n_b)
            out = bianchi.simulation_statistics(g.b[k][burn_in:], binds[burn_in:], g.b[k_ref][burn_in:],
                                                binds_ref[burn_in:], states[burn_in:], g.y_T, g.y_N, p)
            return {k: float(v) for k, v in out.items()}

        de_policy, de_bind = results["DE"][2][0], results["DE"][2][1]
        sp_policy, sp_bind = results["SP"][2][0], results["SP"][2][1]
        brute_stats = {"DE": stats_of(de_policy, de_bind, de_policy, de_bind),
                       "SP": stats_of(sp_policy, sp_bind, de_policy, de_bind)}

        for name, policy in (("DE", de_policy), ("SP", sp_policy)):
            static = static_values(n_b=n_b, planner=name == "SP", sim_periods=sim_periods, sim_burn_in=burn_in)
            solver = jax.jit(lambda d: MODEL.solve(d, static))
            jax.block_until_ready(solver(dynamic_values()))
            full_s, egm = timed(solver, dynamic_values(), repeats=3)
            policy_only = jax.jit(lambda d: bianchi.solve_equilibrium(d, static)[2])
            jax.block_until_ready(policy_only(dynamic_values()))
            egm_s, _ = timed(policy_only, dynamic_values(), repeats=5)
            brute_policy = np.asarray(g.b[policy])
            gap = np.abs(np.asarray(egm["bond_policy"]) - brute_policy) / step
            compile_s, run_s, out = results[name]
            row = {"case": name, "n_b": n_b, "brute_compile_s": compile_s, "brute_run_s": run_s,
                   "brute_iterations": int(out[2]), "egm_policy_s": egm_s, "egm_full_s": full_s,
                   "ratio": run_s / egm_s,
                   "policy_gap_max_steps": float(gap.max()), "policy_gap_mean_steps": float(gap.mean()),
                   "egm": {k: float(egm[k]) for k in STAT_NAMES}, "brute": brute_stats[name]}
            rows.append(row)
            print(f"{name} n_b={n_b}: brute force {run_s:.3f} s ({int(out[2])} outer iterations; compile "
                  f"{compile_s:.1f} s); endogenous grid policy {1e3 * egm_s:.1f} ms -> ratio {run_s / egm_s:.1f}x "
                  f"(full solve with simulation {1e3 * full_s:.0f} ms)")
            print(f"   bond policy gap: max {gap.max():.1f}, mean {gap.mean():.2f} grid steps")
            if name == "DE":
                print(f"   DE law of motion: last |h - H| = {float(out[3]):.2e} (grid step {step:.2e}), "
                      f"last relative change of v {float(out[4]):.1e}")
            print(f"   {'statistic':<30} {'endogenous grid':>15} {'brute force':>12}")
            for k in STAT_NAMES:
                print(f"   {k:<30} {row['egm'][k]:>15.2f} {row['brute'][k]:>12.2f}")
    return rows


# --- 3. sweep throughput ------------------------------------------------------------------------


def section_sweep(n_points: int, n_b: int, sim_periods: int, repeats: int = 5) -> dict:
    side = int(round(np.sqrt(n_points)))
    kappa, beta = np.meshgrid(np.linspace(0.28, 0.36, side), np.linspace(0.89, 0.93, side), indexing="ij")
    kappa, beta = kappa.ravel(), beta.ravel()
    n = kappa.size
    print(f"\n== 3. Sweep throughput: {n} DE points (κ × β), n_b = {n_b}, {sim_periods} simulated periods ==")
    static = static_values(n_b=n_b, sim_periods=sim_periods)

    def point(d):
        return MODEL.solve(d, static)

    base = dynamic_values()
    batch = {k: jnp.full((n,), v) for k, v in base.items()}
    batch["kappa"], batch["beta"] = jnp.asarray(kappa, jnp.float32), jnp.asarray(beta, jnp.float32)

    vmapped = jax.jit(jax.vmap(point))
    start = time.perf_counter()
    vmapped_c = vmapped.lower(batch).compile()
    vmap_compile = time.perf_counter() - start
    single = jax.jit(point)
    start = time.perf_counter()
    single_c = single.lower(base).compile()
    single_compile = time.perf_counter() - start
    points = [dict(base, kappa=jnp.float32(k), beta=jnp.float32(b)) for k, b in zip(kappa, beta)]

    def sequential():
        return [jax.block_until_ready(single_c(d)) for d in points]

    # Interleaved, so that both see the same load from whatever else runs on the machine.
    jax.block_until_ready(vmapped_c(batch))
    sequential()
    vmap_times, seq_times = [], []
    for _ in range(repeats):
        t, out_v = timed(vmapped_c, batch, repeats=1)
        vmap_times.append(t)
        t, outs = timed(sequential, repeats=1)
        seq_times.append(t)
    vmap_s, seq_s = min(vmap_times), min(seq_times)
    per_point_gap = max(float(np.max(np.abs(np.asarray(out_v["bond_policy"][i]) - np.asarray(o["bond_policy"]))))
                        for i, o in enumerate(outs))
    efficiency = seq_s / vmap_s
    print(f"jit(vmap): compile {vmap_compile:.2f} s, run {vmap_s:.3f} s ({1e3 * vmap_s / n:.1f} ms/point)")
    print(f"sequential jit: compile {single_compile:.2f} s, run {seq_s:.3f} s ({1e3 * seq_s / n:.1f} ms/point)")
    print(f"efficiency (sequential / vmapped time): {efficiency:.2f}  (target ≥ 0.9)")
    print(f"max |bond policy| difference vmapped vs single: {per_point_gap:.2e}; "
          f"iterations {int(out_v['iterations'].min())}-{int(out_v['iterations'].max())}, "
          f"all converged: {bool(np.all(out_v['converged']))}")
    print(f"crisis probability over the sweep: {float(out_v['crisis_probability'].min()):.2f}% to "
          f"{float(out_v['crisis_probability'].max()):.2f}%")
    return {"vmap_s": vmap_s, "sequential_s": seq_s, "efficiency": efficiency, "points": n}


# --- 4. exact vs simulated statistics -------------------------------------------------------------


def stage_times(n_b: int, repeats: int) -> dict:
    """Where an exact DE point's time goes: the policy, then with the value, then with the stationary
    distribution, then the whole point (each stage its own jitted program, fastest of interleaved
    repeats)."""
    from hpc.models.shocks import stationary_distribution

    static = static_values(n_b=n_b, statistics="exact")
    shock_pi = stationary_distribution(bianchi.shock_process(static["shocks"])[2])
    tol = max(float(static["dist_tol"]), 100 * float(jnp.finfo(jnp.float32).eps))

    def upto(stage):
        def point(d):
            p = bianchi._params(d, static["dtype"])
            econ = bianchi.make_economy(static, p)
            c_T, c_unc, _, _ = bianchi.solve_policy(econ, p, False, static["tol"], static["max_iter"])
            out = [c_T]
            if stage in ("value", "distribution"):
                out.append(bianchi.evaluate_policy(c_T, econ, p, static["value_tol"], static["max_iter"])[0])
            if stage == "distribution":
                b_next = jnp.maximum(econ.cash - c_unc, econ.cash - econ.c_bind)
                out.append(bianchi.stationary_bond_distribution(b_next, econ, shock_pi, tol, static["max_iter"])[0])
            return out
        return jax.jit(point)

    calls = {name: upto(name) for name in ("policy", "value", "distribution")}
    calls["whole point"] = jax.jit(lambda d: MODEL.solve(d, static))
    dynamic = dynamic_values()
    for fn in calls.values():
        jax.block_until_ready(fn(dynamic))
    best = {name: float("inf") for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            best[name] = min(best[name], timed(fn, dynamic, repeats=1)[0])
    return best


def section_statistics(n_b: int, sweep_n_b: int, repeats: int = 7) -> dict:
    print(f"\n== 4. Statistics exact vs simulated (float32, paper calibration, n_b = {n_b}) ==")
    print("(a whole point: policy, value, statistics; fastest of interleaved repeats; policy = the time "
          "iteration alone, for the planner its own and the DE's, which its statistics need)")
    dynamic = dynamic_values()
    rows = {}
    for planner in (False, True):
        static = static_values(n_b=n_b, planner=planner)
        calls = {"policy": jax.jit(lambda d, s=static: [bianchi.solve_equilibrium(d, s, planner=c)[2]
                                                         for c in {False, planner}])}
        for mode in ("exact", "simulated"):
            calls[mode] = jax.jit(lambda d, s=dict(static, statistics=mode): MODEL.solve(d, s))
        outs = {name: jax.block_until_ready(fn(dynamic)) for name, fn in calls.items()}
        best = {name: float("inf") for name in calls}
        for _ in range(repeats):
            for name, fn in calls.items():
                t, outs[name] = timed(fn, dynamic, repeats=1)
                best[name] = min(best[name], t)
        case = "SP" if planner else "DE"
        rows[case] = best
        print(f"{case}: policy {1e3 * best['policy']:.1f} ms | exact {1e3 * best['exact']:.1f} ms "
              f"({best['exact'] / best['policy']:.2f}x the policy) | simulated {1e3 * best['simulated']:.1f} ms "
              f"({best['simulated'] / best['policy']:.2f}x)   goal: exact <= 1.5x")
        print(f"   {'statistic':<30} {'exact':>8} {'simulated':>9}")
        for k in STAT_NAMES:
            print(f"   {k:<30} {float(outs['exact'][k]):>8.3f} {float(outs['simulated'][k]):>9.3f}")

    stages = stage_times(n_b, repeats=repeats + 2)
    print("DE exact point by stage (each a program of its own, cumulative): "
          + " | ".join(f"{name} {1e3 * t:.1f} ms" for name, t in stages.items()))
    rows["DE stages"] = stages

    smooth = section_smoothness(sweep_n_b, window_n_b=(sweep_n_b, 2 * sweep_n_b))
    return {"times": rows, **smooth}


def kappa_curves(n_b: int, kappa, fresh: bool = True) -> dict:
    """The DE's crisis probability along ``kappa``: exact, simulated as the model does it (one
    shock path, the default seed, for every point) and, with ``fresh``, simulated on a path of
    each point's own (seed = the point's index): the sampling noise of a simulation."""
    dynamic = dynamic_values()
    kappa = jnp.asarray(kappa, jnp.float32)
    curves = {}
    for mode in ("exact", "simulated"):
        static = static_values(n_b=n_b, statistics=mode)
        out = jax.jit(jax.vmap(lambda k, s=static: MODEL.solve(dict(dynamic, kappa=k), s)))(kappa)
        curves[mode] = np.asarray(out["crisis_probability"], np.float64)
    if fresh:
        static = static_values(n_b=n_b, statistics="simulated")
        periods = static["sim_burn_in"] + static["sim_periods"]

        def simulated(k, key):
            p = bianchi._params(dict(dynamic, kappa=k), jnp.float32)
            econ = bianchi.make_economy(static, p)
            _, c_unc, _, _ = bianchi.solve_policy(econ, p, False, static["tol"], static["max_iter"])
            states = markov_chain_path(econ.transition, 0, periods, key)
            return bianchi.long_run_statistics((econ.cash - c_unc, econ.cash - econ.c_bind), None, econ, p, states,
                                               static)["crisis_probability"]

        keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(kappa.shape[0]))
        curves["fresh paths"] = np.asarray(jax.jit(jax.vmap(simulated))(kappa, keys), np.float64)
    return curves


def second_differences(curve) -> tuple[float, float, int]:
    """(largest |second difference|, root mean square, the index of the point where the largest is)."""
    d2 = np.diff(curve, 2)
    return float(np.abs(d2).max()), float(np.sqrt(np.mean(d2**2))), int(np.abs(d2).argmax()) + 1


def section_smoothness(sweep_n_b: int, window_n_b: tuple[int, ...]) -> dict:
    print(f"\n21-point κ sweep 0.28-0.36, DE, n_b = {sweep_n_b}: crisis probability (%)")
    kappa = np.linspace(0.28, 0.36, 21)
    curves = kappa_curves(sweep_n_b, kappa)
    result = {"sweep": {}}
    for mode, curve in curves.items():
        big, rms, at = second_differences(curve)
        result["sweep"][mode] = {"max": big, "rms": rms}
        print(f"   {mode:<11} {' '.join(f'{v:.2f}' for v in curve)}  max |2nd diff| {big:.3f} "
              f"(at κ {kappa[at]:.3f}), rms {rms:.3f}")
    steps = {mode: int(np.abs(np.diff(curve)).argmax()) for mode, curve in curves.items()}
    print("   largest step between neighbours: " + ", ".join(
        f"{m} {curves[m][k + 1] - curves[m][k]:+.3f} (κ {kappa[k]:.3f} to {kappa[k + 1]:.3f})" for m, k in steps.items()))
    print("   ratio simulated / exact, max |2nd diff|: "
          f"{result['sweep']['simulated']['max'] / result['sweep']['exact']['max']:.2f} (one path), "
          f"{result['sweep']['fresh paths']['max'] / result['sweep']['exact']['max']:.2f} (fresh paths)")

    window = np.linspace(0.30, 0.33, 31)
    print("\nκ 0.30-0.33 in 31 points (no step of the model's own there), DE: second differences of the "
          "crisis probability; goal: exact 10x below the simulation's sampling noise (fresh paths)")
    result["window"] = {}
    for n_b in window_n_b:
        curves = kappa_curves(n_b, window)
        row = {mode: second_differences(curve)[:2] for mode, curve in curves.items()}
        result["window"][n_b] = row
        monotone = bool(np.all(np.diff(curves["exact"]) < 0))
        print(f"   n_b {n_b}: " + " | ".join(f"{m} max {v[0]:.4f} rms {v[1]:.4f}" for m, v in row.items())
              + f" | fresh / exact rms {row['fresh paths'][1] / row['exact'][1]:.1f}x, max "
              f"{row['fresh paths'][0] / row['exact'][0]:.1f}x | exact falls at every step: {monotone}")
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller grids and sweep")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--statistics", action="store_true", help="section 4 alone (exact vs simulated)")
    args = parser.parse_args(argv)
    if args.child:
        kind, kwargs = args.child[0], json.loads(args.child[1])
        print(json.dumps({"solver": child_solver}[kind](**kwargs)))
        return

    print(f"JAX {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPU cores; "
          f"{'quick' if args.quick else 'full'} mode")
    if args.statistics:
        section_statistics(400 if args.quick else 800, sweep_n_b=100 if args.quick else 400)
    elif args.quick:
        section_solver((100, 200, 400), repeats=3)
        section_brute_force((100,), sim_periods=80_000)
        section_sweep(16, n_b=200, sim_periods=80_000)
        section_statistics(400, sweep_n_b=100)
    else:
        section_solver((100, 200, 400, 800), repeats=5)
        section_brute_force((100, 200), sim_periods=80_000)
        section_sweep(64, n_b=400, sim_periods=80_000)
        section_statistics(800, sweep_n_b=400)


if __name__ == "__main__":
    main()
