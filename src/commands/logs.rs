//! `logs [SERVICE…] [-f] [-n N] [--since T] [--timestamps]`: the services' log files, prefixed
//! `name | `, with the supervisor's lifecycle lines (`crate::events`) among them, prefixed
//! `name ▸ ` and dim on a terminal.
//!
//! Where an event goes: each event records the position of its service's log file when it
//! happened, so it is printed between the very lines it fell between; project-wide events
//! (reload failed, the file is valid again) follow the services' lines.
//!
//! Time: services write their own log files, so the write time of an old service line is not
//! known. `--timestamps` stamps lifecycle lines with their recorded time and lines read live
//! (`-f`) with the time they were read; old service lines get a blank stamp, and a note on
//! stderr says why, once. `--since` filters lifecycle lines by time; of a service's old lines it
//! keeps none when the file was last modified before that time, else those after the
//! service's last lifecycle event at or before that time (so nothing written since is lost; a
//! few older lines may show), all of them when no event tells.
//!
//! Following is driven by inotify (notify) and pidfds, not polling, and survives restarts and
//! rotations (`crate::tail`). `-f` ends, like compose's, once nothing is left that can write:
//! no live process of the selected services (of any service, without names) and no live
//! supervisor (which could start one again).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read as _, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context as _, Result, bail};

use super::Context;
use crate::events::{self, Event};
use crate::process::Liveness;
use crate::state::{State, StateStore};

/// What `logs` was asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub follow: bool,
    pub tail: Option<usize>,
    pub prefix: bool,
    pub timestamps: bool,
    pub since: Option<SystemTime>,
}

const NO_TIME_NOTE: &str = "note: services write their own log files, so when an old service line was written is not known: --timestamps stamps lifecycle lines (▸) and lines read live with -f, and leaves old service lines blank";
const SINCE_NOTE: &str = "note: old service lines carry no time: --since keeps each service's lines from its last lifecycle event at or before that time (all of them when none tells)";

struct Printer<W: Write> {
    out: W,
    width: usize,
    color: bool,
    prefix: bool,
    timestamps: bool,
    said_no_time: bool,
    prefixes: crate::output::Prefixes,
}

impl<W: Write> Printer<W> {
    /// When a line read live was read, for its stamp: asked only with `--timestamps` (the
    /// clock, once per line, was a sixth of `logs -f`'s CPU).
    fn live(&self) -> Option<SystemTime> {
        self.timestamps.then(SystemTime::now)
    }

    fn stamp(&mut self, at: Option<SystemTime>) -> std::io::Result<()> {
        if !self.timestamps {
            return Ok(());
        }
        match at {
            Some(t) => write!(self.out, "{} ", humantime::format_rfc3339_millis(t)),
            None => {
                if !self.said_no_time {
                    self.said_no_time = true;
                    eprintln!("{NO_TIME_NOTE}");
                }
                // As wide as a stamp, so that the columns stay aligned.
                write!(self.out, "{:25}", "")
            }
        }
    }

    fn line(&mut self, name: &str, line: &[u8], at: Option<SystemTime>) -> std::io::Result<()> {
        self.stamp(at)?;
        if self.prefix {
            let prefix = self.prefixes.get(name, self.width, self.color);
            self.out.write_all(prefix.as_bytes())?;
        }
        self.out.write_all(line)?;
        self.out.write_all(b"\n")
    }

    fn event(&mut self, e: &Event) -> std::io::Result<()> {
        for part in e.what.lines() {
            self.stamp(Some(e.at))?;
            let text = if self.prefix {
                format!(
                    "{:<w$} {} {part}",
                    e.service,
                    events::MARKER,
                    w = self.width
                )
            } else {
                format!("{} {}: {part}", events::MARKER, e.service)
            };
            writeln!(self.out, "{}", events::dim(&text, self.color))?;
        }
        Ok(())
    }
}

pub fn run(ctx: &Context, services: &[String], opts: &Options) -> Result<ExitCode> {
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
    let names: Option<BTreeSet<String>> =
        (!services.is_empty()).then(|| services.iter().cloned().collect());
    let (all_events, journal_end) = events::read_all(&store.dir);
    let since_ok = |e: &Event| opts.since.is_none_or(|s| e.at >= s);
    let mut project_events: Vec<&Event> = all_events
        .iter()
        .filter(|e| e.project_wide() && since_ok(e))
        .collect();
    if let Some(n) = opts.tail {
        project_events.drain(..project_events.len().saturating_sub(n));
    }
    let width = selected
        .iter()
        .map(|(n, _)| n.len())
        .chain(project_events.iter().map(|e| e.service.len()))
        .max()
        .unwrap_or(0);
    let mut p = Printer {
        // Buffered: flushed after each batch of lines, not after each line.
        out: std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock()),
        width,
        color: ctx.stdout_color(),
        prefix: opts.prefix,
        timestamps: opts.timestamps,
        said_no_time: false,
        prefixes: Default::default(),
    };
    if opts.since.is_some() && !selected.is_empty() {
        eprintln!("{SINCE_NOTE}");
    }
    let mut tail_set = crate::tail::LogTail::default();
    for (name, path) in &selected {
        let theirs: Vec<&Event> = all_events.iter().filter(|e| e.service == *name).collect();
        let end = dump_service(&mut p, name, path, &theirs, opts)?;
        tail_set.follow(name, path, end);
    }
    for e in &project_events {
        p.event(e)?;
    }
    p.out.flush()?;
    if !opts.follow {
        return Ok(ExitCode::SUCCESS);
    }
    follow(&store, state, names, tail_set, journal_end, &mut p, opts)
}

/// Prints one service's old lines with its events among them; returns the offset up to which
/// the file was printed (where following begins).
///
/// The file is never read whole: `-n N` reads backwards from the end until N lines are found
/// (its cost is O(N), whatever the file's size), and the lines shown are streamed.
fn dump_service<W: Write>(
    p: &mut Printer<W>,
    name: &str,
    path: &Path,
    theirs: &[&Event],
    opts: &Options,
) -> Result<u64> {
    let file = File::open(path).ok();
    let (len, inode, mtime) = match &file {
        Some(f) => {
            let meta = f.metadata()?;
            (meta.len(), Some(meta.ino()), meta.modified().ok())
        }
        None => (0, None, None),
    };
    // Where the data begins (past what the live rotation released) and where the last
    // complete line ends.
    let (data, complete) = match &file {
        Some(f) => {
            let data = crate::logrotate::data_start(f, 0, len);
            let complete = crate::tail::line_start_back(f, data, len, 0)?;
            (data, complete)
        }
        None => (0, 0),
    };
    // An event placed in this file: its offset; `None` for one from before the file.
    let here = |e: &Event| match (e.pos, inode) {
        (Some((i, off)), Some(ino)) if i == ino => Some(off),
        _ => None,
    };
    // Where the shown lines begin.
    let mut from = data;
    if let (Some(n), Some(f)) = (opts.tail, &file) {
        from = if n == 0 {
            complete
        } else {
            crate::tail::line_start_back(f, data, complete, n)?
        };
    }
    if let Some(since) = opts.since {
        let last_before = theirs
            .iter()
            .filter(|e| e.at <= since)
            .filter_map(|e| here(e))
            .max();
        // A file last written before that time has nothing newer.
        let floor = if mtime.is_some_and(|m| m < since) {
            complete
        } else {
            last_before.unwrap_or(0)
        };
        from = from.max(floor);
    }
    let shown: Vec<&Event> = theirs
        .iter()
        .copied()
        .filter(|e| opts.since.is_none_or(|s| e.at >= s))
        .filter(|e| match here(e) {
            Some(off) => off >= from,
            // From before this file: shown unless only the end is asked for.
            None => opts.tail.is_none(),
        })
        .collect();
    let (before, mut placed): (Vec<&Event>, Vec<&Event>) =
        shown.into_iter().partition(|e| here(e).is_none());
    for e in before {
        p.event(e)?;
    }
    placed.sort_by_key(|e| here(e));
    let mut placed = placed.into_iter().peekable();
    if let Some(f) = &file
        && from < complete
    {
        use std::io::{BufRead, Seek, SeekFrom};
        let mut reader = std::io::BufReader::with_capacity(64 * 1024, f);
        reader.seek(SeekFrom::Start(from))?;
        let mut reader = reader.take(complete - from);
        let mut line = Vec::new();
        let mut at = from;
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            while let Some(e) = placed.next_if(|e| here(e).is_some_and(|o| o <= at)) {
                p.event(e)?;
            }
            at += n as u64;
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            p.line(name, crate::tail::skip_zeros(text), None)?;
        }
    }
    for e in placed {
        p.event(e)?;
    }
    Ok(complete)
}

enum Wake {
    /// A log file changed.
    Logs,
    /// Something else in the state directory (the state file, the events file).
    State,
    /// A watched process ended.
    Exited,
}

/// The live processes that can still write: the selected services' and the supervisor's.
fn writers(state: Option<&State>, names: Option<&BTreeSet<String>>) -> Vec<(i32, u64)> {
    let Some(state) = state else {
        return Vec::new();
    };
    let sup = state.supervisor.iter().map(|s| &s.process);
    let svcs = state
        .services
        .iter()
        .filter(|(n, _)| names.is_none_or(|s| s.contains(*n)))
        .filter_map(|(_, r)| r.process.as_ref());
    sup.chain(svcs)
        .filter(|id| id.liveness() == Liveness::Alive)
        .map(|id| (id.pid, id.start_time))
        .collect()
}

/// Tells `tx` when the process `pid` (started at `start_time`) ends; at once if it is gone.
fn watch_exit(tx: std::sync::mpsc::Sender<Wake>, pid: i32, start_time: u64) {
    std::thread::spawn(move || {
        if let Ok(fd) = crate::process::pidfd_open(pid) {
            // The pidfd pins the process: check that it is still the one recorded.
            if crate::process::proc_info(pid).is_ok_and(|i| i.start_time == start_time && !i.zombie)
            {
                use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
                use std::os::fd::AsFd;
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                while matches!(
                    poll(&mut fds, PollTimeout::NONE),
                    Err(nix::errno::Errno::EINTR)
                ) {}
            }
        }
        let _ = tx.send(Wake::Exited);
    });
}

fn follow<W: Write>(
    store: &StateStore,
    mut state: Option<State>,
    names: Option<BTreeSet<String>>,
    mut tail_set: crate::tail::LogTail,
    journal_end: u64,
    p: &mut Printer<W>,
    opts: &Options,
) -> Result<ExitCode> {
    use notify::Watcher;
    let (tx, rx) = std::sync::mpsc::channel();
    let logs_dir = store.dir.join("logs");
    let fs_tx = tx.clone();
    let logs_for_watch = logs_dir.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        let logs = ev.paths.iter().all(|p| p.starts_with(&logs_for_watch));
        let _ = fs_tx.send(if logs { Wake::Logs } else { Wake::State });
    })
    .context("cannot watch the log directory")?;
    watcher
        .watch(&store.dir, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", store.dir.display()))?;
    let mut logs_watched = watcher
        .watch(&logs_dir, notify::RecursiveMode::NonRecursive)
        .is_ok();
    // The events file, from where the lines shown above ended (not its end now: an event
    // written in between would be lost).
    let mut journal = crate::tail::LogTail::default();
    journal.follow("", &events::path(&store.dir), journal_end);

    let mut watched: BTreeSet<(i32, u64)> = BTreeSet::new();
    let mut recheck = true;
    loop {
        if recheck {
            // After the watches are set: a change from now on wakes the loop again.
            if let Ok(s) = store.read() {
                state = s;
            }
            if !logs_watched {
                logs_watched = watcher
                    .watch(&logs_dir, notify::RecursiveMode::NonRecursive)
                    .is_ok();
            }
            if let Some(s) = &state {
                // Services that appeared since (a supervisor started them): from where this
                // run of theirs began.
                for (n, r) in &s.services {
                    if names.as_ref().is_none_or(|s| s.contains(n)) {
                        tail_set.follow(n, &r.log_path, r.log_offset);
                    }
                }
                p.width = p
                    .width
                    .max(tail_set.names().map(String::len).max().unwrap_or(0));
            }
            let mut alive = writers(state.as_ref(), names.as_ref());
            // A process seen before stays a writer while it lives, recorded or not (a
            // supervisor that is shutting down leaves the state before its last events).
            alive.extend(watched.iter().copied().filter(|(pid, start)| {
                crate::process::proc_info(*pid).is_ok_and(|i| i.start_time == *start && !i.zombie)
            }));
            for w in &alive {
                if watched.insert(*w) {
                    watch_exit(tx.clone(), w.0, w.1);
                }
            }
            if alive.is_empty() {
                // What the last of them wrote before it ended.
                print_new(&mut tail_set, &mut journal, names.as_ref(), p, opts)?;
                return Ok(ExitCode::SUCCESS);
            }
        }
        print_new(&mut tail_set, &mut journal, names.as_ref(), p, opts)?;
        // Wait for the next change; fold whatever else arrived meanwhile into one wake.
        let Ok(first) = rx.recv() else {
            return Ok(ExitCode::SUCCESS);
        };
        recheck = !matches!(first, Wake::Logs);
        while let Ok(w) = rx.try_recv() {
            recheck |= !matches!(w, Wake::Logs);
        }
    }
}

fn print_new<W: Write>(
    tail_set: &mut crate::tail::LogTail,
    journal: &mut crate::tail::LogTail,
    names: Option<&BTreeSet<String>>,
    p: &mut Printer<W>,
    opts: &Options,
) -> Result<()> {
    let mut new_events = Vec::new();
    journal.read_new(&mut |_, line| {
        if let Some(e) = events::parse_line(&String::from_utf8_lossy(line)) {
            new_events.push(e);
        }
        Ok(())
    })?;
    // Each event after the lines its service wrote before it (its recorded position).
    for e in new_events.iter().filter(|e| {
        (e.project_wide() || names.is_none_or(|n| n.contains(&e.service)))
            && opts.since.is_none_or(|s| e.at >= s)
    }) {
        if let Some((inode, offset)) = e.pos {
            tail_set.read_upto(&e.service, inode, offset, &mut |name, line| {
                let at = p.live();
                p.line(name, line, at)
            })?;
        }
        p.width = p.width.max(e.service.len());
        p.event(e)?;
    }
    tail_set.read_new(&mut |name, line| {
        let at = p.live();
        p.line(name, line, at)
    })?;
    p.out.flush()?;
    Ok(())
}
