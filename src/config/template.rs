//! Tera rendering of the whole file, as real `mirrord up` does (compat §1.11).

use std::path::Path;
use std::sync::OnceLock;

use super::locate::Location;

/// A template failure: Tera's message chain and, where it can be found, where in the source.
#[derive(Debug)]
pub struct TemplateError {
    pub message: String,
    pub location: Option<Location>,
}

/// Renders `source` as the single Tera template `main`, with `key` and (when known) `git_branch`.
pub fn render(source: &str, key: &str, dir: &Path) -> Result<String, TemplateError> {
    let mut tera = tera::Tera::default();
    if let Err(e) = tera.add_raw_template("main", source) {
        return Err(TemplateError {
            location: parse_error_location(&e),
            message: one_paragraph(&chain(&e)),
        });
    }
    let mut ctx = tera::Context::new();
    ctx.insert("key", key);
    // Asking git costs a process start: only when the file can refer to the branch.
    if source.contains("git_branch")
        && let Some(branch) = git_branch(dir)
    {
        ctx.insert("git_branch", branch);
    }
    tera.render("main", &ctx).map_err(|e| {
        let message = chain(&e);
        TemplateError {
            location: render_error_location(source, &message),
            message,
        }
    })
}

/// `MIRRORD_BRANCH_NAME` if set and non-empty, else `git branch --show-current` in the YAML's
/// directory; computed once per process, like mirrord's `LazyLock`.
fn git_branch(dir: &Path) -> Option<&'static str> {
    static BRANCH: OnceLock<Option<String>> = OnceLock::new();
    BRANCH
        .get_or_init(|| {
            if let Ok(b) = std::env::var("MIRRORD_BRANCH_NAME")
                && !b.is_empty()
            {
                return Some(b);
            }
            let out = std::process::Command::new("git")
                .args(["branch", "--show-current"])
                .current_dir(dir)
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            let b = String::from_utf8(out.stdout).ok()?.trim().to_owned();
            (out.status.success() && !b.is_empty()).then_some(b)
        })
        .as_deref()
}

fn chain(e: &tera::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Tera's parse errors embed pest's drawing of the source; keep its words only
/// (`Failed to parse 'main': expected …`), since the location is reported separately.
fn one_paragraph(message: &str) -> String {
    let head = message.split(" --> ").next().unwrap_or(message).trim_end();
    match message.lines().find_map(|l| l.trim().strip_prefix("= ")) {
        Some(expected) => format!("{head} {expected}"),
        None => head.to_owned(),
    }
}

/// Tera's parse errors carry pest's ` --> L:C` marker.
fn parse_error_location(e: &tera::Error) -> Option<Location> {
    let text = chain(e);
    let re = regex::Regex::new(r"--> (\d+):(\d+)").expect("static regex");
    let caps = re.captures(&text)?;
    Some(Location {
        line: caps[1].parse().ok()?,
        column: caps[2].parse().ok()?,
    })
}

/// Render errors name a variable or a function but no position: find its first use in a tag.
fn render_error_location(source: &str, message: &str) -> Option<Location> {
    let name_re = regex::Regex::new(r"(?:Variable|Function|Filter) `([^`]+)` not found").ok()?;
    let name = name_re.captures(message)?.get(1)?.as_str().to_owned();
    let use_re =
        regex::Regex::new(&format!(r"\{{[{{%]-?[^}}]*?\b({})\b", regex::escape(&name))).ok()?;
    let m = use_re.captures(source)?.get(1)?;
    Some(Location::of_offset(source, m.start()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_builtins_render() {
        let out = render(
            "a: {{ key }}\nb: {{ get_env(name=\"MIRRORD_UP_TEST_UNSET\", default=\"x\") | upper }}\n",
            "alice",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(out, "a: alice\nb: X\n");
    }

    #[test]
    fn comments_are_rendered_too() {
        let err = render("# {% oops\na: 1\n", "k", Path::new(".")).unwrap_err();
        assert!(
            err.message.contains("Failed to parse 'main'"),
            "{}",
            err.message
        );
        assert_eq!(err.location.map(|l| l.line), Some(1));
    }

    #[test]
    fn undefined_variable_is_located() {
        let err = render("a: 1\nb: \"{{ nope }}\"\n", "k", Path::new(".")).unwrap_err();
        assert!(
            err.message.contains("Variable `nope` not found"),
            "{}",
            err.message
        );
        let loc = err.location.unwrap();
        assert_eq!((loc.line, loc.column), (2, 8));
    }
}
