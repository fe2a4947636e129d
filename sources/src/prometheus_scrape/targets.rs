//! Scrape targets: a URL and the labels every series scraped from it gets (`job`,
//! `instance`, configured ones), from the static list, `file_sd` files and pods.

use std::collections::BTreeMap;

use reqwest::Url;
use serde::Deserialize;

/// One endpoint to scrape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// The URL fetched.
    pub url: String,
    /// Target labels, sorted by name: `job`, `instance` and the configured or discovered
    /// ones (labels starting with `__` are not kept).
    pub labels: Vec<(String, String)>,
    /// Whether `bearer_token_file` is sent to it: static targets only, never discovered
    /// ones (a pod that annotates itself must not receive the agent's token).
    pub credentials: bool,
}

/// Whether `s` is a Prometheus label name.
pub fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Target {
    /// A target from a URL like `http://host:9100/metrics`; `instance` is its `host:port`.
    pub fn from_url(
        url: &str,
        job: &str,
        extra: &BTreeMap<String, String>,
    ) -> Result<Target, String> {
        let parsed = Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "scheme {:?} is not http or https",
                parsed.scheme()
            ));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the URL has no host")?;
        let port = parsed
            .port_or_known_default()
            .ok_or("the URL has no port")?;
        let instance = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut labels: BTreeMap<String, String> = extra.clone();
        labels
            .entry("job".into())
            .or_insert_with(|| job.to_string());
        labels.insert("instance".into(), instance);
        Ok(Target {
            url: parsed.to_string(),
            labels: labels
                .into_iter()
                .filter(|(k, v)| !k.starts_with("__") && !v.is_empty())
                .collect(),
            credentials: false,
        })
    }

    /// A target from a discovered address (`host:port`) and its labels, as Prometheus builds
    /// one: `__scheme__` (default `http`) and `__metrics_path__` (default `/metrics`) make
    /// the URL, `instance` defaults to the address, `job` to `job`.
    pub fn from_address(
        address: &str,
        labels: &BTreeMap<String, String>,
        job: &str,
    ) -> Result<Target, String> {
        if address.is_empty() || address.contains('/') {
            return Err(format!("{address:?} is not a host:port address"));
        }
        for k in labels.keys() {
            if !valid_label_name(k) {
                return Err(format!("{k:?} is not a label name"));
            }
        }
        let scheme = labels.get("__scheme__").map_or("http", String::as_str);
        let path = labels
            .get("__metrics_path__")
            .map_or("/metrics", String::as_str);
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let mut t = Target::from_url(&format!("{scheme}://{address}{path}"), job, labels)?;
        // `instance` is the address as discovered, unless a label sets it.
        let instance = labels
            .get("instance")
            .cloned()
            .unwrap_or_else(|| address.to_string());
        if let Some(slot) = t.labels.iter_mut().find(|(k, _)| k == "instance") {
            slot.1 = instance;
        }
        Ok(t)
    }

    /// The `instance` label.
    pub fn instance(&self) -> &str {
        self.label("instance").unwrap_or("")
    }

    /// The value of target label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One group of a `file_sd` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The targets of a `file_sd` file (`yaml` true for YAML, else JSON). A bad entry fails the
/// whole file, as in Prometheus, so a half-read file never drops targets silently.
pub fn parse_file(text: &str, yaml: bool, job: &str) -> Result<Vec<Target>, String> {
    let groups: Vec<Group> = if yaml {
        serde_yaml::from_str(text).map_err(|e| format!("not a YAML list of target groups: {e}"))?
    } else {
        serde_json::from_str(text).map_err(|e| format!("not a JSON list of target groups: {e}"))?
    };
    let mut out = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        for (j, address) in g.targets.iter().enumerate() {
            let t = Target::from_address(address, &g.labels, job)
                .map_err(|e| format!("group {i}, target {j}: {e}"))?;
            out.push(t);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_targets_get_job_and_instance() {
        let t = Target::from_url(
            "http://127.0.0.1:9100/metrics",
            "node",
            &BTreeMap::from([("team".to_string(), "infra".to_string())]),
        )
        .unwrap();
        assert_eq!(t.url, "http://127.0.0.1:9100/metrics");
        assert_eq!(t.instance(), "127.0.0.1:9100");
        assert_eq!(t.label("job"), Some("node"));
        assert_eq!(t.label("team"), Some("infra"));
        let https = Target::from_url("https://kubelet/metrics", "k", &BTreeMap::new()).unwrap();
        assert_eq!(https.instance(), "kubelet:443");
        assert!(Target::from_url("unix:///x", "j", &BTreeMap::new()).is_err());
    }

    #[test]
    fn file_groups_build_urls_from_meta_labels() {
        let json = r#"[{"targets": ["10.0.0.1:8080", "10.0.0.2:8080"],
                        "labels": {"__metrics_path__": "/stats", "__scheme__": "https", "env": "prod"}},
                       {"targets": ["10.0.0.3:9100"], "labels": {"job": "node"}}]"#;
        let ts = parse_file(json, false, "default_job").unwrap();
        assert_eq!(ts.len(), 3);
        assert_eq!(ts[0].url, "https://10.0.0.1:8080/stats");
        assert_eq!(ts[0].label("env"), Some("prod"));
        assert_eq!(ts[0].label("job"), Some("default_job"));
        assert_eq!(ts[0].label("__scheme__"), None);
        assert_eq!(ts[2].label("job"), Some("node"));
        assert_eq!(ts[2].instance(), "10.0.0.3:9100");
        let yaml = "- targets: ['localhost:9100']\n  labels: {team: a}\n";
        let ys = parse_file(yaml, true, "j").unwrap();
        assert_eq!(ys[0].url, "http://localhost:9100/metrics");
        assert_eq!(ys[0].label("team"), Some("a"));
    }

    #[test]
    fn bad_files_fail_whole() {
        assert!(parse_file("[{\"targets\": [\"a:1\", \"b/c\"]}]", false, "j")
            .unwrap_err()
            .contains("target 1"));
        assert!(parse_file("{", false, "j").is_err());
        assert!(parse_file("- nope: 1", true, "j").is_err());
        assert!(
            parse_file("[{\"targets\": [\"a:1\"], \"labels\": {\"bad-l\": \"v\"}}]", false, "j")
                .is_err()
        );
    }
}
