//! Readiness probes: the `Ready!` line mirrord prints, a log regex, a TCP port, an HTTP URL.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use crate::spec::{LauncherKind, ServiceSpec};

/// The line real mirrord prints right before it execs the application.
pub const READY_LINE: &str = "Ready!";

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

    /// One check, against the log written since `offset`.
    pub fn check(&self, log: &Path, offset: u64) -> bool {
        match self {
            Probe::Started => true,
            Probe::Line(re) => log_has_line(log, offset, re),
            Probe::Tcp(port) => TcpStream::connect_timeout(
                &([127, 0, 0, 1], *port).into(),
                Duration::from_millis(200),
            )
            .is_ok(),
            Probe::Http(url) => http_ok(url),
        }
    }
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

/// `GET` over plain HTTP/1.0; ready on any 2xx or 3xx status.
fn http_ok(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let host_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let Some(addr) = host_port.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: mirrord-up\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let Ok(n) = s.read(&mut head) else {
        return false;
    };
    let head = String::from_utf8_lossy(&head[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .is_some_and(|c| (200..400).contains(&c))
}
