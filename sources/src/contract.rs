//! The contract every source implements: a config that validates without I/O into a
//! [`ValidSource`] that claims its resources and builds into a [`RunningSource`].

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use weir_pipelines::ingest::Ingest;
use weir_pipelines::metrics::Metrics;

use crate::auth::ApiKeys;

/// A source's configuration (`[sources.<name>]`).
pub trait SourceConfig:
    Serialize + DeserializeOwned + Default + Clone + PartialEq + std::fmt::Debug
{
    /// The names the source's batches carry (`Batch::source`, the `source` label of metrics),
    /// which `[[pipelines]].sources` may name besides the source's own name.
    const BATCH_SOURCES: &'static [&'static str];

    /// Whether the source runs.
    fn enabled(&self) -> bool;

    /// Checks every value, without I/O. Problems name their key path (`sources.loki.address`).
    fn validate(&self) -> Result<Box<dyn ValidSource>, Vec<String>>;
}

/// Something a source needs for itself alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// A TCP listen address.
    Tcp(SocketAddr),
    /// A UDP listen address.
    Udp(SocketAddr),
}

/// A resource and the configuration key that asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Key path (`sources.otlp.grpc_address`).
    pub key: String,
    /// The resource.
    pub resource: Resource,
    /// The value as written, for messages.
    pub value: String,
}

impl Claim {
    /// Parses a listen address of `key`; an empty value means disabled (`Ok(None)`).
    pub fn address(key: &str, value: &str, udp: bool) -> Result<Option<Claim>, String> {
        if value.is_empty() {
            return Ok(None);
        }
        let addr: SocketAddr = value
            .parse()
            .map_err(|_| format!("{key} = {value:?} is not an address like 0.0.0.0:4317"))?;
        Ok(Some(Claim {
            key: key.to_string(),
            resource: if udp {
                Resource::Udp(addr)
            } else {
                Resource::Tcp(addr)
            },
            value: value.to_string(),
        }))
    }

    /// The socket address claimed.
    pub fn addr(&self) -> SocketAddr {
        match self.resource {
            Resource::Tcp(a) | Resource::Udp(a) => a,
        }
    }
}

/// Problems of claims that collide: the same address and protocol claimed twice (port 0
/// excepted). The later claim is reported, naming the earlier one.
pub fn check_claims<'a>(claims: impl IntoIterator<Item = &'a Claim>) -> Vec<String> {
    let mut seen: HashMap<Resource, &str> = HashMap::new();
    let mut problems = Vec::new();
    for c in claims {
        // Port 0 asks the kernel for a free port: every such claim gets its own.
        if c.addr().port() == 0 {
            continue;
        }
        if let Some(other) = seen.insert(c.resource, &c.key) {
            problems.push(format!("{} = {:?} is also used by {other}", c.key, c.value));
        }
    }
    problems
}

/// What a source is given to run.
#[derive(Clone)]
pub struct SourceContext {
    /// Where batches go (transforms, then the durable buffer).
    pub ingest: Ingest,
    /// The agent's metrics.
    pub metrics: Metrics,
    /// API keys → tenants (`[auth]`).
    pub keys: ApiKeys,
    /// Cancelled when the source must stop accepting; in-flight requests then finish.
    pub shutdown: CancellationToken,
}

/// A source whose configuration passed [`SourceConfig::validate`].
pub trait ValidSource: Send {
    /// The source's name (`[sources.<name>]`).
    fn name(&self) -> &'static str;

    /// The addresses it needs for itself (none for sources that listen nowhere: the file
    /// and host sources).
    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }

    /// Binds its sockets and loads what it needs (TLS keys); nothing serves until the agent
    /// spawns the returned tasks, so a failure here stops the start before anything runs.
    /// Called inside the tokio runtime.
    fn build(self: Box<Self>, ctx: &SourceContext) -> Result<RunningSource, BuildError>;
}

/// A task of a running source.
pub type SourceTask = Pin<Box<dyn Future<Output = Result<(), ServeError>> + Send>>;

/// A built source: its bound addresses and the tasks that serve them until
/// [`SourceContext::shutdown`].
pub struct RunningSource {
    /// The source's name.
    pub name: &'static str,
    /// Bound addresses by configuration key (the real port when the key asked for port 0).
    pub bound: Vec<(String, SocketAddr)>,
    /// The serving tasks.
    pub tasks: Vec<SourceTask>,
}

impl RunningSource {
    /// A running source without tasks yet.
    pub fn new(name: &'static str) -> RunningSource {
        RunningSource {
            name,
            bound: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// Adds a serving task bound to `address` for `key`.
    pub fn serve(
        &mut self,
        key: &str,
        address: SocketAddr,
        task: impl Future<Output = Result<(), ServeError>> + Send + 'static,
    ) {
        self.bound.push((key.to_string(), address));
        self.tasks.push(Box::pin(task));
    }
}

/// Why a source could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A listen address could not be bound.
    #[error("cannot listen on {key} = {address}{}: {error}", if *.udp { " (udp)" } else { "" })]
    Bind {
        /// Key path.
        key: String,
        /// The address.
        address: SocketAddr,
        /// UDP rather than TCP.
        udp: bool,
        /// Why (in the message, not chained, so it is printed once).
        error: std::io::Error,
    },
    /// TLS settings are unusable (files missing, key and certificate do not match).
    #[error("{0}")]
    Tls(String),
    /// Something else the source needs could not be set up (an HTTP client).
    #[error("{0}")]
    Setup(String),
}

/// Why a running source stopped (the agent then shuts down).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The server failed.
    #[error("{what} server failed: {error}")]
    Io {
        /// Which server (`OTLP/HTTP`).
        what: &'static str,
        /// Why (in the message, not chained, so it is printed once).
        error: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("{what} server failed: {message}")]
    Server {
        /// Which server.
        what: &'static str,
        /// Why.
        message: String,
    },
}

/// Why one connection was closed early (logged; never fatal to the source).
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Reading or writing the socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol (the message says how).
    #[error("{0}")]
    Protocol(String),
    /// The TLS handshake failed or timed out.
    #[error("TLS handshake {0}")]
    Tls(String),
    /// The buffer refused a batch for good.
    #[error("{0}")]
    Ingest(#[from] weir_pipelines::ingest::IngestError),
}

/// The claim of a listen address `key = value` (empty: disabled), or a problem.
pub(crate) fn claim(
    problems: &mut Vec<String>,
    key: &str,
    value: &str,
    udp: bool,
) -> Option<Claim> {
    Claim::address(key, value, udp).unwrap_or_else(|p| {
        problems.push(p);
        None
    })
}

/// Checks that a size limit is at least `min` bytes.
pub(crate) fn at_least(problems: &mut Vec<String>, key: &str, value: u64, min: u64, shown: &str) {
    if value < min {
        problems.push(format!(
            "{key} = {} is below {shown}",
            weir_pipelines::units::ByteSize(value)
        ));
    }
}

/// Checks a tenant name of a source that carries none in its protocol.
pub(crate) fn tenant_valid(problems: &mut Vec<String>, key: &str, tenant: &str) {
    if !weir_catalog::valid_tenant(tenant) {
        problems.push(format!(
            "{key} = {tenant:?} must match [A-Za-z0-9_-]{{1,64}}"
        ));
    }
}
