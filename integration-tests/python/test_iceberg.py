"""The lake as Apache Iceberg tables: `weir run` publishes one table per tenant and signal
and serves them over the Iceberg REST catalog API on its admin port (`/iceberg`). Readers we
did not write (pyiceberg's REST catalog, DuckDB's iceberg extension) read every table of a
`weir run` fed by the OpenTelemetry Python SDK; compaction commits are `replace` snapshots an
older snapshot's reader still reads whole; retention is a `delete` snapshot; tokens scope the
catalog to their tenants."""

import glob
import json
import os
import signal
import time
import urllib.error
import urllib.parse
import urllib.request

import duckdb
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import load_catalog
from pyiceberg.types import ListType, MapType, StructType

from test_otlp_sdk import send_all

FAST = """
[iceberg]
interval = "500ms"
"""


def start_compacting(weir_factory, snapshot_max_age, min_age):
    """A `weir run` that flushes files after 200 ms, compacts every 300 ms files older than
    `min_age` with no grace, sweeps every 300 ms and expires snapshots after
    `snapshot_max_age`."""
    weir = weir_factory(
        FAST
        + f"""
snapshot_max_age = "{snapshot_max_age}"
[compaction]
interval = "300ms"
min_age = "{min_age}"
grace = "0s"
[retention]
interval = "300ms"
""",
        start=False,
    )
    weir.config.write_text(weir.config.read_text().replace('max_file_age = "1s"', 'max_file_age = "200ms"'))
    weir.start()
    return weir


def catalog(weir, token=None):
    props = {"type": "rest", "uri": weir.admin + "/iceberg"}
    if token:
        props["token"] = token
    return load_catalog("weir", **props)


def index_rows(weir, tenant, signal):
    return sum(s["row_count"] for s in weir.segments(tenant, signal))


def load_table_json(weir, tenant, signal, headers=None):
    req = urllib.request.Request(f"{weir.admin}/iceberg/v1/namespaces/{tenant}/tables/{signal}", headers=headers or {})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def wait_published(weir, tenant, signal, rows, timeout=30, headers=None, op=None):
    """Waits until the table's current snapshot holds `rows` rows (and, with `op`, was made by
    that operation); returns the table's metadata."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            md = load_table_json(weir, tenant, signal, headers)["metadata"]
            cur = md.get("current-snapshot-id")
            snap = next((s for s in md.get("snapshots", []) if s["snapshot-id"] == cur), None)
            last = snap and snap["summary"]
            if snap and int(snap["summary"]["total-records"]) == rows and (op is None or snap["summary"]["operation"] == op):
                return md
        except urllib.error.HTTPError as e:
            last = e.code
        time.sleep(0.2)
    raise AssertionError(f"{tenant}.{signal} not published with {rows} rows ({op}): last {last}\n" + weir.log.read_text()[-3000:])


def duck_iceberg():
    """A DuckDB connection with the iceberg extension, loaded from the PyPI wheels."""
    import duckdb_extension_avro
    import duckdb_extension_httpfs
    import duckdb_extension_iceberg

    con = duckdb.connect()
    for mod, name in ((duckdb_extension_httpfs, "httpfs"), (duckdb_extension_avro, "avro"), (duckdb_extension_iceberg, "iceberg")):
        path = glob.glob(os.path.join(os.path.dirname(mod.__file__), "**", f"{name}.duckdb_extension"), recursive=True)[0]
        con.execute(f"LOAD '{path}'")
    return con


def test_pyiceberg_and_duckdb_read_every_table(weir_factory):
    weir = weir_factory(FAST)
    tenant = "acme"
    logs, spans = send_all(weir, "http-protobuf", tenant)
    weir.wait_rows("logs", len(logs), tenant)
    weir.wait_rows("traces", len(spans), tenant)
    weir.wait_rows("metrics", 1, tenant)
    time.sleep(1.5)  # the metrics of one export may land in more than one flush
    expected = {s: index_rows(weir, tenant, s) for s in ("logs", "metrics", "traces")}
    assert expected["logs"] == 3 and expected["traces"] == 2 and expected["metrics"] >= 4
    for signal, rows in expected.items():
        md = wait_published(weir, tenant, signal, rows)
        assert md["format-version"] == 2
        assert "schema.name-mapping.default" in md["properties"]
        assert md["partition-specs"][0]["fields"][0]["transform"] == "hour"

    m = weir.metrics()
    assert 'weir_iceberg_snapshots_total{operation="append"}' in m
    assert 'weir_iceberg_commits_total{result="committed"}' in m
    published = [float(l.split()[1]) for l in m.splitlines() if l.startswith("weir_iceberg_published_seconds ")]
    assert published and abs(published[0] - time.time()) < 60, published

    cat = catalog(weir)
    assert (tenant,) in cat.list_namespaces()
    assert sorted(t[1] for t in cat.list_tables(tenant)) == ["logs", "metrics", "traces"]
    got_logs = cat.load_table(f"{tenant}.logs").scan().to_arrow()
    assert got_logs.num_rows == 3
    assert sorted(got_logs.column("body").to_pylist()) == sorted(str(r.log_record.body) for r in logs)
    assert set(got_logs.column("service_name").to_pylist()) == {"svc-http-protobuf"}
    sent_ts = sorted(r.log_record.timestamp // 1000 for r in logs)
    got_ts = sorted(int(t.timestamp() * 1_000_000) for t in got_logs.column("timestamp").to_pylist())
    assert all(abs(a - b) <= 1 for a, b in zip(sent_ts, got_ts)), (sent_ts, got_ts)
    got_spans = cat.load_table(f"{tenant}.traces").scan().to_arrow()
    assert sorted(got_spans.column("name").to_pylist()) == sorted(s.name for s in spans)
    assert sorted(got_spans.column("trace_id").to_pylist()) == sorted(format(s.context.trace_id, "032x") for s in spans)
    got_metrics = cat.load_table(f"{tenant}.metrics").scan().to_arrow()
    assert got_metrics.num_rows == expected["metrics"]
    assert {"orders", "temperature", "latency", "payload.size"} <= set(got_metrics.column("metric_name").to_pylist())
    orders = [r for r in got_metrics.to_pylist() if r["metric_name"] == "orders"]
    # The SDK exports the cumulative sum at force_flush and again at shutdown.
    values = {o["value"] if o["value"] is not None else o["int_value"] for o in orders}
    assert orders and values == {12}
    # The manifests' partition values and bounds prune files before they are read.
    logs_tbl = cat.load_table(f"{tenant}.logs")
    assert list(logs_tbl.scan(row_filter="timestamp < '2001-01-01T00:00:00+00:00'").plan_files()) == []
    assert list(logs_tbl.scan(row_filter="timestamp >= '2001-01-01T00:00:00+00:00'").plan_files())
    assert list(logs_tbl.scan(row_filter="service_name == 'no-such-service'").plan_files()) == []
    assert list(logs_tbl.scan(row_filter="service_name == 'svc-http-protobuf'").plan_files())
    # The files carry the table's field ids (readers need no name mapping), nested fields
    # too, and the manifests count values and nulls per column.
    ids = {}

    def walk(fields, prefix=""):
        for f in fields:
            ids[prefix + f.name] = f.field_id
            t = f.field_type
            if isinstance(t, StructType):
                walk(t.fields, prefix + f.name + ".")
            elif isinstance(t, ListType):
                ids[prefix + f.name + ".element"] = t.element_id
            elif isinstance(t, MapType):
                ids[prefix + f.name + ".key"] = t.key_id
                ids[prefix + f.name + ".value"] = t.value_id

    walk(logs_tbl.schema().fields)
    files = logs_tbl.inspect.files().to_pylist()
    assert files
    for f in files:
        schema = pq.read_schema(urllib.parse.urlparse(f["file_path"]).path)
        for field in schema:
            assert int(field.metadata[b"PARQUET:field_id"]) == ids[field.name], field.name
        attrs = schema.field("attributes").type
        assert int(attrs.key_field.metadata[b"PARQUET:field_id"]) == ids["attributes.key"]
        assert int(attrs.item_field.metadata[b"PARQUET:field_id"]) == ids["attributes.value"]
        nulls, values = dict(f["null_value_counts"]), dict(f["value_counts"])
        assert nulls[ids["body"]] == 0 and values[ids["body"]] == f["record_count"], f
        assert nulls[ids["scope_version"]] <= f["record_count"], f

    con = duck_iceberg()
    con.execute(f"ATTACH 'weir' AS ice (TYPE iceberg, ENDPOINT '{weir.admin}/iceberg', AUTHORIZATION_TYPE 'none')")
    for signal, rows in expected.items():
        assert con.execute(f"SELECT count(*) FROM ice.{tenant}.{signal}").fetchone()[0] == rows
    bodies = [r[0] for r in con.execute(f"SELECT body FROM ice.{tenant}.logs ORDER BY body").fetchall()]
    assert bodies == sorted(str(r.log_record.body) for r in logs)
    names = sorted(r[0] for r in con.execute(f"SELECT name FROM ice.{tenant}.traces").fetchall())
    assert names == sorted(s.name for s in spans)

    # Read-only: writes through the catalog are refused with the REST error body.
    req = urllib.request.Request(f"{weir.admin}/iceberg/v1/namespaces", data=b'{"namespace":["x"]}', method="POST", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 405
    assert json.loads(e.value.read())["error"]["type"] == "NotAllowedException"
    with pytest.raises(urllib.error.HTTPError) as e:
        load_table_json(weir, tenant, "profiles")
    assert e.value.code == 404


def test_compaction_is_a_replace_and_old_snapshots_read_whole(weir_factory):
    weir = start_compacting(weir_factory, snapshot_max_age="1h", min_age="4s")
    import requests
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.logs.v1 import logs_pb2

    now = time.time_ns()
    sent = 0
    for i in range(4):
        req = logs_service_pb2.ExportLogsServiceRequest(
            resource_logs=[logs_pb2.ResourceLogs(scope_logs=[logs_pb2.ScopeLogs(log_records=[
                logs_pb2.LogRecord(time_unix_nano=now + i * 1000 + j, body=common_pb2.AnyValue(string_value=f"r{i}-{j}")) for j in range(5)
            ])])]
        )
        r = requests.post(weir.http + "/v1/logs", data=req.SerializeToString(), headers={"Content-Type": "application/x-protobuf"}, timeout=10)
        assert r.status_code == 200, r.text
        sent += 5
        # Each request in a file of its own (compaction waits for min_age, the publisher not).
        weir.wait_rows("logs", sent)
    wait_published(weir, "default", "logs", sent, op="append")
    md = wait_published(weir, "default", "logs", sent, timeout=60, op="replace")
    replace = next(s for s in md["snapshots"] if s["snapshot-id"] == md["current-snapshot-id"])
    assert int(replace["summary"]["deleted-data-files"]) >= 2
    assert replace["summary"]["added-records"] == replace["summary"]["deleted-records"]
    older = [s for s in md["snapshots"] if s["summary"]["operation"] == "append"]
    assert older, md["snapshots"]
    before = max(older, key=lambda s: s["sequence-number"])

    # The compacted inputs' objects outlive compaction.grace (0s) while a snapshot lists them.
    time.sleep(2)
    tbl = catalog(weir).load_table("default.logs")
    assert tbl.scan().to_arrow().num_rows == sent
    assert tbl.scan(snapshot_id=before["snapshot-id"]).to_arrow().num_rows == sent
    # The glob over the lake sees inputs and output: rows counted twice.
    assert weir.duck().execute("SELECT count(*) FROM lake").fetchone()[0] > sent


def test_retention_is_a_delete_snapshot(weir_factory):
    weir = weir_factory(FAST)
    import requests
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.logs.v1 import logs_pb2

    def post(ts, n, body):
        req = logs_service_pb2.ExportLogsServiceRequest(
            resource_logs=[logs_pb2.ResourceLogs(scope_logs=[logs_pb2.ScopeLogs(log_records=[
                logs_pb2.LogRecord(time_unix_nano=ts + j, body=common_pb2.AnyValue(string_value=body)) for j in range(n)
            ])])]
        )
        r = requests.post(weir.http + "/v1/logs", data=req.SerializeToString(), headers={"Content-Type": "application/x-protobuf"}, timeout=10)
        assert r.status_code == 200, r.text

    post(time.time_ns(), 3, "fresh")
    post(time.time_ns() - 3 * 3600 * 10**9, 2, "expired")
    weir.wait_rows("logs", 5)
    wait_published(weir, "default", "logs", 5, op="append")
    # Retention switched on by a reload: the expired file leaves the index, then the table.
    weir.config.write_text(weir.config.read_text() + '[retention]\ndefault = "1h"\ninterval = "300ms"\n')
    weir.proc.send_signal(signal.SIGHUP)
    md = wait_published(weir, "default", "logs", 3, timeout=60, op="delete")
    ops = [s["summary"]["operation"] for s in md["snapshots"]]
    assert "delete" in ops, ops
    rows = catalog(weir).load_table("default.logs").scan().to_arrow()
    assert rows.column("body").to_pylist() == ["fresh"] * 3


def test_tokens_scope_the_catalog_to_their_tenants(weir_factory):
    weir = weir_factory(
        FAST
        + """
[auth]
allow_unauthenticated = ["syslog", "fluent"]
[auth.api_keys]
key-a = "a"
key-b = "b"
"""
    )
    import requests

    for key in ("key-a", "key-b"):
        r = requests.post(
            weir.http + "/v1/logs",
            json={"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": key}}]}]}]},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
    for tenant, key in (("a", "key-a"), ("b", "key-b")):
        weir.wait_rows("logs", 1, tenant)
        wait_published(weir, tenant, "logs", 1, headers={"Authorization": f"Bearer {key}"})

    cat_a = catalog(weir, token="key-a")
    assert cat_a.list_namespaces() == [("a",)]
    assert cat_a.load_table("a.logs").scan().to_arrow().column("body").to_pylist() == ["key-a"]
    for path in ("/iceberg/v1/namespaces/b", "/iceberg/v1/namespaces/b/tables", "/iceberg/v1/namespaces/b/tables/logs"):
        r = requests.get(weir.admin + path, headers={"Authorization": "Bearer key-a"}, timeout=5)
        assert r.status_code == 403, (path, r.status_code, r.text)
        assert r.json()["error"]["type"] == "ForbiddenException"
    r = requests.get(weir.admin + "/iceberg/v1/namespaces", timeout=5)
    assert r.status_code == 401
    r = requests.get(weir.admin + "/iceberg/v1/namespaces", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert r.status_code == 401


def test_a_restarted_publisher_continues_the_history(weir_factory):
    """After a restart the publisher reads the table's live files back from its manifests
    and goes on from the current snapshot: one history, every row once."""
    import requests

    weir = weir_factory(FAST)

    def post(body, n):
        r = requests.post(
            weir.http + "/v1/logs",
            json={"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": body}}] * n}]}]},
            timeout=10,
        )
        assert r.status_code == 200, r.text

    post("before", 4)
    weir.wait_rows("logs", 4)
    first = wait_published(weir, "default", "logs", 4)
    weir.stop()
    weir.start()
    post("after", 3)
    weir.wait_rows("logs", 7)
    md = wait_published(weir, "default", "logs", 7)
    ids = {s["snapshot-id"] for s in md["snapshots"]}
    assert first["current-snapshot-id"] in ids
    current = next(s for s in md["snapshots"] if s["snapshot-id"] == md["current-snapshot-id"])
    assert current["parent-snapshot-id"] == first["current-snapshot-id"]
    assert current["summary"]["added-records"] == "3"
    bodies = catalog(weir).load_table("default.logs").scan().to_arrow().column("body").to_pylist()
    assert sorted(bodies) == ["after"] * 3 + ["before"] * 4


def test_objects_outlive_every_snapshot_that_lists_them(weir_factory):
    """compaction.grace is 0s and snapshots expire 3 s after they were replaced: the inputs of
    a compaction are deleted only once the snapshot that listed them expired, and that
    snapshot's manifest list goes with it."""
    import requests

    weir = start_compacting(weir_factory, snapshot_max_age="3s", min_age="2s")
    for i in range(3):
        r = requests.post(
            weir.http + "/v1/logs",
            json={"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": f"r{i}"}}]}]}]},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        weir.wait_rows("logs", i + 1)
    md = wait_published(weir, "default", "logs", 3, op="append")
    inputs = [weir.lake / s["object_key"] for s in weir.segments("default", "logs")]
    assert len(inputs) == 3 and all(p.exists() for p in inputs)
    listed_by = {s["snapshot-id"]: s["manifest-list"] for s in md["snapshots"]}

    deadline = time.time() + 60
    while True:
        # Objects first: one gone now was deleted after its snapshots expired, so metadata
        # loaded afterwards must not list them.
        gone = [p for p in inputs if not p.exists()]
        md = load_table_json(weir, "default", "logs")["metadata"]
        live = {s["snapshot-id"] for s in md["snapshots"]}
        if gone:
            # No snapshot that listed the inputs may still be readable.
            assert not (live & set(listed_by)), (gone, live & set(listed_by))
        if len(gone) == len(inputs):
            break
        assert time.time() < deadline, "the compacted inputs were never deleted:\n" + weir.log.read_text()[-3000:]
        time.sleep(0.1)
    ops = [s["summary"]["operation"] for s in md["snapshots"]]
    assert "replace" in ops, ops
    for uri in listed_by.values():
        assert not os.path.exists(uri.removeprefix("file://")), uri
    assert catalog(weir).load_table("default.logs").scan().to_arrow().num_rows == 3


def test_rebuild_writes_the_tables_afresh_from_the_index(weir_factory):
    """The metadata under the lake's metadata/ prefix is lost: loading the table says so
    (503 naming the table) and nothing is published; `weir iceberg rebuild` writes every table
    afresh from the index, and readers read every row again."""
    import shutil
    import subprocess

    import requests

    from conftest import WEIR_BIN

    weir = weir_factory(FAST)
    r = requests.post(
        weir.http + "/v1/logs",
        json={"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": f"b{i}"}} for i in range(4)]}]}]},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    weir.wait_rows("logs", 4)
    wait_published(weir, "default", "logs", 4)
    weir.stop()
    shutil.rmtree(weir.lake / "metadata")

    weir.start()
    r = requests.get(f"{weir.admin}/iceberg/v1/namespaces/default/tables/logs", timeout=5)
    assert r.status_code == 503 and "default.logs" in r.json()["error"]["message"], r.text
    deadline = time.time() + 10
    while "iceberg table not published" not in weir.log.read_text():
        assert time.time() < deadline, weir.log.read_text()[-3000:]
        time.sleep(0.2)
    weir.stop()

    out = subprocess.run([WEIR_BIN, "iceberg", "rebuild", "--config", str(weir.config)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [json.loads(line) for line in out.stdout.splitlines()] == [{"action": "rebuilt", "namespace": "default", "table": "logs"}]
    weir.start()
    md = wait_published(weir, "default", "logs", 4)
    assert len(md["snapshots"]) == 1
    bodies = catalog(weir).load_table("default.logs").scan().to_arrow().column("body").to_pylist()
    assert sorted(bodies) == [f"b{i}" for i in range(4)]
    # What the rebuilt metadata names is all there is under its prefix.
    files = {str(p.relative_to(weir.lake)) for p in (weir.lake / "metadata").rglob("*") if p.is_file()}
    assert len(files) == 3, files  # the metadata JSON, one manifest list, one manifest
