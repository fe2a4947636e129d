use super::*;

const STAT: &str = "cpu  2055402 221134 252838 533719 36890 0 6109 31747 0 0
cpu0 998519 103736 118895 319743 11150 0 1107 15765 0 0
cpu1 1056882 117397 133942 213976 25740 7 5001 15981 0 0
intr 123 0 0
ctxt 4556
btime 1764400000
processes 32599
procs_running 3
procs_blocked 1
softirq 1 2 3
";

#[test]
fn stat_gives_cpus_boot_time_and_process_counts() {
    let s = parse_stat(STAT).unwrap();
    assert_eq!(s.cpus.len(), 2);
    assert_eq!(s.cpus[0].0, "cpu0");
    assert_eq!(
        s.cpus[1].1.ticks,
        [1056882, 117397, 133942, 213976, 25740, 7, 5001, 15981]
    );
    assert_eq!(s.btime, 1764400000);
    assert_eq!(s.processes, Some(32599));
    assert_eq!(s.procs_running, Some(3));
    assert_eq!(s.procs_blocked, Some(1));
    // An old kernel's four times: the others are 0.
    let old = parse_stat("cpu0 1 2 3 4\nbtime 5\n").unwrap();
    assert_eq!(old.cpus[0].1.ticks, [1, 2, 3, 4, 0, 0, 0, 0]);
    assert_eq!(old.procs_running, None);
}

#[test]
fn bad_stat_lines_are_named() {
    let e = parse_stat("cpu0 1 2 x 4\nbtime 5\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/proc/stat line 1: cpu0 time \"x\" is not a number"
    );
    let e = parse_stat("btime 5\ncpu3 1 2").unwrap_err();
    assert!(e.to_string().starts_with("/proc/stat line 2: cpu3 has 2 times"), "{e}");
    assert_eq!(
        parse_stat("cpu0 1 2 3 4\n").unwrap_err(),
        ParseError::Missing {
            file: "/proc/stat",
            what: "btime line"
        }
    );
    assert!(parse_stat("btime\n").unwrap_err().to_string().contains("btime has no value"));
    assert!(parse_stat("btime -1\n").is_err());
    assert!(parse_stat("cpuX 1 2 3 4\nbtime 1\n").is_err());
    assert!(parse_stat("btime 99999999999999999999999\n").is_err());
    assert!(parse_stat("").is_err());
}

#[test]
fn meminfo_is_in_bytes() {
    let m = parse_meminfo(
        "MemTotal:       16316412 kB\nMemFree:         1000 kB\nHugePages_Total:       0\n",
    )
    .unwrap();
    assert_eq!(m.get("MemTotal"), 16316412 * 1024);
    assert_eq!(m.get("MemFree"), 1000 * 1024);
    assert_eq!(m.get("HugePages_Total"), 0);
    assert_eq!(m.get("Absent"), 0);
}

#[test]
fn bad_meminfo_is_refused() {
    assert!(parse_meminfo("MemFree: 1 kB\n")
        .unwrap_err()
        .to_string()
        .contains("no MemTotal"));
    let e = parse_meminfo("MemTotal: 10 kB\nCached 5 kB\n").unwrap_err();
    assert_eq!(e.to_string(), "/proc/meminfo line 2: no ':' after the field name");
    assert!(parse_meminfo("MemTotal: ten kB\n").is_err());
    assert!(parse_meminfo("MemTotal:\n").is_err());
    assert!(parse_meminfo("MemTotal: 10 MB\n")
        .unwrap_err()
        .to_string()
        .contains("unknown unit"));
    // Huge values saturate instead of overflowing.
    let m = parse_meminfo("MemTotal: 18446744073709551615 kB\n").unwrap();
    assert_eq!(m.get("MemTotal"), u64::MAX);
}

#[test]
fn loadavg() {
    assert_eq!(
        parse_loadavg("2.17 2.28 2.10 3/105 32588\n").unwrap(),
        [2.17, 2.28, 2.10]
    );
    assert!(parse_loadavg("2.17 2.28").unwrap_err().to_string().contains("no 15m"));
    assert!(parse_loadavg("").is_err());
    assert!(parse_loadavg("a b c").is_err());
    assert!(parse_loadavg("NaN 1 1").is_err());
    assert!(parse_loadavg("-1 1 1").is_err());
}

#[test]
fn diskstats() {
    let d = parse_diskstats(
        "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0\n 253       0 vda 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n",
    )
    .unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(
        d[1],
        DiskStats {
            device: "vda".into(),
            reads: 1,
            reads_merged: 2,
            sectors_read: 3,
            read_ms: 4,
            writes: 5,
            writes_merged: 6,
            sectors_written: 7,
            write_ms: 8,
            in_progress: 9,
            io_ms: 10,
        }
    );
    let e = parse_diskstats(" 253 0 vda 1 2 3\n").unwrap_err();
    assert_eq!(e.to_string(), "/proc/diskstats line 1: 6 fields, expected at least 14");
    assert!(parse_diskstats(" 253 0 vda 1 2 3 4 5 6 7 8 9 x 11\n").is_err());
}

const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 699149493  315391    0    0    0     0          0         0 699149493  315391    0    0    0     0       0          0
  eth0:1845178367   68183    1    2    0     0          0         0  7138619   53714    3    4    0     0       0          0
";

#[test]
fn net_dev() {
    let d = parse_net_dev(NET_DEV).unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].device, "lo");
    assert_eq!(d[1].device, "eth0");
    assert_eq!(d[1].receive, [1845178367, 68183, 1, 2]);
    assert_eq!(d[1].transmit, [7138619, 53714, 3, 4]);
    let e = parse_net_dev("  eth0: 1 2 3\n").unwrap_err();
    assert_eq!(e.to_string(), "/proc/net/dev line 1: 3 counters, expected 16");
    assert!(parse_net_dev("  eth0 1 2 3\n").is_err());
    let cut = &NET_DEV[..NET_DEV.len() - 40];
    assert!(parse_net_dev(cut).is_err());
}

#[test]
fn mounts_unescape_and_mode() {
    let m = parse_mounts(
        "/dev/vda / ext4 rw,relatime 0 0\n/dev/sdb1 /mnt/my\\040disk xfs ro,noatime 0 0\n",
    )
    .unwrap();
    assert_eq!(m[0].mountpoint, "/");
    assert_eq!(m[0].mode, "rw");
    assert_eq!(m[1].mountpoint, "/mnt/my disk");
    assert_eq!(m[1].fstype, "xfs");
    assert_eq!(m[1].mode, "ro");
    assert_eq!(unescape("a\\134b\\"), "a\\b\\");
    assert_eq!(unescape("\\777"), "\\777");
    assert!(parse_mounts("/dev/vda /\n")
        .unwrap_err()
        .to_string()
        .contains("line 1: 2 fields"));
}

#[test]
fn nodev_types() {
    let n = parse_nodev("nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\n");
    assert!(n.contains("sysfs") && n.contains("tmpfs"));
    assert!(!n.contains("ext4"));
    assert_eq!(n.len(), 2);
}

proptest::proptest! {
    #[test]
    fn parsers_never_panic(text in "(?s).{0,400}") {
        let _ = parse_stat(&text);
        let _ = parse_meminfo(&text);
        let _ = parse_loadavg(&text);
        let _ = parse_diskstats(&text);
        let _ = parse_net_dev(&text);
        let _ = parse_mounts(&text);
        let _ = parse_nodev(&text);
    }

    #[test]
    fn truncated_files_never_panic(cut in 0usize..STAT.len()) {
        let _ = parse_stat(&STAT[..cut]);
        let _ = parse_net_dev(&NET_DEV[..cut.min(NET_DEV.len())]);
    }
}
