//! `[control_plane]`, `[compaction]` and `[retention]`: the shared index, compaction and
//! retention settings of every role.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_control_plane::api::Scope;

use super::{ByteSize, HumanDuration};

/// The least `compaction.memory`: a plan then holds at most 4 inputs (a quarter of the budget
/// for their readers at 1 MiB each, `weir_pipelines::compactor::max_inputs_for`).
const MIN_COMPACTION_MEMORY: u64 = 16 << 20;

/// Which index backs the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IndexBackend {
    /// Embedded sled under `{data_dir}/index` (one replica).
    #[default]
    Sled,
    /// PostgreSQL at `control_plane.postgres_url` (any number of replicas).
    Postgres,
}

/// The control plane: where `weir agent` finds it, and how `weir control-plane` serves it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ControlPlaneConfig {
    /// `weir agent` / `weir compactor`: base URL of the control plane.
    pub url: Option<String>,
    /// `weir agent` / `weir compactor`: bearer token sent to the control plane (or
    /// `token_file`: a file holding it).
    pub token: Option<String>,
    /// Timeout of one request to the control plane.
    pub timeout: HumanDuration,
    /// How often agents report to the fleet view.
    pub heartbeat_interval: HumanDuration,
    /// `weir control-plane`: listen address of the API.
    pub address: String,
    /// `weir control-plane`: index backend.
    pub index: IndexBackend,
    /// PostgreSQL connection URL (`index = "postgres"`), or `postgres_url_file`: a file holding
    /// it.
    pub postgres_url: Option<String>,
    /// Most PostgreSQL connections.
    pub pool_size: usize,
    /// Largest request body the API accepts.
    pub max_request_bytes: ByteSize,
    /// API tokens (`[[control_plane.tokens]]`); `weir control-plane` needs at least one.
    pub tokens: Vec<TokenConfig>,
    /// `weir control-plane`: open connections allowed on the API's address; one more is closed
    /// at once and counted
    /// (`weir_rejected_requests_total{source="control_plane",reason="too_many_connections"}`).
    /// Each agent and compactor keeps a few (its HTTP client's pool).
    pub max_connections: usize,
    /// `weir control-plane`: longest wait for a request's headers (HTTP/1), from the
    /// connection's first bytes or the end of the previous response: a slower client
    /// (slowloris), or a keep-alive connection idle that long, is closed (one sending no byte
    /// at all is left to `idle_timeout`). At least 1s.
    pub header_read_timeout: HumanDuration,
    /// `weir control-plane`: a connection over which nothing moves for this long while the
    /// API waits on it is closed and counted (`reason="idle_timeout"`). At least 1s.
    pub idle_timeout: HumanDuration,
    /// `weir control-plane`: longest wait for a request's body, from the end of its headers
    /// (bodies are read before the token is checked): a slower body is answered 408 and its
    /// connection closed (`reason="timeout"`). Above 0.
    pub request_timeout: HumanDuration,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        ControlPlaneConfig {
            url: None,
            token: None,
            timeout: HumanDuration(Duration::from_secs(10)),
            heartbeat_interval: HumanDuration(Duration::from_secs(15)),
            address: "0.0.0.0:8700".into(),
            index: IndexBackend::Sled,
            postgres_url: None,
            pool_size: 16,
            max_request_bytes: ByteSize(16 << 20),
            tokens: Vec::new(),
            max_connections: weir_sources::conn::DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: HumanDuration(weir_sources::http::DEFAULT_HEADER_READ_TIMEOUT),
            idle_timeout: HumanDuration(weir_sources::conn::DEFAULT_IDLE_TIMEOUT),
            request_timeout: HumanDuration(weir_sources::http::DEFAULT_REQUEST_TIMEOUT),
        }
    }
}

/// One API token of the control plane.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret; or `token_file`, a file holding it (a mounted Secret), or the whole list in
    /// the environment (`WEIR_CONTROL_PLANE__TOKENS=...`).
    pub token: String,
    /// Tenants it may touch; `["*"]` (the default) for all.
    #[serde(default = "all_tenants")]
    pub tenants: Vec<String>,
    /// What it may do: `read`, `write`, `compact`, `admin` (default: all).
    #[serde(default = "all_scopes")]
    pub scopes: Vec<Scope>,
}

fn all_tenants() -> Vec<String> {
    vec!["*".into()]
}

fn all_scopes() -> Vec<Scope> {
    vec![Scope::Read, Scope::Write, Scope::Compact, Scope::Admin]
}

/// Background compaction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    /// Whether this process compacts (`weir run` and `weir agent`; `weir compactor` always does).
    pub enabled: bool,
    /// Pause between lease attempts when there is nothing to do.
    pub interval: HumanDuration,
    /// Lease duration; a compactor that dies frees its plan after this.
    pub lease_ttl: HumanDuration,
    /// Only segments at least this old are merged (lets the current hour settle).
    pub min_age: HumanDuration,
    /// Fewest segments worth merging.
    pub min_inputs: usize,
    /// How long replaced segments' objects are kept before deletion (for queries in flight).
    pub grace: HumanDuration,
    /// Memory a merge may hold: its inputs' decoded batches (sized from each file's own
    /// statistics) and its output's unfinished row group.
    pub memory: ByteSize,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            enabled: true,
            interval: HumanDuration(Duration::from_secs(30)),
            lease_ttl: HumanDuration(Duration::from_secs(600)),
            min_age: HumanDuration(Duration::from_secs(60)),
            min_inputs: 2,
            grace: HumanDuration(Duration::from_secs(300)),
            memory: ByteSize(64 << 20),
        }
    }
}

/// Retention, applied by the control plane's sweeper.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Keep rows this long unless a rule says otherwise; forever when unset.
    pub default: Option<HumanDuration>,
    /// Rules per tenant and/or signal (`[[retention.rules]]`); the most specific wins.
    pub rules: Vec<RetentionRuleConfig>,
    /// How often the sweeper runs.
    pub interval: HumanDuration,
    /// Log what would be deleted and change nothing.
    pub dry_run: bool,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            default: None,
            rules: Vec::new(),
            interval: HumanDuration(Duration::from_secs(300)),
            dry_run: false,
        }
    }
}

/// One retention rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionRuleConfig {
    /// Tenant (every tenant when absent).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Signal (every signal when absent).
    #[serde(default)]
    pub signal: Option<String>,
    /// How long rows are kept, by their own timestamp.
    pub max_age: HumanDuration,
}

impl RetentionConfig {
    /// The control plane's view of the policy.
    pub fn policy(&self) -> weir_catalog::RetentionPolicy {
        let ns = |d: &HumanDuration| d.0.as_nanos().min(i64::MAX as u128) as i64;
        weir_catalog::RetentionPolicy {
            default_max_age_ns: self.default.as_ref().map(ns),
            rules: self
                .rules
                .iter()
                .map(|r| weir_catalog::RetentionRule {
                    tenant: r.tenant.clone(),
                    signal: r.signal.clone(),
                    max_age_ns: ns(&r.max_age),
                })
                .collect(),
        }
    }

    /// Problems with the rules.
    pub(super) fn check(&self, problems: &mut Vec<String>) {
        for (i, r) in self.rules.iter().enumerate() {
            if r.max_age.0.is_zero() {
                problems.push(format!("retention.rules[{i}].max_age must be above 0"));
            }
            if let Some(s) = &r.signal {
                if weir_schema::Signal::parse(s).is_none() {
                    problems.push(format!(
                        "retention.rules[{i}].signal = {s:?} is not logs, metrics or traces"
                    ));
                }
            }
            if let Some(t) = &r.tenant {
                if !weir_catalog::valid_tenant(t) {
                    problems.push(format!(
                        "retention.rules[{i}].tenant = {t:?} is not a valid tenant"
                    ));
                }
            }
        }
        if self.default.as_ref().is_some_and(|d| d.0.is_zero()) {
            problems.push("retention.default must be above 0".into());
        }
        if self.interval.0.is_zero() {
            problems.push("retention.interval must be above 0".into());
        }
    }
}

impl ControlPlaneConfig {
    /// The bounds of the API listener's connections (`weir control-plane`).
    pub fn limits(&self) -> crate::admin::ListenerLimits {
        crate::admin::ListenerLimits::new(
            self.max_connections,
            self.header_read_timeout.0,
            self.idle_timeout.0,
            self.request_timeout.0,
        )
    }

    /// Problems with the section.
    pub(super) fn check(&self, problems: &mut Vec<String>) {
        self.limits().check(problems, "control_plane");
        if let Some(url) = &self.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(format!(
                    "control_plane.url = {url:?} must start with http:// or https://"
                ));
            }
        }
        if self.index == IndexBackend::Postgres && self.postgres_url.is_none() {
            problems
                .push("control_plane.postgres_url must be set when index = \"postgres\"".into());
        }
        if self.pool_size == 0 {
            problems.push("control_plane.pool_size must be at least 1".into());
        }
        if self.timeout.0.is_zero() || self.heartbeat_interval.0.is_zero() {
            problems.push("control_plane.timeout and heartbeat_interval must be above 0".into());
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token.len() < 16 {
                problems.push(format!(
                    "control_plane.tokens[{i}].token is shorter than 16 characters"
                ));
            }
            if t.tenants.is_empty() || t.scopes.is_empty() {
                problems.push(format!(
                    "control_plane.tokens[{i}] needs at least one tenant and one scope"
                ));
            }
        }
    }

    /// The API tokens.
    pub fn api_tokens(&self) -> Vec<weir_control_plane::api::ApiToken> {
        self.tokens
            .iter()
            .map(|t| weir_control_plane::api::ApiToken {
                token: t.token.clone(),
                tenants: t.tenants.clone(),
                scopes: t.scopes.clone(),
            })
            .collect()
    }
}

impl CompactionConfig {
    /// Problems with the section.
    pub(super) fn check(&self, problems: &mut Vec<String>) {
        if self.lease_ttl.0 < Duration::from_secs(1) || self.lease_ttl.0 > Duration::from_secs(3600)
        {
            problems.push("compaction.lease_ttl must be between 1s and 1h".into());
        }
        if self.interval.0.is_zero() {
            problems.push("compaction.interval must be above 0".into());
        }
        if self.min_inputs < 2 {
            problems.push("compaction.min_inputs must be at least 2".into());
        }
        if self.memory.0 < MIN_COMPACTION_MEMORY {
            problems.push(format!(
                "compaction.memory = \"{}\" is below 16MiB",
                self.memory
            ));
        }
    }
}

/// The lake as Iceberg tables (`[iceberg]`): the control plane (`weir run`'s embedded one, or
/// `weir control-plane`) derives Iceberg metadata from the index and serves the REST catalog
/// under `/iceberg`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IcebergConfig {
    /// Publish the tables and serve the catalog.
    pub enabled: bool,
    /// How often the index is compared with the tables (new snapshots at most this often).
    pub interval: HumanDuration,
    /// How long a snapshot stays readable after a newer one replaced it; the objects it
    /// lists are deleted only after that (and after `compaction.grace`).
    pub snapshot_max_age: HumanDuration,
    /// Metadata JSON files kept besides the current one.
    pub keep_metadata_files: u64,
}

impl Default for IcebergConfig {
    fn default() -> Self {
        IcebergConfig {
            enabled: true,
            interval: HumanDuration(Duration::from_secs(30)),
            snapshot_max_age: HumanDuration(Duration::from_secs(15 * 60)),
            keep_metadata_files: 10,
        }
    }
}

impl IcebergConfig {
    pub(super) fn check(&self, problems: &mut Vec<String>) {
        if self.interval.0.is_zero() {
            problems.push("iceberg.interval must be above 0".into());
        }
        if self.snapshot_max_age.0.is_zero() {
            problems.push("iceberg.snapshot_max_age must be above 0".into());
        }
        if self.keep_metadata_files == 0 {
            problems.push("iceberg.keep_metadata_files must be at least 1".into());
        }
    }
}
