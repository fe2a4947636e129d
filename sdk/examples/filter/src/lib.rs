//! `filter`: drops log records below a severity, records whose attribute matches a value, and
//! health-check noise (probe requests to /healthz, /livez, /readyz, /health, kube-probe).
//!
//! Config: `{"min_severity": 9, "drop_attributes": {"http.route": "/metrics"},
//! "drop_health_checks": true}`. Records with severity 0 (unspecified) are kept unless
//! `drop_unspecified` is true.

use std::collections::BTreeMap;

use serde::Deserialize;
use weir_sdk::{export, Error, LogRecord, Logs, Transform};

/// The transform's configuration.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Drop records whose severity number is below this (0: keep all).
    pub min_severity: i32,
    /// Also drop records without a severity when `min_severity` is set.
    pub drop_unspecified: bool,
    /// Drop records whose attribute equals the value.
    pub drop_attributes: BTreeMap<String, String>,
    /// Drop health-check noise.
    pub drop_health_checks: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_severity: 0,
            drop_unspecified: false,
            drop_attributes: BTreeMap::new(),
            drop_health_checks: true,
        }
    }
}

/// The transform.
pub struct Filter {
    cfg: Config,
}

const PROBE_PATHS: [&str; 5] = ["/healthz", "/livez", "/readyz", "/health", "/ping"];

fn is_health_check(r: &LogRecord<'_>) -> bool {
    let route = r
        .attribute("http.route")
        .or_else(|| r.attribute("url.path"))
        .or_else(|| r.attribute("http.target"));
    if route.is_some_and(|p| PROBE_PATHS.contains(&p)) {
        return true;
    }
    if r.attribute("user_agent.original")
        .is_some_and(|ua| ua.starts_with("kube-probe/"))
    {
        return true;
    }
    r.body().is_some_and(|b| {
        b.contains("kube-probe/")
            || PROBE_PATHS
                .iter()
                .any(|p| b.contains(&format!("GET {p} ")) || b.ends_with(&format!("GET {p}")))
    })
}

impl Filter {
    /// Whether a record is kept.
    pub fn keep(&self, r: &LogRecord<'_>) -> bool {
        let sev = r.severity_number();
        if self.cfg.min_severity > 0
            && ((sev == 0 && self.cfg.drop_unspecified)
                || (sev != 0 && sev < self.cfg.min_severity))
        {
            return false;
        }
        if self
            .cfg
            .drop_attributes
            .iter()
            .any(|(k, v)| r.attribute(k) == Some(v.as_str()))
        {
            return false;
        }
        !(self.cfg.drop_health_checks && is_health_check(r))
    }
}

impl Transform for Filter {
    type Config = Config;

    fn new(cfg: Config) -> Result<Self, Error> {
        if !(0..=24).contains(&cfg.min_severity) {
            return Err(Error::new(format!(
                "min_severity {} is not an OTel severity (0-24)",
                cfg.min_severity
            )));
        }
        Ok(Filter { cfg })
    }

    fn logs(&mut self, logs: &mut Logs) -> Result<(), Error> {
        logs.retain(|r| self.keep(r))
    }
}

export!(Filter);

#[cfg(test)]
mod tests {
    use weir_sdk::{testing, Signal};

    use super::*;

    #[test]
    fn drops_by_severity_attribute_and_health_checks() {
        use arrow_array::RecordBatch;
        let batch: RecordBatch = weir_sdk::testing::logs(&[
            (9, "GET /api/orders 200", &[("http.route", "/api/orders")]),
            (5, "debug noise", &[]),
            (9, "GET /healthz 200", &[("http.route", "/healthz")]),
            (13, "probe", &[("user_agent.original", "kube-probe/1.29")]),
            (17, "boom", &[("tenant", "internal")]),
            (0, "no severity", &[]),
        ]);
        let cfg = r#"{"min_severity": 9, "drop_attributes": {"tenant": "internal"}}"#;
        let out = testing::run::<Filter>(cfg, Signal::Logs, &batch).unwrap();
        let bodies = testing::bodies(&out);
        assert_eq!(bodies, vec!["GET /api/orders 200", "no severity"]);
        assert!(
            testing::run::<Filter>(r#"{"min_severity": 99}"#, Signal::Logs, &batch)
                .unwrap_err()
                .0
                .contains("min_severity 99")
        );
    }
}
