//! Service names and how untrusted text reaches a terminal.
//!
//! Names follow docker compose's rule, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most
//! [`MAX_NAME_LEN`] characters: a name becomes a file name (logs, generated configs), an
//! environment marker and a column of `ps`, so `..`, `a/b` (which shared `a_b`'s files), control
//! characters and newlines are refused. Real mirrord accepts any key: this is a deliberate
//! difference. Anything else that may hold such characters is printed through [`escape`], and
//! long text through [`excerpt`].

use std::borrow::Cow;

/// The longest service name (a DNS label's length, as compose project names).
pub const MAX_NAME_LEN: usize = 63;

/// The JSON schema pattern of a name (kept in step with [`check_name`]).
pub const NAME_PATTERN: &str = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$";

/// Why `name` is not a valid service name, or `Ok`.
pub fn check_name(name: &str) -> Result<(), String> {
    let rule = "names are 1 to 63 characters: a letter or digit, then letters, digits, `_`, `.` or `-` (docker compose's rule)";
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if name.is_empty() {
        return Err(format!("a service name must not be empty; {rule}"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(format!(
            "service name `{}` is {} characters long; {rule}",
            escape(name),
            name.chars().count()
        ));
    }
    if !first_ok || !rest_ok {
        return Err(format!("invalid service name `{}`; {rule}", escape(name)));
    }
    Ok(())
}

/// `text` safe for a terminal: control characters (newlines and escape sequences included)
/// written as Rust escapes (`\n`, `\u{1b}`), cut to 200 characters. Escaping twice changes
/// nothing more.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_cut(text, 200)
}

/// As [`escape`], cut to `max` characters.
pub fn escape_cut(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max && !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push_str(&format!("… ({} bytes in all)", text.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` cut to about `max` bytes (on a character boundary), saying how much was left out.
pub fn excerpt(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}… ({} more bytes)",
        &text[..end],
        text.len() - end
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_rule() {
        for ok in ["a", "api", "web.v2", "8080", "a_b-c.d", &"x".repeat(63)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../../x",
            "a/b",
            "-a",
            "_a",
            ".a",
            "café",
            "a b",
            "a\nb",
            "a\u{1b}[31m",
            &"x".repeat(64),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let pattern = regex::Regex::new(NAME_PATTERN).unwrap();
        for s in ["a", "a..", "..", "a/b", &"x".repeat(63), &"x".repeat(64)] {
            assert_eq!(pattern.is_match(s), check_name(s).is_ok(), "{s:?}");
        }
    }

    #[test]
    fn escapes_control_characters_and_cuts() {
        assert_eq!(escape("api"), "api");
        assert_eq!(escape("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(escape(&escape("a\nb")), "a\\nb");
        assert!(escape(&"x".repeat(10_000)).len() < 300);
        assert_eq!(excerpt("héllo", 2), "h… (5 more bytes)");
    }
}
