"""Fluent forward with real senders (PyPI fluent-logger's sender and asyncsender) and the frames
Fluent Bit's forward output sends, built byte for byte: Forward entries shaped
[[EventTime, {metadata}], record], PackedForward, and gzip CompressedPackedForward with a
`chunk` option answered by {"ack": chunk} only once durable."""

import gzip
import socket
import struct
import time
import uuid

import msgpack
from fluent import asyncsender, sender


def event_time(ns):
    return msgpack.ExtType(0, struct.pack(">II", ns // 1_000_000_000, ns % 1_000_000_000))


def fluent_bit_entry(ns, record, meta=None):
    return [[event_time(ns), meta or {}], record]


def closed_by_peer(s):
    """Reads until the agent closes the connection (EOF or reset)."""
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


def send(weir, *messages, read_acks=0, timeout=10):
    with socket.create_connection(("127.0.0.1", weir.fluent_port), timeout=timeout) as s:
        for m in messages:
            s.sendall(msgpack.packb(m, use_bin_type=True))
        unpacker = msgpack.Unpacker(raw=False)
        acks = []
        while len(acks) < read_acks:
            data = s.recv(4096)
            assert data, "connection closed before every ack arrived"
            unpacker.feed(data)
            acks.extend(unpacker)
        return acks


def test_fluent_logger_sender_and_asyncsender(weir):
    s = sender.FluentSender("app", host="127.0.0.1", port=weir.fluent_port, nanosecond_precision=True)
    t0 = time.time()
    assert s.emit("web", {"log": "hello from fluent-logger", "level": "warn", "user": "u1", "n": 7, "nested": {"a": [1, 2]}})
    assert s.emit_with_time("web", t0, {"message": "explicit time"})
    s.close()
    a = asyncsender.FluentSender("async", host="127.0.0.1", port=weir.fluent_port)
    for i in range(20):
        a.emit("batch", {"log": f"async {i}"})
    a.close()
    weir.wait_rows("logs", 22)
    rows = {r["body"]: r for r in weir.rows()}
    r = rows["hello from fluent-logger"]
    attrs = dict(r["attributes"])
    assert attrs["fluent.tag"] == "app.web"
    assert attrs["user"] == "u1" and attrs["n"] == "7" and attrs["nested"] == '{"a":[1,2]}'
    assert (r["severity_text"], r["severity_number"]) == ("warn", 13)
    assert abs(r["timestamp"] - time.time_ns()) < 60e9
    # nanosecond_precision sends EventTime: the nanoseconds survive.
    assert rows["explicit time"]["timestamp"] == int(t0) * 10**9 + int(t0 % 1 * 10**9)
    assert all(f"async {i}" in rows for i in range(20))
    assert dict(rows["async 3"]["attributes"])["fluent.tag"] == "async.batch"
    # asyncsender sends integer seconds.
    assert rows["async 3"]["timestamp"] % 1_000_000_000 == 0


def test_fluent_bit_frames_with_chunk_acks(weir):
    # Within buffer.late_window of now, so the records keep their own timestamps.
    base = (time.time_ns() - 3_600_000_000_000) // 10**9 * 10**9 + 123_456_789
    fwd_chunk, packed_chunk, gz_chunk = (str(uuid.uuid4()) for _ in range(3))
    forward = ["kube.var.log", [fluent_bit_entry(base + i, {"log": f"forward {i}", "stream": "stdout"}, {"otlp": {"k": "v"}}) for i in range(5)],
               {"chunk": fwd_chunk, "size": 5}]
    packed_bytes = b"".join(msgpack.packb(fluent_bit_entry(base + 100 + i, {"log": f"packed {i}"}), use_bin_type=True) for i in range(5))
    packed = ["kube.packed", packed_bytes, {"chunk": packed_chunk, "size": 5}]
    gz_bytes = gzip.compress(b"".join(msgpack.packb(fluent_bit_entry(base + 200 + i, {"log": f"gz {i}", "level": "error"}), use_bin_type=True) for i in range(50)))
    compressed = ["kube.gz", gz_bytes, {"chunk": gz_chunk, "size": 50, "compressed": "gzip"}]
    acks = send(weir, forward, packed, compressed, read_acks=3)
    assert acks == [{"ack": fwd_chunk}, {"ack": packed_chunk}, {"ack": gz_chunk}]
    weir.wait_rows("logs", 60)
    rows = {r["body"]: r for r in weir.rows()}
    r = rows["forward 2"]
    assert r["timestamp"] == base + 2
    attrs = dict(r["attributes"])
    assert attrs["fluent.tag"] == "kube.var.log" and attrs["stream"] == "stdout"
    assert attrs["fluent.meta.otlp"] == '{"k":"v"}'
    assert rows["packed 4"]["timestamp"] == base + 104
    assert rows["gz 49"]["severity_number"] == 17 and rows["gz 49"]["timestamp"] == base + 249


def test_acked_chunks_survive_kill_9(weir_factory):
    w = weir_factory('[lake]\nmax_file_age = "1h"\n')
    chunks = []
    for b in range(10):
        chunk = f"chunk-{b}"
        entries = [fluent_bit_entry(1_700_000_000_000_000_000 + b * 100 + i, {"log": f"k{b}-{i}"}) for i in range(10)]
        assert send(w, ["t", entries, {"chunk": chunk}], read_acks=1) == [{"ack": chunk}]
        chunks.append(chunk)
    w.kill()
    w.proc = None
    w.config.write_text(w.config.read_text().replace('max_file_age = "1h"', 'max_file_age = "1s"'))
    w.start()
    w.wait_rows("logs", 100)
    bodies = [r["body"] for r in w.rows()]
    assert sorted(bodies) == sorted(f"k{b}-{i}" for b in range(10) for i in range(10))


def test_broken_stream_closes_only_that_connection(weir_factory):
    w = weir_factory(fluent='max_frame_bytes = "64KiB"')
    good = ["ok", [[1_700_000_000, {"log": "before the break"}]], {"chunk": "c-good"}]
    with socket.create_connection(("127.0.0.1", w.fluent_port), timeout=10) as s:
        s.sendall(msgpack.packb(good) + b"\xc1garbage")
        unpacker = msgpack.Unpacker(raw=False)
        data = s.recv(4096)
        unpacker.feed(data)
        assert list(unpacker) == [{"ack": "c-good"}]
        assert closed_by_peer(s)
    # Not forward protocol, and an oversize frame: each closes its own connection.
    for payload in (msgpack.packb({"not": "an array"}), msgpack.packb(["t", "x" * 200_000])):
        with socket.create_connection(("127.0.0.1", w.fluent_port), timeout=10) as s:
            s.sendall(payload)
            assert closed_by_peer(s)
    assert send(w, ["still", [[1_700_000_000, {"log": "after"}]], {"chunk": "c2"}], read_acks=1) == [{"ack": "c2"}]
    w.wait_rows("logs", 2)
    assert sorted(r["body"] for r in w.rows()) == ["after", "before the break"]
    assert 'weir_rejected_requests_total{reason="malformed",source="fluent"} 3' in w.metrics()


def test_shared_key_handshake(weir_factory):
    import hashlib

    w = weir_factory(fluent='shared_key = "s3cret"\nself_hostname = "weir-test"')

    def session(key):
        s = socket.create_connection(("127.0.0.1", w.fluent_port), timeout=10)
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            unpacker.feed(s.recv(4096))
            msgs = list(unpacker)
            if msgs:
                break
        helo = msgs[0]
        assert helo[0] == "HELO"
        nonce = helo[1]["nonce"]
        salt = b"client-salt"
        digest = hashlib.sha512(salt + b"client-host" + nonce + key.encode()).hexdigest()
        s.sendall(msgpack.packb(["PING", "client-host", salt, digest, "", ""], use_bin_type=True))
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            unpacker.feed(s.recv(4096))
            msgs = list(unpacker)
            if msgs:
                break
        return s, msgs[0], nonce, salt

    s, pong, nonce, salt = session("s3cret")
    assert pong[:3] == ["PONG", True, ""] and pong[3] == "weir-test"
    # The server proves it knows the key too.
    assert pong[4] == hashlib.sha512(salt + b"weir-test" + nonce + b"s3cret").hexdigest()
    s.sendall(msgpack.packb(["auth", [[1_700_000_000, {"log": "authenticated"}]], {"chunk": "c"}]))
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(s.recv(4096))
    assert list(unpacker) == [{"ack": "c"}]
    s.close()

    s, pong, _, _ = session("wrong")
    assert pong[1] is False and pong[2] == "shared key mismatch"
    assert closed_by_peer(s)
    s.close()
    # Skipping the handshake gets nothing stored.
    with socket.create_connection(("127.0.0.1", w.fluent_port), timeout=10) as s:
        s.sendall(msgpack.packb(["sneaky", 1_700_000_000, {"log": "no handshake"}]))
        assert closed_by_peer(s)
    w.wait_rows("logs", 1)
    assert [r["body"] for r in w.rows()] == ["authenticated"]
    assert 'weir_rejected_requests_total{reason="forbidden",source="fluent"} 2' in w.metrics()


def test_records_of_many_hours_are_bounded_by_the_window_and_keep_their_time(weir_factory):
    """Fluent forward (fluent-logger's sender) and syslog batches gather many senders' records
    and are never refused for their hours: a record outside buffer.late_window/future_window
    of its receipt is stored at its receipt time with its own timestamp in
    `weir.original_timestamp`, so one sender's 500 hours cost a bounded number of partitions
    and no record is lost."""
    w = weir_factory('[buffer]\nlate_window = "1d"\nfuture_window = "1h"\n', fluent="")
    hour = 3600
    now = time.time()
    s = sender.FluentSender("hostile", host="127.0.0.1", port=w.fluent_port, nanosecond_precision=True)
    # One record an hour back over 500 hours, five in the window's future edge and beyond.
    for h in range(500):
        assert s.emit_with_time("x", now - h * hour, {"log": f"past {h}"})
    for h in range(5):
        assert s.emit_with_time("x", now + (h + 0.5) * hour, {"log": f"future {h}"})
    s.close()
    # syslog over TCP: RFC 5424 lines dated long ago and in the window.
    with socket.create_connection(("127.0.0.1", w.syslog_tcp_port), timeout=10) as sock:
        sock.sendall(b"<14>1 1999-12-31T23:00:00Z host app - - - syslog ancient\n")
        recent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 2 * hour)).encode()
        sock.sendall(b"<14>1 " + recent + b" host app - - - syslog recent\n")
    w.wait_rows("logs", 507)
    rows = {r["body"]: r for r in w.rows()}
    assert len(rows) == 507
    received = range(int((now - 60) * 1e9), int((time.time() + 60) * 1e9))
    for h in range(500):
        r = rows[f"past {h}"]
        own = int(now - h * hour)
        attrs = dict(r["attributes"])
        if h <= 23:
            assert r["timestamp"] // 10**9 == own, (h, r["timestamp"])
            assert "weir.original_timestamp" not in attrs
        elif h >= 25:
            assert r["timestamp"] in received, (h, r["timestamp"])
            kept = attrs["weir.original_timestamp"]
            assert kept.startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(own))), (h, kept)
    assert rows["future 0"]["timestamp"] // 10**9 == int(now + 0.5 * hour)
    for h in range(1, 5):
        r = rows[f"future {h}"]
        assert r["timestamp"] in received
        assert "weir.original_timestamp" in dict(r["attributes"])
    ancient = rows["syslog ancient"]
    assert ancient["timestamp"] in received
    assert dict(ancient["attributes"])["weir.original_timestamp"] == "1999-12-31T23:00:00.000000000Z"
    assert "weir.original_timestamp" not in dict(rows["syslog recent"]["attributes"])
    # The query docs/operations.md gives for the original time, in DuckDB.
    (t,) = w.duck().execute(
        "SELECT COALESCE(CAST(attributes['weir.original_timestamp'] AS TIMESTAMPTZ), \"timestamp\") "
        "FROM lake WHERE body = 'syslog ancient'").fetchone()
    assert t.timestamp() == 946681200, t
    # The window bounds the hours: the 24 in the window (25 where the window's edge cuts an
    # hour), now's hour and the future hour; far below the 505 the records name.
    hours = {seg["partition"] for seg in w.segments("default", "logs")}
    assert len(hours) <= 27, sorted(hours)
    m = w.metrics()
    retimed = sum(1 for r in rows.values() if "weir.original_timestamp" in dict(r["attributes"]))
    assert retimed >= 475 + 4 + 1
    counted = sum(
        float(line.rsplit(" ", 1)[1]) for line in m.splitlines() if line.startswith("weir_retimed_records_total{")
    )
    assert counted == retimed, m
