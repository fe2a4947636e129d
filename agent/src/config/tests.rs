// figment::Jail closures must return figment::Result, whose error type is large.
#![allow(clippy::result_large_err)]

use std::io::Write;
use std::path::PathBuf;

use figment::Jail;

use super::*;

#[test]
fn defaults_are_valid() {
    Jail::expect_with(|_| {
        let c = Config::load(None).unwrap();
        assert_eq!(c, Config::default());
        let v = c.validate().unwrap();
        assert_eq!(v.address("sources.otlp.grpc_address").unwrap().port(), 4317);
        assert_eq!(v.address("sources.otlp.http_address").unwrap().port(), 4318);
        assert_eq!(v.admin.port(), 8686);
        Ok(())
    });
}

#[test]
fn file_then_environment() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "weir.toml",
            r#"
            data_dir = "/var/lib/weir"
            [lake]
            flush_bytes = "8MiB"
            max_file_age = "5s"
            [buffer]
            ack = "buffered"
            "#,
        )?;
        jail.set_env("WEIR_LAKE__URL", "s3://bucket/prefix");
        jail.set_env("WEIR_SOURCES__OTLP__MAX_REQUEST_BYTES", "4MiB");
        let c = Config::load(Some(&PathBuf::from("weir.toml"))).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/weir"));
        assert_eq!(c.lake.flush_bytes, ByteSize(8 << 20));
        assert_eq!(c.lake.max_file_age.0, Duration::from_secs(5));
        assert_eq!(c.lake.url.as_deref(), Some("s3://bucket/prefix"));
        assert_eq!(c.sources.otlp.max_request_bytes, ByteSize(4 << 20));
        assert_eq!(c.buffer.ack, AckMode::Buffered);
        Ok(())
    });
}

#[test]
fn yaml_files_load() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "weir.yaml",
            "lake:\n  zstd_level: 9\nadmin:\n  address: 127.0.0.1:9000\n",
        )?;
        let c = Config::load(Some(&PathBuf::from("weir.yaml"))).unwrap();
        assert_eq!(c.lake.zstd_level, 9);
        assert_eq!(c.validate().unwrap().admin.port(), 9000);
        Ok(())
    });
}

#[test]
fn unknown_keys_name_their_path() {
    Jail::expect_with(|jail| {
        jail.create_file("weir.toml", "[lake]\nflush_byts = \"1MiB\"\n")?;
        let err = Config::load(Some(&PathBuf::from("weir.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("flush_byts"), "{err}");
        assert!(err.contains("lake"), "{err}");
        assert!(err.contains("weir.toml"), "{err}");
        Ok(())
    });
}

#[test]
fn bad_values_are_reported_together() {
    let mut c = Config::default();
    c.lake.zstd_level = 40;
    c.sources.otlp.http_address = "0.0.0.0:4317".into();
    c.buffer.max_bytes = ByteSize(10);
    c.lake.url = Some("file://relative/lake".into());
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("lake.zstd_level = 40"), "{err}");
    assert!(err.contains("sources.otlp.http_address = \"0.0.0.0:4317\" is also used by sources.otlp.grpc_address"), "{err}");
    assert!(err.contains("buffer.max_bytes"), "{err}");
    assert!(err.contains("absolute path"), "{err}");
}

/// The admin port and the control plane's API are bounded as the sources' listeners are,
/// and their keys are checked the same way.
#[test]
fn listener_limits_of_admin_and_control_plane_are_checked() {
    let mut c = Config::default();
    c.admin.max_connections = 0;
    c.admin.header_read_timeout = HumanDuration(Duration::from_millis(10));
    c.control_plane.idle_timeout = HumanDuration(Duration::ZERO);
    c.admin.request_timeout = HumanDuration(Duration::ZERO);
    c.control_plane.request_timeout = HumanDuration(Duration::ZERO);
    let err = c.validate().unwrap_err().to_string();
    for key in ["admin", "control_plane"] {
        assert!(
            err.contains(&format!("{key}.request_timeout must be above 0")),
            "{err}"
        );
    }
    assert!(
        err.contains("admin.max_connections must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains("admin.header_read_timeout must be at least 1s"),
        "{err}"
    );
    assert!(
        err.contains("control_plane.idle_timeout must be at least 1s"),
        "{err}"
    );
    Jail::expect_with(|jail| {
        jail.create_file(
            "weir.toml",
            "[admin]\nmax_connections = 8\nheader_read_timeout = \"2s\"\n\
             [control_plane]\nidle_timeout = \"1m\"\n",
        )?;
        let c = Config::load(Some(&PathBuf::from("weir.toml"))).unwrap();
        assert_eq!(c.admin.limits().conn.max_connections, 8);
        assert_eq!(c.admin.limits().header_read_timeout, Duration::from_secs(2));
        assert_eq!(
            c.control_plane.limits().conn.idle_timeout,
            Duration::from_secs(60)
        );
        assert_eq!(c.control_plane.limits().conn.max_connections, 1024);
        assert_eq!(
            c.control_plane.limits().request_timeout,
            Duration::from_secs(30)
        );
        assert!(c.validate().is_ok());
        Ok(())
    });
}

#[test]
fn bad_sizes_and_durations_name_the_key() {
    Jail::expect_with(|jail| {
        jail.create_file("weir.toml", "[lake]\nmax_file_age = \"soon\"\n")?;
        let err = Config::load(Some(&PathBuf::from("weir.toml")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_file_age") && err.contains("not a duration"),
            "{err}"
        );
        Ok(())
    });
}

/// Every example in configs/ loads and validates.
#[test]
fn every_example_config_is_valid() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "toml" | "yaml" | "yml") {
            continue;
        }
        let loaded = super::load::load(Some(&path), std::iter::empty())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        loaded
            .validate()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        checked += 1;
    }
    assert!(
        checked >= 1,
        "no example configs found in {}",
        dir.display()
    );
    let _ = std::io::stderr().flush();
}

#[test]
fn pipelines_load_and_validate() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "weir.toml",
            r#"
            [[pipelines]]
            name = "pii"
            sources = ["otlp"]
            signals = ["logs"]
            [[pipelines.transforms]]
            name = "redact"
            module = "/opt/weir/redact.wasm"
            config = { patterns = ["email"], mask = "***" }
            on_error = "pass"
            timeout = "250ms"
            max_memory = "32MiB"
            "#,
        )?;
        let c = Config::load(Some(&PathBuf::from("weir.toml"))).unwrap();
        let t = &c.pipelines[0].transforms[0];
        assert_eq!(
            t.config,
            serde_json::json!({"patterns": ["email"], "mask": "***"})
        );
        assert_eq!(t.on_error, weir_transforms::OnError::Pass);
        assert_eq!(t.timeout.0, Duration::from_millis(250));
        c.validate().unwrap();
        Ok(())
    });
    let mut c = Config::default();
    c.pipelines.push(PipelineConfig {
        name: "p".into(),
        signals: vec!["events".into()],
        transforms: vec![
            TransformConfig {
                name: "a".into(),
                module: "/x.wasm".into(),
                ..Default::default()
            },
            TransformConfig {
                name: "a".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("pipelines[0].signals: \"events\""), "{err}");
    assert!(
        err.contains("pipelines[0].transforms[1].name \"a\" is used twice"),
        "{err}"
    );
    assert!(
        err.contains("pipelines[0].transforms[1].module must be set"),
        "{err}"
    );
}

#[test]
fn pipeline_source_names_must_exist() {
    let mut c = Config::default();
    c.pipelines.push(PipelineConfig {
        name: "pii".into(),
        sources: vec!["otlp".into(), "syslog_tcp".into(), "otlp_htpp".into()],
        transforms: vec![TransformConfig {
            name: "redact".into(),
            module: "/x.wasm".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let err = c.validate().unwrap_err().to_string();
    assert!(
        err.contains("pipelines[0].sources: \"otlp_htpp\" is not a source"),
        "{err}"
    );
    assert!(!err.contains("\"otlp\" is not"), "{err}");
    assert!(!err.contains("\"syslog_tcp\" is not"), "{err}");
}

/// With API keys, syslog and a Fluent source without a shared key would let anyone write
/// around them: refused unless turned off, keyed, or named in auth.allow_unauthenticated.
#[test]
fn api_keys_need_every_network_source_authenticated() {
    let mut c = Config::default();
    c.auth.api_keys.insert("key-a".into(), "team-a".into());
    let err = c.clone().validate().unwrap_err().to_string();
    assert!(
        err.contains("sources.syslog accepts writes to tenant \"default\" without authentication"),
        "{err}"
    );
    assert!(err.contains("sources.fluent accepts writes"), "{err}");
    assert!(
        err.contains("auth.allow_unauthenticated = [\"fluent\"]"),
        "{err}"
    );

    let mut keyed = c.clone();
    keyed.sources.fluent.shared_key = Some("forward-secret".into());
    keyed.sources.syslog.enabled = false;
    keyed.validate().unwrap();

    let mut allowed = c.clone();
    allowed.auth.allow_unauthenticated = vec!["syslog".into(), "fluent".into()];
    allowed.validate().unwrap();

    let mut typo = Config::default();
    typo.auth.allow_unauthenticated = vec!["otlp".into()];
    let err = typo.validate().unwrap_err().to_string();
    assert!(
        err.contains("\"otlp\" is not a source without authentication"),
        "{err}"
    );

    // Without keys nothing is authenticated anyway: nothing to name.
    Config::default().validate().unwrap();
}

/// A Service named `weir-control-plane` or `weir` in the pod's namespace makes the kubelet set
/// `WEIR_CONTROL_PLANE_PORT=tcp://…`, `WEIR_PORT=…` and the like in every pod: they are not
/// configuration, and must neither fail the load nor hide the real `WEIR_` keys beside them.
#[test]
fn kubernetes_service_variables_are_ignored() {
    Jail::expect_with(|jail| {
        jail.create_file("weir.toml", "data_dir = \"/var/lib/weir\"\n")?;
        for (name, value) in [
            ("WEIR_CONTROL_PLANE_SERVICE_HOST", "10.0.0.1"),
            ("WEIR_CONTROL_PLANE_SERVICE_PORT", "8700"),
            ("WEIR_CONTROL_PLANE_SERVICE_PORT_API", "8700"),
            ("WEIR_CONTROL_PLANE_PORT", "tcp://10.0.0.1:8700"),
            ("WEIR_CONTROL_PLANE_PORT_8700_TCP", "tcp://10.0.0.1:8700"),
            ("WEIR_CONTROL_PLANE_PORT_8700_TCP_PROTO", "tcp"),
            ("WEIR_CONTROL_PLANE_PORT_8700_TCP_PORT", "8700"),
            ("WEIR_CONTROL_PLANE_PORT_8700_TCP_ADDR", "10.0.0.1"),
            ("WEIR_SERVICE_HOST", "10.0.0.2"),
            ("WEIR_SERVICE_PORT", "4317"),
            ("WEIR_SERVICE_PORT_OTLP_GRPC", "4317"),
            ("WEIR_PORT", "tcp://10.0.0.2:4317"),
            ("WEIR_PORT_4317_TCP_ADDR", "10.0.0.2"),
            ("WEIR_AGENT_METRICS_PORT_8686_TCP", "tcp://10.0.0.3:8686"),
        ] {
            jail.set_env(name, value);
        }
        jail.set_env("WEIR_CONTROL_PLANE__URL", "http://weir-control-plane:8700");
        jail.set_env("WEIR_AGENT__ID", "node-1");
        let c = Config::load(Some(&PathBuf::from("weir.toml"))).unwrap();
        assert_eq!(
            c.control_plane.url.as_deref(),
            Some("http://weir-control-plane:8700")
        );
        assert_eq!(c.agent.id.as_deref(), Some("node-1"));
        c.validate().unwrap();
        Ok(())
    });
}

/// Ignoring service variables does not hide mistakes: an unknown key is still refused.
#[test]
fn unknown_environment_keys_are_still_refused() {
    Jail::expect_with(|jail| {
        jail.set_env("WEIR_DATA_DIRR", "/tmp/x");
        let err = Config::load(None).unwrap_err().to_string();
        assert!(err.contains("data_dirr"), "{err}");
        jail.clear_env();
        jail.set_env("WEIR_LAKE__URLL", "s3://b/p");
        let err = Config::load(None).unwrap_err().to_string();
        assert!(err.contains("urll"), "{err}");
        Ok(())
    });
}

mod loading;
