//! What compose users reuse in the file itself: top-level `x-*` keys (ignored) and YAML merge
//! keys (`<<: *base`, applied at every level). Real mirrord rejects both; `check --compat`
//! lists them.
//!
//! A file that uses neither is parsed straight from its text, so every error keeps serde's own
//! line and column. A file that uses one is read as a YAML value, merged, stripped of its `x-*`
//! keys and written back as YAML before it is parsed as a `mirrord-up.yaml`: an error then names
//! its key path, which is located in the file as written.

use serde_yaml::Value;

use super::{Location, UpFile, locate};

/// A parse error: serde's message and where it points in the rendered text.
pub struct Failure {
    pub message: String,
    pub location: Option<Location>,
}

/// What [`parse`] read.
pub struct Parsed {
    pub file: UpFile,
    /// The document-level extensions used, as `check --compat` names them.
    pub extensions: Vec<String>,
    /// The YAML after merging and without `x-*` keys, when it differs from the rendered text.
    pub resolved: Option<String>,
}

/// Parses `rendered`, the text of `path`.
pub fn parse(path: &std::path::Path, rendered: &std::sync::Arc<str>) -> Result<Parsed, Failure> {
    // A file whose text cannot hold a merge key and that parses as is used no extension (an
    // `x-*` key is an unknown field to the parser): it is parsed once, not first as a value.
    // A plain file is parsed service by service (only the services whose text changed).
    if !may_merge(rendered)
        && let Some(file) = super::chunks::parse(path, rendered)
            .or_else(|| serde_yaml::from_str::<UpFile>(rendered).ok())
    {
        return Ok(Parsed {
            file,
            extensions: Vec::new(),
            resolved: None,
        });
    }
    parse_whole(rendered)
}

/// [`parse`] the long way: as a YAML value first, to find the extensions.
fn parse_whole(rendered: &str) -> Result<Parsed, Failure> {
    let plain = || {
        serde_yaml::from_str::<UpFile>(rendered).map(|file| Parsed {
            file,
            extensions: Vec::new(),
            resolved: None,
        })
    };
    let Ok(mut value) = serde_yaml::from_str::<Value>(rendered) else {
        return plain().map_err(yaml_failure);
    };
    if !has_merge_key(&value) && !has_x_keys(&value) {
        return plain().map_err(yaml_failure);
    }
    let used = merge_and_strip(&mut value, rendered)?;
    let merged = serde_yaml::to_string(&value).map_err(yaml_failure)?;
    serde_yaml::from_str::<UpFile>(&merged)
        .map(|file| Parsed {
            file,
            extensions: used,
            resolved: Some(merged.clone()),
        })
        .map_err(|e| {
            let message = without_position(&e);
            Failure {
                location: locate_message(rendered, &message),
                message,
            }
        })
}

/// serde's error with the position it gives.
fn yaml_failure(e: serde_yaml::Error) -> Failure {
    Failure {
        message: e.to_string(),
        location: e.location().map(|l| Location {
            line: l.line(),
            column: l.column(),
        }),
    }
}

/// serde's message without its ` at line L column C`: the position in a text that mirrord-up
/// wrote (merged YAML) means nothing to the user, who is shown where the key is written.
pub fn without_position(e: &serde_yaml::Error) -> String {
    let message = e.to_string();
    message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned()
}

/// Applies the merge keys of `value` (an error is located at the first `<<` of `rendered`) and
/// drops its top-level `x-*` keys; returns the document-level extensions it used.
fn merge_and_strip(value: &mut Value, rendered: &str) -> Result<Vec<String>, Failure> {
    let mut used = Vec::new();
    if has_merge_key(value) {
        used.push("<< (YAML merge keys)".to_owned());
    }
    if let Err(e) = value.apply_merge() {
        let location = locate_merge(rendered);
        let path = location
            .map(|l| locate::path_at_line(rendered, l.line))
            .unwrap_or_default();
        return Err(Failure {
            message: match path.is_empty() {
                true => format!("a YAML merge key (`<<`) {e}"),
                false => format!("{path}: a YAML merge key (`<<`) {e}"),
            },
            location,
        });
    }
    if let Value::Mapping(top) = value {
        top.retain(|k, _| match k.as_str() {
            Some(k) if k.starts_with("x-") => {
                used.push(k.to_owned());
                false
            }
            _ => true,
        });
    }
    Ok(used)
}

/// Whether `text` may hold a merge key: `<<`, or a `<` written as an escape in a quoted key.
fn may_merge(text: &str) -> bool {
    if text.contains("<<") {
        return true;
    }
    // An escape of `<` in a double-quoted scalar, in either case (without a copy of the text).
    let bytes = text.as_bytes();
    memchr::memchr_iter(b'\\', bytes).any(|i| {
        let rest = &bytes[i + 1..];
        ["x3c", "u003c", "u0000003c"].iter().any(|e| {
            rest.get(..e.len())
                .is_some_and(|r| r.eq_ignore_ascii_case(e.as_bytes()))
        })
    })
}

fn has_x_keys(value: &Value) -> bool {
    matches!(value, Value::Mapping(top) if top.keys().any(|k| k.as_str().is_some_and(|k| k.starts_with("x-"))))
}

fn has_merge_key(value: &Value) -> bool {
    match value {
        Value::Mapping(m) => m
            .iter()
            .any(|(k, v)| k.as_str() == Some("<<") || has_merge_key(v)),
        Value::Sequence(s) => s.iter().any(has_merge_key),
        Value::Tagged(t) => has_merge_key(&t.value),
        _ => false,
    }
}

fn locate_merge(text: &str) -> Option<Location> {
    text.lines().enumerate().find_map(|(i, line)| {
        let key = line.trim_start();
        key.starts_with("<<").then(|| Location {
            line: i + 1,
            column: line.len() - key.len() + 1,
        })
    })
}

/// Where the key path that starts serde's `message` (`services.api.run: …`) is written, or its
/// deepest written ancestor (a key brought in by a merge is written under its anchor).
fn locate_message(text: &str, message: &str) -> Option<Location> {
    let (path, _) = message.split_once(": ")?;
    if path.contains(' ') {
        return None;
    }
    let parts: Vec<&str> = path
        .split(['.', '['])
        .map(|p| p.trim_end_matches(']'))
        .filter(|p| !p.is_empty() && !p.chars().all(|c| c.is_ascii_digit()))
        .collect();
    locate::locate(text, &parts)
}

/// One of several `-f` files as a YAML value: merge keys applied, `x-*` keys dropped; also the
/// document-level extensions it used.
pub fn to_value(rendered: &str) -> Result<(Value, Vec<String>), Failure> {
    let mut value = serde_yaml::from_str::<Value>(rendered).map_err(yaml_failure)?;
    let used = merge_and_strip(&mut value, rendered)?;
    Ok((value, used))
}

/// Compose's merge of a later file over an earlier one: mappings merge key by key, anything
/// else (sequences such as `command`, scalars) is replaced whole.
pub fn overlay(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (k, v) in over {
                match base.get_mut(&k) {
                    Some(b) => overlay(b, v),
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// Where the key path that starts serde's `message` is written in `text`, if exactly there
/// (not only an ancestor of it).
pub fn written_at(text: &str, message: &str) -> Option<Location> {
    let (path, _) = message.split_once(": ")?;
    let last = path
        .split(['.', '['])
        .map(|p| p.trim_end_matches(']'))
        .rfind(|p| !p.is_empty() && !p.chars().all(|c| c.is_ascii_digit()))?;
    let loc = locate_message(text, message)?;
    let line = text.lines().nth(loc.line - 1)?.trim_start();
    let line = line.strip_prefix("- ").unwrap_or(line);
    let key = line.trim_start_matches(['"', '\'']);
    key.starts_with(last).then_some(loc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A merge key may be written with `<` escaped, in either case; other escapes, and an
    /// escape cut short by the end of the text, are not one.
    #[test]
    fn a_merge_key_is_seen_however_its_angle_is_written() {
        for (text, may) in [
            ("a: 1\n", false),
            ("a: <<\n", true),
            ("\"\\x3c<\": 1\n", true),
            ("\"\\X3C\\x3C\": 1\n", true),
            ("\"\\u003C\\u003c\": 1\n", true),
            ("\"\\U0000003C<\": 1\n", true),
            ("a: \"\\\"quoted\\\" \\n \\x3d \\u003\"\n", false),
            ("a: \"\\x3", false),
        ] {
            assert_eq!(may_merge(text), may, "{text:?}");
        }
    }

    /// The short way gives what the long way gives, for files with and without extensions,
    /// valid or not (the same file, or the same message and place).
    #[test]
    fn parsing_once_changes_nothing() {
        let texts = [
            "services:\n  a:\n    run: {command: [x]}\n",
            "common: {context: c}\nservices:\n  a:\n    run: {command: [x]}\n",
            "x-base: &b {command: [x]}\nservices:\n  a:\n    run: *b\n",
            "x-env: {A: '1'}\nservices:\n  a:\n    run: {command: [x]}\n",
            "services:\n  a: &a\n    run: {command: [x]}\n  b:\n    <<: *a\n    skip: true\n",
            "services:\n  a: &a\n    run: {command: [x]}\n  b:\n    \"\\x3c<\": *a\n",
            "services:\n  a: &a\n    run: {command: [x]}\n  \"\\u003c\\u003c\": *a\n",
            "services:\n  a:\n    run: {command: [x]}\n  <<: {run: {command: [y]}}\n",
            "services:\n  a:\n    comand: [x]\n",
            "services:\n  a:\n    run: {command: [x]}\n  a:\n    run: {command: [y]}\n",
            "services: [\n",
            "services:\n  a:\n    run: {command: [x]}\n    env: {override: {A: '1', A: '2'}}\n",
            "other: 1\nservices:\n  a:\n    run: {command: [x]}\n",
        ];
        for text in texts {
            match (
                parse(std::path::Path::new("/compose"), &(*text).into()),
                parse_whole(text),
            ) {
                (Ok(short), Ok(long)) => {
                    assert_eq!(short.file, long.file, "{text}");
                    assert_eq!(short.extensions, long.extensions, "{text}");
                    assert_eq!(short.resolved, long.resolved, "{text}");
                }
                (Err(short), Err(long)) => {
                    assert_eq!(short.message, long.message, "{text}");
                    assert_eq!(short.location, long.location, "{text}");
                }
                (short, long) => panic!(
                    "{text}: {:?} / {:?}",
                    short.map(|p| p.extensions).map_err(|f| f.message),
                    long.map(|p| p.extensions).map_err(|f| f.message)
                ),
            }
        }
    }
}
