"""syslog with real senders: util-linux `logger` (RFC 5424 and RFC 3164, UDP and TCP,
octet counting) and Python's logging.handlers.SysLogHandler; pyarrow reads the lake."""

import logging
import logging.handlers
import socket
import subprocess
import time


def logger(weir, *args):
    # UDP and TCP listen on separate ports (each bound on port 0).
    port = weir.syslog_tcp_port if "--tcp" in args else weir.syslog_udp_port
    subprocess.run(["logger", "-n", "127.0.0.1", "-P", str(port), *args], check=True, timeout=10)


def by_body(weir, n, tenant="default"):
    weir.wait_rows("logs", n, tenant)
    rows = weir.rows(tenant, "logs")
    return {r["body"]: r for r in rows}


def test_logger_rfc5424_and_rfc3164_over_udp_and_tcp(weir):
    logger(weir, "--rfc5424", "--udp", "-t", "myapp", "-p", "local3.err", "--sd-id", "zoo@123", "--sd-param", 'tiger="hungry"', "udp 5424 message")
    logger(weir, "--rfc5424", "--tcp", "-t", "myapp", "-p", "user.warning", "--msgid", "M42", "tcp 5424 message")
    logger(weir, "--rfc5424", "--tcp", "--octet-count", "-t", "counted", "-p", "daemon.info", "octet counted message")
    logger(weir, "--rfc3164", "--udp", "-t", "oldapp", "-p", "mail.crit", "udp 3164 message")
    logger(weir, "--rfc3164", "--tcp", "-t", "oldapp", "-p", "auth.debug", "tcp 3164 message")
    got = by_body(weir, 5)
    host = socket.gethostname()

    r = got["udp 5424 message"]
    assert (r["severity_number"], r["severity_text"]) == (17, "err")
    assert r["service_name"] == "myapp"
    res = dict(r["resource_attributes"])
    assert res["service.name"] == "myapp" and res["host.name"] == host
    a = dict(r["attributes"])
    assert a["syslog.facility"] == "local3" and a["syslog.format"] == "rfc5424"
    assert a["syslog.priority"] == str(19 * 8 + 3)
    assert a["syslog.sd.zoo@123.tiger"] == "hungry"
    assert abs(r["timestamp"] - time.time_ns()) < 60e9

    r = got["tcp 5424 message"]
    assert (r["severity_number"], r["severity_text"]) == (13, "warning")
    assert dict(r["attributes"])["syslog.msg_id"] == "M42"
    assert got["octet counted message"]["service_name"] == "counted"

    r = got["udp 3164 message"]
    assert (r["severity_number"], r["severity_text"]) == (18, "crit")
    assert dict(r["attributes"])["syslog.format"] == "rfc3164"
    assert dict(r["attributes"])["syslog.facility"] == "mail"
    assert r["service_name"] == "oldapp"
    assert got["tcp 3164 message"]["severity_number"] == 5
    m = weir.metrics()
    assert 'weir_received_records_total{signal="logs",source="syslog_udp"} 2' in m
    assert 'weir_received_records_total{signal="logs",source="syslog_tcp"} 3' in m


def test_python_sysloghandler_and_unparseable_lines(weir):
    log = logging.getLogger("weir.syslog.test")
    log.propagate = False
    udp = logging.handlers.SysLogHandler(address=("127.0.0.1", weir.syslog_udp_port), facility="local1")
    tcp = logging.handlers.SysLogHandler(address=("127.0.0.1", weir.syslog_tcp_port), socktype=socket.SOCK_STREAM)
    log.addHandler(udp)
    log.addHandler(tcp)
    log.error("python says hello")
    log.removeHandler(udp)
    log.removeHandler(tcp)
    udp.close()
    tcp.close()
    # Garbage over TCP: kept as the raw body with the reason, not dropped.
    with socket.create_connection(("127.0.0.1", weir.syslog_tcp_port)) as s:
        s.sendall(b"this is not syslog at all\n<13>1 not-a-time h a - - - bad time\n")
    got = weir.wait_rows("logs", 4)
    rows = weir.rows()
    py = [r for r in rows if r["body"].endswith("python says hello")]
    # SysLogHandler sends "<PRI>message\0" with no header: the raw line is the body, the
    # severity and facility of the priority are kept, and the missing header is reported.
    assert sorted(r["body"] for r in py) == ["<11>python says hello", "<139>python says hello"]
    for r in py:
        assert (r["severity_number"], r["severity_text"]) == (17, "err")
        assert "no RFC 5424 or RFC 3164 header" in dict(r["attributes"])["syslog.parse_error"]
    assert {dict(r["attributes"])["syslog.facility"] for r in py} == {"local1", "user"}
    raw = [r for r in rows if r["body"] == "this is not syslog at all"][0]
    assert dict(raw["attributes"])["syslog.parse_error"] == "no <PRI> at the start of the message"
    bad = [r for r in rows if r["body"].startswith("<13>1 not-a-time")][0]
    assert "not RFC 3339" in dict(bad["attributes"])["syslog.parse_error"]


def test_oversize_frame_closes_only_that_connection(weir_factory):
    w = weir_factory(syslog='max_frame_bytes = "1KiB"')
    with socket.create_connection(("127.0.0.1", w.syslog_tcp_port)) as bad:
        bad.sendall(b"<13>" + b"x" * 5000 + b"\n")
        bad.settimeout(5)
        assert bad.recv(1) == b""  # closed by the agent
    logger(w, "--rfc5424", "--tcp", "-t", "ok", "still serving")
    got = by_body(w, 1)
    assert "still serving" in got
    assert 'weir_rejected_requests_total{reason="bad_frame",source="syslog_tcp"} 1' in w.metrics()


def udp_drops(port):
    """The kernel's drop count of the UDP socket bound to `port` (/proc/net/udp, last column)."""
    for line in open("/proc/net/udp").read().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == port:
            return int(f[-1])
    raise AssertionError(f"no UDP socket on port {port}")


def test_udp_at_20k_datagrams_per_second_loses_nothing_uncounted(weir):
    """The receive loop never waits for the buffer's fsync: at 20,000 datagrams/s for two
    seconds the kernel drops none (/proc/net/udp), and every datagram is either in the lake or
    counted as dropped by the agent."""
    sent = 40_000
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.perf_counter()
    for i in range(sent):
        s.sendto(b"<14>1 2026-11-30T12:00:00Z host app - - - burst %d" % i, ("127.0.0.1", weir.syslog_udp_port))
        if i % 200 == 199:
            # Paced at 20k/s: 200 datagrams per 10 ms.
            ahead = start + (i + 1) / 20_000 - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
    s.close()
    assert udp_drops(weir.syslog_udp_port) == 0
    deadline = time.time() + 60
    while True:
        m = weir.metrics()
        got = dropped = 0
        for line in m.splitlines():
            if line.startswith('weir_received_records_total{signal="logs",source="syslog_udp"}'):
                got = int(float(line.split()[-1]))
            if line.startswith("weir_rejected_requests_total") and 'source="syslog_udp"' in line:
                dropped += int(float(line.split()[-1]))
        if got + dropped >= sent or time.time() > deadline:
            break
        time.sleep(0.5)
    assert got + dropped == sent, (got, dropped)
    assert got > sent // 2, (got, dropped)  # the writer keeps up with most of it
    assert udp_drops(weir.syslog_udp_port) == 0
    weir.wait_rows("logs", got)
