//! Who owns a stop in flight (issue #11: the lock is taken around each state change, not
//! across waits). A pass that signals a service records it `stopping` and takes its stop lock,
//! `<state>/<project>/services/<name>/stop.lock` (an exclusive `flock`), for the whole stop:
//! until the pass that records its outcome has saved it. The lock is held by this process
//! (the one-shot command that stops, or the supervisor watching the stop), outside the state
//! lock; the kernel releases it when that process dies, so a `stopping` record whose stop lock
//! is free is an interrupted stop (finished and reconciled by the next pass), while one whose
//! lock is held elsewhere is a live stopper's: other processes leave it alone and, when they
//! need the service, wait for the lock outside the state lock, then reconcile.
//!
//! Only passes (under the state lock) take or test a stop lock, so a test is never overtaken
//! by a stop that begins meanwhile.
//!
//! A shutdown (`down`, Ctrl-C, `ci stop` of everything) stops every service: it takes one
//! lock for all of them instead, `<state>/<project>/stop-all.lock` ([`take_all`]), held until
//! it ends. A `stopping` record whose own stop lock is free is that holder's while it lives.
//! (Creating a lock file per service on the first stop of each costs two inodes per service
//! — half a millisecond each on some file systems — in the middle of `down`.)

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::fsutil::{Access, open_in_checked_dir};
use crate::state::StateStore;

/// The stop locks this process holds, by path.
static HELD: Mutex<BTreeMap<PathBuf, File>> = Mutex::new(BTreeMap::new());

fn held() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, File>> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// The stop lock of `service`.
pub fn lock_path(store: &StateStore, service: &str) -> PathBuf {
    store.service_dir(service).join("stop.lock")
}

/// The stop lock of every service (a shutdown's).
pub fn all_path(store: &StateStore) -> PathBuf {
    store.dir.join("stop-all.lock")
}

/// Takes the stop lock of `service` for this process (kept until [`release`]). `true` when this
/// process owns the stop now (taken, held already, or this process holds the lock of all);
/// `false` when another process holds it or the file cannot be used (the stop goes ahead
/// unowned, as before stop locks existed).
pub fn take(store: &StateStore, service: &str) -> bool {
    if held().contains_key(&all_path(store)) {
        return true;
    }
    lock(lock_path(store, service))
}

/// Takes the stop lock of every service for this process (a shutdown: kept until
/// [`release_all`], or until this process ends); as [`take`].
pub fn take_all(store: &StateStore) -> bool {
    lock(all_path(store))
}

/// Releases the stop lock of every service, if this process holds it.
pub fn release_all(store: &StateStore) {
    unlock(&all_path(store));
}

/// Takes the lock file `path` (see [`take`]).
fn lock(path: PathBuf) -> bool {
    let mut held = held();
    if held.contains_key(&path) {
        return true;
    }
    let Ok(mut file) = open_in_checked_dir(&path, Access::ReadWrite) else {
        return false;
    };
    if file.try_lock().is_err() {
        return false;
    }
    // Who stops it, for the message of a command that waits for it.
    let note = format!("pid {} (mirrord-up {})", std::process::id(), command_line());
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = file.write_all(note.as_bytes());
    held.insert(path, file);
    true
}

/// This command as the user would name it: from its subcommand on (global options such as
/// `-f FILE` left out), at most four words; the detached supervisor is `supervisor`.
fn command_line() -> String {
    const COMMANDS: &[&str] = &["up", "down", "stop", "restart", "start", "ci"];
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "__supervise") {
        return "supervisor".to_owned();
    }
    let from = args
        .iter()
        .position(|a| COMMANDS.contains(&a.as_str()))
        .unwrap_or(0);
    args[from..]
        .iter()
        .take(4)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Releases the stop lock of `service`, if this process holds it. Called once its outcome is
/// saved.
pub fn release(store: &StateStore, service: &str) {
    unlock(&lock_path(store, service));
}

fn unlock(path: &Path) {
    if let Some(file) = held().remove(path) {
        let _ = file.set_len(0);
        let _ = file.unlock();
    }
}

/// Whether this process holds the stop lock of `service`.
#[cfg(test)]
pub fn ours(store: &StateStore, service: &str) -> bool {
    held().contains_key(&lock_path(store, service))
}

/// Who holds the stop locks of the services of one pass (under the state lock: only passes
/// take stop locks, so nothing looked at here changes within one but by a holder's death).
/// The lock of all is looked at once, and the services' directories are listed once: a service
/// without one has no stop lock of its own to look for (a `down` of 500 services looked for
/// 500 stop locks, a path lookup each, in the pass that recorded its stops: 4 ms).
pub struct Owners<'s> {
    store: &'s StateStore,
    all: Option<Option<String>>,
    /// The names in `services/` (`None`: not listed yet; `Some(None)`: could not be listed,
    /// every service's lock is looked for).
    dirs: Option<Option<BTreeSet<std::ffi::OsString>>>,
}

impl<'s> Owners<'s> {
    pub fn new(store: &'s StateStore) -> Self {
        Owners {
            store,
            all: None,
            dirs: None,
        }
    }

    /// Who holds the stop lock of `service` (its own, else the lock of all), when a live
    /// process other than this one does (`pid 12 (mirrord-up stop slow)`); `None` when it is
    /// free or ours.
    pub fn of(&mut self, service: &str) -> Option<String> {
        let own = lock_path(self.store, service);
        let store = self.store;
        let may_exist = match self.dirs.get_or_insert_with(|| service_dirs(store)) {
            Some(dirs) => own
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|n| dirs.contains(n)),
            None => true,
        };
        may_exist
            .then(|| holder_elsewhere(&own))
            .flatten()
            .or_else(|| {
                self.all
                    .get_or_insert_with(|| holder_elsewhere(&all_path(store)))
                    .clone()
            })
    }
}

/// The names in the directory of the services' directories (`StateStore::service_dir`); none
/// if there is none yet.
fn service_dirs(store: &StateStore) -> Option<BTreeSet<std::ffi::OsString>> {
    match std::fs::read_dir(store.dir.join("services")) {
        Ok(entries) => Some(entries.filter_map(|e| Some(e.ok()?.file_name())).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(BTreeSet::new()),
        Err(_) => None,
    }
}

/// Who holds the lock file `path`, when a live process other than this one does.
fn holder_elsewhere(path: &Path) -> Option<String> {
    if held().contains_key(path) {
        return None;
    }
    let mut file = open_existing(path)?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(TryLockError::WouldBlock) => {
            let mut note = String::new();
            let _ = file.read_to_string(&mut note);
            let note = note.trim();
            Some(if note.is_empty() {
                "another mirrord-up".to_owned()
            } else {
                note.to_owned()
            })
        }
        Err(TryLockError::Error(_)) => None,
    }
}

fn open_existing(path: &Path) -> Option<File> {
    if !path.exists() {
        return None;
    }
    open_in_checked_dir(path, Access::Read).ok()
}

/// Waits, without any other lock, until none of `services`' stop locks is held by another
/// process, within `limit`. Each wait is a blocking `flock` on a thread of its own; the
/// caller is itself a thread the loop does not wait for (`Effect::AwaitStops`), so an
/// ending loop needs no way to cut it short. Returns the services still held when it gave
/// up.
pub fn wait_released(store: &StateStore, services: &[String], limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut pending = Vec::new();
    // The lock of all (when another process holds it: a shutdown in flight) stands for every
    // service; its wait is the `None` one.
    let all = (!held().contains_key(&all_path(store)))
        .then(|| open_existing(&all_path(store)))
        .flatten();
    let waits = services
        .iter()
        .filter_map(|name| Some((Some(name.clone()), open_existing(&lock_path(store, name))?)))
        .chain(all.map(|f| (None, f)));
    for (name, file) in waits {
        pending.push(name.clone());
        let tx = tx.clone();
        std::thread::spawn(move || {
            // A shared lock: several waiters do not hold each other up. Released at once.
            if file.lock_shared().is_ok() {
                let _ = file.unlock();
            }
            let _ = tx.send(name);
        });
    }
    drop(tx);
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(name) => pending.retain(|n| *n != name),
            Err(_) => break,
        }
    }
    if pending.contains(&None) {
        return services.to_vec();
    }
    pending.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`Owners::of`] of a pass that asks about one service.
    fn owner_elsewhere(store: &StateStore, service: &str) -> Option<String> {
        Owners::new(store).of(service)
    }

    fn store() -> (tempfile::TempDir, StateStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), "p").unwrap();
        (dir, store)
    }

    /// A stop lock taken here is ours, not someone else's; released, it is nobody's. (Another
    /// process's hold is seen through a second open file, which is what a fresh open here is.)
    #[test]
    fn a_held_stop_lock_is_ours_then_free() {
        let (_d, store) = store();
        assert!(owner_elsewhere(&store, "slow").is_none());
        assert!(take(&store, "slow"));
        assert!(ours(&store, "slow"));
        assert!(owner_elsewhere(&store, "slow").is_none());
        // As another process sees it: an open file description of its own.
        let mut other = File::open(lock_path(&store, "slow")).unwrap();
        assert!(matches!(
            other.try_lock_shared(),
            Err(TryLockError::WouldBlock)
        ));
        let mut note = String::new();
        other.read_to_string(&mut note).unwrap();
        assert!(
            note.contains(&format!("pid {}", std::process::id())),
            "{note}"
        );
        release(&store, "slow");
        assert!(!ours(&store, "slow"));
        assert!(other.try_lock_shared().is_ok());
    }

    /// A shutdown takes one lock for every service: its stops create no lock file each, and
    /// the services are its own; held by another process, it names that process for every
    /// service and is waited for.
    #[test]
    fn the_lock_of_all_stands_for_every_service() {
        let (_d, store) = store();
        assert!(take_all(&store));
        assert!(take(&store, "a"));
        assert!(
            !lock_path(&store, "a").exists(),
            "no lock file of its own while the lock of all is held"
        );
        assert!(owner_elsewhere(&store, "a").is_none(), "ours");
        release(&store, "a");
        release_all(&store);
        // Held elsewhere (another open file description, as another process's).
        let f = open_in_checked_dir(&all_path(&store), Access::ReadWrite).unwrap();
        f.lock().unwrap();
        (&f).write_all(b"pid 1 (mirrord-up down)").unwrap();
        assert_eq!(
            owner_elsewhere(&store, "a").as_deref(),
            Some("pid 1 (mirrord-up down)")
        );
        let names = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(
            wait_released(&store, &names, Duration::from_millis(20)),
            names
        );
        f.unlock().unwrap();
        assert!(owner_elsewhere(&store, "a").is_none());
        assert!(wait_released(&store, &names, Duration::from_secs(30)).is_empty());
    }

    /// One pass looks at the lock of all once and lists the services' directories once: what
    /// the first look found is what the last service is told (within a pass, under the state
    /// lock, nothing but a holder's death changes it); a new pass looks again.
    #[test]
    fn a_pass_looks_once_at_the_locks_it_may_need() {
        let (_d, store) = store();
        let all = open_in_checked_dir(&all_path(&store), Access::ReadWrite).unwrap();
        all.lock().unwrap();
        (&all).write_all(b"pid 1 (mirrord-up down)").unwrap();
        let own = open_in_checked_dir(&lock_path(&store, "b"), Access::ReadWrite).unwrap();
        own.lock().unwrap();
        (&own).write_all(b"pid 2 (mirrord-up stop b)").unwrap();
        let mut owners = Owners::new(&store);
        assert_eq!(owners.of("a").as_deref(), Some("pid 1 (mirrord-up down)"));
        assert_eq!(owners.of("b").as_deref(), Some("pid 2 (mirrord-up stop b)"));
        all.unlock().unwrap();
        // A lock of its own taken after the pass listed the directories: not this pass's.
        let late = open_in_checked_dir(&lock_path(&store, "c"), Access::ReadWrite).unwrap();
        late.lock().unwrap();
        assert_eq!(owners.of("c").as_deref(), Some("pid 1 (mirrord-up down)"));
        let mut next = Owners::new(&store);
        assert!(next.of("a").is_none(), "the lock of all is free now");
        assert!(next.of("c").is_some(), "a new pass sees the late lock");
        assert_eq!(next.of("b").as_deref(), Some("pid 2 (mirrord-up stop b)"));
    }

    /// Held by another open file (another process), the lock is someone else's: not taken,
    /// named, waited for until it is released.
    #[test]
    fn a_lock_held_elsewhere_is_named_and_waited_for() {
        let (_d, store) = store();
        let path = lock_path(&store, "slow");
        let f = open_in_checked_dir(&path, Access::ReadWrite).unwrap();
        f.lock().unwrap();
        (&f).write_all(b"pid 1 (mirrord-up stop slow)").unwrap();
        assert!(!take(&store, "slow"));
        assert_eq!(
            owner_elsewhere(&store, "slow").as_deref(),
            Some("pid 1 (mirrord-up stop slow)")
        );
        let names = vec!["slow".to_owned()];
        assert_eq!(
            wait_released(&store, &names, Duration::from_millis(20)),
            names
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let store = StateStore::open(store.dir.parent().unwrap(), "p").unwrap();
            let names = names.clone();
            std::thread::spawn(move || {
                let _ = tx.send(());
                wait_released(&store, &names, Duration::from_secs(30))
            })
        };
        rx.recv().unwrap();
        f.unlock().unwrap();
        assert!(waiter.join().unwrap().is_empty());
    }
}
