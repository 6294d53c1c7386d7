//! Session status of mirrord services (issue 13): is each session really connected, to what,
//! and is it receiving traffic.
//!
//! Where it comes from (runtime.md §1.3, §5): `mirrord exec` prints `session ID: <id>` in
//! simple progress mode (what mirrord-up asks for), and the session's intproxy serves an HTTP
//! API on `$HOME/.mirrord/sessions/<id>.sock`: `GET /info` (target, namespace, operator, port
//! subscriptions) and `GET /events` (server-sent events, no replay: `incoming_request`,
//! `port_subscription`, …). A supervisor runs one watcher thread per running `exec` service
//! ([`Watchers::sync`]): it learns the id from this run's log (after the run's log offset, so
//! a line or a socket of an earlier run is never taken; inotify on the log says when to look
//! again), connects (inotify on `$HOME/.mirrord/sessions` says when a socket appears; a socket file nobody
//! listens on, or whose `/info` names another session, is not a session: it stays
//! `connecting`), follows `/events`, and writes what it knows to
//! `<state-dir>/<project>/services/<service>/session.json` (atomically, outside state.json,
//! so `ps` reads it without the state lock). It never sends `POST /kill`. A watcher sleeps in
//! `poll(2)` on its stop line, the process's pidfd, its inotify descriptor and the event stream:
//! an idle session costs no wake-up.
//!
//! Loss: the socket disappearing while the process runs, or the event stream ending while it
//! runs, is `lost` with the reason; the watcher then stops the service's process group
//! (SIGTERM), so that its exit goes through the restart policy like any exit (real mirrord
//! terminates the app on agent loss anyway).
//!
//! Container services have no session API on the host: the intproxy runs in the sidecar
//! container and its socket lives there (runtime.md §5.1).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::RunType;
use crate::process::{Liveness, ProcessIdentity};
use crate::spec::{LauncherKind, ServiceSpec};
use crate::state::{ServiceRecord, now_ms};

/// The file a watcher writes, in the service's directory.
pub const FILE: &str = "session.json";
/// How long one request to the session API may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// A socket file that is there but does not answer (bound, not listening yet, or stale) is
/// tried again after this long, doubling up to [`RETRY_MAX`]: nothing else says when it will.
const TICK: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// After the stream ends: how long the process may take to end by itself (a stop in progress)
/// before the session counts as lost.
const GRACE: Duration = Duration::from_secs(1);

/// What `ps` shows of one session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionStatus {
    /// The service process this is about (a status of another PID is an earlier run's).
    pub pid: i32,
    /// `connecting`, `connected` or `lost`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// As mirrord resolved it (`/info`).
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub operator: Option<bool>,
    #[serde(default)]
    pub ports: Vec<PortSubscription>,
    /// Incoming requests seen on the event stream since the session connected.
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub last_request_ms: Option<u64>,
    #[serde(default)]
    pub connected_at_ms: Option<u64>,
    #[serde(default)]
    pub updated_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortSubscription {
    pub port: u16,
    /// `steal` or `mirror`.
    pub mode: String,
}

pub fn status_path(service_dir: &Path) -> PathBuf {
    service_dir.join(FILE)
}

/// The recorded status of `rec`'s current process, if a watcher wrote one for it.
pub fn read_status(service_dir: &Path, rec: &ServiceRecord) -> Option<SessionStatus> {
    let pid = rec.process.as_ref()?.pid;
    let bytes = std::fs::read(status_path(service_dir)).ok()?;
    let status: SessionStatus = serde_json::from_slice(&bytes).ok()?;
    (status.pid == pid).then_some(status)
}

fn write_status(service_dir: &Path, status: &mut SessionStatus) {
    status.updated_ms = now_ms();
    if let Ok(bytes) = serde_json::to_vec_pretty(status) {
        let _ = crate::fsutil::check_dir(service_dir, true);
        let _ = crate::state::write_private(&status_path(service_dir), &bytes);
    }
}

/// Whether a service has a session API mirrord-up can follow, or why not.
pub fn applicability(spec: &ServiceSpec) -> Result<(), &'static str> {
    match (spec.launcher, spec.run_type) {
        (LauncherKind::Local, _) => Err("local service: no mirrord session"),
        (LauncherKind::Mirrord, RunType::Container) => Err(
            "container service: the session API socket lives in the sidecar container, not on this host",
        ),
        (LauncherKind::Mirrord, RunType::Exec) => Ok(()),
    }
}

/// The header that routes traffic to a split-mode service: `baggage: mirrord-session=<key>`
/// for the default filter, the configured header filter (a regex) otherwise; `None` when the
/// service takes all traffic (replace mode, no filter) or none.
pub fn route_header(mirrord_config: &Value) -> Option<String> {
    let incoming = mirrord_config.pointer("/feature/network/incoming")?;
    if incoming.get("mode").and_then(Value::as_str) == Some("off") {
        return None;
    }
    let filter = incoming
        .pointer("/http_filter/header_filter")
        .and_then(Value::as_str)?;
    let key = match mirrord_config.get("key") {
        Some(Value::String(k)) => Some(k.as_str()),
        Some(Value::Object(k)) => k
            .get("Provided")
            .or_else(|| k.get("Generated"))
            .and_then(Value::as_str),
        _ => None,
    };
    // mirrord-up's default filter, or real mirrord's (`baggage: .*mirrord-session=<key>.*`).
    let auto = key.filter(|k| {
        filter == crate::generate::default_header_filter(k)
            || filter == format!("baggage: .*mirrord-session={k}.*")
    });
    Some(match auto {
        Some(key) => format!("baggage: mirrord-session={key}"),
        None => filter.to_owned(),
    })
}

/// `up -d` ends with these lines: how to reach each running split-mode service.
pub fn route_lines(state: &crate::state::State) -> Vec<String> {
    state
        .records(crate::state::RecordKind::Service)
        .filter(|(_, r)| {
            applicability(&r.spec).is_ok() && crate::engine::liveness(r) == Liveness::Alive
        })
        .filter_map(|(name, r)| {
            let header = route_header(&r.spec.mirrord_config)?;
            Some(format!(
                "to reach {name}: requests with `{header}` (curl -H '{header}' …)"
            ))
        })
        .collect()
}

/// The session id of the run whose output starts at `offset` of `log` (simple mode line).
pub fn session_id_in(log: &Path, offset: u64) -> Option<String> {
    let mut f = std::fs::File::open(log).ok()?;
    let len = f.metadata().ok()?.len();
    if len < offset {
        return None; // rotated or truncated: not this run's file
    }
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset)).ok()?;
    // The id comes within mirrord's first lines; a bounded read is enough.
    let mut text = Vec::new();
    f.take(256 * 1024).read_to_end(&mut text).ok()?;
    String::from_utf8_lossy(&text).lines().find_map(|l| {
        let id = l
            .trim_end_matches('\r')
            .strip_prefix("session ID: ")?
            .trim();
        valid_id(id).then(|| id.to_owned())
    })
}

/// One normal path component of hex digits and dashes (UUID v4 or operator hex).
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// `$HOME/.mirrord/sessions/<id>.sock`.
pub fn socket_path(id: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(
        PathBuf::from(home)
            .join(".mirrord")
            .join("sessions")
            .join(format!("{id}.sock")),
    )
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client over the unix socket (GET only).

/// A response's status, its headers (lowercase names) and the reader left at its body.
type Response = (u16, Vec<(String, String)>, BufReader<UnixStream>);

/// Sends `GET path` and reads the status line and headers; the reader is left at the body.
fn get(socket: &Path, path: &str) -> std::io::Result<Response> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    (&stream).write_all(
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\naccept: */*\r\n\r\n").as_bytes(),
    )?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("not an HTTP response"))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            return Err(bad("the response ended in its headers"));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        if headers.len() > 100 {
            return Err(bad("too many headers"));
        }
    }
    Ok((status, headers, reader))
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `GET /info` as JSON.
pub fn info(socket: &Path) -> std::io::Result<Value> {
    let (status, headers, mut reader) = get(socket, "/info")?;
    if status != 200 {
        return Err(bad(&format!("/info answered {status}")));
    }
    let mut body = Vec::new();
    if header(&headers, "transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        let mut chunks = Chunked::new(reader);
        while let Some(chunk) = chunks.next_chunk()? {
            body.extend_from_slice(&chunk);
            if body.len() > 4 << 20 {
                return Err(bad("/info is too large"));
            }
        }
    } else {
        let len: u64 = header(&headers, "content-length")
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| bad("/info without a length"))?;
        (&mut reader)
            .take(len.min(4 << 20))
            .read_to_end(&mut body)?;
    }
    serde_json::from_slice(&body).map_err(|e| bad(&format!("/info is not JSON: {e}")))
}

/// The chunked body of a streaming response.
struct Chunked {
    reader: BufReader<UnixStream>,
}

impl Chunked {
    fn new(reader: BufReader<UnixStream>) -> Chunked {
        Chunked { reader }
    }

    /// Data already read from the socket waits in the buffer (`poll` would not say so).
    fn buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    fn fd(&self) -> &UnixStream {
        self.reader.get_ref()
    }

    /// The next chunk; `None` at the end of the body. A read timeout comes back as an error of
    /// kind `WouldBlock`/`TimedOut`.
    fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut size = String::new();
        if self.reader.read_line(&mut size)? == 0 {
            return Ok(None);
        }
        let size = size.trim();
        let size = size.split(';').next().unwrap_or_default();
        let n = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
        if n > 1 << 20 {
            return Err(bad("chunk too large"));
        }
        // The rest of the chunk follows its size line at once.
        let mut data = vec![0; n + 2];
        self.reader.read_exact(&mut data)?;
        data.truncate(n);
        Ok((n > 0).then_some(data))
    }
}

// ---------------------------------------------------------------------------------------------
// The watchers

/// Something a watcher tells the supervisor's event stream and journal.
pub type Publish = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// One watcher thread per running `exec` service of the supervisor.
#[derive(Default)]
pub struct Watchers {
    /// By service: the process seen running and, when it is watched (an `exec` session), the
    /// write end of its watcher's stop line (dropping it wakes the watcher, which then ends).
    running: std::collections::BTreeMap<String, (i32, Option<Stopper>)>,
}

/// Tells a watcher to end: sets its flag and closes its stop line (its `poll` wakes up).
struct Stopper {
    flag: Arc<AtomicBool>,
    _line: UnixStream,
}

impl Watchers {
    /// After a pass: a watcher for each newly running process of an `exec` service; the
    /// watchers of processes no longer running end.
    pub fn sync(
        &mut self,
        store: &crate::state::StateStore,
        running: &[(String, ProcessIdentity)],
        publish: &Publish,
    ) {
        // By name, once: a lookup per watcher, not a walk of every running service.
        let pids: std::collections::HashMap<&str, i32> =
            running.iter().map(|(n, id)| (n.as_str(), id.pid)).collect();
        self.running.retain(|name, (pid, stop)| {
            let keep = pids.get(name.as_str()) == Some(pid);
            if !keep && let Some(stop) = stop {
                stop.flag.store(true, Ordering::Relaxed);
            }
            keep
        });
        // Nothing new to watch (the usual pass): the state file is not read again.
        if running
            .iter()
            .all(|(name, _)| self.running.contains_key(name))
        {
            return;
        }
        let Ok(Some(state)) = store.read() else {
            return;
        };
        for (name, identity) in running {
            if self.running.contains_key(name) {
                continue;
            }
            let Some(rec) = state.services.get(name) else {
                continue;
            };
            // Seen: not looked at again while this process runs.
            self.running.insert(name.clone(), (identity.pid, None));
            if applicability(&rec.spec).is_err() {
                continue;
            }
            let Ok((line, stop_line)) = UnixStream::pair() else {
                continue;
            };
            let stop = Arc::new(AtomicBool::new(false));
            let watcher = Watcher {
                service: name.clone(),
                identity: identity.clone(),
                log: rec.log_path.clone(),
                offset: rec.log_offset,
                dir: store.service_dir(name),
                route: route_header(&rec.spec.mirrord_config),
                stop: stop.clone(),
                stop_line,
                publish: publish.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("session {name}"))
                .stack_size(WATCHER_STACK)
                .spawn(move || watcher.run());
            if spawned.is_ok() {
                let stopper = Stopper {
                    flag: stop,
                    _line: line,
                };
                self.running
                    .insert(name.clone(), (identity.pid, Some(stopper)));
            }
        }
    }

    /// Every watcher ends (the supervisor ends).
    pub fn stop_all(&mut self) {
        for (_, (_, stop)) in std::mem::take(&mut self.running) {
            if let Some(stop) = stop {
                stop.flag.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// A watcher's stack: it parses small JSON documents and formats lines, nothing deep.
const WATCHER_STACK: usize = 256 * 1024;

struct Watcher {
    service: String,
    identity: ProcessIdentity,
    log: PathBuf,
    offset: u64,
    dir: PathBuf,
    /// Split mode: the header that routes traffic to this session.
    route: Option<String>,
    stop: Arc<AtomicBool>,
    /// Readable (end of file) once the supervisor drops the other end: stop.
    stop_line: UnixStream,
    publish: Publish,
}

/// Why a watcher stopped following.
enum End {
    /// Told to stop, or the process ended: nothing to say.
    Quiet,
    Lost(String),
}

/// What woke a watcher.
#[derive(Debug, PartialEq, Eq)]
enum Woke {
    /// Told to stop, or the process ended.
    Ended,
    /// Something happened to a watched file or directory.
    Files,
    /// The event stream has data (or was closed).
    Stream,
    /// The timeout passed.
    Timeout,
}

/// What a watcher sleeps on: its stop line, its process (pidfd) and inotify. Without either
/// (out of descriptors, or past `fs.inotify.max_user_instances` — each watcher has its own
/// instance), it falls back to looking every [`TICK`].
struct Waiter {
    pidfd: Option<std::os::fd::OwnedFd>,
    inotify: Option<nix::sys::inotify::Inotify>,
}

impl Waiter {
    fn new(pid: i32) -> Waiter {
        use nix::sys::inotify::{InitFlags, Inotify};
        let pidfd = crate::os::pidfd_open(pid).ok();
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok();
        if pidfd.is_none() || inotify.is_none() {
            tracing::debug!(
                pid,
                "session watcher without pidfd or inotify: looking every 100 ms"
            );
        }
        Waiter { pidfd, inotify }
    }

    /// Something it cannot be woken by: it must look again every [`TICK`].
    fn polling(&self) -> bool {
        self.pidfd.is_none() || self.inotify.is_none()
    }

    /// Sleeps until something happens (or `timeout`); inotify events are drained.
    fn wait(
        &self,
        stop: &UnixStream,
        stream: Option<std::os::fd::BorrowedFd<'_>>,
        timeout: Option<Duration>,
    ) -> Woke {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let timeout = if self.polling() {
            Some(timeout.map_or(TICK, |t| t.min(TICK)))
        } else {
            timeout
        };
        let ms = timeout.map_or(PollTimeout::NONE, |t| {
            PollTimeout::try_from(t.as_millis().min(i32::MAX as u128) as i32)
                .unwrap_or(PollTimeout::MAX)
        });
        // Slots: 0 stop line, 1 pidfd, 2 inotify, 3 stream (absent ones poll nothing).
        let mut fds = vec![PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
        let none = PollFlags::empty();
        fds.push(match &self.pidfd {
            Some(fd) => PollFd::new(fd.as_fd(), PollFlags::POLLIN),
            None => PollFd::new(stop.as_fd(), none),
        });
        fds.push(match &self.inotify {
            Some(ino) => PollFd::new(ino.as_fd(), PollFlags::POLLIN),
            None => PollFd::new(stop.as_fd(), none),
        });
        if let Some(fd) = stream {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        loop {
            match poll(&mut fds, ms) {
                Ok(0) => return Woke::Timeout,
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                // Cannot sleep on them: look again in a while rather than spin.
                Err(_) => {
                    std::thread::sleep(TICK);
                    return Woke::Timeout;
                }
            }
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(PollFd::revents)
                .is_some_and(|r| !r.is_empty())
        };
        if ready(0) || ready(1) {
            return Woke::Ended;
        }
        if ready(3) {
            return Woke::Stream;
        }
        if let Some(ino) = &self.inotify {
            while ino.read_events().is_ok_and(|evs| !evs.is_empty()) {}
        }
        Woke::Files
    }

    /// Watches `file` for writes (and for being replaced).
    fn watch_file(&self, file: &Path) -> Option<nix::sys::inotify::WatchDescriptor> {
        use nix::sys::inotify::AddWatchFlags as F;
        self.inotify
            .as_ref()?
            .add_watch(
                file,
                F::IN_MODIFY | F::IN_CLOSE_WRITE | F::IN_MOVE_SELF | F::IN_DELETE_SELF,
            )
            .ok()
    }

    /// Watches the directory `socket` lives in for entries coming and going; while it does not
    /// exist, its nearest existing ancestor for what is created in it. True once the directory
    /// itself is watched.
    fn watch_dir_of(&self, socket: &Path) -> bool {
        use nix::sys::inotify::AddWatchFlags as F;
        let (Some(dir), Some(inotify)) = (socket.parent(), &self.inotify) else {
            return false;
        };
        let entries = F::IN_CREATE
            | F::IN_MOVED_TO
            | F::IN_DELETE
            | F::IN_MOVED_FROM
            | F::IN_DELETE_SELF
            | F::IN_MOVE_SELF
            | F::IN_ONLYDIR;
        if inotify.add_watch(dir, entries).is_ok() {
            return true;
        }
        for up in dir.ancestors().skip(1) {
            if inotify
                .add_watch(up, F::IN_CREATE | F::IN_MOVED_TO | F::IN_ONLYDIR)
                .is_ok()
            {
                break;
            }
        }
        false
    }
}

impl Watcher {
    fn alive(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && self.identity.liveness() == Liveness::Alive
    }

    fn run(self) {
        let mut status = SessionStatus {
            pid: self.identity.pid,
            state: "connecting".into(),
            ..SessionStatus::default()
        };
        write_status(&self.dir, &mut status);
        // The pidfd pins the process; `follow` checks it is the recorded one before waiting.
        let waiter = Waiter::new(self.identity.pid);
        match self.follow(&waiter, &mut status) {
            End::Quiet => {}
            End::Lost(why) => {
                status.state = "lost".into();
                status.reason = Some(why.clone());
                write_status(&self.dir, &mut status);
                (self.publish)(&self.service, &format!("session lost: {why}"));
                if self.identity.liveness() == Liveness::Alive {
                    let table = crate::process::ProcessTable::snapshot();
                    self.identity
                        .signal_group(nix::sys::signal::Signal::SIGTERM, &table);
                }
            }
        }
    }

    fn follow(&self, waiter: &Waiter, status: &mut SessionStatus) -> End {
        // 1. The id, from this run's output: looked for again whenever the log is written.
        let mut log_watch = None;
        let id = loop {
            if !self.alive() {
                return End::Quiet;
            }
            if log_watch.is_none() {
                log_watch = waiter.watch_file(&self.log);
            }
            if let Some(id) = session_id_in(&self.log, self.offset) {
                break id;
            }
            // No log to watch (yet): look again in a while.
            let timeout = log_watch.is_none().then_some(TICK);
            match waiter.wait(&self.stop_line, None, timeout) {
                Woke::Ended => return End::Quiet,
                // Replaced or removed (rotation): watch the file now at that path.
                Woke::Files => {
                    if let (Some(wd), Some(ino)) = (log_watch.take(), &waiter.inotify) {
                        let _ = ino.rm_watch(wd);
                    }
                }
                _ => {}
            }
        };
        if let (Some(wd), Some(ino)) = (log_watch, &waiter.inotify) {
            let _ = ino.rm_watch(wd);
        }
        let Some(socket) = socket_path(&id) else {
            status.reason = Some("no home directory: mirrord serves no session API".into());
            write_status(&self.dir, status);
            return End::Quiet;
        };
        status.session_id = Some(id.clone());
        status.socket = Some(socket.clone());
        write_status(&self.dir, status);
        // 2. A live socket whose /info is this session (a stale file is not one), then the
        // event stream, subscribed before we say `connected`. Looked for again whenever an
        // entry of the sessions directory comes or goes.
        let mut dir_watched = waiter.watch_dir_of(&socket);
        let mut retry = TICK;
        let (inode, info, mut events) = loop {
            if !self.alive() {
                return End::Quiet;
            }
            if let Some(found) = connect(&socket, &id) {
                break found;
            }
            let timeout = if !dir_watched {
                None
            } else if std::fs::symlink_metadata(&socket).is_ok() {
                // There, but not answering: nothing will say when it does.
                let t = retry;
                retry = (retry * 2).min(RETRY_MAX);
                Some(t)
            } else {
                retry = TICK;
                None
            };
            if waiter.wait(&self.stop_line, None, timeout) == Woke::Ended {
                return End::Quiet;
            }
            // Again after every event: the directory may have been created, or removed and
            // made anew (a new inode needs a new watch; the same one keeps its watch).
            dir_watched = waiter.watch_dir_of(&socket);
        };
        apply_info(status, &info);
        status.state = "connected".into();
        status.connected_at_ms = Some(now_ms());
        write_status(&self.dir, status);
        (self.publish)(
            &self.service,
            &format!(
                "session connected: {id}, target {}{}{}",
                status.target.as_deref().unwrap_or("targetless"),
                status
                    .namespace
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default(),
                self.route
                    .as_deref()
                    .map(|r| format!("; its traffic: requests with `{r}`"))
                    .unwrap_or_default()
            ),
        );
        // 3. Follow it while the process runs: woken by the stream, the process's end, a
        // stop, or the sessions directory (its socket removed).
        let mut pending = Vec::new();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return End::Quiet;
            }
            let woke = if events.buffered() {
                Woke::Stream
            } else {
                use std::os::fd::AsFd;
                waiter.wait(&self.stop_line, Some(events.fd().as_fd()), None)
            };
            match woke {
                Woke::Ended => return End::Quiet,
                Woke::Stream => match events.next_chunk() {
                    Ok(Some(data)) => {
                        pending.extend_from_slice(&data);
                        self.take_frames(&mut pending, status);
                        continue;
                    }
                    Ok(None) => {
                        return self
                            .lost_unless_ending(waiter, "the session API closed its event stream");
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => {
                        return self.lost_unless_ending(
                            waiter,
                            &format!("the session API event stream failed: {e}"),
                        );
                    }
                },
                Woke::Files | Woke::Timeout => {}
            }
            if self.identity.liveness() != Liveness::Alive {
                return End::Quiet;
            }
            let same = std::fs::symlink_metadata(&socket).is_ok_and(|m| m.ino() == inode);
            if !same {
                return self.lost_unless_ending(
                    waiter,
                    &format!(
                        "the session API socket {} disappeared while the process runs",
                        socket.display()
                    ),
                );
            }
        }
    }

    /// The process may be ending anyway (a stop by the supervisor takes the intproxy too):
    /// wait a moment (for its end or a stop) before calling it a loss.
    fn lost_unless_ending(&self, waiter: &Waiter, why: &str) -> End {
        let until = Instant::now() + GRACE;
        loop {
            if !self.alive() {
                return End::Quiet;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return End::Lost(why.to_owned());
            }
            if waiter.wait(&self.stop_line, None, Some(left)) == Woke::Ended {
                return End::Quiet;
            }
        }
    }

    /// Handles the complete SSE frames in `pending` (the rest stays for the next chunk).
    fn take_frames(&self, pending: &mut Vec<u8>, status: &mut SessionStatus) {
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = pending.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&frame);
            let data: String = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect::<Vec<_>>()
                .join("\n");
            if data.is_empty() {
                continue; // `: ping`
            }
            let Ok(event) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            match event.get("type").and_then(Value::as_str) {
                Some("incoming_request") => {
                    status.requests += 1;
                    status.last_request_ms = Some(now_ms());
                    write_status(&self.dir, status);
                    let s = |k: &str| event.get(k).and_then(Value::as_str).unwrap_or("?");
                    (self.publish)(
                        &self.service,
                        &format!("incoming request {} {}", s("method"), s("path")),
                    );
                }
                Some("port_subscription") => {
                    if let Some(p) = port_of(&event) {
                        status.ports.retain(|q| q.port != p.port);
                        status.ports.push(p);
                        write_status(&self.dir, status);
                    }
                }
                _ => {}
            }
        }
        if pending.len() > 1 << 20 {
            pending.clear(); // a frame without an end: not mirrord's
        }
    }
}

/// Connects to `socket` if it is a live session API of session `id`: its inode, `/info`, and
/// the event stream.
fn connect(socket: &Path, id: &str) -> Option<(u64, Value, Chunked)> {
    let inode = std::fs::symlink_metadata(socket).ok()?.ino();
    let info = info(socket).ok()?;
    if info.get("session_id").and_then(Value::as_str) != Some(id) {
        return None;
    }
    let (status, headers, reader) = get(socket, "/events").ok()?;
    if status != 200
        || !header(&headers, "transfer-encoding").is_some_and(|t| t.contains("chunked"))
    {
        return None;
    }
    // Read only when `poll` says there is something; a chunk cut in the middle waits this long.
    reader.get_ref().set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    Some((inode, info, Chunked::new(reader)))
}

fn port_of(v: &Value) -> Option<PortSubscription> {
    Some(PortSubscription {
        port: u16::try_from(v.get("port")?.as_u64()?).ok()?,
        mode: v.get("mode")?.as_str()?.to_owned(),
    })
}

fn apply_info(status: &mut SessionStatus, info: &Value) {
    let s = |k: &str| info.get(k).and_then(Value::as_str).map(str::to_owned);
    status.target = s("target");
    status.namespace = s("namespace");
    status.context = s("context");
    status.key = s("key");
    status.operator = info.get("is_operator").and_then(Value::as_bool);
    status.ports = info
        .get("port_subscriptions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(port_of).collect())
        .unwrap_or_default();
}

// ---------------------------------------------------------------------------------------------
// What `ps` shows

/// The SESSION column and the JSON fields of one service row.
pub fn ps_fields(
    store: Option<&crate::state::StateStore>,
    rec: &ServiceRecord,
    running: bool,
) -> Value {
    if let Err(why) = applicability(&rec.spec) {
        return serde_json::json!({ "session": "–", "session_note": why });
    }
    let route = route_header(&rec.spec.mirrord_config);
    let status = store.and_then(|s| read_status(&s.service_dir(&rec.spec.name), rec));
    if !running {
        // The last run's loss stays visible until the restart policy starts the next one.
        return match status.filter(|s| s.state == "lost") {
            Some(st) => serde_json::json!({
                "session": "lost",
                "session_reason": st.reason,
                "session_id": st.session_id,
            }),
            None => serde_json::json!({ "session": "–", "session_note": "not running" }),
        };
    }
    let Some(st) = status else {
        return serde_json::json!({ "session": "connecting", "route_header": route });
    };
    let now = now_ms();
    serde_json::json!({
        "session": st.state,
        "session_reason": st.reason,
        "session_id": st.session_id,
        "session_target": st.target,
        "session_namespace": st.namespace,
        "session_context": st.context,
        "operator": st.operator,
        "ports": st.ports,
        "incoming_requests": st.requests,
        "last_request_age_s": st.last_request_ms.map(|t| now.saturating_sub(t) / 1000),
        "route_header": route,
    })
}

/// The columns `ps --wide` adds.
pub const WIDE_HEADER: [&str; 6] = [
    "SESSION ID",
    "MIRRORD TARGET",
    "OPERATOR",
    "PORTS",
    "REQUESTS",
    "ROUTE",
];

/// The cells of [`WIDE_HEADER`] from a row with [`ps_fields`] merged in.
pub fn wide_cells(row: &Value) -> Vec<String> {
    let s = |k: &str| row.get(k).and_then(Value::as_str).map(str::to_owned);
    let dash = || "-".to_owned();
    let target = match (s("session_target"), s("session_namespace")) {
        (Some(t), Some(ns)) => format!("{t} ({ns})"),
        (Some(t), None) => t,
        _ => s("session_note").unwrap_or_else(dash),
    };
    let ports = row
        .get("ports")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.iter()
                .filter_map(|p| Some(format!("{}/{}", p.get("port")?, p.get("mode")?.as_str()?)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_else(dash);
    let requests = match (
        row.get("incoming_requests").and_then(Value::as_u64),
        row.get("last_request_age_s").and_then(Value::as_u64),
    ) {
        (Some(n), Some(age)) => format!(
            "{n} (last {} ago)",
            crate::output::duration(Duration::from_secs(age))
        ),
        (Some(n), None) => n.to_string(),
        _ => dash(),
    };
    vec![
        s("session_id").unwrap_or_else(dash),
        target,
        match row.get("operator").and_then(Value::as_bool) {
            Some(true) => "yes".into(),
            Some(false) => "no".into(),
            None => dash(),
        },
        ports,
        requests,
        s("route_header").unwrap_or_else(dash),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_header_of_the_default_filter_and_of_a_custom_one() {
        let auto = serde_json::json!({"key": "alice", "feature": {"network": {"incoming": {
            "mode": "steal", "http_filter": {
                "header_filter": crate::generate::default_header_filter("alice")}}}}});
        assert_eq!(
            route_header(&auto).as_deref(),
            Some("baggage: mirrord-session=alice")
        );
        let custom = serde_json::json!({"feature": {"network": {"incoming": {
            "mode": "steal", "http_filter": {"header_filter": "x-user: bob"}}}}});
        assert_eq!(route_header(&custom).as_deref(), Some("x-user: bob"));
        let replace = serde_json::json!({"feature": {"network": {"incoming": {"mode": "steal"}}}});
        assert_eq!(route_header(&replace), None);
    }

    #[test]
    fn the_session_id_is_read_after_the_offset_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("api.log");
        let old = "session ID: 11111111-1111-4111-8111-111111111111\nReady!\n";
        std::fs::write(
            &log,
            format!("{old}checking operator\nsession ID: 22222222-2222-4222-8222-222222222222\n"),
        )
        .unwrap();
        assert_eq!(
            session_id_in(&log, old.len() as u64).as_deref(),
            Some("22222222-2222-4222-8222-222222222222")
        );
        assert_eq!(session_id_in(&log, 10_000), None);
        std::fs::write(&log, "session ID: ../../etc\n").unwrap();
        assert_eq!(session_id_in(&log, 0), None);
    }
}
