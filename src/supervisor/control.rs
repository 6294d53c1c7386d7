//! The control channel of a running supervisor: a unix socket in the project's state
//! directory, one JSON request line per connection, answered by event lines and one final
//! `done` line. `up --detach`, `down`, `restart|stop|start` are its clients.
//!
//! # Limits (issue 15.6)
//!
//! The server side ([`serve`]) never trusts a connection: a request line is at most
//! [`MAX_REQUEST_BYTES`] (a longer one gets an error reply and the connection is closed, having
//! buffered no more than that); at most [`MAX_CONNECTIONS`] connections are open at once (the
//! next ones get a "busy" reply at once); a connection that has not sent a whole line within
//! [`IDLE_TIMEOUT`] is answered with an error and closed; every number is checked
//! ([`Request::check`]) before it reaches the loop; an `accept` error (out of descriptors, say)
//! is logged, waited out with a timer (100 ms doubling to 2 s) and accepting goes on. A
//! well-formed request is acknowledged (`accepted`) before it is queued.
//!
//! The client side ([`request`]) connects within [`CLIENT_TIMEOUT`] and must see that
//! acknowledgement within [`CLIENT_TIMEOUT`] too, or it fails saying the supervisor does not
//! answer. After it, it waits for the end of the work as long as the connection stays open (a
//! pass may wait for readiness or stop timeouts); a supervisor that dies closes it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::config::Mode;
use crate::engine::Reporter;
use crate::process::Liveness;
use crate::state::{State, SupervisorRecord};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// `up --detach` while a supervisor runs: apply the file now.
    Apply {
        file: PathBuf,
        services: Vec<String>,
        mode: Option<Mode>,
        force_recreate: bool,
        wait: bool,
        wait_timeout_s: f64,
        /// The profiles of this `up` (absent from an older client: keep the supervisor's).
        #[serde(default)]
        profiles: Option<Vec<String>>,
        /// The `-f` files after the first (absent from an older client: not compared).
        #[serde(default)]
        overlays: Option<Vec<PathBuf>>,
    },
    Stop {
        services: Vec<String>,
        timeout_s: Option<f64>,
    },
    Start {
        services: Vec<String>,
    },
    Restart {
        services: Vec<String>,
        timeout_s: Option<f64>,
    },
    /// `down`: stop every service, forget them, and exit.
    Shutdown {
        timeout_s: Option<f64>,
    },
    /// `events` (issue 13): keep the connection and stream every event (`Reply::Stream`) of
    /// these services (all when empty), first the kept ones since `since_ms`, until the
    /// supervisor ends (`crate::event_hub`).
    Events {
        #[serde(default)]
        services: Vec<String>,
        #[serde(default)]
        since_ms: Option<u64>,
    },
}

/// The control socket's name in the project's state directory.
pub const SOCKET: &str = "supervisor.sock";

/// The longest request line the supervisor reads (a real one is a few hundred bytes).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Connections open at once; the next ones are told the supervisor is busy.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a connection may take to send its whole request line.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the supervisor waits to write a reply line to a client that does not read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client waits to connect, and then for the acknowledgement of its request.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest number of seconds a request may carry (one week); more is refused.
pub const MAX_SECONDS: f64 = 7.0 * 24.0 * 3600.0;
/// Test only: overrides [`IDLE_TIMEOUT`] (milliseconds), so that tests need not wait 5 s.
pub const ENV_TEST_IDLE_MS: &str = "MIRRORD_UP_TEST_IDLE_MS";
/// Test only: overrides [`CLIENT_TIMEOUT`] (milliseconds).
pub const ENV_TEST_CLIENT_MS: &str = "MIRRORD_UP_TEST_CLIENT_MS";

fn test_override(var: &str, default: Duration) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(default, Duration::from_millis)
}

impl Request {
    /// Every number in range: finite, not negative, at most [`MAX_SECONDS`].
    pub fn check(&self) -> Result<(), String> {
        let seconds = match self {
            Request::Apply { wait_timeout_s, .. } => {
                vec![("wait_timeout_s", Some(*wait_timeout_s))]
            }
            Request::Stop { timeout_s, .. }
            | Request::Restart { timeout_s, .. }
            | Request::Shutdown { timeout_s } => vec![("timeout_s", *timeout_s)],
            Request::Start { .. } | Request::Events { .. } => vec![],
        };
        for (field, value) in seconds {
            if let Some(v) = value
                && !(v.is_finite() && (0.0..=MAX_SECONDS).contains(&v))
            {
                return Err(format!(
                    "bad request: `{field}` is {v}, expected seconds from 0 to {MAX_SECONDS}"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// One reconcile action (`api`, `started (pid 12): new service`).
    Event { service: String, what: String },
    /// A wait began (see `Reporter::waiting`).
    Waiting {
        service: String,
        what: String,
        limit_ms: Option<u64>,
    },
    /// The request was read and is queued: the supervisor is alive and listening.
    Accepted,
    /// Another supervisor of the project already runs (it answers at `socket`).
    AlreadyRunning { pid: i32, socket: PathBuf },
    /// The end: a summary, or why it failed.
    Done { ok: bool, message: String },
    /// One event of the stream asked for with `Request::Events`.
    Stream(crate::event_hub::StreamEvent),
}

/// Writes one reply line; a client that went away is not an error of the supervisor.
pub fn send(sink: &mut dyn Write, reply: &Reply) {
    if let Ok(mut line) = serde_json::to_vec(reply) {
        line.push(b'\n');
        let _ = sink.write_all(&line).and_then(|()| sink.flush());
    }
}

/// Writes reply lines in one write (best effort, as [`send`]).
pub fn send_all(sink: &mut dyn Write, replies: &[Reply]) {
    let mut text = Vec::new();
    for reply in replies {
        if let Ok(line) = serde_json::to_vec(reply) {
            text.extend_from_slice(&line);
            text.push(b'\n');
        }
    }
    let _ = sink.write_all(&text).and_then(|()| sink.flush());
}

/// Writes one reply line; false when the client went away (or does not read).
pub fn send_checked(sink: &mut dyn Write, reply: &Reply) -> bool {
    let Ok(mut line) = serde_json::to_vec(reply) else {
        return true;
    };
    line.push(b'\n');
    sink.write_all(&line).and_then(|()| sink.flush()).is_ok()
}

/// How a conversation ended.
#[derive(Debug)]
pub enum Outcome {
    Done { ok: bool, message: String },
    AlreadyRunning { pid: i32, socket: PathBuf },
}

/// Reads replies until the final one, handing each event to `reporter`.
pub fn read_replies(
    reader: impl std::io::Read,
    reporter: &mut dyn Reporter,
) -> Result<Option<Outcome>> {
    follow(&mut BufReader::new(reader), reporter)
}

fn follow<R: std::io::Read>(
    reader: &mut BufReader<R>,
    reporter: &mut dyn Reporter,
) -> Result<Option<Outcome>> {
    // Events that came together (a shutdown's stops) are handed on together, once no whole
    // line is left in what was read: one write of the reporter for them all.
    let mut events: Vec<(String, String)> = Vec::new();
    let mut line = String::new();
    loop {
        if !reader.buffer().contains(&b'\n') {
            hand_on(&mut events, reporter);
        }
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let reply = serde_json::from_str::<Reply>(line);
        if let Ok(Reply::Event { service, what }) = reply {
            events.push((service, what));
            continue;
        }
        hand_on(&mut events, reporter);
        match reply {
            Ok(Reply::Accepted | Reply::Stream(_) | Reply::Event { .. }) => {}
            Ok(Reply::Waiting {
                service,
                what,
                limit_ms,
            }) => reporter.waiting(&service, &what, limit_ms.map(Duration::from_millis)),
            Ok(Reply::Done { ok, message }) => return Ok(Some(Outcome::Done { ok, message })),
            Ok(Reply::AlreadyRunning { pid, socket }) => {
                return Ok(Some(Outcome::AlreadyRunning { pid, socket }));
            }
            // Anything else on the channel (a panic message, say) is shown as is.
            Err(_) => eprintln!("{line}"),
        }
    }
    hand_on(&mut events, reporter);
    Ok(None)
}

/// The project's supervisor, if the state records one that is still alive.
pub fn running(state: Option<&State>) -> Option<SupervisorRecord> {
    let sup = state?.supervisor.as_ref()?;
    (sup.process.liveness() == Liveness::Alive && sup.process.pid != std::process::id() as i32)
        .then(|| sup.clone())
}

/// Sends `request` to the supervisor at `socket` and follows its replies to the end. Fails
/// (instead of hanging) when the supervisor does not accept the connection or does not
/// acknowledge the request within [`CLIENT_TIMEOUT`].
pub fn request(
    socket: &Path,
    request: &Request,
    reporter: &mut dyn Reporter,
) -> Result<(bool, String)> {
    let limit = test_override(ENV_TEST_CLIENT_MS, CLIENT_TIMEOUT);
    let stream = match connect_now(socket) {
        Some(stream) => stream,
        None => connect(socket, limit)?.ok_or_else(|| stuck(socket, limit))?,
    };
    request_on(stream, socket, request, reporter)
}

fn stuck(socket: &Path, limit: Duration) -> anyhow::Error {
    let dir = socket
        .parent()
        .map_or(String::new(), |d| d.display().to_string());
    anyhow::anyhow!(
        "the supervisor at {} did not answer within {}; it may be stuck or overloaded: see supervisor.log in {dir}, or stop everything with `mirrord-up down --force`",
        socket.display(),
        crate::output::duration(limit)
    )
}

/// [`request`] on a connection made already (to `socket`: [`connect_now`]).
pub fn request_on(
    stream: UnixStream,
    socket: &Path,
    request: &Request,
    reporter: &mut dyn Reporter,
) -> Result<(bool, String)> {
    let limit = test_override(ENV_TEST_CLIENT_MS, CLIENT_TIMEOUT);
    let dir = socket
        .parent()
        .map_or(String::new(), |d| d.display().to_string());
    let stuck = || stuck(socket, limit);
    stream.set_write_timeout(Some(limit))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(|e| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            stuck()
        } else {
            anyhow::anyhow!("cannot send to the supervisor at {}: {e}", socket.display())
        }
    })?;
    // The acknowledgement (or a refusal), within the limit; then as long as the work takes.
    stream.set_read_timeout(Some(limit))?;
    let mut reader = BufReader::new(&stream);
    let mut first = String::new();
    match reader.read_line(&mut first) {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(stuck());
        }
        Err(e) => return Err(e.into()),
    }
    stream.set_read_timeout(None)?;
    let replayed = std::io::Cursor::new(first.into_bytes());
    let mut all = BufReader::new(std::io::Read::chain(replayed, reader));
    match follow(&mut all, reporter)? {
        Some(Outcome::Done { ok, message }) => Ok((ok, message)),
        Some(Outcome::AlreadyRunning { .. }) => bail!("unexpected answer from the supervisor"),
        None => bail!(
            "the supervisor closed the connection before answering (see supervisor.log in {dir})"
        ),
    }
}

/// Hands `events` on to `reporter` in one call, if there are any.
fn hand_on(events: &mut Vec<(String, String)>, reporter: &mut dyn Reporter) {
    if !events.is_empty() {
        reporter.events(events);
        events.clear();
    }
}

/// A connection to `socket` if a listener takes it at once: a non-blocking `connect(2)`, which
/// fails (`None`) where a blocking one would wait (a full backlog) or fail (no listener, no
/// such socket, a path too long). No thread is started for it.
pub fn connect_now(socket: &Path) -> Option<UnixStream> {
    use nix::libc;
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let bytes = socket.as_os_str().as_bytes();
    // SAFETY: a plain C struct, all zeroes is a valid (empty) value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.is_empty() || bytes.contains(&0) || bytes.len() >= addr.sun_path.len() {
        return None;
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (to, from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) with constant arguments; the descriptor is owned right below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, flags, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a new socket that nothing else owns.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is an initialised sockaddr_un and `len` covers the path and its NUL.
    let ret = unsafe {
        libc::connect(
            fd,
            (&raw const addr).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    };
    (ret == 0 && stream.set_nonblocking(false).is_ok()).then_some(stream)
}

/// The PID of the process that listens at the other end of `stream` (`SO_PEERCRED`).
pub fn peer_pid(stream: &UnixStream) -> Option<i32> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    // SAFETY: a plain C struct, all zeroes is a valid value.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` describe a writable ucred for the kernel to fill.
    let ret = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    (ret == 0 && cred.pid > 0).then_some(cred.pid)
}

/// `connect(2)` blocks while the listener's backlog is full (a supervisor that stopped
/// accepting): it runs on a helper thread, given up after `limit` (`None`).
fn connect(socket: &Path, limit: Duration) -> Result<Option<UnixStream>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = socket.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(UnixStream::connect(&path));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(s)) => Ok(Some(s)),
        Ok(Err(e)) => {
            Err(e).with_context(|| format!("cannot reach the supervisor at {}", socket.display()))
        }
        Err(_) => Ok(None),
    }
}

/// A connection handed to the loop: whole lines only, and it holds its connection slot until
/// the loop drops it.
struct Conn {
    stream: UnixStream,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// Where a request's replies go (the loop writes to it from the pass thread).
pub type Client = Box<dyn Write + Send>;

/// Serves the control socket on the current tokio runtime: each well-formed, checked request
/// is acknowledged and handed to `handle` with its connection; anything else is answered with
/// an error here. See the module documentation for the limits.
pub fn serve(
    listener: std::os::unix::net::UnixListener,
    handle: impl Fn(Request, Client) + Send + Sync + 'static,
) -> Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let handle = Arc::new(handle);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let idle = test_override(ENV_TEST_IDLE_MS, IDLE_TIMEOUT);
    tokio::spawn(async move {
        let mut pause = Duration::from_millis(100);
        let mut errors: u64 = 0;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS…: the pending connection stays queued; wait and retry.
                    if errors == 0 {
                        eprintln!(
                            "{} warning: cannot accept a control connection ({e}); retrying",
                            humantime::format_rfc3339_millis(std::time::SystemTime::now())
                        );
                    }
                    errors += 1;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            if errors > 0 {
                eprintln!(
                    "{} accepting control connections again (after {errors} failed attempts)",
                    humantime::format_rfc3339_millis(std::time::SystemTime::now())
                );
                errors = 0;
                pause = Duration::from_millis(100);
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                let _ = stream.try_write(&reply_line(&Reply::Done {
                    ok: false,
                    message: format!(
                        "the supervisor is busy ({MAX_CONNECTIONS} connections are open); try again"
                    ),
                }));
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                if let Some((request, stream)) = read_request(stream, idle).await {
                    let Ok(stream) = stream.into_std() else {
                        return;
                    };
                    let _ = stream.set_nonblocking(false);
                    // A client that stops reading must not hold the pass thread for long.
                    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
                    handle(
                        request,
                        Box::new(Conn {
                            stream,
                            _slot: slot,
                        }),
                    );
                }
            });
        }
    });
    Ok(())
}

fn reply_line(reply: &Reply) -> Vec<u8> {
    let mut line = serde_json::to_vec(reply).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Reads one bounded request line within `idle`, answering every refusal itself; a checked
/// request has been acknowledged when it is returned.
async fn read_request(
    stream: tokio::net::UnixStream,
    idle: Duration,
) -> Option<(Request, tokio::net::UnixStream)> {
    let mut reader = tokio::io::BufReader::new(stream);
    let mut buf = Vec::new();
    let read = async {
        (&mut reader)
            .take(MAX_REQUEST_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .await
    };
    let refusal = match tokio::time::timeout(idle, read).await {
        Err(_) => Some(format!(
            "no complete request within {}; closing",
            crate::output::duration(idle)
        )),
        Ok(Err(_)) => return None, // the client went away
        Ok(Ok(_)) if buf.len() > MAX_REQUEST_BYTES => Some(format!(
            "request too large (more than {MAX_REQUEST_BYTES} bytes); closing"
        )),
        Ok(Ok(0)) => return None, // connected and hung up without a word
        Ok(Ok(_)) => None,
    };
    let mut stream = reader.into_inner();
    let request = match refusal {
        Some(why) => Err(why),
        None => match serde_json::from_slice::<Request>(trim_line(&buf)) {
            Ok(req) => req.check().map(|()| req),
            Err(_) if trim_line(&buf).is_empty() => Err("bad request: empty line".to_owned()),
            Err(e) => Err(format!("bad request: {}", clip(&e.to_string(), 300))),
        },
    };
    let reply = match &request {
        Ok(_) => Reply::Accepted,
        Err(why) => Reply::Done {
            ok: false,
            message: why.clone(),
        },
    };
    let sent = tokio::time::timeout(idle, stream.write_all(&reply_line(&reply))).await;
    match (request, sent) {
        (Ok(req), Ok(Ok(()))) => Some((req, stream)),
        _ => {
            let _ = stream.shutdown().await;
            None
        }
    }
}

fn trim_line(buf: &[u8]) -> &[u8] {
    let buf = buf.strip_suffix(b"\n").unwrap_or(buf);
    buf.strip_suffix(b"\r").unwrap_or(buf)
}

/// At most `max` bytes of `s` (on a character boundary), marked when cut.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_out_of_range_are_refused() {
        for bad in [-1.0, 1e300, f64::NAN, f64::INFINITY, MAX_SECONDS + 1.0] {
            let r = Request::Shutdown {
                timeout_s: Some(bad),
            };
            assert!(r.check().unwrap_err().contains("timeout_s"), "{bad}");
        }
        let ok = Request::Stop {
            services: vec![],
            timeout_s: Some(10.0),
        };
        assert!(ok.check().is_ok());
    }

    /// What a client's reporter was handed: each call of `events` (an `event` is a call of
    /// one) and each `waiting`.
    #[derive(Default)]
    struct Calls(Vec<Vec<String>>);

    impl Reporter for Calls {
        fn event(&mut self, service: &str, what: &str) {
            self.0.push(vec![format!("{service} {what}")]);
        }
        /// Never empty: a client's reporter may do costly work when it is first handed
        /// something (`up`'s reads the whole state for the names' width).
        fn events(&mut self, batch: &[(String, String)]) {
            assert!(!batch.is_empty(), "an empty batch was handed on");
            self.0
                .push(batch.iter().map(|(s, w)| format!("{s} {w}")).collect());
        }
        fn waiting(&mut self, service: &str, what: &str, _: Option<Duration>) {
            self.0.push(vec![format!("{service} waiting {what}")]);
        }
    }

    /// Events read together are handed on together, in order, each once: those before a
    /// `waiting` first, and the last ones before the answer.
    #[test]
    fn events_that_came_together_are_reported_together() {
        let event = |s: &str, w: &str| Reply::Event {
            service: s.into(),
            what: w.into(),
        };
        let mut replies = vec![
            Reply::Accepted,
            event("a", "stopped"),
            event("b", "stopped"),
        ];
        replies.push(Reply::Waiting {
            service: "c".into(),
            what: "stopping".into(),
            limit_ms: None,
        });
        replies.extend([
            event("c", "stopped"),
            event("d", "stopped"),
            event("e", "x"),
        ]);
        replies.push(Reply::Done {
            ok: true,
            message: "done".into(),
        });
        let mut text = Vec::new();
        send_all(&mut text, &replies);
        let mut calls = Calls::default();
        let outcome = read_replies(text.as_slice(), &mut calls).unwrap();
        assert!(matches!(outcome, Some(Outcome::Done { ok: true, .. })));
        assert_eq!(
            calls.0,
            [
                vec!["a stopped", "b stopped"],
                vec!["c waiting stopping"],
                vec!["c stopped", "d stopped", "e x"],
            ]
        );
        // A connection that ends after events: they are handed on still.
        let mut cut = Vec::new();
        send_all(&mut cut, &[event("a", "stopped")]);
        let mut calls = Calls::default();
        assert!(read_replies(cut.as_slice(), &mut calls).unwrap().is_none());
        assert_eq!(calls.0, [vec!["a stopped"]]);
    }

    #[test]
    fn clip_keeps_characters_whole() {
        assert_eq!(clip("ééé", 3), "é…");
        assert_eq!(clip("abc", 3), "abc");
    }
}
