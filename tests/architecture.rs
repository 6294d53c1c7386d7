//! The layers below the CLI do not import it (ARCHITECTURE.md, "Module layers"): no
//! `crate::commands` or `crate::cli` outside src/commands/, src/cli.rs and src/main.rs, with no
//! exception.

use std::path::{Path, PathBuf};

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
        if !uses.is_empty() {
            offenders.push(format!("{rel}: {}", uses.join(" | ")));
        }
    }
    assert!(
        offenders.is_empty(),
        "below the CLI, these import it (take a `&dyn project::Project` instead):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_check_sees_an_import() {
    assert_eq!(
        cli_uses("use crate::commands::Context;\n// crate::cli in a comment\nfn f() {}"),
        ["use crate::commands::Context;"]
    );
}

/// The lines of `text` (comments aside) that apply on their own: an engine, a stop or a
/// marker sweep outside the one request path (`request::submit`, ARCHITECTURE.md "One
/// request type").
fn own_applies(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//"))
        .filter(|l| {
            [
                "Engine::new",
                "stop_services",
                "stop_steps",
                "sweep::",
                "apply_plan",
                // A state change of its own (`ci start` recorded its session this way).
                "store.save(",
            ]
            .iter()
            .any(|p| l.contains(p))
        })
        .map(str::to_owned)
        .collect()
}

/// `down`, `ci start|stop`, `restart|stop|start`, `up` go through `request::submit`: no
/// command builds an engine, stops, sweeps or saves the state itself. The one exception: `up --dry-run` plans on an
/// engine (it applies nothing).
#[test]
fn front_ends_apply_only_through_the_request_path() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/commands"), &mut files);
    files.sort();
    let mut offenders = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        let mut uses = own_applies(&text);
        if file.ends_with("up.rs") {
            // `dry_run` only: its engine recovers and plans, it applies nothing.
            uses.retain(|l| !l.contains("Engine::new(&store, &lock, state, settings"));
        }
        if !uses.is_empty() {
            offenders.push(format!("{}: {}", file.display(), uses.join(" | ")));
        }
    }
    assert!(
        offenders.is_empty(),
        "these commands apply on their own (build a `request::Request` and `submit` it):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_apply_check_sees_an_engine() {
    assert_eq!(
        own_applies("let e = Engine::new(&s);\n// engine.stop_services in a comment\n"),
        ["let e = Engine::new(&s);"]
    );
}
