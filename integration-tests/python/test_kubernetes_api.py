"""Pod metadata from the Kubernetes API for `[sources.kubernetes_logs]`.

No Kubernetes API server can be installed here (no kube-apiserver, kwok or envtest binary in
any registry this machine reaches), so these tests run a small HTTP server, in the test, that
replays list and watch responses of `GET /api/v1/pods` in the shapes the Kubernetes API
documents (API Concepts, "Efficient detection of changes" and "Watch bookmarks"):

- a list is a `PodList` (`{"kind": "PodList", "apiVersion": "v1", "metadata":
  {"resourceVersion": "N"}, "items": [...]}`, items without `kind`/`apiVersion`);
- `watch=1` (or `true`) from `resourceVersion=N` streams, chunked, one JSON object per line,
  `{"type": "ADDED"|"MODIFIED"|"DELETED", "object": {...Pod}}` for every change after N,
  `BOOKMARK` events when `allowWatchBookmarks=true`, and ends after `timeoutSeconds`;
- `fieldSelector=spec.nodeName=<node>` filters both; a selector it does not know is a 400.

It is a stand-in for the API server, not the API server: it checks that Weir speaks the
documented protocol (as kube-runtime's watcher sends it) and maps pods to records. Weir finds
it through a KUBECONFIG file (server `http://127.0.0.1:<port>`, no auth).
"""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from test_kubernetes_logs import cri_lines, k8s_toml, pod_log

NODE = "node-a"


def pod(name, uid, labels=None, annotations=None, owner=None, containers=(("app", "app:1"),), node=NODE, ns="shop"):
    meta = {"name": name, "namespace": ns, "uid": uid, "labels": labels or {}, "annotations": annotations or {}}
    if owner:
        kind, oname = owner
        api = "batch/v1" if kind == "Job" else "apps/v1"
        meta["ownerReferences"] = [
            {"apiVersion": api, "kind": kind, "name": oname, "uid": f"uid-of-{oname}", "controller": True, "blockOwnerDeletion": True}
        ]
    return {
        "metadata": meta,
        "spec": {"nodeName": node, "containers": [{"name": c, "image": img} for c, img in containers]},
        "status": {"phase": "Running"},
    }


class FakeApiServer:
    """Replays a pod list and its changes as the API server's list and watch endpoints."""

    def __init__(self):
        self.cond = threading.Condition()
        self.rv = 100
        self.pods = {}  # uid -> pod
        self.history = []  # (rv, type, pod)
        self.requests = []  # query dicts
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.stopping = False
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.stopping = True
        with self.cond:
            self.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    def change(self, kind, p):
        with self.cond:
            self.rv += 1
            p = json.loads(json.dumps(p))
            p["metadata"]["resourceVersion"] = str(self.rv)
            uid = p["metadata"]["uid"]
            if kind == "DELETED":
                self.pods.pop(uid, None)
            else:
                self.pods[uid] = p
            self.history.append((self.rv, kind, p))
            self.cond.notify_all()

    def add(self, p):
        self.change("ADDED", p)

    @staticmethod
    def selected(q, p):
        sel = q.get("fieldSelector", [""])[0]
        if not sel:
            return True
        key, _, value = sel.partition("=")
        return p["spec"].get("nodeName") == value

    def handle(self, h):
        url = urlparse(h.path)
        q = parse_qs(url.query)
        self.requests.append((url.path, q))
        if url.path != "/api/v1/pods":
            return self.reply(h, 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
        sel = q.get("fieldSelector", [""])[0]
        if sel and not sel.startswith("spec.nodeName="):
            return self.reply(h, 400, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "BadRequest", "code": 400})
        if q.get("watch", [""])[0] in ("1", "true"):
            return self.watch(h, q)
        with self.cond:
            items = []
            for p in self.pods.values():
                if self.selected(q, p):
                    items.append(p)
            body = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": str(self.rv)}, "items": items}
        self.reply(h, 200, body)

    def reply(self, h, code, body):
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def watch(self, h, q):
        since = int(q.get("resourceVersion", ["0"])[0] or 0)
        bookmarks = q.get("allowWatchBookmarks", [""])[0] == "true"
        timeout = int(q.get("timeoutSeconds", ["1800"])[0])
        end = time.time() + min(timeout, 30)  # a short server-side limit makes the client re-watch
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

        def send(event):
            line = (json.dumps(event) + "\n").encode()
            h.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            h.wfile.flush()

        last_bookmark = time.time()
        try:
            while time.time() < end and not self.stopping:
                with self.cond:
                    events = [(rv, t, p) for rv, t, p in self.history if rv > since]
                    if not events:
                        self.cond.wait(0.5)
                    rv_now = self.rv
                for rv, t, p in events:
                    since = rv
                    if self.selected(q, p):
                        send({"type": t, "object": {"kind": "Pod", "apiVersion": "v1", **p}})
                if bookmarks and time.time() - last_bookmark > 1:
                    last_bookmark = time.time()
                    send({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": str(max(since, rv_now))}}})
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


def kubeconfig(path, port):
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "replay", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "replay", "user": {}}],
                "contexts": [{"name": "replay", "context": {"cluster": "replay", "user": "replay"}}],
                "current-context": "replay",
            }
        )
    )
    return path


def write(path, msgs):
    with open(path, "a") as f:
        for m in msgs:
            f.write(cri_lines(m))


def attrs(con, where):
    rows = con.sql(f"SELECT DISTINCT resource_attributes, service_name FROM lake WHERE {where}").fetchall()
    return [(dict(zip(r[0]["key"], r[0]["value"])) if isinstance(r[0], dict) and "key" in r[0] else dict(r[0]), r[1]) for r in rows]


def wait_for(pred, what, w, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}:\n" + w.log.read_text()[-4000:])


def count_bodies(w, like):
    return w.duck().sql(f"SELECT count(*) FROM lake WHERE body LIKE '{like}'").fetchone()[0]


def test_pods_from_the_api_enrich_and_exclude(weir_factory, tmp_path, monkeypatch):
    api = FakeApiServer()
    try:
        web = pod(
            "web-7d9f8c-x2x4p",
            "uid-web",
            labels={"app.kubernetes.io/name": "storefront", "tier": "frontend", "pod-template-hash": "7d9f8c"},
            annotations={"team": "payments", "not-selected": "x"},
            owner=("ReplicaSet", "web-7d9f8c"),
            containers=(("web", "registry.local:5000/shop/web:1.4.2"),),
        )
        secret = pod("vault-0", "uid-vault", labels={"weir.dev/exclude": "true"}, owner=("StatefulSet", "vault"), containers=(("vault", "vault:1.15"),))
        ds = pod("agent-abcde", "uid-ds", owner=("DaemonSet", "agent"), containers=(("agent", "agent"),), ns="infra")
        elsewhere = pod("web-7d9f8c-other", "uid-other-node", labels={"tier": "frontend"}, node="node-b")
        for p in (web, secret, ds, elsewhere):
            api.add(p)

        root = tmp_path / "pods"
        web_log = pod_log(root, "shop", "web-7d9f8c-x2x4p", "uid-web", "web")
        vault_log = pod_log(root, "shop", "vault-0", "uid-vault", "vault")
        ds_log = pod_log(root, "infra", "agent-abcde", "uid-ds", "agent")
        write(vault_log, [f"vault secret {i}" for i in range(50)])
        write(web_log, [f"web first {i}" for i in range(100)])
        write(ds_log, [f"ds line {i}" for i in range(10)])

        monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", api.port)))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        extra = '[sources.kubernetes_logs.api]\nannotations = ["team", "absent"]\nsync_timeout = "20s"\nunknown_pod_wait = "3s"\n'
        w = weir_factory(k8s_toml(root, extra))
        w.wait_rows("logs", 110, timeout=60)

        con = w.duck()
        got = {r[1]: r for r in attrs(con, "body LIKE 'web first%' OR body LIKE 'ds line%'")}
        assert set(got) == {"storefront", "agent"}, got
        web_attrs, service = got["storefront"]
        assert web_attrs["k8s.pod.label.app.kubernetes.io/name"] == "storefront"
        assert web_attrs["k8s.pod.label.tier"] == "frontend"
        assert web_attrs["k8s.pod.annotation.team"] == "payments"
        assert "k8s.pod.annotation.not-selected" not in web_attrs and "k8s.pod.annotation.absent" not in web_attrs
        assert web_attrs["k8s.replicaset.name"] == "web-7d9f8c"
        assert web_attrs["k8s.deployment.name"] == "web"
        assert web_attrs["container.image.name"] == "registry.local:5000/shop/web"
        assert web_attrs["container.image.tag"] == "1.4.2"
        # Path metadata is still there.
        assert web_attrs["k8s.pod.uid"] == "uid-web" and web_attrs["k8s.node.name"] == NODE
        ds_attrs, ds_service = got["agent"]
        assert ds_service == "agent", "no app.kubernetes.io/name label: the container name"
        assert ds_attrs["k8s.daemonset.name"] == "agent"
        assert ds_attrs["container.image.tag"] == "latest"
        assert not any(k.startswith("k8s.pod.label.") for k in ds_attrs)

        # The watch: only this node's pods were asked for, list then watch from its version.
        lists = [q for p, q in api.requests if "watch" not in q]
        watches = [q for p, q in api.requests if "watch" in q]
        assert lists and watches
        assert all(q.get("fieldSelector") == [f"spec.nodeName={NODE}"] for _, q in api.requests)
        assert all("resourceVersion" in q for q in watches)

        # Changes arrive through the watch: a new pod of a CronJob's Job (its event before its
        # first lines, as the kubelet does), and a label added to the web pod.
        api.add(pod("backup-28391820-q7x2z", "uid-job", labels={"app.kubernetes.io/name": "backup"}, owner=("Job", "backup-28391820"), containers=(("main", "backup:2@sha256:beef"),)))
        web2 = json.loads(json.dumps(web))
        web2["metadata"]["labels"]["version"] = "v2"
        api.change("MODIFIED", web2)
        # New metadata applies from the source's next rescan: probe until it shows.
        probes, deadline = 0, time.time() + 30
        while True:
            write(web_log, [f"web probe {probes}"])
            probes += 1
            wait_for(lambda n=probes - 1: count_bodies(w, f"web probe {n}") == 1, "a probe line", w, timeout=30)
            [(probe_attrs, _)] = attrs(w.duck(), f"body = 'web probe {probes - 1}'")
            if probe_attrs.get("k8s.pod.label.version") == "v2":
                break
            assert time.time() < deadline, "the MODIFIED event never reached the records"
        job_log = pod_log(root, "shop", "backup-28391820-q7x2z", "uid-job", "main")
        write(job_log, [f"job line {i}" for i in range(20)])
        write(web_log, [f"web second {i}" for i in range(30)])
        write(vault_log, [f"vault secret later {i}" for i in range(50)])
        wait_for(lambda: count_bodies(w, "job line%") == 20 and count_bodies(w, "web second%") == 30, "the second lines", w, timeout=60)
        con = w.duck()
        [(job_attrs, job_service)] = attrs(con, "body LIKE 'job line%'")
        assert job_service == "backup"
        assert job_attrs["k8s.job.name"] == "backup-28391820"
        assert job_attrs["k8s.cronjob.name"] == "backup"
        assert job_attrs["container.image.name"] == "backup" and job_attrs["container.image.tag"] == "2"
        [(web2_attrs, _)] = attrs(con, "body LIKE 'web second%'")
        assert web2_attrs["k8s.pod.label.version"] == "v2"

        # The excluded pod: none of its lines, before or after the others.
        time.sleep(2)
        assert count_bodies(w, "vault%") == 0
        assert w.duck().sql("SELECT count(*) FROM lake").fetchone()[0] == 100 + 10 + 20 + 30 + probes
        log = w.log.read_text()
        assert "pod metadata synced" in log
        assert "path metadata only" not in log
    finally:
        api.close()


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


FALLBACK = "no pod list from the Kubernetes API within sync_timeout"


def test_unreachable_api_falls_back_to_path_metadata_and_says_so_once(weir_factory, tmp_path, monkeypatch):
    root = tmp_path / "pods"
    log = pod_log(root, "shop", "web-7d9f8c-x2x4p", "uid-web", "web")
    write(log, [f"line {i}" for i in range(40)])
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", closed_port())))
    extra = '[sources.kubernetes_logs.api]\nsync_timeout = "1s"\n'
    w = weir_factory(k8s_toml(root, extra))
    w.wait_rows("logs", 40, timeout=60)
    write(log, [f"more {i}" for i in range(10)])
    wait_for(lambda: count_bodies(w, "more%") == 10, "lines after the fallback", w)
    time.sleep(3)  # the watch keeps retrying meanwhile
    [(a, service)] = attrs(w.duck(), "true")
    assert a["k8s.pod.name"] == "web-7d9f8c-x2x4p" and a["k8s.pod.uid"] == "uid-web"
    assert service == "web"
    assert not any(k.startswith(("k8s.pod.label.", "k8s.deployment", "container.image")) for k in a)
    text = w.log.read_text()
    assert text.count(FALLBACK) == 1, text[-3000:]
    assert "pod watch failed" in text


def test_without_cluster_config_path_metadata_is_said_once(weir_factory, tmp_path, monkeypatch):
    root = tmp_path / "pods"
    log = pod_log(root, "shop", "web-7d9f8c-x2x4p", "uid-web", "web")
    write(log, [f"line {i}" for i in range(5)])
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    started = time.time()
    w = weir_factory(k8s_toml(root))
    w.wait_rows("logs", 5, timeout=60)
    assert time.time() - started < 8, "no API: reading does not wait for the 10 s sync_timeout"
    text = w.log.read_text()
    assert text.count("no cluster config") == 1, text[-3000:]
    assert FALLBACK not in text
