//! What every listener does with its connections, whatever the protocol (OTLP/HTTP, OTLP/gRPC,
//! Loki, Datadog, remote write, Fluent forward, syslog/TCP), so that no client can take the
//! agent down through connections:
//!
//! - a failed `accept()` (EMFILE when descriptors run out) is logged, counted and backed off
//!   ([`ErrorBackoff`]), never the end of the source;
//! - at most `max_connections` are open per listener: one more is accepted and closed at once,
//!   counted as `weir_rejected_requests_total{reason="too_many_connections"}`;
//! - a connection over which no byte moves for `idle_timeout` while the agent waits on it is
//!   closed, counted as `reason="idle_timeout"` ([`Guarded`]): idle sockets cannot hold every
//!   slot for good.
//!
//! The protocol-specific bounds (HTTP header and body timeouts, gRPC per-connection
//! concurrency) are set where each server is built. The agent's own listeners (the admin port,
//! the control plane's API) go through the same [`Acceptor`] and HTTP loop
//! ([`crate::http::serve_connections`]), counted under their own `source` label (`admin`,
//! `control_plane`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::warn;
use weir_pipelines::metrics::Metrics;

use crate::listen::ErrorBackoff;

/// The default of every listener's `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The default of every listener's `idle_timeout`: long enough for senders that keep a
/// connection open between rare batches (Fluent Bit closes its own idle forward connections
/// after 30 s, `net.keepalive_idle_timeout`; Fluentd and syslog senders reconnect when the
/// server has closed one), short enough that idle sockets free their slots.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How a listener bounds its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Open connections allowed; more are closed at once and counted.
    pub max_connections: usize,
    /// A connection with no byte in either direction for this long, while the agent waits on
    /// it, is closed and counted.
    pub idle_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl ConnLimits {
    /// Checks `{prefix}.max_connections` and `{prefix}.idle_timeout`.
    pub fn check(&self, problems: &mut Vec<String>, prefix: &str) {
        if self.max_connections == 0 {
            problems.push(format!("{prefix}.max_connections must be at least 1"));
        }
        if self.idle_timeout < Duration::from_secs(1) {
            problems.push(format!("{prefix}.idle_timeout must be at least 1s"));
        }
    }
}

/// Accepts the connections of one listener within its [`ConnLimits`]; refusals are counted in
/// `metrics` under `source`.
pub struct Acceptor {
    listener: TcpListener,
    source: &'static str,
    metrics: Metrics,
    limits: ConnLimits,
    permits: Arc<Semaphore>,
    backoff: ErrorBackoff,
}

impl Acceptor {
    /// An acceptor counting under `source` in `metrics`.
    pub fn new(
        listener: TcpListener,
        source: &'static str,
        metrics: Metrics,
        limits: ConnLimits,
    ) -> Acceptor {
        Acceptor {
            listener,
            source,
            metrics,
            permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            backoff: ErrorBackoff::new(),
        }
    }

    /// The next connection within the limit, or `None` once `stop` fires. Accept errors are
    /// logged, counted and backed off; a connection over the limit is closed and counted.
    pub async fn accept(
        &mut self,
        stop: &CancellationToken,
    ) -> Option<(Guarded<TcpStream>, SocketAddr)> {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return None,
                r = self.listener.accept() => r,
            };
            let (tcp, peer) = match accepted {
                Ok(c) => {
                    self.backoff.reset();
                    c
                }
                Err(e) => {
                    self.backoff
                        .failed(&self.metrics, self.source, &e, stop)
                        .await;
                    continue;
                }
            };
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                warn!(%peer, max = self.limits.max_connections, source = self.source, "too many connections, closing this one");
                self.metrics
                    .rejected_request(self.source, "too_many_connections");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let idle = Idle {
                timeout: self.limits.idle_timeout,
                source: self.source,
                metrics: self.metrics.clone(),
            };
            return Some((Guarded::new(tcp, idle, permit), peer));
        }
    }

    /// The connections accepted until `stop`, as a stream (for tonic's `serve_with_incoming`).
    pub fn into_stream(
        self,
        stop: CancellationToken,
    ) -> impl futures::Stream<Item = io::Result<Guarded<TcpStream>>> {
        futures::stream::unfold((self, stop), |(mut acceptor, stop)| async move {
            let (conn, _) = acceptor.accept(&stop).await?;
            Some((Ok(conn), (acceptor, stop)))
        })
    }
}

/// The idle bound of one connection and where it is counted.
struct Idle {
    timeout: Duration,
    source: &'static str,
    metrics: Metrics,
}

/// A connection that holds its slot of `max_connections` until dropped, and fails its reads
/// and writes with `TimedOut` once no byte has moved for `idle_timeout` while the agent was
/// waiting on it. Only waiting counts: time the agent spends elsewhere (writing a batch to a
/// full buffer) does not make a connection idle.
pub struct Guarded<T> {
    inner: T,
    idle: Idle,
    /// Set while the agent waits on the connection and no byte has moved since it started.
    timer: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
    _permit: OwnedSemaphorePermit,
}

impl<T> Guarded<T> {
    fn new(inner: T, idle: Idle, permit: OwnedSemaphorePermit) -> Guarded<T> {
        Guarded {
            inner,
            idle,
            timer: None,
            timed_out: false,
            _permit: permit,
        }
    }

    /// Bytes moved: the connection is not idle.
    fn progressed(&mut self) {
        self.timer = None;
    }

    /// The agent waits on the connection: starts the idle clock if it is not running, and
    /// fails once it has run out.
    fn waiting(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.timed_out {
            return Poll::Ready(idle_error());
        }
        let timeout = self.idle.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.timed_out = true;
                self.idle
                    .metrics
                    .rejected_request(self.idle.source, "idle_timeout");
                tracing::debug!(source = self.idle.source, "connection idle, closing it");
                Poll::Ready(idle_error())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle for idle_timeout")
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.waiting(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.waiting(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.waiting(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => self.waiting(cx).map(Err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Guarded<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::sync::CancellationToken;
    use weir_pipelines::ingest::Ingest;

    use super::*;

    /// `weir_rejected_requests_total` of `source` and `reason`.
    pub(crate) fn rejected(ingest: &Ingest, source: &str, reason: &str) -> u64 {
        let text = ingest.metrics().render();
        text.lines()
            .filter(|l| l.starts_with("weir_rejected_requests_total{"))
            .filter(|l| l.contains(&format!("source=\"{source}\"")))
            .filter(|l| l.contains(&format!("reason=\"{reason}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    async fn acceptor(dir: &std::path::Path, limits: ConnLimits) -> (Acceptor, SocketAddr, Ingest) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ingest = crate::testing::ingest(dir);
        (
            Acceptor::new(listener, "test", ingest.metrics().clone(), limits),
            addr,
            ingest,
        )
    }

    /// One connection over `max_connections` is closed at once and counted; the slot comes
    /// back when a connection ends.
    #[tokio::test]
    async fn connections_over_the_limit_are_closed_and_counted() {
        let limits = ConnLimits {
            max_connections: 2,
            idle_timeout: Duration::from_secs(60),
        };
        let dir = tempfile::tempdir().unwrap();
        let (mut acc, addr, ingest) = acceptor(dir.path(), limits).await;
        let stop = CancellationToken::new();
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let (first, _) = acc.accept(&stop).await.unwrap();
        let (_second, _) = acc.accept(&stop).await.unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        // `c` is refused while two are open; dropping `first` frees a slot for `d`.
        let accept = tokio::spawn(async move {
            let r = acc.accept(&stop).await.map(|(g, _)| g);
            (acc, r)
        });
        let mut byte = [0u8; 1];
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), c.read(&mut byte))
                .await
                .unwrap()
                .unwrap_or(0),
            0,
            "the connection over the limit is closed"
        );
        assert_eq!(rejected(&ingest, "test", "too_many_connections"), 1);
        drop(first);
        let mut d = TcpStream::connect(addr).await.unwrap();
        d.write_all(b"x").await.unwrap();
        let (_acc, got) = accept.await.unwrap();
        let mut got = got.unwrap();
        let mut one = [0u8; 1];
        got.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"x");
    }

    /// A connection idle for `idle_timeout` fails with `TimedOut` and is counted; one that
    /// sends in time is not.
    #[tokio::test]
    async fn idle_connections_time_out() {
        let limits = ConnLimits {
            max_connections: 4,
            idle_timeout: Duration::from_millis(300),
        };
        let dir = tempfile::tempdir().unwrap();
        let (mut acc, addr, ingest) = acceptor(dir.path(), limits).await;
        let stop = CancellationToken::new();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut conn, _) = acc.accept(&stop).await.unwrap();
        let mut buf = [0u8; 8];
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            client.write_all(b"a").await.unwrap();
            assert_eq!(conn.read(&mut buf).await.unwrap(), 1);
        }
        let start = std::time::Instant::now();
        let e = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(250));
        assert_eq!(rejected(&ingest, "test", "idle_timeout"), 1);
    }
}
