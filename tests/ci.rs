//! `ci start|stop|ps` with real processes (spec §8): the printed lines and output files, many
//! concurrent starts all recorded, failures reported, flags passed through to mirrord, a
//! recycled PID never signalled, SIGTERM-ignoring grandchildren killed, `ci start --up` on the
//! demo project, and `ci.output_dir`.
//!
//! Every test works in its own tempdir: `work/` is the current directory (so the project is
//! `work`), `state/` the state dir, `tmp/` the `TMPDIR` (so `$TMPDIR/mirrord-<uid>` is private), and
//! `fake.log` the fake mirrord's log. A guard runs `ci stop -t 1` when the test ends (even on
//! panic) and then SIGKILLs every group the test learnt of that still holds one of its
//! processes (recognised by the `MIRRORD_UP_STATE` marker pointing into its state dir).
//!
//! PID 1 here does not reap orphans, so "a group is empty" means: no process of that group in
//! /proc other than zombies. No fixed sleeps: everything is polled against a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use regex::Regex;
use serde_json::Value;

mod common;

use common::fake_mirrord;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// How long one mirrord-up invocation may take before the test gives up on it.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);
/// How long a condition on the process table may take to become true.
const POLL_DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// /proc

/// `(state, ppid, pgrp)` of a process, from `/proc/<pid>/stat`. The command name is
/// parenthesised and may contain spaces and parentheses: fields are counted from the last `)`.
fn stat_of(pid: i32) -> Option<(char, i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

fn is_dead(state: char) -> bool {
    matches!(state, 'Z' | 'X' | 'x')
}

/// Alive (not a zombie).
fn alive(pid: i32) -> bool {
    stat_of(pid).is_some_and(|(s, _, _)| !is_dead(s))
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Non-zombie members of process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| stat_of(pid).is_some_and(|(s, _, g)| g == pgid && !is_dead(s)))
        .collect()
}

/// The value of `var` in a process's environment.
fn environ_var(pid: i32, var: &str) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{var}=");
    raw.split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(&prefix).map(str::to_owned))
}

/// Whether the process ignores SIGTERM (bit 15 of `SigIgn` in `/proc/<pid>/status`).
fn ignores_sigterm(pid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (Signal::SIGTERM as u32 - 1)) != 0)
}

/// Polls `cond` every 10 ms until it holds or `POLL_DEADLINE` passes; returns its last value.
fn poll(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + POLL_DEADLINE;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// The binaries

/// The outcome of one invocation.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    fn assert_ok(&self, what: &str) {
        assert_eq!(self.code, Some(0), "{what}: {}", self.describe());
    }
}

/// A running invocation whose stdout and stderr go to files (so nothing the session inherits
/// can keep a pipe of ours open).
struct Running {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    /// Waits (polling, with a deadline) and reads the output.
    fn finish(mut self) -> Out {
        let deadline = Instant::now() + COMMAND_DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "mirrord-up did not finish within {COMMAND_DEADLINE:?}; stdout so far:\n{}\nstderr so far:\n{}",
                    std::fs::read_to_string(&self.stdout).unwrap_or_default(),
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Out {
            code: status.code(),
            stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        }
    }
}

/// What `ci start` printed.
#[derive(Debug)]
struct Started {
    dir: PathBuf,
    pid: i32,
}

fn parse_started(out: &Out) -> Option<Started> {
    let dir_re = Regex::new(r"(?m)^mirrord ci files will be stored in (.+)$").unwrap();
    let pid_re = Regex::new(r"(?m)^child pid: (\d+)$").unwrap();
    let dir = dir_re.captures(&out.stdout)?[1].to_owned();
    let pid = pid_re.captures(&out.stdout)?[1].parse().ok()?;
    Some(Started {
        dir: PathBuf::from(dir),
        pid,
    })
}

/// One test's world; see the module comment.
struct World {
    root: tempfile::TempDir,
    /// Process groups the test learnt of, killed (if still ours) when it ends.
    pgids: Mutex<BTreeSet<i32>>,
    seq: Mutex<u32>,
}

impl World {
    fn new() -> World {
        let root = tempfile::Builder::new()
            .prefix("mirrord-up-ci-")
            .tempdir()
            .expect("tempdir");
        for d in ["work", "state", "tmp"] {
            std::fs::create_dir(root.path().join(d)).expect("mkdir");
        }
        World {
            root,
            pgids: Mutex::new(BTreeSet::new()),
            seq: Mutex::new(0),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn cwd(&self) -> PathBuf {
        self.path("work")
    }

    fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    fn fake_log(&self) -> PathBuf {
        self.path("fake.log")
    }

    /// `mirrord-up --state-dir S --mirrord-bin FAKE <args…>` in `work/`, with a clean
    /// environment: no `MIRRORD_*`/`FAKE_MIRRORD_*` of the invoking shell, `TMPDIR=tmp/`.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mirrord-up"));
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("MIRRORD_") || k.starts_with("FAKE_MIRRORD_") {
                cmd.env_remove(&*k);
            }
        }
        cmd.arg("--state-dir")
            .arg(self.state_dir())
            .arg("--mirrord-bin")
            .arg(fake_mirrord())
            .args(args)
            .current_dir(self.cwd())
            .env("TMPDIR", self.path("tmp"))
            .env("FAKE_MIRRORD_LOG", self.fake_log())
            .env("NO_COLOR", "1")
            .env("MIRRORD_UP_LOCK_TIMEOUT", "60")
            .stdin(Stdio::null());
        cmd
    }

    fn spawn(&self, args: &[&str]) -> Running {
        let n = {
            let mut seq = self.seq.lock().unwrap();
            *seq += 1;
            *seq
        };
        let stdout = self.path(&format!("run-{n}.out"));
        let stderr = self.path(&format!("run-{n}.err"));
        let child = self
            .command(args)
            .stdout(std::fs::File::create(&stdout).expect("create stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("create stderr file"))
            .spawn()
            .expect("spawn mirrord-up");
        Running {
            child,
            stdout,
            stderr,
        }
    }

    fn run(&self, args: &[&str]) -> Out {
        let out = self.spawn(args).finish();
        // Whatever a start printed, the guard must know of it even if an assertion fails next.
        if let Some(s) = parse_started(&out) {
            self.learn(s.pid);
        }
        out
    }

    fn learn(&self, pgid: i32) {
        self.pgids.lock().unwrap().insert(pgid);
    }

    /// `ci start <args…>`, expected to succeed and print both lines.
    fn start(&self, args: &[&str]) -> Started {
        let mut full = vec!["ci", "start"];
        full.extend_from_slice(args);
        let out = self.run(&full);
        out.assert_ok(&format!("ci start {args:?}"));
        parse_started(&out)
            .unwrap_or_else(|| panic!("ci start printed no dir/pid lines: {}", out.describe()))
    }

    /// `ci ps --format json`.
    fn ps(&self) -> Vec<Value> {
        let out = self.run(&["ci", "ps", "--format", "json"]);
        out.assert_ok("ci ps");
        let rows: Vec<Value> = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("ci ps json: {e}: {}", out.describe()));
        for row in &rows {
            if let Some(g) = row["pgid"].as_i64() {
                self.learn(g as i32);
            }
        }
        rows
    }

    /// The fake mirrord's log lines.
    fn fake_invocations(&self) -> Vec<Value> {
        std::fs::read_to_string(self.fake_log())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("fake log line is JSON"))
            .collect()
    }

    /// Whether a process carries this world's `MIRRORD_UP_STATE` marker.
    fn is_ours(&self, pid: i32) -> bool {
        environ_var(pid, "MIRRORD_UP_STATE")
            .is_some_and(|s| Path::new(&s).starts_with(self.state_dir()))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // The product's own cleanup first, then the safety net.
        let mut cmd = self.command(&["ci", "stop", "-t", "1"]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        if let Ok(child) = cmd.spawn() {
            wait_quietly(child);
        }
        let pgids = std::mem::take(&mut *self.pgids.lock().unwrap());
        for pgid in pgids {
            // Only a group that still holds one of this test's processes (a PGID cannot be
            // reused while any member lives, so this cannot hit a stranger's group).
            if group_members(pgid).into_iter().any(|p| self.is_ours(p)) {
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
        }
    }
}

/// Waits for `child` with a deadline (killing it past that), never panicking (for the guard).
fn wait_quietly(mut child: Child) {
    let deadline = Instant::now() + COMMAND_DEADLINE;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A child of the test itself, killed when dropped.
struct OwnChild(Child);

impl Drop for OwnChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn assert_group_empty(pgid: i32, what: &str) {
    let members = group_members(pgid);
    assert!(
        members.is_empty(),
        "{what}: group {pgid} still has live members {members:?}"
    );
}

fn by_name(rows: &[Value]) -> BTreeMap<String, &Value> {
    rows.iter()
        .map(|r| (r["name"].as_str().expect("name").to_owned(), r))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn start_prints_its_files_and_pid_and_records_the_session() {
    let w = World::new();
    let s = w.start(&["--", "sleep", "1000"]);

    assert!(alive(s.pid), "child pid {} is not alive", s.pid);
    let (_, _, pgrp) = stat_of(s.pid).expect("stat");
    assert_eq!(pgrp, s.pid, "the session leads its own process group");

    assert_eq!(
        s.dir.parent(),
        Some(
            w.path("tmp")
                .join(format!("mirrord-{}", nix::unistd::geteuid()))
                .as_path()
        ),
        "output dir {} is not under $TMPDIR/mirrord-<uid>",
        s.dir.display()
    );
    let leaf = s.dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        Regex::new(r"^sleep-\d+-[A-Za-z0-9]{7}$")
            .unwrap()
            .is_match(&leaf),
        "output dir name `{leaf}`"
    );
    assert!(s.dir.join("stdout").is_file(), "no stdout file");
    assert!(s.dir.join("stderr").is_file(), "no stderr file");

    let rows = w.ps();
    let rows = by_name(&rows);
    let row = rows
        .get("sleep-1")
        .unwrap_or_else(|| panic!("ci ps has no sleep-1: {rows:?}"));
    assert_eq!(row["status"], "running", "{row}");
    assert_eq!(row["pid"].as_i64(), Some(i64::from(s.pid)), "{row}");
}

#[test]
fn sixteen_concurrent_starts_are_all_recorded_and_stopped() {
    let w = World::new();
    let runs: Vec<Running> = (0..16)
        .map(|_| w.spawn(&["ci", "start", "--", "sleep", "1000"]))
        .collect();
    let outs: Vec<Out> = runs.into_iter().map(Running::finish).collect();
    let mut printed = BTreeSet::new();
    for out in &outs {
        if let Some(s) = parse_started(out) {
            w.learn(s.pid);
            printed.insert(s.pid);
        }
    }
    for out in &outs {
        out.assert_ok("concurrent ci start");
    }
    assert_eq!(printed.len(), 16, "16 distinct child pids printed");

    let rows = w.ps();
    let names: BTreeSet<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    let pids: BTreeSet<i64> = rows.iter().filter_map(|r| r["pid"].as_i64()).collect();
    assert_eq!(rows.len(), 16, "{rows:#?}");
    assert_eq!(names.len(), 16, "distinct names: {names:?}");
    assert_eq!(pids.len(), 16, "distinct pids: {pids:?}");
    let printed64: BTreeSet<i64> = printed.iter().map(|&p| i64::from(p)).collect();
    assert_eq!(pids, printed64, "ps lists the printed pids");

    let stop = w.run(&["ci", "stop"]);
    stop.assert_ok("ci stop");
    for &pid in &printed {
        assert_group_empty(pid, "after ci stop");
    }

    let again = w.run(&["ci", "stop"]);
    again.assert_ok("second ci stop");
    assert!(
        again.stdout.contains("nothing to stop"),
        "second ci stop: {}",
        again.describe()
    );
}

#[test]
fn failures_at_start_are_reported() {
    let w = World::new();

    let missing = w.run(&["ci", "start", "--", "/nonexistent/binary"]);
    assert_ne!(missing.code, Some(0), "{}", missing.describe());
    assert!(
        missing.stderr.contains("/nonexistent/binary"),
        "stderr names the binary: {}",
        missing.describe()
    );

    let boom = w.run(&["ci", "start", "--", "sh", "-c", "echo boom >&2; exit 3"]);
    assert_ne!(boom.code, Some(0), "{}", boom.describe());
    assert!(
        boom.stderr.contains("exit code 3"),
        "stderr gives the exit code: {}",
        boom.describe()
    );
    assert!(
        boom.stderr.contains("boom"),
        "stderr shows the app's stderr: {}",
        boom.describe()
    );

    let fg = w.run(&["ci", "start", "--foreground", "--", "sh", "-c", "exit 3"]);
    assert_eq!(fg.code, Some(3), "{}", fg.describe());
}

#[test]
fn mirrord_flags_pass_through() {
    let w = World::new();
    // `node app.js` as in the spec's example; without node on PATH, `sh app.js` with the same
    // flags checks the same thing (the command fails either way: there is no app.js).
    let have_node = Command::new("which")
        .arg("node")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let program = if have_node { "node" } else { "sh" };
    let flags = ["-t", "deployment/x", "-n", "staging", "--steal"];
    let mut args = vec!["ci", "start"];
    args.extend(flags);
    args.extend(["--", program, "app.js"]);
    let out = w.run(&args);
    // The exit code is not the point (app.js does not exist); what mirrord received is.

    let log = w.fake_invocations();
    let last = log
        .last()
        .unwrap_or_else(|| panic!("the fake mirrord was not run: {}", out.describe()));
    let mut expected = vec!["exec"];
    expected.extend(flags);
    expected.extend(["--", program, "app.js"]);
    assert_eq!(
        last["argv"],
        serde_json::json!(expected),
        "{}",
        out.describe()
    );

    // Nothing left running: the session's group empties (the app fails on its own), and
    // `ci stop` cleans up the record.
    if let Some(s) = parse_started(&out) {
        assert!(
            poll(|| group_members(s.pid).is_empty()),
            "the failed session's group {} did not empty: {:?}",
            s.pid,
            group_members(s.pid)
        );
    }
    w.run(&["ci", "stop", "-t", "1"]).assert_ok("ci stop");
    let pgid = log.last().and_then(|l| l["pgid"].as_i64()).expect("pgid") as i32;
    assert_group_empty(pgid, "after ci stop");
}

/// A `ci start` that reads the state between another one's new snapshot and its journal (the
/// first save of a project writes both, one rename after the other) must not keep that read:
/// the records in the journal, when it comes, are still there after its own save. Held open
/// here: the journal moved aside and the lock taken by this test until the start has read the
/// state and opened the lock (inotify); then the journal back and the lock let go. Under CI
/// load the window came by itself: 16 concurrent starts left 5 records.
#[test]
fn a_start_that_read_before_the_journal_came_keeps_its_records() {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use std::os::fd::AsFd;
    let w = World::new();
    let first = w.start(&["--name", "first", "--", "sleep", "1000"]);
    let second = w.start(&["--name", "second", "--", "sleep", "1000"]);
    let dir = w.state_dir().join("work");
    let journal = dir.join("state.journal");
    let aside = dir.join("journal.aside");

    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("state.lock"))
        .expect("open state.lock");
    lock.lock().expect("take state.lock");
    std::fs::rename(&journal, &aside).expect("move the journal aside");
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).expect("inotify");
    inotify
        .add_watch(&dir, AddWatchFlags::IN_OPEN)
        .expect("watch the state dir");
    let third = w.spawn(&["ci", "start", "--name", "third", "--", "sleep", "1000"]);
    // It has read the state (the snapshot alone) and waits for the lock.
    let deadline = Instant::now() + COMMAND_DEADLINE;
    'wait: loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the third start never opened state.lock");
        let mut fds = [nix::poll::PollFd::new(
            inotify.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        nix::poll::poll(&mut fds, ms).expect("poll inotify");
        for event in inotify.read_events().unwrap_or_default() {
            if event.name.as_deref() == Some(std::ffi::OsStr::new("state.lock")) {
                break 'wait;
            }
        }
    }
    std::fs::rename(&aside, &journal).expect("the journal comes");
    drop(lock);
    let out = third.finish();
    out.assert_ok("the third ci start");
    let third = parse_started(&out).expect("the third start's lines");
    for s in [&first, &second, &third] {
        w.learn(s.pid);
    }

    let rows = w.ps();
    let rows = by_name(&rows);
    let names: Vec<&str> = rows.keys().map(String::as_str).collect();
    assert_eq!(names, ["first", "second", "third"], "{rows:#?}");
    for (name, s) in [("first", &first), ("second", &second), ("third", &third)] {
        let row = &rows[name];
        assert_eq!(row["pid"].as_i64(), Some(i64::from(s.pid)), "{row}");
        assert_eq!(row["status"], "running", "{row}");
        assert_eq!(row["last_reason"], "ci start", "{row}");
    }
}

#[test]
fn a_recycled_pid_is_never_signalled() {
    let w = World::new();
    let victim = w.start(&["--name", "victim", "--", "sleep", "1000"]);

    let state_path = w.state_dir().join("work").join("state.json");
    // As mirrord-up reads it (the file and its journal); written back below as a file naming
    // no journal.
    let mut state: Value = serde_json::to_value(
        mirrord_up::state::read_in(&w.state_dir().join("work"))
            .unwrap_or_else(|e| panic!("{}: {e}", state_path.display()))
            .expect("a state"),
    )
    .expect("a state is JSON");
    let process = &state["services"]["victim"]["process"];
    assert_eq!(
        process["pid"].as_i64(),
        Some(i64::from(victim.pid)),
        "{state:#}"
    );
    assert_eq!(
        process["pgid"].as_i64(),
        Some(i64::from(victim.pid)),
        "{state:#}"
    );

    // The session dies behind the tool's back…
    killpg(Pid::from_raw(victim.pid), Signal::SIGKILL).expect("kill the victim group");
    assert!(
        poll(|| group_members(victim.pid).is_empty()),
        "victim group did not die"
    );

    // …and its PID "is reused" by an unrelated process (one of the test's own, in its own
    // group, without any mirrord-up marker); the recorded start time no longer matches.
    let mut stranger = Command::new("sleep");
    stranger.arg("1000").stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MIRRORD_") {
            stranger.env_remove(k);
        }
    }
    std::os::unix::process::CommandExt::process_group(&mut stranger, 0);
    let mut stranger = OwnChild(stranger.spawn().expect("spawn sleep"));
    let spid = stranger.0.id() as i32;
    assert!(poll(|| alive(spid)), "stranger sleep not alive");

    let process = &mut state["services"]["victim"]["process"];
    process["pid"] = spid.into();
    process["pgid"] = spid.into();
    let tmp = state_path.with_extension("json.test-tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&state).unwrap()).expect("write state");
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod state");
    std::fs::rename(&tmp, &state_path).expect("replace state.json");

    let stop = w.run(&["ci", "stop", "-t", "1"]);
    stop.assert_ok("ci stop");
    assert!(
        matches!(stranger.0.try_wait(), Ok(None)),
        "ci stop signalled a process it did not start: {}",
        stop.describe()
    );
    assert!(alive(spid), "the stranger is still alive");
    drop(stranger);
}

#[test]
fn stop_kills_a_grandchild_that_ignores_sigterm() {
    let w = World::new();
    let s = w.start(&[
        "--",
        "sh",
        "-c",
        "(trap '' TERM; exec sleep 1000) & exec sleep 1000",
    ]);
    // Wait until the group has both members and the grandchild really ignores SIGTERM.
    assert!(
        poll(|| {
            let members = group_members(s.pid);
            members.len() >= 2 && members.iter().any(|&p| ignores_sigterm(p))
        }),
        "group {} never had 2 members with one ignoring SIGTERM: {:?}",
        s.pid,
        group_members(s.pid)
    );
    for p in group_members(s.pid) {
        w.learn(p);
    }

    let stop = w.run(&["ci", "stop", "-t", "1"]);
    stop.assert_ok("ci stop -t 1");
    assert_group_empty(s.pid, "after ci stop -t 1");
}

#[test]
fn start_up_applies_the_demo_once_and_is_idempotent() {
    let w = World::new();
    std::fs::copy(
        Path::new(REPO).join("fixtures/demo/mirrord-up.yaml"),
        w.cwd().join("mirrord-up.yaml"),
    )
    .expect("copy the demo file");

    let first = w.run(&["--launcher", "local", "ci", "start", "--up"]);
    let rows = w.ps();
    first.assert_ok("ci start --up");
    let pids = |rows: &[Value]| -> BTreeMap<String, i64> {
        rows.iter()
            .map(|r| {
                (
                    r["name"].as_str().expect("name").to_owned(),
                    r["pid"].as_i64().unwrap_or(-1),
                )
            })
            .collect()
    };
    let before = pids(&rows);
    assert_eq!(
        before.keys().map(String::as_str).collect::<Vec<_>>(),
        ["api", "db", "web", "worker"],
        "{rows:#?}"
    );
    for r in &rows {
        let status = r["status"].as_str().unwrap_or_default();
        assert!(
            matches!(status, "running" | "ready") && r["pid"].is_i64(),
            "every service runs: {r}"
        );
        assert!(alive(r["pid"].as_i64().unwrap() as i32), "{r}");
    }

    let second = w.run(&["--launcher", "local", "ci", "start", "--up"]);
    second.assert_ok("second ci start --up");
    assert!(
        second.stdout.contains("nothing to do"),
        "second ci start --up: {}",
        second.describe()
    );
    let after = pids(&w.ps());
    assert_eq!(before, after, "unchanged services keep their PIDs");

    let stop = w.run(&["ci", "stop"]);
    stop.assert_ok("ci stop");
    for r in &rows {
        assert_group_empty(r["pgid"].as_i64().unwrap() as i32, "after ci stop");
    }
}

#[test]
fn ci_output_dir_of_the_mirrord_config_is_used() {
    let w = World::new();
    let out_base = w.path("out");
    std::fs::write(
        w.cwd().join("m.json"),
        serde_json::json!({"ci": {"output_dir": out_base}}).to_string(),
    )
    .expect("write m.json");

    let s = w.start(&["-f", "m.json", "--", "sleep", "1000"]);
    assert!(
        s.dir.starts_with(&out_base) && s.dir != out_base,
        "output dir {} is not under {}",
        s.dir.display(),
        out_base.display()
    );
    assert!(s.dir.join("stdout").is_file() && s.dir.join("stderr").is_file());

    let log = w.fake_invocations();
    let argv: Vec<&str> = log.last().expect("the fake mirrord was run")["argv"]
        .as_array()
        .expect("argv")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let sep = argv.iter().position(|a| *a == "--").expect("`--` in argv");
    assert!(
        argv[..sep].windows(2).any(|p| p == ["-f", "m.json"]),
        "mirrord got `-f m.json` among its flags: {argv:?}"
    );
}
