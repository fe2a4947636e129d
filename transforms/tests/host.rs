//! The host against real (small, hand-written WAT) guests: the identity transform, and
//! hostile guests that each hit one limit. Every failure must be classified, must not
//! affect other transforms, and must leave the transform usable for the next batch.

use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use weir_pipelines::logrows::{LogFields, LogsBuilder};
use weir_schema::Signal;
use weir_transforms::{Limits, TransformError, TransformHost, TransformSpec};

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
