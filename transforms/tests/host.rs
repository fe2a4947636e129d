//! The host against real (small, hand-written WAT) guests: the identity transform, and
//! hostile guests that each hit one limit. Every failure must be classified, must not
//! affect other transforms, and must leave the transform usable for the next batch.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_ipc::CompressionType;
use weir_pipelines::ingest::BatchProcessor;
use weir_pipelines::logrows::{LogFields, LogsBuilder};
use weir_pipelines::metrics::Metrics;
use weir_pipelines::Batch;
use weir_schema::Signal;
use weir_transforms::{
    Limits, OnError, PipelineSpec, Pipelines, StepSpec, TransformError, TransformHost,
    TransformSpec,
};

fn batch(n: usize) -> RecordBatch {
    let mut b = LogsBuilder::default();
    for i in 0..n {
        let body = format!("record {i}");
        let f = LogFields {
            timestamp: 1_700_000_000_000_000_000 + i as i64,
            observed: 1,
            body: Some(&body),
            ..Default::default()
        };
        b.append(&f, None, 0, |_| {}, |a| a.entry("i", Some(&i.to_string())));
    }
    b.finish().expect("valid batch")
}

const IDENTITY: &str = include_str!("guests/identity.wat");

/// The identity guest with its `weir_transform` body replaced.
fn with_transform(body: &str) -> String {
    let start = IDENTITY
        .find("(func (export \"weir_transform\")")
        .expect("transform export");
    format!("{}(func (export \"weir_transform\") (param $signal i32) (param $ptr i32) (param $len i32) (result i64)\n{body}))", &IDENTITY[..start])
}

fn spec(name: &str, wat: &str, limits: Limits) -> TransformSpec {
    TransformSpec {
        name: name.into(),
        module: wat.as_bytes().to_vec(),
        config: "{}".into(),
        limits,
    }
}

#[test]
fn identity_round_trips_and_reuses_instances() {
    let host = TransformHost::new().unwrap();
    let t = host
        .load(spec("identity", IDENTITY, Limits::default()))
        .unwrap();
    let input = batch(1000);
    for _ in 0..5 {
        assert_eq!(t.run(Signal::Logs, &input).unwrap(), input);
    }
    assert_eq!(t.pooled_instances(), 1);
    // The same bytes compile once.
    let _again = host
        .load(spec("identity-2", IDENTITY, Limits::default()))
        .unwrap();
    assert_eq!(host.cached_modules(), 1);
}

#[test]
fn instances_are_recycled_by_calls_and_memory() {
    let host = TransformHost::new().unwrap();
    let limits = Limits {
        recycle_after_calls: 3,
        ..Limits::default()
    };
    let t = host.load(spec("by-calls", IDENTITY, limits)).unwrap();
    let input = batch(10);
    for i in 1..=7 {
        t.run(Signal::Logs, &input).unwrap();
        // An instance returns to the pool until it has served 3 calls.
        assert_eq!(
            t.pooled_instances(),
            usize::from(i % 3 != 0),
            "after call {i}"
        );
    }
    // The bump allocator never frees: past 2 MiB the instance is replaced after its call.
    let limits = Limits {
        recycle_memory: 2 << 20,
        ..Limits::default()
    };
    let t = host.load(spec("by-memory", IDENTITY, limits)).unwrap();
    let big = batch(5000);
    let mut recycled = false;
    for _ in 0..20 {
        assert_eq!(t.run(Signal::Logs, &big).unwrap().num_rows(), 5000);
        recycled |= t.pooled_instances() == 0;
    }
    assert!(recycled, "the growing instance was never replaced");
}

#[test]
fn infinite_loop_is_stopped_by_the_deadline() {
    let host = TransformHost::new().unwrap();
    let limits = Limits {
        timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let t = host
        .load(spec(
            "spin",
            &with_transform("(loop $l (br $l)) (i64.const 0)"),
            limits,
        ))
        .unwrap();
    let started = Instant::now();
    let err = t.run(Signal::Logs, &batch(3)).unwrap_err();
    assert!(matches!(err, TransformError::Timeout { .. }), "{err}");
    assert_eq!(err.kind(), "timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Still usable: the next call gets a fresh instance (and times out again, as it should).
    assert!(matches!(
        t.run(Signal::Logs, &batch(1)),
        Err(TransformError::Timeout { .. })
    ));
}

#[test]
fn memory_hog_is_stopped_by_the_cap() {
    let host = TransformHost::new().unwrap();
    let limits = Limits {
        max_memory: 4 << 20,
        ..Limits::default()
    };
    let hog = with_transform(
        "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) unreachable",
    );
    let t = host.load(spec("hog", &hog, limits)).unwrap();
    let err = t.run(Signal::Logs, &batch(3)).unwrap_err();
    assert!(
        matches!(err, TransformError::MemoryLimit { limit, .. } if limit == 4 << 20),
        "{err}"
    );
}

#[test]
fn trap_bad_output_huge_output_and_guest_errors_are_classified() {
    let host = TransformHost::new().unwrap();
    let load = |name: &str, body: &str| {
        host.load(spec(name, &with_transform(body), Limits::default()))
            .unwrap()
    };
    let trap = load("trap", "unreachable");
    assert_eq!(
        trap.run(Signal::Logs, &batch(1)).unwrap_err().kind(),
        "trap"
    );
    // 16 bytes of the input's middle are not an IPC stream.
    let garbage = load("garbage", "(i64.or (i64.shl (i64.extend_i32_u (i32.add (local.get $ptr) (i32.const 40))) (i64.const 32)) (i64.const 16))");
    let err = garbage.run(Signal::Logs, &batch(5)).unwrap_err();
    assert!(
        matches!(&err, TransformError::BadOutput { message, .. } if message.contains("IPC")),
        "{err}"
    );
    let huge = load(
        "huge",
        "(i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 0x7fffffff))",
    );
    let err = huge.run(Signal::Logs, &batch(1)).unwrap_err();
    assert!(
        matches!(&err, TransformError::BadOutput { message, .. } if message.contains("max_output_bytes")),
        "{err}"
    );
    let outside = load(
        "outside",
        "(i64.or (i64.shl (i64.const 0x7fff0000) (i64.const 32)) (i64.const 100))",
    );
    assert_eq!(
        outside.run(Signal::Logs, &batch(1)).unwrap_err().kind(),
        "bad_output"
    );
    // A wrong signal's schema is refused: logs in, claimed as traces.
    let identity = host.load(spec("id", IDENTITY, Limits::default())).unwrap();
    let err = identity.run(Signal::Traces, &batch(2)).unwrap_err();
    assert!(
        matches!(&err, TransformError::BadOutput { message, .. } if message.contains("traces schema")),
        "{err}"
    );
}

#[test]
fn guest_error_carries_its_message() {
    let host = TransformHost::new().unwrap();
    let src = with_transform("(call $error (i32.const 16) (i32.const 15)) (i64.const -1)")
        .replace("(import \"weir\" \"log\" (func $log (param i32 i32 i32)))", "(import \"weir\" \"log\" (func $log (param i32 i32 i32)))\n  (import \"weir\" \"error\" (func $error (param i32 i32)))");
    let t = host.load(spec("fails", &src, Limits::default())).unwrap();
    let err = t.run(Signal::Logs, &batch(1)).unwrap_err();
    assert!(
        matches!(&err, TransformError::Guest { code: -1, message, .. } if message == "identity called"),
        "{err}"
    );
}

#[test]
fn abi_violations_are_refused_at_load() {
    let host = TransformHost::new().unwrap();
    let wrong_version = IDENTITY.replace(
        "(func (export \"weir_abi_version\") (result i32) (i32.const 1))",
        "(func (export \"weir_abi_version\") (result i32) (i32.const 2))",
    );
    let err = host
        .load(spec("v2", &wrong_version, Limits::default()))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("ABI version 2"), "{err}");
    let no_transform = IDENTITY.replace("(export \"weir_transform\")", "");
    assert!(host
        .load(spec("missing", &no_transform, Limits::default()))
        .err()
        .expect("refused")
        .to_string()
        .contains("weir_transform"));
    let wasi = IDENTITY.replace(
        "(import \"weir\" \"log\"",
        "(import \"wasi_snapshot_preview1\" \"fd_write\"",
    );
    let err = host
        .load(spec("wasi", &wasi, Limits::default()))
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("wasi_snapshot_preview1.fd_write"),
        "{err}"
    );
    assert_eq!(
        host.load(spec("junk", "(module", Limits::default()))
            .err()
            .expect("refused")
            .kind(),
        "abi"
    );
}

// ---------------------------------------------------------------------------------------------
// Issue 15 item 14: no guest may take the agent down. A guest's output declares sizes (message
// body lengths, buffer offsets and lengths, row counts, uncompressed lengths) that arrow-ipc
// trusts; the instance's memories and the number of instances must be bounded as a whole.

/// The largest single allocation made by the current thread since [`reset_largest`]: proves
/// that a gigantic declaration is refused before anything allocates what it declares.
struct TrackingAlloc;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

fn reset_largest() {
    LARGEST.with(|l| l.set(0));
}

fn largest() -> usize {
    LARGEST.with(|l| l.get())
}

/// A valid IPC stream of `batch`, LZ4-compressed or not.
fn ipc(batch: &RecordBatch, lz4: bool) -> Vec<u8> {
    let mut options = IpcWriteOptions::default();
    if lz4 {
        options = options
            .try_with_compression(Some(CompressionType::LZ4_FRAME))
            .unwrap();
    }
    let mut out = Vec::new();
    let mut w = StreamWriter::try_new_with_options(&mut out, &batch.schema(), options).unwrap();
    w.write(batch).unwrap();
    w.finish().unwrap();
    drop(w);
    out
}

/// Where the (first) record batch message of a stream keeps the sizes it declares, as byte
/// positions in the stream.
struct Declared {
    /// The message's `bodyLength` (i64).
    body_length: usize,
    /// The batch's `length`, its row count (i64).
    rows: usize,
    /// The field nodes: `length` (i64) then `null_count` (i64) each.
    nodes: Vec<usize>,
    /// The buffers: `offset` (i64) then `length` (i64) each, with their values.
    buffers: Vec<(usize, i64, i64)>,
    /// Where the body starts.
    body: usize,
}

fn declared(stream: &[u8]) -> Declared {
    let at = |s: &[u8]| s.as_ptr() as usize - stream.as_ptr() as usize;
    let word = |pos: usize| i32::from_le_bytes(stream[pos..pos + 4].try_into().unwrap());
    let mut pos = 0;
    loop {
        let mut meta_len = word(pos);
        pos += 4;
        if meta_len == -1 {
            meta_len = word(pos);
            pos += 4;
        }
        assert!(meta_len > 0, "no record batch in the stream");
        let meta = &stream[pos..pos + meta_len as usize];
        let msg = arrow_ipc::root_as_message(meta).unwrap();
        let field = |tab_buf: &[u8], loc: usize, vt: u16| {
            assert_ne!(vt, 0, "field not written");
            at(tab_buf) + loc + vt as usize
        };
        let body = pos + meta_len as usize;
        if let Some(rb) = msg.header_as_record_batch() {
            let nodes = rb.nodes().unwrap();
            let buffers = rb.buffers().unwrap();
            let (nodes_at, buffers_at) = (at(nodes.bytes()), at(buffers.bytes()));
            return Declared {
                body_length: field(
                    msg._tab.buf(),
                    msg._tab.loc(),
                    msg._tab.vtable().get(arrow_ipc::Message::VT_BODYLENGTH),
                ),
                rows: field(
                    rb._tab.buf(),
                    rb._tab.loc(),
                    rb._tab.vtable().get(arrow_ipc::RecordBatch::VT_LENGTH),
                ),
                nodes: (0..nodes.len()).map(|i| nodes_at + 16 * i).collect(),
                buffers: buffers
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (buffers_at + 16 * i, b.offset(), b.length()))
                    .collect(),
                body,
            };
        }
        pos = body + msg.bodyLength() as usize;
    }
}

fn patch(stream: &mut [u8], at: usize, value: i64) {
    stream[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Where [`returning`] keeps the output in the guest's memory.
const OUT_AT: i64 = 1024;

/// A guest whose `weir_transform` returns `output` (a data segment), whatever its input.
fn returning(output: &[u8]) -> String {
    assert!(output.len() < 65536 - OUT_AT as usize, "output too large");
    let data: String = output.iter().map(|b| format!("\\{b:02x}")).collect();
    let src = with_transform(&format!(
        "(i64.const {})",
        (OUT_AT << 32) | output.len() as i64
    ));
    let replace = |src: String, from: &str, to: &str| {
        assert!(src.contains(from), "{from}");
        src.replace(from, to)
    };
    // Two pages: the data segment in the first, the heap (the input) from the second on.
    let src = replace(
        src,
        "(memory (export \"memory\") 1)",
        "(memory (export \"memory\") 2)",
    );
    let src = replace(
        src,
        "(global $heap (mut i32) (i32.const 1024))",
        "(global $heap (mut i32) (i32.const 65536))",
    );
    replace(
        src,
        "(data (i32.const 16) \"identity called\")",
        &format!(
            "(data (i32.const 16) \"identity called\")\n  (data (i32.const {OUT_AT}) \"{data}\")"
        ),
    )
}

/// Loads a guest returning `output`, runs it, and checks the host refused the output as a bad
/// output naming `what`, without one allocation of 1 MiB or more on the way, and then keeps
/// serving: the same transform refuses the next batch the same way, an identity transform on
/// the same host round-trips one.
fn assert_refused(name: &str, output: &[u8], what: &str) {
    let host = TransformHost::new().unwrap();
    let evil = host
        .load(spec(name, &returning(output), Limits::default()))
        .unwrap();
    let identity = host
        .load(spec("identity", IDENTITY, Limits::default()))
        .unwrap();
    for _ in 0..2 {
        reset_largest();
        let err = evil.run(Signal::Logs, &batch(3)).unwrap_err();
        let largest = largest();
        assert!(
            largest < 1 << 20,
            "{name}: an allocation of {largest} bytes before the output was refused ({err})"
        );
        assert!(
            matches!(&err, TransformError::BadOutput { message, .. } if message.contains(what)),
            "{err}"
        );
        let input = batch(10);
        assert_eq!(identity.run(Signal::Logs, &input).unwrap(), input);
    }
}

#[test]
fn a_gigantic_declared_body_is_refused_before_it_is_allocated() {
    // The message claims a body of 1 TiB inside an output of 2 KB. arrow-ipc 60 reserves
    // min(declared, 64 MiB) before it reads; older versions reserved all of it (an abort).
    let mut out = ipc(&batch(3), false);
    let d = declared(&out);
    patch(&mut out, d.body_length, 1 << 40);
    assert_refused("huge-body", &out, "body of 1099511627776 bytes");
}

#[test]
fn buffers_declared_outside_the_output_are_refused() {
    // A buffer of 16 GiB, and one at offset 1 TiB: arrow-ipc slices the body with them and
    // panics (`slice_with_length`).
    let mut out = ipc(&batch(3), false);
    let d = declared(&out);
    let (at, _, _) = *d.buffers.iter().rev().find(|b| b.2 > 0).unwrap();
    patch(&mut out, at + 8, 16 << 30);
    assert_refused("huge-buffer", &out, "buffer");
    let mut out = ipc(&batch(3), false);
    let (at, _, _) = declared(&out).buffers[1];
    patch(&mut out, at, 1 << 40);
    assert_refused("far-buffer", &out, "buffer");
}

#[test]
fn rows_declared_beyond_the_buffers_are_refused() {
    // 2^40 rows in every column of a 3-row batch.
    let mut out = ipc(&batch(3), false);
    let d = declared(&out);
    patch(&mut out, d.rows, 1 << 40);
    for n in &d.nodes {
        patch(&mut out, *n, 1 << 40);
    }
    assert_refused("huge-rows", &out, "1099511627776");
}

#[test]
fn a_compressed_buffer_declaring_a_huge_size_is_refused() {
    // An LZ4 buffer starts with its uncompressed length; arrow-ipc allocates that much before
    // decompressing (`Vec::with_capacity`): 2^50 bytes aborts the process.
    let mut out = ipc(&batch(3), true);
    let d = declared(&out);
    let (_, offset, _) = *d.buffers.iter().find(|b| b.2 >= 8).unwrap();
    patch(&mut out, d.body + offset as usize, 1 << 50);
    assert_refused("huge-lz4", &out, "compress");
}

#[test]
fn a_gigantic_batch_follows_on_error_and_the_agent_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = ipc(&batch(3), false);
    let d = declared(&out);
    let (at, _, _) = *d.buffers.iter().rev().find(|b| b.2 > 0).unwrap();
    patch(&mut out, at + 8, 16 << 30);
    std::fs::write(dir.path().join("evil.wat"), returning(&out)).unwrap();
    std::fs::write(dir.path().join("identity.wat"), IDENTITY).unwrap();
    let step = |name: &str, file: &str, on_error: OnError| StepSpec {
        name: name.into(),
        module: dir.path().join(file),
        config: "{}".into(),
        limits: Limits::default(),
        on_error,
    };
    let pipeline = |name: &str, source: &str, steps: Vec<StepSpec>| PipelineSpec {
        name: name.into(),
        sources: if source.is_empty() {
            vec![]
        } else {
            vec![source.into()]
        },
        signals: vec![],
        steps,
    };
    let pipelines = Pipelines::new(
        vec![
            pipeline(
                "dead",
                "dead",
                vec![step("evil-dead", "evil.wat", OnError::DeadLetter)],
            ),
            pipeline(
                "pass",
                "pass",
                vec![
                    step("evil-pass", "evil.wat", OnError::Pass),
                    step("identity-after", "identity.wat", OnError::DeadLetter),
                ],
            ),
            pipeline(
                "drop",
                "drop",
                vec![step("evil-drop", "evil.wat", OnError::Drop)],
            ),
            pipeline(
                "rest",
                "",
                vec![step("identity", "identity.wat", OnError::DeadLetter)],
            ),
        ],
        &Metrics::new(),
        Duration::from_millis(50),
    )
    .unwrap();
    let records = batch(4);
    let run = |source: &str| {
        pipelines
            .process(Batch::new("t", Signal::Logs, source, 0, records.clone()))
            .unwrap()
    };
    for _ in 0..2 {
        let out = run("dead");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].records, records);
        let why = out[0].dead_letter.as_deref().unwrap_or_default();
        assert!(
            why.contains("bad output") && why.contains("buffer"),
            "{why}"
        );
        let out = run("pass");
        assert_eq!(out.len(), 1);
        assert_eq!((&out[0].records, &out[0].dead_letter), (&records, &None));
        assert!(run("drop").is_empty());
        let out = run("otlp_http");
        assert_eq!((&out[0].records, &out[0].dead_letter), (&records, &None));
    }
}

#[test]
fn a_second_memory_cannot_lift_the_cap() {
    // Two memories of 3 MiB each under a 4 MiB cap: the limiter sees each memory on its own,
    // so with multi-memory enabled both grow, 6 MiB in total.
    let host = TransformHost::new().unwrap();
    let limits = Limits {
        max_memory: 4 << 20,
        ..Limits::default()
    };
    let body = "(if (i32.eq (memory.grow $extra (i32.const 47)) (i32.const -1)) (then (return (i64.const -3))))
        (if (i32.eq (memory.grow 0 (i32.const 47)) (i32.const -1)) (then (return (i64.const -3))))
        (i64.const 0)";
    let src = with_transform(body).replace(
        "(memory (export \"memory\") 1)",
        "(memory (export \"memory\") 1)\n  (memory $extra 1)",
    );
    let err = host
        .load(spec("two-memories", &src, limits))
        .err()
        .expect("a module with two memories must be refused: they grow past max_memory in total");
    assert_eq!(err.kind(), "abi", "{err}");
    assert!(err.to_string().contains("multiple memories"), "{err}");
}

/// The identity guest, spinning `ms` milliseconds (by its clock) before it copies its input.
fn slow_identity(ms: u64) -> String {
    let body = format!(
        "(local $out i32) (local $until i64)
    (local.set $until (i64.add (call $now) (i64.const {})))
    (loop $spin (br_if $spin (i64.lt_s (call $now) (local.get $until))))
    (local.set $out (call $alloc (local.get $len)))
    (if (i32.eqz (local.get $out)) (then (return (i64.const -3))))
    (memory.copy (local.get $out) (local.get $ptr) (local.get $len))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
            (i64.extend_i32_u (local.get $len)))",
        ms * 1_000_000
    );
    with_transform(&body).replace(
        "(import \"weir\" \"log\" (func $log (param i32 i32 i32)))",
        "(import \"weir\" \"log\" (func $log (param i32 i32 i32)))\n  (import \"weir\" \"now_unix_nanos\" (func $now (result i64)))",
    )
}

#[test]
fn concurrent_batches_share_a_bounded_pool() {
    // Eight concurrent batches, two instances at most: the others wait for one, none fails.
    let host = TransformHost::new().unwrap();
    let limits = Limits {
        max_instances: 2,
        ..Limits::default()
    };
    let t = host
        .load(spec("slow", &slow_identity(100), limits))
        .unwrap();
    let input = batch(20);
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut peak = 0;
    let started = Instant::now();
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..8)
            .map(|_| s.spawn(|| t.run(Signal::Logs, &input)))
            .collect();
        let sampler = s.spawn(|| {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                peak = peak.max(t.live_instances());
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        });
        for r in runs {
            assert_eq!(r.join().unwrap().unwrap(), input);
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        peak = sampler.join().unwrap();
    });
    assert!(peak <= 2, "{peak} instances alive at once");
    assert!(t.pooled_instances() <= 2, "{} pooled", t.pooled_instances());
    // Four rounds of two 100 ms calls.
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[test]
fn a_batch_that_gets_no_instance_in_time_is_refused_and_the_pool_recovers() {
    let host = TransformHost::new().unwrap();
    let limits = Limits {
        max_instances: 1,
        instance_wait: Duration::from_millis(50),
        timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let t = host
        .load(spec("slow", &slow_identity(600), limits))
        .unwrap();
    let input = batch(5);
    std::thread::scope(|s| {
        let first = s.spawn(|| t.run(Signal::Logs, &input));
        // Until the first batch has taken the only instance (and spins for 600 ms).
        while t.pooled_instances() > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let err = t.run(Signal::Logs, &input).unwrap_err();
        assert!(
            matches!(
                &err,
                TransformError::Busy {
                    max_instances: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.kind(), "busy");
        assert!(err.to_string().contains("max_instances"), "{err}");
        assert_eq!(first.join().unwrap().unwrap(), input);
    });
    assert_eq!(t.run(Signal::Logs, &input).unwrap(), input);
    assert_eq!(t.live_instances(), 1);
    // A failed call gives its slot back: with one slot, three traps in a row stay traps.
    let trap = host
        .load(spec(
            "trap-1",
            &with_transform("unreachable"),
            Limits {
                max_instances: 1,
                instance_wait: Duration::from_millis(50),
                ..Limits::default()
            },
        ))
        .unwrap();
    for _ in 0..3 {
        assert_eq!(trap.run(Signal::Logs, &input).unwrap_err().kind(), "trap");
    }
    assert_eq!(trap.live_instances(), 0);
}

/// A transform without capacity in time refuses the batch as retryable, whatever its
/// `on_error`: with `pass`, the batch would otherwise go on untransformed (a redaction
/// transform's input, unredacted), and with `dead_letter` good data would be dead-lettered.
#[test]
fn a_busy_transform_refuses_the_batch_instead_of_applying_on_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slow.wat"), slow_identity(600)).unwrap();
    let limits = Limits {
        max_instances: 1,
        instance_wait: Duration::from_millis(50),
        timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let mut specs = Vec::new();
    for (name, on_error) in [
        ("pass", OnError::Pass),
        ("dead", OnError::DeadLetter),
        ("drop", OnError::Drop),
    ] {
        specs.push(PipelineSpec {
            name: name.into(),
            sources: vec![name.into()],
            signals: vec![],
            steps: vec![StepSpec {
                name: format!("slow-{name}"),
                module: dir.path().join("slow.wat"),
                config: "{}".into(),
                limits: limits.clone(),
                on_error,
            }],
        });
    }
    let pipelines = Pipelines::new(specs, &Metrics::new(), Duration::from_secs(60)).unwrap();
    let records = batch(3);
    let run =
        |source: &str| pipelines.process(Batch::new("t", Signal::Logs, source, 0, records.clone()));
    for source in ["pass", "dead", "drop"] {
        // Two batches at once on one instance that spins for 600 ms: whichever gets it, the
        // other waits 50 ms and is refused; neither is passed on, dead-lettered or dropped.
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| run(source));
            let b = s.spawn(|| run(source));
            (a.join().unwrap(), b.join().unwrap())
        });
        let (ok, refused): (Vec<_>, Vec<_>) = [a, b].into_iter().partition(|r| r.is_ok());
        assert_eq!((ok.len(), refused.len()), (1, 1), "{source}");
        let err = refused[0].as_ref().unwrap_err();
        assert!(err.to_string().contains("max_instances"), "{err}");
        let out = ok[0].as_ref().unwrap();
        assert_eq!(
            (out.len(), &out[0].records, &out[0].dead_letter),
            (1, &records, &None)
        );
    }
}
