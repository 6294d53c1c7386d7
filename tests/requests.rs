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
