//! The in-session runner (issue #16): `mirrord-up __runner --stop-signal SIG --grace-ms N -- CMD…`.
//!
//! A service with `watch: {action: restart}` runs as `mirrord exec … -- mirrord-up __runner … --
//! CMD`: `mirrord exec` execs into the runner, whose layered process keeps the session (the
//! internal proxy and its agent) alive, and the runner runs the app as its child in a process
//! group of its own. The supervisor watches the files and sends the runner SIGUSR1; the runner
//! stops the app's group (the service's stop signal, then SIGKILL after the grace) and starts
//! the app again. The layer is inherited: the new app connects to the same internal proxy and
//! makes its own port subscriptions again.
//!
//! The runner does nothing mirrord's layer would redirect: it opens no file and no socket
//! (signals, `waitpid`, `kill`, `fork`/`exec` and `prctl` only); its messages go to the stderr
//! it inherited. Everything else behaves as without it: SIGTERM, SIGINT, SIGHUP and SIGQUIT are
//! forwarded to the app's group, and when the app ends (on its own or so signalled) the runner
//! ends the same way (its exit code, or death by the same signal), so readiness, the restart
//! policy and `down` see what they would see of the app itself.
//!
//! Events arrive as signals taken with `sigtimedwait` (all of them blocked): no handler, no
//! polling. The runner is the subreaper of the app's descendants, so every exit in the app's
//! tree wakes it, and "the group is empty" is known without looking at `/proc`.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// The hidden subcommand of our own binary.
pub const SUBCOMMAND: &str = "__runner";

/// The signal that asks the runner to restart the app.
pub const RESTART_SIGNAL: Signal = Signal::SIGUSR1;

/// Signals forwarded to the app (and which then end the runner with the app).
const FORWARDED: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// The runner's settings, from its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub stop_signal: Signal,
    pub grace: Duration,
    pub command: Vec<OsString>,
}

impl Args {
    /// `--stop-signal SIG --grace-ms N -- CMD [ARGS…]` (the options in any order, both optional).
    pub fn parse(args: &[OsString]) -> Result<Args, String> {
        let mut stop_signal = Signal::SIGTERM;
        let mut grace = crate::spec::DEFAULT_STOP_TIMEOUT;
        let mut it = args.iter();
        loop {
            let Some(a) = it.next() else {
                return Err("no command (`-- CMD [ARGS…]`)".into());
            };
            match a.to_str() {
                Some("--") => break,
                Some("--stop-signal") => {
                    let v = it.next().and_then(|v| v.to_str()).unwrap_or_default();
                    stop_signal = crate::config::parse_signal(v)
                        .ok_or_else(|| format!("unknown signal {v:?}"))?;
                }
                Some("--grace-ms") => {
                    let v = it.next().and_then(|v| v.to_str()).unwrap_or_default();
                    grace = Duration::from_millis(
                        v.parse()
                            .map_err(|_| format!("--grace-ms: not a number of ms: {v:?}"))?,
                    );
                }
                _ => return Err(format!("unexpected argument {a:?}")),
            }
        }
        let command: Vec<OsString> = it.cloned().collect();
        if command.is_empty() {
            return Err("no command after `--`".into());
        }
        Ok(Args {
            stop_signal,
            grace,
            command,
        })
    }

    /// The arguments that `parse` reads back (after the subcommand).
    pub fn to_args(&self) -> Vec<String> {
        let mut out = vec![
            "--stop-signal".to_owned(),
            self.stop_signal.as_str().to_owned(),
            "--grace-ms".to_owned(),
            self.grace.as_millis().to_string(),
            "--".to_owned(),
        ];
        out.extend(
            self.command
                .iter()
                .map(|c| c.to_string_lossy().into_owned()),
        );
        out
    }
}

/// Whether this process was started as the runner (`argv[1]`).
pub fn asked() -> bool {
    std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(SUBCOMMAND))
}

fn say(what: &str) {
    // One write to the inherited stderr (the service's log); nothing is opened.
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("mirrord-up runner: {what}\n").as_bytes());
}

/// The runner's `main`.
pub fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().skip(2).collect();
    let args = match Args::parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            say(&format!(
                "{e}; usage: mirrord-up {SUBCOMMAND} [--stop-signal SIG] [--grace-ms N] -- CMD [ARGS…]"
            ));
            return ExitCode::from(2);
        }
    };
    let mut runner = Runner::new(args);
    runner.run()
}

/// Every signal the runner waits for.
fn all_events() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.add(RESTART_SIGNAL);
    for s in FORWARDED {
        set.add(s);
    }
    set
}

/// `sigtimedwait`: the next of `set`, or `None` once `deadline` has passed.
fn next_signal(set: &SigSet, deadline: Option<Instant>) -> Option<Signal> {
    loop {
        let r = match deadline {
            None => set.wait().map_err(|e| e as i32),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                let ts = nix::libc::timespec {
                    tv_sec: left.as_secs() as nix::libc::time_t,
                    tv_nsec: left.subsec_nanos() as nix::libc::c_long,
                };
                // SAFETY: `set` is a valid sigset; a null siginfo is allowed.
                let n = unsafe { nix::libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
                if n < 0 {
                    Err(Errno::last_raw())
                } else {
                    Signal::try_from(n).map_err(|_| nix::libc::EINVAL)
                }
            }
        };
        match r {
            Ok(sig) => return Some(sig),
            Err(nix::libc::EAGAIN) => return None,
            Err(_) => continue, // EINTR
        }
    }
}

struct Runner {
    args: Args,
    /// The app's pid (its group's id too), while it runs.
    app: Option<Pid>,
    /// A forwarded signal: the runner ends when the app does.
    ending: bool,
    /// SIGPIPE's disposition when we started (the app gets it back, as from `mirrord exec`).
    sigpipe_ignored: bool,
}

impl Runner {
    fn new(args: Args) -> Runner {
        Runner {
            args,
            app: None,
            ending: false,
            sigpipe_ignored: false,
        }
    }

    fn run(&mut self) -> ExitCode {
        // SAFETY: querying (and restoring) a disposition, single-threaded.
        unsafe {
            let old =
                nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn);
            self.sigpipe_ignored = matches!(old, Ok(nix::sys::signal::SigHandler::SigIgn));
            if let Ok(h) = old {
                let _ = nix::sys::signal::signal(Signal::SIGPIPE, h);
            }
        }
        let events = all_events();
        if let Err(e) = events.thread_block() {
            say(&format!("cannot block signals: {e}"));
            return ExitCode::from(1);
        }
        // Orphans of the app's tree come to us: every exit there wakes the runner.
        // SAFETY: prctl with integer arguments.
        unsafe {
            nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        if let Err(code) = self.start() {
            return code;
        }
        loop {
            let Some(sig) = next_signal(&events, None) else {
                continue;
            };
            match sig {
                Signal::SIGCHLD => {
                    if let Some(status) = self.reap() {
                        return self.end_like(status);
                    }
                }
                s if s == RESTART_SIGNAL => {
                    if self.ending {
                        continue;
                    }
                    if let Some(app) = self.app {
                        say(&format!("restarting the app (pid {app})"));
                    }
                    if let Some(status) = self.stop_app() {
                        // Told to end while the app was being stopped.
                        return self.end_like(status);
                    }
                    if let Err(code) = self.start() {
                        return code;
                    }
                }
                s => self.forward(s),
            }
        }
    }

    fn start(&mut self) -> Result<(), ExitCode> {
        let (program, rest) = self.args.command.split_first().expect("parsed");
        let mut cmd = std::process::Command::new(program);
        cmd.args(rest).process_group(0);
        let ignore_pipe = self.sigpipe_ignored;
        let parent = std::process::id() as i32;
        // SAFETY: only async-signal-safe calls (prctl, getppid, sigprocmask, signal, _exit)
        // after fork.
        unsafe {
            cmd.pre_exec(move || {
                // The app never outlives a runner killed by SIGKILL.
                nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL, 0, 0, 0);
                if nix::libc::getppid() != parent {
                    nix::libc::_exit(1);
                }
                // The app starts with no signal blocked (ours are, to be waited for).
                let mut none: nix::libc::sigset_t = std::mem::zeroed();
                nix::libc::sigemptyset(&mut none);
                nix::libc::pthread_sigmask(nix::libc::SIG_SETMASK, &none, std::ptr::null_mut());
                if ignore_pipe {
                    nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_IGN);
                }
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(child) => {
                // Its status is collected by `waitpid` on SIGCHLD, not through `child`.
                self.app = Some(Pid::from_raw(child.id() as i32));
                say(&format!("app started (pid {})", child.id()));
                Ok(())
            }
            Err(e) => {
                say(&format!("cannot run `{}`: {e}", program.to_string_lossy()));
                Err(ExitCode::from(127))
            }
        }
    }

    /// Reaps every exited child; the app's status if the app was one of them.
    fn reap(&mut self) -> Option<WaitStatus> {
        let mut app_status = None;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return app_status,
                Ok(status) => {
                    if status.pid().is_some() && status.pid() == self.app {
                        self.app = None;
                        app_status = Some(status);
                    }
                }
            }
        }
    }

    fn forward(&mut self, sig: Signal) {
        self.ending = true;
        if let Some(app) = self.app {
            let _ = killpg(app, sig);
        }
    }

    /// Stops the app's group for a restart: the stop signal, then SIGKILL after the grace.
    /// Returns the app's status if a forwarded signal arrived meanwhile (the runner then ends).
    fn stop_app(&mut self) -> Option<WaitStatus> {
        let group = self.app?;
        // Not the restart signal: a save during the stop stays pending, and one more restart
        // follows this one.
        let mut set = SigSet::empty();
        set.add(Signal::SIGCHLD);
        for s in FORWARDED {
            set.add(s);
        }
        let _ = killpg(group, self.args.stop_signal);
        let mut deadline = Some(Instant::now() + self.args.grace);
        let mut last = None;
        loop {
            if let Some(s) = self.reap() {
                last = Some(s);
            }
            let alive = killpg(group, None::<Signal>).is_ok();
            if self.app.is_none() && !alive {
                break;
            }
            match next_signal(&set, deadline) {
                None => {
                    let _ = killpg(group, Signal::SIGKILL);
                    deadline = None;
                }
                Some(Signal::SIGCHLD) => {}
                Some(s) => {
                    self.ending = true;
                    let _ = killpg(group, s);
                }
            }
        }
        if self.ending {
            return Some(last.unwrap_or(WaitStatus::Exited(group, 0)));
        }
        None
    }

    /// Ends the runner as the app ended: its exit code, or death by its signal.
    fn end_like(&mut self, status: WaitStatus) -> ExitCode {
        if let WaitStatus::Exited(_, code) = status {
            return ExitCode::from(code as u8);
        }
        if let WaitStatus::Signaled(_, sig, _) = status {
            // SAFETY: single-threaded; the default action then ends us with that signal.
            unsafe {
                let _ = nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl);
            }
            let mut one = SigSet::empty();
            one.add(sig);
            let _ = one.thread_unblock();
            let _ = nix::sys::signal::raise(sig);
            return ExitCode::from(128u8.wrapping_add(sig as u8));
        }
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn arguments_round_trip() {
        let a = Args::parse(&os(&[
            "--stop-signal",
            "INT",
            "--grace-ms",
            "1500",
            "--",
            "go",
            "run",
            ".",
        ]))
        .unwrap();
        assert_eq!(a.stop_signal, Signal::SIGINT);
        assert_eq!(a.grace, Duration::from_millis(1500));
        assert_eq!(a.command, os(&["go", "run", "."]));
        let back: Vec<OsString> = a.to_args().into_iter().map(OsString::from).collect();
        assert_eq!(Args::parse(&back).unwrap(), a);
    }

    #[test]
    fn bad_arguments_are_errors_not_panics() {
        assert!(Args::parse(&os(&[])).is_err());
        assert!(Args::parse(&os(&["--"])).is_err());
        assert!(Args::parse(&os(&["--stop-signal", "BOGUS", "--", "x"])).is_err());
        assert!(Args::parse(&os(&["--grace-ms", "x", "--", "x"])).is_err());
        assert!(Args::parse(&os(&["--grace-ms"])).is_err());
        assert!(Args::parse(&os(&["x"])).is_err());
    }
}
