//! Issue 15, "Must show" 2: property-based fuzzing of the loaders, bounded so that it runs in
//! every `cargo test` (256 cases per target, seconds each).
//!
//! * The YAML/template loader (`UpDocument::from_text`, in-process: render → parse → validate)
//!   gets arbitrary bytes and structured mutations of every compat fixture (lines deleted,
//!   duplicated, swapped, tokens inserted: Tera tags, YAML anchors and merges, extreme numbers,
//!   control characters). Templates go to the real renderer (the binary under test).
//! * The state loader (`StateStore::read`) and `ps` (the binary, table and JSON) get the
//!   released example state with fields set to extremes: 0, 1, -1, u64::MAX, i64::MIN, 1e300,
//!   huge strings, escape sequences, wrong types.
//!
//! A panic fails the property (proptest catches it and shrinks the input); every case must end
//! within a bound; memory is bounded by the loaders' own limits (1 MiB files, a renderer under
//! `RLIMIT_AS`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mirrord_up::config::UpDocument;
use mirrord_up::state::StateStore;
use proptest::prelude::*;
use serde_json::Value;

mod common;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Longer than the renderer's 2 s limit, with room for a loaded machine.
const CASE_BOUND: Duration = Duration::from_secs(20);

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn init_renderer() {
    mirrord_up::config::template::set_renderer(Path::new(env!("CARGO_BIN_EXE_mirrord-up")));
}

/// Loads `text` as if it were `path`, checking the time bound (a panic fails the property).
fn load(path: &Path, text: &str) {
    let started = Instant::now();
    let result = UpDocument::from_text(path, text, "fuzz");
    let took = started.elapsed();
    assert!(took < CASE_BOUND, "loading took {took:?}");
    if let Err(e) = result {
        let message = e.to_string();
        assert!(
            message.len() < 16 * 1024,
            "an error of {} bytes",
            message.len()
        );
    }
}

fn fixtures() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for kind in ["valid", "invalid"] {
        for path in common::compat_fixtures(kind) {
            let text = std::fs::read_to_string(&path).expect("fixture");
            out.push((path, text));
        }
    }
    out
}

/// What mutations insert.
const TOKENS: &[&str] = &[
    "{{ key }}",
    "{{",
    "}}",
    "{% if true %}",
    "{% endif %}",
    "{% for i in range(end=3) %}x{% endfor %}",
    "{#",
    "&a ",
    "*a",
    "<<: *a",
    "- ",
    ": ",
    "~",
    "\t",
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    "\n",
    "0",
    "-1",
    "65536",
    "18446744073709551615",
    "18446744073709551616",
    "1e300",
    ".inf",
    ".nan",
    "-0.0",
    "86401",
    "24h",
    "99999999999h",
    "\u{1b}[2J",
    "\u{0}",
    "..",
    "../../x",
    "a/b",
    "services:",
    "run: {command: [x]}",
    "ready: {timeout: 18446744073709551615}",
    "stop_timeout: 18446744073709552",
    "depends_on: [a, a, a]",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Duplicate(usize),
    Swap(usize, usize),
    Insert(usize, usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Duplicate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        (any::<usize>(), any::<usize>(), 0..TOKENS.len())
            .prop_map(|(l, c, t)| Mutation::Insert(l, c, t)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for m in mutations {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let n = lines.len();
        match *m {
            Mutation::Delete(i) => {
                lines.remove(i % n);
            }
            Mutation::Duplicate(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Mutation::Swap(a, b) => lines.swap(a % n, b % n),
            Mutation::Insert(l, c, t) => {
                let line = &mut lines[l % n];
                let mut at = c % (line.len() + 1);
                while !line.is_char_boundary(at) {
                    at -= 1;
                }
                line.insert_str(at, TOKENS[t]);
            }
            Mutation::Truncate(i) => {
                let line = &mut lines[i % n];
                let mut at = i % (line.len() + 1);
                while !line.is_char_boundary(at) {
                    at -= 1;
                }
                line.truncate(at);
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn yaml_loader_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        init_renderer();
        let text = String::from_utf8_lossy(&bytes);
        load(Path::new("/nonexistent/mirrord-up.yaml"), &text);
        // The same bytes under a `services:` key reach the service-level visitors.
        load(
            Path::new("/nonexistent/mirrord-up.yaml"),
            &format!("services:\n  a:\n    {}\n    run: {{command: [x]}}\n", text.replace('\n', "\n    ")),
        );
    }

    #[test]
    fn yaml_loader_survives_mutated_fixtures(
        index in any::<usize>(),
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        init_renderer();
        let all = fixtures();
        let (path, text) = &all[index % all.len()];
        load(path, &mutate(text, &mutations));
    }
}

// ---------------------------------------------------------------------------------------------
// The state loader and `ps`

fn example() -> Value {
    let text = std::fs::read_to_string(Path::new(REPO).join("state/v1.example.json"))
        .expect("state example");
    serde_json::from_str(&text).expect("JSON")
}

/// Record fields (JSON pointers inside one service record) and top-level fields.
const RECORD_FIELDS: &[&str] = &[
    "/kind",
    "/config_hash",
    "/spec/name",
    "/spec/launcher",
    "/spec/max_restarts",
    "/argv",
    "/status",
    "/process",
    "/process/pid",
    "/process/pgid",
    "/process/start_time",
    "/process/boot_id",
    "/process/nonce",
    "/spawn_nonce",
    "/started_at_ms",
    "/restarts",
    "/last_exit",
    "/last_exit/code",
    "/last_exit/signal",
    "/last_exit/at_ms",
    "/last_reason",
    "/log_path",
    "/log_offset",
    "/output_dir",
    "/backoff_until_ms",
    "/crash_streak",
];

fn extreme(i: usize) -> Value {
    match i % 17 {
        0 => 0.into(),
        1 => 1.into(),
        2 => (-1).into(),
        3 => u64::MAX.into(),
        4 => i64::MIN.into(),
        5 => u32::MAX.into(),
        6 => (u32::MAX as u64 + 1).into(),
        7 => serde_json::json!(1e300),
        8 => Value::Null,
        9 => true.into(),
        10 => serde_json::json!([]),
        11 => serde_json::json!({}),
        12 => "x".repeat(100_000).into(),
        13 => "\u{1b}[2J\n\u{7}".into(),
        14 => "".into(),
        15 => "backoff".into(),
        _ => "exited".into(),
    }
}

/// Sets the field at `pointer` (creating the last key when its parent is an object).
fn set(v: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    match v.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.insert(key.to_owned(), value);
        }
        Some(other) if parent.is_empty() => *other = value,
        _ => {}
    }
}

fn mutated_state(edits: &[(usize, usize, usize)]) -> Value {
    let mut state = example();
    let names: Vec<String> = state["services"]
        .as_object()
        .expect("services")
        .keys()
        .cloned()
        .collect();
    for &(service, field, value) in edits {
        let name = &names[service % names.len()];
        let rec = &mut state["services"][name];
        set(
            rec,
            RECORD_FIELDS[field % RECORD_FIELDS.len()],
            extreme(value),
        );
    }
    state
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn state_loader_survives_extreme_fields(
        edits in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<usize>()), 1..6),
        top in any::<usize>(),
    ) {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::open(root.path(), "demo").unwrap();
        let mut state = mutated_state(&edits);
        if top % 4 == 0 {
            let field = ["/format_version", "/project", "/file", "/target_cache", "/last_reload_error"][top / 4 % 5];
            set(&mut state, field, extreme(top / 20));
        }
        std::fs::write(store.state_path(), serde_json::to_vec(&state).unwrap()).unwrap();
        let started = Instant::now();
        if let Ok(Some(state)) = store.read() {
            // What every command computes from a loaded state.
            let observed = mirrord_up::engine::observe(&state);
            prop_assert!(observed.len() <= state.services.len());
            let _ = state.name_width();
        }
        prop_assert!(started.elapsed() < CASE_BOUND);
    }
}

proptest! {
    // Each case runs the binary three times: fewer cases, same kinds of values.
    #![proptest_config(config(64))]

    #[test]
    fn ps_survives_extreme_fields(
        edits in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<usize>()), 1..6),
    ) {
        // Not a `common::Project`: its clean-up runs `down --force`, which must not be pointed
        // at PIDs such as 1 or our own.
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::open(root.path(), "demo").unwrap();
        let state = mutated_state(&edits);
        std::fs::write(store.state_path(), serde_json::to_vec(&state).unwrap()).unwrap();
        for args in [&["ps"][..], &["ps", "--format", "json"], &["ci", "ps"]] {
            let mut cmd = common::mirrord_up();
            cmd.args(["-p", "demo", "-f", "/nonexistent/mirrord-up.yaml", "--state-dir"])
                .arg(root.path())
                .args(args);
            let out = common::Running::start(cmd, format!("mirrord-up {}", args.join(" "))).wait();
            prop_assert!(!out.stderr.contains("panicked"), "{}: {out}", args.join(" "));
            // 0: shown; 1: a corrupt state, said so.
            prop_assert!(matches!(out.code, Some(0 | 1)), "{}: {out}", args.join(" "));
            if out.code == Some(1) {
                prop_assert!(out.stderr.contains("state file is corrupt"), "{}: {out}", args.join(" "));
            }
            prop_assert!(!out.stdout.contains('\u{1b}'), "{}: an escape reached the terminal: {out}", args.join(" "));
        }
    }
}
