//! Configuration: built-in defaults, then a TOML or YAML file, then `WEIR_` environment
//! variables with `__` for nesting (`WEIR_LAKE__URL=s3://bucket/prefix`). Unknown keys are
//! errors that name the key path. Sizes ("16MiB") and durations ("60s") are human-readable.
//!
//! [`Config::validate`] is pure (no I/O): it checks every value and the listen addresses for
//! conflicts, and returns a [`ValidConfig`] that `weir run` builds from.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml, Yaml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use weir_pipelines::buffer::AckMode;

/// A size in bytes, written as `123`, `"64KiB"`, `"16MiB"`, `"1GiB"`, `"10MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses a human-readable size.
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size (like 512KiB, 16MiB, 1GiB)"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {s:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
                ))
            }
        };
        Ok(ByteSize((n * mult as f64) as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        for (unit, m) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if v >= m && v.is_multiple_of(m) {
                return write!(f, "{}{unit}", v / m);
            }
        }
        write!(f, "{v}B")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// A duration, written as `"500ms"`, `"60s"`, `"5m"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a duration (like 500ms, 60s, 5m): {e}"
                ))
            })
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("static address")
}

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
        }
    }
}

/// This agent's identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Id written in every segment record; defaults to the host name.
    pub id: Option<String>,
}

/// Every input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// OTLP over gRPC and HTTP.
    pub otlp: OtlpConfig,
    /// syslog over UDP and TCP.
    pub syslog: SyslogConfig,
    /// Loki push API.
    pub loki: LokiConfig,
    /// Fluent forward protocol.
    pub fluent: FluentConfig,
    /// Datadog Agent intake.
    pub datadog: DatadogConfig,
}

/// Authentication of the HTTP and gRPC sources.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// API keys and the tenant each one writes to. When set, every HTTP/gRPC request must carry
    /// a key (`Authorization: Bearer`, `X-API-Key`, or `DD-API-KEY` for Datadog).
    pub api_keys: BTreeMap<String, String>,
}

/// The durable buffer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Bound on live buffered bytes; past it sources answer with retryable errors.
    pub max_bytes: ByteSize,
    /// `durable` (fsync before the response, the default) or `buffered`.
    pub ack: AckMode,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            max_bytes: ByteSize(1 << 30),
            ack: AckMode::Durable,
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
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: "0.0.0.0:8686".into(),
        }
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
    /// The file or environment could not be read or parsed (the message names the key path
    /// and where the value came from).
    #[error("{0}")]
    Load(Box<figment::Error>),
    /// Values are invalid.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Loads defaults, then `file` (TOML, or YAML by extension), then `WEIR_` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::figment(file)
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))
    }

    fn figment(file: Option<&Path>) -> Figment {
        let mut f = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            let yaml = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            );
            f = if yaml {
                f.merge(Yaml::file_exact(path))
            } else {
                f.merge(Toml::file_exact(path))
            };
        }
        f.merge(Env::prefixed("WEIR_").split("__"))
    }

    /// Checks every value; no I/O.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        let mut problems = Vec::new();
        let mut listen = Listeners::default();
        let admin = listen.claim(&mut problems, false, "admin.address", &self.admin.address);
        if admin.is_none() && problems.is_empty() {
            problems.push("admin.address must be set".into());
        }
        let otlp = &self.sources.otlp;
        let (mut grpc, mut http) = (None, None);
        if otlp.enabled {
            grpc = listen.claim(
                &mut problems,
                false,
                "sources.otlp.grpc_address",
                &otlp.grpc_address,
            );
            http = listen.claim(
                &mut problems,
                false,
                "sources.otlp.http_address",
                &otlp.http_address,
            );
            if otlp.max_request_bytes.0 < 1024 {
                problems.push(format!(
                    "sources.otlp.max_request_bytes = {} is below 1KiB",
                    otlp.max_request_bytes
                ));
            }
        }
        let mut loki = None;
        if self.sources.loki.enabled {
            loki = listen.claim(
                &mut problems,
                false,
                "sources.loki.address",
                &self.sources.loki.address,
            );
            if self.sources.loki.max_request_bytes.0 < 1024 {
                problems.push(format!(
                    "sources.loki.max_request_bytes = {} is below 1KiB",
                    self.sources.loki.max_request_bytes
                ));
            }
        }
        let mut datadog = None;
        if self.sources.datadog.enabled {
            datadog = listen.claim(
                &mut problems,
                false,
                "sources.datadog.address",
                &self.sources.datadog.address,
            );
            if self.sources.datadog.max_request_bytes.0 < 1024 {
                problems.push(format!(
                    "sources.datadog.max_request_bytes = {} is below 1KiB",
                    self.sources.datadog.max_request_bytes
                ));
            }
        }
        for (key, tenant) in &self.auth.api_keys {
            if key.trim().is_empty() {
                problems.push("auth.api_keys has an empty key".into());
            }
            if !weir_control_plane::segment_valid_tenant(tenant) {
                problems.push(format!(
                    "auth.api_keys: tenant {tenant:?} must match [A-Za-z0-9_-]{{1,64}}"
                ));
            }
        }
        let mut fluent = None;
        let fl = &self.sources.fluent;
        if fl.enabled {
            fluent = listen.claim(&mut problems, false, "sources.fluent.address", &fl.address);
            if fl.max_frame_bytes.0 < 1024 {
                problems.push(format!(
                    "sources.fluent.max_frame_bytes = {} is below 1KiB",
                    fl.max_frame_bytes
                ));
            }
            if fl.max_connections == 0 {
                problems.push("sources.fluent.max_connections must be at least 1".into());
            }
            if !weir_control_plane::segment_valid_tenant(&fl.tenant) {
                problems.push(format!(
                    "sources.fluent.tenant = {:?} must match [A-Za-z0-9_-]{{1,64}}",
                    fl.tenant
                ));
            }
        }
        let sys = &self.sources.syslog;
        let (mut syslog_udp, mut syslog_tcp) = (None, None);
        if sys.enabled {
            syslog_tcp = listen.claim(
                &mut problems,
                false,
                "sources.syslog.tcp_address",
                &sys.tcp_address,
            );
            syslog_udp = listen.claim(
                &mut problems,
                true,
                "sources.syslog.udp_address",
                &sys.udp_address,
            );
            if sys.max_frame_bytes.0 < 480 {
                problems.push(format!(
                    "sources.syslog.max_frame_bytes = {} is below 480 bytes (RFC 5424's minimum)",
                    sys.max_frame_bytes
                ));
            }
            if sys.max_batch_records == 0 {
                problems.push("sources.syslog.max_batch_records must be at least 1".into());
            }
            if sys.max_connections == 0 {
                problems.push("sources.syslog.max_connections must be at least 1".into());
            }
            if !weir_control_plane::segment_valid_tenant(&sys.tenant) {
                problems.push(format!(
                    "sources.syslog.tenant = {:?} must match [A-Za-z0-9_-]{{1,64}}",
                    sys.tenant
                ));
            }
        }
        let mut transform_names = std::collections::HashSet::new();
        for (i, p) in self.pipelines.iter().enumerate() {
            let at = format!("pipelines[{i}]");
            if p.name.is_empty() {
                problems.push(format!("{at}.name must be set"));
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
                if t.max_memory.0 < (1 << 16) {
                    problems.push(format!(
                        "{at}.max_memory = {} is below one wasm page (64KiB)",
                        t.max_memory
                    ));
                }
            }
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
        self.control_plane.check(&mut problems);
        self.compaction.check(&mut problems);
        self.retention.check(&mut problems);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        Ok(ValidConfig {
            admin: admin.unwrap_or_else(|| addr("0.0.0.0:8686")),
            otlp_grpc: grpc,
            otlp_http: http,
            syslog_udp,
            syslog_tcp,
            loki,
            fluent,
            datadog,
            config: self,
        })
    }
}

/// Listen addresses claimed so far, to find two components on one address and protocol.
#[derive(Default)]
struct Listeners {
    claimed: HashMap<(bool, SocketAddr), &'static str>,
}

impl Listeners {
    /// Parses `value` (empty: disabled) and records it for `key`; `udp` selects the protocol.
    fn claim(
        &mut self,
        problems: &mut Vec<String>,
        udp: bool,
        key: &'static str,
        value: &str,
    ) -> Option<SocketAddr> {
        if value.is_empty() {
            return None;
        }
        match value.parse::<SocketAddr>() {
            Ok(a) => {
                if let Some(other) = self.claimed.insert((udp, a), key) {
                    problems.push(format!("{key} = {value:?} is also used by {other}"));
                }
                Some(a)
            }
            Err(_) => {
                problems.push(format!(
                    "{key} = {value:?} is not an address like 0.0.0.0:4317"
                ));
                None
            }
        }
    }
}

/// A configuration that passed [`Config::validate`].
#[derive(Debug, Clone)]
pub struct ValidConfig {
    /// The values.
    pub config: Config,
    /// Admin listen address.
    pub admin: SocketAddr,
    /// OTLP gRPC listen address, if enabled.
    pub otlp_grpc: Option<SocketAddr>,
    /// OTLP HTTP listen address, if enabled.
    pub otlp_http: Option<SocketAddr>,
    /// syslog UDP listen address, if enabled.
    pub syslog_udp: Option<SocketAddr>,
    /// syslog TCP listen address, if enabled.
    pub syslog_tcp: Option<SocketAddr>,
    /// Loki push listen address, if enabled.
    pub loki: Option<SocketAddr>,
    /// Fluent forward listen address, if enabled.
    pub fluent: Option<SocketAddr>,
    /// Datadog intake listen address, if enabled.
    pub datadog: Option<SocketAddr>,
}

mod control;
mod sources;

pub use control::{CompactionConfig, ControlPlaneConfig, IndexBackend, RetentionConfig};
pub use sources::{DatadogConfig, FluentConfig, LokiConfig, OtlpConfig, SyslogConfig};

#[cfg(test)]
mod tests;
