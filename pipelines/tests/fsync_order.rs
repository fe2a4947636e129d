//! Durability as the kernel sees it: each test runs itself again under `strace -f -y`, where
//! it does the durable work of its scenario, and checks the order of the system calls, so what is
//! checked is what was asked of the kernel, not what our code believes it asked:
//! - a flush to a `file://` lake fsyncs the Parquet file before renaming it into place, then
//!   every directory from its own up to the lake root, all before the buffer's fsync that
//!   removes the flushed entries (after a power cut, an acknowledged row is in the buffer or
//!   in the lake, never in neither);
//! - a compaction's output is durable the same way before the compactor goes on to commit it,
//!   and so is a large object uploaded in parts;
//! - every file the buffer writes for the entries an acknowledgement covers is fsynced before
//!   the acknowledgement: sled's data file, and the payload files holding the entries' bytes
//!   (and the blob files sled spills large leaf nodes to, should it write any);
//! - so is every change of the embedded segment index (a registration, a lease, a compaction
//!   commit, a retention pass, a lease abandoned) before its call returns: sled's own `flush()`
//!   is not durable on Linux.
//!
//! strace must be installed (`scripts/test.sh` installs it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use weir_catalog::layout::{self, SegmentKey};
use weir_catalog::{Catalog, LeaseRequest, RetentionPolicy, SegmentRecord, SegmentState};
use weir_control_plane::SledCatalog;
use weir_pipelines::buffer::{encode_entry, Buffer, SledBuffer, SledBufferConfig};
use weir_pipelines::compactor::{Compactor, CompactorConfig};
use weir_pipelines::flusher::{Flusher, FlusherConfig};
use weir_pipelines::lake::Lake;
use weir_pipelines::metrics::Metrics;
use weir_pipelines::parquet_writer::{encode_parquet, ParquetConfig};
use weir_pipelines::{Batch, Partition, Signal};

mod common;
use common::log_batch;

/// Set for a scenario run under strace: the directory it works in.
const SCENARIO_DIR: &str = "WEIR_TEST_STRACE_SCENARIO_DIR";
const BASE: i64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
const PARTITION: &str = "dt=2026-01-01/hour=00";

fn segment_key(id: Uuid) -> SegmentKey {
    let partition = Partition::parse(PARTITION).expect("a partition");
    SegmentKey::new("acme", Signal::Logs, partition, id)
}

// ---------------------------------------------------------------------------------------------
// Tracing a scenario and reading the trace.

/// One traced system call: its name, its arguments as strace prints them (`-y` adds each
/// descriptor's path: `fsync(7</tmp/x/buffer/db>)`), whether it succeeded, and the lines of
/// the trace where it was entered and where it returned (they differ when another thread's
/// call came in between).
#[derive(Debug)]
struct Call {
    name: String,
    args: String,
    ok: bool,
    start: usize,
    end: usize,
}

impl Call {
    fn is_sync(&self) -> bool {
        (self.name == "fsync" || self.name == "fdatasync") && self.ok
    }

    /// The path of the descriptor in the first argument.
    fn fd_path(&self) -> Option<&Path> {
        let (_, rest) = self.args.split_once('<')?;
        let (path, _) = rest.split_once('>')?;
        Some(Path::new(path))
    }

    /// The quoted strings among the arguments (the paths of a rename or a stat).
    fn strings(&self) -> Vec<&str> {
        self.args.split('"').skip(1).step_by(2).collect()
    }

    /// `(from, to)` of a successful rename.
    fn renamed(&self) -> Option<(&Path, &Path)> {
        if !self.ok || !self.name.starts_with("rename") {
            return None;
        }
        match self.strings()[..] {
            [from, to, ..] => Some((Path::new(from), Path::new(to))),
            _ => None,
        }
    }

    fn syncs(&self, path: &Path) -> bool {
        self.is_sync() && self.fd_path() == Some(path)
    }

    fn writes(&self, path: &Path) -> bool {
        (self.name == "write" || self.name == "pwrite64") && self.fd_path() == Some(path)
    }
}

fn succeeded(rest: &str) -> bool {
    rest.rsplit_once(" = ")
        .is_some_and(|(_, r)| !r.trim_start().starts_with('-'))
}

fn parse(trace: &str) -> Vec<Call> {
    let mut calls: Vec<Call> = Vec::new();
    let mut unfinished: HashMap<&str, usize> = HashMap::new();
    for (i, line) in trace.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(resumed) = rest.strip_prefix("<... ") {
            if let Some(c) = unfinished.remove(pid) {
                let tail = resumed.split_once("resumed>").map_or("", |(_, t)| t);
                calls[c].end = i;
                calls[c].ok = succeeded(tail);
                calls[c].args.push_str(tail);
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(args) = args.strip_suffix(" <unfinished ...>") {
            unfinished.insert(pid, calls.len());
            calls.push(Call {
                name: name.into(),
                args: args.into(),
                ok: false,
                start: i,
                end: usize::MAX,
            });
        } else {
            calls.push(Call {
                name: name.into(),
                args: args.into(),
                ok: succeeded(args),
                start: i,
                end: i,
            });
        }
    }
    calls
}

/// The syncs, renames and opens of a scenario's files, for failure messages.
fn excerpt(calls: &[Call], dir: &Path) -> String {
    let dir = dir.to_string_lossy();
    calls
        .iter()
        .filter(|c| c.is_sync() || c.renamed().is_some() || c.name == "openat")
        .filter(|c| c.args.contains(dir.as_ref()))
        .map(|c| format!("{:>6} {}({}", c.start, c.name, c.args))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The index of the first call at or after `from` that matches, or a failure that says what
/// was missing and shows the calls on `dir`'s files.
fn first_after(
    calls: &[Call],
    from: usize,
    dir: &Path,
    missing: &str,
    matches: impl Fn(&Call) -> bool,
) -> usize {
    from + calls[from..]
        .iter()
        .position(matches)
        .unwrap_or_else(|| panic!("{missing}:\n{}", excerpt(calls, dir)))
}

/// Whether a call opens `path`.
fn opened(c: &Call, path: &Path) -> bool {
    c.name == "openat" && c.strings().first() == path.to_str().as_ref()
}

/// In the test itself: runs this same test (`test`, this binary) again under strace and
/// returns the child's directory and system calls. In that child (the scenario directory is
/// set): runs `scenario`, the durable work to observe, and returns `None`.
fn traced(test: &str, scenario: fn()) -> Option<(tempfile::TempDir, Vec<Call>)> {
    if scenario_dir().is_some() {
        scenario();
        return None;
    }
    Some(trace_scenario(test))
}

/// Runs the test `test` of this binary under strace; returns its directory and its system
/// calls.
fn trace_scenario(test: &str) -> (tempfile::TempDir, Vec<Call>) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("strace.log");
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("strace")
        .args(["-f", "-y", "-s", "1024", "-o"])
        .arg(&log)
        .args([
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2,write,pwrite64,openat,unlink,unlinkat",
        ])
        .arg(exe)
        .args([test, "--exact", "--test-threads=1"])
        .env(SCENARIO_DIR, dir.path())
        .output()
        .expect("cannot run strace: install it to run this test (scripts/test.sh does)");
    assert!(
        out.status.success(),
        "scenario of {test} failed under strace:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let trace = std::fs::read_to_string(&log).unwrap();
    (dir, parse(&trace))
}

/// The last rename that published a Parquet file under `lake`: its index and `(from, to)`.
fn last_parquet_rename<'a>(calls: &'a [Call], lake: &Path) -> (usize, &'a Path, &'a Path) {
    calls
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.renamed().map(|(from, to)| (i, from, to)))
        .rfind(|(_, _, to)| to.starts_with(lake) && to.extension().is_some_and(|e| e == "parquet"))
        .unwrap_or_else(|| {
            panic!(
                "no Parquet file was renamed into place:\n{}",
                excerpt(calls, lake)
            )
        })
}

/// Asserts that a Parquet file published by `calls[rename]` is durable before `calls[before]`
/// begins: its data fsynced under the staging name before the rename (so that a name that
/// survives a power cut never points at missing data: the flusher's recovery trusts an object
/// that exists), then every directory from its own up to the lake root.
fn assert_published_durably(calls: &[Call], lake: &Path, rename: usize, before: usize) {
    let (from, to) = calls[rename].renamed().unwrap();
    let (renamed_at, deadline) = (calls[rename].start, calls[before].start);
    assert!(
        calls.iter().any(|c| c.syncs(from) && c.end < renamed_at),
        "{} was not fsynced before it was renamed to {}:\n{}",
        from.display(),
        to.display(),
        excerpt(calls, lake)
    );
    let dirs: Vec<&Path> = to
        .ancestors()
        .skip(1)
        .take_while(|d| d.starts_with(lake))
        .collect();
    assert!(dirs.len() >= 5, "{dirs:?}");
    for d in dirs {
        assert!(
            calls
                .iter()
                .any(|c| c.syncs(d) && c.start > renamed_at && c.end < deadline),
            "directory {} was not fsynced between the rename (line {renamed_at}) and line \
             {deadline}:\n{}",
            d.display(),
            excerpt(calls, lake)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The checks.

#[test]
fn a_flush_is_durable_in_the_lake_before_its_entries_leave_the_buffer() {
    let Some((dir, calls)) = traced(
        "a_flush_is_durable_in_the_lake_before_its_entries_leave_the_buffer",
        scenario_flush,
    ) else {
        return;
    };
    let lake = dir.path().join("lake");
    let db = dir.path().join("buffer").join("db");
    let (rename, _, _) = last_parquet_rename(&calls, &lake);
    // The flusher removes the file's entries, then fsyncs the buffer's data file.
    let removal = first_after(
        &calls,
        rename,
        dir.path(),
        "no fdatasync of the buffer after the upload",
        |c| c.name == "fdatasync" && c.fd_path() == Some(db.as_path()),
    );
    assert_published_durably(&calls, &lake, rename, removal);
}

#[test]
fn a_compaction_output_is_durable_before_the_compactor_commits_it() {
    let Some((dir, calls)) = traced(
        "a_compaction_output_is_durable_before_the_compactor_commits_it",
        scenario_compaction,
    ) else {
        return;
    };
    let lake = dir.path().join("lake");
    let (rename, _, to) = last_parquet_rename(&calls, &lake);
    // Once the writer is closed the compactor reads the output's size (object_store opens the
    // file to stat it), then commits it in the index.
    let size = first_after(
        &calls,
        rename,
        dir.path(),
        "the compactor did not stat its output after writing it",
        |c| opened(c, to),
    );
    assert_published_durably(&calls, &lake, rename, size);
}

#[test]
fn a_large_put_uploaded_in_parts_is_durable_before_it_returns() {
    let Some((dir, calls)) = traced(
        "a_large_put_uploaded_in_parts_is_durable_before_it_returns",
        scenario_large_put,
    ) else {
        return;
    };
    let lake = dir.path().join("lake");
    let (rename, _, _) = last_parquet_rename(&calls, &lake);
    let marker = dir.path().join("put-returned");
    let returned = first_after(&calls, 0, &lake, "no marker after the put", |c| {
        opened(c, &marker)
    });
    assert_published_durably(&calls, &lake, rename, returned);
}

/// Asserts that before each acknowledgement (a write to the file `acks` under `dir`; `n` of
/// them), every file of the sled database in `sled_dir` written since the last sync was
/// fsynced: its data file, each file beside it that was not unlinked (sled's blob files under
/// `blobs/`, the buffer's payload files under `payloads/`), and that file's directory after
/// the file was created. Returns those files.
fn assert_durable_at_acks<'a>(
    calls: &'a [Call],
    dir: &Path,
    sled_dir: &Path,
    n: usize,
) -> std::collections::BTreeSet<&'a Path> {
    let db = sled_dir.join("db");
    let acks_file = dir.join("acks");
    let acks: Vec<usize> = (0..calls.len())
        .filter(|&i| calls[i].writes(&acks_file))
        .collect();
    assert_eq!(acks.len(), n, "one ack per acknowledged change");
    let mut side_files = std::collections::BTreeSet::new();
    for &ack in &acks {
        let at = calls[ack].start;
        for side in [sled_dir.join("blobs"), sled_dir.join("payloads")] {
            let written: std::collections::BTreeSet<&Path> = calls[..ack]
                .iter()
                .filter_map(|c| {
                    c.fd_path()
                        .filter(|p| p.parent() == Some(side.as_path()) && c.writes(p))
                })
                .collect();
            for file in written {
                side_files.insert(file);
                assert_synced_before(calls, dir, &side, file, ack);
            }
        }
        let last_db_write = calls[..ack]
            .iter()
            .filter(|c| c.writes(&db))
            .map(|c| c.end)
            .max()
            .unwrap_or(0);
        assert!(
            calls[..ack]
                .iter()
                .any(|c| c.syncs(&db) && c.start > last_db_write && c.end < at),
            "{} was not fsynced after its last write and before the ack at line {at}:\n{}",
            db.display(),
            excerpt(calls, dir)
        );
    }
    side_files
}

/// Asserts that `file` in `side` (a directory beside sled's data file) is fsynced after its
/// last write before the call at `ack`, and `side` after the file was created, unless the file
/// was unlinked by then.
fn assert_synced_before(calls: &[Call], dir: &Path, side: &Path, file: &Path, ack: usize) {
    let at = calls[ack].start;
    let unlinked = calls[..ack]
        .iter()
        .any(|c| c.name.starts_with("unlink") && c.strings().last() == file.to_str().as_ref());
    if unlinked {
        return;
    }
    let last_write = calls[..ack]
        .iter()
        .filter(|c| c.writes(file))
        .map(|c| c.end)
        .max()
        .unwrap_or(0);
    assert!(
        calls[..ack]
            .iter()
            .any(|c| c.syncs(file) && c.start > last_write && c.end < at),
        "{} holds acknowledged data but was not fsynced before the ack at line {at}:\n{}",
        file.display(),
        excerpt(calls, dir)
    );
    let created = calls[..ack]
        .iter()
        .filter(|c| c.writes(file))
        .map(|c| c.start)
        .min()
        .unwrap_or(0);
    assert!(
        calls[..ack]
            .iter()
            .any(|c| c.syncs(side) && c.start > created && c.end < at),
        "{} was not fsynced after {} was created and before the ack at line {at}:\n{}",
        side.display(),
        file.display(),
        excerpt(calls, dir)
    );
}

#[test]
fn every_file_sled_writes_for_acknowledged_entries_is_fsynced_before_the_ack() {
    let Some((dir, calls)) = traced(
        "every_file_sled_writes_for_acknowledged_entries_is_fsynced_before_the_ack",
        scenario_large_entries,
    ) else {
        return;
    };
    let buffer = dir.path().join("buffer");
    let side_files = assert_durable_at_acks(&calls, dir.path(), &buffer, 12);
    // The entries' bytes go to payload files (the scenario covers them), so sled's leaves stay
    // small: a dozen 400 KiB entries used to spill leaves to blob files.
    assert!(
        side_files
            .iter()
            .any(|f| f.parent() == Some(buffer.join("payloads").as_path())),
        "the buffer wrote no payload file: this scenario no longer covers them"
    );
    assert!(
        !side_files
            .iter()
            .any(|f| f.parent() == Some(buffer.join("blobs").as_path())),
        "sled spilled blob files although the entries' bytes are not in its pages: {side_files:?}"
    );
}

#[test]
fn every_index_change_is_fsynced_before_its_call_returns() {
    let Some((dir, calls)) = traced(
        "every_index_change_is_fsynced_before_its_call_returns",
        scenario_index,
    ) else {
        return;
    };
    let index = dir.path().join("index");
    assert!(
        calls.iter().any(|c| c.writes(&index.join("db"))),
        "the scenario wrote nothing to the index:\n{}",
        excerpt(&calls, dir.path())
    );
    assert_durable_at_acks(&calls, dir.path(), &index, 7);
}

// ---------------------------------------------------------------------------------------------
// The scenarios (run by the checks above under strace).

fn scenario_dir() -> Option<PathBuf> {
    std::env::var_os(SCENARIO_DIR).map(PathBuf::from)
}

/// A small generator (deterministic, no dependency).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Logs rows within one hour; `body_bytes` of random printable characters each (which LZ4
/// cannot compress).
fn logs(rng: &mut Rng, rows: usize, body_bytes: usize) -> RecordBatch {
    log_batch((0..rows).map(|i| {
        let ts = BASE + (rng.next() % 3_000_000_000_000) as i64;
        let body: String = (0..body_bytes)
            .map(|_| char::from(b'!' + (rng.next() % 94) as u8))
            .collect();
        (ts, body, if i % 2 == 0 { "api" } else { "web" })
    }))
}

fn open_buffer(dir: &Path) -> Arc<SledBuffer> {
    Arc::new(
        SledBuffer::open(&SledBufferConfig {
            path: dir.join("buffer"),
            max_bytes: 1 << 30,
        })
        .unwrap(),
    )
}

fn open_lake(dir: &Path) -> Lake {
    Lake::open(
        &format!("file://{}", dir.join("lake").display()),
        &HashMap::new(),
    )
    .unwrap()
}

fn scenario_flush() {
    let Some(dir) = scenario_dir() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let buffer = open_buffer(&dir);
        let rows = logs(&mut Rng(7), 200, 40);
        let batch = Batch::new("acme", Signal::Logs, "test", 0, rows);
        let entries = batch.split_by_partition().unwrap();
        let seq = buffer.append(&entries).unwrap();
        buffer.sync(seq).unwrap();
        let config = FlusherConfig {
            max_file_age: Duration::ZERO,
            poll_interval: Duration::from_millis(20),
            ..FlusherConfig::default()
        };
        let flusher = Flusher::new(
            buffer.clone(),
            open_lake(&dir),
            Metrics::new(),
            config,
            Arc::new(Notify::new()),
            Arc::new(Notify::new()),
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(flusher.run(shutdown.clone(), Duration::from_secs(10)));
        let deadline = Instant::now() + Duration::from_secs(30);
        while buffer.stats().entries > 0 {
            assert!(Instant::now() < deadline, "the flusher did not flush");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        task.await.unwrap();
    });
}

async fn registered_segment(lake: &Lake, catalog: &dyn Catalog, rows: RecordBatch) {
    let (bytes, summary) = encode_parquet(
        &ParquetConfig::default(),
        Signal::Logs,
        "acme",
        &[rows],
        &[],
    )
    .unwrap();
    let key = segment_key(Uuid::now_v7());
    let size = bytes.len() as u64;
    lake.put(&key.to_string(), bytes).await.unwrap();
    let segment = layout::segment_record(&key, summary.into_facts(size), "test", 0);
    catalog.register(&[segment]).await.unwrap();
}

fn scenario_compaction() {
    let Some(dir) = scenario_dir() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let lake = open_lake(&dir);
        let catalog: Arc<dyn Catalog> = Arc::new(SledCatalog::open(&dir.join("index")).unwrap());
        let mut rng = Rng(11);
        for _ in 0..3 {
            registered_segment(&lake, catalog.as_ref(), logs(&mut rng, 300, 40)).await;
        }
        let config = CompactorConfig {
            agent_id: "compactor".into(),
            target_bytes: 64 << 20,
            lease_ttl: Duration::from_secs(60),
            interval: Duration::from_millis(100),
            min_age: Duration::ZERO,
            min_inputs: 2,
            parquet: ParquetConfig::default(),
            read_batch_rows: 1024,
            memory_bytes: 64 << 20,
            max_inputs: 256,
        };
        let compactor = Compactor::new(lake, catalog, Metrics::new(), config);
        let done = compactor.run_once().await.unwrap();
        assert!(done.is_some(), "nothing was compacted");
    });
}

fn scenario_large_put() {
    let Some(dir) = scenario_dir() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Above the lake's multipart threshold (16 MiB): written as a multipart upload.
        let bytes = vec![7u8; 17 << 20];
        let key = segment_key(Uuid::now_v7());
        open_lake(&dir).put(&key.to_string(), bytes).await.unwrap();
        std::fs::File::create(dir.join("put-returned")).unwrap();
    });
}

fn scenario_large_entries() {
    use std::io::Write;
    let Some(dir) = scenario_dir() else { return };
    let buffer = open_buffer(&dir);
    let mut acks = std::fs::File::create(dir.join("acks")).unwrap();
    let mut rng = Rng(3);
    for i in 0..12 {
        let rows = logs(&mut rng, 1, 400 << 10);
        let entry = Batch::new("acme", Signal::Logs, "test", 0, rows);
        let partition = Partition::of(BASE);
        let encoded = encode_entry(partition, &entry).unwrap().len();
        assert!(
            encoded > 390 << 10,
            "entry of {encoded} bytes was compressed"
        );
        let seq = buffer.append(&[(partition, entry)]).unwrap();
        buffer.sync(seq).unwrap();
        // The acknowledgement, as a marker in the trace.
        acks.write_all(format!("{i}\n").as_bytes()).unwrap();
    }
}

/// Changes of the embedded index, each followed by a write to `acks` once its call returned.
fn scenario_index() {
    use std::io::Write;
    let Some(dir) = scenario_dir() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let catalog = SledCatalog::open(&dir.join("index")).unwrap();
        let mut acks = std::fs::File::create(dir.join("acks")).unwrap();
        let mut ack = |what: &str| acks.write_all(format!("{what}\n").as_bytes()).unwrap();
        let segment = |i: i64| {
            let id = Uuid::now_v7();
            SegmentRecord {
                id,
                tenant: "acme".into(),
                signal: "logs".into(),
                object_key: segment_key(id).to_string(),
                partition: PARTITION.into(),
                min_timestamp: BASE + i,
                max_timestamp: BASE + i + 1,
                row_count: 10,
                bytes: 100,
                services: vec!["api".into()],
                schema_version: 1,
                agent_id: "test".into(),
                created_at: 0,
                state: SegmentState::Active,
                replaced_by: None,
                retired_at: None,
                purged_at: None,
            }
        };
        let inputs: Vec<SegmentRecord> = (0..3).map(segment).collect();
        catalog.register(&inputs).await.unwrap();
        ack("registered");
        let request = |ttl_ms: u64| LeaseRequest {
            agent_id: "compactor".into(),
            ttl_ms,
            target_bytes: 1 << 20,
            min_inputs: 2,
            max_inputs: 256,
            min_age_ms: 0,
            tenant: Some("acme".into()),
            schema_version: None,
        };
        let lease = catalog
            .lease_compaction(&request(60_000))
            .await
            .unwrap()
            .expect("a plan over three small segments");
        ack("leased");
        let mut output = segment(0);
        output.max_timestamp = BASE + 3;
        output.row_count = 30;
        catalog
            .commit_compaction(lease.lease_id, &[output])
            .await
            .unwrap();
        ack("committed");
        let policy = RetentionPolicy {
            default_max_age_ns: Some(1),
            rules: Vec::new(),
        };
        let expired = catalog.expire(&policy, i64::MAX, false).await.unwrap();
        assert_eq!(expired.len(), 1);
        ack("expired");
        // A lease that expires unused, then is abandoned (the sweeper deletes its output next).
        catalog.register(&[segment(10), segment(11)]).await.unwrap();
        ack("registered again");
        let open = catalog
            .lease_compaction(&request(1_000))
            .await
            .unwrap()
            .expect("a plan over two small segments");
        ack("leased again");
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let abandoned = catalog
            .abandon_expired_leases(weir_catalog::now_ns(), 10)
            .await
            .unwrap();
        assert_eq!(abandoned.len(), 1);
        assert_eq!(abandoned[0].lease_id, open.lease_id);
        ack("abandoned");
    });
}
