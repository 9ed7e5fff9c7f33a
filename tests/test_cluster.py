"""The emulated Slurm cluster (hpc.cluster): real daemons, real jobs, no mocks.

Cluster tests need root (they start munged/slurmd and edit /etc/hosts) and the
Debian slurm/munge packages; they are skipped otherwise. The `slurm_cluster`
fixture boots 3 nodes once per session and leaves a cluster that was already up
alone (it only tears down what it started itself).
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hpc.cluster import emulated as cluster
from hpc.cluster.emulated import ClusterError

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
from conftest import HAVE_SLURM, IS_ROOT, cluster_test, needs_root  # noqa: E402


def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a client command; fail the test with its output when it fails."""
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res


def sbatch(script: str, cwd: Path, *args: str) -> str:
    """Submit a batch script; returns the job id."""
    path = cwd / "job.sh"
    path.write_text("#!/bin/bash\n" + textwrap.dedent(script))
    return run(["sbatch", "--parsable", *args, str(path)], cwd=cwd).stdout.strip().split(";")[0]


def job_state(job_id: str) -> str:
    """The job's state as squeue reports it; finished jobs stay listed (MinJobAge=86400)."""
    return run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"]).stdout.strip()


def wait_job(job_id: str, timeout: float = 30) -> str:
    """Poll until the job leaves PENDING/RUNNING/COMPLETING; returns the final state."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = job_state(job_id)
        if state and state not in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING"):
            return state
        time.sleep(0.3)
    subprocess.run(["scancel", job_id])
    raise AssertionError(f"job {job_id} still {state} after {timeout}s")


# ------------------------------------------------------- hermetic (no daemons)


def parse_slurm_conf(text: str) -> tuple[dict[str, str], list[dict[str, str]], list[dict[str, str]]]:
    """slurm.conf's own syntax: one ``Key=Value`` per line, except NodeName and PartitionName
    lines, which hold several space-separated pairs. Returns (settings, nodes, partitions);
    a setting given twice is an error (Slurm would silently keep one of them)."""
    settings, nodes, partitions = {}, [], []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        pairs = dict(pair.split("=", 1) for pair in line.split())
        if "NodeName" in pairs:
            nodes.append(pairs)
        elif "PartitionName" in pairs:
            partitions.append(pairs)
        else:
            (key, value), = pairs.items()
            assert key.lower() not in {k.lower() for k in settings}, f"{key} set twice"
            settings[key] = value
    return settings, nodes, partitions


@pytest.mark.parametrize("nodes, cpus, mem", [(1, 1, 500), (3, 4, 8000), (12, 2, 1000)])
def test_conf_declares_the_requested_nodes_and_keeps_its_files_in_the_state_dir(tmp_path, nodes, cpus, mem):
    state = tmp_path / "state"
    text = cluster.render_slurm_conf(state, nodes, cpus, mem, ctld_port=7000, slurmd_base_port=7100, hostname="box")
    assert text.startswith(cluster.CONF_MARKER)  # what write_slurm_conf recognizes as its own
    settings, node_lines, partitions = parse_slurm_conf(text)
    names = [f"n{i}" for i in range(1, nodes + 1)]
    assert [n["NodeName"] for n in node_lines] == names
    for node in node_lines:
        assert (node["CPUs"], node["RealMemory"]) == (str(cpus), str(mem))
        assert node["NodeHostname"] == "box" and node["NodeAddr"] == "127.0.0.1"
    # one slurmd per node on one machine: every node needs a port of its own, none the controller's
    ports = [int(n["Port"]) for n in node_lines]
    assert len(set(ports)) == nodes and 7000 not in ports and min(ports) == int(settings["SlurmdPort"]) == 7100
    assert settings["SlurmctldPort"] == "7000" and settings["SlurmctldHost"] == "box(127.0.0.1)"
    # one default partition holding exactly these nodes
    assert len(partitions) == 1 and partitions[0]["Default"] == "YES"
    assert partitions[0]["Nodes"].split(",") == names
    # per-node files apart (%n), and every file and directory under the state directory, so
    # two clusters with two state directories never share one
    for key in ("SlurmdSpoolDir", "SlurmdPidFile", "SlurmdLogFile"):
        assert "%n" in settings[key], key
    paths = {k: v for k, v in settings.items() if v.startswith("/") and k not in ("MailProg",)}
    paths["munge socket"] = settings["AuthInfo"].removeprefix("socket=")
    assert {"StateSaveLocation", "SlurmdSpoolDir", "SlurmctldPidFile", "SlurmctldLogFile"} <= set(paths)
    for key, value in paths.items():
        assert Path(value).is_relative_to(state), (key, value)


@pytest.mark.skipif(not cluster.which("slurmd"), reason="slurmd not installed")
def test_slurmd_reads_the_rendered_conf_as_the_requested_nodes(tmp_path):
    """slurmd itself parses the file (``-G``: read the configuration, print the node's GRES and
    exit; no daemon starts): it accepts it for each declared node and no other, and reads the
    CPUs asked for. Its parser rejects unknown keys, so acceptance means this Slurm knows every
    setting written."""
    state = tmp_path / "state"
    (state / "log").mkdir(parents=True)
    cpus = (os.cpu_count() or 1) + 3  # unlike the hardware, so that slurmd logs what it read
    conf = tmp_path / "slurm.conf"
    conf.write_text(cluster.render_slurm_conf(state, 2, cpus, 1000, hostname="box"))

    def slurmd(node: str, path: Path = conf) -> subprocess.CompletedProcess:
        return subprocess.run([cluster.which("slurmd"), "-G", "-f", str(path), "-N", node],
                              capture_output=True, text=True, timeout=30)

    for node in ("n1", "n2"):
        assert slurmd(node).returncode == 0, slurmd(node).stderr
        log = (state / "log" / f"slurmd-{node}.log").read_text()
        assert f"Node configuration differs from hardware: CPUs={cpus}:" in log, log
    assert slurmd("n3").returncode != 0  # not declared
    broken = tmp_path / "broken.conf"
    broken.write_text(conf.read_text() + "NoSuchSetting=1\n")
    result = slurmd("n1", broken)
    assert result.returncode != 0 and "NoSuchSetting" in result.stderr


def test_refuses_to_overwrite_a_foreign_slurm_conf(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=site\n")
    with pytest.raises(ClusterError, match="not written by hpc.cluster"):
        cluster.write_slurm_conf("# new\n", conf)
    assert conf.read_text() == "ClusterName=site\n"
    cluster.write_slurm_conf(cluster.CONF_MARKER + "\n", conf, force=True)
    cluster.write_slurm_conf(cluster.CONF_MARKER + " again\n", conf)  # ours now: no force needed
    assert conf.read_text().endswith("again\n")


def test_hosts_block_is_added_once_and_removed(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n::1 localhost")
    cluster.add_hosts_block(3, hosts)
    cluster.add_hosts_block(2, hosts)  # replaces, never duplicates
    text = hosts.read_text()
    assert text.count(cluster.HOSTS_BEGIN) == 1
    assert "127.0.0.1 n1 n2\n" in text and "n3" not in text
    cluster.remove_hosts_block(hosts)
    cluster.remove_hosts_block(hosts)
    assert hosts.read_text() == "127.0.0.1 localhost\n::1 localhost\n"


def test_port_in_use_is_detected():
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert cluster.port_in_use(port)
        with pytest.raises(ClusterError, match=f"port {port} \\(slurmctld\\) is already in use"):
            cluster._check_ports({"slurmctld": port})
    assert not cluster.port_in_use(port)


def test_not_root_is_a_clear_error():
    """Drop to `nobody` in a forked child (a real unprivileged process) and call cluster_up."""
    if not IS_ROOT:
        with pytest.raises(ClusterError, match="needs root"):
            cluster.cluster_up()
        return
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            nobody = pwd.getpwnam("nobody")
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            cluster.cluster_up()
            msg = "no error"
        except ClusterError as exc:
            msg = str(exc)
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            msg = f"unexpected {exc!r}"
        os.write(write_fd, msg.encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        msg = fh.read()
    os.waitpid(pid, 0)
    assert "needs root" in msg and "\n" not in msg, msg


# ------------------------------------------------------------ the real cluster


@pytest.mark.slow
@pytest.mark.cluster
@needs_root
@pytest.mark.skipif(not HAVE_SLURM, reason="slurm/munge not installed")
def test_port_taken_by_another_program_fails_before_starting(tmp_path):
    """Another program on the slurmctld port: one-line error, nothing started or written."""
    conf_before = cluster.SLURM_CONF.read_text() if cluster.SLURM_CONF.exists() else None
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ClusterError, match=f"port {port} \\(slurmctld\\) is already in use"):
            cluster.cluster_up(2, state_dir=tmp_path / "state", ctld_port=port, slurmd_base_port=port + 1)
    assert (cluster.SLURM_CONF.read_text() if cluster.SLURM_CONF.exists() else None) == conf_before
    assert not (tmp_path / "state" / "run" / "slurmctld.pid").exists()


@pytest.mark.usefixtures("slurm_cluster")
class TestCluster:
    pytestmark = cluster_test

    def test_up_again_is_a_no_op(self):
        status = cluster.cluster_up(**cluster.cluster_status()["settings"])
        assert status["already_up"] and status["seconds"] < 5
        assert set(status["nodes"]) >= {"n1", "n2", "n3"}
        assert all(s in cluster.READY_STATES for s in status["nodes"].values())

    def test_status_and_names_resolve(self):
        status = cluster.cluster_status()
        assert status["up"] and status["conf_ours"]
        assert all(d["running"] for d in status["daemons"].values())
        text = cluster.format_status(status)
        assert "cluster: up" in text and "node n3" in text and "slurmctld    running" in text
        assert socket.gethostbyname("n2") == "127.0.0.1"  # the /etc/hosts block

    def test_multinode_batch_job_and_finished_job_in_squeue(self, tmp_path):
        job = sbatch(
            """\
            #SBATCH -N 2 -n 4 -o out-%j.txt
            srun bash -c 'echo "$SLURMD_NODENAME $SLURM_PROCID"' > ranks.txt
            """,
            tmp_path,
        )
        assert wait_job(job) == "COMPLETED"
        lines = sorted((tmp_path / "ranks.txt").read_text().split("\n")[:-1], key=lambda l: l.split()[1])
        assert [l.split()[1] for l in lines] == ["0", "1", "2", "3"]
        assert len({l.split()[0] for l in lines}) == 2  # two distinct node names
        assert run(["squeue", "-h", "-t", "CD", "-j", job, "-o", "%t"]).stdout.strip() == "CD"

    def test_scancel(self, tmp_path):
        job = sbatch("sleep 300\n", tmp_path, "-o", "/dev/null")
        deadline = time.monotonic() + 15
        while job_state(job) != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.2)
        run(["scancel", job])
        assert wait_job(job, timeout=20) == "CANCELLED"

    def test_memory_is_a_real_request(self, tmp_path):
        res = subprocess.run(["sbatch", "--mem=9000", "--wrap", "true"], cwd=tmp_path, capture_output=True, text=True)
        assert res.returncode != 0 and "Memory specification can not be satisfied" in res.stderr

    def test_mpi_allreduce_over_pmi2(self, tmp_path):
        code = (
            "from mpi4py import MPI; c = MPI.COMM_WORLD; "
            "print(c.Get_rank(), c.Get_size(), c.allreduce(1), flush=True)"
        )
        res = run(["srun", "-N2", "-n4", "--mpi=pmi2", PYTHON, "-c", code], cwd=tmp_path, timeout=60)
        rows = sorted(tuple(map(int, line.split())) for line in res.stdout.split("\n") if line.strip())
        assert rows == [(0, 4, 4), (1, 4, 4), (2, 4, 4), (3, 4, 4)], res.stdout + res.stderr

    def test_jax_distributed_gather(self, tmp_path):
        # Results go to one file per process: gloo's C++ "[Gloo] Rank i is connected" lines
        # share stdout with Python and can glue onto a printed line.
        script = tmp_path / "gather.py"
        script.write_text(textwrap.dedent("""\
            import json, sys
            import jax
            jax.distributed.initialize()  # Slurm auto-detection: coordinator on the first node
            import jax.numpy as jnp
            from jax.experimental import multihost_utils
            i = jax.process_index()
            g = multihost_utils.process_allgather(jnp.array([i, 10 * i]))
            out = [jax.process_count(), jax.device_count(), jax.local_device_count(), g.tolist()]
            with open(f"{sys.argv[1]}/rank{i}.json", "w") as fh:
                json.dump(out, fh)
            """))
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
        res = run(["srun", "-N2", "-n4", PYTHON, str(script), str(tmp_path)], cwd=tmp_path, env=env, timeout=90)
        gathered = [[0, 0], [1, 10], [2, 20], [3, 30]]
        for i in range(4):
            rank = tmp_path / f"rank{i}.json"
            assert rank.exists(), res.stdout + res.stderr
            assert json.loads(rank.read_text()) == [4, 8, 2, gathered]

    def test_snakemake_slurm_profile(self, tmp_path):
        """The repo's profiles/slurm on a throwaway workflow: a plain rule and a 2-node MPI rule."""
        (tmp_path / "Snakefile").write_text(textwrap.dedent(f"""\
            rule all:
                input: "plain.txt", "mpi.txt"
            rule plain:
                output: "plain.txt"
                threads: 2
                shell: "echo $SLURMD_NODENAME $SLURM_CPUS_PER_TASK > {{output}}"
            rule mpi:
                output: "mpi.txt"
                resources: nodes=2, tasks=4, mpi="srun --mpi=pmi2"
                shell: "{{resources.mpi}} -n 4 {PYTHON} -c 'from mpi4py import MPI; import os; c = MPI.COMM_WORLD; print(os.environ[\\"SLURMD_NODENAME\\"], c.Get_rank(), c.allreduce(1))' > {{output}}"
            """))
        res = run([PYTHON, "-m", "snakemake", "--profile", str(REPO / "profiles" / "slurm")],
                  cwd=tmp_path, timeout=120)
        assert (tmp_path / "plain.txt").read_text().split()[1] == "2"  # threads -> --cpus-per-task
        rows = [line.split() for line in (tmp_path / "mpi.txt").read_text().splitlines()]
        assert sorted(int(r[1]) for r in rows) == [0, 1, 2, 3] and {r[2] for r in rows} == {"4"}
        assert len({r[0] for r in rows}) == 2, rows
        assert "2 of 3 steps" in res.stdout + res.stderr or "3 of 3 steps" in res.stdout + res.stderr
