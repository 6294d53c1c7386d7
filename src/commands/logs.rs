//! `logs [SERVICE…] [-f] [-n N]`: the services' log files, prefixed `name | `. Following is
//! driven by inotify (notify), not polling, and survives restarts and rotations: a file that
//! shrinks or is replaced is read again from its start (`crate::tail`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};

use super::Context;

pub fn run(
    ctx: &Context,
    services: &[String],
    follow: bool,
    tail: Option<usize>,
    prefix: bool,
    timestamps: bool,
) -> Result<ExitCode> {
    ctx.require_project()?;
    // Read only: no state directory is made for a project that never ran.
    let store = crate::state::StateStore {
        dir: ctx.state_dir()?,
        project: ctx.project(),
    };
    if !store.dir.exists() {
        if !ctx.global.quiet {
            eprintln!(
                "project `{}` has no logs yet: nothing of it ever ran",
                store.project
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let state = store.read()?;
    let mut known: BTreeMap<String, PathBuf> = state
        .iter()
        .flat_map(|s| s.services.iter())
        .map(|(n, r)| (n.clone(), r.log_path.clone()))
        .collect();
    if known.is_empty()
        && let Ok(entries) = std::fs::read_dir(store.dir.join("logs"))
    {
        for e in entries.flatten() {
            let p = e.path();
            if let Some(stem) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".log"))
            {
                known.insert(stem.to_owned(), p);
            }
        }
    }
    let selected: Vec<(String, PathBuf)> = if services.is_empty() {
        known.into_iter().collect()
    } else {
        let mut out = Vec::new();
        for s in services {
            match known.get(s) {
                Some(p) => out.push((s.clone(), p.clone())),
                None => bail!(
                    "no logs for service `{s}` in project `{}` (known: {})",
                    store.project,
                    known.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            }
        }
        out
    };
    let width = selected.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let color = ctx.stdout_color();
    let mut out = std::io::stdout().lock();
    let mut printer = |name: &str, line: &[u8]| -> std::io::Result<()> {
        if timestamps {
            write!(
                out,
                "{} ",
                humantime::format_rfc3339_millis(std::time::SystemTime::now())
            )?;
        }
        if prefix {
            out.write_all(crate::output::prefix(name, width, color).as_bytes())?;
        }
        out.write_all(line)?;
        out.write_all(b"\n")
    };
    let mut tail_set = crate::tail::LogTail::default();
    for (name, path) in &selected {
        let bytes = match File::open(path) {
            Ok(mut f) => {
                let mut b = Vec::new();
                f.read_to_end(&mut b)?;
                b
            }
            Err(_) => Vec::new(),
        };
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let lines: Vec<&[u8]> = bytes[..complete].split(|b| *b == b'\n').collect();
        let lines = &lines[..lines.len().saturating_sub(1)];
        let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
        for l in &lines[skip..] {
            printer(name, l)?;
        }
        tail_set.follow(name, path, complete as u64);
    }
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    use notify::Watcher;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |ev| {
        let _ = tx.send(ev);
    })
    .context("cannot watch the log directory")?;
    let logs_dir = store.dir.join("logs");
    watcher
        .watch(&logs_dir, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", logs_dir.display()))?;
    loop {
        tail_set.read_new(&mut printer)?;
        // Wait for the next change; drain whatever else arrived meanwhile.
        if rx.recv().is_err() {
            return Ok(ExitCode::SUCCESS);
        }
        while rx.try_recv().is_ok() {}
    }
}
