"""hpc.models.simulate's order statistics, against NumPy's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpc.models.simulate import masked_median


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masked_median_is_numpys_median_of_the_masked_values(dtype):
    rng = np.random.default_rng(7)
    cases = []
    for n, share in [(1, 1.0), (2, 1.0), (101, 0.3), (1000, 0.05), (1000, 0.5), (999, 0.9)]:
        values = rng.normal(size=n).astype(dtype)
        cases.append((values, rng.random(n) < share))
    ties = np.round(rng.normal(size=400), 1).astype(dtype)  # many equal values: middle ones tied or not
    cases += [(ties, rng.random(400) < 0.5), (ties, np.ones(400, bool)), (ties[:2].repeat(3), np.ones(6, bool))]
    cases.append((np.array([-3.0, -1.0, 2.0, 5.0], dtype), np.array([True, True, True, True])))  # even: -0.5 ... 0.5
    with jax.enable_x64(dtype == np.float64):
        for values, mask in cases:
            if not mask.any():
                mask[0] = True
            got = float(jax.jit(masked_median)(jnp.asarray(values), jnp.asarray(mask)))
            want = np.median(values[mask].astype(np.float64))
            # the mean of the two middle values in the working precision, as NumPy's would be
            assert got == pytest.approx(want, rel=float(np.finfo(dtype).eps), abs=float(np.finfo(dtype).tiny)), (values[mask], got)
        empty = jax.jit(masked_median)(jnp.asarray(cases[2][0]), jnp.zeros(101, bool))
        assert np.isnan(float(empty))
        # batched as a sweep's points are: each row its own median
        values = rng.normal(size=(5, 300)).astype(dtype)
        mask = rng.random((5, 300)) < 0.4
        got = np.asarray(jax.jit(jax.vmap(masked_median))(jnp.asarray(values), jnp.asarray(mask)))
        want = [np.median(v[m].astype(np.float64)) for v, m in zip(values, mask)]
        np.testing.assert_allclose(got, want, rtol=float(np.finfo(dtype).eps))
