//! Readline's Ctrl-U and Ctrl-W in the wizard's prompts. inquire (0.7.5, and 0.9 alike) types
//! a `u` or a `w` for them. While the wizard runs, its stdin is a pseudo-terminal fed by a
//! thread that copies the user's keys and spells those two as keys inquire knows: Ctrl-U as
//! one Backspace per character typed so far (a Backspace at the start of the line does
//! nothing), Ctrl-W as Ctrl+Left then Ctrl+Delete (the word before the cursor). The real
//! terminal's input is raw meanwhile (its output is left as it is), and everything is put back
//! when the guard is dropped.

use std::os::fd::{AsFd, OwnedFd};
use std::thread::JoinHandle;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{self, LocalFlags, SetArg, Termios};

const CTRL_U: u8 = 0x15;
const CTRL_W: u8 = 0x17;
const BACKSPACE: u8 = 0x7f;
/// Ctrl+Left, Ctrl+Delete (xterm).
const PREVIOUS_WORD: &[u8] = b"\x1b[1;5D\x1b[3;5~";
/// No line of the wizard is longer.
const MAX_LINE: usize = 512;

pub struct LineKeys {
    /// The real terminal, as fd 0 was before.
    real: OwnedFd,
    saved: Termios,
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

/// Swaps stdin for the translating pseudo-terminal; `None` (nothing changed) if that fails.
pub fn install() -> Option<LineKeys> {
    let stdin = std::io::stdin();
    let real = stdin.as_fd().try_clone_to_owned().ok()?;
    let saved = termios::tcgetattr(&real).ok()?;
    let mut pty_mode = saved.clone();
    termios::cfmakeraw(&mut pty_mode);
    let pty = nix::pty::openpty(None, Some(&pty_mode)).ok()?;
    let (stop_read, stop) = nix::unistd::pipe().ok()?;
    // The user's keys reach the thread at once and unechoed; output processing stays.
    let mut input_raw = saved.clone();
    input_raw
        .local_flags
        .remove(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG | LocalFlags::IEXTEN);
    input_raw.input_flags.remove(
        termios::InputFlags::ICRNL | termios::InputFlags::IXON | termios::InputFlags::INLCR,
    );
    input_raw.control_chars[termios::SpecialCharacterIndices::VMIN as usize] = 1;
    input_raw.control_chars[termios::SpecialCharacterIndices::VTIME as usize] = 0;
    termios::tcsetattr(&real, SetArg::TCSANOW, &input_raw).ok()?;
    if nix::unistd::dup2_stdin(&pty.slave).is_err() {
        let _ = termios::tcsetattr(&real, SetArg::TCSANOW, &saved);
        return None;
    }
    let from = real.try_clone().ok()?;
    let master = pty.master;
    let thread = std::thread::spawn(move || copy_keys(&from, &master, &stop_read));
    Some(LineKeys {
        real,
        saved,
        stop,
        thread: Some(thread),
    })
}

fn copy_keys(from: &OwnedFd, to: &OwnedFd, stop: &OwnedFd) {
    let mut typed = 0usize;
    let mut buf = [0u8; 256];
    loop {
        let mut fds = [
            PollFd::new(from.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            return;
        }
        if fds[1].any().unwrap_or(true) {
            return;
        }
        let n = match nix::unistd::read(from, &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut out = Vec::with_capacity(n);
        for &b in &buf[..n] {
            match b {
                CTRL_U => out.extend(std::iter::repeat_n(BACKSPACE, typed.min(MAX_LINE))),
                CTRL_W => out.extend_from_slice(PREVIOUS_WORD),
                b if b >= 0x20 && b != BACKSPACE => {
                    typed += 1;
                    out.push(b);
                }
                b => out.push(b),
            }
        }
        if nix::unistd::write(to, &out).is_err() {
            return;
        }
    }
}

impl Drop for LineKeys {
    fn drop(&mut self) {
        let _ = nix::unistd::write(&self.stop, b"x");
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = nix::unistd::dup2_stdin(&self.real);
        let _ = termios::tcsetattr(&self.real, SetArg::TCSANOW, &self.saved);
    }
}
