//! One reconcile pass, synchronous: lock the state, settle what exited (restart policy),
//! re-read the file (a bad file changes nothing), plan, apply, save once. The supervisor runs
//! one after every wake-up; `restart|stop|start` without a supervisor run one directly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::config::Mode;
use crate::desired::Desired;
use crate::engine::{
    ApplyReport, Engine, LaunchSettings, PendingStop, Reporter, SessionOrder, SessionOutcome,
    exit_reason, liveness, observe_with,
};
use crate::plan::{Action, Cause, Plan, PlanAt, PlanOptions, Step};
use crate::process::{Liveness, ProcessIdentity, StopOutcome};
use crate::project::Project;
use crate::seams::{Looks, ProcessTable, REAL};
use crate::state::{ExitInfo, RecordKind, ReloadError, State, Status, now_ms};

use super::shutdown::{Sweep, load_or_set_aside, refuse_records, sweep_markers};

/// What a pass is asked to do. Every kind also settles exits first.
#[derive(Debug, Clone)]
pub enum Work {
    /// Converge to the file. `explicit` when a user asked (`up`): then exited services are
    /// started again too, as a one-shot `up` would; a wake-up by the watcher leaves them to
    /// their restart policy.
    Reconcile {
        explicit: Option<ApplyOptions>,
    },
    Stop {
        names: Vec<String>,
        timeout: Option<Duration>,
    },
    Start {
        names: Vec<String>,
    },
    Restart {
        names: Vec<String>,
        timeout: Option<Duration>,
    },
    /// Stop every service; `forget` removes them from the state (`down`), otherwise they stay
    /// recorded as stopped (Ctrl-C).
    Shutdown {
        timeout: Option<Duration>,
        forget: bool,
        /// Only these records (services or CI sessions; `ci stop NAME…`). `None`: all.
        only: Option<Vec<String>>,
        /// A one-shot `down` / `ci stop` (no supervisor, or after it ended): also CI sessions,
        /// a corrupt state kept aside instead of failing, records that must not be signalled
        /// refused (their nonce still finds their processes), and afterwards every process
        /// still carrying the project's markers is stopped ([`sweep_markers`]).
        sweep: bool,
    },
    /// `ci start -- CMD…`: record and spawn an ad-hoc session (`ci_pass::start`).
    CiStart(Box<super::ci_pass::CiSession>),
    /// A CI session's exit, seen by its `ci start` (`ci_pass::record_exit`).
    RecordExit {
        name: String,
        code: Option<i32>,
        reason: String,
    },
    /// The stops of an earlier pass ended (the loop watched them): record them, then carry
    /// out what waited for them (`StopJob::resume`). `services` and `wait` are those of the
    /// request that caused them, for its answer.
    Finish {
        job: StopJob,
        outcomes: Vec<StopOutcome>,
        services: Option<Vec<String>>,
        wait: Option<Duration>,
    },
}

/// Stops a pass signalled and left to the loop (`PassSettings::defer_stops`), and what waits
/// for them.
#[derive(Debug, Clone, Default)]
pub struct StopJob {
    pub stops: Vec<PendingStop>,
    /// The starts of the plan that caused them (a restart's start, a new process after a
    /// changed file), carried out once they are recorded.
    pub resume: Vec<Step>,
    /// A `stop`: these become `stopped` with this cause once their stop is recorded.
    pub mark_stopped: Vec<String>,
    pub why: String,
    /// The answer to the request, once done.
    pub message: String,
}

impl StopJob {
    /// The services being stopped.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.stops.iter().map(|p| &p.name)
    }

    /// Each stop of the job with its outcome among `outcomes` (a stop without one is left
    /// out), as `Engine::finish_stops` records them.
    pub fn with_outcomes(&self, outcomes: &[StopOutcome]) -> Vec<(PendingStop, StopOutcome)> {
        self.stops
            .iter()
            .filter_map(|p| {
                let o = outcomes.iter().find(|o| o.name == p.name)?;
                Some((p.clone(), o.clone()))
            })
            .collect()
    }
}

#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    pub force_recreate: bool,
    /// `--wait`: return only once every service is ready, within this time.
    pub wait: Option<Duration>,
    /// The services asked for (the loop widens its selection with them).
    pub services: Vec<String>,
    pub mode: Option<Mode>,
    /// The active profiles of this `up` (`None`: keep the supervisor's).
    pub profiles: Option<Vec<String>>,
}

/// The supervisor's standing settings.
#[derive(Debug, Clone, Default)]
pub struct PassSettings {
    /// Services to run (empty: all not marked `skip`).
    pub selection: Vec<String>,
    /// With an empty `selection`: services named by a later `up -d NAME` although `skip` or
    /// their `profiles` leave them out of "all".
    pub named: Vec<String>,
    /// The active profiles (`None`: the command line's, `--profile`/`MIRRORD_UP_PROFILES`).
    pub profiles: Option<Vec<String>>,
    pub mode: Option<Mode>,
    pub abort_on_exit: bool,
    /// Run by the supervisor (its reaper collects exits; it is recorded in the state).
    /// Implies that readiness is not waited for in the pass: the loop probes.
    pub supervised: bool,
    /// The machine waits for `up --wait` (`Effect::AwaitReady`), not the pass: always so
    /// under a supervisor, and in a one-shot run (`supervisor::oneshot`).
    pub loop_waits: bool,
    /// What the loop's readiness probes found since (`supervised` only).
    pub probed: Probed,
    /// The loop watches stops (the supervisor): a pass signals, records `stopping` and
    /// returns them (`PassOutcome::stops`) instead of waiting out their grace periods. Not
    /// for `Work::Shutdown`: see `defer_shutdown`.
    pub defer_stops: bool,
    /// The loop's final shutdown (`down` sent to the supervisor, Ctrl-C): signal, record
    /// `stopping` and return the stops; the shell waits for them outside the state lock and
    /// a `Work::Finish` pass records them (`oneshot::serve_loop_shutdown`).
    pub defer_shutdown: bool,
    /// Services whose stop the loop is watching: no pass plans them until it is recorded.
    pub stopping: BTreeSet<String>,
    /// How a sweeping shutdown (one-shot `down` / `ci stop`) waits for its stops
    /// (`oneshot::serve_shutdown`).
    pub sweep_stops: super::shutdown::SweepStops,
    /// Nothing follows the services' logs (a detached supervisor): `PassOutcome::logs` is
    /// left empty.
    pub skip_logs: bool,
    /// The state directory, opened (and checked) once by the supervisor for its life: a
    /// pass does not walk to it from `/` again. `None`: each pass opens it (`Project::store`).
    pub store: Option<crate::state::StateStore>,
}

/// What the loop's readiness probes found: handed to each pass, which records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probed {
    /// `(service, pid)` whose probe passed since the last pass.
    pub ready: Vec<(String, i32)>,
    /// Services whose probe of the process `pid` timed out, and the message
    /// (`dependency db not ready after 60s`); kept as long as that process runs.
    pub not_ready: BTreeMap<String, (i32, String)>,
    /// `(service, pid)` of sessions the loop watched, and what it found (`Ended` is not
    /// handed on: the exit is settled as every exit is).
    pub sessions: Vec<(String, i32, SessionOutcome)>,
}

/// A readiness probe the loop is to run: on `identity`, until `timeout`.
#[derive(Debug, Clone)]
pub struct ProbeOrder {
    pub service: String,
    pub identity: ProcessIdentity,
    pub log: PathBuf,
    pub offset: u64,
    pub probe: crate::readiness::Probe,
    pub timeout: Duration,
    /// Whether the probe's port must belong to the service's group (not for containers).
    pub owner_check: bool,
}

/// What the loop needs to know after a pass.
#[derive(Debug, Default)]
pub struct PassOutcome {
    /// A summary, or one paragraph naming what went wrong.
    pub result: Option<Result<String, String>>,
    /// Running services to watch for exits.
    pub running: Vec<(String, ProcessIdentity)>,
    /// Logs to follow: name, path, offset where the current process began.
    pub logs: Vec<(String, PathBuf, u64)>,
    /// The files whose changes matter (the YAML and its side files), when the file loaded.
    pub watched_files: Option<Vec<PathBuf>>,
    /// watch (issue #16): the services with `watch:`, when the file loaded.
    pub watches: Option<Vec<crate::watch::Watched>>,
    /// When the next back-off ends (unix ms).
    pub next_due_ms: Option<u64>,
    /// `--abort-on-exit` and a service exited: the exit code to end with.
    pub abort: Option<i32>,
    /// The file failed to load: the message (also recorded in the state).
    pub reload_error: Option<String>,
    /// `reload_error` was told as an event (a reload the watcher started); an explicit
    /// request gets it as its answer only, so that it is said once.
    pub reload_error_told: bool,
    /// A service exited that this pass has not settled yet: run another pass.
    pub unsettled: bool,
    /// Readiness probes that services waiting for a dependency need.
    pub probes: Vec<ProbeOrder>,
    /// Services waiting for a dependency.
    pub waiting: BTreeSet<String>,
    /// Services this pass failed to start, and why.
    pub failed: Vec<(String, String)>,
    /// Every service has ended (exited or failed; none runs, starts or waits out a back-off)
    /// and at least one of them did not stop on request: nothing will run again unless the
    /// file or a command says so. The names of those that failed (possibly none).
    pub all_down: Option<Vec<String>>,
    /// Stops signalled and left to the loop (`PassSettings::defer_stops`): the request is
    /// answered by the pass that records them (`Work::Finish`).
    pub stops: Option<StopJob>,
    /// Sessions `starting` (their `Ready!` is the loop's wait, `supervised` only).
    pub sessions: Vec<SessionOrder>,
    /// Services the work needs that another live process is stopping (`crate::stop_owner`):
    /// the pass did nothing; the loop waits for those stops outside the state lock
    /// (`Effect::AwaitStops`) and runs it again.
    pub owned_elsewhere: Vec<OwnedStop>,
    /// Stops another live process owns that this pass left alone (it did not need them):
    /// the loop passes again once they are over.
    pub left_to_others: Vec<OwnedStop>,
}

/// A stop in flight that another live process owns (its stop lock is held).
#[derive(Debug, Clone)]
pub struct OwnedStop {
    pub service: String,
    /// Who (`pid 12 (mirrord-up stop slow)`).
    pub holder: String,
    /// How long it may take: its grace period.
    pub grace: Duration,
}

pub fn run_pass(
    ctx: &dyn Project,
    settings: &PassSettings,
    work: &Work,
    reporter: &mut dyn Reporter,
) -> PassOutcome {
    let mut out = PassOutcome::default();
    let result = pass(ctx, settings, work, reporter, &mut out).map_err(|e| format!("{e:#}"));
    out.result = Some(result);
    out
}

fn pass(
    ctx: &dyn Project,
    settings: &PassSettings,
    work: &Work,
    reporter: &mut dyn Reporter,
    out: &mut PassOutcome,
) -> Result<String> {
    let store = match &settings.store {
        Some(store) => store.clone(),
        None => ctx.store()?,
    };
    let lock = store.lock(ctx.lock_timeout())?;
    let sweep = match work {
        Work::Shutdown {
            sweep: true, only, ..
        } => Some(only.as_deref()),
        _ => None,
    };
    let (state, loaded, refused) = match sweep {
        Some(only) => {
            let (mut state, corrupt) = load_or_set_aside(&store, &lock)?;
            let loaded = state.clone();
            // The second pass of a one-shot shutdown does not check the names again: they
            // were checked by its first, and may be gone since (another `down`).
            let checked = corrupt
                || matches!(
                    settings.sweep_stops,
                    super::shutdown::SweepStops::Finished { .. }
                );
            let refused = refuse_records(&mut state, only, checked, &store.project, reporter)?;
            (state, Some(loaded), refused)
        }
        None => (store.load(&lock)?, None, Vec::new()),
    };
    // Finish what a crashed run left (adopt by spawn nonce) before anything is planned.
    let no_launch = LaunchSettings::default();
    let mut state = {
        let mut engine = Engine::new(&store, &lock, state, no_launch, reporter);
        engine.recover()?;
        engine.state
    };
    match work {
        Work::CiStart(session) => {
            return super::ci_pass::start(&store, &lock, &mut state, session, &crate::seams::Real);
        }
        Work::RecordExit { name, code, reason } => {
            return super::ci_pass::record_exit(&store, &lock, &mut state, name, *code, reason);
        }
        _ => {}
    }
    let now = now_ms();
    tracing::debug!(?work, "pass: state loaded");
    let at = PlanAt {
        now_ms: now,
        abort_on_exit: settings.abort_on_exit,
        stop_timeout: None,
    };
    // One look at each recorded process for settling and planning (`seams::Looks`).
    let looks = Looks::new(&REAL, recorded_ids(&state));
    settle_exits(
        &mut state,
        settings,
        reporter,
        &at,
        out,
        &BTreeSet::new(),
        &looks,
    );
    record_probed(&mut state, &settings.probed, reporter);
    record_sessions(&mut state, &settings.probed, reporter, out);
    tracing::debug!("pass: exits settled");

    let defer = settings.defer_stops && !matches!(work, Work::Shutdown { .. });
    let mut desired = match work {
        Work::Reconcile { explicit } => {
            load_desired(ctx, settings, &mut state, reporter, out, explicit.is_some())
        }
        _ => recorded(&state),
    };
    tracing::debug!(services = desired.services.len(), "pass: desired resolved");
    // Stops another live process owns are left alone as the loop's own are; a work that
    // needs one of them changes nothing: the loop waits for those stops, outside the lock
    // (`Effect::AwaitStops`), and runs it again.
    let owned = owned_elsewhere(&store, &state, settings, work);
    let needed = needed_of(work, &desired, &owned);
    if !needed.is_empty() {
        for o in &needed {
            reporter.event(
                &o.service,
                &format!("waits for its stop by {} to end", o.holder),
            );
        }
        out.owned_elsewhere = needed;
        return Ok(String::new());
    }
    out.left_to_others = owned.values().cloned().collect();
    let mut observed = observe_with(&state, &looks);
    // What the loop is stopping is left alone until its stop is recorded.
    let left_alone = |n: &String| settings.stopping.contains(n) || owned.contains_key(n);
    desired.services.retain(|s| !left_alone(&s.name));
    observed.retain(|n, _| !left_alone(n));
    let names_of = |names: &[String]| -> Result<BTreeSet<String>> {
        let known: Vec<&String> = state.records(RecordKind::Service).map(|(n, _)| n).collect();
        crate::project::ensure_known(names, &known, &store.project, "no service named")?;
        Ok(names.iter().cloned().collect())
    };

    let mut explicit = None;
    let plan = match work {
        Work::Reconcile { explicit: e } => {
            explicit = e.clone();
            crate::plan::plan_at(
                &desired,
                &observed,
                PlanOptions {
                    force_recreate: e.as_ref().is_some_and(|e| e.force_recreate),
                    restart_exited: e.is_some(),
                },
                &at,
            )
        }
        Work::Start { names } => {
            crate::plan::plan_request(&desired, &observed, &names_of(names)?, "start", &at)
        }
        Work::Restart { names, timeout } => crate::plan::plan_request(
            &desired,
            &observed,
            &names_of(names)?,
            "restart",
            &PlanAt {
                stop_timeout: *timeout,
                ..at
            },
        ),
        Work::Stop { names, timeout } => {
            let names = names_of(names)?;
            let order = StopOrder {
                names: &names,
                timeout: *timeout,
                forget: false,
                why: Cause::Requested { what: "stop" },
            };
            return stop(
                &store, &lock, state, &order, defer, settings, reporter, out, &looks,
            );
        }
        Work::Shutdown {
            timeout,
            only,
            sweep: true,
            ..
        } => {
            let order = Sweep {
                only: only.as_deref(),
                timeout: *timeout,
                refused,
                loaded: loaded.unwrap_or_else(|| state.clone()),
                phase: &settings.sweep_stops,
            };
            let (message, job) = sweep_markers(&store, &lock, state, order, reporter)?;
            out.stops = job;
            return Ok(message);
        }
        // Served before anything is settled or planned (above).
        Work::CiStart(_) | Work::RecordExit { .. } => {
            anyhow::bail!("a CI session's work is not planned")
        }
        Work::Shutdown {
            timeout, forget, ..
        } => {
            let names: BTreeSet<String> = state
                .records(RecordKind::Service)
                .map(|(n, _)| n.clone())
                .collect();
            if settings.supervised {
                state.supervisor = None;
            }
            let order = StopOrder {
                names: &names,
                timeout: *timeout,
                forget: *forget,
                why: if *forget {
                    Cause::Requested { what: "down" }
                } else {
                    Cause::Ending
                },
            };
            let defer = settings.defer_shutdown;
            // One stop lock for every service (`stop_owner::take_all`), not one each.
            crate::stop_owner::take_all(&store);
            return stop(
                &store, &lock, state, &order, defer, settings, reporter, out, &looks,
            );
        }
        Work::Finish { job, outcomes, .. } => resume_plan(&state, settings, job, outcomes),
    };

    let starts = plan
        .changes()
        .any(|s| matches!(s.action, Action::Start | Action::Restart));
    let launch = LaunchSettings {
        mirrord_bin: if starts { ctx.launcher_bin()? } else { None },
        stop_timeout: None,
        defer_waits: settings.supervised,
        not_ready: settings.probed.not_ready.clone(),
        defer_stops: defer,
        defer_sessions: settings.supervised,
        signal_first: false,
    };
    let fresh = state.services.is_empty();
    let mut engine = Engine::new(&store, &lock, state, launch, reporter);
    if fresh {
        engine.check_untracked()?;
    }
    tracing::debug!(changes = plan.changes().count(), "pass: planned");
    // edge hook: `--wait-timeout` bounds the whole pass, not only the wait after it.
    let _bound = crate::readiness::WaitBound::set(explicit.as_ref().and_then(|e| e.wait));
    let mut finished = ApplyReport::default();
    if let Work::Finish { job, outcomes, .. } = work {
        // A start follows: its intent save (before any spawn) records the stops too.
        let saved_by_the_start = starts;
        finish_job(
            &mut engine,
            job,
            outcomes,
            &mut finished,
            saved_by_the_start,
        )?;
    }
    let mut report = if plan.is_empty() {
        ApplyReport::default()
    } else {
        engine.apply_plan(&plan)?
    };
    report.survivors.extend(finished.survivors);
    if !report.deferred.is_empty() {
        out.stops = Some(StopJob {
            stops: std::mem::take(&mut report.deferred),
            resume: plan
                .changes()
                .filter(|s| matches!(s.action, Action::Start | Action::Restart))
                .cloned()
                .collect(),
            message: crate::engine::done_summary(&plan),
            ..Default::default()
        });
    }
    // The machine waits for `up --wait` itself (`Effect::AwaitReady`).
    if let Some(wait) = explicit.as_ref().and_then(|e| e.wait)
        && !(settings.supervised || settings.loop_waits)
    {
        engine.wait_all_ready(&desired, wait, &mut report);
    }
    // What ran through the apply is looked at again, once (what it started is new). Under a
    // supervisor, only what this pass has not looked at yet: a process that ended since the
    // first look wakes the loop (its pidfd), and the next pass settles it.
    let looks = match settings.supervised {
        true => looks.and_new(recorded_ids(&engine.state)),
        false => Looks::new(&REAL, recorded_ids(&engine.state)),
    };
    tracing::debug!("pass: looked again");
    if settings.supervised {
        engine.release_children();
        // Sessions that died while they started were reported by the apply; their exits are
        // settled now (recorded, restart policy), so that what the loop decides next (and
        // what `ps` shows) is already true.
        let reported: BTreeSet<String> = report.failed.iter().map(|(n, _)| n.clone()).collect();
        let at = PlanAt {
            now_ms: now_ms(),
            ..at
        };
        settle_exits(
            &mut engine.state,
            settings,
            engine.reporter,
            &at,
            out,
            &reported,
            &looks,
        );
        // A dependency that ended during this pass, after its dependents were looked at: they
        // still wait without having said why they cannot start. Look again (the next pass
        // says it, once: their reason then carries the failure).
        if waits_on_an_ended_dependency(&engine.state, &report.waiting) {
            out.unsettled = true;
        }
        for (name, why) in &mut report.failed {
            // The settled reason adds the exit status (`… before Ready! (exit code 1): …`).
            if let Some(reason) = engine
                .state
                .services
                .get(name)
                .and_then(|r| r.last_reason.as_ref())
                && reason.starts_with("mirrord exited before Ready! (")
            {
                why.clone_from(reason);
            }
        }
    } else {
        engine.reap_early_exits(&mut report);
    }
    tracing::debug!("pass: settled again");
    // Written only if it differs from what is on disk (the store knows what it read or wrote
    // last): no copy of the state as loaded is kept to compare with.
    engine.save()?;
    tracing::debug!("pass: applied");
    describe(&engine.state, out, &looks, settings.skip_logs);
    out.failed.extend(report.failed.iter().cloned());
    if let Some(err) = report.error() {
        return Err(err.into());
    }
    if let (Some(err), Work::Reconcile { explicit: Some(_) }) = (&out.reload_error, work) {
        return Err(NotApplied {
            nothing_recorded: engine.state.records(RecordKind::Service).next().is_none(),
            message: err.clone(),
        }
        .into());
    }
    if let Work::Finish { job, .. } = work {
        return Ok(job.message.clone());
    }
    Ok(if plan.is_empty() {
        format!("nothing to do ({} running)", out.running.len())
    } else {
        crate::engine::done_summary(&plan)
    })
}

/// An explicit `up` whose file did not load: nothing changed (`message` says why).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NotApplied {
    /// No service is recorded: nothing was started (else every one keeps running as it is).
    pub nothing_recorded: bool,
    pub message: String,
}

impl std::fmt::Display for NotApplied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.nothing_recorded {
            true => write!(f, "nothing was started: {}", self.message),
            false => write!(
                f,
                "the file was not applied, every service keeps running as it is: {}",
                self.message
            ),
        }
    }
}

/// Exited services: records how they ended (the exit, and its reason with the cause of
/// mirrord's report) and stops what they left behind — the facts; what the restart policy
/// does about them is the plan's decision ([`crate::plan::settle`]), applied here at once.
/// Services in `reported` had their failure told already: only what the policy does about
/// it is.
fn settle_exits(
    state: &mut State,
    settings: &PassSettings,
    reporter: &mut dyn Reporter,
    at: &PlanAt,
    out: &mut PassOutcome,
    reported: &BTreeSet<String>,
    looks: &Looks<'_>,
) {
    let now = at.now_ms;
    let mut recorded = BTreeSet::new();
    let mut told = reported.clone();
    for (name, rec) in state.services.iter_mut() {
        if rec.kind != RecordKind::Service {
            continue;
        }
        let was_up = matches!(
            rec.status,
            Status::Running | Status::Ready | Status::Starting
        );
        if was_up
            && rec.process.is_some()
            && looks.liveness(rec.process.as_ref()) != Liveness::Alive
        {
            // A session that said `Ready!` right before a quick death had started (what
            // follows is the application's exit).
            if rec.status == Status::Starting
                && crate::readiness::ReadyWatch::new(&rec.log_path, rec.log_offset).poll()
            {
                rec.status = Status::Running;
            }
            let exit = rec
                .process
                .as_ref()
                .and_then(|p| crate::process::take_exit(p.pid))
                .map(ExitInfo::from_kind)
                .unwrap_or(ExitInfo {
                    code: None,
                    signal: None,
                    at_ms: now,
                });
            // What it left behind (mirrord's intproxy outlives a failed start), before the
            // exit is reported: a client waiting for it finds nothing of the instance left.
            if let Some(id) = &rec.process {
                crate::process::stop_leftovers(
                    name,
                    id,
                    crate::engine::stop_signal(&rec.spec),
                    rec.spec.stop_timeout(),
                );
            }
            if settings.abort_on_exit && out.abort.is_none() {
                out.abort = Some(crate::error::abort_on_exit_code(&exit).into());
            }
            let why = exit_reason(rec, &exit);
            // A session that died before its `Ready!` failed to start (said once).
            if settings.supervised && why.before_ready && !reported.contains(name) {
                let said = match crate::readiness::session_cause(&rec.log_path, rec.log_offset) {
                    Some(c) => format!("mirrord exited before Ready!: {c}"),
                    None => "mirrord exited before Ready!".to_owned(),
                };
                reporter.event(name, &format!("failed: {said}"));
                told.insert(name.clone());
                out.failed.push((name.clone(), why.to_string()));
            }
            rec.last_reason = Some(why.to_string());
            rec.last_exit = Some(exit);
            recorded.insert(name.clone());
        }
    }
    // Only the exits recorded just now are decided about: one that happens while this runs
    // has no facts recorded yet (the next pass records and decides it).
    // The policy decides about exits and back-offs only: the other records are not observed.
    let mut observed = crate::engine::observe_some(state, looks, |name, rec| {
        recorded.contains(name) || rec.status == Status::Backoff
    });
    observed.retain(|name, o| {
        recorded.contains(name) || !matches!(o.state, crate::plan::ObservedState::Exited { .. })
    });
    let decided = crate::plan::settle(&observed, at);
    if let Some(t) = decided.requeue_at_ms {
        out.next_due_ms = Some(out.next_due_ms.map_or(t, |d| d.min(t)));
    }
    crate::engine::apply_verdicts(state, &decided, &told, reporter);
}

/// The file's services; if the file does not load, the recorded ones (nothing changes, the
/// error is recorded and shown).
fn load_desired(
    ctx: &dyn Project,
    settings: &PassSettings,
    state: &mut State,
    reporter: &mut dyn Reporter,
    out: &mut PassOutcome,
    explicit: bool,
) -> Desired {
    use crate::desired::last;
    // Nothing the desired state of last time was made of changed: it is this pass's too.
    let key = ctx.desired_tag().map(|tag| last::Key {
        tag,
        selection: settings.selection.clone(),
        named: settings.named.clone(),
        profiles: settings.profiles.clone(),
        mode: settings.mode,
    });
    let before = match &key {
        Some(key) => match last::reuse(key, &ctx.files(), &state.target_cache) {
            Ok(reused) => {
                tracing::debug!("pass: desired state reused (no file changed)");
                return use_loaded(state, reporter, out, reused);
            }
            Err(before) => Some(before),
        },
        None => None,
    };
    let loaded = ctx.load().and_then(|mut doc| {
        tracing::debug!("pass: file loaded");
        if let Some(profiles) = &settings.profiles {
            doc.profiles = profiles.clone();
        }
        let selection = crate::desired::with_named(&doc, &settings.selection, &settings.named);
        let (desired, cache) =
            ctx.desired(&doc, &selection, settings.mode, state.target_cache.clone())?;
        Ok((doc, desired, cache))
    });
    match loaded {
        Ok((doc, desired, cache)) => {
            let mut files = match doc.sources.is_empty() {
                true => vec![doc.path.clone()],
                false => doc.sources.iter().map(|(p, _)| p.clone()).collect(),
            };
            files.extend(doc.side_files());
            let loaded = last::Reused {
                desired,
                path: doc.path.clone(),
                files,
                target_cache: cache,
            };
            match (key, before) {
                (Some(key), Some(before)) if doc.plain => {
                    last::remember(key, before, loaded.clone())
                }
                (Some(key), _) => last::forget(&key.tag),
                _ => {}
            }
            use_loaded(state, reporter, out, loaded)
        }
        Err(e) => {
            if let Some(key) = &key {
                last::forget(&key.tag);
            }
            let message = format!("{e:#}");
            let repeated = state
                .last_reload_error
                .as_ref()
                .is_some_and(|r| r.message == message);
            let nothing_recorded = state.records(RecordKind::Service).next().is_none();
            // An explicit request (`up`, `up -d`) gets the error as its answer: told here too,
            // it would be said twice. With nothing recorded there is nothing that keeps
            // running, and nothing for `ps` to qualify.
            if !explicit && !repeated {
                reporter.event(
                    "mirrord-up",
                    &if nothing_recorded {
                        format!("the file cannot be loaded, nothing was started:\n{message}")
                    } else {
                        format!("reload failed, every service keeps running as it is:\n{message}")
                    },
                );
                out.reload_error_told = true;
            }
            if !repeated && !nothing_recorded {
                state.last_reload_error = Some(ReloadError {
                    message: message.clone(),
                    at_ms: now_ms(),
                });
            }
            out.reload_error = Some(message);
            let mut d = recorded(state);
            d.partial = true;
            d
        }
    }
}

/// What a successful load (or the reuse of the last one) changes in the state and tells the
/// loop.
fn use_loaded(
    state: &mut State,
    reporter: &mut dyn Reporter,
    out: &mut PassOutcome,
    loaded: crate::desired::last::Reused,
) -> Desired {
    if state.last_reload_error.take().is_some() {
        reporter.event("mirrord-up", "the file is valid again");
    }
    out.watches = Some(crate::watch::watched(&loaded.desired.services));
    out.watched_files = Some(loaded.files);
    state.target_cache = loaded.target_cache;
    state.file = Some(loaded.path);
    loaded.desired
}

/// The recorded services as a desired state (for `restart|start`, and while the file is bad).
/// What waited for the stops of `job`: its starts, less those that run already (started by
/// a pass since), whose stop did not end (survivors), or that the loop stops again.
fn resume_plan(
    state: &State,
    settings: &PassSettings,
    job: &StopJob,
    outcomes: &[StopOutcome],
) -> Plan {
    let steps = job
        .resume
        .iter()
        .filter(|s| !settings.stopping.contains(&s.service))
        .filter(|s| {
            outcomes
                .iter()
                .all(|o| o.name != s.service || o.survivors.is_empty())
        })
        .filter(|s| {
            state.services.get(&s.service).is_none_or(|r| {
                r.status == Status::Stopping
                    || !(matches!(r.status, Status::Running | Status::Ready | Status::Starting)
                        && liveness(r) == Liveness::Alive)
            })
        })
        .cloned()
        .collect();
    Plan {
        steps,
        requeue_at_ms: None,
    }
}

/// Records the outcomes of `job`'s stops (`Work::Finish`); a `stop`'s services become
/// `stopped`.
fn finish_job(
    engine: &mut Engine<'_>,
    job: &StopJob,
    outcomes: &[StopOutcome],
    report: &mut ApplyReport,
    save_later: bool,
) -> Result<(), crate::state::StateError> {
    let done = job.with_outcomes(outcomes);
    if save_later {
        engine.record_finished_stops(&done, report);
    } else {
        engine.finish_stops(&done, report)?;
    }
    for n in &job.mark_stopped {
        if let Some(rec) = engine.state.services.get_mut(n)
            && report.survivors.iter().all(|(s, _)| s != n)
            && rec.status == Status::Exited
            && rec.process.is_none()
        {
            rec.status = Status::Stopped;
            rec.backoff_until_ms = None;
            rec.last_reason = Some(format!("stopped: {}", job.why));
        }
    }
    Ok(())
}

fn recorded(state: &State) -> Desired {
    let mut services: Vec<_> = state
        .records(RecordKind::Service)
        .map(|(_, r)| std::sync::Arc::clone(&r.spec))
        .collect();
    services.sort_by(|a, b| a.level.cmp(&b.level).then(a.name.cmp(&b.name)));
    Desired {
        services,
        warnings: Vec::new(),
        partial: true,
    }
}

/// The `stopping` records whose stop another live process owns (its stop lock is
/// held; `crate::stop_owner`), not the loop's own (`PassSettings::stopping`). None for a
/// shutdown: `down` stops them too.
fn owned_elsewhere(
    store: &crate::state::StateStore,
    state: &State,
    settings: &PassSettings,
    work: &Work,
) -> BTreeMap<String, OwnedStop> {
    if matches!(work, Work::Shutdown { .. }) {
        return BTreeMap::new();
    }
    let mut owners = crate::stop_owner::Owners::new(store);
    state
        .records(RecordKind::Service)
        .filter(|(n, r)| {
            r.status == Status::Stopping && r.process.is_some() && !settings.stopping.contains(*n)
        })
        .filter_map(|(n, r)| {
            let holder = owners.of(n)?;
            Some((
                n.clone(),
                OwnedStop {
                    service: n.clone(),
                    holder,
                    grace: r.spec.stop_timeout(),
                },
            ))
        })
        .collect()
}

/// Of the stops another process owns, those `work` needs: the services it starts, restarts
/// or stops (an `up`: those it names, or all of the file's it would run). The watcher's
/// pass needs none: it goes on without them, and the loop runs another once their stops are
/// over (`PassOutcome::left_to_others`).
fn needed_of(
    work: &Work,
    desired: &Desired,
    owned: &BTreeMap<String, OwnedStop>,
) -> Vec<OwnedStop> {
    if owned.is_empty() {
        return Vec::new();
    }
    let names: Vec<&String> = match work {
        Work::Reconcile { explicit: None } => Vec::new(),
        Work::Reconcile { explicit: Some(e) } if !e.services.is_empty() => {
            e.services.iter().collect()
        }
        Work::Reconcile { .. } => desired.services.iter().map(|s| &s.name).collect(),
        Work::Start { names } | Work::Stop { names, .. } | Work::Restart { names, .. } => {
            names.iter().collect()
        }
        Work::Finish { job, .. } => job.resume.iter().map(|s| &s.service).collect(),
        // A CI session's works are served before this (and name no file's service).
        Work::Shutdown { .. } | Work::CiStart(_) | Work::RecordExit { .. } => Vec::new(),
    };
    names
        .into_iter()
        .filter_map(|n| owned.get(n).cloned())
        .collect()
}

/// Which services a stop pass stops, and how.
struct StopOrder<'a> {
    names: &'a BTreeSet<String>,
    /// Overrides each service's `stop_timeout`.
    timeout: Option<Duration>,
    /// Remove the records (`down`) instead of keeping them as stopped.
    forget: bool,
    why: Cause,
}

#[allow(clippy::too_many_arguments)]
fn stop(
    store: &crate::state::StateStore,
    lock: &crate::state::StateLock,
    state: State,
    order: &StopOrder<'_>,
    defer: bool,
    settings: &PassSettings,
    reporter: &mut dyn Reporter,
    out: &mut PassOutcome,
    looks: &Looks<'_>,
) -> Result<String> {
    let StopOrder {
        names,
        timeout,
        forget,
        ref why,
    } = *order;
    let mut observed = observe_with(&state, looks);
    // A `stop` leaves what the loop is already stopping to that stop; the loop's final
    // shutdown takes every service (the loop ends: no other stop will be recorded).
    let leave_in_flight = defer && !settings.defer_shutdown;
    if leave_in_flight {
        observed.retain(|n, _| !settings.stopping.contains(n));
    }
    let plan = crate::plan::plan_stop(
        &observed,
        names,
        why,
        forget,
        &PlanAt {
            stop_timeout: timeout,
            ..Default::default()
        },
    );
    let loaded = state.clone();
    // Only what runs (or would run again) becomes `stopped`; a service that had exited or
    // failed keeps its status and last exit.
    let was_up: BTreeSet<String> = state
        .records(RecordKind::Service)
        .filter(|(_, r)| !matches!(r.status, Status::Exited | Status::Failed | Status::Stopped))
        .map(|(n, _)| n.clone())
        .collect();
    let launch = LaunchSettings {
        defer_stops: defer,
        signal_first: settings.defer_shutdown,
        ..Default::default()
    };
    let mut engine = Engine::new(store, lock, state, launch, reporter);
    let mut report = ApplyReport::default();
    engine.stop_steps(&plan.steps.iter().collect::<Vec<_>>(), &mut report)?;
    let deferred: BTreeSet<String> = report.deferred.iter().map(|p| p.name.clone()).collect();
    if !deferred.is_empty() {
        out.stops = Some(StopJob {
            stops: std::mem::take(&mut report.deferred),
            resume: Vec::new(),
            mark_stopped: names
                .iter()
                .filter(|n| deferred.contains(*n) && was_up.contains(*n))
                .cloned()
                .collect(),
            why: why.to_string(),
            message: format!("{} stopped", names.len()),
        });
    }
    for n in names {
        if let Some(rec) = engine.state.services.get_mut(n)
            && report.survivors.iter().all(|(s, _)| s != n)
            && was_up.contains(n)
            && !deferred.contains(n)
            // Its stop is the loop's already: the pass that records it says `stopped`.
            && !(leave_in_flight && settings.stopping.contains(n))
        {
            rec.status = Status::Stopped;
            rec.backoff_until_ms = None;
            rec.last_reason = Some(format!("stopped: {why}"));
        }
    }
    engine.save_if_changed(&loaded)?;
    describe(&engine.state, out, &REAL, settings.skip_logs);
    if let Some(err) = report.error() {
        return Err(err.into());
    }
    Ok(format!("{} stopped", names.len()))
}

/// Whether a service this pass left waiting (`looked_at`) still shows the plain `waiting for
/// db (ready)` while `db` has ended (exited, failed or stopped, no live process). Only those
/// looked at: the next pass looks at them again, and then says why.
fn waits_on_an_ended_dependency(state: &State, looked_at: &[String]) -> bool {
    state
        .records(RecordKind::Service)
        .filter(|(n, r)| r.status == Status::Waiting && looked_at.contains(n))
        .filter(|(_, r)| {
            r.last_reason
                .as_ref()
                .is_some_and(|why| !why.contains("): "))
        })
        .any(|(_, r)| {
            r.spec.depends_on.0.keys().any(|dep| {
                state.services.get(dep).is_some_and(|d| {
                    matches!(d.status, Status::Exited | Status::Failed | Status::Stopped)
                        && d.process
                            .as_ref()
                            .is_none_or(|p| p.liveness() != Liveness::Alive)
                })
            })
        })
}

/// The recorded processes of `state`, to look at.
fn recorded_ids(state: &State) -> impl Iterator<Item = &ProcessIdentity> {
    state.services.values().filter_map(|r| r.process.as_ref())
}

/// Fills in what the loop watches next.
fn describe(state: &State, out: &mut PassOutcome, live: &dyn ProcessTable, skip_logs: bool) {
    let mut logs = BTreeMap::new();
    for (name, rec) in state.records(RecordKind::Service) {
        // A service that waits has not started in this run: what its file holds is older.
        let offset = || match rec.status == Status::Waiting && rec.process.is_none() {
            true => std::fs::metadata(&rec.log_path).map_or(0, |m| m.len()),
            false => rec.log_offset,
        };
        if !skip_logs {
            logs.insert(name.clone(), (rec.log_path.clone(), offset()));
        }
        if let Some(p) = &rec.process
            && matches!(
                rec.status,
                Status::Running | Status::Ready | Status::Starting
            )
        {
            if live.liveness(Some(p)) == Liveness::Alive {
                out.running.push((name.clone(), p.clone()));
            } else {
                // Died during the pass, before a watch could be set on it: settle it next.
                out.unsettled = true;
            }
        }
    }
    out.logs = logs.into_iter().map(|(n, (p, o))| (n, p, o)).collect();
    out.waiting = state
        .records(RecordKind::Service)
        .filter(|(_, r)| r.status == Status::Waiting)
        .map(|(n, _)| n.clone())
        .collect();
    out.probes = probes_needed(state);
    // A session that has not said `Ready!` yet: the loop watches it, a request waits for it.
    // Also one that died during this pass, before its exit was settled: the next pass settles
    // it (`unsettled`), and a request must not be answered without its failure.
    for (name, rec) in state.records(RecordKind::Service) {
        if rec.status == Status::Starting
            && rec.spec.launcher == crate::spec::LauncherKind::Mirrord
            && let Some(p) = &rec.process
        {
            out.waiting.insert(name.clone());
            out.sessions.push(SessionOrder {
                name: name.clone(),
                identity: p.clone(),
                log: (rec.log_path.clone(), rec.log_offset),
            });
        }
    }
    out.all_down = all_down(state).filter(|_| !out.unsettled);
}

/// Readiness probes for the dependencies that waiting services wait on (`condition: ready`)
/// and that run, not ready yet.
fn probes_needed(state: &State) -> Vec<ProbeOrder> {
    let mut wanted = BTreeSet::new();
    for (_, rec) in state.records(RecordKind::Service) {
        if rec.status != Status::Waiting {
            continue;
        }
        for (dep, how) in &rec.spec.depends_on.0 {
            if how.condition == crate::config::Condition::Ready {
                wanted.insert(dep.clone());
            }
        }
    }
    let mut orders = Vec::new();
    for dep in wanted {
        let Some(rec) = state.services.get(&dep) else {
            continue;
        };
        let Some(identity) = &rec.process else {
            continue;
        };
        if rec.status != Status::Running || identity.liveness() != Liveness::Alive {
            continue;
        }
        orders.push(ProbeOrder {
            service: dep.clone(),
            identity: identity.clone(),
            log: rec.log_path.clone(),
            offset: rec.log_offset,
            probe: crate::readiness::Probe::of(&rec.spec),
            timeout: crate::engine::ready_timeout(&rec.spec),
            owner_check: crate::readiness::owner_checked(&rec.spec),
        });
    }
    orders
}

/// Records what the loop's session watches found: a session that said `Ready!` is `running`
/// (`started (pid 12): new service`); one that did not within `START_TIMEOUT` failed to start
/// (it keeps running). Only the process watched, still `starting`.
fn record_sessions(
    state: &mut State,
    probed: &Probed,
    reporter: &mut dyn Reporter,
    out: &mut PassOutcome,
) {
    for (name, pid, outcome) in &probed.sessions {
        let Some(rec) = state.services.get_mut(name) else {
            continue;
        };
        if rec.status != Status::Starting || rec.process.as_ref().map(|p| p.pid) != Some(*pid) {
            continue;
        }
        match outcome {
            SessionOutcome::Started => {
                rec.status = Status::Running;
                let cause = rec.last_reason.clone().unwrap_or_default();
                reporter.event(name, &format!("started (pid {pid}): {cause}"));
            }
            SessionOutcome::TimedOut => {
                let why = crate::engine::no_ready_message(name);
                rec.status = Status::Running;
                rec.last_reason = Some(why.clone());
                reporter.event(name, &format!("failed: {why}"));
                out.failed.push((name.clone(), why));
            }
            SessionOutcome::Ended => {}
        }
    }
}

/// Records what the loop's probes found: a process that passed its probe is `ready`, if it is
/// still the one probed and alive.
fn record_probed(state: &mut State, probed: &Probed, reporter: &mut dyn Reporter) {
    for (name, pid) in &probed.ready {
        if let Some(rec) = state.services.get_mut(name)
            && rec.status == Status::Running
            && rec
                .process
                .as_ref()
                .is_some_and(|p| p.pid == *pid && p.liveness() == Liveness::Alive)
        {
            rec.status = Status::Ready;
            reporter.event(name, "ready");
        }
    }
}

/// See [`PassOutcome::all_down`].
pub fn all_down(state: &State) -> Option<Vec<String>> {
    let mut ended = false;
    let mut failed = Vec::new();
    for (name, rec) in state.records(RecordKind::Service) {
        match rec.status {
            Status::Exited | Status::Failed => {
                ended = true;
                if rec.status == Status::Failed
                    || rec.last_exit.as_ref().is_none_or(ExitInfo::failed)
                {
                    failed.push(name.clone());
                }
            }
            // Nothing else runs or comes back by itself: what it waits for will not happen
            // without a change to the file.
            Status::Waiting => {
                ended = true;
                failed.push(name.clone());
            }
            Status::Stopped => {}
            Status::Running
            | Status::Ready
            | Status::Starting
            | Status::Stopping
            | Status::Backoff => return None,
        }
    }
    ended.then_some(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{ExitKind, MarkedGroup, StopRequest};
    use crate::spec::{LauncherKind, ServiceSpec};
    use crate::state::ServiceRecord;
    use nix::sys::signal::Signal;

    struct Quiet;

    impl Reporter for Quiet {
        fn event(&mut self, _: &str, _: &str) {}
    }

    /// Fake processes, never signalled.
    struct Table(crate::seams::FakePids);

    impl ProcessTable for Table {
        fn liveness(&self, id: Option<&ProcessIdentity>) -> Liveness {
            self.0.liveness(id)
        }
        fn take_exit(&self, _: i32) -> Option<ExitKind> {
            None
        }
        fn stop(&self, _: &[StopRequest], _: &mut dyn FnMut(&StopOutcome)) -> Vec<StopOutcome> {
            Vec::new()
        }
        fn stop_leftovers(&self, _: &str, _: &ProcessIdentity, _: Signal, _: Duration) {}
        fn find_marked(&self, _: &std::path::Path) -> Vec<MarkedGroup> {
            Vec::new()
        }
    }

    fn record(name: &str, status: Status, process: Option<ProcessIdentity>) -> ServiceRecord {
        let spec = ServiceSpec::plain(name, LauncherKind::Local, vec!["x".into()], "/");
        ServiceRecord {
            kind: RecordKind::Service,
            config_hash: spec.hash(),
            spec: spec.into(),
            argv: Vec::new(),
            status,
            process,
            spawn_nonce: None,
            started_at_ms: Some(1),
            restarts: 0,
            policy_restarts: 0,
            last_exit: None,
            last_reason: None,
            log_path: "/nonexistent.log".into(),
            log_offset: 0,
            output_dir: None,
            backoff_until_ms: None,
            crash_streak: 1,
        }
    }

    /// Settling looks only at what exited and what waits out a back-off, but the loop must
    /// still hear when every back-off ends: a pass that decides about no exit (an `up -d`, a
    /// reload) would otherwise drop the timer of a service in back-off, which then never
    /// starts again.
    #[test]
    fn a_pass_that_settles_no_exit_still_says_when_a_back_off_ends() {
        let table = Table(crate::seams::FakePids::from(100));
        let (_, running) = table.0.spawn("a", "boot");
        let mut state = State::new("p");
        state.services.insert(
            "a".into(),
            record("a", Status::Running, Some(running.clone())).into(),
        );
        let mut waiting = record("b", Status::Backoff, None);
        waiting.backoff_until_ms = Some(5_000);
        state.services.insert("b".into(), waiting.into());
        let at = PlanAt {
            now_ms: 1_000,
            ..Default::default()
        };
        let mut out = PassOutcome::default();
        let looks = Looks::new(&table, recorded_ids(&state));
        settle_exits(
            &mut state,
            &PassSettings::default(),
            &mut Quiet,
            &at,
            &mut out,
            &BTreeSet::new(),
            &looks,
        );
        assert_eq!(out.next_due_ms, Some(5_000), "the back-off's end was lost");
        assert_eq!(state.services["a"].status, Status::Running);
        assert_eq!(state.services["b"].status, Status::Backoff);
    }
}
