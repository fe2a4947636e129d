"""Host metrics: `[sources.host_metrics]` reads this machine's /proc every second; the test
reads the same files itself and checks that what DuckDB finds in the lake agrees within
tolerance. A second run points `root` at a fake host tree built here, whose values are known
exactly, to prove every file is read under the root.
"""

import os
import socket
import time

import pytest

HZ = os.sysconf("SC_CLK_TCK")


def read(path):
    with open(path) as f:
        return f.read()


def meminfo():
    out = {}
    for line in read("/proc/meminfo").splitlines():
        k, v = line.split(":", 1)
        out[k] = int(v.split()[0]) * 1024
    return out


def stat():
    cpus, other = {}, {}
    for line in read("/proc/stat").splitlines():
        f = line.split()
        if f and f[0].startswith("cpu") and f[0] != "cpu":
            cpus[f[0]] = [int(x) / HZ for x in f[1:9]]
        elif len(f) == 2:
            other[f[0]] = int(f[1])
    return cpus, other


def net_dev():
    out = {}
    for line in read("/proc/net/dev").splitlines()[2:]:
        name, rest = line.split(":", 1)
        f = [int(x) for x in rest.split()]
        out[name.strip()] = f
    return out


STATES = ["user", "nice", "system", "idle", "wait", "interrupt", "softirq", "steal"]


def wait_collections(w, tenant, n, timeout=40):
    """Waits until the lake holds `n` collections (distinct timestamps of system.cpu.time)."""
    deadline = time.time() + timeout
    got = 0
    while time.time() < deadline:
        if w.files(tenant, "metrics"):
            got = w.duck(tenant, "metrics").execute(
                "SELECT count(DISTINCT timestamp) FROM lake WHERE metric_name = 'system.cpu.time'").fetchone()[0]
            if got >= n:
                return
        time.sleep(0.3)
    raise AssertionError(f"only {got} collections in the lake:\n" + w.log.read_text()[-4000:])


def attr(k):
    return f"map_extract(attributes, '{k}')[1]"


def test_values_agree_with_proc(weir_factory):
    w = weir_factory('[sources.host_metrics]\nenabled = true\ninterval = "1s"\ntenant = "host"\n')
    wait_collections(w, "host", 3)
    w.stop()
    con = w.duck("host", "metrics")
    last_ns = con.execute("SELECT epoch_ns(max(timestamp)) FROM lake WHERE metric_name = 'system.cpu.time'").fetchone()[0]
    age = time.time() - last_ns / 1e9
    cpus, other = stat()

    # Every metric carries host.name and the Collector's types and units.
    hosts = {r[0] for r in con.execute("SELECT DISTINCT map_extract(resource_attributes, 'host.name')[1] FROM lake").fetchall()}
    expected_host = read("/etc/hostname").strip() if os.path.exists("/etc/hostname") else socket.gethostname()
    assert hosts == {expected_host or socket.gethostname()}
    kinds = dict(((r[0], r[1]), r[2:]) for r in con.execute(
        "SELECT DISTINCT metric_name, metric_type, unit, is_monotonic, aggregation_temporality FROM lake").fetchall())
    assert kinds[("system.cpu.time", "sum")] == ("s", True, 2)
    assert kinds[("system.memory.usage", "sum")] == ("By", False, 2)
    assert kinds[("system.cpu.load_average.1m", "gauge")] == ("{thread}", None, None)
    assert kinds[("system.network.io", "sum")] == ("By", True, 2)
    assert kinds[("system.processes.count", "sum")] == ("{processes}", False, 2)
    assert kinds[("system.disk.io", "sum")] == ("By", True, 2)
    assert kinds[("system.filesystem.usage", "sum")] == ("By", False, 2)

    # CPU: every CPU and state; cumulative from boot; at most the time since the point later
    # than /proc/stat now (plus a tick of slack), and never ahead of it.
    rows = con.execute(f"""
        SELECT {attr('cpu')}, {attr('state')}, value, epoch_ns(start_timestamp) FROM lake
        WHERE metric_name = 'system.cpu.time' AND epoch_ns(timestamp) = {last_ns}""").fetchall()
    assert {r[0] for r in rows} == set(cpus)
    assert len(rows) == 8 * len(cpus)
    assert {r[3] for r in rows} == {other["btime"] * 1_000_000_000}
    for cpu, state, value, _ in rows:
        now = cpus[cpu][STATES.index(state)]
        assert value <= now + 0.02, (cpu, state, value, now)
        assert now - value <= age + 2.0, (cpu, state, value, now, age)

    # Memory: used + free + buffered + cached is MemTotal, within 1%.
    m = meminfo()
    states = dict(con.execute(f"""
        SELECT {attr('state')}, int_value FROM lake
        WHERE metric_name = 'system.memory.usage' AND epoch_ns(timestamp) = {last_ns}""").fetchall())
    assert set(states) == {"used", "free", "buffered", "cached", "slab_reclaimable", "slab_unreclaimable"}
    total = states["used"] + states["free"] + states["buffered"] + states["cached"]
    assert abs(total - m["MemTotal"]) <= 0.01 * m["MemTotal"], (total, m["MemTotal"])
    assert abs(states["slab_unreclaimable"] - m["SUnreclaim"]) <= 0.05 * m["MemTotal"]

    # Load: close to /proc/loadavg now.
    load = [float(x) for x in read("/proc/loadavg").split()[:3]]
    for name, now in zip(["1m", "5m", "15m"], load):
        v = con.execute(f"""SELECT value FROM lake WHERE metric_name = 'system.cpu.load_average.{name}'
                            AND epoch_ns(timestamp) = {last_ns}""").fetchone()[0]
        assert abs(v - now) <= max(1.5, 0.5 * now), (name, v, now)

    # Network: lo's bytes never go down, and are at most /proc/net/dev's now.
    lo = [r[0] for r in con.execute(f"""
        SELECT int_value FROM lake WHERE metric_name = 'system.network.io'
          AND {attr('device')} = 'lo' AND {attr('direction')} = 'receive' ORDER BY timestamp""").fetchall()]
    assert len(lo) >= 3
    assert lo == sorted(lo)
    dev = net_dev()
    assert lo[-1] <= dev["lo"][0]
    assert {r[0] for r in con.execute(f"SELECT DISTINCT {attr('device')} FROM lake WHERE metric_name = 'system.network.packets'").fetchall()} == set(dev)

    # Processes: created since boot, at most what /proc/stat says now.
    created = con.execute(f"SELECT int_value FROM lake WHERE metric_name = 'system.processes.created' AND epoch_ns(timestamp) = {last_ns}").fetchone()[0]
    assert 0 < created <= other["processes"]

    # Disk: every device of /proc/diskstats, bytes read at most the sectors read now × 512.
    disks = {l.split()[2]: int(l.split()[5]) * 512 for l in read("/proc/diskstats").splitlines() if l.strip()}
    got = dict(con.execute(f"""SELECT {attr('device')}, int_value FROM lake WHERE metric_name = 'system.disk.io'
        AND {attr('direction')} = 'read' AND epoch_ns(timestamp) = {last_ns}""").fetchall())
    assert set(got) == set(disks)
    assert all(got[d] <= disks[d] for d in disks)

    # Filesystems: the real (not nodev) mounts; used + free + reserved is the size statvfs gives.
    nodev = {l.split()[1] for l in read("/proc/filesystems").splitlines() if l.startswith("nodev")}
    try:
        mounts = read("/proc/1/mounts")
    except OSError:
        mounts = read("/proc/self/mounts")
    real = {l.split()[1].replace("\\040", " "): l.split()[2] for l in mounts.splitlines()
            if l.split()[2] not in nodev and l.split()[0] != "none"}
    fs = con.execute(f"""
        SELECT {attr('mountpoint')}, {attr('type')}, sum(int_value) FROM lake
        WHERE metric_name = 'system.filesystem.usage' AND epoch_ns(timestamp) = {last_ns}
        GROUP BY ALL""").fetchall()
    measured = {mp: (ty, size) for mp, ty, size in fs}
    assert real, "this machine has no real filesystem mounted"
    for mp, ty in real.items():
        if not os.access(mp, os.R_OK):
            continue
        s = os.statvfs(mp)
        assert measured[mp] == (ty, s.f_blocks * s.f_frsize), (mp, measured.get(mp))


def fake_root(d):
    files = {
        "proc/stat": "cpu  1 1 1 1\ncpu0 100 0 50 1000 0 0 0 0 0 0\ncpu7 1234 5 678 91011 12 0 3 4 0 0\n"
                     "btime 1600000000\nprocesses 777\nprocs_running 9\nprocs_blocked 4\n",
        "proc/meminfo": "MemTotal: 123456 kB\nMemFree: 23456 kB\nBuffers: 1000 kB\nCached: 9000 kB\n"
                        "SReclaimable: 1000 kB\nSUnreclaim: 500 kB\n",
        "proc/loadavg": "7.25 6.50 5.75 2/300 4000\n",
        "proc/diskstats": " 259 0 fakedisk0 11 0 22 0 33 0 44 0 0 5000 0\n",
        "proc/net/dev": "Inter-| header\n face |header\n  fakenet0: 5555 55 0 1 0 0 0 0 6666 66 2 0 0 0 0 0\n",
        "proc/self/mounts": "/dev/fakeroot / ext4 rw,relatime 0 0\nsysfs /sys sysfs rw 0 0\n",
        "proc/filesystems": "nodev\tsysfs\n\text4\n",
        "etc/hostname": "fixture-node\n",
    }
    for rel, text in files.items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_root_is_honoured(weir_factory, tmp_path):
    root = tmp_path / "host"
    fake_root(root)
    w = weir_factory(f'[sources.host_metrics]\nenabled = true\ninterval = "1s"\nroot = "{root}"\n'
                     'memory_utilization = true\ntenant = "fake"\n')
    wait_collections(w, "fake", 2)
    w.stop()
    con = w.duck("fake", "metrics")
    assert con.execute("SELECT DISTINCT map_extract(resource_attributes, 'host.name')[1] FROM lake").fetchall() == [("fixture-node",)]
    cpu = dict(((r[0], r[1]), r[2]) for r in con.execute(
        f"SELECT DISTINCT {attr('cpu')}, {attr('state')}, value FROM lake WHERE metric_name = 'system.cpu.time'").fetchall())
    assert len(cpu) == 16
    assert cpu[("cpu7", "user")] == pytest.approx(1234 / HZ)
    assert cpu[("cpu7", "steal")] == pytest.approx(4 / HZ)
    assert cpu[("cpu0", "idle")] == pytest.approx(1000 / HZ)
    mem = dict(con.execute(f"SELECT DISTINCT {attr('state')}, int_value FROM lake WHERE metric_name = 'system.memory.usage'").fetchall())
    assert mem == {"used": (123456 - 23456 - 1000 - 10000) * 1024, "free": 23456 * 1024, "buffered": 1000 * 1024,
                   "cached": 10000 * 1024, "slab_reclaimable": 1000 * 1024, "slab_unreclaimable": 500 * 1024}
    util = dict(con.execute(f"SELECT DISTINCT {attr('state')}, value FROM lake WHERE metric_name = 'system.memory.utilization'").fetchall())
    assert util["free"] == pytest.approx(23456 / 123456)
    assert con.execute("SELECT DISTINCT value FROM lake WHERE metric_name = 'system.cpu.load_average.15m'").fetchall() == [(5.75,)]
    nets = con.execute(f"SELECT DISTINCT {attr('device')} FROM lake WHERE metric_name LIKE 'system.network.%'").fetchall()
    assert nets == [("fakenet0",)]
    assert con.execute(f"""SELECT DISTINCT int_value FROM lake WHERE metric_name = 'system.network.io'
                           AND {attr('direction')} = 'transmit'""").fetchall() == [(6666,)]
    disk = dict(con.execute(f"""SELECT DISTINCT {attr('direction')}, int_value FROM lake
                                WHERE metric_name = 'system.disk.io' AND {attr('device')} = 'fakedisk0'""").fetchall())
    assert disk == {"read": 22 * 512, "write": 44 * 512}
    assert con.execute("SELECT DISTINCT value FROM lake WHERE metric_name = 'system.disk.io_time'").fetchall() == [(5.0,)]
    procs = dict(con.execute(f"SELECT DISTINCT {attr('status')}, int_value FROM lake WHERE metric_name = 'system.processes.count'").fetchall())
    assert procs == {"running": 9, "blocked": 4}
    assert con.execute("SELECT DISTINCT epoch(start_timestamp) FROM lake WHERE metric_name = 'system.processes.created'").fetchall() == [(1600000000,)]
    # The fake `/` is the fixture directory itself, measured with statvfs; sysfs is skipped.
    fs = con.execute(f"""SELECT DISTINCT {attr('device')}, {attr('mountpoint')}, {attr('type')}, {attr('mode')}
                         FROM lake WHERE metric_name = 'system.filesystem.usage'""").fetchall()
    assert fs == [("/dev/fakeroot", "/", "ext4", "rw")]
    s = os.statvfs(root)
    sizes = {r[0] for r in con.execute(f"""SELECT sum(int_value) FROM lake WHERE metric_name = 'system.filesystem.usage'
                                          GROUP BY timestamp""").fetchall()}
    assert sizes == {s.f_blocks * s.f_frsize}


def test_a_missing_root_keeps_the_agent_running(weir_factory, tmp_path):
    root = tmp_path / "later"
    w = weir_factory(f'[sources.host_metrics]\nenabled = true\ninterval = "200ms"\nroot = "{root}"\ntenant = "later"\n')
    time.sleep(1)
    assert w.proc.poll() is None
    assert "host metrics collector failed" in w.log.read_text()
    # The files appear: collections start.
    fake_root(root)
    wait_collections(w, "later", 1)
    assert "host metrics collector recovered" in w.log.read_text()
