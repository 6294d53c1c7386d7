//! The persisted observed state: `<state-dir>/<project>/state.json`, versioned, written
//! atomically, and guarded by `state.lock` across every read-modify-write (spec §3, §6).

mod journal;
mod lock;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use journal::View;
pub use lock::StateLock;
pub mod retired;

use crate::fsutil::FileId;
use crate::process::ProcessIdentity;
use crate::spec::{ConfigHash, ServiceSpec};

/// The format this binary writes. Older formats must keep loading (see `state/` examples).
pub const FORMAT_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "refusing {}: it {why}; fix its owner/mode, remove it, or choose another state directory with --state-dir",
        path.display()
    )]
    Unsafe { path: PathBuf, why: String },
    #[error(
        "{}: the state file is corrupt ({reason}); {}. Processes it recorded may still run: `mirrord-up down --force` stops every process of this project found by its markers",
        path.display(), kept_note(path, kept)
    )]
    Corrupt {
        /// Where it was; `kept` is where it is now (the same path when a read-only command
        /// found it and left it alone).
        path: PathBuf,
        kept: PathBuf,
        reason: String,
    },
    #[error(
        "{}: the state file has format_version {found}, newer than this mirrord-up understands ({FORMAT_VERSION}); refusing to overwrite it (upgrade mirrord-up)",
        path.display()
    )]
    TooNew { path: PathBuf, found: u32 },
    #[error(
        "timed out after {}s waiting for the lock on `{}`, held by {holder}",
        waited.as_secs(), path.display()
    )]
    LockTimeout {
        path: PathBuf,
        holder: String,
        waited: Duration,
    },
}

type Result<T, E = StateError> = std::result::Result<T, E>;

/// Says where a corrupt state file is now: moved aside by a mutating command, or left in place
/// by a read-only one (which must not claim to have moved it).
fn kept_note(path: &Path, kept: &Path) -> String {
    if kept == path {
        "it was left in place; the next command that changes the state keeps it aside as `state.json.corrupt-<time>`".to_owned()
    } else {
        format!("it was kept aside as {}", kept.display())
    }
}

impl From<crate::fsutil::FsError> for StateError {
    fn from(e: crate::fsutil::FsError) -> StateError {
        match e {
            crate::fsutil::FsError::Unsafe { path, why } => StateError::Unsafe { path, why },
            crate::fsutil::FsError::Io { path, source } => StateError::Io { path, source },
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Lifecycle status of a recorded service (what `ps` shows once liveness is checked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Intent recorded; the process may or may not have been spawned yet.
    #[default]
    Starting,
    Running,
    Ready,
    Stopping,
    Exited,
    /// Gave up (restart limit reached, or could not be spawned).
    Failed,
    /// Waiting out a restart back-off.
    Backoff,
    /// Stopped on request (`stop`, Ctrl-C): no restart policy brings it back; `start` or the
    /// next `up` does.
    Stopped,
    /// Not started yet: a dependency has not reached its condition (`last_reason` says which:
    /// `waiting for db (ready)`). The supervisor starts it once the dependency has.
    Waiting,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Ready => "ready",
            Status::Stopping => "stopping",
            Status::Exited => "exited",
            Status::Failed => "failed",
            Status::Backoff => "backoff",
            Status::Stopped => "stopped",
            Status::Waiting => "waiting",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code, when the process was our child (otherwise unknown).
    pub code: Option<i32>,
    pub signal: Option<String>,
    pub at_ms: u64,
}

impl ExitInfo {
    pub fn describe(&self) -> String {
        match (&self.code, &self.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by {s}"),
            (None, None) => "exited".into(),
        }
    }

    /// A status collected by `waitpid`, stamped now.
    pub fn from_kind(kind: crate::process::ExitKind) -> ExitInfo {
        let (code, signal) = match kind {
            crate::process::ExitKind::Code(c) => (Some(c), None),
            crate::process::ExitKind::Signal(s) => (None, Some(s.as_str().to_owned())),
        };
        ExitInfo {
            code,
            signal,
            at_ms: now_ms(),
        }
    }

    /// A clean exit: code 0. An unknown status or a signal counts as a failure.
    pub fn failed(&self) -> bool {
        self.code != Some(0)
    }
}

/// Whether a record came from the YAML or from `ci start`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    #[default]
    Service,
    Ci,
}

/// One service (or CI session) the state knows about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    #[serde(default)]
    pub kind: RecordKind,
    pub config_hash: ConfigHash,
    /// Shared, not copied: the state is copied several times a pass (the pass's `before`,
    /// the copy this process keeps of what it saved), and the spec is most of a record.
    #[serde(with = "shared_spec")]
    pub spec: std::sync::Arc<ServiceSpec>,
    /// What was actually executed (program first).
    #[serde(default)]
    pub argv: Vec<String>,
    pub status: Status,
    #[serde(default)]
    pub process: Option<ProcessIdentity>,
    /// Set before spawning and passed as `MIRRORD_UP_INSTANCE`: if the tool dies between spawn
    /// and the next write, the next run finds the process by it and adopts it.
    #[serde(default)]
    pub spawn_nonce: Option<String>,
    #[serde(default)]
    pub started_at_ms: Option<u64>,
    /// Every start of this record after its first, whatever the cause (config change,
    /// `restart`, restart policy).
    #[serde(default)]
    pub restarts: u32,
    /// The restarts its restart policy made (after a crash or an exit): what `ps` shows in
    /// RESTARTS. Absent from state files written before it existed (read as 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub policy_restarts: u32,
    #[serde(default)]
    pub last_exit: Option<ExitInfo>,
    #[serde(default)]
    pub last_reason: Option<String>,
    pub log_path: PathBuf,
    /// Size of the log when this process started: readiness is looked for after it.
    #[serde(default)]
    pub log_offset: u64,
    /// CI sessions: where stdout and stderr go.
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
    /// While in back-off: when the next attempt is due.
    #[serde(default)]
    pub backoff_until_ms: Option<u64>,
    /// Restarts in a row by the restart policy (reset by a minute of uptime).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub crash_streak: u32,
}

/// (De)serializes an `Arc<ServiceSpec>` as the spec itself.
mod shared_spec {
    use std::cell::RefCell;
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::SpecText;
    use crate::spec::ServiceSpec;

    thread_local! {
        /// The text of the spec the record being serialized on this thread holds, if it was
        /// serialized before ([`with_text`]).
        static TEXT: RefCell<Option<Arc<SpecText>>> = const { RefCell::new(None) };
    }

    /// Runs `f` (a record's serialization) with `text` standing for its spec.
    pub(super) fn with_text<R>(text: Arc<SpecText>, f: impl FnOnce() -> R) -> R {
        let outer = TEXT.with(|t| t.replace(Some(text)));
        let out = f();
        TEXT.with(|t| *t.borrow_mut() = outer);
        out
    }

    pub fn serialize<S: Serializer>(v: &Arc<ServiceSpec>, s: S) -> Result<S::Ok, S::Error> {
        let text = TEXT.with(|t| {
            t.borrow()
                .as_ref()
                .filter(|t| Arc::ptr_eq(&t.spec, v))
                .cloned()
        });
        match text {
            Some(t) => t.json.serialize(s),
            None => v.as_ref().serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<ServiceSpec>, D::Error> {
        ServiceSpec::deserialize(d).map(Arc::new)
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The background supervisor of the project, if one runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorRecord {
    pub process: ProcessIdentity,
    pub socket: PathBuf,
    pub started_at_ms: u64,
}

/// The last hot reload that failed (cleared by the next good one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadError {
    pub message: String,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format_version: u32,
    pub project: String,
    /// The YAML last applied.
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub supervisor: Option<SupervisorRecord>,
    #[serde(default)]
    pub last_reload_error: Option<ReloadError>,
    /// Inferred targets (`context|namespace|service` → path), so reloads need no cluster query.
    #[serde(default)]
    pub target_cache: BTreeMap<String, String>,
    /// Format 2: the generation of the journal that continues this file (`state.journal`).
    /// Written and read by the store only; a state in memory has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<String>,
    #[serde(default)]
    pub services: BTreeMap<String, SharedRecord>,
}

/// A record shared by the copies of a state (the pass's `before`, the copy this process keeps
/// of what it saved last, the state a read returns): copying a state copies a pointer per
/// record, and a record is copied only when one copy changes it (`Arc::make_mut` behind
/// `DerefMut`). Two copies of one record compare equal without looking inside.
///
/// Reading through it (`rec.status`) never copies; only a write through `&mut` does, and then
/// only while another copy of the state shares the record.
///
/// Each record keeps the text it is saved as ([`SharedRecord::text`]): serialized by the first
/// save that needs it, shared by every copy, dropped by any write through `&mut` (the copy
/// that changed gets none; the others keep theirs). A save serializes the records that changed
/// since they were last saved, and writes the others' texts as they are.
#[derive(Clone)]
pub struct SharedRecord(std::sync::Arc<Held>);

/// A record and, once a save needed it, its JSON text.
struct Held {
    record: ServiceRecord,
    text: std::sync::OnceLock<Box<[u8]>>,
    /// Its spec's text, kept across the record's versions: most changes leave the spec as it
    /// is (a status, a PID), and a save of such a version writes the spec's text again instead
    /// of serializing the spec again (most of a record: its mirrord configuration).
    spec: std::sync::Mutex<Option<std::sync::Arc<SpecText>>>,
}

/// The compact JSON text of a spec, and that spec. Holding it keeps the spec shared, so that a
/// write to the spec (`Arc::make_mut`) makes another spec, never changes this one: a text is
/// used only for the very spec it was made of (`Arc::ptr_eq`).
struct SpecText {
    spec: std::sync::Arc<ServiceSpec>,
    json: Box<serde_json::value::RawValue>,
}

impl Clone for Held {
    /// A copy is about to be changed (`Arc::make_mut`): it gets no text; its spec's text is
    /// kept (used only while the copy still holds that spec).
    fn clone(&self) -> Held {
        Held {
            record: self.record.clone(),
            text: std::sync::OnceLock::new(),
            spec: std::sync::Mutex::new(self.spec_text_kept()),
        }
    }
}

impl Held {
    fn spec_text_kept(&self) -> Option<std::sync::Arc<SpecText>> {
        self.spec.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The text of this record's spec: the kept one when it is this spec's, else made now.
    fn spec_text(&self) -> std::sync::Arc<SpecText> {
        let mut kept = self.spec.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = kept.as_ref()
            && std::sync::Arc::ptr_eq(&t.spec, &self.record.spec)
        {
            return t.clone();
        }
        #[cfg(test)]
        SPECS_SERIALIZED.with(|n| n.set(n.get() + 1));
        let made = std::sync::Arc::new(SpecText {
            spec: self.record.spec.clone(),
            json: serde_json::value::to_raw_value(&*self.record.spec).expect("specs serialize"),
        });
        *kept = Some(made.clone());
        made
    }
}

impl std::fmt::Debug for SharedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedRecord").field(&self.0.record).finish()
    }
}

impl SharedRecord {
    /// The same record (not an equal one): nothing was written to it since the copy.
    pub fn same(a: &SharedRecord, b: &SharedRecord) -> bool {
        std::sync::Arc::ptr_eq(&a.0, &b.0)
    }

    /// The record's compact JSON, as `serde_json` writes it (inside a state as well: the
    /// compact writer's output of a value does not depend on where it is). Serialized once per
    /// version of the record.
    pub fn text(&self) -> &[u8] {
        self.0.text.get_or_init(|| {
            #[cfg(test)]
            SERIALIZED.with(|n| n.set(n.get() + 1));
            let spec = self.0.spec_text();
            shared_spec::with_text(spec, || {
                // Written into a buffer kept by the thread, then copied once at its size (a
                // `Vec` of its own would grow by doubling, each step a copy).
                TEXT_BUFFER.with(|b| {
                    let mut b = b.borrow_mut();
                    b.clear();
                    serde_json::to_writer(&mut *b, &self.0.record).expect("records serialize");
                    let text: Box<[u8]> = b.as_slice().into();
                    if b.capacity() > 1 << 20 {
                        *b = Vec::new();
                    }
                    text
                })
            })
        })
    }
}

thread_local! {
    /// Where [`SharedRecord::text`] serializes a record (kept small between saves).
    static TEXT_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// How many records this thread serialized for a save (tests).
    static SERIALIZED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// How many specs this thread serialized for a record's text (tests).
    static SPECS_SERIALIZED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl std::ops::Deref for SharedRecord {
    type Target = ServiceRecord;
    fn deref(&self) -> &ServiceRecord {
        &self.0.record
    }
}

impl std::ops::DerefMut for SharedRecord {
    /// A write: the record is this copy's alone from now on, and its text is gone.
    fn deref_mut(&mut self) -> &mut ServiceRecord {
        let held = std::sync::Arc::make_mut(&mut self.0);
        held.text.take();
        &mut held.record
    }
}

impl From<ServiceRecord> for SharedRecord {
    fn from(record: ServiceRecord) -> SharedRecord {
        SharedRecord(std::sync::Arc::new(Held {
            record,
            text: std::sync::OnceLock::new(),
            spec: std::sync::Mutex::new(None),
        }))
    }
}

impl PartialEq for SharedRecord {
    fn eq(&self, other: &SharedRecord) -> bool {
        SharedRecord::same(self, other) || self.0.record == other.0.record
    }
}

impl Serialize for SharedRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.record.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        ServiceRecord::deserialize(d).map(SharedRecord::from)
    }
}

impl State {
    pub fn new(project: &str) -> State {
        State {
            format_version: FORMAT_VERSION,
            project: project.to_owned(),
            file: None,
            supervisor: None,
            last_reload_error: None,
            target_cache: BTreeMap::new(),
            journal: None,
            services: BTreeMap::new(),
        }
    }

    /// The longest recorded name: what report lines pad names to.
    pub fn name_width(&self) -> usize {
        self.services.keys().map(String::len).max().unwrap_or(0)
    }

    pub fn records(&self, kind: RecordKind) -> impl Iterator<Item = (&String, &ServiceRecord)> {
        self.services
            .iter()
            .filter(move |(_, r)| r.kind == kind)
            .map(|(n, r)| (n, &**r))
    }

    /// Becomes a copy of `other` (`*self = other.clone()`), keeping what it already shares
    /// with it: when both record the same names, each name stays and only the records that
    /// are not the very same are copied (a pointer each). After a save this process's copy of
    /// the state on disk follows the state it saved: one or two records changed, and a
    /// copy of every name (at 500 services, 500 allocations, and 500 frees of the old copy)
    /// was most of the work.
    pub(crate) fn become_copy_of(&mut self, other: &State) {
        let State {
            format_version,
            project,
            file,
            supervisor,
            last_reload_error,
            target_cache,
            journal,
            services,
        } = other;
        self.format_version = *format_version;
        self.project.clone_from(project);
        self.file.clone_from(file);
        self.supervisor.clone_from(supervisor);
        self.last_reload_error.clone_from(last_reload_error);
        if self.target_cache != *target_cache {
            self.target_cache.clone_from(target_cache);
        }
        self.journal.clone_from(journal);
        let same_names =
            self.services.len() == services.len() && self.services.keys().eq(services.keys());
        if !same_names {
            self.services.clone_from(services);
            return;
        }
        for (mine, theirs) in self.services.values_mut().zip(services.values()) {
            if !SharedRecord::same(mine, theirs) {
                mine.clone_from(theirs);
            }
        }
    }
}

/// The state directory of one project.
#[derive(Debug, Clone)]
pub struct StateStore {
    pub dir: PathBuf,
    pub project: String,
}

impl StateStore {
    /// Opens (creating, 0700) `<root>/<project>`, refusing foreign-owned or group/world-writable
    /// directories.
    pub fn open(root: &Path, project: &str) -> Result<StateStore> {
        let dir = crate::fsutil::SafeDir::open(root, true)?.subdir(project, true)?;
        for sub in ["logs", "services"] {
            dir.subdir(sub, true)?;
        }
        // Early, so that every command names a planted file (they are opened safely anyway).
        for file in ["state.lock", "state.journal", "supervisor.log"] {
            dir.check_file_if_present(file)?;
        }
        Ok(StateStore {
            dir: dir.path().to_owned(),
            project: project.to_owned(),
        })
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn log_path(&self, service: &str) -> PathBuf {
        self.dir
            .join("logs")
            .join(format!("{}.log", file_safe(service)))
    }

    pub fn service_dir(&self, service: &str) -> PathBuf {
        self.dir.join("services").join(file_safe(service))
    }

    /// Reads without locking (for `ps`, `plan`, `logs`): the snapshot is only ever replaced by
    /// rename and the journal only appended to, so a reader sees one whole version. Absent →
    /// `None`. The version this process saved or read last is not read again while the files'
    /// identities are unchanged ([`last`]: device, inode, size, mtime and ctime — a `stat` each).
    pub fn read(&self) -> Result<Option<State>> {
        let path = self.state_path();
        if let Some(state) = last::state_if_current(&path) {
            return Ok(Some(state));
        }
        let journal_path = journal::path_of(&path);
        let mut attempts = 0;
        loop {
            let (bytes, id) = match last::read_with_id(&path) {
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io(&path)(e)),
            };
            let mut state = parse(&bytes).map_err(|reason| StateError::Corrupt {
                kept: path.clone(),
                path: path.clone(),
                reason,
            })?;
            let journal = match state.journal.take() {
                None => last::Seen::Other(FileId::of_link(&journal_path)),
                Some(generation) => {
                    match journal::apply(&journal_path, &generation, &mut state)
                        .map_err(io(&journal_path))?
                    {
                        journal::Found::Applied {
                            id,
                            len,
                            appendable,
                        } => last::Seen::Its(last::Journal {
                            id,
                            len,
                            appendable,
                        }),
                        journal::Found::Absent => last::Seen::Other(None),
                        // Replaced meanwhile (a compaction between the two reads): again.
                        journal::Found::Other { .. }
                            if attempts < 8 && FileId::of_link(&path).as_ref() != Some(&id) =>
                        {
                            attempts += 1;
                            continue;
                        }
                        // Older than the snapshot, which holds it; or the snapshot's writer
                        // has not written its journal yet.
                        journal::Found::Other { id } => last::Seen::Other(Some(id)),
                    }
                }
            };
            last::put(
                &path,
                last::Known {
                    id,
                    len: bytes.len() as u64,
                    journal,
                    state: state.clone(),
                },
            );
            return Ok(Some(state));
        }
    }

    /// A view of the state: the YAML it runs and its records as `R`, every other field skipped
    /// by serde, not built (a client's quick look: at 500 services the whole state is ≈1 MB
    /// of records). `None` when absent or unreadable.
    pub fn view<R: serde::de::DeserializeOwned>(&self) -> Option<View<R>> {
        view_in(&self.dir)
    }

    /// The recorded log offset of one service, read without building the whole state (a full
    /// parse per `started` event made a cold `up` of N services O(N²); a batch of events asks
    /// [`Self::log_offsets`]). Fields other than each record's `log_offset` are skipped, not
    /// built.
    pub fn log_offset(&self, service: &str) -> Option<u64> {
        self.log_offsets(&[service]).remove(service)
    }

    /// [`Self::log_offset`] of each of `services` that is recorded, the state's files looked at
    /// once for them all (a cold `up`'s `started` events come in one batch).
    pub fn log_offsets(&self, services: &[&str]) -> BTreeMap<String, u64> {
        if services.is_empty() {
            return BTreeMap::new();
        }
        let pick = |get: &dyn Fn(&str) -> Option<u64>| {
            services
                .iter()
                .filter_map(|s| get(s).map(|offset| ((*s).to_owned(), offset)))
                .collect()
        };
        // The version this process wrote last (the supervisor's own intent save, just before
        // the spawns these events report) answers without reading the file.
        if let Some(found) = last::with_current(&self.state_path(), |state| {
            pick(&|s| state.services.get(s).map(|r| r.log_offset))
        }) {
            return found;
        }
        #[derive(Deserialize)]
        struct Offset {
            #[serde(default)]
            log_offset: u64,
        }
        match self.view::<Offset>() {
            Some(all) => pick(&|s| all.services.get(s).map(|o| o.log_offset)),
            None => BTreeMap::new(),
        }
    }

    /// Takes `state.lock`, waiting up to `timeout`.
    pub fn lock(&self, timeout: Duration) -> Result<StateLock> {
        StateLock::acquire(&self.dir.join("state.lock"), timeout)
    }

    /// Reads under the lock. A corrupt file is moved aside (`state.json.corrupt-<time>`).
    pub fn load(&self, lock: &StateLock) -> Result<State> {
        use std::sync::atomic::Ordering;
        match self.read() {
            Ok(Some(s)) => {
                lock.version_checked
                    .store(s.format_version <= FORMAT_VERSION, Ordering::Relaxed);
                Ok(s)
            }
            Ok(None) => {
                lock.version_checked.store(true, Ordering::Relaxed);
                Ok(State::new(&self.project))
            }
            Err(StateError::Corrupt { path, reason, .. }) => {
                let kept = path.with_file_name(format!("state.json.corrupt-{}", now_ms() / 1000));
                std::fs::rename(&path, &kept).map_err(io(&path))?;
                Err(StateError::Corrupt { path, kept, reason })
            }
            Err(e) => Err(e),
        }
    }

    /// Saves `state`, mode 0600. When this process knows the files on disk (it saved or read
    /// them last) and the journal has room, the records that changed (and the other fields,
    /// when they did) are appended to the journal as one line; otherwise the whole state is
    /// written as a new snapshot (a private temp file renamed over it) with a new, empty
    /// journal. Refuses to overwrite a file of a newer format. A state equal to the one on
    /// disk is not written again.
    pub fn save(&self, lock: &StateLock, state: &State) -> Result<()> {
        let path = self.state_path();
        let needed = last::needed(&path, state);
        if let last::Needed::Nothing = needed {
            tracing::debug!("state unchanged, not saved again");
            return Ok(());
        }
        if !lock
            .version_checked
            .load(std::sync::atomic::Ordering::Relaxed)
            && let Ok(bytes) = std::fs::read(&path)
            && let Some(found) = format_version_of(&bytes)
            && found > FORMAT_VERSION
        {
            return Err(StateError::TooNew { path, found });
        }
        let journal_path = journal::path_of(&path);
        if let last::Needed::Line(append) = needed {
            let started = std::time::Instant::now();
            match journal::append(&journal_path, append.len, &append.line) {
                Ok((id, len)) => {
                    #[cfg(test)]
                    last::APPENDS.with(|n| n.set(n.get() + 1));
                    tracing::debug!(bytes = append.line.len(), took = ?started.elapsed(), "state saved (journal)");
                    last::appended(&path, id, len, state);
                    return Ok(());
                }
                Err(e) => {
                    // Possibly torn: never appended to again; the whole state is written.
                    tracing::debug!("journal append failed ({e}); the whole state is written");
                    last::forget(&path);
                }
            }
        }
        self.write_snapshot(&path, &journal_path, state)
    }

    /// Writes `state` whole as a new snapshot of a new generation, then that generation's
    /// empty journal.
    fn write_snapshot(&self, path: &Path, journal_path: &Path, state: &State) -> Result<()> {
        // Compact: a hundred services make a file of some 230 KB; `ps --format json` is the
        // readable view. A record is serialized once per version of it
        // ([`SharedRecord::text`]); the file is written from the records' texts as they are,
        // not copied into one buffer first ([`encode`]).
        let generation = crate::process::new_nonce();
        let encoded = encode(state, &generation);
        let mut parts = encoded.parts();
        let bytes = encoded.len();
        let started = std::time::Instant::now();
        // Replaced by rename, not synced: each version is whole, old or new, for any reader,
        // and an intent (a record about to be spawned: its nonce, no process yet) reaches every
        // other process before the spawn (the rename, or the append). A machine crash can lose
        // the last versions, intents included, but it also ends every process they record:
        // after it nothing recorded runs (another boot), and ext4 (`auto_da_alloc`) and its
        // peers flush a file renamed over another before the rename is committed.
        // The version replaced is held open across the rename and let go later (`retired`):
        // the rename then does not wait for its blocks to be freed.
        let replaced = retired::hold(path);
        let written = write_parts_unsynced(path, &mut parts);
        #[cfg(test)]
        last::FILE_WRITES.with(|n| n.set(n.get() + 1));
        tracing::debug!(bytes, took = ?started.elapsed(), "state saved");
        if let Err(e) = written {
            last::forget(path);
            return Err(e);
        }
        if let Some(old) = replaced {
            retired::retire(old);
        }
        // The journal of the new generation. Until it is in place the old one names another
        // generation and is ignored; if it cannot be written, the next save writes a snapshot.
        // Its replaced version is held across the rename as the state's is: a journal that
        // ran out of room is the size of a state or more (a `down` of 500 services waited
        // 0.8 ms in this rename while ext4 freed the old one's blocks).
        let header = journal::header(&generation);
        let replaced = retired::hold(journal_path);
        let written = write_private_unsynced(journal_path, &header);
        if let Some(old) = replaced {
            retired::retire(old);
        }
        let journal = match written {
            Ok(()) => match FileId::of_link(journal_path) {
                Some(id) => last::Seen::Its(last::Journal {
                    id,
                    len: header.len() as u64,
                    appendable: true,
                }),
                None => last::Seen::Other(None),
            },
            Err(e) => {
                tracing::debug!("no journal ({e}); the next save writes the whole state");
                last::Seen::Other(FileId::of_link(journal_path))
            }
        };
        match FileId::of_link(path) {
            Some(id) => last::put(
                path,
                last::Known {
                    id,
                    len: bytes as u64,
                    journal,
                    state: state.clone(),
                },
            ),
            None => last::forget(path),
        }
        Ok(())
    }
}

/// [`StateStore::read`] of the state directory `dir` (of one project), for a reader that must
/// not create it.
pub fn read_in(dir: &Path) -> Result<Option<State>> {
    StateStore {
        dir: dir.to_owned(),
        project: String::new(),
    }
    .read()
}

/// [`StateStore::view`] of the state directory `dir`, for a client that must not create it.
pub fn view_in<R: serde::de::DeserializeOwned>(dir: &Path) -> Option<View<R>> {
    journal::view(&dir.join("state.json"))
}

/// The state this process saved or read last, with the identities of the snapshot and of its
/// journal (device, inode, size, mtime, ctime). Every snapshot replaces the file by rename, so
/// another writer's version (a one-shot `restart`, `stop`) is another inode; an append changes
/// the journal's size; an in-place rewrite changes the ctime, which no user can set back
/// (`touch -r` restores the mtime only, and itself moves the ctime). A read of that very
/// version is a copy of the state (records shared), not a read of the files: the supervisor
/// reads the state at the start of every pass, and it is what it saved at the end of the last
/// one. A save of an equal state while the files are that version writes nothing; a save of a
/// changed one appends what changed ([`needed`]).
///
/// What this cannot see: a rewrite in place, of the same size, with the mtime set back, within
/// one tick of the kernel's file clock (a few ms) after this process's own write or read.
mod last {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use super::State;

    pub(super) use crate::fsutil::FileId;

    pub(super) struct Known {
        /// The snapshot's identity and length.
        pub(super) id: FileId,
        pub(super) len: u64,
        /// Its journal, as read or written.
        pub(super) journal: Seen,
        pub(super) state: State,
    }

    /// The journal beside a snapshot, as read or written with it.
    pub(super) enum Seen {
        /// Its generation's.
        Its(Journal),
        /// None of its generation: the file that was there (another generation's; `None`:
        /// none). A reader can come between a new snapshot's rename and its journal's: when
        /// this file changes, the journal of the snapshot may have come, with lines in it.
        Other(Option<FileId>),
    }

    pub(super) struct Journal {
        pub(super) id: FileId,
        pub(super) len: u64,
        /// It ends with a whole line that parsed: a line may follow.
        pub(super) appendable: bool,
    }

    /// By state file: one in the supervisor; a few in a test binary, whose tests run side
    /// by side in one process.
    static LAST: Mutex<BTreeMap<PathBuf, Known>> = Mutex::new(BTreeMap::new());
    /// A unit test binary runs its tests side by side, each with a state file of its own:
    /// none forgets another's while it runs.
    const KEPT: usize = if cfg!(test) { 1024 } else { 8 };

    #[cfg(test)]
    thread_local! {
        /// State files this thread read from disk (a test runs on a thread of its own).
        pub(super) static FILE_READS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// Snapshots this thread wrote.
        pub(super) static FILE_WRITES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// Lines this thread appended to journals.
        pub(super) static APPENDS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// Answers this thread took from the version written or read last (`with_current`):
        /// each looked at the state's files once.
        pub(super) static LOOKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// The file's bytes and the identity they belong to: taken before the read, so that a
    /// write during the read leaves an identity that no longer matches (read again next time).
    pub(super) fn read_with_id(path: &Path) -> std::io::Result<(Vec<u8>, FileId)> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_CLOEXEC)
            .open(path)?;
        let meta = file.metadata()?;
        let id = FileId::from_meta(&meta);
        #[cfg(test)]
        FILE_READS.with(|n| n.set(n.get() + 1));
        let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
        file.read_to_end(&mut bytes)?;
        Ok((bytes, id))
    }

    /// The files at `path` are what `known` describes: this process wrote them, or parsed them
    /// (another writer's version, or its first read: the next save serializes each of those
    /// records once, [`super::SharedRecord::text`]).
    pub(super) fn put(path: &Path, known: Known) {
        let Ok(mut last) = LAST.lock() else { return };
        last.remove(path);
        if last.len() >= KEPT {
            last.clear();
        }
        last.insert(path.to_owned(), known);
    }

    pub(super) fn forget(path: &Path) {
        if let Ok(mut last) = LAST.lock() {
            last.remove(path);
        }
    }

    /// The files at `path` are still the version written or read last (their identities).
    fn current<'a>(last: &'a BTreeMap<PathBuf, Known>, path: &Path) -> Option<&'a Known> {
        let known = last.get(path)?;
        if FileId::of_link(path).as_ref() != Some(&known.id) {
            return None;
        }
        let journal = FileId::of_link(&super::journal::path_of(path));
        let same = match &known.journal {
            Seen::Its(j) => journal.as_ref() == Some(&j.id),
            Seen::Other(id) => journal == *id,
        };
        same.then_some(known)
    }

    /// The state the files at `path` hold, when they are the version written or read last.
    pub(super) fn state_if_current(path: &Path) -> Option<State> {
        let last = LAST.lock().ok()?;
        current(&last, path).map(|w| w.state.clone())
    }

    /// What a save of `state` to the files at `path` has to write.
    pub(super) enum Needed {
        /// Nothing: the files hold `state` (saved or read last by this process, unchanged
        /// since).
        Nothing,
        /// A line appended to their journal.
        Line(Append),
        /// A new snapshot: this process does not know the files as they are, their journal
        /// may not be appended to, or the line would not fit within the journal's limit.
        Snapshot,
    }

    /// A line to append to the journal, and the journal's length it goes after.
    pub(super) struct Append {
        pub(super) line: Vec<u8>,
        pub(super) len: u64,
    }

    /// What saving `state` to the files at `path` takes, from one look at them.
    pub(super) fn needed(path: &Path, state: &State) -> Needed {
        let Ok(last) = LAST.lock() else {
            return Needed::Snapshot;
        };
        match current(&last, path) {
            Some(known) if known.state == *state => Needed::Nothing,
            Some(known) => append_line(known, state).map_or(Needed::Snapshot, Needed::Line),
            None => Needed::Snapshot,
        }
    }

    /// The journal line that turns `known`, the state on disk, into `state`: when its journal
    /// may be appended to, and the line fits within the journal's limit.
    fn append_line(known: &Known, state: &State) -> Option<Append> {
        let Seen::Its(journal) = &known.journal else {
            return None;
        };
        if !journal.appendable {
            return None;
        }
        let (before, after) = (known.state.services.len(), state.services.len());
        let longest = super::journal::longest(known.len, journal.len, before, after);
        let line = super::journal::line(&known.state, state, longest)?;
        let fits = super::journal::fits(known.len, journal.len, line.len() as u64, before, after);
        fits.then_some(Append {
            line,
            len: journal.len,
        })
    }

    /// `state` was appended to the journal of the files at `path`, now `id`, `len` bytes long.
    pub(super) fn appended(path: &Path, id: FileId, len: u64, state: &State) {
        let Ok(mut last) = LAST.lock() else { return };
        match last.get_mut(path) {
            Some(Known {
                journal: Seen::Its(j),
                state: known,
                ..
            }) => {
                j.id = id;
                j.len = len;
                known.become_copy_of(state);
            }
            _ => {
                last.remove(path);
            }
        }
    }

    /// `Some(f(state))` when the files are the version written or read last by this process,
    /// `state` being what they hold.
    pub(super) fn with_current<T>(path: &Path, f: impl FnOnce(&State) -> T) -> Option<T> {
        let last = LAST.lock().ok()?;
        let w = current(&last, path)?;
        #[cfg(test)]
        LOOKS.with(|n| n.set(n.get() + 1));
        Some(f(&w.state))
    }
}

/// The state at `state_path` as another process reads it (the snapshot, its journal applied),
/// leaving this process's memory of it alone (tests).
#[cfg(test)]
pub(crate) fn on_disk(state_path: &Path) -> Option<State> {
    let mut state = parse(&std::fs::read(state_path).ok()?).ok()?;
    if let Some(g) = state.journal.take() {
        journal::apply(&journal::path_of(state_path), &g, &mut state).ok()?;
    }
    Some(state)
}

/// How many answers this thread took from the state this process wrote or read last, each
/// after one look at the state's files (tests count the looks of a batch).
#[cfg(test)]
pub(crate) fn looks_on_this_thread() -> usize {
    last::LOOKS.with(std::cell::Cell::get)
}

/// How many times this thread saved a state (a snapshot or a journal line: tests count the
/// saves of a pass).
#[cfg(test)]
pub(crate) fn writes_on_this_thread() -> usize {
    last::FILE_WRITES.with(std::cell::Cell::get) + last::APPENDS.with(std::cell::Cell::get)
}

/// A state's compact JSON, in the pieces it is written from: `frame` holds the state without
/// its records and each record's name (`cuts`: where each piece of it ends), `texts` each
/// record's value (its kept text, [`SharedRecord::text`]), in name order. Joined, they are
/// `serde_json::to_vec(state)` byte for byte, and a newline.
struct Encoded<'a> {
    frame: Vec<u8>,
    /// Ends of the frame's pieces: the head, then each record's name (`,"name":`), then the
    /// end (`}}\n`).
    cuts: Vec<usize>,
    texts: Vec<&'a [u8]>,
}

impl<'a> Encoded<'a> {
    /// The pieces in file order, for one `writev` (or a few).
    fn parts(&self) -> Vec<std::io::IoSlice<'_>> {
        let mut parts = Vec::with_capacity(2 * self.texts.len() + 2);
        let mut from = 0;
        for (i, &to) in self.cuts.iter().enumerate() {
            parts.push(std::io::IoSlice::new(&self.frame[from..to]));
            from = to;
            // After each record's name (pieces 1..): that record's value.
            if let Some(text) = i.checked_sub(1).and_then(|r| self.texts.get(r)) {
                parts.push(std::io::IoSlice::new(text));
            }
        }
        parts
    }

    fn len(&self) -> usize {
        self.frame.len() + self.texts.iter().map(|t| t.len()).sum::<usize>()
    }

    #[cfg(test)]
    fn to_vec(&self) -> Vec<u8> {
        self.parts()
            .iter()
            .flat_map(|p| p.iter().copied())
            .collect()
    }
}

/// `serde_json::to_vec(state)` and a newline, byte for byte, as pieces: the records' texts are
/// the ones they keep (serialized here only for a record that has none: new, changed, or read
/// from another writer's version). The records are the state's last field, so the text is the
/// state without records, then the records.
fn encode<'a>(state: &'a State, generation: &str) -> Encoded<'a> {
    const NO_RECORDS: &[u8] = b"\"services\":{}}";
    let head = State {
        format_version: FORMAT_VERSION,
        project: state.project.clone(),
        file: state.file.clone(),
        supervisor: state.supervisor.clone(),
        last_reload_error: state.last_reload_error.clone(),
        target_cache: state.target_cache.clone(),
        journal: Some(generation.to_owned()),
        services: BTreeMap::new(),
    };
    let mut frame = Vec::with_capacity(512 + 24 * state.services.len());
    serde_json::to_writer(&mut frame, &head).expect("state serializes");
    if !frame.ends_with(NO_RECORDS) {
        // Another layout (a field after the records): serialized whole, nothing to reuse.
        debug_assert!(false, "the records are not the state's last field");
        let mut frame = serde_json::to_vec(state).expect("state serializes");
        frame.push(b'\n');
        return Encoded {
            cuts: vec![frame.len()],
            frame,
            texts: Vec::new(),
        };
    }
    frame.truncate(frame.len() - 2);
    let mut cuts = Vec::with_capacity(state.services.len() + 2);
    let mut texts = Vec::with_capacity(state.services.len());
    cuts.push(frame.len());
    for (i, (name, record)) in state.services.iter().enumerate() {
        if i > 0 {
            frame.push(b',');
        }
        serde_json::to_writer(&mut frame, name).expect("names serialize");
        frame.push(b':');
        cuts.push(frame.len());
        texts.push(record.text());
    }
    frame.extend_from_slice(b"}}\n");
    cuts.push(frame.len());
    Encoded { frame, cuts, texts }
}

/// Writes `bytes` to `path` atomically with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    // The temp file and the rename happen in this directory: it must be ours and private
    // (a symbolic link at `path` itself is replaced by the rename, never written through).
    if let Some(dir) = path.parent() {
        crate::fsutil::check_dir(dir, true)?;
    }
    let mut f = atomic_write_file::AtomicWriteFile::open(path).map_err(io(path))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.commit().map_err(io(path))
}

/// As [`write_private`] without `fsync`: a temp file next to `path` (created exclusively,
/// mode 0600, never through a link), written, then renamed over `path`.
pub fn write_private_unsynced(path: &Path, bytes: &[u8]) -> Result<()> {
    write_parts_unsynced(path, &mut [std::io::IoSlice::new(bytes)])
}

/// As [`write_private_unsynced`], the file being `parts` one after the other (written with
/// `writev`, not joined first).
fn write_parts_unsynced(path: &Path, parts: &mut [std::io::IoSlice<'_>]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    if let Some(dir) = path.parent() {
        crate::fsutil::check_dir(dir, true)?;
    }
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut attempts = 0;
    let (tmp, mut file) = loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_file_name(format!(".{base}.{}.{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            // A leftover of an earlier process with this PID: another name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 8 => {
                attempts += 1;
            }
            Err(e) => return Err(io(path)(e)),
        }
    };
    let done = write_all_parts(&mut file, parts).and_then(|()| std::fs::rename(&tmp, path));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done.map_err(io(path))
}

/// Writes every byte of `parts`, as few `writev` calls as the kernel takes (at most `IOV_MAX`
/// pieces each).
fn write_all_parts(
    file: &mut std::fs::File,
    mut parts: &mut [std::io::IoSlice<'_>],
) -> std::io::Result<()> {
    use std::io::Write;
    std::io::IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        match file.write_vectored(parts) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A newer format reads as far as its fields overlap (for display); `save` refuses to write it.
fn parse(bytes: &[u8]) -> std::result::Result<State, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

fn format_version_of(bytes: &[u8]) -> Option<u32> {
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    serde_json::from_slice::<Version>(bytes)
        .ok()
        .map(|v| v.format_version)
}

/// Service names are free text in mirrord; file names get a safe spelling.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_read_round_trips_with_private_modes() {
        use std::os::unix::fs::MetadataExt;
        let (_root, store, lock) = opened();
        let state = State::new("p");
        store.save(&lock, &state).unwrap();
        assert_eq!(store.read().unwrap(), Some(state));
        let mode = std::fs::metadata(store.state_path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = std::fs::metadata(&store.dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // Replaced again, by rename of a temp file: nothing else is left in the directory.
        let mut other = State::new("p");
        other.file = Some("/x.yaml".into());
        store.save(&lock, &other).unwrap();
        assert_eq!(store.read().unwrap(), Some(other));
        let mode = std::fs::metadata(store.state_path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut names: Vec<String> = std::fs::read_dir(&store.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "logs",
                "services",
                "state.journal",
                "state.json",
                "state.lock"
            ]
        );
        let mode = std::fs::metadata(journal::path_of(&store.state_path()))
            .unwrap()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    /// The example state file of this format, parsed.
    /// A state store of project `p` in a temp dir, locked.
    fn opened() -> (tempfile::TempDir, StateStore, StateLock) {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::open(root.path(), "p").unwrap();
        let lock = store.lock(Duration::from_secs(1)).unwrap();
        (root, store, lock)
    }

    /// The example of format 1, as this binary saves it (format 2).
    fn example() -> State {
        let text = include_str!("../../state/v1.example.json");
        let mut state: State = serde_json::from_str(text).expect("the example parses");
        state.format_version = FORMAT_VERSION;
        state
    }

    /// The generation the snapshot on disk names.
    fn generation(store: &StateStore) -> String {
        let bytes = std::fs::read(store.state_path()).unwrap();
        parse(&bytes).unwrap().journal.expect("a format 2 snapshot")
    }

    /// What serde writes for `state` as the snapshot of `generation`, and a newline.
    fn serde_text(state: &State, generation: &str) -> Vec<u8> {
        let mut tagged = state.clone();
        tagged.format_version = FORMAT_VERSION;
        tagged.journal = Some(generation.to_owned());
        let mut text = serde_json::to_vec(&tagged).unwrap();
        text.push(b'\n');
        text
    }

    fn from_disk(store: &StateStore) -> State {
        on_disk(&store.state_path()).expect("a state on disk")
    }

    fn appends() -> usize {
        last::APPENDS.with(std::cell::Cell::get)
    }

    fn snapshots() -> usize {
        last::FILE_WRITES.with(std::cell::Cell::get)
    }

    /// One edit of a state: what a pass does to it.
    #[derive(Debug, Clone)]
    enum Edit {
        Status(usize),
        Offset(usize, u64),
        Config(usize, String),
        Remove(usize),
        Copy(usize, String),
        Head(String),
    }

    fn apply(state: &mut State, edit: &Edit) {
        let nth = |state: &State, i: usize| -> Option<String> {
            let n = state.services.len();
            (n > 0).then(|| state.services.keys().nth(i % n).cloned().expect("in range"))
        };
        match edit {
            Edit::Status(i) => {
                if let Some(n) = nth(state, *i) {
                    let r = state.services.get_mut(&n).unwrap();
                    r.status = match r.status {
                        Status::Running => Status::Exited,
                        _ => Status::Running,
                    };
                }
            }
            Edit::Offset(i, to) => {
                if let Some(n) = nth(state, *i) {
                    state.services.get_mut(&n).unwrap().log_offset = *to;
                }
            }
            Edit::Config(i, value) => {
                if let Some(n) = nth(state, *i) {
                    let spec =
                        std::sync::Arc::make_mut(&mut state.services.get_mut(&n).unwrap().spec);
                    let mut config = (*spec.mirrord_config).clone();
                    config["feature"]["env"]["override"]["EDITED"] = value.clone().into();
                    spec.mirrord_config = config.into();
                }
            }
            Edit::Remove(i) => {
                if let Some(n) = nth(state, *i) {
                    state.services.remove(&n);
                }
            }
            Edit::Copy(i, name) => {
                if let Some(n) = nth(state, *i) {
                    let mut r = ServiceRecord::clone(&state.services[&n]);
                    std::sync::Arc::make_mut(&mut r.spec).name = name.clone();
                    state.services.insert(name.clone(), r.into());
                }
            }
            Edit::Head(file) => state.file = Some(file.into()),
        }
    }

    fn edit() -> impl proptest::strategy::Strategy<Value = Edit> {
        use proptest::prelude::*;
        prop_oneof![
            any::<usize>().prop_map(Edit::Status),
            (any::<usize>(), any::<u64>()).prop_map(|(i, o)| Edit::Offset(i, o)),
            (any::<usize>(), "[a-z\"\\\\é]{0,4}").prop_map(|(i, v)| Edit::Config(i, v)),
            any::<usize>().prop_map(Edit::Remove),
            (any::<usize>(), "[a-z0-9\"é]{1,4}").prop_map(|(i, n)| Edit::Copy(i, n)),
            "/[a-z]{1,3}.yaml".prop_map(Edit::Head),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

        /// Whatever a sequence of passes does to the records, each save's text is what serde
        /// writes for that state, though unchanged records keep the text they were saved with.
        #[test]
        fn an_encoded_state_is_what_serde_writes(edits in proptest::collection::vec(edit(), 1..24)) {
            let want = |state: &State| serde_text(state, "g");
            let mut state = example();
            proptest::prop_assert_eq!(encode(&state, "g").to_vec(), want(&state));
            for e in &edits {
                apply(&mut state, e);
                let now = encode(&state, "g").to_vec();
                let wanted = want(&state);
                proptest::prop_assert_eq!(
                    String::from_utf8_lossy(&now),
                    String::from_utf8_lossy(&wanted),
                    "after {:?}", e
                );
            }
        }
    }

    /// A changed record's text reuses its spec's text while it holds that very spec (a status
    /// or a PID changed); a spec replaced or written to is serialized again. Every text is
    /// byte for byte what serializing the record writes.
    #[test]
    fn a_changed_record_keeps_its_spec_text_while_it_holds_that_spec() {
        let specs = || SPECS_SERIALIZED.with(std::cell::Cell::get);
        let plain = |r: &SharedRecord| serde_json::to_vec(&**r).unwrap();
        let state = example();
        let first: SharedRecord = state.services.values().next().unwrap().clone();
        let before = specs();
        assert_eq!(first.text(), plain(&first));
        assert_eq!(specs() - before, 1);
        // A status changed: the spec's text is kept.
        let mut changed = first.clone();
        changed.status = Status::Stopping;
        changed.process = None;
        assert_eq!(changed.text(), plain(&changed));
        assert_eq!(specs() - before, 1, "the spec was serialized again");
        // The spec written to (through the copy: another spec) and the spec replaced: each
        // serialized again, and its text is the new spec's.
        let mut renamed = changed.clone();
        std::sync::Arc::make_mut(&mut renamed.spec).name = "renamed".into();
        assert_eq!(renamed.text(), plain(&renamed));
        assert!(String::from_utf8_lossy(renamed.text()).contains("\"name\":\"renamed\""));
        assert_eq!(specs() - before, 2);
        let mut replaced = renamed.clone();
        let mut other = ServiceSpec::clone(&replaced.spec);
        other.command = vec!["true".into()];
        replaced.spec = std::sync::Arc::new(other);
        assert_eq!(replaced.text(), plain(&replaced));
        assert_eq!(specs() - before, 3);
        // The original and its texts are as they were.
        assert_eq!(first.text(), plain(&first));
        assert_eq!(specs() - before, 3);
    }

    /// A save serializes only the records that changed since they were last saved: the others
    /// are written from the text they keep, in every copy of the state that shares them; a
    /// record changed through any copy is serialized again, and its old text is not used.
    #[test]
    fn a_save_serializes_only_the_records_that_changed() {
        let serialized = || SERIALIZED.with(std::cell::Cell::get);
        let (_root, store, lock) = opened();
        let mut state = example();
        let n = state.services.len();
        assert!(n >= 2, "the example has records to keep");
        let before = serialized();
        store.save(&lock, &state).unwrap();
        assert_eq!(
            serialized() - before,
            n,
            "the first save serializes each record"
        );
        // A copy (a pass's `before`, the kept state) shares the texts: nothing to serialize.
        let copy = state.clone();
        let before = serialized();
        assert_eq!(encode(&copy, "g").to_vec(), encode(&state, "g").to_vec());
        assert_eq!(serialized(), before);
        // One record changed: that one alone is serialized (for the journal's line), and the
        // files hold the change.
        apply(&mut state, &Edit::Offset(1, 4242));
        let before = serialized();
        store.save(&lock, &state).unwrap();
        assert_eq!(serialized() - before, 1, "only the changed record");
        assert_eq!(from_disk(&store), state);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let want = serde_text(&state, "g");
        let before = serialized();
        assert_eq!(
            text(&encode(&state, "g").to_vec()),
            text(&want),
            "byte for byte what serde writes"
        );
        assert_eq!(serialized(), before, "a snapshot reuses the line's text");
        // The copy made before the change still has the old value and its old text.
        let name = state.services.keys().nth(1).unwrap().clone();
        assert_ne!(copy.services[&name].log_offset, 4242);
        let before = serialized();
        let old = encode(&copy, "g").to_vec();
        assert_eq!(serialized(), before, "the old version kept its text");
        assert_eq!(text(&old), text(&serde_text(&copy, "g")));
        // A write through `&mut` that leaves the same value still drops the text (it cannot
        // know): serialized again, same bytes.
        let offset = state.services[&name].log_offset;
        state.services.get_mut(&name).unwrap().log_offset = offset;
        let before = serialized();
        assert_eq!(text(&encode(&state, "g").to_vec()), text(&want));
        assert_eq!(serialized() - before, 1);
    }

    /// A state of more pieces than one `writev` takes (`IOV_MAX`, 1024: two per record) is
    /// written whole, byte for byte what serde writes.
    #[test]
    fn a_state_of_more_pieces_than_one_writev_takes_is_written_whole() {
        let (_root, store, lock) = opened();
        let mut state = example();
        let first = state.services.values().next().unwrap().clone();
        for i in 0..700 {
            let mut r = ServiceRecord::clone(&first);
            r.log_offset = i;
            state.services.insert(format!("svc-{i:04}"), r.into());
        }
        store.save(&lock, &state).unwrap();
        let on_disk = std::fs::read(store.state_path()).unwrap();
        let want = serde_text(&state, &generation(&store));
        assert!(encode(&state, "g").parts().len() > 1024);
        assert_eq!(on_disk.len(), want.len());
        assert!(on_disk == want, "byte for byte what serde writes");
    }

    /// Through the store: a save after a change appends the changed records to the journal,
    /// and what is read back (by another process: parsed) is the state saved.
    #[test]
    fn a_save_after_a_change_writes_the_change() {
        let (_root, store, lock) = opened();
        let mut state = example();
        let retired = || retired::RETIRED.with(std::cell::Cell::get);
        store.save(&lock, &state).unwrap();
        assert_eq!(retired(), 0, "the first save replaces nothing");
        let (appended, written) = (appends(), snapshots());
        for (n, e) in [
            Edit::Config(0, "one".into()),
            Edit::Status(1),
            Edit::Copy(0, "new".into()),
            Edit::Remove(1),
            Edit::Head("/other.yaml".into()),
        ]
        .into_iter()
        .enumerate()
        {
            apply(&mut state, &e);
            store.save(&lock, &state).unwrap();
            assert_eq!(from_disk(&store), state, "after {e:?}");
            assert_eq!(appends() - appended, n + 1, "after {e:?}");
        }
        assert_eq!(snapshots(), written, "no snapshot written again");
        // A snapshot (this process no longer knows the files): the versions it replaced (the
        // state and its journal) were held across their renames, to be let go later.
        last::forget(&store.state_path());
        apply(&mut state, &Edit::Status(0));
        store.save(&lock, &state).unwrap();
        assert_eq!(snapshots(), written + 1);
        assert_eq!(retired(), 2);
        assert_eq!(from_disk(&store), state);
    }

    /// A state that becomes a copy of another equals it after every kind of edit; while both
    /// record the same names it keeps its own names (not copied again) and shares every
    /// record with the other.
    #[test]
    fn a_state_becomes_a_copy_keeping_its_names() {
        let mut kept = many(5);
        let mut other = kept.clone();
        for e in [
            Edit::Status(1),
            Edit::Config(3, "x".into()),
            Edit::Offset(0, 9),
            Edit::Head("/other.yaml".into()),
            Edit::Copy(2, "new".into()),
            Edit::Remove(0),
        ] {
            apply(&mut other, &e);
            let same_names = kept.services.keys().eq(other.services.keys());
            let names: Vec<*const u8> = kept.services.keys().map(|n| n.as_ptr()).collect();
            kept.become_copy_of(&other);
            assert_eq!(kept, other, "after {e:?}");
            for (mine, theirs) in kept.services.values().zip(other.services.values()) {
                assert!(SharedRecord::same(mine, theirs), "after {e:?}");
            }
            if same_names {
                let now: Vec<*const u8> = kept.services.keys().map(|n| n.as_ptr()).collect();
                assert_eq!(now, names, "names copied again after {e:?}");
            }
        }
    }

    /// `example()` grown to `n` records (copies of its first, named `svc-NNNN`).
    fn many(n: usize) -> State {
        let mut state = example();
        let first = state.services.values().next().unwrap().clone();
        state.services.clear();
        for i in 0..n {
            let mut r = ServiceRecord::clone(&first);
            r.log_offset = i as u64;
            state.services.insert(format!("svc-{i:04}"), r.into());
        }
        state
    }

    fn journal_len(store: &StateStore) -> u64 {
        std::fs::metadata(journal::path_of(&store.state_path()))
            .unwrap()
            .len()
    }

    /// The journal's cost is what changed: one record changed among a hundred is one line
    /// about as long as that record, appended; the snapshot is not written again; another
    /// process reads the change, as does a view.
    #[test]
    fn a_save_of_one_changed_record_appends_a_line_the_size_of_that_record() {
        let (_root, store, lock) = opened();
        let mut state = many(100);
        store.save(&lock, &state).unwrap();
        let snapshot = std::fs::read(store.state_path()).unwrap();
        let before = journal_len(&store);
        let (appended, written) = (appends(), snapshots());
        state.services.get_mut("svc-0042").unwrap().log_offset = 4242;
        store.save(&lock, &state).unwrap();
        assert_eq!((appends() - appended, snapshots() - written), (1, 0));
        assert_eq!(std::fs::read(store.state_path()).unwrap(), snapshot);
        let record = state.services["svc-0042"].text().len() as u64;
        let grew = journal_len(&store) - before;
        assert!(
            record < grew && grew < record + 64,
            "the line is {grew} bytes for a record of {record}"
        );
        assert_eq!(from_disk(&store), state);
        assert_eq!(store.log_offset("svc-0042"), Some(4242));
        // Another process (this one, having forgotten what it wrote) reads it all.
        last::forget(&store.state_path());
        assert_eq!(store.read().unwrap(), Some(state.clone()));
        last::forget(&store.state_path());
        assert_eq!(store.log_offset("svc-0042"), Some(4242));
        let view = store.view::<serde::de::IgnoredAny>().unwrap();
        assert_eq!(view.services.len(), 100);
        assert_eq!(view.file, state.file);
    }

    /// Saves keep appending until the journal would outgrow the snapshot; the next save writes
    /// the whole state as a new snapshot with an empty journal. Every version reads whole.
    #[test]
    fn the_journal_is_folded_into_a_new_snapshot_once_it_outgrows_it() {
        let (_root, store, lock) = opened();
        let mut state = many(20);
        store.save(&lock, &state).unwrap();
        let header = journal_len(&store);
        let written = snapshots();
        let mut folded_at = None;
        for i in 0..200u64 {
            let name = format!("svc-{:04}", i % 20);
            state.services.get_mut(&name).unwrap().log_offset = 1000 + i;
            store.save(&lock, &state).unwrap();
            assert_eq!(from_disk(&store), state, "after save {i}");
            let snapshot = std::fs::metadata(store.state_path()).unwrap().len();
            assert!(
                snapshot + journal_len(&store) <= 2 * snapshot.max(64 * 1024),
                "the journal outgrew its bound"
            );
            if snapshots() > written {
                folded_at = Some(i);
                assert_eq!(journal_len(&store), header, "a new, empty journal");
                break;
            }
        }
        let folded_at = folded_at.expect("the journal was never folded into a snapshot");
        assert!(folded_at > 10, "folded after {folded_at} saves only");
    }

    /// A save that changes most records writes a snapshot when the journal already holds
    /// lines, and its line is given up as soon as it is longer than could be appended (it is
    /// not made whole in vain).
    #[test]
    fn a_save_changing_every_record_is_a_snapshot_and_its_line_is_cut_short() {
        let (_root, store, lock) = opened();
        let mut state = many(100);
        store.save(&lock, &state).unwrap();
        state.services.get_mut("svc-0001").unwrap().log_offset = 1;
        store.save(&lock, &state).unwrap();
        let before = state.clone();
        // A change of more than a status (a status alone becoming `stopping` is a name in the
        // line: `a_stops_intent_is_a_line_of_names`).
        for r in state.services.values_mut() {
            r.status = Status::Stopping;
            r.last_reason = Some("down requested".into());
        }
        let longest = journal::longest(1000, 0, 100, 100);
        assert_eq!(longest, Some(2 * 64 * 1024 - 1000));
        let whole = journal::line(&before, &state, None).expect("a line").len() as u64;
        assert!(whole > 2 * 64 * 1024, "{whole}");
        assert_eq!(journal::line(&before, &state, Some(10_000)), None);
        // The line is measured before it is made, exactly (plain names): one byte short of
        // its length (without its closing `}}` and newline) and it is not made at all.
        let measured = whole - 3;
        assert_eq!(journal::line(&before, &state, Some(measured - 1)), None);
        assert_eq!(
            journal::line(&before, &state, Some(measured)).map(|l| l.len() as u64),
            Some(whole)
        );
        let (appended, written) = (appends(), snapshots());
        store.save(&lock, &state).unwrap();
        assert_eq!((appends(), snapshots()), (appended, written + 1));
        assert_eq!(from_disk(&store), state);
    }

    /// A stop's intent (records whose status alone becomes `stopping`: every record, for a
    /// `down`) is appended as their names, nothing serialized; a reader sets their status as
    /// the writer had it. A line may carry both kinds: records written whole, names.
    #[test]
    fn a_stops_intent_is_a_line_of_names() {
        let (_root, store, lock) = opened();
        let mut state = many(100);
        store.save(&lock, &state).unwrap();
        let (appended, written) = (appends(), snapshots());
        let serialized = SERIALIZED.with(std::cell::Cell::get);
        for r in state.services.values_mut() {
            r.status = Status::Stopping;
        }
        let header = journal_len(&store);
        store.save(&lock, &state).unwrap();
        assert_eq!((appends(), snapshots()), (appended + 1, written));
        assert_eq!(
            SERIALIZED.with(std::cell::Cell::get),
            serialized,
            "no record serialized"
        );
        let line = journal_len(&store) - header;
        assert!(line < 100 * 16, "a line of 100 names: {line} bytes");
        assert_eq!(from_disk(&store), state);
        // Then one more record stopping, and another changed in more than its status.
        let mut mixed = many(3);
        store.save(&lock, &mixed).unwrap();
        let names: Vec<String> = mixed.services.keys().cloned().collect();
        mixed.services.get_mut(&names[0]).unwrap().status = Status::Stopping;
        let other = mixed.services.get_mut(&names[1]).unwrap();
        other.status = Status::Stopping;
        other.restarts += 1;
        let appended = appends();
        store.save(&lock, &mixed).unwrap();
        assert_eq!(appends(), appended + 1);
        assert_eq!(from_disk(&store), mixed);
        assert_ne!(
            from_disk(&store).services[&names[2]].status,
            Status::Stopping
        );
    }

    /// A save that leaves a small state after a large one (`down` removing every record)
    /// writes a snapshot: no reader parses a large snapshot to remove it all.
    #[test]
    fn a_save_that_empties_the_state_writes_a_snapshot() {
        let (_root, store, lock) = opened();
        let mut state = many(100);
        store.save(&lock, &state).unwrap();
        let written = snapshots();
        state.services.clear();
        store.save(&lock, &state).unwrap();
        assert_eq!(snapshots(), written + 1);
        assert!(std::fs::metadata(store.state_path()).unwrap().len() < 1024);
        assert_eq!(from_disk(&store), state);
    }

    /// A last line without its newline (torn by a crash, or still being written) is not
    /// there; a line that does not parse ends the journal. Either way the next save writes a
    /// snapshot, never a line after them.
    #[test]
    fn a_torn_or_bad_journal_line_is_skipped_and_never_appended_after() {
        use std::io::Write;
        let (_root, store, lock) = opened();
        let mut state = many(5);
        store.save(&lock, &state).unwrap();
        state.services.get_mut("svc-0001").unwrap().log_offset = 11;
        store.save(&lock, &state).unwrap();
        let path = journal::path_of(&store.state_path());
        let append = |bytes: &[u8]| {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap()
                .write_all(bytes)
                .unwrap();
        };
        append(br#"{"services":{"svc-0002":null"#);
        assert_eq!(from_disk(&store), state, "the torn line is not there");
        assert_eq!(store.load(&lock).unwrap(), state);
        let written = snapshots();
        state.services.get_mut("svc-0003").unwrap().log_offset = 33;
        store.save(&lock, &state).unwrap();
        assert_eq!(snapshots(), written + 1, "appended after a torn line");
        assert_eq!(from_disk(&store), state);
        // A line that does not parse, then a good one: the journal ends before the bad one.
        append(b"not json\n");
        append(br#"{"services":{"svc-0004":null}}"#);
        append(b"\n");
        last::forget(&store.state_path());
        assert_eq!(store.load(&lock).unwrap(), state);
        let written = snapshots();
        state.services.get_mut("svc-0000").unwrap().log_offset = 7;
        store.save(&lock, &state).unwrap();
        assert_eq!(snapshots(), written + 1, "appended after a bad line");
        assert_eq!(from_disk(&store), state);
    }

    /// A crash between a new snapshot's rename and its journal's leaves the old journal: it
    /// names another generation, and its lines (already in the snapshot) are not applied.
    #[test]
    fn a_journal_of_another_generation_is_ignored() {
        let (_root, store, lock) = opened();
        let mut state = many(3);
        store.save(&lock, &state).unwrap();
        state.services.get_mut("svc-0001").unwrap().log_offset = 11;
        store.save(&lock, &state).unwrap();
        // The next snapshot, renamed in place; its journal never written.
        let mut next = state.clone();
        next.services.get_mut("svc-0001").unwrap().log_offset = 22;
        write_private(&store.state_path(), &serde_text(&next, "another")).unwrap();
        assert_eq!(from_disk(&store), next);
        assert_eq!(store.load(&lock).unwrap(), next);
        // Nothing is appended to that journal: the next save writes a snapshot.
        let written = snapshots();
        next.services.get_mut("svc-0002").unwrap().log_offset = 222;
        store.save(&lock, &next).unwrap();
        assert_eq!(snapshots(), written + 1);
        assert_eq!(from_disk(&store), next);
    }

    /// Another process reads the state between a new snapshot's rename and its journal's
    /// (here: the journal moved aside, then a journal of another generation in its place):
    /// when the journal comes, with lines in it, a read sees them; it did not (the first read
    /// was kept while the snapshot was unchanged), and concurrent `ci start`s lost records.
    #[test]
    fn a_read_before_a_snapshots_journal_came_sees_it_when_it_comes() {
        let (_root, store, lock) = opened();
        let path = store.state_path();
        let journal_path = journal::path_of(&path);
        let aside = journal_path.with_file_name("journal.aside");
        let first = many(2);
        store.save(&lock, &first).unwrap();
        let mut second = first.clone();
        second.services.get_mut("svc-0001").unwrap().log_offset = 11;
        store.save(&lock, &second).unwrap();
        assert_eq!(from_disk(&store), second, "appended to the journal");
        for other in [None, Some(journal::header("another"))] {
            std::fs::rename(&journal_path, &aside).unwrap();
            if let Some(header) = &other {
                write_private(&journal_path, header).unwrap();
            }
            last::forget(&path);
            assert_eq!(
                store.read().unwrap(),
                Some(first.clone()),
                "the snapshot alone"
            );
            std::fs::rename(&aside, &journal_path).unwrap();
            assert_eq!(
                store.read().unwrap(),
                Some(second.clone()),
                "the journal that came (another generation's before it: {})",
                other.is_some()
            );
            assert_eq!(store.load(&lock).unwrap(), second);
        }
    }

    /// A state of format 1 (no journal) is read as it is; the first save writes format 2
    /// with its journal, and later saves append.
    #[test]
    fn a_format_1_state_is_read_and_saved_as_format_2() {
        let (_root, store, lock) = opened();
        let text = include_str!("../../state/v1.example.json");
        std::fs::write(store.state_path(), text).unwrap();
        let mut state = store.load(&lock).unwrap();
        assert_eq!(state.format_version, 1);
        assert_eq!(state.services.len(), 2);
        let name = state.services.keys().next().unwrap().clone();
        state.services.get_mut(&name).unwrap().log_offset = 5;
        let (appended, written) = (appends(), snapshots());
        store.save(&lock, &state).unwrap();
        assert_eq!((appends(), snapshots()), (appended, written + 1));
        let on_disk = parse(&std::fs::read(store.state_path()).unwrap()).unwrap();
        assert_eq!(on_disk.format_version, 2);
        assert!(on_disk.journal.is_some());
        state.services.get_mut(&name).unwrap().log_offset = 6;
        store.save(&lock, &state).unwrap();
        assert_eq!(appends(), appended + 1);
        let mut want = state.clone();
        want.format_version = FORMAT_VERSION;
        assert_eq!(from_disk(&store), want);
    }

    /// A journal line: random bytes, or a line that parses (or nearly) naming the records of
    /// `many(5)`.
    fn journal_line() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let entry = "\\{\"services\":\\{\"svc-000[0-4]\":(null|\\{\\}|1|\"x\")\\}(,\"head\":(null|\\{\\}|\\{\"project\":\"q\"\\}))?\\}";
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            entry.prop_map(String::into_bytes),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

        /// Whatever a sequence of passes does to the records (change, add, remove, the head),
        /// each save — a journal line or a snapshot — leaves on disk the state saved.
        #[test]
        fn every_save_reads_back_as_the_state_saved(edits in proptest::collection::vec(edit(), 1..40)) {
            let (_root, store, lock) = opened();
            let mut state = many(6);
            store.save(&lock, &state).unwrap();
            for e in &edits {
                apply(&mut state, e);
                store.save(&lock, &state).unwrap();
                proptest::prop_assert_eq!(&from_disk(&store), &state, "after {:?}", e);
            }
        }

        /// Whatever bytes follow a journal's header, a read neither panics nor fails: the
        /// lines that parse before the first one that does not are applied.
        #[test]
        fn any_journal_bytes_read_without_a_panic(
            lines in proptest::collection::vec(journal_line(), 0..8),
            newline_last in proptest::prelude::any::<bool>(),
        ) {
            use std::io::Write;
            let (_root, store, lock) = opened();
            let state = many(5);
            store.save(&lock, &state).unwrap();
            let path = journal::path_of(&store.state_path());
            let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
            for (i, l) in lines.iter().enumerate() {
                file.write_all(l).unwrap();
                if i + 1 < lines.len() || newline_last {
                    file.write_all(b"\n").unwrap();
                }
            }
            drop(file);
            last::forget(&store.state_path());
            let read = store.read().unwrap().expect("present");
            proptest::prop_assert!(read.services.len() <= 5);
            let _ = store.view::<serde::de::IgnoredAny>();
            let _ = store.log_offset("svc-0001");
            // And a save after it is read back whole.
            let mut next = read.clone();
            next.file = Some("/after.yaml".into());
            store.save(&lock, &next).unwrap();
            proptest::prop_assert_eq!(from_disk(&store), next);
        }
    }

    #[test]
    fn a_read_after_a_save_sees_a_change_made_by_another_writer() {
        let (_root, store, lock) = opened();
        let state = State::new("p");
        store.save(&lock, &state).unwrap();
        assert_eq!(store.read().unwrap(), Some(state.clone()));
        // Another process rewrites it (same length even): the cached copy must not be used.
        let text = std::fs::read_to_string(store.state_path()).unwrap();
        let other = text.replacen("\"project\":\"p\"", "\"project\":\"q\"", 1);
        assert_ne!(text, other);
        assert_eq!(text.len(), other.len());
        write_private(&store.state_path(), other.as_bytes()).unwrap();
        assert_eq!(store.read().unwrap().unwrap().project, "q");
        // Removed: absent, not the cached copy.
        std::fs::remove_file(store.state_path()).unwrap();
        assert_eq!(store.read().unwrap(), None);
    }

    #[test]
    fn an_unchanged_state_is_not_written_again_unless_another_writer_replaced_it() {
        use std::os::unix::fs::MetadataExt;
        let (_root, store, lock) = opened();
        let mut state = State::new("p");
        state.file = Some("/a.yaml".into());
        store.save(&lock, &state).unwrap();
        let ino = || std::fs::metadata(store.state_path()).unwrap().ino();
        let first = ino();
        // The same state again: nothing is written (the file is still the same inode).
        store.save(&lock, &state).unwrap();
        assert_eq!(ino(), first, "an equal state was written again");
        // A read of our own version is that state.
        assert_eq!(store.load(&lock).unwrap(), state);
        // A change is written (to the journal).
        state.file = Some("/b.yaml".into());
        store.save(&lock, &state).unwrap();
        assert_eq!(from_disk(&store), state);
        assert_eq!(store.read().unwrap(), Some(state.clone()));
        // Another writer replaces it: saving the state we saved last writes it back.
        let mut other = state.clone();
        other.file = Some("/c.yaml".into());
        write_private(&store.state_path(), &serde_json::to_vec(&other).unwrap()).unwrap();
        assert_eq!(
            store.read().unwrap().unwrap().file,
            Some("/c.yaml".into()),
            "the other writer's version is read, not our last one"
        );
        store.save(&lock, &state).unwrap();
        assert_eq!(store.read().unwrap(), Some(state));
        assert!(
            std::fs::read_to_string(store.state_path())
                .unwrap()
                .contains("/b.yaml")
        );
        // Rewritten in place with the same length by something else: read, not remembered.
        let text = std::fs::read_to_string(store.state_path()).unwrap();
        std::fs::write(store.state_path(), text.replace("/b.yaml", "/d.yaml")).unwrap();
        assert_eq!(store.read().unwrap().unwrap().file, Some("/d.yaml".into()));
    }

    fn file_reads() -> usize {
        last::FILE_READS.with(std::cell::Cell::get)
    }

    /// Waits until the kernel's file clock has moved past the ctime of `path` (a file changed
    /// now gets a ctime of its own, even where that clock is coarse).
    fn wait_for_the_file_clock(path: &Path) {
        use std::os::unix::fs::MetadataExt;
        let ctime = |p: &Path| {
            let m = std::fs::metadata(p).unwrap();
            (m.ctime(), m.ctime_nsec())
        };
        let probe = path.with_file_name("clock-probe");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            std::fs::write(&probe, b"x").unwrap();
            if ctime(&probe) > ctime(path) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the file clock stands"
            );
        }
        std::fs::remove_file(&probe).unwrap();
    }

    /// The version this process saved, then the one it read, are not read again while the
    /// file is unchanged; a one-shot command's write (by rename) between two reads is read.
    #[test]
    fn a_version_saved_or_read_last_is_not_read_again_until_another_writer_replaces_it() {
        let (_root, store, lock) = opened();
        let mut state = example();
        store.save(&lock, &state).unwrap();
        let reads = file_reads();
        assert_eq!(store.load(&lock).unwrap(), state);
        assert_eq!(store.read().unwrap(), Some(state.clone()));
        assert_eq!(file_reads(), reads, "our own version was read from disk");
        // A one-shot `stop` between two passes: its version is read, once.
        let mut other = state.clone();
        apply(&mut other, &Edit::Status(0));
        apply(&mut other, &Edit::Offset(1, 7));
        write_private_unsynced(&store.state_path(), &serde_json::to_vec(&other).unwrap()).unwrap();
        assert_eq!(
            store.load(&lock).unwrap(),
            other,
            "the other writer's version"
        );
        assert_eq!(file_reads(), reads + 1);
        assert_eq!(store.read().unwrap(), Some(other.clone()));
        assert_eq!(
            file_reads(),
            reads + 1,
            "the version read last was read again"
        );
        // An equal state is not written over it; a changed one is, whole and right (a
        // snapshot without a journal has nothing to append to).
        let ino =
            || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(store.state_path()).unwrap());
        let before = ino();
        store.save(&lock, &other).unwrap();
        assert_eq!(ino(), before, "an equal state was written again");
        state = other;
        apply(&mut state, &Edit::Config(2, "x".into()));
        store.save(&lock, &state).unwrap();
        let bytes = std::fs::read(store.state_path()).unwrap();
        assert_eq!(bytes, serde_text(&state, &generation(&store)));
    }

    /// An edit in place of the same size, with the mtime set back (`touch -r`), is seen: the
    /// ctime moved.
    #[test]
    fn an_in_place_edit_of_the_same_size_with_its_mtime_set_back_is_seen() {
        use std::os::unix::fs::{FileExt, MetadataExt};
        let (_root, store, lock) = opened();
        let mut state = example();
        state.file = Some("/b.yaml".into());
        store.save(&lock, &state).unwrap();
        let path = store.state_path();
        let was = std::fs::metadata(&path).unwrap();
        wait_for_the_file_clock(&path);
        let text = std::fs::read_to_string(&path).unwrap();
        let at = text.find("/b.yaml").unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"/d.yaml", at as u64).unwrap();
        file.set_times(
            std::fs::FileTimes::new()
                .set_modified(was.modified().unwrap())
                .set_accessed(was.accessed().unwrap()),
        )
        .unwrap();
        drop(file);
        let now = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (now.ino(), now.size(), now.mtime(), now.mtime_nsec()),
            (was.ino(), was.size(), was.mtime(), was.mtime_nsec()),
            "only the ctime tells"
        );
        assert_eq!(store.read().unwrap().unwrap().file, Some("/d.yaml".into()));
        assert_eq!(store.load(&lock).unwrap().file, Some("/d.yaml".into()));
    }

    /// Copies of a state share their records; changing one in a copy changes that copy only,
    /// and the records compare by content when they are not the same.
    #[test]
    fn copies_of_a_state_share_records_until_one_is_changed() {
        let state = example();
        assert!(
            state.services.len() >= 2,
            "the example has records to share"
        );
        let mut copy = state.clone();
        let first = copy.services.keys().next().unwrap().clone();
        for (n, r) in &copy.services {
            assert!(SharedRecord::same(r, &state.services[n]), "{n} was copied");
        }
        copy.services.get_mut(&first).unwrap().log_offset += 1;
        assert_ne!(copy, state);
        assert_eq!(
            state.services[&first].log_offset + 1,
            copy.services[&first].log_offset,
            "the change reached the original"
        );
        for (n, r) in &copy.services {
            assert_eq!(
                SharedRecord::same(r, &state.services[n]),
                *n != first,
                "{n}"
            );
        }
        // Equal, not the same: parsed twice.
        assert_eq!(example(), example());
        let mut other = example();
        other.services.get_mut(&first).unwrap().log_offset += 1;
        assert_eq!(other, copy);
        assert_ne!(other, example());
    }

    #[test]
    fn the_log_offset_of_one_service_is_read_alone() {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::open(root.path(), "p").unwrap();
        assert_eq!(store.log_offset("api"), None, "no state file");
        let text = r#"{"format_version":1,"project":"p","services":{"api":{"log_offset":42,"other":[1,{"x":2}]},"db":{}}}"#;
        std::fs::write(store.state_path(), text).unwrap();
        assert_eq!(store.log_offset("api"), Some(42));
        assert_eq!(store.log_offset("db"), Some(0));
        assert_eq!(store.log_offset("web"), None);
        // Saved by this process: answered from what it wrote (no `api` in it); then replaced
        // by another writer: read again.
        let lock = store.lock(Duration::from_secs(1)).unwrap();
        store.save(&lock, &State::new("p")).unwrap();
        assert_eq!(store.log_offset("api"), None);
        let other = text.replace("42", "9");
        write_private(&store.state_path(), other.as_bytes()).unwrap();
        assert_eq!(store.log_offset("api"), Some(9));
    }

    #[test]
    fn newer_format_is_never_overwritten() {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::open(root.path(), "p").unwrap();
        let newer = r#"{"format_version": 99, "project": "p"}"#;
        std::fs::write(store.state_path(), newer).unwrap();
        let lock = store.lock(Duration::from_secs(1)).unwrap();
        let err = store.save(&lock, &State::new("p")).unwrap_err();
        assert!(matches!(err, StateError::TooNew { found: 99, .. }), "{err}");
        assert_eq!(std::fs::read_to_string(store.state_path()).unwrap(), newer);
    }

    #[test]
    fn corrupt_file_is_kept_aside_under_the_lock() {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::open(root.path(), "p").unwrap();
        std::fs::write(store.state_path(), "{\"format_version\": 1, \"proj").unwrap();
        let lock = store.lock(Duration::from_secs(1)).unwrap();
        let err = store.load(&lock).unwrap_err();
        let StateError::Corrupt { kept, .. } = &err else {
            panic!("{err}")
        };
        assert!(kept.exists());
        assert!(!store.state_path().exists());
        assert!(err.to_string().contains("down --force"));
    }

    #[test]
    fn a_symlinked_state_file_is_replaced_never_written_through() {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::open(root.path(), "p").unwrap();
        let target = root.path().join("precious");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, store.state_path()).unwrap();
        let lock = store.lock(Duration::from_secs(1)).unwrap();
        store.save(&lock, &State::new("p")).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        let meta = std::fs::symlink_metadata(store.state_path()).unwrap();
        assert!(meta.is_file(), "the link was replaced by the new file");
    }

    /// A journal planted as a link is refused when the store opens, and never written through.
    #[test]
    fn a_symlinked_journal_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::open(root.path(), "p").unwrap();
        let target = root.path().join("precious");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, journal::path_of(&store.state_path())).unwrap();
        let err = StateStore::open(root.path(), "p").unwrap_err();
        assert!(
            matches!(err, StateError::Unsafe { .. }) && err.to_string().contains("state.journal"),
            "{err}"
        );
        // A save by a store opened before the link appeared replaces it, never follows it.
        let lock = store.lock(Duration::from_secs(1)).unwrap();
        store.save(&lock, &many(2)).unwrap();
        let mut state = many(2);
        state.file = Some("/x.yaml".into());
        store.save(&lock, &state).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(from_disk(&store), state);
    }

    #[test]
    fn a_symlinked_service_dir_is_refused_for_generated_configs() {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::open(root.path(), "p").unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), store.service_dir("api")).unwrap();
        let err = write_private(&store.service_dir("api").join("mirrord.json"), b"{}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("symbolic link") && err.contains("services/api"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }

    #[test]
    fn world_writable_dirs_are_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = StateStore::open(root.path(), "p").unwrap_err();
        assert!(err.to_string().contains("world-writable"), "{err}");
    }
}
