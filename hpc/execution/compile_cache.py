"""Compile a sweep's programs once, not once per shard job.

JAX's persistent compilation cache lives under ``<results root>/.jax-cache/<machine>/``: the
results root is on a filesystem every node sees, so the second shard job of a sweep, a rerun, a
resumed training run and every dask worker load a compiled program instead of compiling it again
(a Bianchi shard at n_b = 800 spends about 2.3 s compiling). A CPU program is compiled for the
instruction set of the CPU it was compiled on, so ``<machine>`` names the CPU model and its
features: nodes with another CPU keep a cache of their own. (GPU programs are keyed by device
kind inside JAX's own cache key.)

- Only process 0 of a job writes entries (JAX's rule), and in a job of several processes the
  others' programs are keyed by their own devices, so they compile as before. JAX's option to
  hand process 0's program to the others (``jax_share_binary_between_hosts``) is left off: with
  gloo collectives on the CPU, a handed-over program fails to set up its collectives.
- An entry that cannot be read back (cut short by a kill) is a miss: the program is compiled
  again. A cached program is the compiled program itself, so results do not depend on the cache
  (tests/test_compile_cache.py compares stores bitwise).

``HPC_JAX_CACHE=none`` turns the cache off; ``HPC_JAX_CACHE=DIR`` keeps it in DIR.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path

ENV_CACHE = "HPC_JAX_CACHE"
CACHE_DIR_NAME = ".jax-cache"  # under the results root; reserved: no sweep may take this name
MIN_COMPILE_S = 0.5  # programs that compile faster than this are not worth a file


def machine_key(cpuinfo: str | None = None) -> str:
    """The CPU this process runs on: model name and feature flags, hashed.

    ``cpuinfo`` is the text of /proc/cpuinfo (read when not given; where it cannot be read, the
    key names the architecture alone). The first "model name" and the first "flags" (x86) or
    "Features" (ARM) line count; the order of the flags does not.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model, flags = platform.machine(), ""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        name = name.strip()
        if name == "model name" and model == platform.machine():
            model = value.strip()
        elif name in ("flags", "Features") and not flags:
            flags = " ".join(sorted(value.split()))
    digest = hashlib.sha256(f"{model}|{flags}".encode()).hexdigest()[:12]
    return f"{platform.machine()}-{digest}"


def cache_dir(results_root: str | Path, env: dict[str, str] | None = None) -> Path | None:
    """Where this process keeps compiled programs, or None when the cache is off."""
    env = os.environ if env is None else env
    setting = env.get(ENV_CACHE, "").strip()
    if setting.lower() == "none":
        return None
    base = Path(setting) if setting else Path(results_root) / CACHE_DIR_NAME
    return base / machine_key()


def enable(results_root: str | Path) -> Path | None:
    """Switch the cache on for this process; call before its first compilation. Returns the cache
    directory, or None when it is off."""
    import jax

    directory = cache_dir(results_root)
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only or full results filesystem: compile as without a cache
        print(f"hpc: no compilation cache ({directory}: {exc.strerror})", file=sys.stderr, flush=True)
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
