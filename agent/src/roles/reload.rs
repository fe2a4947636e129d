//! Configuration reload on SIGHUP, shared by the long-running roles.
//!
//! A reload reads the configuration again exactly as the start did (the same file, the
//! environment, `weir validate --role`'s checks). A configuration that fails is refused as a
//! whole: the running one stays, an error log line names every problem, and
//! `weir_config_reloads_total{result="refused"}` counts it. A valid one is applied by the
//! role: what each role applies is in its module ([`super::data_path`],
//! [`super::control_plane`], [`super::compactor`]), and every other changed key is named in a
//! warning as taking effect at the next restart ([`Changes::restart`]).

use std::path::PathBuf;

use prometheus::{IntCounterVec, IntGauge, Opts};
use tracing::{error, info, warn};
use weir_pipelines::metrics::Metrics;

use super::preflight::{self, Role};
use crate::config::{Config, ValidConfig};

/// What a signal asks of a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: shut down gracefully.
    Stop,
    /// SIGHUP: read the configuration again.
    Reload,
}

/// The process's signal handlers: SIGTERM and SIGINT stop, SIGHUP reloads (so SIGHUP no
/// longer ends the process without its graceful flush).
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside the runtime).
    pub fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal. Cancel-safe.
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => {
                info!("SIGTERM received, shutting down");
                Signal::Stop
            }
            _ = self.int.recv() => {
                info!("SIGINT received, shutting down");
                Signal::Stop
            }
            _ = self.hup.recv() => {
                info!("SIGHUP received, reloading the configuration");
                Signal::Reload
            }
        }
    }
}

/// Serves reloads until SIGTERM or SIGINT, for a role that applies a part of its
/// configuration in place (the control plane, the compactor): on each SIGHUP the
/// configuration is loaded again; a refused one is logged and counted, a valid one is handed
/// to `apply` with what changed since the last one applied, then logged and counted.
pub async fn serve_reloads(
    signals: &mut Signals,
    from: &ConfigSource,
    reloads: &ReloadMetrics,
    mut running: Config,
    keys: (&[&str], &[&str]),
    mut apply: impl FnMut(&Config, &Changes),
) {
    let (applied, unused) = keys;
    while signals.next().await == Signal::Reload {
        let new = match from.load() {
            Ok(v) => v.config,
            Err(problems) => {
                reloads.refused(&problems);
                continue;
            }
        };
        let changes = Changes::between(&running, &new);
        apply(&new, &changes);
        changes.log_applied(applied, unused);
        reloads.applied();
        running = new;
    }
}

/// Where this process's configuration came from, to read it again.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// `--config`, if given.
    pub path: Option<PathBuf>,
    /// The role, whose start-up checks a new configuration must pass too.
    pub role: Role,
}

impl ConfigSource {
    /// Loads and validates the configuration again and runs the role's start-up checks:
    /// the new configuration, or every problem.
    pub fn load(&self) -> Result<ValidConfig, Vec<String>> {
        let valid = Config::load(self.path.as_deref())
            .and_then(Config::validate)
            .map_err(|e| vec![e.to_string()])?;
        let problems = preflight::check(self.role, &valid.config);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(valid)
    }
}

/// The reload metrics: `weir_config_reloads_total{result="applied"|"refused"}`,
/// `weir_config_last_reload_successful` (1 or 0) and
/// `weir_config_last_reload_success_timestamp_seconds` (the start counts as the first
/// success), as Prometheus exposes its own reloads.
#[derive(Clone)]
pub struct ReloadMetrics {
    total: IntCounterVec,
    successful: IntGauge,
    success_at: IntGauge,
}

impl ReloadMetrics {
    /// Registers the metrics.
    pub fn new(metrics: &Metrics) -> Result<ReloadMetrics, prometheus::Error> {
        let total = IntCounterVec::new(
            Opts::new(
                "config_reloads_total",
                "Configuration reloads (SIGHUP) by result",
            ),
            &["result"],
        )?;
        let successful = IntGauge::new(
            "config_last_reload_successful",
            "1 if the last configuration reload was applied, 0 if it was refused",
        )?;
        let success_at = IntGauge::new(
            "config_last_reload_success_timestamp_seconds",
            "When the configuration in use was loaded (start or last applied reload)",
        )?;
        metrics.register(Box::new(total.clone()))?;
        metrics.register(Box::new(successful.clone()))?;
        metrics.register(Box::new(success_at.clone()))?;
        for result in ["applied", "refused"] {
            total.with_label_values(&[result]);
        }
        successful.set(1);
        success_at.set(unix_seconds());
        Ok(ReloadMetrics {
            total,
            successful,
            success_at,
        })
    }

    /// Counts an applied reload.
    pub fn applied(&self) {
        self.total.with_label_values(&["applied"]).inc();
        self.successful.set(1);
        self.success_at.set(unix_seconds());
    }

    /// Logs and counts a refused reload: the running configuration stays.
    pub fn refused(&self, problems: &[String]) {
        self.total.with_label_values(&["refused"]).inc();
        self.successful.set(0);
        error!(
            problems = %problems.join("; "),
            "configuration reload refused; the running configuration stays"
        );
    }
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The keys that differ between two configurations, as key paths: `sources.<name>` and
/// `pipelines` whole, `<section>.<key>` for the other tables, `data_dir` alone.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    keys: Vec<String>,
}

impl Changes {
    /// Compares two configurations.
    pub fn between(old: &Config, new: &Config) -> Changes {
        let (Ok(old), Ok(new)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
            // Not reachable: the configuration always serializes (`weir validate --print`).
            return Changes {
                keys: vec!["(the configuration could not be compared)".into()],
            };
        };
        let mut keys = Vec::new();
        let empty = serde_json::Map::new();
        let (old, new) = (
            old.as_object().unwrap_or(&empty),
            new.as_object().unwrap_or(&empty),
        );
        let mut sections: Vec<&String> = old.keys().chain(new.keys()).collect();
        sections.sort();
        sections.dedup();
        for section in sections {
            let (a, b) = (old.get(section), new.get(section));
            if a == b {
                continue;
            }
            match (a, b) {
                (Some(serde_json::Value::Object(a)), Some(serde_json::Value::Object(b))) => {
                    let mut inner: Vec<&String> = a.keys().chain(b.keys()).collect();
                    inner.sort();
                    inner.dedup();
                    for key in inner {
                        if a.get(key) != b.get(key) {
                            keys.push(format!("{section}.{key}"));
                        }
                    }
                }
                _ => keys.push(section.clone()),
            }
        }
        Changes { keys }
    }

    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key under `prefix` changed (`retention`, `buffer.max_bytes`, `sources.`).
    pub fn any(&self, prefix: &str) -> bool {
        self.keys.iter().any(|k| under(k, prefix))
    }

    /// Every changed key.
    #[cfg(test)]
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The changed keys not under any of `applied` (what the role applies on a reload) nor
    /// `unused` (what the role never reads): those take effect at the next restart.
    pub fn restart(&self, applied: &[&str], unused: &[&str]) -> Vec<String> {
        self.keys
            .iter()
            .filter(|k| !applied.iter().chain(unused).any(|p| under(k, p)))
            .cloned()
            .collect()
    }

    /// Logs the applied reload: what changed, and what waits for a restart.
    pub fn log_applied(&self, applied: &[&str], unused: &[&str]) {
        let restart = self.restart(applied, unused);
        if !restart.is_empty() {
            warn!(
                keys = %restart.join(", "),
                "configuration reloaded, but these keys take effect only after a restart"
            );
        }
        info!(changed = %self.keys.join(", "), "configuration reloaded");
    }
}

/// `key` is `prefix` or below it (`sources.otlp` is under `sources` and `sources.otlp`,
/// `buffer.max_bytes` under `buffer`; `retention_x` is not under `retention`).
fn under(key: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('.');
    key == prefix
        || key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, toml).unwrap();
        crate::config::load::load(Some(&path), std::iter::empty()).unwrap()
    }

    #[test]
    fn changes_name_each_key_path() {
        let old = config("[sources.otlp]\nhttp_address = \"127.0.0.1:1\"\n");
        let new = config(
            "[sources.otlp]\nhttp_address = \"127.0.0.1:2\"\n[retention]\ndefault = \"1d\"\n[buffer]\nmax_bytes = \"2GiB\"\n[lake]\nzstd_level = 5\n",
        );
        let c = Changes::between(&old, &new);
        assert_eq!(
            c.keys(),
            [
                "buffer.max_bytes",
                "lake.zstd_level",
                "retention.default",
                "sources.otlp"
            ]
        );
        assert!(c.any("sources"));
        assert!(c.any("retention"));
        assert!(!c.any("compaction"));
        assert!(!c.any("buffer.ack"));
        assert_eq!(
            c.restart(&["sources", "retention", "buffer.max_bytes"], &[]),
            ["lake.zstd_level"]
        );
        assert!(c
            .restart(&["sources", "retention", "buffer"], &["lake"])
            .is_empty());
        assert!(Changes::between(&old, &old.clone()).is_empty());
    }

    /// A reload restarts the sources `SourcesConfig::changed` names: each is the name its
    /// running source goes by, for every source.
    #[test]
    fn changed_source_names_are_the_running_sources_names() {
        let all = config(
            r#"
[sources.otlp]
grpc_address = "127.0.0.1:0"
[sources.prometheus_remote_write]
enabled = true
[sources.kubernetes_logs]
enabled = true
[sources.file]
enabled = true
include = ["/var/log/*.log"]
[sources.host_metrics]
enabled = true
[sources.prometheus_scrape]
enabled = true
targets = ["http://127.0.0.1:9100/metrics"]
"#,
        );
        let (valid, problems) = all.sources.validate();
        assert!(problems.is_empty(), "{problems:?}");
        let mut running: Vec<&str> = valid.iter().map(|s| s.name()).collect();
        running.sort_unstable();
        let none = crate::config::SourcesConfig {
            otlp: Default::default(),
            ..all.sources.clone()
        };
        let mut fields: Vec<String> = match serde_json::to_value(&all.sources) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            other => panic!("{other:?}"),
        };
        fields.sort_unstable();
        assert_eq!(running, fields, "every source enabled");
        assert_eq!(none.changed(&all.sources), ["otlp"]);
    }

    #[test]
    fn key_paths_match_whole_segments() {
        assert!(under("retention.default", "retention"));
        assert!(under("retention", "retention"));
        assert!(under("sources.otlp", "sources."));
        assert!(!under("retention_x", "retention"));
        assert!(!under("buffer.max_bytes_x", "buffer.max_bytes"));
    }
}
