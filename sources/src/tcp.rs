//! The accept loop shared by the TCP sources (Fluent forward, syslog): a bound on open
//! connections, optional TLS, a tracked task per connection, and shutdown that stops accepting
//! and then lets open connections finish what they read.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use weir_pipelines::ingest::Ingest;

use crate::contract::{ConnectionError, ServeError};
use crate::listen::ErrorBackoff;

/// A connection's byte stream, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A boxed connection stream.
pub type BoxStream = Box<dyn Stream>;

/// How a TCP source accepts connections.
pub struct TcpServer {
    /// Source name in logs and metrics.
    pub source: &'static str,
    /// Open connections allowed; more are refused and counted.
    pub max_connections: usize,
    /// TLS, when configured.
    pub tls: Option<TlsAcceptor>,
    /// For counting refused connections.
    pub ingest: Ingest,
}

impl TcpServer {
    /// Accepts connections until `stop` and runs `handler` on each.
    pub async fn serve<H, F>(
        self,
        listener: TcpListener,
        stop: CancellationToken,
        handler: H,
    ) -> Result<(), ServeError>
    where
        H: Fn(BoxStream, CancellationToken) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), ConnectionError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let permits = Arc::new(Semaphore::new(self.max_connections));
        let mut conns = JoinSet::new();
        let mut backoff = ErrorBackoff::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                r = listener.accept() => {
                    let (tcp, peer) = match r {
                        Ok(c) => {
                            backoff.reset();
                            c
                        }
                        Err(e) => {
                            backoff.failed(&self.ingest, self.source, &e, &stop).await;
                            continue;
                        }
                    };
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        warn!(%peer, max = self.max_connections, source = self.source, "too many connections, refusing");
                        self.ingest.reject(self.source, "too_many_connections");
                        continue;
                    };
                    let (handler, stop, tls, source) = (handler.clone(), stop.clone(), self.tls.clone(), self.source);
                    conns.spawn(async move {
                        let stream: Result<BoxStream, ConnectionError> = match tls {
                            None => Ok(Box::new(tcp)),
                            Some(acceptor) => match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                                Ok(Ok(s)) => Ok(Box::new(s)),
                                Ok(Err(e)) => Err(ConnectionError::Tls(format!("failed: {e}"))),
                                Err(_) => Err(ConnectionError::Tls("timed out".into())),
                            },
                        };
                        let result = match stream {
                            Ok(s) => handler(s, stop).await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = result {
                            info!(%peer, source, error = %e, "connection closed");
                        }
                        drop(permit);
                    });
                }
            }
        }
        // Stop listening now, not after the open connections end: a reload that rebinds
        // this address, or a restart, must not find it taken.
        drop(listener);
        while conns.join_next().await.is_some() {}
        Ok(())
    }
}
