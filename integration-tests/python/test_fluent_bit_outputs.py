"""What Fluent Bit's loki and datadog outputs send (Fluent Bit itself is not installable here),
built byte for byte from its documented formats; the forward output is covered in
test_fluent.py."""

import gzip
import json

import requests


def test_fluent_bit_loki_output_json(weir):
    # out_loki: labels from `labels job=fluent-bit`, line_format json → the record as JSON.
    body = {"streams": [{"stream": {"job": "fluent-bit", "host": "node-1"},
                         "values": [["1700000000000000000", json.dumps({"log": "from fluent bit", "stream": "stdout"})]]}]}
    r = requests.post(f"http://127.0.0.1:{weir.loki_port}/loki/api/v1/push", data=json.dumps(body),
                      headers={"Content-Type": "application/json", "User-Agent": "Fluent-Bit"}, timeout=10)
    assert r.status_code == 204
    weir.wait_rows("logs", 1)
    row = weir.rows()[0]
    assert json.loads(row["body"]) == {"log": "from fluent bit", "stream": "stdout"}
    assert row["service_name"] == "fluent-bit"
    assert dict(row["resource_attributes"])["host"] == "node-1"


def test_fluent_bit_datadog_output(weir_factory):
    # out_datadog with compress gzip and apikey: a gzip JSON array, DD-API-KEY header, the
    # record's keys as they are (`log` stays `log` without dd_message_key), timestamp in ms.
    w = weir_factory('[auth]\nallow_unauthenticated = ["syslog", "fluent"]\n[auth.api_keys]\n"fb-key" = "fluentbit"\n')
    items = [{"timestamp": 1700000000123 + i, "ddsource": "kubernetes", "service": "shop", "ddtags": "env:prod,team:web",
              "hostname": "node-7", "log": f"fb datadog {i}", "kubernetes": {"pod_name": "shop-1"}} for i in range(3)]
    r = requests.post(f"http://127.0.0.1:{w.datadog_port}/api/v2/logs", data=gzip.compress(json.dumps(items).encode()),
                      headers={"Content-Type": "application/json", "Content-Encoding": "gzip", "DD-API-KEY": "fb-key",
                               "User-Agent": "Fluent-Bit"}, timeout=10)
    assert r.status_code == 202, r.text
    w.wait_rows("logs", 3, "fluentbit")
    rows = sorted(w.rows("fluentbit"), key=lambda r: r["timestamp"])
    assert [r["body"] for r in rows] == ["fb datadog 0", "fb datadog 1", "fb datadog 2"]
    assert rows[0]["timestamp"] == 1700000000123 * 10**6
    a = dict(rows[0]["attributes"])
    assert a["ddsource"] == "kubernetes" and a["env"] == "prod" and a["team"] == "web"
    assert json.loads(a["kubernetes"]) == {"pod_name": "shop-1"}
    assert "log" not in a
    assert rows[0]["service_name"] == "shop"
