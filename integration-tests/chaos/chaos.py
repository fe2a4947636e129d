#!/usr/bin/env python3
"""Chaos harness: kill -9, a failing lake and a full disk under steady load, then an
exactly-once check of every acknowledged record.

What one run does
-----------------
1. Starts a moto S3 server on a free port, creates a bucket, and puts a TCP proxy (in this
   script) between the agent and moto. The agent's lake is `s3://BUCKET/lake` through the
   proxy; the proxy can be switched off, which resets every open connection and every new one
   (the lake "fails" while moto keeps what it already holds).
2. Mounts a tmpfs (`--tmpfs-mb`, default 128) and puts the agent's `data_dir` (buffer, index,
   listen.json) on it, so the disk under the buffer can be filled.
3. Runs a load thread: OTLP/HTTP protobuf log requests (`--records` records each, bodies
   unique: `q{request}-r{record}`) at `--rate` requests per second, one connection each, to
   the address the current agent wrote in `{data_dir}/listen.json`. Each request's fate:
   - 2xx: **acked**; its records must be in the lake exactly once.
   - connection refused (nothing was sent) or 429 (buffer full, nothing stored): sent again
     later, as OTLP exporters do.
   - 503: retryable, sent again later; but a 503 after a failed commit may come with records
     that reach the disk anyway, so until a later attempt is acked the request counts as
     unknown.
   - the connection fails after the request was sent (reset, closed without an answer,
     timeout): **unknown**, never sent again; its records may be in the lake 0 or 1 times,
     all of them or none (a request's entries go to the buffer in one atomic sled batch).
   - any other status: **non-retryable**, counted as a failure.
4. Kills the agent with SIGKILL `--kills` times at random moments (a fifth of them before it
   is ready, the rest 0.2 to `--max-uptime` seconds after), starting it again each time. In
   the middle of the kills the lake fails for `--lake-outage` seconds; acks must continue (the
   buffer absorbs them).
5. Fills the tmpfs with a filler file until a write fails with ENOSPC and keeps the load on
   until the agent refuses a request (sled first writes into space its file already holds),
   then `--disk-full` seconds more: the agent must answer only retryable statuses (429/503)
   or successes it made durable (they are checked like every ack). Then deletes the filler;
   if the buffer stopped after the failed commit (`/livez` 503), restarts the agent as a
   liveness probe would, and checks that acks resume.
6. Stops the load, stops the agent with SIGTERM, starts it once more and waits until the
   buffer and the outbox are empty and the index lists at least every acked row; then reads
   the files the index lists (`GET /v1/segments`, paginated) with DuckDB straight from moto,
   and checks: every acked record exactly once, every unknown record at most once, nothing
   else. Prints one `chaos summary` line and exits 1 if a check failed.

Every process and mount it started is stopped or unmounted on exit, failure included
(`--keep` keeps the work directory: logs, configuration; the tmpfs is copied there first).

Running it
----------
Short form (what `scripts/test.sh` runs through `integration-tests/python/test_chaos.py`):

    .venv/bin/python integration-tests/chaos/chaos.py --kills 10 --weir target/debug/weir

Long form (by hand; a few minutes):

    .venv/bin/python integration-tests/chaos/chaos.py --kills 100 --lake-outage 15 \\
        --disk-full 8 --seed 1 --weir target/debug/weir

It needs the tests' venv (duckdb with `duckdb_extension_httpfs`, boto3, moto's
`moto_server`, opentelemetry-proto) and permission to mount a tmpfs (root). Without that
permission the disk-full phase is skipped and the summary says so (`disk_full_answers=skipped`).

The summary line: `kills`, `requests_acked`, `records_acked`, `lost` (acked records not in the
lake), `duplicated` (extra copies of any record), `unknown_requests` and
`unknown_records_present`, `unexpected` (records of requests never acked nor unknown),
`acked_while_lake_down`, `retryable_while_disk_full` and `disk_full_answers` (status: count),
`liveness_restarts`, `non_retryable`, `connections_refused` (resent), `statuses`, `segments`
(listed by the index at the end) and the `seed` of the kill delays.
"""

import argparse
import errno
import glob
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

S3_KEY, S3_SECRET = "weir-chaos", "weir-chaos-secret"


def log(msg):
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------------
# The lake's failure: a TCP proxy between the agent and moto.


class Proxy:
    """Forwards 127.0.0.1:port to the upstream port. `down()` resets every open connection and
    every new one until `up()`."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.is_up = True
        self.closed = False
        self.lock = threading.Lock()
        self.open = set()
        self.resets = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def _reset(s):
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if not self.is_up:
                self.resets += 1
                self._reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
                upstream.settimeout(None)
            except OSError:
                self._reset(client)
                continue
            with self.lock:
                if not self.is_up:  # went down while this one connected
                    self.resets += 1
                    self._reset(client)
                    self._reset(upstream)
                    continue
                self.open.add(client)
                self.open.add(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self.lock:
            for s in (src, dst):
                if s in self.open:
                    self.open.discard(s)
                    s.close()

    def down(self):
        with self.lock:
            self.is_up = False
            for s in list(self.open):
                self.resets += 1
                self._reset(s)
            self.open.clear()

    def up(self):
        self.is_up = True

    def close(self):
        self.closed = True
        self.down()
        self.sock.close()


# ---------------------------------------------------------------------------------------------
# OTLP requests.


def logs_request(req_id, records, t0):
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.logs.v1 import logs_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2

    return logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource_pb2.Resource(
                    attributes=[common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="chaos"))]
                ),
                scope_logs=[
                    logs_pb2.ScopeLogs(
                        log_records=[
                            logs_pb2.LogRecord(
                                time_unix_nano=t0 + req_id * 1000 + i,
                                severity_number=9,
                                body=common_pb2.AnyValue(string_value=body(req_id, i)),
                            )
                            for i in range(records)
                        ]
                    )
                ],
            )
        ]
    ).SerializeToString()


def body(req_id, i):
    return f"q{req_id:07d}-r{i:02d}"


class Load(threading.Thread):
    """One client, one connection per request, at `rate` requests per second (see the module
    docs for how each outcome is counted)."""

    def __init__(self, records, rate):
        super().__init__(daemon=True)
        self.records, self.rate = records, rate
        self.t0 = time.time_ns() // 3_600_000_000_000 * 3_600_000_000_000  # this hour
        self.addr = None  # "host:port" of the current agent's OTLP/HTTP source, or None
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.next_id = 0
        self.resend = []
        self.acked = set()  # request ids answered 2xx
        self.unknown = set()  # request ids whose fate is unknown (see module docs)
        self.nonretryable = []  # (id, status, text)
        self.statuses = {}
        self.refused = 0  # connections refused (resent)
        self.full_phase = False
        self.full_answers = {}  # status (or "refused"/"unknown") -> count while the disk is full
        self.requests_sent = 0

    def count_full(self, key):
        if self.full_phase:
            self.full_answers[key] = self.full_answers.get(key, 0) + 1

    def run(self):
        period = 1.0 / self.rate
        while not self.stop.is_set():
            started = time.time()
            addr = self.addr
            if addr is None:
                time.sleep(0.02)
                continue
            with self.lock:
                if self.resend:
                    req_id = self.resend.pop(0)
                else:
                    req_id = self.next_id
                    self.next_id += 1
            payload = logs_request(req_id, self.records, self.t0)
            host, port = addr.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                conn.connect()
            except OSError:
                # Nothing was sent: the agent is down (or not yet listening). Send it again.
                with self.lock:
                    self.refused += 1
                    self.resend.append(req_id)
                self.count_full("refused")
                conn.close()
                time.sleep(0.02)
                continue
            self.requests_sent += 1
            try:
                conn.request("POST", "/v1/logs", payload, {"Content-Type": "application/x-protobuf", "Connection": "close"})
                r = conn.getresponse()
                status, text = r.status, r.read()[:300]
            except (OSError, http.client.HTTPException):
                # Sent, but no answer: the agent may have stored it. Never resent.
                with self.lock:
                    self.unknown.add(req_id)
                self.count_full("unknown")
                conn.close()
                continue
            conn.close()
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                self.count_full(status)
                if 200 <= status < 300:
                    self.acked.add(req_id)
                    self.unknown.discard(req_id)
                elif status in (429, 503):
                    if status == 503:
                        self.unknown.add(req_id)
                    self.resend.append(req_id)
                else:
                    self.nonretryable.append((req_id, status, text))
            time.sleep(max(0.0, period - (time.time() - started)))

    def finish(self):
        self.stop.set()
        self.join(30)


# ---------------------------------------------------------------------------------------------
# The agent.


class Agent:
    def __init__(self, weir, root, data_dir, lake_endpoint, bucket):
        self.weir, self.root, self.data = weir, root, data_dir
        self.config = root / "weir.toml"
        self.logpath = root / "weir.log"
        self.proc = None
        self.procs = []  # every process started, so the clean-up can end them all
        self.listen = None
        self.starts = 0
        self.config.write_text(
            f"""
data_dir = "{data_dir}"
[sources.otlp]
grpc_address = "127.0.0.1:0"
http_address = "127.0.0.1:0"
[sources.syslog]
enabled = false
[sources.loki]
enabled = false
[sources.datadog]
enabled = false
[sources.fluent]
enabled = false
[admin]
address = "127.0.0.1:0"
[shutdown]
timeout = "10s"
[lake]
url = "s3://{bucket}/lake"
max_file_age = "300ms"
[lake.options]
aws_endpoint = "{lake_endpoint}"
aws_region = "us-east-1"
aws_allow_http = "true"
aws_virtual_hosted_style_request = "false"
"""
        )

    def start(self):
        (self.data / "listen.json").unlink(missing_ok=True)
        self.listen = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
        env.update(RUST_LOG=env.get("RUST_LOG", "info"), AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
        with self.logpath.open("ab") as f:
            f.write(f"\n===== start {self.starts} at {time.strftime('%H:%M:%S')}\n".encode())
            if self.alive():
                raise RuntimeError("a weir process is still running")
            self.proc = subprocess.Popen([self.weir, "run", "--config", str(self.config)], stdout=f, stderr=subprocess.STDOUT, env=env)
        self.procs.append(self.proc)
        self.starts += 1

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n=4000):
        return self.logpath.read_text(errors="replace")[-n:]

    def wait_listen(self, timeout=30):
        deadline = time.time() + timeout
        path = self.data / "listen.json"
        while time.time() < deadline:
            try:
                self.listen = json.loads(path.read_text())
                return self.listen
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            if not self.alive():
                raise RuntimeError(f"weir exited with {self.proc.returncode} before listen.json:\n{self.tail()}")
            time.sleep(0.02)
        raise RuntimeError(f"weir wrote no listen.json in {timeout}s:\n{self.tail()}")

    @property
    def http(self):
        return self.listen["sources.otlp.http_address"]

    @property
    def admin(self):
        return "http://" + self.listen["admin.address"]

    def get(self, path):
        with urllib.request.urlopen(self.admin + path, timeout=5) as r:
            return r.status, r.read()

    def status(self, path):
        try:
            return self.get(path)[0]
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.alive():
                raise RuntimeError(f"weir exited with {self.proc.returncode} before ready:\n{self.tail()}")
            if self.status("/readyz") == 200:
                return
            time.sleep(0.05)
        raise RuntimeError(f"weir not ready in {timeout}s:\n{self.tail()}")

    def kill(self):
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(30)

    def stop(self, timeout=60):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout)
        return self.proc.returncode if self.proc else None

    def healthz(self):
        return json.loads(self.get("/healthz")[1])

    def metric(self, name):
        text = self.get("/metrics")[1].decode()
        return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(name + " ") or l.startswith(name + "{"))

    def segments(self):
        out, cursor = [], None
        while True:
            q = "/v1/segments?tenant=default&signal=logs&limit=100" + (f"&cursor={cursor}" if cursor else "")
            page = json.loads(self.get(q)[1])
            out += page["segments"]
            cursor = page.get("next_cursor")
            if not cursor:
                return out


# ---------------------------------------------------------------------------------------------
# The run.


class Chaos:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = Path(tempfile.mkdtemp(prefix="weir-chaos-"))
        self.moto = None
        self.proxy = None
        self.mount = None
        self.agent = None
        self.load = None
        self.failures = []
        self.kills = 0
        self.liveness_restarts = 0
        self.disk_full = "skipped"
        self.acked_during_outage = 0
        self.crashed = []

    # -- set-up and clean-up -------------------------------------------------------------------

    def start_moto(self):
        port = free_port()
        server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
        self.moto_log = (self.work / "moto.log").open("wb")
        self.moto = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=self.moto_log, stderr=subprocess.STDOUT)
        self.moto_endpoint = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(self.moto_endpoint, timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.time() > deadline or self.moto.poll() is not None:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.1)
        import boto3

        self.bucket = f"chaos-{self.rng.randrange(1 << 32):08x}"
        boto3.client(
            "s3", endpoint_url=self.moto_endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET, region_name="us-east-1"
        ).create_bucket(Bucket=self.bucket)
        self.proxy = Proxy(port)

    def mount_tmpfs(self):
        mnt = self.work / "tmpfs"
        mnt.mkdir()
        if self.args.disk_full > 0:
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.args.tmpfs_mb}m", "tmpfs", str(mnt)], capture_output=True, text=True)
            if r.returncode == 0:
                self.mount = mnt
            else:
                log(f"cannot mount a tmpfs ({r.stderr.strip()}): the disk-full phase is skipped")
        data = mnt / "data"
        data.mkdir()
        return data

    def cleanup(self):
        if self.load is not None:
            self.load.finish()
        if self.agent is not None:
            for proc in self.agent.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(30)
        if self.proxy is not None:
            self.proxy.close()
        if self.moto is not None:
            self.moto.terminate()
            try:
                self.moto.wait(10)
            except subprocess.TimeoutExpired:
                self.moto.kill()
                self.moto.wait(10)
            self.moto_log.close()
        if self.mount is not None:
            if self.args.keep:
                shutil.copytree(self.mount / "data", self.work / "data-copy", dirs_exist_ok=True, ignore_dangling_symlinks=True)
            if subprocess.run(["umount", str(self.mount)]).returncode != 0:
                subprocess.run(["umount", "-l", str(self.mount)])
        if self.args.keep:
            log(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- phases --------------------------------------------------------------------------------

    def fail(self, what):
        log("FAILED: " + what)
        self.failures.append(what)

    def start_agent(self, ready=True):
        self.agent.start()
        self.agent.wait_listen()
        self.load.addr = self.agent.http
        if ready:
            self.agent.wait_ready()

    def kill_agent(self):
        # The load waits (sends nothing) until the next agent writes listen.json: the dead
        # agent's port number may meanwhile be taken by another socket (the next agent's own
        # admin port, bound to port 0), which would answer 404.
        if not self.agent.alive():
            self.crashed.append(self.agent.proc.returncode)
            self.fail(f"weir exited on its own with {self.agent.proc.returncode}:\n{self.agent.tail()}")
        self.load.addr = None
        self.agent.kill()

    def kills_phase(self):
        a = self.args
        outage_at = a.kills // 2
        outage_end = None
        for k in range(a.kills):
            if k == outage_at and a.lake_outage > 0:
                before = len(self.load.acked)
                log(f"lake down for {a.lake_outage}s")
                self.proxy.down()
                outage_end = time.time() + a.lake_outage
            if self.rng.random() < 0.2:
                # Before it is ready: while the buffer opens, the journal replays, the sockets bind.
                self.agent.start()
                time.sleep(self.rng.uniform(0, 0.6))
            else:
                self.start_agent()
                time.sleep(self.rng.uniform(0.2, a.max_uptime))
            if outage_end is not None and time.time() >= outage_end:
                self.end_outage(before)
                outage_end = None
            self.kill_agent()
            self.kills += 1
        if outage_end is not None:
            self.start_agent()
            time.sleep(max(0.0, outage_end - time.time()))
            self.end_outage(before)
        else:
            self.start_agent()

    def end_outage(self, before):
        self.acked_during_outage = len(self.load.acked) - before
        log(f"lake up again ({self.acked_during_outage} requests acked while it was down, {self.proxy.resets} lake connections reset)")
        self.proxy.up()
        if self.acked_during_outage == 0:
            self.fail("no request was acked while the lake was down")

    def disk_full_phase(self):
        a = self.args
        if self.mount is None:
            return
        time.sleep(1)
        filler = self.mount / "filler"
        # Unbuffered writes, smaller and smaller, until the last byte is taken.
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            for size in (1 << 20, 4096, 1):
                block = b"\0" * size
                while True:
                    try:
                        os.write(fd, block)
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        # The buffer may still write into space sled holds already (its log grows by 8 MiB
        # segments): wait for the first refusal, then keep the disk full `--disk-full` seconds.
        log(f"disk full ({filler.stat().st_size >> 20} MiB filler)")
        self.load.full_phase = True
        deadline = time.time() + 60
        while self.agent.alive() and not any(k in (429, 503) for k in self.load.full_answers):
            if time.time() > deadline:
                self.fail("the agent refused nothing in 60s of full disk")
                break
            time.sleep(0.05)
        log(f"first refusal after {self.load.full_answers.get(200, 0)} acks; load on for {a.disk_full}s more")
        time.sleep(a.disk_full)
        self.load.full_phase = False
        answers = dict(self.load.full_answers)
        self.disk_full = answers
        log(f"answers while the disk was full: {answers}")
        if not self.agent.alive():
            self.crashed.append(self.agent.proc.returncode)
            self.fail(f"weir exited with {self.agent.proc.returncode} while the disk was full:\n{self.agent.tail()}")
        # Nothing is killed in this phase: a refused connection or a request without an answer
        # is the agent failing too, not only a non-retryable status.
        bad = {k: v for k, v in answers.items() if not (isinstance(k, int) and (200 <= k < 300 or k in (429, 503)))}
        if bad:
            self.fail(f"answers other than 2xx, 429 and 503 while the disk was full: {bad}")
        filler.unlink()
        log("filler removed")
        # A commit that failed (ENOSPC) stops the buffer until a restart (/livez 503), as after a
        # failed fsync; a liveness probe restarts it.
        if self.agent.alive():
            live = self.agent.status("/livez")
            log(f"/livez answers {live}")
            if live != 200:
                self.agent.kill()
                self.liveness_restarts += 1
                self.start_agent()
        else:
            self.start_agent()
        acked = len(self.load.acked)
        deadline = time.time() + 20
        while len(self.load.acked) == acked:
            if time.time() > deadline:
                self.fail("no request acked within 20s after the disk was freed")
                break
            time.sleep(0.1)

    def drain_and_check(self):
        a, load = self.args, self.load
        load.finish()
        self.load = None
        self.load_done = load
        rc = self.agent.stop()
        if rc != 0:
            self.fail(f"weir exited with {rc} at SIGTERM:\n{self.agent.tail()}")
        self.agent.start()
        self.agent.wait_listen()
        self.agent.wait_ready()
        acked_records = len(load.acked) * a.records
        deadline = time.time() + a.drain_timeout
        while True:
            try:
                h = self.agent.healthz()
                outbox = self.agent.metric("weir_outbox_segments")
                rows = sum(s["row_count"] for s in self.agent.segments())
            except OSError:
                h, outbox, rows = {"buffer": {"entries": -1}}, -1, -1
            if h["buffer"]["entries"] == 0 and outbox == 0 and rows >= acked_records:
                break
            if time.time() > deadline:
                self.fail(f"not drained in {a.drain_timeout}s: buffer {h.get('buffer')}, outbox {outbox}, rows {rows} of {acked_records}")
                break
            time.sleep(0.3)
        segs = self.agent.segments()
        counts = self.read_lake(segs)
        rc = self.agent.stop()
        if rc != 0:
            self.fail(f"weir exited with {rc} at the last SIGTERM:\n{self.agent.tail()}")

        # Records by fate.
        lost = dup = unknown_present = unexpected = 0
        for req in load.acked:
            for i in range(a.records):
                n = counts.pop(body(req, i), 0)
                if n == 0:
                    lost += 1
                elif n > 1:
                    dup += n - 1
        unknown = load.unknown - load.acked
        partial = []
        for req in unknown:
            present = 0
            for i in range(a.records):
                n = counts.pop(body(req, i), 0)
                present += min(n, 1)
                if n > 1:
                    dup += n - 1
            unknown_present += present
            if 0 < present < a.records:
                partial.append((req, present))
        if partial:
            self.fail(f"requests stored in part (request, records present): {partial[:5]}")
        for b, n in counts.items():
            unexpected += n
        if lost:
            self.fail(f"{lost} acked records are not in the lake")
        if dup:
            self.fail(f"{dup} duplicated records")
        if unexpected:
            sample = sorted(counts)[:5]
            self.fail(f"{unexpected} records in the lake that were never sent or only refused (e.g. {sample})")
        if load.nonretryable:
            self.fail(f"{len(load.nonretryable)} non-retryable answers, e.g. {load.nonretryable[:3]}")
        full = self.disk_full
        full_s = "skipped" if full == "skipped" else ",".join(f"{k}:{v}" for k, v in sorted(full.items(), key=str))
        retryable_full = 0 if full == "skipped" else sum(v for k, v in full.items() if k in (429, 503))
        summary = (
            f"chaos summary: kills={self.kills} requests_acked={len(load.acked)} records_acked={acked_records} "
            f"lost={lost} duplicated={dup} unknown_requests={len(unknown)} unknown_records_present={unknown_present} "
            f"unexpected={unexpected} acked_while_lake_down={self.acked_during_outage} "
            f"retryable_while_disk_full={retryable_full} disk_full_answers={full_s} "
            f"liveness_restarts={self.liveness_restarts} non_retryable={len(load.nonretryable)} "
            f"connections_refused={load.refused} statuses={dict(sorted(load.statuses.items()))} "
            f"segments={len(segs)} seed={a.seed}"
        )
        print(summary, flush=True)

    def read_lake(self, segs):
        """Record body -> occurrences, over the files the index lists, read by DuckDB from moto."""
        import duckdb
        import duckdb_extension_httpfs

        ext = glob.glob(str(Path(duckdb_extension_httpfs.__file__).parent / "**" / "httpfs.duckdb_extension"), recursive=True)
        con = duckdb.connect()
        con.execute(f"LOAD '{ext[0]}'")
        host = self.moto_endpoint.removeprefix("http://")
        con.execute(
            f"CREATE SECRET (TYPE s3, KEY_ID '{S3_KEY}', SECRET '{S3_SECRET}', ENDPOINT '{host}', "
            "URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')"
        )
        if not segs:
            return {}
        paths = ", ".join(f"'s3://{self.bucket}/lake/{s['object_key']}'" for s in segs)
        rows = con.execute(f"SELECT body, count(*) FROM read_parquet([{paths}]) GROUP BY body").fetchall()
        listed = sum(s["row_count"] for s in segs)
        read = sum(n for _, n in rows)
        if listed != read:
            self.fail(f"the index lists {listed} rows, the files hold {read}")
        return dict(rows)

    def run(self):
        a = self.args
        log(f"work dir {self.work}, seed {a.seed}")
        self.start_moto()
        data = self.mount_tmpfs()
        self.agent = Agent(a.weir, self.work, data, f"http://127.0.0.1:{self.proxy.port}", self.bucket)
        self.load = Load(a.records, a.rate)
        self.load.start()
        t = time.time()
        self.kills_phase()
        log(f"{self.kills} kills in {time.time() - t:.0f}s, {len(self.load.acked)} requests acked")
        self.disk_full_phase()
        time.sleep(1)
        self.drain_and_check()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weir", default=os.environ.get("TEST_WEIR_BIN") or str(Path(__file__).resolve().parents[2] / "target" / "debug" / "weir"))
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--records", type=int, default=20, help="records per request")
    p.add_argument("--rate", type=float, default=40, help="requests per second")
    p.add_argument("--max-uptime", type=float, default=2.5, help="longest time an agent runs before its kill")
    p.add_argument("--lake-outage", type=float, default=4, help="seconds the lake fails (0: never)")
    p.add_argument("--disk-full", type=float, default=4, help="seconds the disk stays full (0: skip)")
    p.add_argument("--tmpfs-mb", type=int, default=128)
    p.add_argument("--drain-timeout", type=float, default=120)
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, config, a copy of data_dir)")
    args = p.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 31)
    args.weir = str(Path(args.weir).resolve())

    chaos = Chaos(args)
    # SIGTERM/SIGINT end the run through the clean-up below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        chaos.run()
    except BaseException as e:
        chaos.failures.append(f"{type(e).__name__}: {e}")
        log(f"FAILED: {type(e).__name__}: {e}")
        if not isinstance(e, Exception):
            raise
    finally:
        chaos.cleanup()
    if chaos.failures:
        log(f"{len(chaos.failures)} failure(s); seed {args.seed}")
        sys.exit(1)
    log("ok")


if __name__ == "__main__":
    main()
