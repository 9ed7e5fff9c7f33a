"""Bring your own network and data: a flax module from a file or a package, a Zarr store of one's
own, in memory or streamed from the store; the example that is not an MLP."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import textwrap

import numpy as np
import pytest
import train_helpers
import xarray as xr
import yaml
from conftest import REPO, run_hpc, write_spec
from train_helpers import open_run

from hpc.core.errors import SpecError
from hpc.train.spec import load_train_spec

NET = textwrap.dedent("""
    import flax.linen as nn

    class Tiny(nn.Module):
        hidden: int = 16
        outputs: int = 1

        @nn.compact
        def __call__(self, x):
            return nn.Dense(self.outputs)(nn.tanh(nn.Dense(self.hidden)(x)))

    class Fixed(nn.Module):            # ignores the output count the data implies
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(x)

    class Broken(nn.Module):
        outputs: int = 1

        @nn.compact
        def __call__(self, x):
            return nn.Dense(self.outputs)(x) @ x   # (batch, outputs) @ (batch, features)

    not_a_module = 42
""")

# y = sin(2 u0) + u1 * a: two inputs from one 2-D variable, one from a 1-D variable.
ROWS, CHUNK = 4000, 250


def make_store(path, rows=ROWS, chunk=CHUNK, seed=0):
    rng = np.random.default_rng(seed)
    u = rng.uniform(-1, 1, (rows, 2)).astype(np.float32)
    a = rng.uniform(-1, 1, rows).astype(np.float32)
    y = (np.sin(2 * u[:, 0]) + u[:, 1] * a).astype(np.float32)
    ds = xr.Dataset({"u": (("sample", "k"), u), "a": ("sample", a), "y": ("sample", y)})
    ds.to_zarr(path, mode="w", encoding={v: {"chunks": (chunk,) + ((2,) if v == "u" else ())} for v in ds})
    return ds


def byo_spec(**overrides):
    spec = {
        "name": "byo",
        "data": {"zarr": "data.zarr", "inputs": ["u", "a"], "target": "y", "holdout": 0.2},
        "network": {"module": "net.py:Tiny", "args": {"hidden": 32}},
        "optimizer": {"learning_rate": 1.0e-2},
        "batch_size": 64,
        "steps": 200,
        "eval_every": 50,
        "checkpoint_every": 20,
        "cpu_devices": 2,
    }
    spec.update(overrides)
    return spec


@pytest.fixture(scope="module")
def byo_dir(tmp_path_factory):
    """A folder outside the repository with a network file, a Zarr store and a spec naming both."""
    d = tmp_path_factory.mktemp("byo")
    (d / "net.py").write_text(NET)
    make_store(d / "data.zarr")
    write_spec(d, byo_spec(), "train.yaml")
    return d


def spec_in(d, data=None, network=None, filename="t.yaml", **overrides):
    spec = byo_spec(**overrides)
    if data is not None:
        spec["data"] = data
    if network is not None:
        spec["network"] = network
    return load_train_spec(write_spec(d, spec, filename))


# --- parse time --------------------------------------------------------------------------------


def test_a_network_and_a_store_from_the_specs_folder_whatever_the_working_directory(byo_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths are the spec's folder's, not the cwd's
    spec = load_train_spec(byo_dir / "train.yaml")
    net = spec.network
    assert net["kind"] == "module" and net["outputs_field"] == "outputs" and net["args"] == {"hidden": 32}
    assert net["provenance"] == {"file": str(byo_dir / "net.py"),
                                 "sha256": hashlib.sha256((byo_dir / "net.py").read_bytes()).hexdigest()}
    store = spec.data.store
    assert store["columns"] == {"u": 2, "a": 1} and store["outputs"] == 1 and spec.data.features == 3
    # blocks of 250 rows (the chunks): 16 blocks, round(0.2 x 16) = 3 held out
    assert (store["block_rows"], store["train_rows"], store["heldout_rows"]) == (250, 13 * 250, 3 * 250)
    assert not spec.data.stream  # 4000 rows: far below a quarter of any job's memory


def test_the_network_files_content_is_in_the_digest_its_place_is_not(byo_dir, tmp_path):
    before = load_train_spec(byo_dir / "train.yaml").digest()
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / "net.py").write_text(NET)
    make_store(moved / "data.zarr")
    write_spec(moved, byo_spec(), "train.yaml")
    assert load_train_spec(moved / "train.yaml").digest() != before  # another store path
    spec = byo_spec()
    spec["data"]["zarr"] = str(byo_dir / "data.zarr")
    assert load_train_spec(write_spec(moved, spec, "same-store.yaml")).digest() == before
    (moved / "net.py").write_text(NET + "\n# changed\n")
    assert load_train_spec(moved / "same-store.yaml").digest() != before


def test_a_module_of_an_importable_package(tmp_path):
    make_store(tmp_path / "data.zarr")
    spec = spec_in(tmp_path, network={"module": "hpc.train.network:MLP", "args": {"widths": [8, 8]}})
    provenance = spec.network["provenance"]
    assert provenance["package"] == "hpc.train.network" and (provenance["version"] or provenance["sha256"])


@pytest.mark.parametrize("network, key, words", [
    ({"module": "missing.py:Tiny"}, "network.module", "not found"),
    ({"module": "net.py:Nope"}, "network.module", "no attribute 'Nope'"),
    ({"module": "net.py:not_a_module"}, "network.module", "not a flax.linen Module"),
    ({"module": "no_such_package_xyz.mod:Net"}, "network.module", "no module named 'no_such_package_xyz'"),
    ({"module": "bad.py:Net"}, "network.module", "line 2"),
    ({"module": "net.py:Tiny", "args": {"depth": 3}}, "network.args.depth", "takes no argument"),
    ({"module": "net.py:Fixed"}, "network", "not (64, 1)"),
    ({"module": "net.py:Broken"}, "network", "fails on a (64, 3) batch"),
    ({"module": "net.py:Tiny", "width": 8}, "network.width", "built-in"),
])
def test_a_bad_network_is_refused_at_parse_time_naming_the_key(byo_dir, network, key, words):
    (byo_dir / "bad.py").write_text("import flax.linen as nn\nclass Net(nn.Module) oops:\n    pass\n")
    with pytest.raises(SpecError) as err:
        spec_in(byo_dir, network=network)
    assert err.value.key == key and words in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def _store_with(path, **variables):
    xr.Dataset(variables).to_zarr(path, mode="w")


@pytest.mark.parametrize("case, key, words", [
    ("missing variable", "data.inputs[1]", "'b' is not a variable"),
    ("mismatched lengths", "data.inputs[1]", "runs along 'other' (10 rows), not along the sample dimension"),
    ("non-finite input", "data.inputs[1]", "1 non-finite values"),
    ("non-finite target", "data.target", "2 non-finite values"),
    ("text", "data.target", "not numbers"),
    ("batch larger than the data", "batch_size", "more than the data set's"),
])
def test_bad_data_is_refused_before_training_naming_the_key(tmp_path, case, key, words):
    (tmp_path / "net.py").write_text(NET)
    n = 100
    x, y, z = np.linspace(0, 1, n), np.linspace(1, 2, n), np.zeros(10)
    data = {"zarr": "d.zarr", "inputs": ["x", "b"], "target": "y"}
    if case == "missing variable":
        _store_with(tmp_path / "d.zarr", x=("s", x), y=("s", y))
    elif case == "mismatched lengths":
        _store_with(tmp_path / "d.zarr", x=("s", x), b=("other", z), y=("s", y))
    elif case == "non-finite input":
        _store_with(tmp_path / "d.zarr", x=("s", x), b=("s", np.where(np.arange(n) == 7, np.inf, x)), y=("s", y))
    elif case == "non-finite target":
        _store_with(tmp_path / "d.zarr", x=("s", x), b=("s", x), y=("s", np.where(np.arange(n) % 50 == 3, np.nan, y)))
    elif case == "text":
        _store_with(tmp_path / "d.zarr", x=("s", x), b=("s", x), y=("s", np.array(["a"] * n)))
    else:
        _store_with(tmp_path / "d.zarr", x=("s", x), b=("s", x), y=("s", y))
    with pytest.raises(SpecError) as err:
        spec_in(tmp_path, data=data, batch_size=200 if case.startswith("batch") else 16, cpu_devices=0)
    assert err.value.key == key and words in str(err.value), str(err.value)


def test_the_block_order_is_a_permutation_of_the_training_rows_each_epoch_the_same_in_numpy_and_jax():
    import jax
    import jax.numpy as jnp

    from hpc.train.zarrdata import batch_rows, cut_blocks, order_indices

    blocks = cut_blocks(1000, 40, 0.2, seed=3)  # 25 blocks of 40, 5 held out
    assert len(blocks.train) == 20 and len(blocks.heldout) == 5 and not set(blocks.train) & set(blocks.heldout)
    n = blocks.n_train
    for epoch in (0, 1, 5):
        order = order_indices(np.arange(n), epoch, 7, 20, 40)
        assert sorted(order.tolist()) == list(range(n))
        # a step's rows come from the block the stream walks through: 40 positions, one block
        assert len(set((order[:40] // 40).tolist())) == 1
        jitted = jax.jit(lambda p, e: order_indices(p, e, 7, 20, 40, jnp))(jnp.arange(n), jnp.uint32(epoch))
        np.testing.assert_array_equal(np.asarray(jitted), order)
    # a process's slice of a batch is that slice of the whole batch
    whole = batch_rows(7, 11, 64, blocks)
    np.testing.assert_array_equal(batch_rows(7, 11, 64, blocks, 32, 32), whole[32:])


# --- training ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def in_memory(byo_dir, tmp_path_factory):
    """The run with the training rows in memory (one process, two devices)."""
    d = tmp_path_factory.mktemp("in-memory")
    spec = byo_spec()
    spec["data"] = dict(spec["data"], zarr=str(byo_dir / "data.zarr"), stream=False)
    spec["network"] = dict(spec["network"], module=f"{byo_dir / 'net.py'}:Tiny")
    run_hpc("train", "run", write_spec(d, spec, "train.yaml"), "--cpu-devices", "2", cwd=d)
    return d


@pytest.mark.slow
def test_a_user_network_learns_a_user_data_set_and_records_where_it_came_from(in_memory, byo_dir):
    ds = open_run(in_memory, "byo")
    marker = json.loads((in_memory / "results" / "byo" / "train.json").read_text())
    # the held-out rows' targets, read here from the store: the network beats predicting their mean by 5x
    spec = load_train_spec(in_memory / "train.yaml")
    from hpc.train.zarrdata import cut_blocks

    blocks = cut_blocks(ROWS, CHUNK, 0.2, 0)
    y = xr.open_zarr(byo_dir / "data.zarr")["y"].values
    held = np.concatenate([y[b * CHUNK:(b + 1) * CHUNK] for b in blocks.heldout])
    assert marker["heldout_rmse"] < 0.2 * held.std(), (marker["heldout_rmse"], held.std())
    assert spec.data.store["heldout_rows"] == len(held) and ds.attrs["data"]["heldout_rows"] == len(held)
    network = ds.attrs["network"]
    assert network["module"].endswith("net.py:Tiny")
    assert network["provenance"]["sha256"] == hashlib.sha256((byo_dir / "net.py").read_bytes()).hexdigest()
    assert ds.attrs["data_store"] == str(byo_dir / "data.zarr") and ds.attrs["data_streamed"] is False


@pytest.mark.slow
def test_streamed_from_the_store_on_two_processes_and_resumed_the_losses_are_the_in_memory_ones(in_memory, byo_dir,
                                                                                                tmp_path):
    from test_train_loop import _start, _wait_for_checkpoint

    spec = byo_spec(cpu_devices=0)
    spec["data"] = dict(spec["data"], zarr=str(byo_dir / "data.zarr"), stream=True)
    spec["network"] = dict(spec["network"], module=f"{byo_dir / 'net.py'}:Tiny")
    path = write_spec(tmp_path, spec, "train.yaml")
    proc = _start(path, tmp_path, "--tasks", "2")
    _wait_for_checkpoint(tmp_path, proc, name="byo")
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    result = run_hpc("train", "run", path, "--tasks", "2", cwd=tmp_path)
    assert "resumed from checkpoint" in result.stderr
    streamed, reference = open_run(tmp_path, "byo"), open_run(in_memory, "byo")
    assert streamed.attrs["data_streamed"] is True and streamed.attrs["layout"]["processes"] == 2
    assert [s["reason"] for s in streamed.attrs["segments"]] == ["stopped (SIGTERM)", "completed"]
    # The same rows in the same order at every step, two devices either way (a sum of two
    # gradients is the same whichever device adds): the same losses, bit for bit.
    np.testing.assert_array_equal(streamed["loss"].values, reference["loss"].values)
    np.testing.assert_array_equal(streamed["heldout_rmse"].values, reference["heldout_rmse"].values)


@pytest.fixture(scope="session")
def mccall_store(tmp_path_factory):
    return train_helpers.mccall_store(tmp_path_factory)


@pytest.mark.slow
def test_the_convolutional_example_maps_parameters_to_the_whole_value_function(mccall_store, tmp_path):
    """workflow/train/mccall-conv.yaml's network on the tests' small McCall sweep: (c, β) -> v on the
    21-point wage grid, held-out error under the bound the MLP surrogate meets."""
    example = yaml.safe_load((REPO / "workflow" / "train" / "mccall-conv.yaml").read_text())
    assert load_train_spec(REPO / "workflow" / "train" / "mccall-conv.yaml").data.outputs == 51
    spec = dict(example, name="mc-conv", steps=500, eval_every=250, checkpoint_every=500, resources={},
                data=dict(example["data"], sweep="sweep.yaml"),
                network={"module": str(REPO / "workflow" / "train" / "networks" / "policy_conv.py") + ":PolicyConv",
                         "args": dict(example["network"]["args"], channels=16, blocks=2)})  # smaller, for CI
    path = train_helpers.workdir_with_store(mccall_store, tmp_path, spec)
    run_hpc("train", "run", path, cwd=tmp_path)
    marker = json.loads((tmp_path / "results" / "mc-conv" / "train.json").read_text())
    from hpc.train.data import load_dataset

    data = load_dataset(load_train_spec(path), tmp_path / "results")
    assert data.outputs == 21 and data.features == 2
    assert marker["heldout_rmse"] < train_helpers.HELDOUT_RMSE_BOUND * np.std(data.y_heldout), marker
    from hpc.train.surrogate import load_surrogate

    f = load_surrogate("mc-conv", tmp_path / "results")  # the user's module, rebuilt from its file
    x = data.x_heldout * data.x_std + data.x_mean
    pred = f(c=x[:, 0], beta=x[:, 1])
    assert pred.shape == data.y_heldout.shape
    rmse = float(np.sqrt(np.mean((pred - data.y_heldout) ** 2)))
    assert rmse == pytest.approx(marker["heldout_rmse"], rel=1e-3)


NNX_NET = textwrap.dedent("""
    from flax import nnx

    class NNet(nnx.Module):
        def __init__(self, in_features, outputs, hidden=16, *, rngs):
            self.a = nnx.Linear(in_features, hidden, rngs=rngs)
            self.b = nnx.Linear(hidden, outputs, rngs=rngs)

        def __call__(self, x):
            return self.b(nnx.tanh(self.a(x)))
""")


def test_an_nnx_module_gets_the_feature_and_output_counts_and_trains_through_the_linen_bridge(tmp_path):
    import jax
    import jax.numpy as jnp

    from hpc.train.network import build_network

    (tmp_path / "nnxnet.py").write_text(NNX_NET)
    make_store(tmp_path / "data.zarr")
    spec = spec_in(tmp_path, network={"module": "nnxnet.py:NNet", "args": {"hidden": 8}})
    assert spec.network["inputs_field"] == "in_features" and spec.network["features"] == 3
    net = build_network(spec.network, 1)
    params = net.init(jax.random.key(0), jnp.zeros((1, 3)))["params"]
    assert jax.tree.map(jnp.shape, params) == {"a": {"kernel": (3, 8), "bias": (8,)},
                                              "b": {"kernel": (8, 1), "bias": (1,)}}
    # the bridge's forward pass is the module's: b(tanh(a(x))) written out here
    x = jnp.linspace(-1, 1, 12).reshape(4, 3)
    expected = jnp.tanh(x @ params["a"]["kernel"] + params["a"]["bias"]) @ params["b"]["kernel"] + params["b"]["bias"]
    np.testing.assert_allclose(net.apply({"params": params}, x), expected, rtol=1e-6)
    with pytest.raises(SpecError, match="network.args.depth"):
        spec_in(tmp_path, network={"module": "nnxnet.py:NNet", "args": {"depth": 2}})


# A network file that imports a module and a package of its own from its folder, as `python net.py` would.
NET_WITH_HELPERS = textwrap.dedent("""
    import flax.linen as nn
    from net_blocks import SCALE
    from net_tools import squash

    class Scaled(nn.Module):
        outputs: int = 1

        @nn.compact
        def __call__(self, x):
            return SCALE * squash(nn.Dense(self.outputs)(x))
""")


def write_net_with_helpers(folder, scale: float):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "net.py").write_text(NET_WITH_HELPERS)
    (folder / "net_blocks.py").write_text(f"SCALE = {scale}\n")
    (folder / "net_tools").mkdir(exist_ok=True)
    (folder / "net_tools" / "__init__.py").write_text("import jax.numpy as jnp\n\n\ndef squash(z):\n"
                                                      "    return jnp.tanh(z)\n")
    make_store(folder / "data.zarr", rows=400, chunk=50)


def test_a_network_file_imports_its_own_helpers_and_they_are_in_its_provenance(tmp_path):
    import sys

    import jax
    import jax.numpy as jnp

    from hpc.train.network import build_network

    path_before, specs = list(sys.path), {}
    for name, scale in (("a", 2.0), ("b", 3.0)):  # the same helper names, other values, two folders
        write_net_with_helpers(tmp_path / name, scale)
        specs[name] = spec_in(tmp_path / name, network={"module": "net.py:Scaled"}, cpu_devices=0)
    assert sys.path == path_before and "net_blocks" not in sys.modules and "net_tools" not in sys.modules
    x = jnp.linspace(-1, 1, 12).reshape(4, 3)
    for name, scale in (("a", 2.0), ("b", 3.0)):
        net = build_network(specs[name].network, 1)  # what the training loop and a surrogate build
        params = net.init(jax.random.key(0), x)["params"]
        expected = scale * np.tanh(np.asarray(x) @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
        np.testing.assert_allclose(np.asarray(net.apply({"params": params}, x)), expected, rtol=1e-6)
        provenance = specs[name].network["provenance"]
        assert provenance["sha256"] == hashlib.sha256((tmp_path / name / "net.py").read_bytes()).hexdigest()
        assert provenance["helpers"] == {h: hashlib.sha256((tmp_path / name / h).read_bytes()).hexdigest()
                                         for h in ("net_blocks.py", os.path.join("net_tools", "__init__.py"))}
    # the network files are the same bytes; their helpers (and store paths) tell the runs apart ...
    assert specs["a"].network["provenance"]["sha256"] == specs["b"].network["provenance"]["sha256"]
    # ... and an edited helper is a new digest (checkpoints of the old one are not resumed)
    before = specs["a"].digest()
    (tmp_path / "a" / "net_blocks.py").write_text("SCALE = 2.5\n")
    assert spec_in(tmp_path / "a", network={"module": "net.py:Scaled"}, cpu_devices=0).digest() != before
