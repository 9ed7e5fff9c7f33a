"""An emulated multi-node Slurm cluster on this one machine (tests, CI, laptops).

`cluster_up(3)` boots munged, slurmctld and three slurmd daemons (``slurmd -N n1``
... ``-N n3``, Slurm's "multiple slurmd" mode), each node listening on its own port,
so that ``sbatch``/``srun -N2``/Snakemake's slurm executor see a real 3-node
cluster. Everything it starts or writes lives under one state directory (pid
files, logs, spool dirs) plus two system files that Slurm clients and MPI/JAX need:

* ``/etc/slurm/slurm.conf`` -- the clients (and Snakemake's slurm plugin, which
  calls them without extra environment) only look there; marked as ours by
  `CONF_MARKER` so we never overwrite a real site config without ``force=True``.
* a marked block in ``/etc/hosts`` mapping n1..nN to 127.0.0.1 -- jax.distributed
  and MPI resolve the node names Slurm hands them (``SLURM_STEP_NODELIST``).

The container/laptop has no usable cgroups, so the config avoids every cgroup
plugin; see `render_slurm_conf` for why each setting is there.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from hpc.cluster import accounting, limits
from hpc.cluster.processes import (
    ClusterError,
    binary_path,
    client_env,
    daemon_env,
    daemon_pid,
    run_daemon,
    stop_pid,
    which,
)

DEFAULT_STATE_DIR = Path("/var/tmp/hpc-cluster")
SLURM_CONF = Path("/etc/slurm/slurm.conf")
ETC_HOSTS = Path("/etc/hosts")
MUNGE_KEY = Path("/etc/munge/munge.key")
CONF_MARKER = "# hpc-cluster: written by hpc.cluster"
HOSTS_BEGIN = "# BEGIN hpc-cluster (hpc.cluster; removed by `hpc cluster down`)"
HOSTS_END = "# END hpc-cluster"
CTLD_PORT = 6817
SLURMD_BASE_PORT = 17001
APT_PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge", *accounting.APT_PACKAGES]
NEEDED_BINARIES = ["slurmctld", "slurmd", "sinfo", "sbatch", "srun", "squeue", "scontrol", "munged",
                   *accounting.NEEDED_BINARIES]
CLUSTER_NAME = "hpcemu"
# sinfo %t states of a registered, responsive, schedulable node ("idle*" = not responding).
READY_STATES = {"idle", "mix", "alloc", "comp"}


# --------------------------------------------------------------------------- paths


def state_dir_path(state_dir: Path | str | None = None) -> Path:
    """The state directory: argument, else $HPC_CLUSTER_DIR, else /var/tmp/hpc-cluster.

    /var/tmp (not /tmp) so that the cluster's spool survives tmp cleaners and
    is shared by everybody on the machine, like a real cluster's state.
    """
    if state_dir is not None:
        return Path(state_dir)
    env = os.environ.get("HPC_CLUSTER_DIR")
    return Path(env) if env else DEFAULT_STATE_DIR


def _layout(state: Path) -> dict[str, Path]:
    """Where each file lives inside the state directory (one place to look)."""
    return {
        "state_json": state / "cluster.json",
        "run": state / "run",
        "log": state / "log",
        "spool": state / "spool",
        "ctld_spool": state / "spool" / "ctld",
        "munge": state / "munge",
        "munge_socket": state / "munge" / "munge.socket.2",
        "munge_pid": state / "munge" / "munged.pid",
        "munge_log": state / "munge" / "munged.log",
        "munge_seed": state / "munge" / "munged.seed",
        "ctld_pid": state / "run" / "slurmctld.pid",
        "ctld_log": state / "log" / "slurmctld.log",
    }


def _slurmd_pid(state: Path, node: str) -> Path:
    """Pid file of one slurmd; must match SlurmdPidFile's %n expansion."""
    return state / "run" / f"slurmd-{node}.pid"


def _slurmd_log(state: Path, node: str) -> Path:
    """Log file of one slurmd; must match SlurmdLogFile's %n expansion."""
    return state / "log" / f"slurmd-{node}.log"


def node_names(nodes: int) -> list[str]:
    """n1..nN: short names that never clash with real hosts on a laptop."""
    return [f"n{i}" for i in range(1, nodes + 1)]


# ------------------------------------------------------------------ the slurm.conf


def render_slurm_conf(
    state: Path,
    nodes: int,
    cpus_per_node: int,
    mem_mb_per_node: int,
    ctld_port: int = CTLD_PORT,
    slurmd_base_port: int = SLURMD_BASE_PORT,
    hostname: str | None = None,
    memory: str = "jobacct",
) -> str:
    """The slurm.conf text for N emulated nodes; every non-default line says why. ``memory`` is
    how --mem is enforced (hpc.cluster.limits: "cgroup" or "jobacct")."""
    host = hostname or socket.gethostname().split(".")[0]  # slurmctld compares short names
    names = node_names(nodes)
    lay = _layout(state)
    node_lines = [
        # Multiple-slurmd: every node is this machine, each slurmd on its own Port=.
        f"NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={slurmd_base_port + i} "
        f"CPUs={cpus_per_node} RealMemory={mem_mb_per_node} State=UNKNOWN"
        for i, name in enumerate(names)
    ]
    return "\n".join(
        [
            CONF_MARKER + f" for an emulated {nodes}-node cluster; state in {state}.",
            "# Rewritten by `hpc cluster up`; `down` leaves it (harmless without the daemons).",
            f"ClusterName={CLUSTER_NAME}",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_base_port}",
            # Root runs the daemons: no slurm-owned dirs to set up; jobs still run as the submitter.
            "SlurmUser=root",
            "SlurmdUser=root",
            # Our own munged socket, so a system munged (if any) is never touched. cred_expire also
            # sets how long a requeued job waits before it may start again (Slurm's default: 120 s,
            # so on a production site a node failure costs a shard about two minutes more); 30 s
            # here keeps the node-failure tests short and is still ample to launch a step.
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={lay['munge_socket']},cred_expire=30",
            f"StateSaveLocation={lay['ctld_spool']}",
            # %n: one spool dir, pid file and log per emulated node.
            f"SlurmdSpoolDir={state / 'spool' / 'slurmd-%n'}",
            f"SlurmctldPidFile={lay['ctld_pid']}",
            f"SlurmdPidFile={state / 'run' / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={lay['ctld_log']}",
            f"SlurmdLogFile={state / 'log' / 'slurmd-%n.log'}",
            # No mail on this machine; the default /bin/mail is absent and logs an error.
            "MailProg=/bin/true",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            # Processes tracked via /proc (the freezer cgroup is not needed for that); no task
            # binding; memory limits enforced as hpc.cluster.limits says.
            "ProctrackType=proctrack/linuxproc",
            *limits.slurm_conf_lines(memory),
            *accounting.slurm_conf_lines(lay["munge_socket"]),
            "JobCompType=jobcomp/none",
            "SwitchType=switch/none",
            # Per-core and per-MB scheduling, so --cpus-per-task/--mem are real requests.
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill",
            # Nodes may claim more CPUs/memory than the machine has (N x 4 CPUs on 2 cores).
            "SlurmdParameters=config_overrides",
            # MinJobAge is Slurm's default (300 s): finished jobs leave squeue, sacct keeps them.
            # Let a day of sweep shards fit (default 10000; slurmctld refuses jobs beyond).
            "MaxJobCount=100000",
            # srun --mpi=pmi2 must be asked for explicitly, as on most real sites.
            "MpiDefault=none",
            # A node that was DOWN comes back as soon as its slurmd registers again.
            "ReturnToService=2",
            # Fast cancel/teardown in tests.
            "KillWait=2",
            "InactiveLimit=0",
            # A dead node is declared DOWN (its jobs NODE_FAIL) within about 30 s: tests kill nodes.
            "SlurmdTimeout=30",
            "SlurmctldTimeout=30",
            "MessageTimeout=20",
            *node_lines,
            f"PartitionName=debug Nodes={','.join(names)} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def _conf_is_ours(conf: Path) -> bool:
    """True when the file does not exist or was written by this module (marker line)."""
    if not conf.exists():
        return True
    try:
        return conf.read_text().startswith(CONF_MARKER)
    except OSError:
        return False


def _check_conf_writable(conf: Path, force: bool) -> None:
    """Refuse (before anything is started) to clobber a site's own slurm.conf."""
    if not force and not _conf_is_ours(conf):
        raise ClusterError(
            f"{conf} exists and was not written by hpc.cluster; refusing to overwrite it "
            "(move it away, or pass force=True / --force)"
        )


def write_slurm_conf(text: str, conf: Path = SLURM_CONF, force: bool = False) -> None:
    """Write the config where clients look (see `_check_conf_writable`)."""
    _check_conf_writable(conf, force)
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(text)
    conf.chmod(0o644)


# ------------------------------------------------------------------------ /etc/hosts


def _strip_hosts_block(text: str) -> str:
    """The hosts file without our marked block (all copies, should there be several)."""
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.rstrip("\n") == HOSTS_BEGIN:
            inside = True
        elif inside and line.rstrip("\n") == HOSTS_END:
            inside = False
        elif not inside:
            out.append(line)
    return "".join(out)


def _write_in_place(path: Path, text: str) -> None:
    """Rewrite a file in place (not rename): /etc/hosts is often a bind mount in containers."""
    with open(path, "r+") as fh:
        fh.seek(0)
        fh.write(text)
        fh.truncate()


def add_hosts_block(nodes: int, hosts: Path = ETC_HOSTS) -> None:
    """Make n1..nN resolve to 127.0.0.1: jax.distributed and MPI look the names up."""
    text = _strip_hosts_block(hosts.read_text())
    if text and not text.endswith("\n"):
        text += "\n"
    block = "\n".join([HOSTS_BEGIN, "127.0.0.1 " + " ".join(node_names(nodes)), HOSTS_END, ""])
    _write_in_place(hosts, text + block)


def remove_hosts_block(hosts: Path = ETC_HOSTS) -> None:
    """Undo `add_hosts_block`; a no-op when the block is absent."""
    if not hosts.exists():
        return
    text = hosts.read_text()
    stripped = _strip_hosts_block(text)
    if stripped != text:
        _write_in_place(hosts, stripped)


def _daemons(state: Path, names: list[str]) -> list[tuple[str, Path, str]]:
    """(label, pid file, binary name) of every daemon of a cluster with these nodes, in start order."""
    lay = _layout(state)
    return (
        [("munged", lay["munge_pid"], "munged"), *accounting.daemons(state), ("slurmctld", lay["ctld_pid"], "slurmctld")]
        + [(f"slurmd {n}", _slurmd_pid(state, n), "slurmd") for n in names]
    )


def _known_node_names(state: Path) -> list[str]:
    """Node names of the last cluster started here: from cluster.json, else pid files."""
    info = _read_state(state)
    names = set(node_names(int(info["nodes"]))) if info.get("nodes") else set()
    run = _layout(state)["run"]
    if run.is_dir():
        names |= {p.stem.removeprefix("slurmd-") for p in run.glob("slurmd-*.pid")}
    return sorted(names, key=lambda n: (len(n), n))


def _read_state(state: Path) -> dict:
    """cluster.json (settings of the running cluster), {} when absent."""
    try:
        return json.loads(_layout(state)["state_json"].read_text())
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------------ start-up


def _require_root() -> None:
    """Daemons bind ports, switch users and we edit /etc: root only, said plainly."""
    if os.geteuid() != 0:
        raise ClusterError("hpc cluster up/down needs root (it starts munged/slurmd and edits /etc/hosts): use sudo")


def ensure_installed() -> list[str]:
    """apt-get install the Slurm/munge packages when a binary is missing; returns what was installed."""
    missing = [b for b in NEEDED_BINARIES if which(b) is None]
    if not missing:
        return []
    if which("apt-get") is None:
        raise ClusterError(f"missing {', '.join(missing)} and no apt-get: install Slurm and munge yourself")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *APT_PACKAGES]):
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed: {res.stderr.strip().splitlines()[-1:]}")
    still = [b for b in NEEDED_BINARIES if which(b) is None]
    if still:
        raise ClusterError(f"still missing after apt-get install: {', '.join(still)}")
    return APT_PACKAGES


def port_in_use(port: int) -> bool:
    """True when something listens on / holds the TCP port (bind test, like the daemons do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def _check_ports(ports: dict[str, int]) -> None:
    """Fail before starting anything when another program holds one of our ports."""
    for label, port in ports.items():
        if port_in_use(port):
            raise ClusterError(
                f"port {port} ({label}) is already in use by another program "
                f"(see `ss -ltnp | grep :{port}`); stop it or choose other ports"
            )


def _ports(nodes: int, ctld_port: int, slurmd_base_port: int) -> dict[str, int]:
    """Every TCP port the cluster listens on, labelled for error messages."""
    ports = {"slurmctld": ctld_port, "slurmdbd": accounting.DBD_PORT, "mariadbd": accounting.DB_PORT}
    ports.update({f"slurmd {n}": slurmd_base_port + i for i, n in enumerate(node_names(nodes))})
    return ports


def _prepare_dirs(state: Path, names: list[str]) -> None:
    """Create the state tree; the munge dir belongs to the munge user and is not world-writable
    (munged refuses insecure socket/log directories)."""
    lay = _layout(state)
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o755)
    for key in ("run", "log", "spool", "ctld_spool", "munge"):
        lay[key].mkdir(parents=True, exist_ok=True)
        lay[key].chmod(0o755)
    for n in names:
        (state / "spool" / f"slurmd-{n}").mkdir(parents=True, exist_ok=True)
    shutil.chown(lay["munge"], user="munge", group="munge")
    for f in lay["munge"].iterdir():
        shutil.chown(f, user="munge", group="munge")


def _ensure_munge_key() -> None:
    """Create /etc/munge/munge.key when the package did not (fresh containers sometimes lack it)."""
    if MUNGE_KEY.exists():
        return
    MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_KEY.parent, user="munge", group="munge")
    MUNGE_KEY.parent.chmod(0o700)
    res = subprocess.run([binary_path("mungekey"), "--create", "--keyfile", str(MUNGE_KEY)],
                         user="munge", group="munge", capture_output=True, text=True)
    if res.returncode != 0:
        raise ClusterError(f"mungekey --create failed: {res.stderr.strip()}")


def _start_munged(state: Path) -> None:
    """Our own munged, run as the munge user (it refuses root without --force)."""
    lay = _layout(state)
    if daemon_pid(lay["munge_pid"], "munged"):
        return
    lay["munge_socket"].unlink(missing_ok=True)
    run_daemon(
        [
            binary_path("munged"),
            f"--socket={lay['munge_socket']}",
            f"--pid-file={lay['munge_pid']}",
            f"--log-file={lay['munge_log']}",
            f"--seed-file={lay['munge_seed']}",
            f"--key-file={MUNGE_KEY}",
        ],
        "munged",
        user="munge",
        group="munge",
        env=daemon_env(),
    )


def _start_slurm(state: Path, names: list[str], conf: Path) -> None:
    """slurmctld, then one `slurmd -N nX` per emulated node (each forks into the background)."""
    lay = _layout(state)
    if not daemon_pid(lay["ctld_pid"], "slurmctld"):
        run_daemon([binary_path("slurmctld"), "-f", str(conf)], "slurmctld", env=daemon_env())
    for n in names:
        if not daemon_pid(_slurmd_pid(state, n), "slurmd"):
            run_daemon([binary_path("slurmd"), "-f", str(conf), "-N", n], f"slurmd {n}", env=daemon_env())


def _sinfo_nodes() -> dict[str, str] | None:
    """{node: state} from sinfo, None while slurmctld does not answer."""
    try:
        res = subprocess.run(
            [binary_path("sinfo"), "-h", "-N", "-o", "%N %t"],
            capture_output=True, text=True, timeout=15, env=client_env(),
        )
    except subprocess.TimeoutExpired:
        return None
    if res.returncode != 0:
        return None
    return dict(line.split(None, 1) for line in res.stdout.splitlines() if line.strip())


def _is_drained(node_state: str) -> bool:
    """sinfo's short state for drained/draining nodes, with any flag suffix (drain*, drng)."""
    return node_state.rstrip("*~#!%$@^-") in ("drain", "drng")


def _resume_drained(nodes: dict[str, str]) -> None:
    """Nodes drained in a previous life (e.g. a kill that timed out) stay drained across
    restarts; ReturnToService does not cover that, so resume them explicitly."""
    drained = [n for n, s in nodes.items() if _is_drained(s)]
    if drained:
        subprocess.run(
            [binary_path("scontrol"), "update", f"NodeName={','.join(drained)}", "State=RESUME"],
            capture_output=True, text=True, timeout=15, env=client_env(),
        )


def _wait_idle(state: Path, names: list[str], timeout: float) -> dict[str, str]:
    """Block until sinfo lists every node in a schedulable state; on timeout raise with log tails."""
    deadline = time.monotonic() + timeout
    seen: dict[str, str] | None = None
    resumed = False
    while time.monotonic() < deadline:
        seen = _sinfo_nodes()
        # Exact states: a trailing "*" (idle*) means slurmctld has lost contact with that slurmd.
        if seen is not None and all(seen.get(n, "") in READY_STATES for n in names):
            return seen
        if seen and not resumed and any(_is_drained(s) for s in seen.values()):
            _resume_drained(seen)
            resumed = True
        _check_daemons_alive(state, names)
        time.sleep(0.5)
    raise ClusterError(
        f"nodes not idle after {timeout:.0f}s (sinfo: {seen}); logs:\n" + _log_tails(state, names)
    )


def _check_daemons_alive(state: Path, names: list[str]) -> None:
    """Fail fast when a daemon died during start-up instead of waiting for the timeout."""
    for label, pid_file, binary in _daemons(state, names):
        if pid_file.exists() and not daemon_pid(pid_file, binary):
            raise ClusterError(f"{label} died during start-up; logs:\n" + _log_tails(state, names))


def _log_tails(state: Path, names: list[str], lines: int = 15) -> str:
    """Last lines of every daemon log: what a user needs to see why start-up failed."""
    lay = _layout(state)
    acct = accounting.layout(state)
    logs = [lay["munge_log"], acct["db_log"], acct["dbd_log"], lay["ctld_log"]] + [_slurmd_log(state, n) for n in names]
    out = []
    for log in logs:
        try:
            tail = log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            tail = ["(no log)"]
        out.append(f"==> {log} <==\n" + "\n".join(tail))
    return "\n".join(out)


def _settings(nodes: int, cpus_per_node: int, mem_mb_per_node: int, ctld_port: int, slurmd_base_port: int) -> dict:
    """What identifies a running cluster: up again with the same settings is a no-op."""
    return {
        "nodes": nodes,
        "cpus_per_node": cpus_per_node,
        "mem_mb_per_node": mem_mb_per_node,
        "ctld_port": ctld_port,
        "slurmd_base_port": slurmd_base_port,
    }


def _all_running(state: Path, names: list[str]) -> bool:
    """True when munged, slurmctld and every slurmd of `names` run from our pid files."""
    return all(daemon_pid(pid_file, binary) for _, pid_file, binary in _daemons(state, names))


def cluster_up(
    nodes: int = 3,
    cpus_per_node: int = 4,
    mem_mb_per_node: int = 8000,
    state_dir: Path | str | None = None,
    timeout: float = 60,
    force: bool = False,
    ctld_port: int = CTLD_PORT,
    slurmd_base_port: int = SLURMD_BASE_PORT,
) -> dict:
    """Boot (or confirm) an emulated `nodes`-node Slurm cluster; returns `cluster_status()`
    plus ``already_up`` and ``seconds``.

    Idempotent: the same settings again only waits for the nodes (and resumes drained
    ones); other settings or a half-dead cluster restart the daemons without cancelling
    jobs (slurmd re-attaches to running steps). Job state persists in the state dir
    across down/up, like a real controller's StateSaveLocation."""
    t0 = time.monotonic()
    if nodes < 1:
        raise ClusterError(f"nodes must be >= 1, got {nodes}")
    _require_root()
    state = state_dir_path(state_dir)
    names = node_names(nodes)
    wanted = _settings(nodes, cpus_per_node, mem_mb_per_node, ctld_port, slurmd_base_port)
    memory = limits.memory_enforcement()
    text = render_slurm_conf(state, nodes, cpus_per_node, mem_mb_per_node, ctld_port, slurmd_base_port,
                             memory=memory)
    conf_current = SLURM_CONF.exists() and SLURM_CONF.read_text() == text
    running = _read_state(state).get("settings") == wanted and _all_running(state, names)
    if running and conf_current:
        _wait_idle(state, names, timeout)
        return dict(cluster_status(state), already_up=True, seconds=time.monotonic() - t0)
    _check_conf_writable(SLURM_CONF, force)
    ensure_installed()
    _stop_daemons(state)  # a partial or differently-sized cluster: restart (jobs' steps survive)
    _check_ports(_ports(nodes, ctld_port, slurmd_base_port))
    _ensure_munge_key()
    _prepare_dirs(state, names)
    write_slurm_conf(text, SLURM_CONF, force=force)
    if memory == "cgroup":
        limits.write_cgroup_conf(SLURM_CONF.parent / "cgroup.conf")
    (state / "slurm.conf").write_text(text)  # a copy next to the logs, for bug reports
    add_hosts_block(nodes)
    _layout(state)["state_json"].write_text(
        json.dumps({"settings": wanted, "nodes": nodes, "conf": str(SLURM_CONF), "memory": memory}, indent=1)
    )
    _start_munged(state)
    accounting.start_database(state)
    accounting.start_slurmdbd(state)
    accounting.register(CLUSTER_NAME, sorted({"root", os.environ.get("SUDO_USER") or "root"}))
    _start_slurm(state, names, SLURM_CONF)
    _wait_idle(state, names, timeout)
    return dict(cluster_status(state), already_up=False, seconds=time.monotonic() - t0)


# ------------------------------------------------------------------------ shutdown


def _cancel_jobs() -> None:
    """Cancel queued/running jobs so no slurmstepd outlives the cluster (best effort)."""
    scancel = which("scancel")
    if scancel is None:
        return
    try:
        subprocess.run([scancel, "--state=PENDING"], capture_output=True, timeout=15, env=client_env())
        res = subprocess.run(
            [binary_path("squeue"), "-h", "-t", "R,CG,S", "-o", "%i"],
            capture_output=True, text=True, timeout=15, env=client_env(),
        )
        ids = res.stdout.split()
        if res.returncode == 0 and ids:
            subprocess.run([scancel, *ids], capture_output=True, timeout=15, env=client_env())
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                left = subprocess.run(
                    [binary_path("squeue"), "-h", "-t", "R,CG", "-o", "%i"],
                    capture_output=True, text=True, timeout=15, env=client_env(),
                )
                if left.returncode != 0 or not left.stdout.split():
                    break
                time.sleep(0.5)
    except (subprocess.TimeoutExpired, ClusterError):
        pass


def _stop_daemons(state: Path) -> list[str]:
    """Stop exactly the daemons our pid files name, in the reverse of their start order: slurmds
    first (they report to slurmctld), then slurmctld, slurmdbd, MariaDB, and munged last
    (everyone authenticates through it). Returns their labels."""
    names = _known_node_names(state)
    stopped = []
    for label, pid_file, binary in reversed(_daemons(state, names)):
        pid = daemon_pid(pid_file, binary)
        if pid:
            stop_pid(pid, binary)
            stopped.append(label)
        pid_file.unlink(missing_ok=True)
    _layout(state)["munge_socket"].unlink(missing_ok=True)
    return stopped


def cluster_down(state_dir: Path | str | None = None) -> dict:
    """Cancel the cluster's jobs (no slurmstepd should outlive it), stop the daemons we
    started and remove our /etc/hosts block. Idempotent; returns what was stopped.

    /etc/slurm/slurm.conf stays: harmless without daemons, and `up` rewrites it."""
    _require_root()
    state = state_dir_path(state_dir)
    if daemon_pid(_layout(state)["ctld_pid"], "slurmctld"):
        _cancel_jobs()
    stopped = _stop_daemons(state)
    remove_hosts_block()
    return {"stopped": stopped, "state_dir": str(state)}


# -------------------------------------------------------------------------- status


def cluster_status(state_dir: Path | str | None = None) -> dict:
    """Daemons (running or not, by pid file), nodes and states from sinfo, and paths.

    Works without root (reads /proc and calls sinfo), so users can check before
    submitting."""
    state = state_dir_path(state_dir)
    names = _known_node_names(state)
    daemons = {
        label: {"pid": daemon_pid(pid_file, binary), "pid_file": str(pid_file)}
        for label, pid_file, binary in _daemons(state, names)
    }
    for d in daemons.values():
        d["running"] = d["pid"] is not None
    ctld_up = daemons["slurmctld"]["running"]
    nodes = (_sinfo_nodes() or {}) if ctld_up else {}
    info = _read_state(state)
    return {
        "state_dir": str(state),
        "conf": str(SLURM_CONF),
        "conf_ours": SLURM_CONF.exists() and _conf_is_ours(SLURM_CONF),
        "settings": info.get("settings", {}),
        "memory": info.get("memory"),
        "daemons": daemons,
        "nodes": nodes,
        "up": bool(names) and all(d["running"] for d in daemons.values())
        and all(nodes.get(n, "") in READY_STATES for n in names),
    }


def format_status(status: dict) -> str:
    """Human-readable `cluster_status()`: one line per daemon and per node."""
    settings = status.get("settings") or {}
    head = "up" if status.get("up") else "down"
    lines = [f"cluster: {head}  (state {status['state_dir']}, conf {status['conf']}"
             + ("" if status.get("conf_ours") or head == "down" else ", NOT written by hpc.cluster") + ")"]
    if settings:
        lines.append(
            f"  {settings['nodes']} nodes x {settings['cpus_per_node']} CPUs, "
            f"{settings['mem_mb_per_node']} MB; slurmctld port {settings['ctld_port']}, "
            f"slurmd ports {settings['slurmd_base_port']}+"
        )
    if status.get("memory"):
        how = {"cgroup": "cgroup task plugin (OUT_OF_MEMORY)", "jobacct": "accounting gatherer (OverMemoryKill)"}
        lines.append(f"  accounting: slurmdbd + MariaDB (sacct); --mem enforced by {how[status['memory']]}")
    for label, d in status.get("daemons", {}).items():
        lines.append(f"  {label:<12} " + (f"running (pid {d['pid']})" if d["running"] else "stopped"))
    for node, st in sorted(status.get("nodes", {}).items(), key=lambda kv: (len(kv[0]), kv[0])):
        lines.append(f"  node {node:<7} {st}")
    return "\n".join(lines)
