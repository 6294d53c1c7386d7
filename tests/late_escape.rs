//! A process that leaves its service's group while the group is being stopped (a `TERM`
//! trap that starts a `setsid` child, then exits). The supervisor is the services' parent and
//! their subreaper, so it looks for such processes among its own children after the stop
//! (`process::stop_groups_killable`: what a group leaves behind comes back to the subreaper
//! as its parent ends), not in all of `/proc`; nothing of the stopped instance may be left.

mod common;

use std::time::Duration;

use common::{Project, Running, alive, environ, service, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(10);

/// On SIGTERM, starts a `sleep` in a session of its own, then exits.
const ESCAPES_ON_TERM: &[&str] = &[
    "sh",
    "-c",
    "trap 'setsid sleep 1000 & exit 0' TERM; sleep 1000 & wait",
];

fn local(name: &str) -> Project {
    let mut p = Project::new(name);
    p.globals = vec!["--launcher".into(), "local".into()];
    p
}

fn run(p: &Project, args: &[&str]) -> common::Out {
    Running::start(p.command(args), format!("mirrord-up {}", args.join(" "))).wait()
}

/// The live processes carrying the spawn nonce `nonce`.
fn of_instance(p: &Project, nonce: &str) -> Vec<i32> {
    p.marked()
        .into_iter()
        .filter(|(_, env)| env.get("MIRRORD_UP_INSTANCE").map(String::as_str) == Some(nonce))
        .map(|(s, _)| s.pid)
        .collect()
}

/// Kills the supervisor (by PID) and what the project runs when a test fails early.
struct Guard<'a>(&'a Project);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        for (s, _) in self.0.marked() {
            let _ = kill(Pid::from_raw(s.pid), Signal::SIGKILL);
        }
        if let Some(state) = self.0.state_value()
            && let Some(pid) = state["supervisor"]["process"]["pid"].as_i64()
            && environ(pid as i32).is_some_and(|e| e.contains_key("MIRRORD_UP_SUPERVISOR"))
        {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

#[test]
fn what_leaves_the_group_during_its_stop_is_stopped_too() {
    let p = local("late-escape");
    let _guard = Guard(&p);
    p.write_yaml(&common::yaml(&[service("e", ESCAPES_ON_TERM, &[])]));
    let out = run(&p, &["up", "--detach"]);
    assert_eq!(out.code, Some(0), "{out}");
    let pid = p.pids()["e"];
    p.remember_pgid(pid);
    let nonce = environ(pid)
        .and_then(|e| e.get("MIRRORD_UP_INSTANCE").cloned())
        .expect("the service carries its nonce");
    // The shell and its `sleep` run (the trap is set before the `sleep` starts).
    wait_until("the service's sleep runs", WAIT, || {
        of_instance(&p, &nonce).len() == 2
    });
    assert!(
        alive(p.supervisor_pid().expect("a supervisor")),
        "a supervisor runs"
    );
    let out = run(&p, &["restart", "e", "-t", "5"]);
    assert_eq!(out.code, Some(0), "{out}");
    let left = of_instance(&p, &nonce);
    assert!(
        left.is_empty(),
        "the old instance left {left:?} behind after its restart: {out}"
    );
    assert!(
        out.stderr.contains("left its group"),
        "the escaped process is named: {out}"
    );
    let new = p.pids()["e"];
    assert_ne!(new, pid);
    p.remember_pgid(new);
    let out = run(&p, &["down", "-t", "5"]);
    assert_eq!(out.code, Some(0), "{out}");
    let left: Vec<i32> = p.marked().into_iter().map(|(s, _)| s.pid).collect();
    assert!(left.is_empty(), "left after down: {left:?}: {out}");
}
