//! The executor: observe (state ∩ reality), recover an interrupted apply, and carry out a
//! `Plan`'s steps — stops in reverse dependency order, starts level by level, each level in
//! parallel — through the seams (`seams::Launcher`, `ProcessTable`, `Clock`: real process
//! groups, or fakes in unit tests). It decides nothing: each step says what to start (its
//! spec), how to stop (signal, grace period), what it waits for, and what the restart policy
//! decided. Intent is written before acting, so that a crash at any point leaves a state from
//! which the next run converges without duplicates or orphans.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::config::{Condition, RunType};
use crate::desired::Desired;
use crate::plan::{
    Action, DepFacts, ExitFacts, Gate, Observed, ObservedService, ObservedState, Plan, Step,
    StopHow, Verdict,
};
use crate::process::{
    self, ENV_INSTANCE, ENV_PROJECT, ENV_SERVICE, ENV_STATE, Liveness, ProcessIdentity,
    SpawnRequest, StopOutcome, StopRequest,
};
use crate::seams::{Clock, Launcher, ProcessTable};
use crate::spec::{LauncherKind, ServiceSpec};
use crate::state::{
    ExitInfo, RecordKind, ServiceRecord, State, StateError, StateLock, StateStore, Status,
};

/// Default time a dependent waits for its dependency's readiness.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a mirrord session may take to say `Ready!` before its start counts as failed
/// (mirrord's own agent start-up timeout is 60 s; an operator session adds its own steps).
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a pass that hands its stops to the loop (`defer_stops`) waits for them itself
/// first: a process that ends at once on its signal (most do) is stopped and replaced in one
/// pass, without the two hand-offs to the loop's stop thread and back and a second pass (hot
/// reload p50, two supervisors side by side, both orders: 3.18 / 3.64 → 2.88 / 3.32 ms at 100
/// services, 5.48 / 6.11 → 4.93 / 5.22 ms at 500). A longer wait stays the loop's: the pass
/// holds the state lock and the loop waits for the pass. Only for a level of at most
/// [`QUICK_STOP_GROUPS`] groups: the wait looks at every group each time one ends, and a
/// `down` of 500 services is the loop's (waited for in the pass first, it took 6 ms longer).
pub const QUICK_STOP: Duration = Duration::from_millis(5);

/// The most groups a level may have for its pass to wait for them itself ([`QUICK_STOP`]).
pub const QUICK_STOP_GROUPS: usize = 8;

/// Is the recorded process alive (its identity intact)?
/// What an applied plan did, in the past tense (`plan` says what it would do with
/// `Plan::summary`): `1 started, 0 restarted, 0 stopped, 3 unchanged`.
pub fn done_summary(plan: &Plan) -> String {
    let count = |a| plan.steps.iter().filter(|s| s.action == a).count();
    format!(
        "{} started, {} restarted, {} stopped, {} unchanged",
        count(Action::Start),
        count(Action::Restart),
        count(Action::Stop),
        count(Action::Keep)
    )
}

pub fn liveness(rec: &ServiceRecord) -> Liveness {
    rec.process
        .as_ref()
        .map(ProcessIdentity::liveness)
        .unwrap_or(Liveness::Exited)
}

/// Observed = state ∩ reality: a dead process or a recycled PID is "not running"; a process
/// that was up and ended is an exit the restart policy has not decided about yet; a back-off
/// or a failure carries what the policy needs to look at it again.
pub fn observe(state: &State) -> Observed {
    observe_with(state, &crate::seams::REAL)
}

/// [`observe`], asking `processes` about each recorded process.
pub fn observe_with(state: &State, processes: &dyn ProcessTable) -> Observed {
    observe_some(state, processes, |_, _| true)
}

/// [`observe_with`], of the records `keep` keeps only (no look at the others).
pub fn observe_some(
    state: &State,
    processes: &dyn ProcessTable,
    keep: impl Fn(&str, &ServiceRecord) -> bool,
) -> Observed {
    state
        .records(RecordKind::Service)
        .filter(|(name, rec)| keep(name, rec))
        .map(|(name, rec)| {
            let alive = processes.liveness(rec.process.as_ref());
            let detail = || match alive {
                Liveness::Recycled => "its PID now belongs to another process".to_owned(),
                _ => rec
                    .last_exit
                    .as_ref()
                    .map(ExitInfo::describe)
                    .unwrap_or_default(),
            };
            let up = matches!(
                rec.status,
                Status::Running | Status::Ready | Status::Starting
            );
            let st = match (rec.status, alive) {
                (Status::Stopping, _) if rec.process.is_some() => ObservedState::Stopping,
                (Status::Waiting, _) if rec.process.is_none() => ObservedState::Waiting,
                (_, Liveness::Alive) => ObservedState::Running,
                _ if up && rec.process.is_some() => ObservedState::Exited {
                    detail: detail(),
                    exit: ExitFacts {
                        failed: rec.last_exit.as_ref().is_none_or(ExitInfo::failed),
                        uptime: Duration::from_millis(
                            rec.last_exit
                                .as_ref()
                                .zip(rec.started_at_ms)
                                .map_or(0, |(e, s)| e.at_ms.saturating_sub(s)),
                        ),
                        streak: rec.crash_streak,
                        restart: rec.spec.restart,
                        max_restarts: rec.spec.max_restarts,
                        before_ready: rec.status == Status::Starting,
                    },
                },
                (Status::Backoff, _) => ObservedState::Backoff {
                    detail: detail(),
                    until_ms: rec.backoff_until_ms,
                    streak: rec.crash_streak,
                },
                (Status::Failed, _) => ObservedState::Failed {
                    detail: detail(),
                    last_failed: rec.last_exit.as_ref().map(ExitInfo::failed),
                    streak: rec.crash_streak,
                },
                _ => ObservedState::NotRunning { detail: detail() },
            };
            (
                name.clone(),
                ObservedService {
                    hash: rec.config_hash.clone(),
                    state: st,
                    level: rec.spec.level,
                    recorded: rec.spec.clone(),
                },
            )
        })
        .collect()
}

/// What the user sees while a plan is applied.
pub trait Reporter {
    /// Something happened (`started (pid 12): new service`, `stopped`, `failed: …`, `ready`).
    fn event(&mut self, service: &str, what: &str);
    /// Several events `(service, what)` that came together (a shutdown's stops as they end):
    /// as many [`Reporter::event`]s, which a reporter may write at once.
    fn events(&mut self, batch: &[(String, String)]) {
        for (service, what) in batch {
            self.event(service, what);
        }
    }
    /// A wait began (`stopping`, `waiting for readiness`), which ends at the latest after
    /// `limit`; the next `event` for the service ends it. Plain output shows nothing: the
    /// outcome line follows.
    fn waiting(&mut self, _service: &str, _what: &str, _limit: Option<Duration>) {}
    /// The same wait beginning for several services at once (a level's stops): as many
    /// [`Reporter::waiting`]s, which a reporter may write at once.
    fn waitings(&mut self, what: &str, waits: &[(&str, Option<Duration>)]) {
        for (service, limit) in waits {
            self.waiting(service, what, *limit);
        }
    }
}

/// Plain lines on stderr (`api  started (pid 123): new service`).
pub struct LineReporter {
    pub quiet: bool,
    pub width: usize,
}

impl Reporter for LineReporter {
    fn event(&mut self, service: &str, what: &str) {
        if !self.quiet {
            crate::supervisor::line_to_stderr(&format!("{service:<w$}  {what}", w = self.width));
        }
    }

    fn events(&mut self, batch: &[(String, String)]) {
        if !self.quiet && !batch.is_empty() {
            let text: String = batch
                .iter()
                .map(|(service, what)| format!("{service:<w$}  {what}\n", w = self.width))
                .collect();
            crate::output::text_to(true, &text);
        }
    }
}

#[derive(Debug, Default)]
pub struct ApplyReport {
    /// `(service, reason)` of every service that could not be started.
    pub failed: Vec<(String, String)>,
    /// `(service, pids)` still alive after a stop.
    pub survivors: Vec<(String, Vec<i32>)>,
    /// Services left waiting for a dependency (`defer_waits`).
    pub waiting: Vec<String>,
    /// Stops signalled, not waited for (`defer_stops`).
    pub deferred: Vec<PendingStop>,
    /// Sessions spawned and left `starting` (`defer_sessions`).
    pub sessions: Vec<SessionOrder>,
}

impl ApplyReport {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.survivors.is_empty()
    }

    /// One paragraph naming what went wrong.
    pub fn error_message(&self) -> Option<String> {
        self.error().map(|e| e.to_string())
    }

    /// What went wrong, as a typed error (`error::fate` keeps going after it; its exit code
    /// is 1).
    pub fn error(&self) -> Option<ApplyFailed> {
        (!self.ok()).then(|| ApplyFailed {
            failed: self.failed.clone(),
            survivors: self.survivors.clone(),
        })
    }
}

/// Services that could not be started, or did not stop: one paragraph naming each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ApplyFailed {
    /// `(service, reason)`.
    pub failed: Vec<(String, String)>,
    /// `(service, pids still alive)`.
    pub survivors: Vec<(String, Vec<i32>)>,
}

impl std::fmt::Display for ApplyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (s, why) in &self.failed {
            parts.push(format!("{s} failed to start: {why}"));
        }
        for (s, pids) in &self.survivors {
            parts.push(format!("{s} did not stop (still running: pids {pids:?})"));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Settings of the executor that come from the command line.
#[derive(Debug, Clone, Default)]
pub struct LaunchSettings {
    pub mirrord_bin: Option<PathBuf>,
    /// Overrides every service's `stop_timeout` (`down -t`).
    pub stop_timeout: Option<Duration>,
    /// The supervisor: a dependency that has not reached its condition yet is not waited for;
    /// its dependent is recorded as `waiting` and the loop starts it once it has (see
    /// ARCHITECTURE.md, "The path of one save").
    pub defer_waits: bool,
    /// With `defer_waits`: dependencies whose readiness probe timed out, with the PID it
    /// probed and why (`dependency db not ready after 60s`).
    pub not_ready: BTreeMap<String, (i32, String)>,
    /// The loop watches stops: a stop signals its groups, records them `stopping` and
    /// returns them in `ApplyReport::deferred`; a plan with such stops starts nothing (its
    /// starts wait for the stops, see `Engine::apply_plan`).
    pub defer_stops: bool,
    /// The loop watches sessions: a mirrord session is left `starting` after its spawn (its
    /// `Ready!` is the loop's wait, `ApplyReport::sessions`), not awaited in the pass.
    pub defer_sessions: bool,
    /// With `defer_stops`, the loop's final shutdown: the first level to stop is signalled
    /// before its intent (`stopping`) is saved, not after, so that its processes end while
    /// the state is written (see `Engine::stop_each`).
    pub signal_first: bool,
}

/// Finished stops recorded in the engine's state and not saved yet; let go when saved, or
/// when the engine ends (a pass that fails before its save).
struct UnsavedStops<'a> {
    store: &'a StateStore,
    names: Vec<String>,
}

impl UnsavedStops<'_> {
    fn release(&mut self) {
        for name in self.names.drain(..) {
            crate::stop_owner::release(self.store, &name);
        }
    }
}

impl Drop for UnsavedStops<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// The executor, holding the state lock for its whole life.
pub struct Engine<'a> {
    pub store: &'a StateStore,
    pub lock: &'a StateLock,
    pub state: State,
    pub settings: LaunchSettings,
    pub reporter: &'a mut dyn Reporter,
    /// Children spawned by this process (for exit codes of `completed_successfully`).
    children: BTreeMap<String, process::Spawned>,
    /// Services whose finished stop is recorded in `state` but not saved yet: their stop
    /// locks (`stop_owner`) are let go by the next save, or when the engine ends.
    unsaved_stops: UnsavedStops<'a>,
    /// Spawns services (the real one, or a fake in unit tests).
    pub launcher: &'a dyn Launcher,
    /// Looks at and stops processes.
    pub processes: &'a dyn ProcessTable,
    /// The time.
    pub clock: &'a dyn Clock,
}

impl<'a> Engine<'a> {
    pub fn new(
        store: &'a StateStore,
        lock: &'a StateLock,
        state: State,
        settings: LaunchSettings,
        reporter: &'a mut dyn Reporter,
    ) -> Engine<'a> {
        Engine {
            store,
            lock,
            state,
            settings,
            reporter,
            children: BTreeMap::new(),
            unsaved_stops: UnsavedStops {
                store,
                names: Vec::new(),
            },
            launcher: &crate::seams::REAL,
            processes: &crate::seams::REAL,
            clock: &crate::seams::REAL,
        }
    }

    /// The same executor on other seams (fakes in unit tests).
    pub fn with_seams(
        mut self,
        launcher: &'a dyn Launcher,
        processes: &'a dyn ProcessTable,
        clock: &'a dyn Clock,
    ) -> Engine<'a> {
        self.launcher = launcher;
        self.processes = processes;
        self.clock = clock;
        self
    }

    /// Lets go of the child handles: under the supervisor, its reaper collects every exit.
    pub fn release_children(&mut self) {
        self.children.clear();
    }

    pub fn save(&mut self) -> Result<(), StateError> {
        let saved = self.store.save(self.lock, &self.state);
        self.release_unsaved_stops();
        saved?;
        Ok(())
    }

    /// Saves unless the state equals `loaded` (what was read); one equal to what was saved
    /// last is not written again either (the store compares it with what it knows is on disk,
    /// [`StateStore::save`]).
    pub fn save_if_changed(&mut self, loaded: &State) -> Result<(), StateError> {
        if &self.state == loaded {
            self.release_unsaved_stops();
            return Ok(());
        }
        self.save()
    }

    /// The stops recorded since the last save are nobody's any more (`stop_owner`).
    fn release_unsaved_stops(&mut self) {
        self.unsaved_stops.release();
    }

    /// Finishes what a crashed run left: a record with a spawn nonce but no process identity
    /// is matched, by that nonce, against the processes carrying our markers, and adopted.
    pub fn recover(&mut self) -> Result<(), StateError> {
        let pending: Vec<String> = self
            .state
            .services
            .iter()
            .filter(|(_, r)| r.process.is_none() && r.spawn_nonce.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let marked = self.processes.find_marked(&self.store.dir);
        for name in pending {
            let rec = self.state.services.get_mut(&name).expect("listed");
            let found = marked
                .iter()
                .find(|g| g.nonce.is_some() && g.nonce == rec.spawn_nonce && g.leader.is_some());
            match found {
                Some(g) => {
                    rec.process = g.leader.clone();
                    rec.status = Status::Running;
                    rec.last_reason = Some("adopted after an interrupted start".into());
                    self.reporter
                        .event(&name, "adopted (found by its spawn marker)");
                }
                None => {
                    rec.status = Status::Exited;
                    rec.last_reason = Some("interrupted before it started".into());
                }
            }
        }
        self.save()
    }

    /// Refuses to start over processes that carry this project's markers but that the state
    /// does not know (a lost or corrupt state file): they would run twice.
    pub fn check_untracked(&self) -> anyhow::Result<()> {
        let known: BTreeSet<i32> = self
            .state
            .services
            .values()
            .filter_map(|r| r.process.as_ref().map(|p| p.pgid))
            .collect();
        let stray: Vec<_> = self
            .processes
            .find_marked(&self.store.dir)
            .into_iter()
            .filter(|g| !known.contains(&g.pgid))
            .collect();
        if stray.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = stray
            .iter()
            .map(|g| format!("{} (pgid {})", g.service, g.pgid))
            .collect();
        anyhow::bail!(
            "found processes of project `{}` that the state file does not record: {}. They would run twice; stop them with `mirrord-up down --force`",
            self.store.project,
            list.join(", ")
        )
    }

    /// Carries out `plan`. `_desired` is not needed any more (the steps carry their specs);
    /// kept for the callers that still pass it.
    pub fn apply(&mut self, plan: &Plan, _desired: &Desired) -> Result<ApplyReport, StateError> {
        self.apply_plan(plan)
    }

    /// Carries out `plan`: stops what goes away or is
    /// replaced (deepest level first), then starts level by level, each level at once, every
    /// start gated on what its step says it waits for.
    pub fn apply_plan(&mut self, plan: &Plan) -> Result<ApplyReport, StateError> {
        let mut report = ApplyReport::default();
        // A start for any other reason than the policy starts a new streak.
        for step in plan.changes().filter(|s| s.new_streak) {
            if let Some(rec) = self.state.services.get_mut(&step.service) {
                rec.crash_streak = 0;
                rec.backoff_until_ms = None;
            }
        }
        // 1. Everything that goes away or is replaced stops first, deepest level first.
        let to_stop: Vec<&Step> = plan
            .changes()
            .filter(|s| matches!(s.action, Action::Stop | Action::Restart))
            .collect();
        // Starts that follow without waiting (nothing waits inside a supervised pass): the
        // first one's intent save carries the stops' outcomes (`stop_each`).
        let starts = self.settings.defer_waits
            && plan
                .changes()
                .any(|s| matches!(s.action, Action::Start | Action::Restart) && s.spec.is_some());
        self.stop_each(Self::stop_items(&to_stop), &mut report, starts)?;
        // Stops the loop watches (`defer_stops`): the starts wait for them, the caller hands
        // them back once the stops are recorded (`Plan::resume_after_stops`).
        if !report.deferred.is_empty() {
            return Ok(report);
        }

        // 2. Starts, level by level (the plan's order within a level); within a level all at
        // once.
        let mut by_level: BTreeMap<usize, Vec<&Step>> = BTreeMap::new();
        for step in plan
            .changes()
            .filter(|s| matches!(s.action, Action::Start | Action::Restart) && s.spec.is_some())
        {
            by_level.entry(step.level).or_default().push(step);
        }
        let mut unavailable: BTreeSet<String> = BTreeSet::new();
        for (_, steps) in by_level {
            let mut ready_to_spawn = Vec::new();
            for step in steps {
                let spec = step.spec.as_deref().expect("filtered");
                if self.settings.defer_waits {
                    let facts = |dep: &str| self.dep_facts(dep);
                    match crate::plan::gate(&step.wait, &facts, &self.settings.not_ready) {
                        Gate::Met => ready_to_spawn.push(step),
                        Gate::Wait { reason, failed } => {
                            self.wait_on(spec, reason, failed, &mut report);
                            unavailable.insert(spec.name.clone());
                        }
                        Gate::Probe { dep, reason } => {
                            if self.wait_on(spec, reason, None, &mut report)
                                && let Some(d) = step.wait.iter().find(|w| w.on == dep)
                            {
                                self.reporter.waiting(
                                    &dep,
                                    "waiting for readiness",
                                    Some(ready_timeout(&d.spec)),
                                );
                            }
                            unavailable.insert(spec.name.clone());
                        }
                    }
                    continue;
                }
                match self.wait_for_dependencies(step, &unavailable) {
                    Ok(()) => ready_to_spawn.push(step),
                    Err(why) => {
                        self.fail(spec, &why, &mut report);
                        unavailable.insert(spec.name.clone());
                    }
                }
            }
            let failed = self.start_level(&ready_to_spawn, &mut report)?;
            unavailable.extend(failed);
        }
        // Each level saved as it went; the caller saves once more after its own checks.
        Ok(report)
    }

    /// Applies what the restart policy decided about exits (see [`apply_verdicts`]): by the
    /// caller that recorded them (the supervisor's pass), not by `apply_plan` — a one-shot
    /// command records no exits and restarts what ended anyway.
    pub fn settle(&mut self, plan: &Plan, told: &BTreeSet<String>) {
        apply_verdicts(&mut self.state, plan, told, self.reporter);
    }

    /// What the recorded state knows about `dep` now, for [`crate::plan::gate`].
    fn dep_facts(&self, dep: &str) -> Option<DepFacts> {
        let rec = self.state.services.get(dep)?;
        Some(DepFacts {
            status: rec.status,
            alive: self.processes.liveness(rec.process.as_ref()) == Liveness::Alive,
            pid: rec.process.as_ref().map(|p| p.pid),
            last_exit: rec.last_exit.as_ref().map(|e| (e.failed(), e.describe())),
        })
    }

    /// Records `spec` as waiting (`reason`: `waiting for db (ready)`); `failed` is said once,
    /// as a failure, when the dependency ended without reaching its condition.
    fn wait_on(
        &mut self,
        spec: &ServiceSpec,
        reason: String,
        failed: Option<String>,
        report: &mut ApplyReport,
    ) -> bool {
        let reason = match &failed {
            Some(why) => format!("{reason}: {why}"),
            None => reason,
        };
        let new = self.state.services.get(&spec.name).is_none_or(|rec| {
            rec.status != Status::Waiting || rec.last_reason.as_ref() != Some(&reason)
        });
        self.record_without_process(spec, Status::Waiting, &reason);
        report.waiting.push(spec.name.clone());
        if !new {
            return false;
        }
        match failed {
            Some(why) => {
                self.reporter.event(&spec.name, &format!("failed: {why}"));
                report.failed.push((spec.name.clone(), why));
            }
            None => self.reporter.event(&spec.name, &reason),
        }
        true
    }

    /// Records `spec` with `status` and `reason` and no process (waiting, or failed before it
    /// could start).
    fn record_without_process(&mut self, spec: &ServiceSpec, status: Status, reason: &str) {
        let log_path = self.store.log_path(&spec.name);
        let shared = Arc::new(spec.clone());
        let rec = self
            .state
            .services
            .entry(spec.name.clone())
            .or_insert_with(|| new_record(&shared, log_path).into());
        rec.spec = shared;
        rec.config_hash = spec.hash();
        rec.status = status;
        rec.process = None;
        rec.spawn_nonce = None;
        rec.last_reason = Some(reason.to_owned());
    }

    fn fail(&mut self, spec: &ServiceSpec, why: &str, report: &mut ApplyReport) {
        self.reporter.event(&spec.name, &format!("failed: {why}"));
        report.failed.push((spec.name.clone(), why.to_owned()));
        self.record_without_process(spec, Status::Failed, why);
    }

    /// Stops the named services (reverse level order, each level in parallel), removing the
    /// records of `removed`, each with its recorded signal and grace period (or the command
    /// line's, `down -t`).
    pub fn stop_services(
        &mut self,
        names: &[(String, String)],
        removed: &BTreeSet<String>,
        report: &mut ApplyReport,
    ) -> Result<(), StateError> {
        let items: Vec<StopItem> = names
            .iter()
            .filter_map(|(n, why)| {
                let rec = self.state.services.get(n)?;
                Some(StopItem {
                    name: n.clone(),
                    why: why.clone(),
                    how: StopHow::of(&rec.spec, self.settings.stop_timeout),
                    remove: removed.contains(n),
                })
            })
            .collect();
        self.stop_each(items, report, false)
    }

    /// Stops what `steps` stop, as each says (its signal and grace; a record to forget goes,
    /// others stay: a restart's for its start, a stop's as stopped).
    pub fn stop_steps(
        &mut self,
        steps: &[&Step],
        report: &mut ApplyReport,
    ) -> Result<(), StateError> {
        self.stop_each(Self::stop_items(steps), report, false)
    }

    fn stop_items(steps: &[&Step]) -> Vec<StopItem> {
        steps
            .iter()
            .filter_map(|s| {
                Some(StopItem {
                    name: s.service.clone(),
                    why: s.cause.to_string(),
                    how: s.stop?,
                    remove: s.forget,
                })
            })
            .collect()
    }

    /// Stops `items`, level by level. `starts_follow`: this pass starts services once they are
    /// stopped, and the first start saves its intent before any spawn (`start_level`).
    fn stop_each(
        &mut self,
        items: Vec<StopItem>,
        report: &mut ApplyReport,
        starts_follow: bool,
    ) -> Result<(), StateError> {
        let mut by_level: BTreeMap<std::cmp::Reverse<usize>, Vec<StopItem>> = BTreeMap::new();
        for item in items {
            if let Some(rec) = self.state.services.get(&item.name) {
                by_level
                    .entry(std::cmp::Reverse(rec.spec.level))
                    .or_default()
                    .push(item);
            }
        }
        // Stops the loop would watch: a level whose groups all end within `QUICK_STOP` of the
        // signal is stopped here, as without the loop (`ProcessTable::stop_quickly`), and what
        // follows it (a restart's start) runs in this pass; from the first level that does not,
        // the stops are the loop's.
        let mut quick = self.settings.defer_stops;
        // No level signalled yet and left to the loop: the next one may be signalled before
        // its intent is saved (`signal_first`); the levels after it wait for it.
        let mut first = true;
        let levels = by_level.len();
        for (k, (std::cmp::Reverse(level_no), level)) in by_level.into_iter().enumerate() {
            let mut requests = Vec::new();
            for item in &level {
                let rec: &mut ServiceRecord =
                    self.state.services.get_mut(&item.name).expect("present");
                // A process that already ended and was settled (exited, failed, in back-off)
                // is not signalled, and its last exit stays what it was.
                let settled = matches!(
                    rec.status,
                    Status::Exited | Status::Failed | Status::Stopped | Status::Backoff
                );
                if let Some(id) = rec.process.as_ref().filter(|_| !settled) {
                    rec.status = Status::Stopping;
                    requests.push(StopRequest {
                        name: item.name.clone(),
                        identity: id.clone(),
                        signal: item.how.signal,
                        timeout: item.how.grace,
                        signalled: false,
                    });
                }
            }
            // This process owns a stop until its outcome is saved (`stop_owner`): a stop that
            // may outlive this pass's hold of the state lock. One that may end within the pass
            // (`QUICK_STOP`) is nobody else's to see, and its lock is taken only if it does
            // not: still under the state lock, after its signal (creating the lock file of a
            // service's first stop took 0.3–0.4 ms here, before the signal).
            let try_quick = quick && (1..=QUICK_STOP_GROUPS).contains(&requests.len());
            let own = |requests: &[StopRequest]| {
                for r in requests {
                    crate::stop_owner::take(self.store, &r.name);
                }
            };
            if !try_quick {
                own(&requests);
            }
            // The loop's final shutdown signals its first level before the intent is saved:
            // the save (its lock, the journal line, the events; a snapshot of every record when
            // the line does not fit) then runs while the processes end, not before their signal.
            // Should this process die in between, the state still records them running, as
            // it did before the signal: `down` then stops whatever is recorded or carries the
            // project's markers without this supervisor (`commands::down`), and any later
            // pass finds them ended.
            if self.settings.signal_first && self.settings.defer_stops && first && !try_quick {
                self.processes.signal_now(&mut requests);
            }
            if !requests.is_empty() {
                first = false;
                self.save()?; // intent: these are being stopped
            }
            let waits: Vec<(&str, Option<Duration>)> = requests
                .iter()
                .map(|r| (r.name.as_str(), Some(r.timeout)))
                .collect();
            self.reporter.waitings("stopping", &waits);
            let stopped_here = try_quick && self.processes.stop_quickly(&mut requests, QUICK_STOP);
            if try_quick && !stopped_here {
                own(&requests);
            }
            if self.settings.defer_stops && !stopped_here {
                // Signalled already or not (`StopRequest::signalled`), the next levels wait.
                quick &= requests.is_empty();
                // The loop watches the stop (`PendingStop`); what needs no wait is done now.
                let mut removed = false;
                for item in level {
                    match requests.iter().find(|r| r.name == item.name) {
                        Some(r) => report.deferred.push(PendingStop {
                            name: item.name,
                            why: item.why,
                            remove: item.remove,
                            level: level_no,
                            request: r.clone(),
                        }),
                        None if item.remove => {
                            reporter_note(self.reporter, &item.name, &item.why);
                            self.state.services.remove(&item.name);
                            removed = true;
                        }
                        None => {}
                    }
                }
                // What was signalled is saved (above); a removal is saved now. Nothing else
                // changed here: what the pass changed before is saved by the next save (a
                // start's intent, or the pass's last).
                if removed {
                    self.save()?;
                }
                continue;
            }
            let reasons: BTreeMap<&String, &String> =
                level.iter().map(|i| (&i.name, &i.why)).collect();
            let reporter = &mut *self.reporter;
            let mut said = |o: &StopOutcome| {
                let why = reasons.get(&o.name).map_or("", |w| w.as_str());
                reporter.event(&o.name, &stop_event(o, why));
            };
            // Ended here: every group is empty, its leader collected, nothing left it.
            let outcomes = if stopped_here {
                let ended: Vec<StopOutcome> = requests
                    .iter()
                    .map(|r| StopOutcome::ended(&r.name))
                    .collect();
                ended.iter().for_each(&mut said);
                ended
            } else {
                self.processes.stop(&requests, &mut said)
            };
            for item in &level {
                let outcome = outcomes.iter().find(|o| o.name == item.name);
                let request = requests.iter().find(|r| r.name == item.name);
                self.record_stop(item, request, outcome, report);
            }
            // The last level's stops all ended here, and starts follow: how they ended reaches
            // the disk with the first start's intent, in one write before any spawn (a restart
            // wrote twice between its old process's exit and its new one's spawn). Whatever
            // the starts do not save, the pass's own last save does; a crash before either
            // leaves a record of a process that no longer runs, which the next pass settles.
            let saved_by_the_start = stopped_here && starts_follow && k + 1 == levels;
            let saved = if saved_by_the_start {
                Ok(())
            } else {
                self.save()
            };
            for r in &requests {
                crate::stop_owner::release(self.store, &r.name);
            }
            saved?;
        }
        Ok(())
    }

    /// Records how `item`'s stop ended (`request` is its signalled group, if it had one): its
    /// record goes (`remove`) or stays as exited, unless processes survived.
    fn record_stop(
        &mut self,
        item: &StopItem,
        request: Option<&StopRequest>,
        outcome: Option<&StopOutcome>,
        report: &mut ApplyReport,
    ) {
        let n = &item.name;
        if let Some(o) = outcome.filter(|o| !o.survivors.is_empty()) {
            report.survivors.push((n.clone(), o.survivors.clone()));
            return;
        }
        if item.remove {
            if request.is_none() {
                reporter_note(self.reporter, n, &item.why);
            }
            self.state.services.remove(n);
        } else if let Some(rec) = self.state.services.get_mut(n)
            && let Some(r) = request
        {
            let killed = outcome.is_some_and(|o| o.killed);
            rec.status = Status::Exited;
            rec.process = None;
            // Not an interrupted start: nothing to adopt by this nonce any more.
            rec.spawn_nonce = None;
            // How it really ended when the reaper knows; else the signal that ended it.
            let at_ms = self.clock.now_ms();
            rec.last_exit = Some(
                self.processes
                    .take_exit(r.identity.pid)
                    .map(ExitInfo::from_kind)
                    .unwrap_or_else(|| ExitInfo {
                        code: None,
                        signal: Some(if killed {
                            "SIGKILL".to_owned()
                        } else {
                            rec.spec.stop_signal.clone()
                        }),
                        at_ms,
                    }),
            );
        }
    }

    /// Records stops the loop watched (`defer_stops`): each outcome is said and recorded as
    /// a stop in the pass would have. A record that is no longer the one signalled (another
    /// process since, or gone) is left alone.
    pub fn finish_stops(
        &mut self,
        done: &[(PendingStop, StopOutcome)],
        report: &mut ApplyReport,
    ) -> Result<(), StateError> {
        self.record_finished_stops(done, report);
        self.save()
    }

    /// As [`Engine::finish_stops`], left to the next save: a start that follows in the same
    /// pass saves its intent (`start_level`) before it spawns anything, and that save carries
    /// these records too. Until then the stops stay owned (`stop_owner`); should the pass end
    /// without a save, they are let go unrecorded, as after a crash: the processes are gone,
    /// and the next pass finds them so.
    pub fn record_finished_stops(
        &mut self,
        done: &[(PendingStop, StopOutcome)],
        report: &mut ApplyReport,
    ) {
        for (p, o) in done {
            let current = self.state.services.get(&p.name).is_some_and(|r| {
                r.status == Status::Stopping
                    && r.process.as_ref().map(|id| id.pid) == Some(p.request.identity.pid)
            });
            self.reporter.event(&p.name, &stop_event(o, &p.why));
            if !current {
                continue;
            }
            let item = StopItem {
                name: p.name.clone(),
                why: p.why.clone(),
                how: StopHow {
                    signal: p.request.signal,
                    grace: p.request.timeout,
                },
                remove: p.remove,
            };
            self.record_stop(&item, Some(&p.request), Some(o), report);
        }
        // Once saved, the stop is nobody's any more.
        self.unsaved_stops
            .names
            .extend(done.iter().map(|(p, _)| p.name.clone()));
    }

    /// Spawns the services of one level. Returns the names that failed.
    fn start_level(
        &mut self,
        steps: &[&Step],
        report: &mut ApplyReport,
    ) -> Result<Vec<String>, StateError> {
        let mut failed = Vec::new();
        let mut launches = Vec::new();
        let mut lookups = Lookups::default();
        for step in steps {
            let spec: &ServiceSpec = step.spec.as_deref().expect("a start carries its spec");
            // Leftovers of an earlier process of this service (e.g. a grandchild that outlived
            // its leader) go first, so that nothing runs twice.
            if let Some(old) = self
                .state
                .services
                .get(&spec.name)
                .and_then(|r| r.process.clone())
            {
                self.processes.stop(
                    &[StopRequest {
                        name: spec.name.clone(),
                        identity: old,
                        signal: Signal::SIGKILL,
                        timeout: Duration::ZERO,
                        signalled: false,
                    }],
                    &mut |_| {},
                );
            }
            let mut notices = Vec::new();
            let prepared = self.prepare_launch(spec, &mut notices, &mut lookups);
            for notice in notices {
                self.reporter.event(&spec.name, &notice);
            }
            match prepared {
                Ok(req) => launches.push((*step, spec, req)),
                Err(why) => {
                    self.fail(spec, &why, report);
                    failed.push(spec.name.clone());
                }
            }
        }
        if launches.is_empty() {
            return Ok(failed);
        }
        // Intent first: records with their spawn nonce, no process yet.
        for (step, spec, req) in &launches {
            let log_path = self.store.log_path(&spec.name);
            crate::logrotate::set_limits(&log_path, spec.logging);
            let offset = crate::logrotate::rotate_at_restart(&log_path, spec.logging);
            if spec.launcher == LauncherKind::Mirrord {
                // Its `Ready!` is looked for from here: the rotation keeps it until it is.
                crate::logrotate::hold(&log_path, offset);
            }
            let fresh = new_record(
                step.spec.as_ref().expect("a start carries its spec"),
                log_path,
            );
            let by_policy = step.by_policy();
            let rec = self
                .state
                .services
                .entry(spec.name.clone())
                .and_modify(|old| {
                    *old = ServiceRecord {
                        // A record that ran before: this start is a restart.
                        restarts: old
                            .restarts
                            .saturating_add(u32::from(old.started_at_ms.is_some())),
                        policy_restarts: old
                            .policy_restarts
                            .saturating_add(u32::from(by_policy && old.started_at_ms.is_some())),
                        last_exit: old.last_exit.take(),
                        crash_streak: old.crash_streak,
                        ..fresh.clone()
                    }
                    .into()
                })
                .or_insert(fresh.into());
            rec.spawn_nonce = Some(req.nonce.clone());
            rec.log_offset = offset;
            rec.argv = std::iter::once(req.program.display().to_string())
                .chain(req.args.iter().cloned())
                .collect();
        }
        self.save()?;
        tracing::debug!(count = launches.len(), "spawning a level");
        // The environment, programs and the checked log directory, once for the level.
        let spawning = crate::os::spawn_cache::level();
        let mut sessions = Vec::new();
        let (launched, reqs): (Vec<_>, Vec<_>) = launches
            .into_iter()
            .map(|(step, spec, req)| ((step, spec, req.program.clone()), req))
            .unzip();
        let spawned = self.launcher.spawn_level(reqs);
        // Said together once the level has spawned: one write to each place that says them.
        let mut started = Vec::new();
        for ((step, spec, program), spawned) in launched.into_iter().zip(spawned) {
            let cause = step.cause.to_string();
            match spawned {
                Ok((child, identity)) => {
                    let rec = self.state.services.get_mut(&spec.name).expect("recorded");
                    rec.started_at_ms = Some(self.clock.now_ms());
                    rec.last_reason = Some(cause.clone());
                    if spec.launcher == LauncherKind::Mirrord {
                        // Started once its session says `Ready!` (or failed, if it dies first).
                        rec.status = Status::Starting;
                        self.reporter.waiting(
                            &spec.name,
                            "starting (waiting for mirrord's Ready!)",
                            Some(START_TIMEOUT),
                        );
                        sessions.push(Session {
                            name: spec.name.clone(),
                            cause,
                            watch: crate::readiness::ReadyWatch::new(&rec.log_path, rec.log_offset),
                            identity: identity.clone(),
                        });
                    } else {
                        rec.status = Status::Running;
                        started.push((
                            spec.name.clone(),
                            format!("started (pid {}): {cause}", identity.pid),
                        ));
                    }
                    rec.process = Some(identity);
                    self.children.insert(spec.name.clone(), child);
                }
                Err(e) => {
                    let why = format!("cannot run `{}`: {e}", program.display());
                    self.fail(spec, &why, report);
                    failed.push(spec.name.clone());
                }
            }
        }
        self.reporter.events(&started);
        drop(spawning);
        tracing::debug!("level spawned");
        // Saved here only when this pass may wait after it (a dependency's readiness, a
        // session's `Ready!`), so that the new processes show meanwhile. A supervised pass
        // waits for neither: what the spawns changed rides on the next level's intent save or
        // on the caller's final save, a moment later. A crash before it leaves the intent with
        // its spawn nonces, by which recovery adopts the processes (as after a crash between a
        // spawn and this save).
        let nothing_waits =
            self.settings.defer_waits && (sessions.is_empty() || self.settings.defer_sessions);
        if !nothing_waits {
            self.save()?;
        }
        if !sessions.is_empty() && self.settings.defer_sessions {
            // The loop waits for their `Ready!` (`SessionOrder`).
            report.sessions.extend(sessions.into_iter().map(|s| {
                SessionOrder {
                    log: self
                        .state
                        .services
                        .get(&s.name)
                        .map(|r| (r.log_path.clone(), r.log_offset))
                        .unwrap_or_default(),
                    name: s.name,
                    identity: s.identity,
                }
            }));
        } else if !sessions.is_empty() {
            // What this changes (starting → running) is saved with the next level's intent or
            // by the caller: nothing a crash recovery needs.
            failed.extend(self.await_sessions(sessions, report));
            tracing::debug!("level started");
        }
        Ok(failed)
    }

    /// Waits until every session of a level has started (its `Ready!` line), died before it
    /// (failed, with the cause of mirrord's report), or not said `Ready!` within
    /// `START_TIMEOUT` (failed; it keeps running). Returns the names that failed. A death is
    /// only reported here: its exit is settled (recorded, restart policy) by the caller, as
    /// every exit is.
    fn await_sessions(
        &mut self,
        mut sessions: Vec<Session>,
        report: &mut ApplyReport,
    ) -> Vec<String> {
        // edge hook: `--wait-timeout` bounds this wait too.
        let (deadline, by_wait) = crate::readiness::bounded(START_TIMEOUT);
        let mut failed = Vec::new();
        let mut pause = Duration::from_millis(1);
        loop {
            let mut waiting = Vec::new();
            for mut s in sessions {
                // Checked before and after liveness: a `Ready!` written right before a quick
                // death still counts as a start (what follows is the application's exit).
                let dead = if s.watch.poll() {
                    false
                } else if self.processes.liveness(Some(&s.identity)) != Liveness::Alive {
                    !s.watch.poll()
                } else {
                    waiting.push(s);
                    continue;
                };
                if dead {
                    let rec = self.state.services.get(&s.name).expect("recorded");
                    let why = match crate::readiness::session_cause(&rec.log_path, rec.log_offset) {
                        Some(c) => format!("mirrord exited before Ready!: {c}"),
                        None => "mirrord exited before Ready!".to_owned(),
                    };
                    self.reporter.event(&s.name, &format!("failed: {why}"));
                    if let Some(rec) = self.state.services.get_mut(&s.name) {
                        rec.last_reason = Some(why.clone());
                    }
                    report.failed.push((s.name.clone(), why));
                    failed.push(s.name);
                } else {
                    let rec = self.state.services.get_mut(&s.name).expect("recorded");
                    rec.status = Status::Running;
                    self.reporter.event(
                        &s.name,
                        &format!("started (pid {}): {}", s.identity.pid, s.cause),
                    );
                }
            }
            sessions = waiting;
            if sessions.is_empty() || process::interrupted() {
                return failed;
            }
            if Instant::now() >= deadline {
                for s in sessions {
                    let why = match by_wait {
                        Some(limit) => crate::readiness::NotReady::new(
                            &s.name,
                            crate::readiness::NotReadyWhy::Timeout {
                                after: limit,
                                note: None,
                            },
                        )
                        .to_string(),
                        None => no_ready_message(&s.name),
                    };
                    self.reporter.event(&s.name, &format!("failed: {why}"));
                    if let Some(rec) = self.state.services.get_mut(&s.name) {
                        rec.status = Status::Running;
                        rec.last_reason = Some(why.clone());
                    }
                    report.failed.push((s.name.clone(), why));
                    failed.push(s.name);
                }
                return failed;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// The program, arguments and environment of a service (README: "Running with the real mirrord"), and its mirrord.json.
    /// `notices` gets what the user must be told once (the hand-over fallback).
    fn prepare_launch(
        &self,
        spec: &ServiceSpec,
        notices: &mut Vec<String>,
        lookups: &mut Lookups,
    ) -> Result<SpawnRequest, String> {
        let nonce = process::new_nonce();
        let mut env = BTreeMap::new();
        env.insert(ENV_PROJECT.to_owned(), self.store.project.clone());
        env.insert(ENV_SERVICE.to_owned(), spec.name.clone());
        env.insert(ENV_STATE.to_owned(), self.store.dir.display().to_string());
        env.insert(ENV_INSTANCE.to_owned(), nonce.clone());
        if !lookups.program_found(&spec.command[0], &spec.working_dir) {
            return Err(format!(
                "command `{}` not found (working directory {})",
                spec.command[0],
                spec.working_dir.display()
            ));
        }
        if !lookups.is_dir(&spec.working_dir) {
            return Err(format!(
                "working directory {} does not exist",
                spec.working_dir.display()
            ));
        }
        let log = self.store.log_path(&spec.name);
        // watch (issue #16): the app under our in-session runner when `watch.action: restart`.
        let command = crate::watch::launch_command(spec)?;
        let (program, args) = match spec.launcher {
            LauncherKind::Local => {
                env.extend(spec.env_overrides());
                (PathBuf::from(&command[0]), command[1..].to_vec())
            }
            LauncherKind::Mirrord => {
                let bin = self
                    .settings
                    .mirrord_bin
                    .clone()
                    .ok_or("no mirrord binary (use --mirrord-bin or --launcher local)")?;
                let config_path = self.store.service_dir(&spec.name).join("mirrord.json");
                write_config(&config_path, &spec.mirrord_config)
                    .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
                // As real `mirrord up` gives its children (README: "Environment variables"), or `-f` with strict
                // env for a mirrord version whose config shape is not verified.
                env.insert("MIRRORD_PROGRESS_MODE".into(), "simple".into());
                env.insert(
                    "MIRRORD_UP_CORRELATION_ID".into(),
                    crate::handover::correlation_id().to_owned(),
                );
                let mut args = vec![match spec.run_type {
                    RunType::Exec => "exec".to_owned(),
                    RunType::Container => "container".to_owned(),
                }];
                match crate::handover::prepare(&bin, &config_path, &spec.mirrord_config)? {
                    crate::handover::Handover::Resolved { encoded } => {
                        env.insert("MIRRORD_UP_RESOLVED_CONFIG".into(), encoded);
                    }
                    crate::handover::Handover::File { version } => {
                        if let Some(notice) = crate::handover::fallback_notice(version.as_deref()) {
                            notices.push(notice);
                        }
                        env.insert("MIRRORD_CLI_STRICT_ENV".into(), "true".into());
                        args.extend(["-f".to_owned(), config_path.display().to_string()]);
                    }
                }
                args.push("--".to_owned());
                args.extend(command.iter().cloned());
                (bin, args)
            }
        };
        Ok(SpawnRequest {
            program,
            args,
            env,
            cwd: spec.working_dir.clone(),
            stdout: log.clone(),
            stderr: log,
            nonce,
            keep_mirrord_env: false,
        })
    }

    /// Blocks until every dependency `step` waits for meets its condition (or says why not).
    fn wait_for_dependencies(
        &mut self,
        step: &Step,
        unavailable: &BTreeSet<String>,
    ) -> Result<(), String> {
        for w in &step.wait {
            let dep = &w.on;
            if unavailable.contains(dep) {
                return Err(format!("dependency {dep} did not start"));
            }
            match w.until {
                Condition::Started => {}
                Condition::Ready => self
                    .wait_ready(&w.spec)
                    .map_err(|e| e.as_dependency().to_string())?,
                Condition::CompletedSuccessfully => self.wait_completed(dep)?,
            }
        }
        Ok(())
    }

    // edge hook: a typed error (readiness::NotReady), phrased by the caller.
    fn wait_ready(&mut self, dep: &ServiceSpec) -> Result<(), crate::readiness::NotReady> {
        use crate::readiness::{NotReady, NotReadyWhy};
        let Some(rec) = self.state.services.get(&dep.name) else {
            return Err(NotReady::new(&dep.name, NotReadyWhy::NotRunning));
        };
        if rec.status == Status::Ready {
            return Ok(());
        }
        let probe = crate::readiness::Probe::of(dep);
        let timeout = dep
            .ready
            .as_ref()
            .and_then(|r| r.timeout)
            .map(|t| t.0)
            .unwrap_or(DEFAULT_READY_TIMEOUT);
        // edge hook: `--wait-timeout` bounds this wait too.
        let (deadline, by_wait) = crate::readiness::bounded(timeout);
        let timeout = by_wait.unwrap_or(timeout);
        self.reporter
            .waiting(&dep.name, "waiting for readiness", Some(timeout));
        let log = rec.log_path.clone();
        let offset = rec.log_offset;
        let identity = rec.process.clone();
        let mut pause = Duration::from_millis(1);
        // edge hook: honest readiness (a port answered by someone else does not count).
        let mut foreign: Option<String>;
        loop {
            let owner_check = crate::readiness::owner_checked(dep);
            match probe.check_service(&log, offset, identity.as_ref(), owner_check) {
                crate::readiness::Check::Ready => {
                    let rec = self.state.services.get_mut(&dep.name).expect("present");
                    rec.status = Status::Ready;
                    self.reporter.event(&dep.name, "ready");
                    return Ok(());
                }
                crate::readiness::Check::NotYet => foreign = None,
                other => foreign = other.note(),
            }
            if identity
                .as_ref()
                .is_none_or(|i| self.processes.liveness(Some(i)) != Liveness::Alive)
            {
                return Err(NotReady::new(&dep.name, NotReadyWhy::Exited));
            }
            if process::interrupted() {
                return Err(NotReady::new(&dep.name, NotReadyWhy::Interrupted));
            }
            if Instant::now() >= deadline {
                return Err(NotReady::new(
                    &dep.name,
                    NotReadyWhy::Timeout {
                        after: timeout,
                        note: foreign,
                    },
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    fn wait_completed(&mut self, dep: &str) -> Result<(), String> {
        let rec = self
            .state
            .services
            .get(dep)
            .ok_or(format!("dependency {dep} is not running"))?;
        let identity = rec.process.clone();
        let mut exit = rec.last_exit.clone();
        let processes = self.processes;
        if let Some(id) = identity.filter(|id| processes.liveness(Some(id)) == Liveness::Alive) {
            // Started by this run (or adopted): wait for it, collecting its status when it is
            // our child — through our own handle, or through the supervisor's reaper.
            let mut pause = Duration::from_millis(1);
            loop {
                let status = processes.take_exit(id.pid).map(ExitInfo::from_kind);
                if status.is_some() || processes.liveness(Some(&id)) != Liveness::Alive {
                    exit = status.or(Some(ExitInfo {
                        code: None,
                        signal: None,
                        at_ms: self.clock.now_ms(),
                    }));
                    break;
                }
                if process::interrupted() {
                    return Err("interrupted".into());
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            let rec = self.state.services.get_mut(dep).expect("present");
            rec.status = Status::Exited;
            rec.last_exit = exit.clone();
        }
        match exit {
            // An exit status we could not learn (not our child) counts as success.
            None => Ok(()),
            Some(e) if e.code.is_none_or(|c| c == 0) && e.signal.is_none() => Ok(()),
            Some(e) => Err(format!(
                "dependency {dep} did not complete successfully ({})",
                e.describe()
            )),
        }
    }

    /// `up --wait`: every desired service that runs must become ready before `timeout`.
    pub fn wait_all_ready(
        &mut self,
        desired: &Desired,
        timeout: Duration,
        report: &mut ApplyReport,
    ) {
        let deadline = Instant::now() + timeout;
        for spec in &desired.services {
            if report.failed.iter().any(|(n, _)| n == &spec.name) {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut spec = (**spec).clone();
            let ready = spec.ready.get_or_insert_with(Default::default);
            let own = ready.timeout.map(|t| t.0).unwrap_or(left);
            ready.timeout = Some(crate::config::Seconds(own.min(left)));
            if let Err(why) = self.wait_ready(&spec) {
                report
                    .failed
                    .push((spec.name.clone(), why.as_service().to_string()));
            }
        }
    }

    /// After an apply: services that died already are reported (and recorded as exited, with
    /// the cause of mirrord's report when there is one). A session reported as failed before
    /// its `Ready!` is not reported twice: its entry gains the exit status.
    pub fn reap_early_exits(&mut self, report: &mut ApplyReport) {
        for (name, child) in &self.children {
            if let Some(kind) = self.processes.take_exit(child.pid)
                && let Some(rec) = self.state.services.get_mut(name)
                && rec.process.as_ref().is_some_and(|p| p.pid == child.pid)
            {
                let exit = ExitInfo::from_kind(kind);
                let reason = exit_reason(rec, &exit);
                rec.status = Status::Exited;
                // What it left behind (mirrord's intproxy outlives a failed start).
                if let Some(id) = &rec.process {
                    self.processes.stop_leftovers(
                        name,
                        id,
                        stop_signal(&rec.spec),
                        rec.spec.stop_timeout(),
                    );
                }
                if let Some(entry) = report.failed.iter_mut().find(|(n, _)| n == name) {
                    entry.1 = reason.to_string();
                    rec.last_reason = Some(reason.to_string());
                } else if exit.failed() {
                    let why = reason.right_after_start();
                    self.reporter.event(name, &why);
                    report.failed.push((name.clone(), why.clone()));
                    rec.last_reason = Some(why);
                }
                rec.last_exit = Some(exit);
            }
        }
    }
}

/// Applies what the restart policy decided about exits (`plan`'s verdicts): the status,
/// streak and back-off it records, and what the user is told. The exit itself and its reason
/// (`last_reason`) were recorded when it was collected. Services in `told` had their failure
/// said already: only what the policy does about it is said.
pub fn apply_verdicts(
    state: &mut State,
    plan: &Plan,
    told: &BTreeSet<String>,
    reporter: &mut dyn Reporter,
) {
    for step in &plan.steps {
        let Some(verdict) = step.exit else { continue };
        let Some(rec) = state.services.get_mut(&step.service) else {
            continue;
        };
        let name = &step.service;
        let told = told.contains(name);
        let reason = rec.last_reason.clone().unwrap_or_default();
        match verdict {
            Verdict::Stay { failed } => {
                rec.status = if failed {
                    Status::Failed
                } else {
                    Status::Exited
                };
                if !told {
                    reporter.event(name, &reason);
                }
            }
            Verdict::Backoff {
                after,
                until_ms,
                streak,
            } => {
                rec.status = Status::Backoff;
                rec.crash_streak = streak;
                rec.backoff_until_ms = Some(until_ms);
                let restart = format!(
                    "restarting in {} (restart {streak} in a row)",
                    crate::output::duration(after)
                );
                reporter.event(
                    name,
                    &if told {
                        restart
                    } else {
                        format!("{reason}; {restart}")
                    },
                );
            }
            Verdict::GiveUp { restarts } => {
                rec.status = Status::Failed;
                rec.backoff_until_ms = None;
                let why = format!(
                    "{reason}; giving up after {restarts} restarts in a row (max_restarts)"
                );
                reporter.event(name, &format!("failed: {why}"));
                rec.last_reason = Some(why);
            }
        }
    }
}

/// How a service's process ended, for its `last_reason` and the events: `exited (exit code
/// 3)`; for a mirrord session that died before its `Ready!`, `mirrord exited before Ready!
/// (exit code 1): <the cause of mirrord's report>`; after it, a report of mirrord's own
/// (an `execve` failure) is the cause, never the application's lines.
pub fn exit_reason(rec: &ServiceRecord, exit: &ExitInfo) -> ExitReason {
    let mirrord = rec.spec.launcher == LauncherKind::Mirrord;
    ExitReason {
        before_ready: mirrord && rec.status == Status::Starting,
        how: exit.describe(),
        cause: (mirrord && exit.failed())
            .then(|| crate::readiness::session_cause(&rec.log_path, rec.log_offset))
            .flatten(),
    }
}

/// How a process ended, as [`exit_reason`] finds it; `Display` is its `last_reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitReason {
    /// A mirrord session that ended before its `Ready!`.
    pub before_ready: bool,
    /// `exit code 3`, `killed by SIGKILL`.
    pub how: String,
    /// The cause from mirrord's report, if any.
    pub cause: Option<String>,
}

impl ExitReason {
    /// Said of a process that died right after its start (`exited right after start (exit
    /// code 3)`); a session that did not start says so as it is.
    pub fn right_after_start(&self) -> String {
        if self.before_ready {
            return self.to_string();
        }
        let head = format!("exited right after start ({})", self.how);
        match &self.cause {
            Some(c) => format!("{head}: {c}"),
            None => head,
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.before_ready {
            true => write!(f, "mirrord exited before Ready! ({})", self.how)?,
            false => write!(f, "exited ({})", self.how)?,
        }
        match &self.cause {
            Some(c) => write!(f, ": {c}"),
            None => Ok(()),
        }
    }
}

/// How long a dependent waits for `dep`'s readiness (`ready.timeout`, 60 s by default).
pub fn ready_timeout(dep: &ServiceSpec) -> Duration {
    dep.ready
        .as_ref()
        .and_then(|r| r.timeout)
        .map(|t| t.0)
        .unwrap_or(DEFAULT_READY_TIMEOUT)
}

/// A session of a level being started.
struct Session {
    name: String,
    /// Why it is started (`new service`, `config changed`, …).
    cause: String,
    watch: crate::readiness::ReadyWatch,
    identity: ProcessIdentity,
}

/// The signal that stops `spec` (its `stop_signal`, SIGTERM if unreadable).
pub fn stop_signal(spec: &ServiceSpec) -> Signal {
    StopHow::of(spec, None).signal
}

/// One service to stop, as the plan (or a by-name stop) says.
struct StopItem {
    name: String,
    /// The cause, said with the outcome (`stopped: removed from file`).
    why: String,
    how: StopHow,
    /// Remove its record once it stopped.
    remove: bool,
}

/// What a stop's outcome is said as (`stopped: removed from file`).
pub(crate) fn stop_event(o: &StopOutcome, why: &str) -> String {
    let what = if let Some(refused) = &o.refused {
        format!("not signalled: {refused}")
    } else if o.survivors.is_empty() {
        if o.killed && process::kill_now_requested() {
            "killed (forced by a second Ctrl-C)".to_owned()
        } else if o.killed {
            "stopped (killed after the grace period)".to_owned()
        } else {
            "stopped".to_owned()
        }
    } else {
        format!("did not stop: pids {:?} survive", o.survivors)
    };
    let what = if o.escaped.is_empty() {
        what
    } else {
        format!("{what}, with pids {:?} that had left its group", o.escaped)
    };
    if why.is_empty() {
        what
    } else {
        format!("{what}: {why}")
    }
}

/// A mirrord session the loop waits for (`defer_sessions`): its `Ready!` in its log (from
/// `log.1`), its death, or `START_TIMEOUT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOrder {
    pub name: String,
    pub identity: ProcessIdentity,
    pub log: (PathBuf, u64),
}

/// What the loop's watch of a session found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutcome {
    /// It said `Ready!`.
    Started,
    /// No `Ready!` within `START_TIMEOUT` (it keeps running).
    TimedOut,
    /// It ended first (its exit is settled as every exit is).
    Ended,
}

/// Watches `orders` until each has said `Ready!`, ended or passed `START_TIMEOUT` (from now),
/// calling `each` as each one does; gives up when `cancel` is set.
pub fn watch_sessions(
    orders: &[SessionOrder],
    cancel: &std::sync::atomic::AtomicBool,
    each: &mut dyn FnMut(&SessionOrder, SessionOutcome),
) {
    let mut watches: Vec<(&SessionOrder, crate::readiness::ReadyWatch)> = orders
        .iter()
        .map(|o| (o, crate::readiness::ReadyWatch::new(&o.log.0, o.log.1)))
        .collect();
    let deadline = Instant::now() + START_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    while !watches.is_empty() {
        let late = Instant::now() >= deadline;
        watches.retain_mut(|(order, watch)| {
            let outcome = if watch.poll() {
                SessionOutcome::Started
            } else if order.identity.liveness() != Liveness::Alive {
                // A `Ready!` written right before a quick death still counts as a start.
                if watch.poll() {
                    SessionOutcome::Started
                } else {
                    SessionOutcome::Ended
                }
            } else if late {
                SessionOutcome::TimedOut
            } else {
                return true;
            };
            if outcome != SessionOutcome::Started {
                crate::logrotate::unhold(&order.log.0);
            }
            each(order, outcome);
            false
        });
        if cancel.load(std::sync::atomic::Ordering::SeqCst) {
            // No one reads these logs for `Ready!` any more: the rotation may release them.
            for (order, _) in &watches {
                crate::logrotate::unhold(&order.log.0);
            }
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// What a pass says of a session the loop found not started within `START_TIMEOUT`.
pub fn no_ready_message(name: &str) -> String {
    format!(
        "no Ready! from mirrord after {} (it keeps running; see `mirrord-up logs {name}`)",
        crate::output::duration(START_TIMEOUT),
    )
}

/// A stop signalled by the loop rather than waited for in the pass (`defer_stops`): the
/// record is `stopping` until the pass that is handed its outcome (`Engine::finish_stops`).
#[derive(Debug, Clone)]
pub struct PendingStop {
    pub name: String,
    /// The cause, said with the outcome.
    pub why: String,
    /// Remove its record once it stopped.
    pub remove: bool,
    /// Its dependency level: deeper levels stop first.
    pub level: usize,
    /// The group, its signal and grace period.
    pub request: StopRequest,
}

fn reporter_note(reporter: &mut dyn Reporter, name: &str, why: &str) {
    reporter.event(name, &format!("removed: {why}"));
}

pub(crate) fn new_record(spec: &Arc<ServiceSpec>, log_path: PathBuf) -> ServiceRecord {
    ServiceRecord {
        kind: RecordKind::Service,
        config_hash: spec.hash(),
        // The desired state's own spec (shared with the memo): an unchanged service is then
        // the very same spec in the next pass's plan.
        spec: Arc::clone(spec),
        argv: Vec::new(),
        status: Status::Starting,
        process: None,
        spawn_nonce: None,
        started_at_ms: None,
        restarts: 0,
        policy_restarts: 0,
        last_exit: None,
        last_reason: None,
        log_path,
        log_offset: 0,
        output_dir: None,
        backoff_until_ms: None,
        crash_streak: 0,
    }
}

fn write_config(path: &Path, config: &serde_json::Value) -> Result<(), StateError> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StateError::Io {
                path: dir.to_owned(),
                source,
            })?;
    }
    let mut text = serde_json::to_vec_pretty(config).expect("JSON");
    text.push(b'\n');
    // Read by the session about to be spawned (the rename makes it visible); a machine crash
    // that loses it also ends that session, and the next start writes it again.
    crate::state::write_private_unsynced(path, &text)
}

/// What the launches of one level look up once each: whether a program is found from a working
/// directory, and whether a working directory exists (a cold `up` of 100 `sleep`s looked both
/// up for every service: two `stat`s each). The spawns themselves look again
/// (`os::spawn_cache`).
#[derive(Default)]
struct Lookups {
    programs: BTreeMap<(String, PathBuf), bool>,
    dirs: BTreeMap<PathBuf, bool>,
}

impl Lookups {
    fn program_found(&mut self, program: &str, cwd: &Path) -> bool {
        *self
            .programs
            .entry((program.to_owned(), cwd.to_owned()))
            .or_insert_with(|| find_program(program, cwd).is_some())
    }

    fn is_dir(&mut self, dir: &Path) -> bool {
        *self
            .dirs
            .entry(dir.to_owned())
            .or_insert_with(|| dir.is_dir())
    }
}

/// `which`, relative to the service's working directory for paths with a slash.
pub fn find_program(program: &str, cwd: &Path) -> Option<PathBuf> {
    if program.contains('/') {
        let p = cwd.join(program);
        return process::is_executable(&p).then_some(p);
    }
    process::search_path(Path::new(program), &std::env::var_os("PATH")?)
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
