//! What the spawns of one level share (issue 14, cold `up`): the engine's `start_level` opens a
//! [`level`] around its spawn loop, and `process::spawn` asks this module for
//!
//! * the inherited environment, filtered ([`inherited_env`]): read and filtered once per level
//!   instead of once per service;
//! * the program a bare name stands for in a given `PATH` ([`resolve`]): searched once per
//!   level and `PATH` value, with no `stat` per service;
//! * the checked log directory ([`open_log`]): walked from `/` and checked once per level (as
//!   `fsutil` requires), then every log is opened relative to that descriptor (`openat` with
//!   `O_NOFOLLOW`, as before) instead of a dozen `openat`s from `/` per service.
//!
//! Nothing outlives the level: the next level (the next pass) reads the environment and
//! `PATH` again and walks the log directory again, so a variable or a `PATH` changed between
//! passes is seen, and a log directory replaced by a symbolic link between passes is refused.
//! Within a level nothing of ours runs between the spawns; a log directory renamed during one
//! still receives the logs of that level, in the directory that was checked, never through a
//! link. Without an open level (a `ci start`, one spawn) every call does the whole work, as
//! before. The cache is per thread: a level's spawns run on the thread that opened it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::fsutil::{Access, SafeDir};

/// `KEY`, `VALUE` pairs, sorted by key, no key twice.
pub type EnvList = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Default)]
struct Level {
    /// The inherited environment: `[0]` without the `MIRRORD_*` variables, `[1]` with them.
    env: [Option<Rc<EnvList>>; 2],
    dirs: HashMap<PathBuf, Rc<SafeDir>>,
    programs: HashMap<(PathBuf, Option<OsString>), PathBuf>,
}

thread_local! {
    static LEVEL: RefCell<Option<Level>> = const { RefCell::new(None) };
}

/// A level in progress on this thread; dropping it forgets everything its spawns learnt (and
/// closes the directories it held open).
#[must_use = "the level ends when this is dropped"]
pub struct LevelScope {
    outer: Option<Level>,
    /// Per thread: not `Send`.
    _thread: std::marker::PhantomData<*const ()>,
}

/// Opens a level on this thread (a nested one starts empty and gives the outer one back when
/// it ends).
pub fn level() -> LevelScope {
    LevelScope {
        outer: LEVEL.with(|l| l.borrow_mut().replace(Level::default())),
        _thread: std::marker::PhantomData,
    }
}

impl Drop for LevelScope {
    fn drop(&mut self) {
        let outer = self.outer.take();
        LEVEL.with(|l| *l.borrow_mut() = outer);
    }
}

fn with_level<R>(f: impl FnOnce(&mut Level) -> R) -> Option<R> {
    LEVEL.with(|l| l.borrow_mut().as_mut().map(f))
}

/// This process's environment as a service inherits it: without the `MIRRORD_*` variables
/// that would change the configuration behind the generated one (`handover::inherited`),
/// unless `keep_mirrord`.
pub fn inherited_env(keep_mirrord: bool) -> Rc<EnvList> {
    let read = || -> Rc<EnvList> {
        use std::os::unix::ffi::OsStrExt;
        let map: BTreeMap<Vec<u8>, Vec<u8>> = std::env::vars_os()
            .filter(|(k, _)| keep_mirrord || crate::handover::inherited(k.as_bytes()))
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        Rc::new(map.into_iter().collect())
    };
    with_level(|level| {
        level.env[usize::from(keep_mirrord)]
            .get_or_insert_with(read)
            .clone()
    })
    .unwrap_or_else(read)
}

/// `base` with `extra` added (an `extra` key replaces the same key of `base`), sorted by key.
pub fn with_overrides(base: &EnvList, extra: &BTreeMap<String, String>) -> EnvList {
    let mut out = Vec::with_capacity(base.len() + extra.len());
    let mut extra = extra
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .peekable();
    for (k, v) in base {
        while let Some((ek, ev)) = extra.next_if(|(ek, _)| *ek < k.as_slice()) {
            out.push((ek.to_vec(), ev.to_vec()));
        }
        match extra.next_if(|(ek, _)| *ek == k.as_slice()) {
            Some((ek, ev)) => out.push((ek.to_vec(), ev.to_vec())),
            None => out.push((k.clone(), v.clone())),
        }
    }
    out.extend(extra.map(|(k, v)| (k.to_vec(), v.to_vec())));
    out
}

/// The file `program` names for `execve` (`os::spawn::resolve`), remembered for the level.
pub fn resolve(program: &Path, path_var: Option<&OsStr>) -> std::io::Result<PathBuf> {
    let key = (program.to_owned(), path_var.map(OsStr::to_owned));
    if let Some(Some(hit)) = with_level(|level| level.programs.get(&key).cloned()) {
        return Ok(hit);
    }
    let found = super::spawn::resolve(program, path_var)?;
    with_level(|level| level.programs.insert(key, found.clone()));
    Ok(found)
}

/// Opens the log file `path` for appending (created 0600 if missing) without following a
/// symbolic link, in a directory that passed `fsutil`'s checks (created 0700 if missing):
/// checked once per level, every time without one.
pub fn open_log(path: &Path) -> std::io::Result<File> {
    let (dir, name) = crate::fsutil::split_file(path)?;
    let held = with_level(|level| -> std::io::Result<Rc<SafeDir>> {
        if let Some(d) = level.dirs.get(dir) {
            return Ok(d.clone());
        }
        let d = Rc::new(SafeDir::open(dir, true)?);
        level.dirs.insert(dir.to_owned(), d.clone());
        Ok(d)
    });
    Ok(match held {
        Some(d) => d?.open_file(name, Access::Append)?,
        None => crate::fsutil::open_in_checked_dir(path, Access::Append)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn env(pairs: &[(&str, &str)]) -> EnvList {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn overrides_replace_and_join_in_key_order() {
        let base = env(&[("A", "1"), ("C", "3"), ("E", "5")]);
        let extra: BTreeMap<String, String> = [("B", "b"), ("C", "c"), ("F", "f"), ("0", "z")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            with_overrides(&base, &extra),
            env(&[
                ("0", "z"),
                ("A", "1"),
                ("B", "b"),
                ("C", "c"),
                ("E", "5"),
                ("F", "f")
            ])
        );
        assert_eq!(with_overrides(&base, &BTreeMap::new()), base);
    }

    #[test]
    fn the_environment_is_read_once_per_level_and_again_by_the_next() {
        let outside = inherited_env(false);
        assert!(
            !Rc::ptr_eq(&outside, &inherited_env(false)),
            "no level: read each time"
        );
        let first = {
            let _level = level();
            let a = inherited_env(false);
            assert!(Rc::ptr_eq(&a, &inherited_env(false)), "one read per level");
            assert!(
                !Rc::ptr_eq(&a, &inherited_env(true)),
                "MIRRORD_* kept: its own list"
            );
            a
        };
        let _level = level();
        assert!(
            !Rc::ptr_eq(&first, &inherited_env(false)),
            "the next level reads again"
        );
        assert_eq!(*first, *inherited_env(false));
        assert!(
            inherited_env(false)
                .iter()
                .all(|(k, _)| crate::handover::inherited(k))
        );
    }

    fn executable(path: &Path) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn a_path_change_between_levels_is_seen() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        executable(&a.join("probe"));
        let path = std::env::join_paths([&a, &b]).unwrap();
        let name = Path::new("probe");
        {
            let _level = level();
            assert_eq!(resolve(name, Some(&path)).unwrap(), a.join("probe"));
            // Another PATH value is another search, in the same level.
            assert_eq!(
                resolve(name, Some(b.as_os_str())).unwrap_err().kind(),
                std::io::ErrorKind::NotFound
            );
            // Within the level the answer is remembered (no search, no stat).
            std::fs::remove_file(a.join("probe")).unwrap();
            assert_eq!(resolve(name, Some(&path)).unwrap(), a.join("probe"));
        }
        executable(&b.join("probe"));
        let _level = level();
        assert_eq!(resolve(name, Some(&path)).unwrap(), b.join("probe"));
        assert_eq!(resolve(name, Some(b.as_os_str())).unwrap(), b.join("probe"));
    }

    #[test]
    fn a_log_dir_replaced_by_a_symlink_is_refused_by_the_next_level() {
        use std::io::Write;
        let root = tempfile::tempdir().unwrap();
        let logs = root.path().join("st/logs");
        {
            let _level = level();
            open_log(&logs.join("a.log"))
                .unwrap()
                .write_all(b"a")
                .unwrap();
            open_log(&logs.join("b.log"))
                .unwrap()
                .write_all(b"b")
                .unwrap();
        }
        assert_eq!(std::fs::read(logs.join("b.log")).unwrap(), b"b");
        assert_eq!(
            std::fs::metadata(&logs).unwrap().permissions().mode() & 0o777,
            0o700
        );
        std::fs::rename(&logs, root.path().join("st/moved")).unwrap();
        std::os::unix::fs::symlink(root.path().join("st/moved"), &logs).unwrap();
        let _level = level();
        let err = open_log(&logs.join("a.log")).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        // A log file that is a link is refused too, through a held directory.
        std::fs::remove_file(&logs).unwrap();
        std::fs::create_dir(&logs).unwrap();
        std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o700)).unwrap();
        let _next = level();
        open_log(&logs.join("c.log")).unwrap();
        std::os::unix::fs::symlink(root.path().join("st/moved/a.log"), logs.join("d.log")).unwrap();
        let err = open_log(&logs.join("d.log")).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(
            std::fs::read(root.path().join("st/moved/a.log")).unwrap(),
            b"a"
        );
    }
}
