//! Tests of the payload files under the buffer: where an entry's bytes go, when a file goes
//! away, what a power cut or a damaged file leaves, and that entries stored whole in sled (by
//! versions before payload files) still read.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::payloads::PAYLOAD_FILE_BYTES;
use super::tests::{app, logs_batch, open};
use super::*;

const P: Partition = Partition { hour: 3 };

fn payload_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("payloads"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn entry_len(b: &Batch) -> u64 {
    encode_entry(P, b).unwrap().len() as u64
}

fn seqs(buf: &SledBuffer) -> Vec<u64> {
    buf.read(None, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect()
}

#[test]
fn entry_bytes_live_in_payload_files_until_drained() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (logs_batch(50, 1), logs_batch(70, 2));
    {
        let buf = open(dir.path(), 1 << 30);
        let sa = app(&buf, 3, &a).unwrap();
        let sb = app(&buf, 3, &b).unwrap();
        buf.sync(sb).unwrap();
        // sled holds a 21-byte pointer, not the entry.
        for seq in [sa, sb] {
            let v = buf.entries.get(seq.to_be_bytes()).unwrap().unwrap();
            assert_eq!(v.len(), 21, "sled value of entry {seq}");
        }
        let files = payload_files(dir.path());
        assert_eq!(files.len(), 1, "{files:?}");
        let size = std::fs::metadata(&files[0]).unwrap().len();
        assert_eq!(size, entry_len(&a) + entry_len(&b));
        assert_eq!(buf.stats().bytes, size);
        let got = buf.read(None, 10).unwrap();
        assert_eq!(got[0].batch, a);
        assert_eq!(got[1].batch, b);
        assert_eq!(got[1].bytes, entry_len(&b));
        // One live entry keeps the file.
        buf.remove(&[sa]).unwrap();
        buf.sync_all().unwrap();
        assert_eq!(payload_files(dir.path()), files);
    }
    let buf = open(dir.path(), 1 << 30);
    let got = buf.read(None, 10).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].batch, b);
    assert_eq!(buf.stats().bytes, entry_len(&b));
    buf.remove(&[got[0].seq]).unwrap();
    // The removal is durable after this commit, and only then is the file deleted.
    assert_eq!(payload_files(dir.path()).len(), 1);
    buf.sync_all().unwrap();
    assert_eq!(payload_files(dir.path()), Vec::<PathBuf>::new());
    assert_eq!(buf.stats(), BufferStats::default());
    // A new append starts a new file.
    let s = app(&buf, 3, &a).unwrap();
    buf.sync(s).unwrap();
    assert_eq!(payload_files(dir.path()).len(), 1);
    assert_eq!(buf.read(None, 10).unwrap()[0].batch, a);
}

/// A power cut after entries were written but before a commit covered them: their pointers
/// may be on disk (sled's own flush) while their bytes are not. Those entries were never
/// acknowledged; they are removed at open, not reported corrupt, and the committed ones stay.
#[test]
fn a_power_cut_removes_only_entries_no_commit_covered() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (logs_batch(20, 1), logs_batch(20, 2), logs_batch(20, 3));
    {
        let buf = open(dir.path(), 1 << 30);
        let sa = app(&buf, 3, &a).unwrap();
        buf.sync(sa).unwrap();
        app(&buf, 3, &b).unwrap();
        app(&buf, 3, &c).unwrap();
        // Dropping flushes sled, as its background flush may have: b's and c's pointers
        // are on disk.
    }
    let file = payload_files(dir.path())[0].clone();
    let (la, lb) = (entry_len(&a), entry_len(&b));
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    // b's bytes read as zeros, c's are past the end of the file.
    use std::os::unix::fs::FileExt;
    f.write_all_at(&vec![0u8; lb as usize], la).unwrap();
    f.set_len(la + lb).unwrap();
    drop(f);
    let buf = open(dir.path(), 1 << 30);
    let got = buf.read(None, 10).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].batch, a);
    assert_eq!(buf.corrupt_entries(), 0);
    assert_eq!(buf.stats().entries, 1);
    assert_eq!(buf.stats().bytes, la);
}

/// A crash of the process (not of the machine) keeps entries written after the last commit:
/// their bytes are whole in the file, so they stay.
#[test]
fn a_process_crash_keeps_uncommitted_entries_whose_bytes_are_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (logs_batch(20, 1), logs_batch(20, 2));
    {
        let buf = open(dir.path(), 1 << 30);
        let sa = app(&buf, 3, &a).unwrap();
        buf.sync(sa).unwrap();
        app(&buf, 3, &b).unwrap();
    }
    let buf = open(dir.path(), 1 << 30);
    let got = buf.read(None, 10).unwrap();
    assert_eq!(
        got.iter().map(|e| &e.batch).collect::<Vec<_>>(),
        vec![&a, &b]
    );
    assert_eq!(buf.corrupt_entries(), 0);
}

/// Bytes a commit made durable that later fail their checks are corruption: the entry is
/// moved aside with its bytes, and the others still read.
#[test]
fn damaged_or_missing_payload_bytes_are_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (logs_batch(20, 1), logs_batch(20, 2));
    let buf = open(dir.path(), 1 << 30);
    let sa = app(&buf, 3, &a).unwrap();
    let sb = app(&buf, 3, &b).unwrap();
    buf.sync(sb).unwrap();
    let file = payload_files(dir.path())[0].clone();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 0x5a;
    std::fs::write(&file, &bytes).unwrap();
    assert_eq!(seqs(&buf), vec![sb]);
    assert_eq!(buf.corrupt_entries(), 1);
    let aside = buf.corrupt.get(sa.to_be_bytes()).unwrap().unwrap();
    assert_eq!(
        aside.len() as u64,
        entry_len(&a),
        "the damaged bytes are kept"
    );
    assert_eq!(buf.stats().bytes, entry_len(&b));
    buf.sync_all().unwrap();
    drop(buf);

    // The file is gone altogether: b is moved aside too, naming the file.
    std::fs::remove_file(&file).unwrap();
    let buf = open(dir.path(), 1 << 30);
    assert_eq!(
        buf.stats().entries,
        1,
        "a committed pointer stays until it is read"
    );
    assert_eq!(seqs(&buf), Vec::<u64>::new());
    assert_eq!(buf.corrupt_entries(), 2);
    assert_eq!(buf.stats(), BufferStats::default());
}

/// Entries written by versions that kept them whole in sled still read, count and go.
#[test]
fn entries_stored_whole_in_sled_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (logs_batch(10, 1), logs_batch(10, 2));
    {
        let buf = open(dir.path(), 1 << 30);
        let value = encode_entry(P, &old).unwrap();
        buf.entries.insert(5u64.to_be_bytes(), value).unwrap();
        buf.sync_all().unwrap();
    }
    let buf = open(dir.path(), 1 << 30);
    assert_eq!(buf.stats().bytes, entry_len(&old));
    let s = app(&buf, 3, &new).unwrap();
    assert_eq!(s, 6, "sequence numbers continue after the old entries");
    let got = buf.read(None, 10).unwrap();
    assert_eq!(got[0].batch, old);
    assert_eq!(got[1].batch, new);
    buf.remove(&[5, 6]).unwrap();
    assert_eq!(buf.stats(), BufferStats::default());
}

/// Records every synced path; fails payload-file syncs once armed.
#[derive(Default)]
struct Recorder {
    synced: Mutex<Vec<PathBuf>>,
    fail_payloads: AtomicBool,
}

impl Recorder {
    fn payload_syncs(&self) -> usize {
        let synced = self.synced.lock().unwrap();
        synced
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "wpl"))
            .count()
    }
}

impl FileSync for Recorder {
    fn sync_data(&self, file: &std::fs::File, path: &Path) -> std::io::Result<()> {
        if path.extension().is_some_and(|e| e == "wpl") && self.fail_payloads.load(Ordering::SeqCst)
        {
            return Err(std::io::Error::other("injected EIO"));
        }
        self.synced.lock().unwrap().push(path.to_path_buf());
        file.sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

fn open_recorded(dir: &Path) -> (SledBuffer, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let buf = SledBuffer::open_with_sync(
        &SledBufferConfig {
            path: dir.to_path_buf(),
            max_bytes: 1 << 30,
        },
        rec.clone(),
    )
    .unwrap();
    (buf, rec)
}

/// A read position must never be durable without the lines read up to it: an append carrying
/// ledger records makes its bytes durable before its pointers are inserted, while a plain
/// append leaves that to the commit.
#[test]
fn an_append_with_checkpoints_syncs_its_bytes_first() {
    let dir = tempfile::tempdir().unwrap();
    let (buf, rec) = open_recorded(dir.path());
    app(&buf, 3, &logs_batch(5, 1)).unwrap();
    assert_eq!(rec.payload_syncs(), 0);
    buf.append_with(
        &[(P, logs_batch(5, 2))],
        Ledger::Checkpoints,
        &[(b"f/1".to_vec(), b"10".to_vec())],
    )
    .unwrap();
    assert_eq!(rec.payload_syncs(), 1);
}

/// A failed `fdatasync` of a payload file fails the commit, and every later one, until the
/// buffer is reopened (as a failed sync of sled's own file does).
#[test]
fn a_failed_payload_sync_is_final_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let a = logs_batch(5, 1);
    {
        let (buf, rec) = open_recorded(dir.path());
        let sa = app(&buf, 3, &a).unwrap();
        rec.fail_payloads.store(true, Ordering::SeqCst);
        let err = buf.sync(sa).unwrap_err();
        assert!(
            matches!(err, BufferError::SyncFailed(_))
                && err.to_string().contains("fdatasync")
                && err.to_string().contains(".wpl")
                && err.to_string().contains("injected EIO"),
            "{err}"
        );
        rec.fail_payloads.store(false, Ordering::SeqCst);
        assert!(matches!(app(&buf, 3, &a), Err(BufferError::SyncFailed(_))));
        assert!(matches!(buf.sync_all(), Err(BufferError::SyncFailed(_))));
    }
    // Reopened: what is on disk is recovered (here the bytes reached the file).
    let buf = open(dir.path(), 1 << 30);
    assert_eq!(buf.read(None, 10).unwrap()[0].batch, a);
}

fn checkpoint(n: u64) -> Vec<JournalEntry> {
    vec![(b"f/1".to_vec(), n.to_string().into_bytes())]
}

/// Bytes an append with read positions synced are recorded durable like a commit's, so at
/// open a damaged entry among them is corruption (moved aside when read), not an entry that
/// "never reached the disk" removed with its read position kept.
#[test]
fn entries_of_appends_with_checkpoints_are_recorded_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (logs_batch(20, 1), logs_batch(20, 2));
    {
        let buf = open(dir.path(), 1 << 30);
        for (i, batch) in [&a, &b].into_iter().enumerate() {
            buf.append_with(
                &[(P, batch.clone())],
                Ledger::Checkpoints,
                &checkpoint(i as u64),
            )
            .unwrap();
        }
        // No commit: the tailers' appends alone made the bytes durable.
    }
    let file = payload_files(dir.path())[0].clone();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 0x5a;
    std::fs::write(&file, &bytes).unwrap();
    let buf = open(dir.path(), 1 << 30);
    assert_eq!(buf.stats().entries, 2, "nothing removed at open");
    let got = buf.read(None, 10).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].batch, b);
    assert_eq!(buf.corrupt_entries(), 1);
}

/// A payload file that is gone while pointers into it remain must not have its name taken by
/// a new file: the stale pointers would read, or release, the new file's entries.
#[test]
fn a_missing_file_name_is_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (logs_batch(20, 1), logs_batch(20, 2));
    {
        let buf = open(dir.path(), 1 << 30);
        let s = app(&buf, 3, &a).unwrap();
        buf.sync(s).unwrap();
    }
    let files = payload_files(dir.path());
    std::fs::remove_file(&files[0]).unwrap();
    let buf = open(dir.path(), 1 << 30);
    let sb = app(&buf, 3, &b).unwrap();
    buf.sync(sb).unwrap();
    let now = payload_files(dir.path());
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], files[0], "a new file took a missing file's name");
    // The stale entry is moved aside; b reads, and its file survives the commits after.
    assert_eq!(seqs(&buf), vec![sb]);
    assert_eq!(buf.corrupt_entries(), 1);
    buf.sync_all().unwrap();
    buf.sync_all().unwrap();
    assert_eq!(buf.read(None, 10).unwrap()[0].batch, b);
}

/// A failed `fdatasync` of a tailer's append is final at once: later appends, plain ones
/// included, are refused and the buffer reports the failure, before any commit runs.
#[test]
fn a_failed_sync_of_an_append_with_checkpoints_is_final() {
    let dir = tempfile::tempdir().unwrap();
    let (buf, rec) = open_recorded(dir.path());
    rec.fail_payloads.store(true, Ordering::SeqCst);
    let err = buf
        .append_with(
            &[(P, logs_batch(5, 1))],
            Ledger::Checkpoints,
            &checkpoint(1),
        )
        .unwrap_err();
    assert!(matches!(err, BufferError::SyncFailed(_)), "{err}");
    rec.fail_payloads.store(false, Ordering::SeqCst);
    assert!(buf.failure().is_some_and(|f| f.contains("injected EIO")));
    assert!(matches!(
        app(&buf, 3, &logs_batch(5, 2)),
        Err(BufferError::SyncFailed(_))
    ));
    assert_eq!(buf.ledger_list(Ledger::Checkpoints).unwrap(), vec![]);
}

/// With `ack = "buffered"` nothing calls a commit: the payload files are still synced (and
/// recorded) within about a second.
#[test]
fn unsynced_payload_bytes_are_synced_periodically() {
    let dir = tempfile::tempdir().unwrap();
    let (buf, rec) = open_recorded(dir.path());
    buf.set_sync_period(std::time::Duration::from_millis(100));
    app(&buf, 3, &logs_batch(5, 1)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rec.payload_syncs() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no periodic sync in 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A few entries the flusher cannot remove yet must not keep whole files on disk: once the
/// files hold more than twice the live bytes plus two files, the live entries of the sparsest
/// files move to the newest one and those files are deleted.
#[test]
fn live_entries_leave_mostly_empty_files() {
    let dir = tempfile::tempdir().unwrap();
    let buf = open(dir.path(), 1 << 30);
    let mut kept = Vec::new();
    let mut gone = Vec::new();
    for i in 0..300u64 {
        let batch = logs_batch(40, i + 1);
        let seq = app(&buf, 3, &batch).unwrap();
        if i % 10 == 0 {
            kept.push((seq, batch));
        } else {
            gone.push(seq);
        }
    }
    buf.sync_all().unwrap();
    let files_before = payload_files(dir.path()).len();
    assert!(
        files_before >= 6,
        "the test needs several files: {files_before}"
    );
    buf.remove(&gone).unwrap();
    buf.sync_all().unwrap();
    assert!(buf.relocations() > 0);
    let disk = |dir: &Path| -> u64 {
        payload_files(dir)
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum()
    };
    let live = buf.stats().bytes;
    assert!(
        disk(dir.path()) <= 2 * live + 3 * PAYLOAD_FILE_BYTES,
        "payload files hold {} bytes for {live} live ({files_before} files before)",
        disk(dir.path())
    );
    let check = |buf: &SledBuffer| {
        let got = buf.read(None, usize::MAX).unwrap();
        assert_eq!(
            got.iter().map(|e| (e.seq, &e.batch)).collect::<Vec<_>>(),
            kept.iter().map(|(s, b)| (*s, b)).collect::<Vec<_>>()
        );
        assert_eq!(buf.corrupt_entries(), 0);
    };
    check(&buf);
    drop(buf);
    let buf = open(dir.path(), 1 << 30);
    check(&buf);
    assert_eq!(buf.stats().bytes, live);
    // Every count was kept right: removing the rest leaves no file and no bytes.
    let rest: Vec<u64> = kept.iter().map(|(s, _)| *s).collect();
    buf.remove(&rest).unwrap();
    buf.sync_all().unwrap();
    assert_eq!(buf.stats(), BufferStats::default());
    assert_eq!(payload_files(dir.path()), Vec::<PathBuf>::new());
}

/// A flusher that keeps up drains in order: its garbage is the file it is draining, so no
/// entry is ever copied.
#[test]
fn an_in_order_drain_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let buf = open(dir.path(), 1 << 30);
    let mut live = std::collections::VecDeque::new();
    for i in 0..400u64 {
        let seq = app(&buf, 3, &logs_batch(40, i + 1)).unwrap();
        live.push_back(seq);
        if live.len() > 32 {
            let old: Vec<u64> = live.drain(..8).collect();
            buf.remove(&old).unwrap();
            buf.sync_all().unwrap();
        }
    }
    assert!(payload_files(dir.path()).len() <= 3);
    assert_eq!(buf.relocations(), 0);
}

/// A file lost while pointers into it remain: its entries are corruption at every open, not
/// "never written" at the second one.
#[test]
fn a_missing_file_stays_corruption_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let buf = open(dir.path(), 1 << 30);
        let s = app(&buf, 3, &logs_batch(20, 1)).unwrap();
        buf.sync(s).unwrap();
    }
    std::fs::remove_file(&payload_files(dir.path())[0]).unwrap();
    drop(open(dir.path(), 1 << 30));
    let buf = open(dir.path(), 1 << 30);
    assert_eq!(buf.stats().entries, 1);
    assert_eq!(buf.read(None, 10).unwrap().len(), 0);
    assert_eq!(buf.corrupt_entries(), 1);
}
