//! Processes found by their markers rather than by a recorded identity: what left a service's
//! process group (mirrord's intproxy double-forks and calls `setsid`; a service may daemonise),
//! what an interrupted start spawned before it was recorded, and what a lost or corrupt state
//! no longer knows. One `/proc` scan finds them (`scan_marked`); each is signalled only while
//! it is still the process the scan saw (pid and start time, pinned by a pidfd).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use super::{KILL_NOW, KILL_WAIT};
use crate::os::{MarkedProc, same_alive, scan_marked, signal_if_same};

/// Which marked processes to take. A process is selected when its spawn nonce is one of
/// `instances`, or when it carries `state_dir` as `MIRRORD_UP_STATE` and (if `services` is
/// given) one of `services` as `MIRRORD_UP_SERVICE`. Supervisors (`MIRRORD_UP_SUPERVISOR`) are
/// never selected: they are stopped first, on their own terms.
#[derive(Debug, Default, Clone, Copy)]
pub struct Selector<'a> {
    pub state_dir: Option<&'a Path>,
    pub services: Option<&'a BTreeSet<String>>,
    pub instances: Option<&'a BTreeSet<String>>,
}

impl Selector<'_> {
    pub fn matches(&self, p: &MarkedProc) -> bool {
        if p.supervisor.is_some() {
            return false;
        }
        if let (Some(want), Some(nonce)) = (self.instances, &p.instance)
            && want.contains(nonce)
        {
            return true;
        }
        let Some(dir) = self.state_dir else {
            return false;
        };
        p.state.as_deref() == Some(&*dir.to_string_lossy())
            && self
                .services
                .is_none_or(|s| p.service.as_ref().is_some_and(|n| s.contains(n)))
    }
}

/// The live processes `sel` selects, from one `/proc` scan.
pub fn find(sel: &Selector<'_>) -> Vec<MarkedProc> {
    if sel.state_dir.is_none() && sel.instances.is_none_or(BTreeSet::is_empty) {
        return Vec::new();
    }
    scan_marked()
        .into_iter()
        .filter(|p| sel.matches(p))
        .collect()
}

/// One process to stop: its signal, then SIGKILL after `timeout`.
#[derive(Debug, Clone)]
pub struct Target {
    pub proc: MarkedProc,
    pub signal: Signal,
    pub timeout: Duration,
}

/// How one target ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetOutcome {
    /// Needed SIGKILL.
    pub killed: bool,
    /// Still alive after SIGKILL and the final wait.
    pub survived: bool,
}

/// Signals `p` (and, when it leads its own group, that group: its leader was just checked).
pub fn send(p: &MarkedProc, sig: Signal) -> bool {
    let sent = signal_if_same(p.info.pid, p.info.start_time, sig);
    if sent && p.info.pid == p.info.pgid && same_alive(p.info.pid, p.info.start_time) {
        let _ = killpg(Pid::from_raw(p.info.pgid), sig);
    }
    sent
}

/// Stops every target in parallel (signal and SIGCONT, grace, SIGKILL), collecting those that
/// were our children (or adopted by us as subreaper) so none stays a zombie.
pub fn stop_targets(targets: &[Target]) -> Vec<TargetOutcome> {
    let start = Instant::now();
    let mut out = vec![
        TargetOutcome {
            killed: false,
            survived: false,
        };
        targets.len()
    ];
    let mut pending: Vec<usize> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        if send(&t.proc, t.signal) {
            if t.signal != Signal::SIGCONT {
                send(&t.proc, Signal::SIGCONT);
            }
            pending.push(i);
        }
    }
    let mut pause = Duration::from_millis(1);
    while !pending.is_empty() {
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(25));
        let elapsed = start.elapsed();
        pending.retain(|&i| {
            let t = &targets[i];
            let (pid, st) = (t.proc.info.pid, t.proc.info.start_time);
            // Ours to collect if we are its parent or subreaper; a no-op otherwise.
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
            if !same_alive(pid, st) {
                return false;
            }
            let o = &mut out[i];
            if !o.killed
                && (elapsed >= t.timeout || KILL_NOW.load(std::sync::atomic::Ordering::SeqCst))
            {
                send(&t.proc, Signal::SIGKILL);
                o.killed = true;
            } else if o.killed && elapsed >= t.timeout + KILL_WAIT {
                o.survived = true;
                return false;
            }
            true
        });
    }
    out
}
