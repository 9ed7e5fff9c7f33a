"""Finite-state Markov approximations of Gaussian autoregressions, and their invariant distribution.

A discretization that depends on static parameters only runs once per compile, so it is plain
NumPy in float64 and deterministic: the same inputs give the same chain, bit for bit
(``tauchen_hussey_var``). One whose parameters are swept (``tauchen``: ρ and σ are dynamic in
Arellano's model) is JAX and traceable, so a sweep over them compiles once.
``stationary_distribution`` takes either kind of matrix.

Tauchen (1986) for an AR(1)
---------------------------
For x' = ρ x + σ ε on n evenly spaced points x_1 < ... < x_n spanning ±m unconditional standard
deviations σ / √(1 - ρ²), with step h, P[i, j] is the normal mass of the interval
(x_j - h/2, x_j + h/2] under N(ρ x_i, σ²); the end points take the tails.

Tauchen and Hussey (1991) for a VAR(1)
--------------------------------------
For x' = A x + ε, ε ~ N(0, Σ) in d dimensions, take a weighting density w = N(0, Σ_w) (Tauchen
and Hussey use the innovation covariance, Σ_w = Σ). With L the Cholesky factor of Σ_w and
(ζ_i, ω_i) the n-point Gauss–Hermite rule for the weight exp(-ζ²), the nodes are the n^d points
x_k = L √2 ζ_k (ζ_k running over the product rule) and the transition probabilities are the
quadrature weights reweighted by the ratio of the conditional to the weighting density,

    P[j, k] ∝ W_k f(x_k | x_j) / w(x_k),   W_k = Π_i ω_{k_i} / √π,

normalized so that each row sums to one. f(· | x) is the N(A x, Σ) density.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr


def _gaussian_log_density(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """log N(x; mean, cov) for x of shape (..., d), up to the normalizing constant."""
    diff = x - mean
    solved = np.linalg.solve(cov, diff[..., None])[..., 0]
    return -0.5 * np.sum(diff * solved, axis=-1) - 0.5 * np.linalg.slogdet(cov)[1]


def tauchen_hussey_var(
    persistence,
    innovation_cov,
    n_per_dim: int,
    weighting_cov=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Tauchen–Hussey discretization of x' = A x + ε, ε ~ N(0, Σ).

    Returns ``nodes`` of shape (n_per_dim**d, d) and the row-stochastic ``transition`` matrix of
    shape (n_per_dim**d, n_per_dim**d). Node k is ordered with the first variable's quadrature
    index varying slowest. ``weighting_cov`` defaults to Σ (the original method); pass the
    unconditional covariance (Flodén's variant) for very persistent processes.
    """
    a = np.atleast_2d(np.asarray(persistence, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(innovation_cov, dtype=np.float64))
    d = a.shape[0]
    if a.shape != (d, d) or sigma.shape != (d, d):
        raise ValueError(f"persistence {a.shape} and innovation_cov {sigma.shape} must both be (d, d)")
    base = sigma if weighting_cov is None else np.atleast_2d(np.asarray(weighting_cov, dtype=np.float64))

    zeta, omega = np.polynomial.hermite.hermgauss(n_per_dim)
    grids = np.meshgrid(*([zeta] * d), indexing="ij")
    z = np.stack([g.ravel() for g in grids], axis=-1)  # (n^d, d), standard-normal scale / √2
    weight_grids = np.meshgrid(*([omega / np.sqrt(np.pi)] * d), indexing="ij")
    weights = np.prod(np.stack([g.ravel() for g in weight_grids], axis=-1), axis=-1)

    nodes = (np.sqrt(2.0) * z) @ np.linalg.cholesky(base).T
    log_f = _gaussian_log_density(nodes[None, :, :], (nodes @ a.T)[:, None, :], sigma)
    log_w = _gaussian_log_density(nodes, np.zeros(d), base)
    log_p = np.log(weights)[None, :] + log_f - log_w[None, :]
    log_p -= log_p.max(axis=1, keepdims=True)
    transition = np.exp(log_p)
    transition /= transition.sum(axis=1, keepdims=True)
    return nodes, transition


def unconditional_covariance(persistence, innovation_cov) -> np.ndarray:
    """Σ_x solving Σ_x = A Σ_x A' + Σ (the VAR must be stable)."""
    a = np.atleast_2d(np.asarray(persistence, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(innovation_cov, dtype=np.float64))
    d = a.shape[0]
    vec = np.linalg.solve(np.eye(d * d) - np.kron(a, a), sigma.reshape(-1))
    return vec.reshape(d, d)


def tauchen(rho, sigma, n: int, n_std: float, dtype=jnp.float64):
    """Tauchen (1986) discretization of x' = ρ x + σ ε on n points (see the module docstring).

    Traceable in ρ and σ; computed in ``dtype``. Returns (grid, P).
    """
    rho = jnp.asarray(rho, dtype)
    sigma = jnp.asarray(sigma, dtype)
    half_width = n_std * sigma / jnp.sqrt(1 - rho**2)
    grid = jnp.linspace(-half_width, half_width, n, dtype=dtype)
    step = grid[1] - grid[0]
    # z[i, j]: standardized distance from the conditional mean ρ x_i to the point x_j.
    z = (grid[None, :] - rho * grid[:, None]) / sigma
    upper = z + step / (2 * sigma)
    lower = z - step / (2 * sigma)
    # Mass of (lower, upper), taken in the tail nearer zero so that far-tail masses keep their
    # relative precision in float32 (Φ(a) - Φ(b) with both near 1 cancels).
    interior = jnp.where(z > 0, ndtr(-lower) - ndtr(-upper), ndtr(upper) - ndtr(lower))
    first = ndtr(upper[:, :1])
    last = ndtr(-lower[:, -1:])
    transition = jnp.concatenate([first, interior[:, 1:-1], last], axis=1)
    return grid, transition


def stationary_distribution(transition):
    """The invariant distribution π = π P, Σ π = 1, of an irreducible row-stochastic matrix.

    (I - Pᵀ + 1 1ᵀ) π = 1 has π as its unique solution: (I - Pᵀ) π = 0 and 1ᵀ π = 1, and for an
    irreducible P no other vector solves it. A JAX array (a tracer included) is solved in JAX in
    its own dtype, so the function is traceable; anything else in NumPy, in float64.
    """
    if isinstance(transition, jax.Array):
        xp, p = jnp, transition
    else:
        xp, p = np, np.asarray(transition, dtype=np.float64)
    n = p.shape[0]
    lhs = xp.eye(n, dtype=p.dtype) - p.T + xp.ones((n, n), p.dtype)
    return xp.linalg.solve(lhs, xp.ones(n, p.dtype))


def chain_moments(nodes, transition) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, covariance and first-order autocovariance E[x_t x_{t+1}'] - μμ' of the chain."""
    x = np.asarray(nodes, dtype=np.float64)
    pi = stationary_distribution(transition)
    mean = pi @ x
    dev = x - mean
    cov = (dev * pi[:, None]).T @ dev
    autocov = (dev * pi[:, None]).T @ (np.asarray(transition) @ dev)
    return mean, cov, autocov
