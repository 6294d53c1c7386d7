//! Helpers for the integration tests that run real processes: a per-test project (YAML dir and
//! state dir in their own tempdirs) with a cleanup guard, the fake mirrord, `/proc` readers that
//! treat zombies as dead (PID 1 of some sandboxes never reaps orphans), and event waiting.
//!
//! Nothing here kills anything by name: only PIDs/PGIDs the test started, or process groups whose
//! members carry the test's own `MIRRORD_UP_STATE=<state-dir>/<project>` marker.

#![allow(dead_code)]

pub mod kube_stub;
pub mod pty;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_mirrord-up");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// How long any single `mirrord-up` invocation may take before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Variables of the invoking shell that would change what the binary does.
const SCRUBBED_ENV: &[&str] = &[
    "MIRRORD_UP_FILE",
    "MIRRORD_UP_PROJECT",
    "MIRRORD_UP_STATE_DIR",
    "MIRRORD_UP_LAUNCHER",
    "MIRRORD_UP_KEY",
    "MIRRORD_UP_LOCK_TIMEOUT",
    "MIRRORD_UP_KUBE_TIMEOUT",
    "MIRRORD_UP_TEST_CRASH_AFTER_SPAWN",
    "MIRRORD_BIN",
    "FAKE_MIRRORD_LOG",
    "FAKE_MIRRORD_READY_DELAY_MS",
    "FAKE_MIRRORD_TARGETS",
    "FAKE_MIRRORD_FAIL",
    "FAKE_MIRRORD_FAIL_AFTER_MS",
    "FAKE_MIRRORD_INTPROXY",
    "FAKE_MIRRORD_INTPROXY_LINGER_MS",
    "FAKE_MIRRORD_VERSION",
    "FAKE_MIRRORD_STEAL_PORT",
    "FAKE_MIRRORD_SESSION_ID",
    "FAKE_MIRRORD_AGENT_LOSS_AFTER_MS",
    "XDG_STATE_HOME",
];

// ---------------------------------------------------------------------------------------------
// Waiting on events

/// Polls `cond` every 10 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// The fake mirrord

/// The fake mirrord, compiled from `fixtures/fake-mirrord/main.rs` with plain `rustc` (it is
/// std-only) into this test target's tmpdir, keyed by the source's content so it is never stale.
/// (`cargo test --test engine` does not build examples.)
pub fn fake_mirrord() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        let src = Path::new(REPO).join("fixtures/fake-mirrord/main.rs");
        let text = std::fs::read(&src).expect("read fake-mirrord source");
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let bin = dir.join(format!("fake-mirrord-{:016x}", h.finish()));
        if bin.is_file() {
            return bin;
        }
        // Build under a unique name, then rename: concurrent test processes (nextest) never
        // see a half-written binary.
        let tmp = dir.join(format!("fake-mirrord.tmp-{}", std::process::id()));
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let out = match Command::new(rustc)
            .args(["--edition", "2024", "-O", "--crate-name", "fake_mirrord"])
            .arg(&src)
            .arg("-o")
            .arg(&tmp)
            .output()
        {
            Ok(out) => out,
            // No rustc to run: the example cargo built, next to this test executable
            // (target/<profile>/deps/engine-<hash> → target/<profile>/examples).
            Err(e) => {
                let exe = std::env::current_exe().expect("test executable");
                let built = exe
                    .parent()
                    .and_then(Path::parent)
                    .map(|d| d.join("examples").join("fake-mirrord"))
                    .filter(|p| p.is_file())
                    .unwrap_or_else(|| {
                        panic!(
                            "cannot run rustc ({e}) and no built fake-mirrord: run `cargo build --example fake-mirrord`"
                        )
                    });
                return built;
            }
        };
        assert!(
            out.status.success(),
            "rustc fixtures/fake-mirrord/main.rs failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&tmp, &bin).expect("install fake-mirrord");
        bin
    })
}

// ---------------------------------------------------------------------------------------------
// /proc

/// What the tests need of `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    pub state: char,
    pub pgrp: i32,
    pub session: i32,
    pub start_time: u64,
}

impl Stat {
    pub fn zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// `/proc/<pid>/stat`; the command name (field 2) may hold spaces and parentheses, so fields
/// are counted from its last `)`.
pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] = field 3 (state), f[1] = ppid, f[2] = pgrp, f[3] = session, f[19] = starttime (22).
    Some(Stat {
        pid,
        state: f.first()?.chars().next()?,
        pgrp: f.get(2)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
    })
}

/// Exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| !s.zombie())
}

/// Every non-zombie process.
pub fn live_processes() -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .filter(|s| !s.zombie())
        .collect()
}

/// Non-zombie members of process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    live_processes()
        .into_iter()
        .filter(|s| s.pgrp == pgid)
        .map(|s| s.pid)
        .collect()
}

pub fn group_empty(pgid: i32) -> bool {
    group_members(pgid).is_empty()
}

pub fn environ(pid: i32) -> Option<HashMap<String, String>> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter_map(|kv| {
                let s = std::str::from_utf8(kv).ok()?;
                let (k, v) = s.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect(),
    )
}

/// Does the process ignore `sig` (`SigIgn` of `/proc/<pid>/status`)?
pub fn ignores(pid: i32, sig: Signal) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (sig as i32 - 1)) != 0)
}

// ---------------------------------------------------------------------------------------------
// Running the binary

#[derive(Debug)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A running invocation; `wait` collects it (with `COMMAND_TIMEOUT`).
pub struct Running {
    child: Child,
    what: String,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

fn reader(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

impl Running {
    pub fn start(mut cmd: Command, what: String) -> Running {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        let stdout = reader(child.stdout.take().expect("piped"));
        let stderr = reader(child.stderr.take().expect("piped"));
        Running {
            child,
            what,
            stdout,
            stderr,
        }
    }

    pub fn wait(mut self) -> Out {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("`{}` did not finish within {COMMAND_TIMEOUT:?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // The pipes reach EOF once every holder closed them: a service that inherited them
        // would keep them open and hang here, which is a bug of its own.
        let collect = |rx: &mpsc::Receiver<String>, which: &str| {
            rx.recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| {
                    panic!(
                        "`{}` exited but its {which} stays open (inherited by a service?)",
                        self.what
                    )
                })
        };
        Out {
            code: status.code(),
            stdout: collect(&self.stdout, "stdout"),
            stderr: collect(&self.stderr, "stderr"),
        }
    }
}

/// A bare `mirrord-up` command with a scrubbed environment and no colour.
pub fn mirrord_up() -> Command {
    let mut cmd = Command::new(BIN);
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

// ---------------------------------------------------------------------------------------------
// A project under test

/// One test's project: `<tmp>/<name>/mirrord-up.yaml` (so the project name is `name`) and its
/// own `--state-dir`. Dropping it runs `down -t 1 --force` and SIGKILLs every process group the
/// test saw or that carries its state marker, so nothing outlives a failing test.
pub struct Project {
    _yaml_root: tempfile::TempDir,
    _state_root: tempfile::TempDir,
    pub name: String,
    pub dir: PathBuf,
    pub yaml: PathBuf,
    pub state_root: PathBuf,
    /// `<state-root>/<project>`: what services carry as `MIRRORD_UP_STATE`.
    pub state_dir: PathBuf,
    pub fake_log: PathBuf,
    /// Extra global options (e.g. `--launcher local`).
    pub globals: Vec<String>,
    pgids: RefCell<BTreeSet<i32>>,
}

impl Project {
    pub fn new(name: &str) -> Project {
        let yaml_root = tempfile::tempdir().expect("tempdir");
        let state_root = tempfile::tempdir().expect("tempdir");
        let dir = yaml_root.path().join(name);
        std::fs::create_dir(&dir).expect("project dir");
        let fake_log = yaml_root.path().join("fake-mirrord.log");
        Project {
            name: name.to_owned(),
            yaml: dir.join("mirrord-up.yaml"),
            dir,
            state_dir: state_root.path().join(name),
            state_root: state_root.path().to_owned(),
            fake_log,
            globals: Vec::new(),
            pgids: RefCell::new(BTreeSet::new()),
            _yaml_root: yaml_root,
            _state_root: state_root,
        }
    }

    pub fn write_yaml(&self, text: &str) {
        std::fs::write(&self.yaml, text).expect("write mirrord-up.yaml");
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    /// The project's state as JSON, as mirrord-up reads it (the snapshot, its journal
    /// applied); `None` when there is none or it does not parse.
    pub fn state_value(&self) -> Option<serde_json::Value> {
        let state = mirrord_up::state::read_in(&self.state_dir).ok()??;
        serde_json::to_value(state).ok()
    }

    /// Rewrites the project's state file in place with `state` (a snapshot naming no journal:
    /// what a hand edit or an older build leaves).
    pub fn write_state(&self, state: &serde_json::Value) {
        std::fs::write(self.state_file(), serde_json::to_vec(state).expect("json"))
            .expect("write state");
    }

    /// `mirrord-up -f <yaml> --state-dir <dir> --mirrord-bin <fake> -k tester [globals] ARGS`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = mirrord_up();
        cmd.current_dir(&self.dir)
            .arg("-f")
            .arg(&self.yaml)
            .arg("--state-dir")
            .arg(&self.state_root)
            .arg("--mirrord-bin")
            .arg(fake_mirrord())
            .args(["-k", "tester"])
            .args(&self.globals)
            .args(args)
            .env("FAKE_MIRRORD_LOG", &self.fake_log)
            // The fake's intproxy serves its session API under $HOME/.mirrord/sessions, as
            // the real one does: never the user's home.
            .env("HOME", self.home());
        cmd
    }

    /// The HOME every command of this project gets (created on first use).
    pub fn home(&self) -> PathBuf {
        let home = self.fake_log.with_file_name("home");
        let _ = std::fs::create_dir_all(&home);
        home
    }

    pub fn start(&self, args: &[&str]) -> Running {
        Running::start(self.command(args), format!("mirrord-up {}", args.join(" ")))
    }

    pub fn run(&self, args: &[&str]) -> Out {
        let out = self.start(args).wait();
        self.note_marked_groups();
        out
    }

    /// Runs and asserts exit 0.
    pub fn ok(&self, args: &[&str]) -> Out {
        let out = self.run(args);
        assert_eq!(out.code, Some(0), "mirrord-up {}: {out}", args.join(" "));
        out
    }

    /// `ps --format json`, remembering every PGID it shows.
    pub fn ps(&self) -> Vec<Value> {
        let out = self.ok(&["ps", "--format", "json"]);
        let rows: Vec<Value> = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("ps --format json is not JSON ({e}): {out}"));
        let mut pgids = self.pgids.borrow_mut();
        for r in &rows {
            if let Some(g) = r["pgid"].as_i64() {
                pgids.insert(g as i32);
            }
        }
        rows
    }

    /// `name → row` of `ps --format json`.
    pub fn ps_map(&self) -> BTreeMap<String, Value> {
        self.ps()
            .into_iter()
            .map(|r| (r["name"].as_str().expect("name").to_owned(), r))
            .collect()
    }

    /// The PID of the supervisor the state file records, if it records one.
    pub fn supervisor_pid(&self) -> Option<i32> {
        let state = self.state_value()?;
        state["supervisor"]["process"]["pid"]
            .as_i64()
            .map(|v| v as i32)
    }

    /// The supervisor's log (`supervisor.log`), empty when there is none yet.
    pub fn supervisor_log(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("supervisor.log")).unwrap_or_default()
    }

    /// `name → pid` of the services `ps` shows with a PID.
    pub fn pids(&self) -> BTreeMap<String, i32> {
        self.ps_map()
            .into_iter()
            .filter_map(|(n, r)| Some((n, r["pid"].as_i64()? as i32)))
            .collect()
    }

    pub fn remember_pgid(&self, pgid: i32) {
        self.pgids.borrow_mut().insert(pgid);
    }

    /// Non-zombie processes carrying this project's `MIRRORD_UP_STATE` marker.
    pub fn marked(&self) -> Vec<(Stat, HashMap<String, String>)> {
        let want = self.state_dir.to_string_lossy().into_owned();
        live_processes()
            .into_iter()
            .filter_map(|s| {
                let env = environ(s.pid)?;
                (env.get("MIRRORD_UP_STATE") == Some(&want)).then_some((s, env))
            })
            // A process that died between the scan and the environ read is not counted.
            .filter(|(s, _)| alive(s.pid))
            .collect()
    }

    /// Live group leaders of `service` (pid == pgrp) carrying this project's markers.
    pub fn leaders_of(&self, service: &str) -> Vec<i32> {
        self.marked()
            .into_iter()
            .filter(|(s, env)| {
                s.pid == s.pgrp
                    && env.get("MIRRORD_UP_SERVICE").map(String::as_str) == Some(service)
            })
            .map(|(s, _)| s.pid)
            .collect()
    }

    fn note_marked_groups(&self) {
        let groups: Vec<i32> = self.marked().iter().map(|(s, _)| s.pgrp).collect();
        self.pgids.borrow_mut().extend(groups);
    }

    /// The fake mirrord's log: one JSON object per invocation.
    pub fn fake_log(&self) -> Vec<Value> {
        match std::fs::read_to_string(&self.fake_log) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).expect("fake-mirrord log line is JSON"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("{}: {e}", self.fake_log.display()),
        }
    }

    /// `exec` invocations of the fake, per service (`MIRRORD_UP_SERVICE`).
    pub fn execs_by_service(&self) -> BTreeMap<String, Vec<Vec<String>>> {
        let mut out: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
        for rec in self.fake_log() {
            let argv: Vec<String> = serde_json::from_value(rec["argv"].clone()).expect("argv");
            if argv.first().map(String::as_str) != Some("exec") {
                continue;
            }
            let service = rec["service"].as_str().unwrap_or_default().to_owned();
            out.entry(service).or_default().push(argv);
        }
        out
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if let Ok(mut child) = self
            .command(&["down", "-t", "1", "--force"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            let deadline = Instant::now() + COMMAND_TIMEOUT;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        // Whatever survived: every group the test saw, plus every group carrying our marker.
        // A recorded group is only killed while one of its live members still carries our
        // marker, so a PGID reused by someone else is never hit.
        let marked = self.marked();
        let ours: BTreeSet<i32> = marked.iter().map(|(s, _)| s.pgrp).collect();
        for pgid in self.pgids.borrow().iter().chain(&ours) {
            if ours.contains(pgid) {
                let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
            }
        }
    }
}

/// A process the test spawned itself, in its own process group; killed and reaped on drop.
pub struct OwnChild(pub Child);

impl OwnChild {
    pub fn sleep_in_own_group() -> OwnChild {
        use std::os::unix::process::CommandExt;
        let child = Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        OwnChild(child)
    }

    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for OwnChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// YAML

/// One service entry: `target: none`, `run.command` as a JSON (= YAML flow) list, plus `extra`
/// lines (already indented by 4 spaces).
pub fn service(name: &str, command: &[&str], extra: &[&str]) -> String {
    let mut s = format!("  {name}:\n    target: none\n");
    for line in extra {
        s.push_str("    ");
        s.push_str(line);
        s.push('\n');
    }
    s.push_str(&format!(
        "    run: {{command: {}}}\n",
        serde_json::to_string(command).expect("JSON")
    ));
    s
}

pub fn yaml(services: &[String]) -> String {
    format!("services:\n{}", services.concat())
}

pub const SLEEP: &[&str] = &["sleep", "1000"];

// ---------------------------------------------------------------------------------------------
// Fixtures

/// The `*.yaml` files of `fixtures/compat/<kind>/` (`valid` or `invalid`), sorted.
pub fn compat_fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(REPO).join("fixtures/compat").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension() == Some(std::ffi::OsStr::new("yaml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

/// The real mirrord 3.250.0 CLI beside the repository (`../shared/mirrord/bin/mirrord`), or
/// `None` when it is missing, which fails the test under `CI=true`.
pub fn real_mirrord() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/mirrord/bin/mirrord");
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the real mirrord is missing at {} (required under CI=true)",
        path.display()
    );
    eprintln!("skipped: no real mirrord at {}", path.display());
    None
}

/// How long a [`Live`] command may take to print what a test waits for.
pub const LIVE_WAIT: Duration = Duration::from_secs(20);

/// A mirrord-up command whose output is watched as it comes (stdout and stderr together);
/// killed (by PID) if the test ends early.
pub struct Live {
    child: Child,
    output: Arc<(Mutex<String>, Condvar)>,
    /// Stdout alone: the two pipes are merged above at whatever points each read ends, so a
    /// line of one can be cut by a chunk of the other there (not in the program's output).
    stdout: Arc<Mutex<Vec<u8>>>,
    what: String,
}

impl Live {
    pub fn start(p: &Project, args: &[&str]) -> Live {
        let mut cmd = p.command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn mirrord-up");
        let output = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        for (pipe, alone) in [
            (
                Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>,
                Some(stdout.clone()),
            ),
            (Box::new(child.stderr.take().expect("piped")), None),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let (text, cv) = &*output;
                    let mut text = text.lock().unwrap();
                    if let Some(alone) = &alone {
                        alone.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    text.push_str(&String::from_utf8_lossy(&buf[..n]));
                    drop(text);
                    cv.notify_all();
                }
            });
        }
        Live {
            child,
            output,
            stdout,
            what: format!("mirrord-up {}", args.join(" ")),
        }
    }

    pub fn text(&self) -> String {
        self.output.0.lock().unwrap().clone()
    }

    /// What was written to stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Waits until the output holds `needle` `times` times.
    pub fn wait_for_n(&self, needle: &str, times: usize) {
        let (text, cv) = &*self.output;
        let deadline = Instant::now() + LIVE_WAIT;
        let mut guard = text.lock().unwrap();
        while guard.matches(needle).count() < times {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "`{}` did not print {needle:?} ×{times} within {LIVE_WAIT:?}; output:\n{}",
                    self.what, *guard
                );
            }
            guard = cv.wait_timeout(guard, left).unwrap().0;
        }
    }

    pub fn wait_for(&self, needle: &str) {
        self.wait_for_n(needle, 1);
    }

    pub fn signal(&self, sig: Signal) {
        nix::sys::signal::kill(Pid::from_raw(self.child.id() as i32), sig)
            .expect("signal mirrord-up");
    }

    /// Still running (it has not ended by itself).
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for the exit (with a deadline); the exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() >= deadline {
                panic!(
                    "`{}` did not exit within {within:?}; output:\n{}",
                    self.what,
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of mirrord's help text (the `help:` block and its GENERAL_HELP) that a cause must not
/// carry: mirrord-up shows the cause of a report, never its help.
pub const MIRRORD_HELP: &[&str] = &["help:", "If you're still stuck", "kubectl get pods", ">>"];

/// Fails if `text` shows any line of mirrord's help text.
pub fn assert_no_mirrord_help(text: &str) {
    for h in MIRRORD_HELP {
        assert!(
            !text.contains(h),
            "mirrord's help text `{h}` shown:\n{text}"
        );
    }
}

/// The command as a user's shell would run it: colours not turned off, a capable terminal.
pub fn as_user(p: &Project, args: &[&str]) -> Command {
    let mut cmd = p.command(args);
    cmd.env_remove("NO_COLOR").env("TERM", "xterm");
    cmd
}
