//! Issue 11, "the lock is taken around each state change, not across waits", without a
//! supervisor: a one-shot `stop`/`restart` waits out a grace period as a wait of its own loop,
//! outside the state lock, and owns the stop meanwhile (its stop lock, `src/stop_owner.rs`):
//! other commands run, leave that stop alone, and wait for it when they need the service; a
//! stopper that died leaves an interrupted stop, which the next command finishes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Project, group_empty, service, wait_until, yaml};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(20);

/// How long a command that has nothing to wait for may take while a stop is in flight (the
/// old code: the stop's whole 30 s grace period, or the lock timeout).
const QUICK: Duration = Duration::from_millis(200);

/// `slow` ignores SIGTERM and has a 30 s grace period; `other` stops at once. Both started
/// without a supervisor (`ci start --up`), `other` then stopped.
fn project(name: &str) -> Project {
    let mut p = Project::new(name);
    p.globals = vec!["--launcher".into(), "local".into()];
    p.write_yaml(&yaml(&[
        service(
            "slow",
            &["sh", "-c", "trap '' TERM; while :; do sleep 1; done"],
            &["stop_timeout: 30"],
        ),
        service("other", common::SLEEP, &[]),
    ]));
    p.ok(&["ci", "start", "--up"]);
    p.ok(&["stop", "other"]);
    p
}

fn row(p: &Project, name: &str) -> serde_json::Value {
    p.ps_map().get(name).cloned().unwrap_or_default()
}

/// A command run in the background, its stderr in a file the test can read while it runs.
struct Background {
    child: Child,
    stderr: PathBuf,
}

impl Background {
    fn start(p: &Project, args: &[&str], stderr: &Path) -> Background {
        let file = std::fs::File::create(stderr).expect("stderr file");
        let child = p
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn mirrord-up");
        Background {
            child,
            stderr: stderr.to_owned(),
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for its end (bounded); its exit code.
    fn finish(&mut self) -> Option<i32> {
        wait_until("the background command ends", WAIT, || !self.running());
        self.child.wait().expect("wait").code()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Starts `stop slow` in the background and waits until `slow` is recorded `stopping`.
fn stop_slow_in_flight(p: &Project, dir: &Path) -> (Background, i32) {
    slow_stopping_by(p, &["stop", "slow"], dir)
}

/// Starts the command `args` (one that stops `slow`) in the background, its stderr in `dir`,
/// and waits until `slow` is recorded `stopping`; with slow's PID.
fn slow_stopping_by(p: &Project, args: &[&str], dir: &Path) -> (Background, i32) {
    let pid = row(p, "slow")["pid"].as_i64().expect("slow runs") as i32;
    p.remember_pgid(pid);
    let stopper = Background::start(p, args, &dir.join("stopper.err"));
    wait_until("slow is recorded stopping", WAIT, || {
        row(p, "slow")["status"] == "stopping"
    });
    (stopper, pid)
}

/// Kills slow's group (it ignores SIGTERM) and waits for `stopper`, which must succeed.
fn kill_slow_then_finish(pid: i32, stopper: &mut Background) {
    killpg(Pid::from_raw(pid), Signal::SIGKILL).expect("kill slow's group");
    assert_eq!(stopper.finish(), Some(0), "{}", stopper.stderr());
}

/// Without a supervisor, `stop slow` (a 30 s grace period, SIGTERM ignored) waits outside the
/// state lock: meanwhile `start other` and `ps` answer at once, and `ps` shows `slow` as
/// stopping. The old code held the lock for the whole grace period.
#[test]
fn a_one_shot_stop_waits_out_its_grace_period_outside_the_state_lock() {
    let p = project("osgrace");
    let tmp = tempfile::tempdir().unwrap();
    let (mut stop, pid) = stop_slow_in_flight(&p, tmp.path());

    let t = Instant::now();
    let start = p.run(&["start", "other"]);
    let took = t.elapsed();
    assert_eq!(start.code, Some(0), "{start}");
    assert!(
        took < QUICK,
        "`start other` took {took:?} during slow's stop"
    );
    let t = Instant::now();
    let slow = row(&p, "slow");
    let took = t.elapsed();
    assert!(took < QUICK, "`ps` took {took:?} during slow's stop");
    assert_eq!(slow["status"], "stopping", "{slow}");
    assert!(stop.running(), "the stop still waits: {}", stop.stderr());
    assert!(
        p.pids().contains_key("other"),
        "other started: {:?}",
        p.ps()
    );

    // slow ends (as if after its grace period): the stop records it.
    kill_slow_then_finish(pid, &mut stop);
    assert!(stop.stderr().contains("slow"), "{}", stop.stderr());
    assert_eq!(row(&p, "slow")["status"], "stopped");
    assert!(row(&p, "other")["pid"].as_i64().is_some());
}

/// While `stop slow` is in flight, `start slow` does not start a second `slow` nor take over
/// the stop: it says it waits for that stop (outside the lock: `start other` still answers at
/// once), then starts one once the stop is recorded. The old code's `start slow` waited for
/// the state lock instead (and held up every other command with it).
#[test]
fn a_start_during_a_one_shot_stop_waits_for_it_then_starts_one() {
    let p = project("osstart");
    let tmp = tempfile::tempdir().unwrap();
    let (mut stop, pid) = stop_slow_in_flight(&p, tmp.path());

    let mut start = Background::start(&p, &["start", "slow"], &tmp.path().join("start.err"));
    wait_until("start slow says it waits for the stop", WAIT, || {
        start.stderr().contains("waits for its stop by pid")
    });
    assert!(
        start.stderr().contains("mirrord-up stop slow"),
        "names the stopper: {}",
        start.stderr()
    );
    let t = Instant::now();
    let other = p.run(&["start", "other"]);
    let took = t.elapsed();
    assert_eq!(other.code, Some(0), "{other}");
    assert!(
        took < QUICK,
        "`start other` took {took:?} while start slow waits"
    );
    assert_eq!(
        p.leaders_of("slow"),
        vec![pid],
        "no second slow while it stops"
    );
    assert_eq!(row(&p, "slow")["status"], "stopping");
    assert!(start.running(), "{}", start.stderr());

    kill_slow_then_finish(pid, &mut stop);
    assert_eq!(start.finish(), Some(0), "{}", start.stderr());
    let leaders = p.leaders_of("slow");
    assert_eq!(leaders.len(), 1, "exactly one slow: {leaders:?}");
    assert_ne!(leaders[0], pid);
    let slow = row(&p, "slow");
    assert_eq!(slow["status"], "running", "{slow}");
    assert_eq!(slow["pid"].as_i64(), Some(leaders[0] as i64), "{slow}");
}

/// The one-shot stopper SIGKILLed mid-wait: its stop is nobody's any more (the kernel dropped
/// its stop lock), so the next command finishes the interrupted stop instead of waiting for
/// it: `restart -t 1 slow` kills the old group and starts one new `slow`; nothing is lost
/// or orphaned.
#[test]
fn a_stopper_killed_mid_wait_leaves_an_interrupted_stop_the_next_command_finishes() {
    let p = project("oskilled");
    let tmp = tempfile::tempdir().unwrap();
    let (mut stop, pid) = stop_slow_in_flight(&p, tmp.path());
    let stopper = stop.child.id() as i32;
    kill(Pid::from_raw(stopper), Signal::SIGKILL).expect("kill the stopper");
    assert_eq!(stop.finish(), None, "killed");
    assert_eq!(row(&p, "slow")["status"], "stopping");
    assert!(!group_empty(pid), "slow ignored SIGTERM");

    let t = Instant::now();
    let out = p.ok(&["restart", "-t", "1", "slow"]);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the interrupted stop was finished with its -t, not waited for: {out}"
    );
    assert!(group_empty(pid), "the old slow is gone: {out}");
    let leaders = p.leaders_of("slow");
    assert_eq!(leaders.len(), 1, "exactly one slow: {leaders:?} {out}");
    assert_ne!(leaders[0], pid);
    assert_eq!(row(&p, "slow")["status"], "running");
}

/// While `stop slow` is in flight without a supervisor, `up -d` starts the supervisor, which
/// leaves that stop to its owner: no second `slow` runs while it stops; once the stop is
/// recorded, the `up` starts one (an explicit `up` starts what is stopped).
#[test]
fn up_d_during_a_one_shot_stop_waits_for_it_then_runs_one() {
    let p = project("osupd");
    let tmp = tempfile::tempdir().unwrap();
    let (mut stop, pid) = stop_slow_in_flight(&p, tmp.path());

    let mut up = Background::start(&p, &["up", "-d"], &tmp.path().join("up.err"));
    wait_until("the supervisor says it waits for slow's stop", WAIT, || {
        up.stderr().contains("waits for its stop by pid")
            || std::fs::read_to_string(p.state_dir.join("supervisor.log"))
                .unwrap_or_default()
                .contains("waits for its stop by pid")
    });
    assert_eq!(
        p.leaders_of("slow"),
        vec![pid],
        "no second slow while it stops"
    );
    assert_eq!(row(&p, "slow")["status"], "stopping");

    kill_slow_then_finish(pid, &mut stop);
    assert_eq!(up.finish(), Some(0), "{}", up.stderr());
    let leaders = p.leaders_of("slow");
    assert_eq!(leaders.len(), 1, "exactly one slow: {leaders:?}");
    assert_ne!(leaders[0], pid);
    assert!(p.pids().contains_key("other"), "{:?}", p.ps());
    p.ok(&["down", "-t", "1"]);
}

/// The supervisor's own stops are owned the same way (so that a one-shot, or a second
/// process, sees them as a live stopper's): while its `stop slow` waits, slow's stop lock is
/// held by the supervisor and names it; once the stop is recorded the lock is free.
#[test]
fn a_supervised_stop_is_owned_by_the_supervisor() {
    use std::fs::{File, TryLockError};
    let p = project("ossup");
    p.ok(&["up", "-d"]);
    let tmp = tempfile::tempdir().unwrap();
    let (mut stop, pid) = slow_stopping_by(&p, &["stop", "slow"], tmp.path());
    let lock = p.state_dir.join("services/slow/stop.lock");
    let file = File::open(&lock).expect("slow's stop lock exists");
    assert!(
        matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock)),
        "held while slow stops"
    );
    let note = std::fs::read_to_string(&lock).unwrap();
    assert!(note.contains("(mirrord-up supervisor)"), "{note}");

    kill_slow_then_finish(pid, &mut stop);
    assert_eq!(row(&p, "slow")["status"], "stopped");
    assert!(
        file.try_lock_shared().is_ok(),
        "free once the stop is recorded"
    );
    p.ok(&["down", "-t", "1"]);
}

/// Without a supervisor, `ci stop slow` (a sweeping shutdown of one record) waits out slow's
/// grace period outside the state lock: `start other` answers at once meanwhile and `ps`
/// shows slow stopping; then slow is forgotten and nothing of it is left.
#[test]
fn a_one_shot_ci_stop_waits_out_its_grace_period_outside_the_state_lock() {
    let p = project("oscistop");
    let tmp = tempfile::tempdir().unwrap();
    let (mut stop, pid) = slow_stopping_by(&p, &["ci", "stop", "slow"], tmp.path());
    let t = Instant::now();
    let start = p.run(&["start", "other"]);
    let took = t.elapsed();
    assert_eq!(start.code, Some(0), "{start}");
    assert!(took < QUICK, "`start other` took {took:?} during ci stop");
    assert!(stop.running(), "{}", stop.stderr());

    kill_slow_then_finish(pid, &mut stop);
    let rows = p.ps_map();
    assert!(!rows.contains_key("slow"), "slow is forgotten: {rows:?}");
    assert!(rows["other"]["pid"].as_i64().is_some(), "{rows:?}");
    assert!(p.leaders_of("slow").is_empty());
}

/// Without a supervisor, `down` waits out grace periods outside the state lock too (another
/// command that takes it answers at once; `ps` shows slow stopping), and still forgets
/// everything and leaves no process of the project.
#[test]
fn a_one_shot_down_waits_out_its_grace_period_outside_the_state_lock() {
    let p = project("osdown");
    let tmp = tempfile::tempdir().unwrap();
    let (mut down, pid) = slow_stopping_by(&p, &["down"], tmp.path());
    // `start` takes the state lock (its answer: other is forgotten already).
    let t = Instant::now();
    let start = p.run(&["start", "other"]);
    let took = t.elapsed();
    assert!(
        took < QUICK,
        "`start other` took {took:?} during down: {start}"
    );
    assert!(down.running(), "{}", down.stderr());

    kill_slow_then_finish(pid, &mut down);
    assert!(p.ps().is_empty(), "{:?}", p.ps());
    assert!(p.marked().is_empty(), "nothing of the project runs");
}

/// A one-shot `down -t 1` kills what ignores SIGTERM when its grace period ends (the
/// one-shot's own grace timer, not the stop thread's later backstop), and says so.
#[test]
fn a_one_shot_down_kills_at_the_end_of_the_grace_period() {
    let p = project("osdownkill");
    let pid = row(&p, "slow")["pid"].as_i64().expect("slow runs") as i32;
    p.remember_pgid(pid);
    let t = Instant::now();
    let out = p.ok(&["down", "-t", "1"]);
    let took = t.elapsed();
    assert!(took < Duration::from_millis(2900), "took {took:?}: {out}");
    assert!(group_empty(pid), "{out}");
    assert!(out.stderr.contains("slow"), "{out}");
    assert!(out.stderr.contains("grace period"), "{out}");
    assert!(p.ps().is_empty());
}

/// A `down` sent to the supervisor is the loop's final shutdown: it too waits out slow's grace
/// period outside the state lock (a command that takes the lock answers at once; `ps` shows
/// slow stopping), then forgets everything and leaves no process of the project.
#[test]
fn a_supervised_down_waits_out_its_grace_period_outside_the_state_lock() {
    let p = project("ossupdown");
    p.ok(&["up", "-d"]);
    let tmp = tempfile::tempdir().unwrap();
    let (mut down, pid) = slow_stopping_by(&p, &["down"], tmp.path());
    // `up --dry-run` takes the state lock (and needs no service, unlike `start other`,
    // which rightly waits for other's stop to be recorded).
    let t = Instant::now();
    let dry = p.run(&["up", "--dry-run"]);
    let took = t.elapsed();
    assert_eq!(dry.code, Some(0), "{dry}");
    assert!(
        took < QUICK,
        "`up --dry-run` took {took:?} during the supervisor's down: {dry}"
    );
    assert!(down.running(), "{}", down.stderr());

    kill_slow_then_finish(pid, &mut down);
    assert!(p.ps().is_empty(), "{:?}", p.ps());
    assert!(p.marked().is_empty(), "nothing of the project runs");
}

/// Ctrl-C of a foreground `up` is the loop's final shutdown too: while slow's grace period
/// runs, a command that takes the state lock answers at once; a second Ctrl-C kills slow at
/// once, reported as forced; the records stay, as stopped.
#[test]
fn a_foreground_ctrl_c_waits_out_its_grace_period_outside_the_state_lock() {
    let p = project("osfgctrlc");
    // The foreground `up` starts them again.
    p.ok(&["down", "-t", "0"]);
    let mut up = common::Live::start(&p, &["up"]);
    wait_until("slow runs", WAIT, || row(&p, "slow")["status"] == "running");
    let pid = row(&p, "slow")["pid"].as_i64().expect("slow runs") as i32;
    p.remember_pgid(pid);
    up.signal(Signal::SIGINT);
    wait_until("slow is recorded stopping", WAIT, || {
        row(&p, "slow")["status"] == "stopping"
    });
    // `up --dry-run` takes the state lock (and needs no service, unlike `start other`,
    // which rightly waits for other's stop to be recorded).
    let t = Instant::now();
    let dry = p.run(&["up", "--dry-run"]);
    let took = t.elapsed();
    assert_eq!(dry.code, Some(0), "{dry}");
    assert!(
        took < QUICK,
        "`up --dry-run` took {took:?} during the Ctrl-C stop: {dry}"
    );
    assert!(up.running(), "{}", up.text());
    let t = Instant::now();
    up.signal(Signal::SIGINT);
    assert_eq!(up.wait_exit(WAIT), Some(130), "{}", up.text());
    assert!(t.elapsed() < Duration::from_secs(5), "{}", up.text());
    assert!(group_empty(pid), "{}", up.text());
    assert!(up.text().contains("forced"), "{}", up.text());
    assert_eq!(row(&p, "slow")["status"], "stopped", "{:?}", p.ps_map());
}

/// With a supervisor running, `ci stop slow` (always served in its own process) owns slow's
/// stop. A save of the file wakes the supervisor's watcher pass, which leaves that stop alone
/// (no wait in the pass, no lock held): an `up -d other` sent to it meanwhile is answered at
/// once (it used to queue behind a wait for the whole grace period). Once the stop is over,
/// the loop passes again by itself and runs slow (it is in the file) — once.
#[test]
fn a_supervisor_leaves_another_process_stop_alone_and_reconciles_after_it() {
    let p = project("ossupforeign");
    p.ok(&["up", "-d"]);
    let tmp = tempfile::tempdir().unwrap();
    let (mut stop, pid) = slow_stopping_by(&p, &["ci", "stop", "slow"], tmp.path());
    // A save: the watcher's pass meets slow (in the file), whose stop is ci stop's.
    let yaml = std::fs::read_to_string(&p.yaml).unwrap();
    std::fs::write(&p.yaml, format!("{yaml}\n# saved again\n")).unwrap();
    let t = Instant::now();
    let up = p.run(&["up", "-d", "other"]);
    let took = t.elapsed();
    assert_eq!(up.code, Some(0), "{up}");
    assert!(
        took < Duration::from_secs(2),
        "`up -d other` took {took:?} while another process stops slow: {up}"
    );
    assert!(stop.running(), "{}", stop.stderr());
    assert_eq!(p.leaders_of("slow"), vec![pid], "slow left to its stopper");
    kill_slow_then_finish(pid, &mut stop);
    // No further input: the end of that stop wakes a pass, which runs slow again, once.
    wait_until("slow runs again", WAIT, || {
        row(&p, "slow")["status"] == "running" && p.leaders_of("slow").len() == 1
    });
    assert_ne!(p.leaders_of("slow"), vec![pid]);
    p.ok(&["down", "-t", "0"]);
}
