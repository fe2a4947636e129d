"""Durability: kill -9 after success responses loses nothing and duplicates nothing; a full
buffer answers with retryable errors and flushes once the lake is back; the fsync happens
before the response (seen by strace)."""

import os
import re
import signal
import subprocess
import time

import grpc
import pytest
import requests
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2


def logs_request(batch, n, body_size=40, hour_ns=None):
    base = hour_ns or 1_700_000_000_000_000_000
    return logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource_pb2.Resource(
                    attributes=[common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="crash"))]
                ),
                scope_logs=[
                    logs_pb2.ScopeLogs(
                        log_records=[
                            logs_pb2.LogRecord(
                                time_unix_nano=base + batch * 1000 + i,
                                severity_number=9,
                                body=common_pb2.AnyValue(string_value=f"b{batch}-r{i}-" + "x" * body_size),
                            )
                            for i in range(n)
                        ]
                    )
                ],
            )
        ]
    )


def post_logs(weir, req, **headers):
    return requests.post(
        weir.http + "/v1/logs",
        data=req.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf", **headers},
        timeout=30,
    )


def test_kill_9_after_success_loses_nothing(weir_factory):
    # A long max_file_age keeps everything in the buffer when the agent is killed.
    w = weir_factory('[lake]\nmax_file_age = "1h"\n')
    batches, per = 40, 25
    for b in range(batches):
        assert post_logs(w, logs_request(b, per)).status_code == 200
    w.kill()  # SIGKILL right after the last success response
    assert w.files() == []
    w.start()
    w.stop(signal.SIGTERM)  # the shutdown flush writes what the buffer held
    w.proc = None
    w2 = w
    w2.config.write_text(w2.config.read_text().replace('max_file_age = "1h"', 'max_file_age = "1s"'))
    w2.start()
    w2.wait_rows("logs", batches * per)
    bodies = [r["body"] for r in w2.rows("default", "logs")]
    assert len(bodies) == batches * per
    assert len(set(bodies)) == batches * per, "duplicated rows"
    assert set(bodies) == {f"b{b}-r{i}-" + "x" * 40 for b in range(batches) for i in range(per)}
    w2.check_index_matches_lake("default", "logs")


def test_kill_9_during_flushes_neither_loses_nor_duplicates(weir_factory):
    w = weir_factory('[lake]\nmax_file_age = "100ms"\n')
    sent = 0
    for round_ in range(3):
        for b in range(20):
            assert post_logs(w, logs_request(round_ * 100 + b, 10)).status_code == 200
            sent += 10
        w.kill()
        w.start()
    w.wait_rows("logs", sent)
    time.sleep(1)
    bodies = [r["body"] for r in w.rows("default", "logs")]
    assert len(bodies) == sent and len(set(bodies)) == sent
    w.check_index_matches_lake("default", "logs")


def test_full_buffer_answers_retryable_errors_and_recovers(weir_factory, tmp_path):
    # The lake path is a regular file, so every upload fails until it is replaced by a directory.
    blocked = tmp_path / "lake"
    blocked.write_text("not a directory")
    w = weir_factory(f'[buffer]\nmax_bytes = "1MiB"\n[lake]\nurl = "file://{blocked}/x"\nmax_file_age = "200ms"\n')
    accepted = refused = 0
    for b in range(400):
        r = post_logs(w, logs_request(b, 20, body_size=200))
        if r.status_code == 200:
            accepted += 1
        else:
            assert r.status_code == 429, r.text
            assert int(r.headers["Retry-After"]) >= 1
            assert "buffer full" in r.text
            refused += 1
            if refused >= 3:
                break
    assert accepted > 0 and refused >= 3
    # gRPC answers RESOURCE_EXHAUSTED with RetryInfo (retryable per the OTLP spec).
    with grpc.insecure_channel(w.grpc) as ch:
        stub = logs_service_pb2_grpc.LogsServiceStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            stub.Export(logs_request(9999, 20, body_size=200), timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert any(k == "grpc-status-details-bin" for k, _ in e.value.trailing_metadata())
    m = w.metrics()
    assert re.search(r'weir_rejected_requests_total\{reason="buffer_full",source="otlp_http"\} [1-9]', m), m
    assert re.search(r'weir_flush_errors_total\{stage="upload"\} [1-9]', m), m
    assert w.get_json("/healthz")["buffer"]["entries"] >= accepted
    # The lake comes back: everything accepted is flushed, and new requests are accepted.
    blocked.unlink()
    blocked.mkdir()
    w.lake = blocked / "x"
    w.wait_rows("logs", accepted * 20, timeout=60)
    bodies = [r["body"] for r in w.rows("default", "logs")]
    assert len(bodies) == len(set(bodies)) == accepted * 20
    assert post_logs(w, logs_request(5000, 5)).status_code == 200


def test_the_agent_id_is_written_durably_at_the_first_start(weir_factory, tmp_path):
    """The data directory's agent id is written to a temporary file, fsynced, linked into
    place (a link never replaces a file another process created first) and its directory
    fsynced, before the agent binds its sockets (listen.json)."""
    trace = tmp_path / "strace.log"
    w = weir_factory(
        wrap=["strace", "-f", "-y", "-s", "256", "-e", "trace=openat,write,fsync,fdatasync,link,linkat",
              "-o", str(trace)],
    )
    # Stop weir itself (strace's child), then wait for strace to finish writing.
    children = open(f"/proc/{w.proc.pid}/task/{w.proc.pid}/children").read().split()
    os.kill(int(children[0]), signal.SIGTERM)
    assert w.proc.wait(30) == 0
    agent_id = (w.data / "agent_id").read_text()
    lines = trace.read_text().splitlines()
    final, data = str(w.data / "agent_id"), str(w.data)
    tmp = next(m.group(1) for l in lines for m in [re.search(r'"(' + re.escape(final) + r'\.tmp\.\d+)"', l)] if m)

    def first(pred, after=-1, what=""):
        for i, line in enumerate(lines):
            if i > after and pred(line):
                return i
        raise AssertionError(f"no {what} after line {after}:\n" + "\n".join(l for l in lines if "agent_id" in l))

    wrote = first(lambda l: re.search(r"\bwrite\(\d+<" + re.escape(tmp) + ">", l) and agent_id.strip() in l, what="write of the id")
    synced = first(lambda l: re.search(r"\bf(data)?sync\(\d+<" + re.escape(tmp) + ">", l), wrote, "fsync of the temporary file")
    linked = first(lambda l: "link" in l and f'"{tmp}"' in l and f'"{final}"' in l, synced, "link into place")
    dir_synced = first(lambda l: re.search(r"\bf(data)?sync\(\d+<" + re.escape(data) + r">\)", l), linked, "fsync of data_dir")
    listen = re.escape(str(w.data / "listen.json.tmp"))
    assert dir_synced < first(lambda l: re.search(r"\bwrite\(\d+<" + listen + ">", l), what="write of listen.json")


def test_fdatasync_precedes_the_response(weir_factory, tmp_path):
    trace = tmp_path / "strace.log"
    w = weir_factory(
        '[lake]\nmax_file_age = "1h"\n',
        wrap=["strace", "-f", "-tt", "-s", "64", "-e", "trace=fdatasync,fsync,sendto,write,writev", "-o", str(trace)],
    )
    # Let startup syncs pass, then mark the log, then send one request.
    time.sleep(0.5)
    mark = trace.stat().st_size
    r = post_logs(w, logs_request(1, 5))
    assert r.status_code == 200
    time.sleep(0.3)
    # Stop weir itself (strace's child), then wait for strace to finish writing.
    children = open(f"/proc/{w.proc.pid}/task/{w.proc.pid}/children").read().split()
    os.kill(int(children[0]), signal.SIGTERM)
    assert w.proc.wait(30) == 0
    lines = trace.read_text()[mark:].splitlines()
    response = next(i for i, l in enumerate(lines) if "HTTP/1.1 200" in l)
    syncs = [i for i, l in enumerate(lines[:response]) if re.search(r"\bf(data)?sync\(", l)]
    assert syncs, "no fsync/fdatasync before the 200 response:\n" + "\n".join(lines[: response + 1])
