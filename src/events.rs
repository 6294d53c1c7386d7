//! The project's lifecycle journal, `<state-dir>/<project>/events.log`: what the supervisor
//! (and a one-shot command that changes services) reported, one line per event, so that
//! `logs` can show it among the services' own lines (`api  ▸ started (pid 12): …`).
//!
//! A line is `<RFC 3339 time>\t<service>\t<inode>:<offset>\t<what>`: the position is where the
//! service's log file stood when the event happened (`-` when it had none), which places the
//! event among that service's lines, whose own write times are unknown. `what` is escaped
//! (`\n`, `\t`, `\\`) to stay on one line. The file is opened like the other state files
//! (never through a symlink, `crate::fsutil`) and, past [`CAP_BYTES`], renamed to
//! `events.log.1` (one generation kept). Recording is best effort: a journal that cannot be
//! written never stops a service from being started or stopped.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::engine::Reporter;
use crate::fsutil::{Access, SafeDir};

pub const FILE: &str = "events.log";
pub const ROTATED: &str = "events.log.1";
/// Past this size the journal is rotated: two generations bound it to twice this.
pub const CAP_BYTES: u64 = 512 * 1024;
/// The service name of events about the whole project (reload failed, the file is valid again).
pub const PROJECT: &str = "mirrord-up";
/// Separates the service name from a lifecycle line, where `|` separates it from a log line.
pub const MARKER: &str = "▸";

/// Whether an event says a process started (its position is where the run's output begins).
fn is_start(what: &str) -> bool {
    what.starts_with("started")
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: SystemTime,
    pub service: String,
    /// `(inode, offset)` of the service's log file when it happened.
    pub pos: Option<(u64, u64)>,
    pub what: String,
}

impl Event {
    /// About the project rather than one service (shown whatever services are selected).
    pub fn project_wide(&self) -> bool {
        self.service == PROJECT || self.service == "supervisor"
    }
}

/// Where a project's events are appended.
#[derive(Debug)]
pub struct Journal {
    store: crate::state::StateStore,
    /// `events.log` as opened by the last event, with its device and inode: the next event
    /// writes there while the path still names that file (one `lstat`, instead of walking the
    /// state directory from `/` and opening the file again for each of a pass's events).
    held: Option<(std::fs::File, u64, u64)>,
}

/// A copy opens the file itself.
impl Clone for Journal {
    fn clone(&self) -> Journal {
        Journal::new(self.store.clone())
    }
}

impl Journal {
    pub fn new(store: crate::state::StateStore) -> Journal {
        Journal { store, held: None }
    }

    fn log_pos(&self, service: &str) -> Option<(u64, u64)> {
        std::fs::symlink_metadata(self.store.log_path(service))
            .ok()
            .filter(|m| m.file_type().is_file())
            .map(|m| (m.ino(), m.len()))
    }

    /// Appends one event (best effort: errors are ignored).
    pub fn record(&mut self, service: &str, what: &str) {
        let line = self.line(service, what);
        let _ = self.append(&line);
        // Hook (session, issue 13): the supervisor's live event stream.
        crate::event_hub::publish(service, what);
    }

    /// Appends several events `(service, what)` in one write (a shutdown's stops as they end).
    pub fn record_all(&mut self, batch: &[(String, String)]) {
        if batch.is_empty() {
            return;
        }
        let started: Vec<&str> = batch
            .iter()
            .filter(|(_, w)| is_start(w))
            .map(|(s, _)| s.as_str())
            .collect();
        let offsets = self.store.log_offsets(&started);
        let text: String = batch
            .iter()
            .map(|(s, w)| self.line_with(s, w, || offsets.get(s).copied()))
            .collect();
        let _ = self.append(&text);
        for (service, what) in batch {
            crate::event_hub::publish(service, what);
        }
    }

    /// The journal line of one event, now.
    fn line(&self, service: &str, what: &str) -> String {
        self.line_with(service, what, || self.store.log_offset(service))
    }

    /// [`Self::line`], the recorded log offset of a `started` event from `offset`.
    fn line_with(&self, service: &str, what: &str, offset: impl FnOnce() -> Option<u64>) -> String {
        let mut pos = self.log_pos(service);
        // `started` goes where this run's output begins (recorded before the spawn), not
        // after what the session wrote while it was starting.
        if is_start(what)
            && let Some((inode, _)) = pos
            && let Some(offset) = offset()
        {
            // perf5: the one offset, not the whole state parsed (O(N²) over a cold `up`).
            pos = Some((inode, offset));
        }
        format_line(&Event {
            at: SystemTime::now(),
            service: service.to_owned(),
            pos,
            what: what.to_owned(),
        })
    }

    /// Appends whole lines in one write.
    fn append(&mut self, line: &str) -> std::io::Result<()> {
        let path = self.store.dir.join(FILE);
        let mut now = std::fs::symlink_metadata(&path).ok();
        if let Some(m) = &now
            && m.len() + line.len() as u64 > CAP_BYTES
        {
            std::fs::rename(&path, self.store.dir.join(ROTATED))?;
            now = None;
        }
        // The held file only while the path names it (not rotated or replaced meanwhile, by
        // us or by another writer); otherwise opened again as every state file is.
        let same = |(_, dev, ino): &(std::fs::File, u64, u64)| {
            now.as_ref()
                .is_some_and(|m| m.file_type().is_file() && m.dev() == *dev && m.ino() == *ino)
        };
        let f = match self.held.take().filter(same) {
            Some(held) => self.held.insert(held),
            None => {
                let f = SafeDir::open(&self.store.dir, false)?.open_file(FILE, Access::Append)?;
                let m = f.metadata()?;
                self.held.insert((f, m.dev(), m.ino()))
            }
        };
        // One write: concurrent writers (the supervisor, a one-shot command) never interleave.
        (&f.0).write_all(line.as_bytes())
    }
}

/// Every recorded event, oldest first (the rotated generation, then the current one).
/// Every event recorded (the rotated file's, then the current one's), and where the current
/// file's last complete line ends: a follower goes on from there, so that an event written
/// after this read and before it starts following is not lost.
pub fn read_all(dir: &Path) -> (Vec<Event>, u64) {
    let Ok(safe) = SafeDir::open(dir, false) else {
        return (Vec::new(), 0);
    };
    let mut out = Vec::new();
    let mut end = 0;
    for name in [ROTATED, FILE] {
        let mut text = Vec::new();
        if let Ok(mut f) = safe.open_file(name, Access::Read) {
            let _ = f.read_to_end(&mut text);
        }
        if name == FILE {
            end = text
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i as u64 + 1);
        }
        out.extend(
            text.split(|b| *b == b'\n')
                .filter_map(|l| parse_line(&String::from_utf8_lossy(l))),
        );
    }
    (out, end)
}

/// The journal's path in a project's state directory.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

pub fn format_line(e: &Event) -> String {
    let pos = e
        .pos
        .map_or_else(|| "-".to_owned(), |(i, o)| format!("{i}:{o}"));
    format!(
        "{}\t{}\t{pos}\t{}\n",
        humantime::format_rfc3339_millis(e.at),
        escape(&e.service),
        escape(&e.what)
    )
}

/// A journal line (without its newline); `None` for a line that is not one (a torn write, a
/// hand edit): it is skipped, never fatal.
pub fn parse_line(line: &str) -> Option<Event> {
    let mut parts = line.splitn(4, '\t');
    let at = humantime::parse_rfc3339_weak(parts.next()?).ok()?;
    let service = unescape(parts.next()?);
    let pos = match parts.next()? {
        "-" => None,
        p => {
            let (i, o) = p.split_once(':')?;
            Some((i.parse().ok()?, o.parse().ok()?))
        }
    };
    let what = unescape(parts.next()?);
    (!service.is_empty()).then_some(Event {
        at,
        service,
        pos,
        what,
    })
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

/// A reporter that also records every event in the journal (one-shot commands that run the
/// engine themselves; the supervisor records in its own reporter).
pub struct Recording {
    pub inner: Box<dyn Reporter>,
    pub journal: Option<Journal>,
}

impl Reporter for Recording {
    fn event(&mut self, service: &str, what: &str) {
        if let Some(j) = &mut self.journal {
            j.record(service, what);
        }
        self.inner.event(service, what);
    }

    fn events(&mut self, batch: &[(String, String)]) {
        if let Some(j) = &mut self.journal {
            j.record_all(batch);
        }
        self.inner.events(batch);
    }

    fn waiting(&mut self, service: &str, what: &str, limit: Option<std::time::Duration>) {
        self.inner.waiting(service, what, limit);
    }
}

/// `inner`, also recording into the journal of the project whose state `store` is (none: only
/// `inner`).
pub fn recording(
    store: Option<crate::state::StateStore>,
    inner: Box<dyn Reporter>,
) -> Box<dyn Reporter> {
    Box::new(Recording {
        inner,
        journal: store.map(Journal::new),
    })
}

/// Dim (SGR 2) on a terminal, plain otherwise.
pub fn dim(text: &str, color: bool) -> String {
    if color {
        format!("\x1b[2m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// `logs --since`: a duration back from now (`10m`, `1h30m`) or an RFC 3339 time.
pub fn parse_since(s: &str) -> Result<SystemTime, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return SystemTime::now()
            .checked_sub(d)
            .ok_or_else(|| format!("`{s}` reaches back before 1970"));
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| {
        format!("`{s}` is neither a duration (`10m`, `1h`) nor an RFC 3339 time (`2026-01-02T15:04:05Z`)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_all_says_where_the_last_complete_line_ends() {
        let dir = tempfile::tempdir().unwrap();
        let e = |what: &str| Event {
            at: humantime::parse_rfc3339("2026-01-02T03:04:05.678Z").unwrap(),
            service: "api".into(),
            pos: None,
            what: what.into(),
        };
        let complete = format!(
            "{}{}",
            format_line(&e("started")),
            format_line(&e("stopped"))
        );
        std::fs::write(dir.path().join(FILE), format!("{complete}2026-01-02T03:04")).unwrap();
        let (events, end) = read_all(dir.path());
        assert_eq!(events.len(), 2);
        // A follower goes on from here: the line being written is read once it is complete.
        assert_eq!(end, complete.len() as u64);
        assert_eq!(read_all(&dir.path().join("none")), (Vec::new(), 0));
    }

    /// The journal holds `events.log` open between events, but writes where the path points:
    /// after another writer rotated it, into the new file; never through a symbolic link that
    /// replaced it.
    #[test]
    fn a_held_journal_follows_rotation_and_refuses_a_planted_link() {
        let root = tempfile::tempdir().unwrap();
        let store = crate::state::StateStore::open(root.path(), "p").unwrap();
        let (file, rotated) = (store.dir.join(FILE), store.dir.join(ROTATED));
        let mut j = Journal::new(store.clone());
        j.record("a", "one");
        j.record("a", "two");
        std::fs::rename(&file, &rotated).unwrap();
        j.record("a", "three");
        let text = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        assert!(text(&rotated).contains("\tone\n") && text(&rotated).contains("\ttwo\n"));
        assert!(!text(&rotated).contains("three"), "{}", text(&rotated));
        assert!(text(&file).contains("\tthree\n"), "{}", text(&file));
        let outside = root.path().join("outside");
        std::fs::write(&outside, "").unwrap();
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(&outside, &file).unwrap();
        j.record("a", "four");
        assert_eq!(text(&outside), "");
        assert!(!text(&rotated).contains("four"));
        std::fs::remove_file(&file).unwrap();
        j.record("a", "five");
        assert!(text(&file).ends_with("\tfive\n"), "{}", text(&file));
    }

    /// A batch of `started` events (a cold `up` reports its level at once) puts each where
    /// its run's output begins (the recorded log offset), from the state this process saved:
    /// its files looked at once for the batch, not once per event.
    #[test]
    fn a_batch_of_starts_looks_at_the_state_once() {
        use crate::spec::{LauncherKind, ServiceSpec};
        let root = tempfile::tempdir().unwrap();
        let store = crate::state::StateStore::open(root.path(), "p").unwrap();
        let lock = store.lock(std::time::Duration::from_secs(5)).unwrap();
        let mut state = crate::state::State::new("p");
        let names = ["a", "b", "c"];
        for (i, name) in names.into_iter().enumerate() {
            let spec = ServiceSpec::plain(name, LauncherKind::Local, vec!["x".into()], "/");
            let log = store.log_path(name);
            std::fs::create_dir_all(log.parent().unwrap()).unwrap();
            std::fs::write(&log, "earlier run\n").unwrap();
            let mut rec = crate::engine::new_record(&spec.into(), log);
            rec.log_offset = 3 + i as u64;
            state.services.insert(name.into(), rec.into());
        }
        store.save(&lock, &state).unwrap();
        let batch = names.map(|n| (n.to_owned(), "started (pid 9): new service".to_owned()));
        let looks = crate::state::looks_on_this_thread();
        Journal::new(store.clone()).record_all(&batch);
        assert_eq!(crate::state::looks_on_this_thread() - looks, 1);
        let (events, _) = read_all(&store.dir);
        let at: Vec<Option<u64>> = events.iter().map(|e| e.pos.map(|p| p.1)).collect();
        assert_eq!(at, [Some(3), Some(4), Some(5)]);
    }

    #[test]
    fn a_line_round_trips_with_newlines_tabs_and_backslashes() {
        let e = Event {
            at: humantime::parse_rfc3339("2026-01-02T03:04:05.678Z").unwrap(),
            service: "api".into(),
            pos: Some((12, 345)),
            what: "reload failed:\nmirrord-up.yaml:3:1\tbad \\ key".into(),
        };
        let line = format_line(&e);
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert_eq!(parse_line(line.trim_end_matches('\n')), Some(e));
    }

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let t = parse_since("10m").unwrap();
        let ago = SystemTime::now().duration_since(t).unwrap().as_secs();
        assert!((599..=601).contains(&ago), "{ago}");
        assert_eq!(
            parse_since("2026-01-02T03:04:05Z").unwrap(),
            humantime::parse_rfc3339("2026-01-02T03:04:05Z").unwrap()
        );
        let e = parse_since("soon").unwrap_err();
        assert!(e.contains("neither a duration"), "{e}");
    }

    #[test]
    fn junk_lines_are_skipped() {
        for l in [
            "",
            "nonsense",
            "2026-01-02T03:04:05Z\tapi",
            "x\tapi\t-\twhat",
        ] {
            assert_eq!(parse_line(l), None, "{l}");
        }
        assert!(parse_line("2026-01-02T03:04:05Z\tapi\t-\tstarted").is_some());
    }
}
