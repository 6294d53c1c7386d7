//! Readiness probes: the `Ready!` line mirrord prints, a log regex, a TCP port, an HTTP URL.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::RunType;
use crate::process::{Liveness, PortOwner, ProcessIdentity};
use crate::spec::{LauncherKind, ServiceSpec};

/// The line real mirrord prints right before it execs the application.
pub const READY_LINE: &str = "Ready!";

/// Is `line` mirrord's `Ready!`: the bare line of the `simple` progress mode, or the event of
/// the `json` mode (`{"type":"FinishedTask","name":"running process","success":true,
/// "message":"Ready!"}`)? Real `mirrord up` compares the trimmed line.
pub fn is_ready_line(line: &str) -> bool {
    let line = line.trim();
    if line == READY_LINE {
        return true;
    }
    if !(line.starts_with('{') && line.contains(READY_LINE)) {
        return false;
    }
    serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| {
        v["type"] == "FinishedTask" && v["success"] == true && v["message"] == READY_LINE
    })
}

/// Follows a session's output file from an offset, line by line, until mirrord's `Ready!`.
/// Each `poll` reads only what was appended since the last one.
#[derive(Debug)]
pub struct ReadyWatch {
    path: std::path::PathBuf,
    offset: u64,
    partial: Vec<u8>,
    ready: bool,
}

impl ReadyWatch {
    pub fn new(path: &Path, offset: u64) -> ReadyWatch {
        ReadyWatch {
            path: path.to_owned(),
            offset,
            partial: Vec::new(),
            ready: false,
        }
    }

    /// Has `Ready!` been written (as a complete line) by now? Reads what was appended since
    /// the last call in bounded chunks, each line looked at once (a burst of output before the
    /// watch starts costs its size, not its size squared); ranges the rotation released are
    /// skipped. Once it is found, the rotation's hold on the log ([`crate::logrotate::hold`])
    /// is released.
    pub fn poll(&mut self) -> bool {
        if self.ready {
            return true;
        }
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return false;
        };
        let len = f.metadata().map_or(0, |m| m.len());
        if self.offset < len {
            let data = crate::logrotate::data_start(&f, self.offset, len);
            if data > self.offset {
                self.offset = data;
                self.partial.clear();
            }
        }
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return false;
        }
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match f.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(_) => return false,
            };
            self.offset += n as u64;
            self.partial.extend_from_slice(&chunk[..n]);
            let mut start = 0;
            while let Some(i) = self.partial[start..].iter().position(|b| *b == b'\n') {
                let line = &self.partial[start..start + i + 1];
                start += i + 1;
                if is_ready_line(&String::from_utf8_lossy(line)) {
                    self.ready = true;
                    self.partial.clear();
                    crate::logrotate::unhold(&self.path);
                    return true;
                }
            }
            self.partial.drain(..start);
            // A line without an end longer than any `Ready!` line: keep only its tail.
            if self.partial.len() > 64 * 1024 {
                let cut = self.partial.len() - 4096;
                self.partial.drain(..cut);
            }
        }
    }
}

#[derive(Debug, Clone)]
pub enum Probe {
    /// Ready as soon as the process runs (the `local` launcher has no `Ready!` line).
    Started,
    Line(regex::Regex),
    Tcp(u16),
    Http(String),
}

impl Probe {
    pub fn of(spec: &ServiceSpec) -> Probe {
        let ready = spec.ready.clone().unwrap_or_default();
        if let Some(re) = ready.log.and_then(|r| regex::Regex::new(&r).ok()) {
            Probe::Line(re)
        } else if let Some(port) = ready.tcp {
            Probe::Tcp(port)
        } else if let Some(url) = ready.http {
            Probe::Http(url)
        } else if spec.launcher == LauncherKind::Local {
            Probe::Started
        } else {
            Probe::Line(
                regex::Regex::new(&format!("^{}$", regex::escape(READY_LINE))).expect("static"),
            )
        }
    }

    /// One check, against the log written since `offset`. Whoever answers a port counts:
    /// [`Probe::check_service`] is the honest one.
    pub fn check(&self, log: &Path, offset: u64) -> bool {
        match self {
            Probe::Started => true,
            Probe::Line(re) => log_has_line(log, offset, re),
            Probe::Tcp(port) => tcp_answers(*port),
            Probe::Http(url) => http_ok(url).is_some(),
        }
    }

    /// One check of a service whose process is `identity`: ready only if the probe passes,
    /// a port it asks is answered by the service's own process group (not by something else
    /// listening there; only when `owner_check`, see [`owner_checked`]), and the process is
    /// still alive afterwards.
    pub fn check_service(
        &self,
        log: &Path,
        offset: u64,
        identity: Option<&ProcessIdentity>,
        owner_check: bool,
    ) -> Check {
        let Some(identity) = identity else {
            return Check::NotYet;
        };
        let port = match self {
            Probe::Started | Probe::Line(_) => {
                if !self.check(log, offset) {
                    return Check::NotYet;
                }
                None
            }
            Probe::Tcp(port) => {
                if !tcp_answers(*port) {
                    return Check::NotYet;
                }
                Some(*port)
            }
            Probe::Http(url) => match http_ok(url) {
                None => return Check::NotYet,
                Some(addr) => addr.ip().is_loopback().then_some(addr.port()),
            },
        };
        if let Some(port) = port.filter(|_| owner_check)
            && let PortOwner::Outside(pid) = crate::process::port_owner(port, identity.pgid)
        {
            return Check::Foreign { port, pid };
        }
        if identity.liveness() != Liveness::Alive {
            return Check::NotYet;
        }
        Check::Ready
    }
}

/// Whether who answers a service's port can be checked: not for `run.type: container`, whose
/// port is published by the container runtime's proxy, a process outside the service's group
/// by design.
pub fn owner_checked(spec: &ServiceSpec) -> bool {
    spec.run_type != RunType::Container
}

/// The outcome of [`Probe::check_service`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Ready,
    NotYet,
    /// The probe's port is answered by a process outside the service's group (`pid` when it
    /// can be found): not ready, whatever it answers.
    Foreign {
        port: u16,
        pid: Option<i32>,
    },
}

impl Check {
    /// What the user is told about a foreign answer: `port 8080 is answered by pid 4242 (not
    /// part of the service)`.
    pub fn note(&self) -> Option<String> {
        match self {
            Check::Foreign {
                port,
                pid: Some(pid),
            } => Some(format!(
                "port {port} is answered by pid {pid} (not part of the service)"
            )),
            Check::Foreign { port, pid: None } => Some(format!(
                "port {port} is answered by a process that is not part of the service"
            )),
            _ => None,
        }
    }
}

/// The `--wait-timeout` of the command being carried out, as (deadline, limit): every wait of
/// its apply (a session's `Ready!`, a dependency's readiness, `--wait` itself) ends by it.
static WAIT_BOUND: std::sync::Mutex<Option<(Instant, Duration)>> = std::sync::Mutex::new(None);

/// While alive, bounds every readiness wait by `limit` from now (`up --wait --wait-timeout`);
/// `None` bounds nothing.
#[must_use = "the bound ends when this is dropped"]
pub struct WaitBound(());

impl WaitBound {
    pub fn set(limit: Option<Duration>) -> WaitBound {
        *WAIT_BOUND.lock().unwrap_or_else(|e| e.into_inner()) =
            limit.map(|l| (Instant::now() + l, l));
        WaitBound(())
    }
}

impl Drop for WaitBound {
    fn drop(&mut self) {
        *WAIT_BOUND.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The deadline of a wait of `own` from now: the earlier of it and the command's wait bound,
/// with `Some(limit)` when the bound (the user's `--wait-timeout`) is the earlier one.
pub fn bounded(own: Duration) -> (Instant, Option<Duration>) {
    let mine = Instant::now() + own;
    match *WAIT_BOUND.lock().unwrap_or_else(|e| e.into_inner()) {
        Some((deadline, limit)) if deadline < mine => (deadline, Some(limit)),
        _ => (mine, None),
    }
}

/// Why a service did not become ready. Shown as `dependency db exited before it was ready`
/// while a dependent waits for it, and as `db exited before it was ready` for `up --wait`
/// ([`NotReady::as_dependency`]): one value, two phrasings, no text cut out of another.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{name} {why}", if *.dependency { "dependency " } else { "" })]
pub struct NotReady {
    pub name: String,
    pub why: NotReadyWhy,
    /// Phrased as the dependency of the service that waited for it.
    pub dependency: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReadyWhy {
    #[error("is not running")]
    NotRunning,
    #[error("exited before it was ready")]
    Exited,
    /// Not ready within `after`; `note` says who answered its port instead, if anyone did.
    #[error("not ready after {}{}", crate::output::duration(*.after), .note.as_ref().map(|n| format!(": {n}")).unwrap_or_default())]
    Timeout {
        after: Duration,
        note: Option<String>,
    },
    #[error("interrupted")]
    Interrupted,
}

impl NotReady {
    pub fn new(name: &str, why: NotReadyWhy) -> NotReady {
        NotReady {
            name: name.to_owned(),
            why,
            dependency: false,
        }
    }

    /// The same, phrased as a dependency (`dependency db …`).
    pub fn as_dependency(mut self) -> NotReady {
        self.dependency = true;
        self
    }

    /// The same, phrased as the service itself (`db …`).
    pub fn as_service(mut self) -> NotReady {
        self.dependency = false;
        self
    }
}

fn tcp_answers(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

fn log_has_line(log: &Path, offset: u64, re: &regex::Regex) -> bool {
    let Ok(mut f) = std::fs::File::open(log) else {
        return false;
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return false;
    }
    let mut text = String::new();
    if f.read_to_string(&mut text).is_err() {
        let mut bytes = Vec::new();
        let _ = f.seek(SeekFrom::Start(offset));
        let _ = f.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    // Only complete lines count: a line still being written is looked at next time.
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => "",
    };
    complete
        .lines()
        .any(|l| re.is_match(l.trim_end_matches('\r')))
}

/// What a session wrote to `path` from `offset` on (lossy UTF-8; empty if unreadable).
pub fn read_from(path: &Path, offset: u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = f.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Why a mirrord session ended, from what it wrote since `offset`: before its `Ready!`, the
/// cause of mirrord's error report; after it (the application runs in its place), only a
/// report in mirrord's own graphical form (an `execve` failure), never the application's lines.
pub fn session_cause(log: &Path, offset: u64) -> Option<String> {
    let text = read_from(log, offset);
    let ready_at = text
        .split_inclusive('\n')
        .scan(0usize, |pos, l| {
            let at = *pos;
            *pos += l.len();
            Some((at, l))
        })
        .find(|(_, l)| is_ready_line(l))
        .map(|(at, l)| at + l.len());
    match ready_at {
        None => crate::report::cause(&text),
        Some(after) => crate::report::graphical_cause(&text[after..]),
    }
}

/// `GET` over plain HTTP/1.0; ready on any 2xx or 3xx status (then the address it asked).
/// The whole response is read before the connection is closed, so the server sees an orderly
/// close, not a reset (a socket closed with unread data sends RST). A response longer than
/// [`HTTP_READ_LIMIT`] or slower than two seconds is cut short.
fn http_ok(url: &str) -> Option<std::net::SocketAddr> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let host_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = host_port.to_socket_addrs().ok()?.next()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: mirrord-up\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let mut total = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                if response.len() < 64 {
                    response.extend_from_slice(&buf[..n]);
                }
                if total > HTTP_READ_LIMIT || std::time::Instant::now() > deadline {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let head = String::from_utf8_lossy(&response);
    let code = head.split_whitespace().nth(1)?.parse::<u16>().ok()?;
    (head.starts_with("HTTP/") && (200..400).contains(&code)).then_some(addr)
}

/// How much of a health endpoint's response is read before the probe gives up on reading it.
pub const HTTP_READ_LIMIT: u64 = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_is_phrased_for_a_dependency_or_the_service_without_cutting_text() {
        let e = NotReady::new(
            "db",
            NotReadyWhy::Timeout {
                after: Duration::from_nanos(2_999_999_657),
                note: Some("port 5432 is answered by pid 7 (not part of the service)".into()),
            },
        );
        assert_eq!(
            e.clone().as_dependency().to_string(),
            "dependency db not ready after 3s: port 5432 is answered by pid 7 (not part of the service)"
        );
        assert_eq!(
            e.as_dependency().as_service().to_string(),
            "db not ready after 3s: port 5432 is answered by pid 7 (not part of the service)"
        );
        let exited = NotReady::new("dependency-db", NotReadyWhy::Exited);
        assert_eq!(
            exited.as_dependency().to_string(),
            "dependency dependency-db exited before it was ready"
        );
    }

    #[test]
    fn ready_in_simple_and_json_forms() {
        assert!(is_ready_line("Ready!\n"));
        assert!(is_ready_line("  Ready!  "));
        assert!(is_ready_line(
            r#"{"type":"FinishedTask","name":"running process","success":true,"message":"Ready!"}"#
        ));
        assert!(!is_ready_line(
            r#"{"type":"FinishedTask","name":"running process","success":false,"message":"Ready!"}"#
        ));
        assert!(!is_ready_line(r#"{"type":"Info","message":"Ready!"}"#));
        assert!(!is_ready_line("Ready!!"));
        assert!(!is_ready_line("app: Ready!"));
    }

    #[test]
    fn a_watch_sees_only_complete_lines_after_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("api.log");
        std::fs::write(&log, "Ready!\nold run\n").unwrap();
        let offset = std::fs::metadata(&log).unwrap().len();
        let mut w = ReadyWatch::new(&log, offset);
        assert!(!w.poll());
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"mirrord exec (cli version 3.250.0)\nRea")
            .unwrap();
        assert!(!w.poll());
        f.write_all(b"dy!").unwrap();
        assert!(!w.poll(), "a line still being written does not count");
        f.write_all(b"\n").unwrap();
        assert!(w.poll());
        assert!(w.poll());
    }

    #[test]
    fn a_watch_skips_released_ranges_and_finds_ready_after_a_burst_and_a_long_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("api.log");
        // What the rotation released reads as zeroes; then a burst of lines, a line far longer
        // than a read, and `Ready!` split across two reads.
        let mut bytes = vec![0u8; 100_000];
        for n in 0..20_000 {
            bytes.extend_from_slice(format!("line {n}\n").as_bytes());
        }
        bytes.extend(std::iter::repeat_n(b'x', 200_000));
        bytes.push(b'\n');
        let at = 64 * 1024 * ((bytes.len() / (64 * 1024)) + 1) - 3;
        bytes.resize(at, b'y');
        bytes.extend_from_slice(b"\nReady!\n");
        std::fs::write(&log, &bytes).unwrap();
        let mut w = ReadyWatch::new(&log, 10);
        assert!(w.poll());
        assert!(w.partial.is_empty());
    }

    #[test]
    fn a_held_log_is_not_released_past_the_hold_and_is_after_unhold() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("api.log");
        let line = "0123456789012345678901234567890\n";
        // Ten times the limit: far past the lag a printer here is allowed (a loud service
        // writes megabytes before a watch started after the pass reads its first line).
        std::fs::write(&log, line.repeat(5120)).unwrap();
        let limits = crate::logrotate::Limits {
            max_size: crate::logrotate::MIN_MAX_SIZE,
            ..Default::default()
        };
        crate::logrotate::hold(&log, 0);
        assert!(crate::logrotate::trim(&log, limits).unwrap().is_none());
        crate::logrotate::unhold(&log);
        assert!(crate::logrotate::trim(&log, limits).unwrap().is_some());
    }

    #[test]
    fn the_cause_before_ready_is_mirrords_and_after_it_only_a_graphical_report() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("api.log");
        std::fs::write(
            &log,
            "checking operator\nError:   × Failed to create Kubernetes API client: x\n  help: y\n",
        )
        .unwrap();
        assert_eq!(
            session_cause(&log, 0).as_deref(),
            Some("Failed to create Kubernetes API client: x")
        );
        std::fs::write(&log, "Ready!\nerror: the app failed\n").unwrap();
        assert_eq!(session_cause(&log, 0), None);
        std::fs::write(&log, "Ready!\nError:   × Failed to execute binary\n").unwrap();
        assert_eq!(
            session_cause(&log, 0).as_deref(),
            Some("Failed to execute binary")
        );
    }
}
