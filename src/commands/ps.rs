//! `ps [--format table|json] [-a]`: the recorded services with their liveness checked now.
//! Reads the state without the lock, so it never waits on a long command.

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

/// A recorded time as RFC 3339, or nothing when it is not one `humantime` can write (after the
/// year 9999, as a hand-edited or corrupt state may say).
fn rfc3339(ms: u64) -> Option<String> {
    let t = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms))?;
    // humantime formats years up to 9999 only.
    (ms <= 253_402_300_799_999).then(|| humantime::format_rfc3339_millis(t).to_string())
}

pub fn run(ctx: &Context, format: TableFormat, all: bool) -> Result<ExitCode> {
    ctx.require_project()?;
    let state = ctx.read_state()?;
    let rows: Vec<Value> = state
        .iter()
        .flat_map(|s| s.services.iter())
        .filter(|(_, r)| all || r.kind == RecordKind::Service)
        .map(|(n, r)| row(n, r))
        .collect();
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
            print_table(&rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(rows: &[Value]) {
    let header = [
        "NAME",
        "STATUS",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LAST EXIT",
        "HASH",
        "LAUNCHER",
        "LAST REASON",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let s = |k: &str| match &r[k] {
                Value::Null => "-".to_owned(),
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            vec![
                crate::config::escape(&s("name")).into_owned(),
                s("status"),
                s("pid"),
                r["uptime_s"]
                    .as_u64()
                    .map(|u| {
                        humantime::format_duration(std::time::Duration::from_secs(u)).to_string()
                    })
                    .unwrap_or_else(|| "-".into()),
                s("restarts"),
                crate::config::escape(&s("last_exit_text")).into_owned(),
                r["config_hash"]
                    .as_str()
                    .map(|h| {
                        crate::config::escape(&h.chars().take(12).collect::<String>()).into_owned()
                    })
                    .unwrap_or_default(),
                s("launcher"),
                crate::config::escape(&s("last_reason")).into_owned(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: Vec<&str>| {
        let mut out = String::new();
        for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in &cells {
        line(row.iter().map(String::as_str).collect());
    }
}
