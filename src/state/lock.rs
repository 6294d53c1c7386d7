//! `state.lock`: an exclusive flock held for a whole read-modify-write. Waiters retry until a
//! timeout and then name the holder, whose PID and command the file records.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::StateError;

#[derive(Debug)]
pub struct StateLock {
    /// Always there while held (taken by `drop`, to be kept).
    file: Option<File>,
    path: PathBuf,
    /// The state file was loaded under this lock and is not of a newer format: a save need not
    /// read it again to check (nobody else can write it while the lock is held).
    pub(crate) version_checked: std::sync::atomic::AtomicBool,
}

/// The lock files this process let go of, still open: the supervisor takes the lock for
/// every pass, and taking it again is then a `flock` and a look at the path (that it still
/// names this file), not a walk of the state directory's path and an `open`.
static KEPT: std::sync::Mutex<Vec<(PathBuf, File)>> = std::sync::Mutex::new(Vec::new());
/// One in the supervisor; a test binary's tests each lock a state of their own, side by side.
const FILES_KEPT: usize = if cfg!(test) { 1024 } else { 4 };

#[cfg(test)]
thread_local! {
    /// Lock files this thread opened (not taken from those kept).
    static OPENS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The kept lock file of `path`, if one is kept.
fn take_kept(path: &Path) -> Option<File> {
    let mut kept = KEPT.lock().ok()?;
    let i = kept.iter().position(|(p, _)| p == path)?;
    Some(kept.swap_remove(i).1)
}

/// Keeps `file`, the lock file at `path`, open for the next hold.
fn keep(path: PathBuf, file: File) {
    if let Ok(mut kept) = KEPT.lock() {
        kept.retain(|(p, _)| *p != path);
        if kept.len() >= FILES_KEPT {
            kept.remove(0);
        }
        kept.push((path, file));
    }
}

/// `path` names `file` still (not removed or replaced since it was opened), a regular file.
fn still_names(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(now), Ok(held)) => {
            now.file_type().is_file() && now.dev() == held.dev() && now.ino() == held.ino()
        }
        _ => false,
    }
}

impl StateLock {
    pub fn acquire(path: &Path, timeout: Duration) -> Result<StateLock, StateError> {
        // The file kept from this process's last hold, when it is free and still the lock.
        if let Some(file) = take_kept(path)
            && file.try_lock().is_ok()
        {
            if still_names(path, &file) {
                return Ok(StateLock::held(file, path));
            }
            let _ = file.unlock();
        }
        let io = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        // Never through a symbolic link, and only in a directory that is ours: the holder
        // note below truncates the file.
        let mut file = crate::fsutil::open_in_checked_dir(path, crate::fsutil::Access::ReadWrite)?;
        #[cfg(test)]
        OPENS.with(|n| n.set(n.get() + 1));
        let start = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    if start.elapsed() >= timeout {
                        let mut holder = String::new();
                        let _ = file.read_to_string(&mut holder);
                        let holder = holder.trim();
                        return Err(StateError::LockTimeout {
                            path: path.to_owned(),
                            holder: if holder.is_empty() {
                                "another mirrord-up".into()
                            } else {
                                holder.to_owned()
                            },
                            waited: timeout,
                        });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        Ok(StateLock::held(file, path))
    }

    /// The lock, just taken on `file`: it says who holds it, for the message of a waiter that
    /// times out.
    fn held(mut file: File, path: &Path) -> StateLock {
        static NOTE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let note = NOTE.get_or_init(|| {
            let args: Vec<String> = std::env::args().skip(1).take(4).collect();
            format!(
                "pid {} (mirrord-up {})\n",
                std::process::id(),
                args.join(" ")
            )
        });
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = file.write_all(note.as_bytes());
        StateLock {
            file: Some(file),
            path: path.to_owned(),
            version_checked: Default::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let Some(file) = self.file.take() else {
            return;
        };
        let _ = file.set_len(0);
        let _ = file.unlock();
        keep(std::mem::take(&mut self.path), file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_taker_times_out_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.lock");
        let _held = StateLock::acquire(&p, Duration::from_secs(1)).unwrap();
        let err = StateLock::acquire(&p, Duration::from_millis(50)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("timed out"), "{msg}");
    }

    /// The lock taken again is the file kept open from the last hold, and it still excludes
    /// every other taker; a lock file replaced meanwhile is opened again (the kept one is not
    /// what the path names any more), and so is one that another holder has.
    #[test]
    fn a_lock_taken_again_is_its_kept_file_while_the_path_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.lock");
        let opens = || OPENS.with(std::cell::Cell::get);
        let before = opens();
        drop(StateLock::acquire(&p, Duration::from_secs(1)).unwrap());
        let held = StateLock::acquire(&p, Duration::from_secs(1)).unwrap();
        assert_eq!(opens() - before, 1, "the second hold opened nothing");
        // Another open of the file (as another process's) cannot take it.
        let other = File::open(&p).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        drop(held);
        assert!(other.try_lock().is_ok(), "let go of");
        other.unlock().unwrap();

        // Replaced by another file: the kept one is let go, the new one locked.
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, "").unwrap();
        let before = opens();
        let held = StateLock::acquire(&p, Duration::from_secs(1)).unwrap();
        assert_eq!(opens() - before, 1, "the replaced file was opened");
        let other = File::open(&p).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        drop(held);

        // Held by another open file: waited for on a fresh open, then taken.
        let before = opens();
        other.lock().unwrap();
        let err = StateLock::acquire(&p, Duration::from_millis(20)).unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
        assert_eq!(opens() - before, 1);
    }

    #[test]
    fn a_symlinked_lock_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        let p = dir.path().join("state.lock");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let err = StateLock::acquire(&p, Duration::from_secs(1)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("symbolic link") && msg.contains("state.lock"),
            "{msg}"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }
}
