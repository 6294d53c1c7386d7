//! A world for [`Sim`](super::Sim) whose passes are the real plan and executor on fake seams,
//! with the engine's clock ([`Clock`]) read from tokio's paused clock: what the engine
//! records (a start, an exit, a back-off's end) and what the machine times are one time line.
//!
//! A pass here is `supervisor::pass`'s order of work, cut down to what the restart policy
//! needs: record the exits of processes that died (the facts), let the plan settle them
//! (`plan::settle`, applied by the engine), plan against the file (`plan::plan_at`) and apply
//! it; then say what runs and when the next back-off ends, as the shell does.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::Outcome;
use crate::config::RestartPolicy;
use crate::desired::Desired;
use crate::engine::{Engine, LaunchSettings, Reporter, exit_reason, observe_with};
use crate::plan::{PlanAt, PlanOptions};
use crate::process::{
    ExitKind, Liveness, MarkedGroup, ProcessIdentity, SpawnRequest, Spawned, StopOutcome,
    StopRequest,
};
use crate::seams::{Clock, Launcher, ProcessTable};
use crate::spec::{LauncherKind, ServiceSpec};
use crate::state::{ExitInfo, ServiceRecord, State, StateStore, Status};
use crate::supervisor::machine::PassDone;

/// The unix time (ms) at the start of the virtual clock.
pub const EPOCH_MS: u64 = 1_700_000_000_000;

/// Processes that live until [`World::kill`], a state directory, and the paused clock.
pub struct World {
    _root: tempfile::TempDir,
    store: StateStore,
    start: Instant,
    desired: Desired,
    state: RefCell<State>,
    pids: crate::seams::FakePids,
}

struct Quiet;

impl Reporter for Quiet {
    fn event(&mut self, _: &str, _: &str) {}
}

impl World {
    /// One service, `name`, with `restart: always`; the clock's start is now.
    pub fn always(name: &str) -> World {
        let root = tempfile::tempdir().expect("a temporary directory");
        let store = StateStore::open(root.path(), "p").expect("a state store");
        let spec = ServiceSpec {
            mirrord_config: serde_json::json!({}).into(),
            restart: RestartPolicy::Always,
            ..ServiceSpec::plain(
                name,
                LauncherKind::Local,
                vec!["sleep".into(), "100".into()],
                root.path(),
            )
        };
        World {
            _root: root,
            store,
            start: Instant::now(),
            desired: Desired {
                services: vec![spec.into()],
                ..Default::default()
            },
            state: RefCell::new(State::new("p")),
            pids: crate::seams::FakePids::from(100),
        }
    }

    /// The unix time (ms) of virtual time `at`.
    pub fn ms_at(&self, at: Duration) -> u64 {
        EPOCH_MS + at.as_millis() as u64
    }

    /// The record of `name` as the last pass left it.
    pub fn record(&self, name: &str) -> ServiceRecord {
        ServiceRecord::clone(&self.state.borrow().services[name])
    }

    /// The process of `name` dies (its exit is the loop's to hear: [`super::Sim::exited`]).
    pub fn kill(&self, name: &str) -> i32 {
        let pid = self.record(name).process.expect("a process").pid;
        self.pids.end(pid);
        pid
    }

    /// One pass, now.
    pub fn pass(&self) -> PassDone {
        let lock = self
            .store
            .lock(Duration::from_secs(1))
            .expect("the state lock");
        let now = self.now_ms();
        let at = PlanAt {
            now_ms: now,
            ..Default::default()
        };
        let mut state = self.state.borrow().clone();
        // The facts first: who died, when (not our children: the status is unknown).
        for rec in state.services.values_mut() {
            let up = matches!(
                rec.status,
                Status::Running | Status::Ready | Status::Starting
            );
            if up && self.liveness(rec.process.as_ref()) != Liveness::Alive {
                let exit = ExitInfo {
                    code: None,
                    signal: None,
                    at_ms: now,
                };
                rec.last_reason = Some(exit_reason(rec, &exit).to_string());
                rec.last_exit = Some(exit);
            }
        }
        let mut quiet = Quiet;
        let mut engine = Engine::new(
            &self.store,
            &lock,
            state,
            LaunchSettings::default(),
            &mut quiet,
        )
        .with_seams(self, self, self);
        let decided = crate::plan::settle(&observe_with(&engine.state, self), &at);
        engine.settle(&decided, &BTreeSet::new());
        let observed = observe_with(&engine.state, self);
        let plan = crate::plan::plan_at(&self.desired, &observed, PlanOptions::default(), &at);
        let report = engine.apply_plan(&plan).expect("the plan applies");
        assert!(report.ok(), "{report:?}");
        let due = [decided.requeue_at_ms, plan.requeue_at_ms]
            .into_iter()
            .flatten()
            .min();
        let running: Vec<(String, i32)> = engine
            .state
            .services
            .iter()
            .filter_map(|(n, r)| Some((n.clone(), r.process.as_ref()?.pid)))
            .filter(|(_, pid)| self.pids.is_alive(*pid))
            .collect();
        *self.state.borrow_mut() = engine.state;
        let running: Vec<(&str, i32)> = running.iter().map(|(n, p)| (n.as_str(), *p)).collect();
        let done = super::ok(&plan.summary()).running(&running);
        // As the shell turns the pass's `next_due_ms` into a delay, at the pass's end.
        match due {
            Some(t) => done.due_in(Duration::from_millis(t.saturating_sub(self.now_ms()))),
            None => done,
        }
    }
}

impl Clock for World {
    fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now() - self.start)
    }
}

impl Launcher for World {
    fn spawn(&self, req: &SpawnRequest) -> std::io::Result<(Spawned, ProcessIdentity)> {
        Ok(self.pids.spawn(&req.nonce, "sim"))
    }
}

impl ProcessTable for World {
    fn liveness(&self, id: Option<&ProcessIdentity>) -> Liveness {
        self.pids.liveness(id)
    }

    fn take_exit(&self, _: i32) -> Option<ExitKind> {
        None
    }

    fn stop(
        &self,
        requests: &[StopRequest],
        each: &mut dyn FnMut(&StopOutcome),
    ) -> Vec<StopOutcome> {
        let out: Vec<StopOutcome> = requests
            .iter()
            .map(|r| {
                self.pids.end(r.identity.pid);
                StopOutcome {
                    name: r.name.clone(),
                    killed: false,
                    survivors: Vec::new(),
                    refused: None,
                    escaped: Vec::new(),
                }
            })
            .collect();
        out.iter().for_each(&mut *each);
        out
    }

    fn stop_leftovers(&self, _: &str, _: &ProcessIdentity, _: Signal, _: Duration) {}

    fn find_marked(&self, _: &Path) -> Vec<MarkedGroup> {
        Vec::new()
    }
}
