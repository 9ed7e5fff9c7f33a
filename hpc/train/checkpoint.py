"""Checkpoints of a training run, with orbax.

A checkpoint is the whole training state (step, parameters, optimizer state) plus a small JSON
record (the spec's digest, the normalization, the layout it was saved on). Orbax writes each step
into a temporary directory and renames it into place when every process has finished writing, so
a kill during a save leaves the previous checkpoint intact, and an unfinished one is never listed
or loaded (its temporary directory is removed when the next run opens the directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orbax.checkpoint as ocp


class Checkpoints:
    """The checkpoints of one run: results/NAME/checkpoints/<step>/{state,meta}."""

    def __init__(self, directory: str | Path, keep: int = 2, asynchronous: bool = True):
        # Written under a temporary name, renamed into place once complete (POSIX rename is atomic).
        atomic = ocp.options.AtomicityOptions(mode=ocp.options.AtomicityMode.ATOMIC_RENAME)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True,
                                               enable_async_checkpointing=asynchronous, atomicity_options=atomic)
        self.directory = Path(directory).resolve()
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Save (collectively: every process calls this with the same step)."""
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)), force=True)

    def wait(self) -> None:
        """Block until the last save is on disk and renamed into place."""
        self.manager.wait_until_finished()

    def read_meta(self, step: int) -> dict:
        return dict(self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)

    def restore(self, step: int, target: Any) -> tuple[Any, dict]:
        """The state saved at ``step``, laid out like ``target`` (arrays or ShapeDtypeStructs with
        shardings): a checkpoint saved on another layout is resharded on load."""
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                      meta=ocp.args.JsonRestore()))
        return restored.state, dict(restored.meta)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def load_state(directory: str | Path, step: int | None = None) -> tuple[dict, dict]:
    """(state as numpy arrays, meta) of a finished checkpoint (the latest by default), in one
    process, whatever layout it was saved on."""
    import jax
    from absl import logging

    directory = Path(directory).resolve()
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # orbax warns about read-only mode and items left unread
    try:
        manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
        try:
            step = manager.latest_step() if step is None else step
            if step is None:
                raise FileNotFoundError(f"{directory}: no finished checkpoint")
            meta = dict(manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)
        finally:
            manager.close()
        path = directory / str(step) / "state"
        with ocp.StandardCheckpointer() as checkpointer:
            tree = checkpointer.metadata(path).item_metadata
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
            state = checkpointer.restore(path, target)
    finally:
        logging.set_verbosity(verbosity)
    return jax.tree.map(np.asarray, dict(state)), meta
