//! `state.lock`: an exclusive flock held for a whole read-modify-write. Waiters retry until a
//! timeout and then name the holder, whose PID and command the file records.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
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
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
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
}
