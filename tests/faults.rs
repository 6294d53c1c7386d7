//! Faults on the stop path: a crash between spawn and record, state records that point at the
//! wrong process group, a corrupt state under a running supervisor, and processes that leave
//! their service's group (a daemonising service; mirrord's intproxy double-forks and calls
//! `setsid`). Every check is "nothing of the project is left" = no live process carries the
//! project's `MIRRORD_UP_STATE` marker and no supervisor carries its `MIRRORD_UP_SUPERVISOR`.
//!
//! Services use the local launcher (`sleep`, `sh`) where mirrord is not the point, so each of
//! the randomized trials stays cheap.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Project, Running, SLEEP, alive, environ, live_processes, service, stat, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// A service that daemonises: `setsid` puts a `sleep` in a session of its own (out of the
/// service's group), the service itself keeps running.
const DAEMONISING: &[&str] = &["sh", "-c", "setsid sleep 1000 & exec sleep 1000"];

fn local(name: &str) -> Project {
    let mut p = Project::new(name);
    p.globals = vec!["--launcher".into(), "local".into()];
    p
}

/// `mirrord-up ARGS` with `TMPDIR` inside the test's own directory (where `ci start` writes).
fn command(p: &Project, args: &[&str]) -> Command {
    let mut cmd = p.command(args);
    cmd.env("TMPDIR", &p.dir);
    cmd
}

fn run(p: &Project, args: &[&str], env: &[(&str, &str)]) -> common::Out {
    let mut cmd = command(p, args);
    cmd.envs(env.iter().copied());
    Running::start(cmd, format!("mirrord-up {}", args.join(" "))).wait()
}

/// Live supervisors of the project, found by their marker.
fn supervisors(p: &Project) -> Vec<i32> {
    let want = p.state_dir.to_string_lossy().into_owned();
    live_processes()
        .into_iter()
        .filter(|s| environ(s.pid).is_some_and(|e| e.get("MIRRORD_UP_SUPERVISOR") == Some(&want)))
        .filter(|s| alive(s.pid))
        .map(|s| s.pid)
        .collect()
}

/// Kills the project's supervisors (by PID, found by their marker) when a test fails early.
struct SupervisorGuard<'a>(&'a Project);

impl Drop for SupervisorGuard<'_> {
    fn drop(&mut self) {
        for pid in supervisors(self.0) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// PIDs of every live process of the project (markers), and of its supervisors.
fn leftovers(p: &Project) -> Vec<i32> {
    let mut left: Vec<i32> = p.marked().iter().map(|(s, _)| s.pid).collect();
    left.extend(supervisors(p));
    left
}

fn assert_nothing_left(p: &Project, after: &str) {
    let left = leftovers(p);
    let described: Vec<String> = left
        .iter()
        .map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            format!(
                "{pid} {:?}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            )
        })
        .collect();
    assert!(
        left.is_empty(),
        "processes of the project survived {after}: {described:?}"
    );
}

/// Marked processes that are not a recorded service leader: what left the group.
fn escaped(p: &Project) -> Vec<(i32, u64)> {
    let recorded: BTreeSet<i32> = p.pids().into_values().collect();
    p.marked()
        .into_iter()
        .filter(|(s, _)| s.pid == s.session && !recorded.contains(&s.pid))
        .map(|(s, _)| (s.pid, s.start_time))
        .collect()
}

/// The pid `ci ps` shows for a session.
fn ci_pid(p: &Project, name: &str) -> i32 {
    let out = run(p, &["ci", "ps", "--format", "json"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    let rows: Vec<Value> = serde_json::from_str(&out.stdout).expect("ci ps json");
    let row = rows
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no session {name}: {out}"));
    let pid = row["pid"].as_i64().expect("pid") as i32;
    p.remember_pgid(pid);
    pid
}

/// The very process (pid and start time) still runs.
fn same_alive(pid: i32, start: u64) -> bool {
    stat(pid).is_some_and(|s| !s.zombie() && s.start_time == start)
}

// ---------------------------------------------------------------------------------------------
// Randomized crash-then-down trials

/// xorshift64*: enough for picking counts and crash points; the seed is printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy)]
enum Crash {
    /// `up -d` whose supervisor dies right after its first spawn (test hook), then `down`.
    UpHook,
    /// `ci start --up` dying right after its first spawn, then `down`.
    CiUpHook,
    /// `ci start` dying between spawn and record, then `ci stop`.
    CiStartHook,
    /// `up -d`, then SIGKILL to the supervisor once K services run (K random), then `down`.
    KillSupervisor,
    /// Through the fake mirrord with an intproxy per session: `up -d` whose supervisor dies
    /// right after its first spawn, then `down` once that session's intproxy runs.
    UpHookIntproxy,
}

#[test]
fn crash_then_down_leaves_no_orphan_over_randomized_trials() {
    let trials: usize = std::env::var("FAULTS_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(50);
    let seed = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("faults: {trials} trials, FAULTS_SEED={seed}");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let (mut orphans_before, mut left_after) = (0usize, 0usize);
    let mut by_kind = std::collections::BTreeMap::<String, usize>::new();
    for trial in 0..trials {
        let kind = match rng.below(5) {
            0 => Crash::UpHook,
            1 => Crash::CiUpHook,
            2 => Crash::CiStartHook,
            3 => Crash::KillSupervisor,
            _ => Crash::UpHookIntproxy,
        };
        *by_kind.entry(format!("{kind:?}")).or_default() += 1;
        let n = 1 + rng.below(5) as usize;
        let p = match kind {
            Crash::UpHookIntproxy => Project::new(&format!("t{trial}")),
            _ => local(&format!("t{trial}")),
        };
        let _guard = SupervisorGuard(&p);
        let services: Vec<String> = (0..n)
            .map(|i| {
                let cmd = if rng.below(3) == 0 {
                    DAEMONISING
                } else {
                    SLEEP
                };
                service(&format!("s{i}"), cmd, &[])
            })
            .collect();
        p.write_yaml(&common::yaml(&services));
        let crash = [("MIRRORD_UP_TEST_CRASH_AFTER_SPAWN", "1")];
        let what = format!("trial {trial} ({kind:?}, {n} services, seed {seed})");
        let stop = match kind {
            Crash::UpHook => {
                let out = run(&p, &["up", "--detach"], &crash);
                assert_ne!(out.code, Some(0), "{what}: {out}");
                vec!["down", "-t", "2"]
            }
            Crash::CiUpHook => {
                let out = run(&p, &["ci", "start", "--up"], &crash);
                assert_eq!(out.code, Some(99), "{what}: {out}");
                vec!["down", "-t", "2"]
            }
            Crash::CiStartHook => {
                let cmd = if rng.below(2) == 0 {
                    DAEMONISING
                } else {
                    SLEEP
                };
                let mut args = vec!["ci", "start", "--"];
                args.extend_from_slice(cmd);
                let out = run(&p, &args, &crash);
                assert_eq!(out.code, Some(99), "{what}: {out}");
                vec!["ci", "stop", "-t", "2"]
            }
            Crash::UpHookIntproxy => {
                let out = run(&p, &["up", "--detach"], &[crash[0], INTPROXY]);
                assert_ne!(out.code, Some(0), "{what}: {out}");
                wait_until(&format!("{what}: the intproxy runs"), WAIT, || {
                    intproxy_count(&p) >= 1
                });
                vec!["down", "-t", "2"]
            }
            Crash::KillSupervisor => {
                let k = 1 + rng.below(n as u64) as usize;
                let up = Running::start(command(&p, &["up", "--detach"]), what.clone());
                wait_until(&format!("{what}: {k} services run"), WAIT, || {
                    p.marked().iter().filter(|(s, _)| s.pid == s.pgrp).count() >= k
                });
                for pid in supervisors(&p) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                // The client either finished before the kill or reports the lost supervisor.
                let _ = up.wait();
                vec!["down", "-t", "2"]
            }
        };
        if !matches!(kind, Crash::KillSupervisor) {
            // A process in the middle of an `exec` (the daemonising `sh` execs `sleep`, its
            // child execs `setsid` then `sleep`) shows an empty environ for that instant, so
            // the check waits for the markers to be readable rather than sampling once.
            wait_until(
                &format!("{what}: the crash left something to find"),
                WAIT,
                || !p.marked().is_empty(),
            );
        }
        let before = p.marked().len();
        orphans_before += before;
        let out = run(&p, &stop, &[]);
        assert_eq!(out.code, Some(0), "{what}: {out}");
        let left = leftovers(&p);
        left_after += left.len();
        assert_nothing_left(&p, &format!("`{}` in {what}", stop.join(" ")));
    }
    eprintln!(
        "faults: {trials} trials {by_kind:?} in {:?}: {orphans_before} processes found after the crashes, {left_after} left after down/ci stop",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Records that point at the wrong group

/// A `sleep` in the test's own process group: it must survive everything below.
struct Bystander(Child);

impl Bystander {
    fn start() -> Bystander {
        let child = Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn bystander");
        Bystander(child)
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn edit_state(p: &Project, edit: impl FnOnce(&mut Value)) {
    let mut v = p.state_value().expect("state");
    edit(&mut v);
    p.write_state(&v);
}

#[test]
fn records_with_group_0_1_or_our_own_are_refused_without_signalling() {
    let bystander = Bystander::start();
    let me = std::process::id() as i32;
    let my_group = nix::unistd::getpgrp().as_raw();
    assert_eq!(stat(bystander.pid()).expect("bystander").pgrp, my_group);
    let by_start = stat(bystander.pid()).expect("bystander").start_time;
    let my_start = stat(me).expect("me").start_time;
    // (pid, pgid, start_time) to write into the record; None = keep the real value.
    let cases: Vec<(&str, Option<i32>, i32, Option<u64>)> = vec![
        ("pgid-0", None, 0, None),
        ("pgid-1", None, 1, None),
        ("pid-1", Some(1), 1, None),
        (
            "bystander-in-our-group",
            Some(bystander.pid()),
            my_group,
            Some(by_start),
        ),
        ("our-own-pid", Some(me), my_group, Some(my_start)),
        ("real-pid-our-group", None, my_group, None),
    ];
    for (label, pid, pgid, start) in cases {
        let p = local(&format!("bad-{label}"));
        let out = run(
            &p,
            &["ci", "start", "--name", "svc", "--", "sleep", "1000"],
            &[],
        );
        assert_eq!(out.code, Some(0), "{label}: {out}");
        let real = ci_pid(&p, "svc");
        edit_state(&p, |v| {
            let rec = &mut v["services"]["svc"]["process"];
            if let Some(pid) = pid {
                rec["pid"] = pid.into();
            }
            rec["pgid"] = pgid.into();
            if let Some(start) = start {
                rec["start_time"] = start.into();
            }
        });
        let out = run(&p, &["down", "-t", "2"], &[]);
        assert_eq!(
            out.code,
            Some(1),
            "{label}: the bad record is reported: {out}"
        );
        assert!(out.stderr.contains("not signalled"), "{label}: {out}");
        assert!(
            alive(bystander.pid()),
            "{label}: the bystander in our group was signalled"
        );
        // The real session is still found by its spawn nonce and stopped.
        assert!(!alive(real), "{label}: the real session survived");
        assert_nothing_left(&p, &format!("down with a {label} record"));
    }
}

#[test]
fn a_forged_supervisor_record_is_not_signalled() {
    let bystander = Bystander::start();
    let by_start = stat(bystander.pid()).expect("bystander").start_time;
    let p = local("forged-sup");
    let out = run(
        &p,
        &["ci", "start", "--name", "svc", "--", "sleep", "1000"],
        &[],
    );
    assert_eq!(out.code, Some(0), "{out}");
    edit_state(&p, |v| {
        let boot = v["services"]["svc"]["process"]["boot_id"].clone();
        v["supervisor"] = serde_json::json!({
            "process": {"pid": bystander.pid(), "pgid": bystander.pid(), "start_time": by_start, "boot_id": boot},
            "socket": p.dir.join("no-such.sock"),
            "started_at_ms": 1,
        });
    });
    let out = run(&p, &["down", "-t", "2"], &[]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("not signalled"), "{out}");
    assert!(alive(bystander.pid()), "the bystander was signalled: {out}");
    assert_nothing_left(&p, "down with a forged supervisor record");
}

#[test]
fn a_bad_record_under_a_running_supervisor_signals_no_stranger() {
    let bystander = Bystander::start();
    let by_start = stat(bystander.pid()).expect("bystander").start_time;
    let my_group = nix::unistd::getpgrp().as_raw();
    let p = local("bad-supervised");
    let _guard = SupervisorGuard(&p);
    p.write_yaml(&common::yaml(&[service("svc", SLEEP, &[])]));
    let out = run(&p, &["up", "--detach"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    let real = p.pids()["svc"];
    edit_state(&p, |v| {
        let rec = &mut v["services"]["svc"]["process"];
        rec["pid"] = bystander.pid().into();
        rec["pgid"] = my_group.into();
        rec["start_time"] = by_start.into();
    });
    // The supervisor stops what the state says; `down` then sweeps by markers.
    let out = run(&p, &["down", "-t", "2"], &[]);
    assert!(alive(bystander.pid()), "the bystander was signalled: {out}");
    assert!(!alive(real), "the real service survived: {out}");
    assert_nothing_left(&p, "down");
}

// ---------------------------------------------------------------------------------------------
// Corrupt state while a supervisor runs

#[test]
fn corrupt_state_with_a_running_supervisor_down_stops_everything() {
    let p = local("corrupt-sup");
    let _guard = SupervisorGuard(&p);
    p.write_yaml(&common::yaml(&[
        service("a", SLEEP, &[]),
        service("b", SLEEP, &[]),
        service("d", DAEMONISING, &[]),
    ]));
    let out = run(&p, &["up", "--detach"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    wait_until("the daemon left its group", WAIT, || {
        !escaped(&p).is_empty()
    });
    assert_eq!(supervisors(&p).len(), 1);
    let path = p.state_file();
    let whole = std::fs::read(&path).unwrap();
    std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();

    let out = run(&p, &["down", "-t", "2"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(!out.stdout.contains("nothing to stop"), "{out}");
    assert_nothing_left(&p, "down on a corrupt state");
}

// ---------------------------------------------------------------------------------------------
// Processes that leave the group

#[test]
fn a_daemonised_child_is_gone_after_down() {
    let p = local("daemon-down");
    p.write_yaml(&common::yaml(&[service("d", DAEMONISING, &[])]));
    let out = run(&p, &["up", "--detach", "--no-watch"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    wait_until("the daemon left its group", WAIT, || {
        !escaped(&p).is_empty()
    });
    let out = run(&p, &["down", "-t", "2"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("left its group"), "{out}");
    assert_nothing_left(&p, "down");
}

#[test]
fn a_daemonised_child_is_gone_after_a_restart_through_the_supervisor() {
    let p = local("daemon-restart");
    let _guard = SupervisorGuard(&p);
    p.write_yaml(&common::yaml(&[service("d", DAEMONISING, &[])]));
    let out = run(&p, &["up", "--detach"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    wait_until("the daemon left its group", WAIT, || {
        !escaped(&p).is_empty()
    });
    let old = escaped(&p);
    assert_eq!(supervisors(&p).len(), 1, "a supervisor runs");
    let out = run(&p, &["restart", "d", "-t", "2"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    for (pid, start) in &old {
        assert!(
            !same_alive(*pid, *start),
            "the old daemon {pid} survived the restart: {out}"
        );
    }
    wait_until("the new instance's daemon runs", WAIT, || {
        !escaped(&p).is_empty()
    });
    let out = run(&p, &["down", "-t", "2"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_nothing_left(&p, "down after restart");
}

#[test]
fn a_daemonised_child_is_gone_after_ci_stop() {
    let p = local("daemon-ci");
    let mut args = vec!["ci", "start", "--name", "d", "--"];
    args.extend_from_slice(DAEMONISING);
    let out = run(&p, &args, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    wait_until("the daemon left its group", WAIT, || {
        !escaped(&p).is_empty()
    });
    let out = run(&p, &["ci", "stop", "d", "-t", "2"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_nothing_left(&p, "ci stop d");
}

/// A start that fails after it left a process outside its group (as mirrord does when the
/// binary is not found: its intproxy is already running): the service writes the daemon's pid
/// to a file before it exits 3, so the daemon surely exists when the failure is seen.
fn failing_after_daemon(dir: &Path) -> Vec<String> {
    // `$!` is the daemon's final pid (`setsid` is no group leader here, so it execs `sleep`
    // without forking); the service writes it and exits at once, with no wait on the daemon,
    // so that it fails within `ci start`'s settling time even on a loaded machine.
    let script = format!(
        "setsid sleep 1000 & echo $! > {f}.tmp; mv {f}.tmp {f}; exit 3",
        f = dir.join("daemon.pid").display()
    );
    vec!["sh".into(), "-c".into(), script]
}

fn daemon_pid(dir: &Path) -> (i32, u64) {
    let text = std::fs::read_to_string(dir.join("daemon.pid")).expect("daemon.pid");
    let pid: i32 = text.trim().parse().expect("pid");
    (pid, stat(pid).map_or(0, |s| s.start_time))
}

#[test]
fn a_failed_ci_start_leaves_nothing_behind() {
    let p = local("fail-ci");
    let cmd = failing_after_daemon(&p.dir);
    let mut args = vec!["ci", "start", "--name", "f", "--"];
    args.extend(cmd.iter().map(String::as_str));
    let out = run(&p, &args, &[]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("exited right away"), "{out}");
    let (pid, _) = daemon_pid(&p.dir);
    assert!(
        !alive(pid),
        "the daemon of the failed start survived: {out}"
    );
    assert_nothing_left(&p, "a failed ci start");
}

#[test]
fn a_failed_supervised_start_leaves_nothing_behind() {
    let p = local("fail-up");
    let _guard = SupervisorGuard(&p);
    let cmd = failing_after_daemon(&p.dir);
    let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
    p.write_yaml(&common::yaml(&[service("f", &argv, &[])]));
    let _ = run(&p, &["up", "--detach"], &[]);
    wait_until("the daemon wrote its pid", WAIT, || {
        p.dir.join("daemon.pid").exists()
    });
    let (pid, start) = daemon_pid(&p.dir);
    // The supervisor sees the exit and stops what the instance left.
    wait_until("the daemon of the failed start is gone", WAIT, || {
        !same_alive(pid, start)
    });
    assert!(supervisors(&p).len() <= 1);
    let out = run(&p, &["down", "-t", "2"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_nothing_left(&p, "down");
}

// ---------------------------------------------------------------------------------------------
// mirrord's intproxy (the fake double-forks and calls `setsid` like the real one)

/// `(pid, start time)` of every intproxy the fake logged.
fn intproxies(p: &Project) -> Vec<(i32, u64)> {
    p.fake_log()
        .iter()
        .filter_map(|l| l["intproxy_pid"].as_i64())
        .map(|pid| {
            let pid = pid as i32;
            (pid, stat(pid).map_or(0, |s| s.start_time))
        })
        .collect()
}

fn intproxy_count(p: &Project) -> usize {
    p.fake_log()
        .iter()
        .filter(|l| l["intproxy_pid"].is_i64())
        .count()
}

/// A project launched through the fake mirrord with an intproxy per session.
fn with_intproxy(name: &str) -> Project {
    let p = Project::new(name);
    p.write_yaml(&common::yaml(&[service("api", SLEEP, &[])]));
    p
}

const INTPROXY: (&str, &str) = ("FAKE_MIRRORD_INTPROXY", "1");

fn assert_intproxies_gone(p: &Project, list: &[(i32, u64)], after: &str) {
    assert!(!list.is_empty(), "no intproxy was logged");
    for (pid, start) in list {
        assert!(
            !same_alive(*pid, *start),
            "the intproxy {pid} survived {after}"
        );
    }
    assert_nothing_left(p, after);
}

#[test]
fn the_intproxy_is_gone_after_down() {
    let p = with_intproxy("ip-down");
    let out = run(&p, &["up", "--detach", "--no-watch"], &[INTPROXY]);
    assert_eq!(out.code, Some(0), "{out}");
    wait_until("the intproxy runs", WAIT, || intproxy_count(&p) == 1);
    let list = intproxies(&p);
    assert!(list.iter().all(|(pid, _)| alive(*pid)), "{list:?}");
    let out = run(&p, &["down", "-t", "2"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_intproxies_gone(&p, &list, "down");
}

#[test]
fn the_intproxy_is_gone_after_ci_stop() {
    let p = with_intproxy("ip-ci");
    let out = run(
        &p,
        &["ci", "start", "--name", "s", "--", "sleep", "1000"],
        &[INTPROXY],
    );
    assert_eq!(out.code, Some(0), "{out}");
    wait_until("the intproxy runs", WAIT, || intproxy_count(&p) == 1);
    let list = intproxies(&p);
    let out = run(&p, &["ci", "stop", "s", "-t", "2"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_intproxies_gone(&p, &list, "ci stop");
}

#[test]
fn the_intproxy_is_gone_after_a_restart_through_the_supervisor() {
    let p = with_intproxy("ip-restart");
    let _guard = SupervisorGuard(&p);
    let out = run(&p, &["up", "--detach"], &[INTPROXY]);
    assert_eq!(out.code, Some(0), "{out}");
    wait_until("the intproxy runs", WAIT, || intproxy_count(&p) == 1);
    let old = intproxies(&p);
    let out = run(&p, &["restart", "api", "-t", "2"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    for (pid, start) in &old {
        assert!(
            !same_alive(*pid, *start),
            "the old intproxy {pid} survived the restart: {out}"
        );
    }
    wait_until("the new session's intproxy runs", WAIT, || {
        intproxy_count(&p) == 2
    });
    let all = intproxies(&p);
    let out = run(&p, &["down", "-t", "2"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_intproxies_gone(&p, &all, "down after a restart");
}

#[test]
fn the_intproxy_of_a_failed_ci_start_is_gone() {
    let p = with_intproxy("ip-fail-ci");
    let out = run(
        &p,
        &["ci", "start", "--name", "s", "--", "sleep", "1000"],
        &[("FAKE_MIRRORD_FAIL", "after-intproxy")],
    );
    assert_eq!(out.code, Some(1), "{out}");
    // The fake logs the intproxy before it fails, so it is known by now.
    let list = intproxies(&p);
    assert_intproxies_gone(&p, &list, "a failed ci start");
}

#[test]
fn the_intproxy_of_a_failed_supervised_start_is_gone() {
    let p = with_intproxy("ip-fail-up");
    let _guard = SupervisorGuard(&p);
    let _ = run(
        &p,
        &["up", "--detach"],
        &[("FAKE_MIRRORD_FAIL", "after-intproxy")],
    );
    wait_until("the intproxy was spawned", WAIT, || intproxy_count(&p) >= 1);
    let first = intproxies(&p)[0];
    // The supervisor sees the session exit and stops what it left.
    wait_until("the failed session's intproxy is gone", WAIT, || {
        !same_alive(first.0, first.1)
    });
    let out = run(&p, &["down", "-t", "2"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    let all = intproxies(&p);
    assert_intproxies_gone(&p, &all, "down after a failed start");
}
