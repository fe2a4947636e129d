"""Loki push with real clients: python-logging-loki-v2 (JSON, modern and legacy formats) and
npm winston-loki (snappy-compressed protobuf, no Content-Encoding header); pyarrow reads the lake."""

import gzip
import json
import logging
import subprocess
import time
from pathlib import Path

import logging_loki
import requests

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


def loki_url(weir, path="/loki/api/v1/push"):
    return f"http://127.0.0.1:{weir.loki_port}{path}"


def test_python_logging_loki_json(weir):
    assert requests.get(loki_url(weir, "/ready"), timeout=5).status_code == 200
    log = logging.getLogger("weir.loki.py")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    modern = logging_loki.LokiHandler(url=loki_url(weir), tags={"service_name": "pyapp", "env": "test"},
                                      version="1", headers={"X-Scope-OrgID": "team-py"})
    legacy = logging_loki.LokiHandler(url=loki_url(weir, "/api/prom/push"), tags={"app": "legacy"}, version="0",
                                      headers={"X-Scope-OrgID": "team-py"})
    log.addHandler(modern)
    log.warning("modern line", extra={"tags": {"request_id": "r-1"}})
    log.error("second modern line")
    log.removeHandler(modern)
    log.addHandler(legacy)
    log.info("legacy line")
    log.removeHandler(legacy)

    weir.wait_rows("logs", 3, "team-py")
    rows = {r["body"]: r for r in weir.rows("team-py", "logs")}
    r = rows["modern line"]
    assert (r["severity_text"], r["severity_number"]) == ("warning", 13)
    assert r["service_name"] == "pyapp"
    res = dict(r["resource_attributes"])
    assert res["service.name"] == "pyapp" and res["env"] == "test" and res["request_id"] == "r-1"
    assert res["logger"] == "weir.loki.py"
    assert abs(r["timestamp"] - time.time_ns()) < 60e9
    assert rows["second modern line"]["severity_number"] == 17
    legacy_row = rows["legacy line"]
    assert legacy_row["service_name"] == "legacy" and legacy_row["severity_number"] == 9
    weir.check_index_matches_lake("team-py", "logs")


def test_winston_loki_snappy_protobuf(weir):
    out = subprocess.run(["node", str(NODE_DIR / "winston-loki-send.js"), f"http://127.0.0.1:{weir.loki_port}", "team-node", "30"],
                         capture_output=True, text=True, timeout=60, cwd=NODE_DIR)
    assert out.returncode == 0, out.stderr + out.stdout
    weir.wait_rows("logs", 30, "team-node")
    rows = weir.rows("team-node", "logs")
    # winston-loki's default line format is the message followed by its meta as JSON.
    levels = ["info", "warn"]
    want = sorted(f'node line {i} {{"level":"{levels[i % 2]}"}}' for i in range(30))
    assert sorted(r["body"] for r in rows) == want
    for r in rows:
        i = int(r["body"].split()[2])
        res = dict(r["resource_attributes"])
        assert res["app"] == "node-app" and res["env"] == "test" and res["worker"] == f"w{i % 3}"
        assert r["service_name"] == "node-app"
        assert r["severity_text"] == levels[i % 2] and r["severity_number"] == (13 if i % 2 else 9)
    assert 'weir_received_records_total{signal="logs",source="loki"} 30' in weir.metrics()


def test_loki_json_gzip_structured_metadata_and_errors(weir):
    body = {"streams": [{"stream": {"service_name": "gz", "level": "error"},
                         "values": [["1700000000000000042", "zipped", {"trace_id": "0af7651916cd43dd8448eb211c80319c", "user": "u1"}]]}]}
    r = requests.post(loki_url(weir), data=gzip.compress(json.dumps(body).encode()),
                      headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}, timeout=10)
    assert r.status_code == 204, r.text
    weir.wait_rows("logs", 1)
    row = weir.rows()[0]
    assert row["timestamp"] == 1700000000000000042
    assert dict(row["attributes"]) == {"trace_id": "0af7651916cd43dd8448eb211c80319c", "user": "u1"}
    assert row["severity_number"] == 17

    def post(data, ctype, **h):
        return requests.post(loki_url(weir), data=data, headers={"Content-Type": ctype, **h}, timeout=10)

    r = post(b"{not json", "application/json")
    assert r.status_code == 400 and "malformed Loki JSON push request" in r.text
    r = post(b"\x05garbage", "application/x-protobuf")
    assert r.status_code == 400 and "snappy" in r.text
    r = post(json.dumps({"streams": [{"stream": {}, "values": [["yesterday", "x"]]}]}), "application/json")
    assert r.status_code == 400 and "not unix nanoseconds" in r.text
    r = post(b"x", "text/plain")
    assert r.status_code == 415
    r = post(json.dumps(body), "application/json", **{"X-Scope-OrgID": "bad/tenant"})
    assert r.status_code == 400 and "not a valid tenant" in r.text
    assert post(json.dumps(body), "application/json").status_code == 204
