//! Finding the project, as docker compose finds its file: `mirrord-up.yaml` in the current
//! directory, else in each parent up to the filesystem root; without one, the project that the
//! state directory records for this directory (or a parent). Reads only: creates nothing.

use std::path::{Path, PathBuf};

use crate::state::{State, StateStore};

/// The file name looked for in each directory.
pub const FILE_NAME: &str = "mirrord-up.yaml";

/// The nearest `mirrord-up.yaml` from `dir` upwards.
pub fn find_file(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join(FILE_NAME))
        .find(|f| f.is_file())
}

/// What a command that needs the file says when there is none.
pub fn no_file_message() -> String {
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| ".".into());
    format!(
        "no {FILE_NAME} in {cwd} or any parent directory (write one with `mirrord-up init`, or name it with -f)"
    )
}

/// One project directory of the state root whose `state.json` could be read.
pub struct Recorded {
    pub name: String,
    pub dir: PathBuf,
    /// The state, or why it could not be read.
    pub state: Result<State, String>,
}

/// Every project of the state root that has a `state.json`, by name. A directory without one
/// is skipped (nothing was ever recorded there).
pub fn recorded_projects(root: &Path) -> Vec<Recorded> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<Recorded> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| e.path().join("state.json").is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let store = StateStore {
                dir: e.path(),
                project: name.clone(),
            };
            let state = match store.read() {
                Ok(Some(s)) => Ok(s),
                Ok(None) => Err("no state file".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            Recorded {
                name,
                dir: e.path(),
                state,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The recorded project whose file lives in `dir` or the nearest parent of it (a project whose
/// YAML was removed can still be listed, stopped and its logs read from where it ran).
pub fn recorded_for_dir(root: &Path, dir: &Path) -> Option<String> {
    recorded_projects(root)
        .into_iter()
        .filter_map(|r| {
            let file = r.state.ok()?.file?;
            let home = file.parent()?.to_owned();
            dir.starts_with(&home)
                .then(|| (home.components().count(), r.name))
        })
        .max_by_key(|(depth, _)| *depth)
        .map(|(_, name)| name)
}
