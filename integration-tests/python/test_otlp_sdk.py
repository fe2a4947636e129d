"""The OpenTelemetry Python SDK's own exporters (gRPC, HTTP protobuf, HTTP JSON) send logs,
metrics of all five point types and spans to the real `weir` binary; DuckDB and pyarrow read
the lake back and every value must equal what the SDK says it sent."""

import logging

import pyarrow.parquet as pq
import pytest
import requests
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

TRANSPORTS = ["grpc", "http-protobuf", "http-json"]


def exporters(weir, transport, tenant):
    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression

        kw = dict(endpoint=weir.grpc, insecure=True, headers={"x-scope-orgid": tenant}, compression=Compression.Gzip)
        return OTLPLogExporter(**kw), OTLPMetricExporter(**kw), OTLPSpanExporter(**kw)
    if transport == "http-protobuf":
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        kw = dict(headers={"X-Scope-OrgID": tenant}, compression=Compression.Gzip)
    else:
        from opentelemetry.exporter.otlp.json.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.json.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter

        kw = dict(headers={"X-Scope-OrgID": tenant})
    return (
        OTLPLogExporter(endpoint=weir.http + "/v1/logs", **kw),
        OTLPMetricExporter(endpoint=weir.http + "/v1/metrics", **kw),
        OTLPSpanExporter(endpoint=weir.http + "/v1/traces", **kw),
    )


def send_all(weir, transport, tenant):
    """Sends spans, logs inside those spans, and metrics; returns what the SDK recorded."""
    log_exp, metric_exp, span_exp = exporters(weir, transport, tenant)
    resource = Resource.create({"service.name": f"svc-{transport}", "deployment.environment": "test"})

    spans_mem = InMemorySpanExporter()
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(span_exp))
    tp.add_span_processor(SimpleSpanProcessor(spans_mem))
    tracer = tp.get_tracer("weir.tests", "1.2.3")

    logs_mem = InMemoryLogExporter()
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(log_exp))
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs_mem))
    logger = logging.getLogger(f"weir.tests.{transport}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = LoggingHandler(level=logging.DEBUG, logger_provider=lp)
    logger.addHandler(handler)

    with tracer.start_as_current_span("checkout", kind=SpanKind.SERVER, attributes={"http.method": "POST", "retries": 2}) as span:
        span.add_event("payment.authorized", {"amount": 12.5})
        logger.warning("card declined for user %s", "u-1", extra={"user.id": "u-1", "attempt": 3})
        with tracer.start_as_current_span("db.query", kind=SpanKind.CLIENT) as child:
            child.set_status(Status(StatusCode.ERROR, "timeout"))
            logger.error("query timed out ✓ ünïcode")
    logger.info("outside any span")
    logger.removeHandler(handler)

    mp = MeterProvider(
        resource=resource,
        metric_readers=[PeriodicExportingMetricReader(metric_exp, export_interval_millis=3_600_000)],
        views=[View(instrument_name="payload.size", aggregation=ExponentialBucketHistogramAggregation())],
    )
    meter = mp.get_meter("weir.tests")
    counter = meter.create_counter("orders", unit="1")
    counter.add(5, {"shop": "eu"})
    counter.add(7, {"shop": "eu"})
    meter.create_gauge("temperature", unit="Cel").set(21.5)
    hist = meter.create_histogram("latency", unit="ms")
    for v in (1.0, 2.0, 30.0):
        hist.record(v)
    exp = meter.create_histogram("payload.size", unit="By")
    for v in (100, 200, 400, 800):
        exp.record(v)
    assert mp.force_flush(10_000)
    mp.shutdown()
    tp.shutdown()
    lp.shutdown()
    return logs_mem.get_finished_logs(), spans_mem.get_finished_spans()


def send_summary(weir, tenant):
    """The SDK has no summary instrument: build an OTLP summary with the official protobuf
    classes and post it as OTLP/HTTP protobuf."""
    req = metrics_service_pb2.ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                resource=resource_pb2.Resource(
                    attributes=[common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="legacy"))]
                ),
                scope_metrics=[
                    metrics_pb2.ScopeMetrics(
                        metrics=[
                            metrics_pb2.Metric(
                                name="rpc.duration",
                                unit="s",
                                summary=metrics_pb2.Summary(
                                    data_points=[
                                        metrics_pb2.SummaryDataPoint(
                                            time_unix_nano=1_700_000_000_000_000_000,
                                            count=10,
                                            sum=4.5,
                                            quantile_values=[
                                                metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=0.4),
                                                metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=1.2),
                                            ],
                                        )
                                    ]
                                ),
                            )
                        ]
                    )
                ],
            )
        ]
    )
    r = requests.post(
        weir.http + "/v1/metrics",
        data=req.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf", "X-Scope-OrgID": tenant},
        timeout=10,
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sdk_exporters_land_in_the_lake(weir, transport):
    tenant = "t-" + transport
    logs, spans = send_all(weir, transport, tenant)
    send_summary(weir, tenant)
    assert len(logs) == 3 and len(spans) == 2

    weir.wait_rows("logs", 3, tenant)
    weir.wait_rows("traces", 2, tenant)
    weir.wait_rows("metrics", 5, tenant)

    # Logs: every field as the SDK recorded it (pyarrow keeps nanoseconds).
    rows = sorted(weir.rows(tenant, "logs"), key=lambda r: r["timestamp"])
    assert len(rows) == 3
    for row, rec in zip(rows, sorted(logs, key=lambda r: r.log_record.timestamp)):
        lr = rec.log_record
        assert row["timestamp"] == lr.timestamp
        assert row["observed_timestamp"] == lr.observed_timestamp
        assert row["severity_number"] == lr.severity_number.value
        assert row["severity_text"] == lr.severity_text
        assert row["body"] == lr.body
        assert row["trace_id"] == (format(lr.trace_id, "032x") if lr.trace_id else None)
        assert row["span_id"] == (format(lr.span_id, "016x") if lr.span_id else None)
        assert row["service_name"] == f"svc-{transport}"
        assert row["scope_name"] == f"weir.tests.{transport}"
        assert dict(row["resource_attributes"])["deployment.environment"] == "test"
        attrs = dict(row["attributes"])
        for k, v in lr.attributes.items():
            assert attrs[k] == (v if isinstance(v, str) else str(v)), k
    declined = [r for r in rows if r["body"].startswith("card declined")][0]
    assert declined["body"] == "card declined for user u-1"
    assert dict(declined["attributes"])["user.id"] == "u-1"
    assert dict(declined["attributes"])["attempt"] == "3"
    assert any(r["body"] == "query timed out ✓ ünïcode" for r in rows)
    # DuckDB sees the Hive partition columns.
    con = weir.duck(tenant, "logs")
    assert con.sql("SELECT DISTINCT tenant, signal FROM lake").fetchall() == [(tenant, "logs")]
    assert con.sql("SELECT count(*) FROM lake WHERE severity_number >= 17").fetchone()[0] == 1

    # Spans.
    got = {r["name"]: r for r in weir.rows(tenant, "traces")}
    assert set(got) == {s.name for s in spans}
    for s in spans:
        r = got[s.name]
        assert r["trace_id"] == format(s.context.trace_id, "032x")
        assert r["span_id"] == format(s.context.span_id, "016x")
        assert r["parent_span_id"] == (format(s.parent.span_id, "016x") if s.parent else None)
        assert r["kind"] == s.kind.value + 1  # OTLP SpanKind numbers are the SDK's + 1
        assert r["start_timestamp"] == s.start_time and r["end_timestamp"] == s.end_time
        assert r["duration_ns"] == s.end_time - s.start_time
        assert r["scope_name"] == "weir.tests" and r["scope_version"] == "1.2.3"
    assert got["db.query"]["status_code"] == 2 and got["db.query"]["status_message"] == "timeout"
    assert dict(got["checkout"]["attributes"]) == {"http.method": "POST", "retries": "2"}
    events = got["checkout"]["events"]
    assert [e["name"] for e in events] == ["payment.authorized"]
    assert dict(events[0]["attributes"]) == {"amount": "12.5"}
    # The log record written inside db.query carries that span's ids.
    assert got["db.query"]["span_id"] in {r["span_id"] for r in rows}

    # Metrics: all five point types.
    con = weir.duck(tenant, "metrics")
    m = {
        r[0]: r
        for r in con.sql(
            "SELECT metric_name, metric_type, value, int_value, is_monotonic, aggregation_temporality, count, sum, min, max, "
            "bucket_counts, explicit_bounds, exp_scale, exp_positive_bucket_counts, quantiles, unit, service_name FROM lake"
        ).fetchall()
    }
    assert set(m) == {"orders", "temperature", "latency", "payload.size", "rpc.duration"}
    assert m["orders"][1] == "sum" and m["orders"][3] == 12 and m["orders"][4] is True and m["orders"][5] == 2
    assert m["temperature"][1] == "gauge" and m["temperature"][2] == 21.5
    lat = m["latency"]
    assert lat[1] == "histogram" and lat[6] == 3 and lat[7] == 33.0 and lat[8] == 1.0 and lat[9] == 30.0
    assert sum(lat[10]) == 3 and len(lat[10]) == len(lat[11]) + 1
    ph = m["payload.size"]
    assert ph[1] == "exponential_histogram" and ph[6] == 4 and ph[7] == 1500.0 and sum(ph[13]) == 4
    q = m["rpc.duration"]
    assert q[1] == "summary" and q[6] == 10 and q[7] == 4.5
    assert [(x["quantile"], x["value"]) for x in q[14]] == [(0.5, 0.4), (0.99, 1.2)]
    assert m["latency"][15] == "ms" and m["latency"][16] == f"svc-{transport}"

    # The index lists exactly the lake's files, with their row counts and time bounds.
    for signal in ("logs", "metrics", "traces"):
        weir.check_index_matches_lake(tenant, signal)
    # Files are sorted by the signal's sort order and carry a bloom filter on trace_id.
    f = weir.files(tenant, "traces")[0]
    col = pq.read_metadata(f).row_group(0).column(0)
    assert col.path_in_schema == "trace_id"
