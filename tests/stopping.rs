//! How foreground `up` ends (issue 11, items 5 and 6), on a terminal: Ctrl-C says it stops
//! gracefully and shows each stop; a second Ctrl-C's kills are the user's (and `ps` records
//! SIGKILL); a service that had already exited keeps its last exit; SIGHUP (the terminal went
//! away) stops everything and nothing stays `stopping`.

mod common;

use std::time::Duration;

use common::pty::{self, ALL_TTY, Session};
use common::{Project, group_empty, service, wait_until, yaml};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(20);

fn row(p: &Project, name: &str) -> serde_json::Value {
    p.ps_map().get(name).cloned().unwrap_or_default()
}

#[test]
fn ctrl_c_stops_gracefully_and_a_second_ctrl_c_is_reported_as_forced() {
    let p = Project::new("ctrlc");
    p.write_yaml(&yaml(&[
        service(
            "stubborn",
            &[
                "sh",
                "-c",
                "trap '' TERM; echo armed; while :; do sleep 1; done",
            ],
            &["stop_timeout: 120"],
        ),
        service("oneshot", &["sh", "-c", "exit 3"], &[]),
    ]));
    let mut up = Session::start(common::as_user(&p, &["up"]), ALL_TTY);
    up.expect("armed");
    wait_until("oneshot has exited", WAIT, || {
        row(&p, "oneshot")["status"] == "exited(3)"
    });
    let pid = row(&p, "stubborn")["pid"].as_i64().expect("stubborn runs") as i32;

    up.send("\x03");
    up.expect("Gracefully stopping… (press Ctrl-C again to force)");
    up.expect("stopping… (grace period 2m)");
    up.send("\x03");
    let (status, raw) = up.finish_raw();
    let text = pty::visible(&raw);
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(
        text.contains("killed (forced by a second Ctrl-C)"),
        "{text}"
    );
    assert!(!text.contains("after the grace period"), "{text}");
    assert!(group_empty(pid));

    let stubborn = row(&p, "stubborn");
    assert_eq!(stubborn["status"], "stopped", "{stubborn}");
    assert_eq!(stubborn["last_exit"]["signal"], "SIGKILL", "{stubborn}");
    // The service that had exited before Ctrl-C keeps its own end.
    let oneshot = row(&p, "oneshot");
    assert_eq!(oneshot["status"], "exited(3)", "{oneshot}");
    assert_eq!(oneshot["last_exit"]["code"], 3, "{oneshot}");
}

#[test]
fn sighup_ends_a_foreground_up_gracefully() {
    let p = Project::new("hangup");
    p.write_yaml(&yaml(&[
        service("one", common::SLEEP, &[]),
        service("two", common::SLEEP, &[]),
    ]));
    let mut up = Session::start(common::as_user(&p, &["up"]), ALL_TTY);
    wait_until("both run", WAIT, || {
        p.ps_map()
            .values()
            .filter(|r| r["status"] == "running")
            .count()
            == 2
    });
    let pids: Vec<i32> = p.pids().into_values().collect();
    up.expect("started");
    // What the terminal does when it goes away.
    kill(Pid::from_raw(up.pid()), Signal::SIGHUP).expect("SIGHUP");
    let (status, raw) = up.finish_raw();
    let text = pty::visible(&raw);
    assert_eq!(status.code(), Some(129), "{text}");
    assert!(pids.iter().all(|g| group_empty(*g)), "{text}");
    for (name, r) in p.ps_map() {
        assert_eq!(r["status"], "stopped", "{name}: {r}");
    }
}
