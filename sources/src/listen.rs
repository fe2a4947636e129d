//! Listening: binding claimed addresses (inside the runtime, without awaiting, so every source
//! binds before any serves) and surviving failed `accept()`/`recv_from()` calls.

use std::net::SocketAddr;

use crate::contract::{BuildError, Claim};

/// Backoff after a failed `accept()` or `recv_from()` (EMFILE when file descriptors run out,
/// ENOBUFS, an ICMP error surfacing on a UDP socket): the error is logged and counted
/// (`weir_rejected_requests_total{reason="accept_error"}`) and the loop waits 10 ms, doubling
/// to 1 s while the errors go on, instead of ending the source (and with it the agent).
pub(crate) struct ErrorBackoff {
    next: std::time::Duration,
}

impl ErrorBackoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(10);
    const MAX: std::time::Duration = std::time::Duration::from_secs(1);

    pub(crate) fn new() -> ErrorBackoff {
        ErrorBackoff { next: Self::FIRST }
    }

    /// After a call that worked.
    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// After a failed call: logs, counts and waits (or returns early on `stop`).
    pub(crate) async fn failed(
        &mut self,
        metrics: &weir_pipelines::metrics::Metrics,
        source: &str,
        error: &std::io::Error,
        stop: &tokio_util::sync::CancellationToken,
    ) {
        tracing::warn!(source, %error, retry_in = ?self.next, "accept/receive failed; the source keeps serving");
        metrics.rejected_request(source, "accept_error");
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(self.next) => {}
        }
        self.next = (self.next * 2).min(Self::MAX);
    }
}

/// Binds a claimed TCP address (inside the runtime, without awaiting) and logs
/// "`what` listening" with the bound address (the real port when the claim asked for 0).
pub fn bind_tcp(
    claim: &Claim,
    what: &str,
) -> Result<(tokio::net::TcpListener, SocketAddr), BuildError> {
    let bind = || -> std::io::Result<tokio::net::TcpListener> {
        let std = std::net::TcpListener::bind(claim.addr())?;
        std.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(std)
    };
    let listener = bind().map_err(|source| bind_error(claim, false, source))?;
    let bound = listener.local_addr().unwrap_or(claim.addr());
    tracing::info!(address = %bound, "{what} listening");
    Ok((listener, bound))
}

/// Binds a claimed UDP address, as [`bind_tcp`] does, with a receive buffer of
/// `receive_buffer` bytes (the kernel caps it at `net.core.rmem_max`: a smaller one is said).
pub fn bind_udp(
    claim: &Claim,
    what: &str,
    receive_buffer: usize,
) -> Result<(tokio::net::UdpSocket, SocketAddr), BuildError> {
    let bind = || -> std::io::Result<tokio::net::UdpSocket> {
        let std = std::net::UdpSocket::bind(claim.addr())?;
        std.set_nonblocking(true)?;
        let sock = socket2::SockRef::from(&std);
        sock.set_recv_buffer_size(receive_buffer)?;
        // Linux reports twice what it grants (the other half is its bookkeeping).
        let got = sock.recv_buffer_size()? / 2;
        if got < receive_buffer {
            tracing::info!(
                asked = receive_buffer,
                got,
                "{what}: the kernel capped the receive buffer (raise net.core.rmem_max for more)"
            );
        }
        tokio::net::UdpSocket::from_std(std)
    };
    let socket = bind().map_err(|source| bind_error(claim, true, source))?;
    let bound = socket.local_addr().unwrap_or(claim.addr());
    tracing::info!(address = %bound, "{what} listening");
    Ok((socket, bound))
}

fn bind_error(claim: &Claim, udp: bool, error: std::io::Error) -> BuildError {
    BuildError::Bind {
        key: claim.key.clone(),
        address: claim.addr(),
        udp,
        error,
    }
}
