//! Source watch (issue #16): the supervisor's side of `watch:`.
//!
//! The supervisor watches each watched service's files itself — outside the mirrord session,
//! so none of this goes through mirrord's file hooks — filters the events (the `paths` globs,
//! the `ignore` globs, the `.gitignore` of the YAML's directory, `.git/` and the state
//! directory), waits until the files have been quiet for `debounce`, and then:
//! * `action: restart`: sends SIGUSR1 to the service's in-session runner (`runner`), which
//!   restarts the app and keeps the session; the dependents with `depends_on.<x>.restart: true`
//!   are restarted through the supervisor's normal path;
//! * `action: restart-session`: asks the supervisor for a normal restart of the service (a new
//!   `mirrord exec`, a new session), which restarts those dependents too.
//!
//! Each restart by watch is counted, with its cause, in `services/<name>/watch.json` of the
//! state directory (read by `ps`), and told in the events file.
//!
//! One thread does it all, woken by notify's events or by the earliest debounce deadline
//! (`recv_timeout`); it holds no lock and never touches the state file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{WatchAction, WatchConfig};
use crate::process::ProcessIdentity;
use crate::spec::ServiceSpec;
use crate::state::StateStore;

/// `watch:` resolved for one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchSpec {
    /// The YAML's directory: globs are relative to it.
    pub base: PathBuf,
    pub paths: Vec<String>,
    #[serde(default)]
    pub ignore: Vec<String>,
    pub debounce_ms: u64,
    pub action: WatchAction,
}

impl WatchSpec {
    pub fn new(base: &Path, cfg: &WatchConfig) -> WatchSpec {
        WatchSpec {
            base: base.to_path_buf(),
            paths: cfg.paths.iter().map(|g| g.0.clone()).collect(),
            ignore: cfg.ignore.iter().map(|g| g.0.clone()).collect(),
            debounce_ms: cfg.debounce().as_millis() as u64,
            action: cfg.action,
        }
    }

    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.debounce_ms)
    }
}

/// Whether the service's app runs under the in-session runner.
pub fn uses_runner(spec: &ServiceSpec) -> bool {
    spec.watch
        .as_ref()
        .is_some_and(|w| w.action == WatchAction::Restart)
        && spec.run_type == crate::config::RunType::Exec
}

/// The hashed part of the runner (its command line): whether there is one, and the stop
/// signal and grace it was given. `None` without a runner, so other hashes do not change.
pub fn runner_canonical(spec: &ServiceSpec) -> Option<Value> {
    uses_runner(spec).then(|| {
        json!({
            "stop_signal": spec.stop_signal,
            "stop_timeout_ms": spec.stop_timeout_ms,
        })
    })
}

/// The command to launch for `spec`: its own, or our runner in front of it.
pub fn launch_command(spec: &ServiceSpec) -> Result<Vec<String>, String> {
    if !uses_runner(spec) {
        return Ok(spec.command.clone());
    }
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find our own binary for the watch runner: {e}"))?;
    let args = crate::runner::Args {
        stop_signal: crate::config::parse_signal(&spec.stop_signal)
            .unwrap_or(nix::sys::signal::Signal::SIGTERM),
        grace: spec.stop_timeout(),
        command: spec.command.iter().map(Into::into).collect(),
    };
    let mut out = vec![
        exe.display().to_string(),
        crate::runner::SUBCOMMAND.to_owned(),
    ];
    out.extend(args.to_args());
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Matching

/// Which paths of one service count.
pub struct Matcher {
    base: PathBuf,
    include: GlobSet,
    ignore: GlobSet,
    gitignore: ignore::gitignore::Gitignore,
    state_dir: Option<PathBuf>,
}

fn glob_set(globs: &[String]) -> GlobSet {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        // Checked when the file was read.
        if let Ok(g) = Glob::new(g) {
            b.add(g);
        }
    }
    b.build().unwrap_or_else(|_| GlobSet::empty())
}

impl Matcher {
    pub fn new(spec: &WatchSpec, state_dir: Option<&Path>) -> Matcher {
        let mut ignore = spec.ignore.clone();
        ignore.extend([".git".to_owned(), ".git/**".to_owned()]);
        // Events name paths under the directories watched, which are under the real base.
        let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let base = real(&spec.base);
        let (gitignore, _) = ignore::gitignore::Gitignore::new(base.join(".gitignore"));
        Matcher {
            base,
            include: glob_set(&spec.paths),
            ignore: glob_set(&ignore),
            gitignore,
            // The whole state root (`--state-dir`): every project's state and logs.
            state_dir: state_dir.map(|d| real(d.parent().unwrap_or(d))),
        }
    }

    /// The path relative to the base if a change of `path` counts.
    pub fn relevant<'p>(&self, path: &'p Path) -> Option<&'p Path> {
        if let Some(s) = &self.state_dir
            && path.starts_with(s)
        {
            return None;
        }
        let rel = path.strip_prefix(&self.base).ok()?;
        if rel.as_os_str().is_empty() || self.ignore.is_match(rel) {
            return None;
        }
        if self
            .gitignore
            .matched_path_or_any_parents(path, false)
            .is_ignore()
        {
            return None;
        }
        self.include.is_match(rel).then_some(rel)
    }

    /// What a change of `path` names (relative), if it counts. A directory never counts by
    /// itself, but a new one's files do: they may have been written before its watch began.
    pub fn changed(&self, path: &Path, created: bool) -> Option<String> {
        if path.is_dir() {
            if !created || self.relevant_dir(path).is_none() {
                return None;
            }
            let mut budget = 10_000usize;
            return self.first_file_in(path, &mut budget, None);
        }
        self.relevant(path).map(|r| r.display().to_string())
    }

    /// A directory that is not itself ignored.
    fn relevant_dir<'p>(&self, path: &'p Path) -> Option<&'p Path> {
        if let Some(s) = &self.state_dir
            && path.starts_with(s)
        {
            return None;
        }
        let rel = path.strip_prefix(&self.base).ok()?;
        let ignored = self.ignore.is_match(rel)
            || self
                .gitignore
                .matched_path_or_any_parents(path, true)
                .is_ignore();
        (!ignored).then_some(rel)
    }

    /// The first file under `dir` that counts (and, with `newer`, was modified since then).
    fn first_file_in(
        &self,
        dir: &Path,
        budget: &mut usize,
        newer: Option<std::time::SystemTime>,
    ) -> Option<String> {
        let entries = std::fs::read_dir(dir).ok()?;
        for e in entries.flatten() {
            if *budget == 0 {
                return None;
            }
            *budget -= 1;
            let path = e.path();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            let found = if is_dir {
                self.relevant_dir(&path)
                    .and_then(|_| self.first_file_in(&path, budget, newer))
            } else if newer
                .is_some_and(|t| e.metadata().and_then(|m| m.modified()).is_ok_and(|m| m < t))
            {
                None
            } else {
                self.relevant(&path).map(|r| r.display().to_string())
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// A file that counts and was modified at or after `since` (unix ms), if any: a save
    /// made after the service started but before its watch began.
    pub fn changed_since(&self, spec: &WatchSpec, since_ms: u64) -> Option<String> {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(since_ms);
        let mut budget = 10_000usize;
        self.roots(spec)
            .iter()
            .find_map(|(dir, _)| self.first_file_in(dir, &mut budget, Some(t)))
    }

    /// The directories to watch: the literal prefix of each glob (recursive when the rest
    /// spans directories), or the base when that prefix does not exist.
    fn roots(&self, spec: &WatchSpec) -> Vec<(PathBuf, bool)> {
        let mut out: Vec<(PathBuf, bool)> = Vec::new();
        for g in &spec.paths {
            let parts: Vec<&str> = g.split('/').collect();
            let literal = parts
                .iter()
                .take(parts.len().saturating_sub(1))
                .take_while(|p| !p.contains(['*', '?', '[', '{']))
                .count();
            let mut dir = self.base.clone();
            for p in &parts[..literal] {
                dir.push(p);
            }
            let recursive = parts.len() - literal > 1 || g.contains("**");
            let (dir, recursive) = if dir.is_dir() {
                (dir, recursive)
            } else {
                (self.base.clone(), true)
            };
            match out.iter_mut().find(|(d, _)| *d == dir) {
                Some(entry) => entry.1 |= recursive,
                None => out.push((dir, recursive)),
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Restart records (read by `ps`)

/// `services/<name>/watch.json`: the restarts by watch of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRecord {
    pub restarts: u32,
    /// `source changed: src/main.go`.
    pub last_cause: Option<String>,
    pub last_at_ms: Option<u64>,
}

pub fn record_path(store: &StateStore, service: &str) -> PathBuf {
    store.service_dir(service).join("watch.json")
}

pub fn read_record(store: &StateStore, service: &str) -> Option<WatchRecord> {
    let text = std::fs::read_to_string(record_path(store, service)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_record(store: &StateStore, service: &str, rec: &WatchRecord) {
    let path = record_path(store, service);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = atomic_write_file::AtomicWriteFile::open(&path) {
        use std::io::Write;
        let text = serde_json::to_string(rec).unwrap_or_default();
        if f.write_all(text.as_bytes()).is_ok() {
            let _ = f.commit();
        }
    }
}

/// What `ps` says of a service's restarts by watch (`3 by watch, last: source changed: a.go`).
pub fn ps_note(store: &StateStore, service: &str) -> Option<String> {
    let r = read_record(store, service)?;
    (r.restarts > 0).then(|| match &r.last_cause {
        Some(c) => format!("{} by watch, last: {c}", r.restarts),
        None => format!("{} by watch", r.restarts),
    })
}

/// `ps`: adds `watch_restarts` and `watch_last_cause` (and `watch_last_at_ms`) to the rows of
/// services that were restarted by watch.
pub fn annotate_ps_rows(store: Option<&StateStore>, rows: &mut [Value]) {
    let Some(store) = store else { return };
    for r in rows {
        let Some(name) = r["name"].as_str().map(str::to_owned) else {
            continue;
        };
        if let Some(rec) = read_record(store, &name)
            && let Some(obj) = r.as_object_mut()
        {
            obj.insert("watch_restarts".into(), json!(rec.restarts));
            obj.insert("watch_last_cause".into(), json!(rec.last_cause));
            obj.insert("watch_last_at_ms".into(), json!(rec.last_at_ms));
        }
    }
}

/// `ps`'s RESTARTS cell: the policy restarts, plus those by watch (`2 +5 watch`).
pub fn restarts_cell(row: &Value, policy: String) -> String {
    match row["watch_restarts"].as_u64() {
        Some(n) if n > 0 => format!("{policy} +{n} watch"),
        _ => policy,
    }
}

/// `ps --wide`'s LAST REASON: the last restart by watch when it is the latest news.
pub fn reason_cell(row: &Value, reason: String) -> String {
    let started = row["started_at"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    match (
        row["watch_last_cause"].as_str(),
        row["watch_last_at_ms"].as_u64(),
    ) {
        (Some(cause), Some(at)) if at >= started => crate::config::escape(cause).into_owned(),
        _ => reason,
    }
}

// ---------------------------------------------------------------------------------------------
// The watcher

/// One watched service, as a pass resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub name: String,
    pub spec: WatchSpec,
    /// Services with `depends_on.<name>.restart: true`.
    pub dependents: Vec<String>,
    /// When the pass that resolved it began (unix ms): changes since then count even if they
    /// came before the watch was installed (a save right after `up -d` returns).
    pub since_ms: u64,
}

/// The watched services of a desired state.
pub fn watched(services: &[std::sync::Arc<ServiceSpec>]) -> Vec<Watched> {
    services
        .iter()
        .filter_map(|s| {
            let spec = s.watch.clone()?;
            let dependents = services
                .iter()
                .filter(|d| d.depends_on.0.get(&s.name).is_some_and(|dep| dep.restart))
                .map(|d| d.name.clone())
                .collect();
            Some(Watched {
                name: s.name.clone(),
                spec,
                dependents,
                since_ms: crate::state::now_ms(),
            })
        })
        .collect()
}

/// Asks the supervisor for a normal restart of these services.
pub type RestartRequest = Box<dyn Fn(Vec<String>) + Send>;

enum Msg {
    Fs(String, notify::Event),
    Update(Vec<Watched>, Vec<(String, ProcessIdentity)>),
}

/// The supervisor's handle: the watch thread ends when this is dropped.
pub struct SourceWatch {
    tx: Sender<Msg>,
    last: Option<Vec<Watched>>,
    /// The last update watched nothing.
    idle: bool,
}

impl SourceWatch {
    /// Starts the watch thread. `restart` asks the supervisor for a normal restart.
    pub fn start(store: Option<StateStore>, restart: RestartRequest) -> SourceWatch {
        let (tx, rx) = channel();
        let fs_tx = tx.clone();
        std::thread::Builder::new()
            .name("source-watch".into())
            .spawn(move || watch_thread(rx, fs_tx, store, restart))
            .ok();
        SourceWatch {
            tx,
            last: None,
            idle: false,
        }
    }

    /// After each pass: the watched services and the running processes.
    pub fn update(&mut self, watched: Option<Vec<Watched>>, running: &[(String, ProcessIdentity)]) {
        if let Some(w) = watched {
            self.last = Some(w);
        }
        let w = self.last.clone().unwrap_or_default();
        // No service is watched, nor was at the last update: the thread has nothing to do
        // with what runs (the usual file: no `watch:`; not a copy of every process per pass).
        let idle = w.is_empty();
        if idle && self.idle {
            return;
        }
        self.idle = idle;
        let _ = self.tx.send(Msg::Update(w, running.to_vec()));
    }
}

struct Service {
    watched: Watched,
    matcher: Matcher,
    watcher: Option<notify::RecommendedWatcher>,
    /// Pending restart: when it is due, and the first path that changed.
    due: Option<(Instant, String)>,
}

impl Service {
    /// Before a new directory is searched for the files already in it: waits until the
    /// watcher's event loop has finished the batch that reported the directory, since only
    /// then does it watch the directory too (notify's inotify backend reports a batch's events
    /// first and adds the watches of the new directories they name after). A file written in
    /// between would be neither reported nor, by a search made earlier, found: a `mkdir -p
    /// src && echo > src/a.go` could restart nothing. The round trip is `configure`, which the
    /// loop answers in order with its other work and which changes nothing on Linux.
    fn settle_new_directories(&mut self, ev: &notify::Event) {
        use notify::Watcher;
        if let Some(w) = &mut self.watcher
            && ev.paths.iter().any(|p| p.is_dir())
        {
            let _ = w.configure(notify::Config::default());
        }
    }
}

fn watch_thread(
    rx: Receiver<Msg>,
    tx: Sender<Msg>,
    store: Option<StateStore>,
    restart: RestartRequest,
) {
    let state_dir = store.as_ref().map(|s| s.dir.clone());
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    let mut running: BTreeMap<String, ProcessIdentity> = BTreeMap::new();
    loop {
        let next_due = services
            .values()
            .filter_map(|s| s.due.as_ref().map(|d| d.0))
            .min();
        let msg = match next_due {
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            },
        };
        match msg {
            Some(Msg::Fs(name, ev)) => {
                if matches!(ev.kind, notify::EventKind::Access(_)) {
                    continue;
                }
                let Some(s) = services.get_mut(&name) else {
                    continue;
                };
                let created = matches!(ev.kind, notify::EventKind::Create(_));
                if created {
                    s.settle_new_directories(&ev);
                }
                let hit = ev.paths.iter().find_map(|p| s.matcher.changed(p, created));
                tracing::debug!(service = %name, ?ev, ?hit, "watch: file event");
                if let Some(rel) = hit {
                    let at = Instant::now() + s.watched.spec.debounce();
                    // Trailing edge: each change pushes the restart back; the first path names it.
                    let first = s.due.take().map_or(rel, |(_, p)| p);
                    s.due = Some((at, first));
                }
            }
            Some(Msg::Update(list, run)) => {
                tracing::debug!(?list, running = run.len(), "watch: update");
                running = run.into_iter().collect();
                services.retain(|n, s| {
                    list.iter()
                        .any(|w| w.name == *n && w.spec == s.watched.spec)
                });
                for w in list {
                    match services.get_mut(&w.name) {
                        Some(s) => s.watched = w,
                        None => {
                            let mut svc = start_service(w, state_dir.as_deref(), &tx);
                            let w = &svc.watched;
                            if running.contains_key(&w.name)
                                && let Some(path) = svc.matcher.changed_since(&w.spec, w.since_ms)
                            {
                                let at = Instant::now() + w.spec.debounce();
                                svc.due = Some((at, path));
                            }
                            services.insert(svc.watched.name.clone(), svc);
                        }
                    }
                }
            }
            None => {}
        }
        let now = Instant::now();
        for s in services.values_mut() {
            if s.due.as_ref().is_some_and(|d| d.0 <= now) {
                let (_, path) = s.due.take().expect("checked");
                fire(
                    &s.watched,
                    &path,
                    running.get(&s.watched.name),
                    store.as_ref(),
                    &restart,
                );
            }
        }
    }
}

fn start_service(w: Watched, state_dir: Option<&Path>, tx: &Sender<Msg>) -> Service {
    let name = w.name.clone();
    let tx = tx.clone();
    start_service_with(w, state_dir, move |ev| {
        let _ = tx.send(Msg::Fs(name.clone(), ev));
    })
}

/// `start_service` with what is done with each event (in the watcher's event loop).
fn start_service_with(
    w: Watched,
    state_dir: Option<&Path>,
    forward: impl Fn(notify::Event) + Send + 'static,
) -> Service {
    use notify::Watcher;
    let matcher = Matcher::new(&w.spec, state_dir);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            forward(ev);
        }
    });
    let watcher = match watcher {
        Ok(mut watcher) => {
            for (dir, recursive) in matcher.roots(&w.spec) {
                let mode = if recursive {
                    notify::RecursiveMode::Recursive
                } else {
                    notify::RecursiveMode::NonRecursive
                };
                if let Err(e) = watcher.watch(&dir, mode) {
                    crate::supervisor::line_to_stderr(&format!(
                        "warning: {}: cannot watch {}: {e}",
                        w.name,
                        dir.display()
                    ));
                }
            }
            Some(watcher)
        }
        Err(e) => {
            crate::supervisor::line_to_stderr(&format!(
                "warning: {}: cannot watch its files: {e}",
                w.name
            ));
            None
        }
    };
    Service {
        watched: w,
        matcher,
        watcher,
        due: None,
    }
}

/// One restart by watch.
fn fire(
    w: &Watched,
    path: &str,
    identity: Option<&ProcessIdentity>,
    store: Option<&StateStore>,
    restart: &RestartRequest,
) {
    tracing::debug!(service = %w.name, path, ?identity, "watch: restart due");
    let Some(identity) = identity else {
        return; // not running: nothing to restart
    };
    let cause = format!("source changed: {path}");
    let mut journal = store.cloned().map(crate::events::Journal::new);
    let mut tell = |what: &str| {
        if let Some(j) = &mut journal {
            j.record(&w.name, what);
        }
    };
    let done = match w.spec.action {
        WatchAction::Restart => match signal_runner(identity) {
            Ok(pid) => {
                tell(&format!(
                    "restarting the app in its session (runner pid {pid}): {cause}"
                ));
                if !w.dependents.is_empty() {
                    restart(w.dependents.clone());
                }
                true
            }
            Err(why) => {
                tell(&format!("cannot restart the app by watch ({why}): {cause}"));
                false
            }
        },
        WatchAction::RestartSession => {
            tell(&format!("restarting the session: {cause}"));
            restart(vec![w.name.clone()]);
            true
        }
    };
    if done && let Some(store) = store {
        let mut rec = read_record(store, &w.name).unwrap_or_default();
        rec.restarts = rec.restarts.saturating_add(1);
        rec.last_cause = Some(cause);
        rec.last_at_ms = Some(crate::state::now_ms());
        write_record(store, &w.name, &rec);
    }
}

/// Sends the restart signal to the service's runner: the recorded process itself (`mirrord
/// exec` execs into it; the `local` launcher starts it), or else a process of the same spawn
/// whose command line is the runner's.
pub fn signal_runner(identity: &ProcessIdentity) -> Result<i32, String> {
    let is_runner = |pid: i32| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            c.split(|b| *b == 0).nth(1) == Some(crate::runner::SUBCOMMAND.as_bytes())
        })
    };
    let sig = crate::runner::RESTART_SIGNAL;
    if is_runner(identity.pid) {
        if crate::process::signal_if_same(identity.pid, identity.start_time, sig) {
            return Ok(identity.pid);
        }
        return Err("the service's process has changed".into());
    }
    let Some(nonce) = identity.nonce.as_deref() else {
        return Err("no runner found".into());
    };
    for p in crate::process::scan_marked() {
        if p.instance.as_deref() == Some(nonce)
            && p.info.session == identity.pgid
            && is_runner(p.info.pid)
            && crate::process::signal_if_same(p.info.pid, p.info.start_time, sig)
        {
            return Ok(p.info.pid);
        }
    }
    Err("no runner found in the service's processes".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(paths: &[&str], ignore: &[&str], base: &Path) -> WatchSpec {
        WatchSpec {
            base: base.to_path_buf(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            ignore: ignore.iter().map(|s| s.to_string()).collect(),
            debounce_ms: 300,
            action: WatchAction::Restart,
        }
    }

    /// A file written into a new directory before the watcher watches it, but after the
    /// directory's creation was reported, is found: the search waits for the watch. (The
    /// writer here is the watcher's own event loop, late on purpose, right after it reported
    /// the directory and before it adds the directory's watch; searching at once finds
    /// nothing and no event for the file ever comes.)
    #[test]
    fn a_file_written_before_a_new_directory_is_watched_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let (tx, rx) = channel();
        let mut svc = start_service_with(
            Watched {
                name: "api".into(),
                spec: spec(&["src/**"], &[], &base),
                dependents: Vec::new(),
                since_ms: 0,
            },
            None,
            move |ev: notify::Event| {
                let new_dir = matches!(ev.kind, notify::EventKind::Create(_))
                    .then(|| ev.paths.iter().find(|p| p.is_dir()).cloned())
                    .flatten();
                let _ = tx.send(ev);
                if let Some(d) = new_dir {
                    std::thread::sleep(Duration::from_millis(300));
                    std::fs::write(d.join("a.go"), "1").unwrap();
                }
            },
        );
        std::fs::create_dir(base.join("src")).unwrap();
        let ev = loop {
            let ev = rx.recv_timeout(Duration::from_secs(30)).expect("an event");
            if matches!(ev.kind, notify::EventKind::Create(_)) {
                break ev;
            }
        };
        assert_eq!(ev.paths, vec![base.join("src")]);
        svc.settle_new_directories(&ev);
        assert_eq!(
            svc.matcher.changed(&ev.paths[0], true).as_deref(),
            Some("src/a.go")
        );
    }

    #[test]
    fn matcher_honours_globs_ignores_gitignore_git_and_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::write(base.join(".gitignore"), "*.gen.go\nbuild/\n").unwrap();
        let state = base.join("state/project");
        let m = Matcher::new(
            &spec(&["**/*.go", "state/**"], &["vendor/**"], base),
            Some(&state),
        );
        assert_eq!(
            m.relevant(&base.join("src/main.go")),
            Some(Path::new("src/main.go"))
        );
        assert_eq!(
            m.relevant(&base.join("main.go")),
            Some(Path::new("main.go"))
        );
        assert_eq!(m.relevant(&base.join("src/main.rs")), None);
        assert_eq!(m.relevant(&base.join("vendor/x/a.go")), None, "ignore glob");
        assert_eq!(m.relevant(&base.join("api.gen.go")), None, ".gitignore");
        assert_eq!(m.relevant(&base.join("build/a.go")), None, ".gitignore dir");
        assert_eq!(m.relevant(&base.join(".git/a.go")), None, ".git");
        assert_eq!(m.relevant(&state.join("x/y.go")), None, "state dir");
        assert_eq!(m.relevant(Path::new("/elsewhere/a.go")), None);
        // A directory counts by the files it holds when it is new, never by itself.
        std::fs::create_dir_all(base.join("pkg/deep")).unwrap();
        assert_eq!(m.changed(&base.join("pkg"), true), None);
        std::fs::write(base.join("pkg/deep/x.go"), "").unwrap();
        assert_eq!(m.changed(&base.join("pkg"), false), None);
        assert_eq!(
            m.changed(&base.join("pkg"), true).as_deref(),
            Some("pkg/deep/x.go")
        );
        std::fs::create_dir_all(base.join("vendor/m")).unwrap();
        std::fs::write(base.join("vendor/m/x.go"), "").unwrap();
        assert_eq!(m.changed(&base.join("vendor"), true), None, "ignored dir");
    }

    #[test]
    fn changes_before_the_watch_began_are_found_by_their_time() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let s = spec(&["src/**/*.go"], &[], base);
        let m = Matcher::new(&s, None);
        std::fs::create_dir_all(base.join("src/a")).unwrap();
        let at = |path: &Path, ms: u64| {
            let f = std::fs::File::options().append(true).open(path).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + Duration::from_millis(ms))
                .unwrap();
        };
        for f in ["src/a/old.go", "src/a/new.txt", "src/a/new.go"] {
            std::fs::write(base.join(f), "").unwrap();
        }
        let since = 1_700_000_000_000;
        at(&base.join("src/a/old.go"), since - 1);
        at(&base.join("src/a/new.txt"), since + 1);
        at(&base.join("src/a/new.go"), since - 1);
        assert_eq!(m.changed_since(&s, since), None);
        at(&base.join("src/a/new.go"), since + 1);
        assert_eq!(m.changed_since(&s, since).as_deref(), Some("src/a/new.go"));
    }

    #[test]
    fn roots_are_literal_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::create_dir_all(base.join("src/app")).unwrap();
        let s = spec(
            &["src/app/*.py", "src/**/*.go", "main.py", "nope/*.js"],
            &[],
            base,
        );
        let m = Matcher::new(&s, None);
        let roots = m.roots(&s);
        assert!(roots.contains(&(base.join("src/app"), false)), "{roots:?}");
        assert!(roots.contains(&(base.join("src"), true)), "{roots:?}");
        // `main.py` and a missing prefix: the base, recursively (merged).
        assert!(roots.contains(&(base.to_path_buf(), true)), "{roots:?}");
        assert_eq!(roots.len(), 3, "{roots:?}");
    }
}
