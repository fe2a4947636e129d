//! Load harness: sends OTLP/HTTP protobuf log batches to a running agent at a target rate or
//! as fast as possible over keep-alive connections, then reports records/s accepted, p50/p99
//! response latency and the agent's peak RSS (VmHWM of `--pid`).
//!
//! `weir-loadgen --url http://127.0.0.1:4318 --connections 4 --batch 1000 --seconds 10 [--rate 50000] [--pid PID] [--trace-ids]`
//!
//! Any 2xx counts as accepted (Fluent Bit answers OTLP/HTTP with 201).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Parser, Clone)]
struct Args {
    /// Base URL of the OTLP/HTTP receiver.
    #[arg(long, default_value = "http://127.0.0.1:4318")]
    url: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Log records per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// How long to send.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Target records per second over all connections (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// PID of the agent, to report its peak RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// Pad each record's body to this many bytes (0: the built-in ~80-byte message).
    #[arg(long, default_value_t = 0)]
    line_bytes: usize,
    /// Give every record a random 16-byte trace id and 8-byte span id (drawn once: the
    /// request body is built once and sent unchanged).
    #[arg(long)]
    trace_ids: bool,
}

/// xorshift64*: random enough for ids, no dependency.
fn random_bytes(state: &mut u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            *state ^= *state >> 12;
            *state ^= *state << 25;
            *state ^= *state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

fn body(batch: usize, line_bytes: usize, trace_ids: bool) -> Vec<u8> {
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut seed = now | 1;
    let mut ids = |n: usize| {
        if trace_ids {
            random_bytes(&mut seed, n)
        } else {
            Vec::new()
        }
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource { attributes: vec![kv("service.name", "loadgen"), kv("host.name", "bench")], ..Default::default() }),
            scope_logs: vec![ScopeLogs {
                log_records: (0..batch)
                    .map(|i| LogRecord {
                        time_unix_nano: now + i as u64,
                        severity_number: 9,
                        severity_text: "INFO".into(),
                        body: Some(AnyValue { value: Some(Value::StringValue(padded(format!("GET /api/v1/orders/{i} completed in {}ms for user u-{} status=200 bytes=5123", i % 97, i % 13), line_bytes))) }),
                        attributes: vec![kv("http.route", "/api/v1/orders/:id")],
                        trace_id: ids(16),
                        span_id: ids(8),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// `s` padded with `x` to `len` bytes (unchanged when it is already that long).
fn padded(mut s: String, len: usize) -> String {
    while s.len() < len {
        s.push('x');
    }
    s
}

struct Outcome {
    latencies: Vec<Duration>,
    ok: u64,
    refused: u64,
}

async fn worker(
    addr: String,
    host: String,
    request: Vec<u8>,
    deadline: Instant,
    interval: Option<Duration>,
) -> Result<Outcome> {
    let stream = TcpStream::connect(&addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut out = Outcome {
        latencies: Vec::new(),
        ok: 0,
        refused: 0,
    };
    let head = format!("POST /v1/logs HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n", request.len());
    let mut next = Instant::now();
    while Instant::now() < deadline {
        if let Some(iv) = interval {
            tokio::time::sleep_until(next.into()).await;
            next += iv;
        }
        let t = Instant::now();
        wr.write_all(head.as_bytes()).await?;
        wr.write_all(&request).await?;
        let mut line = String::new();
        rd.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("bad status line")?;
        let mut len = 0usize;
        loop {
            line.clear();
            rd.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut buf = vec![0u8; len];
        rd.read_exact(&mut buf).await?;
        out.latencies.push(t.elapsed());
        if (200..300).contains(&status) {
            out.ok += 1;
        } else {
            out.refused += 1;
        }
    }
    Ok(out)
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let hostport = args
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    if hostport.contains('/') {
        bail!("--url takes the base URL, like http://127.0.0.1:4318");
    }
    let request = body(args.batch, args.line_bytes, args.trace_ids);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let interval = (args.rate > 0).then(|| {
        let per_conn = args.rate as f64 / args.batch as f64 / args.connections as f64;
        Duration::from_secs_f64(1.0 / per_conn.max(0.001))
    });
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.connections)
        .map(|_| {
            tokio::spawn(worker(
                hostport.clone(),
                hostport.clone(),
                request.clone(),
                deadline,
                interval,
            ))
        })
        .collect();
    let (mut lat, mut ok, mut refused) = (Vec::new(), 0, 0);
    for t in tasks {
        let o = t.await??;
        lat.extend(o.latencies);
        ok += o.ok;
        refused += o.refused;
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0)
    };
    let report = serde_json::json!({
        "records_per_sec": (ok as f64 * args.batch as f64 / secs).round(),
        "requests_ok": ok,
        "requests_refused": refused,
        "request_bytes": request.len(),
        "batch": args.batch,
        "connections": args.connections,
        "p50_ms": (pct(0.50) * 1000.0).round() / 1000.0,
        "p99_ms": (pct(0.99) * 1000.0).round() / 1000.0,
        "agent_peak_rss_mib": args.pid.and_then(peak_rss_kib).map(|k| k / 1024),
    });
    println!("{report}");
    Ok(())
}
