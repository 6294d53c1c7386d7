//! The executor on fake seams: a launcher and a process table that record what they are
//! asked (and read the state file at that moment), and a clock that stands still. No process
//! is started; `tests/engine.rs` and the other integration tests run the real ones.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;

use super::*;
use crate::config::{Dependency, DependsOn};
use crate::plan::{Observed, PlanOptions};
use crate::process::{ExitKind, MarkedGroup, SpawnRequest, Spawned, StopOutcome};
use crate::seams::{Clock, Launcher, ProcessTable};

const NOW: u64 = 1_700_000_000_000;

/// What the fake machine saw: each spawn (service, and its record on disk at that moment),
/// each stop request (and the record on disk then).
#[derive(Default)]
struct World {
    state_file: PathBuf,
    /// Services whose spawn fails (`ENOENT`).
    broken: BTreeSet<String>,
    spawns: RefCell<Vec<(String, String, Option<ServiceRecord>)>>,
    stops: RefCell<Vec<(StopRequest, Option<ServiceRecord>)>>,
    /// Each signal sent without a wait (`signal_now`): the service, and its record on disk.
    signals: RefCell<Vec<(String, Option<ServiceRecord>)>>,
    pids: crate::seams::FakePids,
    /// Processes that ignore their stop signal (SIGKILL after the grace period).
    stubborn: bool,
    /// Processes that end at once on their stop signal (`stop_quickly` stops them).
    quick: bool,
    now: Cell<u64>,
}

impl World {
    fn new(store: &StateStore) -> World {
        World {
            state_file: store.state_path(),
            pids: crate::seams::FakePids::from(1000),
            now: Cell::new(NOW),
            ..Default::default()
        }
    }

    /// The record of `service` in the state file as it is on disk now.
    fn on_disk(&self, service: &str) -> Option<ServiceRecord> {
        let state = crate::state::on_disk(&self.state_file)?;
        state.services.get(service).map(|r| ServiceRecord::clone(r))
    }

    fn spawned(&self) -> Vec<String> {
        self.spawns
            .borrow()
            .iter()
            .map(|(n, ..)| n.clone())
            .collect()
    }
}

impl Launcher for World {
    fn spawn(&self, req: &SpawnRequest) -> std::io::Result<(Spawned, ProcessIdentity)> {
        let name = req.env[ENV_SERVICE].clone();
        self.spawns
            .borrow_mut()
            .push((name.clone(), req.nonce.clone(), self.on_disk(&name)));
        if self.broken.contains(&name) {
            return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        }
        Ok(self.pids.spawn(&req.nonce, "fake"))
    }
}

impl ProcessTable for World {
    fn liveness(&self, id: Option<&ProcessIdentity>) -> Liveness {
        self.pids.liveness(id)
    }

    fn take_exit(&self, _pid: i32) -> Option<ExitKind> {
        None // not our children: the status is unknown, as for an adopted process
    }

    fn stop(
        &self,
        requests: &[StopRequest],
        each: &mut dyn FnMut(&StopOutcome),
    ) -> Vec<StopOutcome> {
        let mut out = Vec::new();
        for r in requests {
            self.stops
                .borrow_mut()
                .push((r.clone(), self.on_disk(&r.name)));
            if self.stubborn {
                // It ignored its signal: the grace period passed, then SIGKILL.
                self.now.set(self.now.get() + r.timeout.as_millis() as u64);
            }
            self.pids.end(r.identity.pid);
            let o = StopOutcome {
                name: r.name.clone(),
                killed: self.stubborn && r.signal != Signal::SIGKILL,
                survivors: Vec::new(),
                refused: None,
                escaped: Vec::new(),
            };
            each(&o);
            out.push(o);
        }
        out
    }

    fn signal_now(&self, requests: &mut [StopRequest]) {
        for r in requests.iter_mut() {
            self.signals
                .borrow_mut()
                .push((r.name.clone(), self.on_disk(&r.name)));
            r.signalled = true;
        }
    }

    fn stop_quickly(&self, requests: &mut [StopRequest], _within: Duration) -> bool {
        if !self.quick {
            return false;
        }
        for r in requests.iter_mut() {
            self.stops
                .borrow_mut()
                .push((r.clone(), self.on_disk(&r.name)));
            self.pids.end(r.identity.pid);
            r.signalled = true;
        }
        true
    }

    fn stop_leftovers(&self, _: &str, _: &ProcessIdentity, _: Signal, _: Duration) {}

    fn find_marked(&self, _: &Path) -> Vec<MarkedGroup> {
        Vec::new()
    }
}

impl Clock for World {
    fn now_ms(&self) -> u64 {
        self.now.get()
    }
}

#[derive(Default)]
struct Events(Vec<(String, String)>);

impl Reporter for Events {
    fn event(&mut self, service: &str, what: &str) {
        self.0.push((service.to_owned(), what.to_owned()));
    }
}

fn spec(dir: &Path, name: &str, level: usize, deps: &[&str]) -> ServiceSpec {
    ServiceSpec {
        mirrord_config: json!({"feature": {"env": {"override": {"FOO": "1"}}}}).into(),
        level,
        depends_on: DependsOn(
            deps.iter()
                .map(|d| (d.to_string(), Dependency::default()))
                .collect(),
        ),
        ..ServiceSpec::plain(
            name,
            LauncherKind::Local,
            vec!["sleep".into(), "100".into()],
            dir,
        )
    }
}

fn desired(services: Vec<ServiceSpec>) -> Desired {
    Desired {
        services: services.into_iter().map(Into::into).collect(),
        ..Default::default()
    }
}

struct Fixture {
    _root: tempfile::TempDir,
    store: StateStore,
    lock: StateLock,
}

/// An engine on an empty state of project `p`, its processes and files those of `world`.
fn engine_in<'a>(
    f: &'a Fixture,
    world: &'a World,
    settings: LaunchSettings,
    events: &'a mut Events,
) -> Engine<'a> {
    Engine::new(&f.store, &f.lock, State::new("p"), settings, events)
        .with_seams(world, world, world)
}

/// Starts `services` from nothing (a plan against no observed process, applied).
fn start_all(engine: &mut Engine, services: Vec<ServiceSpec>) {
    let first = crate::plan::plan(&desired(services), &Observed::new(), PlanOptions::default());
    engine.apply_plan(&first).unwrap();
}

fn fixture() -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let store = StateStore::open(root.path(), "p").unwrap();
    let lock = store.lock(Duration::from_secs(1)).unwrap();
    Fixture {
        _root: root,
        store,
        lock,
    }
}

#[test]
fn starts_go_level_by_level_and_each_is_recorded_before_its_spawn() {
    let f = fixture();
    let dir = f.store.dir.clone();
    let world = World::new(&f.store);
    let d = desired(vec![
        spec(&dir, "db", 0, &[]),
        spec(&dir, "api", 1, &["db"]),
        spec(&dir, "web", 1, &["db"]),
    ]);
    let plan = crate::plan::plan(&d, &Observed::new(), PlanOptions::default());
    let mut events = Events::default();
    let mut engine = engine_in(&f, &world, LaunchSettings::default(), &mut events);
    let report = engine.apply_plan(&plan).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(world.spawned(), ["db", "api", "web"]);
    for (name, nonce, on_disk) in world.spawns.borrow().iter() {
        // Intent first: the state file held the record, with this spawn's nonce and no
        // process yet, when the launcher was called.
        let rec = on_disk
            .as_ref()
            .unwrap_or_else(|| panic!("{name} not recorded"));
        assert_eq!(rec.spawn_nonce.as_deref(), Some(nonce.as_str()), "{name}");
        assert_eq!(rec.process, None, "{name}");
        assert_eq!(rec.status, Status::Starting, "{name}");
    }
    // The level before was spawned and recorded before its dependents' spawns.
    let spawns = world.spawns.borrow();
    let db_then = world.on_disk("db").unwrap();
    assert!(db_then.process.is_some());
    assert!(spawns[1].2.is_some() && spawns[0].0 == "db");
    for name in ["db", "api", "web"] {
        let rec = &engine.state.services[name];
        assert_eq!(rec.status, Status::Running, "{name}");
        assert_eq!(rec.started_at_ms, Some(NOW), "{name}: the clock seam");
    }
    drop(engine);
    assert!(
        events
            .0
            .iter()
            .any(|(n, e)| n == "db" && e == "started (pid 1000): new service"),
        "{:?}",
        events.0
    );
}

#[test]
fn a_failed_spawn_leaves_the_state_consistent_and_its_dependents_unstarted() {
    let f = fixture();
    let dir = f.store.dir.clone();
    let mut world = World::new(&f.store);
    world.broken.insert("web".into());
    let d = desired(vec![
        spec(&dir, "api", 0, &[]),
        spec(&dir, "web", 0, &[]),
        spec(&dir, "worker", 1, &["web"]),
    ]);
    let plan = crate::plan::plan(&d, &Observed::new(), PlanOptions::default());
    let mut events = Events::default();
    let mut engine = engine_in(&f, &world, LaunchSettings::default(), &mut events);
    let report = engine.apply_plan(&plan).unwrap();
    assert_eq!(world.spawned(), ["api", "web"], "worker is never spawned");
    let failed: BTreeMap<_, _> = report.failed.iter().cloned().collect();
    assert!(failed["web"].starts_with("cannot run `"), "{failed:?}");
    assert_eq!(failed["worker"], "dependency web did not start");
    let web = &engine.state.services["web"];
    assert_eq!(web.status, Status::Failed);
    assert_eq!(web.process, None);
    assert_eq!(web.spawn_nonce, None, "nothing left to adopt by a nonce");
    assert_eq!(web.last_reason.as_deref(), Some(failed["web"].as_str()));
    assert_eq!(engine.state.services["api"].status, Status::Running);
    // What is on disk is what the engine holds.
    assert_eq!(world.on_disk("web").as_ref(), Some(&**web));
    assert_eq!(
        world.on_disk("api").as_ref(),
        Some(&*engine.state.services["api"])
    );
}

#[test]
fn a_stop_uses_the_plans_signal_and_grace_and_records_the_sigkill_it_took() {
    let f = fixture();
    let dir = f.store.dir.clone();
    let mut world = World::new(&f.store);
    world.stubborn = true;
    let mut old = spec(&dir, "api", 0, &[]);
    old.stop_signal = "SIGINT".into();
    old.stop_timeout_ms = 3_000;
    let mut events = Events::default();
    let mut engine = engine_in(&f, &world, LaunchSettings::default(), &mut events);
    start_all(&mut engine, vec![old.clone()]);
    let old_pid = engine.state.services["api"].process.as_ref().unwrap().pid;

    // A change: the running process stops as it was started (SIGINT, 3 s), then the new one
    // starts.
    let mut new = spec(&dir, "api", 0, &[]);
    new.mirrord_config = json!({"feature": {"env": {"override": {"FOO": "2"}}}}).into();
    let observed = observe_with(&engine.state, &world);
    assert_eq!(observed["api"].state, ObservedState::Running);
    let plan = crate::plan::plan(&desired(vec![new]), &observed, PlanOptions::default());
    assert_eq!(plan.steps[0].action, Action::Restart);
    let report = engine.apply_plan(&plan).unwrap();
    assert!(report.ok(), "{report:?}");
    let stops = world.stops.borrow();
    let (request, on_disk) = stops
        .iter()
        .find(|(r, _)| r.identity.pid == old_pid)
        .expect("the old process was stopped");
    assert_eq!(request.signal, Signal::SIGINT);
    assert_eq!(request.timeout, Duration::from_secs(3));
    assert_eq!(
        on_disk.as_ref().map(|r| r.status),
        Some(Status::Stopping),
        "the stop is recorded before the signal"
    );
    assert_eq!(world.now.get(), NOW + 3_000, "the grace period passed");
    let rec = &engine.state.services["api"];
    assert_eq!(rec.status, Status::Running);
    assert_ne!(rec.process.as_ref().unwrap().pid, old_pid);
    assert_eq!(
        rec.last_exit.as_ref().and_then(|e| e.signal.as_deref()),
        Some("SIGKILL"),
        "it died of SIGKILL, not of its stop signal"
    );
    drop(engine);
    assert!(
        events.0.iter().any(|(n, e)| n == "api"
            && e == "stopped (killed after the grace period): config changed: env.override.FOO"),
        "{:?}",
        events.0
    );
}

#[test]
fn an_exit_reason_is_built_from_its_parts_not_cut_from_text() {
    let plain = ExitReason {
        before_ready: false,
        how: "exit code 3".into(),
        cause: None,
    };
    assert_eq!(plain.to_string(), "exited (exit code 3)");
    assert_eq!(
        plain.right_after_start(),
        "exited right after start (exit code 3)"
    );
    let with_cause = ExitReason {
        cause: Some("execve failed".into()),
        ..plain
    };
    assert_eq!(
        with_cause.right_after_start(),
        "exited right after start (exit code 3): execve failed"
    );
    let session = ExitReason {
        before_ready: true,
        how: "exit code 1".into(),
        cause: Some("no cluster".into()),
    };
    assert_eq!(
        session.to_string(),
        "mirrord exited before Ready! (exit code 1): no cluster"
    );
    assert_eq!(session.right_after_start(), session.to_string());
}

#[test]
fn a_crash_backs_off_and_the_engine_restarts_it_when_the_plan_says_it_is_due() {
    let f = fixture();
    let dir = f.store.dir.clone();
    let world = World::new(&f.store);
    let mut s = spec(&dir, "api", 0, &[]);
    s.restart = crate::config::RestartPolicy::Always;
    let d = desired(vec![s]);
    let mut events = Events::default();
    let mut engine = engine_in(&f, &world, LaunchSettings::default(), &mut events);
    let at = |now_ms| crate::plan::PlanAt {
        now_ms,
        ..Default::default()
    };
    engine
        .apply_plan(&crate::plan::plan_at(
            &d,
            &Observed::new(),
            PlanOptions::default(),
            &at(NOW),
        ))
        .unwrap();

    // It crashes 2 s later; the pass records the fact (its exit and reason)…
    world.now.set(NOW + 2_000);
    let pid = engine.state.services["api"].process.as_ref().unwrap().pid;
    world.pids.end(pid);
    let rec = engine.state.services.get_mut("api").unwrap();
    let exit = ExitInfo {
        code: Some(3),
        signal: None,
        at_ms: NOW + 2_000,
    };
    rec.last_reason = Some(exit_reason(rec, &exit).to_string());
    rec.last_exit = Some(exit);
    // …and the plan decides: back off 1 s, look again then.
    let observed = observe_with(&engine.state, &world);
    let decided = crate::plan::settle(&observed, &at(NOW + 2_000));
    assert_eq!(decided.requeue_at_ms, Some(NOW + 3_000));
    engine.settle(&decided, &BTreeSet::new());
    let rec = &engine.state.services["api"];
    assert_eq!(rec.status, Status::Backoff);
    assert_eq!(rec.backoff_until_ms, Some(NOW + 3_000));
    assert_eq!(rec.crash_streak, 1);

    // Not before its end…
    let observed = observe_with(&engine.state, &world);
    let early = crate::plan::plan_at(&d, &observed, PlanOptions::default(), &at(NOW + 2_999));
    assert!(early.is_empty(), "{early:?}");
    assert_eq!(early.requeue_at_ms, Some(NOW + 3_000));
    // …at its end: restarted by the policy, the streak kept.
    world.now.set(NOW + 3_000);
    let due = crate::plan::plan_at(&d, &observed, PlanOptions::default(), &at(NOW + 3_000));
    engine.apply_plan(&due).unwrap();
    assert_eq!(world.spawned(), ["api", "api"]);
    let rec = &engine.state.services["api"];
    assert_eq!(rec.status, Status::Running);
    assert_eq!(rec.crash_streak, 1, "a policy restart continues the streak");
    assert_eq!(rec.policy_restarts, 1);
    assert_eq!(rec.started_at_ms, Some(NOW + 3_000));
    drop(engine);
    let said: Vec<&str> = events
        .0
        .iter()
        .filter(|(n, _)| n == "api")
        .map(|(_, e)| e.as_str())
        .collect();
    assert_eq!(
        said,
        [
            "started (pid 1000): new service",
            "exited (exit code 3); restarting in 1s (restart 1 in a row)",
            "started (pid 1001): restart policy (exit code 3)",
        ]
    );
}

/// A finished stop recorded for the next save (`record_finished_stops`: a start follows in the
/// same pass) is on disk with that save, and its stop lock is let go by it; a pass that ends
/// without a save lets the lock go too.
#[test]
fn a_finished_stop_left_to_the_next_save_goes_with_it_and_its_stop_lock_is_let_go() {
    let f = fixture();
    let dir = f.store.dir.clone();
    let world = World::new(&f.store);
    let mut events = Events::default();
    let api = spec(&dir, "api", 0, &[]);
    let mut engine = engine_in(&f, &world, LaunchSettings::default(), &mut events);
    start_all(&mut engine, vec![api.clone()]);
    let identity = engine.state.services["api"].process.clone().unwrap();
    let done = signalled_by_the_loop(&mut engine, &identity);
    let mut report = ApplyReport::default();
    engine.record_finished_stops(&done, &mut report);
    assert_eq!(engine.state.services["api"].status, Status::Exited);
    assert_eq!(
        world.on_disk("api").map(|r| r.status),
        Some(Status::Stopping),
        "not saved yet"
    );
    assert!(crate::stop_owner::ours(&f.store, "api"), "let go unsaved");
    engine.save().unwrap();
    assert_eq!(world.on_disk("api").map(|r| r.status), Some(Status::Exited));
    assert!(
        !crate::stop_owner::ours(&f.store, "api"),
        "kept after the save"
    );
    // Recorded, and the pass ends without a save (it failed): the lock is let go all the same.
    let done = signalled_by_the_loop(&mut engine, &identity);
    engine.record_finished_stops(&done, &mut report);
    assert!(crate::stop_owner::ours(&f.store, "api"));
    drop(engine);
    assert!(
        !crate::stop_owner::ours(&f.store, "api"),
        "kept by an engine gone"
    );
}

/// The loop signalled `api` (process `identity`): recorded `stopping` and saved, its stop lock
/// held by this process. Returns the stop with its outcome (it ended on its signal).
fn signalled_by_the_loop(
    engine: &mut Engine<'_>,
    identity: &ProcessIdentity,
) -> Vec<(PendingStop, StopOutcome)> {
    let rec = engine.state.services.get_mut("api").unwrap();
    rec.status = Status::Stopping;
    rec.process = Some(identity.clone());
    engine.save().unwrap();
    assert!(crate::stop_owner::take(engine.store, "api"));
    let pending = PendingStop {
        name: "api".into(),
        why: "config changed".into(),
        remove: false,
        level: 0,
        request: StopRequest {
            name: "api".into(),
            identity: identity.clone(),
            signal: Signal::SIGTERM,
            timeout: Duration::from_secs(1),
            signalled: false,
        },
    };
    let outcome = StopOutcome {
        name: "api".into(),
        killed: false,
        survivors: Vec::new(),
        refused: None,
        escaped: Vec::new(),
    };
    vec![(pending, outcome)]
}

/// The plan that restarts `api` with another configuration (`env.override.N`), as the
/// watcher's pass makes it.
fn restart_plan(state: &State, world: &World, api: &ServiceSpec) -> Plan {
    let mut new = api.clone();
    new.mirrord_config = json!({"feature": {"env": {"override": {"N": "2"}}}}).into();
    let restart = crate::plan::plan(
        &desired(vec![new]),
        &observe_with(state, world),
        PlanOptions::default(),
    );
    assert_eq!(restart.steps[0].action, Action::Restart);
    restart
}

/// A supervised pass's settings: the loop watches its stops, waits and sessions.
fn supervised() -> LaunchSettings {
    LaunchSettings {
        defer_stops: true,
        defer_waits: true,
        defer_sessions: true,
        ..Default::default()
    }
}

/// The record the state on disk held for the last spawn's service at that spawn: its intent
/// (a spawn nonce, no process yet).
fn intent_at_last_spawn(world: &World) -> ServiceRecord {
    let spawns = world.spawns.borrow();
    let (_, _, at_spawn) = spawns.last().expect("a spawn");
    let at_spawn = at_spawn.clone().expect("recorded before its spawn");
    assert!(at_spawn.spawn_nonce.is_some() && at_spawn.process.is_none());
    at_spawn
}

/// The loop's Finish pass of a restart: the stop it watched is recorded, the restart's own
/// stop finds nothing left to signal and saves nothing, the start's intent save carries the
/// stop, then the spawned process is saved: two writes, the intent on disk before the spawn.
#[test]
fn the_finish_pass_of_a_restart_saves_the_stop_with_the_intent() {
    let f = fixture();
    let dir = f.store.dir.clone();
    let world = World::new(&f.store);
    let mut events = Events::default();
    let api = spec(&dir, "api", 0, &[]);
    let settings = LaunchSettings {
        defer_stops: true,
        ..Default::default()
    };
    let mut engine = engine_in(&f, &world, settings, &mut events);
    start_all(&mut engine, vec![api.clone()]);
    let identity = engine.state.services["api"].process.clone().unwrap();
    // The watcher pass planned the restart; the loop stopped the old process.
    let restart = restart_plan(&engine.state, &world, &api);
    let done = signalled_by_the_loop(&mut engine, &identity);
    world.pids.end(identity.pid);
    let mut report = ApplyReport::default();
    let writes = crate::state::writes_on_this_thread();
    engine.record_finished_stops(&done, &mut report);
    let applied = engine.apply_plan(&restart).unwrap();
    assert!(applied.ok() && applied.deferred.is_empty(), "{applied:?}");
    assert_eq!(
        crate::state::writes_on_this_thread() - writes,
        2,
        "the intent (with the stop), then the spawned process"
    );
    intent_at_last_spawn(&world);
    assert!(
        !crate::stop_owner::ours(&f.store, "api"),
        "kept after the save"
    );
    let rec = &engine.state.services["api"];
    assert_eq!(rec.status, Status::Running);
    assert_ne!(rec.process.as_ref().unwrap().pid, identity.pid);
}

/// The loop's final shutdown (`signal_first`) signals the first level to stop before the
/// intent that records it `stopping` is saved — the save then runs while its processes end —
/// and leaves the levels after it to the loop (signalled once the first has ended); the
/// stops of any other pass are signalled after their intent, by the loop.
#[test]
fn the_loops_shutdown_signals_its_first_level_before_saving_the_intent() {
    for signal_first in [true, false] {
        let f = fixture();
        let dir = f.store.dir.clone();
        let world = World::new(&f.store);
        let mut events = Events::default();
        // More groups a level than a pass stops by itself (`QUICK_STOP_GROUPS`).
        let n = QUICK_STOP_GROUPS + 2;
        let deep: Vec<String> = (0..n).map(|i| format!("web{i:02}")).collect();
        let shallow: Vec<String> = (0..n).map(|i| format!("db{i:02}")).collect();
        let mut specs: Vec<ServiceSpec> = shallow.iter().map(|s| spec(&dir, s, 0, &[])).collect();
        specs.extend(deep.iter().map(|s| spec(&dir, s, 1, &["db00"])));
        let settings = LaunchSettings {
            signal_first,
            ..supervised()
        };
        let mut engine = engine_in(&f, &world, settings, &mut events);
        start_all(&mut engine, specs);
        engine.save().unwrap();
        let names: Vec<(String, String)> = engine
            .state
            .services
            .keys()
            .map(|n| (n.clone(), "down requested".to_owned()))
            .collect();
        let all: BTreeSet<String> = names.iter().map(|(n, _)| n.clone()).collect();
        let mut report = ApplyReport::default();
        engine.stop_services(&names, &all, &mut report).unwrap();
        let signals = world.signals.borrow();
        let deferred: BTreeMap<&str, bool> = report
            .deferred
            .iter()
            .map(|p| (p.name.as_str(), p.request.signalled))
            .collect();
        assert_eq!(deferred.len(), 2 * n, "every stop is the loop's to watch");
        if signal_first {
            let signalled: Vec<&String> = signals.iter().map(|(s, _)| s).collect();
            assert_eq!(
                signalled,
                deep.iter().collect::<Vec<_>>(),
                "the deepest level"
            );
            for (service, on_disk) in signals.iter() {
                let on_disk = on_disk.as_ref().expect("recorded");
                assert_eq!(
                    on_disk.status,
                    Status::Running,
                    "{service}: before its intent"
                );
            }
        } else {
            assert!(signals.is_empty(), "{signals:?}");
        }
        for s in &deep {
            assert_eq!(deferred[s.as_str()], signal_first, "{s}");
        }
        for s in &shallow {
            assert!(!deferred[s.as_str()], "{s}: waits for the level before it");
        }
        for s in deep.iter().chain(&shallow) {
            assert_eq!(world.on_disk(s).unwrap().status, Status::Stopping, "{s}");
        }
    }
}

/// A supervised pass's restart whose old process ends at once (`stop_quickly`): the stop's
/// intent is saved before its signal, and how it ended goes with the start's intent, in one
/// write before the spawn. Two writes, not three.
#[test]
fn a_quick_restart_saves_the_stop_with_the_intent() {
    let f = fixture();
    let dir = f.store.dir.clone();
    let mut world = World::new(&f.store);
    world.quick = true;
    let mut events = Events::default();
    let api = spec(&dir, "api", 0, &[]);
    let mut engine = engine_in(&f, &world, supervised(), &mut events);
    start_all(&mut engine, vec![api.clone()]);
    engine.save().unwrap();
    let identity = engine.state.services["api"].process.clone().unwrap();
    let restart = restart_plan(&engine.state, &world, &api);
    let writes = crate::state::writes_on_this_thread();
    let applied = engine.apply_plan(&restart).unwrap();
    assert!(applied.ok() && applied.deferred.is_empty(), "{applied:?}");
    assert_eq!(
        crate::state::writes_on_this_thread() - writes,
        2,
        "the stop's intent, then its outcome with the start's intent"
    );
    let stops = world.stops.borrow();
    let (_, at_stop) = stops.last().unwrap();
    let at_stop = at_stop.as_ref().expect("recorded before its signal");
    assert_eq!(at_stop.status, Status::Stopping);
    let at_spawn = intent_at_last_spawn(&world);
    assert_eq!(at_spawn.restarts, 1, "the old process's run is counted");
    let rec = &engine.state.services["api"];
    assert_ne!(rec.process.as_ref().unwrap().pid, identity.pid);
}

/// A supervised pass (nothing waits inside it) saves a level's start once before its spawns,
/// with the spawn nonces; the spawned processes ride on the pass's own final save.
#[test]
fn a_supervised_start_saves_its_intent_and_leaves_the_processes_to_the_final_save() {
    let f = fixture();
    let dir = f.store.dir.clone();
    let world = World::new(&f.store);
    let mut events = Events::default();
    let mut engine = engine_in(&f, &world, supervised(), &mut events);
    let loaded = engine.state.clone();
    let plan = crate::plan::plan(
        &desired(vec![spec(&dir, "api", 0, &[]), spec(&dir, "db", 0, &[])]),
        &Observed::new(),
        PlanOptions::default(),
    );
    let writes = crate::state::writes_on_this_thread();
    let applied = engine.apply_plan(&plan).unwrap();
    assert!(applied.ok(), "{applied:?}");
    assert_eq!(
        crate::state::writes_on_this_thread() - writes,
        1,
        "the intent only"
    );
    let on_disk = f.store.load(&f.lock).unwrap();
    for name in ["api", "db"] {
        let rec = &on_disk.services[name];
        assert!(
            rec.spawn_nonce.is_some() && rec.process.is_none(),
            "{rec:?}"
        );
    }
    engine.save_if_changed(&loaded).unwrap();
    assert_eq!(crate::state::writes_on_this_thread() - writes, 2);
    let on_disk = f.store.load(&f.lock).unwrap();
    for name in ["api", "db"] {
        let rec = &on_disk.services[name];
        assert_eq!(rec.status, Status::Running);
        assert_eq!(rec.process, engine.state.services[name].process);
    }
}

/// A level looks up each program and working directory once: what its first launch found
/// holds for the level's other launches; the next level looks again.
#[test]
fn a_level_looks_up_a_program_and_a_directory_once() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().to_owned();
    let mut level = Lookups::default();
    assert!(level.is_dir(&cwd));
    assert!(level.program_found("sh", &cwd));
    assert!(!level.program_found("./no-such-program", &cwd));
    std::fs::write(cwd.join("no-such-program"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        cwd.join("no-such-program"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    drop(dir);
    assert!(level.is_dir(&cwd), "looked up again within the level");
    assert!(!level.program_found("./no-such-program", &cwd));
    let mut next = Lookups::default();
    assert!(!next.is_dir(&cwd), "the next level looks again");
}
