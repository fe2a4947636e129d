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
        let loaded = Config::figment(Some(&path))
            .extract::<Config>()
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
