//! Buffer tests: entry format, a model-based property test with restarts, and a soak test.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};

use arrow_array::RecordBatch;
use proptest::prelude::*;

use super::*;
use crate::otlp::decode_logs;
use crate::Batch;
use weir_schema::Signal;

pub(super) fn logs_batch(rows: usize, tag: u64) -> Batch {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..rows)
                    .map(|i| LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                        body: Some(AnyValue {
                            value: Some(Value::StringValue(format!(
                                "entry {tag} row {i} {}",
                                "x".repeat(64)
                            ))),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Batch {
        tenant: format!("t{}", tag % 3),
        signal: Signal::Logs,
        source: "test".into(),
        received_at: tag as i64,
        records: decode_logs(&req, 0, &crate::DecodeBudget::unlimited())
            .unwrap()
            .records,
        // Some entries carry a dead-letter reason, so round trips cover that field too.
        dead_letter: tag
            .is_multiple_of(5)
            .then(|| format!("transform failed on batch {tag}")),
    }
}

pub(super) fn app(buf: &SledBuffer, hour: i64, b: &Batch) -> Result<u64, BufferError> {
    buf.append(&[(Partition { hour }, b.clone())])
}

pub(super) fn open(dir: &std::path::Path, max_bytes: u64) -> SledBuffer {
    SledBuffer::open(&SledBufferConfig {
        path: dir.to_path_buf(),
        max_bytes,
    })
    .unwrap()
}

#[test]
fn entry_round_trip_and_crc() {
    let b = logs_batch(5, 7);
    let p = Partition { hour: 42 };
    let bytes = encode_entry(p, &b).unwrap();
    let (p2, b2) = decode_entry(1, &bytes).unwrap();
    assert_eq!((p2, &b2), (p, &b));
    let mut bad = bytes.clone();
    let last = bad.len() - 10;
    bad[last] ^= 0xff;
    let err = decode_entry(1, &bad).unwrap_err();
    assert!(err.to_string().contains("crc32c mismatch"), "{err}");
    assert!(decode_entry(1, &bytes[..10]).is_err());
}

#[test]
fn version_1_entries_still_decode() {
    let mut b = logs_batch(3, 1);
    b.dead_letter = None;
    let v2 = encode_entry(Partition { hour: 7 }, &b).unwrap();
    // A version-1 entry is the same without the 2-byte dead-letter length after the source.
    let source_end = 22 + 1 + b.tenant.len() + 1 + b.source.len();
    let mut v1 = v2[..source_end].to_vec();
    v1.extend_from_slice(&v2[source_end + 2..]);
    v1[0] = 1;
    let crc = crc32c::crc32c(&v1[5..]);
    v1[1..5].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(decode_entry(1, &v1).unwrap(), (Partition { hour: 7 }, b));
}

#[test]
fn corrupt_entries_are_moved_aside_not_skipped_silently() {
    let dir = tempfile::tempdir().unwrap();
    let buf = open(dir.path(), 1 << 30);
    let a = app(&buf, 1, &logs_batch(2, 1)).unwrap();
    let b = app(&buf, 1, &logs_batch(2, 2)).unwrap();
    // Damage entry a in place.
    let mut v = buf.entries.get(a.to_be_bytes()).unwrap().unwrap().to_vec();
    let n = v.len();
    v[n - 3] ^= 0x55;
    buf.entries.insert(a.to_be_bytes(), v).unwrap();
    let got = buf.read(None, 10).unwrap();
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![b]);
    assert_eq!(buf.corrupt_entries(), 1);
    assert_eq!(buf.stats().entries, 1);
    assert!(buf.corrupt.get(a.to_be_bytes()).unwrap().is_some());
}

#[test]
fn full_and_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let one = encode_entry(Partition { hour: 0 }, &logs_batch(3, 0))
        .unwrap()
        .len() as u64;
    let buf = open(dir.path(), one * 2 + one / 2);
    app(&buf, 0, &logs_batch(3, 0)).unwrap();
    app(&buf, 0, &logs_batch(3, 0)).unwrap();
    assert!(matches!(
        app(&buf, 0, &logs_batch(3, 0)),
        Err(BufferError::Full { .. })
    ));
    assert!(matches!(
        app(&buf, 0, &logs_batch(20_000, 0)),
        Err(BufferError::TooLarge { .. })
    ));
    let seqs: Vec<u64> = buf.read(None, 10).unwrap().iter().map(|e| e.seq).collect();
    buf.remove(&seqs[..1]).unwrap();
    app(&buf, 0, &logs_batch(3, 0)).unwrap();
}

/// A reload's new `buffer.max_bytes` applies to the next append: lowered under the live
/// bytes, appends are refused as full and nothing buffered goes; raised, they fit again.
#[test]
fn max_bytes_changes_on_a_live_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let one = encode_entry(Partition { hour: 0 }, &logs_batch(3, 0))
        .unwrap()
        .len() as u64;
    let buf = open(dir.path(), one * 10);
    app(&buf, 0, &logs_batch(3, 0)).unwrap();
    app(&buf, 0, &logs_batch(3, 0)).unwrap();
    buf.set_max_bytes(one);
    assert!(matches!(
        app(&buf, 0, &logs_batch(3, 0)),
        Err(BufferError::Full { max, .. }) if max == one
    ));
    assert_eq!(buf.stats().entries, 2);
    buf.set_max_bytes(one * 3 + one / 2);
    app(&buf, 0, &logs_batch(3, 0)).unwrap();
    assert_eq!(buf.stats().entries, 3);
}

#[test]
fn split_keeps_every_row_in_order() {
    let big = logs_batch(20_000, 1);
    let rows = big.num_rows();
    let pieces = split_for_entries(big.clone());
    assert!(pieces.len() > 1);
    let total: usize = pieces.iter().map(|p| p.num_rows()).sum();
    assert_eq!(total, rows);
    for p in &pieces {
        let enc = encode_entry(Partition { hour: 0 }, p).unwrap();
        assert!(enc.len() <= MAX_ENTRY_BYTES, "{}", enc.len());
    }
    let merged = arrow_select::concat::concat_batches(
        &big.records.schema(),
        pieces.iter().map(|p| &p.records),
    )
    .unwrap();
    assert_eq!(merged, big.records);
}

#[test]
fn group_commit_from_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    let buf = Arc::new(open(dir.path(), 1 << 30));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let buf = buf.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    let seq = app(&buf, 0, &logs_batch(2, t * 100 + i)).unwrap();
                    buf.sync(seq).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let seqs: Vec<u64> = buf
        .read(None, 1000)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (0..160).collect::<Vec<_>>());
}

/// A [`FileSync`] that fails the data file's next `fdatasync` on demand, once, as Linux
/// reports a writeback error once: a retry after it succeeds although the kernel may have
/// dropped the pages. With `hold`, the failing call first waits until `release`, so other
/// requests can queue behind the group commit it belongs to.
#[derive(Default)]
struct FaultySync {
    state: Mutex<Fault>,
    changed: Condvar,
}

#[derive(Default)]
struct Fault {
    armed: bool,
    hold: bool,
    held: bool,
    released: bool,
}

impl FaultySync {
    fn fail_next_db_sync(&self, hold: bool) {
        let mut s = self.state.lock().unwrap();
        *s = Fault {
            armed: true,
            hold,
            ..Fault::default()
        };
    }

    fn wait_until_held(&self) {
        let s = self.state.lock().unwrap();
        drop(self.changed.wait_while(s, |s| !s.held).unwrap());
    }

    fn release(&self) {
        self.state.lock().unwrap().released = true;
        self.changed.notify_all();
    }
}

impl FileSync for FaultySync {
    fn sync_data(&self, file: &std::fs::File, path: &std::path::Path) -> std::io::Result<()> {
        let mut s = self.state.lock().unwrap();
        if s.armed && path.ends_with("db") {
            s.armed = false;
            if s.hold {
                s.held = true;
                self.changed.notify_all();
                s = self.changed.wait_while(s, |s| !s.released).unwrap();
            }
            drop(s);
            return Err(std::io::Error::other("injected EIO"));
        }
        drop(s);
        file.sync_data()
    }

    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

fn open_faulty(dir: &std::path::Path) -> (Arc<SledBuffer>, Arc<FaultySync>) {
    let sync = Arc::new(FaultySync::default());
    let buf = SledBuffer::open_with_sync(
        &SledBufferConfig {
            path: dir.to_path_buf(),
            max_bytes: 1 << 30,
        },
        sync.clone(),
    )
    .unwrap();
    (Arc::new(buf), sync)
}

fn assert_names_failed_fsync(what: &str, r: Result<impl std::fmt::Debug, BufferError>) {
    match r {
        Err(e @ BufferError::SyncFailed(_)) => {
            let msg = e.to_string();
            assert!(
                msg.contains("fdatasync") && msg.contains("injected EIO"),
                "{what}: error does not name the failed fsync: {msg}"
            );
        }
        other => panic!("{what} after a failed fsync: want SyncFailed, got {other:?}"),
    }
}

/// After a failed fsync nothing may be acknowledged any more: not the failed group (a retry
/// would succeed and ack pages the kernel dropped), not later appends, until the buffer is
/// reopened, which recovers what is actually on disk.
#[test]
fn a_failed_fsync_stops_acknowledgements_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let (buf, sync) = open_faulty(dir.path());
    let a = app(&buf, 0, &logs_batch(2, 1)).unwrap();
    buf.sync(a).unwrap();

    sync.fail_next_db_sync(false);
    let b = app(&buf, 0, &logs_batch(2, 2)).unwrap();
    assert!(
        buf.sync(b).is_err(),
        "the injected fsync failure was not reported"
    );
    assert_names_failed_fsync("retried sync", buf.sync(b));
    assert_names_failed_fsync("append", app(&buf, 0, &logs_batch(2, 3)));
    assert_names_failed_fsync("sync_all", buf.sync_all());
    assert_names_failed_fsync("remove", buf.remove(&[a]));
    assert_names_failed_fsync(
        "ledger_put",
        buf.ledger_put(Ledger::Outbox, b"id", b"value"),
    );
    // What was durable before can still be read (and flushed by a reopened buffer).
    assert_eq!(buf.read(None, 10).unwrap()[0].seq, a);
    // The failure is reported (the admin /livez and /healthz show it).
    assert!(
        buf.failure().is_some_and(|f| f.contains("injected EIO")),
        "{:?}",
        buf.failure()
    );

    drop(buf);
    let buf = open(dir.path(), 1 << 30);
    assert_eq!(buf.failure(), None);
    assert_eq!(buf.read(None, 1).unwrap()[0].seq, a);
    let c = app(&buf, 0, &logs_batch(2, 4)).unwrap();
    buf.sync(c).unwrap();
}

/// Requests waiting on a group commit whose fsync fails all fail: none of them becomes the
/// next leader and acknowledges after a retry that succeeds.
#[test]
fn a_failed_group_commit_fails_every_waiting_request() {
    let dir = tempfile::tempdir().unwrap();
    let (buf, sync) = open_faulty(dir.path());
    sync.fail_next_db_sync(true);
    let a = app(&buf, 0, &logs_batch(2, 1)).unwrap();
    let leader = {
        let buf = buf.clone();
        std::thread::spawn(move || buf.sync(a))
    };
    sync.wait_until_held();
    let b = app(&buf, 0, &logs_batch(2, 2)).unwrap();
    let waiter = {
        let buf = buf.clone();
        std::thread::spawn(move || buf.sync(b))
    };
    // Let the second request queue behind the leader; if it arrives after the failure
    // instead, it must fail all the same.
    std::thread::sleep(std::time::Duration::from_millis(200));
    sync.release();
    assert!(
        leader.join().unwrap().is_err(),
        "the failed fsync was acknowledged"
    );
    assert_names_failed_fsync("waiting request", waiter.join().unwrap());
}

/// Pushes 60 times `max_bytes` through the buffer (append, sync, read, remove) and checks
/// that sled's files stay bounded: sled reuses the segments of removed entries, so its
/// footprint plateaus at a few segments plus the live data instead of growing with the flow.
#[test]
fn soak_disk_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let max_bytes: u64 = 4 << 20;
    let buf = open(dir.path(), max_bytes);
    let batch = logs_batch(400, 9);
    let entry = encode_entry(Partition { hour: 0 }, &batch).unwrap().len() as u64;
    let mut pushed = 0u64;
    let mut disk = Vec::new();
    while pushed < 60 * max_bytes {
        // Fill to about half of max_bytes, then drain, as a slow flusher would.
        while buf.stats().bytes + entry < max_bytes / 2 {
            let seq = app(&buf, 0, &batch).unwrap();
            buf.sync(seq).unwrap();
            pushed += entry;
        }
        let seqs: Vec<u64> = buf
            .read(None, usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        buf.remove(&seqs).unwrap();
        buf.sync_all().unwrap();
        disk.push(buf.disk_bytes());
    }
    assert_eq!(buf.stats(), BufferStats::default());
    let peak = disk.iter().copied().max().unwrap_or(0);
    let (first, second) = disk.split_at(disk.len() / 2);
    let first_peak = first.iter().copied().max().unwrap_or(0);
    let second_peak = second.iter().copied().max().unwrap_or(0);
    let bound = 2 * max_bytes + 6 * SEGMENT_SIZE as u64;
    assert!(
        peak <= bound,
        "sled files grew to {peak} bytes (bound {bound}) after {pushed} bytes flowed through a {max_bytes}-byte buffer"
    );
    assert!(
        second_peak <= first_peak + SEGMENT_SIZE as u64,
        "sled files keep growing: peak {first_peak} in the first half, {second_peak} in the second"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Read(usize),
    RemoveOldest(usize),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..20).prop_map(Op::Append),
        2 => (1usize..10).prop_map(Op::Read),
        2 => (1usize..5).prop_map(Op::RemoveOldest),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Random appends, reads, removals and restarts against an in-memory model: the buffer
    /// returns exactly the model's entries, in order, with the same contents and byte count.
    #[test]
    fn buffer_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = open(dir.path(), 1 << 30);
        let mut model: BTreeMap<u64, RecordBatch> = BTreeMap::new();
        let mut tag = 0u64;
        for op in ops {
            match op {
                Op::Append(rows) => {
                    tag += 1;
                    let b = logs_batch(rows, tag);
                    let seq = app(&buf, 3, &b).unwrap();
                    buf.sync(seq).unwrap();
                    prop_assert!(model.keys().all(|&k| k < seq), "sequence numbers must grow");
                    model.insert(seq, b.records);
                }
                Op::Read(max) => {
                    let got = buf.read(None, max).unwrap();
                    let want: Vec<_> = model.iter().take(max).collect();
                    prop_assert_eq!(got.len(), want.len());
                    for (e, (seq, rb)) in got.iter().zip(want) {
                        prop_assert_eq!(e.seq, *seq);
                        prop_assert_eq!(&e.batch.records, rb);
                        prop_assert_eq!(e.partition, Partition { hour: 3 });
                    }
                }
                Op::RemoveOldest(n) => {
                    let seqs: Vec<u64> = model.keys().take(n).copied().collect();
                    buf.remove(&seqs).unwrap();
                    for s in seqs { model.remove(&s); }
                }
                Op::Restart => {
                    buf.sync_all().unwrap();
                    drop(buf);
                    buf = open(dir.path(), 1 << 30);
                }
            }
            prop_assert_eq!(buf.stats().entries, model.len() as u64);
        }
        let all = buf.read(None, usize::MAX).unwrap();
        let bytes: u64 = all.iter().map(|e| e.bytes).sum();
        prop_assert_eq!(buf.stats().bytes, bytes);
    }
}

#[test]
fn checkpoints_commit_with_their_entries_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let p = Partition { hour: 1 };
    let ck = |id: &str, v: &str| (id.as_bytes().to_vec(), v.as_bytes().to_vec());
    {
        let buf = open(dir.path(), 16 << 10);
        let seq = buf
            .append_with(
                &[(p, logs_batch(3, 1))],
                Ledger::Checkpoints,
                &[ck("f/1", "10")],
            )
            .unwrap()
            .unwrap();
        buf.sync(seq).unwrap();
        // Refused for space: neither the entry nor the checkpoint is written.
        let big = logs_batch(5_000, 2);
        let refused = buf.append_with(&[(p, big)], Ledger::Checkpoints, &[ck("f/1", "99")]);
        assert!(
            matches!(
                refused,
                Err(BufferError::Full { .. }) | Err(BufferError::TooLarge { .. })
            ),
            "{refused:?}"
        );
        // No rows (a transform dropped them all): the checkpoint alone advances.
        assert_eq!(
            buf.append_with(&[], Ledger::Checkpoints, &[ck("f/2", "5")])
                .unwrap(),
            None
        );
        buf.sync_all().unwrap();
    }
    let buf = open(dir.path(), 16 << 10);
    assert_eq!(buf.read(None, 10).unwrap().len(), 1);
    assert_eq!(
        buf.ledger_list(Ledger::Checkpoints).unwrap(),
        vec![ck("f/1", "10"), ck("f/2", "5")]
    );
}
