"""Retention per tenant and signal on the embedded control plane (`weir run`): a dry run
changes nothing and says what it would delete; the sweeper removes expired segments from the
index first and their objects after, and nothing newer or of another tenant."""

import json
import subprocess
import time

from conftest import WEIR_BIN
from test_durability import logs_request, post_logs

HOUR = 3_600_000_000_000
DAY = 24 * HOUR

RETENTION = """
[retention]
interval = "300ms"
dry_run = true
[[retention.rules]]
tenant = "short"
signal = "logs"
max_age = "2d"
[[retention.rules]]
tenant = "short"
signal = "traces"
max_age = "1h"
[compaction]
enabled = false
grace = "1s"
[iceberg]
interval = "300ms"
snapshot_max_age = "1s"
"""


def test_retention_dry_run_then_sweep(weir_factory):
    w = weir_factory(RETENTION)
    now = time.time_ns()
    old, recent = (now - 5 * DAY) // HOUR * HOUR, now // HOUR * HOUR
    assert post_logs(w, logs_request(1, 30, hour_ns=old), **{"X-Scope-OrgID": "short"}).status_code == 200
    assert post_logs(w, logs_request(2, 20, hour_ns=recent), **{"X-Scope-OrgID": "short"}).status_code == 200
    assert post_logs(w, logs_request(3, 10, hour_ns=old), **{"X-Scope-OrgID": "long"}).status_code == 200
    w.wait_rows("logs", 50, tenant="short")
    w.wait_rows("logs", 10, tenant="long")
    old_keys = {s["object_key"] for s in w.segments("short", "logs") if s["max_timestamp"] < now - 2 * DAY}
    assert len(old_keys) == 1

    # The sweeper in dry-run mode logs and changes nothing.
    deadline = time.time() + 10
    while "retention dry run: would delete" not in w.log.read_text():
        assert time.time() < deadline, w.log.read_text()[-3000:]
        time.sleep(0.2)
    assert len(w.segments("short", "logs")) == 2
    assert len(w.files("short")) == 2
    w.stop()

    # `weir retention --dry-run` prints exactly the expired segment.
    r = subprocess.run([WEIR_BIN, "retention", "--config", str(w.config), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(x["action"], x["object_key"]) for x in lines] == [("would_delete", k) for k in old_keys]
    assert "1 segment(s) would expire" in r.stderr

    # For real: index first, then the object; the recent segment and tenant "long" stay.
    w.config.write_text(w.config.read_text().replace("dry_run = true", "dry_run = false"))
    w.start()
    deadline = time.time() + 20
    while True:
        keys = {s["object_key"] for s in w.segments("short", "logs")}
        files = {str(f.relative_to(w.lake)) for f in w.files("short")}
        if not (keys & old_keys) and not (files & old_keys):
            break
        assert time.time() < deadline, w.log.read_text()[-3000:]
        time.sleep(0.2)
    assert sum(s["row_count"] for s in w.segments("short", "logs")) == 20
    w.check_index_matches_lake("short", "logs")
    assert sum(s["row_count"] for s in w.segments("long", "logs")) == 10
    w.check_index_matches_lake("long", "logs")
    bodies = {r["body"] for r in w.rows("short", "logs")}
    assert bodies == {f"b2-r{i}-" + "x" * 40 for i in range(20)}
    assert "weir_retention_expired_segments_total 1" in w.metrics()
    assert "weir_lake_objects_deleted_total 1" in w.metrics()
