//! `ls [--format table|json]`: every project recorded in the state directory, with its file,
//! its supervisor and its services counted by status (as `docker compose ls`); one that records
//! nothing (after `down`) only with `-a`. Reads only.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::{Value, json};

use super::Context;
use super::discover::recorded_projects;
use crate::cli::TableFormat;
use crate::state::RecordKind;

/// `exited(1)` and `backoff (restart in 2.0s)` count as `exited` and `backoff`.
fn status_word(status: &str) -> String {
    status.split(['(', ' ']).next().unwrap_or(status).to_owned()
}

pub fn run(ctx: &Context, format: TableFormat, all: bool) -> Result<ExitCode> {
    let root = ctx.state_root()?;
    let rows: Vec<Value> = recorded_projects(&root)
        .into_iter()
        .map(|r| match r.state {
            Ok(state) => {
                let mut counts: BTreeMap<String, u64> = BTreeMap::new();
                for (_, rec) in state.records(RecordKind::Service) {
                    *counts
                        .entry(status_word(&super::ps::status_of(rec)))
                        .or_default() += 1;
                }
                let ci = state.records(RecordKind::Ci).count();
                let sup = crate::supervisor::control::running(Some(&state));
                json!({
                    "name": r.name,
                    "file": state.file,
                    "supervisor": sup.map(|s| json!({"pid": s.process.pid, "socket": s.socket})),
                    "services": state.records(RecordKind::Service).count(),
                    "ci_sessions": ci,
                    "status": counts,
                    "state_dir": r.dir,
                    "error": Value::Null,
                })
            }
            Err(why) => json!({
                "name": r.name,
                "file": Value::Null,
                "supervisor": Value::Null,
                "services": 0,
                "ci_sessions": 0,
                "status": {},
                "state_dir": r.dir,
                "error": why,
            }),
        })
        // A project `down` emptied is no project any more, unless asked (`-a`).
        .filter(|r| {
            all || !r["error"].is_null()
                || !r["supervisor"].is_null()
                || r["services"].as_u64() != Some(0)
                || r["ci_sessions"].as_u64() != Some(0)
        })
        .collect();
    match format {
        TableFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        TableFormat::Table => print_table(&rows),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(rows: &[Value]) {
    let header = ["NAME", "STATUS", "SUPERVISOR", "FILE"];
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            let status = if let Some(e) = r["error"].as_str() {
                format!("unreadable: {e}")
            } else {
                let mut parts: Vec<String> = r["status"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}({v})"))
                    .collect();
                if let Some(n) = r["ci_sessions"].as_u64().filter(|n| *n > 0) {
                    parts.push(format!("ci({n})"));
                }
                if parts.is_empty() {
                    "empty".into()
                } else {
                    parts.join(", ")
                }
            };
            [
                r["name"].as_str().unwrap_or("-").to_owned(),
                status,
                r["supervisor"]["pid"]
                    .as_i64()
                    .map_or("-".into(), |p| format!("pid {p}")),
                r["file"].as_str().unwrap_or("-").to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |row: [&str; 4]| {
        let text = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        println!("{}", text.trim_end());
    };
    line(header);
    for row in &cells {
        line([&row[0], &row[1], &row[2], &row[3]]);
    }
}
