"""Weir scrapes Prometheus `/metrics` pages itself (`[sources.prometheus_scrape]`).

A real node_exporter (Debian `prometheus-node-exporter`) is scraped beside targets served by
this test, each bad one under a `job` of its own (from a YAML `file_sd` file): one slower than
the timeout, one answering garbage, one whose page is over `max_body_bytes` (sent without
Content-Length, so the limit is hit while streaming), one over `max_samples`, one with a series
over `max_labels_per_series`, and one answering 500. A target speaking OpenMetrics (with an
empty family, as Python's client writes them) comes from a JSON `file_sd` file, which the test
then rewrites: its target is removed and another added. DuckDB reads the lake: `up` is 1 for
the good targets and 0 for every bad one on every scrape, the agent keeps scraping all of them,
and a removed target stops.
"""

import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import WEIR_BIN, free_port, wait_listening

pytestmark = pytest.mark.skipif(
    not shutil.which("prometheus-node-exporter"),
    reason="needs the Debian package prometheus-node-exporter (scripts/test.sh installs it)",
)

OPENMETRICS = """# HELP app_idle Families without samples yet.
# TYPE app_idle counter
# TYPE app_requests counter
# HELP app_requests Requests served.
app_requests_total{code="200"} 41
app_requests_created{code="200"} 1700000000.25
# TYPE app_latency_seconds histogram
app_latency_seconds_bucket{le="0.1"} 3
app_latency_seconds_bucket{le="1.0"} 8
app_latency_seconds_bucket{le="+Inf"} 9
app_latency_seconds_sum 4.5
app_latency_seconds_count 9
# TYPE app_build info
app_build_info{version="1.2.3"} 1
# EOF
"""

TEXT = "# TYPE extra_gauge gauge\nextra_gauge{job=\"from-page\"} 7\n"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, status, body, ctype="text/plain; version=0.0.4", length=True):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        p = self.path
        if p == "/slow":
            time.sleep(3)
            self.send(200, b"late 1\n")
        elif p == "/garbage":
            self.send(200, b"<html><body>not metrics</body></html>\n", "text/html")
        elif p == "/huge":
            line = b"big_series{i=\"%d\"} 1\n"
            self.send(200, b"".join(line % i for i in range(20000)), length=False)
        elif p == "/many":
            # Under max_body_bytes (64 KiB), over max_samples (5000).
            self.send(200, b"".join(b"m%x 1\n" % i for i in range(6000)))
        elif p == "/wide":
            labels = ",".join(f'l{i}="v"' for i in range(200))
            self.send(200, f"ok_series 1\nwide_series{{{labels}}} 1\n".encode())
        elif p == "/error":
            self.send(500, b"boom\n")
        elif p == "/om":
            self.server.accepts.append(self.headers.get("Accept", ""))
            self.send(200, OPENMETRICS.encode(), "application/openmetrics-text; version=1.0.0; charset=utf-8")
        elif p == "/text":
            self.send(200, TEXT.encode())
        else:
            self.send(404, b"no\n")


@pytest.fixture
def server():
    s = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    s.daemon_threads = True
    s.handle_error = lambda *args: None  # the agent hangs up on the slow target: expected
    s.accepts = []
    t = threading.Thread(target=s.serve_forever, daemon=True)
    t.start()
    yield s
    s.shutdown()


def up_by_instance(con):
    return {
        (r[0], r[1]): (r[2], r[3])
        for r in con.execute(
            "SELECT service_name, map_extract(resource_attributes, 'service.instance.id')[1], "
            "count(DISTINCT timestamp), max(value) FROM lake WHERE metric_name = 'up' GROUP BY 1, 2"
        ).fetchall()
    }


def wait_up(w, instance, scrapes, timeout=40):
    deadline = time.time() + timeout
    seen = {}
    while time.time() < deadline:
        if w.files("scrape", "metrics"):
            seen = up_by_instance(w.duck("scrape", "metrics"))
            if any(i == instance and n >= scrapes for (_, i), (n, _) in seen.items()):
                return seen
        time.sleep(0.3)
    raise AssertionError(f"{instance} not scraped {scrapes} times: {seen}\n" + w.log.read_text()[-4000:])


BAD = ["slow", "garbage", "huge", "many", "wide", "error"]


def scrapes(con, job):
    """(scrapes, highest `up`, last scrape ns) of a job."""
    return con.execute(
        "SELECT count(DISTINCT timestamp), max(value), max(epoch_ns(timestamp)) FROM lake "
        f"WHERE metric_name = 'up' AND service_name = '{job}'").fetchone()


def test_scrapes_node_exporter_and_survives_bad_targets(weir_factory, server, tmp_path):
    ne_port = free_port()
    ne = subprocess.Popen(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{ne_port}"],
                          stdout=subprocess.DEVNULL, stderr=(tmp_path / "ne.log").open("wb"))
    try:
        wait_listening(f"http://127.0.0.1:{ne_port}/metrics", ne, "node_exporter")
        sp = server.server_address[1]
        sd = tmp_path / "sd"
        sd.mkdir()
        app = sd / "app.json"
        app.write_text(json.dumps([{"targets": [f"127.0.0.1:{sp}"],
                                    "labels": {"__metrics_path__": "/om", "job": "app", "env": "test"}}]))
        (sd / "bad.yaml").write_text("".join(
            f"- targets: ['127.0.0.1:{sp}']\n  labels: {{__metrics_path__: /{b}, job: bad-{b}}}\n" for b in BAD))
        w = weir_factory(f"""
[sources.prometheus_scrape]
enabled = true
interval = "1s"
timeout = "700ms"
job = "node"
targets = ["http://127.0.0.1:{ne_port}/metrics"]
files = ["{sd}/*.json", "{sd}/*.yaml"]
files_refresh = "500ms"
max_body_bytes = "64KiB"
max_samples = 5000
tenant = "scrape"
""")
        ne_instance = f"127.0.0.1:{ne_port}"
        wait_up(w, ne_instance, 3)
        wait_up(w, f"127.0.0.1:{sp}", 3)
        # The target file changes: its target is removed and another added, without a restart.
        app.write_text(json.dumps([
            {"targets": [f"localhost:{sp}"], "labels": {"__metrics_path__": "/text", "job": "added"}},
        ]))
        removed_at = time.time_ns()
        wait_up(w, f"localhost:{sp}", 3)
        time.sleep(2)
        page = requests.get(f"http://127.0.0.1:{ne_port}/metrics", timeout=5).text
        w.stop()
    finally:
        ne.terminate()
        ne.wait(10)

    con = w.duck("scrape", "metrics")
    up = up_by_instance(con)
    assert up[("node", ne_instance)][1] == 1.0
    for b in BAD:
        # Every bad target was scraped again and again, and was down every time.
        n, best, _ = scrapes(con, f"bad-{b}")
        assert n >= 3 and best == 0.0, (b, n, best)
    assert up[("added", f"localhost:{sp}")][1] == 1.0
    n, best, last = scrapes(con, "app")
    assert n >= 3 and best == 1.0
    # The removed target stopped within a scrape interval or two of the file's change.
    assert last < removed_at + 2_500_000_000, (last - removed_at) / 1e9

    # node_exporter's CPU counter: a monotonic cumulative sum with its labels, one row per
    # series per scrape, as many series as the page has.
    series = {tuple(sorted(l.split("{", 1)[1].rsplit("}", 1)[0].split(",")))
              for l in page.splitlines() if l.startswith("node_cpu_seconds_total{")}
    rows = con.execute(
        "SELECT DISTINCT metric_type, is_monotonic, aggregation_temporality, "
        "map_extract(attributes, 'cpu')[1], map_extract(attributes, 'mode')[1] "
        f"FROM lake WHERE metric_name = 'node_cpu_seconds_total' AND service_name = 'node'"
    ).fetchall()
    assert {(r[0], r[1], r[2]) for r in rows} == {("sum", True, 2)}
    assert len({(r[3], r[4]) for r in rows}) == len(series) > 0
    # scrape_samples_scraped counts the page's sample lines, as Prometheus does.
    lines = sum(1 for l in page.splitlines() if l.strip() and not l.startswith("#"))
    scraped = con.execute(
        "SELECT arg_max(value, timestamp) FROM lake WHERE metric_name = 'scrape_samples_scraped' "
        f"AND map_extract(resource_attributes, 'service.instance.id')[1] = '{ne_instance}'"
    ).fetchone()[0]
    assert abs(scraped - lines) <= 5, (scraped, lines)
    # The page over max_samples reports its real sample count.
    many = con.execute(
        "SELECT max(value) FROM lake WHERE metric_name = 'scrape_samples_scraped' AND service_name = 'bad-many'"
    ).fetchone()[0]
    assert many == 6000
    durations = con.execute(
        "SELECT max(value) FROM lake WHERE metric_name = 'scrape_duration_seconds' AND service_name = 'bad-slow'"
    ).fetchone()[0]
    assert 0.6 < durations < 2.0, durations  # the slow target was cut at the timeout
    # Nothing of the pages that failed reached the lake.
    assert con.execute(
        "SELECT count(*) FROM lake WHERE metric_name IN ('m1', 'wide_series', 'ok_series', 'big_series')"
    ).fetchone()[0] == 0

    # The OpenMetrics target, found through the file: its counter keeps `_total` and its
    # created time, its histogram is one point, its labels come from the file.
    c = con.execute(
        "SELECT metric_type, value, epoch_ns(start_timestamp), map_extract(attributes, 'env')[1], map_extract(attributes, 'code')[1] "
        "FROM lake WHERE metric_name = 'app_requests_total' LIMIT 1").fetchone()
    assert c == ("sum", 41.0, 1_700_000_000_250_000_000, "test", "200"), c
    h = con.execute(
        "SELECT metric_type, count, sum, bucket_counts, explicit_bounds FROM lake "
        "WHERE metric_name = 'app_latency_seconds' LIMIT 1").fetchone()
    assert h == ("histogram", 9, 4.5, [3, 5, 1], [0.1, 1.0]), h
    assert con.execute("SELECT value FROM lake WHERE metric_name = 'app_build_info' LIMIT 1").fetchone()[0] == 1.0
    assert server.accepts and server.accepts[0].startswith("application/openmetrics-text")

    # honor_labels = false: the page's own `job` moves to `exported_job`.
    e = con.execute(
        "SELECT service_name, map_extract(attributes, 'exported_job')[1] FROM lake "
        "WHERE metric_name = 'extra_gauge' LIMIT 1").fetchone()
    assert e == ("added", "from-page"), e

    # Each failure is named in the log.
    log = w.log.read_text()
    for needle in ["no complete answer within sources.prometheus_scrape.timeout",
                   "line 1: expected a metric name",
                   "over sources.prometheus_scrape.max_body_bytes",
                   "more than 5000 samples (sources.prometheus_scrape.max_samples)",
                   "over sources.prometheus_scrape.max_labels_per_series (128)",
                   "HTTP 500"]:
        assert needle in log, needle


def test_bad_scrape_config_is_refused_with_its_key(weir_factory):
    w = weir_factory("""
[sources.prometheus_scrape]
enabled = true
interval = "5s"
timeout = "10s"
targets = ["ftp://example/metrics"]
files = ["/etc/targets.txt"]
""", start=False)
    r = subprocess.run([WEIR_BIN, "validate", "--config", str(w.config)], capture_output=True, text=True)
    assert r.returncode != 0
    for key in ["sources.prometheus_scrape.timeout", "sources.prometheus_scrape.targets[0]",
                "sources.prometheus_scrape.files[0]"]:
        assert key in r.stderr, r.stderr


def test_annotated_pods_on_this_node_are_scraped(weir_factory, server, tmp_path, monkeypatch):
    """Pods come from the replaying list/watch server of test_kubernetes_api.py (no API server
    can be installed here); each pod's "IP" is 127.0.0.1 and its port the test's server."""
    from test_kubernetes_api import FakeApiServer, kubeconfig, pod

    sp = server.server_address[1]
    api = FakeApiServer()
    try:
        def annotated(name, uid, path, node="node-a", scrape="true"):
            p = pod(name, uid, annotations={"prometheus.io/scrape": scrape, "prometheus.io/port": str(sp),
                                            "prometheus.io/path": path}, node=node)
            p["status"]["podIP"] = "127.0.0.1"
            return p

        api.add(annotated("app-1", "u1", "/om"))
        api.add(annotated("elsewhere", "u2", "/text", node="node-b"))   # another node's pod
        api.add(annotated("opted-out", "u3", "/text", scrape="false"))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", api.port)))
        monkeypatch.setenv("K8S_NODE_NAME", "node-a")
        w = weir_factory("""
[sources.prometheus_scrape]
enabled = true
interval = "1s"
timeout = "700ms"
job = "kubernetes-pods"
kubernetes.enabled = true
tenant = "scrape"
""")
        wait_up(w, f"127.0.0.1:{sp}", 2)
        # A pod added later on this node is scraped too.
        api.add(annotated("late", "u4", "/text"))
        deadline = time.time() + 30
        while time.time() < deadline:
            con = w.duck("scrape", "metrics") if w.files("scrape", "metrics") else None
            pods = {r[0] for r in con.execute(
                "SELECT DISTINCT map_extract(attributes, 'pod')[1] FROM lake WHERE metric_name = 'up'").fetchall()} if con else set()
            if "late" in pods:
                break
            time.sleep(0.3)
        w.stop()
    finally:
        api.close()
    con = w.duck("scrape", "metrics")
    rows = con.execute(
        "SELECT DISTINCT map_extract(attributes, 'pod')[1], map_extract(attributes, 'namespace')[1], service_name, value "
        "FROM lake WHERE metric_name = 'up'").fetchall()
    assert {(r[0], r[1], r[2], r[3]) for r in rows} == {("app-1", "shop", "kubernetes-pods", 1.0),
                                                        ("late", "shop", "kubernetes-pods", 1.0)}, rows
    assert con.execute("SELECT count(*) FROM lake WHERE metric_name = 'app_requests_total'").fetchone()[0] >= 2
    # The watch asked for this node's pods only.
    assert any(q.get("fieldSelector") == ["spec.nodeName=node-a"] for _, q in api.requests)
