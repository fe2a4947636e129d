"""The control plane as a service: `weir control-plane` on a real PostgreSQL, agents
(`weir agent`) and compactors (`weir compactor`) as separate processes, the lake on a real
S3-compatible server (moto), read back by DuckDB through the S3 API."""

import glob
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from pathlib import Path

import boto3
import duckdb
import pyarrow.parquet as pq
import pytest
import requests
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from conftest import WEIR_BIN, Weir, free_port, port_of, read_listen, remove_listen, wait_listening
from test_durability import logs_request, post_logs

AGENT_TOKEN = "agent-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
TENANT_A_TOKEN = "tenant-a-token-0123456789ab"
READER_TOKEN = "reader-token-0123456789abcd"
TOKENS = f"""
[[control_plane.tokens]]
token = "{AGENT_TOKEN}"
scopes = ["read", "write", "compact"]
[[control_plane.tokens]]
token = "{ADMIN_TOKEN}"
[[control_plane.tokens]]
token = "{TENANT_A_TOKEN}"
tenants = ["a"]
scopes = ["read", "write"]
[[control_plane.tokens]]
token = "{READER_TOKEN}"
scopes = ["read"]
"""
S3_KEY, S3_SECRET = "weir-test", "weir-test-secret"


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    server = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    wait_listening(endpoint, proc, "moto_server")
    yield endpoint
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def bucket(s3_endpoint, monkeypatch):
    """A fresh bucket; credentials come from the environment, as in production."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    name = f"weir-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client(
        "s3", endpoint_url=s3_endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET, region_name="us-east-1"
    )
    s3.create_bucket(Bucket=name)
    return s3, name


@pytest.fixture
def pg_url():
    """A fresh database in the test command's PostgreSQL cluster."""
    base = os.environ.get("TEST_WEIR_PG_URL")
    if not base:
        assert not os.environ.get("TEST_WEIR_REQUIRE_PG"), "TEST_WEIR_REQUIRE_PG is set but TEST_WEIR_PG_URL is not"
        pytest.skip("TEST_WEIR_PG_URL unset")
    u = urllib.parse.urlparse(base)
    db = f"weir_{uuid.uuid4().hex[:10]}"
    createdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/createdb"))[-1]
    subprocess.run([createdb, "-h", u.hostname, "-p", str(u.port), "-U", u.username or "postgres", db], check=True)
    return f"{u.scheme}://{u.netloc}/{db}"


def s3_lake(endpoint, bucket, extra=""):
    return f"""
[lake]
url = "s3://{bucket}/lake"
max_file_age = "300ms"
{extra}
[lake.options]
aws_endpoint = "{endpoint}"
aws_region = "us-east-1"
aws_allow_http = "true"
aws_virtual_hosted_style_request = "false"
"""


class ControlPlane:
    """One `weir control-plane` process. It binds port 0 and reports the port in
    `{data_dir}/listen.json`; agents are configured with its URL once, so a restart keeps
    the port of the first start (`start()` after a kill asks for that number again)."""

    def __init__(self, root: Path, index_toml: str, lake_toml: str, extra: str = ""):
        root.mkdir(exist_ok=True)
        self.root = root
        self.data = root / "data"
        self.port = None
        self.config = root / "cp.toml"
        self.config.write_text(
            f"""
data_dir = "{self.data}"
[admin]
address = "127.0.0.1:0"
[control_plane]
address = "127.0.0.1:0"
{index_toml}
{TOKENS}
[compaction]
grace = "1s"
[retention]
interval = "1s"
[iceberg]
interval = "500ms"
snapshot_max_age = "1s"
{extra}
{lake_toml}
"""
        )
        self.log = root / "cp.log"
        self.proc = None

    @property
    def url(self):
        assert self.port is not None, "the control plane is not started"
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
        env.setdefault("RUST_LOG", "info")
        if self.port is not None:
            # A restart: the agents know this URL, so take the same number again. The only
            # window for another process to take it is while the control plane is down.
            self.config.write_text(self.config.read_text().replace('[control_plane]\naddress = "127.0.0.1:0"',
                f'[control_plane]\naddress = "127.0.0.1:{self.port}"'))
        remove_listen(self.data)
        self.logf = self.log.open("ab")
        self.proc = subprocess.Popen(
            [WEIR_BIN, "control-plane", "--config", str(self.config)], stdout=self.logf, stderr=subprocess.STDOUT, env=env
        )
        self.port = port_of(read_listen(self.data, self.proc, self.log)["control_plane.address"])
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"control plane exited:\n{self.log.read_text()}")
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise RuntimeError("control plane not ready:\n" + self.log.read_text())

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)
        self.logf.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
            self.logf.close()

    def api(self, method, path, token=ADMIN_TOKEN, **kw):
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.url + path, headers=headers, timeout=10, **kw)

    def segments(self, tenant, signal="logs"):
        out, cursor = [], None
        while True:
            params = {"tenant": tenant, "signal": signal, "limit": 50}
            if cursor:
                params["cursor"] = cursor
            r = self.api("GET", "/v1/segments", params=params)
            assert r.status_code == 200, r.text
            page = r.json()
            out += page["segments"]
            cursor = page.get("next_cursor")
            if not cursor:
                return out


@pytest.fixture
def services(tmp_path):
    started = []

    def track(p):
        started.append(p)
        return p

    yield track
    for p in started:
        if p.proc and p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)


def agent(tmp_path, services, name, cp, lake_toml, command="agent", extra="", agent_id=True):
    """An agent (or compactor) process under tmp_path/name; `agent.id` is the name unless
    `agent_id` is False (the data directory's persistent id then applies)."""
    root = tmp_path / name
    root.mkdir(exist_ok=True)
    id_toml = f'[agent]\nid = "{name}"' if agent_id else ""
    w = Weir(
        root,
        f"""
{id_toml}
[control_plane]
url = "{cp.url}"
token = "{AGENT_TOKEN}"
timeout = "2s"
heartbeat_interval = "500ms"
{extra}
{lake_toml}
""",
    )
    w.command = command
    services(w)
    return w


def sdk_send(w, tenant, prefix, n):
    """Sends n log records through the OpenTelemetry SDK's batching OTLP/HTTP exporter."""
    provider = LoggerProvider(resource=Resource.create({"service.name": f"svc-{prefix}"}))
    exporter = OTLPLogExporter(endpoint=w.http + "/v1/logs", headers={"X-Scope-OrgID": tenant})
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, schedule_delay_millis=50, max_export_batch_size=40))
    log = logging.getLogger(f"weir-cp-{uuid.uuid4().hex}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=provider))
    for i in range(n):
        log.info(f"{prefix}-{i}")
        if i % 40 == 39:
            time.sleep(0.03)
    provider.force_flush()
    provider.shutdown()


def duck_s3(endpoint):
    """DuckDB with the offline httpfs extension and an S3 secret for the moto server."""
    import duckdb_extension_httpfs

    ext = glob.glob(str(Path(duckdb_extension_httpfs.__file__).parent / "**" / "httpfs.duckdb_extension"), recursive=True)
    assert ext, "httpfs extension not found"
    con = duckdb.connect()
    con.execute(f"LOAD '{ext[0]}'")
    host = endpoint.removeprefix("http://")
    con.execute(
        f"CREATE SECRET (TYPE s3, KEY_ID '{S3_KEY}', SECRET '{S3_SECRET}', ENDPOINT '{host}', "
        "URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')"
    )
    return con


def lake_keys(s3, bucket):
    """The lake's segment objects (the Iceberg metadata under `metadata/` aside)."""
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="lake/"):
        keys += [o["Key"].removeprefix("lake/") for o in page.get("Contents", [])]
    return sorted(k for k in keys if not k.startswith("metadata/"))


def iceberg_catalog(cp, endpoint, token):
    """pyiceberg's REST catalog on the control plane, reading data files from the S3 lake."""
    from pyiceberg.catalog import load_catalog

    return load_catalog(
        "weir",
        type="rest",
        uri=cp.url + "/iceberg",
        token=token,
        **{"s3.endpoint": endpoint, "s3.access-key-id": S3_KEY, "s3.secret-access-key": S3_SECRET, "s3.region": "us-east-1"},
    )


def check_iceberg(cp, endpoint, tenants, expected):
    """Every tenant's logs table, read through the REST catalog and S3 by pyiceberg, holds
    every row once; a tenant's token sees its own namespace only."""
    cat = iceberg_catalog(cp, endpoint, READER_TOKEN)

    def published(t):
        try:
            summary = cat.load_table(f"{t}.logs").current_snapshot().summary
        except Exception:
            return False
        return int(summary["total-records"]) == len(expected[t])

    wait_for("the Iceberg tables to catch up", lambda: all(published(t) for t in tenants), timeout=30, logs=[cp.log])
    for t in tenants:
        bodies = cat.load_table(f"{t}.logs").scan().to_arrow().column("body").to_pylist()
        assert len(bodies) == len(set(bodies)) and set(bodies) == expected[t], t
    # Compactions ran: snapshots older than snapshot_max_age (1 s) expired, the current one
    # is a compaction's (or an append after it).
    ops = {s.summary.operation.value for s in cat.load_table(f"{tenants[0]}.logs").snapshots()}
    assert ops <= {"append", "replace", "overwrite"} and ops, ops
    mine = iceberg_catalog(cp, endpoint, TENANT_A_TOKEN)
    assert mine.list_namespaces() == [("a",)]
    r = requests.get(cp.url + "/iceberg/v1/namespaces/b/tables/logs", headers={"Authorization": f"Bearer {TENANT_A_TOKEN}"}, timeout=5)
    assert r.status_code == 403, r.text


def metric(w, name):
    total = 0.0
    for line in w.metrics().splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_for(what, cond, timeout=60, logs=()):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.25)
    tails = "\n".join(f"--- {p}\n{Path(p).read_text()[-3000:]}" for p in logs)
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def check_lake(cp, s3, bucket, endpoint, tenants, expected):
    """The index's active segments hold every row exactly once, partitions do not overlap,
    and the bucket holds exactly the indexed objects (compacted inputs deleted)."""
    con = duck_s3(endpoint)
    for tenant in tenants:
        segs = cp.segments(tenant)
        assert all(s["state"] == "active" for s in segs)
        assert len({s["id"] for s in segs}) == len(segs)
        paths = ", ".join(f"'s3://{bucket}/lake/{s['object_key']}'" for s in segs)
        bodies = [r[0] for r in con.execute(f"SELECT body FROM read_parquet([{paths}])").fetchall()]
        assert sum(s["row_count"] for s in segs) == len(bodies)
        dup = [b for b, c in Counter(bodies).items() if c > 1]
        assert not dup, f"{tenant}: rows doubled: {dup[:5]}"
        assert set(bodies) == expected[tenant], f"{tenant}: rows lost: {len(expected[tenant] - set(bodies))}"
    indexed = sorted(s["object_key"] for t in tenants for s in cp.segments(t))
    wait_for("compacted inputs to be deleted", lambda: lake_keys(s3, bucket) == indexed, timeout=30, logs=[cp.log])


def test_two_agents_share_a_lake_and_compact_it(tmp_path, services, bucket, s3_endpoint, pg_url):
    s3, name = bucket
    lake = s3_lake(s3_endpoint, name)
    cp = services(ControlPlane(tmp_path / "cp", f'index = "postgres"\npostgres_url = "{pg_url}"', lake)).start()
    compaction = '[compaction]\ninterval = "200ms"\nmin_age = "0s"\nlease_ttl = "30s"\n'
    agents = [agent(tmp_path, services, f"node-{i}", cp, lake, extra=compaction).start() for i in range(2)]
    tenants = ["a", "b", "c"]
    expected = {t: set() for t in tenants}
    committed = lambda w: metric(w, 'weir_compactions_total{result="committed"}')
    # Waves of data, each flushed as new small files; whichever agent leases first merges them.
    # Keep sending waves until both agents have committed compactions (or ten waves).
    for wave in range(10):
        threads = []
        for i, w in enumerate(agents):
            for t in tenants:
                prefix = f"{t}{i}w{wave}"
                expected[t] |= {f"{prefix}-{j}" for j in range(120)}
                threads.append(threading.Thread(target=sdk_send, args=(w, t, prefix, 120)))
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        time.sleep(0.8)
        if wave >= 2 and all(committed(w) >= 1 for w in agents):
            break

    def settled():
        rows = {t: sum(s["row_count"] for s in cp.segments(t)) for t in tenants}
        if any(rows[t] != len(expected[t]) for t in tenants):
            return False
        # Every partition compacted down to one file.
        parts = Counter((t, s["partition"]) for t in tenants for s in cp.segments(t))
        return all(c == 1 for c in parts.values())

    wait_for("every row registered and compacted", settled, timeout=90, logs=[cp.log] + [w.log for w in agents])
    for w in agents:
        assert committed(w) >= 1, f"{w.root.name} never committed a compaction:\n{w.log.read_text()[-3000:]}"
    check_lake(cp, s3, name, s3_endpoint, tenants, expected)
    check_iceberg(cp, s3_endpoint, tenants, expected)

    fleet = cp.api("GET", "/v1/agents").json()["agents"]
    mine = {a["agent_id"]: a for a in fleet}
    assert {"node-0", "node-1"} <= set(mine)
    assert all(mine[n]["role"] == "agent" and mine[n]["version"] for n in ("node-0", "node-1"))
    assert any(mine[n].get("last_flush_at") for n in ("node-0", "node-1"))
    assert "weir_api_request_duration_seconds" in requests.get(cp.url + "/metrics", timeout=5).text


def test_agents_keep_accepting_while_the_control_plane_is_down(tmp_path, services, bucket, s3_endpoint, pg_url):
    s3, name = bucket
    lake = s3_lake(s3_endpoint, name)
    cp = services(ControlPlane(tmp_path / "cp", f'index = "postgres"\npostgres_url = "{pg_url}"', lake)).start()
    w = agent(tmp_path, services, "node", cp, lake, extra="[compaction]\nenabled = false\n").start()
    sent, failures, stop = [], [], threading.Event()

    def load():
        b = 0
        while not stop.is_set():
            r = post_logs(w, logs_request(b, 20))
            if r.status_code == 200:
                sent.extend(f"b{b}-r{i}-" + "x" * 40 for i in range(20))
            else:
                failures.append(r.status_code)
            b += 1
            time.sleep(0.01)

    th = threading.Thread(target=load)
    th.start()
    try:
        time.sleep(1.5)
        cp.kill()
        down_at = len(sent)
        time.sleep(4)
        # Still accepting and flushing; the outbox holds what could not be registered.
        assert len(sent) > down_at + 200, "the agent stopped accepting while the control plane was down"
        assert metric(w, "weir_outbox_segments") > 0
        assert metric(w, "weir_segments_flushed_total") > 0
        cp.start()
        time.sleep(1.5)
    finally:
        stop.set()
        th.join()
    assert failures == []
    expected = set(sent)
    assert len(expected) == len(sent)

    def registered():
        return sum(s["row_count"] for s in cp.segments("default")) == len(sent)

    wait_for("the outbox to drain", registered, timeout=60, logs=[cp.log, w.log])
    segs = cp.segments("default")
    assert len({s["id"] for s in segs}) == len(segs), "a segment was registered twice"
    assert metric(w, "weir_outbox_segments") == 0
    con = duck_s3(s3_endpoint)
    paths = ", ".join(f"'s3://{name}/lake/{s['object_key']}'" for s in segs)
    bodies = [r[0] for r in con.execute(f"SELECT body FROM read_parquet([{paths}])").fetchall()]
    assert len(bodies) == len(expected) and set(bodies) == expected
    # Every object in the bucket is indexed, once.
    assert lake_keys(s3, name) == sorted(s["object_key"] for s in segs)


def test_two_compactor_processes_race_for_the_same_partitions(tmp_path, services, bucket, s3_endpoint, pg_url):
    s3, name = bucket
    lake = s3_lake(s3_endpoint, name)
    cp = services(ControlPlane(tmp_path / "cp", f'index = "postgres"\npostgres_url = "{pg_url}"', lake)).start()
    w = agent(tmp_path, services, "node", cp, lake, extra="[compaction]\nenabled = false\n").start()
    expected = set()
    hour = 3_600_000_000_000
    base = (time.time_ns() // hour - 3) * hour
    for b in range(60):
        # Three hours, so three partitions; flushing every 300ms makes many small files.
        req = logs_request(b, 25, hour_ns=base + (b % 3) * hour)
        assert post_logs(w, req).status_code == 200
        expected |= {f"b{b}-r{i}-" + "x" * 40 for i in range(25)}
        if b % 6 == 5:
            time.sleep(0.35)
    wait_for("rows registered", lambda: sum(s["row_count"] for s in cp.segments("default")) == len(expected), logs=[w.log])
    before = len(cp.segments("default"))
    assert before >= 6, f"only {before} segments to compact"
    compaction = '[compaction]\ninterval = "100ms"\nmin_age = "0s"\n'
    compactors = [agent(tmp_path, services, f"compactor-{i}", cp, lake, command="compactor", extra=compaction) for i in range(2)]
    for c in compactors:
        c.start(wait=False)
    for c in compactors:
        c.wait_ready()

    def one_per_partition():
        parts = Counter(s["partition"] for s in cp.segments("default"))
        return len(parts) == 3 and all(v == 1 for v in parts.values())

    wait_for("compaction", one_per_partition, timeout=60, logs=[cp.log] + [c.log for c in compactors])
    committed = sum(metric(c, 'weir_compactions_total{result="committed"}') for c in compactors)
    assert committed >= 3
    check_lake(cp, s3, name, s3_endpoint, ["default"], {"default": expected})


def test_agents_on_one_host_are_told_apart_by_their_data_dir(tmp_path, services):
    """Without agent.id, each data directory gets a persistent id at its first start: two agents
    on one host are two agents in the fleet view (the host name is a label), and a restart
    keeps the id, in the fleet view and in the segments it writes."""
    lake = f'[lake]\nurl = "file://{tmp_path / "lake"}"\nmax_file_age = "300ms"\n'
    cp = services(ControlPlane(tmp_path / "cp", 'index = "sled"', lake)).start()
    agents = [agent(tmp_path, services, f"node-{i}", cp, lake, agent_id=False).start() for i in range(2)]
    ids = [(w.data / "agent_id").read_text() for w in agents]
    assert all(i.endswith("\n") for i in ids)
    ids = [str(uuid.UUID(i.strip())) for i in ids]
    assert ids[0] != ids[1]
    host = Path("/proc/sys/kernel/hostname").read_text().strip()

    def fleet():
        r = cp.api("GET", "/v1/agents")
        assert r.status_code == 200, r.text
        return {a["agent_id"]: a for a in r.json()["agents"]}

    wait_for("both agents in the fleet view", lambda: set(fleet()) == set(ids), timeout=30, logs=[cp.log])
    for i in ids:
        assert fleet()[i]["labels"] == {"host.name": host}

    # A restart keeps the id: still two agents, the restarted one under its old id.
    first = agents[0]
    started = fleet()[ids[0]]["started_at"]
    assert first.stop() == 0
    first.start()
    assert (first.data / "agent_id").read_text().strip() == ids[0]
    wait_for("the restarted agent's heartbeat", lambda: fleet()[ids[0]]["started_at"] > started, timeout=30)
    assert set(fleet()) == set(ids)

    # Its segments carry that id.
    assert post_logs(first, logs_request(1, 5)).status_code == 200
    wait_for("a registered segment", lambda: cp.segments("default"), timeout=30, logs=[first.log, cp.log])
    assert {s["agent_id"] for s in cp.segments("default")} == {ids[0]}


def test_control_plane_api_authentication(tmp_path, services, pg_url):
    cp = services(ControlPlane(tmp_path / "cp", f'index = "postgres"\npostgres_url = "{pg_url}"', "")).start()
    seg = {
        "id": "0190b3e8-0000-7000-8000-000000000001",
        "tenant": "b",
        "signal": "logs",
        "object_key": "tenant=b/signal=logs/dt=2026-01-01/hour=00/0190b3e8-0000-7000-8000-000000000001.parquet",
        "partition": "dt=2026-01-01/hour=00",
        "min_timestamp": 1,
        "max_timestamp": 2,
        "row_count": 3,
        "bytes": 100,
        "services": ["api"],
        "schema_version": 1,
        "agent_id": "x",
        "created_at": 1,
        "state": "active",
    }
    # No token, a wrong token: 401 on every /v1 route, with a Bearer challenge.
    for method, path in [("GET", "/v1/segments?tenant=a"), ("POST", "/v1/segments"), ("GET", "/v1/agents"),
                         ("POST", "/v1/compactions/lease"), ("POST", "/v1/agents/heartbeat")]:
        r = cp.api(method, path, token=None, json={})
        assert r.status_code == 401, (path, r.text)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.json()["code"] == "unauthorized"
        assert cp.api(method, path, token="not-a-known-token-at-all", json={}).status_code == 401
    # A token for tenant a: reads a, not b; cannot register for b.
    assert cp.api("GET", "/v1/segments", TENANT_A_TOKEN, params={"tenant": "a"}).status_code == 200
    r = cp.api("GET", "/v1/segments", TENANT_A_TOKEN, params={"tenant": "b"})
    assert r.status_code == 403 and "tenant" in r.json()["message"]
    assert cp.api("POST", "/v1/segments", TENANT_A_TOKEN, json={"segments": [seg]}).status_code == 403
    assert cp.api("GET", "/v1/segments", TENANT_A_TOKEN, params={"tenant": "b"}).json()["code"] == "forbidden"
    # Scopes: a reader cannot write, an agent token cannot see the fleet.
    assert cp.api("POST", "/v1/segments", READER_TOKEN, json={"segments": [seg]}).status_code == 403
    assert cp.api("GET", "/v1/agents", AGENT_TOKEN).status_code == 403
    assert cp.api("POST", "/v1/compactions/lease", TENANT_A_TOKEN, json={}).status_code == 403
    # The right token works, and registering is idempotent.
    for _ in range(2):
        r = cp.api("POST", "/v1/segments", AGENT_TOKEN, json={"segments": [seg]})
        assert r.status_code == 200, r.text
    assert [s["id"] for s in cp.segments("b")] == [seg["id"]]
    # Validation errors name the problem.
    r = cp.api("POST", "/v1/segments", AGENT_TOKEN, data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    bad = dict(seg, id="0190b3e8-0000-7000-8000-000000000002", tenant="../etc")
    r = cp.api("POST", "/v1/segments", AGENT_TOKEN, json={"segments": [bad]})
    assert r.status_code == 400 and "tenant" in r.json()["message"]
    r = cp.api("POST", "/v1/segments", AGENT_TOKEN, json={"segments": [dict(seg, row_count=4)]})
    assert r.status_code == 409 and r.json()["code"] == "conflict"
    r = cp.api("GET", "/v1/segments", AGENT_TOKEN, params={"tenant": "b", "from": "yesterday"})
    assert r.status_code == 400 and "from" in r.json()["message"]
    r = cp.api("POST", "/v1/compactions/not-a-uuid/commit", AGENT_TOKEN, json={"outputs": []})
    assert r.status_code == 400
    r = cp.api("POST", "/v1/segments", AGENT_TOKEN, data=b"x" * (17 << 20), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    # Health and metrics need no token.
    assert requests.get(cp.url + "/healthz", timeout=5).status_code == 200
    assert requests.get(cp.url + "/metrics", timeout=5).status_code == 200


def test_agent_with_a_bad_token_keeps_data_and_says_why(tmp_path, services, pg_url):
    cp = services(ControlPlane(tmp_path / "cp", f'index = "postgres"\npostgres_url = "{pg_url}"', "")).start()
    w = agent(tmp_path, services, "node", cp, '[lake]\nmax_file_age = "200ms"\n', extra="")
    w.config.write_text(w.config.read_text().replace(AGENT_TOKEN, "wrong-token-0123456789abcdef"))
    w.start()
    assert post_logs(w, logs_request(1, 10)).status_code == 200
    wait_for("the segment to wait in the outbox", lambda: metric(w, "weir_outbox_segments") >= 1, timeout=20, logs=[w.log])
    wait_for("the refusal to be logged", lambda: "unknown token" in w.log.read_text(), timeout=20, logs=[w.log])
    assert cp.segments("default") == []


def test_control_plane_refuses_to_start_without_tokens(tmp_path):
    cfg = tmp_path / "cp.toml"
    cfg.write_text(f'data_dir = "{tmp_path}/d"\n[control_plane]\naddress = "127.0.0.1:0"\n')
    r = subprocess.run([WEIR_BIN, "control-plane", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "control_plane.tokens" in r.stderr
    cfg.write_text(f'data_dir = "{tmp_path}/d"\n[control_plane]\nindex = "postgres"\n')
    r = subprocess.run([WEIR_BIN, "validate", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "postgres_url" in r.stderr


def test_restart_reconciles_objects_the_index_lost(weir_factory):
    """The index is restored from an old backup (here: deleted): on start the agent registers
    the objects it wrote that the index lacks, from their footers, and nothing else."""
    import shutil

    w = weir_factory('[agent]\nid = "w"\n[compaction]\nenabled = false\n')
    for b in range(5):
        assert post_logs(w, logs_request(b, 20)).status_code == 200
        time.sleep(1.1)  # max_file_age = 1s: several files
    w.wait_rows("logs", 100)
    before = {s["id"]: s for s in w.segments("default", "logs")}
    assert len(before) >= 2
    w.stop()
    shutil.rmtree(w.data / "index")
    # A file another agent wrote into the same lake must not be taken.
    foreign = w.files()[0]
    other = foreign.with_name(f"{uuid.uuid7() if hasattr(uuid, 'uuid7') else '01900000-0000-7000-8000-0000000000aa'}.parquet")
    import pyarrow.parquet as pq

    t = pq.read_table(foreign)
    meta = dict(pq.read_metadata(foreign).metadata)
    assert meta[b"weir.agent_id"] == b"w"
    meta[b"weir.agent_id"] = b"some-other-node"
    pq.write_table(t.replace_schema_metadata(meta), other)
    w.start()
    deadline = time.time() + 20
    while len(w.segments("default", "logs")) < len(before):
        assert time.time() < deadline, w.log.read_text()[-3000:]
        time.sleep(0.2)
    after = {s["id"]: s for s in w.segments("default", "logs")}
    assert set(after) == set(before)
    for sid, s in after.items():
        b = before[sid]
        for k in ("object_key", "partition", "row_count", "bytes", "min_timestamp", "max_timestamp", "services", "tenant"):
            assert s[k] == b[k], (k, s[k], b[k])
    assert "weir_reconciled_segments_total" in w.metrics()
    other.unlink()
    w.check_index_matches_lake("default", "logs")


def test_embedded_index_routes_take_the_sources_api_keys_when_no_tokens_are_set(weir_factory):
    # With API keys on the sources and no control-plane tokens, the admin /v1 routes are not
    # open: each key reads its own tenant's segments, nothing else.
    w = weir_factory('[auth]\nallow_unauthenticated = ["syslog", "fluent"]\n[auth.api_keys]\n"key-a" = "team-a"\n"key-b" = "team-b"\n')
    assert post_logs(w, logs_request(1, 5), Authorization="Bearer key-a").status_code == 200
    r = requests.get(w.admin + "/v1/segments?tenant=team-a", timeout=5)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    r = requests.get(w.admin + "/v1/segments?tenant=team-a", headers={"Authorization": "Bearer key-b"}, timeout=5)
    assert r.status_code == 403
    r = requests.get(w.admin + "/v1/agents", headers={"Authorization": "Bearer key-a"}, timeout=5)
    assert r.status_code == 403
    deadline = time.time() + 20
    while sum(s["row_count"] for s in w.segments("team-a", "logs")) != 5:
        assert time.time() < deadline
        time.sleep(0.2)
    assert requests.get(w.admin + "/readyz", timeout=5).status_code == 200


def test_embedded_index_routes_need_a_token_once_tokens_are_configured(weir_factory):
    w = weir_factory(f'[[control_plane.tokens]]\ntoken = "{READER_TOKEN}"\nscopes = ["read"]\n')
    assert post_logs(w, logs_request(1, 5)).status_code == 200
    r = requests.get(w.admin + "/v1/segments?tenant=default", timeout=5)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.get(w.admin + "/v1/agents", headers={"Authorization": f"Bearer {READER_TOKEN}"}, timeout=5).status_code == 403
    deadline = time.time() + 20
    while True:
        r = requests.get(w.admin + "/v1/segments?tenant=default", headers={"Authorization": f"Bearer {READER_TOKEN}"}, timeout=5)
        assert r.status_code == 200
        if sum(s["row_count"] for s in r.json()["segments"]) == 5:
            break
        assert time.time() < deadline
        time.sleep(0.2)
    # Health and metrics stay open for probes and scrapers.
    assert requests.get(w.admin + "/readyz", timeout=5).status_code == 200


@pytest.mark.parametrize("backend", ["sled", "postgres"])
def test_a_tenant_token_cannot_register_another_tenants_object(tmp_path, services, request, backend):
    """A token for tenant `a` registers a segment of tenant `a` whose object_key points at
    tenant `b`'s file: refused (400), so `a`'s readers are never handed `b`'s object and the
    sweeper never deletes it on `a`'s behalf. On both index backends, over the HTTP API."""
    index = 'index = "sled"'
    if backend == "postgres":
        index = f'index = "postgres"\npostgres_url = "{request.getfixturevalue("pg_url")}"'
    cp = services(ControlPlane(tmp_path / "cp", index, "")).start()

    def segment(tenant, ident, key_tenant=None):
        key_tenant = key_tenant or tenant
        return {
            "id": ident, "tenant": tenant, "signal": "logs",
            "object_key": f"tenant={key_tenant}/signal=logs/dt=2026-01-01/hour=00/{ident}.parquet",
            "partition": "dt=2026-01-01/hour=00", "min_timestamp": 1, "max_timestamp": 2, "row_count": 3,
            "bytes": 100, "services": ["api"], "schema_version": 1, "agent_id": "x", "created_at": 1,
            "state": "active",
        }

    theirs = segment("b", "0190b3e8-0000-7000-8000-0000000000b1")
    assert cp.api("POST", "/v1/segments", AGENT_TOKEN, json={"segments": [theirs]}).status_code == 200
    attack = dict(theirs, id="0190b3e8-0000-7000-8000-0000000000a1", tenant="a")
    r = cp.api("POST", "/v1/segments", TENANT_A_TOKEN, json={"segments": [attack]})
    assert r.status_code == 400 and "object_key" in r.json()["message"], r.text
    # The same id under its own tenant's key is fine; another tenant's dead-letter key is not.
    own = segment("a", "0190b3e8-0000-7000-8000-0000000000a1")
    assert cp.api("POST", "/v1/segments", TENANT_A_TOKEN, json={"segments": [own]}).status_code == 200
    dead = dict(segment("a", "0190b3e8-0000-7000-8000-0000000000a2", key_tenant="b"))
    dead["object_key"] = "_dead_letter/" + dead["object_key"]
    assert cp.api("POST", "/v1/segments", TENANT_A_TOKEN, json={"segments": [dead]}).status_code == 400
    listed = cp.api("GET", "/v1/segments", TENANT_A_TOKEN, params={"tenant": "a"}).json()["segments"]
    assert [s["object_key"] for s in listed] == [own["object_key"]]
    assert [s["id"] for s in cp.segments("b")] == [theirs["id"]]


def test_a_segment_the_control_plane_refuses_for_good_degrades_health_and_is_kept(tmp_path, services):
    """Issue #15 item 6, end to end: a segment record larger than the control plane's
    `max_request_bytes` (here: a file of logs from 120 services, whose names the record lists,
    against a 4 KiB limit) is refused with 413, which retrying cannot change. The agent keeps
    the record in its refused ledger and its object in the lake, and /healthz says `degraded`
    with `outbox.refused`. Once the limit is raised, a restart sends it again and the rows are
    indexed: nothing was lost."""
    lake = f'[lake]\nurl = "file://{tmp_path / "lake"}"\nmax_file_age = "300ms"\n'
    cp = services(ControlPlane(tmp_path / "cp", 'index = "sled"\nmax_request_bytes = "4KiB"', lake)).start()
    w = agent(tmp_path, services, "node", cp, lake).start()
    names = [f"service-{i:03d}-" + "s" * 30 for i in range(120)]
    request = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource_pb2.Resource(
                    attributes=[common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=name))]
                ),
                scope_logs=[
                    logs_pb2.ScopeLogs(
                        log_records=[
                            logs_pb2.LogRecord(
                                time_unix_nano=1_700_000_000_000_000_000 + i,
                                body=common_pb2.AnyValue(string_value=f"refused row {i}"),
                            )
                        ]
                    )
                ],
            )
            for i, name in enumerate(names)
        ]
    )
    assert post_logs(w, request).status_code == 200

    def health():
        return requests.get(w.admin + "/healthz", timeout=5).json()

    wait_for("the refusal in /healthz", lambda: health()["outbox"]["refused"] >= 1, timeout=30, logs=[w.log, cp.log])
    h = health()
    assert h["status"] == "degraded", h
    assert h["outbox"] == {"waiting": 0, "refused": 1}, h
    refusal = [line for line in w.log.read_text().splitlines() if "refused a segment" in line]
    assert len(refusal) == 1 and "request too large" in refusal[0], refusal
    assert cp.segments("default") == []
    # The rows are in the lake, unindexed, not lost.
    files = sorted((tmp_path / "lake").rglob("*.parquet"))
    assert len(files) == 1, files
    bodies = sorted(pq.read_table(files[0]).column("body").to_pylist())
    assert bodies == sorted(f"refused row {i}" for i in range(120))

    # With a limit the record fits, the restarted agent sends the refused segment again.
    assert w.stop() == 0
    cp.stop()
    cp.config.write_text(cp.config.read_text().replace('max_request_bytes = "4KiB"', 'max_request_bytes = "1MiB"'))
    cp.start()
    w.start()
    wait_for("the segment registered", lambda: cp.segments("default"), timeout=30, logs=[w.log, cp.log])
    segments = cp.segments("default")
    assert [s["object_key"] for s in segments] == [str(files[0].relative_to(tmp_path / "lake"))]
    assert segments[0]["row_count"] == 120
    wait_for("/healthz ok again", lambda: health()["status"] == "ok", timeout=30, logs=[w.log])
    assert health()["outbox"] == {"waiting": 0, "refused": 0}
