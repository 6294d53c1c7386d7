//! Following service log files as they grow (`logs -f`, foreground `up`): whole lines only,
//! and a file that shrinks or is replaced (rotation) is read again from its start. Driven by
//! inotify events from the caller, never by a timer.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

struct Followed {
    path: PathBuf,
    offset: u64,
    inode: u64,
    partial: Vec<u8>,
}

/// The set of followed logs, by service name.
#[derive(Default)]
pub struct LogTail {
    files: BTreeMap<String, Followed>,
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
        match self.files.get_mut(name) {
            Some(f) if f.inode == inode && offset > f.offset => {
                read_file_to(name, f, Some(offset), sink)
            }
            _ => Ok(()),
        }
    }

    /// Hands every new complete line of every followed file to `sink`.
    pub fn read_new(&mut self, sink: &mut LineSink<'_>) -> std::io::Result<()> {
        for (name, f) in &mut self.files {
            read_file(name, f, sink)?;
        }
        Ok(())
    }
}

fn read_file(name: &str, f: &mut Followed, sink: &mut LineSink<'_>) -> std::io::Result<()> {
    read_file_to(name, f, None, sink)
}

fn read_file_to(
    name: &str,
    f: &mut Followed,
    limit: Option<u64>,
    sink: &mut LineSink<'_>,
) -> std::io::Result<()> {
    let Ok(mut file) = File::open(&f.path) else {
        return Ok(());
    };
    let meta = file.metadata()?;
    if meta.ino() != f.inode || meta.len() < f.offset {
        // Rotated or truncated: a new file starts from the top.
        f.inode = meta.ino();
        f.offset = 0;
        f.partial.clear();
    }
    if meta.len() == f.offset {
        return Ok(());
    }
    file.seek(SeekFrom::Start(f.offset))?;
    let mut buf = Vec::new();
    match limit {
        Some(end) => {
            (&mut file)
                .take(end.saturating_sub(f.offset))
                .read_to_end(&mut buf)?;
        }
        None => {
            file.read_to_end(&mut buf)?;
        }
    }
    f.offset += buf.len() as u64;
    f.partial.extend_from_slice(&buf);
    while let Some(i) = f.partial.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = f.partial.drain(..=i).collect();
        sink(name, &line[..line.len() - 1])?;
    }
    Ok(())
}
