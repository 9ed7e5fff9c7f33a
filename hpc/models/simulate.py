"""Simulation helpers shared by models with a finite Markov shock and a policy on a uniform grid.

Everything here is pure JAX and traceable. A Markov path that depends on static inputs only (the
transition matrix and the seed) is not batched by ``vmap``: every point of a sweep reuses it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def markov_chain_path(transition: jax.Array, initial_state: int, n_periods: int, key: jax.Array) -> jax.Array:
    """States s_0 .. s_{n-1} of the chain with row-stochastic ``transition``, s_0 = ``initial_state``.

    One float32 uniform draw per period from ``key``, fed to ``markov_chain_path_from_draws``: the
    path is a function of ``key`` and of ``transition`` rounded to float32 alone.
    """
    draws = jax.random.uniform(key, (n_periods - 1,), dtype=jnp.float32)
    return markov_chain_path_from_draws(transition, initial_state, draws)


def markov_chain_path_from_draws(transition: jax.Array, initial_state, draws: jax.Array) -> jax.Array:
    """States s_0 .. s_T of the chain, s_0 = ``initial_state``, from T uniform ``draws``.

    Inverse-CDF sampling: s_{t+1} is the first state whose cumulative probability in row s_t
    exceeds draw t. Draws and cumulative probabilities are float32 whatever the working
    precision, so that float32 and float64 solves see the same path, provided their transition
    matrices agree once rounded to float32 (the same float64 matrix cast to either precision
    does; a matrix computed in each precision need not, so a model computes it once, in float32
    or in float64 NumPy, for the simulation). Use this form when the draws come from a larger
    array of draws shared with other shocks; ``markov_chain_path`` draws them from a key.
    """
    cdf = jnp.cumsum(transition.astype(jnp.float32), axis=1)
    n_states = transition.shape[0]

    def step(state, u):
        nxt = jnp.minimum(jnp.sum(u > cdf[state]), n_states - 1).astype(jnp.int32)
        return nxt, nxt

    s0 = jnp.asarray(initial_state, jnp.int32)
    _, rest = jax.lax.scan(step, s0, draws.astype(jnp.float32))
    return jnp.concatenate([s0[None], rest])


def uniform_grid_weights(x: jax.Array, grid_min, grid_max, n_points: int) -> tuple[jax.Array, jax.Array]:
    """(i, w) with x ≈ (1 - w) grid[i] + w grid[i + 1] on linspace(grid_min, grid_max, n_points).

    Outside the grid the weights are clamped: the nearest end value is returned, no extrapolation.
    """
    step = (grid_max - grid_min) / (n_points - 1)
    position = jnp.clip((x - grid_min) / step, 0.0, n_points - 1)
    index = jnp.clip(jnp.floor(position).astype(jnp.int32), 0, n_points - 2)
    return index, position - index


def interp_columns(x: jax.Array, xp: jax.Array, fp: jax.Array) -> jax.Array:
    """Column-by-column ``jnp.interp``: x (m, k) and increasing xp, fp (n, k); clamped at the ends.

    A 1-d ``xp`` or ``fp`` is shared by all columns.
    """
    k = x.shape[1]
    xp = jnp.broadcast_to(xp[:, None], (xp.shape[0], k)) if xp.ndim == 1 else xp
    fp = jnp.broadcast_to(fp[:, None], (fp.shape[0], k)) if fp.ndim == 1 else fp
    return jax.vmap(jnp.interp, in_axes=(1, 1, 1), out_axes=1)(x, xp, fp)


def _order_key(values: jax.Array) -> jax.Array:
    """Signed integers ordered as the floats ``values`` are (IEEE bits, negatives flipped)."""
    int_type = {4: jnp.int32, 8: jnp.int64}[values.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(values, int_type)
    return jnp.where(bits >= 0, bits, bits ^ jnp.iinfo(int_type).max)


def _from_order_key(keys: jax.Array, dtype) -> jax.Array:
    """The floats whose ``_order_key`` is ``keys``."""
    flip = keys ^ jnp.iinfo(keys.dtype).max
    return jax.lax.bitcast_convert_type(jnp.where(keys >= 0, keys, flip), dtype)


def _kth_smallest_key(keys: jax.Array, mask: jax.Array, k: jax.Array) -> jax.Array:
    """The order key of the k-th smallest (0-based) of the values where ``mask``, by bisection.

    One pass per bit of the float type: elementwise compares and a sum each, so it batches under
    vmap at the cost of the data (a sort, as in jnp.median, costs far more on CPU).
    """
    big = jnp.iinfo(keys.dtype).max
    lo = jnp.min(jnp.where(mask, keys, big)) - 1  # count(key <= lo) <= k
    hi = jnp.max(jnp.where(mask, keys, -big))  # count(key <= hi) > k

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo // 2 + hi // 2 + (lo % 2 + hi % 2) // 2  # no overflow
        enough = jnp.sum(mask & (keys <= mid)) > k
        return jnp.where(enough, lo, mid), jnp.where(enough, mid, hi)

    _, hi = jax.lax.fori_loop(0, 8 * keys.dtype.itemsize, halve, (lo, hi))
    return hi


def masked_median(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Median of ``values`` where ``mask`` (mean of the two middle ones for an even count); NaN if none.

    The lower middle one by bisection (``_kth_smallest_key``); the upper one is the same value
    where it is tied with it, else the next larger one: one more pass, not another bisection.
    """
    keys = _order_key(values)
    n = jnp.sum(mask)
    lower = _kth_smallest_key(keys, mask, jnp.maximum((n - 1) // 2, 0))
    tied = jnp.sum(mask & (keys <= lower)) > n // 2
    upper = jnp.where(tied, lower, jnp.min(jnp.where(mask & (keys > lower), keys, jnp.iinfo(keys.dtype).max)))
    lower, upper = _from_order_key(lower, values.dtype), _from_order_key(upper, values.dtype)
    return jnp.where(n > 0, 0.5 * (lower + upper), jnp.nan)


def sequential_under_vmap(fun):
    """``fun`` unchanged, except that ``vmap`` runs it point by point (``lax.map``) inside the program.

    For scan-bound work such as a long simulation: a batched scan step gathers from batched arrays,
    which XLA's CPU backend does element by element, and batched passes over long paths spill the
    caches, so batching makes each point slower than on its own. Unbatched arguments are shared
    by every point. ``fun`` takes arrays (pytrees of arrays) only; close over Python values.
    """

    @jax.custom_batching.custom_vmap
    def wrapped(*args):
        return fun(*args)

    @wrapped.def_vmap
    def rule(axis_size, in_batched, *args):
        leaves, treedef = jax.tree_util.tree_flatten(args)
        flags = jax.tree_util.tree_leaves(in_batched)
        if not any(flags):
            out = fun(*args)
            return out, jax.tree_util.tree_map(lambda _: False, out)

        def one_point(batched_leaves):
            it = iter(batched_leaves)
            point = [next(it) if batched else leaf for leaf, batched in zip(leaves, flags)]
            return fun(*jax.tree_util.tree_unflatten(treedef, point))

        out = jax.lax.map(one_point, [leaf for leaf, batched in zip(leaves, flags) if batched])
        return out, jax.tree_util.tree_map(lambda _: True, out)

    return wrapped
