"""The Rust OpenTelemetry SDK with `opentelemetry-otlp` (gRPC, gzip) as a second real client:
it sends logs, spans and metrics to the real `weir` binary; pyarrow and DuckDB read the lake."""

import json
import os
import subprocess
from pathlib import Path

from conftest import WEIR_BIN

CLIENT = os.environ.get("TEST_WEIR_RUST_CLIENT") or str(Path(WEIR_BIN).with_name("weir-otel-rust-client"))


def test_rust_opentelemetry_otlp_exporter(weir):
    tenant = "rust"
    out = subprocess.run(
        [CLIENT, "--endpoint", f"http://{weir.grpc}", "--tenant", tenant, "--logs", "40"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    sent = json.loads(out.stdout)

    weir.wait_rows("logs", 40, tenant)
    weir.wait_rows("traces", 2, tenant)
    weir.wait_rows("metrics", 3, tenant)

    severities = [("INFO", 9), ("WARN", 13), ("ERROR", 17), ("DEBUG", 5)]
    logs = sorted(weir.rows(tenant, "logs"), key=lambda r: r["timestamp"])
    assert len(logs) == 40
    for i, r in enumerate(logs):
        assert r["timestamp"] == sent["first_log_time"] + i
        assert r["body"] == f"rust log {i}"
        assert (r["severity_text"], r["severity_number"]) == severities[i % 4]
        assert dict(r["attributes"]) == {"i": str(i), "kind": "rust"}
        assert r["service_name"] == "rust-client"
        assert r["scope_name"] == "rust.client"
        assert dict(r["resource_attributes"])["deployment.environment"] == "test"

    spans = {r["name"]: r for r in weir.rows(tenant, "traces")}
    assert set(spans) == {"rust.parent", "rust.child"}
    assert spans["rust.parent"]["trace_id"] == sent["trace_id"]
    assert spans["rust.parent"]["span_id"] == sent["parent_span_id"]
    assert spans["rust.parent"]["parent_span_id"] is None
    assert spans["rust.child"]["span_id"] == sent["child_span_id"]
    assert spans["rust.child"]["parent_span_id"] == sent["parent_span_id"]
    assert spans["rust.child"]["trace_id"] == sent["trace_id"]
    assert [e["name"] for e in spans["rust.child"]["events"]] == ["checkpoint"]
    assert dict(spans["rust.parent"]["attributes"]) == {"job": "e2e"}

    con = weir.duck(tenant, "metrics")
    m = {r[0]: r for r in con.sql(
        "SELECT metric_name, metric_type, value, int_value, count, sum, min, max, unit, "
        "map_extract(attributes, 'route') FROM lake").fetchall()}
    assert m["rust.requests"][1] == "sum" and m["rust.requests"][3] == 7
    assert m["rust.requests"][9] in (["/a"], "/a")
    assert m["rust.latency"][1] == "histogram" and m["rust.latency"][4:8] == (2, 20.0, 5.0, 15.0)
    assert m["rust.latency"][8] == "ms"
    assert m["rust.temp"][1] == "gauge" and m["rust.temp"][2] == 7.5

    for signal in ("logs", "metrics", "traces"):
        weir.check_index_matches_lake(tenant, signal)
