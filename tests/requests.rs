//! Issue 11, one request path: every front-end that changes what runs builds one request and
//! hands it to the supervisor when one runs (over its control socket), otherwise to the same
//! machine run in the command's own process (`request::submit`, `supervisor::oneshot`).

mod common;

use std::time::Duration;

use common::{Project, service, wait_until, yaml};

const WAIT: Duration = Duration::from_secs(20);

fn project(name: &str) -> Project {
    let mut p = Project::new(name);
    p.globals = vec!["--launcher".into(), "local".into()];
    p.write_yaml(&yaml(&[
        service("web", common::SLEEP, &[]),
        service("api", common::SLEEP, &[]),
    ]));
    p
}

fn supervisor_log(p: &Project) -> String {
    std::fs::read_to_string(p.state_dir.join("supervisor.log")).unwrap_or_default()
}

/// `ci start --up` while a supervisor runs is the supervisor's to apply (it then watches what
/// it started); it used to apply the file on its own, behind the supervisor's back.
#[test]
fn ci_start_up_goes_to_the_running_supervisor() {
    let p = project("reqci");
    p.ok(&["up", "-d", "web"]);
    let out = p.ok(&["ci", "start", "--up", "api"]);
    let pids = p.pids();
    let api = *pids.get("api").unwrap_or_else(|| panic!("api runs: {out}"));
    assert!(common::alive(api), "api runs: {out}");
    // The supervisor's own log says it started api (its passes log there).
    wait_until("the supervisor logs api's start", WAIT, || {
        supervisor_log(&p)
            .lines()
            .any(|l| l.contains("api") && l.contains(&format!("(pid {api})")))
    });
    p.ok(&["down", "-t", "1"]);
}

/// Without a supervisor, `restart|stop|start` and `ci start --up` are served in the command's
/// process, with the same answers as before (the machine's one-shot runner).
#[test]
fn one_shots_without_a_supervisor_answer_as_before() {
    let p = project("reqone");
    let up = p.ok(&["ci", "start", "--up"]);
    assert!(up.stdout.contains("started"), "{up}");
    let again = p.ok(&["ci", "start", "--up"]);
    assert!(again.stdout.contains("nothing to do"), "{again}");
    let before = p.pids();
    let stop = p.ok(&["stop", "web"]);
    assert!(stop.stdout.contains("1 stopped"), "{stop}");
    assert!(
        !p.pids().contains_key("web"),
        "web is stopped: {:?}",
        p.pids()
    );
    p.ok(&["start", "web"]);
    let restart = p.ok(&["restart", "api"]);
    let after = p.pids();
    assert_ne!(before["api"], after["api"], "api restarted: {restart}");
    assert!(after.contains_key("web"), "web started again: {after:?}");
    p.ok(&["down", "-t", "1"]);
}

/// Without a supervisor, `ci start --up --wait` waits outside the state lock (the one-shot
/// runner waits as the loop does): `down` meanwhile is not held up by it, and the waiting
/// command then says what happened to the service it waited for.
#[test]
fn down_is_not_held_up_by_a_one_shot_up_wait() {
    let p = Project::new("reqwait");
    let mut p = p;
    p.globals = vec!["--launcher".into(), "local".into()];
    p.write_yaml(&yaml(&[service(
        "db",
        &["sh", "-c", "echo db-first-line; exec sleep 1000"],
        &["ready: {log: will-never-appear}"],
    )]));
    let waiting = common::Running::start(
        p.command(&["ci", "start", "--up", "--wait", "--wait-timeout", "15"]),
        "ci start --up --wait".into(),
    );
    let db_log = p.state_dir.join("logs").join("db.log");
    wait_until("db writes its first line", WAIT, || {
        std::fs::read_to_string(&db_log).is_ok_and(|l| l.contains("db-first-line"))
    });
    let started = std::time::Instant::now();
    p.ok(&["down", "-t", "2"]);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "down waited {took:?} for the up --wait to end"
    );
    let out = waiting.wait();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("db"), "names db: {out}");
}

/// The one-shot `up --wait` answers once its services are recorded ready.
#[test]
fn a_one_shot_up_wait_returns_once_ready() {
    let mut p = Project::new("reqready");
    p.globals = vec!["--launcher".into(), "local".into()];
    p.write_yaml(&yaml(&[
        service(
            "db",
            &["sh", "-c", "sleep 0.3; echo db-is-ready; exec sleep 1000"],
            &["ready: {log: db-is-ready}"],
        ),
        service("web", common::SLEEP, &[]),
    ]));
    let out = p.ok(&["ci", "start", "--up", "--wait", "--wait-timeout", "15"]);
    let ps = p.ps_map();
    assert_eq!(ps["db"]["status"], "ready", "{out}\n{ps:?}");
    assert_eq!(ps["web"]["status"], "ready", "{out}\n{ps:?}");
    p.ok(&["down", "-t", "1"]);
}

/// A foreground `up --wait` still waits (now as the loop does): a service not ready within
/// `--wait-timeout` is reported as an error, and the foreground keeps running until Ctrl-C
/// (which says nothing more about the wait).
#[test]
fn a_foreground_up_wait_reports_who_is_not_ready_and_keeps_running() {
    let mut p = Project::new("reqfg");
    p.globals = vec!["--launcher".into(), "local".into()];
    p.write_yaml(&yaml(&[
        service("never", common::SLEEP, &["ready: {log: will-not-happen}"]),
        service("web", common::SLEEP, &[]),
    ]));
    let mut up = common::Live::start(&p, &["up", "--wait", "--wait-timeout", "1"]);
    up.wait_for("error: never failed to start: never not ready after 1s");
    assert!(
        up.running(),
        "the foreground up keeps running: {}",
        up.text()
    );
    assert!(!up.text().contains("web not ready"), "{}", up.text());
    up.signal(nix::sys::signal::Signal::SIGINT);
    assert_eq!(up.wait_exit(WAIT), Some(130), "{}", up.text());
    assert!(!up.text().contains("shutting down"), "{}", up.text());
}
