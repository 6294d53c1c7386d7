//! Process identity, process groups, spawning and stopping (spec §6).
//!
//! A PID is data with an identity: `(pid, pgid, start_time, boot_id)`, plus the spawn nonce
//! every service carries in `MIRRORD_UP_INSTANCE`. Nothing recorded is signalled before that
//! identity is checked again; a mismatch means "gone".

mod error;
pub mod pidfds;
pub mod sweep;

pub use crate::os::spawn::{is_executable, search_path};
pub use error::{IdKind, Refusal};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

pub use crate::os::{
    MarkedProc, OwnIds, ProcInfo, boot_id, environ_of, own_ids, pidfd_open, proc_info, same_alive,
    scan, scan_marked, signal_if_same,
};

/// Who listens on a TCP port, seen from a service's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortOwner {
    /// A process of the group holds a listening socket of the port.
    Group,
    /// Sockets listen on the port, none of them held by the group: by `pid` when it could be
    /// found (a process of another user cannot be looked into).
    Outside(Option<i32>),
    /// Nothing listens on the port in this network namespace (a container's port, say): who
    /// answers cannot be told.
    Unknown,
}

/// Who holds the listening sockets of TCP `port`: the process group `pgid`, or someone else.
pub fn port_owner(port: u16, pgid: i32) -> PortOwner {
    let inodes = crate::os::listening_inodes(port);
    if inodes.is_empty() {
        return PortOwner::Unknown;
    }
    let all = scan();
    let holds = |p: &ProcInfo| !p.zombie && crate::os::holds_socket(p.pid, &inodes) == Some(true);
    if all.iter().filter(|p| p.pgid == pgid).any(holds) {
        return PortOwner::Group;
    }
    PortOwner::Outside(all.iter().find(|p| holds(p)).map(|p| p.pid))
}

/// Markers every service process carries (spec §5), so a lost state can be recovered.
pub const ENV_PROJECT: &str = "MIRRORD_UP_PROJECT";
pub const ENV_SERVICE: &str = "MIRRORD_UP_SERVICE";
/// The project's state directory: tells apart two state dirs that use the same project name.
pub const ENV_STATE: &str = "MIRRORD_UP_STATE";
/// Unique per spawn.
pub const ENV_INSTANCE: &str = "MIRRORD_UP_INSTANCE";
/// Carried by a background supervisor: its project's state directory (`down --force` finds it).
pub const ENV_SUPERVISOR: &str = "MIRRORD_UP_SUPERVISOR";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub pid: i32,
    pub pgid: i32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
    pub boot_id: String,
    /// The `MIRRORD_UP_INSTANCE` the process was started with, if any.
    #[serde(default)]
    pub nonce: Option<String>,
}

/// What a recorded identity is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The very process, alive.
    Alive,
    /// Exited (or a zombie). Its group may still have members.
    Exited,
    /// The PID belongs to another process now (or another boot): never signal it.
    Recycled,
}

impl ProcessIdentity {
    /// Reads the identity of a live process.
    pub fn of(pid: i32, nonce: Option<String>) -> std::io::Result<ProcessIdentity> {
        let info = proc_info(pid)?;
        Ok(ProcessIdentity {
            pid,
            pgid: info.pgid,
            start_time: info.start_time,
            boot_id: boot_id().to_owned(),
            nonce,
        })
    }

    /// Whether the recorded process is alive: from its held pidfd when this process holds one
    /// ([`pidfds`]: no `/proc` read), else from `/proc/<pid>/stat`.
    pub fn liveness(&self) -> Liveness {
        pidfds::liveness(self).unwrap_or_else(|| self.read_liveness())
    }

    /// [`Self::liveness`] as `/proc/<pid>/stat` tells it.
    pub fn read_liveness(&self) -> Liveness {
        if self.boot_id != boot_id() {
            return Liveness::Recycled;
        }
        match proc_info(self.pid) {
            Err(_) => Liveness::Exited,
            Ok(info) if info.start_time != self.start_time => Liveness::Recycled,
            Ok(info) if info.zombie => Liveness::Exited,
            Ok(_) => Liveness::Alive,
        }
    }

    /// Why this recorded identity must never be signalled, or `None` when it may be (after
    /// its liveness is checked). A service is a session leader, so its pid is its group; a
    /// group of 0 or 1, or this process's own pid, group or session, would hit the caller
    /// (`killpg(0)` is "my own group") or everyone.
    pub fn refusal(&self) -> Option<Refusal> {
        let (pid, pgid) = (self.pid, self.pgid);
        if pid <= 1 || pgid <= 1 {
            return Some(Refusal::NoServiceGroup { pid, pgid });
        }
        let me = own_ids();
        for (what, id) in [(IdKind::Pid, pid), (IdKind::Group, pgid)] {
            if me.contains(id) {
                return Some(Refusal::OurOwn {
                    what,
                    id,
                    ours: (me.pid, me.pgid, me.sid),
                });
            }
        }
        if pid != pgid {
            return Some(Refusal::NotLeader { pid, pgid });
        }
        None
    }

    /// The recorded process is alive, the very one (start time), and still leads the recorded
    /// group: only then may the group be signalled as a whole.
    pub fn leads_group(&self) -> bool {
        if self.refusal().is_some() || self.boot_id != boot_id() {
            return false;
        }
        // A held session leader that runs leads its group (no `/proc` read).
        if let Some(leads) = pidfds::leads_group(self) {
            return leads;
        }
        proc_info(self.pid)
            .is_ok_and(|i| i.start_time == self.start_time && !i.zombie && i.pgid == self.pgid)
    }

    /// Live members of this process's group that are provably ours: while the leader lives
    /// the PGID cannot be reused, so every member is; once it is gone, only members carrying
    /// our spawn nonce count.
    pub fn live_members(&self, table: &ProcessTable) -> Vec<i32> {
        if self.boot_id != boot_id() || self.refusal().is_some() {
            return Vec::new();
        }
        let Some(members) = table.groups.get(&self.pgid) else {
            return Vec::new();
        };
        let leader_ok = members
            .iter()
            .any(|m| m.pid == self.pid && m.start_time == self.start_time);
        if leader_ok {
            return members.iter().map(|m| m.pid).collect();
        }
        let Some(nonce) = &self.nonce else {
            return Vec::new();
        };
        members
            .iter()
            .filter(|m| environ_of(m.pid).is_some_and(|env| env.get(ENV_INSTANCE) == Some(nonce)))
            .map(|m| m.pid)
            .collect()
    }

    /// Sends `sig` to the group (or, with the leader gone, to each verified member).
    /// Returns how many processes were signalled.
    pub fn signal_group(&self, sig: Signal, table: &ProcessTable) -> usize {
        let members = self.live_members(table);
        if members.is_empty() {
            return 0;
        }
        if members.contains(&self.pid) && self.leads_group() {
            let _ = killpg(Pid::from_raw(self.pgid), sig);
        } else {
            for pid in &members {
                let _ = kill(Pid::from_raw(*pid), sig);
            }
        }
        members.len()
    }
}

/// A snapshot of live (non-zombie) processes by process group.
#[derive(Debug, Default)]
pub struct ProcessTable {
    pub groups: HashMap<i32, Vec<ProcInfo>>,
}

impl ProcessTable {
    pub fn snapshot() -> ProcessTable {
        let mut groups: HashMap<i32, Vec<ProcInfo>> = HashMap::new();
        for info in scan() {
            if !info.zombie {
                groups.entry(info.pgid).or_default().push(info);
            }
        }
        ProcessTable { groups }
    }
}

/// One group to stop.
#[derive(Debug, Clone)]
pub struct StopRequest {
    pub name: String,
    pub identity: ProcessIdentity,
    pub signal: Signal,
    pub timeout: Duration,
    /// Its signal was sent already ([`stop_quickly`], by the pass that decided the stop): the
    /// stop waits for the group, escalates and looks for escapes, but does not send the signal
    /// a second time (to many programs a second SIGTERM means "quit now").
    pub signalled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopOutcome {
    pub name: String,
    /// Needed SIGKILL after the grace period.
    pub killed: bool,
    /// PIDs still alive after SIGKILL and the final wait (should never happen).
    pub survivors: Vec<i32>,
    /// Not signalled at all: the recorded identity cannot be trusted (`ProcessIdentity::refusal`).
    pub refused: Option<Refusal>,
    /// Processes of this instance outside its group (found by its spawn marker) that were
    /// stopped after it, e.g. mirrord's intproxy.
    pub escaped: Vec<i32>,
}

impl StopOutcome {
    /// A group that ended on its signal, and nothing left it.
    pub fn ended(name: &str) -> StopOutcome {
        StopOutcome {
            name: name.to_owned(),
            killed: false,
            survivors: vec![],
            refused: None,
            escaped: vec![],
        }
    }
}

/// Set by a second Ctrl-C: every stop in progress skips the rest of its grace period.
pub(crate) static KILL_NOW: AtomicBool = AtomicBool::new(false);
/// Set by the first Ctrl-C: waits for readiness or completion give up at once.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Escalate every stop in progress (and every later one) to SIGKILL now.
pub fn kill_now() {
    INTERRUPTED.store(true, Ordering::SeqCst);
    KILL_NOW.store(true, Ordering::SeqCst);
}

/// A second Ctrl-C asked to kill every stop at once (kills are then the user's, not a
/// grace period's).
pub fn kill_now_requested() -> bool {
    KILL_NOW.load(Ordering::SeqCst)
}

/// Stop waiting for readiness or completion: the tool is shutting down.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// After SIGKILL, how long to wait for the kernel to take the processes down.
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(5);

/// Stops several groups in parallel: each gets its signal, then SIGKILL once its own timeout
/// passes; returns when every group is empty (members counted, not only the leader).
pub fn stop_groups(requests: &[StopRequest]) -> Vec<StopOutcome> {
    stop_groups_with(requests, &mut |_| {})
}

/// As `stop_groups`, calling `progress(outcome)` when a request is done.
///
/// Each request is its group first, then whatever carries its spawn nonce outside the group
/// (an intproxy that called `setsid`, a daemonised child): as each group is found empty, those
/// get the same signal, grace period and SIGKILL — found among the children this process
/// adopted when it is their subreaper, else by one `/proc` scan after every group has its
/// signal — and once every group is empty, what left them meanwhile is looked for. A request
/// whose identity cannot be trusted (`ProcessIdentity::refusal`) is not signalled at all.
///
/// The full `/proc` scan for groups is the slow path: while a group's leader lives, its PGID
/// is ours and the group is signalled and probed directly (`killpg`, `kill(-pgid, 0)`); only a
/// group whose leader is gone but that still has processes needs the scan (and the nonce check).
pub fn stop_groups_with(
    requests: &[StopRequest],
    progress: &mut dyn FnMut(&StopOutcome),
) -> Vec<StopOutcome> {
    stop_groups_killable(
        requests,
        &mut |ended| ended.iter().for_each(|o| progress(o)),
        &|| false,
    )
}

/// As `stop_groups_with`; `kill()` true escalates every request still in progress to SIGKILL
/// now (the supervisor's per-stop kill switch: its machine's grace timer fired). `progress`
/// hears the requests done in one look together (one call per look, not per request: a
/// thread handed each one at a time is woken, and runs ahead of this one, once per request).
pub fn stop_groups_killable(
    requests: &[StopRequest],
    progress: &mut dyn FnMut(&[&StopOutcome]),
    kill: &dyn Fn() -> bool,
) -> Vec<StopOutcome> {
    let start = Instant::now();
    let _running = StopRunning::begin();
    let mut table: Option<ProcessTable> = None;
    let mut outcomes: Vec<StopOutcome> = requests
        .iter()
        .map(|r| StopOutcome {
            refused: r.identity.refusal(),
            ..StopOutcome::ended(&r.name)
        })
        .collect();
    // After the stop, what left the groups meanwhile is looked for among this process's own
    // children only when every group is its own child's and it is a subreaper: then whatever a
    // group leaves behind comes back to it as its parent ends (`Some`); else in all of `/proc`.
    let children_only = crate::os::is_child_subreaper()
        .then(|| {
            let me = std::process::id() as i32;
            requests.iter().zip(&outcomes).all(|(r, o)| {
                o.refused.is_some()
                    || pidfds::own_child(&r.identity).unwrap_or_else(|| {
                        proc_info(r.identity.pid)
                            .is_ok_and(|i| i.ppid == me && i.start_time == r.identity.start_time)
                    })
            })
        })
        .filter(|all| *all);
    let mut pending: BTreeMap<usize, bool> = BTreeMap::new();
    for (i, r) in requests.iter().enumerate() {
        if let Some(why) = &outcomes[i].refused {
            tracing::warn!(service = %r.name, "not signalled: {why}");
            continue;
        }
        if !r.signalled {
            send_stop_signal(r, &mut table);
        }
        pending.insert(i, false);
    }
    tracing::debug!(groups = requests.len(), took = ?start.elapsed(), "stop: signalled");
    // What runs outside each group under its nonce gets the group's signal once the group is
    // empty. With `children_only`, it is looked for then, among the children this process
    // adopted ([`adopted_escapes`]): once every process of a group has ended, whatever left
    // the group has been moved to this process (a subreaper) or runs below what was. Else one
    // scan of `/proc` now, once every group has its signal (the groups do not wait for it).
    let mut outside = match children_only {
        Some(_) => BTreeMap::new(),
        None => escaped_of(requests, &outcomes, &BTreeSet::new()),
    };
    // Groups found empty whose escaped processes are still to be looked for (`children_only`),
    // and when they were last looked for: at most every `ADOPTED_LOOK_EVERY` while other
    // groups still run, at once when none does.
    let mut emptied: Vec<usize> = Vec::new();
    let mut looked_at: Option<Instant> = None;
    // Whether the last look among the adopted children came once every group was empty and
    // found nothing outside them: the look after the stop would read the same lists again
    // (nothing leaves a group that has no process left).
    let mut last_look_found_none = false;
    // Each leader's exit wakes the wait below at once (its pidfd); members that outlive their
    // leader, and escaped processes, are looked at after a pause that grows to 25 ms. At most
    // `MAX_EXIT_FDS` descriptors are opened (a 1024-descriptor limit must leave room for the
    // scans and the state write); the groups beyond are looked at after each pause. The
    // pidfds the supervisor holds on its services ([`pidfds`]) cost no new descriptor.
    let mut opened = 0;
    let mut exits: BTreeMap<usize, std::sync::Arc<std::os::fd::OwnedFd>> = pending
        .keys()
        .filter_map(|&i| {
            let id = &requests[i].identity;
            if let Some(fd) = pidfds::held_fd(id) {
                return Some((i, fd));
            }
            if opened >= MAX_EXIT_FDS {
                return None;
            }
            let fd = pidfd_open(id.pid).ok()?;
            opened += 1;
            // Opened on the recorded process, not on a PID reused since.
            id.leads_group().then(|| (i, std::sync::Arc::new(fd)))
        })
        .collect();
    // Then, as each group is found empty, what left it: signal, grace, SIGKILL.
    let mut phase2: BTreeMap<usize, (Instant, Vec<sweep::Target>)> = BTreeMap::new();
    let mut pause = Duration::from_millis(1);
    while !pending.is_empty() || !phase2.is_empty() {
        let mut table: Option<ProcessTable> = None;
        // Leaders that ended: collected now (their status kept for `take_exit`), so that an
        // empty group reads as gone without a scan of `/proc`.
        for i in pending.keys() {
            if !exits.contains_key(i) {
                collect(requests[*i].identity.pid);
            }
        }
        let elapsed = start.elapsed();
        let mut done: Vec<usize> = Vec::new();
        pending.retain(|&i, killed| {
            let r = &requests[i];
            if group_gone(&r.identity, &mut table) {
                outcomes[i].killed |= *killed;
                match children_only {
                    Some(_) => emptied.push(i),
                    None => {
                        let targets = outside.remove(&i).unwrap_or_default();
                        escapes_begin(i, targets, &mut outcomes[i], &mut phase2, &mut done);
                    }
                }
                return false;
            }
            if !*killed && (elapsed >= r.timeout || KILL_NOW.load(Ordering::SeqCst) || kill()) {
                signal_group_fast(&r.identity, Signal::SIGKILL, &mut table);
                *killed = true;
            } else if *killed && elapsed >= r.timeout + KILL_WAIT {
                outcomes[i].killed = true;
                outcomes[i].survivors = r
                    .identity
                    .live_members(table.get_or_insert_with(ProcessTable::snapshot));
                outside.remove(&i);
                done.push(i);
                return false;
            }
            true
        });
        if !emptied.is_empty()
            && (pending.is_empty() || looked_at.is_none_or(|t| t.elapsed() >= ADOPTED_LOOK_EVERY))
        {
            looked_at = Some(Instant::now());
            let mut found = adopted_escapes(requests, &outcomes)
                .unwrap_or_else(|| escaped_of(requests, &outcomes, &BTreeSet::new()));
            last_look_found_none = pending.is_empty() && found.values().all(Vec::is_empty);
            for i in emptied.drain(..) {
                let targets = found.remove(&i).unwrap_or_default();
                escapes_begin(i, targets, &mut outcomes[i], &mut phase2, &mut done);
            }
            tracing::debug!(took = ?start.elapsed(), "stop: escaped looked for");
        }
        phase2.retain(|&i, (since, targets)| {
            let waited = since.elapsed();
            let o = &mut outcomes[i];
            targets.retain(|t| {
                let (pid, st) = (t.proc.info.pid, t.proc.info.start_time);
                // Ours to collect if we are its parent or subreaper; a no-op otherwise.
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
                if !same_alive(pid, st) {
                    return false;
                }
                if waited >= t.timeout + KILL_WAIT {
                    o.survivors.push(pid);
                    return false;
                }
                if waited >= t.timeout || KILL_NOW.load(Ordering::SeqCst) || kill() {
                    o.killed |= sweep::send(&t.proc, Signal::SIGKILL);
                }
                true
            });
            if targets.is_empty() {
                done.push(i);
                return false;
            }
            true
        });
        if !done.is_empty() {
            progress(&done.iter().map(|&i| &outcomes[i]).collect::<Vec<_>>());
        }
        if pending.is_empty() && phase2.is_empty() {
            break;
        }
        exits.retain(|i, _| pending.contains_key(i));
        wait_exits(&mut exits, pause);
        pause = (pause * 2).min(Duration::from_millis(25));
    }
    let refused: Vec<&StopOutcome> = outcomes.iter().filter(|o| o.refused.is_some()).collect();
    if !refused.is_empty() {
        progress(&refused);
    }
    tracing::debug!(took = ?start.elapsed(), "stop: every group empty");
    // Whatever escaped while the groups were being stopped — unless the last look, made once
    // every group was empty, found nothing: a look now would read the same lists again.
    if !(last_look_found_none && outcomes.iter().all(|o| o.escaped.is_empty())) {
        stop_late_escapes(requests, &mut outcomes, children_only.is_some());
    }
    tracing::debug!(took = ?start.elapsed(), "stop: done");
    outcomes
}

/// Once every group is empty: whatever escaped while the groups were being stopped, looked
/// for among this process's own children with `children_only` (each was re-parented to it
/// when its parent ended; then what those leave behind comes back, and is looked for again),
/// else by one scan of `/proc`; each found gets its request's signal, grace period and SIGKILL.
fn stop_late_escapes(requests: &[StopRequest], outcomes: &mut [StopOutcome], children_only: bool) {
    let mut seen: BTreeSet<i32> = outcomes.iter().flat_map(|o| o.escaped.clone()).collect();
    let mut rounds = 0;
    loop {
        // Our own children only: each was re-parented to us when its parent ended.
        let late = (children_only && rounds < MAX_CHILD_ROUNDS)
            .then(|| late_among_children(requests, outcomes, &seen))
            .flatten()
            .unwrap_or_else(|| escaped_of(requests, outcomes, &seen));
        let (owners, targets): (Vec<usize>, Vec<sweep::Target>) = late
            .into_iter()
            .flat_map(|(i, ts)| ts.into_iter().map(move |t| (i, t)))
            .unzip();
        if targets.is_empty() {
            break;
        }
        for ((t, i), r) in targets
            .iter()
            .zip(owners)
            .zip(sweep::stop_targets(&targets))
        {
            let o = &mut outcomes[i];
            o.escaped.push(t.proc.info.pid);
            seen.insert(t.proc.info.pid);
            o.killed |= r.killed;
            if r.survived {
                o.survivors.push(t.proc.info.pid);
            }
        }
        // A full scan found every one at once; among our children, what those left behind
        // comes back to us now that they have ended: look again.
        if !children_only || rounds >= MAX_CHILD_ROUNDS {
            break;
        }
        rounds += 1;
    }
}

/// How many times a stop looks again among its own children for what the processes it
/// stopped left behind, before it scans all of `/proc` instead.
const MAX_CHILD_ROUNDS: usize = 16;

/// The marked processes carrying a request's nonce among this process's own children (not in
/// `seen`, not in the request's group), by request; `None` when the children cannot be listed.
fn late_among_children(
    requests: &[StopRequest],
    outcomes: &[StopOutcome],
    seen: &BTreeSet<i32>,
) -> Option<BTreeMap<usize, Vec<sweep::Target>>> {
    let alive = pidfds::held_alive();
    let found = crate::os::adopted_children()?
        .into_iter()
        .filter(|pid| !alive.contains_key(pid) && !seen.contains(pid))
        .filter_map(crate::os::marked_of)
        .collect();
    Some(escaped_in(requests, outcomes, found))
}

/// With `children_only` (every group is this process's own child and it is a subreaper):
/// what left the groups of `requests` whose every process has ended. It is among the children
/// this process adopted (a process whose parent ends is moved to it: to its main thread,
/// [`crate::os::adopted_children`], not among the services its other threads spawned) or
/// below them: those trees are walked (`/proc/<pid>/task/*/children`); the running services'
/// leaders (their pidfds are held) and the requests' own leaders are not, nor members of a
/// request's group.
/// What still runs in a group is looked for once that group is empty. `None` when the kernel
/// does not list children.
fn adopted_escapes(
    requests: &[StopRequest],
    outcomes: &[StopOutcome],
) -> Option<BTreeMap<usize, Vec<sweep::Target>>> {
    let groups: BTreeSet<i32> = requests.iter().map(|r| r.identity.pgid).collect();
    let leaders: BTreeSet<i32> = requests.iter().map(|r| r.identity.pid).collect();
    let alive = pidfds::held_alive();
    let mut stack: Vec<i32> = crate::os::adopted_children()?
        .into_iter()
        .filter(|pid| !alive.contains_key(pid) && !leaders.contains(pid))
        .collect();
    let mut visited = BTreeSet::new();
    let mut found = Vec::new();
    while let Some(pid) = stack.pop() {
        if !visited.insert(pid) {
            continue;
        }
        stack.extend(crate::os::children_of(pid));
        // A member of a stopped group is stopped with it: its environment is not read.
        let in_group = nix::unistd::getpgid(Some(Pid::from_raw(pid)))
            .is_ok_and(|g| groups.contains(&g.as_raw()));
        if !in_group {
            found.extend(crate::os::marked_of(pid));
        }
    }
    Some(escaped_in(requests, outcomes, found))
}

/// How often a stop looks among its adopted children ([`adopted_escapes`]) while some of its
/// groups still run: each look reads every thread's children list.
const ADOPTED_LOOK_EVERY: Duration = Duration::from_millis(20);

/// Group `i` is empty: what left it (`targets`) gets its signal now (then its grace period,
/// then SIGKILL: `phase2`); with nothing, the request is done.
fn escapes_begin(
    i: usize,
    targets: Vec<sweep::Target>,
    outcome: &mut StopOutcome,
    phase2: &mut BTreeMap<usize, (Instant, Vec<sweep::Target>)>,
    done: &mut Vec<usize>,
) {
    if targets.is_empty() {
        done.push(i);
        return;
    }
    for t in &targets {
        sweep::send(&t.proc, t.signal);
        if t.signal != Signal::SIGCONT {
            sweep::send(&t.proc, Signal::SIGCONT);
        }
        outcome.escaped.push(t.proc.info.pid);
    }
    phase2.insert(i, (Instant::now(), targets));
}

/// How many pidfds one `stop_groups` holds at most.
const MAX_EXIT_FDS: usize = 256;

/// Sleeps until one of `exits` (leaders' pidfds) is readable, or `pause`; the ones that are
/// readable (their process ended) are taken out.
fn wait_exits(exits: &mut BTreeMap<usize, std::sync::Arc<std::os::fd::OwnedFd>>, pause: Duration) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    if exits.is_empty() {
        std::thread::sleep(pause);
        return;
    }
    let keys: Vec<usize> = exits.keys().copied().collect();
    let ready: Vec<usize> = {
        let mut fds: Vec<PollFd<'_>> = exits
            .values()
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        let ms =
            PollTimeout::try_from(pause.as_millis().min(1000) as i32).unwrap_or(PollTimeout::ZERO);
        match poll(&mut fds, ms) {
            Ok(n) if n > 0 => keys
                .iter()
                .zip(&fds)
                .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
                .map(|(k, _)| *k)
                .collect(),
            Ok(_) => Vec::new(),
            Err(_) => {
                std::thread::sleep(pause);
                Vec::new()
            }
        }
    };
    for k in ready {
        exits.remove(&k);
    }
}

/// Collects `pid` if it is a child of ours that ended, keeping its status for `take_exit`
/// (as `reap_children` does for all).
fn collect(pid: i32) {
    if pid <= 1 {
        return;
    }
    let mut map = REAPED.lock().unwrap_or_else(|e| e.into_inner());
    let kind = match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => ExitKind::Code(code),
        Ok(WaitStatus::Signaled(_, sig, _)) => ExitKind::Signal(sig),
        _ => return,
    };
    if map.len() > 4096 {
        map.clear();
    }
    map.insert(pid, kind);
}

/// The live processes carrying a request's spawn nonce outside its recorded group (not in
/// `seen`), by request, from one `/proc` scan.
fn escaped_of(
    requests: &[StopRequest],
    outcomes: &[StopOutcome],
    seen: &BTreeSet<i32>,
) -> BTreeMap<usize, Vec<sweep::Target>> {
    if !requests
        .iter()
        .zip(outcomes)
        .any(|(r, o)| o.refused.is_none() && r.identity.nonce.is_some())
    {
        return BTreeMap::new();
    }
    let found = scan_escaped(requests)
        .into_iter()
        .filter(|p| !seen.contains(&p.info.pid))
        .collect();
    escaped_in(requests, outcomes, found)
}

/// Of the marked processes `found`, those carrying a request's spawn nonce outside its
/// recorded group, by request (with its signal and grace period).
fn escaped_in(
    requests: &[StopRequest],
    outcomes: &[StopOutcome],
    found: Vec<MarkedProc>,
) -> BTreeMap<usize, Vec<sweep::Target>> {
    let nonces: BTreeMap<&str, usize> = requests
        .iter()
        .enumerate()
        .filter(|(i, _)| outcomes[*i].refused.is_none())
        .filter_map(|(i, r)| Some((r.identity.nonce.as_deref()?, i)))
        .collect();
    let mut out: BTreeMap<usize, Vec<sweep::Target>> = BTreeMap::new();
    if nonces.is_empty() {
        return out;
    }
    let wanted: BTreeSet<String> = nonces.keys().map(|n| (*n).to_owned()).collect();
    let selector = sweep::Selector {
        instances: Some(&wanted),
        ..Default::default()
    };
    for proc in found.into_iter().filter(|p| selector.matches(p)) {
        let i = nonces[proc.instance.as_deref().expect("selected by nonce")];
        let r = &requests[i];
        if proc.info.pgid == r.identity.pgid {
            continue; // a member of the group: stopped with it
        }
        out.entry(i).or_default().push(sweep::Target {
            proc,
            signal: r.signal,
            timeout: r.timeout,
        });
    }
    out
}

/// The marked processes outside every known service group, from one `/proc` scan: the
/// groups of the services whose pidfds this process holds and that run (nothing of them is
/// read), and those of `requests` (their leaders' `stat` is read, not their environments).
/// A held leader that ended during the scan is looked at again: its PID may have been
/// reused by then.
fn scan_escaped(requests: &[StopRequest]) -> Vec<MarkedProc> {
    let alive = pidfds::held_alive();
    let recorded = requests
        .iter()
        .filter(|r| r.identity.pid == r.identity.pgid && !alive.contains_key(&r.identity.pid))
        .map(|r| (r.identity.pid, r.identity.start_time))
        .collect();
    let known = crate::os::KnownGroups { alive, recorded };
    let mut found = crate::os::scan_marked_outside(&known);
    let still = pidfds::held_alive();
    for pid in known.alive.keys().filter(|p| !still.contains_key(p)) {
        found.extend(crate::os::marked_of(*pid));
    }
    found
}

/// After an instance ended on its own (its leader exited): stops what it left behind, in its
/// group or outside it (an intproxy that called `setsid`), found by its spawn nonce, with its
/// stop signal and grace period. Returns the PIDs that had to be stopped.
pub fn stop_leftovers(
    name: &str,
    identity: &ProcessIdentity,
    signal: Signal,
    timeout: Duration,
) -> Vec<i32> {
    let outcome = stop_groups(&[StopRequest {
        name: name.to_owned(),
        identity: identity.clone(),
        signal,
        timeout,
        signalled: false,
    }]);
    outcome.into_iter().flat_map(|o| o.escaped).collect()
}

/// Test hook: with `MIRRORD_UP_TEST_CRASH_AFTER_SPAWN` set, die right after a spawn, before
/// its process is recorded (exit code 99). In a level spawned from several threads
/// ([`spawn_level`]) the others may have spawned one each meanwhile.
fn test_crash_after_spawn() {
    if std::env::var_os("MIRRORD_UP_TEST_CRASH_AFTER_SPAWN").is_some() {
        std::process::exit(99);
    }
}

/// Signals each of `requests` now (`StopRequest::signalled`) and waits up to `within` for
/// every group to be empty and nothing to have left it: true when so (each stop then ended
/// as [`StopOutcome::ended`] says, and the full stop has nothing left to do). Only for the
/// groups of this process's own children on whose leaders it holds pidfds, as a subreaper
/// (anything that left such a group comes back to it, and one look at its children finds
/// it); else nothing is signalled and the answer is false. Each leader that ended is collected
/// (its status kept for `take_exit`); a group with other members left, or something found
/// outside it, is the full stop's (`stop_groups_killable`), which then signals nothing again.
pub fn stop_quickly(requests: &mut [StopRequest], within: Duration) -> bool {
    let start = Instant::now();
    if requests.is_empty() || !crate::os::is_child_subreaper() {
        return false;
    }
    let mut exits = BTreeMap::new();
    for (i, r) in requests.iter().enumerate() {
        let own = pidfds::own_child(&r.identity) == Some(true);
        match pidfds::held_fd(&r.identity) {
            Some(fd) if own && !r.signalled && r.identity.refusal().is_none() => {
                exits.insert(i, fd);
            }
            _ => return false,
        }
    }
    for r in requests.iter_mut() {
        r.signalled = send_stop_signal(r, &mut None);
    }
    // Every leader's exit (its pidfd readable), or the time is up.
    while !exits.is_empty() {
        let Some(left) = within.checked_sub(start.elapsed()) else {
            return false;
        };
        wait_exits(&mut exits, left.max(Duration::from_millis(1)));
    }
    for r in requests.iter() {
        collect(r.identity.pid);
        if killpg(Pid::from_raw(r.identity.pgid), None) != Err(nix::errno::Errno::ESRCH) {
            return false;
        }
    }
    let outcomes: Vec<StopOutcome> = requests
        .iter()
        .map(|r| StopOutcome::ended(&r.name))
        .collect();
    adopted_escapes(requests, &outcomes).is_some_and(|found| found.values().all(Vec::is_empty))
}

/// Sends each request not signalled yet its stop signal (`send_stop_signal`) now; those
/// sent are marked signalled, and the stop that watches them does not send it again.
pub fn signal_now(requests: &mut [StopRequest]) {
    let mut table = None;
    for r in requests.iter_mut().filter(|r| !r.signalled) {
        if r.identity.refusal().is_none() {
            r.signalled = send_stop_signal(r, &mut table);
        }
    }
}

/// The stop's signal; then SIGCONT, as a stopped (SIGSTOP) process must run to act on it.
fn send_stop_signal(r: &StopRequest, table: &mut Option<ProcessTable>) -> bool {
    let id = &r.identity;
    // A leader that runs (and is not ours: `leads_group` refuses as `refusal` does) holds
    // its PGID: both signals go to it with no second look.
    let leader = id.leads_group().then(|| Pid::from_raw(id.pgid));
    let mut send = |signal| match leader {
        Some(pgid) => killpg(pgid, signal).is_ok(),
        None => signal_group_fast(id, signal, table),
    };
    let sent = send(r.signal);
    if sent && r.signal != Signal::SIGCONT {
        send(Signal::SIGCONT);
    }
    sent
}

/// Signals the group of `id`: directly while its leader lives, else each verified member
/// (scanning `/proc` once, into `table`). True if anything was signalled.
fn signal_group_fast(id: &ProcessIdentity, sig: Signal, table: &mut Option<ProcessTable>) -> bool {
    if id.refusal().is_some() {
        return false;
    }
    if id.leads_group() {
        return killpg(Pid::from_raw(id.pgid), sig).is_ok();
    }
    // The leader ended: an empty group (its leader collected, if it was our child) needs no
    // look at `/proc`.
    collect(id.pid);
    if killpg(Pid::from_raw(id.pgid), None) == Err(nix::errno::Errno::ESRCH) {
        return false;
    }
    id.signal_group(sig, table.get_or_insert_with(ProcessTable::snapshot)) > 0
}

/// Whether no live process of the group of `id` is left.
fn group_gone(id: &ProcessIdentity, table: &mut Option<ProcessTable>) -> bool {
    if id.boot_id != boot_id() || id.refusal().is_some() {
        return true;
    }
    // No process at all in the group (zombies included): certainly gone.
    if killpg(Pid::from_raw(id.pgid), None) == Err(nix::errno::Errno::ESRCH) {
        return true;
    }
    if id.leads_group() {
        return false;
    }
    // The leader ended: a zombie child of ours keeps the group from reading empty. Collected
    // now (its status kept for `take_exit`), the group is looked at again before `/proc` is.
    collect(id.pid);
    if killpg(Pid::from_raw(id.pgid), None) == Err(nix::errno::Errno::ESRCH) {
        return true;
    }
    // Only zombies, or members left behind by the leader: look closer.
    id.live_members(table.get_or_insert_with(ProcessTable::snapshot))
        .is_empty()
}

/// What to run, and where its output goes.
#[derive(Debug, Clone, PartialEq)]
pub struct SpawnRequest {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    /// stdout and stderr, appended (or separate files for CI sessions).
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub nonce: String,
    /// `ci start` passes the user's `MIRRORD_*` variables on to `mirrord exec`, as real
    /// `mirrord ci` does; services from the YAML get only the behaviour ones
    /// (`handover::BEHAVIOUR_VARS`).
    pub keep_mirrord_env: bool,
}

/// A child spawned by this process; its exit status is collected by `waitpid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spawned {
    pub pid: i32,
}

impl Spawned {
    /// Its exit, once it has ended (collected now, or earlier by `reap_children`).
    pub fn try_wait(&self) -> Option<ExitKind> {
        take_exit(self.pid)
    }
}

/// Spawns `req` in a new session (so its own process group), stdin `/dev/null`, output
/// appended to its files, without the inherited `MIRRORD_*` variables that would change the
/// configuration behind the generated one (`handover::inherited`; all of them pass with
/// `keep_mirrord_env`), and with `req.env` added.
pub fn spawn(req: &SpawnRequest) -> std::io::Result<(Spawned, ProcessIdentity)> {
    use std::os::unix::ffi::OsStrExt;
    let stdout: std::os::fd::OwnedFd = open_append(&req.stdout)?.into();
    let stderr: std::os::fd::OwnedFd = if req.stderr == req.stdout {
        stdout.try_clone()?
    } else {
        open_append(&req.stderr)?.into()
    };
    // The inherited part is read once per level of a pass (`os::spawn_cache`), as is the
    // program a bare name stands for in the child's `PATH`.
    let env = crate::os::spawn_cache::with_overrides(
        &crate::os::spawn_cache::inherited_env(req.keep_mirrord_env),
        &req.env,
    );
    let path_var = env
        .iter()
        .find(|(k, _)| k.as_slice() == b"PATH")
        .map(|(_, p)| std::ffi::OsStr::from_bytes(p));
    let program = crate::os::spawn_cache::resolve(&req.program, path_var)?;
    let pid = crate::os::spawn::spawn(&crate::os::spawn::SpawnPlan {
        program: &program,
        arg0: &req.program,
        args: &req.args,
        env,
        cwd: &req.cwd,
        stdout: &stdout,
        stderr: &stderr,
    })?;
    test_crash_after_spawn();
    // posix_spawn returns after the exec (or its failure), so the session exists.
    let identity = ProcessIdentity::of(pid, Some(req.nonce.clone())).unwrap_or(ProcessIdentity {
        pid,
        pgid: pid,
        start_time: 0,
        boot_id: boot_id().to_owned(),
        nonce: Some(req.nonce.clone()),
    });
    Ok((Spawned { pid }, identity))
}

/// A job that [`spawn_level`] hands to another thread.
pub type Helper = Box<dyn FnOnce() + Send + 'static>;

/// The fewest spawns of a level that [`spawn_level`] shares with other threads: below it, one
/// wake-up of a helper costs more than it saves.
const SHARED_FROM: usize = 4;

/// [`spawn`] of every request of a level, the results in the order of `reqs`. With enough of
/// them and more than one CPU, helpers (`elsewhere` runs each on a thread of its own, or
/// refuses) take requests from the same list as this thread: a spawn waits in `posix_spawn`
/// for the child's `exec` and in the first read of its `/proc` entry, and the next spawn runs
/// meanwhile (a `sleep` spawned from two threads at once, this machine: 100 of them in
/// 36–46 ms instead of 42–50, 500 in 178–209 ms instead of 229–292). Each helper opens a
/// level of its own (`os::spawn_cache`: the environment read and the log directory checked
/// once per thread). A helper that never runs (no thread) takes no request: this thread
/// spawns them all.
pub fn spawn_level(
    reqs: Vec<SpawnRequest>,
    elsewhere: &dyn Fn(Helper) -> std::io::Result<()>,
) -> Vec<std::io::Result<(Spawned, ProcessIdentity)>> {
    let helpers = spawn_helpers(reqs.len());
    spawn_shared(reqs, helpers, elsewhere)
}

/// [`spawn_level`] with `helpers` helpers.
fn spawn_shared(
    reqs: Vec<SpawnRequest>,
    helpers: usize,
    elsewhere: &dyn Fn(Helper) -> std::io::Result<()>,
) -> Vec<std::io::Result<(Spawned, ProcessIdentity)>> {
    if helpers == 0 {
        return reqs.iter().map(spawn).collect();
    }
    type Outcome = std::io::Result<(Spawned, ProcessIdentity)>;
    let shared = Arc::new((reqs, AtomicUsize::new(0)));
    // Takes the next request until none is left.
    fn take_turns(shared: &(Vec<SpawnRequest>, AtomicUsize), mut done: impl FnMut(usize, Outcome)) {
        let (reqs, next) = shared;
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(req) = reqs.get(i) else { return };
            done(i, spawn(req));
        }
    }
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Outcome)>();
    for _ in 0..helpers {
        let (shared, tx) = (shared.clone(), tx.clone());
        let job: Helper = Box::new(move || {
            let _level = crate::os::spawn_cache::level();
            take_turns(&shared, |i, r| {
                let _ = tx.send((i, r));
            });
        });
        if let Err(e) = elsewhere(job) {
            tracing::debug!(error = %e, "spawns: no helper thread");
        }
    }
    drop(tx);
    let mut out: Vec<Option<Outcome>> = (0..shared.0.len()).map(|_| None).collect();
    take_turns(&shared, |i, r| out[i] = Some(r));
    // Ends once every helper's job is over (or was dropped unrun): each holds a sender.
    for (i, r) in rx {
        out[i] = Some(r);
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(std::io::Error::other("a helper's spawn was lost"))))
        .collect()
}

/// How many threads besides the caller's spawn a level of `n`: none below [`SHARED_FROM`] or
/// on one CPU; one less than the CPUs (at most three) otherwise.
fn spawn_helpers(n: usize) -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    if n < SHARED_FROM {
        return 0;
    }
    let cpus = *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from));
    cpus.clamp(1, 4) - 1
}

/// A log, in a checked directory (held open for the level: `os::spawn_cache::open_log`).
fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    crate::os::spawn_cache::open_log(path)
}

/// A fresh spawn nonce: unique per spawn (a random seed read once per process, the PID, and
/// a counter), not a secret.
pub fn new_nonce() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::AtomicU64;
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let mut bytes = [0u8; 8];
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            use std::io::Read;
            let _ = f.read_exact(&mut bytes);
        }
        u64::from_le_bytes(bytes) ^ crate::state::now_ms().rotate_left(17)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mixed =
        seed ^ (std::process::id() as u64).rotate_left(32) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("{mixed:016x}")
}

/// Processes of a project found by their markers (for `down --force` and crash recovery),
/// grouped by process group: `(pgid, service, nonce)`.
pub fn find_marked(state_dir: &Path) -> Vec<MarkedGroup> {
    let want = state_dir.to_string_lossy();
    let mut groups: BTreeMap<i32, MarkedGroup> = BTreeMap::new();
    for p in scan_marked() {
        if p.state.as_deref() != Some(&*want) {
            continue;
        }
        let info = p.info;
        let g = groups.entry(info.pgid).or_insert_with(|| MarkedGroup {
            pgid: info.pgid,
            service: p.service.clone().unwrap_or_default(),
            nonce: p.instance.clone(),
            leader: None,
            pids: Vec::new(),
        });
        if info.pid == info.pgid {
            g.leader = Some(ProcessIdentity {
                pid: info.pid,
                pgid: info.pgid,
                start_time: info.start_time,
                boot_id: boot_id().to_owned(),
                nonce: p.instance,
            });
        }
        g.pids.push(info.pid);
    }
    groups.into_values().collect()
}

/// Background supervisors of the project's state directory, found by their marker (never this
/// process, its group or its session).
pub fn find_supervisors(state_dir: &Path) -> Vec<ProcessIdentity> {
    let want = state_dir.to_string_lossy();
    scan_marked()
        .into_iter()
        .filter(|p| p.supervisor.as_deref() == Some(&*want))
        .map(|p| ProcessIdentity {
            pid: p.info.pid,
            pgid: p.info.pgid,
            start_time: p.info.start_time,
            boot_id: boot_id().to_owned(),
            nonce: None,
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct MarkedGroup {
    pub pgid: i32,
    pub service: String,
    pub nonce: Option<String>,
    pub leader: Option<ProcessIdentity>,
    pub pids: Vec<i32>,
}

impl MarkedGroup {
    /// An identity to stop this group by: its leader, or a stand-in carrying the nonce.
    pub fn identity(&self) -> ProcessIdentity {
        self.leader.clone().unwrap_or(ProcessIdentity {
            pid: self.pgid,
            pgid: self.pgid,
            start_time: u64::MAX,
            boot_id: boot_id().to_owned(),
            nonce: self.nonce.clone(),
        })
    }
}

/// How a child ended, as far as `waitpid` told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Code(i32),
    Signal(Signal),
}

/// Exit statuses collected by `reap_children`, by PID, until someone asks for them.
static REAPED: Mutex<BTreeMap<i32, ExitKind>> = Mutex::new(BTreeMap::new());

/// Stops in progress ([`stop_groups_killable`]), and whether [`reap_children`] left a round to
/// them. A stop collects the leaders it waits for itself (`collect`, each as it ends); the
/// reaper, which holds its lock for a whole round, leaves its rounds to the stop meanwhile and
/// runs the last one when the stop is over. In a `down` of 500 services the dying services
/// kept the loop's main thread, preempted inside its round, off the CPU for 27 ms, and the
/// stop's thread waited for the lock 16 ms of them.
static STOPS_RUNNING: AtomicUsize = AtomicUsize::new(0);
static REAP_OWED: AtomicBool = AtomicBool::new(false);

/// Held while a stop runs: see [`STOPS_RUNNING`].
struct StopRunning;

impl StopRunning {
    fn begin() -> Self {
        STOPS_RUNNING.fetch_add(1, Ordering::SeqCst);
        StopRunning
    }
}

impl Drop for StopRunning {
    fn drop(&mut self) {
        if stop_ended(&STOPS_RUNNING, &REAP_OWED) {
            reap_children();
        }
    }
}

/// Whether the reaper's round runs now: not while a stop runs (`running`), which is then owed
/// the round (`owed`).
fn round_now(running: &AtomicUsize, owed: &AtomicBool) -> bool {
    if running.load(Ordering::SeqCst) == 0 {
        return true;
    }
    owed.store(true, Ordering::SeqCst);
    // A stop that ended meanwhile has run the round owed, or runs it now (twice is harmless);
    // one that still runs will.
    if running.load(Ordering::SeqCst) > 0 {
        return false;
    }
    owed.store(false, Ordering::SeqCst);
    true
}

/// A stop ends: whether the reaper's round is its to run now (it was the last stop running, and
/// a round was owed).
fn stop_ended(running: &AtomicUsize, owed: &AtomicBool) -> bool {
    running.fetch_sub(1, Ordering::SeqCst) == 1 && owed.swap(false, Ordering::SeqCst)
}

/// Collects every child that has ended (services, and orphans adopted as a subreaper), so no
/// zombie stays behind; the statuses are kept for `take_exit`. While a stop runs, the round is
/// left to it (`STOPS_RUNNING`): `take_exit` still collects the child it asks for.
pub fn reap_children() {
    if !round_now(&STOPS_RUNNING, &REAP_OWED) {
        return;
    }
    // The lock is held across each wait and its record: a `take_exit` that finds the zombie
    // gone finds its status kept (never the moment between the two). And across the whole
    // round, not taken again per child: a stop's thread waiting on it was woken (and switched
    // to, and back from) once per child a `down` of 100 reaped.
    let mut map = REAPED.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let (pid, kind) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, ExitKind::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitKind::Signal(sig)),
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        };
        // Orphans nobody asks about must not pile up forever.
        if map.len() > 4096 {
            map.clear();
        }
        map.insert(pid.as_raw(), kind);
    }
}

/// Waits for `child`, a helper process of ours (the template renderer, `git`), not a service.
/// In a supervisor, `reap_children` may have collected it first (`wait` then fails with
/// ECHILD): its status is then the one the reaper kept.
pub fn wait_helper(child: &mut std::process::Child) -> std::io::Result<std::process::ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    match child.wait() {
        Err(e) if e.raw_os_error() == Some(nix::libc::ECHILD) => {
            let pid = child.id() as i32;
            // The reaper records the status right after it reaps: a moment at most.
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                if let Some(kind) = take_exit(pid) {
                    return Ok(std::process::ExitStatus::from_raw(match kind {
                        ExitKind::Code(c) => (c & 0xff) << 8,
                        ExitKind::Signal(sig) => sig as i32,
                    }));
                }
                if Instant::now() >= deadline {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        other => other,
    }
}

/// The exit status of `pid`, if this process reaped it (or can reap it now).
pub fn take_exit(pid: i32) -> Option<ExitKind> {
    // Under the reaper's lock: either the zombie is still ours to collect, or the reaper has
    // collected it and kept its status.
    let mut map = REAPED.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(status) = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        match status {
            WaitStatus::Exited(_, code) => return Some(ExitKind::Code(code)),
            WaitStatus::Signaled(_, sig, _) => return Some(ExitKind::Signal(sig)),
            _ => {}
        }
    }
    map.remove(&pid)
}

/// Orphaned grandchildren of our services are re-parented to us (not to init), so that we can
/// reap them and count them when a group must be empty.
pub fn become_subreaper() {
    crate::os::set_child_subreaper();
}

/// Waits until the process `identity` names is gone (or `timeout` passes): true if gone.
///
/// Gone means every thread of it ended, as its pidfd tells: a process whose main thread
/// ended while others still run their exit (closing its files can take the kernel a while)
/// shows as a zombie in `/proc/<pid>/stat` but is not gone yet — its children are not
/// handed to their new parent before that. A zombie child of ours whose threads all ended is
/// gone (its pidfd is readable).
pub fn wait_gone(identity: &ProcessIdentity, timeout: Duration) -> bool {
    use std::os::fd::AsFd;
    // This very process, still in the process table (a zombie included).
    let present = || {
        identity.boot_id == boot_id()
            && proc_info(identity.pid).is_ok_and(|i| i.start_time == identity.start_time)
    };
    if !present() {
        return true;
    }
    let Ok(fd) = pidfd_open(identity.pid) else {
        return true;
    };
    // The PID reused between the look and the open: the descriptor is another process's.
    if !present() {
        return true;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return true,
            Ok(_) if left.is_zero() => return false,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(pid: i32, pgid: i32) -> ProcessIdentity {
        ProcessIdentity {
            pid,
            pgid,
            start_time: 1,
            boot_id: boot_id().to_owned(),
            nonce: None,
        }
    }

    #[test]
    fn wait_gone_goes_by_the_pidfd_a_zombie_child_is_gone_a_live_one_is_not() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let identity = ProcessIdentity::of(pid, None).unwrap();
        assert!(!wait_gone(&identity, Duration::from_millis(50)), "alive");
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        // Not reaped yet: a zombie child of ours whose every thread ended.
        assert!(wait_gone(&identity, Duration::from_secs(10)));
        assert!(proc_info(pid).is_ok_and(|i| i.zombie), "still in the table");
        child.wait().unwrap();
        assert!(
            wait_gone(&identity, Duration::ZERO),
            "reaped: no such process"
        );
    }

    /// A level of `n` requests: each `sh` writes its index and its PID to its own log and
    /// exits; request `broken` (if any) names a program that does not exist.
    fn level_requests(dir: &Path, n: usize, broken: Option<usize>) -> Vec<SpawnRequest> {
        (0..n)
            .map(|i| {
                let log = dir.join(format!("s{i}.log"));
                SpawnRequest {
                    program: PathBuf::from(if Some(i) == broken {
                        "/nonexistent/mirrord-up-test"
                    } else {
                        "sh"
                    }),
                    args: vec!["-c".into(), format!("echo {i} $$")],
                    env: BTreeMap::new(),
                    cwd: dir.to_owned(),
                    stdout: log.clone(),
                    stderr: log,
                    nonce: new_nonce(),
                    keep_mirrord_env: false,
                }
            })
            .collect()
    }

    /// Waits for each spawned child and reads back what it wrote: `(index, pid)`.
    fn collect_level(
        dir: &Path,
        out: Vec<std::io::Result<(Spawned, ProcessIdentity)>>,
    ) -> Vec<Option<(usize, i32, i32)>> {
        out.into_iter()
            .enumerate()
            .map(|(i, r)| {
                let (child, identity) = r.ok()?;
                // Collected here (the test's own children; nothing else reaps them).
                let _ = waitpid(Pid::from_raw(child.pid), None);
                let text = std::fs::read_to_string(dir.join(format!("s{i}.log"))).unwrap();
                let mut words = text.split_whitespace();
                let index: usize = words.next().unwrap().parse().unwrap();
                let pid: i32 = words.next().unwrap().parse().unwrap();
                assert_eq!(identity.pid, child.pid);
                Some((index, pid, child.pid))
            })
            .collect()
    }

    /// A level shared with helpers comes back in the order of its requests, each result the
    /// process that request started (its log names it), a failed spawn at its own place; a
    /// helper that never gets a thread leaves every spawn to the caller; a small level is
    /// never shared.
    #[test]
    fn a_shared_level_keeps_its_order_and_a_helper_without_a_thread_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let handed = std::sync::atomic::AtomicUsize::new(0);
        let on_a_thread = |job: Helper| {
            handed.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(job);
            Ok(())
        };
        for helpers in [1, 2] {
            let sub = dir.path().join(format!("h{helpers}"));
            std::fs::create_dir_all(&sub).unwrap();
            let out = spawn_shared(level_requests(&sub, 16, Some(5)), helpers, &on_a_thread);
            assert_eq!(out.len(), 16);
            assert!(
                out[5].is_err(),
                "the missing program fails in its own place"
            );
            for (i, got) in collect_level(&sub, out).into_iter().enumerate() {
                if i == 5 {
                    assert_eq!(got, None);
                    continue;
                }
                let (index, pid, child) = got.expect("spawned");
                assert_eq!(
                    (index, pid),
                    (i, child),
                    "result {i} is request {i}'s process"
                );
            }
        }
        assert_eq!(handed.load(Ordering::SeqCst), 3, "one job per helper");

        let refused = |_job: Helper| Err(std::io::Error::other("no thread"));
        let sub = dir.path().join("refused");
        std::fs::create_dir_all(&sub).unwrap();
        let out = spawn_shared(level_requests(&sub, 8, None), 1, &refused);
        for (i, got) in collect_level(&sub, out).into_iter().enumerate() {
            let (index, pid, child) = got.expect("spawned by the caller");
            assert_eq!((index, pid), (i, child));
        }

        assert_eq!(
            spawn_helpers(SHARED_FROM - 1),
            0,
            "a small level stays here"
        );
        let never = |_job: Helper| -> std::io::Result<()> { panic!("a small level was shared") };
        let sub = dir.path().join("small");
        std::fs::create_dir_all(&sub).unwrap();
        let out = spawn_level(level_requests(&sub, SHARED_FROM - 1, None), &never);
        assert_eq!(
            collect_level(&sub, out).iter().flatten().count(),
            SHARED_FROM - 1
        );
    }

    /// Kills its process groups (and collects the leader) on drop.
    struct Groups(std::process::Child, Vec<i32>);

    impl Drop for Groups {
        fn drop(&mut self) {
            for g in &self.1 {
                let _ = killpg(Pid::from_raw(*g), Signal::SIGKILL);
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// `sleep 30` in a session of its own, as a service runs (killed on drop), and its identity
    /// with the nonce `{tag}{pid}`.
    fn service_sleep(tag: &str) -> (Groups, ProcessIdentity) {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        // SAFETY: `setsid` is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(Into::into));
        }
        let child = cmd.spawn().expect("sleep");
        let pid = child.id() as i32;
        let id = ProcessIdentity::of(pid, Some(format!("{tag}{pid}"))).expect("stat");
        (Groups(child, vec![pid]), id)
    }

    /// A stop of `identity` by SIGTERM, 5 s of grace.
    fn term(identity: ProcessIdentity) -> StopRequest {
        StopRequest {
            name: "s".into(),
            identity,
            signal: Signal::SIGTERM,
            timeout: Duration::from_secs(5),
            signalled: false,
        }
    }

    /// A service stopped by SIGSTOP acts on its stop signal once continued: the stop sends
    /// SIGCONT after it, and the group ends on the signal it handles, not on the SIGKILL at the
    /// end of its grace period (a shell that traps SIGTERM: stopped, it cannot run its trap).
    ///
    /// The shell waits on a background child rather than looping over a foreground one: dash
    /// starts foreground commands with `vfork`, and a group stop that lands between the `vfork`
    /// and the child's `exec` leaves the shell waiting, uninterruptibly, on a stopped child —
    /// never in state `T` (1 in 400 under load here; it failed CI once).
    #[test]
    fn a_stopped_service_is_continued_and_ends_on_its_own_signal() {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "trap 'exit 0' TERM; sleep 1000 & wait"]);
        // SAFETY: `setsid` is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(Into::into));
        }
        let child = cmd.spawn().expect("sh");
        let pid = child.id() as i32;
        let _groups = Groups(child, vec![pid]);
        let id = ProcessIdentity::of(pid, None).expect("stat");
        // Once its trap is set and its child runs `sleep`: a subshell stopped between its
        // fork and its `exec` may lose the SIGTERM (dash resets the child's traps after the
        // fork), and the `sleep` it becomes then keeps the group until the SIGKILL.
        let deadline = Instant::now() + Duration::from_secs(10);
        let children = format!("/proc/{pid}/task/{pid}/children");
        let sleeping = || {
            let listed = std::fs::read_to_string(&children).unwrap_or_default();
            listed.split_whitespace().any(|child| {
                std::fs::read_to_string(format!("/proc/{child}/comm")).is_ok_and(|c| c == "sleep\n")
            })
        };
        while !sleeping() {
            assert!(
                Instant::now() < deadline,
                "the shell's child never ran `sleep`"
            );
            std::thread::yield_now();
        }
        killpg(Pid::from_raw(pid), Signal::SIGSTOP).expect("SIGSTOP");
        let state = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
        };
        while state() != Some('T') {
            assert!(Instant::now() < deadline, "never stopped: {:?}", state());
            std::thread::yield_now();
        }
        let outcomes = stop_groups_killable(&[term(id)], &mut |_| {}, &|| false);
        assert!(
            !outcomes[0].killed,
            "the stopped shell needed SIGKILL: {outcomes:?}"
        );
        assert!(outcomes[0].survivors.is_empty(), "{outcomes:?}");
    }

    #[test]
    fn a_marked_process_in_a_running_service_group_is_not_read_an_escaped_one_is_found() {
        use crate::os::reads::{self, Kind};
        use std::os::unix::process::CommandExt;
        let nonce = format!("scanskip{}", std::process::id());
        // A service (its own session) with a child in its group and one that left it.
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "sleep 30 & setsid sleep 30 & wait"])
            .env(ENV_INSTANCE, &nonce);
        // SAFETY: `setsid` is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(Into::into));
        }
        let child = cmd.spawn().expect("sh");
        let leader = child.id() as i32;
        let mut groups = Groups(child, vec![leader]);
        let mine = || -> Vec<ProcInfo> {
            scan_marked()
                .into_iter()
                .filter(|p| p.instance.as_deref() == Some(&*nonce))
                .map(|p| p.info)
                .collect()
        };
        // Until the three run with their marker (their environments as read).
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = loop {
            let seen = mine();
            let sleeping = |p: &&ProcInfo| {
                std::fs::read(format!("/proc/{}/cmdline", p.pid))
                    .is_ok_and(|c| c.starts_with(b"sleep\0"))
            };
            if seen.len() == 3
                && seen.iter().filter(|p| p.pgid != leader).count() == 1
                && seen.iter().filter(sleeping).count() == 2
            {
                break seen;
            }
            assert!(Instant::now() < deadline, "never saw the three: {seen:?}");
            std::thread::yield_now();
        };
        let member = seen
            .iter()
            .find(|p| p.pgid == leader && p.pid != leader)
            .expect("member")
            .pid;
        let escaped = seen.iter().find(|p| p.pgid != leader).expect("escaped").pid;
        groups.1.push(escaped);
        let id = ProcessIdentity::of(leader, Some(nonce.clone())).expect("stat");
        assert!(pidfds::hold(&id).is_some());
        let request = StopRequest {
            name: "svc".into(),
            identity: id.clone(),
            signal: Signal::SIGTERM,
            timeout: Duration::from_secs(5),
            signalled: false,
        };
        let outcome = StopOutcome {
            name: "svc".into(),
            killed: false,
            survivors: vec![],
            refused: None,
            escaped: vec![],
        };
        reads::take();
        let found = escaped_of(std::slice::from_ref(&request), &[outcome], &BTreeSet::new());
        let read = reads::take();
        pidfds::release(leader);
        let pids: Vec<i32> = found.values().flatten().map(|t| t.proc.info.pid).collect();
        assert_eq!(pids, vec![escaped], "only the one outside the group");
        for pid in [leader, member] {
            assert!(
                !read.contains(&(Kind::Environ, pid)),
                "the environment of {pid} (in the running group) was read: {read:?}"
            );
        }
        assert!(read.contains(&(Kind::Environ, escaped)));
    }

    /// A group whose leader has ended (a zombie child until collected, as when it ends at
    /// its signal before the reaper runs) is stopped without a snapshot of `/proc`: no `stat`
    /// of a process that carries no marker is read (a snapshot reads every process's, kernel
    /// threads included).
    #[test]
    fn a_group_whose_leader_ended_is_stopped_without_a_proc_snapshot() {
        use crate::os::reads::{self, Kind};
        let (_groups, id) = service_sleep("snap");
        let pid = id.pid;
        kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !proc_info(pid).is_ok_and(|i| i.zombie) {
            assert!(Instant::now() < deadline, "never a zombie");
            std::thread::yield_now();
        }
        reads::take();
        let out = stop_groups(&[term(id)]);
        let read = reads::take();
        assert!(out[0].survivors.is_empty(), "{out:?}");
        let unmarked: Vec<i32> = read
            .iter()
            .filter(|(k, p)| *k == Kind::Stat && *p != pid)
            .map(|(_, p)| *p)
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/environ"))
                    .is_ok_and(|e| !e.windows(11).any(|w| w == b"MIRRORD_UP_"))
            })
            .collect();
        assert!(
            unmarked.is_empty(),
            "read the stat of unmarked processes (a snapshot): {unmarked:?}"
        );
    }

    /// The groups one look finds ended are heard in one call: the supervisor hands each call
    /// to another thread, which (woken once per call) ran ahead of the stop once per group.
    #[test]
    fn the_groups_one_look_finds_ended_are_heard_together() {
        let started: Vec<(Groups, ProcessIdentity)> =
            (0..3).map(|_| service_sleep("together")).collect();
        for (_, id) in &started {
            kill(Pid::from_raw(id.pid), Signal::SIGKILL).expect("kill");
        }
        // Ended: a zombie, or gone already (a test reaping every child meanwhile).
        let deadline = Instant::now() + Duration::from_secs(10);
        for (_, id) in &started {
            while proc_info(id.pid).is_ok_and(|i| !i.zombie) {
                assert!(Instant::now() < deadline, "never ended");
                std::thread::yield_now();
            }
        }
        let requests: Vec<StopRequest> = started.iter().map(|(_, id)| term(id.clone())).collect();
        let mut calls = Vec::new();
        let out = stop_groups_killable(&requests, &mut |ended| calls.push(ended.len()), &|| false);
        assert_eq!(calls, vec![3], "calls to progress, by size");
        assert!(out.iter().all(|o| o.survivors.is_empty()), "{out:?}");
    }

    /// The reaper's round waits while stops run, and the last stop to end runs it, once.
    #[test]
    fn the_reapers_round_waits_for_the_stops_that_run() {
        let (running, owed) = (AtomicUsize::new(0), AtomicBool::new(false));
        assert!(round_now(&running, &owed), "no stop: at once");
        assert!(!owed.load(Ordering::SeqCst));
        running.fetch_add(1, Ordering::SeqCst);
        running.fetch_add(1, Ordering::SeqCst);
        assert!(!round_now(&running, &owed), "left to the stops");
        assert!(!stop_ended(&running, &owed), "another stop still runs");
        assert!(
            stop_ended(&running, &owed),
            "the last stop runs the round owed"
        );
        assert!(!owed.load(Ordering::SeqCst));
        running.fetch_add(1, Ordering::SeqCst);
        assert!(!stop_ended(&running, &owed), "no round owed");
    }

    /// A stop as the supervisor makes it (a subreaper, its services its own children) whose
    /// last look among its adopted children came once every group was empty and found nothing
    /// does not read its children list again after it (a look on the way from a save to the
    /// restarted service).
    #[test]
    fn a_stop_that_found_nothing_outside_its_groups_lists_its_children_once() {
        use crate::os::reads::{self, Kind};
        if ran_as_subreaper(
            "process::tests::a_stop_that_found_nothing_outside_its_groups_lists_its_children_once",
        ) {
            return;
        }
        let (_groups, id) = service_sleep("once");
        reads::take();
        let out = stop_groups(&[term(id)]);
        let looks = reads::take()
            .iter()
            .filter(|(k, _)| *k == Kind::Children)
            .count();
        assert!(
            out[0].survivors.is_empty() && out[0].escaped.is_empty(),
            "{out:?}"
        );
        assert_eq!(looks, 1, "children lists read {looks} times");
    }

    /// Being a subreaper is for the life of the process: a test that needs it runs `name` (its
    /// own name) in a child process of its own, and returns true when that passed; in that
    /// child (false) it has become a subreaper and goes on.
    fn ran_as_subreaper(name: &str) -> bool {
        if std::env::var_os("MIRRORD_UP_TEST_AS_SUBREAPER").is_some() {
            become_subreaper();
            return false;
        }
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env("MIRRORD_UP_TEST_AS_SUBREAPER", "1")
            .output()
            .expect("run the test in a process of its own");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        true
    }

    /// [`stop_quickly`]: a group that ends at once on its signal is found empty and its
    /// leader collected (its status kept); one that outlasts the wait is left signalled, for
    /// the full stop; a process whose pidfd this process does not hold is not signalled at all.
    #[test]
    fn a_quick_stop_ends_a_prompt_group_and_signals_nothing_it_cannot_vouch_for() {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        if ran_as_subreaper(
            "process::tests::a_quick_stop_ends_a_prompt_group_and_signals_nothing_it_cannot_vouch_for",
        ) {
            return;
        }
        // A session leader, as a service is; with `armed`, once its TERM trap is set.
        let start = |script: &str| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", script]).stdout(Stdio::piped());
            // SAFETY: `setsid` is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(Into::into));
            }
            let mut child = cmd.spawn().expect("sh");
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("its first line");
            let pid = child.id() as i32;
            let request = StopRequest {
                name: format!("s{pid}"),
                identity: ProcessIdentity::of(pid, None).expect("alive"),
                signal: Signal::SIGTERM,
                timeout: Duration::from_secs(5),
                signalled: false,
            };
            (child, request)
        };
        let patience = Duration::from_secs(10);

        let (_prompt, request) = start("echo armed; exec sleep 1000");
        assert!(pidfds::hold(&request.identity).is_some());
        let mut requests = [request];
        assert!(stop_quickly(&mut requests, patience), "sleep ends at once");
        assert!(requests[0].signalled);
        let pid = requests[0].identity.pid;
        assert_eq!(take_exit(pid), Some(ExitKind::Signal(Signal::SIGTERM)));
        pidfds::release(pid);

        let (mut stubborn, request) = start("trap '' TERM; echo armed; while :; do sleep 1; done");
        assert!(pidfds::hold(&request.identity).is_some());
        let mut requests = [request];
        assert!(!stop_quickly(&mut requests, Duration::from_millis(50)));
        assert!(
            requests[0].signalled,
            "signalled: the full stop must not again"
        );
        assert_eq!(requests[0].identity.read_liveness(), Liveness::Alive);
        let _ = killpg(Pid::from_raw(requests[0].identity.pgid), Signal::SIGKILL);
        let _ = stubborn.wait();
        pidfds::release(requests[0].identity.pid);

        let (mut unheld, request) = start("echo armed; exec sleep 1000");
        let mut requests = [request];
        assert!(
            !stop_quickly(&mut requests, patience),
            "no pidfd held on it"
        );
        assert!(!requests[0].signalled);
        assert_eq!(requests[0].identity.read_liveness(), Liveness::Alive);
        let _ = unheld.kill();
        let _ = unheld.wait();
    }

    /// What a stop's look for escapes reads ([`crate::os::adopted_children`]): an orphan comes
    /// back to the main thread, even when the thread that spawned its parent is another; what
    /// that other thread spawned (as a pass's thread spawns the services) is not listed there.
    #[test]
    fn an_orphan_comes_back_to_the_main_thread_and_a_threads_own_child_stays_off_its_list() {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        if ran_as_subreaper(
            "process::tests::an_orphan_comes_back_to_the_main_thread_and_a_threads_own_child_stays_off_its_list",
        ) {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let (end, ended) = std::sync::mpsc::channel::<()>();
        let spawner = std::thread::spawn(move || {
            let mut sh = Command::new("sh")
                .args(["-c", "sleep 1000 & echo $!"])
                .stdout(Stdio::piped())
                .spawn()
                .expect("sh");
            let mut line = String::new();
            std::io::BufReader::new(sh.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("the orphan's pid");
            // Its parent gone: it has been handed to us by now (before `sh` can be reaped).
            sh.wait().expect("sh ends");
            let child = Command::new("sleep").arg("1000").spawn().expect("sleep");
            tx.send((line.trim().parse::<i32>().expect("a pid"), child))
                .expect("send");
            // Alive while the list is read, as a pass's thread is kept.
            let _ = ended.recv();
        });
        let (orphan, mut child) = rx.recv().expect("the spawned pids");
        let adopted = crate::os::adopted_children().expect("children lists");
        drop(end);
        spawner.join().expect("the spawning thread");
        // Once that thread ended, its child is the main thread's: listed, nothing lost.
        let after = crate::os::adopted_children().expect("children lists");
        let child_pid = child.id() as i32;
        let _ = kill(Pid::from_raw(orphan), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(orphan), None);
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            adopted.contains(&orphan),
            "orphan {orphan} not in {adopted:?}"
        );
        assert!(
            !adopted.contains(&child_pid),
            "the thread's own child {child_pid} in {adopted:?}"
        );
        assert!(
            after.contains(&child_pid) && after.contains(&orphan),
            "after its thread ended: {after:?}"
        );
    }

    #[test]
    fn records_pointing_at_no_service_or_at_us_are_refused() {
        let me = own_ids();
        // A pid (and the next) that is none of ours.
        let o = (4242..)
            .find(|p| !me.contains(*p) && !me.contains(p + 1))
            .expect("free ids");
        for bad in [
            id(0, 0),
            id(1, 1),
            id(o, 0),
            id(o, 1),
            id(me.pid, me.pid),
            id(o, me.pgid),
            id(me.sid, me.sid),
            id(o, o + 1),
        ] {
            assert!(bad.refusal().is_some(), "{bad:?}");
            assert!(!bad.leads_group(), "{bad:?}");
        }
        assert_eq!(id(o, o).refusal(), None);
    }
}
