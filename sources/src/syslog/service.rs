//! The syslog services (UDP datagrams, TCP connections), the mapping of messages to the logs
//! schema, and building the source.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use weir_pipelines::columns::AttributesBuilder;
use weir_pipelines::ingest::{Ingest, IngestError};
use weir_pipelines::logrows::{LogFields, LogsBuilder};
use weir_pipelines::{Batch, Signal};

use super::config::{SyslogConfig, ValidSyslog};
use super::framing;
use super::parse::{self, Format, FACILITY_NAMES, OTEL_SEVERITY, SEVERITY_NAMES};
use crate::conn::ConnLimits;
use crate::contract::{
    BuildError, Claim, ConnectionError, RunningSource, ServeError, SourceContext, ValidSource,
};
use crate::listen::{bind_tcp, bind_udp, ErrorBackoff};
use crate::now_nanos;
use crate::tcp::{BoxStream, TcpServer};
use crate::tls;

/// Source names in metrics and buffer entries.
pub const SOURCE_UDP: &str = "syslog_udp";
/// Source name of TCP syslog.
pub const SOURCE_TCP: &str = "syslog_tcp";

/// Settings shared by the UDP and TCP services.
#[derive(Clone)]
pub struct SyslogService {
    ingest: Ingest,
    tls: Option<TlsAcceptor>,
    tenant: String,
    max_frame: usize,
    max_batch: usize,
    batch_timeout: Duration,
    conn: ConnLimits,
}

/// Maps raw messages to a logs batch.
pub fn to_batch(
    lines: &[Bytes],
    received_at: i64,
    tenant: &str,
    source: &str,
) -> Result<Batch, String> {
    let now = chrono::DateTime::from_timestamp_nanos(received_at);
    let mut b = LogsBuilder::with_capacity(lines.len());
    for raw in lines {
        let text = String::from_utf8_lossy(raw);
        let line = text.trim_end_matches(['\n', '\r', '\0']);
        let utf8_error =
            matches!(text, std::borrow::Cow::Owned(_)).then_some("message is not valid UTF-8");
        match parse::parse(line, now) {
            Ok(m) => {
                let sev = m.severity as usize;
                let fields = LogFields {
                    timestamp: m.timestamp.unwrap_or(received_at),
                    observed: received_at,
                    severity_number: OTEL_SEVERITY[sev],
                    severity_text: Some(SEVERITY_NAMES[sev]),
                    body: Some(m.message),
                    service_name: m.app_name,
                    ..Default::default()
                };
                b.append(
                    &fields,
                    None,
                    0,
                    |r| {
                        if let Some(h) = m.hostname {
                            r.entry("host.name", Some(h));
                        }
                        if let Some(a) = m.app_name {
                            r.entry("service.name", Some(a));
                        }
                    },
                    |a| message_attributes(a, &m, utf8_error),
                );
            }
            Err(e) => {
                let prio = parse::priority(line).ok();
                let fields = LogFields {
                    timestamp: received_at,
                    observed: received_at,
                    severity_number: prio.map(|(_, s, _)| OTEL_SEVERITY[s as usize]).unwrap_or(0),
                    severity_text: prio.map(|(_, s, _)| SEVERITY_NAMES[s as usize]),
                    body: Some(line),
                    ..Default::default()
                };
                let err = e.to_string();
                b.append(
                    &fields,
                    None,
                    0,
                    |_| {},
                    |a| {
                        if let Some((f, _, _)) = prio {
                            a.entry("syslog.facility", Some(FACILITY_NAMES[f as usize]));
                        }
                        a.entry("syslog.parse_error", Some(utf8_error.unwrap_or(&err)));
                    },
                );
            }
        }
    }
    let records = b.finish().map_err(|e| e.to_string())?;
    Ok(Batch::new(
        tenant.to_string(),
        Signal::Logs,
        source.to_string(),
        received_at,
        records,
    ))
}

fn message_attributes(a: &mut AttributesBuilder, m: &parse::Message<'_>, utf8_error: Option<&str>) {
    a.entry("syslog.facility", Some(FACILITY_NAMES[m.facility as usize]));
    a.entry(
        "syslog.priority",
        Some(&(m.facility as u32 * 8 + m.severity as u32).to_string()),
    );
    a.entry(
        "syslog.format",
        Some(match m.format {
            Format::Rfc5424 => "rfc5424",
            Format::Rfc3164 => "rfc3164",
        }),
    );
    if let Some(p) = m.proc_id {
        a.entry("syslog.proc_id", Some(p));
    }
    if let Some(id) = m.msg_id {
        a.entry("syslog.msg_id", Some(id));
    }
    for (id, params) in &m.structured_data {
        if params.is_empty() {
            a.entry(&format!("syslog.sd.{id}"), Some(""));
        }
        for (k, v) in params {
            a.entry(&format!("syslog.sd.{id}.{k}"), Some(v));
        }
    }
    if let Some(e) = utf8_error {
        a.entry("syslog.parse_error", Some(e));
    }
}

/// Batches of datagrams waiting for the UDP writer, at most.
pub const UDP_MAX_PENDING_BATCHES: usize = 8;

/// Bytes of datagrams received and not yet written, at most (past it they are dropped and
/// counted): bounds a UDP socket's memory whatever the datagram size.
pub const UDP_MAX_PENDING_BYTES: usize = 32 << 20;

impl SyslogService {
    /// A service writing to `ingest` with the source's settings.
    pub fn new(ingest: Ingest, cfg: &SyslogConfig, tls: Option<TlsAcceptor>) -> SyslogService {
        SyslogService {
            ingest,
            tls,
            tenant: cfg.tenant.clone(),
            max_frame: cfg.max_frame_bytes.0 as usize,
            max_batch: cfg.max_batch_records,
            batch_timeout: cfg.batch_timeout.0,
            conn: cfg.conn_limits(),
        }
    }

    /// Writes a batch. With `wait_when_full`, retries while the buffer is full (TCP
    /// backpressure) until it fits or `stop` fires; otherwise counts and drops (UDP).
    async fn write(
        &self,
        lines: Vec<Bytes>,
        source: &'static str,
        wait_when_full: bool,
        stop: &CancellationToken,
    ) {
        if lines.is_empty() {
            return;
        }
        let received_at = now_nanos();
        let bytes: usize = lines.iter().map(|l| l.len()).sum();
        let n = lines.len();
        let this = self.clone();
        let lines = Arc::new(lines);
        loop {
            let (this2, lines2) = (this.clone(), lines.clone());
            let result = tokio::task::spawn_blocking(move || {
                let batch = to_batch(&lines2, received_at, &this2.tenant, source)
                    .map_err(IngestError::Partition)?;
                this2.ingest.write_gathered(batch, bytes)
            })
            .await;
            match result {
                Ok(Ok(())) => return,
                Ok(Err(e @ (IngestError::Full(_) | IngestError::Busy(_))))
                    if wait_when_full && !stop.is_cancelled() =>
                {
                    debug!(error = %e, "syslog: buffer full, pausing the connection");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Ok(Err(e)) => {
                    warn!(error = %e, messages = n, source, "syslog messages dropped");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, messages = n, source, "syslog batch task failed");
                    return;
                }
            }
        }
    }

    /// Receives datagrams until `stop`. The receive loop never waits for the buffer: batches
    /// of at most `max_batch_records` go over a bounded channel ([`UDP_MAX_PENDING_BATCHES`])
    /// to a writer task, and datagrams waiting there take at most [`UDP_MAX_PENDING_BYTES`];
    /// past either, a datagram is dropped and counted
    /// (`weir_rejected_requests_total{source="syslog_udp",reason="overflow"}`), instead of
    /// overflowing the socket's receive queue where the kernel drops it uncounted.
    pub async fn serve_udp(
        self,
        socket: UdpSocket,
        stop: CancellationToken,
    ) -> Result<(), ServeError> {
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<(Vec<Bytes>, usize)>(UDP_MAX_PENDING_BATCHES);
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writer = {
            let this = self.clone();
            let stop = stop.clone();
            let queued = queued.clone();
            tokio::spawn(async move {
                while let Some((batch, bytes)) = rx.recv().await {
                    this.write(batch, SOURCE_UDP, false, &stop).await;
                    queued.fetch_sub(bytes, std::sync::atomic::Ordering::AcqRel);
                }
            })
        };
        let mut buf = vec![0u8; 65_535];
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_bytes = 0usize;
        let mut deadline: Option<Instant> = None;
        let mut backoff = ErrorBackoff::new();
        // Hands the batch to the writer if it can take it now; false when the writer is gone.
        let hand_over = |pending: &mut Vec<Bytes>,
                         pending_bytes: &mut usize,
                         deadline: &mut Option<Instant>|
         -> bool {
            if pending.is_empty() {
                return true;
            }
            match tx.try_reserve() {
                Ok(permit) => {
                    permit.send((std::mem::take(pending), std::mem::take(pending_bytes)));
                    *deadline = None;
                    true
                }
                // The writer is busy: the batch waits (and fills no further).
                Err(tokio::sync::mpsc::error::TrySendError::Full(())) => true,
                Err(tokio::sync::mpsc::error::TrySendError::Closed(())) => false,
            }
        };
        let writer_gone = || ServeError::Server {
            what: "syslog/UDP",
            message: "its writer task ended".into(),
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                r = socket.recv_from(&mut buf) => {
                    let len = match r {
                        Ok((len, _)) => {
                            backoff.reset();
                            len
                        }
                        Err(e) => {
                            backoff.failed(self.ingest.metrics(), SOURCE_UDP, &e, &stop).await;
                            continue;
                        }
                    };
                    if len > self.max_frame {
                        self.ingest.reject(SOURCE_UDP, "too_large");
                        continue;
                    }
                    if pending.len() >= self.max_batch
                        && !hand_over(&mut pending, &mut pending_bytes, &mut deadline)
                    {
                        return Err(writer_gone());
                    }
                    let total = queued.load(std::sync::atomic::Ordering::Acquire);
                    if pending.len() >= self.max_batch || total + len > UDP_MAX_PENDING_BYTES {
                        self.ingest.reject(SOURCE_UDP, "overflow");
                        continue;
                    }
                    queued.fetch_add(len, std::sync::atomic::Ordering::AcqRel);
                    pending_bytes += len;
                    pending.push(Bytes::copy_from_slice(&buf[..len]));
                    deadline.get_or_insert_with(|| Instant::now() + self.batch_timeout);
                    if pending.len() >= self.max_batch
                        && !hand_over(&mut pending, &mut pending_bytes, &mut deadline)
                    {
                        return Err(writer_gone());
                    }
                }
                _ = sleep_until(deadline) => {
                    if !hand_over(&mut pending, &mut pending_bytes, &mut deadline) {
                        return Err(writer_gone());
                    }
                    if !pending.is_empty() {
                        // Still busy: look again shortly rather than spin.
                        deadline = Some(Instant::now() + Duration::from_millis(10));
                    }
                }
            }
        }
        // What was gathered goes to the writer, which then ends with the channel.
        if !pending.is_empty() {
            let _ = tx.send((pending, pending_bytes)).await;
        }
        drop(tx);
        if let Err(e) = writer.await {
            warn!(error = %e, "syslog UDP writer task failed");
        }
        Ok(())
    }

    /// Accepts connections until `stop`, then lets open connections finish what they read.
    pub async fn serve_tcp(
        self,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> Result<(), ServeError> {
        let server = TcpServer {
            source: SOURCE_TCP,
            limits: self.conn,
            tls: self.tls.clone(),
            ingest: self.ingest.clone(),
        };
        server
            .serve(listener, stop, move |stream, stop| {
                let this = self.clone();
                async move { this.connection(stream, &stop).await }
            })
            .await
    }

    async fn connection(
        &self,
        mut stream: BoxStream,
        stop: &CancellationToken,
    ) -> Result<(), ConnectionError> {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut scanned = 0;
        let mut pending: Vec<Bytes> = Vec::new();
        let mut deadline: Option<Instant> = None;
        let result = loop {
            tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                r = stream.read_buf(&mut buf) => {
                    let n = match r { Ok(n) => n, Err(e) => break Err(e.into()) };
                    let eof = n == 0;
                    loop {
                        match framing::next_frame(&mut buf, self.max_frame, eof, &mut scanned) {
                            Ok(Some(frame)) => pending.push(frame),
                            Ok(None) => break,
                            Err(e) => {
                                self.ingest.reject(SOURCE_TCP, "bad_frame");
                                self.write(std::mem::take(&mut pending), SOURCE_TCP, true, stop).await;
                                return Err(ConnectionError::Protocol(e.to_string()));
                            }
                        }
                    }
                    if !pending.is_empty() {
                        deadline.get_or_insert_with(|| Instant::now() + self.batch_timeout);
                    }
                    if pending.len() >= self.max_batch {
                        deadline = None;
                        self.write(std::mem::take(&mut pending), SOURCE_TCP, true, stop).await;
                    }
                    if eof {
                        break Ok(());
                    }
                }
                _ = sleep_until(deadline) => {
                    deadline = None;
                    self.write(std::mem::take(&mut pending), SOURCE_TCP, true, stop).await;
                }
            }
        };
        self.write(pending, SOURCE_TCP, true, stop).await;
        result
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl ValidSource for ValidSyslog {
    fn name(&self) -> &'static str {
        "syslog"
    }

    fn claims(&self) -> Vec<Claim> {
        self.tcp.iter().chain(&self.udp).cloned().collect()
    }

    fn build(self: Box<Self>, ctx: &SourceContext) -> Result<RunningSource, BuildError> {
        let mut running = RunningSource::new("syslog");
        let tcp = self
            .tcp
            .as_ref()
            .map(|c| Ok::<_, BuildError>((c, bind_tcp(c, "syslog/TCP")?)))
            .transpose()?;
        let udp = self
            .udp
            .as_ref()
            .map(|c| {
                let buffer = self.config.udp_receive_buffer.0 as usize;
                Ok::<_, BuildError>((c, bind_udp(c, "syslog/UDP", buffer)?))
            })
            .transpose()?;
        let tls = match &tcp {
            Some(_) => self
                .config
                .tls
                .as_ref()
                .map(|t| tls::acceptor(t, "sources.syslog.tls"))
                .transpose()?,
            None => None,
        };
        let svc = SyslogService::new(ctx.ingest.clone(), &self.config, tls);
        if let Some((claim, (listener, bound))) = tcp {
            let serve = svc.clone().serve_tcp(listener, ctx.shutdown.clone());
            running.serve(&claim.key, bound, serve);
        }
        if let Some((claim, (socket, bound))) = udp {
            running.serve(
                &claim.key,
                bound,
                svc.serve_udp(socket, ctx.shutdown.clone()),
            );
        }
        Ok(running)
    }
}
