//! The pidfds this process holds on the services it watches (the supervisor: one per running
//! service, `supervisor::watch_exits`), as a liveness source that reads no `/proc`.
//!
//! A pidfd names one process for as long as it is open, whatever becomes of its PID: while it
//! is not readable that very process runs; once readable it has exited (a zombie included).
//! So a recorded identity whose pidfd is held is answered by a `poll` with no timeout — one
//! `poll` for all of them at once ([`liveness_all`]) — and only identities not held (a
//! one-shot command's, a process someone else spawned, one started since the last watch)
//! cost a read of `/proc/<pid>/stat`. A held pidfd also tells that the process still leads
//! its group (a session leader cannot leave its group), and it is what the escaped-process
//! scans skip without reading anything ([`held_alive`]).
//!
//! Every held pidfd is also registered with one epoll instance (level-triggered): a wait on
//! it with no timeout names only the pidfds that are readable, so a look at every held
//! process costs in proportion to those that ended, not to how many are held (a `poll` of
//! 500 pidfds is 500 `pidfd_poll` calls in the kernel, and a pass looks more than once). A
//! pidfd the epoll instance would not take is polled as before.
//!
//! The table is the process's own (as the reaper's statuses are): holding is the watcher's
//! business, answering is anyone's.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::{Liveness, ProcessIdentity};

/// A held pidfd: the start time of the process it was opened on (checked when it was), and
/// whether that process leads its own session (so, while it lives, its own group).
struct Held {
    start_time: u64,
    session_leader: bool,
    /// This process's own child when it was held (so, with this process a subreaper, every
    /// descendant it leaves behind comes back to this process).
    own_child: bool,
    /// `None` once its process ended and the pidfd was let go ([`release_ended`]): the entry
    /// still answers that it ended.
    fd: Option<Arc<OwnedFd>>,
    /// Its key in the epoll instance, when registered there (`None`: polled, or let go).
    token: Option<u64>,
}

/// The held pidfds, by PID, and the epoll instance they are registered with.
#[derive(Default)]
struct Table {
    map: HashMap<i32, Held>,
    /// `None` until the first hold, or when the kernel would not create one.
    epoll: Option<Epoll>,
    next_token: u64,
    /// The buffer of the epoll wait (as long as the table once was): not allocated per look.
    events: Vec<EpollEvent>,
}

impl Table {
    fn get(&self, pid: &i32) -> Option<&Held> {
        self.map.get(pid)
    }

    /// Registers `fd` with the epoll instance (created on first use); its token, `None` when
    /// it could not be registered.
    fn register(&mut self, fd: &OwnedFd) -> Option<u64> {
        if self.epoll.is_none() {
            self.epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).ok();
        }
        let token = self.next_token;
        self.epoll
            .as_ref()?
            .add(fd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
            .ok()?;
        self.next_token += 1;
        Some(token)
    }

    /// Takes `h` out of the epoll instance (its pidfd may outlive the table's hold: a stop
    /// that waits on it).
    fn unregister(epoll: Option<&Epoll>, h: &Held) {
        if let (Some(e), Some(_), Some(fd)) = (epoll, h.token, &h.fd) {
            let _ = e.delete(fd.as_fd());
        }
    }

    /// The tokens of the registered pidfds that are readable now (their process ended);
    /// `None` when the wait failed (then every pidfd is polled).
    fn exited(&mut self) -> Option<HashSet<u64>> {
        let epoll = self.epoll.as_ref()?;
        // Room for every registered pidfd: one wait names all that are readable.
        let room = self.map.len().max(1);
        if self.events.len() < room {
            self.events.resize(room, EpollEvent::empty());
        }
        loop {
            match epoll.wait(&mut self.events, EpollTimeout::ZERO) {
                Ok(n) => return Some(self.events[..n].iter().map(|e| e.data()).collect()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return None,
            }
        }
    }
}

/// A look at this many held processes or more goes by the epoll instance (fewer, and fewer
/// than half of those held: their pidfds are polled).
const EPOLL_LOOK: usize = 16;

static HELD: Mutex<Option<Table>> = Mutex::new(None);

fn held() -> MutexGuard<'static, Option<Table>> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// Holds a pidfd on `id` (or keeps the one held already) and returns it, for a watch to wait
/// on; `None` when `id` is not that very process alive now (gone, recycled, another boot).
/// The pidfd is opened first and the identity checked after (one `stat` read): a PID reused
/// in between is caught by the check.
pub fn hold(id: &ProcessIdentity) -> Option<Arc<OwnedFd>> {
    if let Some(fd) = held()
        .as_ref()
        .and_then(|m| m.get(&id.pid))
        .filter(|h| h.start_time == id.start_time)
        .and_then(|h| h.fd.clone())
    {
        return Some(fd);
    }
    if id.boot_id != super::boot_id() {
        return None;
    }
    let fd = Arc::new(super::pidfd_open(id.pid).ok()?);
    let info = super::proc_info(id.pid).ok()?;
    if info.start_time != id.start_time || info.zombie {
        return None;
    }
    let mut guard = held();
    let table = guard.get_or_insert_with(Table::default);
    let token = table.register(&fd);
    if let Some(old) = table.map.insert(
        id.pid,
        Held {
            start_time: id.start_time,
            session_leader: info.session == id.pid && info.pgid == id.pid,
            own_child: info.ppid == std::process::id() as i32,
            fd: Some(fd.clone()),
            token,
        },
    ) {
        Table::unregister(table.epoll.as_ref(), &old);
    }
    Some(fd)
}

/// The pidfd held on that very process `id`, if any (no new descriptor is opened).
pub fn held_fd(id: &ProcessIdentity) -> Option<Arc<OwnedFd>> {
    held()
        .as_ref()?
        .get(&id.pid)
        .filter(|h| h.start_time == id.start_time && id.boot_id == super::boot_id())
        .and_then(|h| h.fd.clone())
}

/// Whether the held process `id` is this process's own child; `None` when not held.
pub fn own_child(id: &ProcessIdentity) -> Option<bool> {
    held()
        .as_ref()?
        .get(&id.pid)
        .filter(|h| h.start_time == id.start_time && id.boot_id == super::boot_id())
        .map(|h| h.own_child)
}

/// Lets go of the pidfd held on `pid` (its watch ended or was replaced).
pub fn release(pid: i32) {
    if let Some(t) = held().as_mut()
        && let Some(h) = t.map.remove(&pid)
    {
        Table::unregister(t.epoll.as_ref(), &h);
    }
}

/// Lets go of every pidfd whose PID `keep` refuses.
pub fn retain(keep: impl Fn(i32) -> bool) {
    if let Some(t) = held().as_mut() {
        let epoll = t.epoll.as_ref();
        t.map.retain(|pid, h| {
            let kept = keep(*pid);
            if !kept {
                Table::unregister(epoll, h);
            }
            kept
        });
    }
}

/// Closes every held pidfd whose process ended (as the epoll instance tells), once the table
/// is unlocked; each entry stays, answering that its process ended, as the pidfd did. For a
/// process's last stop, once it is over (`supervisor::spawn_stop`): the supervisor's exit
/// closed them otherwise — at 500 services a third of its last thread's teardown (each pidfd
/// out of the epoll instance, its dentry freed) — while the stop's own thread is idle as the
/// loop records the stop.
pub fn release_ended() {
    let closed: Vec<Arc<OwnedFd>> = {
        let mut guard = held();
        let Some(t) = guard.as_mut() else {
            return;
        };
        let Some(exited) = t.exited() else {
            return;
        };
        t.map
            .values_mut()
            .filter(|h| h.token.is_some_and(|k| exited.contains(&k)))
            .filter_map(|h| {
                h.token = None;
                h.fd.take()
            })
            .collect()
    };
    // Each leaves the epoll instance as it closes (its last reference, unless a watch still
    // has it).
    drop(closed);
}

/// How many pidfds are held.
pub fn count() -> usize {
    held().as_ref().map_or(0, |t| t.map.len())
}

/// The liveness of `id` from its held pidfd, without reading `/proc`; `None` when no pidfd
/// is held on that very process (then the caller reads `/proc`).
pub fn liveness(id: &ProcessIdentity) -> Option<Liveness> {
    liveness_all(&[id])[0]
}

/// [`liveness`] of each of `ids`, with one `poll` for all those held.
pub fn liveness_all(ids: &[&ProcessIdentity]) -> Vec<Option<Liveness>> {
    let mut out = vec![None; ids.len()];
    let polled: Vec<(usize, Arc<OwnedFd>)> = {
        let mut guard = held();
        let Some(t) = guard.as_mut() else {
            return out;
        };
        // A look at a few held processes among many polls their pidfds: the epoll wait names
        // every ended one held (during a stop of all, a look per group would cost in
        // proportion to those that ended so far).
        let exited = match ids.len() >= EPOLL_LOOK || ids.len() * 2 >= t.map.len() {
            true => t.exited(),
            false => None,
        };
        let mut polled = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let Some(h) = t.get(&id.pid) else { continue };
            // Another process under that PID is not this one; another boot's neither.
            if h.start_time != id.start_time || id.boot_id != super::boot_id() {
                continue;
            }
            let Some(fd) = &h.fd else {
                out[i] = Some(Liveness::Exited);
                continue;
            };
            match (h.token, &exited) {
                (Some(token), Some(exited)) => {
                    out[i] = Some(match exited.contains(&token) {
                        true => Liveness::Exited,
                        false => Liveness::Alive,
                    })
                }
                _ => polled.push((i, fd.clone())),
            }
        }
        polled
    };
    if polled.is_empty() {
        return out;
    }
    for (i, exited) in polled.iter().map(|(i, _)| *i).zip(readable(&polled)) {
        out[i] = exited.map(|e| if e { Liveness::Exited } else { Liveness::Alive });
    }
    out
}

/// Whether `id` is held, alive, and leads its own session (so its own group: a session
/// leader cannot leave its group); `None` when no pidfd is held on that very process.
pub fn leads_group(id: &ProcessIdentity) -> Option<bool> {
    let leader = held()
        .as_ref()?
        .get(&id.pid)
        .filter(|h| h.start_time == id.start_time)?
        .session_leader;
    // Not known to lead its session: `/proc` says whether it leads its group.
    leader.then_some(())?;
    Some(liveness(id)? == Liveness::Alive)
}

/// Group leaders (PID → start time) among the held processes that run now, from one `poll`:
/// each is alive and leads its own session, so every member of its group is its descendant.
pub fn held_alive() -> HashMap<i32, u64> {
    let mut alive = HashMap::new();
    let polled: Vec<((i32, u64), Arc<OwnedFd>)> = {
        let mut guard = held();
        let Some(t) = guard.as_mut() else {
            return alive;
        };
        let exited = t.exited();
        let mut polled = Vec::new();
        for (pid, h) in t.map.iter().filter(|(_, h)| h.session_leader) {
            let Some(fd) = &h.fd else { continue };
            match (h.token, &exited) {
                (Some(token), Some(exited)) => {
                    if !exited.contains(&token) {
                        alive.insert(*pid, h.start_time);
                    }
                }
                _ => polled.push(((*pid, h.start_time), fd.clone())),
            }
        }
        polled
    };
    alive.extend(
        polled
            .iter()
            .map(|(k, _)| *k)
            .zip(readable(&polled))
            .filter(|(_, exited)| *exited == Some(false))
            .map(|(k, _)| k),
    );
    alive
}

/// For each pidfd, whether it is readable (its process exited); `None` when `poll` failed.
fn readable<K>(fds: &[(K, Arc<OwnedFd>)]) -> Vec<Option<bool>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    #[cfg(test)]
    POLLED.with(|p| p.set(p.get() + fds.len()));
    let mut polled: Vec<PollFd<'_>> = fds
        .iter()
        .map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
        .collect();
    loop {
        match poll(&mut polled, PollTimeout::ZERO) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return vec![None; fds.len()],
        }
    }
    polled
        .iter()
        .map(|p| p.revents().map(|r| !r.is_empty()))
        .collect()
}

#[cfg(test)]
thread_local! {
    /// How many pidfds this thread polled one by one (`readable`), for the tests.
    static POLLED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::reads::{self, Kind};
    use std::os::unix::process::CommandExt;

    /// `sleep 30` leading its own session, as a service does; killed and collected on drop.
    struct Service(std::process::Child);

    impl Service {
        fn start() -> Service {
            let mut cmd = std::process::Command::new("sleep");
            cmd.arg("30");
            // SAFETY: `setsid` is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(Into::into));
            }
            Service(cmd.spawn().expect("sleep"))
        }

        fn pid(&self) -> i32 {
            self.0.id() as i32
        }

        fn end(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl Drop for Service {
        fn drop(&mut self) {
            self.end();
        }
    }

    #[test]
    fn a_held_process_is_alive_then_exited_without_a_proc_read() {
        let mut child = Service::start();
        let pid = child.pid();
        let id = ProcessIdentity::of(pid, None).expect("stat");
        assert!(hold(&id).is_some(), "a live child is held");
        reads::take();
        assert_eq!(id.liveness(), Liveness::Alive);
        assert!(id.leads_group(), "a held session leader leads its group");
        assert_eq!(reads::take(), vec![], "answered from the pidfd");
        // Another process under that PID (another start time) is not answered by it.
        let other = ProcessIdentity {
            start_time: id.start_time + 1,
            ..id.clone()
        };
        assert_eq!(liveness(&other), None);
        child.end();
        assert_eq!(id.liveness(), Liveness::Exited);
        assert!(!id.leads_group());
        assert_eq!(reads::take(), vec![], "its exit is the pidfd's too");
        assert!(!held_alive().contains_key(&pid));
        release(pid);
        assert_eq!(liveness(&id), None, "released");
        assert_ne!(id.liveness(), Liveness::Alive);
        assert_eq!(reads::take(), vec![(Kind::Stat, pid)], "not held: /proc");
    }

    /// The pidfds of the processes that ended are closed (a process's last stop, once it is
    /// over), and their entries still answer — ended — without a `/proc` read; a process that
    /// runs keeps its pidfd.
    #[test]
    fn the_pidfds_of_ended_processes_are_closed_and_still_answer() {
        let (mut children, ids) = held_services(2);
        let ended = Arc::downgrade(&held_fd(&ids[0]).expect("held"));
        children[0].end();
        release_ended();
        assert!(
            ended.upgrade().is_none(),
            "the ended process's pidfd is still open"
        );
        assert!(held_fd(&ids[0]).is_none());
        reads::take();
        assert_eq!(liveness(&ids[0]), Some(Liveness::Exited));
        assert_eq!(ids[0].liveness(), Liveness::Exited);
        assert!(!ids[0].leads_group());
        assert_eq!(liveness(&ids[1]), Some(Liveness::Alive));
        assert!(
            held_fd(&ids[1]).is_some(),
            "a running process's pidfd was let go of"
        );
        assert_eq!(reads::take(), vec![], "answered from the table");
        let alive = held_alive();
        assert!(!alive.contains_key(&ids[0].pid) && alive.contains_key(&ids[1].pid));
        for id in &ids {
            release(id.pid);
        }
    }

    /// `n` services started, their identities, each held.
    fn held_services(n: usize) -> (Vec<Service>, Vec<ProcessIdentity>) {
        let children: Vec<Service> = (0..n).map(|_| Service::start()).collect();
        let ids: Vec<ProcessIdentity> = children
            .iter()
            .map(|c| ProcessIdentity::of(c.pid(), None).expect("stat"))
            .collect();
        for id in &ids {
            assert!(hold(id).is_some());
        }
        (children, ids)
    }

    #[test]
    fn many_held_processes_are_looked_at_with_one_poll() {
        let (mut children, ids) = held_services(3);
        let refs: Vec<&ProcessIdentity> = ids.iter().collect();
        children[1].end();
        reads::take();
        assert_eq!(
            liveness_all(&refs),
            vec![
                Some(Liveness::Alive),
                Some(Liveness::Exited),
                Some(Liveness::Alive)
            ]
        );
        assert_eq!(reads::take(), vec![]);
        let alive = held_alive();
        assert!(alive.contains_key(&ids[0].pid) && alive.contains_key(&ids[2].pid));
        assert!(!alive.contains_key(&ids[1].pid));
        for id in &ids {
            release(id.pid);
        }
    }

    /// A look at held processes goes by the epoll instance: it answers which ended without a
    /// poll of each pidfd (`POLLED` stays 0), and a pidfd let go of is out of it.
    #[test]
    fn held_processes_are_looked_at_without_polling_each_pidfd() {
        let (mut children, ids) = held_services(EPOLL_LOOK + 1);
        let refs: Vec<&ProcessIdentity> = ids.iter().collect();
        children[0].end();
        POLLED.with(|p| p.set(0));
        let mut expected = vec![Some(Liveness::Alive); ids.len()];
        expected[0] = Some(Liveness::Exited);
        assert_eq!(liveness_all(&refs), expected);
        let alive = held_alive();
        assert!(!alive.contains_key(&ids[0].pid));
        assert!(ids[1..].iter().all(|id| alive.contains_key(&id.pid)));
        assert_eq!(POLLED.with(|p| p.get()), 0, "polled pidfds one by one");
        // Ended and let go of: neither answered nor reported by the epoll instance.
        release(ids[0].pid);
        assert_eq!(liveness(&ids[0]), None);
        children[1].end();
        POLLED.with(|p| p.set(0));
        expected = vec![Some(Liveness::Alive); ids.len() - 1];
        expected[0] = Some(Liveness::Exited);
        assert_eq!(liveness_all(&refs[1..]), expected);
        assert_eq!(POLLED.with(|p| p.get()), 0);
        // One among many: its own pidfd is polled.
        assert_eq!(liveness(&ids[1]), Some(Liveness::Exited));
        assert_eq!(liveness(&ids[2]), Some(Liveness::Alive));
        assert_eq!(POLLED.with(|p| p.get()), 2);
        for id in &ids[1..] {
            release(id.pid);
        }
    }
}
