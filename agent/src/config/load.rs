//! Loading the configuration so that every problem is reported at once, each with where the
//! value came from (the file, or the `WEIR_…` variable), its key path (`lake.max_file_age`,
//! `pipelines[0].sources`) and what was expected, in words.
//!
//! The layers (built-in defaults, the file, the environment) are merged into one figment
//! [`Value`] tree, a later layer's value replacing an earlier one's and tables merging key by
//! key. The tree is then deserialized into [`Config`]. serde stops at the first error, so after
//! each error the offending value is taken out of the tree (its key falls back to the
//! default; an array element that cannot be read is dropped, and later indices are mapped back
//! to the ones the user wrote) and deserialization runs again, until it succeeds or nothing
//! more can be taken out. The cost is one pass per problem over a small tree.
//!
//! Values given as text without a type (environment variables) are typed by their key: the
//! text is first read as figment reads it (`10042` a number, `true` a boolean, `[..]` a list),
//! and where the key wants a string, the text as written is used instead. So
//! `WEIR_AGENT__ID=10042` is the id `"10042"`, not a type error, and `WEIR_LAKE__ZSTD_LEVEL=9`
//! is a number. File values that held `${VAR}` are typed the same way ([`interpolate`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use figment::error::{Actual, Kind};
use figment::providers::{Format, Toml, Yaml};
use figment::value::{Dict, Value};
use figment::{Profile, Provider};
use serde::Deserialize;

use super::env::Variable;
use super::{interpolate, secrets, Config};

/// Most passes over the tree; each takes out at least one value.
const MAX_PASSES: usize = 200;

/// One problem found while loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadProblem {
    /// Where the value came from: the file as given, or `environment variable WEIR_…`.
    pub origin: String,
    /// The key path (`lake.max_file_age`, `pipelines[0].name`); empty for the file as a whole.
    pub key: String,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.message)
        }
    }
}

/// Every problem found while loading, in the order found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors(pub Vec<LoadProblem>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "cannot load the configuration: {one}"),
            many => {
                write!(
                    f,
                    "cannot load the configuration ({} problems):",
                    many.len()
                )?;
                for p in many {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

/// The file formats, by extension.
#[derive(Debug, Clone, Copy)]
enum FileFormat {
    Toml,
    Yaml,
}

impl FileFormat {
    fn of(path: &Path) -> Option<FileFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "toml" => Some(FileFormat::Toml),
            "yaml" | "yml" => Some(FileFormat::Yaml),
            _ => None,
        }
    }

    fn parse(self, text: &str) -> Result<Dict, String> {
        let data = match self {
            FileFormat::Toml => Toml::string(text).data(),
            FileFormat::Yaml => Yaml::string(text).data(),
        };
        let mut data = data.map_err(|e| e.kind.to_string())?;
        Ok(data.remove(&Profile::Default).unwrap_or_default())
    }
}

/// Loads defaults, then `file`, then the configuration variables among `vars`.
pub(crate) fn load(
    file: Option<&Path>,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, LoadErrors> {
    let defaults = match Value::serialize(Config::default()) {
        Ok(Value::Dict(_, d)) => d,
        _ => Dict::new(),
    };
    let all: Vec<(String, String)> = vars.into_iter().collect();
    let lookup = |name: &str| {
        all.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut problems = Vec::new();
    let mut typed = BTreeMap::new();
    let file_layer = match file {
        Some(path) => {
            let mut layer = read_file(path)?;
            let (values, failed) = interpolate::interpolate(&mut layer.dict, &lookup);
            let tree = Value::from(layer.dict.clone());
            for (path, message) in failed {
                problems.push(LoadProblem {
                    origin: layer.shown.clone(),
                    key: key_string(&tree, &path),
                    message,
                });
            }
            typed.extend(values);
            Some(layer)
        }
        None => None,
    };
    let vars = super::env::variables(all.iter().cloned());
    let env_layer = env_dict(&vars);
    let mut tree = defaults;
    if let Some(layer) = &file_layer {
        merge(&mut tree, layer.dict.clone());
    }
    merge(&mut tree, env_layer.clone());
    let secret_problems = secrets::read_files(&mut tree, &|p| std::fs::read_to_string(p));
    let layers = Layers {
        file: file_layer,
        env: env_layer,
        vars,
        typed,
    };
    let tree = Value::from(tree);
    // A secret whose file failed is not reported again as missing.
    let mut reported = BTreeSet::new();
    for (path, message) in secret_problems {
        problems.push(LoadProblem {
            origin: layers.origin(&path),
            key: key_string(&tree, &path),
            message,
        });
        if let Some((last, parents)) = path.split_last() {
            let mut secret = parents.to_vec();
            secret.push(last.trim_end_matches("_file").to_owned());
            reported.insert(secret);
        }
    }
    resolve(tree, &layers, problems, reported)
}

/// The file, parsed.
struct FileLayer {
    /// The path as given.
    shown: String,
    dict: Dict,
}

/// What the merged tree was made of, to say where a value came from.
struct Layers {
    file: Option<FileLayer>,
    env: Dict,
    vars: Vec<Variable>,
    /// File values that held `${…}`, by key path: their text after interpolation.
    typed: BTreeMap<Vec<String>, String>,
}

impl Layers {
    /// Where the value at `path` (in the tree as first merged) came from: the layer holding
    /// the most of the path, the environment winning a tie as it was merged last.
    fn origin(&self, path: &[String]) -> String {
        let env_depth = depth(&self.env, path);
        let file_depth = self.file.as_ref().map_or(0, |f| depth(&f.dict, path));
        if env_depth > 0 && env_depth >= file_depth {
            let var = self
                .vars
                .iter()
                .filter(|v| path.starts_with(&v.path))
                .max_by_key(|v| v.path.len());
            if let Some(v) = var {
                return format!("environment variable {}", v.name);
            }
            return "environment".into();
        }
        match &self.file {
            Some(f) => f.shown.clone(),
            None => "configuration".into(),
        }
    }

    /// The text of the variable, or of the interpolated file value, that set exactly `path`.
    fn raw_text(&self, path: &[String]) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|v| v.path == path)
            .map(|v| v.value.as_str())
            .or_else(|| self.typed.get(path).map(String::as_str))
    }
}

fn read_file(path: &Path) -> Result<FileLayer, LoadErrors> {
    let shown = path.display().to_string();
    let fail = |message: String| {
        LoadErrors(vec![LoadProblem {
            origin: shown.clone(),
            key: String::new(),
            message,
        }])
    };
    let Some(format) = FileFormat::of(path) else {
        return Err(fail(
            "not a configuration file: the name must end in .toml, .yaml or .yml".into(),
        ));
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let dict = format.parse(&text).map_err(fail)?;
    Ok(FileLayer { shown, dict })
}

/// The environment's layer: each variable's text read as figment reads it.
fn env_dict(vars: &[Variable]) -> Dict {
    let mut dict = Dict::new();
    for v in vars {
        let value: Value = match v.value.parse() {
            Ok(value) => value,
            Err(never) => match never {},
        };
        let Some((last, parents)) = v.path.split_last() else {
            continue;
        };
        let mut at = &mut dict;
        for key in parents {
            let entry = at
                .entry(key.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            let Value::Dict(_, next) = entry else {
                unreachable!("made a table just above")
            };
            at = next;
        }
        at.insert(last.clone(), value);
    }
    dict
}

/// Merges `new` into `base`: tables key by key, anything else replaced.
fn merge(base: &mut Dict, new: Dict) {
    for (key, value) in new {
        match (base.get_mut(&key), value) {
            (Some(Value::Dict(_, old)), Value::Dict(_, new)) => merge(old, new),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// How many leading segments of `path` lead somewhere in `dict`.
fn depth(dict: &Dict, path: &[String]) -> usize {
    let mut node = match path.first().and_then(|k| dict.get(k)) {
        Some(v) => v,
        None => return 0,
    };
    let mut n = 1;
    for seg in &path[1..] {
        let next = match node {
            Value::Dict(_, d) => d.get(seg),
            Value::Array(_, a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(v) => {
                node = v;
                n += 1;
            }
            None => break,
        }
    }
    n
}

/// Deserializes `tree`, taking out what fails until the rest deserializes; every failure
/// becomes a problem.
fn resolve(
    mut tree: Value,
    layers: &Layers,
    mut problems: Vec<LoadProblem>,
    reported: BTreeSet<Vec<String>>,
) -> Result<Config, LoadErrors> {
    let original = tree.clone();
    let mut edits = Edits {
        taken_out: reported,
        ..Edits::default()
    };
    for _ in 0..MAX_PASSES {
        let errors = match Config::deserialize(&tree) {
            Ok(config) if problems.is_empty() => return Ok(config),
            Ok(_) => return Err(LoadErrors(problems)),
            Err(e) => e,
        };
        let mut progressed = false;
        for error in errors {
            let path = edits.original_path(&original, &error.path);
            // A variable's text, for a key that wants a string: the text as written.
            if wants_string(&error.kind) && !edits.retyped.contains(&path) {
                if let Some(text) = layers.raw_text(&path) {
                    if replace(&mut tree, &error.path, Value::from(text.to_owned())) {
                        edits.retyped.insert(path);
                        progressed = true;
                        continue;
                    }
                }
            }
            let (key_path, message) = match &error.kind {
                Kind::MissingField(field) => {
                    let mut full = path.clone();
                    full.push(field.to_string());
                    (full, "must be set".to_owned())
                }
                kind => (path.clone(), describe(kind)),
            };
            // A key taken out for being wrong is not reported again as missing.
            if !edits.taken_out.contains(&key_path) {
                problems.push(LoadProblem {
                    origin: layers.origin(&path),
                    key: key_string(&original, &key_path),
                    message,
                });
            }
            if edits.take_out(&mut tree, &original, &error.path) {
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    if problems.is_empty() {
        problems.push(LoadProblem {
            origin: "configuration".into(),
            key: String::new(),
            message: "cannot be read (too many problems)".into(),
        });
    }
    Err(LoadErrors(problems))
}

/// What has been changed in the tree, in the coordinates of the tree as first merged.
#[derive(Default)]
struct Edits {
    /// Array elements dropped, by the array's path.
    dropped: BTreeMap<Vec<String>, BTreeSet<usize>>,
    /// Values taken out.
    taken_out: BTreeSet<Vec<String>>,
    /// Values replaced by the variable's text.
    retyped: BTreeSet<Vec<String>>,
}

impl Edits {
    /// The path in the tree as first merged of `path` in the current tree.
    fn original_path(&self, original: &Value, path: &[String]) -> Vec<String> {
        let mut out = Vec::with_capacity(path.len());
        let mut node = Some(original);
        for seg in path {
            match (node, seg.parse::<usize>()) {
                (Some(Value::Array(_, items)), Ok(i)) => {
                    let dropped = self.dropped.get(&out);
                    let index = (0..)
                        .filter(|j| !dropped.is_some_and(|d| d.contains(j)))
                        .nth(i)
                        .unwrap_or(i);
                    node = items.get(index);
                    out.push(index.to_string());
                }
                (Some(Value::Dict(_, d)), _) => {
                    node = d.get(seg);
                    out.push(seg.clone());
                }
                _ => {
                    node = None;
                    out.push(seg.clone());
                }
            }
        }
        out
    }

    /// Takes the value at `path` (current coordinates) out of `tree`.
    fn take_out(&mut self, tree: &mut Value, original: &Value, path: &[String]) -> bool {
        let Some((last, parents)) = path.split_last() else {
            return false;
        };
        let Some(parent) = find_mut(tree, parents) else {
            return false;
        };
        let original_path = self.original_path(original, path);
        let done = match parent {
            Value::Dict(_, d) => d.remove(last).is_some(),
            Value::Array(_, items) => match last.parse::<usize>() {
                Ok(i) if i < items.len() => {
                    items.remove(i);
                    if let Some((index, array)) = original_path.split_last() {
                        if let Ok(index) = index.parse() {
                            self.dropped
                                .entry(array.to_vec())
                                .or_default()
                                .insert(index);
                        }
                    }
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if done {
            self.taken_out.insert(original_path);
        }
        done
    }
}

fn find_mut<'a>(mut node: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    for seg in path {
        node = match node {
            Value::Dict(_, d) => d.get_mut(seg)?,
            Value::Array(_, a) => a.get_mut(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

fn replace(tree: &mut Value, path: &[String], value: Value) -> bool {
    match find_mut(tree, path) {
        Some(slot) => {
            *slot = value;
            true
        }
        None => false,
    }
}

/// `pipelines[0].transforms[1].name`: array indices in brackets.
fn key_string(original: &Value, path: &[String]) -> String {
    let mut out = String::new();
    let mut node = Some(original);
    for seg in path {
        match node {
            Some(Value::Array(_, items)) => {
                out.push('[');
                out.push_str(seg);
                out.push(']');
                node = seg.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            other => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(seg);
                node = match other {
                    Some(Value::Dict(_, d)) => d.get(seg),
                    _ => None,
                };
            }
        }
    }
    out
}

/// Whether the error is a key that wants a string given something else.
fn wants_string(kind: &Kind) -> bool {
    matches!(kind, Kind::InvalidType(actual, expected)
        if !matches!(actual, Actual::Str(_) | Actual::Map | Actual::Seq)
            && (expected == "a string" || expected == "path string"))
}

/// The error in words.
fn describe(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => m.clone(),
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            let hint = match actual {
                Actual::Bool(_) | Actual::Unsigned(_) | Actual::Signed(_) | Actual::Float(_)
                    if expected == "a string" =>
                {
                    " (put it in quotes)"
                }
                _ => "",
            };
            format!(
                "expected {}, found {}{hint}",
                expected_in_words(expected),
                found_in_words(actual)
            )
        }
        Kind::UnknownVariant(v, allowed) => {
            format!("{v:?} is not one of {}", one_of(allowed))
        }
        Kind::UnknownField(_, []) => "unknown key: this table takes no keys".into(),
        Kind::UnknownField(field, allowed) => match closest(field, allowed) {
            Some(near) => format!(
                "unknown key (did you mean `{near}`? the keys here are {})",
                one_of(allowed)
            ),
            None => format!("unknown key (the keys here are {})", one_of(allowed)),
        },
        Kind::MissingField(_) => "must be set".into(),
        Kind::DuplicateField(f) => format!("`{f}` is set twice"),
        Kind::InvalidLength(n, expected) => format!("expected {expected}, found {n} items"),
        other => other.to_string(),
    }
}

fn expected_in_words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" => "true or false".into(),
        "path string" => "a path (a string)".into(),
        "a sequence" => "a list".into(),
        "a map" => "a table of keys and values".into(),
        e if e.starts_with("struct ") => "a table of keys and values".into(),
        e if e.starts_with("enum ") => "a name (a string)".into(),
        e if e.starts_with("a sequence") => e.replacen("a sequence", "a list", 1),
        other => other.into(),
    }
}

fn found_in_words(actual: &Actual) -> String {
    match actual {
        Actual::Bool(b) => format!("{b}"),
        Actual::Unsigned(n) => format!("the number {n}"),
        Actual::Signed(n) => format!("the number {n}"),
        Actual::Float(n) => format!("the number {n}"),
        Actual::Char(c) => format!("the string {:?}", c.to_string()),
        Actual::Str(s) => format!("the string {s:?}"),
        Actual::Seq => "a list".into(),
        Actual::Map => "a table".into(),
        Actual::Unit | Actual::Option => "nothing".into(),
        other => other.to_string(),
    }
}

fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => "none".into(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// The allowed name nearest to `given`, if it is near (a typo).
fn closest<'a>(given: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (edit_distance(given, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4) && *d < a.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
