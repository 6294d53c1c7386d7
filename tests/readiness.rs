//! When a mirrord session counts as started, with the faithful fake mirrord (which, like the
//! real one, prints `Ready!` only in the `simple` and `json` progress modes, after
//! `FAKE_MIRRORD_READY_DELAY_MS`, and fails at the cluster step with mirrord's own report under
//! `FAKE_MIRRORD_FAIL=cluster`):
//!
//! * `up -d` returns only once every session said `Ready!`, and shows a live line meanwhile;
//! * it fails naming each failed service with the cause of mirrord's report (not its help),
//!   and `ps` (table and JSON) shows the same cause;
//! * foreground `up` exits once every service has ended (non-zero if one failed);
//! * a detached supervisor in that situation stays, says so, `ps` says it waits for the file,
//!   and a save brings the services back;
//! * `ci start` is ready within 300 ms of `Ready!`, keeps a user's `json` progress mode, fails
//!   with the cause, fails (non-zero) when `Ready!` does not come in time, and takes our global
//!   options written after `ci start` as ours.

mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::pty::{self, ALL_TTY, Session};
use common::{Project, Running, SLEEP, fake_mirrord, mirrord_up, service, wait_until, yaml};
use serde_json::Value;

const CAUSE: &str = "Failed to create Kubernetes API client";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

fn two_sleepers(p: &Project) {
    p.write_yaml(&yaml(&[
        service("api", SLEEP, &[]),
        service("web", SLEEP, &[]),
    ]));
}

/// `ready_ts_ms` of every `exec` of the fake (when it wrote `Ready!`).
fn ready_times(p: &Project) -> Vec<u64> {
    p.fake_log()
        .iter()
        .filter(|r| r["argv"][0] == "exec")
        .filter_map(|r| r["ready_ts_ms"].as_u64())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// up -d

#[test]
fn up_detach_returns_only_once_every_session_said_ready() {
    let p = Project::new("waitsready");
    two_sleepers(&p);
    let out = p
        .command(&["up", "-d"])
        .env("FAKE_MIRRORD_READY_DELAY_MS", "500")
        .output()
        .expect("run up -d");
    let returned = now_ms();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let ready = ready_times(&p);
    assert_eq!(ready.len(), 2, "{:?}", p.fake_log());
    // Before the change, `up -d` returned right after the spawns, ~500 ms before `Ready!`.
    for t in ready {
        assert!(
            returned >= t,
            "up -d returned {} ms before a session said Ready!",
            t - returned
        );
    }
    for s in ["api", "web"] {
        assert!(stderr.contains(&format!("{s}  started (pid ")), "{stderr}");
    }
    for (name, row) in p.ps_map() {
        assert_eq!(row["status"], "running", "{name}: {row}");
    }
}

#[test]
fn up_detach_shows_a_live_line_while_sessions_start() {
    let p = Project::new("livestart");
    p.write_yaml(&yaml(&[service("api", SLEEP, &[])]));
    let mut cmd = p.command(&["up", "-d"]);
    cmd.env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .env("FAKE_MIRRORD_READY_DELAY_MS", "700");
    let (status, raw) = Session::start(cmd, ALL_TTY).finish_raw();
    let text = pty::visible(&raw);
    assert_eq!(status.code(), Some(0), "{text}");
    let spinner = regex::Regex::new(
        r"api  [⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] starting \(waiting for mirrord's Ready!\) \(\d+\.\d s / 120 s\)",
    )
    .unwrap();
    assert!(
        spinner.is_match(&text),
        "no live `starting` line in:\n{text}"
    );
    let shown = pty::screen(&raw);
    assert!(shown[0].starts_with("api  ✔ started (pid "), "{shown:#?}");
}

#[test]
fn up_detach_names_each_failed_service_with_mirrords_cause() {
    let p = Project::new("failcause");
    two_sleepers(&p);
    let started = Instant::now();
    let out = p
        .command(&["up", "-d"])
        .env("FAKE_MIRRORD_FAIL", "cluster")
        .output()
        .expect("run up -d");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5), "{stderr}");
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    for s in ["api", "web"] {
        assert!(
            error.contains(&format!(
                "{s} failed to start: mirrord exited before Ready! (exit code 1): {CAUSE}: Failed to infer Kube config"
            )),
            "{error}"
        );
    }
    common::assert_no_mirrord_help(&stderr);

    // `ps`: the same cause, in the table and in JSON; the services failed, nothing runs.
    let rows = p.ps_map();
    for s in ["api", "web"] {
        let row = &rows[s];
        assert_eq!(row["status"], "failed", "{row}");
        assert_eq!(row["last_exit"]["code"], 1, "{row}");
        let reason = row["last_reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with(&format!(
                "mirrord exited before Ready! (exit code 1): {CAUSE}"
            )),
            "{row}"
        );
        common::assert_no_mirrord_help(reason);
    }
    let table = p.ok(&["ps", "--wide"]);
    assert!(
        table.stdout.lines().filter(|l| l.contains(CAUSE)).count() == 2,
        "{table}"
    );
    // The supervisor's log has the same cause.
    let log = std::fs::read_to_string(p.state_dir.join("supervisor.log")).unwrap_or_default();
    for s in ["api", "web"] {
        assert!(
            log.contains(&format!(
                " {s}  failed: mirrord exited before Ready!: {CAUSE}"
            )),
            "{log}"
        );
    }
    // The first pass failed and left nothing to look after: no supervisor stays.
    let sup = p.supervisor_pid();
    assert!(sup.is_none(), "a supervisor is still recorded: {sup:?}");
    assert!(p.marked().is_empty(), "{:?}", p.marked());
}

#[test]
fn a_session_failing_before_ready_is_still_restarted_by_its_policy() {
    let p = Project::new("failpolicy");
    p.write_yaml(&yaml(&[service("api", SLEEP, &["restart: on-failure"])]));
    let out = p
        .command(&["up", "-d"])
        .env("FAKE_MIRRORD_FAIL", "cluster")
        .output()
        .expect("run up -d");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "api failed to start: mirrord exited before Ready! (exit code 1): {CAUSE}"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("api  restarting in 1s (restart 1 in a row)"),
        "{stderr}"
    );
    // The supervisor stays for the back-off and tries again.
    let sup = p
        .supervisor_pid()
        .expect("a supervisor stays for the back-off");
    let mut row = Value::Null;
    wait_until(
        "a second attempt failed too and waits out its back-off",
        Duration::from_secs(30),
        || {
            row = p.ps_map()["api"].clone();
            row["restarts"].as_u64().unwrap_or(0) >= 2
                && row["status"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("backoff"))
        },
    );
    assert!(common::alive(sup));
    assert!(
        row["last_reason"]
            .as_str()
            .is_some_and(|r| r.contains(CAUSE)),
        "{row}"
    );
}

// ---------------------------------------------------------------------------------------------
// foreground up: every service ended

#[test]
fn foreground_up_exits_once_every_service_has_ended() {
    let p = Project::new("allended");
    p.write_yaml(&yaml(&[
        service("bad", &["sh", "-c", "exit 3"], &[]),
        service("good", &["true"], &[]),
    ]));
    // Before the change this waited forever (the harness gives up after a minute).
    let out = p.run(&["up", "--no-watch"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr
            .contains("mirrord-up  every service has ended; failed: bad; nothing is left to run"),
        "{out}"
    );

    p.write_yaml(&yaml(&[service("good", &["true"], &[])]));
    let out = p.run(&["up"]);
    assert_eq!(out.code, Some(0), "all ended cleanly: {out}");
}

// ---------------------------------------------------------------------------------------------
// the detached supervisor: every service ended

#[test]
fn a_detached_supervisor_stays_says_so_and_a_save_brings_the_services_back() {
    let p = Project::new("waitsfile");
    let failing = yaml(&[
        service("api", &["sh", "-c", "exit 3"], &[]),
        service("web", &["sh", "-c", "exit 4"], &[]),
    ]);
    p.write_yaml(&failing);
    // They start (each says Ready!), then the applications fail.
    p.ok(&["up", "-d"]);
    wait_until("both services have exited", Duration::from_secs(30), || {
        let rows = p.ps_map();
        ["api", "web"].iter().all(|s| {
            rows[*s]["status"]
                .as_str()
                .unwrap_or("")
                .starts_with("exited")
        })
    });
    let sup = p.supervisor_pid().expect("the supervisor is recorded");
    assert!(common::alive(sup), "the supervisor ended");
    let mut said = String::new();
    wait_until(
        "ps says the supervisor waits",
        Duration::from_secs(30),
        || {
            said = p.ok(&["ps"]).stderr;
            said.contains(&format!(
            "every service failed; the supervisor (pid {sup}) is waiting for a change to the file"
        ))
        },
    );
    let log = p.state_dir.join("supervisor.log");
    wait_until(
        "the supervisor log says so",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&log).is_ok_and(|t| {
            t.contains("mirrord-up  every service has ended; failed: api, web; waiting for a change to the file")
        })
        },
    );

    // A save that fixes them: the supervisor applies it.
    two_sleepers(&p);
    wait_until("both run again", Duration::from_secs(30), || {
        let rows = p.ps_map();
        ["api", "web"]
            .iter()
            .all(|s| rows[*s]["status"] == "running" && rows[*s]["pid"].is_i64())
    });
    assert!(!p.ok(&["ps"]).stderr.contains("waiting for a change"));
    assert_eq!(p.supervisor_pid(), Some(sup));
}

// ---------------------------------------------------------------------------------------------
// ci start

/// `mirrord-up --state-dir S --mirrord-bin FAKE ci start …` in the project's directory.
fn ci(p: &Project, args: &[&str]) -> Command {
    let mut cmd = mirrord_up();
    cmd.current_dir(&p.dir)
        .arg("--state-dir")
        .arg(&p.state_root)
        .arg("--mirrord-bin")
        .arg(fake_mirrord())
        .args(args)
        .env("FAKE_MIRRORD_LOG", &p.fake_log)
        .env("TMPDIR", &p.dir);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MIRRORD_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn run(cmd: Command, what: &str) -> common::Out {
    Running::start(cmd, what.to_owned()).wait()
}

#[test]
fn ci_start_is_ready_within_300_ms_of_ready() {
    let p = Project::new("cilatency");
    let mut cmd = ci(&p, &["ci", "start", "--name", "api", "--", "sleep", "1000"]);
    cmd.env("FAKE_MIRRORD_READY_DELAY_MS", "300");
    let out = run(cmd, "ci start");
    let returned = now_ms();
    assert_eq!(out.code, Some(0), "{out}");
    let log = p.fake_log();
    assert_eq!(log[0]["progress_mode"], "simple", "{log:?}");
    let ready = ready_times(&p)[0];
    assert!(returned >= ready, "returned before Ready!");
    let late = returned - ready;
    assert!(late < 300, "ci start returned {late} ms after Ready!");
    assert_eq!(run(ci(&p, &["ci", "stop"]), "ci stop").code, Some(0));
}

#[test]
fn ci_start_keeps_a_users_json_progress_mode_and_reads_its_ready() {
    let p = Project::new("cijson");
    let mut cmd = ci(&p, &["ci", "start", "--name", "api", "--", "sleep", "1000"]);
    cmd.env("MIRRORD_PROGRESS_MODE", "json");
    let started = Instant::now();
    let out = run(cmd, "ci start");
    assert_eq!(out.code, Some(0), "{out}");
    assert!(started.elapsed() < Duration::from_secs(30), "{out}");
    assert_eq!(p.fake_log()[0]["progress_mode"], "json");
    assert_eq!(run(ci(&p, &["ci", "stop"]), "ci stop").code, Some(0));
}

#[test]
fn ci_start_fails_with_mirrords_cause_and_ci_ps_keeps_it() {
    let p = Project::new("cicause");
    let mut cmd = ci(&p, &["ci", "start", "--name", "api", "--", "sleep", "1000"]);
    cmd.env("FAKE_MIRRORD_FAIL", "cluster");
    let out = run(cmd, "ci start");
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "session `api` failed before Ready! (exit code 1): {CAUSE}: Failed to infer Kube config"
        )),
        "{out}"
    );
    common::assert_no_mirrord_help(&out.stderr);
    let ps = run(ci(&p, &["ci", "ps", "--format", "json"]), "ci ps");
    let rows: Vec<Value> = serde_json::from_str(&ps.stdout).expect("json");
    assert!(
        rows[0]["last_reason"]
            .as_str()
            .is_some_and(|r| r.contains(CAUSE)),
        "{rows:?}"
    );
    assert_eq!(run(ci(&p, &["ci", "stop"]), "ci stop").code, Some(0));
    assert!(p.marked().is_empty());
}

#[test]
fn ci_start_fails_naming_the_session_when_ready_does_not_come_in_time() {
    let p = Project::new("citimeout");
    let mut cmd = ci(
        &p,
        &[
            "ci",
            "start",
            "--name",
            "slowpoke",
            "--wait-timeout",
            "0.5",
            "--",
            "sleep",
            "1000",
        ],
    );
    cmd.env("FAKE_MIRRORD_READY_DELAY_MS", "20000");
    let out = run(cmd, "ci start");
    // Before the change: exit 0 after the timeout.
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr
            .contains("session `slowpoke` not ready after 0.5s"),
        "{out}"
    );
    assert_eq!(
        run(ci(&p, &["ci", "stop", "-t", "1"]), "ci stop").code,
        Some(0)
    );
    assert!(p.marked().is_empty(), "{:?}", p.marked());
}

#[test]
fn global_options_after_ci_start_are_ours_not_mirrords() {
    let p = Project::new("ciglobals");
    let other_state = p.dir.join("elsewhere");
    let mut cmd = mirrord_up();
    cmd.current_dir(&p.dir)
        .args(["ci", "start", "--state-dir"])
        .arg(&other_state)
        .arg("--mirrord-bin")
        .arg(fake_mirrord())
        .args(["-p", "picked", "-t", "deployment/api", "--name", "g", "-q"])
        .args(["--", "sleep", "1000"])
        .env("FAKE_MIRRORD_LOG", &p.fake_log)
        .env("TMPDIR", &p.dir);
    let out = run(cmd, "ci start");
    assert_eq!(out.code, Some(0), "{out}");
    // mirrord got its own flag and the command, none of ours.
    let log = p.fake_log();
    assert_eq!(
        log[0]["argv"],
        serde_json::json!(["exec", "-t", "deployment/api", "--", "sleep", "1000"]),
        "{log:?}"
    );
    // Ours took effect: the state of project `picked` under the given state dir.
    let state: Value = serde_json::to_value(
        mirrord_up::state::read_in(&other_state.join("picked"))
            .expect("a readable state")
            .expect("state under --state-dir"),
    )
    .expect("json");
    let pid = state["services"]["g"]["process"]["pid"]
        .as_i64()
        .expect("pid") as i32;
    p.remember_pgid(pid);
    let mut stop = mirrord_up();
    stop.current_dir(&p.dir)
        .args(["ci", "stop", "-t", "1", "--state-dir"])
        .arg(&other_state)
        .args(["-p", "picked"]);
    assert_eq!(run(stop, "ci stop").code, Some(0));
    assert!(common::group_empty(pid));
}
