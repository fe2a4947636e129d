#!/usr/bin/env python3
"""Benchmark (not a test): lines/s that `[sources.kubernetes_logs]` tails into the lake on one
core, against the same agent fed lines of the same size over OTLP/HTTP by weir-loadgen.

Both runs use the release build, the agent pinned to core 0 (`taskset -c 0`) and, for OTLP,
the generator on core 1. A run ends when the lake's flushed row count reaches what was written
(tail) or accepted (OTLP): the figure is rows in the lake per second from the agent's start
(tail) or the generator's start (OTLP), so both include decoding, the buffer's fsyncs and the
Parquet flushes.

    cargo build --release -p weir-agent -p weir-integration-tests
    .venv/bin/python integration-tests/load/tail_vs_otlp.py [--lines 1000000] [--seconds 10]
"""

import argparse
import json
import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
WEIR = TARGET / "release" / "weir"
LOADGEN = TARGET / "release" / "weir-loadgen"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def metric(admin, name, label=""):
    with urllib.request.urlopen(admin + "/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def vm_hwm_mib(pid):
    m = re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else 0.0


def start(tmp, extra):
    admin_port, http_port = free_port(), free_port()
    cfg = Path(tmp) / "weir.toml"
    cfg.write_text(
        f"""
data_dir = "{tmp}/data"
[sources.otlp]
grpc_address = ""
http_address = "127.0.0.1:{http_port}"
[sources.syslog]
enabled = false
[admin]
address = "127.0.0.1:{admin_port}"
[buffer]
max_bytes = "8GiB"
[lake]
max_file_age = "2s"
{extra}
"""
    )
    log = open(Path(tmp) / "weir.log", "wb")
    env = dict(os.environ, RUST_LOG="warn")
    proc = subprocess.Popen(["taskset", "-c", "0", str(WEIR), "run", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT, env=env)
    admin = f"http://127.0.0.1:{admin_port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(admin + "/readyz", timeout=1):
                break
        except OSError:
            time.sleep(0.05)
    return proc, admin, f"http://127.0.0.1:{http_port}"


def wait_flushed(admin, n, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metric(admin, "weir_rows_flushed_total", 'signal="logs"') >= n:
            return time.time()
        time.sleep(0.05)
    got = metric(admin, "weir_rows_flushed_total", 'signal="logs"')
    raise SystemExit(f"only {got} of {n} rows flushed")


def cri_file(path, lines, tag, line_bytes):
    ts = "2026-11-30T10:00:00.000000000Z"
    with open(path, "w") as f:
        for i in range(lines):
            msg = f"{tag} GET /api/v1/orders/{i} completed status=200 "
            f.write(f"{ts} stdout F {msg.ljust(line_bytes, 'x')}\n")


def tail_run(lines, files, line_bytes):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pods"
        per = lines // files
        for i in range(files):
            d = root / f"bench_gen-{i}_uid-{i}" / "app"
            d.mkdir(parents=True)
            cri_file(d / "0.log", per, f"f{i}", line_bytes)
        total = per * files
        t0 = time.time()
        proc, admin, _ = start(tmp, f'[sources.kubernetes_logs]\nenabled = true\nroot = "{root}"\nnode_name = "bench"\n')
        try:
            t1 = wait_flushed(admin, total)
            return {"rows": total, "seconds": t1 - t0, "rows_per_sec": total / (t1 - t0), "peak_rss_mib": vm_hwm_mib(proc.pid)}
        finally:
            proc.kill()
            proc.wait()


def otlp_run(seconds, line_bytes):
    with tempfile.TemporaryDirectory() as tmp:
        proc, admin, http = start(tmp, "")
        try:
            t0 = time.time()
            out = subprocess.run(
                ["taskset", "-c", "1", str(LOADGEN), "--url", http, "--connections", "4", "--batch", "1000",
                 "--seconds", str(seconds), "--line-bytes", str(line_bytes)],
                capture_output=True, text=True, check=True,
            )
            report = json.loads(out.stdout.strip().splitlines()[-1])
            accepted = report["requests_ok"] * report["batch"]
            t1 = wait_flushed(admin, accepted)
            return {"rows": accepted, "seconds": t1 - t0, "rows_per_sec": accepted / (t1 - t0),
                    "accepted_per_sec": report["records_per_sec"], "peak_rss_mib": vm_hwm_mib(proc.pid)}
        finally:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--line-bytes", type=int, default=200)
    a = ap.parse_args()
    otlp = otlp_run(a.seconds, a.line_bytes)
    tail = tail_run(a.lines, a.files, a.line_bytes)
    print(json.dumps({"otlp_http": otlp, "kubernetes_logs": tail}, indent=2))
    print(f"tail / OTLP rows per second into the lake: {tail['rows_per_sec'] / otlp['rows_per_sec']:.2f}x")


if __name__ == "__main__":
    main()
