//! The terminal, driven through the real binary (`--launcher local`, real processes): service
//! colours handed out in order of first appearance (a five-service file whose names collided
//! under the old hash gets five colours), `ps` in 80 columns with its status words coloured on
//! a terminal and plain through a pipe or with `NO_COLOR`, `ps -q|--services|--status|--wide`,
//! the past-tense summary, the refusal of a foreground `up` naming the supervisor's log, a first
//! `up -d` that fails saying so once, and `plan` comparing with the launcher recorded.

mod common;

use std::collections::BTreeSet;

use common::pty::{self, ALL_TTY, Session};
use common::{Project, SLEEP, service, wait_until, yaml};
use regex::Regex;

const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The five names of the issue: `db`/`web` and `api`/`worker` had the same colour.
const FIVE: [&str; 5] = ["db", "web", "api", "worker", "cache"];

fn five_talkers(p: &Project) {
    let services: Vec<String> = FIVE
        .iter()
        .map(|n| {
            service(
                n,
                &["sh", "-c", &format!("echo hello from {n}; exec sleep 1000")],
                &[],
            )
        })
        .collect();
    p.write_yaml(&yaml(&services));
}

/// `name → colour code` of every `name |` prefix in `raw`.
fn prefix_colours(raw: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let re = Regex::new(r"\x1b\[(\d+)m([a-z]+) *\|\x1b\[0m").unwrap();
    let mut seen = Vec::new();
    for c in re.captures_iter(&text) {
        let pair = (c[2].to_owned(), c[1].to_owned());
        if !seen.contains(&pair) {
            seen.push(pair);
        }
    }
    seen
}

fn local(name: &str) -> Project {
    let mut p = Project::new(name);
    p.globals = vec!["--launcher".into(), "local".into()];
    p
}

#[test]
fn logs_colours_five_services_with_five_colours_in_order_of_first_appearance() {
    let p = local("colours");
    five_talkers(&p);
    p.ok(&["up", "--detach"]);
    wait_until("every service wrote its line", WAIT, || {
        let out = p.ok(&["logs"]);
        FIVE.iter()
            .all(|n| out.stdout.contains(&format!("hello from {n}")))
    });

    let (code, raw) = common::pty::on_terminal(common::as_user(&p, &["logs"]));
    assert_eq!(code, Some(0), "{}", pty::visible(&raw));
    let colours = prefix_colours(&raw);
    let names: BTreeSet<&str> = colours.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, FIVE.into_iter().collect(), "{colours:?}");
    let codes: BTreeSet<&str> = colours.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(codes.len(), 5, "two services share a colour: {colours:?}");
    // One colour per name, the palette's first five in the order the names appeared.
    assert_eq!(colours.len(), 5, "a name changed colour: {colours:?}");
    let order: Vec<&str> = colours.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(order, ["36", "33", "32", "35", "34"], "{colours:?}");
}

#[test]
fn foreground_up_colours_its_services_apart() {
    let p = local("fgcolours");
    five_talkers(&p);
    let mut s = Session::start(common::as_user(&p, &["up"]), ALL_TTY);
    // In the order they come.
    for _ in FIVE {
        s.expect("hello from ");
    }
    s.send("\x03");
    let (_, raw) = s.finish_raw();
    let colours = prefix_colours(&raw);
    let codes: BTreeSet<&str> = colours.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(colours.len(), 5, "{colours:?}");
    assert_eq!(codes.len(), 5, "two services share a colour: {colours:?}");
}

/// A long name, a long target with a namespace, a ready service, a failed one, a running one
/// that waits for the ready one.
fn ps_project(name: &str) -> Project {
    let p = local(name);
    let long_target = "    target: {path: deployment/a-deployment-with-a-rather-long-name/container/main-container, namespace: staging}\n    run: {command: [\"sleep\", \"1000\"]}\n";
    p.write_yaml(&format!(
        "{}  a-service-with-quite-a-long-name:\n{long_target}{}{}",
        yaml(&[service(
            "ready",
            &["sh", "-c", "echo up; exec sleep 1000"],
            &["ready: {log: up}"],
        )]),
        service("bad", &["./missing"], &[]),
        // Waiting on `ready` makes it checked (and shown) ready.
        service("plain", SLEEP, &["depends_on: {ready: {condition: ready}}"]),
    ));
    p
}

fn ps_ready(p: &Project) {
    p.run(&["up", "--detach"]);
    wait_until("ready is ready", WAIT, || {
        p.ps_map()["ready"]["status"] == "ready"
    });
}

#[test]
fn ps_fits_80_columns_and_colours_status_words_on_a_terminal() {
    let p = ps_project("psterm");
    ps_ready(&p);

    let (code, raw) = common::pty::on_terminal(common::as_user(&p, &["ps"]));
    let lines = pty::screen(&raw);
    assert_eq!(code, Some(0), "{lines:#?}");
    let header = lines
        .iter()
        .find(|l| l.starts_with("NAME"))
        .unwrap_or_else(|| panic!("no header: {lines:#?}"));
    let words: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        words,
        [
            "NAME", "STATUS", "PID", "UPTIME", "RESTARTS", "TARGET", "SESSION"
        ],
        "{lines:#?}"
    );
    for l in &lines {
        assert!(l.chars().count() <= 80, "wider than 80 columns: {l:?}");
    }
    let long = lines
        .iter()
        .find(|l| l.starts_with("a-service"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(long.contains('…'), "the long values are not cut: {long:?}");
    assert!(
        long.trim_end_matches(['–', ' ']).ends_with("(staging)"),
        "the namespace is kept: {long:?}"
    );
    // (The SESSION column, `–` for these local services, comes after TARGET.)
    let plain = lines.iter().find(|l| l.starts_with("plain")).unwrap();
    assert!(
        plain.trim_end_matches(['–', ' ']).ends_with("targetless"),
        "{plain:?}"
    );

    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains("\x1b[31mfailed"),
        "failed is not red: {text:?}"
    );
    assert!(
        text.contains("\x1b[32mready"),
        "ready is not green: {text:?}"
    );

    // Through a pipe, and on a terminal with NO_COLOR: not one escape code.
    let piped = p.ok(&["ps"]);
    assert!(!piped.stdout.contains('\x1b'), "{piped}");
    assert!(piped.stdout.contains("failed"), "{piped}");
    let mut cmd = common::as_user(&p, &["ps"]);
    cmd.env("NO_COLOR", "1");
    let (code, raw) = common::pty::on_terminal(cmd);
    assert_eq!(code, Some(0));
    assert!(!raw.windows(2).any(|w| w == b"\x1b["), "{raw:?}");
}

#[test]
fn ps_quiet_services_status_and_wide() {
    let p = ps_project("psopts");
    ps_ready(&p);
    let rows = p.ps_map();

    // -q: the PIDs of what runs, one a line.
    let out = p.ok(&["ps", "-q"]);
    let pids: BTreeSet<i64> = out.stdout.lines().map(|l| l.parse().unwrap()).collect();
    let running: BTreeSet<i64> = rows.values().filter_map(|r| r["pid"].as_i64()).collect();
    assert_eq!(pids, running, "{out}");
    assert_eq!(pids.len(), 3, "{out}");

    // --services: names only; --status filters (repeatable, or a comma list).
    let out = p.ok(&["ps", "--services"]);
    let names: BTreeSet<&str> = out.stdout.lines().collect();
    assert_eq!(names, rows.keys().map(String::as_str).collect(), "{out}");
    let out = p.ok(&["ps", "--services", "--status", "failed"]);
    assert_eq!(out.stdout, "bad\n", "{out}");
    let out = p.ok(&["ps", "--services", "--status", "failed,ready"]);
    assert_eq!(out.stdout, "bad\nready\n", "{out}");
    let out = p.ok(&[
        "ps",
        "--services",
        "--status",
        "failed",
        "--status",
        "ready",
    ]);
    assert_eq!(out.stdout, "bad\nready\n", "{out}");
    let out = p.ok(&["ps", "--format", "json", "--status", "running"]);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2, "{out}");
    let out = p.run(&["ps", "--status", "sleeping"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("unknown status `sleeping`"), "{out}");

    // --wide: today's columns too, nothing cut.
    let out = p.ok(&["ps", "--wide"]);
    let header = out.stdout.lines().next().unwrap();
    for col in ["TARGET", "HASH", "LAUNCHER", "LAST EXIT", "LAST REASON"] {
        assert!(header.contains(col), "{out}");
    }
    assert!(
        out.stdout.contains(
            "deployment/a-deployment-with-a-rather-long-name/container/main-container (staging)"
        ),
        "{out}"
    );
    assert!(!out.stdout.contains('…'), "{out}");

    // JSON keeps every field and adds the new ones.
    let row = &rows["ready"];
    for key in [
        "name",
        "kind",
        "status",
        "pid",
        "pgid",
        "uptime_s",
        "started_at",
        "restarts",
        "policy_restarts",
        "target",
        "last_exit",
        "last_reason",
        "config_hash",
        "launcher",
        "log",
    ] {
        assert!(row.get(key).is_some(), "no `{key}` in {row}");
    }
}

#[test]
fn summaries_are_in_the_past_tense() {
    let p = local("past");
    let file = |v: &str| {
        yaml(&[
            service("a", SLEEP, &[&format!("env: {{override: {{V: {v}}}}}")]),
            service("b", SLEEP, &[]),
        ])
    };
    p.write_yaml(&file("one"));
    let out = p.ok(&["up", "--detach", "--no-watch"]);
    assert_eq!(
        out.stdout.trim(),
        "2 started, 0 restarted, 0 stopped, 0 unchanged",
        "{out}"
    );
    p.write_yaml(&file("two"));
    let out = p.ok(&["up", "--detach"]);
    assert_eq!(
        out.stdout.trim(),
        "0 started, 1 restarted, 0 stopped, 1 unchanged",
        "{out}"
    );
    // `plan` still speaks of what it would do.
    p.write_yaml(&file("three"));
    let out = p.ok(&["plan"]);
    assert!(
        out.stdout
            .contains("0 to start, 1 to restart, 0 to stop, 1 unchanged"),
        "{out}"
    );
    // A foreground `up` next to the background supervisor names the supervisor's log.
    let out = p.run(&["up"]);
    assert_eq!(out.code, Some(1), "{out}");
    let log = p.state_dir.join("supervisor.log");
    assert!(
        out.stderr.contains(&log.display().to_string()),
        "no {}: {out}",
        log.display()
    );
    assert!(
        out.stderr.contains("logs -f") && out.stderr.contains("down"),
        "{out}"
    );
}

#[test]
fn a_first_up_detach_that_fails_says_so_once() {
    // The file loads, but the supervisor cannot resolve it: the target of `api` is to be
    // inferred, and there is no cluster to ask.
    let p = Project::new("firstfail");
    p.write_yaml(
        "services:\n  api:\n    target: {namespace: nowhere}\n    run: {command: [\"sleep\", \"1000\"]}\n",
    );
    let mut cmd = p.command(&["up", "--detach"]);
    cmd.env("KUBECONFIG", p.dir.join("no-kubeconfig"));
    let out = common::Running::start(cmd, "up --detach".into()).wait();
    assert_eq!(out.code, Some(1), "{out}");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(all.matches("nothing was started").count(), 1, "{out}");
    assert_eq!(all.matches("cannot infer the target").count(), 1, "{out}");
    assert!(!all.contains("keeps running as it is"), "{out}");
    // Nothing for `ps` to qualify as "kept their config".
    let ps = p.ok(&["ps"]);
    assert!(!ps.stderr.contains("last reload failed"), "{ps}");
}

#[test]
fn plan_compares_with_the_launcher_recorded_when_none_is_given() {
    let p = Project::new("launcher");
    p.write_yaml(&yaml(&[service("a", SLEEP, &[]), service("b", SLEEP, &[])]));
    p.ok(&["--launcher", "local", "up", "--detach"]);

    let out = p.ok(&["plan", "--detailed-exitcode"]);
    assert!(out.stdout.starts_with("nothing to do"), "{out}");
    let out = p.ok(&["up", "--dry-run"]);
    assert!(out.stdout.starts_with("nothing to do"), "{out}");
    // Through the supervisor, `up -d` without a launcher agrees.
    let out = p.ok(&["up", "--detach"]);
    assert!(out.stdout.starts_with("nothing to do"), "{out}");
    // Given explicitly, the other launcher is a change.
    let out = p.run(&["--launcher", "mirrord", "plan", "--detailed-exitcode"]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stdout.contains("0 to start, 2 to restart"), "{out}");
}
