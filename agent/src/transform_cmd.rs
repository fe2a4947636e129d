//! `weir transform test` and `weir transform new`: what a transform author runs locally.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use weir_pipelines::otlp::logs_to_otlp;
use weir_pipelines::Signal;
use weir_transforms::{Limits, TransformHost, TransformSpec};

use weir_sources::otlp::decode::{decode_body, Encoding, ExportRequest};

/// Runs a module on an OTLP JSON file and prints the output and what happened.
pub fn test(module: &Path, input: &Path, config: Option<&str>) -> Result<()> {
    let bytes = std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", input.display()))?;
    let signal = if json.get("resourceLogs").is_some() {
        Signal::Logs
    } else if json.get("resourceMetrics").is_some() {
        Signal::Metrics
    } else if json.get("resourceSpans").is_some() {
        Signal::Traces
    } else {
        bail!("{}: expected an OTLP JSON export request (resourceLogs, resourceMetrics or resourceSpans)", input.display());
    };
    let request = decode_body(signal, Encoding::Json, &bytes).map_err(anyhow::Error::msg)?;
    // The operator's own file: no budget on its rows.
    let budget = weir_pipelines::DecodeBudget::unlimited();
    let decoded = match &request {
        ExportRequest::Logs(r) => weir_pipelines::otlp::decode_logs(r, 0, &budget),
        ExportRequest::Metrics(r) => weir_pipelines::otlp::decode_metrics(r, 0, &budget),
        ExportRequest::Traces(r) => weir_pipelines::otlp::decode_traces(r, 0, &budget),
    }?;
    let config = config.unwrap_or("{}");
    serde_json::from_str::<serde_json::Value>(config).context("--config is not JSON")?;
    let host = TransformHost::new()?;
    let wasm =
        std::fs::read(module).with_context(|| format!("cannot read {}", module.display()))?;
    let t = host.load(TransformSpec {
        name: module.display().to_string(),
        module: wasm,
        config: config.to_string(),
        limits: Limits::default(),
    })?;
    let started = Instant::now();
    let result = t.run(signal, &decoded.records);
    let elapsed = started.elapsed();
    match result {
        Ok(out) => {
            let printed = match signal {
                Signal::Logs => serde_json::to_value(logs_to_otlp(&out)?)?,
                _ => serde_json::Value::Array(rows_as_json(&out)),
            };
            let text = serde_json::to_string_pretty(&printed)?;
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error of the transform.
            if let Err(e) = std::io::Write::write_all(&mut stdout, text.as_bytes())
                .and_then(|_| std::io::Write::write_all(&mut stdout, b"\n"))
            {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e.into());
                }
            }
            eprintln!(
                "{} records in, {} out, {:.3} ms ({:.2} µs/record)",
                decoded.records.num_rows(),
                out.num_rows(),
                elapsed.as_secs_f64() * 1e3,
                elapsed.as_secs_f64() * 1e6 / decoded.records.num_rows().max(1) as f64
            );
            Ok(())
        }
        Err(e) => bail!(
            "{} records in; transform failed ({}): {e}",
            decoded.records.num_rows(),
            e.kind()
        ),
    }
}

/// Rows as JSON objects (metrics and traces output: column name → value).
fn rows_as_json(b: &RecordBatch) -> Vec<serde_json::Value> {
    (0..b.num_rows())
        .map(|i| {
            let mut row = serde_json::Map::new();
            for (f, col) in b.schema().fields().iter().zip(b.columns()) {
                row.insert(f.name().clone(), value_json(col.as_ref(), i));
            }
            serde_json::Value::Object(row)
        })
        .collect()
}

fn value_json(a: &dyn Array, i: usize) -> serde_json::Value {
    use arrow_array::types::*;
    use serde_json::Value as J;
    if a.is_null(i) {
        return J::Null;
    }
    if let Some(s) = a.as_string_opt::<i32>() {
        return J::from(s.value(i));
    }
    macro_rules! prim {
        ($($t:ty),*) => {$(
            if let Some(p) = a.as_primitive_opt::<$t>() {
                return serde_json::json!(p.value(i));
            }
        )*};
    }
    prim!(
        Int32Type,
        Int64Type,
        UInt32Type,
        UInt64Type,
        Float64Type,
        TimestampNanosecondType
    );
    if let Some(b) = a.as_boolean_opt() {
        return J::Bool(b.value(i));
    }
    if let Some(m) = a.as_map_opt() {
        let e = m.value(i);
        let (k, v) = (
            e.column(0).as_string::<i32>(),
            e.column(1).as_string::<i32>(),
        );
        return J::Object(
            (0..e.len())
                .map(|j| {
                    (
                        k.value(j).to_string(),
                        if v.is_null(j) {
                            J::Null
                        } else {
                            J::from(v.value(j))
                        },
                    )
                })
                .collect(),
        );
    }
    if let Some(l) = a.as_list_opt::<i32>() {
        let v = l.value(i);
        return J::Array((0..v.len()).map(|j| value_json(v.as_ref(), j)).collect());
    }
    if let Some(s) = a.as_struct_opt() {
        return J::Object(
            s.fields()
                .iter()
                .zip(s.columns())
                .map(|(f, c)| (f.name().clone(), value_json(c.as_ref(), i)))
                .collect(),
        );
    }
    J::Null
}

/// The `weir-sdk` dependency line of a new crate: a path to Weir's `sdk/` (the SDK is not on
/// crates.io). `--sdk` names it; without it, the `sdk/` of the checkout this binary was built
/// from, when it is still there.
fn sdk_dependency(sdk: Option<&Path>) -> Result<String> {
    let dir = match sdk {
        Some(p) => p.to_path_buf(),
        None => {
            let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
            if !built_from.join("Cargo.toml").is_file() {
                bail!(
                    "cannot find Weir's sdk/ ({} is gone); pass --sdk PATH to the sdk/ of a Weir checkout",
                    built_from.display()
                );
            }
            built_from
        }
    };
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| {
        format!(
            "--sdk {}: cannot read {}; give the sdk/ directory of a Weir checkout",
            dir.display(),
            manifest.display()
        )
    })?;
    if !text.lines().any(|l| l.trim() == r#"name = "weir-sdk""#) {
        bail!("{} is not the manifest of weir-sdk", manifest.display());
    }
    let dir =
        std::fs::canonicalize(&dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let dir = dir
        .to_str()
        .filter(|d| !d.chars().any(char::is_control))
        .with_context(|| format!("{} is not a path a Cargo.toml can hold", dir.display()))?;
    let quoted = dir.replace('\\', "\\\\").replace('"', "\\\"");
    Ok(format!("weir-sdk = {{ path = \"{quoted}\" }}"))
}

/// Scaffolds a transform crate.
pub fn new(name: &str, dir: Option<&Path>, sdk: Option<&Path>) -> Result<()> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if !valid {
        bail!("transform name {name:?} must start with a letter and use letters, digits, - and _");
    }
    let root: PathBuf = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(name));
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let sdk_dep = sdk_dependency(sdk)?;
    std::fs::create_dir_all(root.join("src"))?;
    let ty: String = name
        .split(['-', '_'])
        .filter(|s| !s.is_empty())
        .map(|s| s[..1].to_ascii_uppercase() + &s[1..])
        .collect();
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
{sdk_dep}
serde = {{ version = "1", features = ["derive"] }}

[dev-dependencies]
arrow-array = {{ version = "60", default-features = false }}

# A workspace of its own: the profile below applies wherever the crate is placed.
[workspace]

# Guests: opt-level 3 runs about 1.5x faster than "s", which saves only about 12% of the
# module's size (Weir's docs/performance.md).
[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#
        ),
    )?;
    std::fs::write(
        root.join("src/lib.rs"),
        format!(
            r##"//! {name}: a Weir transform. Build: cargo build --release --target wasm32-unknown-unknown

use serde::Deserialize;
use weir_sdk::{{export, Error, Logs, Transform}};

/// Configuration, from the pipeline's `config = {{ ... }}`.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {{
    /// Drop log records below this severity (0 keeps everything).
    pub min_severity: i32,
}}

/// The transform.
pub struct {ty} {{
    cfg: Config,
}}

impl Transform for {ty} {{
    type Config = Config;

    fn new(cfg: Config) -> Result<Self, Error> {{
        Ok({ty} {{ cfg }})
    }}

    fn logs(&mut self, logs: &mut Logs) -> Result<(), Error> {{
        let min = self.cfg.min_severity;
        logs.retain(|r| r.severity_number() >= min)
    }}
}}

export!({ty});

#[cfg(test)]
mod tests {{
    use weir_sdk::{{testing, Signal}};

    use super::*;

    #[test]
    fn keeps_records_at_or_above_the_minimum() {{
        let batch = testing::logs(&[(5, "debug", &[]), (13, "warn", &[])]);
        let out = testing::run::<{ty}>(r#"{{"min_severity": 9}}"#, Signal::Logs, &batch).unwrap();
        assert_eq!(testing::bodies(&out), vec!["warn"]);
    }}
}}
"##
        ),
    )?;
    println!("created {} — test with `cargo test`, build with `cargo build --release --target wasm32-unknown-unknown`", root.display());
    Ok(())
}
