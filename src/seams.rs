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
    /// [`Self::spawn`] of each request of a level, the results in their order (the real
    /// launcher spawns a large level from more than one thread: `process::spawn_level`).
    fn spawn_level(
        &self,
        reqs: Vec<SpawnRequest>,
    ) -> Vec<std::io::Result<(Spawned, ProcessIdentity)>> {
        reqs.iter().map(|r| self.spawn(r)).collect()
    }
}

/// What the executor asks of the processes it recorded.
pub trait ProcessTable {
    /// Whether the recorded process is alive, exited, or its PID belongs to someone else now
    /// (`None`: no process recorded, exited).
    fn liveness(&self, id: Option<&ProcessIdentity>) -> Liveness;
    /// [`Self::liveness`] of each of `ids` (the real table answers those it holds a pidfd on
    /// with one `poll`).
    fn liveness_all(&self, ids: &[&ProcessIdentity]) -> Vec<Liveness> {
        ids.iter().map(|id| self.liveness(Some(id))).collect()
    }
    /// The exit status of a child, once it has ended (collected by us or by the reaper).
    fn take_exit(&self, pid: i32) -> Option<ExitKind>;
    /// Stops each group: its signal, SIGKILL after its grace period (`StopRequest::timeout`),
    /// then what left the group; `each` hears every outcome as it comes.
    fn stop(
        &self,
        requests: &[StopRequest],
        each: &mut dyn FnMut(&StopOutcome),
    ) -> Vec<StopOutcome>;
    /// Signals `requests` now and waits up to `within` for every group to be empty with
    /// nothing left outside it: true when so (a [`Self::stop`] of them then finds them ended
    /// and only says so), false otherwise — each request sent its signal says so
    /// ([`StopRequest::signalled`]), and the stop that follows waits for the rest without
    /// signalling it again. The default sends nothing and answers false.
    fn stop_quickly(&self, _requests: &mut [StopRequest], _within: Duration) -> bool {
        false
    }
    /// Sends each request its signal (and SIGCONT) now, without waiting; each sent says so
    /// ([`StopRequest::signalled`]) and the [`Self::stop`] that follows does not send it
    /// again. The default sends nothing.
    fn signal_now(&self, _requests: &mut [StopRequest]) {}
    /// Stops what an instance that ended left behind (in its group or outside it).
    fn stop_leftovers(&self, name: &str, id: &ProcessIdentity, signal: Signal, grace: Duration);
    /// The groups carrying this state directory's markers.
    fn find_marked(&self, state_dir: &Path) -> Vec<MarkedGroup>;
}

/// One look at each recorded process for a stretch of a pass that acts on none of them
/// (settling exits, then observing for the plan): every question about an identity looked
/// at already gets the same answer again, so that the stretch sees one consistent picture
/// and costs one look per record — one `poll` for all those whose pidfd is held, a `/proc`
/// read for the others. A process that ends meanwhile is the next pass's (its exit wakes
/// the loop). The rest of the table is `source`'s.
pub struct Looks<'a> {
    source: &'a dyn ProcessTable,
    seen: std::cell::RefCell<std::collections::HashMap<LookKey, Liveness>>,
    /// The boot ids of the identities looked at (one, but for records of an earlier boot):
    /// a key holds its index, not a copy of the string.
    boots: std::cell::RefCell<Vec<String>>,
}

/// What names one recorded process: its PID, start time and boot (an index in `boots`).
type LookKey = (i32, u64, usize);

impl<'a> Looks<'a> {
    /// Looks at every process of `ids` now (at once).
    pub fn new<'i>(
        source: &'a dyn ProcessTable,
        ids: impl IntoIterator<Item = &'i ProcessIdentity>,
    ) -> Looks<'a> {
        let looks = Looks {
            source,
            seen: Default::default(),
            boots: Default::default(),
        };
        looks.look_at(ids.into_iter().collect());
        looks
    }

    /// These looks, and a look at those of `ids` not looked at yet (at once): for the rest
    /// of a pass whose earlier stretch looked at them. A process that ended since is the next
    /// pass's: only under a supervisor, whose loop watches every process it runs (a pidfd
    /// each) and passes again when one ends.
    pub fn and_new<'i>(self, ids: impl IntoIterator<Item = &'i ProcessIdentity>) -> Looks<'a> {
        let new: Vec<&ProcessIdentity> = ids
            .into_iter()
            .filter(|id| {
                let key = self.key(id);
                !self.seen.borrow().contains_key(&key)
            })
            .collect();
        self.look_at(new);
        self
    }

    fn look_at(&self, ids: Vec<&ProcessIdentity>) {
        if ids.is_empty() {
            return;
        }
        let answers = self.source.liveness_all(&ids);
        let mut seen = self.seen.borrow_mut();
        for (id, l) in ids.iter().zip(answers) {
            seen.insert(self.key(id), l);
        }
    }

    fn key(&self, id: &ProcessIdentity) -> LookKey {
        let mut boots = self.boots.borrow_mut();
        let boot = match boots.iter().position(|b| *b == id.boot_id) {
            Some(i) => i,
            None => {
                boots.push(id.boot_id.clone());
                boots.len() - 1
            }
        };
        (id.pid, id.start_time, boot)
    }
}

impl ProcessTable for Looks<'_> {
    fn liveness(&self, id: Option<&ProcessIdentity>) -> Liveness {
        let Some(id) = id else {
            return Liveness::Exited;
        };
        let key = self.key(id);
        if let Some(l) = self.seen.borrow().get(&key) {
            return *l;
        }
        let l = self.source.liveness(Some(id));
        self.seen.borrow_mut().insert(key, l);
        l
    }

    fn take_exit(&self, pid: i32) -> Option<ExitKind> {
        self.source.take_exit(pid)
    }

    fn stop(
        &self,
        requests: &[StopRequest],
        each: &mut dyn FnMut(&StopOutcome),
    ) -> Vec<StopOutcome> {
        self.source.stop(requests, each)
    }

    fn stop_quickly(&self, requests: &mut [StopRequest], within: Duration) -> bool {
        self.source.stop_quickly(requests, within)
    }

    fn signal_now(&self, requests: &mut [StopRequest]) {
        self.source.signal_now(requests);
    }

    fn stop_leftovers(&self, name: &str, id: &ProcessIdentity, signal: Signal, grace: Duration) {
        self.source.stop_leftovers(name, id, signal, grace);
    }

    fn find_marked(&self, state_dir: &Path) -> Vec<MarkedGroup> {
        self.source.find_marked(state_dir)
    }
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

    fn spawn_level(
        &self,
        reqs: Vec<SpawnRequest>,
    ) -> Vec<std::io::Result<(Spawned, ProcessIdentity)>> {
        process::spawn_level(reqs, &|job| crate::supervisor::workers::SPAWNS.try_run(job))
    }
}

impl ProcessTable for Real {
    fn liveness(&self, id: Option<&ProcessIdentity>) -> Liveness {
        id.map_or(Liveness::Exited, ProcessIdentity::liveness)
    }

    fn liveness_all(&self, ids: &[&ProcessIdentity]) -> Vec<Liveness> {
        process::pidfds::liveness_all(ids)
            .into_iter()
            .zip(ids)
            .map(|(held, id)| held.unwrap_or_else(|| id.read_liveness()))
            .collect()
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

    fn stop_quickly(&self, requests: &mut [StopRequest], within: Duration) -> bool {
        process::stop_quickly(requests, within)
    }

    fn signal_now(&self, requests: &mut [StopRequest]) {
        process::signal_now(requests);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Fake processes that count the questions asked of them.
    struct Counting {
        pids: FakePids,
        asked: std::cell::Cell<usize>,
    }

    impl ProcessTable for Counting {
        fn liveness(&self, id: Option<&ProcessIdentity>) -> Liveness {
            self.asked.set(self.asked.get() + 1);
            self.pids.liveness(id)
        }
        fn take_exit(&self, _: i32) -> Option<ExitKind> {
            None
        }
        fn stop(&self, _: &[StopRequest], _: &mut dyn FnMut(&StopOutcome)) -> Vec<StopOutcome> {
            Vec::new()
        }
        fn stop_leftovers(&self, _: &str, _: &ProcessIdentity, _: Signal, _: Duration) {}
        fn find_marked(&self, _: &Path) -> Vec<MarkedGroup> {
            Vec::new()
        }
    }

    /// A process table that counts what it is asked, with processes `a` and `b` running.
    fn counting_a_and_b() -> (Counting, ProcessIdentity, ProcessIdentity) {
        let table = Counting {
            pids: FakePids::from(100),
            asked: Default::default(),
        };
        let (_, a) = table.pids.spawn("a", "boot");
        let (_, b) = table.pids.spawn("b", "boot");
        (table, a, b)
    }

    #[test]
    fn looks_ask_once_per_recorded_process() {
        let (table, a, b) = counting_a_and_b();
        let looks = Looks::new(&table, [&a, &b]);
        assert_eq!(table.asked.get(), 2, "one look each, at once");
        // An exit after the look is the next look's: the stretch sees one picture.
        table.pids.end(b.pid);
        for _ in 0..3 {
            assert_eq!(looks.liveness(Some(&a)), Liveness::Alive);
            assert_eq!(looks.liveness(Some(&b)), Liveness::Alive);
        }
        assert_eq!(looks.liveness(None), Liveness::Exited);
        assert_eq!(table.asked.get(), 2, "asked again: {}", table.asked.get());
        // One not looked at yet is asked about once.
        let (_, c) = table.pids.spawn("c", "boot");
        assert_eq!(looks.liveness(Some(&c)), Liveness::Alive);
        assert_eq!(looks.liveness(Some(&c)), Liveness::Alive);
        assert_eq!(table.asked.get(), 3);
        assert_eq!(
            Looks::new(&table, [&b]).liveness(Some(&b)),
            Liveness::Exited
        );
    }

    #[test]
    fn looks_carried_on_ask_only_about_processes_not_looked_at_and_tell_boots_apart() {
        let (table, a, b) = counting_a_and_b();
        let looks = Looks::new(&table, [&a, &b]);
        assert_eq!(table.asked.get(), 2);
        // The pass started c and b ended; the second stretch asks about c only.
        let (_, c) = table.pids.spawn("c", "boot");
        table.pids.end(b.pid);
        let looks = looks.and_new([&a, &b, &c]);
        assert_eq!(table.asked.get(), 3, "asked about more than the new one");
        assert_eq!(looks.liveness(Some(&c)), Liveness::Alive);
        assert_eq!(
            looks.liveness(Some(&b)),
            Liveness::Alive,
            "b is the next pass's"
        );
        assert_eq!(table.asked.get(), 3);
        // The same PID and start time in another boot is another process: asked about.
        let other_boot = ProcessIdentity {
            boot_id: "another boot".into(),
            ..a.clone()
        };
        table.pids.end(a.pid);
        let looks = looks.and_new([&other_boot]);
        assert_eq!(table.asked.get(), 4);
        assert_eq!(looks.liveness(Some(&other_boot)), Liveness::Exited);
        assert_eq!(looks.liveness(Some(&a)), Liveness::Alive, "this boot's a");
    }
}
