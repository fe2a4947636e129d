"""Prometheus remote write into Weir.

1.0: a real Prometheus server (Debian `prometheus`, 2.42) scrapes a real node_exporter (Debian
`prometheus-node-exporter`) and itself every second and remote-writes to Weir; DuckDB reads the
lake. Both binaries are started by hand on free loopback ports with temporary data directories.

2.0: Prometheus 2.42 cannot send remote write 2.0, so those requests are built here byte for
byte from the published proto (prompb/io/prometheus/write/v2/types.proto): the symbol table,
label references, metadata, a created timestamp, an exemplar, a classic histogram's series and
a native histogram with negative buckets and a zero bucket. The snappy blocks are written by
hand too (a valid block of literals), since no snappy package is installed for Python here.

Bad input: snappy bombs, truncated protobuf, wrong content types and encodings, huge label sets.
"""

import shutil
import signal
import struct
import subprocess
import time

import pytest
import requests

from conftest import free_port, wait_listening

pytestmark = pytest.mark.skipif(
    not (shutil.which("prometheus") and shutil.which("prometheus-node-exporter")),
    reason="needs the Debian packages prometheus and prometheus-node-exporter (scripts/test.sh installs them)",
)

V2_TYPE = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]


# --- protobuf and snappy, by hand -------------------------------------------------------------

def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def ld(field, payload):
    """A length-delimited field (message, string, packed repeated)."""
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def uint(field, n):
    return varint(field << 3) + varint(n)


def sint(field, n):
    return varint(field << 3) + varint((n << 1) ^ (n >> 63))


def double(field, x):
    return varint(field << 3 | 1) + struct.pack("<d", x)


def packed(field, ns, zigzag=False):
    return ld(field, b"".join(varint((n << 1) ^ (n >> 63) if zigzag else n) for n in ns))


def snappy(data):
    """A raw snappy block: the decoded length, then literals (at most 64 KiB each)."""
    out = bytearray(varint(len(data)))
    for i in range(0, len(data), 65536):
        chunk = data[i:i + 65536]
        n = len(chunk) - 1
        if n < 60:
            out.append(n << 2)
        elif n < 256:
            out += bytes([60 << 2, n])
        else:
            out += bytes([61 << 2]) + struct.pack("<H", n)
        out += chunk
    return bytes(out)


def sample(value, ts):
    return double(1, value) + uint(2, ts)


def v1_series(labels, samples):
    """A 1.0 `TimeSeries`: labels [(name, value)], samples [(value, ms)]."""
    body = b"".join(ld(1, ld(1, k.encode()) + ld(2, v.encode())) for k, v in labels)
    return ld(1, body + b"".join(ld(2, sample(v, t)) for v, t in samples))


def post(url, body, content_type="application/x-protobuf", encoding="snappy", headers=None):
    h = {"Content-Type": content_type, "X-Prometheus-Remote-Write-Version": "2.0.0" if "v2" in content_type else "0.1.0"}
    if encoding:
        h["Content-Encoding"] = encoding
    h.update(headers or {})
    return requests.post(url, data=body, headers=h, timeout=30)


def weir_with_rw(weir_factory, name="w", extra=""):
    w = weir_factory(f'[sources.prometheus_remote_write]\nenabled = true\naddress = "127.0.0.1:0"\n{extra}', name=name)
    w.rw_url = f"http://{w.address('sources.prometheus_remote_write.address')}/api/v1/write"
    return w


def counter(text, name, **labels):
    """Sum of a counter's series in Prometheus text whose labels include `labels`."""
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total, found = total + float(value), True
    return total if found else None


# --- 1.0 from a real Prometheus ---------------------------------------------------------------

PROM_CONFIG = """
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
{scrape}
remote_write:
  - url: {url}
    authorization:
      credentials: key-prom
    queue_config:
      batch_send_deadline: 100ms
      min_shards: 1
      max_shards: 1
      max_samples_per_send: 20000
      capacity: 40000
      min_backoff: 50ms
      max_backoff: 500ms
    metadata_config:
      send: true
      send_interval: 1s
"""

SCRAPE = """scrape_configs:
  - job_name: node
    static_configs: [{{targets: ["127.0.0.1:{ne}"]}}]
  - job_name: prometheus
    static_configs: [{{targets: ["127.0.0.1:{pp}"]}}]
"""


def test_prometheus_server_remote_writes_node_exporter_and_itself(weir_factory, tmp_path):
    # The tenant comes from the API key Prometheus sends as a bearer token (Prometheus 2.42
    # does not send the `headers:` of remote_write, so X-Scope-OrgID is not an option here).
    w = weir_with_rw(weir_factory, extra='[auth]\nallow_unauthenticated = ["syslog", "fluent"]\n[auth.api_keys]\n"key-prom" = "team-prom"\n')
    ne_port, prom_port = free_port(), free_port()
    procs = []
    try:
        ne = subprocess.Popen(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{ne_port}"],
                              stdout=subprocess.DEVNULL, stderr=(tmp_path / "ne.log").open("wb"))
        procs.append(ne)
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(PROM_CONFIG.format(scrape=SCRAPE.format(ne=ne_port, pp=prom_port), url=w.rw_url))
        prom_log = tmp_path / "prometheus.log"
        prom = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdout=subprocess.DEVNULL, stderr=prom_log.open("wb"))
        procs.append(prom)
        wait_listening(f"http://127.0.0.1:{ne_port}/metrics", ne, "node_exporter")
        wait_listening(f"http://127.0.0.1:{prom_port}/-/ready", prom, "prometheus")
        prom_metrics = lambda: requests.get(f"http://127.0.0.1:{prom_port}/metrics", timeout=5).text  # noqa: E731

        # Let a few scrapes through. Then stop node_exporter: the next failed scrape makes
        # Prometheus write a stale marker for each of its series. Then stop scraping (a reload
        # without scrape configs keeps the same remote write queue) so the counts settle.
        deadline = time.time() + 20
        while (counter(w.metrics(), "weir_received_records_total", source="prometheus_remote_write", signal="samples") or 0) < 3000:
            assert time.time() < deadline, prom_log.read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(2)
        ne.terminate()
        ne.wait(10)
        time.sleep(2.5)
        cfg.write_text(PROM_CONFIG.format(scrape="scrape_configs: []", url=w.rw_url))
        prom.send_signal(signal.SIGHUP)
        last, stable_since = None, time.time()
        deadline = time.time() + 20
        while True:
            text = prom_metrics()
            now = (counter(text, "prometheus_remote_storage_samples_total"),
                   counter(text, "prometheus_remote_storage_samples_pending"),
                   counter(w.metrics(), "weir_received_records_total", source="prometheus_remote_write", signal="samples"))
            if now != last:
                last, stable_since = now, time.time()
            elif now[1] == 0 and time.time() - stable_since > 3:
                break
            assert time.time() < deadline, f"remote write did not settle: {now}"
            time.sleep(0.25)

        # What Prometheus says it sent is what Weir received: every sample, none failed.
        sent, _, received = last
        assert counter(text, "prometheus_remote_storage_samples_failed_total") == 0
        assert counter(text, "prometheus_remote_storage_samples_dropped_total") == 0
        assert counter(text, "prometheus_remote_storage_samples_retried_total") == 0
        assert sent > 3000 and received == sent, (sent, received)
        stale = counter(w.metrics(), "weir_received_records_total", source="prometheus_remote_write", signal="stale_markers")
        assert stale > 100  # one per node_exporter series, written when its scrape failed
        rows = counter(w.metrics(), "weir_received_records_total", source="prometheus_remote_write", signal="metrics")
        w.wait_rows("metrics", int(rows), "team-prom")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)

    con = w.duck("team-prom", "metrics")
    # The lake holds every sample but the stale markers: a gauge or sum row is one sample, a
    # histogram row its buckets, _sum and _count, a summary row its quantiles, _sum and _count.
    in_lake = con.execute("""
        SELECT sum(CASE metric_type
                   WHEN 'histogram' THEN len(bucket_counts) + 2
                   WHEN 'summary' THEN len(quantiles) + 2
                   ELSE 1 END) FROM lake""").fetchone()[0]
    assert in_lake + stale == sent

    cpu = con.execute(f"""
        SELECT DISTINCT metric_type, is_monotonic, aggregation_temporality, service_name,
               map_extract(resource_attributes, 'service.instance.id')[1], list_sort(map_keys(attributes))
        FROM lake WHERE metric_name = 'node_cpu_seconds_total'""").fetchall()
    assert cpu == [("sum", True, 2, "node", f"127.0.0.1:{ne_port}", ["cpu", "mode"])]
    modes = {r[0] for r in con.execute(
        "SELECT DISTINCT map_extract(attributes, 'mode')[1] FROM lake WHERE metric_name = 'node_cpu_seconds_total'").fetchall()}
    assert {"idle", "user", "system"} <= modes
    # Monotonic: the idle time of cpu 0 never goes down.
    idle = [r[0] for r in con.execute("""
        SELECT value FROM lake WHERE metric_name = 'node_cpu_seconds_total'
          AND map_extract(attributes, 'cpu')[1] = '0' AND map_extract(attributes, 'mode')[1] = 'idle'
        ORDER BY timestamp""").fetchall()]
    assert len(idle) >= 3 and idle == sorted(idle)

    # Prometheus's own request latency histogram, reassembled from its _bucket/_sum/_count series.
    hist = con.execute("""
        SELECT explicit_bounds, bucket_counts, count, sum, service_name
        FROM lake WHERE metric_name = 'prometheus_http_request_duration_seconds'
          AND map_extract(attributes, 'handler')[1] = '/metrics' ORDER BY timestamp""").fetchall()
    assert len(hist) >= 3
    for bounds, counts, count, total, service in hist:
        assert bounds == [0.1, 0.2, 0.4, 1.0, 3.0, 8.0, 20.0, 60.0, 120.0]
        assert len(counts) == 10 and sum(counts) == count and count >= 1
        assert total is not None and total > 0 and service == "prometheus"
    assert [h[2] for h in hist] == sorted(h[2] for h in hist)
    # No `_bucket` series is left over as a gauge.
    assert con.execute("SELECT count(*) FROM lake WHERE metric_name LIKE '%_bucket'").fetchone()[0] == 0
    # A summary (Go's GC pauses) with its quantiles.
    q = con.execute("""
        SELECT [x.quantile FOR x IN quantiles] FROM lake
        WHERE metric_name = 'go_gc_duration_seconds' AND metric_type = 'summary' LIMIT 1""").fetchone()
    assert q is not None and q[0] == [0.0, 0.25, 0.5, 0.75, 1.0]
    # A gauge.
    assert con.execute(
        "SELECT DISTINCT metric_type FROM lake WHERE metric_name = 'node_memory_MemTotal_bytes'").fetchall() == [("gauge",)]


# --- 2.0, built from the proto ----------------------------------------------------------------

T = int(time.time() * 1000) - 5000

SYMBOLS = ["", "__name__", "rw2_requests_total", "instance", "host:1", "job", "app", "path", "/a",
           "Requests served.", "requests", "rw2_latency_seconds", "rw2_temp", "rw2_req_seconds_bucket",
           "le", "0.5", "+Inf", "rw2_req_seconds_sum", "rw2_req_seconds_count", "trace_id", "abc123", "seconds"]
S = {s: i for i, s in enumerate(SYMBOLS)}


def refs(*pairs):
    return [S[x] for kv in pairs for x in kv]


def v2_series(labels, samples=(), histograms=(), exemplars=(), metadata=None, created=0):
    body = packed(1, labels)
    body += b"".join(ld(2, sample(v, t)) for v, t in samples)
    body += b"".join(ld(3, h) for h in histograms)
    body += b"".join(ld(4, packed(1, lr) + double(2, v) + uint(3, t)) for lr, v, t in exemplars)
    if metadata:
        kind, help_ref, unit_ref = metadata
        body += ld(5, uint(1, kind) + uint(3, help_ref) + uint(4, unit_ref))
    if created:
        body += uint(6, created)
    return ld(5, body)


def v2_request(series, symbols=SYMBOLS):
    return b"".join(ld(4, s.encode()) for s in symbols) + b"".join(series)


def native_histogram():
    """Schema 2; positive buckets -2, -1 (a span) and 1 (after a gap of 1) with counts 3, 2, 4
    as deltas; one negative bucket 0 with 1; 2 in the zero bucket: 12 observations."""
    span = lambda off, n: sint(1, off) + uint(2, n)  # noqa: E731
    return (uint(1, 12) + double(3, 3.5) + sint(4, 2) + double(5, 0.001) + uint(6, 2)
            + ld(8, span(0, 1)) + packed(9, [1], zigzag=True)
            + ld(11, span(-2, 2)) + ld(11, span(1, 1)) + packed(12, [3, -1, 2], zigzag=True)
            + uint(15, T))


def test_remote_write_2_0_request_built_from_the_proto(weir_factory):
    w = weir_with_rw(weir_factory)
    base = [("instance", "host:1"), ("job", "app")]
    series = [
        v2_series(refs(("__name__", "rw2_requests_total"), *base, ("path", "/a")),
                  samples=[(5.0, T), (7.0, T + 1000)],
                  exemplars=[(refs(("trace_id", "abc123")), 0.3, T)],
                  metadata=(1, S["Requests served."], S["requests"]), created=T - 60000),
        v2_series(refs(("__name__", "rw2_latency_seconds"), *base), histograms=[native_histogram()],
                  metadata=(3, 0, S["seconds"])),
        v2_series(refs(("__name__", "rw2_temp"), *base), samples=[(21.5, T), (STALE_NAN, T + 1000)], metadata=(2, 0, 0)),
        v2_series(refs(("__name__", "rw2_req_seconds_bucket"), *base, ("le", "0.5")), samples=[(3.0, T)], metadata=(3, 0, 0)),
        v2_series(refs(("__name__", "rw2_req_seconds_bucket"), *base, ("le", "+Inf")), samples=[(5.0, T)], metadata=(3, 0, 0)),
        v2_series(refs(("__name__", "rw2_req_seconds_sum"), *base), samples=[(1.25, T)], metadata=(3, 0, 0)),
        v2_series(refs(("__name__", "rw2_req_seconds_count"), *base), samples=[(5.0, T)], metadata=(3, 0, 0)),
    ]
    r = post(w.rw_url, snappy(v2_request(series)), V2_TYPE, headers={"X-Scope-OrgID": "team-rw2"})
    assert r.status_code == 204, r.text
    assert r.headers["X-Prometheus-Remote-Write-Samples-Written"] == "8"
    assert r.headers["X-Prometheus-Remote-Write-Histograms-Written"] == "1"
    assert r.headers["X-Prometheus-Remote-Write-Exemplars-Written"] == "0"

    # A label reference past the symbol table: 400, which senders do not retry.
    bad = v2_request([v2_series([S["__name__"], 999], samples=[(1.0, T)])])
    r = post(w.rw_url, snappy(bad), V2_TYPE)
    assert r.status_code == 400 and "symbol reference 999 is out of range" in r.text, r.text
    r = post(w.rw_url, snappy(v2_request([v2_series(refs(("__name__", "rw2_temp")), samples=[(1.0, T)])])),
             V2_TYPE, headers={"X-Scope-OrgID": "not a tenant"})
    assert r.status_code == 400 and "X-Scope-OrgID" in r.text

    w.wait_rows("metrics", 5, "team-rw2")
    con = w.duck("team-rw2", "metrics")
    rows = {(r[0], r[1]): r for r in con.execute("""
        SELECT metric_name, epoch_ms(timestamp), metric_type, value, is_monotonic, epoch_ms(start_timestamp),
               description, unit, service_name, map_extract(resource_attributes, 'service.instance.id')[1],
               map_extract(attributes, 'path')[1]
        FROM lake""").fetchall()}
    assert rows[("rw2_requests_total", T)][2:] == ("sum", 5.0, True, T - 60000, "Requests served.", "requests", "app", "host:1", "/a")
    assert rows[("rw2_requests_total", T + 1000)][3] == 7.0
    assert rows[("rw2_temp", T)][2:4] == ("gauge", 21.5)
    assert ("rw2_temp", T + 1000) not in rows  # the stale marker is dropped
    assert len(rows) == 5
    exp = con.execute("""
        SELECT count, sum, exp_scale, exp_zero_count, exp_zero_threshold, exp_positive_offset,
               exp_positive_bucket_counts, exp_negative_offset, exp_negative_bucket_counts, unit
        FROM lake WHERE metric_name = 'rw2_latency_seconds'""").fetchone()
    # Prometheus bucket i is OpenTelemetry bucket i - 1.
    assert exp == (12, 3.5, 2, 2, 0.001, -3, [3, 2, 0, 4], -1, [1], "seconds")
    hist = con.execute("""
        SELECT metric_type, explicit_bounds, bucket_counts, count, sum FROM lake
        WHERE metric_name = 'rw2_req_seconds'""").fetchone()
    assert hist == ("histogram", [0.5], [3, 2], 5, 1.25)
    m = w.metrics()
    assert counter(m, "weir_received_records_total", source="prometheus_remote_write", signal="stale_markers") == 1
    assert counter(m, "weir_received_records_total", source="prometheus_remote_write", signal="exemplars") == 1
    assert counter(m, "weir_rejected_requests_total", source="prometheus_remote_write", reason="malformed") == 1


# --- bad input --------------------------------------------------------------------------------

def vm_hwm_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_bad_input_gets_a_clear_4xx_and_bounded_memory(weir_factory):
    w = weir_with_rw(weir_factory)
    good = v1_series([("__name__", "ok_total"), ("job", "j")], [(1.0, T)])
    before = vm_hwm_kib(w.proc.pid)

    # A snappy header claiming ~4 GiB: refused from the header, nothing decompressed.
    r = post(w.rw_url, varint(0xFFFFFFF0) + bytes([0]) + b"x")
    assert r.status_code == 413 and "sources.prometheus_remote_write.max_request_bytes" in r.text, r.text
    # Not snappy at all.
    r = post(w.rw_url, b"\x05\xff\xff")
    assert r.status_code == 400 and "snappy" in r.text, r.text
    # Truncated protobuf.
    r = post(w.rw_url, snappy(good[:-5]))
    assert r.status_code == 400 and "truncated protobuf" in r.text, r.text
    # Wrong content types and encodings.
    r = post(w.rw_url, snappy(good), "application/json")
    assert r.status_code == 415 and "unsupported Content-Type" in r.text
    r = post(w.rw_url, snappy(good), "application/x-protobuf;proto=io.prometheus.write.v3.Request")
    assert r.status_code == 415 and "proto=io.prometheus.write.v2.Request" in r.text
    r = post(w.rw_url, snappy(good), encoding="gzip")
    assert r.status_code == 415 and "Content-Encoding" in r.text
    # A million (empty) labels on one series: 2 MB on the wire, refused before they are
    # decoded into memory.
    labels = ld(1, ld(1, b"__name__") + ld(2, b"m")) + ld(1, b"") * 1_000_000
    r = post(w.rw_url, snappy(ld(1, labels + ld(2, sample(1.0, T)))))
    assert r.status_code == 400 and "1000001 labels, over sources.prometheus_remote_write.max_labels_per_series (128)" in r.text, r.text
    # One label value of 1 MB.
    r = post(w.rw_url, snappy(v1_series([("__name__", "m"), ("big", "x" * (1 << 20))], [(1.0, T)])))
    assert r.status_code == 400 and "over sources.prometheus_remote_write.max_label_bytes_per_series (16384)" in r.text, r.text
    # 2.0: labels_refs that are not pairs, and a native histogram with an impossible schema.
    r = post(w.rw_url, snappy(v2_request([v2_series([1, 2, 3], samples=[(1.0, T)])])), V2_TYPE)
    assert r.status_code == 400 and "not name and value pairs" in r.text, r.text
    h = uint(1, 1) + sint(4, 20) + uint(15, T)
    r = post(w.rw_url, snappy(v2_request([v2_series(refs(("__name__", "rw2_temp")), histograms=[h])])), V2_TYPE)
    assert r.status_code == 400 and "schema 20" in r.text, r.text

    # The agent is fine and still takes good requests.
    assert requests.get(w.admin + "/readyz", timeout=5).status_code == 200
    r = post(w.rw_url, snappy(good))
    assert r.status_code == 204, r.text
    w.wait_rows("metrics", 1)
    grown_mib = (vm_hwm_kib(w.proc.pid) - before) / 1024
    assert grown_mib < 150, f"peak memory grew by {grown_mib:.0f} MiB"
    m = w.metrics()
    assert counter(m, "weir_rejected_requests_total", source="prometheus_remote_write", reason="malformed") == 5
    assert counter(m, "weir_rejected_requests_total", source="prometheus_remote_write", reason="decompress") == 1
    assert counter(m, "weir_rejected_requests_total", source="prometheus_remote_write", reason="too_large") == 1
    assert counter(m, "weir_rejected_requests_total", source="prometheus_remote_write", reason="content_type") == 2
    assert counter(m, "weir_rejected_requests_total", source="prometheus_remote_write", reason="content_encoding") == 1
