//! Keeping each service's log bounded on disk while the service runs.
//!
//! Services append to their own log files (nothing holds a pipe to a service, see
//! ARCHITECTURE.md), so the file cannot be swapped under a writer. Instead, when a log holds
//! more than its `max-size`, its oldest complete lines are copied to `<name>.log.1` (older
//! copies move to `.2`, … up to `max-file` files in all, compose's meaning) and then released
//! from the live file with `FALLOC_FL_PUNCH_HOLE`: the file keeps its length (it becomes sparse),
//! so the writer's `O_APPEND` position, every follower's offset and every recorded event
//! position stay valid, and no line is lost — bytes are released only after they were copied.
//! A file system without hole punching falls back to copy-then-truncate, where the lines
//! written between the copy and the truncation are lost (README says so).
//!
//! The rotation runs in the supervisor (foreground `up` or `up -d`), woken by the supervisor's
//! inotify instance when a log is written; an idle project wakes nothing. Without a supervisor
//! (`ci start`), a log is rotated only when its service restarts (`rotate_at_restart`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How large a service's log may grow and how many files it keeps (compose's json-file
/// `max-size` and `max-file`: the live file counts as one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub max_size: u64,
    pub max_files: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_size: DEFAULT_MAX_SIZE,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
pub const DEFAULT_MAX_FILES: u32 = 3;
/// The smallest `max-size` accepted: one file-system block of each kind of bookkeeping.
pub const MIN_MAX_SIZE: u64 = 16 * 1024;
pub const MAX_MAX_FILES: u32 = 100;

/// The limits of each service's log, by log path, as the supervisor last started it.
static LIMITS: Mutex<BTreeMap<PathBuf, Limits>> = Mutex::new(BTreeMap::new());

/// How far a reader in this process (the foreground `up`'s printer) has read each log: the
/// rotation does not release what it has not shown yet, unless it falls behind by more than
/// `LAG_ALLOWANCE` times the limit (then it skips, and says so).
static READ_UP_TO: Mutex<BTreeMap<PathBuf, u64>> = Mutex::new(BTreeMap::new());

/// How far behind an in-process reader may fall, in multiples of `max-size`, before the
/// rotation releases lines it has not read.
pub const LAG_ALLOWANCE: u64 = 4;

/// Records that a reader in this process has read `path` up to `offset`.
pub fn read_up_to(path: &Path, offset: u64) {
    if let Ok(mut map) = READ_UP_TO.lock() {
        match map.get_mut(path) {
            Some(o) => *o = offset,
            None => {
                map.insert(path.to_owned(), offset);
            }
        }
    }
}

/// Where a mirrord session's `Ready!` is still being looked for, by log path: set before the
/// session is spawned, released once the watch is over (`Ready!`, its end, its timeout).
static HOLDS: Mutex<BTreeMap<PathBuf, u64>> = Mutex::new(BTreeMap::new());

/// Keeps the rotation from releasing `path` from `offset` on until [`unhold`]: a watch for
/// `Ready!` reads it. Unlike a printer's position, a hold is kept however far the log grows
/// past it (a loud service can write megabytes before a watch started after the pass reads
/// its first lines); it is short-lived, as every watch ends by the session's start timeout.
pub fn hold(path: &Path, offset: u64) {
    if let Ok(mut map) = HOLDS.lock() {
        map.insert(path.to_owned(), offset);
    }
}

/// Ends a [`hold`].
pub fn unhold(path: &Path) {
    if let Ok(mut map) = HOLDS.lock() {
        map.remove(path);
    }
}

/// How far the printer of this process has read `path`.
fn reader_at(path: &Path) -> Option<u64> {
    READ_UP_TO.lock().ok().and_then(|m| m.get(path).copied())
}

/// Where a `Ready!` watch of this process still reads `path`.
fn held_at(path: &Path) -> Option<u64> {
    HOLDS.lock().ok().and_then(|m| m.get(path).copied())
}

/// Records the limits of the log at `path` (called when its service is started).
pub fn set_limits(path: &Path, limits: Limits) {
    if let Ok(mut map) = LIMITS.lock() {
        map.insert(path.to_owned(), limits);
    }
}

fn limits_of(path: &Path) -> Limits {
    LIMITS
        .lock()
        .ok()
        .and_then(|m| m.get(path).copied())
        .unwrap_or_default()
}

/// Parses a compose size: `10m`, `500k`, `1g`, `2048` (bytes); `kb`/`mb`/`gb` and a `b`
/// suffix are accepted too.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let factor: u64 = match unit {
        "" => 1,
        "k" => 1024,
        "m" => 1024 * 1024,
        "g" => 1024 * 1024 * 1024,
        _ => {
            return Err(format!(
                "`{text}` is not a size (use e.g. `10m`, `500k`, `1g`)"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size (use e.g. `10m`, `500k`, `1g`)"))?;
    let bytes = n
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if bytes < MIN_MAX_SIZE {
        return Err(format!("`{text}` is below the smallest max-size, 16k"));
    }
    Ok(bytes)
}

/// The first offset at or after `from` (before `end`) that holds data the rotation did not
/// released: past holes, and past the zeroes a released range leaves in the blocks at its
/// ends (those stay allocated, so `SEEK_DATA` stops at them).
pub fn data_start(file: &File, from: u64, end: u64) -> u64 {
    use nix::unistd::{Whence, lseek};
    let mut at = from;
    let mut buf = [0u8; 4096];
    // Each turn passes a hole and one block of zeroes; a few suffice (zero blocks survive only
    // at the edges of the last released range).
    for _ in 0..64 {
        let Ok(at_i) = i64::try_from(at) else {
            return at;
        };
        at = match lseek(file.as_fd(), at_i, Whence::SeekData) {
            Ok(d) => (d as u64).min(end),
            // ENXIO: nothing but a hole up to the end.
            Err(nix::errno::Errno::ENXIO) => return end,
            Err(_) => return at,
        };
        if at >= end {
            return end;
        }
        let Ok(n) = file.read_at_full(&mut buf, at, end) else {
            return at;
        };
        let zeros = buf[..n].iter().take_while(|b| **b == 0).count();
        at += zeros as u64;
        if zeros < n {
            return at;
        }
    }
    at
}

trait ReadAt {
    fn read_at_full(&self, buf: &mut [u8], at: u64, end: u64) -> std::io::Result<usize>;
}

impl ReadAt for File {
    fn read_at_full(&self, buf: &mut [u8], at: u64, end: u64) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = buf.len().min((end - at) as usize);
        self.read_at(&mut buf[..want], at)
    }
}

/// `<path>.<n>`.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

/// Moves `.1` → `.2` → … making room for a new `.1`; the oldest beyond `max_files - 1`
/// rotated files is removed. Only the files that exist are moved: the first number missing
/// ends the run of renames (whatever lies beyond a gap is older still, and stays), so a
/// rotation costs what it keeps, not `max_files` renames.
fn shift(path: &Path, max_files: u32) {
    let kept = max_files.saturating_sub(1);
    if kept == 0 {
        return;
    }
    let gap = (1..kept)
        .find(|&n| std::fs::symlink_metadata(numbered(path, n)).is_err())
        .unwrap_or(kept);
    if gap == kept {
        let _ = std::fs::remove_file(numbered(path, kept));
    }
    for n in (1..gap).rev() {
        let _ = std::fs::rename(numbered(path, n), numbered(path, n + 1));
    }
}

/// What one rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    /// Bytes moved to `.1`.
    pub moved: u64,
    /// Whether they were released in place (no line can be lost) or truncated (the fallback).
    pub punched: bool,
}

/// Rotates `path` if it holds more than `limits.max_size` bytes of data: the oldest complete
/// lines, leaving about a quarter of the limit in the live file, go to `.1`.
pub fn trim(path: &Path, limits: Limits) -> std::io::Result<Option<Rotated>> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let meta = file.metadata()?;
    let len = meta.len();
    // Cheap first test: the blocks in use.
    if meta.blocks() * 512 <= limits.max_size && len <= limits.max_size {
        return Ok(None);
    }
    let start = data_start(&file, 0, len);
    if len - start <= limits.max_size {
        return Ok(None);
    }
    // Cut after the last newline before the part kept live, and before what a reader here
    // has not read yet, unless it is far behind.
    let keep = limits.max_size / 4;
    let mut before = len - keep;
    if let Some(read) = reader_at(path)
        && len - start <= limits.max_size.saturating_mul(LAG_ALLOWANCE)
    {
        before = before.min(read);
    }
    if let Some(held) = held_at(path) {
        before = before.min(held);
    }
    if before <= start {
        return Ok(None);
    }
    // Just after the last newline before `before` (`start` itself when there is none).
    let cut = crate::tail::line_start_back(&file, start, before, 0)?;
    if cut <= start {
        return Ok(None);
    }
    if limits.max_files <= 1 {
        // No rotated files: the old lines are dropped.
        return release(&file, start, cut, None).map(Some);
    }
    shift(path, limits.max_files);
    let out =
        crate::fsutil::open_in_checked_dir(&numbered(path, 1), crate::fsutil::Access::CreateNew)?;
    copy_range(&file, start, cut, &out)?;
    release(&file, start, cut, Some(&out)).map(Some)
}

/// Releases `[start, cut)` of `file` (already copied), punching a hole, or truncating when
/// the file system cannot punch.
fn release(file: &File, start: u64, cut: u64, copy: Option<&File>) -> std::io::Result<Rotated> {
    use nix::fcntl::{FallocateFlags, fallocate};
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    // From 0, not from `start`: the blocks that earlier releases left holding only zeroes (at
    // their edges) are freed too.
    match fallocate(file.as_fd(), flags, 0, cut as i64) {
        Ok(()) => Ok(Rotated {
            moved: cut - start,
            punched: true,
        }),
        Err(nix::errno::Errno::EOPNOTSUPP) => {
            // Copy what came after the cut too, then empty the file: lines written between
            // the copy and the truncation are lost.
            if let Some(out) = copy {
                copy_range(file, cut, file.metadata()?.len(), out)?;
            }
            file.set_len(0)?;
            Ok(Rotated {
                moved: cut - start,
                punched: false,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Copies `[from, to)` of `src` to the end of `out` inside the kernel (`copy_file_range`: no
/// trip through user space), with a plain read/write loop where that is not supported.
fn copy_range(src: &File, from: u64, to: u64, out: &File) -> std::io::Result<()> {
    use nix::fcntl::copy_file_range;
    let mut off = i64::try_from(from).map_err(std::io::Error::other)?;
    let mut left = to.saturating_sub(from) as usize;
    while left > 0 {
        match copy_file_range(src.as_fd(), Some(&mut off), out.as_fd(), None, left) {
            Ok(0) => return Ok(()),
            Ok(n) => left -= n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(
                nix::errno::Errno::EXDEV
                | nix::errno::Errno::ENOSYS
                | nix::errno::Errno::EOPNOTSUPP
                | nix::errno::Errno::EINVAL,
            ) => {
                let mut src = src;
                src.seek(SeekFrom::Start(off as u64))?;
                let mut out = out;
                std::io::copy(&mut src.take(left as u64), &mut out)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// At a (re)start, with no writer: a log past its limit moves whole to `.1`. Returns the size
/// left (where the new run's output begins).
pub fn rotate_at_restart(path: &Path, limits: Limits) -> u64 {
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    // No larger than its limit: its data cannot be either (nothing to open and measure).
    if meta.len() <= limits.max_size {
        return meta.len();
    }
    let data = File::open(path)
        .map(|f| meta.len() - data_start(&f, 0, meta.len()))
        .unwrap_or(meta.len());
    if data <= limits.max_size {
        return meta.len();
    }
    if limits.max_files <= 1 {
        let _ = std::fs::remove_file(path);
        return 0;
    }
    if data == meta.len() {
        shift(path, limits.max_files);
        let _ = std::fs::rename(path, numbered(path, 1));
        return 0;
    }
    // Sparse after live rotations: keep only the data in `.1`.
    match trim(
        path,
        Limits {
            max_size: 0,
            ..limits
        },
    ) {
        Ok(_) => {
            let _ = std::fs::remove_file(path);
            0
        }
        Err(_) => meta.len(),
    }
}

/// The live rotation: a thread told each time a log is written (by the supervisor's inotify
/// instance, which watches the logs' directory beside the file's: [`RotationFeed`]), which
/// checks that log's size at most every `CHECK_EVERY` (a write that comes sooner schedules one
/// check for the end of that interval, so the last burst is never left unchecked). A log keeps
/// to its limit plus what its service writes in that interval. With nothing written, the
/// thread sleeps without a timeout; it ends when the `Rotator` is dropped.
pub struct Rotator {
    tx: std::sync::mpsc::Sender<PathBuf>,
}

const CHECK_EVERY: Duration = Duration::from_millis(20);

impl Rotator {
    pub fn start() -> Rotator {
        use std::sync::mpsc::RecvTimeoutError;
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        let rotating = move || {
            let mut last: BTreeMap<PathBuf, Instant> = BTreeMap::new();
            let mut due: BTreeMap<PathBuf, Instant> = BTreeMap::new();
            loop {
                let next = due.values().min().copied();
                let got = match next {
                    None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                };
                match got {
                    Ok(path) => {
                        let now = Instant::now();
                        match last.get(&path) {
                            Some(t) if now.duration_since(*t) < CHECK_EVERY => {
                                due.entry(path).or_insert(*t + CHECK_EVERY);
                                continue;
                            }
                            _ => check(&path, &mut last, now),
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                let now = Instant::now();
                let ready: Vec<PathBuf> = due
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(p, _)| p.clone())
                    .collect();
                for p in ready {
                    due.remove(&p);
                    check(&p, &mut last, now);
                }
            }
        };
        // Named, so that `ps -T` and a profile tell its CPU from the printing's.
        if let Err(e) = std::thread::Builder::new()
            .name("log-rotation".into())
            .spawn(rotating)
        {
            tracing::warn!("logs are rotated only at restarts: no rotation thread: {e}");
        }
        Rotator { tx }
    }

    /// What tells the rotation that a log was written, for the watch's reader.
    pub fn feed(&self) -> RotationFeed {
        RotationFeed(self.tx.clone())
    }
}

/// Tells a [`Rotator`] which logs were written; does nothing once it is gone.
#[derive(Clone)]
pub struct RotationFeed(std::sync::mpsc::Sender<PathBuf>);

impl RotationFeed {
    /// `path` (in the logs' directory) was written: checked if it is a service's live log.
    pub fn wrote(&self, path: PathBuf) {
        if crate::tail::is_live_log(&path) {
            let _ = self.0.send(path);
        }
    }
}

fn check(path: &Path, last: &mut BTreeMap<PathBuf, Instant>, now: Instant) {
    last.insert(path.to_owned(), now);
    if let Err(e) = trim(path, limits_of(path)) {
        tracing::debug!("rotating {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `api.log` in a fresh directory (kept while the returned guard lives), with its limits.
    fn api_log(max_size: u64, max_files: u32) -> (tempfile::TempDir, PathBuf, Limits) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("api.log");
        (
            dir,
            log,
            Limits {
                max_size,
                max_files,
            },
        )
    }
    use std::io::Write;

    fn write_lines(path: &Path, from: usize, to: usize) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for i in from..to {
            writeln!(f, "line {i:08} {}", "x".repeat(40)).unwrap();
        }
    }

    fn numbers(text: &[u8]) -> Vec<usize> {
        String::from_utf8_lossy(text)
            .lines()
            .map(|l| l.trim_start_matches('\0'))
            .filter(|l| !l.is_empty())
            .map(|l| l[5..13].parse().unwrap())
            .collect()
    }

    #[test]
    fn sizes_parse_the_compose_way() {
        assert_eq!(parse_size("10m"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("500k"), Ok(500 * 1024));
        assert_eq!(parse_size("1g"), Ok(1024 * 1024 * 1024));
        assert_eq!(parse_size("20MB"), Ok(20 * 1024 * 1024));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("1k").is_err());
        assert!(parse_size("ten").is_err());
        assert!(parse_size("99999999999999999999g").is_err());
        assert!(parse_size("-5m").is_err());
    }

    #[test]
    fn a_trimmed_log_keeps_every_line_across_its_files_and_its_length() {
        let (_dir, log, limits) = api_log(64 * 1024, 100);
        let mut written = 0;
        for _ in 0..20 {
            write_lines(&log, written, written + 1000);
            written += 1000;
            let before = std::fs::metadata(&log).unwrap().len();
            trim(&log, limits).unwrap();
            // The length stays: writers and followers keep their positions.
            assert_eq!(std::fs::metadata(&log).unwrap().len(), before);
        }
        let meta = std::fs::metadata(&log).unwrap();
        assert!(
            meta.blocks() * 512 <= limits.max_size + 8192,
            "{} bytes in use",
            meta.blocks() * 512
        );
        // Oldest first: .N … .1, then the live file.
        let mut all = Vec::new();
        for n in (1..limits.max_files).rev() {
            if let Ok(b) = std::fs::read(numbered(&log, n)) {
                all.extend(numbers(&b));
            }
        }
        all.extend(numbers(&std::fs::read(&log).unwrap()));
        assert_eq!(all, (0..written).collect::<Vec<_>>());
        // Rotated files hold lines only: no zeroes copied from released ranges.
        for n in 1..limits.max_files {
            if let Ok(b) = std::fs::read(numbered(&log, n)) {
                assert!(!b.contains(&0), "zeroes in {}", numbered(&log, n).display());
                assert!(b.len() as u64 <= limits.max_size * 2, "{} bytes", b.len());
            }
        }
    }

    #[test]
    fn only_max_file_files_are_kept() {
        let (_dir, log, limits) = api_log(16 * 1024, 3);
        for round in 0..10 {
            write_lines(&log, round * 1000, round * 1000 + 1000);
            trim(&log, limits).unwrap();
        }
        assert!(numbered(&log, 1).exists());
        assert!(numbered(&log, 2).exists());
        assert!(!numbered(&log, 3).exists());
    }

    #[test]
    fn shifting_moves_the_files_there_are_newest_first_and_keeps_max_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("api.log");
        let put = |n: u32, text: &str| std::fs::write(numbered(&log, n), text).unwrap();
        let got = |n: u32| std::fs::read_to_string(numbered(&log, n)).ok();
        // A gap at `.2`: `.1` moves into it, the older `.3` beyond it stays.
        put(1, "newest");
        put(3, "oldest");
        shift(&log, 4);
        assert_eq!(got(1), None);
        assert_eq!(got(2).as_deref(), Some("newest"));
        assert_eq!(got(3).as_deref(), Some("oldest"));
        // No gap: the oldest kept file goes, each other moves up one.
        put(1, "new");
        shift(&log, 4);
        assert_eq!(got(1), None);
        assert_eq!(got(2).as_deref(), Some("new"));
        assert_eq!(got(3).as_deref(), Some("newest"));
        assert_eq!(got(4), None);
    }

    #[test]
    fn a_follower_skips_released_bytes_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("api.log");
        write_lines(&log, 0, 10);
        let mut tail = crate::tail::LogTail::default();
        tail.follow("api", &log, 0);
        let mut seen = Vec::new();
        tail.read_new(&mut |_, l| {
            seen.push(String::from_utf8_lossy(l).into_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 10);
        write_lines(&log, 10, 5000);
        trim(
            &log,
            Limits {
                max_size: 16 * 1024,
                max_files: 2,
            },
        )
        .unwrap();
        seen.clear();
        tail.read_new(&mut |_, l| {
            seen.push(String::from_utf8_lossy(l).into_owned());
            Ok(())
        })
        .unwrap();
        assert!(
            seen[0].contains("rotated out of this log"),
            "{:?}",
            &seen[..2]
        );
        let rest = numbers(seen[1..].join("\n").as_bytes());
        assert_eq!(rest.last(), Some(&4999));
        assert!(rest.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn restart_rotation_leaves_a_log_within_its_limit_where_it_is() {
        let (_dir, log, limits) = api_log(16 * 1024, 3);
        assert_eq!(rotate_at_restart(&log, limits), 0, "no log yet");
        write_lines(&log, 0, 100);
        let len = std::fs::metadata(&log).unwrap().len();
        assert!(len <= limits.max_size);
        assert_eq!(rotate_at_restart(&log, limits), len);
        assert_eq!(std::fs::metadata(&log).unwrap().len(), len);
        assert!(!numbered(&log, 1).exists());
        // At its limit exactly: still kept; one byte past it: moved to `.1`.
        let exact = Limits {
            max_size: len,
            ..limits
        };
        assert_eq!(rotate_at_restart(&log, exact), len);
        let under = Limits {
            max_size: len - 1,
            ..limits
        };
        assert_eq!(rotate_at_restart(&log, under), 0);
        assert!(numbered(&log, 1).exists());
    }

    #[test]
    fn restart_rotation_keeps_only_the_data_of_a_sparse_log() {
        let (_dir, log, limits) = api_log(16 * 1024, 3);
        write_lines(&log, 0, 2000);
        trim(&log, limits).unwrap();
        write_lines(&log, 2000, 3000);
        assert_eq!(rotate_at_restart(&log, limits), 0);
        assert!(!log.exists());
        let one = std::fs::read(numbered(&log, 1)).unwrap();
        assert!(!one.contains(&0), "no zeroes in a rotated file");
        let two = std::fs::read(numbered(&log, 2)).unwrap();
        let mut all = numbers(&two);
        all.extend(numbers(&one));
        assert_eq!(all, (0..3000).collect::<Vec<_>>());
    }
}
