//! The two works of `ci start` (README, "CI"), carried out by a pass under the lock it took,
//! like every other change of the state (ARCHITECTURE.md, "One apply path"):
//!
//! * [`start`]: an ad-hoc session (`ci start -- CMD…`, not from the file) is named, recorded
//!   with its spawn nonce, spawned, and recorded again with its identity — intent before the
//!   spawn, so that a crash in between is recovered by the nonce;
//! * [`record_exit`]: the exit its `ci start` saw while waiting for `Ready!` (outside the lock),
//!   with the cause read from mirrord's output.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::process::{ENV_SERVICE, SpawnRequest};
use crate::seams::Launcher;
use crate::spec::{ConfigHash, ServiceSpec};
use crate::state::{
    ExitInfo, RecordKind, ServiceRecord, State, StateLock, StateStore as Store, Status, now_ms,
};

/// An ad-hoc CI session, all but its name decided by the command that asks.
#[derive(Debug, Clone, PartialEq)]
pub struct CiSession {
    /// `--name`; otherwise `<binary>-<n>`, the first free one.
    pub name: Option<String>,
    /// The program's file name (for the default name).
    pub binary: String,
    /// What to spawn (its `MIRRORD_UP_SERVICE` is set here, once the name is known).
    pub spawn: SpawnRequest,
    pub spec: ServiceSpec,
    /// Where its `stdout` and `stderr` go.
    pub out_dir: PathBuf,
}

/// Records and spawns `session`; the name it got.
pub fn start(
    store: &Store,
    lock: &StateLock,
    state: &mut State,
    session: &CiSession,
    launcher: &dyn Launcher,
) -> Result<String> {
    let name = match &session.name {
        Some(n) => {
            if let Some(rec) = state.services.get(n)
                && crate::engine::liveness(rec) == crate::process::Liveness::Alive
            {
                bail!(
                    "a session named `{n}` is already running in project `{}` (pid {}); stop it with `mirrord-up ci stop {n}`",
                    store.project,
                    rec.process.as_ref().map_or(0, |p| p.pid)
                );
            }
            n.clone()
        }
        None => (1..)
            .map(|i| format!("{}-{i}", session.binary))
            .find(|n| !state.services.contains_key(n))
            .unwrap_or_else(|| format!("{}-0", session.binary)),
    };
    let mut req = session.spawn.clone();
    req.env.insert(ENV_SERVICE.to_owned(), name.clone());
    let mut spec = session.spec.clone();
    spec.name.clone_from(&name);
    let mut rec = ServiceRecord {
        kind: RecordKind::Ci,
        config_hash: ConfigHash::of(&serde_json::json!(req.args)),
        spec: spec.into(),
        argv: std::iter::once(req.program.display().to_string())
            .chain(req.args.iter().cloned())
            .collect(),
        status: Status::Starting,
        process: None,
        spawn_nonce: Some(req.nonce.clone()),
        started_at_ms: None,
        restarts: 0,
        policy_restarts: 0,
        last_exit: None,
        last_reason: Some("ci start".into()),
        log_path: req.stdout.clone(),
        log_offset: 0,
        output_dir: Some(session.out_dir.clone()),
        backoff_until_ms: None,
        crash_streak: 0,
    };
    // Intent first, then spawn, then the identity: a crash in between is recovered by nonce.
    state.services.insert(name.clone(), rec.clone().into());
    store.save(lock, state)?;
    let (_child, identity) = match launcher.spawn(&req) {
        Ok(spawned) => spawned,
        Err(e) => {
            state.services.remove(&name);
            store.save(lock, state)?;
            bail!("cannot run `{}`: {e}", req.program.display());
        }
    };
    rec.process = Some(identity);
    rec.status = Status::Running;
    rec.started_at_ms = Some(now_ms());
    state.services.insert(name.clone(), rec.into());
    store.save(lock, state)?;
    Ok(name)
}

/// Records that CI session `name` ended (`code`, `reason`), if it is still recorded.
pub fn record_exit(
    store: &Store,
    lock: &StateLock,
    state: &mut State,
    name: &str,
    code: Option<i32>,
    reason: &str,
) -> Result<String> {
    if let Some(rec) = state.services.get_mut(name) {
        rec.status = Status::Exited;
        rec.last_reason = Some(reason.to_owned());
        rec.last_exit = Some(ExitInfo {
            code,
            signal: None,
            at_ms: now_ms(),
        });
        store.save(lock, state)?;
    }
    Ok(format!("{name} exited"))
}
