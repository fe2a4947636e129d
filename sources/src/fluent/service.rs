//! The forward-protocol service: connections, handshake, batches and acks, and building the
//! source.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use weir_pipelines::ingest::{Ingest, IngestError};
use weir_pipelines::logrows::{self, LogsBuilder};
use weir_pipelines::{Batch, DecodeBudget, Signal};

use super::config::{FluentConfig, ValidFluent};
use super::{decode, frame, handshake};
use crate::conn::ConnLimits;
use crate::contract::{
    BuildError, Claim, ConnectionError, RunningSource, ServeError, SourceContext, ValidSource,
};
use crate::http::DecodeFailure;
use crate::listen::bind_tcp;
use crate::now_nanos;
use crate::tcp::{BoxStream, TcpServer};
use crate::tls;

/// Source name in metrics and buffer entries.
pub const SOURCE: &str = "fluent";

/// The forward-protocol service.
#[derive(Clone)]
pub struct FluentService {
    ingest: Ingest,
    shared_key: Option<String>,
    hostname: String,
    tls: Option<TlsAcceptor>,
    tenant: String,
    max_frame: usize,
    budget: DecodeBudget,
    conn: ConnLimits,
    decodes: Arc<Semaphore>,
}

/// The key of the budget of a message's rows (and of a turn's).
const ROW_LIMIT_KEY: &str = "sources.fluent.max_row_bytes";

/// A connection's read buffer and where the scan of its next message stopped.
struct Reader {
    buf: BytesMut,
    scanner: frame::Scanner,
}

impl Reader {
    /// Whether the buffer holds something to decode: a whole message, a malformed one, or one
    /// over `max_frame` (incremental, cheap: runs on the async threads).
    fn ready(&mut self, max_frame: usize) -> bool {
        match self.scanner.scan(&self.buf) {
            Ok(Some(_)) | Err(_) => true,
            Ok(None) => self.buf.len() > max_frame,
        }
    }
}

/// What a read produced: the batch and the acks it owes.
struct Pending {
    batches: Vec<RecordBatch>,
    chunks: Vec<String>,
    messages: usize,
    bytes: usize,
    /// Bytes of the decoded rows.
    row_bytes: usize,
}

/// What stops a connection: the reason it is counted under, and the message.
type Broken = (&'static str, String);

impl FluentService {
    /// A service writing to `ingest`.
    pub fn new(ingest: Ingest, cfg: &FluentConfig, tls: Option<TlsAcceptor>) -> FluentService {
        FluentService {
            ingest,
            tls,
            shared_key: cfg.shared_key.clone().filter(|k| !k.is_empty()),
            hostname: cfg.self_hostname.clone(),
            tenant: cfg.tenant.clone(),
            max_frame: cfg.max_frame_bytes.0 as usize,
            budget: DecodeBudget::new(cfg.max_row_bytes(), ROW_LIMIT_KEY),
            conn: cfg.conn_limits(),
            decodes: Arc::new(Semaphore::new(cfg.max_concurrent_decodes().max(1))),
        }
    }

    /// Accepts connections until `stop`, then lets open connections finish what they read.
    pub async fn serve(
        self,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> Result<(), ServeError> {
        let server = TcpServer {
            source: SOURCE,
            limits: self.conn,
            tls: self.tls.clone(),
            ingest: self.ingest.clone(),
        };
        let this = Arc::new(self);
        server
            .serve(listener, stop, move |stream, stop| {
                let this = this.clone();
                async move { this.connection(stream, &stop).await }
            })
            .await
    }

    /// Decodes the complete messages in `buf` until their rows reach the budget. Stops at the
    /// first broken one and returns its error alongside what was decoded before it; `true`
    /// when it stopped at the budget and complete messages may be left in `buf`.
    /// Blocking (it decodes): runs off the async threads.
    fn take_messages(&self, r: &mut Reader, received_at: i64) -> (Pending, Option<Broken>, bool) {
        let buf = &mut r.buf;
        let mut p = Pending {
            batches: Vec::new(),
            chunks: Vec::new(),
            messages: 0,
            bytes: 0,
            row_bytes: 0,
        };
        let malformed = |m: String| Some(("malformed", m));
        loop {
            if p.row_bytes >= self.budget.limit() {
                return (p, None, true);
            }
            let len = match r.scanner.scan(buf) {
                Ok(Some(len)) => len,
                Ok(None) if buf.len() > self.max_frame => {
                    let m = format!(
                        "forward message exceeds sources.fluent.max_frame_bytes ({} bytes)",
                        self.max_frame
                    );
                    return (p, malformed(m), false);
                }
                Ok(None) => return (p, None, false),
                Err(e) => return (p, malformed(e.to_string()), false),
            };
            if len > self.max_frame {
                let m = format!("forward message of {len} bytes exceeds sources.fluent.max_frame_bytes ({} bytes)", self.max_frame);
                return (p, malformed(m), false);
            }
            // Keep rows of a broken message out of the batch. A message after the first of a
            // turn gets what is left of the turn's budget: one that does not fit stays in the
            // buffer for the next turn, so a turn never holds more than the budget of rows.
            let mut one = LogsBuilder::default();
            let budget = match p.messages {
                0 => self.budget,
                _ => DecodeBudget::new(self.budget.limit() - p.row_bytes, ROW_LIMIT_KEY),
            };
            let decoded =
                decode::decode_message(&buf[..len], received_at, self.max_frame, &budget, &mut one);
            if p.messages > 0 && matches!(decoded, Err(DecodeFailure::OverBudget(_))) {
                return (p, None, true);
            }
            buf.advance(len);
            match decoded {
                Ok(info) => {
                    p.row_bytes += one.bytes();
                    match one.finish() {
                        Ok(rows) => p.batches.push(rows),
                        Err(e) => return (p, malformed(e.to_string()), false),
                    }
                    p.messages += 1;
                    p.bytes += len;
                    if let Some(c) = info.chunk {
                        p.chunks.push(c);
                    }
                }
                Err(DecodeFailure::OverBudget(e)) => {
                    warn!(error = %e, "fluent: forward message refused");
                    return (p, Some(("too_many_row_bytes", e.to_string())), false);
                }
                Err(DecodeFailure::Malformed(m)) => return (p, malformed(m), false),
            }
        }
    }

    /// Writes a batch; returns whether the acks may be sent.
    async fn write(&self, p: &mut Pending, received_at: i64, stop: &CancellationToken) -> bool {
        if p.messages == 0 {
            return true;
        }
        let records = match logrows::concat(&p.batches) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "fluent: cannot build batch");
                return false;
            }
        };
        let all_acked = p.chunks.len() == p.messages;
        loop {
            let batch = Batch::new(
                self.tenant.clone(),
                Signal::Logs,
                SOURCE,
                received_at,
                records.clone(),
            );
            let (ingest, bytes) = (self.ingest.clone(), p.bytes);
            match tokio::task::spawn_blocking(move || ingest.write_gathered(batch, bytes)).await {
                Ok(Ok(())) => return true,
                Ok(Err(e @ (IngestError::Full(_) | IngestError::Busy(_))))
                    if !all_acked && !stop.is_cancelled() =>
                {
                    debug!(error = %e, "fluent: buffer full, pausing the connection");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Ok(Err(e)) => {
                    warn!(error = %e, messages = p.messages, "fluent: batch not written; the client resends unacked chunks");
                    return false;
                }
                Err(e) => {
                    warn!(error = %e, "fluent: batch task failed");
                    return false;
                }
            }
        }
    }

    /// HELO, then read PING and answer PONG; errors close the connection.
    async fn authenticate(
        &self,
        key: &str,
        stream: &mut BoxStream,
        buf: &mut BytesMut,
    ) -> Result<(), ConnectionError> {
        let protocol = |e: &dyn std::fmt::Display| ConnectionError::Protocol(e.to_string());
        let nonce: [u8; 16] = rand::random();
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &handshake::helo(&nonce)).map_err(|e| protocol(&e))?;
        stream.write_all(&out).await?;
        let ping = loop {
            if let Some(len) = frame::value_len(buf).map_err(|e| protocol(&e))? {
                let v = rmpv::decode::read_value(&mut &buf[..len]).map_err(|e| protocol(&e))?;
                buf.advance(len);
                break v;
            }
            if buf.len() > 64 * 1024 {
                return Err(protocol(&"PING larger than 64 KiB"));
            }
            if stream.read_buf(buf).await? == 0 {
                return Err(protocol(&"connection closed before PING"));
            }
        };
        let (reply, ok) = handshake::pong(&ping, &nonce, key, &self.hostname);
        out.clear();
        rmpv::encode::write_value(&mut out, &reply).map_err(|e| protocol(&e))?;
        stream.write_all(&out).await?;
        if !ok {
            self.ingest.reject(SOURCE, "forbidden");
            return Err(protocol(&"shared key authentication failed"));
        }
        Ok(())
    }

    /// Decodes what `reader` holds on a blocking thread, at most `max_concurrent_decodes`
    /// at once across the source (a connection waiting for its turn reads no further).
    async fn decode(
        self: &Arc<Self>,
        reader: Reader,
        received_at: i64,
        stop: &CancellationToken,
    ) -> Result<(Reader, (Pending, Option<Broken>, bool)), ConnectionError> {
        let permit = tokio::select! {
            _ = stop.cancelled() => return Err(ConnectionError::Protocol("shutting down".into())),
            p = self.decodes.clone().acquire_owned() => p
                .map_err(|e| ConnectionError::Protocol(e.to_string()))?,
        };
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut reader = reader;
            let out = this.take_messages(&mut reader, received_at);
            (reader, out)
        })
        .await
        .map_err(|e| ConnectionError::Protocol(format!("decode task failed: {e}")))
    }

    async fn connection(
        self: Arc<Self>,
        mut stream: BoxStream,
        stop: &CancellationToken,
    ) -> Result<(), ConnectionError> {
        let mut reader = Reader {
            buf: BytesMut::with_capacity(64 * 1024),
            scanner: frame::Scanner::default(),
        };
        if let Some(key) = &self.shared_key {
            tokio::time::timeout(
                Duration::from_secs(30),
                self.authenticate(key, &mut stream, &mut reader.buf),
            )
            .await
            .map_err(|_| ConnectionError::Protocol("no PING within 30 s".into()))??;
        }
        loop {
            let n = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = stream.read_buf(&mut reader.buf) => r?,
            };
            let received_at = now_nanos();
            // One read may hold more messages than one budget of rows: write them in turns.
            // A read that completes no message only moves the scan on.
            while reader.ready(self.max_frame) {
                let (back, (mut pending, broken, more)) =
                    self.decode(reader, received_at, stop).await?;
                reader = back;
                if self.write(&mut pending, received_at, stop).await {
                    for chunk in &pending.chunks {
                        let ack = rmpv::Value::Map(vec![(
                            rmpv::Value::from("ack"),
                            rmpv::Value::from(chunk.as_str()),
                        )]);
                        let mut out = Vec::with_capacity(chunk.len() + 8);
                        rmpv::encode::write_value(&mut out, &ack)
                            .map_err(|e| ConnectionError::Protocol(e.to_string()))?;
                        stream.write_all(&out).await?;
                    }
                } else if !pending.chunks.is_empty() {
                    self.ingest.reject(SOURCE, "buffer_full");
                }
                if let Some((reason, e)) = broken {
                    self.ingest.reject(SOURCE, reason);
                    return Err(ConnectionError::Protocol(e));
                }
                if !more {
                    break;
                }
            }
            let buf = &mut reader.buf;
            if n == 0 {
                if !buf.is_empty() {
                    self.ingest.reject(SOURCE, "malformed");
                    return Err(ConnectionError::Protocol(format!(
                        "connection closed in the middle of a message ({} bytes)",
                        buf.len()
                    )));
                }
                return Ok(());
            }
            // Grow the read buffer for large frames instead of reading 64 KiB at a time.
            if buf.capacity() - buf.len() < 16 * 1024 {
                buf.reserve((buf.len()).min(self.max_frame));
            }
        }
    }
}

impl ValidSource for ValidFluent {
    fn name(&self) -> &'static str {
        "fluent"
    }

    fn claims(&self) -> Vec<Claim> {
        self.address.iter().cloned().collect()
    }

    fn build(self: Box<Self>, ctx: &SourceContext) -> Result<RunningSource, BuildError> {
        let mut running = RunningSource::new("fluent");
        if let Some(claim) = &self.address {
            let tls = self
                .config
                .tls
                .as_ref()
                .map(|t| tls::acceptor(t, "sources.fluent.tls"))
                .transpose()?;
            let (listener, bound) = bind_tcp(claim, "Fluent forward")?;
            let svc = FluentService::new(ctx.ingest.clone(), &self.config, tls);
            running.serve(&claim.key, bound, svc.serve(listener, ctx.shutdown.clone()));
        }
        Ok(running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(dir: &std::path::Path, max_row_bytes: usize) -> FluentService {
        FluentService {
            ingest: crate::testing::ingest(dir),
            shared_key: None,
            hostname: "weir".into(),
            tls: None,
            tenant: "t".into(),
            max_frame: 1 << 20,
            budget: DecodeBudget::new(max_row_bytes, ROW_LIMIT_KEY),
            conn: ConnLimits {
                max_connections: 1,
                idle_timeout: Duration::from_secs(1),
            },
            decodes: Arc::new(Semaphore::new(1)),
        }
    }

    /// A Forward message of `entries` records of ~1 KB, acknowledged as `chunk`.
    fn message(chunk: &str, entries: usize) -> Vec<u8> {
        let entry = rmpv::Value::Array(vec![
            rmpv::Value::from(1_700_000_000),
            rmpv::Value::Map(vec![(
                rmpv::Value::from("log"),
                rmpv::Value::from("x".repeat(1000)),
            )]),
        ]);
        let m = rmpv::Value::Array(vec![
            rmpv::Value::from("turns"),
            rmpv::Value::Array(vec![entry; entries]),
            rmpv::Value::Map(vec![(rmpv::Value::from("chunk"), rmpv::Value::from(chunk))]),
        ]);
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &m).unwrap();
        out
    }

    #[test]
    fn a_message_past_the_turns_budget_waits_whole_for_the_next_turn() {
        let dir = tempfile::tempdir().unwrap();
        let limit = 1 << 20;
        let svc = service(dir.path(), limit);
        // Five messages of ~430 KB of rows each: two fit a turn, a third does not.
        let all: Vec<u8> = (0..5).flat_map(|i| message(&format!("c{i}"), 400)).collect();
        let mut r = Reader {
            buf: BytesMut::from(&all[..]),
            scanner: frame::Scanner::default(),
        };
        let mut turns = Vec::new();
        loop {
            let (p, broken, more) = svc.take_messages(&mut r, 0);
            assert!(broken.is_none(), "{broken:?}");
            assert!(p.row_bytes <= limit, "a turn of {} bytes", p.row_bytes);
            assert_eq!(p.chunks.len(), p.messages);
            turns.push(p.chunks);
            if !more {
                break;
            }
        }
        assert_eq!(turns, vec![vec!["c0", "c1"], vec!["c2", "c3"], vec!["c4"]]);
        assert!(r.buf.is_empty());
    }
}
