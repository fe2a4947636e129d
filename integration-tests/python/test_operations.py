"""Operating the agent: defaults with no arguments, `weir validate`, graceful shutdown under
load, health endpoints and the Prometheus metrics."""

import json
import re
import signal
import subprocess
import threading
import time
import urllib.request

import requests

from conftest import WEIR_BIN
from test_durability import logs_request, post_logs


def test_run_with_no_arguments_uses_the_defaults(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "RUST_LOG": "info"}
    p = subprocess.Popen([WEIR_BIN, "run"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:8686/readyz", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.time() < deadline and p.poll() is None, p.stdout.read().decode()
                time.sleep(0.1)
        r = requests.post("http://127.0.0.1:4318/v1/logs", data=logs_request(1, 2).SerializeToString(),
                          headers={"Content-Type": "application/x-protobuf"}, timeout=10)
        assert r.status_code == 200
        assert (tmp_path / "weir-data" / "buffer").is_dir()
        assert (tmp_path / "weir-data" / "index").is_dir()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    # The shutdown flush wrote the two records under ./weir-data/lake.
    files = list((tmp_path / "weir-data" / "lake" / "tenant=default" / "signal=logs").rglob("*.parquet"))
    assert len(files) == 1


def test_port_zero_listens_on_free_ports_and_reports_them(tmp_path):
    """Every listen address may ask for port 0; the agent writes what it bound to
    {data_dir}/listen.json, and the addresses there serve."""
    data = tmp_path / "data"
    cfg = tmp_path / "weir.toml"
    cfg.write_text(f"""
data_dir = "{data}"
[sources.otlp]
grpc_address = "127.0.0.1:0"
http_address = "127.0.0.1:0"
[sources.syslog]
udp_address = "127.0.0.1:0"
tcp_address = "127.0.0.1:0"
[sources.loki]
address = "127.0.0.1:0"
[sources.datadog]
address = "127.0.0.1:0"
[sources.fluent]
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
""")
    log = (tmp_path / "weir.log").open("wb")
    p = subprocess.Popen([WEIR_BIN, "run", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while not (data / "listen.json").exists():
            assert time.time() < deadline and p.poll() is None, (tmp_path / "weir.log").read_text()
            time.sleep(0.05)
        bound = json.loads((data / "listen.json").read_text())
        assert set(bound) == {
            "admin.address", "sources.otlp.grpc_address", "sources.otlp.http_address",
            "sources.syslog.udp_address", "sources.syslog.tcp_address", "sources.loki.address",
            "sources.datadog.address", "sources.fluent.address",
        }
        tcp_ports = [int(a.rsplit(":", 1)[1]) for k, a in bound.items() if k != "sources.syslog.udp_address"]
        assert 0 not in tcp_ports and len(set(tcp_ports)) == len(tcp_ports)
        admin = "http://" + bound["admin.address"]
        while True:
            try:
                if requests.get(admin + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.time() < deadline and p.poll() is None, (tmp_path / "weir.log").read_text()
            time.sleep(0.05)
        r = requests.post("http://" + bound["sources.otlp.http_address"] + "/v1/logs",
                          data=logs_request(1, 2).SerializeToString(),
                          headers={"Content-Type": "application/x-protobuf"}, timeout=10)
        assert r.status_code == 200
        r = requests.get("http://" + bound["sources.loki.address"] + "/ready", timeout=5)
        assert r.status_code == 200
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        log.close()


def test_validate_and_version(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[lake]\nflush_bytes = "8MiB"\n')
    r = subprocess.run([WEIR_BIN, "validate", "--config", str(good)], capture_output=True, text=True)
    assert r.returncode == 0 and "valid" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[lake]\nflush_bytes = "8 parsecs"\n[sources.otlp]\nhttp_adress = "x"\n')
    r = subprocess.run([WEIR_BIN, "validate", "--config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "bad.toml" in r.stderr and ("flush_bytes" in r.stderr or "http_adress" in r.stderr), r.stderr
    conflict = tmp_path / "conflict.toml"
    conflict.write_text('[admin]\naddress = "0.0.0.0:4318"\n[lake]\nzstd_level = 99\n')
    r = subprocess.run([WEIR_BIN, "validate", "--config", str(conflict)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "is also used by admin.address" in r.stderr and "lake.zstd_level = 99" in r.stderr, r.stderr
    r = subprocess.run([WEIR_BIN, "validate", "--config", str(tmp_path / "missing.toml")], capture_output=True, text=True)
    assert r.returncode == 2 and "missing.toml" in r.stderr
    r = subprocess.run([WEIR_BIN, "version"], capture_output=True, text=True)
    assert r.returncode == 0 and re.match(r"weir \d+\.\d+\.\d+ \(lake schema 1, transform ABI 1\)", r.stdout)


def test_sigterm_under_load_finishes_in_flight_requests_and_exits_0(weir_factory):
    w = weir_factory('[lake]\nmax_file_age = "1h"\n')
    ok = []
    stop = threading.Event()

    def sender(k):
        b = 0
        while not stop.is_set():
            try:
                r = post_logs(w, logs_request(k * 100_000 + b, 50))
            except requests.ConnectionError:
                return
            if r.status_code == 200:
                ok.append(k * 100_000 + b)
            b += 1

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    started = time.time()
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(20) == 0
    elapsed = time.time() - started
    stop.set()
    for t in threads:
        t.join()
    assert elapsed < 15, f"shutdown took {elapsed:.1f}s"
    assert ok, "no request succeeded before the shutdown"
    # Every request that got a 200 is in the lake: flushed at shutdown, or at the next start.
    w.proc = None
    w.config.write_text(w.config.read_text().replace('max_file_age = "1h"', 'max_file_age = "1s"'))
    w.start()
    w.wait_rows("logs", len(ok) * 50)
    bodies = {r["body"] for r in w.rows()}
    assert len(bodies) == len(ok) * 50
    assert all(f"b{b}-r0-" + "x" * 40 in bodies for b in ok)


def test_health_and_metrics(weir):
    assert requests.get(weir.admin + "/livez", timeout=5).status_code == 200
    assert requests.get(weir.admin + "/readyz", timeout=5).status_code == 200
    health = requests.get(weir.admin + "/healthz", timeout=5).json()
    assert health["status"] == "ok" and "entries" in health["buffer"]
    assert post_logs(weir, logs_request(1, 7)).status_code == 200
    assert requests.post(weir.http + "/v1/logs", data=b"\x01\x02garbage", headers={"Content-Type": "application/x-protobuf"}, timeout=5).status_code == 400
    weir.wait_rows("logs", 7)
    time.sleep(0.5)
    r = requests.get(weir.admin + "/metrics", timeout=5)
    assert r.headers["content-type"].startswith("text/plain")
    m = r.text

    def value(series):
        found = re.search("^" + re.escape(series) + r" (\S+)$", m, re.M)
        assert found, f"{series} missing from /metrics:\n{m}"
        return float(found.group(1))

    assert value('weir_received_records_total{signal="logs",source="otlp_http"}') == 7
    assert value('weir_received_bytes_total{signal="logs",source="otlp_http"}') > 0
    assert value('weir_rejected_requests_total{reason="malformed",source="otlp_http"}') == 1
    assert value('weir_segments_flushed_total{signal="logs"}') >= 1
    assert value('weir_rows_flushed_total{signal="logs"}') == 7
    assert value("weir_flush_duration_seconds_count") >= 1
    assert value("weir_buffer_entries") == 0
    assert value("weir_buffer_bytes") == 0
    # /v1/segments validates its parameters.
    bad = requests.get(weir.admin + "/v1/segments?tenant=default&signal=nope", timeout=5)
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_request"
    bad = requests.get(weir.admin + "/v1/segments?tenant=default&from=yesterday", timeout=5)
    assert bad.status_code == 400 and "RFC 3339" in bad.json()["message"]


def test_running_out_of_file_descriptors_does_not_stop_the_agent(weir_factory):
    """EMFILE on accept() used to end the Fluent source and with it the agent. Now it is
    logged, counted and backed off; once descriptors are free again the agent serves."""
    import socket as sk

    w = weir_factory(wrap=["prlimit", "--nofile=256:256", "--"])
    held = []
    try:
        for _ in range(300):
            s = sk.create_connection(("127.0.0.1", w.fluent_port), timeout=5)
            held.append(s)
    except OSError:
        pass  # the listen backlog may fill first: what is held is enough
    assert len(held) >= 100, len(held)
    time.sleep(1.5)
    assert w.proc.poll() is None, w.log.read_text()
    for s in held:
        s.close()
    deadline = time.time() + 20
    while True:
        try:
            r = requests.post(w.http + "/v1/logs", data=logs_request(1, 3).SerializeToString(),
                              headers={"Content-Type": "application/x-protobuf"}, timeout=5)
            if r.status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert time.time() < deadline and w.proc.poll() is None, w.log.read_text()
        time.sleep(0.2)
    text = requests.get(w.admin + "/metrics", timeout=5).text
    assert re.search(r'weir_rejected_requests_total\{reason="accept_error",source="fluent"\} [1-9]', text), text
    assert "accept/receive failed" in w.log.read_text()
