"""No client can take the agent down through connections (issue #15 item 11): with file
descriptors run out by idle connections the agent keeps serving and recovers once they time out
(accept errors counted, never fatal); a connection over `max_connections` is closed and
counted; a slowloris client (headers or body trickled) is cut off after its timeout while a
normal client is served. The cost of a trickled Fluent frame is checked deterministically by a
unit test (`fluent::frame::tests::trickled_frame_costs_linear_work`), not by timing here."""

import re
import socket
import time

import msgpack
import requests

from test_durability import logs_request, post_logs
from test_fluent import closed_by_peer

SHORT = 'idle_timeout = "2s"\nheader_read_timeout = "1s"\nrequest_timeout = "1s"\n'


def counter(weir, source, reason):
    """`weir_rejected_requests_total` of one source and reason (0 when absent)."""
    total = 0
    for line in weir.metrics().splitlines():
        if line.startswith("weir_rejected_requests_total{") and f'source="{source}"' in line and f'reason="{reason}"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def wait_until(what, check, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def open_idle(port, n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        socks.append(s)
    return socks


def fluent_message(tag, text):
    return msgpack.packb([tag, int(time.time()), {"log": text}], use_bin_type=True)


def test_idle_connections_exhausting_descriptors_do_not_stop_the_agent(weir_factory):
    # 256 descriptors for the whole agent, 300 idle connections across three listeners: accepts
    # fail with EMFILE until the idle ones time out, and the agent serves again.
    w = weir_factory(
        wrap=["prlimit", "--nofile=256:256", "--"],
        otlp=SHORT,
        syslog='idle_timeout = "2s"\n',
        fluent='idle_timeout = "2s"\n',
    )
    socks = []
    for port in (w.fluent_port, w.syslog_tcp_port, w.http_port):
        socks += open_idle(port, 100)
    # The agent holds what it could accept and backs off on the rest; it must not exit.
    time.sleep(3)
    assert w.proc.poll() is None, w.log.read_text()[-3000:]
    # Every idle connection is closed by the agent in turn (accepted ones after idle_timeout,
    # the ones waiting in the backlog once descriptors are free again).
    deadline = time.time() + 60
    for s in socks:
        s.settimeout(max(1, deadline - time.time()))
        assert closed_by_peer(s)
        s.close()
    assert w.proc.poll() is None
    wait_until("the admin endpoint answers", lambda: w.metrics() != "")
    accept_errors = sum(counter(w, src, "accept_error") for src in ("fluent", "syslog_tcp", "otlp_http"))
    idle = sum(counter(w, src, "idle_timeout") for src in ("fluent", "syslog_tcp", "otlp_http"))
    assert accept_errors > 0, w.metrics()
    assert idle >= 200, idle
    # Recovered: each listener serves a valid request.
    assert post_logs(w, logs_request(0, 3)).status_code == 200
    with socket.create_connection(("127.0.0.1", w.fluent_port), timeout=10) as s:
        s.sendall(fluent_message("app", "after the storm"))
    with socket.create_connection(("127.0.0.1", w.syslog_tcp_port), timeout=10) as s:
        s.sendall(b"<13>1 2024-01-01T00:00:00Z host app - - - syslog after the storm\n")
    w.wait_rows("logs", 5)
    bodies = {r["body"] for r in w.rows()}
    assert "after the storm" in bodies and "syslog after the storm" in bodies


def test_connections_over_the_limit_are_closed_and_counted(weir_factory):
    w = weir_factory(syslog="max_connections = 3\n", fluent="max_connections = 3\n", otlp="max_connections = 3\n")
    for port, source in ((w.syslog_tcp_port, "syslog_tcp"), (w.fluent_port, "fluent"), (w.http_port, "otlp_http")):
        held = open_idle(port, 3)
        # Let the agent accept the three before the fourth arrives.
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert closed_by_peer(extra)
        extra.close()
        wait_until(f"{source} counts the refused connection", lambda: counter(w, source, "too_many_connections") >= 1)
        for s in held:
            s.close()
    # The slots come back: a request is served.
    wait_until("OTLP/HTTP serves again", lambda: post_logs(w, logs_request(0, 2)).status_code == 200)


def trickle_headers(port, head, meanwhile=None):
    """Sends `head` a byte at a time, 50 ms apart, calling `meanwhile` every 50 bytes; returns
    the seconds until the server cut the connection off (None if it never did)."""
    slow = socket.create_connection(("127.0.0.1", port), timeout=10)
    start = time.time()
    closed_at = None
    for i, b in enumerate(head):
        try:
            slow.sendall(bytes([b]))
        except (BrokenPipeError, ConnectionResetError):
            closed_at = time.time()
            break
        if meanwhile and i % 50 == 0:
            meanwhile()
        time.sleep(0.05)
        slow.setblocking(False)
        try:
            if slow.recv(1024) == b"":
                closed_at = time.time()
                break
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed_at = time.time()
            break
        finally:
            slow.setblocking(True)
    slow.close()
    return None if closed_at is None else closed_at - start


def test_slowloris_is_cut_off_while_normal_clients_are_served(weir_factory):
    w = weir_factory(otlp=SHORT)
    host, port = "127.0.0.1", w.http_port
    # Headers trickled a byte at a time: closed after header_read_timeout, while a normal client
    # is served meanwhile.
    head = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nX-Slow: " + b"a" * 200

    def served():
        assert post_logs(w, logs_request(1, 1)).status_code == 200

    elapsed = trickle_headers(port, head, served)
    assert elapsed is not None, "the slowloris client was never cut off"
    assert 0.8 <= elapsed <= 5, elapsed

    # A body trickled slower than request_timeout: 408, then a normal client gets 200.
    body = logs_request(2, 5).SerializeToString()
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    start = time.time()
    answer = b""
    for b in body:
        try:
            s.sendall(bytes([b]))
        except (BrokenPipeError, ConnectionResetError):
            break
        s.setblocking(False)
        try:
            chunk = s.recv(4096)
            answer += chunk
            if not chunk or b"\r\n\r\n" in answer:
                break
        except BlockingIOError:
            pass
        finally:
            s.setblocking(True)
        time.sleep(0.1)
    if b"\r\n\r\n" not in answer:
        s.settimeout(5)
        try:
            answer += s.recv(4096)
        except OSError:
            pass
    s.close()
    assert re.match(rb"HTTP/1.1 408", answer), answer[:200]
    assert time.time() - start < 5
    assert counter(w, "otlp_http", "timeout") >= 1
    assert post_logs(w, logs_request(3, 2)).status_code == 200
    r = requests.get(w.admin + "/healthz", timeout=5)
    assert r.status_code == 200


def test_idle_grpc_and_fluent_connections_time_out(weir_factory):
    w = weir_factory(otlp=SHORT, fluent='idle_timeout = "1s"\n')
    for port in (w.grpc_port, w.fluent_port):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        start = time.time()
        assert closed_by_peer(s)
        s.close()
        assert 0.5 <= time.time() - start <= 6
    assert counter(w, "otlp_grpc", "idle_timeout") == 1
    assert counter(w, "fluent", "idle_timeout") == 1
    # A Fluent client that keeps sending is not idle.
    with socket.create_connection(("127.0.0.1", w.fluent_port), timeout=10) as s:
        for i in range(4):
            s.sendall(fluent_message("app", f"steady {i}"))
            time.sleep(0.5)
    w.wait_rows("logs", 4)


def test_trickled_fluent_frame_is_decoded_whole(weir):
    # A 300 KiB Forward message arriving 1 KiB at a time: the scan resumes across reads (the
    # linear cost is checked by a unit test) and the message is decoded, written and acked once.
    entries = [[int(time.time()), {"log": f"trickled {i} " + "x" * 120}] for i in range(2000)]
    frame = msgpack.packb(["app.trickle", entries, {"chunk": "trickle-1"}], use_bin_type=True)
    assert len(frame) > 256 << 10
    with socket.create_connection(("127.0.0.1", weir.fluent_port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for at in range(0, len(frame), 1024):
            s.sendall(frame[at : at + 1024])
            time.sleep(0.001)
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            data = s.recv(4096)
            assert data, "closed before the ack"
            unpacker.feed(data)
            acks = list(unpacker)
            if acks:
                assert acks == [{"ack": "trickle-1"}]
                break
    weir.wait_rows("logs", 2000)


def trickle_body(port, head, length=1000):
    """Sends `head` (a request's headers without their blank line) with `Content-Length:
    length`, then the body one byte a second; returns (bytes of the body sent, what the server
    answered) once the server closed the connection, or None if the whole body went out."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head + f"\r\nContent-Length: {length}\r\n\r\n".encode())
    answer = b""
    try:
        for sent in range(length):
            try:
                s.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                return sent, answer
            time.sleep(1)
            s.setblocking(False)
            try:
                chunk = s.recv(4096)
                if not chunk:
                    return sent + 1, answer
                answer += chunk
            except BlockingIOError:
                pass
            except ConnectionResetError:
                return sent + 1, answer
            finally:
                s.setblocking(True)
        return None
    finally:
        s.close()


def check_slow_clients(port, healthz, body_head, reads_body):
    """A listener with short timeouts cuts off a slowloris client (headers trickled) while
    `/healthz` answers others, and the connection of a body trickled a byte a second
    (`body_head`) is closed while the client still had bytes to send: after a 408 naming
    `request_timeout` when the route reads the body (`reads_body`), after the route's answer
    otherwise. `/healthz` answers afterwards."""

    def served():
        assert healthz().status_code == 200

    elapsed = trickle_headers(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200, served)
    assert elapsed is not None, "the slowloris client was never cut off"

    ended = trickle_body(port, body_head)
    assert ended is not None, "the trickled body was read whole"
    sent, answer = ended
    assert sent < 1000
    if reads_body:
        assert answer == b"" or re.match(rb"HTTP/1.1 408", answer), answer[:200]
        assert answer == b"" or b"request_timeout" in answer, answer[:300]
    served()


def check_connection_limit(port, url, limit, source):
    """A listener with `max_connections = limit` and long header and idle timeouts (so
    nothing but the limit can close a connection): with `limit` connections open (one a
    keep-alive session, the others idle), one more is closed by the server, and
    `weir_rejected_requests_total{source,reason="too_many_connections"}` rose by exactly 1
    (read over the kept-alive session); once the idle ones are closed `/healthz` answers."""

    def refused(session):
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in session.get(url + "/metrics", timeout=5).text.splitlines()
            if line.startswith("weir_rejected_requests_total{")
            and f'source="{source}"' in line
            and 'reason="too_many_connections"' in line
        )

    session = requests.Session()
    before = refused(session)
    held = open_idle(port, limit - 1)
    # The session's connection and the idle ones take every slot: one more is closed.
    extra = socket.create_connection(("127.0.0.1", port), timeout=30)
    assert closed_by_peer(extra)
    extra.close()
    assert refused(session) == before + 1
    session.close()
    for s in held:
        s.close()
    wait_until("/healthz answers again", lambda: requests.get(url + "/healthz", timeout=5).status_code == 200)


LONG = 'header_read_timeout = "10m"\nidle_timeout = "10m"\n'


def test_admin_port_bounds_its_connections(weir_factory):
    w = weir_factory(admin='header_read_timeout = "2s"\nidle_timeout = "5s"\nrequest_timeout = "2s"\n')
    check_slow_clients(
        w.admin_port,
        lambda: requests.get(w.admin + "/healthz", timeout=5),
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Type: application/json",
        reads_body=False,
    )
    # The agent still stops cleanly (graceful shutdown of the admin listener).
    assert w.stop() == 0
    w = weir_factory(name="limit", admin="max_connections = 3\n" + LONG)
    check_connection_limit(w.admin_port, w.admin, 3, "admin")
    assert w.stop() == 0


def test_control_plane_api_bounds_its_connections(tmp_path):
    from test_control_plane import ControlPlane

    lake = f'[lake]\nurl = "file://{tmp_path / "lake"}"\n'
    for name, keys in (
        ("cp", 'header_read_timeout = "2s"\nidle_timeout = "5s"\nrequest_timeout = "2s"'),
        ("cp-limit", "max_connections = 3\n" + LONG),
    ):
        cp = ControlPlane(tmp_path / name, 'index = "sled"\n' + keys, lake)
        cp.start()
        try:
            if name == "cp":
                # No token: the body is read before the token is checked.
                check_slow_clients(
                    cp.port,
                    lambda: requests.get(cp.url + "/healthz", timeout=5),
                    b"POST /v1/segments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json",
                    reads_body=True,
                )
            else:
                check_connection_limit(cp.port, cp.url, 3, "control_plane")
            cp.stop()
            assert cp.proc.returncode == 0, cp.log.read_text()[-3000:]
        finally:
            if cp.proc and cp.proc.poll() is None:
                cp.proc.kill()
                cp.proc.wait(10)
