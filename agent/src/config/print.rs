//! The effective configuration as TOML with its secrets masked (`weir validate --print`).

use serde_json::{Map, Value};

use super::secrets::SECRET_KEYS;
use super::Config;

/// What replaces a secret.
pub const MASK: &str = "***";

/// The configuration could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum PrintError {
    /// Serializing to a tree failed.
    #[error("cannot serialize the configuration: {0}")]
    Tree(#[from] serde_json::Error),
    /// Writing TOML failed.
    #[error("cannot write the configuration as TOML: {0}")]
    Toml(#[from] toml::ser::Error),
}

/// `cfg` as TOML, every secret replaced by `***`: the keys of [`SECRET_KEYS`], the API keys of
/// `auth.api_keys` (numbered, as they are the map's keys), `lake.options` whose name speaks of
/// a secret, and the user, password and query of `control_plane.postgres_url`. Unset keys are left
/// out (TOML has no null).
pub fn masked_toml(cfg: &Config) -> Result<String, PrintError> {
    let mut tree = serde_json::to_value(cfg)?;
    mask(&mut tree);
    drop_nulls(&mut tree);
    Ok(toml::to_string_pretty(&tree)?)
}

fn mask(tree: &mut Value) {
    // The URL keeps its host and database; its user, password and query are masked below.
    for pattern in SECRET_KEYS
        .iter()
        .filter(|k| **k != "control_plane.postgres_url")
    {
        let segments: Vec<&str> = pattern.split('.').collect();
        mask_path(tree, &segments);
    }
    if let Some(Value::Object(keys)) = tree.pointer_mut("/auth/api_keys") {
        let masked: Map<String, Value> = std::mem::take(keys)
            .into_iter()
            .enumerate()
            .map(|(i, (_, tenant))| (format!("{MASK}{}", i + 1), tenant))
            .collect();
        *keys = masked;
    }
    if let Some(Value::Object(options)) = tree.pointer_mut("/lake/options") {
        for (name, value) in options.iter_mut() {
            let name = name.to_ascii_lowercase();
            if ["secret", "key", "token", "password", "credential", "sas"]
                .iter()
                .any(|w| name.contains(w))
            {
                *value = Value::from(MASK);
            }
        }
    }
    if let Some(Value::String(url)) = tree.pointer_mut("/control_plane/postgres_url") {
        *url = mask_url(url);
    }
}

fn mask_path(node: &mut Value, segments: &[&str]) {
    match segments {
        [] => {}
        ["*", rest @ ..] => {
            if let Value::Array(items) = node {
                for item in items {
                    mask_path(item, rest);
                }
            }
        }
        [leaf] => {
            if let Some(v @ Value::String(_)) = node.get_mut(*leaf) {
                *v = Value::from(MASK);
            }
        }
        [key, rest @ ..] => {
            if let Some(child) = node.get_mut(*key) {
                mask_path(child, rest);
            }
        }
    }
}

/// `postgres://user:pass@host/db?password=x` as `postgres://***@host/db?***`; anything that
/// does not look like a URL is masked whole.
fn mask_url(url: &str) -> String {
    let Some(scheme) = url.find("://") else {
        return MASK.into();
    };
    let (base, query) = match url.split_once('?') {
        Some((base, _)) => (base, format!("?{MASK}")),
        None => (url, String::new()),
    };
    match base.rfind('@') {
        Some(at) if at > scheme + 3 => {
            format!("{}{MASK}{}{query}", &base[..scheme + 3], &base[at..])
        }
        _ => format!("{base}{query}"),
    }
}

fn drop_nulls(node: &mut Value) {
    match node {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::control::TokenConfig;

    #[test]
    fn secrets_are_masked_and_the_rest_printed() {
        let mut c = Config::default();
        c.control_plane.token = Some("agent-secret-0123456789".into());
        c.control_plane.postgres_url = Some("postgres://weir:pg-pass@db:5432/weir".into());
        c.control_plane.tokens.push(TokenConfig {
            token: "admin-secret-0123456789".into(),
            tenants: vec!["*".into()],
            scopes: vec![weir_control_plane::api::Scope::Read],
        });
        c.auth
            .api_keys
            .insert("api-secret-key".into(), "team-a".into());
        c.lake
            .options
            .insert("aws_secret_access_key".into(), "aws-secret".into());
        c.lake
            .options
            .insert("aws_region".into(), "eu-west-1".into());
        c.sources.fluent.shared_key = Some("fluent-secret".into());
        c.lake.zstd_level = 9;
        let text = masked_toml(&c).unwrap();
        for secret in [
            "agent-secret",
            "pg-pass",
            "admin-secret",
            "api-secret-key",
            "aws-secret",
            "fluent-secret",
        ] {
            assert!(!text.contains(secret), "{secret} printed:\n{text}");
        }
        assert!(text.contains("postgres://***@db:5432/weir\""), "{text}");
        assert_eq!(
            mask_url("postgres://db/weir?user=a&password=b"),
            "postgres://db/weir?***"
        );
        assert_eq!(mask_url("host=db password=b"), MASK);
        assert!(text.contains("eu-west-1"), "{text}");
        assert!(text.contains("\"***1\" = \"team-a\""), "{text}");
        assert!(text.contains("zstd_level = 9"), "{text}");
        // What is printed loads back (with the masks as values).
        let back: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(back["lake"]["zstd_level"].as_integer(), Some(9));
    }
}
