"""Job accounting for the emulated cluster, as a production site has it: a MariaDB server and
slurmdbd, so that ``sacct`` answers for finished jobs long after they left ``squeue``.

- MariaDB runs as its own server (``mariadbd --no-defaults``) on 127.0.0.1:``DB_PORT`` with its
  data, socket and log under the cluster's state directory; a system MariaDB, if any, is never
  touched. The database user ``slurm`` gets a random password, kept (mode 0600) in the state
  directory and in ``/etc/slurm/slurmdbd.conf`` (which slurmdbd requires to be 0600).
- slurmdbd listens on ``DBD_PORT``; slurm.conf points slurmctld at it
  (``AccountingStorageType=accounting_storage/slurmdbd``) and gathers per-task usage
  (``jobacct_gather/linux``: MaxRSS, TotalCPU); how ``--mem`` is enforced: hpc.cluster.limits.
- The cluster, an account ``ACCOUNT`` and root's association with it are registered once with
  ``sacctmgr``; associations are enforced, as on most sites.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

from hpc.cluster.processes import (
    ClusterError,
    binary_path,
    client_env,
    daemon_env,
    daemon_pid,
    run_daemon,
    stop_pid,
)

DB_PORT = 13306
DBD_PORT = 6819
DB_NAME = "slurm_acct_db"
DB_USER = "slurm"
ACCOUNT = "default"
SLURMDBD_CONF = Path("/etc/slurm/slurmdbd.conf")
APT_PACKAGES = ["slurmdbd", "mariadb-server", "mariadb-client"]
NEEDED_BINARIES = ["slurmdbd", "sacct", "sacctmgr", "mariadbd", "mariadb-install-db", "mariadb"]


def layout(state: Path) -> dict[str, Path]:
    db = state / "db"
    return {
        "db": db,
        "db_data": db / "data",
        "db_socket": db / "mysqld.sock",
        "db_pid": db / "mysqld.pid",
        "db_password": db / "slurm.password",
        "db_log": state / "log" / "mariadb.log",
        "dbd_pid": state / "run" / "slurmdbd.pid",
        "dbd_log": state / "log" / "slurmdbd.log",
    }


def daemons(state: Path) -> list[tuple[str, Path, str]]:
    """(label, pid file, binary) of the accounting daemons, in start order."""
    lay = layout(state)
    return [("mariadbd", lay["db_pid"], "mariadbd"), ("slurmdbd", lay["dbd_pid"], "slurmdbd")]


def slurm_conf_lines(munge_socket: Path, dbd_port: int = DBD_PORT) -> list[str]:
    """The accounting part of slurm.conf; every line says why."""
    return [
        # Finished jobs, their states, exit codes, MaxRSS and TotalCPU go to slurmdbd (sacct).
        "AccountingStorageType=accounting_storage/slurmdbd",
        "AccountingStorageHost=127.0.0.1",
        f"AccountingStoragePort={dbd_port}",
        # Connections to slurmdbd authenticate through this munged socket (AuthInfo is not used).
        f"AccountingStoragePass={munge_socket}",
        # The job's --comment (Snakemake's plugin writes rule_<rule>_wildcards_<values> there) is
        # kept in the database, so a finished shard job is found by its comment.
        "AccountingStoreFlags=job_comment",
        # Jobs need an association (user, account) as on a production site; limits are enforced.
        "AccountingStorageEnforce=associations,limits",
        # Per-task usage (MaxRSS, TotalCPU) sampled every 2 s; --mem: hpc.cluster.limits.
        "JobAcctGatherType=jobacct_gather/linux",
        "JobAcctGatherFrequency=task=2",
    ]


def render_slurmdbd_conf(state: Path, password: str, dbd_port: int = DBD_PORT, db_port: int = DB_PORT) -> str:
    lay = layout(state)
    return "\n".join([
        "# hpc-cluster: written by hpc.cluster for the emulated cluster's accounting.",
        "DbdHost=localhost",
        "DbdAddr=127.0.0.1",
        f"DbdPort={dbd_port}",
        "SlurmUser=root",
        "AuthType=auth/munge",
        f"AuthInfo=socket={state / 'munge' / 'munge.socket.2'}",
        f"PidFile={lay['dbd_pid']}",
        f"LogFile={lay['dbd_log']}",
        "DebugLevel=info",
        "StorageType=accounting_storage/mysql",
        "StorageHost=127.0.0.1",
        f"StoragePort={db_port}",
        f"StorageUser={DB_USER}",
        f"StoragePass={password}",
        f"StorageLoc={DB_NAME}",
        "",
    ])


def _password(state: Path) -> str:
    path = layout(state)["db_password"]
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_hex(16)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password


def _sql(state: Path, statement: str) -> None:
    res = subprocess.run([binary_path("mariadb"), "--no-defaults", "-S", str(layout(state)["db_socket"]), "-u", "root",
                          "-e", statement], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise ClusterError(f"mariadb: {res.stderr.strip()}")


def start_database(state: Path, db_port: int = DB_PORT, timeout: float = 60) -> None:
    """Our own MariaDB server, its data directory made on first use, and the slurm user."""
    lay = layout(state)
    lay["db"].mkdir(parents=True, exist_ok=True)
    lay["db"].chmod(0o700)
    if not (lay["db_data"] / "mysql").is_dir():
        res = subprocess.run([binary_path("mariadb-install-db"), "--no-defaults", "--user=root",
                              f"--datadir={lay['db_data']}", "--auth-root-authentication-method=socket",
                              "--skip-test-db"], capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            raise ClusterError(f"mariadb-install-db failed: {(res.stderr or res.stdout).strip()[-500:]}")
    if not daemon_pid(lay["db_pid"], "mariadbd"):
        lay["db_socket"].unlink(missing_ok=True)
        with open(lay["db_log"], "ab") as log:
            # mariadbd stays in the foreground: a session of its own, so it outlives this process.
            subprocess.Popen([binary_path("mariadbd"), "--no-defaults", "--user=root", f"--datadir={lay['db_data']}",
                              f"--socket={lay['db_socket']}", f"--port={db_port}", "--bind-address=127.0.0.1",
                              f"--pid-file={lay['db_pid']}", "--innodb-buffer-pool-size=64M",
                              # slurmdbd's schema needs these (its start-up log says so otherwise).
                              "--innodb-lock-wait-timeout=900", "--max-allowed-packet=64M"],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                             env=daemon_env())
        deadline = time.monotonic() + timeout
        while not (lay["db_socket"].exists() and daemon_pid(lay["db_pid"], "mariadbd")):
            if time.monotonic() > deadline:
                raise ClusterError(f"mariadbd did not start within {timeout:.0f} s; see {lay['db_log']}")
            time.sleep(0.2)
    password = _password(state)
    for host in ("127.0.0.1", "localhost"):
        _sql(state, f"CREATE USER IF NOT EXISTS '{DB_USER}'@'{host}' IDENTIFIED BY '{password}'; "
                    f"ALTER USER '{DB_USER}'@'{host}' IDENTIFIED BY '{password}'; "
                    f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'{host}';")


def start_slurmdbd(state: Path, dbd_port: int = DBD_PORT, db_port: int = DB_PORT, timeout: float = 60) -> None:
    """slurmdbd, with its config where it looks for it (beside slurm.conf), then wait until it answers."""
    lay = layout(state)
    text = render_slurmdbd_conf(state, _password(state), dbd_port, db_port)
    SLURMDBD_CONF.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(SLURMDBD_CONF, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(SLURMDBD_CONF, 0o600)
    if not daemon_pid(lay["dbd_pid"], "slurmdbd"):
        run_daemon([binary_path("slurmdbd")], "slurmdbd", env=daemon_env())
    deadline = time.monotonic() + timeout
    while True:
        res = sacctmgr("-n", "-P", "list", "cluster", "format=cluster", check=False)
        if res.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"slurmdbd does not answer after {timeout:.0f} s: {res.stderr.strip()}; "
                               f"see {lay['dbd_log']}")
        time.sleep(0.5)


def sacctmgr(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([binary_path("sacctmgr"), *args], capture_output=True, text=True, timeout=60, env=client_env())
    if check and res.returncode != 0:
        raise ClusterError(f"sacctmgr {' '.join(args)}: {(res.stderr or res.stdout).strip()}")
    return res


def register(cluster_name: str, users: list[str]) -> None:
    """The cluster, the account and each user's association with it (idempotent)."""
    def listed(*what: str) -> set[str]:
        return set(sacctmgr("-n", "-P", "list", *what).stdout.split())

    if cluster_name not in listed("cluster", "format=cluster"):
        sacctmgr("-i", "add", "cluster", cluster_name)
    if ACCOUNT not in listed("account", "format=account"):
        sacctmgr("-i", "add", "account", ACCOUNT, f"cluster={cluster_name}",
                 "Description=emulated cluster", "Organization=hpc")
    known = listed("user", "format=user")
    for user in users:
        if user not in known:
            sacctmgr("-i", "add", "user", user, f"account={ACCOUNT}", f"cluster={cluster_name}")


def stop(state: Path) -> list[str]:
    """Stop slurmdbd, then MariaDB; returns what was stopped."""
    stopped = []
    for label, pid_file, binary in reversed(daemons(state)):
        pid = daemon_pid(pid_file, binary)
        if pid:
            stop_pid(pid, binary, timeout=30)
            stopped.append(label)
        pid_file.unlink(missing_ok=True)
    return stopped
