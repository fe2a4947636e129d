//! One collection: the `/proc` files under the root → points in the metrics lake schema,
//! named, typed and attributed as the OpenTelemetry Collector's hostmetrics receiver does
//! (docs/protocols.md has the table). Cumulative sums start at the boot time (`btime`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use weir_pipelines::metricrows::{MetricFields, MetricsBuilder, Number, Point};

use super::config::Collector;
use super::procfs::{self, Meminfo, ParseError, Stat, CPU_STATES};

/// Scope name of every point.
pub const SCOPE: &str = "host_metrics";

/// OTLP `AGGREGATION_TEMPORALITY_CUMULATIVE`.
const CUMULATIVE: i32 = 2;

/// Bytes of a `/proc/diskstats` sector (always 512, whatever the device's block size).
const SECTOR: u64 = 512;

/// Virtual filesystems skipped when `/proc/filesystems` cannot be read.
const PSEUDO: &[&str] = &[
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
    "devtmpfs", "fusectl", "hugetlbfs", "mqueue", "nsfs", "overlay", "proc", "pstore",
    "ramfs", "rpc_pipefs", "securityfs", "sysfs", "tmpfs", "tracefs",
];

/// Why a collector produced nothing this time.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// A file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// `/proc/stat`, which the CPU and process collectors share, could not be used.
    #[error("{0}")]
    Stat(String),
    /// A file could not be parsed.
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// What a collection reads and how it labels it.
#[derive(Debug, Clone)]
pub struct Scraper {
    /// The host's root directory.
    pub root: PathBuf,
    /// The collectors that run.
    pub collectors: Vec<Collector>,
    /// Write `system.memory.utilization` too.
    pub memory_utilization: bool,
    /// `host.name` of every point.
    pub host_name: String,
    /// Clock ticks per second of `/proc/stat` (`USER_HZ`).
    pub user_hz: u64,
}

/// A point's type and value.
enum Kind {
    Gauge,
    /// A cumulative sum, monotonic or not.
    Sum(bool),
}

/// Appends the points of one metric.
struct Out<'a> {
    b: &'a mut MetricsBuilder,
    host: &'a str,
    now: i64,
    start: Option<i64>,
}

impl Out<'_> {
    fn point(
        &mut self,
        name: &str,
        unit: &str,
        kind: Kind,
        value: Number,
        attributes: &[(&str, &str)],
    ) {
        let (point, start) = match kind {
            Kind::Gauge => (Point::Gauge(value), None),
            Kind::Sum(monotonic) => (
                Point::Sum {
                    value,
                    monotonic,
                    temporality: CUMULATIVE,
                },
                self.start,
            ),
        };
        let fields = MetricFields {
            name,
            unit: Some(unit),
            timestamp: self.now,
            start_timestamp: start,
            scope_name: Some(SCOPE),
            ..Default::default()
        };
        let host = self.host;
        self.b.append(
            &fields,
            &point,
            |r| r.entry("host.name", Some(host)),
            |a| {
                for (k, v) in attributes {
                    a.entry(k, Some(v));
                }
            },
        );
    }
}

fn int(v: u64) -> Number {
    Number::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

fn read(path: PathBuf) -> Result<String, CollectError> {
    procfs::read_bounded(&path).map_err(|error| CollectError::Read { path, error })
}

impl Scraper {
    /// A path under the root (`proc/stat`).
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative.trim_start_matches('/'))
    }

    /// Collects every configured collector into `b` at `now` (unix nanoseconds). A collector
    /// that fails adds nothing and is returned with its error; the others still run.
    pub fn collect(&self, now: i64, b: &mut MetricsBuilder) -> Vec<(Collector, CollectError)> {
        let mut failed = Vec::new();
        let stat = read(self.path("proc/stat")).and_then(|t| Ok(procfs::parse_stat(&t)?));
        let start = stat
            .as_ref()
            .ok()
            .map(|s| i64::try_from(s.btime).unwrap_or(0).saturating_mul(1_000_000_000));
        let mut out = Out {
            b,
            host: &self.host_name,
            now,
            start,
        };
        for &c in &self.collectors {
            let r = match c {
                Collector::Cpu | Collector::Processes => match &stat {
                    Ok(s) if c == Collector::Cpu => {
                        self.cpu(s, &mut out);
                        Ok(())
                    }
                    Ok(s) => {
                        processes(s, &mut out);
                        Ok(())
                    }
                    Err(e) => Err(CollectError::Stat(e.to_string())),
                },
                Collector::Memory => self.memory(&mut out),
                Collector::Load => self.load(&mut out),
                Collector::Disk => self.disk(&mut out),
                Collector::Filesystem => self.filesystem(&mut out),
                Collector::Network => self.network(&mut out),
            };
            if let Err(e) = r {
                failed.push((c, e));
            }
        }
        failed
    }

    fn cpu(&self, stat: &Stat, out: &mut Out<'_>) {
        let hz = self.user_hz.max(1) as f64;
        for (cpu, ticks) in &stat.cpus {
            for (state, t) in CPU_STATES.iter().zip(ticks.ticks) {
                out.point(
                    "system.cpu.time",
                    "s",
                    Kind::Sum(true),
                    Number::Double(t as f64 / hz),
                    &[("cpu", cpu), ("state", state)],
                );
            }
        }
    }

    fn memory(&self, out: &mut Out<'_>) -> Result<(), CollectError> {
        let m = procfs::parse_meminfo(&read(self.path("proc/meminfo"))?)?;
        for (state, bytes) in memory_states(&m) {
            out.point(
                "system.memory.usage",
                "By",
                Kind::Sum(false),
                int(bytes),
                &[("state", state)],
            );
        }
        let total = m.get("MemTotal");
        if self.memory_utilization && total > 0 {
            for (state, bytes) in memory_states(&m) {
                out.point(
                    "system.memory.utilization",
                    "1",
                    Kind::Gauge,
                    Number::Double(bytes as f64 / total as f64),
                    &[("state", state)],
                );
            }
        }
        Ok(())
    }

    fn load(&self, out: &mut Out<'_>) -> Result<(), CollectError> {
        let l = procfs::parse_loadavg(&read(self.path("proc/loadavg"))?)?;
        for (name, v) in [
            "system.cpu.load_average.1m",
            "system.cpu.load_average.5m",
            "system.cpu.load_average.15m",
        ]
        .into_iter()
        .zip(l)
        {
            out.point(name, "{thread}", Kind::Gauge, Number::Double(v), &[]);
        }
        Ok(())
    }

    fn disk(&self, out: &mut Out<'_>) -> Result<(), CollectError> {
        let disks = procfs::parse_diskstats(&read(self.path("proc/diskstats"))?)?;
        for d in &disks {
            let dev = d.device.as_str();
            let both = |out: &mut Out<'_>, name, unit, r: Number, w: Number| {
                out.point(name, unit, Kind::Sum(true), r, &[("device", dev), ("direction", "read")]);
                out.point(name, unit, Kind::Sum(true), w, &[("device", dev), ("direction", "write")]);
            };
            let secs = |ms: u64| Number::Double(ms as f64 / 1000.0);
            both(
                out,
                "system.disk.io",
                "By",
                int(d.sectors_read.saturating_mul(SECTOR)),
                int(d.sectors_written.saturating_mul(SECTOR)),
            );
            both(out, "system.disk.operations", "{operations}", int(d.reads), int(d.writes));
            both(out, "system.disk.operation_time", "s", secs(d.read_ms), secs(d.write_ms));
            both(out, "system.disk.merged", "{operations}", int(d.reads_merged), int(d.writes_merged));
            out.point("system.disk.io_time", "s", Kind::Sum(true), secs(d.io_ms), &[("device", dev)]);
            out.point(
                "system.disk.pending_operations",
                "{operations}",
                Kind::Sum(false),
                int(d.in_progress),
                &[("device", dev)],
            );
        }
        Ok(())
    }

    fn filesystem(&self, out: &mut Out<'_>) -> Result<(), CollectError> {
        // The host's mounts: those of its init process when readable, else ours.
        let text = read(self.path("proc/1/mounts")).or_else(|_| read(self.path("proc/self/mounts")))?;
        let mounts = procfs::parse_mounts(&text)?;
        let nodev = match read(self.path("proc/filesystems")) {
            Ok(t) => procfs::parse_nodev(&t),
            Err(_) => PSEUDO.iter().map(|s| s.to_string()).collect(),
        };
        // A mount point mounted over shows the last mount.
        let mut seen = HashSet::new();
        for m in mounts.iter().rev() {
            if nodev.contains(&m.fstype) || m.device == "none" || !seen.insert(m.mountpoint.as_str()) {
                continue;
            }
            let Some(usage) = fs_usage(&self.path(&m.mountpoint)) else {
                continue;
            };
            let attrs = |state| {
                [
                    ("device", m.device.as_str()),
                    ("mode", m.mode),
                    ("mountpoint", m.mountpoint.as_str()),
                    ("type", m.fstype.as_str()),
                    ("state", state),
                ]
            };
            for (state, v) in [("used", usage.used), ("free", usage.free), ("reserved", usage.reserved)] {
                out.point("system.filesystem.usage", "By", Kind::Sum(false), int(v), &attrs(state));
            }
            for (state, v) in [("used", usage.inodes_used), ("free", usage.inodes_free)] {
                out.point(
                    "system.filesystem.inodes.usage",
                    "{inodes}",
                    Kind::Sum(false),
                    int(v),
                    &attrs(state),
                );
            }
        }
        Ok(())
    }

    fn network(&self, out: &mut Out<'_>) -> Result<(), CollectError> {
        // `proc/net` follows the reader's network namespace (a pod's, in a DaemonSet without
        // hostNetwork); `proc/1/net` is init's, the node's. Fake roots may have only the first.
        let text = match read(self.path("proc/1/net/dev")) {
            Ok(t) => t,
            Err(_) => read(self.path("proc/net/dev"))?,
        };
        let devs = procfs::parse_net_dev(&text)?;
        let metrics = [
            ("system.network.io", "By"),
            ("system.network.packets", "{packets}"),
            ("system.network.errors", "{errors}"),
            ("system.network.dropped", "{packets}"),
        ];
        for d in &devs {
            for (k, (name, unit)) in metrics.iter().enumerate() {
                for (direction, v) in [("receive", d.receive[k]), ("transmit", d.transmit[k])] {
                    out.point(
                        name,
                        unit,
                        Kind::Sum(true),
                        int(v),
                        &[("device", &d.device), ("direction", direction)],
                    );
                }
            }
        }
        Ok(())
    }
}

fn processes(stat: &Stat, out: &mut Out<'_>) {
    for (status, v) in [("running", stat.procs_running), ("blocked", stat.procs_blocked)] {
        if let Some(v) = v {
            out.point(
                "system.processes.count",
                "{processes}",
                Kind::Sum(false),
                int(v),
                &[("status", status)],
            );
        }
    }
    if let Some(v) = stat.processes {
        out.point("system.processes.created", "{processes}", Kind::Sum(true), int(v), &[]);
    }
}

/// The memory states as the Collector (through gopsutil) defines them on Linux: `cached` is
/// the page cache plus reclaimable slab, `used` is what `free`, `buffered` and `cached` leave
/// of `MemTotal`, so those four sum to `MemTotal`; `slab_reclaimable` (part of `cached`) and
/// `slab_unreclaimable` (part of `used`) overlap them.
pub fn memory_states(m: &Meminfo) -> [(&'static str, u64); 6] {
    let total = m.get("MemTotal");
    let free = m.get("MemFree");
    let buffers = m.get("Buffers");
    let cached = m.get("Cached").saturating_add(m.get("SReclaimable"));
    let used = total
        .saturating_sub(free)
        .saturating_sub(buffers)
        .saturating_sub(cached);
    [
        ("used", used),
        ("free", free),
        ("buffered", buffers),
        ("cached", cached),
        ("slab_reclaimable", m.get("SReclaimable")),
        ("slab_unreclaimable", m.get("SUnreclaim")),
    ]
}

/// Space and inodes of one filesystem, in bytes and inodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FsUsage {
    /// Bytes in use.
    pub used: u64,
    /// Bytes free to unprivileged users.
    pub free: u64,
    /// Bytes free to root only.
    pub reserved: u64,
    /// Inodes in use.
    pub inodes_used: u64,
    /// Inodes free.
    pub inodes_free: u64,
}

/// `statvfs` of a mount point; `None` when it cannot be measured (gone, not permitted).
pub fn fs_usage(path: &Path) -> Option<FsUsage> {
    let s = match rustix::fs::statvfs(path) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "filesystem not measured");
            return None;
        }
    };
    let frsize = if s.f_frsize > 0 { s.f_frsize } else { s.f_bsize };
    let bfree = s.f_bfree.min(s.f_blocks);
    let bavail = s.f_bavail.min(bfree);
    Some(FsUsage {
        used: (s.f_blocks - bfree).saturating_mul(frsize),
        free: bavail.saturating_mul(frsize),
        reserved: (bfree - bavail).saturating_mul(frsize),
        inodes_used: s.f_files.saturating_sub(s.f_ffree),
        inodes_free: s.f_ffree,
    })
}

/// `host.name`: the first line of `{root}/etc/hostname`, else the system's host name.
pub fn host_name(root: &Path) -> String {
    procfs::read_bounded(&root.join("etc/hostname"))
        .ok()
        .and_then(|t| t.lines().next().map(|l| l.trim().to_string()))
        .filter(|h| !h.is_empty() && h.len() <= 255)
        .unwrap_or_else(|| {
            rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned()
        })
}

#[cfg(test)]
#[path = "collect_tests.rs"]
mod tests;
