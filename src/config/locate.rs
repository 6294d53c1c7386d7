//! Mapping between YAML key paths (`services.api.run`) and source positions.
//!
//! serde_yaml reports a position for type errors, but checks that run after parsing (unknown
//! dependencies, cycles, missing files) only know the key path. This is an indentation scan of
//! block-style YAML; for flow style it falls back to the deepest enclosing key it can find.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Location {
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
}

impl Location {
    pub fn of_offset(text: &str, offset: usize) -> Location {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        Location { line, column }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} column {}", self.line, self.column)
    }
}

/// One `key:` line of a block mapping.
struct KeyLine<'a> {
    line: usize,
    column: usize,
    key: &'a str,
}

fn key_lines(text: &str) -> impl Iterator<Item = KeyLine<'_>> {
    text.lines().enumerate().filter_map(|(i, raw)| {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return None;
        }
        let mut column = raw.len() - trimmed.len();
        let mut rest = trimmed;
        while let Some(r) = rest.strip_prefix("- ") {
            column += 2;
            rest = r.trim_start_matches(' ');
        }
        let colon = rest.find(':')?;
        let key = rest[..colon].trim().trim_matches(|c| c == '"' || c == '\'');
        let after = &rest[colon + 1..];
        let is_key = !key.is_empty()
            && !key.starts_with(['{', '[', '"', '\''])
            && (after.is_empty() || after.starts_with(' '));
        is_key.then_some(KeyLine {
            line: i + 1,
            column: column + 1,
            key,
        })
    })
}

/// Where `path` (e.g. `["services", "api", "depends_on"]`) is written, or the deepest ancestor.
pub fn locate(text: &str, path: &[&str]) -> Option<Location> {
    locate_nth(text, path, 0)
}

/// The `n`th (0-based) place where exactly `path` is written (a duplicated key has several).
pub fn locate_nth(text: &str, path: &[&str], n: usize) -> Option<Location> {
    let mut seen = 0;
    let mut stack: Vec<(usize, &str)> = Vec::new();
    let mut best: Option<(usize, Location)> = None;
    for kl in key_lines(text) {
        while stack.last().is_some_and(|(col, _)| *col >= kl.column) {
            stack.pop();
        }
        stack.push((kl.column, kl.key));
        let depth = stack.len();
        let matches = depth <= path.len() && stack.iter().zip(path).all(|((_, k), p)| k == p);
        if matches && best.as_ref().is_none_or(|(d, _)| depth > *d) {
            best = Some((
                depth,
                Location {
                    line: kl.line,
                    column: kl.column,
                },
            ));
            if depth == path.len() {
                if seen == n {
                    break;
                }
                seen += 1;
                best = None;
            }
        }
    }
    best.map(|(_, l)| l)
}

/// The key path enclosing `line` (1-based), e.g. `services.api.env`.
pub fn path_at_line(text: &str, line: usize) -> String {
    let mut stack: Vec<(usize, &str)> = Vec::new();
    for kl in key_lines(text) {
        if kl.line > line {
            break;
        }
        while stack.last().is_some_and(|(col, _)| *col >= kl.column) {
            stack.pop();
        }
        stack.push((kl.column, kl.key));
    }
    stack.iter().map(|(_, k)| *k).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "common:\n  operator: true\nservices:\n  api:\n    run:\n      command: [a]\n    depends_on:\n      - db\n  db:\n    run: {command: [b]}\n";

    #[test]
    fn finds_nested_keys() {
        let l = locate(DOC, &["services", "api", "depends_on"]).unwrap();
        assert_eq!((l.line, l.column), (7, 5));
        let l = locate(DOC, &["services", "db", "run"]).unwrap();
        assert_eq!((l.line, l.column), (10, 5));
    }

    #[test]
    fn falls_back_to_ancestor() {
        let l = locate(DOC, &["services", "db", "run", "command"]).unwrap();
        assert_eq!(l.line, 10);
    }

    #[test]
    fn path_of_a_line() {
        assert_eq!(path_at_line(DOC, 6), "services.api.run.command");
        assert_eq!(path_at_line(DOC, 8), "services.api.depends_on");
    }
}
