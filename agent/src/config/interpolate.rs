//! `${VAR}` and `${VAR:-default}` in the string values of a configuration file.
//!
//! Only values are interpolated, after the file is parsed: never keys, never comments, and a
//! variable's text cannot change the file's syntax (a value with a quote or a newline is just
//! that string). `${VAR}` is the variable's value (empty if it is set and empty);
//! `${VAR:-default}` is `default` when the variable is unset or empty (the default is taken
//! literally up to the closing brace); `$$` is a literal `$`; a `$` followed by anything else
//! stays as it is. A variable that is unset and has no default is an error naming it.
//!
//! A value that held a `${…}` is typed by its key like an environment variable: `zstd_level =
//! "${ZSTD:-3}"` is the number 3, `id = "${NODE_ID}"` stays a string whatever its digits.

use figment::value::{Dict, Value};

/// A value that holds `${…}`, after interpolation: its key path and its text.
pub(super) type Typed = (Vec<String>, String);

/// A value that could not be interpolated: its key path and why.
pub(super) type Failed = (Vec<String>, String);

/// Interpolates every string value of `dict` with `lookup`. Values that fail are taken out
/// of tables (so their key is reported once, here) and left as written in lists.
pub(super) fn interpolate(
    dict: &mut Dict,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> (Vec<Typed>, Vec<Failed>) {
    let mut typed = Vec::new();
    let mut failed = Vec::new();
    let mut path = Vec::new();
    walk_dict(dict, lookup, &mut path, &mut typed, &mut failed);
    (typed, failed)
}

/// What happened to one value.
enum Outcome {
    /// Nothing to do.
    Same,
    /// Replaced.
    Done(Value),
    /// Failed; the message.
    Failed(String),
}

fn walk_dict(
    dict: &mut Dict,
    lookup: &dyn Fn(&str) -> Option<String>,
    path: &mut Vec<String>,
    typed: &mut Vec<Typed>,
    failed: &mut Vec<Failed>,
) {
    let mut remove = Vec::new();
    for (key, value) in dict.iter_mut() {
        path.push(key.clone());
        match visit(value, lookup, path, typed, failed) {
            Outcome::Same => {}
            Outcome::Done(v) => *value = v,
            Outcome::Failed(message) => {
                failed.push((path.clone(), message));
                remove.push(key.clone());
            }
        }
        path.pop();
    }
    for key in remove {
        dict.remove(&key);
    }
}

fn visit(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    path: &mut Vec<String>,
    typed: &mut Vec<Typed>,
    failed: &mut Vec<Failed>,
) -> Outcome {
    match value {
        Value::String(_, s) => match expand(s, lookup) {
            Ok(None) => Outcome::Same,
            Ok(Some((text, false))) => Outcome::Done(Value::from(text)),
            Ok(Some((text, true))) => {
                let parsed: Value = match text.parse() {
                    Ok(v) => v,
                    Err(never) => match never {},
                };
                typed.push((path.clone(), text));
                Outcome::Done(parsed)
            }
            Err(message) => Outcome::Failed(message),
        },
        Value::Dict(_, d) => {
            walk_dict(d, lookup, path, typed, failed);
            Outcome::Same
        }
        Value::Array(_, items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                match visit(item, lookup, path, typed, failed) {
                    Outcome::Same => {}
                    Outcome::Done(v) => *item = v,
                    Outcome::Failed(message) => failed.push((path.clone(), message)),
                }
                path.pop();
            }
            Outcome::Same
        }
        _ => Outcome::Same,
    }
}

/// Expands `s`: `None` when it has nothing to expand, else the text and whether a variable
/// was referenced.
pub(super) fn expand(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(String, bool)>, String> {
    if !s.contains('$') {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut referenced = false;
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(format!(
                    "unclosed `${{` in {s:?} (write `$${{` for a literal `${{`)"
                ));
            };
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !is_name(name) {
                return Err(format!(
                    "`${{{inner}}}` is not a variable reference (a name is letters, digits and _, \
                     not starting with a digit; write `$$` for a literal `$`)"
                ));
            }
            let value = match (lookup(name), default) {
                (Some(v), Some(d)) if v.is_empty() => d.to_owned(),
                (Some(v), _) => v,
                (None, Some(d)) => d.to_owned(),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (write `${{{name}:-default}}` \
                         for a default)"
                    ))
                }
            };
            out.push_str(&value);
            referenced = true;
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(Some((out, referenced)))
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("cp.example".into()),
            "EMPTY" => Some(String::new()),
            "DIGITS" => Some("0042".into()),
            _ => None,
        }
    }

    fn x(s: &str) -> Result<Option<(String, bool)>, String> {
        expand(s, &env)
    }

    #[test]
    fn references_defaults_and_escapes() {
        assert_eq!(x("plain"), Ok(None));
        assert_eq!(
            x("http://${HOST}:8700"),
            Ok(Some(("http://cp.example:8700".into(), true)))
        );
        assert_eq!(x("${UNSET:-3}"), Ok(Some(("3".into(), true))));
        assert_eq!(x("${EMPTY:-x}"), Ok(Some(("x".into(), true))));
        assert_eq!(x("${EMPTY}"), Ok(Some((String::new(), true))));
        assert_eq!(x("${HOST:-other}"), Ok(Some(("cp.example".into(), true))));
        assert_eq!(x("${UNSET:-}"), Ok(Some((String::new(), true))));
        assert_eq!(x("${UNSET:-a:-b}"), Ok(Some(("a:-b".into(), true))));
        assert_eq!(x("${DIGITS}"), Ok(Some(("0042".into(), true))));
        assert_eq!(x("cost: $$5"), Ok(Some(("cost: $5".into(), false))));
        assert_eq!(x("$${HOST}"), Ok(Some(("${HOST}".into(), false))));
        assert_eq!(x("a$b$"), Ok(Some(("a$b$".into(), false))));
        assert_eq!(x("$$$${HOST}"), Ok(Some(("$${HOST}".into(), false))));
        assert_eq!(x("$$${HOST}"), Ok(Some(("$cp.example".into(), true))));
    }

    #[test]
    fn mistakes_are_errors_that_name_them() {
        let e = x("${UNSET}").unwrap_err();
        assert!(e.contains("environment variable UNSET is not set"), "{e}");
        let e = x("a ${HOST").unwrap_err();
        assert!(e.contains("unclosed"), "{e}");
        let e = x("${1X}").unwrap_err();
        assert!(e.contains("not a variable reference"), "{e}");
        let e = x("${}").unwrap_err();
        assert!(e.contains("not a variable reference"), "{e}");
    }
}
