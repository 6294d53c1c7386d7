//! Issue 15, items 6–8, with real processes: the control socket of a real detached supervisor
//! (`up -d --launcher local`) under hostile clients, `ci start` output directories next to
//! another user's, and symbolic links or foreign directories planted in the state directory.
//!
//! Tests that need another UID (chown to 65534, setuid) run as root; they are skipped when not
//! root, and fail then under `CI=true`.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Project, Running, alive, service, wait_until, yaml};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether a root-only test may run; under `CI=true` not being root is a failure.
fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs root (chown/setuid) and CI=true is set"
    );
    eprintln!("skipping {test}: not root");
    false
}

// ---------------------------------------------------------------------------------------------
// A detached supervisor

fn project(name: &str) -> Project {
    let mut p = Project::new(name);
    p.globals = vec!["--launcher".into(), "local".into()];
    p.write_yaml(&yaml(&[service("web", common::SLEEP, &[])]));
    p
}

/// `up -d` with extra environment for the supervisor it starts; returns the supervisor's PID.
fn up_detached(p: &Project, env: &[(&str, &str)]) -> i32 {
    let mut cmd = p.command(&["up", "-d"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = Running::start(cmd, "mirrord-up up -d".into()).wait();
    assert_eq!(out.code, Some(0), "up -d: {out}");
    p.supervisor_pid().expect("a supervisor is recorded")
}

fn socket(p: &Project) -> PathBuf {
    p.state_dir.join("supervisor.sock")
}

/// `VmHWM` (peak resident set) of `pid`, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Sends `bytes` on a new connection (a write the server cut short is fine) and reads until
/// the server closes, within `WAIT`.
fn talk(sock: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let r = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    if let Err(e) = r {
        assert!(
            e.kind() == std::io::ErrorKind::ConnectionReset,
            "no answer within {WAIT:?} to {:?}: {e} (got {text:?})",
            String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
        );
    }
    text
}

/// The final `done` line of a conversation.
fn done_of(text: &str) -> (bool, String) {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| {
            let d = v.get("done")?;
            Some((d["ok"].as_bool()?, d["message"].as_str()?.to_owned()))
        })
        .unwrap_or_else(|| panic!("no done line in {text:?}"))
}

fn assert_answers(p: &Project, sup: i32) {
    assert!(alive(sup), "the supervisor died");
    let log = p.supervisor_log();
    assert!(!log.contains("panicked"), "supervisor.log: {log}");
    // `restart` goes through the socket.
    let out = p.ok(&["restart", "web"]);
    assert!(
        out.stderr.contains("web") || out.stdout.contains("web"),
        "{out}"
    );
}

fn down(p: &Project, sup: i32) {
    p.ok(&["down", "-t", "1"]);
    wait_until("the supervisor exits", WAIT, || !alive(sup));
}

// ---------------------------------------------------------------------------------------------
// 15.6 The control socket

#[test]
fn a_64_mb_request_line_is_refused_without_buffering_it() {
    let p = project("bigline");
    let sup = up_detached(&p, &[]);
    let before = peak_rss_kib(sup);
    let mut line = vec![b'x'; 64 << 20];
    line.push(b'\n');
    let text = talk(&socket(&p), &line);
    let after = peak_rss_kib(sup);
    assert!(
        after < before + 16 * 1024,
        "the supervisor's peak RSS grew from {before} KiB to {after} KiB"
    );
    let (ok, message) = done_of(&text);
    assert!(!ok && message.contains("too large"), "{message}");
    // A following `up -d`, `ps` and `down` work.
    p.ok(&["up", "-d"]);
    assert_eq!(p.ps_map()["web"]["status"], "running");
    assert_answers(&p, sup);
    down(&p, sup);
}

#[test]
fn garbage_requests_get_errors_and_never_panic_the_supervisor() {
    let p = project("garbage");
    let sup = up_detached(&p, &[]);
    let file = p.yaml.display().to_string();
    let apply = |wait_timeout: &str| {
        format!(
            r#"{{"op":"apply","file":{},"services":[],"mode":null,"force_recreate":false,"wait":true,"wait_timeout_s":{wait_timeout}}}"#,
            serde_json::to_string(&file).unwrap()
        )
    };
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let mut payloads: Vec<Vec<u8>> = [
        // The two that panicked a connection task: seconds past Duration's range.
        apply("1e300"),
        r#"{"op":"shutdown","timeout_s":1e300}"#.to_owned(),
        // Past Instant's range, negative, and out of f64's.
        apply("1e19"),
        r#"{"op":"restart","services":["web"],"timeout_s":1e18}"#.to_owned(),
        r#"{"op":"stop","services":["web"],"timeout_s":-5}"#.to_owned(),
        r#"{"op":"stop","services":["web"],"timeout_s":1e400}"#.to_owned(),
        // Wrong types and shapes.
        r#"{"op":"stop","services":"web"}"#.to_owned(),
        r#"{"op":5}"#.to_owned(),
        r#"{"op":"explode"}"#.to_owned(),
        r#"{"services":[]}"#.to_owned(),
        "{}".to_owned(),
        "[]".to_owned(),
        "null".to_owned(),
        "\"shutdown\"".to_owned(),
        "18446744073709551616".to_owned(),
        r#"{"op":"start","services":[1,2,3]}"#.to_owned(),
        r#"{"op":"start","services":["no-such-service"]}"#.to_owned(),
        // Deep nesting, an empty line, a lone carriage return.
        deep,
        String::new(),
        "\r".to_owned(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    // Invalid UTF-8, and a NUL byte.
    payloads.push(b"{\"op\":\"\xff\xfe\"}".to_vec());
    payloads.push(b"{\"op\":\"start\",\"services\":[\"a\0b\"]}".to_vec());
    for payload in &payloads {
        let mut line = payload.clone();
        line.push(b'\n');
        let text = talk(&socket(&p), &line);
        let (ok, message) = done_of(&text);
        let shown = String::from_utf8_lossy(&payload[..payload.len().min(80)]).into_owned();
        assert!(!ok, "{shown:?} was accepted: {message}");
        assert!(message.len() < 1000, "{shown:?}: a long message: {message}");
        assert!(alive(sup), "{shown:?} killed the supervisor");
    }
    assert_eq!(p.ps_map()["web"]["status"], "running");
    assert_answers(&p, sup);
    down(&p, sup);
}

#[test]
fn accept_errors_from_fd_exhaustion_do_not_end_the_listener() {
    let p = project("fds");
    let sup = up_detached(&p, &[("MIRRORD_UP_TEST_IDLE_MS", "60000")]);
    let open = std::fs::read_dir(format!("/proc/{sup}/fd"))
        .unwrap()
        .count() as u64;
    let limit = nix::libc::rlimit {
        rlim_cur: open + 6,
        rlim_max: open + 6,
    };
    let mut old = nix::libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain prlimit(2) on a process this test started; both pointers are valid.
    let r = unsafe { nix::libc::prlimit(sup, nix::libc::RLIMIT_NOFILE, &limit, &mut old) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    // More connections than descriptors left: the backlog takes them, accept fails.
    let conns: Vec<UnixStream> = (0..16)
        .map(|_| UnixStream::connect(socket(&p)).expect("connect"))
        .collect();
    wait_until("the supervisor reports an accept error", WAIT, || {
        p.supervisor_log().contains("cannot accept")
    });
    drop(conns);
    // The limit stays low: what the closed connections held is enough again.
    wait_until("the supervisor accepts again", WAIT, || {
        p.supervisor_log()
            .contains("accepting control connections again")
    });
    down(&p, sup);
    assert!(!p.supervisor_log().contains("panicked"));
}

#[test]
fn idle_and_partial_connections_are_closed_after_the_timeout() {
    let p = project("idle");
    let sup = up_detached(&p, &[("MIRRORD_UP_TEST_IDLE_MS", "300")]);
    // Nothing at all, then half a request without its newline.
    for bytes in [&b""[..], br#"{"op":"shutdown""#] {
        let mut s = UnixStream::connect(socket(&p)).unwrap();
        s.write_all(bytes).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out)
            .expect("the supervisor closes an idle connection");
        let (ok, message) = done_of(&out);
        assert!(!ok && message.contains("no complete request"), "{message}");
    }
    assert_answers(&p, sup);
    down(&p, sup);
}

#[test]
fn connections_beyond_the_limit_are_told_busy_and_do_not_wedge_it() {
    let p = project("busy");
    let sup = up_detached(&p, &[("MIRRORD_UP_TEST_IDLE_MS", "60000")]);
    let max = 32; // control::MAX_CONNECTIONS
    let conns: Vec<UnixStream> = (0..max + 8)
        .map(|_| UnixStream::connect(socket(&p)).expect("connect"))
        .collect();
    // Accepted in order: the last 8 find every slot taken.
    for c in &conns[max..] {
        let mut c = c;
        c.set_read_timeout(Some(WAIT)).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out)
            .expect("a connection over the limit is answered and closed");
        let (ok, message) = done_of(&out);
        assert!(!ok && message.contains("busy"), "{message}");
    }
    drop(conns);
    // The slots come back as the idle connections are closed by their clients.
    wait_until("the supervisor answers again", WAIT, || {
        p.run(&["restart", "web"]).code == Some(0)
    });
    p.ok(&["up", "-d"]);
    assert_answers(&p, sup);
    down(&p, sup);
}

/// Resumes a stopped supervisor whatever happens to the test.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

#[test]
fn a_client_fails_clearly_when_the_supervisor_does_not_answer() {
    let p = project("silent");
    let sup = up_detached(&p, &[]);
    kill(Pid::from_raw(sup), Signal::SIGSTOP).unwrap();
    let resume = Resume(sup);
    let client = |args: &[&str]| {
        let mut cmd = p.command(args);
        cmd.env("MIRRORD_UP_TEST_CLIENT_MS", "500");
        let out = Running::start(cmd, format!("{args:?}")).wait();
        assert!(
            out.stderr.contains("did not answer within") && out.stderr.contains("supervisor.log"),
            "{args:?}: {out}"
        );
        assert!(!out.stderr.contains("panicked"), "{out}");
        out
    };
    for args in [&["restart", "web"][..], &["up", "-d"]] {
        let out = client(args);
        assert_eq!(out.code, Some(1), "{args:?}: {out}");
    }
    // `down` then stops the supervisor by signal, and the services from the state.
    let web = p.pids()["web"];
    let out = client(&["down", "-t", "1"]);
    assert_eq!(out.code, Some(0), "{out}");
    drop(resume);
    wait_until("the supervisor is gone", WAIT, || !alive(sup));
    wait_until("web is gone", WAIT, || !alive(web));
}

// ---------------------------------------------------------------------------------------------
// 15.8 The state directory

fn victim(dir: &Path) -> PathBuf {
    let v = dir.join("victim.txt");
    std::fs::write(&v, "precious\n").unwrap();
    v
}

fn make_private_dir(d: &Path) {
    std::fs::create_dir_all(d).unwrap();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn a_symlinked_state_lock_is_refused_and_its_target_untouched() {
    let p = project("locklink");
    let other = tempfile::tempdir().unwrap();
    let v = victim(other.path());
    make_private_dir(&p.state_dir);
    std::os::unix::fs::symlink(&v, p.state_dir.join("state.lock")).unwrap();
    for args in [&["up", "-d"][..], &["down"]] {
        let out = p.run(args);
        assert_eq!(out.code, Some(1), "{args:?}: {out}");
        assert!(
            out.stderr.contains("state.lock") && out.stderr.contains("symbolic link"),
            "{args:?}: {out}"
        );
    }
    assert_eq!(std::fs::read_to_string(&v).unwrap(), "precious\n");
}

#[test]
fn a_symlinked_service_log_is_refused_and_its_target_untouched() {
    let p = project("loglink");
    let other = tempfile::tempdir().unwrap();
    let v = victim(other.path());
    make_private_dir(&p.state_dir.join("logs"));
    std::os::unix::fs::symlink(&v, p.state_dir.join("logs/web.log")).unwrap();
    let out = p.run(&["up", "-d"]);
    assert_ne!(out.code, Some(0), "{out}");
    let all = format!("{}{}", out.stderr, p.supervisor_log());
    assert!(
        all.contains("web.log") && all.contains("symbolic link"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&v).unwrap(), "precious\n");
}

#[test]
fn an_open_project_dir_is_refused_naming_it() {
    let p = project("openproj");
    std::fs::create_dir_all(&p.state_dir).unwrap();
    std::fs::set_permissions(&p.state_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = p.run(&["up", "-d"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains(&p.state_dir.display().to_string())
            && out.stderr.contains("world-writable"),
        "{out}"
    );
    assert!(!p.state_dir.join("state.json").exists());
}

#[test]
fn foreign_project_and_logs_dirs_are_refused_naming_them() {
    if !root_or_skip("foreign_project_and_logs_dirs_are_refused_naming_them") {
        return;
    }
    // A 0755 project dir of ours with someone else's logs/, then a project dir not ours.
    let p = project("foreign");
    let logs = p.state_dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::set_permissions(&p.state_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&logs, Some(NOBODY), Some(NOBODY)).unwrap();
    let out = p.run(&["up", "-d"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains(&logs.display().to_string()) && out.stderr.contains("uid 65534"),
        "{out}"
    );
    std::fs::remove_dir(&logs).unwrap();
    std::os::unix::fs::chown(&p.state_dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let out = p.run(&["up", "-d"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains(&p.state_dir.display().to_string()) && out.stderr.contains("uid 65534"),
        "{out}"
    );
    assert!(!p.state_dir.join("state.json").exists());
}

// ---------------------------------------------------------------------------------------------
// 15.7 `ci start` output directories

/// A `ci start` world: a shared TMPDIR (1777, like /tmp) and per-user state dirs in it.
struct CiWorld {
    root: tempfile::TempDir,
    pids: std::cell::RefCell<Vec<i32>>,
}

impl CiWorld {
    fn new() -> CiWorld {
        let root = tempfile::tempdir().unwrap();
        let tmp = root.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        CiWorld {
            root,
            pids: Default::default(),
        }
    }

    fn tmp(&self) -> PathBuf {
        self.root.path().join("tmp")
    }

    /// `mirrord-up --launcher local --state-dir <tmp>/state-<uid> ci ARGS`, as `uid`.
    fn command(&self, uid: u32, args: &[&str]) -> Command {
        let mut cmd = common::mirrord_up();
        cmd.arg("--launcher")
            .arg("local")
            .arg("--state-dir")
            .arg(self.tmp().join(format!("state-{uid}")))
            .arg("ci")
            .args(args)
            .current_dir(self.tmp())
            .env("TMPDIR", self.tmp());
        if uid != nix::unistd::geteuid().as_raw() {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls (setgroups/setgid/setuid) after fork.
            unsafe {
                cmd.pre_exec(move || {
                    let id = nix::unistd::Gid::from_raw(uid);
                    nix::unistd::setgroups(&[id]).map_err(std::io::Error::from)?;
                    nix::unistd::setgid(id).map_err(std::io::Error::from)?;
                    nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))
                        .map_err(std::io::Error::from)?;
                    Ok(())
                });
            }
        }
        cmd
    }

    fn run(&self, uid: u32, args: &[&str]) -> common::Out {
        let out = Running::start(self.command(uid, args), format!("ci {args:?}")).wait();
        if let Some(pid) = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("child pid: "))
            .and_then(|p| p.trim().parse().ok())
        {
            self.pids.borrow_mut().push(pid);
        }
        out
    }

    /// `ci start -- sleep 1000` as `uid`: its output directory.
    fn start(&self, uid: u32) -> PathBuf {
        let out = self.run(uid, &["start", "--", "sleep", "1000"]);
        assert_eq!(out.code, Some(0), "ci start as uid {uid}: {out}");
        let dir = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("mirrord ci files will be stored in "))
            .unwrap_or_else(|| panic!("no output dir line: {out}"));
        PathBuf::from(dir)
    }
}

impl Drop for CiWorld {
    fn drop(&mut self) {
        for pid in self.pids.borrow().iter() {
            let _ = nix::sys::signal::killpg(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
}

#[test]
fn ci_start_ignores_a_shared_dir_another_user_planted() {
    if !root_or_skip("ci_start_ignores_a_shared_dir_another_user_planted") {
        return;
    }
    let w = CiWorld::new();
    // Another user's world-writable `$TMPDIR/mirrord`, with links where output could go.
    let theirs = w.tmp().join("mirrord");
    std::fs::create_dir(&theirs).unwrap();
    let other = tempfile::tempdir().unwrap();
    let v = victim(other.path());
    std::os::unix::fs::symlink(&v, theirs.join("stdout")).unwrap();
    std::os::unix::fs::symlink(other.path(), theirs.join("sleep")).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o777)).unwrap();

    let dir = w.start(0);
    assert_eq!(dir.parent(), Some(w.tmp().join("mirrord-0").as_path()));
    let meta = std::fs::symlink_metadata(dir.parent().unwrap()).unwrap();
    assert!(meta.is_dir() && meta.permissions().mode() & 0o777 == 0o700);
    assert!(
        std::fs::symlink_metadata(dir.join("stdout"))
            .unwrap()
            .is_file()
    );
    assert_eq!(std::fs::read_to_string(&v).unwrap(), "precious\n");
    assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 1);
    assert_eq!(w.run(0, &["stop"]).code, Some(0));
}

#[test]
fn ci_start_refuses_a_per_user_dir_that_is_not_its_own() {
    if !root_or_skip("ci_start_refuses_a_per_user_dir_that_is_not_its_own") {
        return;
    }
    let w = CiWorld::new();
    let mine = w.tmp().join("mirrord-0");
    // Pre-created by another user, 0777; then a symbolic link to another user's directory.
    std::fs::create_dir(&mine).unwrap();
    std::os::unix::fs::chown(&mine, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = w.run(0, &["start", "--", "sleep", "1000"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains(&mine.display().to_string()) && out.stderr.contains("uid 65534"),
        "{out}"
    );
    assert_eq!(std::fs::read_dir(&mine).unwrap().count(), 0);

    std::fs::remove_dir(&mine).unwrap();
    let elsewhere = w.tmp().join("elsewhere");
    make_private_dir(&elsewhere);
    std::os::unix::fs::symlink(&elsewhere, &mine).unwrap();
    let out = w.run(0, &["start", "--", "sleep", "1000"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("symbolic link"), "{out}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn another_user_can_ci_start_after_root_did() {
    if !root_or_skip("another_user_can_ci_start_after_root_did") {
        return;
    }
    let w = CiWorld::new();
    let root_dir = w.start(0);
    let nobody_dir = w.start(NOBODY);
    assert_eq!(
        nobody_dir.parent(),
        Some(w.tmp().join(format!("mirrord-{NOBODY}")).as_path())
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&nobody_dir).unwrap().uid(), NOBODY);
    assert_eq!(std::fs::metadata(&root_dir).unwrap().uid(), 0);
    assert_eq!(w.run(NOBODY, &["stop"]).code, Some(0));
    assert_eq!(w.run(0, &["stop"]).code, Some(0));
}
