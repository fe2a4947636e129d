//! Per-record cost of running transforms in wasm against the same logic as native Rust on the
//! same Arrow batch, at 1, 100, 1,000 and 10,000 records (~120-byte bodies):
//! - `native_redact`: the redact example's `Redact` called directly (no IPC, no wasm);
//! - `wasm_noop`: the identity guest (IPC encode, copy in, copy out, IPC decode: the boundary);
//! - `wasm_redact`: the redact example built to wasm32 (`scripts/build-transforms.sh`; the
//!   group is skipped with a message when the .wasm is missing).
//!
//! Overhead per record = (wasm − native) / records; compare as ratios.

use std::path::PathBuf;

use arrow_array::RecordBatch;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use weir_pipelines::logrows::{LogFields, LogsBuilder};
use weir_schema::Signal;
use weir_transforms::{Limits, TransformHost, TransformSpec};

fn batch(n: usize) -> RecordBatch {
    let mut b = LogsBuilder::default();
    for i in 0..n {
        let body = if i % 10 == 0 {
            format!(
                "GET /api/v1/orders/{i} by user{i}@example.com card 4111 1111 1111 1111 status=200"
            )
        } else {
            format!(
                "GET /api/v1/orders/{i} completed in {}ms for user u-{} status=200 bytes=5123",
                i % 97,
                i % 13
            )
        };
        let f = LogFields {
            timestamp: 1_700_000_000_000_000_000 + i as i64,
            observed: 1,
            severity_number: 9,
            body: Some(&body),
            ..Default::default()
        };
        b.append(
            &f,
            None,
            0,
            |r| r.entry("service.name", Some("shop")),
            |a| a.entry("http.route", Some("/api/v1/orders/:id")),
        );
    }
    b.finish().expect("batch")
}

fn wasm_redact() -> Option<Vec<u8>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::var("TEST_WEIR_TRANSFORMS")
        .map(PathBuf::from)
        .unwrap_or(root.join("target/transforms"));
    std::fs::read(dir.join("weir_transform_redact.wasm")).ok()
}

fn benches(c: &mut Criterion) {
    let host = TransformHost::new().expect("host");
    let spec = |name: &str, module: Vec<u8>| TransformSpec {
        name: name.into(),
        module,
        config: "{}".into(),
        limits: Limits::default(),
    };
    let noop = host
        .load(spec(
            "noop",
            include_str!("../tests/guests/identity.wat")
                .as_bytes()
                .to_vec(),
        ))
        .expect("noop");
    let redact = wasm_redact().map(|m| host.load(spec("redact", m)).expect("redact"));
    if redact.is_none() {
        eprintln!("wasm_redact skipped: build it with scripts/build-transforms.sh");
    }
    let mut native: weir_transform_redact::Redact =
        weir_sdk::abi::init(b"{}").expect("native redact");
    let mut g = c.benchmark_group("transform");
    for n in [1usize, 100, 1000, 10_000] {
        let input = batch(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("native_redact", n), &input, |b, input| {
            b.iter(|| {
                weir_sdk::abi::run_on(&mut native, Signal::Logs, input.clone())
                    .expect("native")
                    .num_rows()
            })
        });
        g.bench_with_input(BenchmarkId::new("wasm_noop", n), &input, |b, input| {
            b.iter(|| noop.run(Signal::Logs, input).expect("noop").num_rows())
        });
        if let Some(r) = &redact {
            g.bench_with_input(BenchmarkId::new("wasm_redact", n), &input, |b, input| {
                b.iter(|| r.run(Signal::Logs, input).expect("redact").num_rows())
            });
        }
    }
    g.finish();
}

criterion_group!(overhead, benches);
criterion_main!(overhead);
