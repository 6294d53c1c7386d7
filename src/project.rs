//! What the layers below the CLI need from a project: where its state is, which files make it,
//! how to load and resolve them, which launcher to use, whether to colour. The CLI builds it
//! once from the arguments (`commands::Context` implements [`Project`]); the supervisor, a
//! pass and the engine take a `&dyn Project` and never import the CLI layer (ARCHITECTURE.md,
//! "Module layers"; tests/architecture.rs keeps it so).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::config::{Mode, UpDocument};
use crate::desired::Desired;
use crate::state::StateStore;

/// The project as the supervisor and a pass see it.
pub trait Project: Send + Sync {
    /// The project's state directory (created on first use).
    fn store(&self) -> Result<StateStore>;
    /// How long a state change waits for `state.lock`.
    fn lock_timeout(&self) -> Duration;
    /// The YAML files, the first one first (later ones merge over it).
    fn files(&self) -> Vec<PathBuf>;
    /// Renders, parses and validates the files.
    fn load(&self) -> Result<UpDocument>;
    /// The desired services of `selection`, with the target-inference cache.
    fn desired(
        &self,
        doc: &UpDocument,
        selection: &[String],
        mode: Option<Mode>,
        cache: BTreeMap<String, String>,
    ) -> Result<(Desired, BTreeMap<String, String>)>;
    /// What, besides the files and the pass's settings, the desired state depends on (the
    /// key, launcher, context, profiles of the command line): a pass reuses the desired state
    /// it resolved last only for the same tag (`desired::last`). `None`: never reused.
    fn desired_tag(&self) -> Option<String> {
        None
    }
    /// The mirrord binary when the launcher needs one.
    fn launcher_bin(&self) -> Result<Option<PathBuf>>;
    fn stdout_color(&self) -> bool;
    fn stderr_color(&self) -> bool;
}

/// Fails, naming the unknown ones and the known ones, unless every name in `asked` is known:
/// `"<none_named> `x`, `y` in project `p` (known: a, b)"`.
pub fn ensure_known(
    asked: &[String],
    known: &[&String],
    project: &str,
    none_named: &str,
) -> Result<()> {
    let unknown: Vec<String> = asked
        .iter()
        .filter(|n| !known.contains(n))
        .map(|n| format!("`{n}`"))
        .collect();
    if !unknown.is_empty() {
        anyhow::bail!(
            "{none_named} {} in project `{project}` (known: {})",
            unknown.join(", "),
            known
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
