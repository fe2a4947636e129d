//! Which `WEIR_` environment variables are configuration.
//!
//! A variable `WEIR_<PATH>` sets the key `<PATH>` lowercased, with `__` between nesting levels
//! (`WEIR_LAKE__URL` is `lake.url`, `WEIR_DATA_DIR` is `data_dir`). Every such variable is read,
//! and a key the configuration does not have is an error, except the variables Kubernetes
//! injects for a Service whose name starts with `weir` ("service links"). For a Service
//! `weir-control-plane` the kubelet sets, in every pod of the namespace:
//!
//! ```text
//! WEIR_CONTROL_PLANE_SERVICE_HOST=10.0.0.1
//! WEIR_CONTROL_PLANE_SERVICE_PORT=8700
//! WEIR_CONTROL_PLANE_SERVICE_PORT_API=8700          (one per named port)
//! WEIR_CONTROL_PLANE_PORT=tcp://10.0.0.1:8700
//! WEIR_CONTROL_PLANE_PORT_8700_TCP=tcp://10.0.0.1:8700
//! WEIR_CONTROL_PLANE_PORT_8700_TCP_PROTO=tcp        (and _PORT, _ADDR)
//! ```
//!
//! and for a Service `weir`, `WEIR_SERVICE_HOST`, `WEIR_PORT`, `WEIR_PORT_4317_TCP_ADDR`...
//! None of these can be a key: below the top level Weir's keys are reached through `__`, and
//! no top-level key ends in `_port` or `_service_host` (a test checks every one). So a
//! variable is ignored when the part after `WEIR_` has no `__`, is not a top-level key, and has
//! one of these shapes, matched without regard to case:
//!
//! - `SERVICE_HOST` or `…_SERVICE_HOST`;
//! - `SERVICE_PORT`, `…_SERVICE_PORT`, or either followed by `_<PORT NAME>`;
//! - `PORT` or `…_PORT`;
//! - `PORT_<number>_<TCP|UDP|SCTP>` or `…_PORT_<number>_<TCP|UDP|SCTP>`, optionally followed by
//!   `_PROTO`, `_PORT` or `_ADDR`.
//!
//! A Service whose name holds a double dash (`weir-lake--a`) gives `WEIR_LAKE__A_…`, which has a
//! `__` and is still read (and refused): set `enableServiceLinks: false` on the pod, as every
//! example and the Helm chart do.

use figment::value::Value;

use super::Config;

/// The prefix of configuration variables.
const PREFIX: &str = "WEIR_";

/// One configuration variable: `WEIR_LAKE__URL=s3://b/p` is the key path `["lake", "url"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Variable {
    /// The variable's name, as set.
    pub name: String,
    /// The key path it sets, lowercased.
    pub path: Vec<String>,
    /// Its text, not yet typed: the key's type decides (see `load`).
    pub value: String,
}

/// The configuration variables among `vars`: `WEIR_` variables (the prefix matched without
/// regard to case), `__` for nesting, Kubernetes service-link variables left out (see the
/// module docs), sorted by name.
pub(super) fn variables(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Variable> {
    let top = top_level_keys();
    let mut out: Vec<Variable> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let name = name.trim();
            let rest = name
                .get(..PREFIX.len())
                .filter(|p| p.eq_ignore_ascii_case(PREFIX))
                .and_then(|_| name.get(PREFIX.len()..))?;
            if is_service_link(rest, &top) {
                return None;
            }
            let path: Vec<String> = rest
                .to_ascii_lowercase()
                .split("__")
                .map(str::to_owned)
                .collect();
            if path.iter().any(|s| s.is_empty()) {
                return None;
            }
            Some(Variable {
                name: name.to_owned(),
                path,
                value,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The variables of this process, as text (a name or value that is not UTF-8 is skipped, or
/// its value read lossily).
pub(super) fn process_variables() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
}

/// The `WEIR_` variables of this process that [`provider`] leaves out, sorted.
pub fn ignored() -> Vec<String> {
    let top = top_level_keys();
    let mut out: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| {
            k.get(..PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
                && is_service_link(&k[PREFIX.len()..], &top)
        })
        .collect();
    out.sort();
    out
}

/// The keys at the top of [`Config`] (`data_dir`, `lake`, `control_plane`, ...).
fn top_level_keys() -> Vec<String> {
    match Value::serialize(Config::default()) {
        Ok(Value::Dict(_, dict)) => dict.into_keys().collect(),
        _ => Vec::new(),
    }
}

/// Whether `key`, a variable's name without the `WEIR_` prefix, is one of the shapes of a
/// Kubernetes service-link variable and cannot be a configuration key.
fn is_service_link(key: &str, top_level_keys: &[String]) -> bool {
    let key = key.trim().to_ascii_uppercase();
    if key.contains("__") || top_level_keys.iter().any(|k| k.eq_ignore_ascii_case(&key)) {
        return false;
    }
    let words: Vec<&str> = key.split('_').collect();
    match words.as_slice() {
        [.., "SERVICE", "HOST"] | [.., "PORT"] => true,
        _ => {
            // `…SERVICE_PORT_<NAME>`: a named port; the name may hold underscores (dashes).
            let named_port = words
                .windows(2)
                .position(|w| w == ["SERVICE", "PORT"])
                .is_some_and(|i| i + 2 < words.len());
            named_port || is_docker_link(&words)
        }
    }
}

/// `…PORT_<number>_<protocol>`, optionally followed by `_PROTO`, `_PORT` or `_ADDR`.
fn is_docker_link(words: &[&str]) -> bool {
    let tail = match words {
        [rest @ .., "PROTO" | "PORT" | "ADDR"] => rest,
        _ => words,
    };
    let is_link = |w: &[&str]| {
        matches!(w, [.., "PORT", number, "TCP" | "UDP" | "SCTP"]
            if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
    };
    is_link(tail) || is_link(words)
}

#[cfg(test)]
mod tests {
    use super::{is_service_link, top_level_keys};

    fn top() -> Vec<String> {
        top_level_keys()
    }

    #[test]
    fn no_top_level_key_has_a_service_link_shape() {
        let top = top();
        assert!(top.len() >= 13, "{top:?}");
        for key in ["data_dir", "control_plane", "lake", "pipelines"] {
            assert!(top.iter().any(|k| k == key), "{key} missing from {top:?}");
        }
        for key in &top {
            // Checked against an empty list: the shape alone must not match a real key.
            assert!(
                !is_service_link(key, &[]),
                "{key} looks like a service link"
            );
        }
    }

    #[test]
    fn service_link_shapes_are_recognised() {
        // Service `weir-control-plane`, ports `api` 8700/TCP and 9000/UDP.
        for name in [
            "CONTROL_PLANE_SERVICE_HOST",
            "CONTROL_PLANE_SERVICE_PORT",
            "CONTROL_PLANE_SERVICE_PORT_API",
            "CONTROL_PLANE_SERVICE_PORT_OTLP_GRPC",
            "CONTROL_PLANE_PORT",
            "CONTROL_PLANE_PORT_8700_TCP",
            "CONTROL_PLANE_PORT_8700_TCP_PROTO",
            "CONTROL_PLANE_PORT_8700_TCP_PORT",
            "CONTROL_PLANE_PORT_8700_TCP_ADDR",
            "CONTROL_PLANE_PORT_9000_UDP_ADDR",
            "CONTROL_PLANE_PORT_9000_SCTP",
            // Service `weir`: nothing before the shape.
            "SERVICE_HOST",
            "SERVICE_PORT",
            "SERVICE_PORT_ADMIN",
            "PORT",
            "PORT_4317_TCP",
            "PORT_4317_TCP_ADDR",
            // Lowercase and mixed case are the same variable to figment.
            "control_plane_port",
            "Service_Host",
        ] {
            assert!(is_service_link(name, &top()), "{name} should be ignored");
        }
    }

    #[test]
    fn configuration_keys_are_kept() {
        for name in [
            // Nested keys use `__`, whatever their last word.
            "CONTROL_PLANE__URL",
            "CONTROL_PLANE__POSTGRES_URL",
            "SOURCES__SYSLOG__UDP_ADDRESS",
            "ADMIN__ADDRESS",
            "LAKE__OPTIONS__AWS_ENDPOINT",
            "LAKE__OPTIONS__PROXY_PORT",
            "SOURCES__OTLP__SERVICE_PORT",
            // Top-level keys, and a key that is one.
            "DATA_DIR",
            "CONTROL_PLANE",
            "lake",
            // Shapes that are not service links stay, and are reported if unknown.
            "PORTS",
            "SUPPORT",
            "PORT_ABC_TCP",
            "PORT_80_HTTP",
            "DATA_DIRR",
            "SERVICE",
        ] {
            assert!(!is_service_link(name, &top()), "{name} should be read");
        }
        // A top-level key with a service-link shape would be read, not ignored.
        assert!(!is_service_link("HTTP_PORT", &["http_port".to_string()]));
        assert!(is_service_link("HTTP_PORT", &top()));
    }
}
