"""Optional TLS on the TCP sources: Fluent forward and syslog over TLS with Python's ssl
client and a throwaway self-signed certificate; plain TCP to a TLS port stores nothing."""

import socket
import ssl
import subprocess

import msgpack


def make_cert(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def test_fluent_and_syslog_over_tls(weir_factory, tmp_path):
    cert, key = make_cert(tmp_path)
    w = weir_factory(fluent=f'tls = {{ cert_file = "{cert}", key_file = "{key}" }}',
                     syslog=f'tls = {{ cert_file = "{cert}", key_file = "{key}" }}')
    ctx = ssl.create_default_context(cafile=str(cert))
    with socket.create_connection(("127.0.0.1", w.fluent_port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(msgpack.packb(["secure", [[1_700_000_000, {"log": "over tls"}]], {"chunk": "t1"}]))
            unpacker = msgpack.Unpacker(raw=False)
            unpacker.feed(s.recv(4096))
            assert list(unpacker) == [{"ack": "t1"}]
    with socket.create_connection(("127.0.0.1", w.syslog_tcp_port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"<14>1 2026-11-22T10:00:00Z h app - - - syslog over tls\n")
    # Plain TCP to the TLS port: the handshake fails and nothing is stored.
    with socket.create_connection(("127.0.0.1", w.fluent_port), timeout=10) as s:
        s.sendall(msgpack.packb(["plain", 1_700_000_000, {"log": "not over tls"}]))
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
    w.wait_rows("logs", 2)
    assert sorted(r["body"] for r in w.rows()) == ["over tls", "syslog over tls"]


def test_missing_certificate_fails_startup_with_the_key_named(weir_factory, tmp_path):
    import pytest

    w = weir_factory(fluent=f'tls = {{ cert_file = "{tmp_path}/nope.pem", key_file = "{tmp_path}/nope.key" }}', start=False)
    with pytest.raises(RuntimeError) as e:
        w.start()
    assert "sources.fluent.tls.cert_file" in str(e.value)
