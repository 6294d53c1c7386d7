//! Linux: `/proc` reading (procfs: process stats, environments, markers, listening sockets),
//! the boot id, pidfds, the child subreaper, and spawning with `posix_spawn` (`spawn`).

pub mod idle;
pub mod spawn;

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

/// What the tool needs of `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub session: i32,
    pub start_time: u64,
    pub zombie: bool,
}

/// Parses `/proc/<pid>/stat`: `pid (comm) state ppid pgrp session … starttime …` (proc(5));
/// `comm` may hold spaces and parentheses, so the fields are counted after the last `)`.
fn parse_stat(pid: i32, text: &[u8]) -> Option<ProcInfo> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let mut f = rest.split_ascii_whitespace();
    let state = f.next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgid = f.next()?.parse().ok()?;
    let session = f.next()?.parse().ok()?;
    // tty_nr … itrealvalue (15 fields), then starttime.
    let start_time = f.nth(15)?.parse().ok()?;
    Some(ProcInfo {
        pid,
        ppid,
        pgid,
        session,
        start_time,
        zombie: matches!(state, "Z" | "X"),
    })
}

/// Reads one process's stat: one `open`+`read` into a stack buffer (this runs for every
/// recorded service in every pass, and for every process in a scan).
pub fn proc_info(pid: i32) -> std::io::Result<ProcInfo> {
    use std::io::Read;
    #[cfg(test)]
    reads::count(reads::Kind::Stat, pid);
    let mut path = [0u8; 32];
    let len = {
        use std::io::Write;
        let mut w = &mut path[..];
        write!(w, "/proc/{pid}/stat")?;
        32 - w.len()
    };
    let path = std::str::from_utf8(&path[..len]).map_err(std::io::Error::other)?;
    let mut f = std::fs::File::open(path)?;
    let mut buf = [0u8; 1024];
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    parse_stat(pid, &buf[..n])
        .ok_or_else(|| std::io::Error::other(format!("/proc/{pid}/stat: unexpected format")))
}

/// Every process visible in `/proc`.
pub fn scan() -> Vec<ProcInfo> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        proc_info(pid).ok()
    })
    .collect()
}

/// The environment of a process we may read (our own user's), or `None`.
pub fn environ_of(pid: i32) -> Option<HashMap<String, String>> {
    let raw = read_proc(format!("/proc/{pid}/environ")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter_map(|kv| {
                let s = std::str::from_utf8(kv).ok()?;
                let (k, v) = s.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect(),
    )
}

pub fn boot_id() -> &'static str {
    static BOOT: OnceLock<String> = OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    })
}

/// The `MIRRORD_UP_*` markers of one live process, as one `/proc` scan saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkedProc {
    pub info: ProcInfo,
    /// `MIRRORD_UP_STATE`: the project's state directory.
    pub state: Option<String>,
    /// `MIRRORD_UP_SERVICE`.
    pub service: Option<String>,
    /// `MIRRORD_UP_INSTANCE`: the spawn nonce.
    pub instance: Option<String>,
    /// `MIRRORD_UP_SUPERVISOR`: set on a background supervisor (its state directory).
    pub supervisor: Option<String>,
}

const MARKER_PREFIX: &[u8] = b"MIRRORD_UP_";

/// The markers in a raw `/proc/<pid>/environ`, or `None` when it carries none. Only the
/// `MIRRORD_UP_*` entries are decoded: the rest of a (possibly large) environment is skipped.
pub fn markers_of(raw: &[u8]) -> Option<[Option<String>; 4]> {
    if !raw.windows(MARKER_PREFIX.len()).any(|w| w == MARKER_PREFIX) {
        return None;
    }
    let mut found: [Option<String>; 4] = Default::default();
    for kv in raw.split(|b| *b == 0) {
        let Some(rest) = kv.strip_prefix(MARKER_PREFIX) else {
            continue;
        };
        let Some(eq) = rest.iter().position(|b| *b == b'=') else {
            continue;
        };
        let slot = match &rest[..eq] {
            b"STATE" => 0,
            b"SERVICE" => 1,
            b"INSTANCE" => 2,
            b"SUPERVISOR" => 3,
            _ => continue,
        };
        found[slot] = Some(String::from_utf8_lossy(&rest[eq + 1..]).into_owned());
    }
    found.iter().any(Option::is_some).then_some(found)
}

/// One scan of `/proc`: every live process carrying a marker, except this process and the
/// members of its own process group and session (never ours to signal). Environments of other
/// users' processes are unreadable and so never match.
pub fn scan_marked() -> Vec<MarkedProc> {
    scan_marked_outside(&KnownGroups::default())
}

/// Service groups a scan for escaped processes leaves out: a service leads its own session,
/// so the members of its group are its descendants, never escaped.
#[derive(Debug, Default, Clone)]
pub struct KnownGroups {
    /// Leaders known to run now without reading anything (their pidfds are held and not
    /// readable): PID → start time. Not read at all.
    pub alive: HashMap<i32, u64>,
    /// Recorded leaders (PID → start time): their `stat` is read (cheap) and, when it is that
    /// very process leading its own group, their environment is not (the costly read of
    /// another process's memory).
    pub recorded: HashMap<i32, u64>,
}

/// As [`scan_marked`], leaving out the known groups whose leader runs: their leaders (held:
/// nothing read; recorded: their `stat`) and their members (`getpgid`, one system call, no
/// file). Only the processes outside every such group have their environment read (the
/// costly read of another process's memory).
pub fn scan_marked_outside(known: &KnownGroups) -> Vec<MarkedProc> {
    let me = own_ids();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pids: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me.pid && !known.alive.contains_key(pid))
        .collect();
    // The known groups whose leader runs: those held, and the recorded ones found running.
    let mut live: std::collections::HashSet<i32> = known.alive.keys().copied().collect();
    for (pid, start) in &known.recorded {
        if proc_info(*pid).is_ok_and(|i| i.start_time == *start && i.pgid == *pid && !i.zombie) {
            live.insert(*pid);
        }
    }
    let mut out = Vec::new();
    // A user process in the middle of an `exec` shows an empty environment and an empty
    // command line for that instant (kernel threads always do, but have no `exe`; a process
    // started with `env -i` has a command line): those are read once more after the scan —
    // the rest of the scan is the wait — and only one still in its `exec` then costs a pause.
    let mut mid_exec = Vec::new();
    for pid in pids {
        if live.contains(&pid) {
            continue;
        }
        let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)));
        // No process group (0): a kernel thread (60 of this VM's 74 processes), or a PID 1 that
        // never made a session of its own and what it started without one. None is ours:
        // every process we start leads a session, and what it starts stays in groups of that
        // session. A kernel thread's empty environment cost two more reads (its command line,
        // its `exe`) to tell it from a process in the middle of an `exec`.
        if pgid.is_ok_and(|g| g.as_raw() == 0) {
            continue;
        }
        // A member of a known group that runs: that service's descendant (a service leads
        // its session; no process joins a group of another session).
        if pgid.is_ok_and(|g| live.contains(&g.as_raw())) {
            continue;
        }
        // The environment first: most processes carry no marker, and then `stat` is not read.
        let Ok(raw) = read_environ(pid) else {
            continue;
        };
        if raw.is_empty() && in_exec(pid) {
            mid_exec.push(pid);
            continue;
        }
        out.extend(marked_proc(pid, &raw, &me));
    }
    let mut paused = false;
    for pid in mid_exec {
        let Ok(mut raw) = read_environ(pid) else {
            continue;
        };
        if raw.is_empty() && !paused && in_exec(pid) {
            paused = true;
            std::thread::sleep(std::time::Duration::from_millis(5));
            raw = read_environ(pid).unwrap_or_default();
        }
        out.extend(marked_proc(pid, &raw, &me));
    }
    // What `getpgid` did not tell (a process read after its `exec`).
    out.retain(|p| !live.contains(&p.info.pgid));
    out
}

/// The process `pid`, if it carries markers (and is not this process, its group or its
/// session).
pub fn marked_of(pid: i32) -> Option<MarkedProc> {
    let mut raw = read_environ(pid).ok()?;
    // In the middle of an `exec` (see `scan_marked_outside`): read once more after a pause.
    if raw.is_empty() && in_exec(pid) {
        std::thread::sleep(std::time::Duration::from_millis(5));
        raw = read_environ(pid).ok()?;
    }
    marked_proc(pid, &raw, &own_ids())
}

/// Reads `/proc/<pid>/environ`.
fn read_environ(pid: i32) -> std::io::Result<Vec<u8>> {
    #[cfg(test)]
    reads::count(reads::Kind::Environ, pid);
    read_proc(format!("/proc/{pid}/environ"))
}

/// The whole of a `/proc` file: one read per 16 KiB and the one that finds its end. Such a
/// file says it has no size, and `std::fs::read` then starts with a 32-byte read and doubles:
/// eight reads for a 3 KB environment, each one walking the other process's memory again; a
/// children list of 500 PIDs is listed again from its start at each read.
fn read_proc(path: impl AsRef<Path>) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(PROC_READ);
    std::fs::File::open(path)?.read_to_end(&mut buf)?;
    Ok(buf)
}

/// What [`read_proc`] asks for at once: an environment or a children list of a thousand PIDs
/// in one read.
const PROC_READ: usize = 16 * 1024;

/// What this thread read of `/proc`, for the tests that check what a look costs.
#[cfg(test)]
pub mod reads {
    use std::cell::RefCell;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        Stat,
        Environ,
        /// This process's children list (`adopted_children`; PID 0).
        Children,
    }

    thread_local! {
        static READS: RefCell<Vec<(Kind, i32)>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn count(kind: Kind, pid: i32) {
        READS.with(|r| r.borrow_mut().push((kind, pid)));
    }

    /// The reads of this thread since the last call (and forgets them).
    pub fn take() -> Vec<(Kind, i32)> {
        READS.with(|r| std::mem::take(&mut *r.borrow_mut()))
    }
}

/// A process whose environment reads empty: whether it is in the middle of an `exec` (no
/// command line yet either, and an `exe`: not a kernel thread).
fn in_exec(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.is_empty())
        && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok()
}

/// The process `pid` with the environment `raw`, if it carries our markers and is not us.
fn marked_proc(pid: i32, raw: &[u8], me: &OwnIds) -> Option<MarkedProc> {
    let [state, service, instance, supervisor] = markers_of(raw)?;
    let info = proc_info(pid).ok()?;
    if info.zombie || me.is_ours(&info) {
        return None;
    }
    Some(MarkedProc {
        info,
        state,
        service,
        instance,
        supervisor,
    })
}

/// This process's pid, process group and session.
#[derive(Debug, Clone, Copy)]
pub struct OwnIds {
    pub pid: i32,
    pub pgid: i32,
    pub sid: i32,
}

impl OwnIds {
    /// Whether `info` is this process or shares its group or session.
    pub fn is_ours(&self, info: &ProcInfo) -> bool {
        info.pid == self.pid
            || info.pgid == self.pgid
            || info.session == self.sid
            || self.contains(info.pid)
            || self.contains(info.pgid)
    }

    /// Whether `id` is our pid, group or session id.
    pub fn contains(&self, id: i32) -> bool {
        id == self.pid || id == self.pgid || id == self.sid
    }
}

/// Read once per process: it never changes its own group or session (its children do, in
/// their `pre_exec`, before their `exec`), a parent can move it to another group only before
/// its `exec`, and no process of ours forks without `exec`. A stop looks before each signal of
/// each group (three system calls each time when read anew: 600 for a `down` of 100 services).
pub fn own_ids() -> OwnIds {
    static IDS: std::sync::OnceLock<OwnIds> = std::sync::OnceLock::new();
    *IDS.get_or_init(|| OwnIds {
        pid: std::process::id() as i32,
        pgid: nix::unistd::getpgrp().as_raw(),
        sid: nix::unistd::getsid(None).map_or(0, |p| p.as_raw()),
    })
}

/// A pollable descriptor that becomes readable when `pid` exits (Linux `pidfd_open`); it
/// names that very process for as long as it is open, whatever happens to the PID.
pub fn pidfd_open(pid: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: a plain syscall; on success the returned descriptor is ours to own.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor returned by the kernel just now.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `sig` to `pid` only if it is still the process that started at `start_time` (and is
/// not a zombie): the PID is pinned with a pidfd, its start time checked, and the signal sent
/// through the pidfd, so a PID reused between the check and the signal is never hit.
/// True if the signal was sent.
pub fn signal_if_same(pid: i32, start_time: u64, sig: nix::sys::signal::Signal) -> bool {
    use std::os::fd::AsRawFd;
    if pid <= 1 {
        return false;
    }
    let Ok(fd) = pidfd_open(pid) else {
        return false;
    };
    match proc_info(pid) {
        Ok(info) if info.start_time == start_time && !info.zombie => {}
        _ => return false,
    }
    // SAFETY: a plain syscall on a descriptor we own; no siginfo is passed.
    let ret = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as nix::libc::c_int,
            std::ptr::null::<nix::libc::siginfo_t>(),
            0,
        )
    };
    ret == 0
}

/// Whether the process that started at `start_time` still runs as `pid` (zombies are gone).
pub fn same_alive(pid: i32, start_time: u64) -> bool {
    proc_info(pid).is_ok_and(|i| i.start_time == start_time && !i.zombie)
}

/// The children this process adopted, as a subreaper: its main thread's children list. An
/// orphan goes to the first live thread of the subreaper's thread group, its main thread
/// while that runs (the kernel's `find_alive_thread` walks the group from its leader); the
/// processes another thread spawned stay on that thread's list (the services: a pass's
/// thread spawns them), and are not read. `None` when the kernel does not list children
/// (`CONFIG_PROC_CHILDREN`).
pub fn adopted_children() -> Option<Vec<i32>> {
    #[cfg(test)]
    reads::count(reads::Kind::Children, 0);
    let pid = std::process::id();
    let text = read_proc(format!("/proc/self/task/{pid}/children")).ok()?;
    Some(pids_in(&text).collect())
}

/// The children of `pid` (of every thread of it); none when it is gone (or a thread ended
/// while it was read). Whether the kernel lists children at all is [`adopted_children`]'s to
/// say.
pub fn children_of(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| read_proc(t.path().join("children")).ok())
        .flat_map(|text| pids_in(&text).collect::<Vec<_>>())
        .collect()
}

/// The PIDs of a children list (`12 345 6789 `).
fn pids_in(text: &[u8]) -> impl Iterator<Item = i32> + '_ {
    text.split(u8::is_ascii_whitespace)
        .filter_map(|p| std::str::from_utf8(p).ok()?.parse::<i32>().ok())
}

/// Whether this process is a child subreaper (orphaned descendants come back to it).
pub fn is_child_subreaper() -> bool {
    nix::sys::prctl::get_child_subreaper().unwrap_or(false)
}

/// Orphaned grandchildren of our services are re-parented to us (`PR_SET_CHILD_SUBREAPER`).
pub fn set_child_subreaper() {
    let _ = nix::sys::prctl::set_child_subreaper(true);
}

/// The inodes of the sockets listening on TCP `port`, IPv4 and IPv6, in this network
/// namespace (`/proc/net/tcp{,6}`).
pub fn listening_inodes(port: u16) -> Vec<u64> {
    use procfs::net::TcpState;
    let v4 = procfs::net::tcp().unwrap_or_default();
    let v6 = procfs::net::tcp6().unwrap_or_default();
    v4.into_iter()
        .chain(v6)
        .filter(|e| e.state == TcpState::Listen && e.local_address.port() == port)
        .map(|e| e.inode)
        .collect()
}

/// Whether `pid` holds an open descriptor on one of the sockets `inodes` (`/proc/<pid>/fd`).
/// `None` when its descriptors cannot be read (another user's process, or gone).
pub fn holds_socket(pid: i32, inodes: &[u64]) -> Option<bool> {
    use procfs::process::FDTarget;
    let fds = procfs::process::Process::new(pid).ok()?.fd().ok()?;
    Some(
        fds.filter_map(Result::ok)
            .any(|fd| matches!(fd.target, FDTarget::Socket(inode) if inodes.contains(&inode))),
    )
}

/// A long-lived process with a few threads (the supervisor): one malloc arena for all of
/// them (glibc gives threads arenas of their own, up to 8 per core, each keeping what it
/// freed resident), and freed memory at the top of the heap returned to the system past
/// 128 KiB (a fixed threshold: glibc's default grows with the largest block freed).
pub fn lean_malloc() {
    #[cfg(target_env = "gnu")]
    // SAFETY: plain settings of the C allocator, made before the threads that use it start.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
        nix::libc::mallopt(nix::libc::M_TRIM_THRESHOLD, 128 * 1024);
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(test)]
mod tests {
    /// A scan reads the environment of user processes (a child of this test's) and not that
    /// of any kernel thread (`PF_KTHREAD` in `/proc/<pid>/stat`), which it tells by its
    /// process group, 0.
    #[test]
    fn a_scan_leaves_kernel_threads_unread() {
        use super::reads;
        const PF_KTHREAD: u64 = 0x0020_0000;
        let kernel_thread = |pid: i32| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // The fields after the command's closing parenthesis: the state is the first, the
            // flags the seventh.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after
                .split_whitespace()
                .nth(6)
                .and_then(|f| f.parse::<u64>().ok())
                .is_some_and(|flags| flags & PF_KTHREAD != 0)
        };
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let _ = reads::take();
        super::scan_marked();
        let read: Vec<i32> = reads::take()
            .into_iter()
            .filter(|(k, _)| *k == reads::Kind::Environ)
            .map(|(_, pid)| pid)
            .collect();
        let _ = child.kill();
        let _ = child.wait();
        assert!(read.contains(&(child.id() as i32)), "{read:?}");
        let threads: Vec<i32> = read.iter().copied().filter(|p| kernel_thread(*p)).collect();
        assert!(threads.is_empty(), "kernel threads read: {threads:?}");
    }

    /// The ids read once are this process's (and ask nothing again).
    #[test]
    fn own_ids_are_this_processs() {
        let me = own_ids();
        assert_eq!(me.pid, std::process::id() as i32);
        assert_eq!(me.pgid, nix::unistd::getpgrp().as_raw());
        assert_eq!(me.sid, nix::unistd::getsid(None).expect("getsid").as_raw());
        let again = own_ids();
        assert_eq!(
            (again.pid, again.pgid, again.sid),
            (me.pid, me.pgid, me.sid)
        );
    }

    /// A `/proc` file read whole, past what one read asks for, and the same as `std` reads it.
    #[test]
    fn a_proc_file_is_read_whole() {
        let long = "x".repeat(3 * super::PROC_READ);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("MIRRORD_UP_TEST_LONG", &long)
            .spawn()
            .expect("sleep");
        let path = format!("/proc/{}/environ", child.id());
        // Until `sleep` runs (its environment is what it was given).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let read = loop {
            let read = super::read_proc(&path).expect("environ");
            if read.windows(long.len()).any(|w| w == long.as_bytes()) {
                break read;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never saw its environment"
            );
            std::thread::yield_now();
        };
        assert_eq!(read, std::fs::read(&path).expect("environ"));
        let _ = child.kill();
        let _ = child.wait();
        assert!(super::read_proc("/proc/self/no-such-file").is_err());
    }

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let line = b"42 (a) b (c)) S 1 40 39 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 2000 300 18446744073709551615\n";
        let info = super::parse_stat(42, line).unwrap();
        assert_eq!(
            (info.pgid, info.session, info.start_time, info.zombie),
            (40, 39, 123456, false)
        );
        let me = super::proc_info(std::process::id() as i32).unwrap();
        assert_eq!(me.pgid, nix::unistd::getpgrp().as_raw());
        assert!(super::proc_info(-5).is_err());
        assert!(
            super::scan()
                .iter()
                .any(|p| p.pid == std::process::id() as i32)
        );
    }

    use super::*;

    #[test]
    fn only_the_markers_are_decoded() {
        let raw = b"PATH=/bin\0MIRRORD_UP_STATE=/s/p\0MIRRORD_UP_INSTANCE=ab12\0MIRRORD_UP_OTHER=x\0MIRRORD_UP_SERVICE=a=b\0";
        let [state, service, instance, supervisor] = markers_of(raw).expect("marked");
        assert_eq!(state.as_deref(), Some("/s/p"));
        assert_eq!(service.as_deref(), Some("a=b"));
        assert_eq!(instance.as_deref(), Some("ab12"));
        assert_eq!(supervisor, None);
        assert_eq!(markers_of(b"PATH=/bin\0HOME=/h\0"), None);
        assert_eq!(markers_of(b"MIRRORD_UP_OTHER=1\0"), None);
    }

    #[test]
    fn a_known_leader_is_skipped_and_an_empty_environment_is_not_an_exec() {
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let nonce = format!("skiptest{}", std::process::id());
        let mut marked = Command::new("sleep");
        marked
            .arg("30")
            .env("MIRRORD_UP_INSTANCE", &nonce)
            .stdout(Stdio::null());
        // Outside our session, as a service is (a scan leaves our own session out).
        // SAFETY: `setsid` is async-signal-safe.
        unsafe {
            marked.pre_exec(|| nix::unistd::setsid().map(drop).map_err(Into::into));
        }
        let mut marked = marked.spawn().expect("sleep");
        let mut bare = Command::new("sleep")
            .arg("30")
            .env_clear()
            .process_group(0)
            .spawn()
            .expect("sleep without an environment");
        let (pid, bare_pid) = (marked.id() as i32, bare.id() as i32);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let found = |skip: &HashMap<i32, u64>| {
            scan_marked_outside(&KnownGroups {
                recorded: skip.clone(),
                ..Default::default()
            })
            .iter()
            .any(|p| p.instance.as_deref() == Some(&*nonce))
        };
        // Wait until it runs `sleep` with its marker (an event: its environment as read).
        while !found(&HashMap::new()) {
            assert!(
                std::time::Instant::now() < deadline,
                "marked child never seen"
            );
            std::thread::yield_now();
        }
        while std::fs::read(format!("/proc/{bare_pid}/cmdline")).is_ok_and(|c| c.is_empty()) {
            assert!(std::time::Instant::now() < deadline, "bare child never ran");
            std::thread::yield_now();
        }
        let start = proc_info(pid).expect("stat").start_time;
        assert!(
            !found(&HashMap::from([(pid, start)])),
            "a known leader is skipped"
        );
        assert!(
            found(&HashMap::from([(pid, start + 1)])),
            "another process under that PID is not"
        );
        assert!(
            std::fs::read(format!("/proc/{bare_pid}/environ")).is_ok_and(|e| e.is_empty()),
            "the bare child has no environment"
        );
        assert!(
            !in_exec(bare_pid),
            "no environment, but a command line: not in an exec"
        );
        assert!(!in_exec(2), "a kernel thread is not in an exec");
        for c in [&mut marked, &mut bare] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    #[test]
    fn a_reused_pid_is_not_signalled() {
        let me = std::process::id() as i32;
        let start = proc_info(me).expect("self").start_time;
        // SIGCONT to ourselves is harmless; a wrong start time must not send it.
        assert!(!signal_if_same(
            me,
            start + 1,
            nix::sys::signal::Signal::SIGCONT
        ));
        assert!(signal_if_same(me, start, nix::sys::signal::Signal::SIGCONT));
        assert!(!signal_if_same(1, 0, nix::sys::signal::Signal::SIGCONT));
        assert!(!signal_if_same(0, 0, nix::sys::signal::Signal::SIGCONT));
    }
}
