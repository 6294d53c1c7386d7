//! `logs` (issue 12, item 7): the supervisor's lifecycle lines among the services' lines,
//! `logs -f` that ends once nothing of the project can write, `--since`, and `--timestamps`
//! that stamps only what has a known time. Every test drives the binary against real
//! processes (the fake mirrord); waits end on a condition, never on a sleep.

#![allow(dead_code)]

mod common;

use std::time::{Duration, SystemTime};

use common::pty::{self, ALL_TTY, Session};
use common::{Live, Project, SLEEP, service, wait_until, yaml};

const WAIT: Duration = Duration::from_secs(20);

/// A service that prints `hello-$FOO` once, then sleeps.
fn greeter(value: &str) -> String {
    yaml(&[service(
        "api",
        &["sh", "-c", "echo hello-$FOO; exec sleep 1000"],
        &[&format!("env: {{override: {{FOO: {value}}}}}")],
    )])
}

fn log_has(p: &Project, service: &str, line: &str) -> bool {
    let log = p.state_dir.join("logs").join(format!("{service}.log"));
    std::fs::read_to_string(log).is_ok_and(|t| t.lines().any(|l| l == line))
}

fn index_of(lines: &[&str], what: impl Fn(&str) -> bool, out: &str) -> usize {
    lines
        .iter()
        .position(|l| what(l))
        .unwrap_or_else(|| panic!("no such line in:\n{out}"))
}

#[test]
fn lifecycle_lines_sit_between_the_lines_they_fell_between() {
    let p = Project::new("interleave");
    p.write_yaml(&greeter("one"));
    p.ok(&["up", "--detach"]);
    let pid = p.pids()["api"];
    wait_until("api printed hello-one", WAIT, || {
        log_has(&p, "api", "hello-one")
    });

    // A change to the file: the watching supervisor restarts api.
    p.write_yaml(&greeter("two"));
    wait_until("api printed hello-two", WAIT, || {
        log_has(&p, "api", "hello-two")
    });
    wait_until("the restart was recorded", WAIT, || {
        p.ok(&["logs"]).stdout.contains("config changed")
    });

    let out = p.ok(&["logs"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    // Each run's start leads its output (also the session's own lines while it started).
    assert!(
        lines[0].starts_with(&format!("api ▸ started (pid {pid}): new service")),
        "{out}"
    );
    let one = index_of(&lines, |l| l == "api | hello-one", &out.stdout);
    let two = index_of(&lines, |l| l == "api | hello-two", &out.stdout);
    // The stop and the new start sit between the two runs' lines, in that order.
    let between = &lines[one + 1..two];
    let stop = index_of(
        between,
        |l| l == "api ▸ stopped: config changed: env.override.FOO",
        &out.stdout,
    );
    let start = index_of(
        between,
        |l| l.starts_with("api ▸ started (pid ") && l.ends_with("config changed: env.override.FOO"),
        &out.stdout,
    );
    assert!(stop < start, "{out}");
    assert!(
        between[start + 1..].iter().all(|l| l.starts_with("api | ")),
        "{out}"
    );
    // Not on a terminal: no escape sequences.
    assert!(!out.stdout.contains('\x1b'), "{out}");
    // `--no-prefix`: the marker leads, then the service.
    let out = p.ok(&["logs", "--no-prefix"]);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("▸ api: started (pid")),
        "{out}"
    );
    assert!(out.stdout.lines().any(|l| l == "hello-one"), "{out}");
    // `-n 1`: the last line, and no event from before it.
    let out = p.ok(&["logs", "-n", "1"]);
    assert_eq!(out.stdout, "api | hello-two\n", "{out}");
}

#[test]
fn lifecycle_lines_are_dim_on_a_terminal_only() {
    let p = Project::new("dim");
    p.write_yaml(&greeter("one"));
    p.ok(&["up", "--detach"]);
    wait_until("api printed hello-one", WAIT, || {
        log_has(&p, "api", "hello-one")
    });
    let mut cmd = p.command(&["logs"]);
    cmd.env_remove("NO_COLOR");
    let (status, raw) = Session::start(cmd, ALL_TTY).finish_raw();
    assert!(status.success());
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let dim_line = raw
        .lines()
        .find(|l| l.contains("▸ started"))
        .unwrap_or_else(|| panic!("no lifecycle line:\n{raw}"));
    assert!(dim_line.starts_with("\x1b[2m"), "{dim_line:?}");
    let service_line = raw.lines().find(|l| l.contains("hello-one")).unwrap();
    assert!(!service_line.contains("\x1b[2m"), "{service_line:?}");
    assert!(
        pty::visible(raw.as_bytes()).contains("api ▸ started"),
        "{raw}"
    );

    // The same through a pipe, colours allowed: plain.
    let mut cmd = p.command(&["logs"]);
    cmd.env_remove("NO_COLOR");
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("api ▸ started") && !text.contains('\x1b'),
        "{text}"
    );
}

#[test]
fn follow_ends_when_the_project_has_nothing_left_that_can_write() {
    let p = Project::new("followend");
    p.write_yaml(&yaml(&[
        service("api", &["sh", "-c", "echo api-up; exec sleep 1000"], &[]),
        service("web", SLEEP, &[]),
    ]));
    p.ok(&["up", "--detach"]);
    wait_until("api printed api-up", WAIT, || log_has(&p, "api", "api-up"));

    let mut all = Live::start(&p, &["logs", "-f"]);
    let mut api = Live::start(&p, &["logs", "-f", "api"]);
    all.wait_for("api | api-up");
    api.wait_for("api | api-up");

    // api stops, the supervisor lives (it could start api again): both keep following, and
    // they see api come back.
    p.ok(&["stop", "api"]);
    api.wait_for("api ▸ stopped");
    p.ok(&["start", "api"]);
    api.wait_for_n("api | api-up", 2);
    all.wait_for_n("api | api-up", 2);
    assert!(api.running() && all.running());

    // `down`: services and supervisor gone, so both end by themselves, having printed the
    // last lifecycle lines.
    p.ok(&["down"]);
    assert_eq!(all.wait_exit(WAIT), Some(0), "{}", all.text());
    assert_eq!(api.wait_exit(WAIT), Some(0), "{}", api.text());
    assert!(
        all.text().contains("web ▸ stopped"),
        "{}\nevents:\n{}",
        all.text(),
        std::fs::read_to_string(p.state_dir.join("events.log")).unwrap_or_default()
    );
    assert!(!api.text().contains("web ▸"), "{}", api.text());

    // Nothing can write: `logs -f` prints what there is and returns at once.
    let out = p.ok(&["logs", "-f", "api"]);
    assert!(out.stdout.contains("api | api-up"), "{out}");
}

#[test]
fn follow_with_names_ends_when_they_and_the_supervisor_are_gone() {
    let p = Project::new("followkill");
    p.write_yaml(&greeter("one"));
    p.ok(&["up", "--detach"]);
    wait_until("api printed hello-one", WAIT, || {
        log_has(&p, "api", "hello-one")
    });
    let mut live = Live::start(&p, &["logs", "-f", "api"]);
    live.wait_for("api | hello-one");
    // The supervisor dies (SIGKILL: it records nothing); api still runs, so it follows on.
    let state = p.state_value().expect("state");
    let sup = state["supervisor"]["process"]["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("the supervisor is gone", WAIT, || !common::alive(sup));
    assert!(live.running(), "{}", live.text());
    // Then api ends by itself: nothing is left, `logs -f` ends.
    let api = p.pids()["api"];
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(api),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(live.wait_exit(WAIT), Some(0), "{}", live.text());
}

#[test]
fn reload_failure_and_recovery_are_shown_with_file_and_line() {
    let p = Project::new("reload");
    p.write_yaml(&greeter("one"));
    p.ok(&["up", "--detach"]);
    let mut live = Live::start(&p, &["logs", "-f"]);
    live.wait_for("api ▸ started");
    p.write_yaml("services:\n  api:\n    target: none\n    run: {command: [sh]\n");
    live.wait_for("mirrord-up ▸ reload failed");
    live.wait_for("mirrord-up.yaml:");
    let text = live.text();
    let failed = text
        .lines()
        .skip_while(|l| !l.contains("reload failed"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        failed.contains("mirrord-up.yaml:"),
        "no file:line in:\n{failed}"
    );
    // Every line of the multi-line message is a marked lifecycle line.
    assert!(
        failed.lines().all(|l| l.starts_with("mirrord-up ▸ ")),
        "{failed}"
    );
    p.write_yaml(&greeter("one"));
    live.wait_for("mirrord-up ▸ the file is valid again");
    // And a later `logs` shows both (project-wide events, whatever service is named).
    let out = p.ok(&["logs", "api"]);
    assert!(out.stdout.contains("mirrord-up ▸ reload failed"), "{out}");
    assert!(
        out.stdout.contains("mirrord-up ▸ the file is valid again"),
        "{out}"
    );
    p.ok(&["down"]);
    assert_eq!(live.wait_exit(WAIT), Some(0), "{}", live.text());
}

/// `2026-11-29T15:52:12.159Z ` at the start of `line`: its time.
fn stamp_of(line: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(line.get(..24)?).ok()
}

#[test]
fn timestamps_stamp_what_has_a_known_time_and_say_why_the_rest_has_none() {
    let p = Project::new("stamps");
    p.write_yaml(&greeter("one"));
    let before = SystemTime::now();
    p.ok(&["up", "--detach"]);
    wait_until("api printed hello-one", WAIT, || {
        log_has(&p, "api", "hello-one")
    });
    let after = SystemTime::now();
    let out = p.ok(&["logs", "--timestamps"]);
    let started = out
        .stdout
        .lines()
        .find(|l| l.contains("api ▸ started"))
        .unwrap_or_else(|| panic!("{out}"));
    let at = stamp_of(started).unwrap_or_else(|| panic!("no stamp on {started:?}"));
    // Millisecond precision: compare whole seconds around the run.
    assert!(
        at + Duration::from_secs(1) >= before && at <= after + Duration::from_secs(1),
        "{started}"
    );
    // An old service line: no invented time, a blank column instead, and the reason once.
    let hello = out
        .stdout
        .lines()
        .find(|l| l.ends_with("api | hello-one"))
        .unwrap();
    assert_eq!(hello, format!("{:25}api | hello-one", ""), "{out}");
    assert_eq!(
        out.stderr
            .matches("when an old service line was written is not known")
            .count(),
        1,
        "{out}"
    );

    // Followed, a line read live has the time it was read.
    let mut live = Live::start(&p, &["logs", "-f", "--timestamps"]);
    live.wait_for("api | hello-one");
    let t0 = SystemTime::now();
    p.write_yaml(&greeter("two"));
    live.wait_for("api | hello-two");
    p.ok(&["down"]);
    live.wait_exit(WAIT);
    let text = live.text();
    let two = text
        .lines()
        .find(|l| l.ends_with("api | hello-two"))
        .unwrap();
    let at = stamp_of(two).unwrap_or_else(|| panic!("no stamp on {two:?}"));
    assert!(at + Duration::from_secs(1) >= t0, "{two}");
}

#[test]
fn since_filters_by_time_where_the_time_is_known() {
    let p = Project::new("since");
    p.write_yaml(&greeter("one"));
    p.ok(&["up", "--detach"]);
    wait_until("api printed hello-one", WAIT, || {
        log_has(&p, "api", "hello-one")
    });
    // Everything of the last hour.
    let out = p.ok(&["logs", "--since", "1h"]);
    assert!(out.stdout.contains("api ▸ started"), "{out}");
    assert!(out.stdout.contains("api | hello-one"), "{out}");
    assert!(
        out.stderr.contains("old service lines carry no time"),
        "{out}"
    );

    // Two more runs, `mid` between them.
    p.write_yaml(&greeter("two"));
    wait_until("api printed hello-two", WAIT, || {
        log_has(&p, "api", "hello-two")
    });
    wait_until("the second start was recorded", WAIT, || {
        p.ok(&["logs"]).stdout.matches("▸ started").count() == 2
    });
    let mid = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    wait_until("the clock moved past the second run", WAIT, || {
        humantime::format_rfc3339_millis(SystemTime::now()).to_string() > mid
    });
    p.write_yaml(&greeter("three"));
    wait_until("api printed hello-three", WAIT, || {
        log_has(&p, "api", "hello-three")
    });
    wait_until("the third start was recorded", WAIT, || {
        p.ok(&["logs"]).stdout.matches("▸ started").count() == 3
    });
    let out = p.ok(&["logs", "--since", &mid]);
    // Events: by their time. Only the third run's stop and start are after `mid`.
    assert_eq!(out.stdout.matches("▸ stopped").count(), 1, "{out}");
    assert_eq!(out.stdout.matches("▸ started").count(), 1, "{out}");
    assert!(!out.stdout.contains("new service"), "{out}");
    // Service lines: from the last event at or before `mid` (the second start), since
    // when the second run's lines were written is not known; none of the first run's.
    assert!(!out.stdout.contains("hello-one"), "{out}");
    assert!(out.stdout.contains("api | hello-two"), "{out}");
    assert!(out.stdout.contains("api | hello-three"), "{out}");

    // A time after everything: nothing.
    let later =
        humantime::format_rfc3339(SystemTime::now() + Duration::from_secs(3600)).to_string();
    let out = p.ok(&["logs", "--since", &later]);
    assert_eq!(out.stdout, "", "{out}");

    // Not a time: refused, saying what is accepted.
    let out = p.run(&["logs", "--since", "yesterday-ish"]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("neither a duration"), "{out}");
}

#[test]
fn the_events_file_is_bounded_and_never_followed_through_a_symlink() {
    let p = Project::new("journal");
    p.write_yaml(&greeter("one"));
    p.ok(&["up", "--detach"]);
    let events = p.state_dir.join("events.log");
    wait_until("the start was recorded", WAIT, || {
        std::fs::read_to_string(&events).is_ok_and(|t| t.contains("started"))
    });
    // Past its cap (512 KiB), the next event rotates it to events.log.1.
    let old = std::fs::read_to_string(&events).unwrap();
    let filler = format!("{}\n", "x".repeat(1023)).repeat(520);
    std::fs::write(&events, format!("{old}{filler}")).unwrap();
    p.ok(&["restart", "api"]);
    let rotated = p.state_dir.join("events.log.1");
    assert!(rotated.exists(), "no rotation");
    let now = std::fs::metadata(&events).unwrap().len();
    assert!(now < 64 * 1024, "events.log is still {now} bytes");
    // Both generations are read (the junk lines are skipped).
    let out = p.ok(&["logs"]);
    assert!(
        out.stdout.contains("started (pid") && out.stdout.contains("new service"),
        "{out}"
    );
    assert!(out.stdout.contains("▸ stopped"), "{out}");
    assert!(!out.stdout.contains("xxxx"), "{out}");

    // A symlink in its place is neither written through nor read.
    let outside = p.state_root.join("outside.txt");
    std::fs::write(&outside, "untouched\n").unwrap();
    std::fs::remove_file(&events).unwrap();
    std::os::unix::fs::symlink(&outside, &events).unwrap();
    p.ok(&["restart", "api"]);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "untouched\n");
    let out = p.ok(&["logs"]);
    assert!(!out.stdout.contains("untouched"), "{out}");
}

#[test]
fn follow_without_names_picks_up_a_service_added_while_it_runs() {
    let p = Project::new("late");
    p.write_yaml(&greeter("one"));
    p.ok(&["up", "--detach"]);
    let mut live = Live::start(&p, &["logs", "-f"]);
    live.wait_for("api | hello-one");
    p.write_yaml(&format!(
        "{}{}",
        greeter("one"),
        service("late", &["sh", "-c", "echo late-up; exec sleep 1000"], &[])
    ));
    live.wait_for("late ▸ started (pid");
    live.wait_for("late | late-up");
    p.ok(&["down"]);
    assert_eq!(live.wait_exit(WAIT), Some(0), "{}", live.text());
    // Read back later, its start leads its output (followed live, the start is printed
    // when it happens: once the session said Ready!).
    let text = p.ok(&["logs", "late"]).stdout;
    assert!(
        text.lines().next().unwrap().starts_with("late ▸ started"),
        "{text}"
    );
}

#[test]
fn an_exit_with_its_cause_and_the_restart_follow_the_last_line_of_the_run() {
    let p = Project::new("crashes");
    p.write_yaml(&yaml(&[service(
        "flaky",
        &["sh", "-c", "echo going-down; exit 3"],
        &["restart: on-failure", "max_restarts: 1"],
    )]));
    p.ok(&["up", "--detach"]);
    wait_until("flaky gave up", WAIT, || {
        p.ok(&["logs"]).stdout.contains("giving up")
    });
    let out = p.ok(&["logs", "flaky"]);
    // Names are padded to the widest shown (`mirrord-up ▸ every service has ended…`).
    let mut text = out.stdout.clone();
    while text.contains("  ") {
        text = text.replace("  ", " ");
    }
    let lines: Vec<&str> = text.lines().collect();
    let first = index_of(&lines, |l| l == "flaky | going-down", &out.stdout);
    // Right after the run's last line: why it ended, and that a restart is scheduled.
    let restart = index_of(
        &lines,
        |l| l.starts_with("flaky ▸ ") && l.contains("restarting in"),
        &out.stdout,
    );
    assert!(restart > first, "{out}");
    assert!(
        lines[restart].contains('3'),
        "no exit status in {:?}",
        lines[restart]
    );
    assert!(
        lines[first + 1..restart]
            .iter()
            .all(|l| !l.starts_with("flaky | ")),
        "{out}"
    );
    // The second run gives up: its line, then the final lifecycle line.
    let last_run = lines
        .iter()
        .rposition(|l| *l == "flaky | going-down")
        .unwrap();
    assert!(last_run > restart, "{out}");
    let gave_up = index_of(&lines, |l| l.contains("giving up"), &out.stdout);
    assert!(gave_up > last_run, "{out}");
    assert!(lines[gave_up].starts_with("flaky ▸ failed:"), "{out}");
}
