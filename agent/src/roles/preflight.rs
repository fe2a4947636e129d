//! The checks a role makes before it starts, beyond [`Config::validate`]: what the role needs
//! set, and the files it will read (transform modules, TLS certificates and keys). They read
//! files but bind no port and open no store, so `weir validate --role R` runs exactly these,
//! and every role runs them first ([`crate::serve`]).

use std::fmt;

use crate::config::Config;

/// A role of the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// `weir run`: agent with the embedded control plane.
    Run,
    /// `weir agent`: agent against a remote control plane.
    Agent,
    /// `weir control-plane`.
    ControlPlane,
    /// `weir compactor`.
    Compactor,
    /// `weir retention`.
    Retention,
    /// `weir iceberg rebuild`.
    IcebergRebuild,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Run => "run",
            Role::Agent => "agent",
            Role::ControlPlane => "control-plane",
            Role::Compactor => "compactor",
            Role::Retention => "retention",
            Role::IcebergRebuild => "iceberg rebuild",
        })
    }
}

/// What would stop `role` from starting with `cfg` (already validated), each naming its key.
pub fn check(role: Role, cfg: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let cp = &cfg.control_plane;
    match role {
        Role::Agent | Role::Compactor => {
            if cp.url.is_none() {
                problems.push(format!(
                    "control_plane.url must be set for weir {role} (the control plane's base URL)"
                ));
            }
        }
        Role::ControlPlane => {
            if cp.tokens.is_empty() {
                problems.push(
                    "weir control-plane needs at least one [[control_plane.tokens]] entry: \
                     every /v1 route is authenticated"
                        .into(),
                );
            }
            if cp.address.parse::<std::net::SocketAddr>().is_err() {
                problems.push(format!(
                    "control_plane.address = {:?} is not an address",
                    cp.address
                ));
            }
        }
        Role::Retention => {
            if cfg.retention.policy().is_empty() {
                problems.push(
                    "no retention configured: set retention.default or [[retention.rules]]".into(),
                );
            }
        }
        Role::IcebergRebuild => {
            if !cfg.iceberg.enabled {
                problems
                    .push("iceberg.enabled = false: there are no Iceberg tables to rebuild".into());
            }
        }
        Role::Run => {}
    }
    if matches!(role, Role::Run | Role::Agent) {
        data_path_files(cfg, &mut problems);
    }
    problems
}

/// The files `weir run` and `weir agent` read at start.
fn data_path_files(cfg: &Config, problems: &mut Vec<String>) {
    for (i, p) in cfg.pipelines.iter().enumerate() {
        for (j, t) in p.transforms.iter().enumerate() {
            if let Err(e) = std::fs::File::open(&t.module) {
                problems.push(format!(
                    "pipelines[{i}].transforms[{j}].module {}: {e}",
                    t.module.display()
                ));
            }
        }
    }
    let tls = [
        (
            cfg.sources.fluent.enabled,
            &cfg.sources.fluent.tls,
            "sources.fluent.tls",
        ),
        (
            cfg.sources.syslog.enabled,
            &cfg.sources.syslog.tls,
            "sources.syslog.tls",
        ),
    ];
    for (enabled, tls, key) in tls {
        if let (true, Some(tls)) = (enabled, tls) {
            if let Err(e) = weir_sources::tls::acceptor(tls, key) {
                problems.push(e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_checks_what_it_needs() {
        let c = Config::default();
        assert!(check(Role::Run, &c).is_empty());
        let agent = check(Role::Agent, &c).join("\n");
        assert!(
            agent.contains("control_plane.url must be set for weir agent"),
            "{agent}"
        );
        let cp = check(Role::ControlPlane, &c).join("\n");
        assert!(cp.contains("[[control_plane.tokens]]"), "{cp}");
        let r = check(Role::Retention, &c).join("\n");
        assert!(r.contains("no retention configured"), "{r}");
        let mut c = Config::default();
        c.control_plane.url = Some("http://cp:8700".into());
        assert!(check(Role::Compactor, &c).is_empty());
    }

    #[test]
    fn missing_modules_and_tls_files_are_named() {
        let mut c = Config::default();
        c.pipelines.push(crate::config::PipelineConfig {
            name: "p".into(),
            transforms: vec![crate::config::TransformConfig {
                name: "t".into(),
                module: "/nonexistent/redact.wasm".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        c.sources.fluent.tls = Some(weir_sources::tls::TlsConfig {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
        });
        let p = check(Role::Run, &c).join("\n");
        assert!(
            p.contains("pipelines[0].transforms[0].module /nonexistent/redact.wasm"),
            "{p}"
        );
        assert!(
            p.contains("sources.fluent.tls.cert_file /nonexistent/cert.pem"),
            "{p}"
        );
        // The control plane does not read them.
        let p = check(Role::ControlPlane, &c).join("\n");
        assert!(!p.contains("redact.wasm"), "{p}");
    }
}
