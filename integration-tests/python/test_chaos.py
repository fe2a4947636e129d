"""The chaos harness's short form (integration-tests/chaos/chaos.py): 10 kill -9 under load
and the lake failing for a while, then every acknowledged record in the lake exactly once; and
the disk under the buffer full (a tmpfs the script mounts), answered only with retryable
errors, every acknowledged record still in the lake. The long form is run by hand
(docs/operations.md, "Chaos")."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import WEIR_BIN

CHAOS = Path(__file__).resolve().parents[1] / "chaos" / "chaos.py"


def run_chaos(args, timeout):
    seed = int(os.environ.get("TEST_WEIR_CHAOS_SEED") or int.from_bytes(os.urandom(4), "big") >> 1)
    cmd = [sys.executable, str(CHAOS), "--seed", str(seed), "--weir", WEIR_BIN, *args]
    # On a timeout the script gets SIGTERM, so it still unmounts its tmpfs and ends its processes.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
        raise AssertionError(f"chaos did not finish in {timeout}s (seed {seed}):\n{out[-8000:]}")
    print(out)
    assert proc.returncode == 0, f"chaos failed (seed {seed}; rerun: {' '.join(cmd)}):\n{out[-8000:]}"
    summary = next(l for l in out.splitlines() if l.startswith("chaos summary:"))
    fields = dict(f.split("=", 1) for f in summary.removeprefix("chaos summary: ").split() if "=" in f)
    assert fields["lost"] == "0" and fields["duplicated"] == "0" and fields["unexpected"] == "0"
    assert int(fields["requests_acked"]) > 0
    assert fields["non_retryable"] == "0"
    return fields


def can_mount_tmpfs():
    """Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN), tried for real."""
    with tempfile.TemporaryDirectory() as d:
        try:
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d], capture_output=True)
        except FileNotFoundError:
            return False
        if r.returncode != 0:
            return False
        subprocess.run(["umount", d])
        return True


def test_chaos_kills_and_lake_outage():
    # The inner waits (first start, drain of 120 s) fit in the outer bound with room.
    fields = run_chaos(["--kills", "10", "--disk-full", "0"], timeout=400)
    assert fields["kills"] == "10"
    assert int(fields["acked_while_lake_down"]) > 0


def test_chaos_disk_full():
    if not can_mount_tmpfs():
        pytest.skip("the disk-full phase needs permission to mount a tmpfs (root with CAP_SYS_ADMIN)")
    fields = run_chaos(["--kills", "1", "--lake-outage", "0", "--disk-full", "4"], timeout=400)
    assert fields["disk_full_answers"] != "skipped" and int(fields["retryable_while_disk_full"]) > 0
