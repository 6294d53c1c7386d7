//! The loop's state machine ([`Machine`]) on tokio's paused clock, for tests: a driver that
//! keeps the timers the machine arms ([`Effect::Arm`]) as the shell does (one per kind,
//! re-arming replaces), sleeps until the next one (the paused clock jumps there) and delivers
//! it, and records every effect with the virtual time it came out. Everything else the shell
//! would carry out is left to the test, which plays the world: it ends a pass
//! ([`Event::PassDone`]) or a stop ([`Event::StopDone`]), reports a probe, a session, a save,
//! Ctrl-C, a request, an exit — each at the virtual time it chooses.
//!
//! So a test states a rule of the loop with its times: the restart pass comes out at exactly
//! +1 s, the answer at the `--wait-timeout`, the kill at the second Ctrl-C. The tests (module
//! `rules`) are named as the rule they check; `machine.rs` keeps the explicit-time unit tests.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::machine::{ClientId, Effect, Event, Machine, PassDone, ProbeOutcome, Timer};
use super::pass::{ApplyOptions, ProbeOrder, StopJob, Work};
use crate::engine::PendingStop;
use crate::process::{ProcessIdentity, StopOutcome, StopRequest};

/// How far waiting for an effect may move the clock before the test gives up.
const HORIZON: Duration = Duration::from_secs(3600);

/// A [`Machine`] on the paused clock, with its timers and a log of what it did when.
pub struct Sim {
    machine: Machine,
    start: Instant,
    /// The timers armed, as the shell keeps them: one per kind, re-arming replaces.
    timers: BTreeMap<Timer, Instant>,
    /// Every effect, with the virtual time (since the start) it came out.
    log: Vec<(Duration, Effect)>,
}

impl Sim {
    /// A foreground loop (`up`), or a detached one (`up -d`); time 0 is now.
    pub fn new(foreground: bool) -> Sim {
        Sim {
            machine: Machine::new(foreground),
            start: Instant::now(),
            timers: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    /// The virtual time since the start.
    pub fn now(&self) -> Duration {
        Instant::now() - self.start
    }

    /// The instant `at` after the start.
    pub fn instant(&self, at: Duration) -> Instant {
        self.start + at
    }

    /// Hands `event` to the machine now and carries out its timers.
    pub fn send(&mut self, event: Event) {
        let now = Instant::now();
        for effect in self.machine.handle(event, now) {
            match &effect {
                Effect::Arm { timer, at } => {
                    self.timers.insert(*timer, *at);
                }
                Effect::Disarm(timer) => {
                    self.timers.remove(timer);
                }
                Effect::Exit(_) => self.timers.clear(),
                _ => {}
            }
            self.log.push((now - self.start, effect));
        }
    }

    /// The timers armed now (what would wake an idle loop).
    pub fn armed(&self) -> Vec<Timer> {
        self.timers.keys().copied().collect()
    }

    /// The earliest timer armed.
    fn next_timer(&self) -> Option<(Timer, Instant)> {
        self.timers
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(t, at)| (*t, *at))
    }

    /// Sleeps until `timer` is due (the paused clock jumps there) and delivers it.
    async fn fire(&mut self, timer: Timer, due: Instant) {
        tokio::time::sleep_until(due).await;
        self.timers.remove(&timer);
        self.send(Event::Timer(timer));
    }

    /// Lets the clock run to `at` (since the start), each timer due on the way firing at its
    /// time.
    pub async fn run_to(&mut self, at: Duration) {
        let until = self.start + at;
        assert!(until >= Instant::now(), "time runs forward: {at:?}");
        while let Some((timer, due)) = self.next_timer().filter(|(_, due)| *due <= until) {
            self.fire(timer, due).await;
        }
        tokio::time::sleep_until(until).await;
    }

    /// Lets the clock run for `d`.
    pub async fn run_for(&mut self, d: Duration) {
        self.run_to(self.now() + d).await;
    }

    /// Lets the timers fire, in order, until an effect that `matches` comes out (or came out
    /// by the last event); returns its time. Panics when no timer is left to fire.
    pub async fn run_until(&mut self, what: &str, matches: impl Fn(&Effect) -> bool) -> Duration {
        let from = self.log.len();
        loop {
            if let Some((t, _)) = self.log[from..].iter().find(|(_, e)| matches(e)) {
                return *t;
            }
            let Some((timer, due)) = self.next_timer() else {
                panic!(
                    "no {what} by {:?}: no timer is armed, nothing more happens; {:#?}",
                    self.now(),
                    self.log
                );
            };
            assert!(
                due - self.start <= HORIZON,
                "no {what} within {HORIZON:?}; {:#?}",
                self.log
            );
            self.fire(timer, due).await;
        }
    }

    /// Whether the loop has ended.
    pub fn ended(&self) -> bool {
        self.machine.ended()
    }

    // The world's side: what the shell would hand the machine.

    pub fn request(&mut self, client: Option<ClientId>, work: Work) {
        self.send(Event::Request { client, work });
    }

    /// The pass in flight ends with `done`.
    pub fn pass_done(&mut self, done: PassDone) {
        assert!(self.machine.busy(), "no pass in flight; {:#?}", self.log);
        self.send(Event::PassDone(done));
    }

    /// A save the editor closed (or renamed over the file).
    pub fn save(&mut self) {
        self.send(Event::FileWritten);
    }

    /// A write to the file that is not known to be complete.
    pub fn save_partly(&mut self) {
        self.send(Event::FileChanged);
    }

    pub fn ctrl_c(&mut self) {
        self.send(Event::Interrupt);
    }

    pub fn exited(&mut self, name: &str, pid: i32) {
        self.send(Event::ServiceExited {
            name: name.into(),
            pid,
        });
    }

    // What the loop did, and when.

    /// Every effect with the time it came out.
    pub fn effects(&self) -> &[(Duration, Effect)] {
        &self.log
    }

    /// The times of the effects that `matches`.
    pub fn when(&self, matches: impl Fn(&Effect) -> bool) -> Vec<Duration> {
        self.log
            .iter()
            .filter(|(_, e)| matches(e))
            .map(|(t, _)| *t)
            .collect()
    }

    /// Every pass begun: when, and its work.
    pub fn passes(&self) -> Vec<(Duration, &Work)> {
        self.log
            .iter()
            .filter_map(|(t, e)| match e {
                Effect::RunPass { work, .. } => Some((*t, work)),
                _ => None,
            })
            .collect()
    }

    /// The times of the passes begun at or after `from`.
    pub fn passes_since(&self, from: Duration) -> Vec<Duration> {
        self.passes()
            .into_iter()
            .map(|(t, _)| t)
            .filter(|t| *t >= from)
            .collect()
    }

    /// The pass begun last.
    pub fn last_pass(&self) -> &Effect {
        self.log
            .iter()
            .rev()
            .map(|(_, e)| e)
            .find(|e| matches!(e, Effect::RunPass { .. }))
            .expect("a pass")
    }

    /// Every answer: when, to whom, and what.
    pub fn answers(&self) -> Vec<(Duration, ClientId, bool, String)> {
        self.log
            .iter()
            .filter_map(|(t, e)| match e {
                Effect::Answer {
                    client,
                    ok,
                    message,
                } => Some((*t, *client, *ok, message.clone())),
                _ => None,
            })
            .collect()
    }

    /// The answers to `client`.
    pub fn answers_to(&self, client: ClientId) -> Vec<(Duration, bool, String)> {
        self.answers()
            .into_iter()
            .filter(|(_, c, ..)| *c == client)
            .map(|(t, _, ok, m)| (t, ok, m))
            .collect()
    }

    /// The id of the last stop handed to the loop ([`Effect::Stop`]).
    pub fn stop_id(&self) -> u64 {
        self.log
            .iter()
            .rev()
            .find_map(|(_, e)| match e {
                Effect::Stop { id, .. } => Some(*id),
                _ => None,
            })
            .expect("a stop in flight")
    }
}

pub fn is_pass(e: &Effect) -> bool {
    matches!(e, Effect::RunPass { .. })
}

pub fn is_answer(e: &Effect) -> bool {
    matches!(e, Effect::Answer { .. })
}

/// `up [SERVICES]` (all: empty).
pub fn up(services: &[&str]) -> Work {
    Work::Reconcile {
        explicit: Some(ApplyOptions {
            services: services.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
    }
}

/// `up --wait --wait-timeout LIMIT [SERVICES]`.
pub fn up_wait(services: &[&str], limit: Duration) -> Work {
    Work::Reconcile {
        explicit: Some(ApplyOptions {
            services: services.iter().map(|s| s.to_string()).collect(),
            wait: Some(limit),
            ..Default::default()
        }),
    }
}

pub fn stop(names: &[&str]) -> Work {
    Work::Stop {
        names: names.iter().map(|s| s.to_string()).collect(),
        timeout: None,
    }
}

pub fn restart(names: &[&str]) -> Work {
    Work::Restart {
        names: names.iter().map(|s| s.to_string()).collect(),
        timeout: None,
    }
}

/// A pass that went well, leaving nothing running (add what it left with [`Outcome`]).
pub fn ok(summary: &str) -> PassDone {
    PassDone {
        result: Ok(summary.into()),
        running: Vec::new(),
        next_due: None,
        unsettled: false,
        files_changed: false,
        abort: None,
        all_down: None,
        probes: Vec::new(),
        waiting: Default::default(),
        failed: Vec::new(),
        stops: None,
        sessions: Vec::new(),
        foreign: Vec::new(),
        left: Vec::new(),
    }
}

/// A pass that went wrong.
pub fn failed(why: &str) -> PassDone {
    PassDone {
        result: Err(why.into()),
        ..ok("")
    }
}

pub fn identity(pid: i32) -> ProcessIdentity {
    ProcessIdentity {
        pid,
        pgid: pid,
        start_time: 1,
        boot_id: "sim".into(),
        nonce: None,
    }
}

/// The readiness probe of `service`'s process `pid`, which gives up after `timeout`.
pub fn probe(service: &str, pid: i32, timeout: Duration) -> ProbeOrder {
    ProbeOrder {
        service: service.into(),
        identity: identity(pid),
        log: "/nonexistent".into(),
        offset: 0,
        owner_check: true,
        probe: crate::readiness::Probe::Started,
        timeout,
    }
}

/// What a stop of `names` ended with: each needed SIGKILL.
pub fn killed(names: &[&str]) -> Vec<StopOutcome> {
    names
        .iter()
        .map(|n| StopOutcome {
            name: (*n).into(),
            killed: true,
            survivors: Vec::new(),
            refused: None,
            escaped: Vec::new(),
        })
        .collect()
}

/// What a pass left behind, added to a [`PassDone`].
pub trait Outcome {
    /// These `(service, pid)` run.
    fn running(self, running: &[(&str, i32)]) -> Self;
    /// These wait for a dependency.
    fn waiting(self, names: &[&str]) -> Self;
    /// These processes need a readiness probe.
    fn probes(self, probes: Vec<ProbeOrder>) -> Self;
    /// The next back-off ends after `d`.
    fn due_in(self, d: Duration) -> Self;
    /// These failed to start, and why.
    fn failing(self, name: &str, why: &str) -> Self;
    /// These mirrord sessions `(service, pid)` were spawned and have not said `Ready!`.
    fn starting(self, sessions: &[(&str, i32)]) -> Self;
    /// The pass signalled `(service, pid, grace period)` with SIGTERM and left the stops to
    /// the loop; `restart`: they start again once stopped.
    fn signalled(self, stops: &[(&str, i32, Duration)], restart: bool) -> Self;
}

impl Outcome for PassDone {
    fn running(mut self, running: &[(&str, i32)]) -> Self {
        self.running = running.iter().map(|(n, p)| ((*n).into(), *p)).collect();
        self
    }

    fn waiting(mut self, names: &[&str]) -> Self {
        self.waiting = names.iter().map(|n| (*n).into()).collect();
        self
    }

    fn probes(mut self, probes: Vec<ProbeOrder>) -> Self {
        self.probes = probes;
        self
    }

    fn due_in(mut self, d: Duration) -> Self {
        self.next_due = Some(d);
        self
    }

    fn failing(mut self, name: &str, why: &str) -> Self {
        self.failed.push((name.into(), why.into()));
        self
    }

    fn starting(mut self, sessions: &[(&str, i32)]) -> Self {
        self.sessions = sessions
            .iter()
            .map(|(n, pid)| crate::engine::SessionOrder {
                name: (*n).into(),
                identity: identity(*pid),
                log: ("/nonexistent".into(), 0),
            })
            .collect();
        self
    }

    fn signalled(mut self, stops: &[(&str, i32, Duration)], restart: bool) -> Self {
        let message = match &self.result {
            Ok(m) | Err(m) => m.clone(),
        };
        let pending = |(name, pid, grace): &(&str, i32, Duration)| PendingStop {
            name: (*name).into(),
            why: "requested".into(),
            remove: false,
            level: 0,
            request: StopRequest {
                name: (*name).into(),
                identity: identity(*pid),
                signal: nix::sys::signal::Signal::SIGTERM,
                timeout: *grace,
                signalled: false,
            },
        };
        let resume = |(name, ..): &(&str, i32, Duration)| crate::plan::Step {
            service: (*name).into(),
            action: crate::plan::Action::Restart,
            cause: crate::plan::Cause::Requested { what: "restart" },
            level: 0,
            spec: None,
            stop: None,
            wait: Vec::new(),
            exit: None,
            new_streak: true,
            forget: false,
        };
        self.stops = Some(StopJob {
            stops: stops.iter().map(pending).collect(),
            resume: match restart {
                true => stops.iter().map(resume).collect(),
                false => Vec::new(),
            },
            message,
            ..Default::default()
        });
        self
    }
}

/// A readiness probe's result.
pub fn probed(service: &str, pid: i32, outcome: ProbeOutcome) -> Event {
    Event::Probed {
        service: service.into(),
        pid,
        outcome,
    }
}

mod rules;
mod world;
