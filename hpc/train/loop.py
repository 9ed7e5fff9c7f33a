"""The training job: one process of it, in lockstep with the others.

- One mesh (axis ``data``) over every device of every process. The training rows are replicated
  on every device; each device builds its own share of the global batch from the data order
  (``hpc.train.data.permute``) inside the compiled step, so no batch travels from the host.
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
from hpc.execution import compile_cache, distributed
from hpc.sweep import store
from hpc.train import checkpoint as ckpt_lib
from hpc.train import metrics
from hpc.train.data import Dataset, batch_origin, load_dataset, permute
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


class Trainer:
    """The compiled pieces of a run: initial state, one training step, evaluation."""

    def __init__(self, spec: TrainSpec, dataset: Dataset):
        import jax
        import jax.numpy as jnp
        import optax
        from jax.flatten_util import ravel_pytree
        from jax.sharding import Mesh, NamedSharding
        from jax.sharding import PartitionSpec as P

        self.spec, self.dataset = spec, dataset
        self.mesh = Mesh(np.array(jax.devices()), ("data",))
        self.n_devices = self.mesh.devices.size
        if spec.batch_size % self.n_devices:
            raise RuntimeError(f"a global batch of {spec.batch_size} does not split over {self.n_devices} devices; "
                               f"set batch_size to a multiple of {self.n_devices}")
        self.replicated = NamedSharding(self.mesh, P())
        self.rows = NamedSharding(self.mesh, P("data"))
        self.network = build_network(spec.network, dataset.outputs)
        self.tx = build_optimizer(spec.optimizer, spec.steps)
        self.schedule = schedule(spec.optimizer, spec.steps)
        network, tx, seed, n_train = self.network, self.tx, spec.seed, dataset.n_train
        features = dataset.features

        def init(key):
            params = network.init(key, jnp.zeros((1, features), jnp.float32))["params"]
            return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}

        abstract = jax.eval_shape(init, jax.random.key(0))
        self.state_sharding = jax.tree.map(lambda a: param_sharding_rule(self.mesh, a.shape, spec.shard_params),
                                           abstract)
        self.abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                           abstract, self.state_sharding)
        self._init = jax.jit(init, out_shardings=self.state_sharding)

        local_batch = spec.batch_size // self.n_devices

        def device_batch(x_all, y_all, epoch0, offset):
            # Each device's rows of the global batch: positions offset + d·b ... of the epoch stream.
            first = offset + jax.lax.axis_index("data") * local_batch
            position = first + jnp.arange(local_batch, dtype=jnp.int32)
            epoch = epoch0 + position // n_train
            index = permute(position % n_train, epoch, seed, n_train, jnp)
            return x_all[index], y_all[index]

        def batch_loss(params, x, y):
            return jnp.mean((network.apply({"params": params}, x) - y) ** 2)

        n_devices = self.n_devices

        def device_gradients(params, x_all, y_all, epoch0, offset, stop):
            # Data parallel: each device's gradient on its rows, then one all-reduce of one flat
            # vector (gradients, loss and the stop flag together): one collective per step.
            loss, grads = jax.value_and_grad(batch_loss)(params, *device_batch(x_all, y_all, epoch0, offset))
            flat, unflatten = ravel_pytree(grads)
            packed = jnp.concatenate([flat, loss[None], stop.astype(flat.dtype)])
            total = jax.lax.psum(packed, "data")
            return unflatten(total[:-2] / n_devices), total[-2] / n_devices, total[-1] > 0

        gradients = jax.shard_map(device_gradients, mesh=self.mesh, in_specs=(P(), P(), P(), P(), P(), P("data")),
                                  out_specs=(P(), P(), P()), check_vma=False)
        make_batch = jax.shard_map(device_batch, mesh=self.mesh, in_specs=(P(), P(), P(), P()),
                                   out_specs=(P("data"), P("data")), check_vma=False)

        def train_step(state, x_all, y_all, epoch0, offset, stop):
            if spec.shard_params:
                # FSDP-style: the batch is sharded, the parameters too; XLA gathers and scatters.
                x, y = make_batch(x_all, y_all, epoch0, offset)
                loss, grads = jax.value_and_grad(batch_loss)(state["params"], x, y)
                any_stop = jnp.any(stop)
            else:
                grads, loss, any_stop = gradients(state["params"], x_all, y_all, epoch0, offset, stop)
            updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
            params = optax.apply_updates(state["params"], updates)
            # (loss, stop) in one small array: a block's reports come back in one transfer.
            report = jnp.stack([loss.astype(jnp.float32), any_stop.astype(jnp.float32)])
            return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, report

        batch_size = spec.batch_size

        def train_block(state, x_all, y_all, epoch0, offset, count, stop):
            # ``count`` (<= SYNC_EVERY) steps from the batch origin (epoch0, offset), in one call.
            def body(i, carry):
                state, reports, epoch, offset = carry
                state, report = train_step(state, x_all, y_all, epoch, offset, stop)
                offset = offset + batch_size  # the next step's origin, kept within int32
                return state, reports.at[i].set(report), epoch + offset // n_train, offset % n_train

            reports = jnp.zeros((SYNC_EVERY, 2), jnp.float32)
            state, reports, _, _ = jax.lax.fori_loop(0, count, body, (state, reports, epoch0, offset))
            return state, reports

        self._block = jax.jit(train_block, donate_argnums=(0,),
                              in_shardings=(self.state_sharding, self.replicated, self.replicated, self.replicated,
                                            self.replicated, self.replicated, self.rows),
                              out_shardings=(self.state_sharding, self.replicated))

        y_mean = jnp.asarray(dataset.y_mean, jnp.float32)
        y_std = jnp.asarray(dataset.y_std, jnp.float32)

        def evaluate(params, x_blocks, y_blocks, mask_blocks):
            """Sum of squared errors (model units and standardized) and the largest error."""
            def block(carry, rows):
                x, y, mask = rows
                pred = network.apply({"params": params}, x) * y_std + y_mean
                err = jnp.where(mask[:, None], pred - y, 0.0)
                return (carry[0] + jnp.sum(err ** 2), jnp.maximum(carry[1], jnp.max(jnp.abs(err))),
                        carry[2] + jnp.sum((err / y_std) ** 2)), None

            zero = jnp.zeros((), jnp.float32)
            out, _ = jax.lax.scan(block, (zero, zero, zero), (x_blocks, y_blocks, mask_blocks))
            return out

        self._evaluate = jax.jit(evaluate, out_shardings=self.replicated)
        self.x_train = self._place(dataset.x_train, self.replicated)
        self.y_train = self._place(dataset.y_train, self.replicated)
        self.heldout = self._blocks(dataset.x_heldout, dataset.y_heldout)
        sample = np.sort(np.random.default_rng([seed, 0x7E57]).permutation(n_train)[:min(n_train, TRAIN_SAMPLE)])
        y_sample = dataset.y_train[sample] * dataset.y_std + dataset.y_mean
        self.train_sample = self._blocks(dataset.x_train[sample], y_sample.astype(np.float32))
        stop_local = np.zeros(len(jax.local_devices()), bool)
        self.stop_flags = {flag: jax.make_array_from_process_local_data(self.rows, stop_local | flag)
                           for flag in (False, True)}
        self.compiled_block = None

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
        self.compiled_block = self._block.lower(state, self.x_train, self.y_train, zero, zero, zero,
                                                self.stop_flags[False]).compile()

    def run_block(self, state, first_step: int, count: int, stop: bool):
        """Steps ``first_step`` ... ``first_step + count - 1``: (new state, their [loss, any process
        stopping] rows as numpy, waiting for them)."""
        if not 0 < count <= SYNC_EVERY:
            raise ValueError(f"a block runs 1 to {SYNC_EVERY} steps, not {count}")
        epoch0, offset = batch_origin(first_step, self.spec.batch_size, self.dataset.n_train)
        state, reports = self.compiled_block(state, self.x_train, self.y_train, np.int32(epoch0), np.int32(offset),
                                             np.int32(count), self.stop_flags[bool(stop)])
        return state, np.asarray(reports)[:count]

    def evaluate(self, state) -> dict[str, float]:
        out = {}
        for prefix, (xb, yb, mb, count) in (("heldout", self.heldout), ("train", self.train_sample)):
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


def run_training(spec_file: str | Path, marker: str | Path | None = None, stop: StopRequest | None = None) -> int:
    """Train (or resume) the run ``spec_file`` describes, in this process (one of the job's).

    Returns 0 when the run is complete (marker written), EXIT_STOPPED when it stopped on SIGTERM
    after saving a checkpoint.
    """
    stop = stop or StopRequest()
    stop.install()
    spec = load_train_spec(spec_file)
    import jax

    # JAX's own preemption notifier would take SIGTERM from us; the stop flag does its work.
    jax.config.update("jax_enable_preemption_service", False)
    launch = distributed.start(distributed.detect_launch())
    root = paths.root_of_marker(marker) if marker else paths.RESULTS_ROOT
    compile_cache.enable(root)
    marker = Path(marker) if marker else paths.train_marker_path(spec.name, root)
    lead = jax.process_index() == 0
    who = distributed.where() if launch.method != "single" else distributed.node_name()

    if _already_complete(spec, marker):
        _log(f"train {spec.name}: already complete ({marker}); nothing to do")
        return 0
    dataset = load_dataset(spec, root)
    trainer = Trainer(spec, dataset)
    checkpoints = ckpt_lib.Checkpoints(paths.checkpoint_dir(spec.name, root), keep=spec.keep_checkpoints)
    latest = checkpoints.latest_step()
    layout = {"processes": jax.process_count(), "devices": trainer.n_devices,
              "device_kind": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
              "shard_params": spec.shard_params}
    if latest is not None:
        meta = checkpoints.read_meta(latest)
        if meta.get("digest") != spec.digest():
            raise RuntimeError(f"{checkpoints.directory} holds checkpoints of another spec (digest {meta.get('digest')}, "
                               f"this spec {spec.digest()}); choose a new name or delete results/{spec.name}")
        state, meta = checkpoints.restore(latest, trainer.abstract_state)
        if meta.get("layout", {}).get("devices") != layout["devices"]:
            _log(f"train: resuming on {layout['devices']} devices a run saved on {meta['layout'].get('devices')}: "
                 "the result is not bitwise that of an uninterrupted run")
    else:
        state = trainer.init_state()
    start = int(latest or 0)
    t_compile = time.perf_counter()
    trainer.compile(state)
    compile_s = time.perf_counter() - t_compile
    _log(f"train {spec.name}: {who}: {trainer.n_devices} devices, {dataset.n_train} training rows, "
         f"{len(dataset.x_heldout)} held-out rows, step {start} of {spec.steps}"
         + (f" (resumed from checkpoint {latest})" if latest else "") + f", compiled in {compile_s:.1f} s")

    group = None
    if lead:
        group = metrics.open_or_create(paths.train_store_path(spec.name, root), spec, dataset.units, {
            "data": dataset.describe(), "normalization": dataset.normalization(), "layout": layout,
            "batch_size": spec.batch_size, "steps": spec.steps,
        })
    meta = {"digest": spec.digest(), "name": spec.name, "normalization": dataset.normalization(),
            "data": dataset.describe(), "network": spec.network, "layout": layout}

    pending: dict[str, list] = {"loss": [], "step_time": []}
    flushed_to = start  # steps whose rows are in train.zarr

    def flush(upto: int) -> None:
        nonlocal flushed_to
        if lead and upto > flushed_to:
            first = flushed_to + 1
            times = np.asarray(pending["step_time"][: upto - flushed_to], np.float64)
            counts = np.arange(first - 1, upto)  # optax counts updates from 0
            lrs = np.broadcast_to(np.asarray(trainer.schedule(counts), np.float32), counts.shape)
            metrics.write_steps(group, first, {
                "loss": np.asarray(pending["loss"][: upto - flushed_to], np.float32),
                "learning_rate": lrs, "step_time": times,
                "samples_per_second": spec.batch_size / np.maximum(times, 1e-12)})
        del pending["loss"][: upto - flushed_to], pending["step_time"][: upto - flushed_to]
        flushed_to = upto

    def evaluate(t: int) -> dict:
        values = trainer.evaluate(state)
        if not lead:
            return values
        metrics.write_eval(group, t, values)
        _log(f"train {spec.name}: step {t}: held-out RMSE {values['heldout_rmse']:.4g}, max error "
             f"{values['heldout_max_error']:.4g} {dataset.units}".rstrip() + f" (train RMSE {values['train_rmse']:.4g})")
        return values

    def save(t: int) -> None:
        flush(t)
        checkpoints.save(t, state, dict(meta, step=t))

    segment = {"first_step": start + 1, "start": store.now_iso(), "hosts": sorted({distributed.node_name()}),
               "restored_from": latest, "compile_s": round(compile_s, 3), **layout}
    if start == 0:
        evaluate(0)
    t = start
    stopping = False
    train_s = 0.0
    last_eval = None
    while t < spec.steps:
        # The block ends at the next multiple of SYNC_EVERY, evaluation or checkpoint step, or the
        # last step: a function of t alone, so every process (and a resumed run) cuts alike.
        end = min(spec.steps, (t // SYNC_EVERY + 1) * SYNC_EVERY,
                  (t // spec.eval_every + 1) * spec.eval_every, (t // spec.checkpoint_every + 1) * spec.checkpoint_every)
        block_start = time.perf_counter()
        state, reports = trainer.run_block(state, t, end - t, stop.requested)
        elapsed = time.perf_counter() - block_start
        train_s += elapsed
        pending["loss"].extend(reports[:, 0].tolist())
        pending["step_time"].extend([elapsed / (end - t)] * (end - t))
        t = end
        stopping = bool(reports[:, 1].any())
        if t % spec.eval_every == 0 or t == spec.steps:
            last_eval = evaluate(t)
        if stopping or t % spec.checkpoint_every == 0 or t == spec.steps:
            save(t)
        if stopping:
            break
    checkpoints.wait()

    segment.update({"last_step": t, "end": store.now_iso(), "train_s": round(train_s, 3),
                    "reason": "stopped (SIGTERM)" if stopping else "completed"})
    parts = distributed.gather(launch, {"host": distributed.node_name()})
    segment["hosts"] = sorted({p["host"] for p in parts})
    if stopping:
        if lead:
            group.attrs["segments"] = [*group.attrs.get("segments", []), segment]
        _log(f"train {spec.name}: {who}: stopped after step {t} on SIGTERM; checkpoint {t} saved; rerun to resume")
        checkpoints.close()
        distributed.barrier(launch, f"train-{spec.name}-stopped")
        return EXIT_STOPPED

    if last_eval is None:  # a rerun of a finished run: nothing trained, evaluate the final state
        last_eval = trainer.evaluate(state)
    params = host_params(state)
    checkpoints.close()
    if lead:
        from hpc.train.surrogate import compare_cost

        cost = compare_cost(spec, dataset, trainer.network, params)
        step_times = group["step_time"][...]
        summary = {
            "name": spec.name, "digest": spec.digest(), "steps": spec.steps, "batch_size": spec.batch_size,
            "final_loss": float(group["loss"][spec.steps - 1]),
            "heldout_rmse": last_eval["heldout_rmse"], "heldout_max_error": last_eval["heldout_max_error"],
            "train_rmse": last_eval["train_rmse"], "units": dataset.units,
            # Over every step of every attempt: compile, evaluation and checkpoint time left out.
            "samples_per_second": spec.batch_size * spec.steps / float(np.nansum(step_times)),
            "median_step_time": float(np.nanmedian(step_times)),
            "checkpoint": str(paths.checkpoint_dir(spec.name, root) / str(spec.steps)),
            **cost, "layout": layout,
        }
        group.attrs.update({
            "segments": [*group.attrs.get("segments", []), segment], "completed": store.now_iso(), "final": summary,
            # The report's headline: the surrogate's error off the training points, and its cost.
            "target": spec.data.target or "synthetic function", "target_units": dataset.units,
            "heldout_points": dataset.points["heldout"],
            "surrogate_heldout_rmse": summary["heldout_rmse"], "surrogate_heldout_max_error": summary["heldout_max_error"],
            "surrogate_seconds_per_point": cost["surrogate_s_per_point"], "model_seconds_per_point": cost["model_s_per_point"],
            "surrogate_speedup": cost["speedup"], "cost_reference": cost["cost_reference"],
        })
        metrics.finalize(paths.train_store_path(spec.name, root))
        write_atomic(marker, json.dumps(summary, indent=1))
        units = f" {dataset.units}" if dataset.units else ""
        _log(f"train {spec.name}: done: held-out RMSE {summary['heldout_rmse']:.4g}{units}, max error "
             f"{summary['heldout_max_error']:.4g}{units}; {summary['samples_per_second']:.4g} samples/s; surrogate "
             f"{cost['surrogate_s_per_point']:.3g} s per point against {cost['model_s_per_point']:.3g} s per "
             f"{cost['cost_reference']}")
    distributed.barrier(launch, f"train-{spec.name}-done")
    return 0
