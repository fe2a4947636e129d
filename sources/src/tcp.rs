//! The accept loop shared by the TCP sources (Fluent forward, syslog): the connection bounds of
//! [`crate::conn`] (open connections, idle timeout, accept errors), optional TLS, a tracked task per connection, and shutdown that stops accepting
//! and then lets open connections finish what they read.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::info;
use weir_pipelines::ingest::Ingest;

use crate::conn::{Acceptor, ConnLimits};
use crate::contract::{ConnectionError, ServeError};

/// A connection's byte stream, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A boxed connection stream.
pub type BoxStream = Box<dyn Stream>;

/// How a TCP source accepts connections.
pub struct TcpServer {
    /// Source name in logs and metrics.
    pub source: &'static str,
    /// Open connections allowed and the idle bound of each ([`crate::conn`]).
    pub limits: ConnLimits,
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
        let mut acceptor = Acceptor::new(
            listener,
            self.source,
            self.ingest.metrics().clone(),
            self.limits,
        );
        let mut conns = JoinSet::new();
        loop {
            let (tcp, peer) = tokio::select! {
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                c = acceptor.accept(&stop) => match c {
                    Some(c) => c,
                    None => break,
                },
            };
            let (handler, stop, tls, source) =
                (handler.clone(), stop.clone(), self.tls.clone(), self.source);
            conns.spawn(async move {
                let stream: Result<BoxStream, ConnectionError> = match tls {
                    None => Ok(Box::new(tcp)),
                    Some(acceptor) => {
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(s)) => Ok(Box::new(s)),
                            Ok(Err(e)) => Err(ConnectionError::Tls(format!("failed: {e}"))),
                            Err(_) => Err(ConnectionError::Tls("timed out".into())),
                        }
                    }
                };
                let result = match stream {
                    Ok(s) => handler(s, stop).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    info!(%peer, source, error = %e, "connection closed");
                }
            });
        }
        // Stop listening now, not after the open connections end: a reload that rebinds
        // this address, or a restart, must not find it taken.
        drop(acceptor);
        while conns.join_next().await.is_some() {}
        Ok(())
    }
}
