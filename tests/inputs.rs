//! Issue 15, items 3, 4, 5 and 11: every odd number, name and template is refused with a clear
//! error (exit 1, or clap's 2 for usage), never a panic; hostile templates are bounded in time
//! and memory and cannot take a running supervisor down; `ps` shows extreme state values sanely.
//!
//! Each case is named; a failing case prints its name, its exit code and its output.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{Out, Project, wait_until};

/// Runs `args` on `project` and checks the outcome: the exit code, no panic, the expected text.
fn refused(p: &Project, case: &str, args: &[&str], env: &[(&str, &str)], code: i32, want: &str) {
    let mut cmd = p.command(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = common::Running::start(cmd, format!("{case}: mirrord-up {}", args.join(" "))).wait();
    check(case, &out, code, want);
}

fn check(case: &str, out: &Out, code: i32, want: &str) {
    assert!(
        !out.stderr.contains("panicked") && !out.stdout.contains("panicked"),
        "{case}: panicked\n{out}"
    );
    assert_eq!(out.code, Some(code), "{case}: exit code\n{out}");
    assert!(
        out.stderr.contains(want),
        "{case}: stderr lacks `{want}`\n{out}"
    );
}

fn one_service(extra: &str) -> String {
    format!("services:\n  api:\n    target: none\n{extra}    run: {{command: [x]}}\n")
}

// ---------------------------------------------------------------------------------------------
// #15.4 and #15.5: numbers and names in mirrord-up.yaml

#[test]
fn odd_numbers_and_names_in_the_file_are_refused_by_check() {
    let p = Project::new("oddfile");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "ready.timeout u64::MAX",
            one_service("    ready: {log: up, timeout: 18446744073709551615}\n"),
            "services.api.ready.timeout: invalid value: integer `18446744073709551615`, expected a duration from 0 to 24 h",
        ),
        (
            "stop_timeout that wrapped to 384 ms",
            one_service("    stop_timeout: 18446744073709552\n"),
            "services.api.stop_timeout: invalid value: integer `18446744073709552`",
        ),
        (
            "stop_timeout 1e300",
            one_service("    stop_timeout: 1e300\n"),
            "services.api.stop_timeout",
        ),
        (
            "stop_timeout .inf",
            one_service("    stop_timeout: .inf\n"),
            "services.api.stop_timeout",
        ),
        (
            "stop_timeout .nan",
            one_service("    stop_timeout: .nan\n"),
            "services.api.stop_timeout",
        ),
        (
            "stop_timeout 86401",
            one_service("    stop_timeout: 86401\n"),
            "from 0 to 24 h",
        ),
        (
            "stop_timeout 1000000h",
            one_service("    stop_timeout: 1000000h\n"),
            "from 0 to 24 h",
        ),
        (
            "stop_timeout -1",
            one_service("    stop_timeout: -1\n"),
            "services.api.stop_timeout",
        ),
        (
            "ready.timeout 0",
            one_service("    ready:\n      timeout: 0\n"),
            "services.api.ready.timeout: must be more than 0",
        ),
        (
            "ignore_ports 0",
            one_service("    ignore_ports: [0]\n"),
            "expected a port from 1 to 65535",
        ),
        (
            "ignore_ports 65536",
            one_service("    ignore_ports: [65536]\n"),
            "expected a port from 1 to 65535",
        ),
        (
            "ignore_ports -1",
            one_service("    ignore_ports: [-1]\n"),
            "expected a port from 1 to 65535",
        ),
        (
            "ready.tcp 0",
            one_service("    ready: {tcp: 0}\n"),
            "services.api.ready.tcp: invalid value: integer `0`, expected a port from 1 to 65535",
        ),
        (
            "http_filter.ports 0",
            one_service("    http_filter: {path_filter: x, ports: 0}\n"),
            "services.api.http_filter.ports",
        ),
        (
            "max_restarts -1",
            one_service("    max_restarts: -1\n"),
            "services.api.max_restarts",
        ),
        (
            "max_restarts 2^32",
            one_service("    max_restarts: 4294967296\n"),
            "services.api.max_restarts",
        ),
        (
            "name ..",
            "services:\n  ..:\n    run: {command: [x]}\n".into(),
            "invalid service name `..`",
        ),
        (
            "name ../../x",
            "services:\n  ../../x:\n    run: {command: [x]}\n".into(),
            "invalid service name `../../x`",
        ),
        (
            "name a/b next to a_b",
            "services:\n  a_b:\n    run: {command: [x]}\n  a/b:\n    run: {command: [y]}\n".into(),
            "invalid service name `a/b`",
        ),
        (
            "name with a newline",
            "services:\n  \"a\\nb\":\n    run: {command: [x]}\n".into(),
            "invalid service name `a\\nb`",
        ),
        (
            "name with an escape sequence",
            "services:\n  \"a\\e[2J\":\n    run: {command: [x]}\n".into(),
            "invalid service name `a\\u{1b}[2J`",
        ),
        (
            "empty name",
            "services:\n  \"\":\n    run: {command: [x]}\n".into(),
            "a service name must not be empty",
        ),
        (
            "name of 64 characters",
            format!(
                "services:\n  {}:\n    run: {{command: [x]}}\n",
                "x".repeat(64)
            ),
            "is 64 characters long",
        ),
        (
            "name with a space",
            "services:\n  \"a b\":\n    run: {command: [x]}\n".into(),
            "invalid service name `a b`",
        ),
        (
            "unicode name",
            "services:\n  café:\n    run: {command: [x]}\n".into(),
            "invalid service name `café`",
        ),
    ];
    for (case, text, want) in cases {
        p.write_yaml(&text);
        let out = p.run(&["check"]);
        check(case, &out, 1, want);
        assert!(
            out.stderr.contains(&p.yaml.display().to_string()),
            "{case}: the error does not name the file\n{out}"
        );
        assert!(
            !out.stderr.contains('\u{1b}'),
            "{case}: an escape sequence reached the terminal\n{out}"
        );
    }
}

#[test]
fn huge_files_and_lines_are_bounded() {
    let p = Project::new("huge");
    // A 10 MB `command` list: refused by size before it is parsed (it took 657 MB).
    let mut text = String::from("services:\n  api:\n    target: none\n    run: {command: [");
    text.push_str(&"a,".repeat(5 << 20));
    text.push_str("a]}\n");
    p.write_yaml(&text);
    let out = p.run(&["check"]);
    check(
        "10 MB command list",
        &out,
        1,
        "more than the 1048576 bytes (1 MiB)",
    );

    // A 900 kB value on one line in a wrong place: the error shows an excerpt, not the line.
    let long = "y".repeat(900_000);
    p.write_yaml(&one_service(&format!("    stop_signal: \"{long}\"\n")));
    let out = p.run(&["check"]);
    check("900 kB bad value", &out, 1, "services.api.stop_signal");
    assert!(
        out.stderr.len() < 8192,
        "900 kB bad value: the error is {} bytes long",
        out.stderr.len()
    );

    // An env_file that never ends (a FIFO would block; /dev/zero is endless): refused by size.
    p.write_yaml(&one_service("    env_file: /dev/zero\n"));
    let out = p.run(&["check"]);
    check("endless env_file", &out, 1, "more than the 1048576 bytes");
}

// ---------------------------------------------------------------------------------------------
// #15.11: numbers on the command line and in the environment

#[test]
fn odd_numbers_on_the_command_line_are_refused() {
    let p = Project::new("oddcli");
    p.write_yaml(&one_service(""));
    let range = "from 0 to 86400";
    let usage: &[(&str, &[&str], &str)] = &[
        ("down -t=-1", &["down", "-t=-1"], range),
        ("down -t inf", &["down", "-t", "inf"], range),
        ("down -t NaN", &["down", "-t", "NaN"], range),
        ("down -t 1e300", &["down", "-t", "1e300"], range),
        ("down -t 86401", &["down", "-t", "86401"], range),
        ("down -t abc", &["down", "-t", "abc"], "is not a number"),
        (
            "restart -t 1e300",
            &["restart", "api", "-t", "1e300"],
            range,
        ),
        ("stop -t=-0.5", &["stop", "api", "-t=-0.5"], range),
        ("ci stop -t inf", &["ci", "stop", "-t", "inf"], range),
        (
            "up --wait-timeout 1e300",
            &["up", "-d", "--wait", "--wait-timeout", "1e300"],
            range,
        ),
        (
            "up --wait-timeout -1",
            &["up", "-d", "--wait-timeout=-1"],
            range,
        ),
        ("logs -n -1", &["logs", "-n=-1"], "invalid value"),
        (
            "logs -n 2^70",
            &["logs", "-n", "1180591620717411303424"],
            "invalid value",
        ),
    ];
    for (case, args, want) in usage {
        refused(&p, case, args, &[], 2, want);
    }
    let errors: &[(&str, &[&str], &str)] = &[
        (
            "ci start --wait-timeout 1e300",
            &["ci", "start", "--wait-timeout", "1e300", "--", "true"],
            range,
        ),
        (
            "ci start --wait-timeout -1",
            &["ci", "start", "--wait-timeout", "-1", "--", "true"],
            range,
        ),
        (
            "ci start --wait-timeout nan",
            &["ci", "start", "--wait-timeout", "nan", "--", "true"],
            range,
        ),
        (
            "ci start --name a/b",
            &["ci", "start", "--name", "a/b", "--", "true"],
            "invalid service name `a/b`",
        ),
        (
            "ci start --name ..",
            &["ci", "start", "--name", "..", "--", "true"],
            "invalid service name `..`",
        ),
        (
            "ci start --name with an escape",
            &["ci", "start", "--name", "x\u{1b}[2J", "--", "true"],
            "invalid service name `x\\u{1b}[2J`",
        ),
    ];
    for (case, args, want) in errors {
        refused(&p, case, args, &[], 1, want);
    }
    for value in ["inf", "-1", "NaN", "1e300", "abc", "86401"] {
        let case = format!("MIRRORD_UP_LOCK_TIMEOUT={value}");
        refused(
            &p,
            &case,
            &["down"],
            &[("MIRRORD_UP_LOCK_TIMEOUT", value)],
            1,
            "MIRRORD_UP_LOCK_TIMEOUT",
        );
    }
    for value in ["inf", "-1", "1e300", "abc"] {
        let case = format!("MIRRORD_UP_KUBE_TIMEOUT={value}");
        refused(
            &p,
            &case,
            &["config"],
            &[("MIRRORD_UP_KUBE_TIMEOUT", value)],
            1,
            "MIRRORD_UP_KUBE_TIMEOUT",
        );
    }
    // Nothing of the above started anything.
    assert!(!p.state_file().exists() || p.ps().is_empty());
}

// ---------------------------------------------------------------------------------------------
// #15.11: extreme values in the state file

/// The released example state, with `edit` applied to every service record.
fn example_state(p: &Project, edit: impl Fn(&mut Value)) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("state/v1.example.json"),
    )
    .expect("state example");
    let mut state: Value = serde_json::from_str(&text).expect("example is JSON");
    state["project"] = p.name.clone().into();
    for rec in state["services"]
        .as_object_mut()
        .expect("services")
        .values_mut()
    {
        edit(rec);
    }
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&p.state_dir)
        .expect("state dir");
    std::fs::write(p.state_file(), serde_json::to_vec(&state).unwrap()).expect("write state");
}

/// A change to one state record.
type Edit = Box<dyn Fn(&mut Value)>;

#[test]
fn ps_shows_extreme_state_values_sanely() {
    let p = Project::new("oddstate");
    let cases: Vec<(&str, Edit)> = vec![
        (
            "started_at_ms u64::MAX",
            Box::new(|r| r["started_at_ms"] = u64::MAX.into()),
        ),
        (
            "started_at_ms in the year 9999+",
            Box::new(|r| r["started_at_ms"] = 253_402_300_800_000u64.into()),
        ),
        (
            "started_at_ms 0",
            Box::new(|r| r["started_at_ms"] = 0.into()),
        ),
        (
            "backoff until u64::MAX",
            Box::new(|r| {
                r["status"] = "backoff".into();
                r["backoff_until_ms"] = u64::MAX.into();
            }),
        ),
        (
            "restarts u32::MAX",
            Box::new(|r| r["restarts"] = u32::MAX.into()),
        ),
        (
            "crash_streak u32::MAX",
            Box::new(|r| r["crash_streak"] = u32::MAX.into()),
        ),
        (
            "log_offset u64::MAX",
            Box::new(|r| r["log_offset"] = u64::MAX.into()),
        ),
        (
            "exit code i32::MIN, at u64::MAX",
            Box::new(|r| {
                r["status"] = "exited".into();
                r["last_exit"] =
                    serde_json::json!({"code": i32::MIN, "signal": null, "at_ms": u64::MAX});
            }),
        ),
        (
            "signal name with an escape sequence",
            Box::new(|r| {
                r["status"] = "exited".into();
                r["last_exit"] =
                    serde_json::json!({"code": null, "signal": "\u{1b}[2J\n", "at_ms": 0});
                r["last_reason"] = "\u{1b}]0;title\u{7}".into();
            }),
        ),
        (
            "config_hash of one multibyte character",
            Box::new(|r| r["config_hash"] = "ééééééééé".into()),
        ),
        (
            "config_hash empty",
            Box::new(|r| r["config_hash"] = "".into()),
        ),
    ];
    for (case, edit) in cases {
        example_state(&p, edit);
        for args in [&["ps"][..], &["ps", "--format", "json"], &["ci", "ps"]] {
            let out = p.run(args);
            let case = format!("{case}, {}", args.join(" "));
            check(&case, &out, 0, "");
            assert!(
                !out.stdout.contains('\u{1b}'),
                "{case}: an escape sequence reached the terminal\n{out}"
            );
        }
    }
    // A name that no file could hold (older states, hand edits): escaped in the table.
    example_state(&p, |_| {});
    let mut state = p.state_value().expect("state");
    let services = state["services"].as_object_mut().unwrap();
    let api = services.remove("api").unwrap();
    services.insert("a\u{1b}[2J\nb".into(), api);
    p.write_state(&state);
    let out = p.run(&["ps"]);
    check("name with an escape sequence in the state", &out, 0, "");
    assert!(
        out.stdout.contains("a\\u{1b}[2J\\nb"),
        "the name is not escaped\n{out}"
    );
    assert!(!out.stdout.contains('\u{1b}'), "{out}");
    // The project's clean-up runs `down --force`: leave it nothing recorded to act on.
    std::fs::remove_file(p.state_file()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// #15.3: hostile templates

/// The three hostile templates of the issue (a recursive macro, an unbounded `range`, three
/// nested loops), each a whole file, with what `check` must say.
fn hostile() -> Vec<(&'static str, String, &'static str)> {
    let file = |head: &str| {
        format!(
            "{head}\nservices:\n  api:\n    target: none\n    run: {{command: [sleep, \"1000\"]}}\n"
        )
    };
    vec![
        (
            "recursive macro",
            file("{% macro f(n) %}{{ self::f(n=n+1) }}{% endmacro f %}{{ self::f(n=1) }}"),
            "template rendering exceeded the stack limit",
        ),
        (
            "unbounded range",
            file("{% for i in range(end=100000000000) %}{% endfor %}"),
            "template rendering exceeded the memory limit",
        ),
        (
            "three nested loops",
            file(
                "{% for a in range(end=100000) %}{% for b in range(end=100000) %}{% for c in range(end=1000) %}{% endfor %}{% endfor %}{% endfor %}",
            ),
            "template rendering exceeded 2 s",
        ),
    ]
}

#[test]
fn hostile_templates_are_bounded_in_check() {
    let p = Project::new("hostile");
    for (case, text, want) in hostile() {
        p.write_yaml(&text);
        let started = Instant::now();
        let out = p.run(&["check"]);
        let took = started.elapsed();
        check(case, &out, 1, want);
        assert!(
            out.stderr.contains(&p.yaml.display().to_string()),
            "{case}: no file\n{out}"
        );
        assert!(
            took < Duration::from_secs(20),
            "{case}: check took {took:?}"
        );
    }
    // A template without tags is never handed to Tera (the fast path), and a good one renders.
    p.write_yaml(&one_service("    env: {override: {K: \"{{ key }}\"}}\n"));
    let out = p.ok(&["config", "api"]);
    assert!(out.stdout.contains("\"K\": \"tester\""), "{out}");
}

#[test]
fn hostile_templates_cannot_take_the_supervisor_down() {
    let mut p = Project::new("hostilesup");
    p.globals = vec!["--launcher".into(), "local".into()];
    let good = "services:\n  api:\n    target: none\n    run: {command: [sleep, \"1000\"]}\n";
    p.write_yaml(good);
    p.ok(&["up", "-d"]);
    let before = p.pids();
    let api = before["api"];
    for (case, text, want) in hostile() {
        p.write_yaml(&text);
        wait_until(
            &format!("{case}: ps shows the reload error"),
            Duration::from_secs(60),
            || p.run(&["ps"]).stderr.contains(want),
        );
        let ps = p.run(&["ps"]);
        assert!(
            ps.stderr.contains("supervisor: pid"),
            "{case}: the supervisor is gone\n{ps}"
        );
        assert_eq!(p.pids()["api"], api, "{case}: the service was touched");
        // Back to the good file: the error clears (the supervisor still answers).
        p.write_yaml(good);
        wait_until(
            &format!("{case}: the error clears"),
            Duration::from_secs(60),
            || !p.run(&["ps"]).stderr.contains("last reload failed"),
        );
    }
    let started = Instant::now();
    p.ok(&["down"]);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!common::alive(api), "down left the service running");
}
