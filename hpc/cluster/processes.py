"""Starting, finding and stopping the daemons of the emulated cluster, and calling Slurm's clients."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ClusterError(RuntimeError):
    """The emulated cluster could not be started/stopped; the message is one line
    (plus, for start-up timeouts, the tails of the daemon logs)."""


def which(name: str) -> str | None:
    """Find a binary also in the sbin dirs that a non-login PATH often lacks."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":" + SBIN_PATH)


def binary_path(name: str) -> str:
    """Absolute path of a needed binary, or a one-line error."""
    path = which(name)
    if path is None:
        raise ClusterError(f"{name} not found (`hpc cluster up` installs Debian's slurm, munge and mariadb packages)")
    return path


def daemon_env() -> dict[str, str]:
    """A minimal environment for the daemons, so that the caller's variables (a venv,
    JAX_PLATFORMS, SLURM_*) do not leak into long-lived processes."""
    return {"PATH": SBIN_PATH, "LANG": "C.UTF-8"}


def client_env() -> dict[str, str]:
    """Environment for Slurm client calls: the default config path, like users get."""
    env = dict(os.environ)
    env.pop("SLURM_CONF", None)
    env["PATH"] = env.get("PATH", "") + ":" + SBIN_PATH
    return env


def run_daemon(cmd: list[str], label: str, **kwargs) -> None:
    """Run a self-daemonizing program; its parent exits at once, errors come on stderr."""
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kwargs)
    if res.returncode != 0:
        raise ClusterError(f"{label} failed to start: {(res.stderr or res.stdout).strip()}")


def read_pid(pid_file: Path) -> int | None:
    """The pid in a pid file, or None when missing/garbled."""
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int, binary: str) -> bool:
    """True when `pid` runs `binary` (guards against pid reuse) and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        reap(pid)
        return False
    return bool(cmdline) and os.path.basename(cmdline[0].decode(errors="replace")) == binary


def reap(pid: int) -> None:
    """Collect a zombie if it is our child; harmless otherwise."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def daemon_pid(pid_file: Path, binary: str) -> int | None:
    """Pid of a running daemon we started (via its pid file), else None."""
    pid = read_pid(pid_file)
    return pid if pid is not None and pid_alive(pid, binary) else None


def stop_pid(pid: int, binary: str, timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL: daemons get a chance to save state."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid, binary):
                return
            time.sleep(0.1)
