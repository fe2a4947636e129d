"""A small request whose shared value is copied into every row (issue #15 item 10): one 1 MiB
resource attribute, stream label, Fluent tag or Datadog series tag over 20,000 empty records
would decode to ~20 GB of rows. Each protocol refuses it whole with a message naming its
`max_row_bytes` (OTLP/HTTP, Loki and Datadog 413, OTLP/gRPC RESOURCE_EXHAUSTED, Fluent forward
no ack and a closed connection), the agent's peak RSS stays under 512 MiB, and valid requests
on other connections keep getting 2xx and reach the lake."""

import gzip
import json
import socket
import threading
import time

import grpc
import msgpack
import requests
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from test_durability import logs_request, post_logs
from test_fluent import closed_by_peer, send

BIG = "x" * (1 << 20)
ROWS = 20_000
NS = 1_700_000_000_000_000_000


def peak_rss_mib(weir):
    with open(f"/proc/{weir.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def hostile_otlp():
    return logs_service_pb2.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(
        resource=resource_pb2.Resource(attributes=[
            common_pb2.KeyValue(key="big", value=common_pb2.AnyValue(string_value=BIG))]),
        scope_logs=[logs_pb2.ScopeLogs(log_records=[logs_pb2.LogRecord() for _ in range(ROWS)])],
    )])


class Background:
    """Valid OTLP/HTTP requests on their own connection for as long as the test runs."""

    def __init__(self, weir):
        self.weir, self.sent, self.failures = weir, 0, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            with requests.Session() as s:
                while not self.stop.is_set():
                    req = logs_request(10_000 + self.sent, 5)
                    r = s.post(self.weir.http + "/v1/logs", data=req.SerializeToString(),
                               headers={"Content-Type": "application/x-protobuf"}, timeout=60)
                    if r.status_code != 200:
                        self.failures.append((r.status_code, r.text))
                    self.sent += 1
                    time.sleep(0.05)
        except Exception as e:  # a failure of the valid traffic, not a silent end of it
            self.failures.append(repr(e))

    def finish(self):
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        assert self.failures == [], self.failures
        assert self.sent > 0
        return self.sent * 5


def test_shared_values_copied_to_every_row_are_refused_by_every_protocol(weir):
    w = weir
    bg = Background(w)

    # OTLP/HTTP: 413 with a google.rpc.Status naming the key.
    body = gzip.compress(hostile_otlp().SerializeToString())
    assert len(body) < 64 * 1024
    r = requests.post(w.http + "/v1/logs", data=body, timeout=60,
                      headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
    assert r.status_code == 413, r.content[:200]
    assert b"sources.otlp.max_row_bytes (134217728 bytes)" in r.content

    # OTLP/gRPC, gzip: RESOURCE_EXHAUSTED (no RetryInfo, so exporters drop it) naming the key.
    with grpc.insecure_channel(w.grpc) as ch:
        stub = logs_service_pb2_grpc.LogsServiceStub(ch)
        try:
            stub.Export(hostile_otlp(), timeout=60, compression=grpc.Compression.Gzip)
            raise AssertionError("hostile gRPC request accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
            assert "sources.otlp.max_row_bytes" in e.details()
        stub.Export(logs_request(1, 2), timeout=10)

    # Loki: one stream with a 1 MiB label and 20,000 empty entries.
    push = {"streams": [{"stream": {"app": "web", "big": BIG},
                         "values": [[str(NS), ""] for _ in range(ROWS)]}]}
    loki = f"http://127.0.0.1:{w.loki_port}/loki/api/v1/push"
    r = requests.post(loki, data=gzip.compress(json.dumps(push).encode()), timeout=60,
                      headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 413, r.text[:200]
    assert "sources.loki.max_row_bytes (134217728 bytes)" in r.text
    ok = {"streams": [{"stream": {"app": "web"}, "values": [[str(NS + 1), "loki ok"]]}]}
    assert requests.post(loki, json=ok, timeout=10).status_code == 204

    # Datadog: one series with a 1 MiB tag and 20,000 points.
    dd = f"http://127.0.0.1:{w.datadog_port}/api/v2/series"
    series = {"series": [{"metric": "req", "type": 3, "tags": ["big:" + BIG],
                          "points": [{"timestamp": 1_700_000_000, "value": 1.0} for _ in range(ROWS)]}]}
    r = requests.post(dd, data=gzip.compress(json.dumps(series).encode()), timeout=60,
                      headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 413, r.text[:200]
    assert "sources.datadog.max_row_bytes (134217728 bytes)" in r.json()["errors"][0]
    ok = {"series": [{"metric": "dd.ok", "type": 3, "points": [{"timestamp": 1_700_000_000, "value": 2.0}]}]}
    assert requests.post(dd, json=ok, timeout=10).status_code == 202

    # Fluent forward: a 1 MiB tag over 20,000 entries, with a chunk: never acknowledged, the
    # connection is closed; a message sent before it on the same connection is kept.
    with socket.create_connection(("127.0.0.1", w.fluent_port), timeout=60) as s:
        s.sendall(msgpack.packb(["fine", [[NS // 10**9, {"log": "before"}]], {"chunk": "c0"}]))
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            data = s.recv(4096)
            assert data, "closed before the first ack"
            unpacker.feed(data)
            acks = list(unpacker)
            if acks:
                assert acks == [{"ack": "c0"}]
                break
        s.sendall(msgpack.packb([BIG, [[0, {}]] * ROWS, {"chunk": "c1"}]))
        got = b""
        try:
            while chunk := s.recv(4096):
                got += chunk
        except ConnectionResetError:
            pass
        assert b"c1" not in got
    assert send(w, ["fine", NS // 10**9, {"log": "fluent ok"}, {"chunk": "c2"}], read_acks=1) == [{"ack": "c2"}]

    valid = bg.finish()
    peak = peak_rss_mib(w)
    print(f"peak RSS {peak:.0f} MiB")
    assert peak < 512, f"peak RSS {peak:.0f} MiB"

    m = w.metrics()
    for source in ["otlp_http", "otlp_grpc", "loki", "datadog", "fluent"]:
        assert f'weir_rejected_requests_total{{reason="too_many_row_bytes",source="{source}"}} 1' in m, source
    # Everything accepted reached the lake, nothing of the refused requests did.
    w.wait_rows("logs", valid + 2 + 1 + 2)
    w.wait_rows("metrics", 1)
    time.sleep(1.5)  # one more max_file_age: anything refused that leaked would be flushed too
    rows = w.rows()
    assert len(rows) == valid + 2 + 1 + 2, len(rows)
    assert not any(r["body"] is None for r in rows)
    assert not any("big" in str(r.get("resource_attributes")) for r in rows)
    bodies = {r["body"] for r in rows}
    assert {"loki ok", "before", "fluent ok"} <= bodies
    assert [r["metric_name"] for r in w.rows(signal="metrics")] == ["dd.ok"]


def test_a_request_under_the_budget_is_taken_and_the_key_is_validated(weir_factory):
    """The same shape with a few records fits; a budget above 1 GiB is refused at start."""
    w = weir_factory(otlp='max_row_bytes = "8MiB"')
    req = hostile_otlp()
    del req.resource_logs[0].scope_logs[0].log_records[5:]
    r = post_logs(w, req)
    assert r.status_code == 200, r.content[:200]
    req = hostile_otlp()
    del req.resource_logs[0].scope_logs[0].log_records[9:]
    r = post_logs(w, req)
    assert r.status_code == 413 and b"sources.otlp.max_row_bytes (8388608 bytes)" in r.content
    w.wait_rows("logs", 5)
    rows = w.rows()
    assert len(rows) == 5 and all(dict(r["resource_attributes"])["big"] == BIG for r in rows)
    bad = weir_factory(fluent='max_row_bytes = "2GiB"', name="bad", start=False)
    try:
        bad.start()
        raise AssertionError("max_row_bytes above 1GiB accepted")
    except RuntimeError as e:
        assert "sources.fluent.max_row_bytes" in str(e)


def nil_map(pairs):
    """A msgpack map of `pairs` nil → nil entries: one byte per value on the wire, a whole
    decoded value (tens of bytes) each once parsed into a tree."""
    return b"\xdf" + pairs.to_bytes(4, "big") + b"\xc0" * (2 * pairs)


def test_fluent_frames_whose_msgpack_tree_dwarfs_their_bytes_are_refused_unparsed(weir_factory):
    """A 15 MB forward message of one-byte values (a record map, a Message's record, the
    option) parses into a tree tens of times its size: each value is counted before it is
    decoded and the message is refused against sources.fluent.max_row_bytes (no ack, the
    connection closed), the agent's peak RSS stays under 512 MiB, and other clients go on."""
    w = weir_factory()
    huge = nil_map(7_500_000)
    tag = msgpack.packb("hostile")
    frames = [
        b"\x93" + tag + b"\x91\x92\x00" + huge + msgpack.packb({"chunk": "f"}),  # Forward entry's record
        b"\x94" + tag + b"\x00" + huge + msgpack.packb({"chunk": "m"}),  # Message mode record
        b"\x93" + tag + msgpack.packb(b"") + huge,  # PackedForward option
    ]
    for frame in frames:
        assert len(frame) < 16 << 20
        with socket.create_connection(("127.0.0.1", w.fluent_port), timeout=60) as s:
            s.sendall(frame)
            assert closed_by_peer(s)
        assert send(w, ["fine", int(time.time()), {"log": "still served"}, {"chunk": "ok"}], read_acks=1) == [{"ack": "ok"}]
    peak = peak_rss_mib(w)
    print(f"peak RSS {peak:.0f} MiB")
    assert peak < 512, f"peak RSS {peak:.0f} MiB"
    m = w.metrics()
    assert 'weir_rejected_requests_total{reason="too_many_row_bytes",source="fluent"} 3' in m, m
    w.wait_rows("logs", 3)
    assert [r["body"] for r in w.rows()] == ["still served"] * 3


def test_fluent_messages_past_a_turns_budget_wait_for_the_next_turn(weir_factory):
    """Messages read together whose rows exceed sources.fluent.max_row_bytes are written in
    turns of at most that budget: a message that does not fit what is left of a turn is
    decoded again in the next one, and every message is acknowledged and stored."""
    w = weir_factory(fluent='max_row_bytes = "1MiB"')
    now = int(time.time())
    messages = [["turns", [[now, {"log": f"m{m} e{e} " + "x" * 1000}] for e in range(400)], {"chunk": f"c{m}"}]
                for m in range(5)]
    acks = send(w, *messages, read_acks=5)
    assert acks == [{"ack": f"c{m}"} for m in range(5)]
    w.wait_rows("logs", 2000)
    assert len(w.rows()) == 2000


def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([b])
        out += bytes([b | 0x80])


def grpc_refused_over_budget(weir, service, body):
    """Sends `body` (an Export request's bytes) to OTLP/gRPC's `service` and checks it is
    refused with RESOURCE_EXHAUSTED naming sources.otlp.max_row_bytes."""
    with grpc.insecure_channel(weir.grpc, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        export = ch.unary_unary(f"/opentelemetry.proto.collector.{service}/Export")
        try:
            export(body, timeout=120)
            raise AssertionError(f"{service}: the request was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
            assert "sources.otlp.max_row_bytes" in e.details(), e.details()


def test_millions_of_empty_records_over_grpc_are_refused_within_the_budget(weir):
    """14 MB of empty log records (two bytes each on the wire) over OTLP/gRPC: decoded from the
    wire under sources.otlp.max_row_bytes, not into prost structs first (which took some 2 GB),
    so the request is refused with RESOURCE_EXHAUSTED naming the key and the peak RSS stays
    under 512 MiB; a valid export on the same channel is then taken."""
    records = b"\x12\x00" * 7_000_000  # ScopeLogs.log_records, each an empty LogRecord
    resource_logs = b"\x12" + varint(len(records)) + records  # ResourceLogs.scope_logs
    body = b"\x0a" + varint(len(resource_logs)) + resource_logs  # ExportLogsServiceRequest
    grpc_refused_over_budget(weir, "logs.v1.LogsService", body)
    with grpc.insecure_channel(weir.grpc) as ch:
        logs_service_pb2_grpc.LogsServiceStub(ch).Export(logs_request(1, 3), timeout=10)
    peak = peak_rss_mib(weir)
    print(f"peak RSS {peak:.0f} MiB")
    assert peak < 512, f"peak RSS {peak:.0f} MiB"
    weir.wait_rows("logs", 3)


def snappy_literal(data):
    """A snappy block holding `data` as one literal (valid snappy, uncompressed)."""
    return varint(len(data)) + bytes([63 << 2]) + (len(data) - 1).to_bytes(4, "little") + data


def test_millions_of_empty_structs_on_the_prost_paths_are_refused_before_decoding(weir):
    """The paths that still decode through prost (OTLP metrics over HTTP and gRPC, Loki's
    protobuf push) count the structs a body would become before decoding it: 7 million empty
    data points or entries (2 bytes each on the wire, a struct of 100+ bytes each decoded)
    are refused against max_row_bytes (413 / RESOURCE_EXHAUSTED naming the key), the peak RSS
    stays under 512 MiB, and valid requests are then taken."""
    points = b"\x0a\x00" * 7_000_000  # Gauge.data_points, each an empty NumberDataPoint
    gauge = b"\x2a" + varint(len(points)) + points  # Metric.gauge
    metrics = b"\x12" + varint(len(gauge)) + gauge  # ScopeMetrics.metrics
    scope = b"\x12" + varint(len(metrics)) + metrics  # ResourceMetrics.scope_metrics
    body = b"\x0a" + varint(len(scope)) + scope  # ExportMetricsServiceRequest.resource_metrics
    r = requests.post(weir.http + "/v1/metrics", data=body, timeout=120,
                      headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 413, (r.status_code, r.content[:200])
    assert b"sources.otlp.max_row_bytes" in r.content
    grpc_refused_over_budget(weir, "metrics.v1.MetricsService", body)
    entries = b"\x12\x00" * 7_000_000  # StreamAdapter.entries, each an empty EntryAdapter
    labels = b'{app="x"}'
    stream = b"\x0a" + varint(len(labels)) + labels + entries
    push = b"\x0a" + varint(len(stream)) + stream  # PushRequest.streams
    loki = f"http://127.0.0.1:{weir.loki_port}/loki/api/v1/push"
    r = requests.post(loki, data=snappy_literal(push), timeout=120,
                      headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert "sources.loki.max_row_bytes" in r.text
    peak = peak_rss_mib(weir)
    print(f"peak RSS {peak:.0f} MiB")
    assert peak < 512, f"peak RSS {peak:.0f} MiB"
    ok = {"streams": [{"stream": {"app": "web"}, "values": [[str(time.time_ns()), "loki ok"]]}]}
    assert requests.post(loki, json=ok, timeout=10).status_code == 204
    weir.wait_rows("logs", 1)
    m = weir.metrics()
    for source in ["otlp_http", "otlp_grpc", "loki"]:
        assert f'weir_rejected_requests_total{{reason="too_many_row_bytes",source="{source}"}} 1' in m, source


def test_otlp_json_of_empty_objects_is_refused_and_a_large_real_one_taken(weir):
    """OTLP JSON goes through serde into structs: 5 million `{}` log records (15 MB) would be
    over a GB of them. Every array element is counted as the signal's largest struct before
    decoding, so that body is refused (413 naming the key) with a bounded RSS, while a real
    14 MB body of records with five attributes each is taken whole."""
    empty = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[' + b"{}," * 5_000_000 + b"{}]}]}]}"
    r = requests.post(weir.http + "/v1/logs", data=empty, timeout=120, headers={"Content-Type": "application/json"})
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert "sources.otlp.max_row_bytes" in r.text
    # One record whose body (an AnyValue, decoded through serde's flatten) has three million
    # one-byte members: serde would buffer each as a 64-byte Content pair first.
    members = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{' + b'"":0,' * 3_000_000 + b'"":0}}]}]}]}'
    r = requests.post(weir.http + "/v1/logs", data=members, timeout=120, headers={"Content-Type": "application/json"})
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert "sources.otlp.max_row_bytes" in r.text
    # A member name spelled with an escape would hide an AnyValue from the count: refused.
    escaped = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"b\\u006fdy":{"stringValue":"x"}}]}]}]}'
    r = requests.post(weir.http + "/v1/logs", data=escaped, timeout=60, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, (r.status_code, r.text[:200])
    assert "has an escape" in r.text, r.text
    peak = peak_rss_mib(weir)
    print(f"peak RSS {peak:.0f} MiB")
    assert peak < 512, f"peak RSS {peak:.0f} MiB"
    now = time.time_ns()
    records = [{"timeUnixNano": str(now + i), "severityText": "INFO", "body": {"stringValue": f"request {i} served in 12 ms"},
                "attributes": [{"key": f"attr.{k}", "value": {"stringValue": f"value-{k}-{i % 97}"}} for k in range(5)]}
               for i in range(34_000)]
    real = json.dumps({"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
                                         "scopeLogs": [{"logRecords": records}]}]}).encode()
    assert 13_000_000 < len(real) < 16 << 20, len(real)
    r = requests.post(weir.http + "/v1/logs", data=real, timeout=120, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, (r.status_code, r.text[:200])
    weir.wait_rows("logs", 34_000, timeout=120)
