//! `parse-json`: a log body that is a JSON object becomes attributes.
//!
//! Config: `{"prefix": "", "message_keys": ["message", "msg"], "keep_body": false,
//! "level_keys": ["level", "severity"]}`. Top-level keys become attributes (strings as they are,
//! other values as JSON); the first `message_keys` entry found becomes the body (else the body
//! is kept); a level key also sets the severity. Bodies that are not JSON objects are left
//! alone.

use serde::Deserialize;
use serde_json::Value;
use weir_sdk::{export, Error, Logs, Transform};

/// The transform's configuration.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Prefix of the attribute names.
    pub prefix: String,
    /// Keys whose value becomes the body.
    pub message_keys: Vec<String>,
    /// Keep the original JSON body even when a message key is found.
    pub keep_body: bool,
    /// Keys whose value sets the severity.
    pub level_keys: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            prefix: String::new(),
            message_keys: vec!["message".into(), "msg".into()],
            keep_body: false,
            level_keys: vec!["level".into(), "severity".into()],
        }
    }
}

/// The transform.
pub struct ParseJson {
    cfg: Config,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn severity(level: &str) -> i32 {
    match level.to_ascii_lowercase().as_str() {
        "trace" => 1,
        "debug" => 5,
        "info" | "notice" => 9,
        "warn" | "warning" => 13,
        "error" | "err" => 17,
        "critical" | "crit" => 18,
        "fatal" | "panic" | "alert" | "emergency" => 21,
        _ => 0,
    }
}

impl ParseJson {
    fn parse(body: Option<&str>) -> Option<serde_json::Map<String, Value>> {
        let b = body?.trim_start();
        if !b.starts_with('{') {
            return None;
        }
        match serde_json::from_str(b) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        }
    }
}

impl Transform for ParseJson {
    type Config = Config;

    fn new(cfg: Config) -> Result<Self, Error> {
        Ok(ParseJson { cfg })
    }

    fn logs(&mut self, logs: &mut Logs) -> Result<(), Error> {
        let parsed: Vec<Option<serde_json::Map<String, Value>>> =
            logs.records().map(|r| Self::parse(r.body())).collect();
        if parsed.iter().all(Option::is_none) {
            return Ok(());
        }
        let cfg = &self.cfg;
        logs.update_attributes(|r, attrs| {
            if let Some(m) = &parsed[r.index()] {
                for (k, v) in m {
                    attrs.push((format!("{}{k}", cfg.prefix), Some(text(v))));
                }
            }
        })?;
        logs.update_severity(|r| {
            let m = parsed[r.index()].as_ref()?;
            let level = cfg.level_keys.iter().find_map(|k| m.get(k)).map(text)?;
            Some((severity(&level), level))
        })?;
        if !cfg.keep_body {
            logs.update_body(|r| {
                let m = parsed[r.index()].as_ref()?;
                cfg.message_keys.iter().find_map(|k| m.get(k)).map(text)
            })?;
        }
        Ok(())
    }
}

export!(ParseJson);

#[cfg(test)]
mod tests {
    use weir_sdk::{testing, Signal};

    use super::*;

    #[test]
    fn json_bodies_become_attributes() {
        let batch = testing::logs(&[
            (
                0,
                r#"{"msg": "user logged in", "level": "warn", "user": "u1", "n": 3, "tags": ["a"]}"#,
                &[],
            ),
            (9, "plain text", &[]),
        ]);
        let out =
            testing::run::<ParseJson>(r#"{"prefix": "json."}"#, Signal::Logs, &batch).unwrap();
        let logs = testing::wrap_logs(out);
        let r = logs.record(0);
        assert_eq!(r.body(), Some("user logged in"));
        assert_eq!((r.severity_number(), r.severity_text()), (13, Some("warn")));
        assert_eq!(r.attribute("json.user"), Some("u1"));
        assert_eq!(r.attribute("json.n"), Some("3"));
        assert_eq!(r.attribute("json.tags"), Some(r#"["a"]"#));
        let plain = logs.record(1);
        assert_eq!(
            (plain.body(), plain.severity_number()),
            (Some("plain text"), 9)
        );
    }
}
