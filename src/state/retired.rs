//! Replaced versions of the state file, kept open for a while after their replacement.
//!
//! Renaming a new version over the state file drops the old version's last name; if nothing
//! else holds it, the file system frees its blocks inside that `rename`, while the pass that
//! saves waits (ext4: half of a 230 KB save, two thirds of a 1 MB one). A save holds the old
//! version open across its `rename` instead and lets go of it later: in batches, on a thread of
//! their own, or all at once when the supervisor goes idle ([`close_all`]); once the supervisor
//! is ending, each as soon as it is replaced ([`let_go_from_now`]): a process's exit closes
//! what it still holds, and that exit, which `down` waits for, would wait for the blocks to be
//! freed (with the `discard` mount option, for the device to discard them). The new version is
//! unaffected: the rename still replaces it whole, and ext4 still writes its blocks before the
//! rename is committed (`auto_da_alloc`).

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Replaced versions held, oldest first.
static HELD: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());

/// Set once the supervisor is ending: a version is let go as soon as it is replaced.
static AT_ONCE: AtomicBool = AtomicBool::new(false);

/// How many replaced versions are held before a batch is let go (a state of 1,000 services
/// is ≈2.3 MB: at most that times this on disk, unlinked, meanwhile).
pub const BATCH: usize = 4;

/// Opens the version at `path` that a save is about to replace: a regular file only, never
/// through a link, never blocking (a FIFO planted there opens at once and is not kept).
pub fn hold(path: &Path) -> Option<OwnedFd> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(
            nix::libc::O_NOFOLLOW
                | nix::libc::O_NONBLOCK
                | nix::libc::O_NOCTTY
                | nix::libc::O_CLOEXEC,
        )
        .open(path)
        .ok()?;
    let kind = file.metadata().ok()?.file_type();
    (kind.is_file() && !kind.is_fifo()).then(|| file.into())
}

/// Keeps `old` (the version a save just replaced) open; once [`BATCH`] are held, they are let
/// go on a thread of their own.
pub fn retire(old: OwnedFd) {
    #[cfg(test)]
    RETIRED.with(|n| n.set(n.get() + 1));
    let at_once = AT_ONCE.load(Ordering::Relaxed);
    let Some(batch) = HELD
        .lock()
        .ok()
        .and_then(|mut held| push(&mut held, old, at_once))
    else {
        return;
    };
    let_go(batch);
}

/// Closes `batch` on a thread of its own; here when no thread is to be had (a limit).
fn let_go(batch: Vec<OwnedFd>) {
    if let Err(e) = std::thread::Builder::new()
        .name("state-retire".into())
        .spawn(move || drop(batch))
    {
        tracing::debug!("closing replaced state versions inline: {e}");
    }
}

/// The supervisor is ending: what is held is let go now, on a thread of its own, and every
/// version replaced from now on as soon as it is, so that their blocks are freed while the
/// last passes run and answer rather than in the process's exit.
pub fn let_go_from_now() {
    AT_ONCE.store(true, Ordering::Relaxed);
    let held = take_all();
    if !held.is_empty() {
        let_go(held);
    }
}

#[cfg(test)]
thread_local! {
    /// Replaced versions this thread retired (a test runs on a thread of its own).
    pub static RETIRED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Adds `old` to `held`; the whole batch once it is [`BATCH`] long, or `at_once`.
fn push(held: &mut Vec<OwnedFd>, old: OwnedFd, at_once: bool) -> Option<Vec<OwnedFd>> {
    held.push(old);
    (at_once || held.len() >= BATCH).then(|| std::mem::take(held))
}

/// Lets go of every replaced version held (the supervisor is idle).
pub fn close_all() {
    drop(take_all());
}

fn take_all() -> Vec<OwnedFd> {
    HELD.lock()
        .map(|mut h| std::mem::take(&mut *h))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn only_a_regular_file_is_held_never_through_a_link_and_a_fifo_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state.json");
        std::fs::write(&file, b"{}").unwrap();
        assert!(hold(&file).is_some());
        assert!(hold(&dir.path().join("missing")).is_none());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(hold(&link).is_none(), "followed a link");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(hold(&fifo).is_none(), "kept a FIFO");
    }

    #[test]
    fn a_held_version_outlives_its_replacement_and_batches_are_let_go_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut held = Vec::new();
        for i in 0..BATCH {
            std::fs::write(&path, format!("version {i}")).unwrap();
            let old = hold(&path).unwrap();
            let ino = std::fs::metadata(&path).unwrap().ino();
            crate::state::write_private_unsynced(&path, b"next").unwrap();
            // Replaced, still open: the same inode, no name left.
            let kept = std::fs::File::from(old.try_clone().unwrap())
                .metadata()
                .unwrap();
            assert_eq!((kept.ino(), kept.nlink()), (ino, 0));
            let batch = push(&mut held, old, false);
            if i + 1 < BATCH {
                assert!(batch.is_none());
                assert_eq!(held.len(), i + 1);
            } else {
                assert_eq!(batch.map(|b| b.len()), Some(BATCH));
                assert!(held.is_empty());
            }
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"next");
    }

    /// Once the supervisor is ending, a replaced version is let go with those held before it
    /// (`let_go_from_now`), not kept for a batch.
    #[test]
    fn an_ending_supervisor_lets_each_version_go_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut held = Vec::new();
        std::fs::write(&path, "first").unwrap();
        assert!(push(&mut held, hold(&path).unwrap(), false).is_none());
        std::fs::write(&path, "second").unwrap();
        let batch = push(&mut held, hold(&path).unwrap(), true);
        assert_eq!(batch.map(|b| b.len()), Some(2));
        assert!(held.is_empty());
    }
}
