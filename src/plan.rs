//! The pure reconcile decision: `plan(desired, observed) -> Plan`, one action per service, each
//! with its cause. No I/O, no clock, no processes; every command that changes anything builds
//! a plan with this function and hands it to the executor.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::desired::Desired;
use crate::spec::{ConfigHash, changed_fields};

/// What is known about a service that the state file records, after checking reality.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedService {
    pub hash: ConfigHash,
    /// The canonical spec it was started with (for field-level causes).
    pub spec: Value,
    pub state: ObservedState,
    pub level: usize,
    /// Not running, and its restart policy wants it back now (the supervisor decides).
    pub restart_due: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservedState {
    Running,
    /// The process (group) is gone: exited, killed, or its PID now belongs to someone else.
    NotRunning {
        detail: String,
    },
    /// A stop was begun and not finished (the tool died mid-stop); the process may still run.
    Stopping,
    /// Never started: it waits for a dependency to reach its condition. Every plan starts it
    /// again (level-triggered): the executor checks the dependencies, without waiting, and
    /// either spawns it or leaves it waiting.
    Waiting,
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
            Cause::DependenciesMet => f.write_str("its dependencies are met"),
            Cause::Unchanged => f.write_str("unchanged"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub service: String,
    pub action: Action,
    pub cause: Cause,
    pub level: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Stops first (reverse dependency order), then every desired service in start order.
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// Restart every selected service.
    pub force_recreate: bool,
    /// Start services whose process has exited although their config is unchanged. One-shot
    /// commands do; the supervisor leaves that to the restart policy.
    pub restart_exited: bool,
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
}

/// `restart NAME…` (`what = "restart"`) or `start NAME…` (`what = "start"`) over the recorded
/// services: the named ones (re)start — `start` only those not running — and, after a
/// restart, every dependent that asked for it with `depends_on.<x>.restart: true`.
pub fn plan_request(
    desired: &Desired,
    observed: &Observed,
    names: &BTreeSet<String>,
    what: &'static str,
) -> Plan {
    let mut restarted: BTreeSet<String> = BTreeSet::new();
    let mut steps = Vec::new();
    for spec in &desired.services {
        let running = observed.get(&spec.name).is_some_and(|o| {
            !matches!(
                o.state,
                ObservedState::NotRunning { .. } | ObservedState::Waiting
            )
        });
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
        if action != Action::Keep {
            restarted.insert(spec.name.clone());
        }
        steps.push(Step {
            service: spec.name.clone(),
            action,
            cause,
            level: spec.level,
        });
    }
    Plan { steps }
}

pub fn plan(desired: &Desired, observed: &Observed, opts: PlanOptions) -> Plan {
    let mut steps = Vec::new();
    let names: BTreeSet<&str> = desired.services.iter().map(|s| s.name.as_str()).collect();

    let mut stops: Vec<Step> = observed
        .iter()
        .filter(|(name, _)| !desired.partial && !names.contains(name.as_str()))
        .map(|(name, o)| Step {
            service: name.clone(),
            action: Action::Stop,
            cause: Cause::RemovedFromFile,
            level: o.level,
        })
        .collect();
    stops.sort_by(|a, b| b.level.cmp(&a.level).then(a.service.cmp(&b.service)));
    steps.extend(stops);

    // Services whose process is (re)started by this plan, for `depends_on.<x>.restart`.
    let mut restarted: BTreeSet<String> = BTreeSet::new();
    for spec in &desired.services {
        let (action, cause) = match observed.get(&spec.name) {
            None => (Action::Start, Cause::NewService),
            Some(o) => {
                let new_hash = spec.hash();
                match &o.state {
                    ObservedState::Stopping => (Action::Restart, Cause::InterruptedStop),
                    ObservedState::Waiting if o.hash != new_hash => (
                        Action::Start,
                        Cause::ConfigChanged {
                            fields: changed_fields(&o.spec, &spec.canonical()),
                        },
                    ),
                    ObservedState::Waiting => (Action::Start, Cause::DependenciesMet),
                    ObservedState::NotRunning { .. } if o.hash != new_hash => (
                        Action::Start,
                        Cause::ConfigChanged {
                            fields: changed_fields(&o.spec, &spec.canonical()),
                        },
                    ),
                    ObservedState::NotRunning { detail } if o.restart_due => (
                        Action::Start,
                        Cause::Crashed {
                            detail: detail.clone(),
                        },
                    ),
                    ObservedState::NotRunning { detail } => {
                        if opts.restart_exited || opts.force_recreate {
                            (
                                Action::Start,
                                Cause::NotRunning {
                                    detail: detail.clone(),
                                },
                            )
                        } else {
                            (Action::Keep, Cause::Unchanged)
                        }
                    }
                    ObservedState::Running if o.hash != new_hash => (
                        Action::Restart,
                        Cause::ConfigChanged {
                            fields: changed_fields(&o.spec, &spec.canonical()),
                        },
                    ),
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
                }
            }
        };
        if action == Action::Restart
            || (action == Action::Start && observed.contains_key(&spec.name))
        {
            restarted.insert(spec.name.clone());
        }
        steps.push(Step {
            service: spec.name.clone(),
            action,
            cause,
            level: spec.level,
        });
    }
    Plan { steps }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dependency, DependsOn, RunType};
    use crate::spec::{LauncherKind, ServiceSpec};
    use serde_json::json;

    fn spec(name: &str, level: usize, env: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            launcher: LauncherKind::Local,
            mirrord_config: json!({"feature": {"env": {"override": {"FOO": env}}}}),
            run_type: RunType::Exec,
            command: vec!["sleep".into(), "100".into()],
            working_dir: "/w".into(),
            level,
            depends_on: DependsOn::default(),
            restart: Default::default(),
            max_restarts: None,
            ready: None,
            stop_signal: "SIGTERM".into(),
            stop_timeout_ms: 10_000,
            logging: Default::default(),
            watch: None,
        }
    }

    fn running(s: &ServiceSpec) -> ObservedService {
        ObservedService {
            hash: s.hash(),
            spec: s.canonical(),
            state: ObservedState::Running,
            level: s.level,
            restart_due: false,
        }
    }

    fn desired(services: Vec<ServiceSpec>) -> Desired {
        Desired {
            services,
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
            services: vec![a.clone()],
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

    #[test]
    fn a_due_restart_starts_the_service_with_the_policy_as_cause() {
        let s = spec("a", 0, "1");
        let mut o = running(&s);
        o.state = ObservedState::NotRunning {
            detail: "exit code 3".into(),
        };
        let idle: Observed = [("a".to_string(), o.clone())].into();
        let p = plan(&desired(vec![s.clone()]), &idle, PlanOptions::default());
        assert_eq!(actions(&p)[0].1, Action::Keep, "no policy, no restart");
        o.restart_due = true;
        let due: Observed = [("a".to_string(), o)].into();
        let p = plan(&desired(vec![s]), &due, PlanOptions::default());
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
        let p = plan_request(&d, &o, &names, "restart");
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
        let p = plan_request(&d, &o, &names, "start");
        assert!(p.is_empty(), "start leaves a running service alone: {p:?}");
    }
}
