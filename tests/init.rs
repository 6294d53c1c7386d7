//! `init` end to end: the real binary on a pseudo-terminal, driven like a user would (wait for
//! each prompt, then type), writing exactly `fixtures/init/expected.yaml`; the refusal without a
//! terminal; and an existing file surviving a "no" to "Overwrite?".
//!
//! The pty is plain `openpty` from nix, so no tmux or expect is needed. Every wait has a deadline
//! and ends as soon as the awaited text arrives; nothing sleeps to synchronise.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::pty::{Winsize, openpty};

const BIN: &str = env!("CARGO_BIN_EXE_mirrord-up");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// How long one prompt may take to appear before the test fails.
const PROMPT_TIMEOUT: Duration = Duration::from_secs(15);

const ENTER: &str = "\r";
const DOWN: &str = "\x1b[B";
const BACKSPACE: &str = "\x7f";

/// openpty's descriptors are inheritable until marked close-on-exec: a child spawned by a
/// parallel test in that window would keep this terminal open, and its EOF would never come.
static SPAWN: Mutex<()> = Mutex::new(());

/// Kills (by its PID) and reaps the child when the test ends early.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// `mirrord-up` running on a pseudo-terminal, with everything it printed so far.
struct Session {
    child: KillOnDrop,
    keys: File,
    output: Receiver<Vec<u8>>,
    raw: Vec<u8>,
    /// Byte offset in `visible(raw)` up to which the output has been matched.
    seen: usize,
}

/// Which of stdin and stdout are the terminal (stderr always is: the refusal is printed there);
/// the others are pipes.
#[derive(Clone, Copy)]
struct Streams {
    stdin_tty: bool,
    stdout_tty: bool,
}

const ALL_TTY: Streams = Streams {
    stdin_tty: true,
    stdout_tty: true,
};

impl Session {
    fn start(dir: &Path, args: &[&str], streams: Streams) -> Session {
        let guard = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        let size = Winsize {
            ws_row: 50,
            ws_col: 200,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).expect("openpty");
        for fd in [&pty.master, &pty.slave] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).expect("FD_CLOEXEC");
        }
        let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup slave"));
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(dir)
            .env("TERM", "xterm")
            .env_remove("NO_COLOR")
            .env_remove("MIRRORD_UP_FILE")
            .stdin(if streams.stdin_tty {
                slave(&pty.slave)
            } else {
                Stdio::piped()
            })
            .stdout(if streams.stdout_tty {
                slave(&pty.slave)
            } else {
                Stdio::piped()
            })
            .stderr(slave(&pty.slave));
        // A session of its own with this terminal as the controlling one, as in a shell.
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if nix::libc::setsid() == -1
                    || nix::libc::ioctl(2, nix::libc::TIOCSCTTY as _, 0) == -1
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = KillOnDrop(cmd.spawn().expect("spawn mirrord-up"));
        // Our copies of the slave must go, or the master never sees EOF when the child exits.
        drop(cmd);
        drop(pty.slave);
        drop(guard);

        let master = File::from(pty.master);
        let keys = master.try_clone().expect("dup master");
        let answers = master.try_clone().expect("dup master");
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || read_terminal(master, answers, tx));
        Session {
            child,
            keys,
            output,
            raw: Vec::new(),
            seen: 0,
        }
    }

    /// Waits until `needle` appears after everything matched so far.
    #[track_caller]
    fn expect(&mut self, needle: &str) {
        let deadline = Instant::now() + PROMPT_TIMEOUT;
        loop {
            let text = visible(&self.raw);
            if let Some(at) = text[self.seen..].find(needle) {
                self.seen += at + needle.len();
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => self.raw.extend_from_slice(&bytes),
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no {needle:?} within {PROMPT_TIMEOUT:?}; the terminal shows:\n{}",
                    self.tail()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "mirrord-up closed the terminal before {needle:?}; it showed:\n{}",
                    self.tail()
                ),
            }
        }
    }

    fn send(&mut self, keys: &str) {
        self.keys.write_all(keys.as_bytes()).expect("type");
        self.keys.flush().expect("type");
    }

    /// Waits for `prompt`, then types `keys`.
    #[track_caller]
    fn answer(&mut self, prompt: &str, keys: &str) {
        self.expect(prompt);
        self.send(keys);
    }

    /// Waits until the child has closed the terminal and exited; returns its status and the
    /// whole visible transcript.
    #[track_caller]
    fn finish(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + PROMPT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => self.raw.extend_from_slice(&bytes),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "mirrord-up did not exit within {PROMPT_TIMEOUT:?}; the terminal shows:\n{}",
                    self.tail()
                ),
            }
        }
        let status = self.child.0.wait().expect("wait");
        (status, visible(&self.raw))
    }

    fn tail(&self) -> String {
        let text = visible(&self.raw);
        let start = text.len().saturating_sub(3000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text[start..].to_owned()
    }
}

/// Forwards what the child writes, and answers cursor-position queries (`ESC[6n`) as a terminal
/// would: crossterm's `cursor::position()` blocks until the report arrives. inquire 0.7.5 does
/// not ask, but a backend that does must not hang the test.
fn read_terminal(mut master: File, mut answers: File, tx: mpsc::Sender<Vec<u8>>) {
    const QUERY: &[u8] = b"\x1b[6n";
    let mut carry: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO: every slave descriptor is closed, the child is gone.
            Err(_) => break,
        };
        carry.extend_from_slice(&buf[..n]);
        let queries = carry.windows(QUERY.len()).filter(|w| *w == QUERY).count();
        for _ in 0..queries {
            let _ = answers.write_all(b"\x1b[1;1R");
        }
        // Keep just enough to recognise a query split across two reads, but not a whole one.
        let keep = carry.len().min(QUERY.len() - 1);
        carry.drain(..carry.len() - keep);
        if tx.send(buf[..n].to_vec()).is_err() {
            break;
        }
    }
}

/// The text a user would read: escape sequences and carriage returns removed. Only the longest
/// valid UTF-8 prefix is used, so that the text only ever grows at its end.
fn visible(raw: &[u8]) -> String {
    let valid = match std::str::from_utf8(raw) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&raw[..e.valid_up_to()]).expect("valid prefix"),
    };
    let mut out = String::with_capacity(valid.len());
    let mut chars = valid.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters, then one final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' {
                            chars.next();
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// `mirrord-up check -f <file>` accepts the file (killed if it takes too long).
fn check_accepts(dir: &Path, file: &str) {
    let out = {
        let _guard = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        assert_cmd::Command::new(BIN)
            .args(["-k", "alice", "-f", file, "check"])
            .current_dir(dir)
            .env_remove("MIRRORD_UP_FILE")
            .timeout(PROMPT_TIMEOUT)
            .output()
            .expect("run check")
    };
    assert!(
        out.status.success(),
        "check refused {file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Answers the three common questions with the defaults.
fn default_common(s: &mut Session) {
    s.answer("Use the mirrord operator?", ENTER);
    s.answer("Accept invalid TLS certificates for the operator?", ENTER);
    s.answer("Enable anonymous telemetry?", ENTER);
}

#[test]
fn wizard_on_a_terminal_writes_the_pinned_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::start(dir.path(), &["init", "-o", "custom.yaml"], ALL_TTY);

    s.expect("--- Step 1: Common settings (apply to all services) ---");
    s.answer("Use the mirrord operator?", ENTER);
    s.answer(
        "Accept invalid TLS certificates for the operator?",
        &format!("y{ENTER}"),
    );
    s.answer("Enable anonymous telemetry?", &format!("n{ENTER}"));

    s.expect("--- Step 2: Services ---");
    // api: split, a specified target and namespace, a header filter, Istio ports, two env
    // overrides, a quoted command (first with an unbalanced quote).
    s.answer("Service name:", ENTER);
    s.answer("name cannot be empty", &format!("api{ENTER}"));
    s.answer("Mode:", ENTER);
    s.answer("Target:", &format!("{DOWN}{ENTER}"));
    s.answer(
        "Target path",
        &format!("deployment/api/container/main{ENTER}"),
    );
    s.answer(
        "Namespace (blank for cluster default):",
        &format!("staging{ENTER}"),
    );
    s.answer(
        "HTTP header filter (regex; blank for auto session-key filter):",
        &format!("x-session: alice{ENTER}"),
    );
    s.answer(
        "Ports to ignore (sidecar ports, etc.):",
        &format!("{DOWN}{ENTER}"),
    );
    s.answer(
        "Add an env-var override for the local process?",
        &format!("y{ENTER}"),
    );
    s.answer("Variable name:", &format!("LOG_LEVEL{ENTER}"));
    s.answer("Value:", &format!("debug{ENTER}"));
    s.answer(
        "Add an env-var override for the local process?",
        &format!("y{ENTER}"),
    );
    s.answer("Variable name:", &format!("GREETING{ENTER}"));
    s.answer("Value:", &format!("hello world{ENTER}"));
    s.answer(
        "Add an env-var override for the local process?",
        &format!("n{ENTER}"),
    );
    s.answer("Run with `mirrord exec` or `mirrord container`?", ENTER);
    s.answer(
        "Local command (e.g. `go run ./cmd/api`):",
        &format!("sh -c \"echo hi{ENTER}"),
    );
    s.answer("unbalanced quote", &format!("\"{ENTER}"));
    s.answer("Add another service?", &format!("y{ENTER}"));

    // worker: the name taken first, targetless, custom ports (first out of range), a container.
    s.answer("Service name:", &format!("api{ENTER}"));
    s.answer(
        "a service with that name already exists",
        &format!("{}worker{ENTER}", BACKSPACE.repeat(3)),
    );
    s.answer("Mode:", ENTER);
    s.answer("Target:", &format!("{DOWN}{DOWN}{ENTER}"));
    s.answer(
        "HTTP header filter (regex; blank for auto session-key filter):",
        ENTER,
    );
    s.answer(
        "Ports to ignore (sidecar ports, etc.):",
        &format!("{DOWN}{DOWN}{DOWN}{ENTER}"),
    );
    s.answer("Comma-separated ports:", &format!("70000{ENTER}"));
    s.answer(
        "`70000` is not a valid u16 port",
        &format!("{}9000, 8080{ENTER}", BACKSPACE.repeat(5)),
    );
    s.answer("Add an env-var override for the local process?", ENTER);
    s.answer(
        "Run with `mirrord exec` or `mirrord container`?",
        &format!("{DOWN}{ENTER}"),
    );
    s.answer(
        "Local command (e.g. `go run ./cmd/api`):",
        &format!("docker run --rm -p 8080:8080 web:latest{ENTER}"),
    );
    s.answer("Add another service?", &format!("y{ENTER}"));

    // billing: replace mode, so no header filter question; inferred target in a namespace.
    s.answer("Service name:", &format!("billing{ENTER}"));
    s.answer("Mode:", &format!("{DOWN}{ENTER}"));
    s.answer("Target:", ENTER);
    s.answer(
        "Namespace (blank for cluster default):",
        &format!("payments{ENTER}"),
    );
    s.answer("Ports to ignore (sidecar ports, etc.):", ENTER);
    s.answer("Add an env-var override for the local process?", ENTER);
    s.answer("Run with `mirrord exec` or `mirrord container`?", ENTER);
    s.answer(
        "Local command (e.g. `go run ./cmd/api`):",
        &format!("./billing --verbose{ENTER}"),
    );
    s.answer("Add another service?", ENTER);

    s.expect("--- Step 3: Preview ---");
    s.answer("Save configuration to a file?", ENTER);
    s.answer("Enter filename:", ENTER);
    s.expect("Wrote custom.yaml.");
    let (status, transcript) = s.finish();
    assert!(status.success(), "{status}\n{transcript}");

    let expected = std::fs::read_to_string(Path::new(REPO).join("fixtures/init/expected.yaml"))
        .expect("fixture");
    let written = std::fs::read_to_string(dir.path().join("custom.yaml")).expect("written file");
    assert_eq!(
        written, expected,
        "the written file differs from the fixture"
    );
    let preview = transcript
        .split("--- Step 3: Preview ---\n")
        .nth(1)
        .expect("preview");
    assert!(preview.starts_with(&expected), "preview:\n{preview}");
    check_accepts(dir.path(), "custom.yaml");
}

#[test]
fn without_a_terminal_init_explains_how_to_write_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let expect_refusal = |code: Option<i32>, text: &str| {
        assert_eq!(code, Some(1), "{text}");
        for part in [
            "needs a terminal",
            "by hand",
            "\"YAML reference\" section of README.md",
            "mirrord-up schema",
        ] {
            assert!(text.contains(part), "missing {part:?} in:\n{text}");
        }
    };

    for streams in [
        Streams {
            stdin_tty: false,
            stdout_tty: true,
        },
        Streams {
            stdin_tty: true,
            stdout_tty: false,
        },
    ] {
        let s = Session::start(dir.path(), &["init"], streams);
        let (status, transcript) = s.finish();
        expect_refusal(status.code(), &transcript);
        assert!(!transcript.contains("Welcome"), "{transcript}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn an_existing_file_is_kept_when_overwrite_is_declined() {
    let dir = tempfile::tempdir().unwrap();
    let original =
        "# hand-written, keep me\nservices:\n  keep:\n    run:\n      command: [\"true\"]\n";
    std::fs::write(dir.path().join("mirrord-up.yaml"), original).unwrap();

    let mut s = Session::start(dir.path(), &["init"], ALL_TTY);
    default_common(&mut s);
    s.answer("Service name:", &format!("api{ENTER}"));
    s.answer("Mode:", ENTER);
    s.answer("Target:", ENTER);
    s.answer("Namespace (blank for cluster default):", ENTER);
    s.answer(
        "HTTP header filter (regex; blank for auto session-key filter):",
        ENTER,
    );
    s.answer("Ports to ignore (sidecar ports, etc.):", ENTER);
    s.answer("Add an env-var override for the local process?", ENTER);
    s.answer("Run with `mirrord exec` or `mirrord container`?", ENTER);
    s.answer(
        "Local command (e.g. `go run ./cmd/api`):",
        &format!("go run .{ENTER}"),
    );
    s.answer("Add another service?", ENTER);
    s.answer("Save configuration to a file?", ENTER);
    // The default answer to "Overwrite?" is no, and so is an explicit `n`: both ask again.
    s.answer("Enter filename:", ENTER);
    s.answer("mirrord-up.yaml exists. Overwrite?", ENTER);
    s.answer("Enter filename:", ENTER);
    s.answer("mirrord-up.yaml exists. Overwrite?", &format!("n{ENTER}"));
    s.answer("Enter filename:", &format!("other.yaml{ENTER}"));
    s.expect("Wrote other.yaml.");
    let (status, transcript) = s.finish();
    assert!(status.success(), "{status}\n{transcript}");

    let kept = std::fs::read_to_string(dir.path().join("mirrord-up.yaml")).unwrap();
    assert_eq!(kept, original, "the existing file was changed");
    let other = std::fs::read_to_string(dir.path().join("other.yaml")).unwrap();
    assert_eq!(
        other,
        "services:\n  api:\n    default_mode: split\n    skip: false\n    run:\n      type: exec\n      command: [\"go\", \"run\", \".\"]\n"
    );
    check_accepts(dir.path(), "other.yaml");
}

#[test]
fn ctrl_c_writes_nothing_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::start(dir.path(), &["init"], ALL_TTY);
    s.answer("Use the mirrord operator?", "\x03");
    s.expect("No file written.");
    let (status, transcript) = s.finish();
    assert_eq!(status.code(), Some(130), "{transcript}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
