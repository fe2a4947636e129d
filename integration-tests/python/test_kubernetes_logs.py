"""Node logs: `[sources.kubernetes_logs]` and `[sources.file]` tail files written the way the
kubelet, containerd and docker write them, while the real `logrotate` (Debian package) rotates
them and `weir run` is killed; DuckDB then counts every line in the lake.

The writers below produce the kubelet's layout (`<root>/<namespace>_<pod>_<uid>/<container>/
<restart>.log`) and the two formats byte for byte as their runtimes do: CRI lines
(`<RFC3339Nano> <stream> <P|F> <message>`, lines over 16 KiB split into `P` pieces, as
containerd does) and docker's json-file lines (`{"log","stream","time"}`, split at 16 KiB).
"""

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

SPLIT = 16 * 1024  # containerd's and docker's piece size


def rfc3339nano(t=None):
    t = time.time_ns() if t is None else t
    s, ns = divmod(t, 1_000_000_000)
    return datetime.fromtimestamp(s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns:09d}Z"


def cri_lines(msg, stream="stdout"):
    """What containerd writes for one line of output."""
    ts = rfc3339nano()
    pieces = [msg[i : i + SPLIT] for i in range(0, len(msg), SPLIT)] or [""]
    out = []
    for i, p in enumerate(pieces):
        tag = "F" if i == len(pieces) - 1 else "P"
        out.append(f"{ts} {stream} {tag} {p}\n")
    return "".join(out)


def docker_lines(msg, stream="stdout"):
    """What docker's json-file driver writes for one line of output."""
    ts = rfc3339nano()
    pieces = [msg[i : i + SPLIT] for i in range(0, len(msg), SPLIT)] or [""]
    out = []
    for i, p in enumerate(pieces):
        last = i == len(pieces) - 1
        out.append(json.dumps({"log": p + ("\n" if last else ""), "stream": stream, "time": ts}) + "\n")
    return "".join(out)


def pod_log(root, ns, pod, uid, container, restart=0):
    d = Path(root) / f"{ns}_{pod}_{uid}" / container
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{restart}.log"


class Writer(threading.Thread):
    """Appends lines to a log file; reopens it when the path is a new file (the runtime's
    reopen after `create` rotation) and writes with O_APPEND (so after a copytruncate the
    next write lands at the new end)."""

    def __init__(self, path, fmt, n, tag, long_every=0, pause=0.0):
        super().__init__(daemon=True)
        self.path, self.fmt, self.n, self.tag = Path(path), fmt, n, tag
        self.long_every, self.pause = long_every, pause
        self.written = []

    def message(self, i):
        base = f"{self.tag} seq={i:07d} "
        if self.long_every and i % self.long_every == self.long_every - 1:
            return base + "L" * 40_000  # split into three pieces by the runtime
        return base + "x" * 150

    def run(self):
        # One write(2) per line, as the runtimes do (a line is never half in a file).
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        fd = os.open(self.path, flags, 0o644)
        ino = os.fstat(fd).st_ino
        for i in range(self.n):
            try:
                if os.stat(self.path).st_ino != ino:
                    os.close(fd)
                    fd = os.open(self.path, flags, 0o644)
                    ino = os.fstat(fd).st_ino
            except FileNotFoundError:
                pass
            msg = self.message(i)
            text = cri_lines(msg) if self.fmt == "cri" else docker_lines(msg)
            for line in text.splitlines(keepends=True):
                os.write(fd, line.encode())
            self.written.append(msg)
            if self.pause and i % 50 == 0:
                time.sleep(self.pause)
        os.close(fd)


def k8s_toml(root, extra=""):
    return f"""
[sources.kubernetes_logs]
enabled = true
root = "{root}"
node_name = "node-a"
{extra}
[sources.kubernetes_logs.tail]
poll_interval = "50ms"
rescan_interval = "100ms"
rotate_wait = "2s"
"""


def lake_bodies(w, where=""):
    con = w.duck()
    return con.sql(f"SELECT body, count(*) FROM lake {where} GROUP BY body").fetchall()


def wait_lines(w, n, timeout=120):
    return w.wait_rows("logs", n, timeout=timeout)


def logrotate(conf, state):
    r = subprocess.run(["logrotate", "-f", "-s", str(state), str(conf)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_cri_and_docker_lines_with_logrotate_create_and_copytruncate(weir_factory, tmp_path):
    if not shutil.which("logrotate"):
        pytest.fail("logrotate is not installed (scripts/test.sh installs it)")
    root = tmp_path / "pods"
    cri = pod_log(root, "shop", "web-7d9f8c-x2x4q", "0a1b2c3d-1111-2222-3333-444455556666", "web")
    docker = pod_log(root, "kube-system", "dns-5c6d-abcde", "9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff", "dns", restart=2)
    cri.touch()
    docker.touch()
    w = weir_factory(k8s_toml(root))
    # 3000 CRI lines (every 100th one 40 KB, merged from three P/F pieces) rotated with
    # `create`; 3000 docker lines rotated with `copytruncate`, both while being written.
    wc = Writer(cri, "cri", 5000, "web", long_every=100, pause=0.02)
    wd = Writer(docker, "docker", 5000, "dns", long_every=100, pause=0.02)
    state = tmp_path / "logrotate.state"
    create_conf = tmp_path / "create.conf"
    create_conf.write_text(f"{cri} {{\n  rotate 100\n  create\n  missingok\n  nocompress\n}}\n")
    copy_conf = tmp_path / "copy.conf"
    copy_conf.write_text(f"{docker} {{\n  rotate 100\n  copytruncate\n  missingok\n  nocompress\n}}\n")
    wc.start()
    wd.start()
    rotations = 0
    while wc.is_alive() or wd.is_alive():
        time.sleep(0.3)
        logrotate(create_conf, state)
        logrotate(copy_conf, state)
        rotations += 1
    wc.join()
    wd.join()
    # Lines after the last rotation.
    wd2 = Writer(docker, "docker", 100, "dns2")
    wd2.run()
    assert rotations >= 3, "logrotate ran while the lines were written"
    assert len(list(cri.parent.glob("0.log.*"))) >= 2

    # create mode: every line exactly once.
    wait_lines(w, len(wc.written))
    deadline = time.time() + 60
    while True:
        web = dict(lake_bodies(w, "WHERE body LIKE 'web %'"))
        if len(web) >= len(wc.written) or time.time() > deadline:
            break
        time.sleep(0.5)
    assert all(c == 1 for c in web.values()), [b[:40] for b, c in web.items() if c > 1][:5]
    assert set(web) == set(wc.written), f"{len(set(wc.written) - set(web))} CRI lines missing"

    # copytruncate: lines written after logrotate copied the file and before it truncated it
    # are in no file at all (logrotate's documented window), and lines the tailer had not read
    # yet when the file was truncated are only in the copy. Every other line: exactly once,
    # and every line of the live file after the last truncation is there (so the truncation
    # was seen and the file read again from 0).
    deadline = time.time() + 60
    while True:
        dns = dict(lake_bodies(w, "WHERE body LIKE 'dns%' OR body LIKE 'LLL%'"))
        complete = [m for m in wd2.written[-20:] if m in dns]
        if len(complete) == 20 or time.time() > deadline:
            break
        time.sleep(0.5)
    assert all(c == 1 for c in dns.values()), [b[:40] for b, c in dns.items() if c > 1][:5]
    written = set(wd.written) | set(wd2.written)
    # A long line whose first pieces were truncated away arrives as its remaining pieces.
    assert all(b in written or set(b) == {"L"} for b in dns), "nothing but written lines and fragments of them"
    live = [json.loads(line)["log"] for line in docker.read_text().splitlines()]
    live_short = [m[:-1] for m in live if m.endswith("\n") and len(m) < 1000]
    assert live_short, "the live file has lines after the last truncation"
    absent = [m[:20] for m in live_short if m not in dns]
    assert not absent, f"{len(absent)} of {len(live_short)} lines of the live file not in the lake: {absent[:5]}"
    # The tailer reads in order, so what it loses at a truncation is the end of what it had
    # not read yet: of each copy logrotate made, the lines in the lake are a prefix.
    copies = sorted(docker.parent.glob(docker.name + ".*"), key=lambda p: int(p.suffix[1:]), reverse=True)
    assert len(copies) >= 3
    for copy in copies:
        msgs = [r["log"][:-1] for r in map(json.loads, copy.read_text().splitlines()) if r["log"].endswith("\n") and len(r["log"]) < 1000]
        seen = [m in dns for m in msgs]
        first_gap = seen.index(False) if False in seen else len(seen)
        assert all(not x for x in seen[first_gap:]), f"{copy.name}: lines lost in the middle, not only at its end"
    missing = written - set(dns)
    print(f"copytruncate: {len(missing)} of {len(written)} lines fell in logrotate's copy-then-truncate window")

    # Metadata from the path, time from the line, long lines merged whole.
    con = w.duck()
    rows = con.sql(
        """SELECT map_extract(resource_attributes, 'k8s.namespace.name')[1],
                  map_extract(resource_attributes, 'k8s.pod.name')[1],
                  map_extract(resource_attributes, 'k8s.pod.uid')[1],
                  map_extract(resource_attributes, 'k8s.container.name')[1],
                  map_extract(resource_attributes, 'k8s.container.restart_count')[1],
                  map_extract(resource_attributes, 'k8s.node.name')[1],
                  map_extract(attributes, 'log.iostream')[1],
                  service_name, count(*), max(length(body)),
                  bool_and(timestamp < observed_timestamp)
           FROM lake GROUP BY ALL ORDER BY 1"""
    ).fetchall()
    assert rows[0][:8] == ("kube-system", "dns-5c6d-abcde", "9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff", "dns", "2", "node-a", "stdout", "dns")
    assert rows[1][:8] == ("shop", "web-7d9f8c-x2x4q", "0a1b2c3d-1111-2222-3333-444455556666", "web", "0", "node-a", "stdout", "web")
    for r in rows:
        assert r[9] == len(wc.message(99)), "40 KB lines arrive merged from their pieces"
        assert r[10], "the time is the line's (written before Weir observed it)"
    assert len(rows) == 2
    paths = {p for (p,) in con.sql("SELECT DISTINCT map_extract(attributes, 'log.file.path')[1] FROM lake").fetchall()}
    assert str(cri) in paths and str(docker) in paths
    health = w.get_json("/healthz")
    assert health["tail"]["kubernetes_logs"]["files"] >= 2
    m = w.metrics()
    assert 'weir_tail_rotations_total{source="kubernetes_logs"}' in m
    assert 'weir_tail_truncations_total{source="kubernetes_logs"}' in m


def test_long_lines_are_cut_at_the_cap_with_a_marker(weir_factory, tmp_path):
    root = tmp_path / "pods"
    log = pod_log(root, "ns", "big-0", "uid-big", "c")
    with open(log, "w") as f:
        f.write(cri_lines("A" * 100_000))  # seven pieces
        f.write(cri_lines("after the big one"))
        f.write('{"not": "cri"}\n')
    w = weir_factory(k8s_toml(root).replace("[sources.kubernetes_logs.tail]", '[sources.kubernetes_logs.tail]\nmax_line_bytes = "32KiB"'))
    wait_lines(w, 3)
    con = w.duck()
    got = con.sql(
        "SELECT length(body), map_extract(attributes, 'log.record.truncated')[1], map_extract(attributes, 'log.parse_error')[1] FROM lake ORDER BY timestamp, length(body) DESC"
    ).fetchall()
    assert (32 * 1024, "true", None) in got
    assert (len("after the big one"), None, None) in got
    assert (len('{"not": "cri"}'), None, "not a CRI log line") in got
    assert len(got) == 3


def test_every_line_once_across_ten_sigkills(weir_factory, tmp_path):
    """200,000 lines in four containers' files while `weir run` is killed with SIGKILL ten
    times at random moments and restarted: every line is in the lake exactly once."""
    root = tmp_path / "pods"
    paths = [pod_log(root, "load", f"gen-{i}", f"uid-{i}", "app") for i in range(4)]
    for p in paths:
        p.touch()
    w = weir_factory(k8s_toml(root))
    # Paced so that the writing spans the kills; every 500th line is 40 KB (three CRI pieces).
    writers = [Writer(p, "cri", 50_000, f"gen{i}", long_every=500, pause=0.012) for i, p in enumerate(paths)]
    for wr in writers:
        wr.start()
    conf = tmp_path / "rotate.conf"
    conf.write_text(f"{paths[0]} {{\n  rotate 100\n  create\n  missingok\n  nocompress\n}}\n")
    rng = random.Random(7)
    for i in range(10):
        time.sleep(rng.uniform(0.2, 1.5))
        w.kill()
        if i % 2 == 0:
            # Rotated while the agent is down: after the restart the rotated file is found
            # beside its old path by its inode and read to its end.
            logrotate(conf, tmp_path / "logrotate.state")
        w.start()
    for wr in writers:
        wr.join()
    total = sum(len(wr.written) for wr in writers)
    assert total == 200_000
    assert len(list(paths[0].parent.glob("0.log.*"))) >= 3
    wait_lines(w, total, timeout=300)
    con = w.duck()
    n, distinct, dup = con.sql(
        "SELECT count(*), count(DISTINCT body), count(*) - count(DISTINCT body) FROM lake"
    ).fetchone()
    assert dup == 0, f"{dup} lines duplicated"
    assert n == total, f"{total - n} lines missing"
    for wr in writers:
        (k,) = con.sql(f"SELECT count(*) FROM lake WHERE body LIKE '{wr.tag} %'").fetchone()
        assert k == len(wr.written)


def vm_hwm_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_two_thousand_files_at_once(weir_factory, tmp_path):
    """2,000 container log files appended to at once (more than max_open_files = 1024): every
    line arrives, and the agent's peak RSS is reported."""
    root = tmp_path / "pods"
    files = [pod_log(root, f"ns{i % 20}", f"pod-{i}", f"uid-{i}", "c") for i in range(2000)]
    w = weir_factory(k8s_toml(root))
    idle = vm_hwm_kib(w.proc.pid)
    per_file = 25
    for round_ in range(per_file):
        for i, p in enumerate(files):
            with open(p, "a") as f:
                f.write(cri_lines(f"file={i:04d} line={round_:03d} " + "y" * 150))
    total = len(files) * per_file
    wait_lines(w, total, timeout=300)
    con = w.duck()
    n, distinct, pods = con.sql(
        "SELECT count(*), count(DISTINCT body), count(DISTINCT map_extract(resource_attributes, 'k8s.pod.name')[1]) FROM lake"
    ).fetchone()
    assert (n, distinct, pods) == (total, total, 2000)
    hwm = vm_hwm_kib(w.proc.pid)
    print(f"2000 files, {total} lines: peak RSS {hwm / 1024:.1f} MiB ({hwm / idle:.2f}x the idle agent's {idle / 1024:.1f} MiB)")
    assert w.get_json("/healthz")["tail"]["kubernetes_logs"]["files"] == 2000


def test_file_source_multiline_and_timestamps(weir_factory, tmp_path):
    logs = tmp_path / "host"
    logs.mkdir()
    app = logs / "app.log"
    app.write_text(
        "2024-05-01 10:00:00.250 ERROR boom\n"
        "  at com.example.A(A.java:1)\n"
        "  at com.example.B(B.java:2)\n"
        "2024-05-01T10:00:01Z INFO fine\n"
    )
    (logs / "skip.log").write_text("excluded\n")
    (logs / "old.log.1.gz").write_bytes(b"\x1f\x8b not read")
    w = weir_factory(
        f"""
[sources.file]
enabled = true
include = ["{logs}/*.log", "{logs}/*.gz"]
exclude = ["{logs}/skip.log"]
multiline_start = '^\\d{{4}}-\\d{{2}}-\\d{{2}}'
parse_timestamp = true
service_name = "billing"
[sources.file.tail]
poll_interval = "50ms"
merge_timeout = "300ms"
"""
    )
    wait_lines(w, 2)
    con = w.duck()
    got = con.sql(
        "SELECT body, epoch_ns(timestamp), service_name, map_extract(attributes, 'log.file.name')[1] FROM lake ORDER BY timestamp"
    ).fetchall()
    assert got == [
        (
            "2024-05-01 10:00:00.250 ERROR boom\n  at com.example.A(A.java:1)\n  at com.example.B(B.java:2)",
            1714557600250000000,
            "billing",
            "app.log",
        ),
        ("2024-05-01T10:00:01Z INFO fine", 1714557601000000000, "billing", "app.log"),
    ]


def test_bad_file_source_config_names_the_key(tmp_path):
    from conftest import WEIR_BIN

    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        f"""
data_dir = "{tmp_path}/data"
[sources.file]
enabled = true
include = ["relative/*.log"]
multiline_start = "(unclosed"
[sources.kubernetes_logs]
enabled = true
root = "/var/log/pods/*"
"""
    )
    r = subprocess.run([WEIR_BIN, "validate", "--config", str(cfg)], capture_output=True, text=True)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "sources.file.include" in out and "absolute" in out
    assert "sources.file.multiline_start" in out
    assert "sources.kubernetes_logs.root" in out


def test_inotify_wakes_the_reader_without_polling(weir_factory, tmp_path):
    """With polling and rescans an hour apart, a file created after the start and the lines
    appended to it still arrive: inotify on the pattern's directory and the file's directory
    wakes the reader."""
    logs = tmp_path / "host"
    logs.mkdir()
    w = weir_factory(
        f"""
[sources.file]
enabled = true
include = ["{logs}/*.log"]
[sources.file.tail]
poll_interval = "1h"
rescan_interval = "1h"
"""
    )
    time.sleep(0.5)  # the first (empty) scan is done
    with open(logs / "new.log", "a") as f:
        f.write("first\n")
    wait_lines(w, 1)
    with open(logs / "new.log", "a") as f:
        f.write("second\n")
    wait_lines(w, 2)
    assert sorted(b for (b, _) in lake_bodies(w)) == ["first", "second"]
