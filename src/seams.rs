//! Seams between the executor and the machine: launching a service (`Launcher`), looking at
//! and stopping processes (`ProcessTable`), and the time (`Clock`). The engine reaches
//! processes and the clock only through these, so that it is unit-tested with fakes; the real
//! implementations here delegate to `process` (and keep their real-process integration tests).

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::{
    self, ExitKind, Liveness, MarkedGroup, ProcessIdentity, SpawnRequest, Spawned, StopOutcome,
    StopRequest,
};

/// Spawns a service: its program, arguments, environment and log (`SpawnRequest`), in a new
/// process group; returns the child handle and the identity to record.
pub trait Launcher {
    fn spawn(&self, req: &SpawnRequest) -> std::io::Result<(Spawned, ProcessIdentity)>;
}

/// What the executor asks of the processes it recorded.
pub trait ProcessTable {
    /// Whether the recorded process is alive, exited, or its PID belongs to someone else now
    /// (`None`: no process recorded, exited).
    fn liveness(&self, id: Option<&ProcessIdentity>) -> Liveness;
    /// The exit status of a child, once it has ended (collected by us or by the reaper).
    fn take_exit(&self, pid: i32) -> Option<ExitKind>;
    /// Stops each group: its signal, SIGKILL after its grace period (`StopRequest::timeout`),
    /// then what left the group; `each` hears every outcome as it comes.
    fn stop(
        &self,
        requests: &[StopRequest],
        each: &mut dyn FnMut(&StopOutcome),
    ) -> Vec<StopOutcome>;
    /// Stops what an instance that ended left behind (in its group or outside it).
    fn stop_leftovers(&self, name: &str, id: &ProcessIdentity, signal: Signal, grace: Duration);
    /// The groups carrying this state directory's markers.
    fn find_marked(&self, state_dir: &Path) -> Vec<MarkedGroup>;
}

/// The time, in unix milliseconds.
pub trait Clock {
    fn now_ms(&self) -> u64;
}

/// The real machine: `process` and the system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct Real;

impl Launcher for Real {
    fn spawn(&self, req: &SpawnRequest) -> std::io::Result<(Spawned, ProcessIdentity)> {
        process::spawn(req)
    }
}

impl ProcessTable for Real {
    fn liveness(&self, id: Option<&ProcessIdentity>) -> Liveness {
        id.map_or(Liveness::Exited, ProcessIdentity::liveness)
    }

    fn take_exit(&self, pid: i32) -> Option<ExitKind> {
        process::take_exit(pid)
    }

    fn stop(
        &self,
        requests: &[StopRequest],
        each: &mut dyn FnMut(&StopOutcome),
    ) -> Vec<StopOutcome> {
        process::stop_groups_with(requests, each)
    }

    fn stop_leftovers(&self, name: &str, id: &ProcessIdentity, signal: Signal, grace: Duration) {
        process::stop_leftovers(name, id, signal, grace);
    }

    fn find_marked(&self, state_dir: &Path) -> Vec<MarkedGroup> {
        process::find_marked(state_dir)
    }
}

impl Clock for Real {
    fn now_ms(&self) -> u64 {
        crate::state::now_ms()
    }
}

/// The real machine, for `Engine::new`.
pub static REAL: Real = Real;

/// Fake processes for the executor's and the loop's unit tests: PIDs handed out in order,
/// each alive until it is ended.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct FakePids {
    alive: std::cell::RefCell<std::collections::BTreeSet<i32>>,
    next: std::cell::Cell<i32>,
}

#[cfg(test)]
impl FakePids {
    /// PIDs from `first` on.
    pub(crate) fn from(first: i32) -> FakePids {
        FakePids {
            alive: Default::default(),
            next: std::cell::Cell::new(first),
        }
    }

    /// A new live process (its identity carries `nonce`).
    pub(crate) fn spawn(&self, nonce: &str, boot_id: &str) -> (Spawned, ProcessIdentity) {
        let pid = self.next.get();
        self.next.set(pid + 1);
        self.alive.borrow_mut().insert(pid);
        let identity = ProcessIdentity {
            pid,
            pgid: pid,
            start_time: 1,
            boot_id: boot_id.into(),
            nonce: Some(nonce.to_owned()),
        };
        (Spawned { pid }, identity)
    }

    pub(crate) fn is_alive(&self, pid: i32) -> bool {
        self.alive.borrow().contains(&pid)
    }

    pub(crate) fn liveness(&self, id: Option<&ProcessIdentity>) -> Liveness {
        match id {
            Some(id) if self.is_alive(id.pid) => Liveness::Alive,
            _ => Liveness::Exited,
        }
    }

    pub(crate) fn end(&self, pid: i32) {
        self.alive.borrow_mut().remove(&pid);
    }
}
