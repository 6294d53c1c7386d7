//! `ps [--format table|json] [-a] [--wide] [--services] [--status S…]` (and `-q`, PIDs only):
//! the recorded services with their liveness checked now. The table fits 80 columns (NAME,
//! STATUS, PID, UPTIME, RESTARTS, TARGET; long values cut with `…`); `--wide` adds the config
//! hash, launcher, last exit and last reason, uncut. Reads the state without the lock, so it
//! never waits on a long command.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::{Value, json};

use super::Context;
use crate::cli::TableFormat;
use crate::engine::liveness;
use crate::process::Liveness;
use crate::state::{RecordKind, ServiceRecord, Status, now_ms};

/// The status `ps` shows: the recorded one, corrected by what the process table says.
pub fn status_of(rec: &ServiceRecord) -> String {
    let live = liveness(rec);
    match (rec.status, live) {
        (Status::Failed, _) => "failed".into(),
        (Status::Waiting, _) => rec.last_reason.clone().unwrap_or_else(|| "waiting".into()),
        (Status::Backoff, _) => match rec.backoff_until_ms.map(|t| t.saturating_sub(now_ms())) {
            Some(left) if left > 86_400_000 => "backoff (restart in more than a day)".into(),
            Some(left) if left > 0 => {
                format!("backoff (restart in {:.1}s)", left as f64 / 1000.0)
            }
            _ => "backoff (restart due)".into(),
        },
        (Status::Stopped, Liveness::Exited | Liveness::Recycled) => "stopped".into(),
        (s, Liveness::Alive) => s.as_str().into(),
        (Status::Starting, _) if rec.process.is_none() => "starting".into(),
        (_, Liveness::Recycled) => "exited".into(),
        (_, Liveness::Exited) => match rec.last_exit.as_ref().and_then(|e| e.code) {
            Some(c) => format!("exited({c})"),
            None => "exited".into(),
        },
    }
}

pub fn row(name: &str, rec: &ServiceRecord) -> Value {
    let running = liveness(rec) == Liveness::Alive;
    let now = now_ms();
    json!({
        "name": name,
        "kind": rec.kind,
        "status": status_of(rec),
        "pid": if running { rec.process.as_ref().map(|p| p.pid) } else { None },
        "pgid": if running { rec.process.as_ref().map(|p| p.pgid) } else { None },
        "uptime_s": if running { rec.started_at_ms.map(|t| now.saturating_sub(t) / 1000) } else { None },
        "started_at": rec.started_at_ms.and_then(rfc3339),
        "restarts": rec.restarts,
        "policy_restarts": rec.policy_restarts,
        "target": target_of(rec),
        "last_exit": rec.last_exit,
        "last_exit_text": rec.last_exit.as_ref().map(crate::state::ExitInfo::describe),
        "last_reason": rec.last_reason,
        "config_hash": rec.config_hash,
        "launcher": rec.spec.launcher,
        "log": rec.log_path,
        "output_dir": rec.output_dir,
        "backoff_until_ms": rec.backoff_until_ms,
    })
}

/// Issue 13: the session fields (`session`, `session_id`, `incoming_requests`, …) merged in.
fn with_session(
    mut row: Value,
    store: Option<&crate::state::StateStore>,
    rec: &ServiceRecord,
) -> Value {
    let running = liveness(rec) == Liveness::Alive;
    if let (Value::Object(r), Value::Object(s)) =
        (&mut row, crate::session::ps_fields(store, rec, running))
    {
        r.extend(s);
    }
    row
}

/// The statuses `--status` accepts: the words `ps` shows (`backoff` matches `backoff (restart
/// in 2.0s)`, `exited` matches `exited(1)`).
pub const STATUSES: &[&str] = &[
    "starting", "running", "ready", "stopping", "exited", "failed", "backoff", "stopped",
];

/// The word of a status as shown (`exited(1)` → `exited`).
fn status_word(shown: &str) -> &str {
    shown.split(['(', ' ']).next().unwrap_or(shown)
}

/// What a service mirrors: `deployment/api (ns)`, `deployment/api`, or `targetless`.
pub fn target_of(rec: &ServiceRecord) -> String {
    let target = rec.spec.mirrord_config.get("target");
    let (path, namespace) = match target {
        Some(Value::String(p)) => (Some(p.clone()), None),
        Some(Value::Object(t)) => (
            match t.get("path") {
                Some(Value::String(p)) => Some(p.clone()),
                Some(Value::Object(p)) => Some(
                    p.iter()
                        .map(|(k, v)| match v {
                            Value::String(v) => format!("{k}/{v}"),
                            v => format!("{k}/{v}"),
                        })
                        .collect::<Vec<_>>()
                        .join("/"),
                ),
                _ => None,
            },
            t.get("namespace")
                .and_then(Value::as_str)
                .map(str::to_owned),
        ),
        _ => (None, None),
    };
    match (path, namespace) {
        (Some(p), _) if p == "targetless" => "targetless".into(),
        (Some(p), Some(ns)) => format!("{p} ({ns})"),
        (Some(p), None) => p,
        (None, _) => "targetless".into(),
    }
}

/// A recorded time as RFC 3339, or nothing when it is not one `humantime` can write (after the
/// year 9999, as a hand-edited or corrupt state may say).
fn rfc3339(ms: u64) -> Option<String> {
    let t = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms))?;
    // humantime formats years up to 9999 only.
    (ms <= 253_402_300_799_999).then(|| humantime::format_rfc3339_millis(t).to_string())
}

/// What `ps` was asked for besides the format.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// CI sessions too.
    pub all: bool,
    /// Every column, uncut.
    pub wide: bool,
    /// Names only.
    pub services: bool,
    /// PIDs only (`-q`).
    pub quiet: bool,
    /// Only these statuses (empty: every one).
    pub status: Vec<String>,
}

pub fn run(ctx: &Context, format: TableFormat, opts: &Options) -> Result<ExitCode> {
    ctx.require_project()?;
    if let Some(bad) = opts.status.iter().find(|s| !STATUSES.contains(&s.as_str())) {
        anyhow::bail!(
            "--status: unknown status `{}` (one of: {})",
            crate::config::escape(bad),
            STATUSES.join(", ")
        );
    }
    let state = ctx.read_state()?;
    let store = state.as_ref().and_then(|_| ctx.store().ok());
    let mut rows: Vec<Value> = state
        .iter()
        .flat_map(|s| s.services.iter())
        .filter(|(_, r)| opts.all || r.kind == RecordKind::Service)
        .map(|(n, r)| with_session(row(n, r), store.as_ref(), r))
        .filter(|r| {
            opts.status.is_empty()
                || opts
                    .status
                    .iter()
                    .any(|s| r["status"].as_str().map(status_word) == Some(s.as_str()))
        })
        .collect();
    if !rows.is_empty() {
        // watch (issue #16); only with rows: opening the store would create its directory.
        crate::watch::annotate_ps_rows(ctx.store().ok().as_ref(), &mut rows);
    }
    if opts.quiet {
        for r in &rows {
            if let Some(pid) = r["pid"].as_i64() {
                println!("{pid}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if opts.services {
        for r in &rows {
            println!(
                "{}",
                crate::config::escape(r["name"].as_str().unwrap_or_default())
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    match format {
        TableFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        TableFormat::Table => {
            if let Some(sup) = crate::supervisor::control::running(state.as_ref()) {
                eprintln!(
                    "supervisor: pid {}, file {}",
                    sup.process.pid,
                    state
                        .as_ref()
                        .and_then(|s| s.file.as_ref())
                        .map_or("-".into(), |f| f.display().to_string())
                );
            }
            if let Some(sup) = crate::supervisor::control::running(state.as_ref())
                && let Some(failed) = state.as_ref().and_then(crate::supervisor::pass::all_down)
            {
                let what = if failed.is_empty() {
                    "every service has ended".to_owned()
                } else if failed.len()
                    == state
                        .as_ref()
                        .map_or(0, |s| s.records(RecordKind::Service).count())
                {
                    "every service failed".to_owned()
                } else {
                    format!("every service has ended ({} failed)", failed.len())
                };
                eprintln!(
                    "{what}; the supervisor (pid {}) is waiting for a change to the file",
                    sup.process.pid
                );
            }
            if let Some(err) = state.as_ref().and_then(|s| s.last_reload_error.as_ref()) {
                eprintln!(
                    "last reload failed (the running services kept their config):\n{}",
                    crate::config::names::excerpt(&err.message, 4096)
                );
            }
            let table = table(&rows, opts.wide);
            let color = ctx.stdout_color();
            for line in render(&table, if opts.wide { None } else { Some(WIDTH) }, color) {
                println!("{line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The width the default table keeps to.
pub const WIDTH: usize = 80;

/// The header and cells of the table (cells plain, escaped).
fn table(rows: &[Value], wide: bool) -> Vec<Vec<String>> {
    let mut header = vec![
        "NAME", "STATUS", "PID", "UPTIME", "RESTARTS", "TARGET", "SESSION",
    ];
    if wide {
        header.extend(["HASH", "LAUNCHER", "LAST EXIT", "LAST REASON"]);
        header.extend(crate::session::WIDE_HEADER);
    }
    let mut out = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    for r in rows {
        let s = |k: &str| match &r[k] {
            Value::Null => "-".to_owned(),
            Value::String(s) => crate::config::escape(s).into_owned(),
            v => v.to_string(),
        };
        let mut cells = vec![
            s("name"),
            s("status"),
            s("pid"),
            r["uptime_s"].as_u64().map_or_else(|| "-".into(), uptime),
            crate::watch::restarts_cell(r, s("policy_restarts")), // watch (issue #16)
            s("target"),
            s("session"),
        ];
        if wide {
            cells.extend([
                r["config_hash"]
                    .as_str()
                    .map(|h| {
                        crate::config::escape(&h.chars().take(12).collect::<String>()).into_owned()
                    })
                    .unwrap_or_default(),
                s("launcher"),
                s("last_exit_text"),
                crate::watch::reason_cell(r, s("last_reason")), // watch (issue #16)
            ]);
            cells.extend(
                crate::session::wide_cells(r)
                    .into_iter()
                    .map(|c| crate::config::escape(&c).into_owned()),
            );
        }
        out.push(cells);
    }
    out
}

/// Uptime in at most two units: `45s`, `3m12s`, `2h05m`, `3d04h`.
pub fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// `text` cut to `width` characters, its last one `…` when cut.
pub fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// A target cut to `width`, keeping its namespace: `deployment/a-long-na… (staging)`.
pub fn cut_target(text: &str, width: usize) -> String {
    match text.rfind(" (") {
        Some(at) if text.ends_with(')') && text.chars().count() > width => {
            let ns = &text[at..];
            let room = width.saturating_sub(ns.chars().count());
            if room >= 8 {
                format!("{}{ns}", cut(&text[..at], room))
            } else {
                cut(text, width)
            }
        }
        _ => cut(text, width),
    }
}

/// The colour of a status word on a terminal: red for a failure, yellow while waiting, green
/// once up.
pub fn status_color(shown: &str) -> Option<u8> {
    match status_word(shown) {
        "failed" => Some(31),
        "exited" if shown != "exited" && shown != "exited(0)" => Some(31),
        "backoff" | "starting" | "stopping" => Some(33),
        "ready" | "running" => Some(32),
        _ => None,
    }
}

/// Columns separated by two spaces; with a `max` width, the widest columns (TARGET, then
/// NAME, then STATUS) are cut with `…` until the lines fit. The STATUS column is coloured
/// when `color`.
fn render(table: &[Vec<String>], max: Option<usize>, color: bool) -> Vec<String> {
    let n = table.first().map_or(0, Vec::len);
    let mut widths = vec![0usize; n];
    for row in table {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    if let Some(max) = max {
        // (column, the narrowest it may become)
        for (col, min) in [(0usize, 16usize), (1, 16), (5, 12), (0, 8), (1, 8)] {
            let total: usize = widths.iter().sum::<usize>() + 2 * n.saturating_sub(1);
            if total <= max {
                break;
            }
            let over = total - max;
            let floor = min.max(table[0][col].len()).min(widths[col]);
            widths[col] = widths[col].saturating_sub(over).max(floor);
        }
    }
    table
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut out = String::new();
            for (c, (cell, w)) in row.iter().zip(&widths).enumerate() {
                let text = if c == 5 {
                    cut_target(cell, *w)
                } else {
                    cut(cell, *w)
                };
                let pad = w.saturating_sub(text.chars().count());
                let last = c + 1 == row.len();
                match status_color(cell).filter(|_| color && c == 1 && i > 0) {
                    Some(code) => out.push_str(&crate::output::paint(&text, code, true)),
                    None => out.push_str(&text),
                }
                if !last {
                    out.push_str(&" ".repeat(pad + 2));
                }
            }
            out.trim_end().to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_to_80_columns() {
        let mut t = vec![
            ["NAME", "STATUS", "PID", "UPTIME", "RESTARTS", "TARGET"]
                .map(str::to_owned)
                .to_vec(),
        ];
        t.push(
            [
                "a-service-with-a-very-long-name-indeed",
                "backoff (restart in more than a day)",
                "4194304",
                "3d04h",
                "12",
                "deployment/a-very-long-deployment-name/container/main (namespace)",
            ]
            .map(str::to_owned)
            .to_vec(),
        );
        let lines = render(&t, Some(WIDTH), false);
        for l in &lines {
            assert!(l.chars().count() <= WIDTH, "{l:?} ({})", l.chars().count());
        }
        assert!(lines[1].contains('…'), "{lines:?}");
        assert_eq!(
            cut_target("deployment/a-very-long-name (staging)", 30),
            "deployment/a-very-l… (staging)"
        );
        assert!(lines[1].contains("4194304  3d04h"), "{lines:?}");
    }

    #[test]
    fn uptime_keeps_two_units() {
        assert_eq!(uptime(5), "5s");
        assert_eq!(uptime(192), "3m12s");
        assert_eq!(uptime(7500), "2h05m");
        assert_eq!(uptime(3 * 86_400 + 4 * 3600 + 5), "3d04h");
    }
}
