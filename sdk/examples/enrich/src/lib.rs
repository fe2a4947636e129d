//! `enrich`: static attributes, and attribute copy / rename / delete, on every signal.
//!
//! Config: `{"set": {"env": "prod"}, "set_resource": {"cluster": "eu-1"}, "copy": {"user.id":
//! "enduser.id"}, "rename": {"msg_id": "message.id"}, "delete": ["password"]}`. Order: delete,
//! rename, copy, set (set overwrites).

use std::collections::BTreeMap;

use serde::Deserialize;
use weir_sdk::{export, Error, Logs, Metrics, Traces, Transform};

/// The transform's configuration.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Attributes to set on every record.
    pub set: BTreeMap<String, String>,
    /// Resource attributes to set on every record.
    pub set_resource: BTreeMap<String, String>,
    /// Copy attribute `from` to `to` (when present).
    pub copy: BTreeMap<String, String>,
    /// Rename attribute `from` to `to`.
    pub rename: BTreeMap<String, String>,
    /// Attributes to delete.
    pub delete: Vec<String>,
}

/// The transform.
pub struct Enrich {
    cfg: Config,
}

type Attrs = Vec<(String, Option<String>)>;

fn put(attrs: &mut Attrs, k: &str, v: Option<String>) {
    match attrs.iter_mut().find(|(key, _)| key == k) {
        Some(e) => e.1 = v,
        None => attrs.push((k.to_string(), v)),
    }
}

impl Enrich {
    fn edit(&self, attrs: &mut Attrs) {
        attrs.retain(|(k, _)| !self.cfg.delete.contains(k));
        for (from, to) in &self.cfg.rename {
            if let Some(i) = attrs.iter().position(|(k, _)| k == from) {
                let (_, v) = attrs.remove(i);
                put(attrs, to, v);
            }
        }
        for (from, to) in &self.cfg.copy {
            if let Some(v) = attrs
                .iter()
                .find(|(k, _)| k == from)
                .map(|(_, v)| v.clone())
            {
                put(attrs, to, v);
            }
        }
        for (k, v) in &self.cfg.set {
            put(attrs, k, Some(v.clone()));
        }
    }

    fn edit_resource(&self, attrs: &mut Attrs) {
        for (k, v) in &self.cfg.set_resource {
            put(attrs, k, Some(v.clone()));
        }
    }
}

impl Transform for Enrich {
    type Config = Config;

    fn new(cfg: Config) -> Result<Self, Error> {
        Ok(Enrich { cfg })
    }

    fn logs(&mut self, logs: &mut Logs) -> Result<(), Error> {
        logs.update_attributes(|_, a| self.edit(a))?;
        if !self.cfg.set_resource.is_empty() {
            logs.update_resource_attributes(|_, a| self.edit_resource(a))?;
        }
        Ok(())
    }

    fn metrics(&mut self, m: &mut Metrics) -> Result<(), Error> {
        m.update_attributes(|_, a| self.edit(a))?;
        if !self.cfg.set_resource.is_empty() {
            m.update_resource_attributes(|_, a| self.edit_resource(a))?;
        }
        Ok(())
    }

    fn traces(&mut self, t: &mut Traces) -> Result<(), Error> {
        t.update_attributes(|_, a| self.edit(a))?;
        if !self.cfg.set_resource.is_empty() {
            t.update_resource_attributes(|_, a| self.edit_resource(a))?;
        }
        Ok(())
    }
}

export!(Enrich);

#[cfg(test)]
mod tests {
    use weir_sdk::{testing, Signal};

    use super::*;

    #[test]
    fn set_copy_rename_delete() {
        let batch = testing::logs(&[(
            9,
            "a",
            &[("user.id", "u1"), ("password", "x"), ("msg_id", "7")],
        )]);
        let cfg = r#"{"set": {"env": "prod"}, "set_resource": {"cluster": "eu-1"}, "copy": {"user.id": "enduser.id"},
                      "rename": {"msg_id": "message.id"}, "delete": ["password"]}"#;
        let out = testing::run::<Enrich>(cfg, Signal::Logs, &batch).unwrap();
        let mut logs = weir_sdk::testing::wrap_logs(out);
        let r = logs.record(0);
        assert_eq!(r.attribute("env"), Some("prod"));
        assert_eq!(r.attribute("enduser.id"), Some("u1"));
        assert_eq!(r.attribute("message.id"), Some("7"));
        assert_eq!(r.attribute("msg_id"), None);
        assert_eq!(r.attribute("password"), None);
        assert_eq!(r.resource_attribute("cluster"), Some("eu-1"));
        let _ = &mut logs;
    }
}
