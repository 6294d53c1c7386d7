//! `down` through the supervisor listening on the project's socket: the client skims the
//! state (the file check, the names' width) instead of parsing it, asks on the connection the
//! supervisor took, waits for its exit on a pidfd, and still sweeps the project's markers once
//! afterwards: a process carrying them that the supervisor never knew goes too.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Project, Running, alive, service, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(10);

fn local(name: &str) -> Project {
    let mut p = Project::new(name);
    p.globals = vec!["--launcher".into(), "local".into()];
    p
}

fn run(p: &Project, args: &[&str]) -> common::Out {
    Running::start(p.command(args), format!("mirrord-up {}", args.join(" "))).wait()
}

/// Runs `down`: it succeeds, and the supervisor `sup` and the `services` are gone when it
/// returns.
fn down_ends(p: &Project, sup: i32, services: &[i32]) -> common::Out {
    let out = run(p, &["down"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        !alive(sup),
        "the supervisor is gone when `down` returns: {out}"
    );
    for pid in services {
        assert!(!alive(*pid), "service pid {pid} alive after down: {out}");
    }
    out
}

/// Kills what the project runs (by PID) when a test fails early.
struct Guard<'a>(&'a Project, Vec<i32>);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        for (s, _) in self.0.marked() {
            let _ = kill(Pid::from_raw(s.pid), Signal::SIGKILL);
        }
        for pid in &self.1 {
            if alive(*pid) {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
        }
    }
}

#[test]
fn down_through_the_supervisor_still_stops_a_marked_process_it_never_knew() {
    let p = local("down-listener");
    p.write_yaml(&common::yaml(&[
        service("a", &["sleep", "1000"], &[]),
        service("b", &["sleep", "1000"], &[]),
    ]));
    let out = run(&p, &["up", "--detach"]);
    assert_eq!(out.code, Some(0), "{out}");
    let sup = p.supervisor_pid().expect("a supervisor");
    let services: Vec<i32> = p.pids().into_values().collect();
    assert_eq!(services.len(), 2, "{out}");
    // A leftover of the project (its markers, its own session) that is neither recorded nor
    // the supervisor's descendant: only the sweep after the supervisor's exit finds it.
    let dir = p.state_dir.clone();
    let mut ghost = Command::new("sleep");
    ghost
        .arg("1000")
        .env("MIRRORD_UP_STATE", &dir)
        .env("MIRRORD_UP_SERVICE", "ghost")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        ghost.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut ghost = ghost.spawn().expect("spawn the leftover");
    let ghost_pid = ghost.id() as i32;
    let guard = Guard(&p, vec![sup, ghost_pid]);
    wait_until("the leftover carries the markers", WAIT, || {
        p.marked().iter().any(|(s, _)| s.pid == ghost_pid)
    });

    let out = down_ends(&p, sup, &services);
    // Our child: collected here, so `alive` sees it gone rather than a zombie.
    let status = ghost.wait().expect("wait for the leftover");
    assert!(!status.success(), "the leftover was signalled: {status:?}");
    assert!(
        out.stderr.contains("ghost") && out.stderr.contains("found by its markers"),
        "the sweep says what it stopped: {out}"
    );
    assert!(
        p.marked().is_empty(),
        "nothing of the project is left: {out}"
    );
    drop(guard);
}

#[test]
fn down_asks_the_supervisor_on_its_socket_even_when_the_state_lost_its_record() {
    let p = local("down-listener-unrecorded");
    p.write_yaml(&common::yaml(&[service("a", &["sleep", "1000"], &[])]));
    let out = run(&p, &["up", "--detach"]);
    assert_eq!(out.code, Some(0), "{out}");
    let sup = p.supervisor_pid().expect("a supervisor");
    let services: Vec<i32> = p.pids().into_values().collect();
    let guard = Guard(&p, vec![sup]);
    // The state forgets its supervisor (an edit, an older build's save): the socket still
    // names the one that listens.
    let mut state = p.state_value().expect("a state");
    state.as_object_mut().unwrap().remove("supervisor");
    p.write_state(&state);

    let out = down_ends(&p, sup, &services);
    // Asked, not found by its marker and signalled: it stopped its services as a `down`.
    assert!(out.stderr.contains("down requested"), "{out}");
    assert!(!out.stderr.contains("found by its marker"), "{out}");
    assert!(
        p.marked().is_empty(),
        "nothing of the project is left: {out}"
    );
    drop(guard);
}

/// The watches of the supervisor's inotify instances (its files' directory, the logs'): how
/// many are in place now (`/proc/PID/fdinfo` lists each as an `inotify wd:` line).
fn inotify_watches(pid: i32) -> usize {
    inotify_instances(pid)
        .iter()
        .map(|fd| {
            let info = format!("/proc/{pid}/fdinfo/{fd}");
            std::fs::read_to_string(info).map_or(0, |t| {
                t.lines().filter(|l| l.starts_with("inotify wd:")).count()
            })
        })
        .sum()
}

/// The descriptors of the supervisor's inotify instances.
fn inotify_instances(pid: i32) -> Vec<String> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:inotify")
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Closing an inotify instance that watched something waits for the kernel (milliseconds),
/// and so does the exit of a process that still holds one with watches in place: the
/// supervisor removes its watches as soon as it takes a `down`, while its services stop, not
/// at its exit (the instance, empty, is let go by the exit: `KEPT_TO_EXIT`).
#[test]
fn down_lets_go_of_the_supervisors_file_watches_while_its_services_stop() {
    let p = local("down-listener-unwatch");
    p.write_yaml(&common::yaml(&[service(
        "slow",
        &["sh", "-c", "trap '' TERM; exec sleep 1000"],
        &["stop_timeout: 5"],
    )]));
    let out = run(&p, &["up", "--detach"]);
    assert_eq!(out.code, Some(0), "{out}");
    let sup = p.supervisor_pid().expect("a supervisor");
    let services: Vec<i32> = p.pids().into_values().collect();
    let guard = Guard(&p, vec![sup]);
    wait_until("the supervisor watches its files", WAIT, || {
        inotify_watches(sup) > 0
    });

    // The service ignores SIGTERM: the supervisor waits out its 5 s stop timeout.
    let down = Running::start(p.command(&["down"]), "mirrord-up down".into());
    wait_until(
        "the watches are let go, or the supervisor ended",
        WAIT,
        || inotify_watches(sup) == 0 || !alive(sup),
    );
    assert!(
        alive(sup),
        "the supervisor let go of its watches only at its exit"
    );
    // The instance itself, empty, stays until the exit: closed now, it would make the kernel
    // free the marks of the removed watches at once, side by side with the reaper of their
    // inodes, and the slower of the two grace periods then delayed the exit.
    assert!(
        !inotify_instances(sup).is_empty(),
        "the instance is kept until the exit"
    );
    let out = down.wait();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        !alive(sup),
        "the supervisor is gone when `down` returns: {out}"
    );
    for pid in &services {
        assert!(!alive(*pid), "service pid {pid} alive after down: {out}");
    }
    drop(guard);
}
