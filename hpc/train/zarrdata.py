"""A user's data set in a Zarr store: its checks, its blocks, its data order, and reading it.

``data: {zarr: PATH, inputs: [a, b, u], target: y, holdout: 0.2}``: every name is a variable of
the store along one sample dimension, 1-D or 2-D (sample, k) (k columns: inputs or outputs).

Blocks. The rows are cut into blocks of ``b`` rows: the store's chunk length along the sample
dimension (``min(chunk, n // 16)`` for a store of few chunks), so a block is read with whole-chunk
reads. Held out: ``round(holdout x full blocks)`` full blocks drawn by the seed, and the last,
partial block if there is one; the rest, in store order, are the N = nt·b training rows.

Data order. Position k of the stream of epochs (epoch e = k div N, p = k mod N) is row
``ρ_{e,s}(p mod b)`` of training block ``π_e(s)``, s = p div b, where π_e permutes the nt blocks
and ρ_{e,s} the b rows of a block (the same keyed Feistel permutation as hpc.train.data.permute).
A step's rows therefore come from the one or two blocks the stream is walking through, so a
process that streams its rows from the store reads a block once per epoch, whole chunks only;
and the order is a function of (seed, step) alone, evaluated row by row, whatever the number of
processes or devices.

Standardization uses the training rows' mean and standard deviation, from one pass over the
store block by block (float64), which also refuses non-finite values before training starts.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpc.core.errors import SpecError

CHECK_AT_PARSE_BYTES = 64 << 20  # a store this small is read whole at parse time (non-finite values)
MIN_BLOCKS = 16  # a store of fewer chunks than this is cut into smaller blocks
ROW_SEED = 0xA5A5A5A5  # keys the permutation of rows inside a block apart from that of the blocks
FORMS = "data is {zarr: STORE, inputs: [VARIABLE, ...], target: VARIABLE, holdout: 0.2}"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def inspect_store(path: Path, inputs: list[str], target: str, dim: str | None) -> dict:
    """The store's layout for the data section, or one SpecError naming the key: rows, the sample
    dimension, columns per input, outputs, the chunk length along the sample dimension."""
    import xarray as xr

    if not path.exists():
        raise SpecError("data.zarr", f"{str(path)!r} not found", "a relative path is taken from the spec's folder")
    try:
        with warnings.catch_warnings():  # a store without consolidated metadata is fine
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.filterwarnings("ignore", message="Consolidated metadata")
            ds = xr.open_zarr(path, chunks=None, consolidated=None)
    except Exception as exc:
        raise SpecError("data.zarr", f"{path} is not a Zarr store xarray can read: {type(exc).__name__}: {exc}") from None
    named = [(f"data.inputs[{i}]", name) for i, name in enumerate(inputs)] + [("data.target", target)]
    for key, name in named:
        if name not in ds.variables:
            raise SpecError(key, f"{name!r} is not a variable of {path.name}",
                            "its variables: " + ", ".join(sorted(map(str, ds.variables))))
    if target in inputs:
        raise SpecError("data.target", f"{target!r} is also an input")
    if dim is None and ds[target].dims:
        dim = ds[target].dims[0]
    if dim is None:
        raise SpecError("data.target", f"{target!r} is a scalar, not a variable along a sample dimension")
    n = int(ds.sizes.get(dim, 0))
    columns = {}
    for key, name in named:
        var = ds[name]
        if var.ndim and var.dims[0] != dim:
            raise SpecError(key, f"{name!r} runs along {var.dims[0]!r} ({var.shape[0]} rows), not along the sample "
                            f"dimension {dim!r} ({n} rows)", f"give variables of one length along {dim!r}")
        if var.ndim not in (1, 2):
            raise SpecError(key, f"{name!r} has dimensions {var.dims}", f"give a 1-D ({dim}) or 2-D ({dim}, k) variable")
        if not (np.issubdtype(var.dtype, np.floating) or np.issubdtype(var.dtype, np.integer)
                or var.dtype == bool):
            raise SpecError(key, f"{name!r} holds {var.dtype}, not numbers")
        columns[name] = int(var.shape[1]) if var.ndim == 2 else 1
    chunks = ds[target].encoding.get("chunks") or (n,)
    return {"rows": n, "dim": dim, "columns": {k: columns[k] for k in inputs}, "outputs": columns[target],
            "chunk": int(chunks[0]), "bytes_per_row": 4 * (sum(columns.values()))}


@dataclass(frozen=True)
class Blocks:
    """The blocks of a store's rows: training blocks (store order) and held-out blocks."""

    rows: int
    size: int  # rows per block
    train: tuple[int, ...]
    heldout: tuple[int, ...]

    @property
    def n_train(self) -> int:
        return len(self.train) * self.size

    def span(self, block: int) -> tuple[int, int]:
        return block * self.size, min(self.rows, (block + 1) * self.size)

    def heldout_rows(self) -> int:
        return sum(b - a for a, b in map(self.span, self.heldout))


def cut_blocks(rows: int, chunk: int, holdout: float, seed: int) -> Blocks:
    """Blocks of ``chunk`` rows (fewer for a store of few chunks), whole ones held out by the seed."""
    size = max(1, min(chunk, rows // MIN_BLOCKS))
    full = rows // size
    if full < 2:
        raise SpecError("data.zarr", f"{rows} rows", "a data set needs at least 2 rows: one to train, one held out")
    held = max(1, min(full - 1, round(full * holdout)))
    order = np.random.default_rng([seed, 0x5EED]).permutation(full)
    heldout = sorted(order[:held].tolist()) + ([full] if rows > full * size else [])
    return Blocks(rows, size, tuple(sorted(order[held:].tolist())), tuple(heldout))


def order_indices(position, epoch, seed: int, n_blocks: int, size: int, xp=np):
    """Training-row indices (block slot · size + row in block) at ``position`` (within the epoch)
    of ``epoch``, elementwise (numpy or jax.numpy, the same bits)."""
    from hpc.train.data import permute

    slot = position // size
    within = position % size
    block = permute(slot, epoch, seed, n_blocks, xp)
    with np.errstate(over="ignore"):  # uint32 products wrap, as they do in jax
        row_key = xp.asarray(epoch).astype(xp.uint32) * xp.uint32(n_blocks) + xp.asarray(slot).astype(xp.uint32)
    row = permute(within, row_key, seed ^ ROW_SEED, size, xp)
    return block * size + row


def batch_rows(seed: int, step: int, batch_size: int, blocks: Blocks, start: int = 0, count: int | None = None):
    """Training-row indices of rows start ... start+count-1 of step ``step``'s global batch (numpy)."""
    from hpc.train.data import batch_origin

    n = blocks.n_train
    count = batch_size - start if count is None else count
    epoch0, offset = batch_origin(step, batch_size, n)
    within = offset + start + np.arange(count, dtype=np.int64)
    return order_indices(within % n, epoch0 + within // n, seed, len(blocks.train), blocks.size)


class StoreRows:
    """Rows of the store, standardized: by training-row index (a cache of whole blocks) or by block."""

    def __init__(self, path: Path, inputs: list[str], target: str, blocks: Blocks, cache_blocks: int = 4):
        import zarr

        self.group = zarr.open_group(str(path), mode="r")
        self.inputs, self.target, self.blocks = list(inputs), target, blocks
        self.mean = self.std = None  # set by statistics()
        self.cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.cache_blocks = max(2, cache_blocks)
        self.read_s = 0.0
        self.blocks_read = 0

    def raw(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows start..stop-1 in the store's units: x (rows, features) and y (rows, outputs), float64."""
        t0 = time.perf_counter()
        cols = [np.asarray(self.group[name][start:stop], np.float64).reshape(stop - start, -1) for name in self.inputs]
        y = np.asarray(self.group[self.target][start:stop], np.float64).reshape(stop - start, -1)
        self.read_s += time.perf_counter() - t0
        return np.concatenate(cols, axis=1), y

    def standardized(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.raw(start, stop)
        return self.scale_x(x), ((y - self.y_mean) / self.y_std).astype(np.float32)

    def scale_x(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.x_mean) / self.x_std).astype(np.float32)

    def block(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """Training block ``slot`` (index into blocks.train), standardized; cached."""
        if slot in self.cache:
            self.cache.move_to_end(slot)
            return self.cache[slot]
        data = self.standardized(*self.blocks.span(self.blocks.train[slot]))
        self.blocks_read += 1
        self.cache[slot] = data
        while len(self.cache) > self.cache_blocks:
            self.cache.popitem(last=False)
        return data

    def rows(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Training rows by index (slot · size + row), in that order."""
        size = self.blocks.size
        slots = index // size
        x = np.empty((len(index), len(self.x_mean)), np.float32)
        y = np.empty((len(index), len(self.y_mean)), np.float32)
        for slot in np.unique(slots):  # each block read once, in the order the stream reaches them
            where = np.flatnonzero(slots == slot)
            bx, by = self.block(int(slot))
            x[where], y[where] = bx[index[where] % size], by[index[where] % size]
        return x, y

    def statistics(self, label: str = "data") -> None:
        """One pass over every block: the training rows' mean and standard deviation (float64,
        block by block), and a SpecError for the first non-finite value anywhere."""
        blocks = self.blocks
        n_x = n_y = None
        count, mean_x, m2_x, mean_y, m2_y = 0, 0.0, 0.0, 0.0, 0.0
        every = sorted([*blocks.train, *blocks.heldout])
        training = set(blocks.train)
        bad: dict[str, list] = {}
        t0, last = time.perf_counter(), time.perf_counter()
        for i, block in enumerate(every):
            start, stop = blocks.span(block)
            x, y = self.raw(start, stop)
            self._count_non_finite(x, y, start, bad)
            if block in training:  # Chan et al.'s pairwise update of mean and squared deviations
                n_b = len(x)
                bx, by = x.mean(axis=0), y.mean(axis=0)
                dx, dy = bx - mean_x, by - mean_y
                total = count + n_b
                m2_x = m2_x + ((x - bx) ** 2).sum(axis=0) + dx ** 2 * count * n_b / total
                m2_y = m2_y + ((y - by) ** 2).sum(axis=0) + dy ** 2 * count * n_b / total
                mean_x, mean_y, count = mean_x + dx * n_b / total, mean_y + dy * n_b / total, total
                n_x, n_y = x.shape[1], y.shape[1]
            if time.perf_counter() - last > 10:
                last = time.perf_counter()
                _log(f"{label}: statistics: {i + 1} of {len(every)} blocks read ({last - t0:.0f} s)")
        if bad:
            key = sorted(bad, key=lambda k: (k == "data.target", k))[0]
            name, n_bad, first = bad[key]
            raise SpecError(key, f"{name!r} has {n_bad} non-finite values (the first in row {first})",
                            "drop or fill those rows")
        std_x, std_y = np.sqrt(m2_x / count), np.sqrt(m2_y / count)
        self.x_mean, self.y_mean = np.asarray(mean_x, np.float64).reshape(n_x), np.asarray(mean_y, np.float64).reshape(n_y)
        self.x_std = np.where(std_x > 0, std_x, 1.0).reshape(n_x)
        self.y_std = np.where(std_y > 0, std_y, 1.0).reshape(n_y)

    def _count_non_finite(self, x: np.ndarray, y: np.ndarray, start: int, bad: dict) -> None:
        """Add the non-finite values of these rows to ``bad``: key -> [name, count, first row]."""
        widths = [int(np.prod(self.group[n].shape[1:])) for n in self.inputs]
        edges = np.cumsum([0, *widths])
        named = [(f"data.inputs[{i}]", n, x[:, edges[i]:edges[i + 1]]) for i, n in enumerate(self.inputs)]
        for key, name, values in [*named, ("data.target", self.target, y)]:
            rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
            if len(rows):
                entry = bad.setdefault(key, [name, 0, start + int(rows[0])])
                entry[1] += int((~np.isfinite(values)).sum())

    def heldout_blocks(self, rows_per_block: int):
        """The held-out rows in pieces of at most ``rows_per_block``: (x standardized, y in the store's units)."""
        for block in self.blocks.heldout:
            start, stop = self.blocks.span(block)
            for a in range(start, stop, rows_per_block):
                x, y = self.raw(a, min(stop, a + rows_per_block))
                yield self.scale_x(x), y.astype(np.float32)


class Prefetcher:
    """Host batches of the coming blocks of steps, made in a background thread (reads from the
    store and gathers) while the devices run the current block.

    ``make(first_step, count)`` builds one block's batch; ``plan`` is the sequence of (first_step,
    count) the loop will ask for, in order.
    """

    def __init__(self, make, plan, depth: int = 2):
        self.make, self.queue = make, queue.Queue(maxsize=depth)
        self.wait_s = 0.0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(plan,), daemon=True, name="hpc-prefetch")
        self.thread.start()

    def _run(self, plan) -> None:
        for item in plan:
            if self._stop.is_set():
                return
            try:
                value = (item, self.make(*item), None)
            except BaseException as exc:  # handed to the training loop, which raises it
                value = (item, None, exc)
            while not self._stop.is_set():
                try:
                    self.queue.put(value, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if value[2] is not None:
                return

    def get(self, first_step: int, count: int):
        t0 = time.perf_counter()
        item, batch, exc = self.queue.get()
        self.wait_s += time.perf_counter() - t0
        if exc is not None:
            raise exc
        if item != (first_step, count):
            raise RuntimeError(f"prefetched steps {item}, asked for {(first_step, count)}")
        return batch

    def close(self) -> None:
        self._stop.set()


def stream_bytes(info: dict, blocks: Blocks) -> int:
    return blocks.n_train * info["bytes_per_row"]


def choose_stream(stream, info: dict, blocks: Blocks, mem_mb: int | None) -> bool:
    """Stream the rows when asked, or (auto) when the training rows exceed a quarter of the job's
    memory (its mem_mb, else the memory this machine has available)."""
    if stream in (True, False):
        return stream
    if mem_mb is None:
        try:
            avail = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                         if line.startswith("MemAvailable:"))
        except (OSError, StopIteration):
            avail = 8 << 30
    else:
        avail = mem_mb << 20
    return stream_bytes(info, blocks) > avail / 4

