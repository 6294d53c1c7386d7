//! One-line suggestions appended to parse and template errors: what the user most likely meant.

/// The marker that separates a message from its hint; [`super::located`] prints the hint last,
/// under the snippet.
pub const MARKER: &str = "\n  hint: ";

/// A hint for a YAML parse error `message` at `line` (1-based) of `text`, if one fits.
pub fn parse(message: &str, text: &str, line: Option<usize>) -> Option<String> {
    let src = line.and_then(|l| text.lines().nth(l.saturating_sub(1)));
    let leading = src.map(|s| &s[..s.len() - s.trim_start().len()]);
    if leading.is_some_and(|w| w.contains('\t'))
        || message.contains("found character that cannot start any token")
            && src.is_some_and(|s| s.contains('\t'))
    {
        return Some(
            "a tab in the indentation: YAML indents with spaces only; replace the tab with spaces"
                .into(),
        );
    }
    if message.contains("did not find expected key")
        || message.contains("mapping values are not allowed")
        || message.contains("did not find expected '-' indicator")
    {
        return Some(
            "check the indentation of this line: keys of one mapping start in the same column"
                .into(),
        );
    }
    let command = regex::Regex::new(
        r#"(run\.command|command): invalid type: string "((?:[^"\\]|\\.)*)", expected a sequence"#,
    )
    .expect("static");
    if let Some(c) = command.captures(message) {
        let words: Vec<String> = c[2]
            .split_whitespace()
            .map(|w| serde_json::to_string(w).unwrap_or_default())
            .collect();
        return Some(format!(
            "`command` is a list of arguments, not a shell line: write `command: [{}]` (or `[\"sh\", \"-c\", \"...\"]` for shell syntax)",
            words.join(", ")
        ));
    }
    if message.contains("expected u32") {
        return Some("a whole number from 0 to 4294967295".into());
    }
    None
}

/// A hint for a Tera error `message`.
pub fn template(message: &str) -> Option<String> {
    message
        .contains("Variable `git_branch` not found")
        .then(|| {
            "`git_branch` is only defined inside a git checkout with a branch: write `{{ git_branch | default(value=\"main\") }}`".into()
        })
}
