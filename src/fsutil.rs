//! Checked, symlink-safe access to the directories and files mirrord-up writes: the state
//! directory (`state.lock`, logs, generated configs) and the `ci start` output directories.
//!
//! # The rule (as ssh's `StrictModes`, decided for mirrord-up)
//!
//! A directory is reached by walking its absolute path from `/`, one `openat` per component,
//! never by a path lookup that could be redirected half-way:
//!
//! * **Directories above the one we write in** ("ancestors": `/`, `/tmp`, `$HOME`, …) must be
//!   owned by root or by us, and not group- or world-writable unless the sticky bit is set
//!   (`/tmp`). A symbolic link among them is followed only if the link itself is owned by root
//!   or by us (it sits in a directory that passed the same check), at most 40 times.
//! * **The directory we write in** (the last component, and every directory created or opened
//!   below it with [`SafeDir::subdir`]) must be owned by us and not group- or world-writable
//!   (sticky or not), and is opened with `O_DIRECTORY|O_NOFOLLOW`: a symbolic link there is
//!   refused. Missing ones are created with mode 0700.
//! * **Files** are opened relative to such a directory's descriptor with `O_NOFOLLOW` (a symbolic
//!   link is refused) and `O_NONBLOCK` (a FIFO cannot block us), and must be regular files
//!   owned by us; new ones get mode 0600.
//!
//! "Us" is the effective UID. Errors name the path and what is wrong with it.
//!
//! # Directories kept open
//!
//! The walk costs three system calls per component, and a supervisor's pass walks to the same
//! few directories every time (`state.lock`'s, a stop lock's, the logs', `events.log`'s). The
//! last [`KEPT`] directories [`SafeDir::open`] checked are kept open: opening one of those paths
//! again reuses the descriptor when the path still names that very directory (`lstat` of the
//! path: same device and inode as the kept descriptor, whose inode cannot be reused while it
//! is open; a symbolic link put in its place is another inode) and the directory is still
//! ours and private (`fstat` of the descriptor); else the path is walked again, with the
//! errors above. Whatever is written still goes through a descriptor of a directory that
//! passed the walk and is private now; a path that was redirected elsewhere is walked, never
//! trusted.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat};

/// Symbolic links followed among the ancestors of one path, as the kernel's own limit.
const MAX_LINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The path exists but may not be trusted (owner, mode, a symbolic link, not a directory).
    #[error("refusing {}: it {why}", path.display())]
    Unsafe { path: PathBuf, why: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl FsError {
    fn io(path: &Path, e: Errno) -> FsError {
        FsError::Io {
            path: path.to_owned(),
            source: std::io::Error::from(e),
        }
    }

    fn unsafe_(path: &Path, why: impl Into<String>) -> FsError {
        FsError::Unsafe {
            path: path.to_owned(),
            why: why.into(),
        }
    }
}

/// For callers that speak `std::io`: the message keeps the path and the reason.
impl From<FsError> for std::io::Error {
    fn from(e: FsError) -> std::io::Error {
        let kind = match &e {
            FsError::Unsafe { .. } => std::io::ErrorKind::PermissionDenied,
            FsError::Io { source, .. } => source.kind(),
        };
        std::io::Error::new(kind, e.to_string())
    }
}

type Result<T, E = FsError> = std::result::Result<T, E>;

/// How a file is opened by [`SafeDir::open_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Write at the end, creating it (logs).
    Append,
    /// Read and write, creating it, not truncated (`state.lock`).
    ReadWrite,
    /// Write a file that must not exist yet (`ci start` output).
    CreateNew,
    /// Read an existing file.
    Read,
}

/// What tells one version of a file from another without reading it: device, inode, size,
/// modification and change time (to the nanosecond). A rename over the file is another inode;
/// an edit in place moves the change time, which no user can set back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    pub fn from_meta(m: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// The file `path` names (through a symbolic link).
    pub fn of(path: &Path) -> Option<FileId> {
        std::fs::metadata(path).ok().map(|m| FileId::from_meta(&m))
    }

    /// `path` itself (a symbolic link is not followed).
    pub fn of_link(path: &Path) -> Option<FileId> {
        std::fs::symlink_metadata(path)
            .ok()
            .map(|m| FileId::from_meta(&m))
    }

    /// When the file last changed (its change time), since the epoch.
    pub fn changed_at(&self) -> std::time::Duration {
        std::time::Duration::new(
            self.ctime.0.max(0) as u64,
            self.ctime.1.clamp(0, 999_999_999) as u32,
        )
    }
}

/// A directory that passed the checks, held open: everything below it is reached through
/// this descriptor.
#[derive(Debug)]
pub struct SafeDir {
    /// Shared with the kept copy ([`kept`]), if any.
    fd: Arc<OwnedFd>,
    path: PathBuf,
}

/// How many checked directories [`SafeDir::open`] keeps open (the module documentation).
const KEPT: usize = 8;

/// The directories kept open, most recently used last: path, descriptor, its device and inode.
mod kept {
    use super::*;

    type Kept = (PathBuf, Arc<OwnedFd>, (u64, u64));

    static KEPT_DIRS: Mutex<Vec<Kept>> = Mutex::new(Vec::new());

    fn dirs() -> std::sync::MutexGuard<'static, Vec<Kept>> {
        KEPT_DIRS.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept directory `abs` names now, if it is still private; `None` (and forgotten)
    /// otherwise.
    pub(super) fn reuse(abs: &Path) -> Option<SafeDir> {
        let mut dirs = dirs();
        let at = dirs.iter().position(|(p, _, _)| p == abs)?;
        let (path, fd, id) = dirs.remove(at);
        let same = nix::sys::stat::lstat(abs)
            .is_ok_and(|st| (st.st_dev, st.st_ino) == id && is_kind(&st, SFlag::S_IFDIR));
        if !same || !fstat(&*fd).is_ok_and(|st| check_private(&path, &st).is_ok()) {
            return None;
        }
        dirs.push((path.clone(), fd.clone(), id));
        Some(SafeDir { fd, path })
    }

    /// Keeps `dir`, just walked to, in place of the least recently used one when full.
    pub(super) fn keep(dir: &SafeDir) {
        let Ok(st) = fstat(&*dir.fd) else { return };
        let mut dirs = dirs();
        dirs.retain(|(p, _, _)| *p != dir.path);
        if dirs.len() >= KEPT {
            dirs.remove(0);
        }
        dirs.push((dir.path.clone(), dir.fd.clone(), (st.st_dev, st.st_ino)));
    }

    #[cfg(test)]
    pub(super) fn holds(abs: &Path) -> bool {
        dirs().iter().any(|(p, _, _)| p == abs)
    }
}

fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn dir_flags() -> OFlag {
    OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC
}

/// An ancestor: root's or ours, not writable by others unless sticky.
fn check_ancestor(path: &Path, st: &FileStat) -> Result<()> {
    let mode = st.st_mode;
    if st.st_uid != 0 && st.st_uid != me() {
        return Err(FsError::unsafe_(
            path,
            format!(
                "belongs to uid {}, neither you (uid {}) nor root",
                st.st_uid,
                me()
            ),
        ));
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(FsError::unsafe_(
            path,
            format!(
                "is group- or world-writable without the sticky bit (mode {:o})",
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// A directory we write in: ours, writable by nobody else.
fn check_private(path: &Path, st: &FileStat) -> Result<()> {
    let mode = st.st_mode;
    if st.st_uid != me() {
        return Err(FsError::unsafe_(
            path,
            format!("belongs to uid {} (you are uid {})", st.st_uid, me()),
        ));
    }
    if mode & 0o022 != 0 {
        return Err(FsError::unsafe_(
            path,
            format!("is group- or world-writable (mode {:o})", mode & 0o7777),
        ));
    }
    Ok(())
}

fn is_kind(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind
}

/// Why `name` in `dir` could not be opened as a directory without following links.
fn explain(dir: BorrowedFd<'_>, name: &OsStr, path: &Path, e: Errno) -> FsError {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if is_kind(&st, SFlag::S_IFLNK) => FsError::unsafe_(path, "is a symbolic link"),
        Ok(st) if !is_kind(&st, SFlag::S_IFDIR) => FsError::unsafe_(path, "is not a directory"),
        _ => FsError::io(path, e),
    }
}

impl SafeDir {
    /// Opens the directory `path` (relative paths are taken from the current directory),
    /// creating it and missing parents (0700) when `create`, checking every directory on the
    /// way as the module documentation says.
    ///
    /// A directory checked lately is reused without a walk ("Directories kept open").
    pub fn open(path: &Path, create: bool) -> Result<SafeDir> {
        let abs = std::path::absolute(path).map_err(|e| FsError::Io {
            path: path.to_owned(),
            source: e,
        })?;
        if let Some(dir) = kept::reuse(&abs) {
            return Ok(dir);
        }
        let dir = SafeDir::walk(abs, create)?;
        kept::keep(&dir);
        Ok(dir)
    }

    /// [`SafeDir::open`]'s walk from `/`.
    fn walk(abs: PathBuf, create: bool) -> Result<SafeDir> {
        let mut todo: std::collections::VecDeque<OsString> = names_of(&abs).into();
        let mut cur =
            openat(AT_FDCWD, "/", dir_flags(), Mode::empty()).map_err(|e| FsError::io(&abs, e))?;
        let mut cur_path = PathBuf::from("/");
        check_ancestor(
            &cur_path,
            &fstat(&cur).map_err(|e| FsError::io(&cur_path, e))?,
        )?;
        let mut links = 0;
        while let Some(name) = todo.pop_front() {
            let last = todo.is_empty();
            if name == ".." {
                cur = openat(&cur, "..", dir_flags(), Mode::empty())
                    .map_err(|e| FsError::io(&cur_path, e))?;
                cur_path.pop();
                let st = fstat(&cur).map_err(|e| FsError::io(&cur_path, e))?;
                if last {
                    check_private(&cur_path, &st)?;
                } else {
                    check_ancestor(&cur_path, &st)?;
                }
                continue;
            }
            let here = cur_path.join(&name);
            let fd = match openat(&cur, name.as_os_str(), dir_flags(), Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    match mkdirat(&cur, name.as_os_str(), Mode::from_bits_truncate(0o700)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(FsError::io(&here, e)),
                    }
                    openat(&cur, name.as_os_str(), dir_flags(), Mode::empty())
                        .map_err(|e| explain(cur.as_fd(), &name, &here, e))?
                }
                Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) if !last => {
                    let st = fstatat(&cur, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                        .map_err(|e| FsError::io(&here, e))?;
                    if !is_kind(&st, SFlag::S_IFLNK) {
                        return Err(explain(cur.as_fd(), &name, &here, e));
                    }
                    if st.st_uid != 0 && st.st_uid != me() {
                        return Err(FsError::unsafe_(
                            &here,
                            format!(
                                "is a symbolic link owned by uid {}, neither you (uid {}) nor root",
                                st.st_uid,
                                me()
                            ),
                        ));
                    }
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(FsError::io(&here, Errno::ELOOP));
                    }
                    let target =
                        readlinkat(&cur, name.as_os_str()).map_err(|e| FsError::io(&here, e))?;
                    let target = Path::new(&target);
                    if target.is_absolute() {
                        cur = openat(AT_FDCWD, "/", dir_flags(), Mode::empty())
                            .map_err(|e| FsError::io(&here, e))?;
                        cur_path = PathBuf::from("/");
                    }
                    for n in names_of(target).into_iter().rev() {
                        todo.push_front(n);
                    }
                    continue;
                }
                Err(e) => return Err(explain(cur.as_fd(), &name, &here, e)),
            };
            let st = fstat(&fd).map_err(|e| FsError::io(&here, e))?;
            if last {
                check_private(&here, &st)?;
            } else {
                check_ancestor(&here, &st)?;
            }
            cur = fd;
            cur_path = here;
        }
        if cur_path == Path::new("/") {
            return Err(FsError::unsafe_(&cur_path, "is the root directory"));
        }
        Ok(SafeDir {
            fd: Arc::new(cur),
            path: abs,
        })
    }

    /// The path this directory was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory `name` right below this one, created (0700) if missing and `create`;
    /// refused if it is a symbolic link, not ours, or writable by others.
    pub fn subdir(&self, name: impl AsRef<OsStr>, create: bool) -> Result<SafeDir> {
        let name = one_name(name.as_ref(), &self.path)?;
        let path = self.path.join(name);
        let fd = match openat(&*self.fd, name, dir_flags(), Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                match mkdirat(&*self.fd, name, Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(FsError::io(&path, e)),
                }
                openat(&*self.fd, name, dir_flags(), Mode::empty())
                    .map_err(|e| explain(self.fd.as_fd(), name, &path, e))?
            }
            Err(e) => return Err(explain(self.fd.as_fd(), name, &path, e)),
        };
        check_private(&path, &fstat(&fd).map_err(|e| FsError::io(&path, e))?)?;
        Ok(SafeDir {
            fd: Arc::new(fd),
            path,
        })
    }

    /// Creates the directory `name` (0700), which must not exist yet (`EEXIST` is returned as
    /// an `Io` error of that kind), and opens it.
    pub fn create_subdir(&self, name: impl AsRef<OsStr>) -> Result<SafeDir> {
        let name = one_name(name.as_ref(), &self.path)?;
        let path = self.path.join(name);
        mkdirat(&*self.fd, name, Mode::from_bits_truncate(0o700))
            .map_err(|e| FsError::io(&path, e))?;
        self.subdir(name, false)
    }

    /// Refuses `name` in this directory if it exists and is a symbolic link or not a regular
    /// file of ours (without creating or opening it).
    pub fn check_file_if_present(&self, name: impl AsRef<OsStr>) -> Result<()> {
        let name = one_name(name.as_ref(), &self.path)?;
        let path = self.path.join(name);
        let st = match fstatat(&*self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(FsError::io(&path, e)),
        };
        if is_kind(&st, SFlag::S_IFLNK) {
            return Err(FsError::unsafe_(&path, "is a symbolic link"));
        }
        own_regular_file(&st, &path)?;
        Ok(())
    }

    /// Opens the regular file `name` in this directory without following a symbolic link.
    pub fn open_file(&self, name: impl AsRef<OsStr>, access: Access) -> Result<File> {
        let name = one_name(name.as_ref(), &self.path)?;
        let path = self.path.join(name);
        let base = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let flags = base
            | match access {
                Access::Append => OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT,
                Access::ReadWrite => OFlag::O_RDWR | OFlag::O_CREAT,
                Access::CreateNew => OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
                Access::Read => OFlag::O_RDONLY,
            };
        let fd = openat(&*self.fd, name, flags, Mode::from_bits_truncate(0o600)).map_err(|e| {
            match fstatat(&*self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if is_kind(&st, SFlag::S_IFLNK) => {
                    FsError::unsafe_(&path, "is a symbolic link")
                }
                _ => FsError::io(&path, e),
            }
        })?;
        let st = fstat(&fd).map_err(|e| FsError::io(&path, e))?;
        own_regular_file(&st, &path)?;
        // Back to blocking I/O: O_NONBLOCK was only there so that opening a FIFO cannot hang.
        // F_SETFL sets the status flags only (O_APPEND, O_NONBLOCK, …; the access mode and
        // the open-time flags are ignored): the ones opened with, less O_NONBLOCK, without
        // reading them back first.
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK),
        )
        .map_err(|e| FsError::io(&path, e))?;
        Ok(File::from(fd))
    }
}

impl AsFd for SafeDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Opens `path` as [`SafeDir::open`] of its directory (created if missing) and
/// [`SafeDir::open_file`] of its name.
pub fn open_in_checked_dir(path: &Path, access: Access) -> Result<File> {
    let (dir, name) = split_file(path)?;
    SafeDir::open(dir, access != Access::Read)?.open_file(name, access)
}

/// The directory (`.` for a bare name) and the name of the file `path`.
pub fn split_file(path: &Path) -> Result<(&Path, &OsStr)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(FsError::unsafe_(path, "has no file name"));
    };
    if dir.as_os_str().is_empty() {
        return Ok((Path::new("."), name));
    }
    Ok((dir, name))
}

/// Checks that the directory `dir` passes [`SafeDir::open`] (creating it when `create`).
pub fn check_dir(dir: &Path, create: bool) -> Result<()> {
    SafeDir::open(dir, create).map(drop)
}

/// The names of a path, `..` kept, `.` and the root dropped.
fn names_of(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// `name` must be one plain file name (no `/`, not `.` or `..`).
fn one_name<'a>(name: &'a OsStr, dir: &Path) -> Result<&'a OsStr> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(FsError::unsafe_(
            &dir.join(name),
            "is not a plain file name",
        ));
    }
    Ok(name)
}

/// A regular file of ours, or why it is refused.
fn own_regular_file(st: &nix::sys::stat::FileStat, path: &Path) -> Result<()> {
    if !is_kind(st, SFlag::S_IFREG) {
        return Err(FsError::unsafe_(path, "is not a regular file"));
    }
    if st.st_uid != me() {
        return Err(FsError::unsafe_(
            path,
            format!("belongs to uid {} (you are uid {})", st.st_uid, me()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_private_dirs_and_files() {
        let root = tempfile::tempdir().unwrap();
        let d = SafeDir::open(&root.path().join("a/b"), true).unwrap();
        let mode = std::fs::metadata(root.path().join("a/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let s = d.subdir("logs", true).unwrap();
        use std::io::Write;
        s.open_file("x.log", Access::Append)
            .unwrap()
            .write_all(b"hi")
            .unwrap();
        assert_eq!(
            std::fs::read(root.path().join("a/b/logs/x.log")).unwrap(),
            b"hi"
        );
        assert!(d.create_subdir("logs").is_err());
    }

    /// O_NONBLOCK (there for FIFOs) is gone once the file is open; O_APPEND stays.
    #[test]
    fn opened_files_block_and_logs_append() {
        let root = tempfile::tempdir().unwrap();
        let d = SafeDir::open(&root.path().join("d"), true).unwrap();
        let status = |f: &File| {
            OFlag::from_bits_truncate(nix::fcntl::fcntl(f, nix::fcntl::FcntlArg::F_GETFL).unwrap())
        };
        let log = d.open_file("x.log", Access::Append).unwrap();
        assert!(status(&log).contains(OFlag::O_APPEND | OFlag::O_WRONLY));
        assert!(!status(&log).contains(OFlag::O_NONBLOCK));
        let rw = d.open_file("x.lock", Access::ReadWrite).unwrap();
        assert!(status(&rw).contains(OFlag::O_RDWR));
        assert!(!status(&rw).intersects(OFlag::O_NONBLOCK | OFlag::O_APPEND));
    }

    #[test]
    fn symlinked_files_and_dirs_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let d = SafeDir::open(&root.path().join("d"), true).unwrap();
        std::os::unix::fs::symlink(&target, root.path().join("d/f")).unwrap();
        let err = d.open_file("f", Access::Append).unwrap_err().to_string();
        assert!(
            err.contains("symbolic link") && err.contains("/d/f"),
            "{err}"
        );
        std::os::unix::fs::symlink(root.path(), root.path().join("d/sub")).unwrap();
        let err = d.subdir("sub", true).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        let err = SafeDir::open(&root.path().join("d/sub"), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        // A link among the ancestors, owned by us, is followed.
        std::fs::create_dir(root.path().join("real")).unwrap();
        std::os::unix::fs::symlink(root.path().join("real"), root.path().join("via")).unwrap();
        SafeDir::open(&root.path().join("via/x"), true).unwrap();
        assert!(root.path().join("real/x").is_dir());
    }

    /// A kept directory is reused only while its path names it and it is private: a link or
    /// another directory put in its place, or a mode opened to others, is seen at once.
    #[test]
    fn a_kept_directory_is_reused_only_while_its_path_still_names_it() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("d");
        let first = SafeDir::open(&d, true).unwrap();
        assert!(kept::holds(&d));
        let again = SafeDir::open(&d, false).unwrap();
        assert!(Arc::ptr_eq(&first.fd, &again.fd), "reused, not walked");
        // Another directory in its place: walked, and written there.
        std::fs::rename(&d, root.path().join("old")).unwrap();
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        let fresh = SafeDir::open(&d, false).unwrap();
        assert!(!Arc::ptr_eq(&first.fd, &fresh.fd));
        fresh.open_file("x", Access::Append).unwrap();
        assert!(d.join("x").is_file() && !root.path().join("old/x").exists());
        // A symbolic link to the old directory in its place: refused, as by the walk.
        std::fs::rename(&d, root.path().join("fresh")).unwrap();
        std::os::unix::fs::symlink(root.path().join("old"), &d).unwrap();
        let err = SafeDir::open(&d, false).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        // Kept, then opened to others: refused.
        let e = root.path().join("e");
        let kept_e = SafeDir::open(&e, true).unwrap();
        assert_eq!(
            std::fs::metadata(&e).unwrap().ino(),
            fstat(&*kept_e.fd).unwrap().st_ino
        );
        std::fs::set_permissions(&e, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = SafeDir::open(&e, false).unwrap_err().to_string();
        assert!(err.contains("world-writable"), "{err}");
    }

    #[test]
    fn writable_dirs_are_refused_unless_sticky_above() {
        let root = tempfile::tempdir().unwrap();
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = SafeDir::open(&open, false).unwrap_err().to_string();
        assert!(
            err.contains("world-writable") && err.contains("open"),
            "{err}"
        );
        let err = SafeDir::open(&open.join("x"), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("without the sticky bit"), "{err}");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        SafeDir::open(&open.join("x"), true).unwrap();
        assert!(SafeDir::open(&open, false).is_err());
    }
}
