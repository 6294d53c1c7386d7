//! `state.lock`: an exclusive flock held for a whole read-modify-write. Waiters retry until a
//! timeout and then name the holder, whose PID and command the file records.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::StateError;

#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
    /// The state file was loaded under this lock and is not of a newer format: a save need not
    /// read it again to check (nobody else can write it while the lock is held).
    pub(crate) version_checked: std::sync::atomic::AtomicBool,
}

impl StateLock {
    pub fn acquire(path: &Path, timeout: Duration) -> Result<StateLock, StateError> {
        let io = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        // Never through a symbolic link, and only in a directory that is ours: the holder
        // note below truncates the file.
        let mut file = crate::fsutil::open_in_checked_dir(path, crate::fsutil::Access::ReadWrite)?;
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
        // Who holds it, for the message of a waiter that times out.
        let args: Vec<String> = std::env::args().skip(1).take(4).collect();
        let note = format!(
            "pid {} (mirrord-up {})\n",
            std::process::id(),
            args.join(" ")
        );
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = file.write_all(note.as_bytes());
        Ok(StateLock {
            file,
            path: path.to_owned(),
            version_checked: Default::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
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
