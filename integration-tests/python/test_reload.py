"""SIGHUP reloads the configuration under load: a source moved to a new address is rebound
(listen.json says where), a new transform pipeline applies to the next request, limits change,
and configurations that fail (a bad value, a module that does not load, an address taken) are
refused with the running one kept. No acknowledged record is lost or written twice (counted
through the index), and the process never restarts."""

import json
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import requests

from test_durability import logs_request

IDENTITY = (Path(__file__).resolve().parents[2] / "transforms" / "tests" / "guests" / "identity.wat").read_text()


def metric(w, series):
    found = re.search("^" + re.escape(series) + r" (\S+)$", w.metrics(), re.M)
    return float(found.group(1)) if found else 0.0


def listen(w):
    return json.loads((w.data / "listen.json").read_text())


def wait_for(what, pred, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Load(threading.Thread):
    """Posts OTLP/HTTP log requests of 20 records, one connection each, to the address
    listen.json gives. A connection refused (the source is being rebound) or reset without an
    answer (it sat in the old listener's backlog when that closed) is sent again, as OTLP
    exporters do: the check that nothing is written twice then also proves that no request
    cut off that way had been taken. A request that timed out is never resent."""

    def __init__(self, w):
        super().__init__(daemon=True)
        self.w, self.stop, self.batch = w, threading.Event(), 0
        self.acked, self.ambiguous, self.refused, self.statuses = [], [], 0, {}

    def url(self):
        return "http://" + listen(self.w)["sources.otlp.http_address"] + "/v1/logs"

    def run(self):
        while not self.stop.is_set():
            self.batch += 1
            body = logs_request(self.batch, 20).SerializeToString()
            while not self.stop.is_set():
                try:
                    r = requests.post(self.url(), data=body, timeout=10, headers={
                        "Content-Type": "application/x-protobuf", "Connection": "close"})
                except requests.ConnectionError:
                    self.refused += 1
                    time.sleep(0.02)
                    continue
                except requests.Timeout:
                    self.ambiguous.append(self.batch)
                    break
                self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    self.acked.append(self.batch)
                elif r.status_code not in (429, 503):
                    self.ambiguous.append(self.batch)
                break

    def finish(self):
        self.stop.set()
        self.join(30)


def listed_bodies(w):
    """Every log body in the files the index lists (not a glob: compacted inputs stay in the
    lake during the grace period)."""
    bodies = []
    for s in w.segments():
        bodies += pq.read_table(w.lake / s["object_key"], columns=["body"]).column("body").to_pylist()
    return bodies


def reload(w, config_text, result):
    """Writes the configuration, sends SIGHUP and waits for the reload to be counted."""
    before = metric(w, f'weir_config_reloads_total{{result="{result}"}}')
    w.config.write_text(config_text)
    w.proc.send_signal(signal.SIGHUP)
    wait_for(f"a reload {result}", lambda: metric(w, f'weir_config_reloads_total{{result="{result}"}}') > before)


def test_sighup_reload_under_load_loses_nothing(weir_factory, tmp_path):
    (tmp_path / "id.wat").write_text(IDENTITY)
    (tmp_path / "broken.wat").write_text("(module (func $oops (result i32)))")
    w = weir_factory(extra_toml='[compaction]\nenabled = false\n[lake]\nmax_file_age = "1s"\n')
    original = w.config.read_text()
    pid = w.proc.pid
    first = listen(w)["sources.otlp.http_address"]
    first_fluent = listen(w)["sources.fluent.address"]
    # An idle Fluent connection stays open across the reload: the moved source must still
    # let its old address go.
    idle = socket.create_connection(tuple_of(first_fluent), timeout=5)
    load = Load(w)
    load.start()
    wait_for("the first acknowledged requests", lambda: len(load.acked) >= 5)

    # 1. Move the OTLP/HTTP source, add a transform pipeline, change limits and retention.
    # Another loopback address, port 0: a real move that no other process can take first.
    moved, fluent_moved = "127.0.0.2:0", "127.0.0.2:0"
    text = re.sub(r'http_address = "[^"]*"', f'http_address = "{moved}"', original)
    text = re.sub(r'(\[sources\.fluent\]\naddress = )"[^"]*"', f'\\1"{fluent_moved}"', text)
    assert fluent_moved in text
    # A key that needs a restart: named in a warning, the admin port stays where it is.
    text = re.sub(r'(\[admin\]\naddress = )"[^"]*"', r'\1"127.0.0.1:1"', text) + f'''
[buffer]
max_bytes = "512MiB"
max_partitions_per_request = 24
[retention]
default = "30d"
[[pipelines]]
name = "all-logs"
signals = ["logs"]
[[pipelines.transforms]]
name = "id"
module = "{tmp_path}/id.wat"
'''
    reload(w, text, "applied")
    bound = listen(w)["sources.otlp.http_address"]
    assert bound.startswith("127.0.0.2:"), bound
    assert listen(w)["sources.fluent.address"].startswith("127.0.0.2:")
    assert_nothing_listens(first_fluent)
    idle.close()
    assert metric(w, "weir_config_last_reload_successful") == 1
    log = w.log.read_text()
    assert "retention sweeper restarted" in log
    restart = [l for l in log.splitlines() if "take effect only after a restart" in l]
    assert restart and "admin.address" in restart[-1] and "sources" not in restart[-1], restart
    acked = len(load.acked)
    wait_for("requests acknowledged on the new address", lambda: len(load.acked) >= acked + 5)
    wait_for("the new pipeline's transform running",
             lambda: metric(w, 'weir_transform_batches_total{transform="id"}') > 0)
    assert_nothing_listens(first)
    # The new hours bound applies to the next request (the default, 72, would take it).
    r = requests.post("http://" + bound + "/v1/logs", data=hours_request(25).SerializeToString(),
                      headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 400 and "max_partitions_per_request (24)" in r.text, (r.status_code, r.text)

    # 2. A bad value: refused, the running configuration stays.
    reload(w, text.replace('max_bytes = "512MiB"', 'max_bytes = "lots"'), "refused")
    assert metric(w, "weir_config_last_reload_successful") == 0
    refusal = refused_line(w)
    assert "buffer.max_bytes" in refusal and "lots" in refusal, refusal

    # 3. A module that does not load: refused before any source moved.
    # (It also moves the source: nothing may move when the reload is refused.)
    broken = text.replace(f"{tmp_path}/id.wat", f"{tmp_path}/broken.wat")
    reload(w, broken.replace(moved, "127.0.0.3:0"), "refused")
    assert "pipeline all-logs" in refused_line(w), refused_line(w)
    assert listen(w)["sources.otlp.http_address"] == bound

    # 4. An address another process holds: the source comes back on its running address.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    held = f"127.0.0.1:{taken.getsockname()[1]}"
    reload(w, text.replace(f'http_address = "{moved}"', f'http_address = "{held}"'), "refused")
    taken.close()
    assert listen(w)["sources.otlp.http_address"] == bound
    assert "sources.otlp.http_address" in refused_line(w), refused_line(w)
    acked = len(load.acked)
    wait_for("requests acknowledged after the refused reloads", lambda: len(load.acked) >= acked + 5)

    # 5. Back to the first configuration: the pipeline goes, the source moves again.
    reload(w, original, "applied")
    acked = len(load.acked)
    wait_for("requests acknowledged after the last reload", lambda: len(load.acked) >= acked + 5)
    load.finish()

    assert w.proc.pid == pid and w.proc.poll() is None, "the reloads restarted the process"
    assert 500 not in load.statuses, load.statuses
    # No request hung.
    assert not load.ambiguous, load.ambiguous
    want = {f"b{b}-r{i}" for b in load.acked for i in range(20)}
    deadline, seen = time.time() + 30, {}
    while time.time() < deadline:
        seen = {}
        for body in listed_bodies(w):
            key = body.rsplit("-", 1)[0]
            seen[key] = seen.get(key, 0) + 1
        if want <= set(seen):
            break
        time.sleep(0.2)
    missing = want - set(seen)
    twice = {k: n for k, n in seen.items() if n > 1}
    unknown = set(seen) - want
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
    assert not twice, f"records written twice: {list(twice.items())[:5]}"
    assert not unknown, f"records never sent: {sorted(unknown)[:5]}"
    assert w.stop() == 0


def tuple_of(address):
    host, port = address.rsplit(":", 1)
    return host, int(port)


def hours_request(hours):
    """One OTLP logs request whose records fall in `hours` distinct hours."""
    req = logs_request(0, hours)
    for i, r in enumerate(req.resource_logs[0].scope_logs[0].log_records):
        r.time_unix_nano = 1_700_000_000_000_000_000 + i * 3_600_000_000_000
        r.body.string_value = f"hours-{i}"
    return req


def assert_nothing_listens(address):
    """The moved source let its old address go."""
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except ConnectionRefusedError:
        return
    raise AssertionError(f"{address} still accepts connections after the source moved")


def refused_line(w):
    """The last "configuration reload refused" log line."""
    lines = [l for l in w.log.read_text().splitlines() if "configuration reload refused" in l]
    assert lines, "no refusal logged"
    return lines[-1]


def test_sighup_does_not_stop_the_other_roles(tmp_path):
    """`weir control-plane` takes SIGHUP as a reload (its tokens change; a revoked token is
    refused) instead of dying without its graceful shutdown."""
    import subprocess

    from conftest import WEIR_BIN, wait_listening

    cfg = tmp_path / "cp.toml"

    def write(token):
        cfg.write_text(f'''data_dir = "{tmp_path}/cp"
[control_plane]
address = "127.0.0.1:0"
[[control_plane.tokens]]
token = "{token}"
scopes = ["read", "write", "admin"]
''')

    write("first-token-0123456789")
    log = (tmp_path / "cp.log").open("wb")
    proc = subprocess.Popen([WEIR_BIN, "control-plane", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        listen_file = tmp_path / "cp" / "listen.json"
        wait_for("the control plane's listen.json", listen_file.exists)
        base = "http://" + json.loads(listen_file.read_text())["control_plane.address"]
        wait_listening(base + "/readyz", proc, "control plane")

        def status(token):
            return requests.get(base + "/v1/agents", headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code

        assert status("first-token-0123456789") == 200
        write("second-token-0123456789")
        proc.send_signal(signal.SIGHUP)
        wait_for("the new token", lambda: status("second-token-0123456789") == 200)
        assert status("first-token-0123456789") == 401
        cfg.write_text(cfg.read_text() + "[retention]\ninterval = \"forever\"\n")
        proc.send_signal(signal.SIGHUP)
        wait_for("the refused reload",
                 lambda: 'weir_config_reloads_total{result="refused"} 1' in requests.get(base + "/metrics", timeout=5).text)
        assert status("second-token-0123456789") == 200 and proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
