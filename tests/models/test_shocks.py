"""The shared numerics (hpc.models.shocks, hpc.models.simulate) against independent computations.

- Tauchen (1986): QuantEcon's ``quantecon.markov.tauchen`` and a scipy construction written here.
- Tauchen and Hussey (1991): the quadrature formula written here with scipy's Gauss–Hermite
  nodes and normal densities.
- Stationary distribution: QuantEcon's ``MarkovChain.stationary_distributions`` (an
  elimination algorithm of its own) and the unit left eigenvector from ``scipy.linalg.eig``.
- Unconditional covariance of a VAR: ``scipy.linalg.solve_discrete_lyapunov``.
- Markov chain paths: inverse-CDF sampling written here in NumPy, and the empirical transition
  frequencies of a long path against P within sampling error.

float64 needs JAX's x64 mode; ``jax.enable_x64`` switches it on only inside a ``with`` block.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from scipy.special import roots_hermite
from scipy.stats import multivariate_normal, norm

from hpc.models.shocks import (
    chain_moments,
    stationary_distribution,
    tauchen,
    tauchen_hussey_var,
    unconditional_covariance,
)
from hpc.models.simulate import markov_chain_path, markov_chain_path_from_draws

# (n, ρ, σ, m): Arellano's calibration, and others that move every argument.
TAUCHEN_CASES = [(51, 0.945, 0.025, 3.0), (7, 0.5, 0.1, 2.0), (11, -0.3, 0.2, 4.0), (25, 0.99, 0.01, 3.0)]
tauchen_jit = jax.jit(tauchen, static_argnums=(2, 3, 4))


def scipy_tauchen(rho, sigma, n, n_std):
    """Tauchen's grid and matrix from scipy.stats.norm, in float64: the normal mass of each
    interval between midpoints, each tail mass taken from the side where it is small (sf above
    the conditional mean, cdf below), so that far-tail entries keep their relative precision."""
    width = n_std * sigma / np.sqrt(1 - rho**2)
    x = np.linspace(-width, width, n)
    cuts = np.concatenate([[-np.inf], (x[:-1] + x[1:]) / 2, [np.inf]])
    lo = (cuts[None, :-1] - rho * x[:, None]) / sigma
    hi = (cuts[None, 1:] - rho * x[:, None]) / sigma
    with np.errstate(invalid="ignore"):
        p = np.where(lo > 0, norm.sf(lo) - norm.sf(hi), norm.cdf(hi) - norm.cdf(lo))
    return x, p


# --- Tauchen ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, rho, sigma, m", TAUCHEN_CASES)
def test_tauchen_matches_quantecon(n, rho, sigma, m):
    qe = pytest.importorskip("quantecon")
    chain = qe.markov.tauchen(n, rho, sigma, mu=0.0, n_std=m)
    with jax.enable_x64(True):
        grid, transition = (np.asarray(a) for a in tauchen_jit(rho, sigma, n, m, jnp.float64))
    np.testing.assert_allclose(grid, chain.state_values, rtol=0, atol=1e-15)
    # QuantEcon's entries are differences of two CDF values in [0, 1], each within a few ulps of
    # 1 (2.2e-16): an absolute error of order 1e-15 whatever the entry (so far-tail entries,
    # which it rounds to 0, are compared in absolute terms here; scipy_tauchen checks them).
    np.testing.assert_allclose(transition, chain.P, rtol=0, atol=1e-14)


@pytest.mark.parametrize("n, rho, sigma, m", TAUCHEN_CASES)
def test_tauchen_matches_scipy_to_relative_precision(n, rho, sigma, m):
    with jax.enable_x64(True):
        grid, transition = (np.asarray(a) for a in tauchen_jit(rho, sigma, n, m, jnp.float64))
    x, p = scipy_tauchen(rho, sigma, n, m)
    np.testing.assert_allclose(grid, x, rtol=0, atol=1e-15)
    normal = p > 1e-300  # below, both are subnormal or zero
    np.testing.assert_allclose(transition[normal], p[normal], rtol=1e-12)
    assert np.all(transition[~normal] < 1e-290)


def test_tauchen_float32_keeps_tail_masses():
    """Far-tail masses keep a relative precision in float32 (Arellano's calibration).

    Φ(b) - Φ(a) with both near 1 would round every upper-tail mass below float32's resolution
    near 1 (6e-8) to 0 or a multiple of 6e-8: a relative error of order 1. Taken in the tail
    nearer zero, a mass of 1e-30 still has a relative error of order z² ε (z ≈ 11 standardized
    distance, ε the float32 rounding of ρ, σ and the grid), about 3e-5. Below 1e-34 float32's
    ndtr itself loses accuracy (1% near its smallest normal number, 1.2e-38), so not those.
    """
    _, p32 = tauchen_jit(0.945, 0.025, 51, 3.0, jnp.float32)
    _, p = scipy_tauchen(0.945, 0.025, 51, 3.0)
    kept = p > 1e-34
    assert (p[kept] < 1e-8).sum() > 500  # many masses below float32's resolution near 1
    np.testing.assert_allclose(np.asarray(p32)[kept], p[kept], rtol=1e-4, atol=0)


# --- Tauchen–Hussey -----------------------------------------------------------------------------


def scipy_tauchen_hussey(a, sigma, n):
    """Tauchen–Hussey (1991), weighting density N(0, Σ): nodes x_k = √2 L ζ_k on the product
    Gauss–Hermite rule (first coordinate slowest), P[j, k] ∝ W_k f(x_k | x_j) / f(x_k | 0)."""
    a, sigma = np.atleast_2d(a), np.atleast_2d(sigma)
    d = a.shape[0]
    zeta, omega = roots_hermite(n)
    index = np.array(np.meshgrid(*[np.arange(n)] * d, indexing="ij")).reshape(d, -1).T
    nodes = np.sqrt(2) * zeta[index] @ np.linalg.cholesky(sigma).T
    weights = np.prod(omega[index] / np.sqrt(np.pi), axis=1)
    base = multivariate_normal(np.zeros(d), sigma).pdf(nodes)
    p = np.array([weights * multivariate_normal(a @ x, sigma).pdf(nodes) / base for x in nodes])
    return nodes, p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("a, sigma, n", [
    (0.9, 0.01, 5),
    (np.array([[0.901, -0.453], [0.495, 0.225]]), np.array([[0.00219, 0.00162], [0.00162, 0.00167]]), 4),
    (np.array([[0.2425, 0.3297], [-0.1984, 0.7576]]), np.array([[0.0052, 0.002], [0.002, 0.0059]]), 3),
])
def test_tauchen_hussey_matches_the_quadrature_formula(a, sigma, n):
    nodes, transition = tauchen_hussey_var(a, sigma, n)
    ref_nodes, ref = scipy_tauchen_hussey(a, sigma, n)
    np.testing.assert_allclose(nodes, ref_nodes, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(transition, ref, rtol=1e-10, atol=1e-15)


def test_unconditional_covariance_solves_the_lyapunov_equation():
    a = np.array([[0.901, -0.453], [0.495, 0.225]])
    sigma = np.array([[0.00219, 0.00162], [0.00162, 0.00167]])
    np.testing.assert_allclose(unconditional_covariance(a, sigma), scipy.linalg.solve_discrete_lyapunov(a, sigma),
                               rtol=1e-12)


# --- stationary distribution --------------------------------------------------------------------


def eigenvector_distribution(p):
    values, left = scipy.linalg.eig(p, left=True, right=False)
    v = np.real(left[:, np.argmin(np.abs(values - 1))])
    return v / v.sum()


@pytest.mark.parametrize("case", ["tauchen", "tauchen_hussey"])
def test_stationary_distribution_numpy_and_traced(case):
    if case == "tauchen":
        _, p = scipy_tauchen(0.945, 0.025, 51, 3.0)
    else:
        _, p = tauchen_hussey_var(np.array([[0.901, -0.453], [0.495, 0.225]]),
                                  np.array([[0.00219, 0.00162], [0.00162, 0.00167]]), 4)
    expected = eigenvector_distribution(p)
    qe = pytest.importorskip("quantecon")
    np.testing.assert_allclose(qe.MarkovChain(p).stationary_distributions[0], expected, rtol=1e-9, atol=1e-15)
    pi = stationary_distribution(p)
    assert pi.dtype == np.float64
    np.testing.assert_allclose(pi, expected, rtol=1e-9, atol=1e-15)
    with jax.enable_x64(True):  # the JAX branch, under jit (a tracer), in the input's dtype
        traced = jax.jit(stationary_distribution)(jnp.asarray(p))
        assert traced.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(traced), expected, rtol=1e-9, atol=1e-15)
    traced32 = np.asarray(jax.jit(stationary_distribution)(jnp.asarray(p, jnp.float32)))
    assert traced32.dtype == np.float32
    # a backward-stable solve: relative error at most about cond(I - Pᵀ + 11ᵀ) ε₃₂ in norm
    n = len(p)
    bound = np.linalg.cond(np.eye(n) - p.T + np.ones((n, n))) * np.finfo(np.float32).eps
    assert np.linalg.norm(traced32 - expected) <= bound * np.linalg.norm(expected)


def test_chain_moments_are_those_of_the_stationary_chain():
    nodes, p = tauchen_hussey_var(np.array([[0.9, 0.1], [0.0, 0.5]]), np.array([[0.01, 0.002], [0.002, 0.02]]), 3)
    pi = eigenvector_distribution(p)
    mean, cov, autocov = chain_moments(nodes, p)
    # E[x] and E[x x'], E[x_t x_{t+1}'] by summing over states and pairs of states
    np.testing.assert_allclose(mean, pi @ nodes, atol=1e-15)
    second = np.einsum("s,si,sj->ij", pi, nodes, nodes)
    cross = np.einsum("s,st,si,tj->ij", pi, p, nodes, nodes)
    np.testing.assert_allclose(cov, second - np.outer(mean, mean), atol=1e-15)
    np.testing.assert_allclose(autocov, cross - np.outer(mean, mean), atol=1e-15)


# --- Markov chain paths -------------------------------------------------------------------------


def numpy_path(p32, initial, draws):
    """Inverse CDF in NumPy: the next state is the number of cumulative probabilities (float32)
    of the current row that lie below the draw, capped at the last state."""
    cdf = np.cumsum(np.asarray(p32, np.float32), axis=1, dtype=np.float32)
    path = [initial]
    for u in np.asarray(draws, np.float32):
        path.append(min(int(np.sum(cdf[path[-1]] < u)), len(cdf) - 1))
    return np.array(path)


def test_path_is_the_inverse_cdf_of_the_draws():
    _, p = tauchen_hussey_var(np.array([[0.901, -0.453], [0.495, 0.225]]),
                              np.array([[0.00219, 0.00162], [0.00162, 0.00167]]), 4)
    key = jax.random.PRNGKey(3)
    path = np.asarray(jax.jit(markov_chain_path, static_argnums=(1, 2))(jnp.asarray(p, jnp.float32), 5, 5000, key))
    draws = jax.random.uniform(key, (4999,), jnp.float32)
    np.testing.assert_array_equal(path, numpy_path(p, 5, draws))
    # the same draws through the draws form
    np.testing.assert_array_equal(np.asarray(markov_chain_path_from_draws(jnp.asarray(p, jnp.float32), 5, draws)),
                                  path)


def test_path_has_the_transition_frequencies_of_p():
    """From 200,000 steps each visited row's frequencies match P within 5 binomial sd."""
    _, p = scipy_tauchen(0.8, 0.1, 5, 2.0)
    path = np.asarray(markov_chain_path(jnp.asarray(p, jnp.float32), 2, 200_000, jax.random.PRNGKey(0)))
    counts = np.zeros((5, 5))
    np.add.at(counts, (path[:-1], path[1:]), 1)
    visits = counts.sum(axis=1, keepdims=True)
    sd = np.sqrt(p * (1 - p) / visits)
    assert np.all(np.abs(counts / visits - p) <= 5 * sd + 1e-12)


def test_float32_and_float64_matrices_give_the_same_path():
    """The guarantee of the float32 CDF: one float64 matrix, passed in either precision."""
    _, p = scipy_tauchen(0.945, 0.025, 51, 3.0)
    key = jax.random.PRNGKey(0)
    path32 = np.asarray(markov_chain_path(jnp.asarray(p, jnp.float32), 25, 200_000, key))
    with jax.enable_x64(True):
        path64 = np.asarray(markov_chain_path(jnp.asarray(p, jnp.float64), 25, 200_000, key))
    np.testing.assert_array_equal(path32, path64)
