"""Harness for end-to-end tests: runs the real `weir` binary with its own data directory, and
reads the lake with DuckDB and pyarrow (readers we did not write).

Ports: every address of a `weir` process the harness starts is `127.0.0.1:0`; the process binds
port 0 itself and reports what the kernel gave it in `{data_dir}/listen.json`, which the harness
reads after every start (the ports change at a restart). Nothing picks a number for `weir` in
advance, so no other process can take it between the pick and the bind. `free_port()` remains
only for third-party servers that cannot report the port they bound (moto, azurite, Prometheus,
node_exporter; PostgreSQL in scripts/test.sh). A `weir` process whose address other processes
were configured with once must keep its port across a restart: it asks at the restart for the
number it was given at its first start (`ControlPlane` in test_control_plane.py, whose URL the
agents hold)."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

WEIR_BIN = str(Path(os.environ.get("TEST_WEIR_BIN") or Path(__file__).resolve().parents[2] / "target" / "debug" / "weir").resolve())


# Ports handed out in this test session: the kernel may give a just-closed port 0 binding the
# same number twice, and two agents (or two keys of one agent) on one port fail to start.
_HANDED_OUT = set()


def free_port():
    """A loopback TCP and UDP port no other caller of this session got. The kernel picks it
    (port 0) while every earlier pick is still held open, so two picks never collide. Another
    process can still take it before the server binds it: use it only for servers that cannot
    bind port 0 and report the port (not for `weir`: see `read_listen`)."""
    held = []
    try:
        while True:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
            port = s.getsockname()[1]
            if port in _HANDED_OUT:
                continue
            # The syslog source also binds UDP on the same number.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    finally:
        for s in held:
            s.close()


def read_listen(data_dir: Path, proc, log: Path, timeout=30):
    """The addresses a `weir` process bound, by configuration key, from `{data_dir}/listen.json`
    (written atomically once every socket is bound). The caller deletes a stale file before it
    starts the process, so the file that appears is this process's."""
    path = data_dir / "listen.json"
    deadline = time.time() + timeout
    while True:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"weir exited with {proc.returncode} before writing {path}:\n{log.read_text()}")
        if time.time() > deadline:
            raise RuntimeError(f"weir did not write {path}:\n{log.read_text()}")
        time.sleep(0.02)


def remove_listen(data_dir: Path):
    """Deletes a listen.json an earlier process left, so the next read waits for the new one."""
    (data_dir / "listen.json").unlink(missing_ok=True)


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def wait_listening(url, proc, what, timeout=30):
    """Waits until a server we started answers HTTP at `url` (any status)."""
    import requests

    deadline = time.time() + timeout
    while True:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{what} did not start")
            time.sleep(0.1)


class Weir:
    """One `weir run` process and its data directory."""

    def __init__(self, root: Path, extra_toml: str = "", wrap=None, otlp="", syslog="", fluent="", admin=""):
        self.root = root
        self.data = root / "data"
        self.lake = self.data / "lake"
        self.config = root / "weir.toml"
        self.config.write_text(
            f"""
data_dir = "{self.data}"
[sources.otlp]
grpc_address = "127.0.0.1:0"
http_address = "127.0.0.1:0"
{otlp}
[sources.syslog]
udp_address = "127.0.0.1:0"
tcp_address = "127.0.0.1:0"
batch_timeout = "50ms"
{syslog}
[sources.loki]
address = "127.0.0.1:0"
[sources.datadog]
address = "127.0.0.1:0"
[sources.fluent]
address = "127.0.0.1:0"
{fluent}
[admin]
address = "127.0.0.1:0"
{admin}
[shutdown]
timeout = "10s"
{extra_toml}
"""
        )
        if "[lake]" not in extra_toml:
            with self.config.open("a") as f:
                f.write('[lake]\nmax_file_age = "1s"\n')
        self.wrap = wrap or []
        self.proc = None
        self._listen = None
        self.log = root / "weir.log"

    def address(self, key):
        """`host:port` the current process bound for configuration key `key` (as in
        listen.json: `admin.address`, `sources.otlp.http_address`, ...), read once per start."""
        if self._listen is None:
            if self.proc is None:
                raise RuntimeError("weir is not started: its ports are chosen when it binds them")
            self._listen = read_listen(self.data, self.proc, self.log)
        try:
            return self._listen[key]
        except KeyError:
            raise KeyError(f"{key} is not in listen.json (is that address configured?): {self._listen}") from None

    def port(self, key):
        return port_of(self.address(key))

    @property
    def http_port(self):
        return self.port("sources.otlp.http_address")

    @property
    def grpc_port(self):
        return self.port("sources.otlp.grpc_address")

    @property
    def admin_port(self):
        return self.port("admin.address")

    @property
    def syslog_udp_port(self):
        return self.port("sources.syslog.udp_address")

    @property
    def syslog_tcp_port(self):
        return self.port("sources.syslog.tcp_address")

    @property
    def loki_port(self):
        return self.port("sources.loki.address")

    @property
    def fluent_port(self):
        return self.port("sources.fluent.address")

    @property
    def datadog_port(self):
        return self.port("sources.datadog.address")

    @property
    def http(self):
        return "http://" + self.address("sources.otlp.http_address")

    @property
    def grpc(self):
        return self.address("sources.otlp.grpc_address")

    @property
    def admin(self):
        return "http://" + self.address("admin.address")

    def start(self, wait=True):
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
        env.setdefault("RUST_LOG", "info")
        self.logf = self.log.open("ab")
        # The ports change at every start: forget the last ones, and the file that told them.
        self._listen = None
        remove_listen(self.data)
        self.proc = subprocess.Popen(
            self.wrap + [WEIR_BIN, getattr(self, "command", "run"), "--config", str(self.config)],
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            env=env,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=30):
        """Waits for this process's listen.json (its admin address), then for /readyz."""
        deadline = time.time() + timeout
        admin = self.admin  # waits for listen.json (or raises if the process exits first)
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weir exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(admin + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("weir did not become ready:\n" + self.log.read_text())

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.logf.close()

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)
        self.logf.close()

    def get_json(self, path, headers=None):
        req = urllib.request.Request(self.admin + path, headers=headers or {})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def reader_headers(self, tenant):
        """What the harness sends to read `tenant`'s segments: with API keys and no
        control-plane tokens, the admin /v1 routes take the tenant's API key."""
        import tomllib

        cfg = tomllib.loads(self.config.read_text())
        if cfg.get("control_plane", {}).get("tokens"):
            return {}
        for key, t in cfg.get("auth", {}).get("api_keys", {}).items():
            if t == tenant:
                return {"Authorization": f"Bearer {key}"}
        return {}

    def segments(self, tenant="default", signal=None):
        out, cursor = [], None
        while True:
            q = f"/v1/segments?tenant={tenant}&limit=100"
            if signal:
                q += f"&signal={signal}"
            if cursor:
                q += f"&cursor={cursor}"
            page = self.get_json(q, self.reader_headers(tenant))
            out += page["segments"]
            cursor = page.get("next_cursor")
            if not cursor:
                return out

    def metrics(self):
        with urllib.request.urlopen(self.admin + "/metrics", timeout=5) as r:
            return r.read().decode()

    def wait_rows(self, signal, n, tenant="default", timeout=30):
        deadline = time.time() + timeout
        rows = 0
        while time.time() < deadline:
            rows = sum(s["row_count"] for s in self.segments(tenant, signal))
            if rows >= n:
                return rows
            time.sleep(0.2)
        raise AssertionError(f"only {rows} of {n} {signal} rows flushed for {tenant}:\n" + self.log.read_text()[-4000:])

    def files(self, tenant="default", signal="logs"):
        return sorted((self.lake / f"tenant={tenant}" / f"signal={signal}").rglob("*.parquet"))

    def duck(self, tenant="default", signal="logs"):
        """A DuckDB connection with a view `lake` over the files of one tenant and signal."""
        con = duckdb.connect()
        glob = str(self.lake / f"tenant={tenant}" / f"signal={signal}" / "**" / "*.parquet")
        con.execute(f"CREATE VIEW lake AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")
        return con

    def rows(self, tenant="default", signal="logs"):
        """Every row of one tenant and signal, read with pyarrow; timestamps as int64 nanos."""
        import pyarrow as pa

        tables = [pq.read_table(f) for f in self.files(tenant, signal)]
        if not tables:
            return []
        t = pa.concat_tables(tables)

        def ints(ty):
            if pa.types.is_timestamp(ty):
                return pa.int64()
            if pa.types.is_list(ty):
                return pa.list_(ty.value_field.with_type(ints(ty.value_type)))
            if pa.types.is_struct(ty):
                return pa.struct([ty.field(i).with_type(ints(ty.field(i).type)) for i in range(ty.num_fields)])
            return ty

        schema = pa.schema([f.with_type(ints(f.type)) for f in t.schema], metadata=t.schema.metadata)
        return t.cast(schema).to_pylist()

    def check_index_matches_lake(self, tenant, signal):
        """The index lists exactly the lake's files, with their row counts and time bounds."""
        segs = {s["object_key"]: s for s in self.segments(tenant, signal)}
        files = {str(f.relative_to(self.lake)): f for f in self.files(tenant, signal)}
        assert set(segs) == set(files), (set(segs), set(files))
        time_col = "start_timestamp" if signal == "traces" else "timestamp"
        for key, f in files.items():
            t = pq.read_table(f)
            assert segs[key]["row_count"] == t.num_rows
            ts = t.column(time_col).cast("int64").to_pylist()
            assert segs[key]["min_timestamp"] == min(ts)
            assert segs[key]["max_timestamp"] == max(ts)
            assert segs[key]["bytes"] == f.stat().st_size
            meta = pq.read_metadata(f).metadata
            assert meta[b"weir.tenant"].decode() == tenant
            assert meta[b"weir.signal"].decode() == signal
        return segs


@pytest.fixture
def weir_factory(tmp_path):
    started = []

    def make(extra_toml="", name="w", wrap=None, start=True, otlp="", syslog="", fluent="", admin=""):
        root = tmp_path / name
        root.mkdir(exist_ok=True)
        w = Weir(root, extra_toml, wrap, otlp, syslog, fluent, admin)
        started.append(w)
        return w.start() if start else w

    yield make
    for w in started:
        if w.proc and w.proc.poll() is None:
            w.kill()


@pytest.fixture
def weir(weir_factory):
    return weir_factory()
