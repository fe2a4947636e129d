use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, RecordBatch};

use super::*;

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A fake host root: every file the collectors read, with known values; the filesystem
/// collector measures the fixture's own directory as the mount point `/`.
fn fixture() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    write(
        r,
        "proc/stat",
        "cpu  30 0 0 0\ncpu0 100 200 300 400 500 600 700 800 0 0\ncpu1 10 20 30 40\nbtime 1700000000\nprocesses 4242\nprocs_running 5\nprocs_blocked 2\n",
    );
    write(
        r,
        "proc/meminfo",
        "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 200 kB\nSReclaimable: 30 kB\nSUnreclaim: 20 kB\n",
    );
    write(r, "proc/loadavg", "0.50 1.25 2.00 1/100 999\n");
    write(r, "proc/diskstats", " 8 0 sdz 10 1 8 1500 20 2 16 2500 3 4000 0\n");
    write(
        r,
        "proc/net/dev",
        "Inter-| x\n face |y\n  fake0: 1000 10 1 2 0 0 0 0 2000 20 3 4 0 0 0 0\n",
    );
    write(
        r,
        "proc/self/mounts",
        "/dev/fake / ext4 ro,relatime 0 0\nproc /proc proc rw 0 0\n",
    );
    write(r, "proc/filesystems", "nodev\tproc\n\text4\n");
    write(r, "etc/hostname", "fixture-host\n");
    d
}

fn scraper(root: &Path) -> Scraper {
    Scraper {
        root: root.to_path_buf(),
        collectors: Collector::ALL.to_vec(),
        memory_utilization: true,
        host_name: host_name(root),
        user_hz: 100,
    }
}

type Key = (String, Vec<(String, String)>);

/// A row's value, int value, unit, type and start time.
type Row = (f64, Option<i64>, String, String, Option<i64>);

/// Rows by metric name and sorted attributes → (value, int value, unit, kind, start).
fn rows(b: &RecordBatch) -> HashMap<Key, Row> {
    let col = |n: &str| b.column_by_name(n).unwrap().clone();
    let name = col("metric_name");
    let name = name.as_string::<i32>();
    let unit = col("unit");
    let unit = unit.as_string::<i32>();
    let kind = col("metric_type");
    let kind = kind.as_string::<i32>();
    let value = col("value");
    let value = value.as_primitive::<Float64Type>();
    let int = col("int_value");
    let int = int.as_primitive::<Int64Type>();
    let start = col("start_timestamp");
    let start = start.as_primitive::<arrow_array::types::TimestampNanosecondType>();
    let attrs = col("attributes");
    let attrs = attrs.as_map();
    let res = col("resource_attributes");
    let res = res.as_map();
    let mut out = HashMap::new();
    for i in 0..b.num_rows() {
        let a = attrs.value(i);
        let keys = a.column(0).as_string::<i32>();
        let vals = a.column(1).as_string::<i32>();
        let mut kv: Vec<(String, String)> = (0..keys.len())
            .map(|j| (keys.value(j).to_string(), vals.value(j).to_string()))
            .collect();
        kv.sort();
        let r = res.value(i);
        assert_eq!(r.column(0).as_string::<i32>().value(0), "host.name");
        assert_eq!(r.column(1).as_string::<i32>().value(0), "fixture-host");
        out.insert(
            (name.value(i).to_string(), kv),
            (
                value.value(i),
                int.is_valid(i).then(|| int.value(i)),
                unit.value(i).to_string(),
                kind.value(i).to_string(),
                start.is_valid(i).then(|| start.value(i)),
            ),
        );
    }
    out
}

fn key(name: &str, attrs: &[(&str, &str)]) -> Key {
    let mut kv: Vec<(String, String)> = attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    kv.sort();
    (name.to_string(), kv)
}

#[test]
fn a_fixture_root_is_collected_with_collector_names() {
    let d = fixture();
    let s = scraper(d.path());
    let mut b = MetricsBuilder::default();
    let failed = s.collect(7, &mut b);
    assert!(failed.is_empty(), "{failed:?}");
    let batch = b.finish().unwrap();
    let r = rows(&batch);
    let boot = Some(1_700_000_000 * 1_000_000_000);

    let cpu = &r[&key("system.cpu.time", &[("cpu", "cpu0"), ("state", "wait")])];
    assert_eq!((cpu.0, cpu.2.as_str(), cpu.3.as_str(), cpu.4), (5.0, "s", "sum", boot));
    assert_eq!(r[&key("system.cpu.time", &[("cpu", "cpu1"), ("state", "idle")])].0, 0.4);
    // The aggregate line is not a CPU; 2 CPUs × 8 states.
    assert_eq!(r.keys().filter(|k| k.0 == "system.cpu.time").count(), 16);

    let mem = |state| r[&key("system.memory.usage", &[("state", state)])].1.unwrap();
    assert_eq!(mem("cached"), 230 * 1024);
    assert_eq!(mem("used"), (1000 - 100 - 50 - 230) * 1024);
    assert_eq!(mem("used") + mem("free") + mem("buffered") + mem("cached"), 1000 * 1024);
    assert_eq!(mem("slab_unreclaimable"), 20 * 1024);
    let u = &r[&key("system.memory.utilization", &[("state", "free")])];
    assert_eq!((u.0, u.2.as_str(), u.3.as_str(), u.4), (0.1, "1", "gauge", None));

    let l = &r[&key("system.cpu.load_average.5m", &[])];
    assert_eq!((l.0, l.2.as_str(), l.3.as_str()), (1.25, "{thread}", "gauge"));

    let io = &r[&key("system.disk.io", &[("device", "sdz"), ("direction", "write")])];
    assert_eq!((io.1, io.2.as_str()), (Some(16 * 512), "By"));
    assert_eq!(
        r[&key("system.disk.operation_time", &[("device", "sdz"), ("direction", "read")])].0,
        1.5
    );
    assert_eq!(r[&key("system.disk.io_time", &[("device", "sdz")])].0, 4.0);

    let net = |m, dir| r[&key(m, &[("device", "fake0"), ("direction", dir)])].1.unwrap();
    assert_eq!(net("system.network.io", "receive"), 1000);
    assert_eq!(net("system.network.packets", "transmit"), 20);
    assert_eq!(net("system.network.errors", "transmit"), 3);
    assert_eq!(net("system.network.dropped", "receive"), 2);

    let p = &r[&key("system.processes.count", &[("status", "running")])];
    assert_eq!((p.1, p.3.as_str()), (Some(5), "sum"));
    assert_eq!(r[&key("system.processes.created", &[])].1, Some(4242));

    // The fixture's `/` (ext4) is measured at the root; `/proc` (nodev) is skipped.
    let fs: Vec<&Key> = r.keys().filter(|k| k.0 == "system.filesystem.usage").collect();
    assert_eq!(fs.len(), 3, "{fs:?}");
    let used = key(
        "system.filesystem.usage",
        &[
            ("device", "/dev/fake"),
            ("mode", "ro"),
            ("mountpoint", "/"),
            ("type", "ext4"),
            ("state", "used"),
        ],
    );
    assert!(r[&used].1.unwrap() > 0);
}

#[test]
fn a_broken_file_fails_its_collector_only() {
    let d = fixture();
    write(d.path(), "proc/meminfo", "MemFree: 1 kB\n");
    write(d.path(), "proc/diskstats", " 8 0 sdz 10 1\n");
    std::fs::remove_file(d.path().join("proc/loadavg")).unwrap();
    let s = scraper(d.path());
    let mut b = MetricsBuilder::default();
    let failed = s.collect(7, &mut b);
    let names: Vec<&str> = failed.iter().map(|(c, _)| c.name()).collect();
    assert_eq!(names, ["memory", "load", "disk"]);
    assert!(failed[0].1.to_string().contains("no MemTotal"));
    assert!(failed[1].1.to_string().contains("proc/loadavg"));
    let r = rows(&b.finish().unwrap());
    assert!(r.keys().any(|k| k.0 == "system.cpu.time"));
    assert!(r.keys().any(|k| k.0 == "system.network.io"));
    assert!(!r.keys().any(|k| k.0.starts_with("system.memory")));

    // Without /proc/stat, CPU and processes fail and sums have no start time.
    std::fs::remove_file(d.path().join("proc/stat")).unwrap();
    let mut b = MetricsBuilder::default();
    let failed = s.collect(7, &mut b);
    let names: Vec<&str> = failed.iter().map(|(c, _)| c.name()).collect();
    assert_eq!(names, ["cpu", "memory", "load", "disk", "processes"]);
    let r = rows(&b.finish().unwrap());
    assert_eq!(r[&key("system.network.io", &[("device", "fake0"), ("direction", "receive")])].4, None);
}

#[test]
fn host_name_falls_back_to_the_system() {
    let d = tempfile::tempdir().unwrap();
    assert!(!host_name(d.path()).is_empty());
    write(d.path(), "etc/hostname", "  \n");
    assert!(!host_name(d.path()).is_empty());
}
