"""The data a network learns and the order it sees them in."""

from __future__ import annotations

import numpy as np
import pytest
import train_helpers

from hpc.train.data import batch_indices, load_dataset, permute, synthetic_dataset
from hpc.train.spec import load_train_spec, parse_train_spec


@pytest.fixture(scope="session")
def mccall_store(tmp_path_factory):
    return train_helpers.mccall_store(tmp_path_factory)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 64, 100, 1000, 4097])
def test_the_data_order_is_a_permutation_the_same_in_numpy_and_jax(n):
    import jax
    import jax.numpy as jnp

    for epoch in (0, 1, 7):
        order = permute(np.arange(n), epoch, 3, n)
        assert sorted(order.tolist()) == list(range(n))
        on_device = jax.jit(lambda i, e: permute(i, e, 3, n, jnp))(jnp.arange(n), jnp.uint32(epoch))
        np.testing.assert_array_equal(np.asarray(on_device), order)
    assert n < 5 or not np.array_equal(permute(np.arange(n), 0, 3, n), permute(np.arange(n), 1, 3, n))


def test_every_row_is_seen_once_per_epoch_whatever_the_batch():
    n, batch = 100, 16  # batches straddle epoch ends
    stream = np.concatenate([batch_indices(5, step, batch, n) for step in range(25)])  # 4 epochs
    for epoch in range(4):
        assert sorted(stream[epoch * n:(epoch + 1) * n].tolist()) == list(range(n))
    # a pure function of (seed, step): the same batch asked again, and another seed differs
    np.testing.assert_array_equal(batch_indices(5, 13, batch, n), stream[13 * batch:14 * batch])
    assert not np.array_equal(batch_indices(6, 13, batch, n), stream[13 * batch:14 * batch])


def test_a_batch_larger_than_the_data_wraps_into_the_next_epochs():
    rows = batch_indices(0, 0, 25, 10)
    assert sorted(rows[:10].tolist()) == list(range(10)) and sorted(rows[10:20].tolist()) == list(range(10))


def test_heldout_points_are_parameter_points_never_trained_on(mccall_store, tmp_path):
    spec = load_train_spec(train_helpers.workdir_with_store(mccall_store, tmp_path, train_helpers.MCCALL_SURROGATE))
    data = load_dataset(spec, tmp_path / "results")
    assert data.points == {"train": 64, "heldout": 16, "dropped": 0}
    assert data.x_train.shape == (64 * 21, 3) and data.y_train.shape == (64 * 21, 1)
    assert data.x_heldout.shape == (16 * 21, 3) and data.y_heldout.shape == (16 * 21, 1)
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(data.y_train.std(axis=0), 1, rtol=1e-4)
    x_train = data.x_train * data.x_std + data.x_mean
    x_held = data.x_heldout * data.x_std + data.x_mean
    trained = {tuple(np.round(r, 6)) for r in x_train[:, :2]}
    held = {tuple(np.round(r, 6)) for r in x_held[:, :2]}
    assert len(trained) == 64 and len(held) == 16 and not trained & held
    # rows of a point run over the wage grid, and the targets are the store's values there
    import xarray as xr

    ds = xr.open_zarr(tmp_path / "results" / "mc-data" / "sweep.zarr")
    c, beta = x_held[0, :2]
    expected = ds["value"].sel(c=c, beta=beta, method="nearest").values
    np.testing.assert_array_equal(data.y_heldout[:21, 0], expected.astype(np.float32))
    np.testing.assert_allclose(x_held[:21, 2], ds["wage"].values, rtol=1e-6)


def test_unconverged_points_are_left_out(mccall_store, tmp_path):
    import zarr

    path = train_helpers.workdir_with_store(mccall_store, tmp_path, train_helpers.MCCALL_SURROGATE)
    group = zarr.open_group(str(tmp_path / "results" / "mc-data" / "sweep.zarr"), mode="r+")
    converged = group["converged"][...]
    converged[0, :3] = False
    group["converged"][...] = converged
    data = load_dataset(load_train_spec(path), tmp_path / "results")
    assert data.points["dropped"] == 3 and data.points["train"] + data.points["heldout"] == 77


def test_synthetic_data_of_a_given_size():
    spec = parse_train_spec({**train_helpers.MCCALL_SURROGATE, "data": {
        "synthetic": {"samples": 1000, "features": 5, "outputs": 2, "seed": 1}, "holdout": 0.1}})
    data = load_dataset(spec)
    assert data.x_train.shape == (900, 5) and data.y_train.shape == (900, 2) and data.x_heldout.shape == (100, 5)
    again = synthetic_dataset(spec.data.synthetic, 0.1, spec.seed)
    np.testing.assert_array_equal(again.y_heldout, data.y_heldout)
    assert np.std(data.y_heldout) > 0.1


def test_bianchi_example_spec_names_outputs_and_inputs_of_the_bianchi_model():
    from conftest import REPO

    spec = load_train_spec(REPO / "workflow" / "train" / "bianchi-surrogate.yaml")
    assert spec.data.sweep.model == "bianchi" and spec.data.target == "bond_policy"
    assert "b" in spec.data.inputs and "y" not in spec.data.inputs  # one output per shock state

