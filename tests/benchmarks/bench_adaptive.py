"""Adaptive against uniform sampling: solves needed for the same interpolation error.

    .venv/bin/python tests/benchmarks/bench_adaptive.py [--dense 161] [--per-round 32] [--max-points 1200]

The function: McCall's reservation wage over compensation c in [10, 40] and patience beta in
[0.9, 0.999], on a coarse offer grid (n_wages = 11, offers 5 apart), where it kinks along every
curve on which it crosses an offer, and steepens as beta nears 1: sharp features between smooth
pieces. Every value is a model solve by the runner's own ``solve_points`` (jit(vmap(solve)),
float64).

- Truth: a dense uniform grid (``--dense`` per side).
- Uniform: k x k grids (k^2 solves), interpolated bilinearly onto the dense grid.
- Adaptive: the sweep's own learner (hpc.sweep.adaptive: Learner2D rebuilt from every solved
  point and asked for ``--per-round`` points per round, as each adaptive round does), its points
  interpolated linearly on their triangulation in the unit box (as python-adaptive's Learner2D
  interpolates), checked after every round.

For each uniform grid it prints the fewest adaptive solves whose mean AND max absolute errors
on the dense grid are both at most the grid's, and the ratio (goal: at least 3x fewer).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.interpolate import LinearNDInterpolator, RegularGridInterpolator

from hpc.models import get_model
from hpc.sweep import adaptive
from hpc.sweep.runner import configure_precision, solve_points

BOX = {"c": [10.0, 40.0], "beta": [0.9, 0.999]}
FIXED = {"w_min": 10.0, "w_max": 60.0, "n_wages": 11, "a": 200.0, "b": 100.0, "tol": 1e-8, "max_iter": 100_000}


def solver():
    configure_precision("float64")
    model = get_model("mccall")
    count = {"solves": 0}

    def solve(c: np.ndarray, beta: np.ndarray) -> np.ndarray:
        count["solves"] += len(c)
        out = solve_points(model, FIXED, {"c": np.asarray(c, float), "beta": np.asarray(beta, float)}, "float64", 1024)
        assert out["converged"].all()
        return np.asarray(out["reservation_wage"], float)

    return solve, count


def unit(c, beta):
    (c0, c1), (b0, b1) = BOX["c"], BOX["beta"]
    return np.stack([(np.asarray(c) - c0) / (c1 - c0), (np.asarray(beta) - b0) / (b1 - b0)], axis=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dense", type=int, default=161)
    parser.add_argument("--per-round", type=int, default=32)
    parser.add_argument("--max-points", type=int, default=1200)
    parser.add_argument("--grids", default="5,9,17,25,33,41,49,65")
    args = parser.parse_args()
    solve, count = solver()

    t0 = time.perf_counter()
    cs, bs = np.linspace(*BOX["c"], args.dense), np.linspace(*BOX["beta"], args.dense)
    C, B = np.meshgrid(cs, bs, indexing="ij")
    truth = solve(C.ravel(), B.ravel()).reshape(C.shape)
    print(f"truth: {args.dense}x{args.dense} = {C.size} solves in {time.perf_counter() - t0:.1f} s; "
          f"reservation wage {truth.min():.3f}..{truth.max():.3f}")

    uniform = []
    for k in map(int, args.grids.split(",")):
        gc, gb = np.linspace(*BOX["c"], k), np.linspace(*BOX["beta"], k)
        GC, GB = np.meshgrid(gc, gb, indexing="ij")
        values = solve(GC.ravel(), GB.ravel()).reshape(GC.shape)
        err = np.abs(RegularGridInterpolator((gc, gb), values)((C, B)) - truth)
        uniform.append((k * k, err.mean(), err.max()))

    settings = {"box": BOX, "outputs": ["reservation_wage"], "points_per_round": args.per_round,
                "stop": {"loss": None, "max_points": args.max_points, "max_rounds": 10_000}}
    points, values, history = np.zeros((0, 2)), np.zeros((0, 1)), []
    t0 = time.perf_counter()
    while len(points) < args.max_points:
        learner = adaptive.learner_from(settings, points, values)  # rebuilt from every solved point
        asked, _ = learner.ask(min(args.per_round, args.max_points - len(points)))
        asked = np.asarray(asked, float)
        points = np.concatenate([points, asked])
        values = np.concatenate([values, solve(asked[:, 0], asked[:, 1])[:, None]])
        if len(points) >= 4:
            surface = LinearNDInterpolator(unit(points[:, 0], points[:, 1]), values[:, 0])(unit(C, B))
            err = np.abs(surface - truth)
            history.append((len(points), float(np.nanmean(err)), float(np.nanmax(err)), learner_loss(settings, points, values)))
    print(f"adaptive: {len(history)} rounds of {args.per_round} points, {len(points)} solves, "
          f"{time.perf_counter() - t0:.1f} s (learner and interpolation included)")

    print("\n| uniform grid | solves | mean error | max error | adaptive solves for both | adaptive mean | adaptive max | fewer solves |")
    print("|---|---|---|---|---|---|---|---|")
    for n, mean, worst in uniform:
        match = next(((m, a, b) for m, a, b, _ in history if a <= mean and b <= worst), None)
        k = int(round(n ** 0.5))
        if match:
            print(f"| {k}x{k} | {n} | {mean:.4f} | {worst:.4f} | {match[0]} | {match[1]:.4f} | {match[2]:.4f} | **{n / match[0]:.1f}x** |")
        else:
            print(f"| {k}x{k} | {n} | {mean:.4f} | {worst:.4f} | > {len(points)} | | | |")
    print("\nadaptive after each round: solves, mean error, max error, learner's loss")
    for m, a, b, loss in history[:: max(1, len(history) // 12)]:
        print(f"  {m:5d}  {a:.5f}  {b:.5f}  {loss:.4g}")
    print(f"\n{count['solves']} model solves in all")


def learner_loss(settings, points, values) -> float:
    return adaptive.learner_loss(adaptive.learner_from(settings, points, values))


if __name__ == "__main__":
    main()
