//! The layers below the CLI do not import it (ARCHITECTURE.md, "Module layers"): no
//! `crate::commands` or `crate::cli` outside src/commands/, src/cli.rs and src/main.rs. A few
//! files still do; they are listed here by name, and the list must shrink, never grow.

use std::path::{Path, PathBuf};

/// Files below the CLI that still reach into it (known debt, each owned elsewhere): the
/// progress reporters are built from `commands::Context`; target inference reads an
/// environment variable through `cli::secs_env`.
const KNOWN: &[&str] = &["src/events.rs", "src/infer.rs", "src/progress.rs"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The lines of `text` that use the CLI layer (comments aside).
fn cli_uses(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//"))
        .filter(|l| l.contains("crate::commands") || l.contains("crate::cli"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn nothing_below_the_cli_imports_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    let mut offenders = Vec::new();
    let mut cleared = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(root)
            .expect("under the root")
            .to_string_lossy()
            .into_owned();
        if rel.starts_with("src/commands/") || rel == "src/cli.rs" || rel == "src/main.rs" {
            continue;
        }
        let uses = cli_uses(&std::fs::read_to_string(&file).expect("read"));
        match (uses.is_empty(), KNOWN.contains(&rel.as_str())) {
            (false, false) => offenders.push(format!("{rel}: {}", uses.join(" | "))),
            (true, true) => cleared.push(rel),
            _ => {}
        }
    }
    assert!(
        offenders.is_empty(),
        "below the CLI, these import it (take a `&dyn project::Project` instead):\n{}",
        offenders.join("\n")
    );
    assert!(
        cleared.is_empty(),
        "no longer import the CLI: remove them from KNOWN: {cleared:?}"
    );
}

#[test]
fn the_check_sees_an_import() {
    assert_eq!(
        cli_uses("use crate::commands::Context;\n// crate::cli in a comment\nfn f() {}"),
        ["use crate::commands::Context;"]
    );
}
