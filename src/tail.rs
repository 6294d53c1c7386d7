//! Following service log files as they grow (`logs -f`, foreground `up`): whole lines only,
//! read in bounded chunks (memory does not grow with the file or with a burst), every line in
//! order. A file that shrinks or is replaced (rotation at a restart) is read again from its
//! start; bytes the live rotation released (`crate::logrotate`) before they were read are
//! skipped with a line that says so, never silently. Driven by inotify events from the
//! caller, never by a timer.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bytes read from one file per turn: files are served in turns so that a loud service cannot
/// keep the others' lines back, and memory stays bounded.
const CHUNK: usize = 256 * 1024;

/// A line longer than this is handed over in pieces of this size (memory stays bounded).
pub const MAX_LINE: usize = 1024 * 1024;

struct Followed {
    path: PathBuf,
    offset: u64,
    inode: u64,
    partial: Vec<u8>,
    /// The file, kept open from one turn to the next while it has more to read; closed by the
    /// turn that reads it to its end, so the next turn opens the path again and finds a file
    /// that replaced it (rotation at a restart). A loud service's log is opened once per
    /// burst, not once per chunk.
    open: Option<File>,
}

/// The set of followed logs, by service name.
#[derive(Default)]
pub struct LogTail {
    files: BTreeMap<String, Followed>,
    buf: Vec<u8>,
}

/// Receives each complete line (without its newline).
pub type LineSink<'a> = dyn FnMut(&str, &[u8]) -> std::io::Result<()> + 'a;

impl LogTail {
    /// Follows `path` from `offset` (a service already followed keeps its position unless the
    /// path changed).
    pub fn follow(&mut self, name: &str, path: &Path, offset: u64) {
        if self.files.get(name).is_some_and(|f| f.path == path) {
            return;
        }
        let inode = std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0);
        self.files.insert(
            name.to_owned(),
            Followed {
                path: path.to_owned(),
                offset,
                inode,
                partial: Vec::new(),
                open: None,
            },
        );
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.files.keys()
    }

    /// Hands the complete lines of `name`'s file up to byte `offset` to `sink`, if the file
    /// is still the one with `inode` (a lifecycle event goes after what was written before it).
    pub fn read_upto(
        &mut self,
        name: &str,
        inode: u64,
        offset: u64,
        sink: &mut LineSink<'_>,
    ) -> std::io::Result<()> {
        let buf = &mut self.buf;
        match self.files.get_mut(name) {
            Some(f) if f.inode == inode && offset > f.offset => {
                while read_turn(name, f, Some(offset), buf, sink)? {}
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Hands every new complete line of every followed file to `sink`, the files taking turns
    /// of at most `CHUNK` bytes each until all are read to their end. A file read to its end
    /// gets no further turn in this call: what its service writes meanwhile is the caller's
    /// next change (the callers read after each change they are told of).
    pub fn read_new(&mut self, sink: &mut LineSink<'_>) -> std::io::Result<()> {
        let mut more = vec![true; self.files.len()];
        while more.contains(&true) {
            for ((name, f), more) in self.files.iter_mut().zip(&mut more) {
                if *more {
                    *more = read_turn(name, f, None, &mut self.buf, sink)?;
                }
            }
        }
        Ok(())
    }
}

/// One turn on one file: at most `CHUNK` bytes from its position (up to `limit`). Returns
/// whether more is left to read.
fn read_turn(
    name: &str,
    f: &mut Followed,
    limit: Option<u64>,
    buf: &mut Vec<u8>,
    sink: &mut LineSink<'_>,
) -> std::io::Result<bool> {
    let mut file = match f.open.take() {
        Some(file) => file,
        None => match File::open(&f.path) {
            Ok(file) => file,
            Err(_) => return Ok(false),
        },
    };
    let meta = file.metadata()?;
    if meta.ino() != f.inode || meta.len() < f.offset {
        // Rotated or truncated: a new file starts from the top.
        f.inode = meta.ino();
        f.offset = 0;
        f.partial.clear();
    }
    let end = limit.map_or(meta.len(), |l| l.min(meta.len()));
    if end <= f.offset {
        return Ok(false);
    }
    // Released by the live rotation before it was read: say so, go on from the data.
    let data = crate::logrotate::data_start(&file, f.offset, end);
    if data > f.offset {
        let skipped = data - f.offset;
        f.partial.clear();
        f.offset = data;
        let note = format!(
            "[mirrord-up: {skipped} bytes of output were rotated out of this log before they could be shown]"
        );
        sink(name, note.as_bytes())?;
        if end <= f.offset {
            return Ok(false);
        }
    }
    let want = ((end - f.offset) as usize).min(CHUNK);
    buf.clear();
    buf.reserve(want);
    file.seek(SeekFrom::Start(f.offset))?;
    (&mut file).take(want as u64).read_to_end(buf)?;
    if buf.is_empty() {
        return Ok(false);
    }
    f.offset += buf.len() as u64;
    crate::logrotate::read_up_to(&f.path, f.offset);
    let mut rest: &[u8] = buf;
    // The end of a line begun in an earlier turn.
    if !f.partial.is_empty() {
        match memchr::memchr(b'\n', rest) {
            Some(i) => {
                f.partial.extend_from_slice(&rest[..i]);
                rest = &rest[i + 1..];
                let line = std::mem::take(&mut f.partial);
                sink(name, skip_zeros(&line))?;
            }
            None => {
                f.partial.extend_from_slice(rest);
                rest = &[];
            }
        }
    }
    let mut from = 0;
    for i in memchr::memchr_iter(b'\n', rest) {
        sink(name, skip_zeros(&rest[from..i]))?;
        from = i + 1;
    }
    f.partial.extend_from_slice(&rest[from..]);
    while f.partial.len() >= MAX_LINE {
        let piece: Vec<u8> = f.partial.drain(..MAX_LINE).collect();
        sink(name, &piece)?;
    }
    let more = f.offset < end;
    if more {
        f.open = Some(file);
    }
    Ok(more)
}

/// Whether `path` is a service's live log (`<name>.log`), not a rotated copy (`.log.1`, …),
/// which the rotation writes in chunks, each a file event, and which nothing follows.
pub fn is_live_log(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "log")
}

/// The zeroes a released block left before the first line kept in it are not output.
pub fn skip_zeros(line: &[u8]) -> &[u8] {
    match line.iter().position(|b| *b != 0) {
        Some(i) => &line[i..],
        None if line.is_empty() => line,
        None => &[],
    }
}

/// Reading backwards from `end` (not before `floor`): the offset just after the `n + 1`-th
/// newline before `end`, or `floor` when there are fewer. With `end` just after a newline,
/// that is where the last `n` lines begin; with `n == 0`, where the last complete line ends.
/// Reads only the blocks those lines span.
pub fn line_start_back(f: &File, floor: u64, end: u64, n: usize) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 64 * 1024];
    let mut need = n + 1;
    let mut hi = end;
    while hi > floor {
        let lo = hi.saturating_sub(buf.len() as u64).max(floor);
        let len = (hi - lo) as usize;
        f.read_exact_at(&mut buf[..len], lo)?;
        for i in (0..len).rev() {
            if buf[i] == b'\n' {
                need -= 1;
                if need == 0 {
                    return Ok(lo + i as u64 + 1);
                }
            }
        }
        hi = lo;
    }
    Ok(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(from: usize, to: usize) -> String {
        (from..to).map(|i| format!("line {i:07}\n")).collect()
    }

    /// A log moved aside and replaced (the rotation at a restart) while it is being read turn
    /// by turn: the old file is read to its end, then the new one from its start — no line of
    /// either is lost or shown twice, each file's in order.
    #[test]
    fn a_log_replaced_while_it_is_read_is_read_to_its_end_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("w.log");
        // Three turns' worth of the old run, a few lines of the new.
        let old_lines = 3 * CHUNK / 13 + 7;
        std::fs::write(&log, numbered(0, old_lines)).expect("old");
        let mut tail = LogTail::default();
        tail.follow("w", &log, 0);
        let mut seen = Vec::new();
        let mut replaced = false;
        let mut sink = |_: &str, line: &[u8]| {
            seen.push(String::from_utf8_lossy(line).into_owned());
            if !replaced {
                replaced = true;
                std::fs::rename(&log, dir.path().join("w.log.1"))?;
                std::fs::write(&log, numbered(old_lines, old_lines + 5))?;
            }
            Ok(())
        };
        tail.read_new(&mut sink).expect("read");
        tail.read_new(&mut sink).expect("read again");
        let want: Vec<String> = numbered(0, old_lines + 5)
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(seen.len(), want.len(), "lines shown");
        assert!(seen == want, "first difference at line {:?}", {
            seen.iter().zip(&want).position(|(a, b)| a != b)
        });
    }
}
