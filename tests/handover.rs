//! The fake mirrord behaves like the real one where a launcher can see it (runtime.md §1-§3),
//! and the launcher hands every service its configuration the way real `mirrord up` does.
//!
//! Where the real CLI (`../shared/mirrord/bin/mirrord`) is at hand, the fake's output is
//! compared with it byte for byte; under `CI=true` a missing real CLI fails those tests.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{fake_mirrord, stat, wait_until};
use serde_json::Value;

/// A mirrord (fake or real) with a clean environment: scratch HOME/TMPDIR, a missing
/// kubeconfig, no version check, no telemetry, plus `env`.
fn mirrord(bin: &Path, scratch: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", scratch)
        .env("TMPDIR", scratch)
        .env("KUBECONFIG", scratch.join("missing-kubeconfig"))
        .env("MIRRORD_CHECK_VERSION", "false")
        .env("MIRRORD_TELEMETRY", "false")
        .current_dir(scratch)
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run mirrord")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn scratch_with_config(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("c.json"), config).expect("write config");
    dir
}

#[test]
fn fake_prints_nothing_on_a_pipe_unless_told_simple_or_json() {
    let dir = scratch_with_config(r#"{"target":"targetless"}"#);
    let run = |mode: Option<&str>| {
        let env: Vec<(&str, &str)> = mode
            .map(|m| vec![("MIRRORD_PROGRESS_MODE", m)])
            .unwrap_or_default();
        let out = mirrord(
            fake_mirrord(),
            dir.path(),
            &env,
            &["exec", "-f", "c.json", "--", "true"],
        );
        assert!(out.status.success(), "{mode:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    for quiet in [None, Some("std"), Some("off"), Some("bogus")] {
        assert_eq!(run(quiet), "", "mode {quiet:?}");
    }
    let simple = run(Some("simple"));
    let lines: Vec<&str> = simple.lines().collect();
    assert_eq!(lines.first(), Some(&"mirrord exec (cli version 3.250.0)"));
    assert_eq!(lines.last(), Some(&"Ready!"), "{simple}");
    let session = lines
        .iter()
        .find_map(|l| l.strip_prefix("session ID: "))
        .expect("a session ID line");
    assert_eq!(session.len(), 36, "{session}");
    assert_eq!(&session[14..15], "4", "uuid v4: {session}");
    assert!(
        session
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(run(Some("dumb")).lines().last(), Some("Ready!"));

    let json = run(Some("json"));
    let last: Value = serde_json::from_str(json.lines().last().expect("lines")).expect("JSON");
    assert_eq!(
        last,
        serde_json::json!({"type":"FinishedTask","name":"running process","success":true,"message":"Ready!"})
    );
    let first: Value = serde_json::from_str(json.lines().next().expect("lines")).expect("JSON");
    assert_eq!(
        first,
        serde_json::json!({"type":"NewTask","name":"mirrord exec","parent":null})
    );
}

/// The failure the real CLI shows on every machine without a cluster: the fake's
/// `FAKE_MIRRORD_FAIL=cluster` gives the same stdout and stderr, byte for byte, in every mode.
#[test]
fn fake_cluster_failure_is_the_real_report() {
    let Some(real) = common::real_mirrord() else {
        return;
    };
    let dir = scratch_with_config(r#"{"target":"targetless"}"#);
    for mode in ["simple", "json", "std"] {
        let args = ["exec", "-f", "c.json", "--", "true"];
        let want = mirrord(&real, dir.path(), &[("MIRRORD_PROGRESS_MODE", mode)], &args);
        let got = mirrord(
            fake_mirrord(),
            dir.path(),
            &[
                ("MIRRORD_PROGRESS_MODE", mode),
                ("FAKE_MIRRORD_FAIL", "cluster"),
            ],
            &args,
        );
        assert_eq!(want.status.code(), Some(1), "real, {mode}");
        assert_eq!(got.status.code(), Some(1), "fake, {mode}");
        assert_eq!(text(&got.stdout), text(&want.stdout), "stdout, mode {mode}");
        assert_eq!(text(&got.stderr), text(&want.stderr), "stderr, mode {mode}");
    }
    // A nested run is refused the same way.
    let nested = [
        ("MIRRORD_PROGRESS_MODE", "simple"),
        ("MIRRORD_RESOLVED_CONFIG", "x"),
    ];
    let args = ["exec", "-f", "c.json", "--", "true"];
    let want = mirrord(&real, dir.path(), &nested, &args);
    let got = mirrord(fake_mirrord(), dir.path(), &nested, &args);
    assert_eq!(got.status.code(), want.status.code());
    assert_eq!(text(&got.stdout), text(&want.stdout));
    assert_eq!(text(&got.stderr), text(&want.stderr));
}

/// The fake's intproxy escapes the session like the real one: parent gone (reparented), its
/// own session and group, environment inherited.
#[test]
fn fake_intproxy_double_forks_and_setsids() {
    let dir = scratch_with_config(r#"{"target":"targetless"}"#);
    let log = dir.path().join("fake.log");
    let log_s = log.display().to_string();
    let out = mirrord(
        fake_mirrord(),
        dir.path(),
        &[
            ("FAKE_MIRRORD_LOG", &log_s),
            ("FAKE_MIRRORD_INTPROXY", "1"),
            ("FAKE_MIRRORD_INTPROXY_LINGER_MS", "60000"),
            ("MIRRORD_UP_SERVICE", "svc"),
        ],
        &["exec", "-f", "c.json", "--", "true"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let records: Vec<Value> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let proxy = records
        .iter()
        .find(|r| r.get("intproxy_pid").is_some())
        .expect("an intproxy record");
    let exec = records
        .iter()
        .find(|r| r.get("argv").is_some())
        .expect("exec record");
    let pid = proxy["intproxy_pid"].as_i64().expect("pid") as i32;
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _guard = Kill(pid);
    assert_eq!(proxy["service"], "svc");
    assert_eq!(proxy["sid"].as_i64(), Some(i64::from(pid)), "{proxy}");
    assert_eq!(proxy["pgid"].as_i64(), Some(i64::from(pid)), "{proxy}");
    assert_ne!(proxy["pgid"], exec["pgid"]);
    let proc_stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("alive");
    let ppid: i64 = proc_stat[proc_stat.rfind(')').expect("comm") + 1..]
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("ppid");
    assert_ne!(ppid, exec["pid"].as_i64().expect("pid"), "reparented");
    let env = common::environ(pid).expect("environ");
    assert_eq!(
        env.get("MIRRORD_UP_SERVICE").map(String::as_str),
        Some("svc")
    );
    // Gone once killed (by PID, as the launcher must do).
    drop(_guard);
    wait_until("the intproxy is gone", Duration::from_secs(10), || {
        stat(pid).is_none_or(|s| s.zombie())
    });
}

/// `MIRRORD_UP_RESOLVED_CONFIG` replaces resolution: `-f` and config variables are ignored;
/// without it, config variables override the file unless `MIRRORD_CLI_STRICT_ENV` is set.
#[test]
fn fake_honours_the_handover_and_strict_env() {
    let dir = scratch_with_config(r#"{"target":"targetless","key":"fromfile"}"#);
    let print = [
        "exec",
        "-f",
        "c.json",
        "--",
        "sh",
        "-c",
        "printf %s \"$MIRRORD_RESOLVED_CONFIG\"",
    ];
    let decode = |out: &Output| -> Value {
        assert!(out.status.success(), "{}", text(&out.stderr));
        let b64 = text(&out.stdout);
        let bytes = base64_decode(b64.trim());
        serde_json::from_slice(&bytes).expect("decoded JSON")
    };
    let leak = ("MIRRORD_AGENT_NAMESPACE", "leak");
    let file = decode(&mirrord(fake_mirrord(), dir.path(), &[leak], &print));
    assert_eq!(file["agent"]["namespace"], "leak");
    assert_eq!(file["key"], serde_json::json!({"Provided": "fromfile"}));
    let strict = decode(&mirrord(
        fake_mirrord(),
        dir.path(),
        &[leak, ("MIRRORD_CLI_STRICT_ENV", "true")],
        &print,
    ));
    assert!(strict.get("agent").is_none(), "{strict}");
    let handed = r#"{"target":{"path":"pod/x"},"key":{"Generated":"abcde"}}"#;
    let encoded = base64_encode(handed.as_bytes());
    let resolved = decode(&mirrord(
        fake_mirrord(),
        dir.path(),
        &[leak, ("MIRRORD_UP_RESOLVED_CONFIG", &encoded)],
        &print,
    ));
    assert_eq!(resolved, serde_json::from_str::<Value>(handed).unwrap());
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(B64[(n >> (18 - 6 * i)) as usize & 63])
            } else {
                '='
            });
        }
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let v = B64.iter().position(|&b| b == c).expect("base64 character") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Runs one service through `mirrord-up up -d` with the fake, with `shell` in the invoking
/// environment; returns the fake's exec record, the service's environment (from
/// `/proc/<pid>/environ`) and mirrord-up's stderr.
fn one_service(
    shell: &[(&str, &str)],
) -> (Value, std::collections::HashMap<String, String>, String) {
    let p = common::Project::new("handover");
    p.write_yaml(&common::yaml(&[common::service("svc", common::SLEEP, &[])]));
    let mut cmd = p.command(&["up", "-d"]);
    for (k, v) in shell {
        cmd.env(k, v);
    }
    let out = common::Running::start(cmd, "up -d".into()).wait();
    assert_eq!(out.code, Some(0), "{out}");
    let pid = p.pids()["svc"];
    wait_until("the fake logged the exec", Duration::from_secs(20), || {
        p.fake_log().iter().any(|r| r.get("argv").is_some())
    });
    let rec = p
        .fake_log()
        .into_iter()
        .find(|r| r.get("argv").is_some())
        .expect("exec record");
    let env = common::environ(pid).expect("service environment");
    p.ok(&["down"]);
    (rec, env, out.stderr)
}

/// Issue 10 item 2 and 3: behaviour variables of the shell reach the service, configuration
/// variables do not change its configuration, with the hand-over (mirrord 3.250.0).
#[test]
fn behaviour_variables_pass_and_configuration_variables_do_not_with_the_handover() {
    let shell = [
        ("MIRRORD_CI_API_KEY", "ci-key"),
        ("MIRRORD_CHECK_VERSION", "false"),
        ("MIRRORD_LOG", "warn"),
        ("MIRRORD_AGENT_NAMESPACE", "leak"),
        ("MIRRORD_TELEMETRY", "false"),
        ("MIRRORD_KEY", "shell-key"),
        ("MIRRORD_RESOLVED_CONFIG", "stale"),
        ("MIRRORD_SOMETHING_NEW", "x"),
    ];
    let (rec, env, stderr) = one_service(&shell);
    assert_eq!(rec["handover"], "resolved", "{rec}");
    assert_eq!(
        rec["argv"],
        serde_json::json!(["exec", "--", "sleep", "1000"])
    );
    assert_eq!(rec["agent_namespace"], Value::Null, "{rec}");
    assert_eq!(rec["telemetry"], Value::Null, "{rec}");
    assert_eq!(
        rec["key"],
        serde_json::json!({"Provided": "tester"}),
        "{rec}"
    );
    let seen = &rec["mirrord_env"];
    for (k, v) in [
        ("MIRRORD_CI_API_KEY", "ci-key"),
        ("MIRRORD_CHECK_VERSION", "false"),
        ("MIRRORD_LOG", "warn"),
        ("MIRRORD_PROGRESS_MODE", "simple"),
    ] {
        assert_eq!(seen[k], v, "{k} reaches mirrord: {rec}");
        if k != "MIRRORD_PROGRESS_MODE" {
            assert_eq!(
                env.get(k).map(String::as_str),
                Some(v),
                "{k} reaches the app"
            );
        }
    }
    for k in [
        "MIRRORD_AGENT_NAMESPACE",
        "MIRRORD_TELEMETRY",
        "MIRRORD_KEY",
        "MIRRORD_SOMETHING_NEW",
    ] {
        assert!(seen.get(k).is_none(), "{k} must not reach mirrord: {rec}");
        assert!(!env.contains_key(k), "{k} must not reach the app");
    }
    let correlation = seen["MIRRORD_UP_CORRELATION_ID"]
        .as_str()
        .expect("correlation id");
    assert_eq!(correlation.len(), 36, "{correlation}");
    // The app's MIRRORD_RESOLVED_CONFIG is the one the fake decoded, not the shell's.
    assert_ne!(
        env.get("MIRRORD_RESOLVED_CONFIG").map(String::as_str),
        Some("stale")
    );
    assert!(
        !stderr.contains("MIRRORD_CLI_STRICT_ENV"),
        "no fallback notice: {stderr}"
    );
}

/// The same with a mirrord version whose config shape is not verified: `-f` with strict env,
/// one line saying what is lost.
#[test]
fn an_unverified_version_falls_back_to_the_file_with_strict_env() {
    let shell = [
        ("FAKE_MIRRORD_VERSION", "9.9.9"),
        ("MIRRORD_CI_API_KEY", "ci-key"),
        ("MIRRORD_CHECK_VERSION", "false"),
        ("MIRRORD_AGENT_NAMESPACE", "leak"),
    ];
    let (rec, env, stderr) = one_service(&shell);
    assert_eq!(rec["handover"], "file", "{rec}");
    let argv: Vec<String> = serde_json::from_value(rec["argv"].clone()).expect("argv");
    assert_eq!(&argv[..2], ["exec", "-f"], "{argv:?}");
    assert_eq!(rec["agent_namespace"], Value::Null, "{rec}");
    let seen = &rec["mirrord_env"];
    assert_eq!(seen["MIRRORD_CLI_STRICT_ENV"], "true", "{rec}");
    assert_eq!(seen["MIRRORD_CI_API_KEY"], "ci-key");
    assert_eq!(seen["MIRRORD_CHECK_VERSION"], "false");
    assert!(seen.get("MIRRORD_AGENT_NAMESPACE").is_none(), "{rec}");
    assert_eq!(
        env.get("MIRRORD_CI_API_KEY").map(String::as_str),
        Some("ci-key")
    );
    let notices: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("automatic queue splitting is off"))
        .collect();
    assert_eq!(notices.len(), 1, "one line about the fallback: {stderr}");
    assert!(notices[0].contains("9.9.9"), "{stderr}");
}
