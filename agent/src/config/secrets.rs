//! Secrets given as files: next to each key in [`SECRET_KEYS`], a key `<name>_file` names a
//! file whose content is the value (`token_file = "/var/run/secrets/weir/token"`), as a
//! Kubernetes Secret mounted as a volume gives it. The file is read when the configuration is
//! loaded; one trailing line break is dropped (`echo` adds one), and an empty file is an error.
//! Setting both the key and its `_file` is an error.

use std::path::Path;

use figment::value::{Dict, Value};

/// The keys that hold secrets and may be given as `<key>_file`; `*` is any array index.
pub const SECRET_KEYS: &[&str] = &[
    "control_plane.token",
    "control_plane.tokens.*.token",
    "control_plane.postgres_url",
    "sources.fluent.shared_key",
];

/// A problem with a `_file` key: the key's path and what is wrong.
pub(super) type Problem = (Vec<String>, String);

/// Replaces every `<secret>_file` key of `tree` with the secret read through `read`.
pub(super) fn read_files(
    tree: &mut Dict,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for pattern in SECRET_KEYS {
        let segments: Vec<&str> = pattern.split('.').collect();
        let mut path = Vec::new();
        visit(tree, &segments, &mut path, read, &mut problems);
    }
    problems
}

fn visit(
    dict: &mut Dict,
    segments: &[&str],
    path: &mut Vec<String>,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
    problems: &mut Vec<Problem>,
) {
    match segments {
        [] => {}
        [leaf] => resolve(dict, leaf, path, read, problems),
        [key, rest @ ..] => {
            let Some(value) = dict.get_mut(*key) else {
                return;
            };
            path.push((*key).to_owned());
            match (value, rest) {
                (Value::Dict(_, d), _) => visit(d, rest, path, read, problems),
                (Value::Array(_, items), ["*", rest @ ..]) => {
                    for (i, item) in items.iter_mut().enumerate() {
                        if let Value::Dict(_, d) = item {
                            path.push(i.to_string());
                            visit(d, rest, path, read, problems);
                            path.pop();
                        }
                    }
                }
                _ => {}
            }
            path.pop();
        }
    }
}

fn resolve(
    dict: &mut Dict,
    leaf: &str,
    path: &[String],
    read: &dyn Fn(&Path) -> std::io::Result<String>,
    problems: &mut Vec<Problem>,
) {
    let file_key = format!("{leaf}_file");
    let Some(file) = dict.remove(&file_key) else {
        return;
    };
    let mut key_path = path.to_vec();
    key_path.push(file_key.clone());
    let file = match file {
        Value::String(_, s) if !s.trim().is_empty() => s,
        Value::Empty(..) => return,
        other => {
            let found = match other {
                Value::String(..) => "an empty string",
                Value::Num(..) => "a number",
                Value::Bool(..) => "a boolean",
                Value::Dict(..) => "a table",
                _ => "a list",
            };
            problems.push((
                key_path,
                format!("expected the path of a file, found {found}"),
            ));
            return;
        }
    };
    if dict
        .get(leaf)
        .is_some_and(|v| !matches!(v, Value::Empty(..)))
    {
        problems.push((
            key_path,
            format!("set either {leaf} or {file_key}, not both"),
        ));
        return;
    }
    match read(Path::new(&file)) {
        Ok(text) => {
            let secret = text
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text);
            if secret.is_empty() {
                problems.push((key_path, format!("{file} is empty")));
            } else {
                dict.insert(leaf.to_owned(), Value::from(secret.to_owned()));
            }
        }
        Err(e) => problems.push((key_path, format!("cannot read {file}: {e}"))),
    }
}
