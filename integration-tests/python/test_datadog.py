"""Datadog intake with real clients: datadog-api-client (LogsApi.submit_log plain and gzip,
v1 and v2 MetricsApi.submit_metrics) and the `datadog` library (api.Metric.send and
ThreadStats); DD-API-KEY maps to a tenant and a wrong key is refused."""

import time

import datadog
import pytest
import requests
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import ForbiddenException, UnauthorizedException
from datadog_api_client.v1.api.metrics_api import MetricsApi as MetricsApiV1
from datadog_api_client.v1.model.metrics_payload import MetricsPayload
from datadog_api_client.v1.model.point import Point
from datadog_api_client.v1.model.series import Series
from datadog_api_client.v2.api.logs_api import LogsApi
from datadog_api_client.v2.api.metrics_api import MetricsApi
from datadog_api_client.v2.model.content_encoding import ContentEncoding
from datadog_api_client.v2.model.http_log import HTTPLog
from datadog_api_client.v2.model.http_log_item import HTTPLogItem
from datadog_api_client.v2.model.metric_intake_type import MetricIntakeType
from datadog_api_client.v2.model.metric_payload import MetricPayload
from datadog_api_client.v2.model.metric_point import MetricPoint
from datadog_api_client.v2.model.metric_resource import MetricResource
from datadog_api_client.v2.model.metric_series import MetricSeries

KEYS = '[auth]\nallow_unauthenticated = ["syslog", "fluent"]\n[auth.api_keys]\n"key-a" = "team-a"\n"key-b" = "team-b"\n'


def client(weir, key):
    cfg = Configuration(host=f"http://127.0.0.1:{weir.datadog_port}")
    cfg.api_key["apiKeyAuth"] = key
    return ApiClient(cfg)


def test_logs_and_metrics_from_datadog_api_client(weir_factory):
    w = weir_factory(KEYS)
    now = int(time.time())
    with client(w, "key-a") as c:
        logs = LogsApi(c)
        item = dict(ddsource="nginx", ddtags="env:staging,version:5.1", hostname="i-0123", service="payment", status="error")
        logs.submit_log(body=HTTPLog([HTTPLogItem(message="plain log", **item)]))
        logs.submit_log(body=HTTPLog([HTTPLogItem(message=f"gzip log {i}", **item) for i in range(3)]), content_encoding=ContentEncoding.GZIP)
        MetricsApi(c).submit_metrics(body=MetricPayload(series=[
            MetricSeries(metric="v2.gauge", type=MetricIntakeType.GAUGE, points=[MetricPoint(timestamp=now, value=0.7)],
                         resources=[MetricResource(name="host-1", type="host")], tags=["env:prod", "service:checkout"], unit="percent"),
            MetricSeries(metric="v2.count", type=MetricIntakeType.COUNT, interval=10, points=[MetricPoint(timestamp=now, value=42.0)]),
            MetricSeries(metric="v2.rate", type=MetricIntakeType.RATE, interval=10, points=[MetricPoint(timestamp=now, value=1.5)]),
        ]))
        MetricsApiV1(c).submit_metrics(body=MetricsPayload(series=[
            Series(metric="v1.count", type="count", interval=20, points=[Point([float(now), 9.0])], host="host-2", tags=["team:x"]),
        ]))
    w.wait_rows("logs", 4, "team-a")
    w.wait_rows("metrics", 4, "team-a")
    rows = {r["body"]: r for r in w.rows("team-a", "logs")}
    assert set(rows) == {"plain log", "gzip log 0", "gzip log 1", "gzip log 2"}
    r = rows["plain log"]
    assert r["service_name"] == "payment" and (r["severity_text"], r["severity_number"]) == ("error", 17)
    assert dict(r["resource_attributes"]) == {"service.name": "payment", "host.name": "i-0123"}
    a = dict(r["attributes"])
    assert a["ddsource"] == "nginx" and a["ddtags"] == "env:staging,version:5.1"
    assert a["env"] == "staging" and a["version"] == "5.1" and a["hostname"] == "i-0123"
    m = {r["metric_name"]: r for r in w.rows("team-a", "metrics")}
    g = m["v2.gauge"]
    assert g["metric_type"] == "gauge" and g["value"] == 0.7 and g["unit"] == "percent"
    assert g["timestamp"] == now * 10**9
    assert dict(g["resource_attributes"])["host.name"] == "host-1"
    assert dict(g["resource_attributes"])["service.name"] == "checkout"
    assert dict(g["attributes"]) == {"env": "prod", "service": "checkout"}
    c2 = m["v2.count"]
    assert (c2["metric_type"], c2["value"], c2["aggregation_temporality"], c2["is_monotonic"]) == ("sum", 42.0, 1, False)
    assert c2["start_timestamp"] == (now - 10) * 10**9
    assert m["v2.rate"]["metric_type"] == "sum" and m["v2.rate"]["value"] == 15.0  # rate x interval
    v1 = m["v1.count"]
    assert v1["value"] == 9.0 and v1["start_timestamp"] == (now - 20) * 10**9
    assert dict(v1["resource_attributes"])["host.name"] == "host-2"
    # Nothing of team-a is visible to team-b.
    assert w.segments("team-b", "logs") == []


def test_datadog_library_metric_send_and_threadstats(weir_factory):
    w = weir_factory(KEYS)
    datadog.initialize(api_key="key-b", api_host=f"http://127.0.0.1:{w.datadog_port}")
    now = time.time()
    resp = datadog.api.Metric.send(metric="lib.gauge", points=[(now, 3.5)], tags=["k:v"], host="h9")
    assert resp.get("errors") is None, resp
    stats = datadog.ThreadStats()
    stats.start(flush_in_thread=False)
    stats.gauge("ts.gauge", 12, tags=["a:b"])
    stats.increment("ts.count", 5)
    stats.flush(time.time() + 20)
    w.wait_rows("metrics", 3, "team-b")
    m = {r["metric_name"]: r for r in w.rows("team-b", "metrics")}
    assert m["lib.gauge"]["value"] == 3.5 and dict(m["lib.gauge"]["resource_attributes"])["host.name"] == "h9"
    assert m["ts.gauge"]["value"] == 12
    assert m["ts.count"]["value"] == 5 and m["ts.count"]["metric_type"] == "sum"


def test_api_keys_validate_check_run_and_errors(weir_factory):
    w = weir_factory(KEYS)
    base = f"http://127.0.0.1:{w.datadog_port}"
    assert requests.get(base + "/api/v1/validate", headers={"DD-API-KEY": "key-a"}, timeout=5).json() == {"valid": True}
    assert requests.get(base + "/api/v1/validate", headers={"DD-API-KEY": "nope"}, timeout=5).status_code == 403
    assert requests.get(base + "/api/v1/validate", timeout=5).status_code == 401
    with client(w, "wrong-key") as c:
        with pytest.raises(ForbiddenException):
            LogsApi(c).submit_log(body=HTTPLog([HTTPLogItem(message="x")]))
    r = requests.post(base + "/api/v2/logs", json=[{"message": "x"}], timeout=5)
    assert r.status_code == 401 and "missing API key" in r.text
    # A key cannot write to another tenant.
    r = requests.post(base + "/api/v2/logs", json=[{"message": "x"}], headers={"DD-API-KEY": "key-a", "X-Scope-OrgID": "team-b"}, timeout=5)
    assert r.status_code == 403 and "no rights to tenant" in r.text
    r = requests.post(base + "/api/v1/check_run", json=[{"check": "app.ok", "status": 0}], headers={"DD-API-KEY": "key-a"}, timeout=5)
    assert r.status_code == 202
    r = requests.post(base + "/api/v2/logs", data=b"[{", headers={"DD-API-KEY": "key-a", "Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 400 and "malformed Datadog logs payload" in r.text
    r = requests.post(base + "/api/v2/series", data=b"\xff\x01", headers={"DD-API-KEY": "key-a", "Content-Type": "application/x-protobuf"}, timeout=5)
    assert r.status_code == 400 and "malformed Datadog v2 series protobuf" in r.text
    m = w.metrics()
    assert 'weir_received_records_total{signal="check_runs",source="datadog"} 1' in m
    assert 'weir_rejected_requests_total{reason="forbidden",source="datadog"}' in m
    # The same keys guard OTLP and Loki.
    otlp = requests.post(w.http + "/v1/logs", data=b"", headers={"Content-Type": "application/x-protobuf"}, timeout=5)
    assert otlp.status_code == 401
    otlp = requests.post(w.http + "/v1/logs", data=b"", headers={"Content-Type": "application/x-protobuf", "Authorization": "Bearer key-b"}, timeout=5)
    assert otlp.status_code == 200
    loki = requests.post(f"http://127.0.0.1:{w.loki_port}/loki/api/v1/push", json={"streams": []}, headers={"X-API-Key": "bad"}, timeout=5)
    assert loki.status_code == 403
