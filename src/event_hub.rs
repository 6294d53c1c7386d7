//! The supervisor's live event stream (`mirrord-up events`, issue 13.5): every lifecycle
//! event the supervisor records in `events.log` (`crate::events::Journal::record` publishes
//! here too), plus the session events of `crate::session`, go to the subscribers that asked on
//! the control socket (`Request::Events`), one JSON line each (`Reply::Stream`). A bounded
//! ring of the recent ones ([`RING`]) answers `--since`. A subscriber that does not keep up
//! loses events past [`QUEUE`] (never blocking the supervisor); every subscriber gets a final
//! `done` when the supervisor ends ([`close`]).
//!
//! Event types, from the text of the lifecycle line ([`classify`]): `started`, `ready`,
//! `exited` (with `cause`), `restart_scheduled`, `failed`, `stopped`, `reload_applied`,
//! `reload_failed` (with `file`, `line`, `column` when the error names them),
//! `session_connected`, `session_lost`, `incoming_request` (`method`, `path`), else `info`.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Recent events kept for `--since`.
pub const RING: usize = 1000;
/// Events queued per subscriber before it loses some.
pub const QUEUE: usize = 4096;

/// One event as `events --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEvent {
    /// RFC 3339 with milliseconds.
    pub time: String,
    #[serde(default)]
    pub at_ms: u64,
    pub service: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The lifecycle line as `logs` shows it.
    pub what: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
}

struct Subscriber {
    tx: SyncSender<Msg>,
    services: Vec<String>,
    thread: std::thread::JoinHandle<()>,
}

enum Msg {
    Event(Box<StreamEvent>),
    End(String),
}

#[derive(Default)]
struct Hub {
    ring: VecDeque<StreamEvent>,
    subscribers: Vec<Subscriber>,
    /// Only a supervisor keeps events (a one-shot command's journal lines go nowhere).
    enabled: bool,
}

fn hub() -> &'static Mutex<Hub> {
    static HUB: OnceLock<Mutex<Hub>> = OnceLock::new();
    HUB.get_or_init(|| Mutex::new(Hub::default()))
}

/// The supervisor starts keeping and streaming events.
pub fn enable() {
    if let Ok(mut h) = hub().lock() {
        h.enabled = true;
    }
}

fn wanted(services: &[String], e: &StreamEvent) -> bool {
    services.is_empty()
        || services.contains(&e.service)
        || e.service == crate::events::PROJECT
        || e.service == "supervisor"
}

/// Publishes one lifecycle line (several events for `exited …; restarting in …`).
pub fn publish(service: &str, what: &str) {
    let Ok(mut h) = hub().lock() else { return };
    if !h.enabled {
        return;
    }
    for e in classify(service, what, SystemTime::now()) {
        if h.ring.len() == RING {
            h.ring.pop_front();
        }
        h.ring.push_back(e.clone());
        h.subscribers.retain(|s| {
            if !wanted(&s.services, &e) {
                return true;
            }
            match s.tx.try_send(Msg::Event(Box::new(e.clone()))) {
                Ok(()) | Err(TrySendError::Full(_)) => true,
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }
}

/// A new subscriber: the recent events at or after `since_ms` (if given), then live ones, on
/// `client` (a control connection) until the supervisor ends or the client goes away.
pub fn subscribe(client: Box<dyn Write + Send>, services: Vec<String>, since_ms: Option<u64>) {
    let Ok(mut h) = hub().lock() else { return };
    let (tx, rx) = sync_channel(QUEUE);
    if let Some(since) = since_ms {
        for e in h.ring.iter().filter(|e| e.at_ms >= since) {
            if wanted(&services, e) {
                let _ = tx.try_send(Msg::Event(Box::new(e.clone())));
            }
        }
    }
    let thread = std::thread::spawn(move || forward(rx, client));
    h.subscribers.push(Subscriber {
        tx,
        services,
        thread,
    });
}

fn forward(rx: Receiver<Msg>, mut client: Box<dyn Write + Send>) {
    use crate::supervisor::control::{Reply, send_checked};
    while let Ok(msg) = rx.recv() {
        let reply = match msg {
            Msg::Event(e) => Reply::Stream(*e),
            Msg::End(why) => Reply::Done {
                ok: true,
                message: why,
            },
        };
        if !send_checked(&mut client, &reply) {
            return;
        }
    }
}

/// The supervisor ends: every subscriber gets `done` (after what is queued for it).
pub fn close(why: &str) {
    let subscribers = match hub().lock() {
        Ok(mut h) => {
            h.enabled = false;
            std::mem::take(&mut h.subscribers)
        }
        Err(_) => return,
    };
    for s in subscribers {
        // Blocking: the end must come after everything queued (bounded by the write timeout).
        let _ = s.tx.send(Msg::End(why.to_owned()));
        drop(s.tx);
        let _ = s.thread.join();
    }
}

/// The events one lifecycle line stands for.
pub fn classify(service: &str, what: &str, at: SystemTime) -> Vec<StreamEvent> {
    let at_ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let base = StreamEvent {
        time: humantime::format_rfc3339_millis(at).to_string(),
        at_ms,
        service: service.to_owned(),
        kind: String::new(),
        what: what.to_owned(),
        cause: None,
        method: None,
        path: None,
        file: None,
        line: None,
        column: None,
    };
    let of = |kind: &str| StreamEvent {
        kind: kind.to_owned(),
        ..base.clone()
    };
    if let Some(rest) = what.strip_prefix("incoming request ") {
        let mut parts = rest.splitn(2, ' ');
        return vec![StreamEvent {
            method: parts.next().map(str::to_owned),
            path: parts.next().map(str::to_owned),
            ..of("incoming_request")
        }];
    }
    if what.starts_with("session connected") {
        return vec![of("session_connected")];
    }
    if let Some(why) = what.strip_prefix("session lost: ") {
        return vec![StreamEvent {
            cause: Some(why.to_owned()),
            ..of("session_lost")
        }];
    }
    if what.starts_with("started") {
        return vec![of("started")];
    }
    if what == "ready" || what.starts_with("ready ") || what.starts_with("ready:") {
        return vec![of("ready")];
    }
    if what.starts_with("stopped") {
        return vec![of("stopped")];
    }
    if let Some(why) = what.strip_prefix("failed: ") {
        return vec![StreamEvent {
            cause: Some(why.to_owned()),
            ..of("failed")
        }];
    }
    // ("the file is valid again" stays `info`: the reload that follows says `reload applied`.)
    if what.starts_with("reload applied") {
        return vec![of("reload_applied")];
    }
    if what.starts_with("reload failed") || what.starts_with("the file cannot be loaded") {
        let (file, line, column) = position_in(what);
        return vec![StreamEvent {
            cause: what.split_once('\n').map(|(_, m)| m.to_owned()),
            file,
            line,
            column,
            ..of("reload_failed")
        }];
    }
    if what.starts_with("restarting in") {
        return vec![of("restart_scheduled")];
    }
    if what.starts_with("exited") || what.starts_with("mirrord exited") {
        return match what.split_once("; restarting in") {
            Some((exit, _)) => vec![
                StreamEvent {
                    cause: Some(exit.to_owned()),
                    ..of("exited")
                },
                of("restart_scheduled"),
            ],
            None => vec![StreamEvent {
                cause: Some(what.to_owned()),
                ..of("exited")
            }],
        };
    }
    vec![of("info")]
}

/// `file:line:column` (or `file:line`) of the first YAML position an error names.
fn position_in(text: &str) -> (Option<String>, Option<u64>, Option<u64>) {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"([^\s:]+\.ya?ml):(\d+)(?::(\d+))?").expect("valid regex")
    });
    match re.captures(text) {
        Some(c) => (
            c.get(1).map(|m| m.as_str().to_owned()),
            c.get(2).and_then(|m| m.as_str().parse().ok()),
            c.get(3).and_then(|m| m.as_str().parse().ok()),
        ),
        None => (None, None, None),
    }
}

/// One line of `events` without `--json`.
pub fn format_line(e: &StreamEvent) -> String {
    let mut what = e.what.replace('\n', " ⏎ ");
    if let (Some(f), Some(l)) = (&e.file, e.line) {
        what = format!(
            "{what} [{f}:{l}{}]",
            e.column.map(|c| format!(":{c}")).unwrap_or_default()
        );
    }
    format!("{} {} {} {}", e.time, e.service, e.kind, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_classified() {
        let t = SystemTime::now();
        let k = |w: &str| {
            classify("api", w, t)
                .into_iter()
                .map(|e| e.kind)
                .collect::<Vec<_>>()
        };
        assert_eq!(k("started (pid 12): new service"), ["started"]);
        assert_eq!(k("ready"), ["ready"]);
        assert_eq!(
            k("exited (exit code 3); restarting in 1s (restart 1 in a row)"),
            ["exited", "restart_scheduled"]
        );
        assert_eq!(k("stopped"), ["stopped"]);
        assert_eq!(k("failed: boom"), ["failed"]);
        assert_eq!(k("incoming request GET /x"), ["incoming_request"]);
        let e = &classify(
            "mirrord-up",
            "reload failed, every service keeps running as it is:\n/p/mirrord-up.yaml:3:7: bad",
            t,
        )[0];
        assert_eq!(e.kind, "reload_failed");
        assert_eq!(
            (e.file.as_deref(), e.line, e.column),
            (Some("/p/mirrord-up.yaml"), Some(3), Some(7))
        );
    }
}
