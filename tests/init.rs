//! `init` end to end: the real binary on a pseudo-terminal, driven like a user would (wait for
//! each prompt, then type), writing exactly `fixtures/init/expected.yaml`; the refusal without a
//! terminal; and an existing file surviving a "no" to "Overwrite?".
//!
//! The terminal is `common::pty`'s: every wait has a deadline and ends as soon as the awaited
//! text arrives; nothing sleeps to synchronise.

mod common;

use std::path::Path;
use std::process::Command;

use common::BIN;
use common::pty::{ALL_TTY, Session, Streams, TIMEOUT};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

const ENTER: &str = "\r";
const DOWN: &str = "\x1b[B";
const BACKSPACE: &str = "\x7f";

/// `mirrord-up ARGS` in `dir` on a terminal, as a user would run it (colours allowed).
fn start(dir: &Path, args: &[&str], streams: Streams) -> Session {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .env_remove("MIRRORD_UP_FILE");
    Session::start(cmd, streams)
}

/// `mirrord-up check -f <file>` accepts the file (killed if it takes too long).
fn check_accepts(dir: &Path, file: &str) {
    let out = assert_cmd::Command::new(BIN)
        .args(["-k", "alice", "-f", file, "check"])
        .current_dir(dir)
        .env_remove("MIRRORD_UP_FILE")
        .timeout(TIMEOUT)
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "check refused {file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Answers the three common questions with the defaults.
fn default_common(s: &mut Session) {
    s.answer("Use the mirrord operator?", ENTER);
    s.answer("Accept invalid TLS certificates for the operator?", ENTER);
    s.answer("Enable anonymous telemetry?", ENTER);
}

#[test]
fn wizard_on_a_terminal_writes_the_pinned_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &["init", "-o", "custom.yaml"], ALL_TTY);

    s.expect("--- Step 1: Common settings (apply to all services) ---");
    s.answer("Use the mirrord operator?", ENTER);
    s.answer(
        "Accept invalid TLS certificates for the operator?",
        &format!("y{ENTER}"),
    );
    s.answer("Enable anonymous telemetry?", &format!("n{ENTER}"));

    s.expect("--- Step 2: Services ---");
    // api: split, a specified target and namespace, a header filter, Istio ports, two env
    // overrides, a quoted command (first with an unbalanced quote).
    s.answer("Service name:", ENTER);
    s.answer("name cannot be empty", &format!("api{ENTER}"));
    s.answer("Mode:", ENTER);
    s.answer("Target:", &format!("{DOWN}{ENTER}"));
    s.answer(
        "Target path",
        &format!("deployment/api/container/main{ENTER}"),
    );
    s.answer(
        "Namespace (blank for cluster default):",
        &format!("staging{ENTER}"),
    );
    s.answer(
        "HTTP header filter (regex; blank for auto session-key filter):",
        &format!("x-session: alice{ENTER}"),
    );
    s.answer(
        "Ports to ignore (sidecar ports, etc.):",
        &format!("{DOWN}{ENTER}"),
    );
    s.answer(
        "Add an env-var override for the local process?",
        &format!("y{ENTER}"),
    );
    s.answer("Variable name:", &format!("LOG_LEVEL{ENTER}"));
    s.answer("Value:", &format!("debug{ENTER}"));
    s.answer(
        "Add an env-var override for the local process?",
        &format!("y{ENTER}"),
    );
    s.answer("Variable name:", &format!("GREETING{ENTER}"));
    s.answer("Value:", &format!("hello world{ENTER}"));
    s.answer(
        "Add an env-var override for the local process?",
        &format!("n{ENTER}"),
    );
    s.answer("Run with `mirrord exec` or `mirrord container`?", ENTER);
    s.answer(
        "Local command (e.g. `go run ./cmd/api`):",
        &format!("sh -c \"echo hi{ENTER}"),
    );
    s.answer("unbalanced quote", &format!("\"{ENTER}"));
    s.answer("Add mirrord-up options?", &format!("n{ENTER}"));
    s.answer("Add another service?", &format!("y{ENTER}"));

    // worker: the name taken first, targetless, custom ports (first out of range), a container.
    s.answer("Service name:", &format!("api{ENTER}"));
    s.answer(
        "a service with that name already exists",
        &format!("{}worker{ENTER}", BACKSPACE.repeat(3)),
    );
    s.answer("Mode:", ENTER);
    s.answer("Target:", &format!("{DOWN}{DOWN}{ENTER}"));
    s.answer(
        "HTTP header filter (regex; blank for auto session-key filter):",
        ENTER,
    );
    s.answer(
        "Ports to ignore (sidecar ports, etc.):",
        &format!("{DOWN}{DOWN}{DOWN}{ENTER}"),
    );
    s.answer("Comma-separated ports:", &format!("70000{ENTER}"));
    s.answer(
        "`70000` is not a valid u16 port",
        &format!("{}9000, 8080{ENTER}", BACKSPACE.repeat(5)),
    );
    s.answer("Add an env-var override for the local process?", ENTER);
    s.answer(
        "Run with `mirrord exec` or `mirrord container`?",
        &format!("{DOWN}{ENTER}"),
    );
    s.answer(
        "Local command (e.g. `go run ./cmd/api`):",
        &format!("docker run --rm -p 8080:8080 web:latest{ENTER}"),
    );
    s.answer("Add mirrord-up options?", ENTER);
    s.answer("Add another service?", &format!("y{ENTER}"));

    // billing: replace mode, so no header filter question; inferred target in a namespace.
    s.answer("Service name:", &format!("billing{ENTER}"));
    s.answer("Mode:", &format!("{DOWN}{ENTER}"));
    s.answer("Target:", ENTER);
    s.answer(
        "Namespace (blank for cluster default):",
        &format!("payments{ENTER}"),
    );
    s.answer("Ports to ignore (sidecar ports, etc.):", ENTER);
    s.answer("Add an env-var override for the local process?", ENTER);
    s.answer("Run with `mirrord exec` or `mirrord container`?", ENTER);
    s.answer(
        "Local command (e.g. `go run ./cmd/api`):",
        &format!("./billing --verbose{ENTER}"),
    );
    s.answer("Add mirrord-up options?", &format!("N{ENTER}"));
    s.answer("Add another service?", ENTER);

    s.expect("--- Step 3: Preview ---");
    s.answer("Save configuration to a file?", ENTER);
    s.answer("Enter filename:", ENTER);
    s.expect("Wrote custom.yaml.");
    let (status, transcript) = s.finish();
    assert!(status.success(), "{status}\n{transcript}");
    // It ends with what to run next, on the file it wrote, and the schema line.
    let after = transcript
        .split("Wrote custom.yaml.")
        .nth(1)
        .expect("the wizard's end");
    for part in [
        "mirrord-up -f custom.yaml check",
        "mirrord-up -f custom.yaml up",
        "mirrord-up schema > mirrord-up.schema.json",
        "# yaml-language-server: $schema=./mirrord-up.schema.json",
    ] {
        assert!(
            after.contains(part),
            "missing {part:?} after the write:\n{after}"
        );
    }

    let expected = std::fs::read_to_string(Path::new(REPO).join("fixtures/init/expected.yaml"))
        .expect("fixture");
    let written = std::fs::read_to_string(dir.path().join("custom.yaml")).expect("written file");
    assert_eq!(
        written, expected,
        "the written file differs from the fixture"
    );
    let preview = transcript
        .split("--- Step 3: Preview ---\n")
        .nth(1)
        .expect("preview");
    assert!(preview.starts_with(&expected), "preview:\n{preview}");
    check_accepts(dir.path(), "custom.yaml");
}

/// The mirrord-up options behind "Add mirrord-up options?": depends_on (only services above),
/// ready and restart, written where `check` reads them and listed by `check --compat`; the
/// operator declined, so no question about its certificates; the default file name, so the
/// next commands need no `-f`.
#[test]
fn wizard_with_mirrord_up_options() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &["init"], ALL_TTY);

    s.answer("Use the mirrord operator?", &format!("n{ENTER}"));
    s.answer("Enable anonymous telemetry?", &format!("n{ENTER}"));

    // db: targetless, ready on a TCP port (a bad one first), restarted on failure. No
    // service above it, so no depends_on question.
    s.answer("Service name:", &format!("db{ENTER}"));
    s.answer("Mode:", ENTER);
    s.answer("Target:", &format!("{DOWN}{DOWN}{ENTER}"));
    s.answer(
        "HTTP header filter (regex; blank for auto session-key filter):",
        ENTER,
    );
    s.answer("Ports to ignore (sidecar ports, etc.):", ENTER);
    s.answer("Add an env-var override for the local process?", ENTER);
    s.answer("Run with `mirrord exec` or `mirrord container`?", ENTER);
    s.answer(
        "Local command (e.g. `go run ./cmd/api`):",
        &format!("./db --port 5432{ENTER}"),
    );
    s.answer("Add mirrord-up options?", &format!("y{ENTER}"));
    s.answer("Ready when:", &format!("{DOWN}{DOWN}{ENTER}"));
    s.answer("Port:", &format!("99999{ENTER}"));
    s.answer(
        "is not a port",
        &format!("{}5432{ENTER}", BACKSPACE.repeat(5)),
    );
    s.answer("Restart when it exits:", &format!("{DOWN}{ENTER}"));
    s.answer("Add another service?", &format!("y{ENTER}"));

    // api: depends on db (an unknown name first), ready on a log line, always restarted.
    s.answer("Service name:", &format!("api{ENTER}"));
    s.answer("Mode:", ENTER);
    s.answer("Target:", &format!("{DOWN}{DOWN}{ENTER}"));
    s.answer(
        "HTTP header filter (regex; blank for auto session-key filter):",
        ENTER,
    );
    s.answer("Ports to ignore (sidecar ports, etc.):", ENTER);
    s.answer("Add an env-var override for the local process?", ENTER);
    s.answer("Run with `mirrord exec` or `mirrord container`?", ENTER);
    s.answer(
        "Local command (e.g. `go run ./cmd/api`):",
        &format!("go run ./cmd/api{ENTER}"),
    );
    s.answer("Add mirrord-up options?", &format!("y{ENTER}"));
    s.answer(
        "Depends on (comma-separated; blank for none):",
        &format!("cache{ENTER}"),
    );
    s.answer(
        "no service `cache` above",
        &format!("{}db{ENTER}", BACKSPACE.repeat(5)),
    );
    s.answer("Ready when:", &format!("{DOWN}{ENTER}"));
    s.answer("Regex:", &format!("listening on :\\d+{ENTER}"));
    s.answer("Restart when it exits:", &format!("{DOWN}{DOWN}{ENTER}"));
    s.answer("Add another service?", ENTER);

    s.expect("--- Step 3: Preview ---");
    s.answer("Save configuration to a file?", ENTER);
    s.answer("Enter filename:", ENTER);
    s.expect("Wrote mirrord-up.yaml.");
    let (status, transcript) = s.finish();
    assert!(status.success(), "{status}\n{transcript}");
    assert!(
        !transcript.contains("invalid TLS certificates"),
        "asked about certificates of a declined operator:\n{transcript}"
    );
    let after = transcript.split("Wrote mirrord-up.yaml.").nth(1).unwrap();
    assert!(
        after.contains("mirrord-up check") && after.contains("mirrord-up up"),
        "{after}"
    );
    assert!(!after.contains(" -f "), "{after}");

    let written = std::fs::read_to_string(dir.path().join("mirrord-up.yaml")).unwrap();
    assert_eq!(
        written,
        "common:\n  operator: false\n  telemetry: false\nservices:\n  db:\n    target: none\n    default_mode: split\n    skip: false\n    ready:\n      tcp: 5432\n    restart: on-failure\n    run:\n      type: exec\n      command: [\"./db\", \"--port\", \"5432\"]\n  api:\n    target: none\n    default_mode: split\n    skip: false\n    depends_on:\n      - db\n    ready:\n      log: listening on :\\d+\n    restart: always\n    run:\n      type: exec\n      command: [\"go\", \"run\", \"./cmd/api\"]\n"
    );
    check_accepts(dir.path(), "mirrord-up.yaml");
    // And they are mirrord-up's own keys: `check --compat` lists them and exits 1.
    let out = assert_cmd::Command::new(BIN)
        .args(["-k", "alice", "check", "--compat"])
        .current_dir(dir.path())
        .env_remove("MIRRORD_UP_FILE")
        .timeout(TIMEOUT)
        .output()
        .expect("run check --compat");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for key in [
        "services.db.ready",
        "services.db.restart",
        "services.api.depends_on",
    ] {
        assert!(stdout.contains(key), "{key} not listed:\n{stdout}");
    }
}

#[test]
fn without_a_terminal_init_explains_how_to_write_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let expect_refusal = |code: Option<i32>, text: &str| {
        assert_eq!(code, Some(1), "{text}");
        for part in [
            "needs a terminal",
            "by hand",
            "\"YAML reference\" section of README.md",
            "mirrord-up schema",
        ] {
            assert!(text.contains(part), "missing {part:?} in:\n{text}");
        }
    };

    for streams in [
        Streams {
            stdin_tty: false,
            stdout_tty: true,
        },
        Streams {
            stdin_tty: true,
            stdout_tty: false,
        },
    ] {
        let s = start(dir.path(), &["init"], streams);
        let (status, transcript) = s.finish();
        expect_refusal(status.code(), &transcript);
        assert!(!transcript.contains("Welcome"), "{transcript}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn an_existing_file_is_kept_when_overwrite_is_declined() {
    let dir = tempfile::tempdir().unwrap();
    let original =
        "# hand-written, keep me\nservices:\n  keep:\n    run:\n      command: [\"true\"]\n";
    std::fs::write(dir.path().join("mirrord-up.yaml"), original).unwrap();

    let mut s = start(dir.path(), &["init"], ALL_TTY);
    default_common(&mut s);
    s.answer("Service name:", &format!("api{ENTER}"));
    s.answer("Mode:", ENTER);
    s.answer("Target:", ENTER);
    s.answer("Namespace (blank for cluster default):", ENTER);
    s.answer(
        "HTTP header filter (regex; blank for auto session-key filter):",
        ENTER,
    );
    s.answer("Ports to ignore (sidecar ports, etc.):", ENTER);
    s.answer("Add an env-var override for the local process?", ENTER);
    s.answer("Run with `mirrord exec` or `mirrord container`?", ENTER);
    s.answer(
        "Local command (e.g. `go run ./cmd/api`):",
        &format!("go run .{ENTER}"),
    );
    s.answer("Add mirrord-up options?", ENTER);
    s.answer("Add another service?", ENTER);
    s.answer("Save configuration to a file?", ENTER);
    // The default answer to "Overwrite?" is no, and so is an explicit `n`: both ask again.
    s.answer("Enter filename:", ENTER);
    s.answer("mirrord-up.yaml exists. Overwrite?", ENTER);
    s.answer("Enter filename:", ENTER);
    s.answer("mirrord-up.yaml exists. Overwrite?", &format!("n{ENTER}"));
    s.answer("Enter filename:", &format!("other.yaml{ENTER}"));
    s.expect("Wrote other.yaml.");
    let (status, transcript) = s.finish();
    assert!(status.success(), "{status}\n{transcript}");

    let kept = std::fs::read_to_string(dir.path().join("mirrord-up.yaml")).unwrap();
    assert_eq!(kept, original, "the existing file was changed");
    let other = std::fs::read_to_string(dir.path().join("other.yaml")).unwrap();
    assert_eq!(
        other,
        "services:\n  api:\n    default_mode: split\n    skip: false\n    run:\n      type: exec\n      command: [\"go\", \"run\", \".\"]\n"
    );
    check_accepts(dir.path(), "other.yaml");
}

/// Ctrl-U deletes what was typed before the cursor, Ctrl-W the word before it, as in a shell
/// (inquire alone would type `u` and `w`), also after a refused answer.
#[test]
fn ctrl_u_and_ctrl_w_edit_the_line() {
    const CTRL_U: &str = "\x15";
    const CTRL_W: &str = "\x17";
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &["init"], ALL_TTY);
    default_common(&mut s);
    s.answer("Service name:", &format!("typo{CTRL_U}api{ENTER}"));
    s.answer("Mode:", ENTER);
    s.answer("Target:", ENTER);
    s.answer("Namespace (blank for cluster default):", ENTER);
    s.answer(
        "HTTP header filter (regex; blank for auto session-key filter):",
        ENTER,
    );
    s.answer("Ports to ignore (sidecar ports, etc.):", ENTER);
    s.answer("Add an env-var override for the local process?", ENTER);
    s.answer("Run with `mirrord exec` or `mirrord container`?", ENTER);
    s.answer(
        "Local command (e.g. `go run ./cmd/api`):",
        &format!("sh -c \"oops{ENTER}"),
    );
    // Refused, the text stays: Ctrl-U clears it all, then a word too many goes with Ctrl-W.
    s.answer(
        "unbalanced quote",
        &format!("{CTRL_U}go run ./cmd/api extra{CTRL_W}{ENTER}"),
    );
    s.answer("Add mirrord-up options?", ENTER);
    s.answer("Add another service?", ENTER);
    s.answer("Save configuration to a file?", ENTER);
    s.answer("Enter filename:", ENTER);
    s.expect("Wrote mirrord-up.yaml.");
    let (status, transcript) = s.finish();
    assert!(status.success(), "{status}\n{transcript}");
    let written = std::fs::read_to_string(dir.path().join("mirrord-up.yaml")).unwrap();
    assert_eq!(
        written,
        "services:\n  api:\n    default_mode: split\n    skip: false\n    run:\n      type: exec\n      command: [\"go\", \"run\", \"./cmd/api\"]\n"
    );
}

#[test]
fn ctrl_c_writes_nothing_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &["init"], ALL_TTY);
    s.answer("Use the mirrord operator?", "\x03");
    s.expect("No file written.");
    let (status, transcript) = s.finish();
    assert_eq!(status.code(), Some(130), "{transcript}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
