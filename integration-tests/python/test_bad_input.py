"""Bad input gets the right 4xx with a message that names the problem, and the agent keeps
serving (and nothing accepted before is lost)."""

import gzip
import json

import grpc
import requests
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from test_durability import logs_request, post_logs


def post(weir, path, data, ctype="application/x-protobuf", **headers):
    return requests.post(weir.http + path, data=data, headers={"Content-Type": ctype, **headers}, timeout=30)


def still_serving(weir, n=3):
    r = post_logs(weir, logs_request(777, n))
    assert r.status_code == 200, r.text


def test_garbage_protobuf(weir):
    r = post(weir, "/v1/logs", b"\xff\xff\xff\xff\x0f garbage")
    assert r.status_code == 400
    assert "malformed OTLP protobuf logs request" in r.text
    still_serving(weir)


def test_bad_json(weir):
    r = post(weir, "/v1/metrics", b'{"resourceMetrics": [ {', "application/json")
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == 3 and "malformed OTLP JSON metrics request" in body["message"]
    r = post(weir, "/v1/logs", json.dumps({"resourceLogs": "nope"}), "application/json")
    assert r.status_code == 400 and "resourceLogs" in r.json()["message"] or "invalid type" in r.json()["message"]
    still_serving(weir)


def test_wrong_content_type_and_encoding(weir):
    r = post(weir, "/v1/logs", b"hello", "text/plain")
    assert r.status_code == 415 and "unsupported Content-Type" in r.content.decode("latin-1")
    r = post(weir, "/v1/logs", b"hello", "application/x-protobuf", **{"Content-Encoding": "br"})
    assert r.status_code == 415 and "unsupported Content-Encoding" in r.content.decode("latin-1")
    r = post(weir, "/v1/logs", b"not gzip at all", "application/x-protobuf", **{"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "invalid gzip body" in r.content.decode("latin-1")
    assert requests.get(weir.http + "/v1/logs", timeout=5).status_code == 405
    assert requests.post(weir.http + "/v1/nothing", timeout=5).status_code == 404
    still_serving(weir)


def test_oversize_body_and_gzip_bomb(weir_factory):
    w = weir_factory(otlp='max_request_bytes = "64KiB"')
    big = logs_request(1, 2000, body_size=100).SerializeToString()
    assert len(big) > 64 * 1024
    r = post(w, "/v1/logs", big)
    assert r.status_code == 413 and "max_request_bytes" in r.content.decode("latin-1")
    # Chunked body without Content-Length is cut at the limit too.
    r = requests.post(w.http + "/v1/logs", data=iter([big[i : i + 8192] for i in range(0, len(big), 8192)]),
                      headers={"Content-Type": "application/x-protobuf"}, timeout=30)
    assert r.status_code == 413
    # A gzip bomb: 8 KiB on the wire, 64 MiB decompressed.
    bomb = gzip.compress(b"\x00" * (64 << 20))
    assert len(bomb) < 128 * 1024
    r = post(w, "/v1/logs", bomb, **{"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "decompressed body exceeds" in r.content.decode("latin-1")
    # gRPC refuses messages over the limit with OUT_OF_RANGE (not retryable), naming the limit.
    with grpc.insecure_channel(w.grpc) as ch:
        stub = logs_service_pb2_grpc.LogsServiceStub(ch)
        try:
            stub.Export(logs_request(2, 2000, body_size=100), timeout=10)
            raise AssertionError("oversize gRPC request accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.OUT_OF_RANGE
            assert "the limit is: 65536 bytes" in e.details()
    still_serving(w)
    w.wait_rows("logs", 3)


def test_invalid_utf8_in_strings(weir):
    req = logs_request(1, 1)
    raw = bytearray(req.SerializeToString())
    i = raw.find(b"b1-r0-")
    raw[i] = 0xFF  # the body string is no longer UTF-8
    r = post(weir, "/v1/logs", bytes(raw))
    assert r.status_code == 400
    assert "invalid string value: data is not UTF-8 encoded" in r.content.decode("latin-1")
    with grpc.insecure_channel(weir.grpc) as ch:
        stub = logs_service_pb2_grpc.LogsServiceStub(ch)
        method = ch.unary_unary(
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            request_serializer=lambda b: b,
            response_deserializer=logs_service_pb2.ExportLogsServiceResponse.FromString,
        )
        try:
            method(bytes(raw), timeout=10)
            raise AssertionError("invalid UTF-8 accepted over gRPC")
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT), e
        stub.Export(logs_request(3, 1), timeout=10)
    still_serving(weir)


def test_wrong_tenant_and_partial_success(weir):
    r = post_logs(weir, logs_request(1, 1), **{"X-Scope-OrgID": "../../etc"})
    assert r.status_code == 400 and "not a valid tenant" in r.content.decode("latin-1")
    # One span with a broken trace id is refused; the others are kept (partial success).
    good = trace_pb2.Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="ok", start_time_unix_nano=1_700_000_000_000_000_000, end_time_unix_nano=1_700_000_000_000_000_100)
    bad = trace_pb2.Span(trace_id=b"\x01" * 3, span_id=b"\x02" * 8, name="bad")
    req = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=[good, bad])])]
    )
    r = post(weir, "/v1/traces", req.SerializeToString())
    assert r.status_code == 200
    resp = trace_service_pb2.ExportTraceServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_spans == 1
    assert "trace_id has 3 bytes" in resp.partial_success.error_message
    weir.wait_rows("traces", 1)
    assert [s["name"] for s in weir.rows("default", "traces")] == ["ok"]
    # Earlier accepted data is still there.
    still_serving(weir)
    weir.wait_rows("logs", 3)


def test_records_over_too_many_hours_are_refused_whole(weir_factory):
    """One request whose records fall in more hours than buffer.max_partitions_per_request is
    a clear 400 (over OTLP/HTTP and gRPC) and stores nothing; one within the bound is taken."""
    w = weir_factory('[buffer]\nmax_partitions_per_request = 24\n')
    hour = 3_600_000_000_000
    base = 1_767_225_600_000_000_000

    def request(hours):
        return logs_service_pb2.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(scope_logs=[
            logs_pb2.ScopeLogs(log_records=[
                logs_pb2.LogRecord(time_unix_nano=base + h * hour, body=common_pb2.AnyValue(string_value=f"hour {h}"))
                for h in range(hours)])])])

    r = post(w, "/v1/logs", request(200).SerializeToString())
    assert r.status_code == 400, (r.status_code, r.text)
    assert "buffer.max_partitions_per_request (24)" in r.text, r.text
    with grpc.insecure_channel(w.grpc) as ch:
        stub = logs_service_pb2_grpc.LogsServiceStub(ch)
        try:
            stub.Export(request(100), timeout=10)
            raise AssertionError("the gRPC export was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
            assert "max_partitions_per_request" in e.details()
    r = post(w, "/v1/logs", request(24).SerializeToString())
    assert r.status_code == 200, r.text
    w.wait_rows("logs", 24)
    assert 'reason="too_many_hours"' in w.metrics()
    assert len(w.segments("default", "logs")) == 24
