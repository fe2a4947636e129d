"""The chaos harness's short form (integration-tests/chaos/chaos.py): 10 kill -9 under load,
the lake failing for a while and the disk under the buffer full, then every acknowledged
record in the lake exactly once. The long form is run by hand (docs/operations.md, "Chaos")."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import WEIR_BIN

CHAOS = Path(__file__).resolve().parents[1] / "chaos" / "chaos.py"


def test_chaos_short_form():
    seed = int(os.environ.get("TEST_WEIR_CHAOS_SEED") or int.from_bytes(os.urandom(4), "big") >> 1)
    cmd = [sys.executable, str(CHAOS), "--kills", "10", "--seed", str(seed), "--weir", WEIR_BIN]
    # On a timeout the script gets SIGTERM, so it still unmounts its tmpfs and ends its processes.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
        raise AssertionError(f"chaos did not finish in 150s (seed {seed}):\n{out[-8000:]}")
    print(out)
    assert proc.returncode == 0, f"chaos failed (seed {seed}; rerun: {' '.join(cmd)}):\n{out[-8000:]}"
    summary = next(l for l in out.splitlines() if l.startswith("chaos summary:"))
    fields = dict(f.split("=", 1) for f in summary.removeprefix("chaos summary: ").split() if "=" in f)
    assert fields["kills"] == "10"
    assert fields["lost"] == "0" and fields["duplicated"] == "0" and fields["unexpected"] == "0"
    assert int(fields["requests_acked"]) > 0 and int(fields["acked_while_lake_down"]) > 0
    assert fields["non_retryable"] == "0"
    if os.geteuid() == 0:
        assert fields["disk_full_answers"] != "skipped" and int(fields["retryable_while_disk_full"]) > 0
