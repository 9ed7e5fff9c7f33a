"""Gathering every process's record across a job: records of any size (they once had to fit in
4096 bytes, and a shard whose record did not could never complete)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

PROGRAM = """
import json, sys
from hpc.execution import distributed
launch = distributed.start(distributed.detect_launch())
rank = launch.process_id
# Rank 1's record is far larger than rank 0's, with text that JSON escapes.
record = {"rank": rank, "errors": ["model failed: x \\u00e9 \\"quoted\\"" * (1 + 3000 * rank)], "cpus": list(range(256 * rank))}
parts = distributed.gather(launch, record)
print(json.dumps([[p["rank"], len(p["errors"][0]), len(p["cpus"])] for p in parts]))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_records_larger_than_4096_bytes_are_gathered_whole():
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", HPC_COORDINATOR=f"127.0.0.1:{port}",
                   HPC_NUM_PROCESSES="2", HPC_PROCESS_ID=str(rank), HPC_CPU_BIND="none")
        procs.append(subprocess.Popen([sys.executable, "-c", PROGRAM], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    one = len('model failed: x \u00e9 "quoted"')
    expected = [[0, one, 0], [1, one * 3001, 256]]
    # gloo prints its connection lines to stdout first; the record list is the last line
    assert [json.loads(out.strip().splitlines()[-1]) for out, _ in outs] == [expected, expected]
