//! The desired state a pass resolved last, reused while nothing it was made of changed.
//!
//! A supervisor runs a pass after every wake-up: a request's `up -d`, an exit, the watcher.
//! Most of them find the file as it was. What a plain file (one file, no template tags)
//! resolves to depends only on its text, its side files (`env_file`, `config`), the command
//! line (the project's [`crate::project::Project::desired_tag`]), the pass's selection, mode
//! and profiles, and the target-inference answers it was given. While each of those is the
//! same, the `Desired` of last time is handed out again (its specs are shared: a pointer per
//! service), without reading, parsing or resolving anything.
//!
//! A file is "the same" when its identity is: device, inode, size, modification and change
//! time (`stat`), taken before the file was read. A rename over it is a new inode, an edit in
//! place moves the change time, which no user can set back. The identity is kept only when it
//! did not change while the file was read, and only when the change time is older than
//! [`RACY`]: on a kernel whose file times are coarse (a clock tick), a second write within the
//! tick of the first could leave every field as it was; a file written that recently is read
//! again next time. A file that did not exist is remembered as absent, and its creation is a
//! change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::Mode;
use crate::fsutil::FileId;

use super::Desired;

/// A file whose change time is younger than this is not trusted to show its next change (a
/// kernel clock tick is at most 10 ms; twice that, to be safe).
pub const RACY: Duration = Duration::from_millis(20);

/// A file changed too recently to be told apart from a second write within the same tick of
/// the kernel's clock (`RACY`).
fn racy(id: &FileId) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.checked_sub(id.changed_at())
        .is_none_or(|age| age < RACY)
}

/// What the desired state is asked for, besides the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The project's tag (`Project::desired_tag`).
    pub tag: String,
    pub selection: Vec<String>,
    pub named: Vec<String>,
    pub profiles: Option<Vec<String>>,
    pub mode: Option<Mode>,
}

/// A desired state handed out again, with what its load said besides it.
#[derive(Debug, Clone)]
pub struct Reused {
    pub desired: Desired,
    /// The loaded file's path (`UpDocument::path`).
    pub path: PathBuf,
    /// The files whose changes matter: the YAML and its side files.
    pub files: Vec<PathBuf>,
    /// The inference answers after the resolve (equal to those it was given).
    pub target_cache: BTreeMap<String, String>,
}

/// The identities of some files, taken before they were read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp(Vec<(PathBuf, Option<FileId>)>);

impl Stamp {
    pub fn of(paths: &[PathBuf]) -> Stamp {
        Stamp(paths.iter().map(|p| (p.clone(), FileId::of(p))).collect())
    }

    fn id(&self, path: &Path) -> Option<&Option<FileId>> {
        self.0.iter().find(|(p, _)| p == path).map(|(_, id)| id)
    }
}

struct Last {
    key: Key,
    /// Every file `reused.files` names, as it was before the load that made `reused`; `None`
    /// when one changed during that load or too recently ([`RACY`]): not reused, but its
    /// files are looked at before the next load.
    stamp: Option<Stamp>,
    reused: Reused,
}

/// By tag, at most [`FILES_REMEMBERED`](crate::config::FILES_REMEMBERED): one in a
/// supervisor; many in a test binary.
static LAST: Mutex<Vec<Last>> = Mutex::new(Vec::new());

/// What a pass asks before it loads: the desired state of last time if nothing it was made of
/// changed (`Ok`), else the identities to hand to [`remember`] after the load (`Err`): those of
/// `files` and of the side files the last load found.
pub fn reuse(
    key: &Key,
    files: &[PathBuf],
    target_cache: &BTreeMap<String, String>,
) -> Result<Reused, Stamp> {
    let Ok(all) = LAST.lock() else {
        return Err(Stamp::of(files));
    };
    let Some(last) = all.iter().find(|l| l.key.tag == key.tag) else {
        return Err(Stamp::of(files));
    };
    let now = Stamp::of(&last.reused.files);
    let same_files = last.stamp.as_ref() == Some(&now);
    if same_files && last.key == *key && last.reused.target_cache == *target_cache {
        return Ok(last.reused.clone());
    }
    let mut paths = files.to_vec();
    paths.extend(
        last.reused
            .files
            .iter()
            .filter(|p| !files.contains(p))
            .cloned(),
    );
    Err(match paths == last.reused.files {
        true => now,
        false => Stamp::of(&paths),
    })
}

/// After a load from a plain file: remembers `reused`, to be handed out again while every
/// file it was made of is as it was before the load (`before`). Only if each was as it is
/// now before the load, and is old enough to show its next change ([`RACY`]); else its files
/// are remembered, to be looked at before the next load.
pub fn remember(key: Key, before: Stamp, reused: Reused) {
    let Ok(mut all) = LAST.lock() else { return };
    all.retain(|l| l.key.tag != key.tag);
    let stable = reused.files.iter().all(|p| match before.id(p) {
        Some(Some(id)) => FileId::of(p).as_ref() == Some(id) && !racy(id),
        // A side file that was absent: its creation is a change.
        Some(None) => FileId::of(p).is_none(),
        None => false,
    });
    let stamp = stable.then(|| {
        Stamp(
            reused
                .files
                .iter()
                .map(|p| (p.clone(), before.id(p).cloned().flatten()))
                .collect(),
        )
    });
    if all.len() >= crate::config::FILES_REMEMBERED {
        all.remove(0);
    }
    all.push(Last { key, stamp, reused });
}

/// Forgets what was remembered for `tag` (the file did not load, or is not plain).
pub fn forget(tag: &str) {
    if let Ok(mut all) = LAST.lock() {
        all.retain(|l| l.key.tag != tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    /// A project directory: the YAML, an env file, and an absent config file.
    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("up.yaml"), "services: {a: {}}\n").unwrap();
            std::fs::write(dir.path().join("a.env"), "V=1\n").unwrap();
            let f = Files { dir };
            // The first load finds the side files, which it did not look at before.
            f.load();
            assert!(!f.reused(), "side files not looked at before the load");
            f
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn yaml(&self) -> Vec<PathBuf> {
            vec![self.path("up.yaml")]
        }

        /// What a load of it gives: the YAML and both side files.
        fn loaded(&self) -> Reused {
            Reused {
                desired: Desired::default(),
                path: self.path("up.yaml"),
                files: vec![
                    self.path("up.yaml"),
                    self.path("a.env"),
                    self.path("base.json"),
                ],
                target_cache: BTreeMap::new(),
            }
        }

        fn key(&self) -> Key {
            Key {
                tag: self.dir.path().display().to_string(),
                selection: Vec::new(),
                named: Vec::new(),
                profiles: None,
                mode: None,
            }
        }

        /// Waits until every file's change time is older than [`RACY`] (the clock is what is
        /// waited for: nothing else can make a file older).
        fn age(&self) {
            let paths = self.loaded().files;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while paths
                .iter()
                .any(|p| FileId::of(p).is_some_and(|id| racy(&id)))
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the clock stood still"
                );
                std::thread::yield_now();
            }
        }

        /// Loads "the file" (the stamp first, as a pass does) and remembers it; the next
        /// `reuse` must hand it out again.
        fn load(&self) {
            let before = match reuse(&self.key(), &self.yaml(), &BTreeMap::new()) {
                Ok(_) => panic!("reused before a load"),
                Err(before) => before,
            };
            remember(self.key(), before, self.loaded());
        }

        fn reused(&self) -> bool {
            reuse(&self.key(), &self.yaml(), &BTreeMap::new()).is_ok()
        }
    }

    /// Rewrites `path` in place (the same inode and size) and sets its modification time back
    /// to what it was: only the change time tells.
    fn edit_in_place(path: &Path, text: &str) {
        let before = std::fs::metadata(path).unwrap();
        assert_eq!(before.len(), text.len() as u64, "same size");
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(text.as_bytes(), 0).unwrap();
        f.set_modified(before.modified().unwrap()).unwrap();
        let after = std::fs::metadata(path).unwrap();
        assert_eq!(
            (after.ino(), after.len(), after.modified().unwrap()),
            (before.ino(), before.len(), before.modified().unwrap())
        );
    }

    #[test]
    fn an_unchanged_file_is_reused_and_a_same_size_edit_in_place_is_seen() {
        let f = Files::new();
        f.age();
        f.load();
        assert!(f.reused(), "nothing changed: reused");
        assert!(f.reused(), "and again");
        edit_in_place(&f.path("up.yaml"), "services: {b: {}}\n");
        assert!(!f.reused(), "an edit in place of the same size is a change");
        // Loaded again once old enough, and reused again.
        f.age();
        f.load();
        assert!(f.reused());
        // A rename over it (what editors and the bench do).
        std::fs::write(f.path("new.yaml"), "services: {c: {}}\n").unwrap();
        std::fs::rename(f.path("new.yaml"), f.path("up.yaml")).unwrap();
        assert!(!f.reused(), "a rename over it is a change");
    }

    #[test]
    fn a_side_file_edited_created_or_removed_is_a_change() {
        let f = Files::new();
        f.age();
        f.load();
        assert!(f.reused());
        edit_in_place(&f.path("a.env"), "V=2\n");
        assert!(!f.reused(), "an env file edited in place");
        f.age();
        f.load();
        assert!(f.reused());
        std::fs::write(f.path("base.json"), "{}").unwrap();
        assert!(!f.reused(), "a config file that was absent was created");
        f.age();
        f.load();
        assert!(f.reused());
        std::fs::remove_file(f.path("a.env")).unwrap();
        assert!(!f.reused(), "an env file removed");
    }

    #[test]
    fn a_file_changed_too_recently_or_during_the_load_is_not_remembered() {
        let f = Files::new();
        f.age();
        // Changed while it was read (after the stamp): its new identity was not read.
        let before = reuse(&f.key(), &f.yaml(), &BTreeMap::new()).unwrap_err();
        std::fs::write(f.path("a.env"), "V=3\n").unwrap();
        remember(f.key(), before, f.loaded());
        assert!(!f.reused(), "changed during the load");
        // Written just now: a second write within a coarse clock tick could look the same.
        std::fs::write(f.path("up.yaml"), "services: {d: {}}\n").unwrap();
        f.load();
        assert!(!f.reused(), "too recent to be trusted");
        f.age();
        f.load();
        assert!(f.reused(), "old enough");
    }

    #[test]
    fn other_settings_or_inference_answers_are_not_the_same_desired_state() {
        let f = Files::new();
        f.age();
        f.load();
        let mut other = f.key();
        other.mode = Some(Mode::Replace);
        assert!(reuse(&other, &f.yaml(), &BTreeMap::new()).is_err(), "mode");
        let mut other = f.key();
        other.profiles = Some(vec!["dev".into()]);
        assert!(
            reuse(&other, &f.yaml(), &BTreeMap::new()).is_err(),
            "profiles"
        );
        let mut other = f.key();
        other.selection = vec!["a".into()];
        assert!(
            reuse(&other, &f.yaml(), &BTreeMap::new()).is_err(),
            "selection"
        );
        let answers = BTreeMap::from([("||a".to_owned(), "deployment/a".to_owned())]);
        assert!(reuse(&f.key(), &f.yaml(), &answers).is_err(), "inference");
        assert!(f.reused(), "the same again");
        forget(&f.key().tag);
        assert!(!f.reused(), "forgotten");
    }
}
