//! Load errors: every problem at once, with the file or variable, the key path and words.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::load::{load, LoadErrors};
use super::super::{ByteSize, Config};

/// A config file in a fresh directory.
fn file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_err(path: Option<&Path>, env: &[(&str, &str)]) -> LoadErrors {
    match load(path, vars(env)) {
        Ok(c) => panic!("loaded: {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn every_problem_in_a_file_is_reported_at_once() {
    let (_dir, path) = file(
        "weir.toml",
        r#"
        data_dir = 7
        [lake]
        max_file_age = "soon"
        flush_bytes = true
        zstd_level = "x"
        flush_byts = "1MiB"
        [admin]
        address = 5
        [buffer]
        ack = "sometimes"
        "#,
    );
    let err = load_err(Some(&path), &[]);
    let text = err.to_string();
    let shown = path.display().to_string();
    let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "data_dir",
        "lake.max_file_age",
        "lake.flush_bytes",
        "lake.zstd_level",
        "lake.flush_byts",
        "admin.address",
        "buffer.ack",
    ] {
        assert!(keys.contains(&key), "{key} missing from {text}");
    }
    assert_eq!(err.0.len(), 7, "{text}");
    assert!(err.0.iter().all(|p| p.origin == shown), "{text}");
    assert!(!text.contains("default."), "{text}");
    assert!(!text.contains("untagged"), "{text}");
    assert!(!text.contains("unsigned int"), "{text}");
    assert!(
        text.contains(&format!(
            "{shown}: lake.zstd_level: expected a whole number, found the string \"x\""
        )),
        "{text}"
    );
    assert!(
        text.contains("lake.flush_bytes: expected a size such as 512Mi"),
        "{text}"
    );
    assert!(text.contains("\"soon\" is not a duration"), "{text}");
    assert!(text.contains("did you mean `flush_bytes`?"), "{text}");
    assert!(
        text.contains("admin.address: expected a string, found the number 5 (put it in quotes)"),
        "{text}"
    );
    assert!(
        text.contains("buffer.ack: \"sometimes\" is not one of `durable` or `buffered`"),
        "{text}"
    );
}

#[test]
fn array_elements_keep_the_index_the_user_wrote() {
    let (_dir, path) = file(
        "weir.yaml",
        r#"
control_plane:
  tokens:
    - tenants: ["a"]
    - token: "0123456789abcdef0123"
      scopes: ["sing"]
    - token: 42
pipelines:
  - name: a
    transforms:
      - name: t
        module: /x.wasm
        timeout: forever
      - name: u
        modul: /y.wasm
"#,
    );
    let err = load_err(Some(&path), &[]);
    let text = err.to_string();
    let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "control_plane.tokens[0].token",
        "control_plane.tokens[1].scopes[0]",
        "control_plane.tokens[2].token",
        "pipelines[0].transforms[0].timeout",
        "pipelines[0].transforms[1].modul",
    ] {
        assert!(keys.contains(&key), "{key} missing from {text}");
    }
    // tokens[2].token is wrong, not also missing.
    assert_eq!(err.0.len(), 5, "{text}");
    assert!(
        text.contains("control_plane.tokens[0].token: must be set"),
        "{text}"
    );
}

#[test]
fn environment_problems_name_the_variable() {
    let err = load_err(
        None,
        &[
            ("WEIR_LAKE__ZSTD_LEVEL", "high"),
            ("WEIR_DATA_DIRR", "/x"),
            ("WEIR_LAKE__MAX_FILE_AGE", "soon"),
        ],
    );
    let text = err.to_string();
    assert_eq!(err.0.len(), 3, "{text}");
    assert!(
        text.contains(
            "environment variable WEIR_LAKE__ZSTD_LEVEL: lake.zstd_level: expected a whole number"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "environment variable WEIR_DATA_DIRR: data_dirr: unknown key (did you mean `data_dir`?"
        ),
        "{text}"
    );
    assert!(text.contains("WEIR_LAKE__MAX_FILE_AGE"), "{text}");
}

#[test]
fn a_file_value_and_a_variable_are_told_apart() {
    let (_dir, path) = file("weir.toml", "[lake]\nzstd_level = \"x\"\n");
    let err = load_err(Some(&path), &[("WEIR_LAKE__ROW_GROUP_ROWS", "many")]);
    let text = err.to_string();
    assert!(
        text.contains(&format!("{}: lake.zstd_level", path.display())),
        "{text}"
    );
    assert!(
        text.contains("environment variable WEIR_LAKE__ROW_GROUP_ROWS: lake.row_group_rows"),
        "{text}"
    );
}

/// Environment values are typed by their key: all-digit ids and tokens stay strings.
#[test]
fn environment_values_take_the_type_of_their_key() {
    let c = load(
        None,
        vars(&[
            ("WEIR_AGENT__ID", "10042"),
            ("WEIR_CONTROL_PLANE__TOKEN", "0012345678901234567"),
            ("WEIR_LAKE__OPTIONS__AWS_ALLOW_HTTP", "true"),
            ("WEIR_LAKE__ZSTD_LEVEL", "9"),
            ("WEIR_LAKE__MAX_FILE_AGE", "30"),
            ("WEIR_BUFFER__MAX_BYTES", "4Gi"),
            ("WEIR_COMPACTION__ENABLED", "false"),
            ("WEIR_DATA_DIR", "2024"),
            ("WEIR_AUTH__API_KEYS", "{key-a=\"team-a\", 0042=\"b\"}"),
        ]),
    )
    .unwrap();
    assert_eq!(c.agent.id.as_deref(), Some("10042"));
    assert_eq!(
        c.control_plane.token.as_deref(),
        Some("0012345678901234567")
    );
    assert_eq!(
        c.lake.options.get("aws_allow_http").map(String::as_str),
        Some("true")
    );
    assert_eq!(c.lake.zstd_level, 9);
    assert_eq!(c.lake.max_file_age.0, Duration::from_secs(30));
    assert_eq!(c.buffer.max_bytes, ByteSize(4 << 30));
    assert!(!c.compaction.enabled);
    assert_eq!(c.data_dir, PathBuf::from("2024"));
    assert_eq!(
        c.auth.api_keys.get("key-a").map(String::as_str),
        Some("team-a")
    );
    assert_eq!(c.auth.api_keys.get("0042").map(String::as_str), Some("b"));
}

#[test]
fn sizes_and_durations_in_kubernetes_forms() {
    let (_dir, path) = file(
        "weir.yaml",
        "buffer:\n  max_bytes: 4Gi\nlake:\n  flush_bytes: 512Mi\n  max_file_age: 30\n  target_file_bytes: 1G\nshutdown:\n  timeout: 30s\n",
    );
    let c = load(Some(&path), Vec::new()).unwrap();
    assert_eq!(c.buffer.max_bytes, ByteSize(4 << 30));
    assert_eq!(c.lake.flush_bytes, ByteSize(512 << 20));
    assert_eq!(c.lake.max_file_age.0, Duration::from_secs(30));
    assert_eq!(c.lake.target_file_bytes, ByteSize(1_000_000_000));
    assert_eq!(c.shutdown.timeout.0, Duration::from_secs(30));
}

#[test]
fn only_toml_and_yaml_files_are_read() {
    for name in ["weir.json", "weir.conf", "weir"] {
        let (_dir, path) = file(name, "data_dir = \"/x\"\n");
        let err = load_err(Some(&path), &[]);
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("must end in .toml, .yaml or .yml"), "{text}");
    }
    let (_dir, path) = file("WEIR.YML", "data_dir: /x\n");
    assert_eq!(
        load(Some(&path), Vec::new()).unwrap().data_dir,
        PathBuf::from("/x")
    );
}

#[test]
fn unreadable_and_unparsable_files_name_the_file() {
    let err = load_err(Some(Path::new("/nonexistent/weir.toml")), &[]);
    assert!(
        err.to_string()
            .contains("/nonexistent/weir.toml: cannot read"),
        "{err}"
    );
    let (_dir, path) = file("weir.toml", "[lake\nurl = 1\n");
    let err = load_err(Some(&path), &[]);
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_valid_load_equals_the_defaults_plus_what_is_set() {
    let (_dir, path) = file("weir.toml", "[lake]\nzstd_level = 5\n");
    let c = load(Some(&path), Vec::new()).unwrap();
    let mut want = Config::default();
    want.lake.zstd_level = 5;
    assert_eq!(c, want);
}

#[test]
fn file_values_interpolate_variables() {
    let (_dir, path) = file(
        "weir.toml",
        r#"
        # A comment with ${NOT_SET} is not interpolated.
        data_dir = "${DATA_ROOT}/weir"
        [agent]
        id = "${NODE_ID}"
        [lake]
        url = "s3://${BUCKET:-default-bucket}/$${literal}"
        zstd_level = "${ZSTD:-7}"
        max_file_age = "${AGE:-90}"
        [control_plane]
        url = "http://${CP_HOST}:8700"
        "#,
    );
    let c = load(
        Some(&path),
        vars(&[
            ("DATA_ROOT", "/var/lib"),
            ("NODE_ID", "000123"),
            ("CP_HOST", "weir-control-plane"),
            ("ZSTD", ""),
        ]),
    )
    .unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/weir"));
    assert_eq!(c.agent.id.as_deref(), Some("000123"));
    assert_eq!(
        c.lake.url.as_deref(),
        Some("s3://default-bucket/${literal}")
    );
    assert_eq!(c.lake.zstd_level, 7);
    assert_eq!(c.lake.max_file_age.0, Duration::from_secs(90));
    assert_eq!(
        c.control_plane.url.as_deref(),
        Some("http://weir-control-plane:8700")
    );
}

#[test]
fn yaml_values_interpolate_variables() {
    let (_dir, path) = file(
        "weir.yaml",
        "agent:\n  id: ${NODE_ID}\nlake:\n  zstd_level: ${ZSTD}\npipelines:\n  - name: p\n    sources: [\"${SRC:-otlp}\"]\n    transforms:\n      - name: t\n        module: ${MODULES}/t.wasm\n",
    );
    let c = load(
        Some(&path),
        vars(&[("NODE_ID", "42"), ("ZSTD", "5"), ("MODULES", "/opt")]),
    )
    .unwrap();
    assert_eq!(c.agent.id.as_deref(), Some("42"));
    assert_eq!(c.lake.zstd_level, 5);
    assert_eq!(c.pipelines[0].sources, vec!["otlp".to_string()]);
    assert_eq!(
        c.pipelines[0].transforms[0].module,
        PathBuf::from("/opt/t.wasm")
    );
}

#[test]
fn an_unset_variable_is_an_error_naming_it_and_the_file() {
    let (_dir, path) = file(
        "weir.toml",
        "[lake]\nurl = \"s3://${BUCKET}/x\"\nzstd_level = \"${LEVEL}\"\nrow_group_rows = \"x\"\n",
    );
    let err = load_err(Some(&path), &[]);
    let text = err.to_string();
    assert_eq!(err.0.len(), 3, "{text}");
    assert!(
        text.contains(&format!(
            "{}: lake.url: environment variable BUCKET is not set",
            path.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("lake.zstd_level: environment variable LEVEL is not set"),
        "{text}"
    );
    assert!(text.contains("lake.row_group_rows: expected"), "{text}");
}

#[test]
fn secrets_are_read_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "0000111122223333agent\n").unwrap();
    let admin = dir.path().join("admin");
    std::fs::write(&admin, "admin-token-0123456789\r\n").unwrap();
    let pg = dir.path().join("pg");
    std::fs::write(&pg, "postgres://weir:s3cret@db/weir").unwrap();
    let shared = dir.path().join("shared");
    std::fs::write(&shared, "fluent-key").unwrap();
    let cfg = dir.path().join("weir.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
            [control_plane]
            token_file = "{}"
            postgres_url_file = "${{PG_FILE}}"
            [[control_plane.tokens]]
            token_file = "{}"
            [[control_plane.tokens]]
            token = "inline-token-0123456789"
            "#,
            token.display(),
            admin.display()
        ),
    )
    .unwrap();
    let shared_var = shared.display().to_string();
    let pg_var = pg.display().to_string();
    let c = load(
        Some(&cfg),
        vars(&[
            ("PG_FILE", &pg_var),
            ("WEIR_SOURCES__FLUENT__SHARED_KEY_FILE", &shared_var),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.control_plane.token.as_deref(),
        Some("0000111122223333agent")
    );
    assert_eq!(c.control_plane.tokens[0].token, "admin-token-0123456789");
    assert_eq!(c.control_plane.tokens[1].token, "inline-token-0123456789");
    assert_eq!(
        c.control_plane.postgres_url.as_deref(),
        Some("postgres://weir:s3cret@db/weir")
    );
    assert_eq!(c.sources.fluent.shared_key.as_deref(), Some("fluent-key"));
}

#[test]
fn secret_file_problems_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let cfg = dir.path().join("weir.yaml");
    std::fs::write(
        &cfg,
        format!(
            "control_plane:\n  token: abc\n  token_file: /x\n  postgres_url_file: {}\n  tokens:\n    - token_file: /nonexistent/admin-token\n",
            empty.display()
        ),
    )
    .unwrap();
    let err = load_err(Some(&cfg), &[]);
    let text = err.to_string();
    assert_eq!(err.0.len(), 3, "{text}");
    let shown = cfg.display().to_string();
    assert!(
        text.contains(&format!(
            "{shown}: control_plane.token_file: set either token or token_file, not both"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{shown}: control_plane.tokens[0].token_file: cannot read /nonexistent/admin-token"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "control_plane.postgres_url_file: {} is empty",
            empty.display()
        )),
        "{text}"
    );
    // `_file` exists only for secrets.
    let err = load_err(None, &[("WEIR_LAKE__URL_FILE", "/x")]);
    assert!(
        err.to_string().contains("lake.url_file: unknown key"),
        "{err}"
    );
}
