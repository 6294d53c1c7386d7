//! The binary on a pseudo-terminal, for the tests that need one (`init`'s prompts, the live
//! progress display): plain `posix_openpt` from nix, so no tmux or expect is needed. Every wait
//! has a deadline and ends as soon as the awaited text arrives; nothing sleeps to synchronise.
//!
//! Both ends of the terminal are opened close-on-exec from the start: a child spawned by a
//! parallel test in between would otherwise inherit them, keep the terminal open, and its EOF
//! would never come.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::pty::{Winsize, grantpt, posix_openpt, ptsname_r, unlockpt};

/// The terminal's size: wide enough that no line of the tests wraps.
pub const ROWS: u16 = 50;
pub const COLS: u16 = 200;

/// How long one awaited text may take to appear before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(30);

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

/// Which of stdin and stdout are the terminal (stderr always is); the others are pipes.
#[derive(Clone, Copy)]
pub struct Streams {
    pub stdin_tty: bool,
    pub stdout_tty: bool,
}

pub const ALL_TTY: Streams = Streams {
    stdin_tty: true,
    stdout_tty: true,
};

/// A command running on a pseudo-terminal, with everything it printed so far.
pub struct Session {
    child: KillOnDrop,
    keys: File,
    output: Receiver<Vec<u8>>,
    raw: Vec<u8>,
    /// Byte offset in `visible(raw)` up to which the output has been matched.
    seen: usize,
}

/// A new terminal: its master and its slave, both close-on-exec, the slave not yet anybody's
/// controlling terminal.
fn open_terminal() -> (File, OwnedFd) {
    let master =
        posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).expect("posix_openpt");
    let flags = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFD).expect("F_GETFD");
    assert_ne!(
        flags & nix::libc::FD_CLOEXEC,
        0,
        "posix_openpt ignored O_CLOEXEC"
    );
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname_r(&master).expect("ptsname");
    // std opens every file close-on-exec.
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(&name)
        .unwrap_or_else(|e| panic!("open {name}: {e}"));
    let size = Winsize {
        ws_row: ROWS,
        ws_col: COLS,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call.
    let set = unsafe { nix::libc::ioctl(slave.as_raw_fd(), nix::libc::TIOCSWINSZ, &size) };
    assert_eq!(set, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    (File::from(OwnedFd::from(master)), OwnedFd::from(slave))
}

impl Session {
    /// Runs `cmd` with stderr (and, as `streams` says, stdin and stdout) on a new terminal, in
    /// a session of its own with that terminal as the controlling one, as in a shell.
    pub fn start(mut cmd: Command, streams: Streams) -> Session {
        let (master, slave) = open_terminal();
        let tty = || Stdio::from(slave.try_clone().expect("dup slave"));
        cmd.stdin(if streams.stdin_tty {
            tty()
        } else {
            Stdio::piped()
        })
        .stdout(if streams.stdout_tty {
            tty()
        } else {
            Stdio::piped()
        })
        .stderr(tty());
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
        let child = KillOnDrop(cmd.spawn().expect("spawn on the terminal"));
        // Our copies of the slave must go, or the master never sees EOF when the child exits.
        drop(cmd);
        drop(slave);

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

    /// The program's PID (to signal it as a terminal would).
    pub fn pid(&self) -> i32 {
        self.child.0.id() as i32
    }

    /// Waits until `needle` appears after everything matched so far.
    #[track_caller]
    pub fn expect(&mut self, needle: &str) {
        let deadline = Instant::now() + TIMEOUT;
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
                    "no {needle:?} within {TIMEOUT:?}; the terminal shows:\n{}",
                    self.tail()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "the program closed the terminal before {needle:?}; it showed:\n{}",
                    self.tail()
                ),
            }
        }
    }

    pub fn send(&mut self, keys: &str) {
        self.keys.write_all(keys.as_bytes()).expect("type");
        self.keys.flush().expect("type");
    }

    /// Waits for `prompt`, then types `keys`.
    #[track_caller]
    pub fn answer(&mut self, prompt: &str, keys: &str) {
        self.expect(prompt);
        self.send(keys);
    }

    /// Waits until the child has closed the terminal and exited; returns its status and every
    /// byte it wrote to the terminal.
    #[track_caller]
    pub fn finish_raw(mut self) -> (ExitStatus, Vec<u8>) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => self.raw.extend_from_slice(&bytes),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "the program did not exit within {TIMEOUT:?}; the terminal shows:\n{}",
                    self.tail()
                ),
            }
        }
        let status = self.child.0.wait().expect("wait");
        (status, std::mem::take(&mut self.raw))
    }

    /// `finish_raw`, with the transcript as `visible` text.
    #[track_caller]
    pub fn finish(self) -> (ExitStatus, String) {
        let (status, raw) = self.finish_raw();
        (status, visible(&raw))
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

/// The longest valid UTF-8 prefix, so that text decoded from a growing transcript only ever
/// grows at its end.
fn valid_prefix(raw: &[u8]) -> &str {
    match std::str::from_utf8(raw) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&raw[..e.valid_up_to()]).expect("valid prefix"),
    }
}

/// One escape sequence after its ESC: a CSI's parameters and final byte, or an OSC (skipped,
/// reported as `None`).
fn escape(chars: &mut std::str::Chars<'_>) -> Option<(String, char)> {
    match chars.next() {
        // CSI: parameters, then one final byte in @..~.
        Some('[') => {
            let mut params = String::new();
            for c in chars.by_ref() {
                if ('\x40'..='\x7e').contains(&c) {
                    return Some((params, c));
                }
                params.push(c);
            }
            None
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
            None
        }
        _ => None,
    }
}

/// The text a user would read scrolling by: escape sequences and carriage returns removed
/// (what was later redrawn is still there).
pub fn visible(raw: &[u8]) -> String {
    let valid = valid_prefix(raw);
    let mut out = String::with_capacity(valid.len());
    let mut chars = valid.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                escape(&mut chars);
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// What the terminal shows once `raw` has been written to it, scrollback included, one string
/// per row with trailing blanks trimmed and trailing empty rows dropped. Enough of a VT100 for
/// lines that are redrawn in place: carriage return, line feed, auto-wrap (deferred at the last
/// column, as xterm does), cursor up/down/column, erase in line. Colours are ignored; every
/// character is taken as one column wide.
pub fn screen(raw: &[u8]) -> Vec<String> {
    let cols = usize::from(COLS);
    let mut rows: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col, mut wrap_pending) = (0usize, 0usize, false);
    let mut chars = valid_prefix(raw).chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                let Some((params, op)) = escape(&mut chars) else {
                    continue;
                };
                let n = params.parse::<usize>().unwrap_or(1).max(1);
                match op {
                    'A' => row = row.saturating_sub(n),
                    'B' => row += n,
                    'G' => col = (n - 1).min(cols - 1),
                    'K' => {
                        let line = &mut rows[row];
                        match params.as_str() {
                            "" | "0" => line.truncate(col),
                            "1" => line.iter_mut().take(col + 1).for_each(|c| *c = ' '),
                            _ => line.clear(),
                        }
                    }
                    _ => continue, // colours, modes
                }
                wrap_pending = false;
            }
            '\r' => {
                col = 0;
                wrap_pending = false;
            }
            '\n' => {
                row += 1;
                wrap_pending = false;
            }
            '\x08' => {
                col = col.saturating_sub(1);
                wrap_pending = false;
            }
            c if c.is_control() => {}
            c => {
                if wrap_pending {
                    row += 1;
                    col = 0;
                    wrap_pending = false;
                }
                if rows.len() <= row {
                    rows.resize(row + 1, Vec::new());
                }
                let line = &mut rows[row];
                if line.len() <= col {
                    line.resize(col + 1, ' ');
                }
                line[col] = c;
                if col + 1 == cols {
                    wrap_pending = true;
                } else {
                    col += 1;
                }
            }
        }
        if rows.len() <= row {
            rows.resize(row + 1, Vec::new());
        }
    }
    let mut out: Vec<String> = rows
        .into_iter()
        .map(|r| r.into_iter().collect::<String>().trim_end().to_owned())
        .collect();
    while out.last().is_some_and(String::is_empty) {
        out.pop();
    }
    out
}

/// Runs `cmd` on a terminal (stdin, stdout and stderr); its exit code and every byte written.
pub fn on_terminal(cmd: Command) -> (Option<i32>, Vec<u8>) {
    let (status, raw) = Session::start(cmd, ALL_TTY).finish_raw();
    (status.code(), raw)
}
