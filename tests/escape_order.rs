//! When a stop looks for what left its groups: after every group has its signal (the groups do
//! not wait for the search), and still in time for each escaped process to be stopped as soon
//! as its own group is empty — not after every other group of the stop, a slow one included
//! (`process::stop_groups_killable`).

mod common;

use std::time::Duration;

use common::{Project, Running, alive, environ, service, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(10);

/// A `sleep` in a session of its own, child of the service's leader (which then becomes a
/// `sleep` too): when the leader ends, the escaped `sleep` is moved to the supervisor.
const DAEMONISING: &[&str] = &["sh", "-c", "setsid sleep 1000 & exec sleep 1000"];

/// Ignores SIGTERM (kept across `exec`): its stop takes its whole grace period.
const IGNORES_TERM: &[&str] = &["sh", "-c", "trap '' TERM; exec sleep 1000"];

fn local(name: &str) -> Project {
    let mut p = Project::new(name);
    p.globals = vec!["--launcher".into(), "local".into()];
    p
}

fn run(p: &Project, args: &[&str]) -> common::Out {
    Running::start(p.command(args), format!("mirrord-up {}", args.join(" "))).wait()
}

/// Kills the supervisor (by PID) and what the project runs when a test fails early.
struct Guard<'a>(&'a Project);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        for (s, _) in self.0.marked() {
            let _ = kill(Pid::from_raw(s.pid), Signal::SIGKILL);
        }
        if let Some(pid) = self.0.supervisor_pid()
            && environ(pid).is_some_and(|e| e.contains_key("MIRRORD_UP_SUPERVISOR"))
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// `down` through the supervisor: the escaped process of `d` is gone while `slow` still waits
/// out its grace period (6 s: it ignores SIGTERM): it was found and stopped with its own group, not
/// left for the search that follows every group's end. Everything is gone afterwards.
#[test]
fn an_escaped_process_is_stopped_with_its_group_not_after_a_slow_one() {
    let p = local("escape-order");
    let _guard = Guard(&p);
    p.write_yaml(&common::yaml(&[
        service("d", DAEMONISING, &["stop_timeout: 20"]),
        service("slow", IGNORES_TERM, &["stop_timeout: 6"]),
    ]));
    let out = run(&p, &["up", "--detach"]);
    assert_eq!(out.code, Some(0), "{out}");
    let pids = p.pids();
    let (leader, slow) = (pids["d"], pids["slow"]);
    let escaped = || -> Vec<i32> {
        p.marked()
            .into_iter()
            .filter(|(s, _)| s.pid == s.session && s.pid != leader && s.pid != slow)
            .map(|(s, _)| s.pid)
            .collect()
    };
    wait_until("the daemon left its group", WAIT, || escaped().len() == 1);
    let daemon = escaped()[0];
    assert!(p.supervisor_pid().is_some_and(alive), "a supervisor runs");

    let down = Running::start(p.command(&["down"]), "mirrord-up down".into());
    wait_until("the escaped daemon is gone", WAIT, || !alive(daemon));
    assert!(
        alive(slow),
        "the escaped daemon {daemon} was stopped only after the slow service's grace period"
    );
    let out = down.wait();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("left its group"), "{out}");
    let left: Vec<i32> = p.marked().into_iter().map(|(s, _)| s.pid).collect();
    assert!(left.is_empty(), "left after down: {left:?}: {out}");
}
