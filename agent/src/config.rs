//! Configuration: built-in defaults, then a TOML or YAML file, then `WEIR_` environment
//! variables with `__` for nesting (`WEIR_LAKE__URL=s3://bucket/prefix`). Unknown keys are
//! errors that name the key path; the variables Kubernetes injects for Services named
//! `weir…` (`WEIR_CONTROL_PLANE_PORT`, `WEIR_SERVICE_HOST`, ...) are not keys and are left out
//! ([`env`]). Sizes (`"16MiB"`, `"4Gi"`) and durations (`"60s"`, or `30` seconds) are
//! human-readable. File values may hold `${VAR}` ([`interpolate`]), secrets may be given as
//! `<key>_file` ([`secrets`]), and loading reports every problem at once ([`load`]).
//! `weir validate --print` shows the result with secrets masked ([`print`]).
//!
//! [`Config::validate`] is pure (no I/O): it checks every value and the listen addresses for
//! conflicts, and returns a [`ValidConfig`] that `weir run` builds from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_pipelines::buffer::AckMode;
pub use weir_pipelines::units::{ByteSize, HumanDuration};

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of the durable buffer, the embedded index and (by default) the lake.
    pub data_dir: PathBuf,
    /// This agent.
    pub agent: AgentConfig,
    /// Inputs.
    pub sources: SourcesConfig,
    /// API keys of the HTTP and gRPC sources.
    pub auth: AuthConfig,
    /// The durable buffer.
    pub buffer: BufferConfig,
    /// The Parquet lake.
    pub lake: LakeConfig,
    /// Admin endpoints (health, metrics, segment index).
    pub admin: AdminConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// The agent's own logs.
    pub log: LogConfig,
    /// Transform pipelines (`[[pipelines]]`); a batch goes through the first that matches it.
    pub pipelines: Vec<PipelineConfig>,
    /// The control plane (remote for `weir agent`, served by `weir control-plane`).
    pub control_plane: ControlPlaneConfig,
    /// Background compaction.
    pub compaction: CompactionConfig,
    /// Retention per tenant and signal.
    pub retention: RetentionConfig,
    /// The lake as Iceberg tables.
    pub iceberg: IcebergConfig,
}

/// A pipeline: which batches, and the ordered transforms they go through.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Name.
    pub name: String,
    /// Sources (`otlp_grpc`, `otlp_http`, `loki`, `fluent`, `datadog`, `syslog_udp`, `syslog_tcp`)
    /// or families (`otlp`, `syslog`); empty: every source.
    pub sources: Vec<String>,
    /// Signals (`logs`, `metrics`, `traces`); empty: every signal.
    pub signals: Vec<String>,
    /// The transforms, in order.
    pub transforms: Vec<TransformConfig>,
}

/// One transform of a pipeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TransformConfig {
    /// Name (metrics label; unique).
    pub name: String,
    /// Module file: a `.wasm` core module (or `.wat` text). Reloaded when the file changes.
    pub module: PathBuf,
    /// Configuration passed to the module's `weir_init` as JSON.
    pub config: serde_json::Value,
    /// `dead_letter` (default), `drop` or `pass`.
    pub on_error: weir_transforms::OnError,
    /// Memory cap of an instance.
    pub max_memory: ByteSize,
    /// Deadline of one call.
    pub timeout: HumanDuration,
    /// Largest output accepted.
    pub max_output_bytes: ByteSize,
    /// Calls after which an instance is replaced.
    pub recycle_after_calls: u64,
    /// Memory past which an instance is replaced.
    pub recycle_memory: ByteSize,
    /// Instances of the transform alive at once (batches beyond wait for one); with
    /// `max_memory` it bounds the transform's guest memory.
    pub max_instances: usize,
    /// How long a batch waits for an instance; past it the request is refused as retryable
    /// (429 / RESOURCE_EXHAUSTED), never passed on untransformed.
    pub instance_wait: HumanDuration,
}

impl Default for TransformConfig {
    fn default() -> Self {
        let l = weir_transforms::Limits::default();
        TransformConfig {
            name: String::new(),
            module: PathBuf::new(),
            config: serde_json::json!({}),
            on_error: weir_transforms::OnError::default(),
            max_memory: ByteSize(l.max_memory as u64),
            timeout: HumanDuration(l.timeout),
            max_output_bytes: ByteSize(l.max_output_bytes as u64),
            recycle_after_calls: l.recycle_after_calls,
            recycle_memory: ByteSize(l.recycle_memory as u64),
            max_instances: l.max_instances,
            instance_wait: HumanDuration(l.instance_wait),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./weir-data"),
            agent: AgentConfig::default(),
            sources: SourcesConfig::default(),
            auth: AuthConfig::default(),
            buffer: BufferConfig::default(),
            lake: LakeConfig::default(),
            admin: AdminConfig::default(),
            shutdown: ShutdownConfig::default(),
            log: LogConfig::default(),
            pipelines: Vec::new(),
            control_plane: ControlPlaneConfig::default(),
            compaction: CompactionConfig::default(),
            retention: RetentionConfig::default(),
            iceberg: IcebergConfig::default(),
        }
    }
}

/// This agent's identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Id written in every segment record and Parquet footer (reconciliation registers the
    /// unregistered files that carry it) and shown in the fleet view. Unset: the persistent id
    /// of `data_dir`, a UUID created at the first start in `{data_dir}/agent_id`, so two
    /// agents on one host (two data directories) are two agents and a renamed host or pod
    /// keeps its id with its data directory; the host name is reported as the `host.name`
    /// label. Set it only to a name unique to this data directory.
    pub id: Option<String>,
}

/// Authentication of the HTTP and gRPC sources.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// API keys and the tenant each one writes to. When set, every HTTP/gRPC request must carry
    /// a key (`Authorization: Bearer`, `X-API-Key`, or `DD-API-KEY` for Datadog).
    pub api_keys: BTreeMap<String, String>,
    /// Sources that cannot check API keys and may still accept writes while `api_keys` is
    /// set: `syslog` (its protocol has no credentials) and `fluent` without `shared_key`.
    /// Without naming them here, such a configuration is refused: those ports would let
    /// anyone write around the keys.
    pub allow_unauthenticated: Vec<String>,
}

/// Most `buffer.late_window` + `buffer.future_window` may span: 31 days, 746 hours a batch.
pub const MAX_TIME_WINDOW: Duration = Duration::from_secs(31 * 24 * 3600);

/// The durable buffer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Bound on live buffered bytes; past it sources answer with retryable errors.
    pub max_bytes: ByteSize,
    /// `durable` (fsync before the response, the default) or `buffered`.
    pub ack: AckMode,
    /// Hours (tenant, signal and hour partitions) the records of one request may fall in;
    /// a request over it is refused as bad (400, gRPC `INVALID_ARGUMENT`), since each hour
    /// becomes a buffer entry, a file and a registration of its own.
    pub max_partitions_per_request: usize,
    /// How old a record's own timestamp may be in the batches of syslog and Fluent forward,
    /// which gather many senders' messages and are never refused for their hours: an older
    /// record is stored at the time it was received, its own timestamp kept in the
    /// `weir.original_timestamp` attribute. With `future_window` it bounds the hours (buffer
    /// entries, files, registrations) one such batch fans out into.
    pub late_window: HumanDuration,
    /// How far ahead of the agent's clock a record's own timestamp may be in those batches.
    pub future_window: HumanDuration,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            max_bytes: ByteSize(1 << 30),
            ack: AckMode::Durable,
            max_partitions_per_request: weir_pipelines::ingest::DEFAULT_MAX_PARTITIONS,
            late_window: HumanDuration(weir_pipelines::ingest::DEFAULT_LATE_WINDOW),
            future_window: HumanDuration(weir_pipelines::ingest::DEFAULT_FUTURE_WINDOW),
        }
    }
}

impl BufferConfig {
    /// The window of [`weir_pipelines::ingest::TimeWindow`].
    pub fn window(&self) -> weir_pipelines::ingest::TimeWindow {
        weir_pipelines::ingest::TimeWindow {
            late: self.late_window.0,
            future: self.future_window.0,
        }
    }
}

/// The Parquet lake.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// Where files go: `file:///abs/path`, `s3://bucket/prefix`, `gs://…`, `az://…`,
    /// `memory://`. Defaults to `{data_dir}/lake`.
    pub url: Option<String>,
    /// object_store options (for example `aws_endpoint`, `aws_region`, `aws_allow_http`).
    pub options: BTreeMap<String, String>,
    /// Flush a partition once its rows take this much memory (uncompressed Arrow).
    pub flush_bytes: ByteSize,
    /// Most memory (uncompressed Arrow) the flusher holds across every partition: it stops
    /// reading the buffer there and flushes the largest partitions early.
    pub max_pending_bytes: ByteSize,
    /// Flush a partition once its oldest rows are this old.
    pub max_file_age: HumanDuration,
    /// ZSTD level of Parquet pages (1-22).
    pub zstd_level: i32,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Size compaction merges small files up to.
    pub target_file_bytes: ByteSize,
    /// Retries of object store requests (cloud stores).
    pub max_retries: usize,
    /// Give up retrying one object store request after this long.
    pub retry_timeout: HumanDuration,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            url: None,
            options: BTreeMap::new(),
            flush_bytes: ByteSize(64 << 20),
            max_pending_bytes: ByteSize(weir_pipelines::flusher::DEFAULT_MAX_PENDING_BYTES),
            max_file_age: HumanDuration(Duration::from_secs(60)),
            zstd_level: 3,
            row_group_rows: 128 * 1024,
            target_file_bytes: ByteSize(512 << 20),
            max_retries: 10,
            retry_timeout: HumanDuration(Duration::from_secs(180)),
        }
    }
}

/// Admin endpoints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Listen address of `/healthz`, `/livez`, `/readyz`, `/metrics` and `/v1/segments`.
    pub address: String,
    /// Open connections allowed on the admin port; one more is closed at once and counted
    /// (`weir_rejected_requests_total{source="admin",reason="too_many_connections"}`).
    pub max_connections: usize,
    /// Longest wait for a request's headers (HTTP/1), from the connection's first bytes or the
    /// end of the previous response: a slower client (slowloris), or a keep-alive connection
    /// idle that long, is closed (one sending no byte at all is left to `idle_timeout`).
    /// At least 1s.
    pub header_read_timeout: HumanDuration,
    /// A connection over which nothing moves for this long is closed and counted
    /// (`reason="idle_timeout"`), also while a request on it is being handled. At least 1s.
    pub idle_timeout: HumanDuration,
    /// Longest wait for a request's body, from the end of its headers: a slower body is
    /// answered 408 and its connection closed (`reason="timeout"`). Above 0.
    pub request_timeout: HumanDuration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: "0.0.0.0:8686".into(),
            max_connections: weir_sources::conn::DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: HumanDuration(weir_sources::http::DEFAULT_HEADER_READ_TIMEOUT),
            idle_timeout: HumanDuration(weir_sources::conn::DEFAULT_IDLE_TIMEOUT),
            request_timeout: HumanDuration(weir_sources::http::DEFAULT_REQUEST_TIMEOUT),
        }
    }
}

impl AdminConfig {
    /// The bounds of the admin port's connections.
    pub fn limits(&self) -> crate::admin::ListenerLimits {
        crate::admin::ListenerLimits::new(
            self.max_connections,
            self.header_read_timeout.0,
            self.idle_timeout.0,
            self.request_timeout.0,
        )
    }
}

/// Graceful shutdown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Time allowed for in-flight requests and a last flush after SIGTERM/SIGINT.
    pub timeout: HumanDuration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            timeout: HumanDuration(Duration::from_secs(20)),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Filter in `RUST_LOG` syntax (`info`, `weir=debug`); `RUST_LOG` wins when set.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A configuration that could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be read or parsed: every problem, each naming where
    /// the value came from and its key path.
    #[error("{0}")]
    Load(#[from] LoadErrors),
    /// Values are invalid.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Loads defaults, then `file` (`.toml`, `.yaml` or `.yml`), then `WEIR_` variables
    /// (less Kubernetes service-link variables, see [`env`]); every problem is reported at
    /// once (see [`load`]).
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Ok(load::load(file, env::process_variables())?)
    }

    /// Checks every value; no I/O.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        let mut problems = Vec::new();
        let mut claims = Vec::new();
        let admin = weir_sources::Claim::address("admin.address", &self.admin.address, false)
            .unwrap_or_else(|p| {
                problems.push(p);
                None
            });
        match &admin {
            Some(c) => claims.push(c.clone()),
            None if problems.is_empty() => problems.push("admin.address must be set".into()),
            None => {}
        }
        let (sources, source_problems) = self.sources.validate();
        problems.extend(source_problems);
        claims.extend(sources.iter().flat_map(|s| s.claims()));
        problems.extend(weir_sources::check_claims(&claims));
        for (key, tenant) in &self.auth.api_keys {
            if key.trim().is_empty() {
                problems.push("auth.api_keys has an empty key".into());
            }
            if !weir_catalog::valid_tenant(tenant) {
                problems.push(format!(
                    "auth.api_keys: tenant {tenant:?} must match [A-Za-z0-9_-]{{1,64}}"
                ));
            }
        }
        self.check_unauthenticated(&mut problems);
        self.check_pipelines(&mut problems);
        if self.buffer.max_partitions_per_request == 0 {
            problems.push("buffer.max_partitions_per_request must be at least 1".into());
        }
        if self.buffer.late_window.0 < Duration::from_secs(3600) {
            problems.push(format!(
                "buffer.late_window = {:?} is below 1h (records sent a little late would lose their timestamps)",
                humantime::format_duration(self.buffer.late_window.0).to_string()
            ));
        }
        if self.buffer.future_window.0 < Duration::from_secs(60) {
            problems.push(format!(
                "buffer.future_window = {:?} is below 1m (a sender's clock a little ahead would lose its timestamps)",
                humantime::format_duration(self.buffer.future_window.0).to_string()
            ));
        }
        let window = self
            .buffer
            .late_window
            .0
            .saturating_add(self.buffer.future_window.0);
        if window > MAX_TIME_WINDOW {
            problems.push(format!(
                "buffer.late_window + buffer.future_window is {} hours, over 31 days (744 hours): the window bounds the hours (buffer entries, files, registrations) one syslog or Fluent batch fans out into",
                window.as_secs().div_ceil(3600)
            ));
        }
        if self.buffer.max_bytes.0 < (1 << 20) {
            problems.push(format!(
                "buffer.max_bytes = {} is below 1MiB",
                self.buffer.max_bytes
            ));
        }
        if !(1..=22).contains(&self.lake.zstd_level) {
            problems.push(format!(
                "lake.zstd_level = {} must be between 1 and 22",
                self.lake.zstd_level
            ));
        }
        if self.lake.row_group_rows == 0 {
            problems.push("lake.row_group_rows must be at least 1".into());
        }
        if self.lake.flush_bytes.0 == 0 {
            problems.push("lake.flush_bytes must be above 0".into());
        }
        if self.lake.max_pending_bytes.0 < (1 << 20) {
            problems.push(format!(
                "lake.max_pending_bytes = {} is below 1MiB",
                self.lake.max_pending_bytes
            ));
        }
        if self.lake.max_file_age.0.is_zero() {
            problems.push("lake.max_file_age must be above 0".into());
        }
        if let Some(url) = &self.lake.url {
            let known = [
                "file://",
                "memory://",
                "s3://",
                "s3a://",
                "gs://",
                "az://",
                "azure://",
                "abfs://",
                "abfss://",
                "http://",
                "https://",
            ];
            if !known.iter().any(|p| url.starts_with(p)) {
                problems.push(format!(
                    "lake.url = {url:?} must start with file://, s3://, gs://, az:// or memory://"
                ));
            } else if let Some(p) = url.strip_prefix("file://") {
                if !p.starts_with('/') {
                    problems.push(format!("lake.url = {url:?}: a file:// URL needs an absolute path (file:///data/lake)"));
                }
            }
        }
        if let Some(id) = &self.agent.id {
            if id.is_empty() || id.len() > 128 {
                problems.push("agent.id must be 1 to 128 characters".into());
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push("data_dir must be set".into());
        }
        if self.lake.target_file_bytes.0 < (1 << 20) {
            problems.push(format!(
                "lake.target_file_bytes = {} is below 1MiB",
                self.lake.target_file_bytes
            ));
        }
        self.admin.limits().check(&mut problems, "admin");
        self.control_plane.check(&mut problems);
        self.compaction.check(&mut problems);
        self.retention.check(&mut problems);
        self.iceberg.check(&mut problems);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        let Some(admin) = admin else {
            return Err(ConfigError::Invalid(vec![
                "admin.address must be set".into()
            ]));
        };
        Ok(ValidConfig {
            admin: admin.addr(),
            claims,
            sources,
            config: self,
        })
    }

    /// With API keys, every source that takes writes from the network must check a
    /// credential, or be named in `auth.allow_unauthenticated`.
    fn check_unauthenticated(&self, problems: &mut Vec<String>) {
        let allowed = &self.auth.allow_unauthenticated;
        for name in allowed {
            if !matches!(name.as_str(), "syslog" | "fluent") {
                problems.push(format!(
                    "auth.allow_unauthenticated: {name:?} is not a source without authentication (syslog, fluent)"
                ));
            }
        }
        if self.auth.api_keys.is_empty() {
            return;
        }
        let open = [
            (
                "syslog",
                self.sources.syslog.enabled,
                "its protocol carries no credentials",
            ),
            (
                "fluent",
                self.sources.fluent.enabled && self.sources.fluent.shared_key.is_none(),
                "it has no sources.fluent.shared_key",
            ),
        ];
        for (name, unauthenticated, why) in open {
            if unauthenticated && !allowed.iter().any(|a| a == name) {
                let tenant = match name {
                    "syslog" => &self.sources.syslog.tenant,
                    _ => &self.sources.fluent.tenant,
                };
                problems.push(format!(
                    "sources.{name} accepts writes to tenant {tenant:?} without authentication ({why}) while auth.api_keys is set: turn it off (sources.{name}.enabled = false){}, or accept that with auth.allow_unauthenticated = [\"{name}\"]",
                    if name == "fluent" { ", set sources.fluent.shared_key" } else { "" }
                ));
            }
        }
    }

    /// `[[pipelines]]`: names, signals, source names that exist, transforms.
    fn check_pipelines(&self, problems: &mut Vec<String>) {
        let known = weir_sources::SourcesConfig::known_names();
        let mut transform_names = std::collections::HashSet::new();
        for (i, p) in self.pipelines.iter().enumerate() {
            let at = format!("pipelines[{i}]");
            if p.name.is_empty() {
                problems.push(format!("{at}.name must be set"));
            }
            for source in &p.sources {
                if !known.contains(&source.as_str()) {
                    problems.push(format!(
                        "{at}.sources: {source:?} is not a source (one of {})",
                        known.join(", ")
                    ));
                }
            }
            for sig in &p.signals {
                if weir_schema::Signal::parse(sig).is_none() {
                    problems.push(format!(
                        "{at}.signals: {sig:?} is not logs, metrics or traces"
                    ));
                }
            }
            if p.transforms.is_empty() {
                problems.push(format!("{at}.transforms must list at least one transform"));
            }
            for (j, t) in p.transforms.iter().enumerate() {
                let at = format!("{at}.transforms[{j}]");
                if t.name.is_empty() {
                    problems.push(format!("{at}.name must be set"));
                } else if !transform_names.insert(t.name.clone()) {
                    problems.push(format!("{at}.name {:?} is used twice", t.name));
                }
                if t.module.as_os_str().is_empty() {
                    problems.push(format!("{at}.module must be set"));
                }
                if t.timeout.0.is_zero() {
                    problems.push(format!("{at}.timeout must be above 0"));
                }
                if t.max_instances == 0 {
                    problems.push(format!("{at}.max_instances must be at least 1"));
                }
                if t.max_memory.0 < (1 << 16) {
                    problems.push(format!(
                        "{at}.max_memory = {} is below one wasm page (64KiB)",
                        t.max_memory
                    ));
                }
            }
        }
    }
}

impl Config {
    /// Who may read the embedded index's `/v1` routes on the admin port of `weir run`: the
    /// control-plane tokens when any are configured; otherwise, when the sources require API
    /// keys, each key may read its own tenant's segments (scope `read`); with neither, the
    /// routes are open (an agent without any authentication). So the index is never more
    /// open than the sources that fill it.
    pub fn admin_tokens(&self) -> Vec<weir_control_plane::api::ApiToken> {
        let tokens = self.control_plane.api_tokens();
        if !tokens.is_empty() {
            return tokens;
        }
        self.auth
            .api_keys
            .iter()
            .map(|(key, tenant)| weir_control_plane::api::ApiToken {
                token: key.clone(),
                tenants: vec![tenant.clone()],
                scopes: vec![weir_control_plane::api::Scope::Read],
            })
            .collect()
    }
}

/// A configuration that passed [`Config::validate`].
pub struct ValidConfig {
    /// The values.
    pub config: Config,
    /// Admin listen address.
    pub admin: SocketAddr,
    /// Every address claimed (admin and sources), by key.
    pub claims: Vec<weir_sources::Claim>,
    /// The enabled sources, validated, in `[sources]` order.
    pub sources: Vec<Box<dyn weir_sources::ValidSource>>,
}

#[cfg(test)]
impl ValidConfig {
    /// The address claimed by `key` (`sources.otlp.grpc_address`), if any.
    pub fn address(&self, key: &str) -> Option<SocketAddr> {
        self.claims.iter().find(|c| c.key == key).map(|c| c.addr())
    }
}

impl fmt::Debug for ValidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidConfig")
            .field("config", &self.config)
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

mod control;
pub mod env;
mod interpolate;
pub mod load;
pub mod print;
pub mod secrets;

pub use control::{
    CompactionConfig, ControlPlaneConfig, IcebergConfig, IndexBackend, RetentionConfig,
};
pub use load::LoadErrors;
pub use weir_sources::SourcesConfig;

#[cfg(test)]
mod tests;
