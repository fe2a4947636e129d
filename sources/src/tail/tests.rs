//! The engine against a real buffer and real files: every line once, across restarts,
//! rotation by rename, copytruncate, rewritten files and a full buffer.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, StringArray};
use tokio::sync::Notify;
use weir_pipelines::buffer::{AckMode, Buffer, SledBuffer, SledBufferConfig};
use weir_pipelines::ingest::{Ingest, IngestError};
use weir_pipelines::metrics::Metrics;
use weir_pipelines::units::{ByteSize, HumanDuration};

use super::*;

struct Plain;

impl Describe for Plain {
    fn describe(&self, _: &Path) -> Option<FileMeta> {
        Some(FileMeta::default())
    }
}

fn settings() -> TailSettings {
    TailSettings {
        rotate_wait: HumanDuration(Duration::ZERO),
        merge_timeout: HumanDuration(Duration::ZERO),
        rescan_interval: HumanDuration(Duration::ZERO),
        max_read_bytes: ByteSize(4 << 10),
        ..TailSettings::default()
    }
}

fn buffer(dir: &Path, max_bytes: u64) -> Arc<SledBuffer> {
    Arc::new(
        SledBuffer::open(&SledBufferConfig {
            path: dir.join("buffer"),
            max_bytes,
        })
        .unwrap(),
    )
}

fn engine(dir: &Path, buf: Arc<SledBuffer>, s: TailSettings) -> TailEngine {
    let ingest = Ingest::new(
        buf,
        AckMode::Durable,
        Metrics::new(),
        Arc::new(Notify::new()),
    );
    TailEngine::new(
        "file",
        "default".into(),
        vec![format!("{}/logs/*.log", dir.display())],
        Vec::new(),
        Format::Plain {
            multiline_start: None,
            parse_timestamp: false,
        },
        s,
        Box::new(Plain),
        ingest,
    )
}

/// Rounds until one reads nothing more.
fn drain(e: &mut TailEngine) {
    for _ in 0..100 {
        let o = e.round().unwrap();
        if !o.more && o.records == 0 {
            return;
        }
    }
    panic!("the engine never settled");
}

/// Every body in the buffer, in order; the buffer is emptied.
fn take_bodies(buf: &SledBuffer) -> Vec<String> {
    let entries = buf.read(None, 100_000).unwrap();
    let mut out = Vec::new();
    for e in &entries {
        let col = e.batch.records.column_by_name("body").unwrap();
        let s = col.as_any().downcast_ref::<StringArray>().unwrap();
        out.extend((0..s.len()).map(|i| s.value(i).to_string()));
    }
    buf.remove(&entries.iter().map(|e| e.seq).collect::<Vec<_>>())
        .unwrap();
    out
}

fn append(path: &Path, lines: std::ops::Range<u32>, tag: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in lines {
        writeln!(f, "{tag} line {i:06}").unwrap();
    }
}

fn expected(lines: std::ops::Range<u32>, tag: &str) -> Vec<String> {
    lines.map(|i| format!("{tag} line {i:06}")).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn every_line_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let (a, b) = (dir.path().join("logs/a.log"), dir.path().join("logs/b.log"));
    append(&a, 0..500, "a");
    append(&b, 0..300, "b");
    {
        let buf = buffer(dir.path(), 64 << 20);
        let mut e = engine(dir.path(), buf.clone(), settings());
        drain(&mut e);
        let mut want = expected(0..500, "a");
        want.extend(expected(0..300, "b"));
        assert_eq!(sorted(take_bodies(&buf)), sorted(want));
        // An unterminated line waits for its newline.
        let mut f = OpenOptions::new().append(true).open(&a).unwrap();
        write!(f, "a half").unwrap();
        drain(&mut e);
        assert!(take_bodies(&buf).is_empty());
        writeln!(f, " done").unwrap();
        drain(&mut e);
        assert_eq!(take_bodies(&buf), vec!["a half done".to_string()]);
    }
    // A restart resumes at the committed positions.
    append(&a, 500..600, "a");
    let buf = buffer(dir.path(), 64 << 20);
    let mut e = engine(dir.path(), buf.clone(), settings());
    drain(&mut e);
    assert_eq!(take_bodies(&buf), expected(500..600, "a"));
}

#[test]
fn rotation_by_rename_reads_the_old_file_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let live = dir.path().join("logs/app.log");
    append(&live, 0..100, "x");
    let buf = buffer(dir.path(), 64 << 20);
    let mut e = engine(dir.path(), buf.clone(), settings());
    drain(&mut e);
    // The writer still holds the old file: lines written after the rename land in it.
    let mut old = OpenOptions::new().append(true).open(&live).unwrap();
    std::fs::rename(&live, dir.path().join("logs/app.log.1")).unwrap();
    writeln!(old, "x line 000100").unwrap();
    append(&live, 101..150, "x");
    drain(&mut e);
    assert_eq!(sorted(take_bodies(&buf)), sorted(expected(0..150, "x")));
    assert_eq!(
        e.files(),
        1,
        "the rotated file is closed once read to its end"
    );
}

#[test]
fn copytruncate_and_rewritten_files_are_read_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let live = dir.path().join("logs/app.log");
    append(&live, 0..100, "x");
    let buf = buffer(dir.path(), 64 << 20);
    let mut e = engine(dir.path(), buf.clone(), settings());
    drain(&mut e);
    assert_eq!(take_bodies(&buf).len(), 100);
    // copytruncate: the file shrinks, then grows again.
    File::create(&live).unwrap();
    append(&live, 0..10, "y");
    drain(&mut e);
    assert_eq!(take_bodies(&buf), expected(0..10, "y"));
    // Truncated and refilled past the old offset before the engine looked: the first bytes
    // changed, so it is a new file for the engine.
    File::create(&live).unwrap();
    append(&live, 0..200, "z");
    drain(&mut e);
    assert_eq!(take_bodies(&buf), expected(0..200, "z"));
}

#[test]
fn a_full_buffer_pauses_reading_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let live = dir.path().join("logs/app.log");
    append(&live, 0..2000, "x");
    // Room for a few batches of a round (4 KiB of lines each) at a time.
    let buf = buffer(dir.path(), 32 << 10);
    let mut e = engine(dir.path(), buf.clone(), settings());
    let mut got = Vec::new();
    let mut refused = 0;
    for round in 0..1000 {
        match e.round() {
            Ok(o) if !o.more && o.records == 0 => break,
            Ok(_) => {}
            Err(err) => {
                assert!(matches!(err, IngestError::Full(_)), "{err}");
                refused += 1;
            }
        }
        // The flusher's part, slower than the reader: entries leave the buffer every 4th round.
        if round % 4 == 3 {
            got.extend(take_bodies(&buf));
        }
    }
    got.extend(take_bodies(&buf));
    assert!(refused > 0, "the small buffer refused some batches");
    assert_eq!(got.len(), 2000);
    assert!(got == expected(0..2000, "x"), "every line once, in order");
}

#[test]
fn start_at_end_skips_what_is_there_and_reads_what_comes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let live = dir.path().join("logs/app.log");
    append(&live, 0..10, "old");
    let buf = buffer(dir.path(), 64 << 20);
    let s = TailSettings {
        start_at: StartAt::End,
        ..settings()
    };
    let mut e = engine(dir.path(), buf.clone(), s);
    drain(&mut e);
    assert!(take_bodies(&buf).is_empty());
    append(&live, 0..5, "new");
    // A file created after the start is read from its beginning.
    append(&dir.path().join("logs/later.log"), 0..3, "later");
    drain(&mut e);
    let mut want = expected(0..5, "new");
    want.extend(expected(0..3, "later"));
    assert_eq!(sorted(take_bodies(&buf)), sorted(want));
}
