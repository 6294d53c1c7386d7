//! The pure reconcile decision: `plan(desired, observed) -> Plan`, one step per service, each
//! with its cause and everything the executor needs to carry it out (the spec to start, the
//! signal and grace period of a stop, what the restart policy decided about an exit, the
//! dependencies to gate on, when to look again). No I/O, no clock (`now` is an input), no
//! processes; every command that changes anything builds a plan here and hands it to the
//! executor, which never re-derives policy or order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serialize;

use crate::config::{Condition, RestartPolicy};
use crate::desired::Desired;
use crate::policy::{self, Decision};
use crate::spec::{ConfigHash, ServiceSpec, changed_fields};
use crate::state::Status;

/// What is known about a service that the state file records, after checking reality.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedService {
    pub hash: ConfigHash,
    pub state: ObservedState,
    pub level: usize,
    /// The spec it was started with: how its process is stopped (signal, grace period).
    pub recorded: Arc<ServiceSpec>,
}

/// The facts about an exit that no decision has looked at yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitFacts {
    /// A non-zero code, a signal, or an unknown status.
    pub failed: bool,
    /// How long the process ran.
    pub uptime: Duration,
    /// Restarts in a row by the policy before this exit.
    pub streak: u32,
    /// The policy it was started with.
    pub restart: RestartPolicy,
    pub max_restarts: Option<u32>,
    /// A mirrord session that ended before its `Ready!`: it did not start.
    pub before_ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservedState {
    Running,
    /// The process (group) is gone: exited, killed, or its PID now belongs to someone else;
    /// settled already (exited, stopped) or never decided about (a one-shot command's view).
    NotRunning {
        detail: String,
    },
    /// Its process ended and the restart policy has not decided about it yet.
    Exited {
        detail: String,
        exit: ExitFacts,
    },
    /// Waiting out a restart back-off until `until_ms` (unix ms; `None`: due now).
    Backoff {
        detail: String,
        until_ms: Option<u64>,
        streak: u32,
    },
    /// Gave up after `max_restarts`, or could not start. `last_failed`: whether its last exit
    /// (if one is recorded) was a failure; `streak` the restarts in a row it had.
    Failed {
        detail: String,
        last_failed: Option<bool>,
        streak: u32,
    },
    /// A stop was begun and not finished (the tool died mid-stop); the process may still run.
    Stopping,
    /// Never started: it waits for a dependency to reach its condition. Every plan starts it
    /// again (level-triggered): the executor gates it on its dependencies, without waiting,
    /// and either spawns it or leaves it waiting.
    Waiting,
}

impl ObservedState {
    /// Whether a process of it may be alive (running, or being stopped).
    pub fn runs(&self) -> bool {
        matches!(self, ObservedState::Running | ObservedState::Stopping)
    }

    /// Not running, with what is known about how it ended (`None`: running, stopping, waiting).
    fn ended(&self) -> Option<&str> {
        match self {
            ObservedState::NotRunning { detail }
            | ObservedState::Exited { detail, .. }
            | ObservedState::Backoff { detail, .. }
            | ObservedState::Failed { detail, .. } => Some(detail),
            _ => None,
        }
    }
}

pub type Observed = BTreeMap<String, ObservedService>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Start,
    Stop,
    Restart,
    Keep,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Keep => "keep",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    NewService,
    ConfigChanged {
        fields: Vec<String>,
    },
    RemovedFromFile,
    Skipped,
    NotRunning {
        detail: String,
    },
    /// Its restart policy brings it back after a crash.
    Crashed {
        detail: String,
    },
    /// `restart`/`start` on the command line.
    Requested {
        what: &'static str,
    },
    ForceRecreate,
    DependencyRestarted {
        dependency: String,
    },
    InterruptedStop,
    /// mirrord-up ends (Ctrl-C, the terminal went away): everything stops.
    Ending,
    /// It waited for its dependencies (`depends_on` conditions); they are met now.
    DependenciesMet,
    Unchanged,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::NewService => f.write_str("new service"),
            Cause::ConfigChanged { fields } => {
                write!(f, "config changed: {}", fields.join(", "))
            }
            Cause::RemovedFromFile => f.write_str("removed from file"),
            Cause::Skipped => f.write_str("marked skip"),
            Cause::NotRunning { detail } if detail.is_empty() => f.write_str("not running"),
            Cause::NotRunning { detail } => write!(f, "not running ({detail})"),
            Cause::Crashed { detail } if detail.is_empty() => f.write_str("restart policy"),
            Cause::Crashed { detail } => write!(f, "restart policy ({detail})"),
            Cause::Requested { what } => write!(f, "{what} requested"),
            Cause::ForceRecreate => f.write_str("--force-recreate"),
            Cause::DependencyRestarted { dependency } => {
                write!(f, "dependency {dependency} restarted")
            }
            Cause::InterruptedStop => f.write_str("an interrupted stop"),
            Cause::Ending => f.write_str("mirrord-up is ending"),
            Cause::DependenciesMet => f.write_str("its dependencies are met"),
            Cause::Unchanged => f.write_str("unchanged"),
        }
    }
}

/// How a running process is stopped: its `stop_signal`, then SIGKILL after `grace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopHow {
    pub signal: Signal,
    pub grace: Duration,
}

impl StopHow {
    /// `spec`'s `stop_signal` (SIGTERM if unreadable) and `stop_timeout`, or `grace` when
    /// the command line overrides it (`down -t`, `restart -t`).
    pub fn of(spec: &ServiceSpec, grace: Option<Duration>) -> StopHow {
        StopHow {
            signal: crate::config::parse_signal(&spec.stop_signal).unwrap_or(Signal::SIGTERM),
            grace: grace.unwrap_or(spec.stop_timeout()),
        }
    }
}

/// A dependency a start is gated on: `on` must reach `until` first.
#[derive(Debug, Clone, PartialEq)]
pub struct Wait {
    pub on: String,
    pub until: Condition,
    /// The dependency's spec (how long its readiness is waited for, its probe).
    pub spec: Arc<ServiceSpec>,
}

/// What the restart policy decided about an exit (see [`decide_exit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No restart: recorded as `exited`, or `failed` when it never started (`failed`).
    Stay { failed: bool },
    /// Restart after `after`, at `until_ms` (the plan's requeue time); `streak` restarts in a
    /// row, this one included.
    Backoff {
        after: Duration,
        until_ms: u64,
        streak: u32,
    },
    /// `max_restarts` restarts in a row did not help: `failed`.
    GiveUp { restarts: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub service: String,
    pub action: Action,
    pub cause: Cause,
    pub level: usize,
    /// Start and Restart: the spec to start.
    pub spec: Option<Arc<ServiceSpec>>,
    /// Stop and Restart: how the running process is stopped.
    pub stop: Option<StopHow>,
    /// Start and Restart: the dependencies to gate the spawn on, in order.
    pub wait: Vec<Wait>,
    /// An exit this step settles first (the restart policy's decision about it).
    pub exit: Option<Verdict>,
    /// A start for another reason than the restart policy: a new streak begins (the
    /// recorded crash streak and back-off are cleared).
    pub new_streak: bool,
    /// Stop: its record goes once it stopped (removed from the file, `down`); otherwise it
    /// stays, as stopped.
    pub forget: bool,
}

impl Step {
    fn new(service: &str, action: Action, cause: Cause, level: usize) -> Step {
        Step {
            service: service.to_owned(),
            action,
            cause,
            level,
            spec: None,
            stop: None,
            wait: Vec::new(),
            exit: None,
            new_streak: false,
            forget: false,
        }
    }

    /// Whether this start is the restart policy's (a crash restart).
    pub fn by_policy(&self) -> bool {
        matches!(self.cause, Cause::Crashed { .. })
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Stops first (reverse dependency order), then every desired service in start order.
    pub steps: Vec<Step>,
    /// When to plan again (unix ms): the earliest end of a back-off still running
    /// (like kube-runtime's `Action::requeue(after)`).
    pub requeue_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// Restart every selected service.
    pub force_recreate: bool,
    /// Start services whose process has exited although their config is unchanged. One-shot
    /// commands do; the supervisor leaves that to the restart policy.
    pub restart_exited: bool,
}

/// What a plan is made at: the time, and the run's settings that change decisions.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanAt {
    /// Now, in unix ms (back-offs that ended by then are due).
    pub now_ms: u64,
    /// `--abort-on-exit`: an exit ends the run, the restart policy does not apply.
    pub abort_on_exit: bool,
    /// Overrides every service's `stop_timeout` (`-t`).
    pub stop_timeout: Option<Duration>,
}

impl Plan {
    /// Nothing to start, stop or restart.
    pub fn is_empty(&self) -> bool {
        self.steps.iter().all(|s| s.action == Action::Keep)
    }

    pub fn changes(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| s.action != Action::Keep)
    }

    pub fn summary(&self) -> String {
        let count = |a| self.steps.iter().filter(|s| s.action == a).count();
        format!(
            "{} to start, {} to restart, {} to stop, {} unchanged",
            count(Action::Start),
            count(Action::Restart),
            count(Action::Stop),
            count(Action::Keep)
        )
    }

    fn requeue(&mut self, at: u64) {
        self.requeue_at_ms = Some(self.requeue_at_ms.map_or(at, |d| d.min(at)));
    }
}

/// The restart policy's decision about an exit, at `now_ms`.
pub fn decide_exit(exit: &ExitFacts, at: &PlanAt) -> Verdict {
    let decision = if at.abort_on_exit {
        Decision::Stay
    } else {
        policy::on_exit(
            exit.restart,
            exit.max_restarts,
            exit.failed,
            exit.uptime,
            exit.streak,
        )
    };
    match decision {
        Decision::Stay => Verdict::Stay {
            failed: exit.failed && exit.before_ready,
        },
        Decision::Backoff { delay, streak } => Verdict::Backoff {
            after: delay,
            until_ms: at.now_ms.saturating_add(delay.as_millis() as u64),
            streak,
        },
        Decision::GiveUp { restarts } => Verdict::GiveUp { restarts },
    }
}

/// The decisions about what ended since the last look: a `Keep` step with its [`Verdict`]
/// for each exit nobody decided about, and when to look again. The supervisor applies this
/// before it re-reads the file, so that what it says and records about an exit does not wait
/// for the file.
pub fn settle(observed: &Observed, at: &PlanAt) -> Plan {
    let mut plan = Plan::default();
    for (name, o) in observed {
        match &o.state {
            ObservedState::Exited { exit, .. } => {
                let verdict = decide_exit(exit, at);
                if let Verdict::Backoff { until_ms, .. } = verdict {
                    plan.requeue(until_ms);
                }
                let mut step = Step::new(name, Action::Keep, Cause::Unchanged, o.level);
                step.exit = Some(verdict);
                plan.steps.push(step);
            }
            ObservedState::Backoff {
                until_ms: Some(t), ..
            } if *t > at.now_ms => plan.requeue(*t),
            _ => {}
        }
    }
    plan
}

/// Stops of the named recorded services, each with its recorded signal and grace period;
/// `forget`: their records go too (`down`).
pub fn plan_stop(
    observed: &Observed,
    names: &BTreeSet<String>,
    cause: &Cause,
    forget: bool,
    at: &PlanAt,
) -> Plan {
    let steps = names
        .iter()
        .filter_map(|n| observed.get(n).map(|o| (n, o)))
        .map(|(n, o)| {
            let mut step = Step::new(n, Action::Stop, cause.clone(), o.level);
            step.stop = Some(StopHow::of(&o.recorded, at.stop_timeout));
            step.forget = forget;
            step
        })
        .collect();
    Plan {
        steps,
        requeue_at_ms: None,
    }
}

/// A start or restart of `spec`, with what it is gated on.
fn starting(
    spec: &Arc<ServiceSpec>,
    desired: &Desired,
    observed: Option<&ObservedService>,
    action: Action,
    cause: Cause,
    at: &PlanAt,
) -> Step {
    let mut step = Step::new(&spec.name, action, cause, spec.level);
    step.new_streak = !step.by_policy();
    step.spec = Some(Arc::clone(spec));
    if action == Action::Restart {
        let recorded = observed.map_or(spec, |o| &o.recorded);
        step.stop = Some(StopHow::of(recorded, at.stop_timeout));
    }
    step.wait = spec
        .depends_on
        .0
        .iter()
        .filter_map(|(dep, how)| {
            // A dependency not selected is provided elsewhere: nothing to wait for.
            desired.shared(dep).map(|d| Wait {
                on: dep.clone(),
                until: how.condition,
                spec: Arc::clone(d),
            })
        })
        .collect();
    step
}

/// `restart NAME…` (`what = "restart"`) or `start NAME…` (`what = "start"`) over the recorded
/// services: the named ones (re)start — `start` only those not running — and, after a
/// restart, every dependent that asked for it with `depends_on.<x>.restart: true`.
pub fn plan_request(
    desired: &Desired,
    observed: &Observed,
    names: &BTreeSet<String>,
    what: &'static str,
    at: &PlanAt,
) -> Plan {
    let mut restarted: BTreeSet<String> = BTreeSet::new();
    let mut steps = Vec::new();
    for spec in &desired.services {
        let o = observed.get(&spec.name);
        let running = o.is_some_and(|o| o.state.runs());
        let trigger = spec
            .depends_on
            .0
            .iter()
            .find(|(d, dep)| dep.restart && restarted.contains(*d));
        let (action, cause) = if names.contains(&spec.name) {
            match (what, running) {
                ("start", true) => (Action::Keep, Cause::Unchanged),
                (_, true) => (Action::Restart, Cause::Requested { what }),
                (_, false) => (Action::Start, Cause::Requested { what }),
            }
        } else if let (Some((d, _)), true) = (trigger, running) {
            (
                Action::Restart,
                Cause::DependencyRestarted {
                    dependency: d.clone(),
                },
            )
        } else {
            (Action::Keep, Cause::Unchanged)
        };
        if action == Action::Keep {
            steps.push(Step::new(&spec.name, action, cause, spec.level));
        } else {
            restarted.insert(spec.name.clone());
            steps.push(starting(spec, desired, o, action, cause, at));
        }
    }
    Plan {
        steps,
        requeue_at_ms: None,
    }
}

/// [`plan_at`] at time zero with no run settings: for one-shot commands, which restart what
/// exited anyway (`restart_exited`) and apply no restart policy.
pub fn plan(desired: &Desired, observed: &Observed, opts: PlanOptions) -> Plan {
    plan_at(desired, observed, opts, &PlanAt::default())
}

/// The whole decision: what to stop, start, restart or keep, each with its cause; the
/// restart policy (a back-off that is over restarts, one still running asks to be looked at
/// again at its end, a failed service whose policy now allows more restarts comes back);
/// the dependencies each start is gated on.
pub fn plan_at(desired: &Desired, observed: &Observed, opts: PlanOptions, at: &PlanAt) -> Plan {
    let mut plan = Plan::default();
    let names: BTreeSet<&str> = desired.services.iter().map(|s| s.name.as_str()).collect();

    let mut stops: Vec<Step> = observed
        .iter()
        .filter(|(name, _)| !desired.partial && !names.contains(name.as_str()))
        .map(|(name, o)| {
            let mut step = Step::new(name, Action::Stop, Cause::RemovedFromFile, o.level);
            step.stop = Some(StopHow::of(&o.recorded, at.stop_timeout));
            step.forget = true;
            step
        })
        .collect();
    stops.sort_by(|a, b| b.level.cmp(&a.level).then(a.service.cmp(&b.service)));
    plan.steps.extend(stops);

    // Services whose process is (re)started by this plan, for `depends_on.<x>.restart`.
    let mut restarted: BTreeSet<String> = BTreeSet::new();
    for spec in &desired.services {
        let o = observed.get(&spec.name);
        let mut verdict = None;
        let (action, cause) = match o {
            None => (Action::Start, Cause::NewService),
            Some(o) => {
                // The very spec recorded (the memo or the last resolve handed out the same
                // one): its recorded hash is its hash.
                let new_hash = match Arc::ptr_eq(&o.recorded, spec) {
                    true => o.hash.clone(),
                    false => spec.hash(),
                };
                let changed = || Cause::ConfigChanged {
                    fields: changed_fields(&o.recorded.canonical(), &spec.canonical()),
                };
                if let ObservedState::Exited { exit, .. } = &o.state {
                    let v = decide_exit(exit, at);
                    if let Verdict::Backoff { until_ms, .. } = v {
                        plan.requeue(until_ms);
                    }
                    verdict = Some(v);
                }
                match &o.state {
                    ObservedState::Stopping => (Action::Restart, Cause::InterruptedStop),
                    ObservedState::Waiting if o.hash != new_hash => (Action::Start, changed()),
                    ObservedState::Waiting => (Action::Start, Cause::DependenciesMet),
                    ObservedState::Running if o.hash != new_hash => (Action::Restart, changed()),
                    ObservedState::Running if opts.force_recreate => {
                        (Action::Restart, Cause::ForceRecreate)
                    }
                    ObservedState::Running => {
                        let trigger = spec
                            .depends_on
                            .0
                            .iter()
                            .find(|(d, dep)| dep.restart && restarted.contains(*d));
                        match trigger {
                            Some((d, _)) => (
                                Action::Restart,
                                Cause::DependencyRestarted {
                                    dependency: d.clone(),
                                },
                            ),
                            None => (Action::Keep, Cause::Unchanged),
                        }
                    }
                    _ if o.hash != new_hash => (Action::Start, changed()),
                    // Its back-off is over.
                    ObservedState::Backoff {
                        detail, until_ms, ..
                    } if until_ms.is_none_or(|t| t <= at.now_ms) => (
                        Action::Start,
                        Cause::Crashed {
                            detail: detail.clone(),
                        },
                    ),
                    // It gave up, and the policy in the file now asks for another restart
                    // (a raised `max_restarts`, another `restart`): the policy is a level,
                    // read again on every plan.
                    ObservedState::Failed {
                        detail,
                        last_failed: Some(failed),
                        streak,
                    } if matches!(
                        policy::on_exit(
                            spec.restart,
                            spec.max_restarts,
                            *failed,
                            Duration::ZERO,
                            *streak
                        ),
                        Decision::Backoff { .. }
                    ) =>
                    {
                        (
                            Action::Start,
                            Cause::Crashed {
                                detail: detail.clone(),
                            },
                        )
                    }
                    state => {
                        if let ObservedState::Backoff {
                            until_ms: Some(t), ..
                        } = state
                        {
                            plan.requeue(*t);
                        }
                        let detail = state.ended().unwrap_or_default().to_owned();
                        if opts.restart_exited || opts.force_recreate {
                            (Action::Start, Cause::NotRunning { detail })
                        } else {
                            (Action::Keep, Cause::Unchanged)
                        }
                    }
                }
            }
        };
        if action == Action::Restart || (action == Action::Start && o.is_some()) {
            restarted.insert(spec.name.clone());
        }
        let mut step = if action == Action::Keep {
            Step::new(&spec.name, action, cause, spec.level)
        } else {
            starting(spec, desired, o, action, cause, at)
        };
        step.exit = verdict;
        plan.steps.push(step);
    }
    plan
}

/// What is known about a dependency when its dependent is about to be spawned (the executor
/// looks at the live state then: a dependency started earlier in the same apply counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepFacts {
    pub status: Status,
    /// Its recorded process is alive.
    pub alive: bool,
    pub pid: Option<i32>,
    /// Its last exit: failed or not, and how (`exit code 3`).
    pub last_exit: Option<(bool, String)>,
}

/// Whether a start may spawn now (see [`gate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Met,
    /// Wait (`reason`: `waiting for db (ready)`); `failed` when the dependency ended without
    /// reaching its condition (said once, as a failure).
    Wait {
        reason: String,
        failed: Option<String>,
    },
    /// Wait for `dep`'s readiness, which the loop probes.
    Probe {
        dep: String,
        reason: String,
    },
}

/// The gating decision for a start, without waiting: has every dependency in `wait` reached
/// its condition? `facts` tells what is known about a dependency (`None`: nothing recorded);
/// `not_ready` the dependencies whose readiness probe of process `pid` timed out, and why.
pub fn gate(
    wait: &[Wait],
    facts: &dyn Fn(&str) -> Option<DepFacts>,
    not_ready: &BTreeMap<String, (i32, String)>,
) -> Gate {
    for w in wait {
        let dep = &w.on;
        let cond = match w.until {
            Condition::Started => "started",
            Condition::Ready => "ready",
            Condition::CompletedSuccessfully => "completed",
        };
        let reason = format!("waiting for {dep} ({cond})");
        let Some(f) = facts(dep) else {
            return Gate::Wait {
                reason,
                failed: None,
            };
        };
        let alive = f.alive;
        // A dependency that will not come back by itself (exited, failed, stopped): the
        // dependent fails now, and still starts once the dependency does (after a fix).
        let gone = !alive
            && matches!(
                f.status,
                Status::Exited | Status::Failed | Status::Stopped | Status::Running
            );
        let met = match w.until {
            Condition::Started => alive && matches!(f.status, Status::Running | Status::Ready),
            Condition::Ready => alive && f.status == Status::Ready,
            Condition::CompletedSuccessfully => {
                !alive
                    && f.status == Status::Exited
                    && f.last_exit.as_ref().is_none_or(|(failed, _)| !failed)
            }
        };
        if met {
            continue;
        }
        if w.until == Condition::Ready && alive {
            return match not_ready.get(dep) {
                Some((p, why)) if Some(*p) == f.pid => Gate::Wait {
                    reason,
                    failed: Some(why.clone()),
                },
                _ => Gate::Probe {
                    dep: dep.clone(),
                    reason,
                },
            };
        }
        let failed = match w.until {
            Condition::CompletedSuccessfully if gone => Some(match &f.last_exit {
                Some((_, how)) => {
                    format!("dependency {dep} did not complete successfully ({how})")
                }
                None => format!("dependency {dep} did not complete successfully"),
            }),
            Condition::CompletedSuccessfully => None,
            Condition::Ready if gone => {
                Some(format!("dependency {dep} exited before it was ready"))
            }
            _ if gone => Some(format!("dependency {dep} did not start")),
            _ => None,
        };
        return Gate::Wait { reason, failed };
    }
    Gate::Met
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dependency, DependsOn};
    use crate::spec::{LauncherKind, ServiceSpec};
    use crate::state::Status;
    use serde_json::json;

    fn spec(name: &str, level: usize, env: &str) -> ServiceSpec {
        ServiceSpec {
            mirrord_config: json!({"feature": {"env": {"override": {"FOO": env}}}}).into(),
            level,
            ..ServiceSpec::plain(
                name,
                LauncherKind::Local,
                vec!["sleep".into(), "100".into()],
                "/w",
            )
        }
    }

    fn running(s: &ServiceSpec) -> ObservedService {
        ObservedService {
            hash: s.hash(),
            state: ObservedState::Running,
            level: s.level,
            recorded: Arc::new(s.clone()),
        }
    }

    fn desired(services: Vec<ServiceSpec>) -> Desired {
        Desired {
            services: services.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// `depends_on: {<dep>: {restart: true}}`.
    fn restarts_with(dep: &str) -> DependsOn {
        DependsOn(
            [(
                dep.to_string(),
                Dependency {
                    restart: true,
                    ..Default::default()
                },
            )]
            .into(),
        )
    }

    fn actions(p: &Plan) -> Vec<(String, Action, String)> {
        p.steps
            .iter()
            .map(|s| (s.service.clone(), s.action, s.cause.to_string()))
            .collect()
    }

    #[test]
    fn empty_observed_starts_everything_in_order() {
        let d = desired(vec![spec("db", 0, "1"), spec("api", 1, "1")]);
        let p = plan(&d, &Observed::new(), PlanOptions::default());
        assert_eq!(
            actions(&p),
            vec![
                ("db".into(), Action::Start, "new service".into()),
                ("api".into(), Action::Start, "new service".into()),
            ]
        );
        assert!(!p.is_empty());
    }

    #[test]
    fn unchanged_is_empty() {
        let d = desired(vec![spec("db", 0, "1"), spec("api", 1, "1")]);
        let o: Observed = d
            .services
            .iter()
            .map(|s| (s.name.clone(), running(s)))
            .collect();
        let p = plan(&d, &o, PlanOptions::default());
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn a_change_restarts_only_that_service_and_names_the_field() {
        let old = [spec("db", 0, "1"), spec("api", 1, "1")];
        let o: Observed = old.iter().map(|s| (s.name.clone(), running(s))).collect();
        let d = desired(vec![spec("db", 0, "1"), spec("api", 1, "2")]);
        let p = plan(&d, &o, PlanOptions::default());
        assert_eq!(
            actions(&p),
            vec![
                ("db".into(), Action::Keep, "unchanged".into()),
                (
                    "api".into(),
                    Action::Restart,
                    "config changed: env.override.FOO".into()
                ),
            ]
        );
    }

    #[test]
    fn removed_services_stop_in_reverse_order_unless_selection_is_partial() {
        let a = spec("a", 0, "1");
        let b = spec("b", 1, "1");
        let c = spec("c", 2, "1");
        let o: Observed = [&a, &b, &c]
            .iter()
            .map(|s| (s.name.clone(), running(s)))
            .collect();
        let p = plan(&desired(vec![]), &o, PlanOptions::default());
        let order: Vec<_> = p.steps.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(order, ["c", "b", "a"]);
        assert!(p.steps.iter().all(|s| s.cause == Cause::RemovedFromFile));

        let partial = Desired {
            services: vec![a.clone().into()],
            partial: true,
            ..Default::default()
        };
        assert!(plan(&partial, &o, PlanOptions::default()).is_empty());
    }

    #[test]
    fn exited_services_restart_only_when_asked() {
        let s = spec("a", 0, "1");
        let mut o = running(&s);
        o.state = ObservedState::NotRunning {
            detail: String::new(),
        };
        let obs: Observed = [("a".to_string(), o)].into();
        let d = desired(vec![s]);
        assert!(plan(&d, &obs, PlanOptions::default()).is_empty());
        let p = plan(
            &d,
            &obs,
            PlanOptions {
                restart_exited: true,
                ..Default::default()
            },
        );
        assert_eq!(
            actions(&p),
            vec![("a".into(), Action::Start, "not running".into())]
        );
    }

    #[test]
    fn dependency_restart_propagates() {
        let db_old = spec("db", 0, "1");
        let mut api = spec("api", 1, "1");
        api.depends_on = restarts_with("db");
        let web = spec("web", 1, "1");
        let o: Observed = [&db_old, &api, &web]
            .iter()
            .map(|s| (s.name.clone(), running(s)))
            .collect();
        let d = desired(vec![spec("db", 0, "2"), api, web]);
        let p = plan(&d, &o, PlanOptions::default());
        assert_eq!(p.steps[1].action, Action::Restart);
        assert_eq!(p.steps[1].cause.to_string(), "dependency db restarted");
        assert_eq!(p.steps[2].action, Action::Keep);
    }

    #[test]
    fn force_recreate_restarts_running_services() {
        let s = spec("a", 0, "1");
        let o: Observed = [("a".to_string(), running(&s))].into();
        let p = plan(
            &desired(vec![s]),
            &o,
            PlanOptions {
                force_recreate: true,
                ..Default::default()
            },
        );
        assert_eq!(
            actions(&p),
            vec![("a".into(), Action::Restart, "--force-recreate".into())]
        );
    }

    const NOW: u64 = 1_000_000;

    fn at(now_ms: u64) -> PlanAt {
        PlanAt {
            now_ms,
            ..Default::default()
        }
    }

    /// `s` (with `restart`/`max_restarts`) whose process just ended.
    fn exited(s: &ServiceSpec, failed: bool, uptime_s: u64, streak: u32) -> ObservedService {
        let mut o = running(s);
        o.state = ObservedState::Exited {
            detail: if failed { "exit code 3" } else { "exit code 0" }.into(),
            exit: ExitFacts {
                failed,
                uptime: Duration::from_secs(uptime_s),
                streak,
                restart: s.restart,
                max_restarts: s.max_restarts,
                before_ready: false,
            },
        };
        o
    }

    fn with_policy(restart: RestartPolicy, max: Option<u32>) -> ServiceSpec {
        let mut s = spec("a", 0, "1");
        s.restart = restart;
        s.max_restarts = max;
        s
    }

    fn one(o: ObservedService) -> Observed {
        [("a".to_string(), o)].into()
    }

    #[test]
    fn a_crash_backs_off_and_the_plan_asks_to_be_run_again_at_its_end() {
        let s = with_policy(RestartPolicy::Always, None);
        let p = plan_at(
            &desired(vec![s.clone()]),
            &one(exited(&s, true, 2, 0)),
            PlanOptions::default(),
            &at(NOW),
        );
        assert_eq!(p.steps[0].action, Action::Keep);
        assert_eq!(
            p.steps[0].exit,
            Some(Verdict::Backoff {
                after: Duration::from_secs(1),
                until_ms: NOW + 1000,
                streak: 1
            })
        );
        assert_eq!(p.requeue_at_ms, Some(NOW + 1000));
        // The same decision, alone (what the supervisor applies before it reads the file).
        let settled = settle(&one(exited(&s, true, 2, 3)), &at(NOW));
        assert_eq!(
            settled.steps[0].exit,
            Some(Verdict::Backoff {
                after: Duration::from_secs(8),
                until_ms: NOW + 8000,
                streak: 4
            })
        );
        assert_eq!(settled.requeue_at_ms, Some(NOW + 8000));
    }

    #[test]
    fn a_back_off_restarts_at_its_end_and_not_before() {
        let s = with_policy(RestartPolicy::Always, None);
        let mut o = running(&s);
        o.state = ObservedState::Backoff {
            detail: "exit code 3".into(),
            until_ms: Some(NOW + 500),
            streak: 2,
        };
        let d = desired(vec![s]);
        let early = plan_at(&d, &one(o.clone()), PlanOptions::default(), &at(NOW));
        assert!(early.is_empty(), "{early:?}");
        assert_eq!(early.requeue_at_ms, Some(NOW + 500));
        let due = plan_at(&d, &one(o.clone()), PlanOptions::default(), &at(NOW + 500));
        assert_eq!(
            actions(&due),
            vec![(
                "a".into(),
                Action::Start,
                "restart policy (exit code 3)".into()
            )]
        );
        assert!(due.steps[0].by_policy() && !due.steps[0].new_streak);
        assert_eq!(due.requeue_at_ms, None);
        // An explicit `up` does not wait for the back-off, and begins a new streak.
        let explicit = PlanOptions {
            restart_exited: true,
            ..Default::default()
        };
        let now = plan_at(&d, &one(o), explicit, &at(NOW));
        assert_eq!(now.steps[0].action, Action::Start);
        assert!(now.steps[0].new_streak);
    }

    #[test]
    fn a_stable_minute_resets_the_back_off() {
        let s = with_policy(RestartPolicy::Always, Some(3));
        let p = settle(
            &one(exited(&s, true, policy::STABLE_UPTIME.as_secs(), 3)),
            &at(NOW),
        );
        assert_eq!(
            p.steps[0].exit,
            Some(Verdict::Backoff {
                after: policy::BACKOFF_START,
                until_ms: NOW + 1000,
                streak: 1
            })
        );
    }

    #[test]
    fn max_restarts_in_a_row_gives_up_and_raising_it_revives() {
        let s = with_policy(RestartPolicy::OnFailure, Some(3));
        let p = settle(&one(exited(&s, true, 1, 3)), &at(NOW));
        assert_eq!(p.steps[0].exit, Some(Verdict::GiveUp { restarts: 3 }));
        assert_eq!(p.requeue_at_ms, None);

        let mut failed = running(&s);
        failed.state = ObservedState::Failed {
            detail: "exit code 3".into(),
            last_failed: Some(true),
            streak: 3,
        };
        let same = plan_at(
            &desired(vec![s.clone()]),
            &one(failed.clone()),
            PlanOptions::default(),
            &at(NOW),
        );
        assert!(same.is_empty(), "{same:?}");
        let raised = with_policy(RestartPolicy::OnFailure, Some(5));
        let p = plan_at(
            &desired(vec![raised]),
            &one(failed),
            PlanOptions::default(),
            &at(NOW),
        );
        assert_eq!(
            actions(&p),
            vec![(
                "a".into(),
                Action::Start,
                "restart policy (exit code 3)".into()
            )]
        );
    }

    #[test]
    fn each_restart_policy_decides_about_clean_and_failed_exits() {
        let verdict = |restart, failed| {
            let s = with_policy(restart, None);
            settle(&one(exited(&s, failed, 1, 0)), &at(NOW)).steps[0].exit
        };
        let backoff = Some(Verdict::Backoff {
            after: Duration::from_secs(1),
            until_ms: NOW + 1000,
            streak: 1,
        });
        let stay = Some(Verdict::Stay { failed: false });
        assert_eq!(verdict(RestartPolicy::No, true), stay);
        assert_eq!(verdict(RestartPolicy::No, false), stay);
        assert_eq!(verdict(RestartPolicy::OnFailure, false), stay);
        assert_eq!(verdict(RestartPolicy::OnFailure, true), backoff);
        assert_eq!(verdict(RestartPolicy::Always, false), backoff);
        assert_eq!(verdict(RestartPolicy::Always, true), backoff);
        // `--abort-on-exit`: the run ends, nothing restarts.
        let s = with_policy(RestartPolicy::Always, None);
        let abort = PlanAt {
            abort_on_exit: true,
            ..at(NOW)
        };
        assert_eq!(
            settle(&one(exited(&s, true, 1, 0)), &abort).steps[0].exit,
            stay
        );
        // A session that died before its `Ready!` did not start: failed.
        let mut o = exited(&with_policy(RestartPolicy::No, None), true, 1, 0);
        if let ObservedState::Exited { exit, .. } = &mut o.state {
            exit.before_ready = true;
        }
        assert_eq!(
            settle(&one(o), &at(NOW)).steps[0].exit,
            Some(Verdict::Stay { failed: true })
        );
    }

    #[test]
    fn steps_carry_the_spec_the_stop_signal_and_the_grace_period() {
        let mut old = spec("a", 0, "1");
        old.stop_signal = "SIGINT".into();
        old.stop_timeout_ms = 3_000;
        let new = spec("a", 0, "2");
        let p = plan_at(
            &desired(vec![new.clone()]),
            &one(running(&old)),
            PlanOptions::default(),
            &at(NOW),
        );
        let step = &p.steps[0];
        assert_eq!(step.action, Action::Restart);
        assert_eq!(step.spec.as_deref(), Some(&new));
        assert_eq!(
            step.stop,
            Some(StopHow {
                signal: Signal::SIGINT,
                grace: Duration::from_secs(3)
            }),
            "the running process stops as it was started"
        );
        let p = plan_at(
            &desired(vec![]),
            &one(running(&old)),
            PlanOptions::default(),
            &PlanAt {
                stop_timeout: Some(Duration::from_secs(1)),
                ..at(NOW)
            },
        );
        assert_eq!(p.steps[0].action, Action::Stop);
        assert_eq!(
            p.steps[0].stop.map(|s| s.grace),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_start_is_gated_on_its_dependencies_readiness() {
        let db = spec("db", 0, "1");
        let mut api = spec("api", 1, "1");
        api.depends_on = DependsOn(
            [(
                "db".to_string(),
                Dependency {
                    condition: Condition::Ready,
                    ..Default::default()
                },
            )]
            .into(),
        );
        let p = plan(
            &desired(vec![db.clone(), api.clone()]),
            &Observed::new(),
            PlanOptions::default(),
        );
        let wait = &p.steps[1].wait;
        assert_eq!(wait.len(), 1);
        assert_eq!(
            (wait[0].on.as_str(), wait[0].until),
            ("db", Condition::Ready)
        );
        // A dependency not selected is provided elsewhere: nothing to wait for.
        let alone = plan(
            &desired(vec![api]),
            &Observed::new(),
            PlanOptions::default(),
        );
        assert!(alone.steps[0].wait.is_empty());

        let facts = |status, alive| {
            move |_: &str| {
                Some(DepFacts {
                    status,
                    alive,
                    pid: Some(7),
                    last_exit: None,
                })
            }
        };
        let none = BTreeMap::new();
        assert_eq!(
            gate(wait, &facts(Status::Running, true), &none),
            Gate::Probe {
                dep: "db".into(),
                reason: "waiting for db (ready)".into()
            }
        );
        assert_eq!(gate(wait, &facts(Status::Ready, true), &none), Gate::Met);
        assert_eq!(
            gate(wait, &facts(Status::Exited, false), &none),
            Gate::Wait {
                reason: "waiting for db (ready)".into(),
                failed: Some("dependency db exited before it was ready".into())
            }
        );
        let timed_out: BTreeMap<String, (i32, String)> = [(
            "db".to_string(),
            (7, "dependency db not ready after 60s".into()),
        )]
        .into();
        assert_eq!(
            gate(wait, &facts(Status::Running, true), &timed_out),
            Gate::Wait {
                reason: "waiting for db (ready)".into(),
                failed: Some("dependency db not ready after 60s".into())
            }
        );
        assert_eq!(
            gate(wait, &|_: &str| None, &none),
            Gate::Wait {
                reason: "waiting for db (ready)".into(),
                failed: None
            }
        );
    }

    #[test]
    fn requested_restart_takes_dependents_that_asked_and_start_skips_running_ones() {
        let db = spec("db", 0, "1");
        let mut api = spec("api", 1, "1");
        api.depends_on = restarts_with("db");
        let mut web = spec("web", 1, "1");
        web.depends_on = DependsOn([("db".to_string(), Dependency::default())].into());
        let o: Observed = [&db, &api, &web]
            .iter()
            .map(|s| (s.name.clone(), running(s)))
            .collect();
        let d = desired(vec![db, api, web]);
        let names: BTreeSet<String> = ["db".to_string()].into();
        let p = plan_request(&d, &o, &names, "restart", &PlanAt::default());
        assert_eq!(
            actions(&p),
            vec![
                ("db".into(), Action::Restart, "restart requested".into()),
                (
                    "api".into(),
                    Action::Restart,
                    "dependency db restarted".into()
                ),
                ("web".into(), Action::Keep, "unchanged".into()),
            ]
        );
        let p = plan_request(&d, &o, &names, "start", &PlanAt::default());
        assert!(p.is_empty(), "start leaves a running service alone: {p:?}");
    }
}
