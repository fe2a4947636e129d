//! Parsers of the `/proc` files the host metrics come from. Each takes the file's text (read
//! with [`read_bounded`]) and returns its values or a [`ParseError`] naming the file and line;
//! none panics on malformed or truncated text.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

/// Largest `/proc` file read (a host with thousands of mounts or devices stays far below).
pub const MAX_FILE_BYTES: u64 = 8 << 20;

/// Most entries (CPUs, disks, interfaces, mounts) kept from one file.
pub const MAX_ENTRIES: usize = 4096;

/// Why a `/proc` file could not be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    /// A line does not have the expected shape.
    #[error("{file} line {line}: {message}")]
    Line {
        /// The file (`/proc/stat`).
        file: &'static str,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A value the file must have is missing.
    #[error("{file}: no {what}")]
    Missing {
        /// The file.
        file: &'static str,
        /// What is missing.
        what: &'static str,
    },
}

/// Reads a file of at most [`MAX_FILE_BYTES`] as text (longer files are cut; invalid UTF-8 is
/// replaced, so the parsers report it as a bad value).
pub fn read_bounded(path: &Path) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn line_error(file: &'static str, line: usize, message: impl Into<String>) -> ParseError {
    ParseError::Line {
        file,
        line: line + 1,
        message: message.into(),
    }
}

fn number<T: std::str::FromStr>(
    file: &'static str,
    line: usize,
    what: &str,
    v: &str,
) -> Result<T, ParseError> {
    v.parse()
        .map_err(|_| line_error(file, line, format!("{what} {v:?} is not a number")))
}

/// Ticks of one CPU by state, in `/proc/stat` order.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTicks {
    /// user, nice, system, idle, iowait, irq, softirq, steal (missing trailing fields are 0).
    pub ticks: [u64; 8],
}

/// The OpenTelemetry `state` of each [`CpuTicks::ticks`] entry.
pub const CPU_STATES: [&str; 8] = [
    "user",
    "nice",
    "system",
    "idle",
    "wait",
    "interrupt",
    "softirq",
    "steal",
];

/// `/proc/stat`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stat {
    /// Per CPU (`cpu0`, ...), the aggregate `cpu` line left out.
    pub cpus: Vec<(String, CpuTicks)>,
    /// Boot time, unix seconds.
    pub btime: u64,
    /// Processes created since boot.
    pub processes: Option<u64>,
    /// Processes runnable now.
    pub procs_running: Option<u64>,
    /// Processes blocked on I/O now.
    pub procs_blocked: Option<u64>,
}

/// Parses `/proc/stat`.
pub fn parse_stat(text: &str) -> Result<Stat, ParseError> {
    const F: &str = "/proc/stat";
    let mut stat = Stat::default();
    let mut btime = None;
    for (i, line) in text.lines().enumerate() {
        let mut it = line.split_ascii_whitespace();
        let Some(key) = it.next() else { continue };
        if let Some(n) = key.strip_prefix("cpu") {
            if n.is_empty() {
                continue;
            }
            if !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(line_error(F, i, format!("unexpected CPU name {key:?}")));
            }
            let mut ticks = CpuTicks::default();
            let mut count = 0;
            for (slot, v) in ticks.ticks.iter_mut().zip(&mut it) {
                *slot = number(F, i, &format!("{key} time"), v)?;
                count += 1;
            }
            if count < 4 {
                return Err(line_error(
                    F,
                    i,
                    format!("{key} has {count} times, expected at least 4 (user nice system idle)"),
                ));
            }
            if stat.cpus.len() < MAX_ENTRIES {
                stat.cpus.push((key.to_string(), ticks));
            }
            continue;
        }
        let slot = match key {
            "btime" => &mut btime,
            "processes" => &mut stat.processes,
            "procs_running" => &mut stat.procs_running,
            "procs_blocked" => &mut stat.procs_blocked,
            _ => continue,
        };
        let v = it
            .next()
            .ok_or_else(|| line_error(F, i, format!("{key} has no value")))?;
        *slot = Some(number(F, i, key, v)?);
    }
    stat.btime = btime.ok_or(ParseError::Missing {
        file: F,
        what: "btime line",
    })?;
    Ok(stat)
}

/// `/proc/meminfo` values in bytes, by field name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meminfo(pub HashMap<String, u64>);

impl Meminfo {
    /// A field in bytes, 0 when absent.
    pub fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }
}

/// Parses `/proc/meminfo` (`MemTotal` is required).
pub fn parse_meminfo(text: &str) -> Result<Meminfo, ParseError> {
    const F: &str = "/proc/meminfo";
    let mut m = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (key, rest) = line
            .split_once(':')
            .ok_or_else(|| line_error(F, i, "no ':' after the field name"))?;
        let mut it = rest.split_ascii_whitespace();
        let v: u64 = number(F, i, key, it.next().unwrap_or(""))?;
        let bytes = match it.next() {
            None => v,
            Some("kB") => v.saturating_mul(1024),
            Some(u) => return Err(line_error(F, i, format!("{key} has unknown unit {u:?}"))),
        };
        if m.len() < MAX_ENTRIES {
            m.insert(key.to_string(), bytes);
        }
    }
    if !m.contains_key("MemTotal") {
        return Err(ParseError::Missing {
            file: F,
            what: "MemTotal",
        });
    }
    Ok(Meminfo(m))
}

/// Parses `/proc/loadavg`: the 1, 5 and 15 minute load averages.
pub fn parse_loadavg(text: &str) -> Result<[f64; 3], ParseError> {
    const F: &str = "/proc/loadavg";
    let mut it = text.split_ascii_whitespace();
    let mut out = [0.0; 3];
    for (slot, what) in out.iter_mut().zip(["1m", "5m", "15m"]) {
        let v = it
            .next()
            .ok_or_else(|| line_error(F, 0, format!("no {what} load average")))?;
        let x: f64 = number(F, 0, what, v)?;
        if !x.is_finite() || x < 0.0 {
            return Err(line_error(F, 0, format!("{what} load average {v:?} is not valid")));
        }
        *slot = x;
    }
    Ok(out)
}

/// One line of `/proc/diskstats`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiskStats {
    /// Device name (`sda`, `nvme0n1p1`).
    pub device: String,
    /// Reads completed.
    pub reads: u64,
    /// Reads merged.
    pub reads_merged: u64,
    /// Sectors (512 bytes) read.
    pub sectors_read: u64,
    /// Milliseconds spent reading.
    pub read_ms: u64,
    /// Writes completed.
    pub writes: u64,
    /// Writes merged.
    pub writes_merged: u64,
    /// Sectors (512 bytes) written.
    pub sectors_written: u64,
    /// Milliseconds spent writing.
    pub write_ms: u64,
    /// I/Os in progress now.
    pub in_progress: u64,
    /// Milliseconds spent doing I/O.
    pub io_ms: u64,
}

/// Parses `/proc/diskstats` (at least the 14 fields of Linux 2.6).
pub fn parse_diskstats(text: &str) -> Result<Vec<DiskStats>, ParseError> {
    const F: &str = "/proc/diskstats";
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        if f.len() < 14 {
            return Err(line_error(
                F,
                i,
                format!("{} fields, expected at least 14", f.len()),
            ));
        }
        let n = |k: usize, what: &str| number::<u64>(F, i, what, f[k]);
        if out.len() < MAX_ENTRIES {
            out.push(DiskStats {
                device: f[2].to_string(),
                reads: n(3, "reads")?,
                reads_merged: n(4, "reads merged")?,
                sectors_read: n(5, "sectors read")?,
                read_ms: n(6, "read time")?,
                writes: n(7, "writes")?,
                writes_merged: n(8, "writes merged")?,
                sectors_written: n(9, "sectors written")?,
                write_ms: n(10, "write time")?,
                in_progress: n(11, "I/Os in progress")?,
                io_ms: n(12, "I/O time")?,
            });
        }
    }
    Ok(out)
}

/// One interface of `/proc/net/dev`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetDev {
    /// Interface name.
    pub device: String,
    /// Bytes, packets, errors and drops received.
    pub receive: [u64; 4],
    /// Bytes, packets, errors and drops transmitted.
    pub transmit: [u64; 4],
}

/// Parses `/proc/net/dev` (two header lines, then `name: 16 counters`).
pub fn parse_net_dev(text: &str) -> Result<Vec<NetDev>, ParseError> {
    const F: &str = "/proc/net/dev";
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.contains('|') || line.trim().is_empty() {
            continue;
        }
        let (name, rest) = line
            .split_once(':')
            .ok_or_else(|| line_error(F, i, "no ':' after the interface name"))?;
        let f: Vec<&str> = rest.split_ascii_whitespace().collect();
        if f.len() < 16 {
            return Err(line_error(
                F,
                i,
                format!("{} counters, expected 16", f.len()),
            ));
        }
        let n = |k: usize| number::<u64>(F, i, "counter", f[k]);
        if out.len() < MAX_ENTRIES {
            out.push(NetDev {
                device: name.trim().to_string(),
                receive: [n(0)?, n(1)?, n(2)?, n(3)?],
                transmit: [n(8)?, n(9)?, n(10)?, n(11)?],
            });
        }
    }
    Ok(out)
}

/// One line of a mounts file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mount {
    /// Device (`/dev/sda1`).
    pub device: String,
    /// Mount point as the host sees it.
    pub mountpoint: String,
    /// Filesystem type.
    pub fstype: String,
    /// `rw` or `ro`.
    pub mode: &'static str,
}

/// Undoes the octal escapes of mounts fields (`\040` is a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a mounts file (`/proc/self/mounts` format).
pub fn parse_mounts(text: &str) -> Result<Vec<Mount>, ParseError> {
    const F: &str = "/proc/self/mounts";
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        if f.len() < 4 {
            return Err(line_error(F, i, format!("{} fields, expected at least 4", f.len())));
        }
        let mode = if f[3].split(',').any(|o| o == "ro") {
            "ro"
        } else {
            "rw"
        };
        if out.len() < MAX_ENTRIES {
            out.push(Mount {
                device: unescape(f[0]),
                mountpoint: unescape(f[1]),
                fstype: unescape(f[2]),
                mode,
            });
        }
    }
    Ok(out)
}

/// The filesystem types `/proc/filesystems` marks `nodev` (virtual filesystems).
pub fn parse_nodev(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("nodev"))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .take(MAX_ENTRIES)
        .collect()
}

#[cfg(test)]
#[path = "procfs_tests.rs"]
mod tests;
