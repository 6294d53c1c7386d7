//! The journal of a state (format 2): `state.journal`, beside `state.json`.
//!
//! A save that changes a few records appends one line naming them to the journal instead of
//! writing the whole state again: the cost of a save is the records it changed, not the
//! number of services. `state.json` (the snapshot) names the journal that continues it by a
//! random generation; the journal's first line names the generation it continues:
//!
//! ```text
//! {"generation":"5f0c…"}
//! {"services":{"api":{…the whole record…},"old":null}}
//! {"services":{"api":{…}},"head":{"project":"demo","file":…,"supervisor":…,…}}
//! ```
//!
//! Each later line sets the records it names (`null`: removed) and, with `head`, the state's
//! other fields; `stopping` names records whose status alone became `stopping` (a stop's
//! intent: `{"services":{},"stopping":["api","db"]}` instead of every record written whole —
//! a reader of an earlier release skips the key and sees them as they were). A reader applies
//! the lines in order to the snapshot. Only a writer holding
//! `state.lock` appends, with one `write` per line (`O_APPEND`), so a reader sees the journal
//! as a prefix of what was written: a last line without its newline is not there yet (or was
//! torn by a crash) and is skipped. A line that does not parse ends the journal (a crash of the
//! machine can leave one); the journal is then not appended to again.
//!
//! When the journal outgrows the snapshot (or cannot be appended to), the next save writes a
//! new snapshot with a new generation, then a new journal holding only its first line. Between
//! the two renames — or after a crash between them — the journal names another generation
//! than the snapshot: it is older than the snapshot, whose content already holds it, and is
//! ignored. A reader that finds the two disagreeing while the snapshot it read was replaced
//! meanwhile reads again.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ReloadError, ServiceRecord, SharedRecord, State, Status, SupervisorRecord};
use crate::fsutil::FileId;

/// The journal beside the snapshot at `state_path`.
pub(super) fn path_of(state_path: &Path) -> PathBuf {
    state_path.with_file_name("state.journal")
}

/// Below this, a reader's cost does not matter: the journal may grow to it whatever the state.
const MIN_LIMIT: u64 = 64 * 1024;

/// What a new snapshot of a state of `after` records would hold, estimated from the current
/// snapshot of `before` records (records are of a size); `None` when the snapshot held none.
fn whole(snapshot: u64, before: usize, after: usize) -> Option<u64> {
    (before > 0).then(|| snapshot.saturating_mul(after as u64) / before as u64)
}

/// Whether a line of `line` bytes may be appended to a journal of `journal` bytes after a
/// snapshot of `snapshot` bytes holding `before` records, the state holding `after` records
/// then: a reader must not parse more than twice what a new snapshot would hold (estimated by
/// its records' count), or [`MIN_LIMIT`] twice. A `down` that removes every record writes an
/// empty snapshot instead of a line of removals after a large one.
pub(super) fn fits(snapshot: u64, journal: u64, line: u64, before: usize, after: usize) -> bool {
    match longest(snapshot, journal, before, after) {
        Some(longest) => line <= longest,
        // The snapshot held no record: the state is about as large as the line.
        None => snapshot + journal + line <= 2 * (snapshot + line).max(MIN_LIMIT),
    }
}

/// The longest line that [`fits`] (a line longer is not worth making), when a bound is known
/// before the line is made.
pub(super) fn longest(snapshot: u64, journal: u64, before: usize, after: usize) -> Option<u64> {
    let whole = whole(snapshot, before, after)?;
    Some((2 * whole.max(MIN_LIMIT)).saturating_sub(snapshot + journal))
}

#[derive(Serialize, Deserialize)]
struct Header {
    generation: String,
}

/// The journal's first line.
pub(super) fn header(generation: &str) -> Vec<u8> {
    let mut line = serde_json::to_vec(&Header {
        generation: generation.to_owned(),
    })
    .expect("a header serializes");
    line.push(b'\n');
    line
}

/// The state's fields other than its records and its format.
#[derive(Serialize)]
struct HeadRef<'a> {
    project: &'a str,
    file: &'a Option<PathBuf>,
    supervisor: &'a Option<SupervisorRecord>,
    last_reload_error: &'a Option<ReloadError>,
    target_cache: &'a BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Head {
    project: String,
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    supervisor: Option<SupervisorRecord>,
    #[serde(default)]
    last_reload_error: Option<ReloadError>,
    #[serde(default)]
    target_cache: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    head: Option<Head>,
    #[serde(default)]
    services: BTreeMap<String, Option<SharedRecord>>,
    /// Records whose status alone became `stopping`, applied after `services`.
    #[serde(default)]
    stopping: Vec<String>,
}

/// Whether `now` is `was` become `stopping` and nothing else: a stop's intent, written as its
/// name alone (every field is compared: a field added to the record is a compile error here).
fn only_stopping(was: &ServiceRecord, now: &ServiceRecord) -> bool {
    let ServiceRecord {
        kind,
        config_hash,
        spec,
        argv,
        status,
        process,
        spawn_nonce,
        started_at_ms,
        restarts,
        policy_restarts,
        last_exit,
        last_reason,
        log_path,
        log_offset,
        output_dir,
        backoff_until_ms,
        crash_streak,
    } = now;
    *status == Status::Stopping
        && was.status != Status::Stopping
        && *kind == was.kind
        && *config_hash == was.config_hash
        && (std::sync::Arc::ptr_eq(spec, &was.spec) || **spec == *was.spec)
        && *argv == was.argv
        && *process == was.process
        && *spawn_nonce == was.spawn_nonce
        && *started_at_ms == was.started_at_ms
        && *restarts == was.restarts
        && *policy_restarts == was.policy_restarts
        && *last_exit == was.last_exit
        && *last_reason == was.last_reason
        && *log_path == was.log_path
        && *log_offset == was.log_offset
        && *output_dir == was.output_dir
        && *backoff_until_ms == was.backoff_until_ms
        && *crash_streak == was.crash_streak
}

fn same_head(a: &State, b: &State) -> bool {
    a.project == b.project
        && a.file == b.file
        && a.supervisor == b.supervisor
        && a.last_reload_error == b.last_reload_error
        && a.target_cache == b.target_cache
}

/// The line that turns `before` into `after`, or `None` when nothing differs. The two sets of
/// records are walked side by side in name order (no lookups); a record is compared by pointer
/// first ([`SharedRecord::same`]): one the caller did not write to is not looked into; a
/// changed one is written from its kept text ([`SharedRecord::text`]). `None` as well when the
/// line would be longer than `longest` bytes: a save that changes most records (a `down`, a
/// cold `up`) writes a snapshot. The changes are listed and measured first and copied only
/// into a line that is kept, made at its size: a `down` of 100 services spent a third of its
/// first pass copying 220 KB of records into a line it then did not write, through a buffer
/// that grew by doubling into pages never touched before.
pub(super) fn line(before: &State, after: &State, longest: Option<u64>) -> Option<Vec<u8>> {
    use std::cmp::Ordering;
    const OPEN: &[u8] = b"{\"services\":{";
    let longest = longest.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    // Each change: its name, and the record's text (`None`: removed).
    let mut changes: Vec<(&str, Option<&[u8]>)> = Vec::new();
    // The records whose status alone became `stopping`: their names (not serialized at all).
    let mut stopping: Vec<&str> = Vec::new();
    // What the changes take, names counted unescaped (names are plain; an escaped one only
    // makes the real line a little longer, which `fits` then measures).
    let mut len = OPEN.len();
    let mut old = before.services.iter().peekable();
    let mut new = after.services.iter().peekable();
    loop {
        if len > longest {
            return None;
        }
        let order = match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((a, _)), Some((b, _))) => a.as_str().cmp(b.as_str()),
        };
        let (key, value) = match order {
            // Only before: removed.
            Ordering::Less => (old.next().expect("peeked").0, None),
            // Only after: added.
            Ordering::Greater => {
                let (key, record) = new.next().expect("peeked");
                (key, Some(record.text()))
            }
            Ordering::Equal => {
                let (_, was) = old.next().expect("peeked");
                let (key, record) = new.next().expect("peeked");
                // The same version: unchanged, not looked into.
                if SharedRecord::same(was, record) {
                    continue;
                }
                // Before the whole comparison, which would compare the specs in depth: a stop's
                // intent compares them by pointer.
                if only_stopping(was, record) {
                    // `"name",`
                    len += key.len() + 3;
                    stopping.push(key.as_str());
                    continue;
                }
                if **was == **record {
                    continue;
                }
                (key, Some(record.text()))
            }
        };
        // `,"name":` (no comma before the first) and the value.
        len += usize::from(!changes.is_empty()) + key.len() + 3 + value.map_or(4, <[u8]>::len);
        changes.push((key.as_str(), value));
    }
    if len > longest {
        return None;
    }
    let head_changed = !same_head(before, after);
    if changes.is_empty() && stopping.is_empty() && !head_changed {
        return None;
    }
    let mut line = Vec::with_capacity(len + 16 + if head_changed { 512 } else { 0 });
    line.extend_from_slice(OPEN);
    for (i, (key, value)) in changes.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        serde_json::to_writer(&mut line, key).expect("names serialize");
        line.push(b':');
        line.extend_from_slice(value.unwrap_or(b"null"));
    }
    line.push(b'}');
    if !stopping.is_empty() {
        line.extend_from_slice(b",\"stopping\":");
        serde_json::to_writer(&mut line, &stopping).expect("names serialize");
    }
    if head_changed {
        line.extend_from_slice(b",\"head\":");
        let head = HeadRef {
            project: &after.project,
            file: &after.file,
            supervisor: &after.supervisor,
            last_reload_error: &after.last_reload_error,
            target_cache: &after.target_cache,
        };
        serde_json::to_writer(&mut line, &head).expect("a head serializes");
    }
    line.extend_from_slice(b"}\n");
    Some(line)
}

/// What a read found of the journal of a snapshot.
pub(super) enum Found {
    /// The journal of this generation, applied: its identity and length as read, and whether
    /// it may be appended to (it ended with a whole line that parsed).
    Applied {
        id: FileId,
        len: u64,
        appendable: bool,
    },
    /// No journal: the snapshot is the state.
    Absent,
    /// A journal of another generation: its identity as read.
    Other { id: FileId },
}

/// Opens the journal for reading, never through a link.
fn open(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
}

/// The journal's bytes as of its identity (taken first; an append after it is left for the
/// next read: the identity no longer matches then).
fn read_with_id(path: &Path) -> std::io::Result<Option<(Vec<u8>, FileId)>> {
    let file = match open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    let id = FileId::from_meta(&meta);
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(meta.len()).read_to_end(&mut bytes)?;
    Ok(Some((bytes, id)))
}

/// The whole lines after the header, when the header names `generation`; and whether the
/// bytes ended with a whole line.
fn lines_of<'a>(bytes: &'a [u8], generation: &str) -> Option<(Vec<&'a [u8]>, bool)> {
    let mut lines = bytes.split_inclusive(|&b| b == b'\n');
    let first = lines.next()?;
    let header: Header = serde_json::from_slice(first.strip_suffix(b"\n")?).ok()?;
    if header.generation != generation {
        return None;
    }
    let mut whole = true;
    let mut out = Vec::new();
    for l in lines {
        match l.strip_suffix(b"\n") {
            Some(l) => out.push(l),
            None => whole = false,
        }
    }
    Some((out, whole))
}

/// Applies the journal at `path` of the snapshot of `generation` to `state`.
pub(super) fn apply(path: &Path, generation: &str, state: &mut State) -> std::io::Result<Found> {
    let Some((bytes, id)) = read_with_id(path)? else {
        return Ok(Found::Absent);
    };
    let Some((lines, mut appendable)) = lines_of(&bytes, generation) else {
        return Ok(Found::Other { id });
    };
    for (n, l) in lines.into_iter().enumerate() {
        let entry: Entry = match serde_json::from_slice(l) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(
                    "{}: line {} does not parse ({e}); the journal ends before it",
                    path.display(),
                    n + 2
                );
                appendable = false;
                break;
            }
        };
        if let Some(h) = entry.head {
            state.project = h.project;
            state.file = h.file;
            state.supervisor = h.supervisor;
            state.last_reload_error = h.last_reload_error;
            state.target_cache = h.target_cache;
        }
        set_or_remove(&mut state.services, entry.services);
        for name in entry.stopping {
            if let Some(record) = state.services.get_mut(&name) {
                record.status = Status::Stopping;
            }
        }
    }
    Ok(Found::Applied {
        len: bytes.len() as u64,
        id,
        appendable,
    })
}

/// Sets the records a line names; `None` removes one.
fn set_or_remove<R>(records: &mut BTreeMap<String, R>, line: BTreeMap<String, Option<R>>) {
    for (name, record) in line {
        match record {
            Some(r) => {
                records.insert(name, r);
            }
            None => {
                records.remove(&name);
            }
        }
    }
}

/// Appends `line` to the journal at `path`, known to be `len` bytes long: the journal's new
/// identity and length. An error leaves the journal possibly torn: it must not be appended to
/// again.
pub(super) fn append(path: &Path, len: u64, line: &[u8]) -> std::io::Result<(FileId, u64)> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    file.write_all(line)?;
    let meta = file.metadata()?;
    let new_len = len + line.len() as u64;
    if meta.len() != new_len {
        // Written by someone else meanwhile (no writer does without the lock).
        return Err(std::io::Error::other(
            "the journal changed under the lock while appending",
        ));
    }
    Ok((FileId::from_meta(&meta), new_len))
}

/// What a view reads of a journal line: the records as `R`, and the file the head names.
#[derive(Deserialize)]
#[serde(bound = "R: DeserializeOwned")]
struct EntryView<R> {
    #[serde(default)]
    head: Option<HeadView>,
    #[serde(default = "BTreeMap::new")]
    services: BTreeMap<String, Option<R>>,
}

#[derive(Deserialize)]
struct HeadView {
    #[serde(default)]
    file: Option<PathBuf>,
}

/// A view of a state: the YAML it runs and its records as `R` (every field `R` does not name
/// is skipped by serde, not built), the journal applied.
#[derive(Deserialize)]
#[serde(bound = "R: DeserializeOwned")]
pub struct View<R> {
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    journal: Option<String>,
    #[serde(default = "BTreeMap::new")]
    pub services: BTreeMap<String, R>,
}

/// Reads the view of the state at `state_path`: `None` when it is absent or does not parse.
pub(super) fn view<R: DeserializeOwned>(state_path: &Path) -> Option<View<R>> {
    for _ in 0..8 {
        let (bytes, id) = super::last::read_with_id(state_path).ok()?;
        let mut view: View<R> = serde_json::from_slice(&bytes).ok()?;
        let Some(generation) = view.journal.take() else {
            return Some(view);
        };
        let Ok(Some((bytes, _))) = read_with_id(&path_of(state_path)) else {
            return Some(view);
        };
        let Some((lines, _)) = lines_of(&bytes, &generation) else {
            if FileId::of_link(state_path).as_ref() == Some(&id) {
                return Some(view); // an older journal: the snapshot holds it
            }
            continue; // the snapshot was replaced meanwhile
        };
        for l in lines {
            let Ok(entry) = serde_json::from_slice::<EntryView<R>>(l) else {
                break;
            };
            if let Some(h) = entry.head {
                view.file = h.file;
            }
            set_or_remove(&mut view.services, entry.services);
        }
        return Some(view);
    }
    None
}
