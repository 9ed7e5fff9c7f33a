"""The training job: one process of it, in lockstep with the others.

``Trainer`` holds the compiled pieces (initial state, a block of steps, evaluation), built from
the step functions below; ``TrainingRun`` walks one attempt: restore or initialize the state,
compile, train block by block, then record a stop or the finished run.

- One mesh (axis ``data``) over every device of every process. The training rows are replicated
  on every device; each device builds its own share of the global batch from the data order
  (``hpc.train.data.permute``) inside the compiled step, so no batch travels from the host.
  A streamed Zarr data set (hpc.train.zarrdata) instead has each process read, in a background
  thread, the rows of its own devices for the coming block of steps from the store (the same
  data order, computed on the host), handed to the block as one array sharded by rows.
- Parameters and optimizer state are replicated (data parallel: XLA all-reduces the gradients),
  or, with ``shard_params``, each array is split along its largest axis that the device count
  divides (FSDP-style: XLA gathers the parameters for the forward pass and reduce-scatters the
  gradients).
- Steps run in blocks: one compiled call runs up to ``SYNC_EVERY`` steps in a device-side loop
  and returns their losses, so a small network is not held back by one dispatch and one host
  round trip per step. Blocks end at absolute step numbers (multiples of ``SYNC_EVERY``,
  evaluation and checkpoint steps, the last step), so a resumed run cuts its steps into the same
  blocks as an uninterrupted one.
- SIGTERM (Slurm's ``--signal`` before the time limit, preemption, ``scancel --signal=TERM``) sets
  a flag that rides into the next block as an input; the block returns whether any process has
  it, so every process stops after the same block (at most two blocks, 64 steps, after the
  signal), saves a checkpoint and exits with status 143.
  The rerun (Snakemake's retry, or Slurm's requeue) restores the latest checkpoint and goes on:
  the same batches and the same arithmetic, so it ends bitwise where an uninterrupted run on the
  same layout ends.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np

from hpc.core import paths
from hpc.core.files import write_atomic
from hpc.core.timefmt import now_iso
from hpc.execution import compile_cache, distributed
from hpc.train import checkpoint as ckpt_lib
from hpc.train import metrics
from hpc.train.data import Dataset, batch_origin, load_dataset
from hpc.train.network import build_network
from hpc.train.optim import build_optimizer, schedule
from hpc.train.spec import TrainSpec, load_train_spec

EXIT_STOPPED = 143  # 128 + SIGTERM: stopped on request after saving a checkpoint
EVAL_BLOCK = 4096  # rows per evaluation block (rounded to the device count)
TRAIN_SAMPLE = 65536  # training rows evaluated for train_rmse (at most)
# Most steps in one compiled call (a block): losses are fetched, step times measured and the stop
# flag exchanged once per block.
SYNC_EVERY = 32


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class StopRequest:
    """SIGTERM sets it; the training loop reads it once per step."""

    def __init__(self):
        self.requested = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        if not self.requested:
            _log(f"train: SIGTERM on {distributed.node_name()}: saving a checkpoint after the next step")
        self.requested = True


def param_sharding_rule(mesh, shape: tuple[int, ...], shard: bool):
    """Replicated, or (shard) split along the largest axis the device count divides."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    n = mesh.devices.size
    if shard and shape:
        for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
            if shape[axis] % n == 0 and shape[axis] >= n:
                spec = [None] * len(shape)
                spec[axis] = "data"
                return NamedSharding(mesh, P(*spec))
    return NamedSharding(mesh, P())


def build_mesh(batch_size: int):
    """One mesh (axis ``data``) over every device of every process, and its two shardings:
    replicated, and split by rows."""
    import jax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()), ("data",))
    n_devices = mesh.devices.size
    if batch_size % n_devices:
        raise RuntimeError(f"a global batch of {batch_size} does not split over {n_devices} devices; "
                           f"set batch_size to a multiple of {n_devices}")
    return mesh, NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))


def init_function(network, tx, features: int):
    """The training state at step 0 from a random key: step, parameters, optimizer state."""
    import jax.numpy as jnp

    def init(key):
        params = network.init(key, jnp.zeros((1, features), jnp.float32))["params"]
        return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}

    return init


def device_batch_function(spec: TrainSpec, dataset: Dataset, n_devices: int):
    """Each device's rows of the global batch at a batch origin (epoch0, offset): positions
    offset + d·b ... of the epoch stream (hpc.train.data), gathered inside the compiled step."""
    import jax
    import jax.numpy as jnp

    local_batch = spec.batch_size // n_devices
    seed, n_train = spec.seed, dataset.n_train

    def device_batch(x_all, y_all, epoch0, offset):
        first = offset + jax.lax.axis_index("data") * local_batch
        position = first + jnp.arange(local_batch, dtype=jnp.int32)
        epoch = epoch0 + position // n_train
        index = dataset.order(position % n_train, epoch, seed, jnp)
        return x_all[index], y_all[index]

    return device_batch


def given_batch(x, y):
    """A streamed step's rows: each device's share arrives as its block of the batch."""
    return x, y


def loss_function(network):
    """Mean squared error of the network on a batch (standardized targets)."""
    import jax.numpy as jnp

    def batch_loss(params, x, y):
        return jnp.mean((network.apply({"params": params}, x) - y) ** 2)

    return batch_loss


def data_parallel_gradients(network, mesh, device_batch, batch_specs):
    """(gradients, loss, any process stopping) with replicated parameters: each device's gradient
    on its rows, then one all-reduce of one flat vector (gradients, loss and the stop flag
    together): one collective per step."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from jax.sharding import PartitionSpec as P

    batch_loss = loss_function(network)
    n_devices = mesh.devices.size

    def device_gradients(params, *args):
        *batch_args, stop = args
        loss, grads = jax.value_and_grad(batch_loss)(params, *device_batch(*batch_args))
        flat, unflatten = ravel_pytree(grads)
        packed = jnp.concatenate([flat, loss[None], stop.astype(flat.dtype)])
        total = jax.lax.psum(packed, "data")
        return unflatten(total[:-2] / n_devices), total[-2] / n_devices, total[-1] > 0

    return jax.shard_map(device_gradients, mesh=mesh, in_specs=(P(), *batch_specs, P("data")),
                         out_specs=(P(), P(), P()), check_vma=False)


def sharded_gradients(network, mesh, device_batch, batch_specs):
    """(gradients, loss, any process stopping), FSDP-style: the batch is sharded, the parameters
    too; XLA gathers and scatters."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    batch_loss = loss_function(network)
    make_batch = jax.shard_map(device_batch, mesh=mesh, in_specs=tuple(batch_specs),
                               out_specs=(P("data"), P("data")), check_vma=False)

    def gradients(params, *args):
        *batch_args, stop = args
        x, y = make_batch(*batch_args)
        loss, grads = jax.value_and_grad(batch_loss)(params, x, y)
        return grads, loss, jnp.any(stop)

    return gradients


def train_step_function(network, tx, mesh, spec: TrainSpec, dataset: Dataset):
    """One update from the batch at (epoch0, offset) (``train_step(state, x_all, y_all, epoch0,
    offset, stop)``), or, streamed, from the batch given (``train_step(state, x, y, stop)``): the new
    state and its [loss, any process stopping] report."""
    import jax.numpy as jnp
    import optax
    from jax.sharding import PartitionSpec as P

    if dataset.streamed:
        device_batch, batch_specs = given_batch, (P("data"), P("data"))
    else:
        device_batch, batch_specs = device_batch_function(spec, dataset, mesh.devices.size), (P(), P(), P(), P())
    gradients = (sharded_gradients if spec.shard_params else data_parallel_gradients)(network, mesh, device_batch,
                                                                                         batch_specs)

    def train_step(state, *args):
        grads, loss, any_stop = gradients(state["params"], *args)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        # (loss, stop) in one small array: a block's reports come back in one transfer.
        report = jnp.stack([loss.astype(jnp.float32), any_stop.astype(jnp.float32)])
        return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, report

    return train_step


def train_block_function(train_step, batch_size: int, n_train: int):
    """``count`` (<= SYNC_EVERY) steps from the batch origin (epoch0, offset), in one call: the
    new state and a (SYNC_EVERY, 2) array whose first ``count`` rows are the steps' reports."""
    import jax
    import jax.numpy as jnp

    def train_block(state, x_all, y_all, epoch0, offset, count, stop):
        def body(i, carry):
            state, reports, epoch, offset = carry
            state, report = train_step(state, x_all, y_all, epoch, offset, stop)
            offset = offset + batch_size  # the next step's origin, kept within int32
            return state, reports.at[i].set(report), epoch + offset // n_train, offset % n_train

        reports = jnp.zeros((SYNC_EVERY, 2), jnp.float32)
        state, reports, _, _ = jax.lax.fori_loop(0, count, body, (state, reports, epoch0, offset))
        return state, reports

    return train_block


def streamed_block_function(train_step):
    """``count`` (<= SYNC_EVERY) steps on the batches given, (SYNC_EVERY, batch, ...) arrays whose
    first ``count`` rows are the steps' batches: the new state and the steps' reports."""
    import jax
    import jax.numpy as jnp

    def train_block(state, xs, ys, count, stop):
        def body(i, carry):
            state, reports = carry
            state, report = train_step(state, xs[i], ys[i], stop)
            return state, reports.at[i].set(report)

        reports = jnp.zeros((SYNC_EVERY, 2), jnp.float32)
        return jax.lax.fori_loop(0, count, body, (state, reports))

    return train_block


def evaluation_function(network, dataset: Dataset):
    """Over blocks of rows (padding masked out): the sum of squared errors in model units, the
    largest error, and the sum of squared errors on standardized targets."""
    import jax
    import jax.numpy as jnp

    y_mean = jnp.asarray(dataset.y_mean, jnp.float32)
    y_std = jnp.asarray(dataset.y_std, jnp.float32)

    def evaluate(params, x_blocks, y_blocks, mask_blocks):
        def block(carry, rows):
            x, y, mask = rows
            pred = network.apply({"params": params}, x) * y_std + y_mean
            err = jnp.where(mask[:, None], pred - y, 0.0)
            return (carry[0] + jnp.sum(err ** 2), jnp.maximum(carry[1], jnp.max(jnp.abs(err))),
                    carry[2] + jnp.sum((err / y_std) ** 2)), None

        zero = jnp.zeros((), jnp.float32)
        out, _ = jax.lax.scan(block, (zero, zero, zero), (x_blocks, y_blocks, mask_blocks))
        return out

    return evaluate


class Trainer:
    """The compiled pieces of a run (initial state, a block of steps, evaluation) and its data on
    the devices."""

    def __init__(self, spec: TrainSpec, dataset: Dataset):
        import jax

        self.spec, self.dataset = spec, dataset
        self.mesh, self.replicated, self.rows = build_mesh(spec.batch_size)
        self.n_devices = self.mesh.devices.size
        self.network = build_network(spec.network, dataset.outputs)
        self.tx = build_optimizer(spec.optimizer, spec.steps)
        self.schedule = schedule(spec.optimizer, spec.steps)
        self._lay_out_state()
        self._block = self._jit_block()
        self._evaluate = jax.jit(evaluation_function(self.network, dataset), out_shardings=self.replicated)
        self._place_data()
        self.compiled_block = None

    def _lay_out_state(self) -> None:
        """The state's shardings (param_sharding_rule), its abstract shape and the jitted init."""
        import jax

        init = init_function(self.network, self.tx, self.dataset.features)
        abstract = jax.eval_shape(init, jax.random.key(0))
        self.state_sharding = jax.tree.map(lambda a: param_sharding_rule(self.mesh, a.shape, self.spec.shard_params),
                                           abstract)
        self.abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                           abstract, self.state_sharding)
        self._init = jax.jit(init, out_shardings=self.state_sharding)

    def _jit_block(self):
        import jax

        train_step = train_step_function(self.network, self.tx, self.mesh, self.spec, self.dataset)
        r = self.replicated
        if self.dataset.streamed:
            from jax.sharding import NamedSharding
            from jax.sharding import PartitionSpec as P

            self.step_rows = NamedSharding(self.mesh, P(None, "data"))
            return jax.jit(streamed_block_function(train_step), donate_argnums=(0,),
                           in_shardings=(self.state_sharding, self.step_rows, self.step_rows, r, self.rows),
                           out_shardings=(self.state_sharding, r))
        block = train_block_function(train_step, self.spec.batch_size, self.dataset.n_train)
        return jax.jit(block, donate_argnums=(0,), in_shardings=(self.state_sharding, r, r, r, r, r, self.rows),
                       out_shardings=(self.state_sharding, r))

    def _place_data(self) -> None:
        """Training rows replicated; held-out rows and a fixed sample of training rows in blocks;
        the two stop flags (every local device's row alike)."""
        import jax

        dataset = self.dataset
        n_train = dataset.n_train
        sample = np.sort(np.random.default_rng([self.spec.seed, 0x7E57]).permutation(n_train)[:min(n_train, TRAIN_SAMPLE)])
        if dataset.streamed:
            self.x_train = self.y_train = None
            x_sample, y_sample = dataset.store.rows(sample)
        else:
            self.x_train = self._place(dataset.x_train, self.replicated)
            self.y_train = self._place(dataset.y_train, self.replicated)
            x_sample, y_sample = dataset.x_train[sample], dataset.y_train[sample]
        # a Zarr data set's held-out rows are read block by block at each evaluation
        self.heldout = None if dataset.store is not None else self._blocks(dataset.x_heldout, dataset.y_heldout)
        y_sample = y_sample * dataset.y_std + dataset.y_mean
        self.train_sample = self._blocks(x_sample, y_sample.astype(np.float32))
        self.prefetch = None
        stop_local = np.zeros(len(jax.local_devices()), bool)
        self.stop_flags = {flag: jax.make_array_from_process_local_data(self.rows, stop_local | flag)
                           for flag in (False, True)}

    def _place(self, array: np.ndarray, sharding):
        import jax

        return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

    def _blocks(self, x: np.ndarray, y: np.ndarray):
        """Rows padded into (blocks, rows per block, ...) arrays, rows sharded over the devices."""
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        n = len(x)
        size = min(EVAL_BLOCK, n)
        size = math.ceil(size / self.n_devices) * self.n_devices
        blocks = math.ceil(n / size)
        pad = blocks * size - n
        mask = np.r_[np.ones(n, bool), np.zeros(pad, bool)].reshape(blocks, size)
        xb = np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)]).reshape(blocks, size, -1)
        yb = np.concatenate([y, np.zeros((pad, y.shape[1]), y.dtype)]).reshape(blocks, size, -1)
        sharding = NamedSharding(self.mesh, P(None, "data"))
        return self._place(xb, sharding), self._place(yb, sharding), self._place(mask, sharding), n * y.shape[1]

    def init_state(self):
        import jax

        return self._init(jax.random.key(self.spec.seed))

    def compile(self, state):
        """Compile the block ahead of time (so step times are run times)."""
        zero = np.int32(0)
        if self.dataset.streamed:
            import jax

            shape = (SYNC_EVERY, self.spec.batch_size)
            xs = jax.ShapeDtypeStruct((*shape, self.dataset.features), np.float32, sharding=self.step_rows)
            ys = jax.ShapeDtypeStruct((*shape, self.dataset.outputs), np.float32, sharding=self.step_rows)
            self.compiled_block = self._block.lower(state, xs, ys, zero, self.stop_flags[False]).compile()
            return
        self.compiled_block = self._block.lower(state, self.x_train, self.y_train, zero, zero, zero,
                                                self.stop_flags[False]).compile()

    def start_stream(self, blocks) -> None:
        """Streamed data: prefetch the batches of ``blocks`` ((first_step, count), in the order the
        loop runs them) in a background thread."""
        from hpc.train.zarrdata import Prefetcher

        if self.dataset.streamed:
            self.prefetch = Prefetcher(self._host_batch, blocks)

    def _local_row_ranges(self) -> list[tuple[int, int]]:
        """The rows of the global batch this process's devices hold: (start, stop) per local device."""
        import jax

        local = self.spec.batch_size // self.n_devices
        mine = {d.id for d in jax.local_devices()}
        return [(i * local, (i + 1) * local) for i, d in enumerate(self.mesh.devices.flat) if d.id in mine]

    def _host_batch(self, first_step: int, count: int) -> dict:
        """This process's rows of steps first_step ... first_step + count - 1, read from the store:
        {row range: (x, y)} with (SYNC_EVERY, rows, ...) arrays, the steps after ``count`` zero."""
        from hpc.train.zarrdata import batch_rows

        dataset, spec = self.dataset, self.spec
        out = {}
        for start, stop in self._local_row_ranges():
            x = np.zeros((SYNC_EVERY, stop - start, dataset.features), np.float32)
            y = np.zeros((SYNC_EVERY, stop - start, dataset.outputs), np.float32)
            for i in range(count):
                index = batch_rows(spec.seed, first_step + i, spec.batch_size, dataset.blocks, start, stop - start)
                x[i], y[i] = dataset.store.rows(index)
            out[start] = (x, y)
        return out

    def _place_batch(self, host: dict):
        import jax

        shape = (SYNC_EVERY, self.spec.batch_size)

        def piece(which: int, width: int):
            return jax.make_array_from_callback((*shape, width), self.step_rows,
                                                lambda index: host[index[1].start or 0][which])

        return piece(0, self.dataset.features), piece(1, self.dataset.outputs)

    def run_block(self, state, first_step: int, count: int, stop: bool):
        """Steps ``first_step`` ... ``first_step + count - 1``: (new state, their [loss, any process
        stopping] rows as numpy, waiting for them)."""
        if not 0 < count <= SYNC_EVERY:
            raise ValueError(f"a block runs 1 to {SYNC_EVERY} steps, not {count}")
        if self.dataset.streamed:
            xs, ys = self._place_batch(self.prefetch.get(first_step, count))
            state, reports = self.compiled_block(state, xs, ys, np.int32(count), self.stop_flags[bool(stop)])
            return state, np.asarray(reports)[:count]
        epoch0, offset = batch_origin(first_step, self.spec.batch_size, self.dataset.n_train)
        state, reports = self.compiled_block(state, self.x_train, self.y_train, np.int32(epoch0), np.int32(offset),
                                             np.int32(count), self.stop_flags[bool(stop)])
        return state, np.asarray(reports)[:count]

    def _heldout_sums(self, state) -> tuple[float, float, float, int]:
        """(sum of squared errors, largest error, standardized sum, values) over the held-out rows;
        a Zarr data set's read from the store in blocks of EVAL_BLOCK rows."""
        if self.heldout is not None:
            xb, yb, mb, count = self.heldout
            return (*(float(v) for v in self._evaluate(state["params"], xb, yb, mb)), count)
        sq = worst = sq_std = 0.0
        count = 0
        for x, y in self.dataset.store.heldout_blocks(EVAL_BLOCK):
            xb, yb, mb, n = self._blocks(x, y)
            a, b, c = (float(v) for v in self._evaluate(state["params"], xb, yb, mb))
            sq, worst, sq_std, count = sq + a, max(worst, b), sq_std + c, count + n
        return sq, worst, sq_std, count

    def evaluate(self, state) -> dict[str, float]:
        out = {}
        for prefix in ("heldout", "train"):
            if prefix == "heldout":
                sq, worst, sq_std, count = self._heldout_sums(state)
            else:
                xb, yb, mb, count = self.train_sample
                sq, worst, sq_std = (float(v) for v in self._evaluate(state["params"], xb, yb, mb))
            out[f"{prefix}_rmse"] = math.sqrt(sq / count)
            out[f"{prefix}_max_error"] = worst
            if prefix == "heldout":
                out["heldout_loss"] = sq_std / count
        return out


def host_params(state) -> dict:
    """The parameters as numpy arrays on every process (gathered when sharded)."""
    import jax
    from jax.experimental import multihost_utils

    def fetch(a):
        if a.is_fully_addressable:
            return np.asarray(a)
        if a.is_fully_replicated:
            return np.asarray(a.addressable_shards[0].data)
        return np.asarray(multihost_utils.process_allgather(a, tiled=True))

    return jax.tree.map(fetch, state["params"])


def _already_complete(spec: TrainSpec, marker: Path) -> bool:
    try:
        return json.loads(Path(marker).read_text()).get("digest") == spec.digest()
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def run_training(spec_file: str | Path, marker: str | Path | None = None, stop: StopRequest | None = None,
                 point: str | None = None) -> int:
    """Train (or resume) the run ``spec_file`` describes, in this process (one of the job's).

    Returns 0 when the run is complete (marker written), EXIT_STOPPED when it stopped on SIGTERM
    after saving a checkpoint.
    """
    stop = stop or StopRequest()
    stop.install()
    if point:  # one point of a sweep of training runs: an ordinary run of its expanded spec
        from hpc.train.sweep import load_train_point

        spec = load_train_point(spec_file, point)
    else:
        spec = load_train_spec(spec_file)
    launch = start_job()
    root = paths.root_of_marker(marker, spec.name) if marker else paths.RESULTS_ROOT
    compile_cache.enable(root)
    marker = Path(marker) if marker else paths.train_marker_path(spec.name, root)
    if _already_complete(spec, marker):
        _log(f"train {spec.name}: already complete ({marker}); nothing to do")
        return 0
    run = TrainingRun(spec, root, launch)
    run.train(stop)
    return run.stopped() if run.stopping else run.finish(marker)


def start_job() -> distributed.Launch:
    """Join the job's other processes, if any."""
    import jax

    # JAX's own preemption notifier would take SIGTERM from us; the stop flag does its work.
    jax.config.update("jax_enable_preemption_service", False)
    return distributed.start(distributed.detect_launch())


def block_end(t: int, spec: TrainSpec) -> int:
    """Where the block from step ``t`` ends: at the next multiple of SYNC_EVERY, evaluation or
    checkpoint step, or the last step. A function of ``t`` alone, so every process (and a resumed
    run) cuts alike."""
    return min(spec.steps, (t // SYNC_EVERY + 1) * SYNC_EVERY, (t // spec.eval_every + 1) * spec.eval_every,
               (t // spec.checkpoint_every + 1) * spec.checkpoint_every)


def block_plan(t: int, spec: TrainSpec):
    """The blocks (first step, count) from step ``t`` to the last, as the loop cuts them."""
    while t < spec.steps:
        end = block_end(t, spec)
        yield t, end - t
        t = end


class TrainingRun:
    """One attempt at a run in this process: restore or initialize the state and compile; then
    train block by block (``train``: evaluations and per-step rows into train.zarr on process 0,
    checkpoints); then record the stop (``stopped``) or the finished run (``finish``)."""

    def __init__(self, spec: TrainSpec, root: Path, launch: distributed.Launch):
        import jax

        self.spec, self.root, self.launch = spec, root, launch
        self.lead = jax.process_index() == 0
        self.who = distributed.where() if launch.method != "single" else distributed.node_name()
        self.dataset = load_dataset(spec, root)
        self.trainer = Trainer(spec, self.dataset)
        self.checkpoints = ckpt_lib.Checkpoints(paths.checkpoint_dir(spec.name, root), keep=spec.keep_checkpoints)
        self.layout = {"processes": jax.process_count(), "devices": self.trainer.n_devices,
                       "device_kind": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
                       "shard_params": spec.shard_params}
        self.restored_from = self.checkpoints.latest_step()
        self.state = self._restore_or_init()
        self.t = int(self.restored_from or 0)  # updates done
        compile_s = self._compile()
        self.trainer.start_stream(block_plan(self.t, spec))
        self.group = self._open_metrics() if self.lead else None
        # The record saved with each checkpoint.
        self.meta = {"digest": spec.digest(), "name": spec.name, "normalization": self.dataset.normalization(),
                     "data": self.dataset.describe(), "network": spec.network, "layout": self.layout}
        self.pending: dict[str, list] = {"loss": [], "step_time": []}  # rows of steps not yet in train.zarr
        self.flushed_to = self.t  # steps whose rows are in train.zarr
        self.segment = {"first_step": self.t + 1, "start": now_iso(), "hosts": sorted({distributed.node_name()}),
                        "restored_from": self.restored_from, "compile_s": round(compile_s, 3), **self.layout}
        self.stopping = False
        self.train_s = 0.0
        self.last_eval: dict | None = None

    def _restore_or_init(self):
        """The latest checkpoint's state (refused if of another spec), else the initial state."""
        latest, spec = self.restored_from, self.spec
        if latest is None:
            return self.trainer.init_state()
        meta = self.checkpoints.read_meta(latest)
        if meta.get("digest") != spec.digest():
            raise RuntimeError(f"{self.checkpoints.directory} holds checkpoints of another spec (digest "
                               f"{meta.get('digest')}, this spec {spec.digest()}); choose a new name or delete "
                               f"results/{spec.name}")
        state, meta = self.checkpoints.restore(latest, self.trainer.abstract_state)
        if meta.get("layout", {}).get("devices") != self.layout["devices"]:
            _log(f"train: resuming on {self.layout['devices']} devices a run saved on {meta['layout'].get('devices')}: "
                 "the result is not bitwise that of an uninterrupted run")
        return state

    def _compile(self) -> float:
        """Compile the block of steps; returns the seconds it took."""
        t0 = time.perf_counter()
        self.trainer.compile(self.state)
        compile_s = time.perf_counter() - t0
        spec, dataset, latest = self.spec, self.dataset, self.restored_from
        _log(f"train {spec.name}: {self.who}: {self.trainer.n_devices} devices, {dataset.n_train} training rows, "
             f"{len(dataset.x_heldout)} held-out rows, step {self.t} of {spec.steps}"
             + (f" (resumed from checkpoint {latest})" if latest else "") + f", compiled in {compile_s:.1f} s")
        return compile_s

    def _open_metrics(self):
        spec, dataset = self.spec, self.dataset
        return metrics.open_or_create(paths.train_store_path(spec.name, self.root), spec, dataset.units, {
            "data": dataset.describe(), "normalization": dataset.normalization(), "layout": self.layout,
            "batch_size": spec.batch_size, "steps": spec.steps,
            # where the network came from: a user's module names its file and sha256 (or package and version)
            "network": {k: v for k, v in spec.network.items() if k != "base"},
            **({"data_store": spec.data.zarr, "data_streamed": dataset.streamed} if spec.data.kind == "zarr" else {}),
        })

    def train(self, stop: StopRequest) -> None:
        """Blocks of steps up to the last step, or until a block reports that a process was asked
        to stop; then wait for the checkpoints and close this attempt's segment."""
        if self.t == 0:
            self.evaluate(0)
        while self.t < self.spec.steps and not self.stopping:
            self._run_block(block_end(self.t, self.spec), stop.requested)
        if self.trainer.prefetch is not None:
            self.trainer.prefetch.close()
            self.segment["prefetch_wait_s"] = round(self.trainer.prefetch.wait_s, 3)
            self.segment["store_read_s"] = round(self.dataset.store.read_s, 3)
        self.checkpoints.wait()
        self.segment.update({"last_step": self.t, "end": now_iso(), "train_s": round(self.train_s, 3),
                             "reason": "stopped (SIGTERM)" if self.stopping else "completed"})
        parts = distributed.gather(self.launch, {"host": distributed.node_name()})
        self.segment["hosts"] = sorted({p["host"] for p in parts})

    def _run_block(self, end: int, stop_requested: bool) -> None:
        """Steps t+1 ... ``end``; then evaluate and save where those fall due (save too when stopping)."""
        t, spec = self.t, self.spec
        block_start = time.perf_counter()
        self.state, reports = self.trainer.run_block(self.state, t, end - t, stop_requested)
        elapsed = time.perf_counter() - block_start
        self.train_s += elapsed
        self.pending["loss"].extend(reports[:, 0].tolist())
        self.pending["step_time"].extend([elapsed / (end - t)] * (end - t))
        self.t = end
        self.stopping = bool(reports[:, 1].any())
        if end % spec.eval_every == 0 or end == spec.steps:
            self.last_eval = self.evaluate(end)
        if self.stopping or end % spec.checkpoint_every == 0 or end == spec.steps:
            self.save(end)

    def flush(self, upto: int) -> None:
        """Write the pending rows of the steps up to ``upto`` into train.zarr (process 0)."""
        done = upto - self.flushed_to
        if self.lead and done > 0:
            first = self.flushed_to + 1
            times = np.asarray(self.pending["step_time"][:done], np.float64)
            counts = np.arange(first - 1, upto)  # optax counts updates from 0
            lrs = np.broadcast_to(np.asarray(self.trainer.schedule(counts), np.float32), counts.shape)
            metrics.write_steps(self.group, first, {
                "loss": np.asarray(self.pending["loss"][:done], np.float32),
                "learning_rate": lrs, "step_time": times,
                "samples_per_second": self.spec.batch_size / np.maximum(times, 1e-12)})
        del self.pending["loss"][:done], self.pending["step_time"][:done]
        self.flushed_to = upto

    def evaluate(self, t: int) -> dict:
        """Held-out and training-sample errors after ``t`` steps (written and logged by process 0)."""
        values = self.trainer.evaluate(self.state)
        if not self.lead:
            return values
        metrics.write_eval(self.group, t, values)
        _log(f"train {self.spec.name}: step {t}: held-out RMSE {values['heldout_rmse']:.4g}, max error "
             f"{values['heldout_max_error']:.4g} {self.dataset.units}".rstrip()
             + f" (train RMSE {values['train_rmse']:.4g})")
        return values

    def save(self, t: int) -> None:
        """Flush the rows up to ``t``, then checkpoint (every process, collectively)."""
        self.flush(t)
        self.checkpoints.save(t, self.state, dict(self.meta, step=t))

    def stopped(self) -> int:
        """Record the stopped attempt; EXIT_STOPPED once every process has."""
        if self.lead:
            self.group.attrs["segments"] = [*self.group.attrs.get("segments", []), self.segment]
        _log(f"train {self.spec.name}: {self.who}: stopped after step {self.t} on SIGTERM; checkpoint {self.t} saved; "
             "rerun to resume")
        self.checkpoints.close()
        distributed.barrier(self.launch, f"train-{self.spec.name}-stopped")
        return EXIT_STOPPED

    def finish(self, marker: Path) -> int:
        """The finished run: on process 0, its summary and the surrogate's cost into train.zarr's
        attributes and the marker; 0 once every process is done."""
        if self.last_eval is None:  # a rerun of a finished run: nothing trained, evaluate the final state
            self.last_eval = self.trainer.evaluate(self.state)
        params = host_params(self.state)
        self.checkpoints.close()
        if self.lead:
            from hpc.train.surrogate import compare_cost

            cost = compare_cost(self.spec, self.dataset, self.trainer.network, params)
            summary = self._summary(cost)
            self._record_final(summary, cost)
            metrics.finalize(paths.train_store_path(self.spec.name, self.root))
            write_atomic(marker, json.dumps(summary, indent=1))
            units = f" {self.dataset.units}" if self.dataset.units else ""
            _log(f"train {self.spec.name}: done: held-out RMSE {summary['heldout_rmse']:.4g}{units}, max error "
                 f"{summary['heldout_max_error']:.4g}{units}; {summary['samples_per_second']:.4g} samples/s; "
                 f"surrogate {cost['surrogate_s_per_point']:.3g} s per point against "
                 f"{cost['model_s_per_point']:.3g} s per {cost['cost_reference']}")
        distributed.barrier(self.launch, f"train-{self.spec.name}-done")
        return 0

    def _summary(self, cost: dict) -> dict:
        """The marker's body: the final errors, throughput over every attempt, the cost comparison."""
        spec, group, last = self.spec, self.group, self.last_eval
        step_times = group["step_time"][...]
        return {
            "name": spec.name, "digest": spec.digest(), "steps": spec.steps, "batch_size": spec.batch_size,
            "final_loss": float(group["loss"][spec.steps - 1]),
            "heldout_rmse": last["heldout_rmse"], "heldout_max_error": last["heldout_max_error"],
            "train_rmse": last["train_rmse"], "units": self.dataset.units,
            # Over every step of every attempt: compile, evaluation and checkpoint time left out.
            "samples_per_second": spec.batch_size * spec.steps / float(np.nansum(step_times)),
            "median_step_time": float(np.nanmedian(step_times)),
            "checkpoint": str(paths.checkpoint_dir(spec.name, self.root) / str(spec.steps)),
            **cost, "layout": self.layout,
        }

    def _record_final(self, summary: dict, cost: dict) -> None:
        """train.zarr's attributes once finished: the last segment, the summary, the report's headline."""
        group, dataset = self.group, self.dataset
        group.attrs.update({
            "segments": [*group.attrs.get("segments", []), self.segment], "completed": now_iso(), "final": summary,
            # The report's headline: the surrogate's error off the training points, and its cost.
            "target": self.spec.data.target or "synthetic function", "target_units": dataset.units,
            "heldout_points": dataset.points["heldout"],
            "surrogate_heldout_rmse": summary["heldout_rmse"], "surrogate_heldout_max_error": summary["heldout_max_error"],
            "surrogate_seconds_per_point": cost["surrogate_s_per_point"], "model_seconds_per_point": cost["model_s_per_point"],
            "surrogate_speedup": cost["speedup"], "cost_reference": cost["cost_reference"],
        })
