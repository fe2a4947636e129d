//! `attribute-guard`: keeps metric cardinality in check by dropping attributes or replacing
//! their values with a short stable hash (FNV-1a 64, hex).
//!
//! Config: `{"drop": ["request.id"], "hash": ["user.id"], "max_value_len": 0}`. With
//! `max_value_len` > 0, longer values of any attribute are hashed too.

use serde::Deserialize;
use weir_sdk::{export, Error, Metrics, Transform};

/// The transform's configuration.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Attribute keys to drop.
    pub drop: Vec<String>,
    /// Attribute keys whose values are hashed.
    pub hash: Vec<String>,
    /// Hash any value longer than this (0: off).
    pub max_value_len: usize,
}

/// The transform.
pub struct AttributeGuard {
    cfg: Config,
}

/// FNV-1a 64 of a string, as 16 hex digits.
pub fn fnv1a(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Transform for AttributeGuard {
    type Config = Config;

    fn new(cfg: Config) -> Result<Self, Error> {
        Ok(AttributeGuard { cfg })
    }

    fn metrics(&mut self, m: &mut Metrics) -> Result<(), Error> {
        let cfg = &self.cfg;
        m.update_attributes(|_, attrs| {
            attrs.retain(|(k, _)| !cfg.drop.contains(k));
            for (k, v) in attrs.iter_mut() {
                let long = cfg.max_value_len > 0
                    && v.as_ref().is_some_and(|s| s.len() > cfg.max_value_len);
                if cfg.hash.contains(k) || long {
                    *v = v.as_deref().map(fnv1a);
                }
            }
        })
    }
}

export!(AttributeGuard);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_and_short() {
        assert_eq!(fnv1a(""), "cbf29ce484222325");
        assert_eq!(fnv1a("user-1"), fnv1a("user-1"));
        assert_ne!(fnv1a("user-1"), fnv1a("user-2"));
        assert_eq!(fnv1a("anything").len(), 16);
    }
}
