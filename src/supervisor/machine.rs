//! The loop's rules as a pure state machine: [`Machine::handle`] takes one [`Event`] and the
//! time, and returns the [`Effect`]s to carry out. No I/O, no clock, no processes: the shell
//! in `supervisor/mod.rs` gathers the events (file watch, signals, pidfd exits, timers,
//! readiness probes, control requests) and carries the effects out (a reconcile pass on the
//! blocking thread, a probe on its own thread, a timer, an answer to a client).
//!
//! The rules (each one has a unit test below, and a test on tokio's paused clock that asserts
//! when each effect comes out: `supervisor/sim/rules.rs`):
//! * one pass at a time; what arrives during a pass is folded into the next one;
//! * file events are debounced on the trailing edge ([`DEBOUNCE`]); a complete write (the
//!   file closed after writing, or renamed over) is applied at once;
//! * a back-off ends with a timer for the earliest due restart;
//! * waiting is the loop's job: a pass never waits for readiness; it names the probes its
//!   waiting services need, each probe runs once per process, and its result wakes a pass;
//! * a request is answered when its pass is done and none of its services still waits for a
//!   dependency (or at once if it failed);
//! * `up --wait` is a wait of the loop too: once its pass is done and nothing it asked for
//!   waits for a dependency, the shell probes its services ([`Effect::AwaitReady`]); the
//!   request is answered after the pass that records them ready, or at once when one ends or
//!   times out, or when its `--wait-timeout` ([`Timer::Wait`]) runs out;
//! * a stop is a wait of the loop too: a pass signals and records `stopping`, and returns the
//!   stops ([`PassDone::stops`]); the shell watches each group until it is empty (SIGKILL
//!   after its grace period, [`Effect::Stop`]) and says so ([`Event::StopDone`]); the next
//!   pass records the stops and carries out what waited for them (a restart's start), and
//!   answers the request; meanwhile other requests are served and no pass plans what is
//!   being stopped;
//! * the first Ctrl-C stops everything gracefully (the pass in flight is interrupted at its
//!   next wait), a second one kills at once; `down` is answered by the final pass;
//! * foreground, SIGHUP is the terminal going away: stop everything; detached, it re-applies;
//! * a first pass that failed and left nothing to look after ends the supervisor;
//! * every service ended: the foreground supervisor ends, the detached one says so once;
//! * a work that needs a service another process is stopping waits for that stop
//!   ([`Effect::AwaitStops`]) while other requests are served, then runs again;
//! * a stop that ended disarms its grace timers: an idle loop has no timer armed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::pass::{OwnedStop, ProbeOrder, Probed, StopJob, Work};
use crate::engine::{PendingStop, SessionOrder, SessionOutcome};
use crate::process::StopOutcome;

/// Trailing-edge debounce of file events: editors write a file in several steps.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// How long after an `up --wait`'s deadline its timer fires: a probe that times out at the
/// deadline says why first.
pub const WAIT_SLACK: Duration = Duration::from_millis(250);

/// What the foreground says on the first Ctrl-C (or SIGHUP, SIGTERM).
pub const GRACEFULLY: &str = "Gracefully stopping… (press Ctrl-C again to force)";

/// A connection waiting for its answer (the shell keeps the connection itself).
pub type ClientId = u64;

/// The terminal of a foreground `up --wait`: no connection; a failed wait is printed.
pub const TERMINAL: ClientId = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    Debounce,
    Backoff,
    /// The `--wait-timeout` of this client's `up --wait`.
    Wait(ClientId),
    /// The grace period of level `.1` (0: the first signalled) of the stops of
    /// [`Effect::Stop`] `.0`: when due, [`Effect::KillStop`].
    Grace(u64, usize),
}

/// What a readiness probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    Ready,
    /// Not ready within its timeout.
    /// Not ready in time; the note says who answered its port instead, if anyone did.
    TimedOut(Duration, Option<String>),
    /// The process ended first (its exit arrives as [`Event::ServiceExited`]).
    Ended,
}

/// What a pass reports back, as far as the loop's rules need it.
#[derive(Debug, Clone)]
pub struct PassDone {
    /// The summary, or what went wrong.
    pub result: Result<String, String>,
    /// `(service, pid)` of every running service.
    pub running: Vec<(String, i32)>,
    /// The next back-off ends after this long.
    pub next_due: Option<Duration>,
    /// A service died during the pass, before a watch could be set on it.
    pub unsettled: bool,
    /// The files to watch changed: they may have changed before the watch began.
    pub files_changed: bool,
    /// `--abort-on-exit` and a service exited: the exit code.
    pub abort: Option<i32>,
    /// Every service has ended; the names of those that failed.
    pub all_down: Option<Vec<String>>,
    /// Probes that waiting services need.
    pub probes: Vec<ProbeOrder>,
    /// Services waiting for a dependency.
    pub waiting: BTreeSet<String>,
    /// Services that failed to start in this pass, and why.
    pub failed: Vec<(String, String)>,
    /// Stops the pass signalled and left to the loop.
    pub stops: Option<StopJob>,
    /// Sessions still `starting` (their `Ready!` is waited for by the loop).
    pub sessions: Vec<SessionOrder>,
    /// Services the work needs whose stop another live process owns: the pass changed
    /// nothing; the loop waits for those stops ([`Effect::AwaitStops`]) and runs it again.
    pub foreign: Vec<OwnedStop>,
    /// Stops another live process owns that the pass left alone: the loop passes again once
    /// they are over.
    pub left: Vec<OwnedStop>,
}

#[derive(Debug)]
pub enum Event {
    /// The stops of [`Effect::AwaitStops`] `id` are over; `held`: those still in flight when
    /// its limit passed.
    StopsReleased { id: u64, held: Vec<String> },
    /// The YAML (or a side file) changed.
    FileChanged,
    /// The YAML (or a side file) was written completely: closed after a write, or another
    /// file renamed over it. Applied at once (a partial in-place write is only `FileChanged`).
    FileWritten,
    /// SIGHUP.
    Hangup,
    /// SIGINT or SIGTERM.
    Interrupt,
    /// The process `pid` of a service ended (its pidfd).
    ServiceExited { name: String, pid: i32 },
    /// A front-end asks for work (the control socket, or the first `up`).
    Request {
        client: Option<ClientId>,
        work: Work,
    },
    /// The pass in flight is done.
    PassDone(PassDone),
    /// A timer armed with [`Effect::Arm`] fired.
    Timer(Timer),
    /// A probe started with [`Effect::Probe`] ended.
    Probed {
        service: String,
        pid: i32,
        outcome: ProbeOutcome,
    },
    /// What [`Effect::AwaitReady`] found: the processes now probed, the services ready
    /// already, and those that cannot become ready (ended, failed), with why.
    Awaiting {
        client: ClientId,
        probing: Vec<(String, i32)>,
        ready: Vec<String>,
        ended: Vec<(String, String)>,
    },
    /// A probe started for [`Effect::AwaitReady`] ended.
    WaitProbed {
        service: String,
        pid: i32,
        outcome: ProbeOutcome,
    },
    /// A session watch ([`Effect::WatchSession`]) ended.
    SessionWatched {
        service: String,
        pid: i32,
        outcome: SessionOutcome,
    },
    /// The stops of [`Effect::Stop`] `id` ended: every group is empty (or survivors named).
    StopDone { id: u64, outcomes: Vec<StopOutcome> },
    /// Level `level` of the stops of [`Effect::Stop`] `id` was signalled; the longest grace
    /// period among them is `grace` ([`Timer::Grace`]).
    StopSignalled {
        id: u64,
        level: usize,
        grace: Duration,
    },
}

#[derive(Debug)]
pub enum Effect {
    /// Run one reconcile pass (on the blocking thread); its end is [`Event::PassDone`].
    /// `clients` hear its events; `client` is the one that asked.
    RunPass {
        work: Work,
        client: Option<ClientId>,
        listeners: Vec<ClientId>,
        probed: Probed,
        /// Services whose stop is in flight: the pass leaves them alone.
        stopping: BTreeSet<String>,
    },
    /// Stop these groups, deepest level first, each level at once: its signal
    /// ([`Event::StopSignalled`]), SIGKILL on [`Effect::KillStop`] (its grace timer) or at once
    /// after [`Effect::KillNow`]; then [`Event::StopDone`].
    Stop { id: u64, stops: Vec<PendingStop> },
    /// The grace period of level `level` of the stops of [`Effect::Stop`] `id` is over:
    /// SIGKILL what is left of that level (its kill switch).
    KillStop { id: u64, level: usize },
    /// Watch starting sessions until each one's `Ready!`, end or `START_TIMEOUT`; an
    /// [`Event::SessionWatched`] for each.
    WatchSessions(Vec<SessionOrder>),
    /// Send [`Event::Timer`] at `at` (replacing the timer of that kind).
    Arm { timer: Timer, at: Instant },
    /// Forget that timer (nothing is left for it to do).
    Disarm(Timer),
    /// Wait (outside the state lock) until no other process owns the stop of these
    /// services, within `limit`; then [`Event::StopsReleased`].
    AwaitStops {
        id: u64,
        services: Vec<String>,
        limit: Duration,
    },
    /// Probe a service's readiness until it passes, the process ends, or the timeout.
    Probe(ProbeOrder),
    /// `up --wait`: probe these services (all: empty) until `deadline`; the answer is
    /// [`Event::Awaiting`], then an [`Event::WaitProbed`] per process probed.
    AwaitReady {
        client: ClientId,
        services: Vec<String>,
        deadline: Instant,
        /// The `--wait-timeout` (what the client is told it waits against).
        limit: Duration,
    },
    /// An event of a service for one client only (`db`, `ready` for its `up --wait`).
    Tell {
        client: ClientId,
        service: String,
        what: String,
    },
    /// The final answer to a client.
    Answer {
        client: ClientId,
        ok: bool,
        message: String,
    },
    /// Make the pass in flight give up its waits (a stop in progress escalates nothing).
    InterruptPass,
    /// Kill every stop in flight at once (a second Ctrl-C).
    KillNow,
    /// Say something as the supervisor (`every service has ended…`).
    Say(String),
    /// A line for the user at the terminal (foreground only).
    Notice(String),
    /// The loop ends with this exit code.
    Exit(u8),
}

/// A wait for stops another process owns ([`Effect::AwaitStops`]): the work that needed
/// them and who asked (`None`: stops a pass left alone, whose end wakes a pass), and the
/// stops.
type ForeignWait = (Option<Work>, Option<ClientId>, Vec<OwnedStop>);

/// An answered-later request: its pass is done, some of its services still wait.
#[derive(Debug)]
struct Held {
    client: ClientId,
    /// The services it asked for (empty: all).
    services: Vec<String>,
    result: Result<String, String>,
    /// `up --wait`.
    wait: Option<Wait>,
}

/// Where an `up --wait` is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wait {
    /// Not begun: its services may still wait for a dependency.
    Due { deadline: Instant, limit: Duration },
    /// Asked the shell ([`Effect::AwaitReady`]).
    Asked { limit: Duration },
    /// These processes are being probed.
    Probing {
        pending: BTreeSet<(String, i32)>,
        limit: Duration,
    },
    /// Every one passed; answered after a pass records it.
    Passed,
    /// A pass that records it has started.
    Recorded,
}

/// Stops in flight ([`Effect::Stop`]) and the request that caused them.
#[derive(Debug)]
struct Flight {
    client: Option<ClientId>,
    services: Option<Vec<String>>,
    wait: Option<Duration>,
    job: StopJob,
}

/// The loop's state. See the module documentation for the rules.
#[derive(Debug)]
pub struct Machine {
    foreground: bool,
    queue: VecDeque<(Work, Option<ClientId>)>,
    dirty: bool,
    debounce: Option<Instant>,
    /// When the file was last completely written (`FileWritten`).
    last_written: Option<Instant>,
    backoff: Option<Instant>,
    /// The pass in flight: the client that asked, and the services it named.
    in_flight: Option<(Option<ClientId>, Option<Vec<String>>)>,
    /// The pass in flight is an `up --wait`: its limit and when it began.
    in_flight_wait: Option<(Duration, Instant)>,
    first_pass: bool,
    /// The client of the first request (once it arrived), whose failure may end the loop.
    first_client: Option<Option<ClientId>>,
    /// Exits heard during a pass: that pass may have caused (or settled) them.
    exits_during_pass: Vec<(String, i32)>,
    /// Set once the loop is to end: the exit code.
    stopping: Option<u8>,
    /// The final stop pass has been started.
    final_pass: bool,
    announced_down: bool,
    held: Vec<Held>,
    /// Probes started, by `(service, pid)`: each process is probed once.
    probes: BTreeSet<(String, i32)>,
    /// What probes found, for the next pass.
    probed: Probed,
    ended: bool,
    /// The sessions still starting after the last pass.
    starting: BTreeSet<String>,
    /// Session watches started, by `(service, pid)`: each session is watched once.
    sessions: BTreeSet<(String, i32)>,
    /// Stops in flight, by id.
    flights: BTreeMap<u64, Flight>,
    next_flight: u64,
    /// Works that need a service another process is stopping, by their
    /// [`Effect::AwaitStops`]: run again once those stops are over.
    foreign: BTreeMap<u64, ForeignWait>,
    /// The work of the pass in flight.
    in_flight_work: Option<Work>,
}

impl Machine {
    /// A loop whose first event will be the first `up` (a [`Event::Request`]).
    pub fn new(foreground: bool) -> Machine {
        Machine {
            foreground,
            queue: VecDeque::new(),
            dirty: false,
            debounce: None,
            last_written: None,
            backoff: None,
            in_flight: None,
            in_flight_wait: None,
            first_pass: true,
            first_client: None,
            exits_during_pass: Vec::new(),
            stopping: None,
            final_pass: false,
            announced_down: false,
            held: Vec::new(),
            probes: BTreeSet::new(),
            probed: Probed::default(),
            ended: false,
            sessions: BTreeSet::new(),
            starting: BTreeSet::new(),
            flights: BTreeMap::new(),
            next_flight: 0,
            foreign: BTreeMap::new(),
            in_flight_work: None,
        }
    }

    /// The loop has ended ([`Effect::Exit`] was returned).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// A pass is in flight.
    pub fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Services whose stop is in flight.
    /// The loop is ending (`down`, a signal, a first pass that left nothing): it takes no more
    /// work, so it has no use for its file watches.
    pub fn is_ending(&self) -> bool {
        self.stopping.is_some()
    }

    /// Process `pid` of `name` is one the loop is stopping.
    fn stopped_by_a_flight(&self, name: &str, pid: i32) -> bool {
        self.flights.values().any(|f| {
            f.job
                .stops
                .iter()
                .any(|p| p.name == name && p.request.identity.pid == pid)
        })
    }

    pub fn stopping(&self) -> BTreeSet<String> {
        self.flights
            .values()
            .flat_map(|f| f.job.names().cloned())
            .collect()
    }

    /// Whether the debounce timer firing at `now` is the one armed last (not one a complete
    /// write or a later change made stale): its pass applies a change of the file.
    pub fn debounce_due(&self, now: Instant) -> bool {
        self.debounce.is_some_and(|at| at <= now)
    }

    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.ended {
            return fx;
        }
        match event {
            Event::FileChanged => {
                let at = now + DEBOUNCE;
                self.debounce = Some(at);
                fx.push(Effect::Arm {
                    timer: Timer::Debounce,
                    at,
                });
            }
            Event::FileWritten => {
                // At once, unless it follows another complete write by less than the
                // debounce: a burst of saves (a script, a checkout) is then coalesced on the
                // trailing edge, so it is applied at most twice — its first save and its last.
                if self
                    .last_written
                    .is_some_and(|t| now.saturating_duration_since(t) < DEBOUNCE)
                {
                    let at = now + DEBOUNCE;
                    self.debounce = Some(at);
                    fx.push(Effect::Arm {
                        timer: Timer::Debounce,
                        at,
                    });
                } else {
                    self.debounce = None;
                    self.dirty = true;
                }
                self.last_written = Some(now);
            }
            Event::Hangup if self.foreground => self.terminate(129, &mut fx),
            Event::Hangup => self.dirty = true,
            Event::Interrupt => self.terminate(130, &mut fx),
            Event::ServiceExited { name, pid } => {
                // The end of a process the loop is stopping: its flight's end is recorded by
                // the pass that finishes it (`Work::Finish`); a pass now would leave it alone.
                if self.stopped_by_a_flight(&name, pid) {
                    return fx;
                }
                if self.busy() {
                    self.exits_during_pass.push((name, pid));
                } else {
                    self.dirty = true;
                }
            }
            Event::Request { client, work } => self.request(client, work, &mut fx),
            Event::Timer(timer) => {
                let slot = match timer {
                    Timer::Debounce => &mut self.debounce,
                    Timer::Backoff => &mut self.backoff,
                    Timer::Wait(client) => {
                        self.wait_timed_out(client, &mut fx);
                        return fx;
                    }
                    // A stop's grace period is over: kill what is left of that level (a flight
                    // that has ended is not killed).
                    Timer::Grace(id, level) => {
                        if self.flights.contains_key(&id) {
                            fx.push(Effect::KillStop { id, level });
                        }
                        return fx;
                    }
                };
                // A timer re-armed since is not due yet.
                if slot.is_some_and(|at| at <= now) {
                    *slot = None;
                    self.dirty = true;
                }
            }
            Event::Probed {
                service,
                pid,
                outcome,
            } => {
                match outcome {
                    ProbeOutcome::Ready => self.probed.ready.push((service, pid)),
                    ProbeOutcome::TimedOut(after, note) => {
                        let why = crate::readiness::NotReady::new(
                            &service,
                            crate::readiness::NotReadyWhy::Timeout { after, note },
                        )
                        .as_dependency()
                        .to_string();
                        self.probed.not_ready.insert(service, (pid, why));
                    }
                    // The exit wakes a pass of its own.
                    ProbeOutcome::Ended => return fx,
                }
                self.dirty = true;
            }
            Event::PassDone(done) => self.pass_done(done, now, &mut fx),
            Event::StopsReleased { id, held } => {
                let Some((work, client, owned)) = self.foreign.remove(&id) else {
                    return fx;
                };
                match (work, client) {
                    // The stops are over: the work that needed them runs again.
                    (Some(work), client) if held.is_empty() => {
                        self.queue.push_front((work, client));
                    }
                    // Still in flight past its limit: said to the one who asked.
                    (Some(_), Some(client)) => {
                        let said: Vec<String> = owned
                            .iter()
                            .filter(|o| held.contains(&o.service))
                            .map(|o| {
                                format!("{} is still being stopped by {}", o.service, o.holder)
                            })
                            .collect();
                        fx.push(Effect::Answer {
                            client,
                            ok: false,
                            message: format!("{}; try again once it ends", said.join("; ")),
                        });
                    }
                    // A watcher's pass, or stops a pass left alone: a pass now reconciles
                    // what they held back (and meets them again if they still run).
                    _ => self.dirty = true,
                }
            }
            Event::StopDone { id, outcomes } => self.stop_done(id, outcomes, &mut fx),
            Event::StopSignalled { id, level, grace } => {
                if self.flights.contains_key(&id) {
                    fx.push(Effect::Arm {
                        timer: Timer::Grace(id, level),
                        at: now + grace,
                    });
                }
                return fx;
            }
            Event::SessionWatched {
                service,
                pid,
                outcome,
            } => {
                // An end wakes a pass of its own (the exit).
                if outcome == SessionOutcome::Ended {
                    return fx;
                }
                self.probed.sessions.push((service, pid, outcome));
                self.dirty = true;
            }
            Event::Awaiting {
                client,
                probing,
                ready,
                ended,
            } => {
                self.awaiting(client, probing, ready, ended, &mut fx);
                return fx;
            }
            Event::WaitProbed {
                service,
                pid,
                outcome,
            } => {
                if !self.wait_probed(&service, pid, outcome, &mut fx) {
                    return fx;
                }
            }
        }
        self.next(now, &mut fx);
        fx
    }

    fn terminate(&mut self, code: u8, fx: &mut Vec<Effect>) {
        if self.stopping.is_some() {
            fx.push(Effect::KillNow);
        } else {
            self.stopping = Some(code);
            fx.push(Effect::InterruptPass);
            if self.foreground {
                fx.push(Effect::Notice(GRACEFULLY.into()));
            }
            self.refuse_held(fx);
        }
    }

    /// The loop ends: requests still waiting for their services will not see them start.
    fn refuse_held(&mut self, fx: &mut Vec<Effect>) {
        // The terminal is told by the Ctrl-C notice itself.
        for h in self.held.drain(..).filter(|h| h.client != TERMINAL) {
            fx.push(Effect::Answer {
                client: h.client,
                ok: false,
                message: "the supervisor is shutting down".into(),
            });
        }
    }

    fn request(&mut self, client: Option<ClientId>, work: Work, fx: &mut Vec<Effect>) {
        if self.first_client.is_none() {
            self.first_client = Some(client);
        }
        if self.stopping.is_some() {
            if let Some(client) = client {
                fx.push(Effect::Answer {
                    client,
                    ok: false,
                    message: "the supervisor is shutting down".into(),
                });
            }
            return;
        }
        if matches!(work, Work::Shutdown { .. }) {
            // `down`: this client gets the final pass's answer, then the loop ends.
            self.stopping = Some(0);
            fx.push(Effect::InterruptPass);
            self.refuse_held(fx);
            for (_, waiting) in self.queue.drain(..) {
                if let Some(c) = waiting {
                    fx.push(Effect::Answer {
                        client: c,
                        ok: false,
                        message: "the supervisor is shutting down".into(),
                    });
                }
            }
        }
        self.queue.push_back((work, client));
    }

    /// The stops of flight `id` ended: the next pass records them and answers its request
    /// (the loop is ending: the final pass records them; the request is answered now).
    fn stop_done(&mut self, id: u64, outcomes: Vec<StopOutcome>, fx: &mut Vec<Effect>) {
        let Some(f) = self.flights.remove(&id) else {
            return;
        };
        // Its grace timers have nothing left to kill: an idle loop must not wake for them.
        let levels: BTreeSet<usize> = f.job.stops.iter().map(|p| p.level).collect();
        for level in 0..levels.len() {
            fx.push(Effect::Disarm(Timer::Grace(id, level)));
        }
        if self.stopping.is_some() {
            if let Some(client) = f.client {
                fx.push(Self::flight_answer(client, &f.job));
            }
            return;
        }
        let work = Work::Finish {
            job: f.job,
            outcomes,
            services: f.services,
            wait: f.wait,
        };
        self.queue.push_front((work, f.client));
    }

    /// The answer to a request whose stops the loop's end overtook: a stop is done (the final
    /// pass stops what is left), a restart is not.
    fn flight_answer(client: ClientId, job: &StopJob) -> Effect {
        let done = job.resume.is_empty();
        Effect::Answer {
            client,
            ok: done,
            message: if done {
                job.message.clone()
            } else {
                "the supervisor is shutting down".into()
            },
        }
    }

    fn pass_done(&mut self, mut done: PassDone, now: Instant, fx: &mut Vec<Effect>) {
        let Some((mut client, services)) = self.in_flight.take() else {
            return;
        };
        let work = self.in_flight_work.take();
        // It needs what another process is stopping: it changed nothing; wait for those stops
        // as a wait of the loop (requests are served meanwhile), then run it again.
        if !done.foreign.is_empty()
            && let Some(work) = work
        {
            self.in_flight_wait = None;
            self.next_flight += 1;
            let id = self.next_flight;
            let limit = done
                .foreign
                .iter()
                .map(|o| o.grace)
                .max()
                .unwrap_or_default()
                .saturating_add(FOREIGN_STOP_SLACK);
            fx.push(Effect::AwaitStops {
                id,
                services: done.foreign.iter().map(|o| o.service.clone()).collect(),
                limit,
            });
            self.foreign.insert(id, (Some(work), client, done.foreign));
            return;
        }
        // Stops of others the pass left alone (not awaited yet): their end wakes a pass.
        let awaited: BTreeSet<&String> = self
            .foreign
            .values()
            .flat_map(|(_, _, owned)| owned.iter().map(|o| &o.service))
            .collect();
        let left: Vec<OwnedStop> = done
            .left
            .iter()
            .filter(|o| !awaited.contains(&o.service))
            .cloned()
            .collect();
        if !left.is_empty() {
            self.next_flight += 1;
            let id = self.next_flight;
            fx.push(Effect::AwaitStops {
                id,
                services: left.iter().map(|o| o.service.clone()).collect(),
                limit: left
                    .iter()
                    .map(|o| o.grace)
                    .max()
                    .unwrap_or_default()
                    .saturating_add(FOREIGN_STOP_SLACK),
            });
            self.foreign.insert(id, (None, None, left));
        }
        // Stops left to the loop: the request is answered by the pass that records them.
        if let Some(job) = done.stops.take() {
            self.next_flight += 1;
            let id = self.next_flight;
            fx.push(Effect::Stop {
                id,
                stops: job.stops.clone(),
            });
            let wait = self.in_flight_wait.take().map(|(limit, _)| limit);
            self.flights.insert(
                id,
                Flight {
                    client: client.take(),
                    services: services.clone(),
                    wait,
                    job,
                },
            );
        }
        self.dirty |= done.files_changed || done.unsettled;
        prune_not_ready(&mut self.probed.not_ready, &done.running);
        self.probes.retain(|key| done.running.contains(key));
        self.sessions.retain(|key| done.running.contains(key));
        self.starting = done.sessions.iter().map(|o| o.name.clone()).collect();
        let new: Vec<SessionOrder> = done
            .sessions
            .iter()
            .filter(|o| self.sessions.insert((o.name.clone(), o.identity.pid)))
            .cloned()
            .collect();
        if !new.is_empty() {
            fx.push(Effect::WatchSessions(new));
        }
        self.backoff = done.next_due.map(|d| now + d);
        if let Some(at) = self.backoff {
            fx.push(Effect::Arm {
                timer: Timer::Backoff,
                at,
            });
        }
        // An exit the pass did not see (the PID is still the one it left running).
        self.dirty |= self
            .exits_during_pass
            .drain(..)
            .any(|e| done.running.contains(&e));
        for order in &done.probes {
            let key = (order.service.clone(), order.identity.pid);
            if self.probes.insert(key) {
                fx.push(Effect::Probe(order.clone()));
            }
        }
        // The answer: now, or once none of the request's services waits any more.
        match (client, services) {
            // A foreground `up --wait`: the terminal waits (a failed pass was printed).
            (None, Some(services))
                if self.foreground
                    && self.in_flight_wait.is_some()
                    && done.result.is_ok()
                    && done.stops.is_none() =>
            {
                self.hold(TERMINAL, services, Ok(String::new()), fx);
            }
            // An `up`: held while a service it asked for waits.
            (Some(c), Some(services)) => self.hold(c, services, done.result.clone(), fx),
            (Some(c), None) => fx.push(Effect::Answer {
                client: c,
                ok: done.result.is_ok(),
                message: match &done.result {
                    Ok(m) | Err(m) => m.clone(),
                },
            }),
            (None, _) => {}
        }
        for h in &mut self.held {
            // The terminal saw the pass's failures already.
            if h.client == TERMINAL {
                continue;
            }
            for (name, why) in &done.failed {
                if h.services.is_empty() || h.services.contains(name) {
                    let line = format!("{name} failed to start: {why}");
                    h.result = match std::mem::replace(&mut h.result, Ok(String::new())) {
                        Ok(_) => Err(line),
                        Err(e) if e.contains(&line) => Err(e),
                        Err(e) => Err(format!("{e}; {line}")),
                    };
                }
            }
        }
        let (answered, held): (Vec<Held>, Vec<Held>) =
            std::mem::take(&mut self.held).into_iter().partition(|h| {
                // A failure is answered at once, with those of its sessions still starting.
                (h.result.is_err()
                    && !done
                        .sessions
                        .iter()
                        .any(|o| h.services.is_empty() || h.services.contains(&o.name)))
                    || self.stopping.is_some()
                    || (!done
                        .waiting
                        .iter()
                        .any(|w| h.services.is_empty() || h.services.contains(w))
                        // A stop in flight (a restart the watcher began, a `stop`) of one of
                        // its services: answered once that is recorded and what follows it
                        // started, so that `up` returns on what runs.
                        && !self.flights.values().any(|f| {
                            f.job.stops.iter().any(|p| {
                                h.services.is_empty() || h.services.contains(&p.name)
                            })
                        })
                        && h.wait.as_ref().is_none_or(|w| *w == Wait::Recorded))
            });
        self.held = held;
        // `up --wait` whose services no longer wait for a dependency: probe them now.
        for h in &mut self.held {
            if let Some(Wait::Due { deadline, limit }) = h.wait
                && !done
                    .waiting
                    .iter()
                    .any(|w| h.services.is_empty() || h.services.contains(w))
            {
                h.wait = Some(Wait::Asked { limit });
                fx.push(Effect::AwaitReady {
                    client: h.client,
                    services: h.services.clone(),
                    deadline,
                    limit,
                });
            }
        }
        for h in answered {
            let (ok, message) = match h.result {
                Ok(m) => (true, m),
                Err(e) => (false, e),
            };
            fx.push(Effect::Answer {
                client: h.client,
                ok,
                message,
            });
        }
        // A first pass that failed and left nothing to look after ends the supervisor (its
        // client already has the error).
        // The first request may be held (its sessions start): decided when it is answered.
        let first_failed = match self.first_client.flatten() {
            _ if !self.first_pass => None,
            Some(c) if self.held.iter().any(|h| h.client == c) => None,
            Some(c) if self.flights.values().any(|f| f.client == Some(c)) => None,
            Some(c) => Some(
                fx.iter()
                    .any(|e| matches!(e, Effect::Answer { client, ok: false, .. } if *client == c)),
            ),
            None => Some(done.result.is_err()),
        };
        if first_failed.is_some() {
            self.first_pass = false;
        }
        if first_failed == Some(true)
            && done.running.is_empty()
            && done.next_due.is_none()
            && done.waiting.is_empty()
        {
            self.stopping = Some(1);
            self.final_pass = true;
        }
        if let (Some(code), None) = (done.abort, self.stopping) {
            self.stopping = Some(code.clamp(0, 255) as u8);
        }
        // Every service ended and no restart policy brings one back. In the foreground that
        // is the end (non-zero if any failed); a background supervisor stays, says so once.
        let settled = self.queue.is_empty() && !self.dirty && self.debounce.is_none();
        match (&done.all_down, self.stopping) {
            (Some(failed), None) if settled => {
                if !self.announced_down {
                    fx.push(Effect::Say(all_down_message(failed, self.foreground)));
                }
                self.announced_down = true;
                if self.foreground {
                    self.stopping = Some(u8::from(!failed.is_empty()));
                    self.final_pass = true;
                }
            }
            (None, _) => self.announced_down = false,
            _ => {}
        }
    }

    /// Holds `client`'s `up` until none of `services` waits (and, with `--wait`, until they
    /// are ready: its `--wait-timeout` bounds the whole wait, also while a service still waits
    /// for a dependency; a probe that times out at the deadline says why, who answered its
    /// port, so the timer is the backstop).
    fn hold(
        &mut self,
        client: ClientId,
        services: Vec<String>,
        result: Result<String, String>,
        fx: &mut Vec<Effect>,
    ) {
        let wait = self.in_flight_wait.take().map(|(limit, since)| Wait::Due {
            deadline: since + limit,
            limit,
        });
        if let Some(Wait::Due { deadline, .. }) = wait {
            fx.push(Effect::Arm {
                timer: Timer::Wait(client),
                at: deadline + WAIT_SLACK,
            });
        }
        self.held.push(Held {
            client,
            services,
            result,
            wait,
        });
    }

    /// Answers the held request of `client` now: `Err` with `failures` when there are any.
    fn answer_held(&mut self, client: ClientId, failures: Vec<String>, fx: &mut Vec<Effect>) {
        let Some(i) = self.held.iter().position(|h| h.client == client) else {
            return;
        };
        let h = self.held.remove(i);
        let (ok, message) = match (h.result, failures.is_empty()) {
            (Ok(m), true) => (true, m),
            (Err(e), true) => (false, e),
            (Ok(_), false) => (false, failures.join("; ")),
            (Err(e), false) => (false, format!("{e}; {}", failures.join("; "))),
        };
        fx.push(Effect::Answer {
            client,
            ok,
            message,
        });
    }

    /// `failed to start: …` of a service that did not become ready for `up --wait`.
    fn not_ready(service: &str, why: crate::readiness::NotReadyWhy) -> String {
        let why = crate::readiness::NotReady::new(service, why).as_service();
        format!("{service} failed to start: {why}")
    }

    /// The shell looked at the services of `client`'s `up --wait`.
    fn awaiting(
        &mut self,
        client: ClientId,
        probing: Vec<(String, i32)>,
        _ready: Vec<String>,
        ended: Vec<(String, String)>,
        fx: &mut Vec<Effect>,
    ) {
        let Some(h) = self.held.iter_mut().find(|h| h.client == client) else {
            return;
        };
        let Some(Wait::Asked { limit }) = h.wait else {
            return;
        };
        if !ended.is_empty() {
            let failures = ended
                .into_iter()
                .map(|(n, why)| format!("{n} failed to start: {why}"))
                .collect();
            self.answer_held(client, failures, fx);
            return;
        }
        if probing.is_empty() {
            // Every one is ready already: a pass records nothing new, answer at once.
            self.answer_held(client, Vec::new(), fx);
            return;
        }
        h.wait = Some(Wait::Probing {
            pending: probing.into_iter().collect(),
            limit,
        });
    }

    /// A probe of an `up --wait` ended; returns whether a pass may be due.
    fn wait_probed(
        &mut self,
        service: &str,
        pid: i32,
        outcome: ProbeOutcome,
        fx: &mut Vec<Effect>,
    ) -> bool {
        use crate::readiness::NotReadyWhy;
        let key = (service.to_owned(), pid);
        let mut failed = Vec::new();
        let mut passed = false;
        for h in &mut self.held {
            let Some(Wait::Probing { pending, limit }) = &mut h.wait else {
                continue;
            };
            if !pending.remove(&key) {
                continue;
            }
            match &outcome {
                ProbeOutcome::Ready => {
                    passed = true;
                    // A waiting client hears its own services (it no longer listens to
                    // passes: see `next`).
                    fx.push(Effect::Tell {
                        client: h.client,
                        service: service.to_owned(),
                        what: "ready".into(),
                    });
                    if pending.is_empty() {
                        h.wait = Some(Wait::Passed);
                    }
                }
                ProbeOutcome::TimedOut(_, note) => failed.push((
                    h.client,
                    Self::not_ready(
                        service,
                        NotReadyWhy::Timeout {
                            after: *limit,
                            note: note.clone(),
                        },
                    ),
                )),
                ProbeOutcome::Ended => {
                    failed.push((h.client, Self::not_ready(service, NotReadyWhy::Exited)))
                }
            }
        }
        for (client, why) in failed {
            self.answer_held(client, vec![why], fx);
        }
        if passed {
            // The next pass records it ready (and answers the waits it completes).
            if !self.probed.ready.contains(&key) {
                self.probed.ready.push(key);
            }
            self.dirty = true;
        }
        passed
    }

    /// `client`'s `--wait-timeout` ran out: those still probed are not ready.
    fn wait_timed_out(&mut self, client: ClientId, fx: &mut Vec<Effect>) {
        let Some(h) = self.held.iter().find(|h| h.client == client) else {
            return;
        };
        let failures = match &h.wait {
            Some(Wait::Probing { pending, limit }) => pending
                .iter()
                .map(|(n, _)| {
                    Self::not_ready(
                        n,
                        crate::readiness::NotReadyWhy::Timeout {
                            after: *limit,
                            note: None,
                        },
                    )
                })
                .collect(),
            Some(Wait::Asked { limit }) => {
                vec![format!(
                    "not ready after {}",
                    crate::output::duration(*limit)
                )]
            }
            // Sessions still waiting for their `Ready!`.
            Some(Wait::Due { limit, .. })
                if self
                    .starting
                    .iter()
                    .any(|n| h.services.is_empty() || h.services.contains(n)) =>
            {
                self.starting
                    .iter()
                    .filter(|n| h.services.is_empty() || h.services.contains(*n))
                    .map(|n| {
                        crate::readiness::NotReady::new(
                            n,
                            crate::readiness::NotReadyWhy::Timeout {
                                after: *limit,
                                note: None,
                            },
                        )
                        .to_string()
                    })
                    .collect()
            }
            // Still waiting for a dependency.
            Some(Wait::Due { limit, .. }) if h.services.is_empty() => vec![format!(
                "not ready after {} (services still wait for their dependencies)",
                crate::output::duration(*limit)
            )],
            Some(Wait::Due { limit, .. }) => h
                .services
                .iter()
                .map(|n| {
                    Self::not_ready(
                        n,
                        crate::readiness::NotReadyWhy::Timeout {
                            after: *limit,
                            note: None,
                        },
                    )
                })
                .collect(),
            _ => return,
        };
        self.answer_held(client, failures, fx);
    }

    /// Starts the next pass if none is in flight, or ends the loop.
    fn next(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.busy() {
            return;
        }
        let job = match self.stopping {
            Some(code) if self.final_pass => {
                self.refuse_held(fx);
                for f in std::mem::take(&mut self.flights).into_values() {
                    if let Some(client) = f.client {
                        fx.push(Self::flight_answer(client, &f.job));
                    }
                }
                self.ended = true;
                fx.push(Effect::Exit(code));
                return;
            }
            Some(_) => {
                self.final_pass = true;
                // What waited for another process's stop: the loop ends first.
                for (_, (_, client, _)) in std::mem::take(&mut self.foreign) {
                    if let Some(client) = client {
                        fx.push(Effect::Answer {
                            client,
                            ok: false,
                            message: "the supervisor is shutting down".into(),
                        });
                    }
                }
                // Ctrl-C, SIGTERM or --abort-on-exit: stop everything, keep the records.
                // Stops recorded by a pass of their own are recorded by this one now.
                let mut first = None;
                while let Some((work, client)) = self.queue.pop_front() {
                    match (work, client) {
                        (Work::Finish { job, .. }, Some(c)) => {
                            fx.push(Self::flight_answer(c, &job))
                        }
                        (Work::Finish { .. }, None) => {}
                        other => {
                            first = Some(other);
                            break;
                        }
                    }
                }
                Some(first.unwrap_or((
                    Work::Shutdown {
                        timeout: None,
                        forget: false,
                        only: None,
                        sweep: false,
                    },
                    None,
                )))
            }
            None => self.queue.pop_front().or_else(|| {
                std::mem::take(&mut self.dirty)
                    .then_some((Work::Reconcile { explicit: None }, None))
            }),
        };
        let Some((work, client)) = job else {
            return;
        };
        let services = match &work {
            Work::Reconcile { explicit: Some(e) } => {
                self.dirty = false; // this pass reads everything afresh anyway
                Some(e.services.clone())
            }
            Work::Finish { services, .. } => services.clone(),
            _ => None,
        };
        self.in_flight_wait = match &work {
            Work::Reconcile { explicit: Some(e) } => e.wait.map(|w| (w, now)),
            Work::Finish { wait, .. } => wait.map(|w| (w, now)),
            _ => None,
        };
        // The final pass stops everything, also what the loop is stopping.
        let stopping = match &work {
            Work::Shutdown { .. } => BTreeSet::new(),
            _ => self.stopping(),
        };
        for h in &mut self.held {
            if h.wait == Some(Wait::Passed) {
                h.wait = Some(Wait::Recorded);
            }
        }
        let probed = std::mem::take(&mut self.probed.ready);
        let probed = Probed {
            ready: probed,
            not_ready: self.probed.not_ready.clone(),
            sessions: std::mem::take(&mut self.probed.sessions),
        };
        self.in_flight = Some((client, services));
        self.in_flight_work = Some(work.clone());
        fx.push(Effect::RunPass {
            work,
            client,
            // A client whose `up --wait` has begun hears only its wait (as when the wait was
            // part of its pass), not what later passes do.
            listeners: self
                .held
                .iter()
                .filter(|h| matches!(h.wait, None | Some(Wait::Due { .. })))
                .map(|h| h.client)
                .collect(),
            probed,
            stopping,
        });
    }
}

/// How long past a foreign stop's grace period the loop waits for it before answering that
/// it is still in flight.
pub const FOREIGN_STOP_SLACK: Duration = Duration::from_secs(10);

/// What the supervisor says when every service has ended.
pub fn all_down_message(failed: &[String], foreground: bool) -> String {
    let what = if failed.is_empty() {
        "every service has ended".to_owned()
    } else {
        format!("every service has ended; failed: {}", failed.join(", "))
    };
    if foreground {
        format!("{what}; nothing is left to run, exiting")
    } else {
        format!("{what}; waiting for a change to the file (or `mirrord-up up -d`)")
    }
}

/// Keeps `not_ready` to processes that still run.
pub fn prune_not_ready(not_ready: &mut BTreeMap<String, (i32, String)>, running: &[(String, i32)]) {
    not_ready.retain(|name, (pid, _)| running.iter().any(|(n, p)| n == name && p == pid));
}

#[cfg(test)]
mod tests {
    //! The loop's rules, one test each, with explicit times: no process, no file, no clock.

    use super::*;
    use crate::process::ProcessIdentity;
    use crate::supervisor::pass::ApplyOptions;

    const MS: Duration = Duration::from_millis(1);

    fn t0() -> Instant {
        Instant::now()
    }

    fn up(services: &[&str]) -> Work {
        Work::Reconcile {
            explicit: Some(ApplyOptions {
                services: services.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
        }
    }

    fn done(result: Result<&str, &str>) -> PassDone {
        PassDone {
            result: result.map(str::to_owned).map_err(str::to_owned),
            running: vec![("db".into(), 10)],
            next_due: None,
            unsettled: false,
            files_changed: false,
            abort: None,
            all_down: None,
            probes: Vec::new(),
            waiting: BTreeSet::new(),
            failed: Vec::new(),
            stops: None,
            sessions: Vec::new(),
            foreign: Vec::new(),
            left: Vec::new(),
        }
    }

    fn probe_of(service: &str, pid: i32) -> ProbeOrder {
        ProbeOrder {
            service: service.into(),
            identity: ProcessIdentity {
                pid,
                pgid: pid,
                start_time: 1,
                boot_id: "b".into(),
                nonce: None,
            },
            log: "/nonexistent".into(),
            offset: 0,
            owner_check: true,
            probe: crate::readiness::Probe::Started,
            timeout: Duration::from_secs(60),
        }
    }

    fn passes(fx: &[Effect]) -> Vec<&Work> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::RunPass { work, .. } => Some(work),
                _ => None,
            })
            .collect()
    }

    fn answers(fx: &[Effect]) -> Vec<(ClientId, bool, String)> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Answer {
                    client,
                    ok,
                    message,
                } => Some((*client, *ok, message.clone())),
                _ => None,
            })
            .collect()
    }

    fn is_watcher_pass(w: &Work) -> bool {
        matches!(w, Work::Reconcile { explicit: None })
    }

    fn is_shutdown(w: &Work) -> bool {
        matches!(w, Work::Shutdown { forget: false, .. })
    }

    /// A detached machine whose first pass (client 1) is done: idle.
    fn idle(now: Instant) -> Machine {
        let mut m = Machine::new(false);
        let fx = m.handle(
            Event::Request {
                client: Some(1),
                work: up(&[]),
            },
            now,
        );
        assert_eq!(passes(&fx).len(), 1);
        let fx = m.handle(Event::PassDone(done(Ok("1 started"))), now);
        assert_eq!(answers(&fx), [(1, true, "1 started".into())]);
        assert!(!m.busy());
        m
    }

    #[test]
    fn file_events_are_debounced_on_the_trailing_edge() {
        let now = t0();
        let mut m = idle(now);
        let fx = m.handle(Event::FileChanged, now);
        assert!(passes(&fx).is_empty(), "no pass before the burst ends");
        let fx = m.handle(Event::FileChanged, now + 30 * MS);
        assert!(
            matches!(fx[..], [Effect::Arm { timer: Timer::Debounce, at }] if at == now + 30 * MS + DEBOUNCE)
        );
        // The first timer fires: the burst is not over.
        let fx = m.handle(Event::Timer(Timer::Debounce), now + DEBOUNCE);
        assert!(passes(&fx).is_empty(), "{fx:?}");
        let fx = m.handle(Event::Timer(Timer::Debounce), now + 30 * MS + DEBOUNCE);
        let p = passes(&fx);
        assert!(p.len() == 1 && is_watcher_pass(p[0]), "{fx:?}");
    }

    #[test]
    fn a_complete_write_is_applied_at_once_and_disarms_the_debounce() {
        let now = t0();
        let mut m = idle(now);
        let fx = m.handle(Event::FileChanged, now);
        assert!(passes(&fx).is_empty(), "a partial write waits: {fx:?}");
        let fx = m.handle(Event::FileWritten, now + MS);
        let p = passes(&fx);
        assert!(p.len() == 1 && is_watcher_pass(p[0]), "{fx:?}");
        // The debounce armed by the partial write is void now.
        let fx = m.handle(Event::Timer(Timer::Debounce), now + DEBOUNCE);
        assert!(passes(&fx).is_empty(), "{fx:?}");
    }

    #[test]
    fn a_burst_of_complete_writes_is_applied_at_once_and_then_once_with_the_last() {
        let now = t0();
        let mut m = idle(now);
        let fx = m.handle(Event::FileWritten, now);
        let p = passes(&fx);
        assert!(
            p.len() == 1 && is_watcher_pass(p[0]),
            "the first save at once: {fx:?}"
        );
        let fx = m.handle(Event::PassDone(done(Ok("applied"))), now + MS);
        assert!(passes(&fx).is_empty(), "{fx:?}");
        // The rest of the burst, each save a millisecond after the last: debounced.
        for i in 2..6 {
            let fx = m.handle(Event::FileWritten, now + i * MS);
            assert!(passes(&fx).is_empty(), "save {i} waits: {fx:?}");
        }
        let fx = m.handle(Event::Timer(Timer::Debounce), now + 2 * MS + DEBOUNCE);
        assert!(passes(&fx).is_empty(), "the burst is not over: {fx:?}");
        let fx = m.handle(Event::Timer(Timer::Debounce), now + 5 * MS + DEBOUNCE);
        let p = passes(&fx);
        assert!(p.len() == 1 && is_watcher_pass(p[0]), "{fx:?}");
        // A save after a quiet debounce is applied at once again.
        let fx = m.handle(
            Event::PassDone(done(Ok("applied"))),
            now + 6 * MS + DEBOUNCE,
        );
        assert!(passes(&fx).is_empty(), "{fx:?}");
        let fx = m.handle(Event::FileWritten, now + 6 * MS + 3 * DEBOUNCE);
        assert_eq!(passes(&fx).len(), 1, "{fx:?}");
    }

    #[test]
    fn a_back_off_ends_with_a_timer_and_a_later_pass_without_one_disarms_it() {
        let now = t0();
        let mut m = idle(now);
        let fx = m.handle(
            Event::ServiceExited {
                name: "db".into(),
                pid: 10,
            },
            now,
        );
        assert_eq!(passes(&fx).len(), 1, "an exit wakes a pass at once");
        let mut d = done(Ok("nothing to do"));
        d.running.clear();
        d.next_due = Some(Duration::from_secs(1));
        let fx = m.handle(Event::PassDone(d), now + 5 * MS);
        assert!(
            fx.iter().any(|e| matches!(e, Effect::Arm { timer: Timer::Backoff, at } if *at == now + 5 * MS + Duration::from_secs(1))),
            "{fx:?}"
        );
        assert!(passes(&fx).is_empty());
        let fx = m.handle(
            Event::Timer(Timer::Backoff),
            now + 5 * MS + Duration::from_secs(1),
        );
        assert_eq!(passes(&fx).len(), 1, "the restart is due");
        // That pass restarted it: no back-off left; the old timer, if it fires, does nothing.
        let fx = m.handle(Event::PassDone(done(Ok("1 started"))), now + 1100 * MS);
        assert!(!fx.iter().any(|e| matches!(e, Effect::Arm { .. })));
        let fx = m.handle(
            Event::Timer(Timer::Backoff),
            now + 5 * Duration::from_secs(1),
        );
        assert!(passes(&fx).is_empty(), "{fx:?}");
    }

    #[test]
    fn a_first_ctrl_c_stops_gracefully_a_second_kills_at_once() {
        let now = t0();
        let mut m = Machine::new(true);
        m.handle(
            Event::Request {
                client: None,
                work: up(&[]),
            },
            now,
        );
        // Ctrl-C during the first pass: its waits are interrupted, the stop comes after it.
        let fx = m.handle(Event::Interrupt, now + MS);
        assert!(
            matches!(&fx[..], [Effect::InterruptPass, Effect::Notice(n)] if n == GRACEFULLY),
            "{fx:?}"
        );
        let fx = m.handle(Event::PassDone(done(Ok("1 started"))), now + 2 * MS);
        let p = passes(&fx);
        assert!(p.len() == 1 && is_shutdown(p[0]), "{fx:?}");
        // A second Ctrl-C during the graceful stop: kill now.
        let fx = m.handle(Event::Interrupt, now + 3 * MS);
        assert!(matches!(fx[..], [Effect::KillNow]), "{fx:?}");
        let fx = m.handle(Event::PassDone(done(Ok("1 stopped"))), now + 4 * MS);
        assert!(matches!(fx[..], [Effect::Exit(130)]), "{fx:?}");
        assert!(m.ended());
    }

    #[test]
    fn a_first_pass_that_fails_and_leaves_nothing_ends_the_supervisor() {
        let now = t0();
        let mut m = Machine::new(false);
        m.handle(
            Event::Request {
                client: Some(7),
                work: up(&[]),
            },
            now,
        );
        let mut d = done(Err("api failed to start: command `x` not found"));
        d.running.clear();
        let fx = m.handle(Event::PassDone(d), now);
        assert_eq!(
            answers(&fx),
            [(
                7,
                false,
                "api failed to start: command `x` not found".into()
            )]
        );
        assert!(passes(&fx).is_empty(), "nothing to stop: no shutdown pass");
        assert!(matches!(fx.last(), Some(Effect::Exit(1))), "{fx:?}");
    }

    #[test]
    fn a_first_pass_that_fails_but_leaves_a_waiting_service_keeps_the_supervisor() {
        let now = t0();
        let mut m = Machine::new(false);
        m.handle(
            Event::Request {
                client: Some(7),
                work: up(&[]),
            },
            now,
        );
        let mut d = done(Err("db failed to start: …"));
        d.running.clear();
        d.waiting.insert("api".into());
        let fx = m.handle(Event::PassDone(d), now);
        assert!(!m.ended(), "{fx:?}");
    }

    #[test]
    fn readiness_is_probed_once_per_process_and_a_timeout_reaches_the_next_pass() {
        let now = t0();
        let mut m = idle(now);
        m.handle(Event::Hangup, now);
        let mut d = done(Ok("nothing to do"));
        d.probes = vec![probe_of("db", 10)];
        d.waiting.insert("api".into());
        let fx = m.handle(Event::PassDone(d.clone()), now);
        assert!(
            matches!(&fx[..], [Effect::Probe(o)] if o.service == "db"),
            "{fx:?}"
        );
        // The next pass asks for the same probe: it runs already.
        m.handle(Event::Hangup, now);
        let fx = m.handle(Event::PassDone(d), now);
        assert!(fx.is_empty(), "{fx:?}");
        let fx = m.handle(
            Event::Probed {
                service: "db".into(),
                pid: 10,
                outcome: ProbeOutcome::TimedOut(Duration::from_secs(60), None),
            },
            now + Duration::from_secs(60),
        );
        match &fx[..] {
            [Effect::RunPass { probed, .. }] => assert_eq!(
                probed.not_ready.get("db"),
                Some(&(10, "dependency db not ready after 1m".to_owned()))
            ),
            _ => panic!("{fx:?}"),
        }
    }

    #[test]
    fn a_dependency_ready_late_wakes_a_pass_and_the_request_is_answered_once_nothing_waits() {
        let now = t0();
        let mut m = Machine::new(false);
        m.handle(
            Event::Request {
                client: Some(1),
                work: up(&[]),
            },
            now,
        );
        let mut d = done(Ok("2 started"));
        d.probes = vec![probe_of("db", 10)];
        d.waiting.insert("api".into());
        let fx = m.handle(Event::PassDone(d), now);
        assert!(answers(&fx).is_empty(), "api still waits for db: {fx:?}");
        // Meanwhile another request for another service is served and answered at once.
        let fx = m.handle(
            Event::Request {
                client: Some(2),
                work: up(&["web"]),
            },
            now + MS,
        );
        match &fx[..] {
            [Effect::RunPass { listeners, .. }] => assert_eq!(listeners, &[1]),
            _ => panic!("{fx:?}"),
        }
        let mut d = done(Ok("1 started"));
        d.waiting.insert("api".into());
        let fx = m.handle(Event::PassDone(d), now + 2 * MS);
        assert_eq!(answers(&fx), [(2, true, "1 started".into())]);
        // db passes its probe late: a pass records it, api starts, the first `up` is answered.
        let fx = m.handle(
            Event::Probed {
                service: "db".into(),
                pid: 10,
                outcome: ProbeOutcome::Ready,
            },
            now + Duration::from_secs(30),
        );
        match &fx[..] {
            [Effect::RunPass { probed, .. }] => assert_eq!(probed.ready, [("db".into(), 10)]),
            _ => panic!("{fx:?}"),
        }
        let fx = m.handle(
            Event::PassDone(done(Ok("1 started"))),
            now + Duration::from_secs(30),
        );
        assert_eq!(answers(&fx), [(1, true, "2 started".into())]);
    }

    #[test]
    fn a_held_request_gets_the_failure_of_its_waiting_service() {
        let now = t0();
        let mut m = Machine::new(false);
        m.handle(
            Event::Request {
                client: Some(1),
                work: up(&[]),
            },
            now,
        );
        let mut d = done(Ok("2 started"));
        d.waiting.insert("api".into());
        m.handle(Event::PassDone(d), now);
        m.handle(Event::Hangup, now);
        let mut d = done(Ok("nothing to do"));
        d.waiting.insert("api".into());
        d.failed = vec![("api".into(), "dependency db not ready after 1m".into())];
        let fx = m.handle(Event::PassDone(d), now);
        assert_eq!(
            answers(&fx),
            [(
                1,
                false,
                "api failed to start: dependency db not ready after 1m".into()
            )]
        );
    }

    #[test]
    fn a_request_arriving_mid_stop_waits_for_it_and_down_ends_the_loop() {
        let now = t0();
        let mut m = idle(now);
        let stop = Work::Stop {
            names: vec!["db".into()],
            timeout: None,
        };
        let fx = m.handle(
            Event::Request {
                client: Some(2),
                work: stop,
            },
            now,
        );
        assert_eq!(passes(&fx).len(), 1);
        // `up -d` while the stop runs: queued, served after it.
        let fx = m.handle(
            Event::Request {
                client: Some(3),
                work: up(&["web"]),
            },
            now + MS,
        );
        assert!(fx.is_empty(), "{fx:?}");
        // `down` too: it cancels what is queued and ends the loop with its own pass.
        let down = Work::Shutdown {
            timeout: None,
            forget: true,
            only: None,
            sweep: false,
        };
        let fx = m.handle(
            Event::Request {
                client: Some(4),
                work: down,
            },
            now + 2 * MS,
        );
        assert!(matches!(fx[0], Effect::InterruptPass), "{fx:?}");
        assert_eq!(
            answers(&fx),
            [(3, false, "the supervisor is shutting down".into())]
        );
        let fx = m.handle(Event::PassDone(done(Ok("1 stopped"))), now + 3 * MS);
        assert_eq!(answers(&fx), [(2, true, "1 stopped".into())]);
        let p = passes(&fx);
        assert!(
            matches!(p[..], [Work::Shutdown { forget: true, .. }]),
            "{fx:?}"
        );
        // Anything after `down` is refused.
        let fx = m.handle(
            Event::Request {
                client: Some(5),
                work: up(&[]),
            },
            now + 4 * MS,
        );
        assert_eq!(
            answers(&fx),
            [(5, false, "the supervisor is shutting down".into())]
        );
        let fx = m.handle(Event::PassDone(done(Ok("2 stopped"))), now + 5 * MS);
        assert_eq!(answers(&fx), [(4, true, "2 stopped".into())]);
        assert!(matches!(fx.last(), Some(Effect::Exit(0))), "{fx:?}");
    }

    /// A pass that signalled `db` and left its stop to the loop (`message`: its answer).
    fn done_stopping(message: &str) -> PassDone {
        let identity = probe_of("db", 10).identity;
        let mut d = done(Ok(message));
        d.running.clear();
        d.stops = Some(StopJob {
            stops: vec![PendingStop {
                name: "db".into(),
                why: "stop requested".into(),
                remove: false,
                level: 0,
                request: crate::process::StopRequest {
                    name: "db".into(),
                    identity,
                    signal: nix::sys::signal::Signal::SIGTERM,
                    timeout: Duration::from_secs(10),
                    signalled: false,
                },
            }],
            message: message.into(),
            ..Default::default()
        });
        d
    }

    /// `stop db` from `client` at `at`, and its pass, which signalled db and left the stop to
    /// the loop: the effects of that pass's end and the id of the stop the loop now watches.
    fn stop_db(m: &mut Machine, client: ClientId, at: Instant) -> (Vec<Effect>, u64) {
        m.handle(
            Event::Request {
                client: Some(client),
                work: Work::Stop {
                    names: vec!["db".into()],
                    timeout: None,
                },
            },
            at,
        );
        let fx = m.handle(Event::PassDone(done_stopping("1 stopped")), at + MS);
        let id = stop_of(&fx).expect("the stop is watched");
        (fx, id)
    }

    fn stop_of(fx: &[Effect]) -> Option<u64> {
        fx.iter().find_map(|e| match e {
            Effect::Stop { id, .. } => Some(*id),
            _ => None,
        })
    }

    fn stopping_of(fx: &[Effect]) -> Vec<BTreeSet<String>> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::RunPass { stopping, .. } => Some(stopping.clone()),
                _ => None,
            })
            .collect()
    }

    fn db_stopped() -> Vec<StopOutcome> {
        vec![StopOutcome {
            name: "db".into(),
            killed: true,
            survivors: vec![],
            refused: None,
            escaped: vec![],
        }]
    }

    #[test]
    fn a_stop_is_a_wait_of_the_loop_and_requests_are_served_meanwhile() {
        let now = t0();
        let mut m = idle(now);
        // The pass signalled db and returned: the shell watches the stop, nobody is answered.
        let (fx, id) = stop_db(&mut m, 2, now);
        assert!(answers(&fx).is_empty(), "{fx:?}");
        assert!(!m.busy());
        // Mid-stop (db ignores SIGTERM for 10 s): `up -d web` runs a pass at once, which
        // leaves db alone, and is answered by it.
        let fx = m.handle(
            Event::Request {
                client: Some(3),
                work: up(&["web"]),
            },
            now + 2 * MS,
        );
        assert_eq!(stopping_of(&fx), [BTreeSet::from(["db".to_owned()])]);
        let fx = m.handle(Event::PassDone(done(Ok("1 started"))), now + 3 * MS);
        assert_eq!(answers(&fx), [(3, true, "1 started".into())]);
        // So is a `stop` of another service.
        let fx = m.handle(
            Event::Request {
                client: Some(4),
                work: Work::Stop {
                    names: vec!["web".into()],
                    timeout: None,
                },
            },
            now + 4 * MS,
        );
        assert_eq!(passes(&fx).len(), 1);
        let fx = m.handle(Event::PassDone(done(Ok("1 stopped"))), now + 5 * MS);
        assert_eq!(answers(&fx), [(4, true, "1 stopped".into())]);
        // The grace period ran out (the shell killed db): the next pass records it and
        // answers the `stop`.
        let fx = m.handle(
            Event::StopDone {
                id,
                outcomes: db_stopped(),
            },
            now + Duration::from_secs(10),
        );
        let p = passes(&fx);
        assert!(
            matches!(p[..], [Work::Finish { outcomes, .. }] if outcomes[0].killed),
            "{fx:?}"
        );
        assert_eq!(stopping_of(&fx), [BTreeSet::new()]);
        assert!(answers(&fx).is_empty(), "{fx:?}");
        let fx = m.handle(
            Event::PassDone(done(Ok("1 stopped"))),
            now + Duration::from_secs(10) + MS,
        );
        assert_eq!(answers(&fx), [(2, true, "1 stopped".into())]);
        assert!(!m.busy());
    }

    /// The exit of a process the loop is stopping wakes no pass (the pass that finishes the
    /// stop records it); another process's exit, or another process of that service, does.
    #[test]
    fn the_exit_of_a_process_being_stopped_waits_for_its_stop_to_end() {
        let now = t0();
        let mut m = idle(now);
        let (_, id) = stop_db(&mut m, 2, now);
        let exit = |name: &str, pid| Event::ServiceExited {
            name: name.into(),
            pid,
        };
        let fx = m.handle(exit("db", 10), now + 2 * MS);
        assert!(passes(&fx).is_empty(), "{fx:?}");
        assert!(!m.busy());
        let fx = m.handle(
            Event::StopDone {
                id,
                outcomes: db_stopped(),
            },
            now + 3 * MS,
        );
        assert!(matches!(passes(&fx)[..], [Work::Finish { .. }]), "{fx:?}");
        let fx = m.handle(Event::PassDone(done(Ok("1 stopped"))), now + 4 * MS);
        assert_eq!(answers(&fx), [(2, true, "1 stopped".into())]);
        assert!(passes(&fx).is_empty(), "{fx:?}");
        // No flight: an exit is settled by a pass at once.
        let fx = m.handle(exit("db", 10), now + 5 * MS);
        assert_eq!(passes(&fx).len(), 1, "{fx:?}");
        m.handle(Event::PassDone(done(Ok("nothing to do"))), now + 6 * MS);
        // While db's stop is in flight: web's exit, and another pid of db, are passes.
        stop_db(&mut m, 3, now + 7 * MS);
        let fx = m.handle(exit("web", 11), now + 9 * MS);
        assert_eq!(passes(&fx).len(), 1, "{fx:?}");
        m.handle(Event::PassDone(done(Ok("nothing to do"))), now + 10 * MS);
        let fx = m.handle(exit("db", 12), now + 11 * MS);
        assert_eq!(passes(&fx).len(), 1, "{fx:?}");
    }

    /// An `up` that arrives while a restart begun by the watcher is stopping one of its
    /// services is answered once that restart is carried out, not before.
    #[test]
    fn an_up_during_a_restart_in_flight_is_answered_once_it_is_carried_out() {
        let now = t0();
        let mut m = idle(now);
        m.handle(Event::FileWritten, now);
        let fx = m.handle(Event::PassDone(done_stopping("1 restarted")), now + MS);
        let id = stop_of(&fx).expect("the stop is watched");
        // `up -d` (all services), then `up -d web`: passes at once; web is not in flight.
        m.handle(
            Event::Request {
                client: Some(3),
                work: up(&[]),
            },
            now + 2 * MS,
        );
        let fx = m.handle(Event::PassDone(done(Ok("nothing to do"))), now + 3 * MS);
        assert!(
            answers(&fx).is_empty(),
            "db is still being restarted: {fx:?}"
        );
        m.handle(
            Event::Request {
                client: Some(4),
                work: up(&["web"]),
            },
            now + 4 * MS,
        );
        let fx = m.handle(Event::PassDone(done(Ok("nothing to do"))), now + 5 * MS);
        assert_eq!(answers(&fx), [(4, true, "nothing to do".into())]);
        // db stopped: the next pass records it and starts it again; then `up` is answered.
        let fx = m.handle(
            Event::StopDone {
                id,
                outcomes: db_stopped(),
            },
            now + 6 * MS,
        );
        assert!(answers(&fx).is_empty(), "{fx:?}");
        let fx = m.handle(Event::PassDone(done(Ok("1 started"))), now + 7 * MS);
        assert_eq!(answers(&fx), [(3, true, "nothing to do".into())]);
    }

    /// A stop's SIGKILL is a timer of the loop: each level signalled arms its grace timer,
    /// which escalates that level of that stop only; a timer of a stop already over kills
    /// nothing; a second Ctrl-C kills at once, without waiting for any timer.
    #[test]
    fn a_stops_grace_timer_escalates_and_a_second_ctrl_c_kills_at_once() {
        let now = t0();
        let mut m = idle(now);
        let (_, id) = stop_db(&mut m, 2, now);
        // The shell signalled db's level: its grace period (10 s) is the loop's timer.
        let grace = Duration::from_secs(10);
        let fx = m.handle(
            Event::StopSignalled {
                id,
                level: 0,
                grace,
            },
            now + 2 * MS,
        );
        assert!(
            matches!(fx[..], [Effect::Arm { timer: Timer::Grace(i, 0), at }]
                if i == id && at == now + 2 * MS + grace),
            "{fx:?}"
        );
        // Due: db's stop (that level, that flight) is escalated to SIGKILL, nothing else.
        let fx = m.handle(Event::Timer(Timer::Grace(id, 0)), now + 2 * MS + grace);
        assert!(
            matches!(fx[..], [Effect::KillStop { id: i, level: 0 }] if i == id),
            "{fx:?}"
        );
        let fx = m.handle(
            Event::StopDone {
                id,
                outcomes: db_stopped(),
            },
            now + grace + 3 * MS,
        );
        assert!(matches!(passes(&fx)[..], [Work::Finish { .. }]), "{fx:?}");
        m.handle(Event::PassDone(done(Ok("1 stopped"))), now + grace + 4 * MS);
        // A late timer of a stop that is over, or a signal report of it, does nothing.
        let later = now + grace + 5 * MS;
        assert!(
            m.handle(Event::Timer(Timer::Grace(id, 0)), later)
                .is_empty()
        );
        let fx = m.handle(
            Event::StopSignalled {
                id,
                level: 1,
                grace,
            },
            later,
        );
        assert!(fx.is_empty(), "{fx:?}");

        // Another stop, then Ctrl-C twice: the second kills at once, long before its timer.
        let (_, id) = stop_db(&mut m, 3, later);
        m.handle(
            Event::StopSignalled {
                id,
                level: 0,
                grace,
            },
            later + 2 * MS,
        );
        let fx = m.handle(Event::Interrupt, later + 3 * MS);
        assert!(
            !fx.iter()
                .any(|e| matches!(e, Effect::KillNow | Effect::KillStop { .. }))
        );
        let fx = m.handle(Event::Interrupt, later + 4 * MS);
        assert!(matches!(fx[..], [Effect::KillNow]), "{fx:?}");
    }

    #[test]
    fn ctrl_c_during_a_stop_stops_everything_and_a_second_one_kills_at_once() {
        let now = t0();
        let mut m = idle(now);
        m.handle(
            Event::Request {
                client: Some(2),
                work: Work::Restart {
                    names: vec!["db".into()],
                    timeout: None,
                },
            },
            now,
        );
        let mut restart = done_stopping("1 restarted");
        if let Some(job) = &mut restart.stops {
            job.resume = vec![crate::plan::Step {
                service: "db".into(),
                action: crate::plan::Action::Restart,
                cause: crate::plan::Cause::Requested { what: "restart" },
                level: 0,
                spec: None,
                stop: None,
                wait: Vec::new(),
                exit: None,
                new_streak: true,
                forget: false,
            }];
        }
        let fx = m.handle(Event::PassDone(restart), now + MS);
        let id = stop_of(&fx).expect("watched");
        // Ctrl-C mid-stop: the final pass stops everything, db included (not left alone).
        let fx = m.handle(Event::Interrupt, now + 2 * MS);
        let p = passes(&fx);
        assert!(p.len() == 1 && is_shutdown(p[0]), "{fx:?}");
        assert_eq!(stopping_of(&fx), [BTreeSet::new()]);
        // A second Ctrl-C kills every stop at once, the loop's own too.
        let fx = m.handle(Event::Interrupt, now + 3 * MS);
        assert!(matches!(fx[..], [Effect::KillNow]), "{fx:?}");
        // The restart will not start db again: its client is told so.
        let fx = m.handle(
            Event::StopDone {
                id,
                outcomes: db_stopped(),
            },
            now + 4 * MS,
        );
        assert_eq!(
            answers(&fx),
            [(2, false, "the supervisor is shutting down".into())]
        );
        assert!(passes(&fx).is_empty(), "{fx:?}");
        let fx = m.handle(Event::PassDone(done(Ok("1 stopped"))), now + 5 * MS);
        assert!(matches!(fx.last(), Some(Effect::Exit(130))), "{fx:?}");
    }

    #[test]
    fn a_starting_session_holds_its_up_and_its_ready_is_recorded_by_the_next_pass() {
        let now = t0();
        let mut m = idle(now);
        m.handle(
            Event::Request {
                client: Some(2),
                work: up(&["api"]),
            },
            now,
        );
        // The pass spawned api's session and left it starting: the loop watches it.
        let mut d = done(Ok("1 started"));
        d.running.push(("api".into(), 20));
        d.waiting.insert("api".into());
        d.sessions = vec![SessionOrder {
            name: "api".into(),
            identity: probe_of("api", 20).identity,
            log: ("/nonexistent".into(), 0),
        }];
        let fx = m.handle(Event::PassDone(d.clone()), now + MS);
        assert!(
            matches!(&fx[..], [Effect::WatchSessions(o)] if o[0].name == "api"),
            "{fx:?}"
        );
        // Meanwhile a `stop` runs a pass at once and is answered; api is watched once.
        m.handle(
            Event::Request {
                client: Some(3),
                work: Work::Stop {
                    names: vec!["db".into()],
                    timeout: None,
                },
            },
            now + 2 * MS,
        );
        let fx = m.handle(Event::PassDone(d), now + 3 * MS);
        assert_eq!(answers(&fx), [(3, true, "1 started".into())]);
        assert!(
            !fx.iter().any(|e| matches!(e, Effect::WatchSessions(_))),
            "{fx:?}"
        );
        // `Ready!`: the next pass records it, and its end answers the `up`.
        let fx = m.handle(
            Event::SessionWatched {
                service: "api".into(),
                pid: 20,
                outcome: SessionOutcome::Started,
            },
            now + 4 * MS,
        );
        let handed: Vec<_> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::RunPass { probed, .. } => Some(probed.sessions.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            handed,
            [vec![("api".to_owned(), 20, SessionOutcome::Started)]]
        );
        let fx = m.handle(Event::PassDone(done(Ok("nothing to do"))), now + 5 * MS);
        assert_eq!(answers(&fx), [(2, true, "1 started".into())]);
    }

    #[test]
    fn sighup_reapplies_in_the_background_and_stops_in_the_foreground() {
        let now = t0();
        let mut m = idle(now);
        let fx = m.handle(Event::Hangup, now);
        let p = passes(&fx);
        assert!(p.len() == 1 && is_watcher_pass(p[0]), "{fx:?}");

        let mut m = Machine::new(true);
        m.handle(
            Event::Request {
                client: None,
                work: up(&[]),
            },
            now,
        );
        m.handle(Event::PassDone(done(Ok("1 started"))), now);
        let fx = m.handle(Event::Hangup, now);
        let p = passes(&fx);
        assert!(p.len() == 1 && is_shutdown(p[0]), "{fx:?}");
        let fx = m.handle(Event::PassDone(done(Ok("1 stopped"))), now);
        assert!(matches!(fx[..], [Effect::Exit(129)]), "{fx:?}");
    }

    #[test]
    fn an_exit_during_a_pass_wakes_another_pass_only_if_that_pass_left_the_pid_running() {
        let now = t0();
        let mut m = idle(now);
        m.handle(Event::Hangup, now);
        m.handle(
            Event::ServiceExited {
                name: "db".into(),
                pid: 9,
            },
            now,
        );
        // The pass replaced pid 9 with 10: the exit was its own doing.
        let fx = m.handle(Event::PassDone(done(Ok("1 restarted"))), now);
        assert!(passes(&fx).is_empty(), "{fx:?}");
        m.handle(Event::Hangup, now);
        m.handle(
            Event::ServiceExited {
                name: "db".into(),
                pid: 10,
            },
            now,
        );
        let fx = m.handle(Event::PassDone(done(Ok("nothing to do"))), now);
        assert_eq!(passes(&fx).len(), 1, "{fx:?}");
    }

    #[test]
    fn every_service_ended_ends_the_foreground_and_is_said_once_in_the_background() {
        let now = t0();
        let mut m = idle(now);
        let mut d = done(Ok("nothing to do"));
        d.running.clear();
        d.all_down = Some(vec!["db".into()]);
        m.handle(Event::Hangup, now);
        let fx = m.handle(Event::PassDone(d.clone()), now);
        assert!(
            matches!(&fx[..], [Effect::Say(s)] if s.contains("failed: db; waiting for a change")),
            "{fx:?}"
        );
        m.handle(Event::Hangup, now);
        let fx = m.handle(Event::PassDone(d.clone()), now);
        assert!(fx.is_empty(), "said once: {fx:?}");

        let mut m = Machine::new(true);
        m.handle(
            Event::Request {
                client: None,
                work: up(&[]),
            },
            now,
        );
        let fx = m.handle(Event::PassDone(d), now);
        assert!(matches!(fx.last(), Some(Effect::Exit(1))), "{fx:?}");
    }

    #[test]
    fn only_an_up_waits_for_its_waiting_services_a_stop_is_answered_with_its_pass() {
        let now = t0();
        let mut m = idle(now);
        let stop = Work::Stop {
            names: vec!["web".into()],
            timeout: None,
        };
        m.handle(
            Event::Request {
                client: Some(2),
                work: stop,
            },
            now,
        );
        let mut d = done(Ok("1 stopped"));
        d.waiting.insert("api".into());
        let fx = m.handle(Event::PassDone(d), now);
        assert_eq!(answers(&fx), [(2, true, "1 stopped".into())]);
    }

    #[test]
    fn ctrl_c_answers_a_request_still_waiting_for_its_services() {
        let now = t0();
        let mut m = Machine::new(true);
        m.handle(
            Event::Request {
                client: Some(1),
                work: up(&["api"]),
            },
            now,
        );
        let mut d = done(Ok("1 started"));
        d.waiting.insert("api".into());
        m.handle(Event::PassDone(d), now);
        let fx = m.handle(Event::Interrupt, now);
        assert_eq!(
            answers(&fx),
            [(1, false, "the supervisor is shutting down".into())]
        );
    }

    fn up_wait(services: &[&str], wait: Duration) -> Work {
        Work::Reconcile {
            explicit: Some(ApplyOptions {
                services: services.iter().map(|s| s.to_string()).collect(),
                wait: Some(wait),
                ..Default::default()
            }),
        }
    }

    fn awaits(fx: &[Effect]) -> Vec<(ClientId, Vec<String>, Instant)> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::AwaitReady {
                    client,
                    services,
                    deadline,
                    ..
                } => Some((*client, services.clone(), *deadline)),
                _ => None,
            })
            .collect()
    }

    /// An idle loop with client 2's `up --wait db` (limit 5 s, asked at `now`) probing db's
    /// process 10.
    fn waiting_for_db(now: Instant) -> Machine {
        let mut m = idle(now);
        let fx = m.handle(
            Event::Request {
                client: Some(2),
                work: up_wait(&["db"], 5000 * MS),
            },
            now,
        );
        assert_eq!(passes(&fx).len(), 1);
        // The pass starts db and returns without waiting: the loop asks for the wait.
        let fx = m.handle(Event::PassDone(done(Ok("1 started"))), now + 30 * MS);
        assert!(answers(&fx).is_empty(), "{fx:?}");
        assert_eq!(awaits(&fx), [(2, vec!["db".to_owned()], now + 5000 * MS)]);
        assert!(fx.iter().any(|e| matches!(
            e,
            Effect::Arm { timer: Timer::Wait(2), at } if *at == now + 5000 * MS + WAIT_SLACK
        )));
        let fx = m.handle(
            Event::Awaiting {
                client: 2,
                probing: vec![("db".into(), 10)],
                ready: vec![],
                ended: vec![],
            },
            now + 31 * MS,
        );
        assert!(fx.is_empty(), "{fx:?}");
        assert!(!m.busy());
        m
    }

    #[test]
    fn up_wait_is_answered_after_the_pass_that_records_its_services_ready() {
        let now = t0();
        let mut m = waiting_for_db(now);
        let fx = m.handle(
            Event::WaitProbed {
                service: "db".into(),
                pid: 10,
                outcome: ProbeOutcome::Ready,
            },
            now + 2000 * MS,
        );
        // The client hears it; a pass records db ready; the answer comes once it is done
        // (then `ps` says so).
        assert!(answers(&fx).is_empty());
        assert!(fx.iter().any(|e| matches!(
            e,
            Effect::Tell { client: 2, service, what } if service == "db" && what == "ready"
        )));
        let Some(Effect::RunPass { probed, .. }) =
            fx.iter().find(|e| matches!(e, Effect::RunPass { .. }))
        else {
            panic!("no pass: {fx:?}")
        };
        assert_eq!(probed.ready, [("db".to_owned(), 10)]);
        let fx = m.handle(Event::PassDone(done(Ok("nothing to do"))), now + 2010 * MS);
        assert_eq!(answers(&fx), [(2, true, "1 started".into())]);
        // Its timer, firing later, finds nothing to answer.
        let fx = m.handle(Event::Timer(Timer::Wait(2)), now + 5250 * MS);
        assert!(answers(&fx).is_empty());
    }

    #[test]
    fn up_wait_fails_at_its_timeout_or_at_once_when_the_service_ends() {
        let now = t0();
        let mut m = waiting_for_db(now);
        let fx = m.handle(Event::Timer(Timer::Wait(2)), now + 5250 * MS);
        assert_eq!(
            answers(&fx),
            [(2, false, "db failed to start: db not ready after 5s".into())]
        );
        let mut m = waiting_for_db(now);
        let fx = m.handle(
            Event::WaitProbed {
                service: "db".into(),
                pid: 10,
                outcome: ProbeOutcome::Ended,
            },
            now + 300 * MS,
        );
        assert_eq!(
            answers(&fx),
            [(
                2,
                false,
                "db failed to start: db exited before it was ready".into()
            )]
        );
        // Who answered db's port instead, when the probe found out.
        let mut m = waiting_for_db(now);
        let fx = m.handle(
            Event::WaitProbed {
                service: "db".into(),
                pid: 10,
                outcome: ProbeOutcome::TimedOut(
                    5000 * MS,
                    Some("port 1 is answered by pid 9".into()),
                ),
            },
            now + 5000 * MS,
        );
        assert_eq!(
            answers(&fx),
            [(
                2,
                false,
                "db failed to start: db not ready after 5s: port 1 is answered by pid 9".into()
            )]
        );
    }

    #[test]
    fn a_request_during_an_up_wait_runs_at_once_and_ctrl_c_answers_the_wait() {
        let now = t0();
        let mut m = waiting_for_db(now);
        let fx = m.handle(
            Event::Request {
                client: Some(3),
                work: Work::Stop {
                    names: vec!["web".into()],
                    timeout: None,
                },
            },
            now + 100 * MS,
        );
        assert_eq!(passes(&fx).len(), 1, "the wait holds no pass: {fx:?}");
        let fx = m.handle(Event::PassDone(done(Ok("1 stopped"))), now + 120 * MS);
        assert_eq!(answers(&fx), [(3, true, "1 stopped".into())]);
        let fx = m.handle(Event::Interrupt, now + 200 * MS);
        assert_eq!(
            answers(&fx),
            [(2, false, "the supervisor is shutting down".into())]
        );
    }

    #[test]
    fn up_wait_of_services_ready_already_or_ended_is_answered_at_once() {
        let now = t0();
        let mut m = idle(now);
        m.handle(
            Event::Request {
                client: Some(2),
                work: up_wait(&[], 5000 * MS),
            },
            now,
        );
        m.handle(Event::PassDone(done(Ok("nothing to do"))), now);
        let fx = m.handle(
            Event::Awaiting {
                client: 2,
                probing: vec![],
                ready: vec!["db".into()],
                ended: vec![],
            },
            now,
        );
        assert_eq!(answers(&fx), [(2, true, "nothing to do".into())]);
        m.handle(
            Event::Request {
                client: Some(3),
                work: up_wait(&[], 5000 * MS),
            },
            now,
        );
        m.handle(Event::PassDone(done(Ok("nothing to do"))), now);
        let fx = m.handle(
            Event::Awaiting {
                client: 3,
                probing: vec![],
                ready: vec![],
                ended: vec![("job".into(), "job exited before it was ready".into())],
            },
            now,
        );
        assert_eq!(
            answers(&fx),
            [(
                3,
                false,
                "job failed to start: job exited before it was ready".into()
            )]
        );
    }

    #[test]
    fn up_wait_timeout_also_bounds_a_wait_for_a_dependency() {
        let now = t0();
        let mut m = idle(now);
        m.handle(
            Event::Request {
                client: Some(2),
                work: up_wait(&["api"], 3000 * MS),
            },
            now,
        );
        let mut d = done(Ok("1 started"));
        d.waiting.insert("api".into());
        let fx = m.handle(Event::PassDone(d), now + 10 * MS);
        assert!(awaits(&fx).is_empty(), "api still waits for db: {fx:?}");
        let fx = m.handle(Event::Timer(Timer::Wait(2)), now + 3000 * MS + WAIT_SLACK);
        assert_eq!(
            answers(&fx),
            [(
                2,
                false,
                "api failed to start: api not ready after 3s".into()
            )]
        );
    }

    #[test]
    fn a_foreground_up_wait_tells_the_terminal_only_a_failed_wait() {
        let now = t0();
        let mut m = Machine::new(true);
        m.handle(
            Event::Request {
                client: None,
                work: up_wait(&[], 1000 * MS),
            },
            now,
        );
        let fx = m.handle(Event::PassDone(done(Ok("2 started"))), now + 10 * MS);
        assert_eq!(awaits(&fx).len(), 1, "{fx:?}");
        m.handle(
            Event::Awaiting {
                client: TERMINAL,
                probing: vec![("db".into(), 10)],
                ready: vec![],
                ended: vec![],
            },
            now + 11 * MS,
        );
        let fx = m.handle(
            Event::Timer(Timer::Wait(TERMINAL)),
            now + 1000 * MS + WAIT_SLACK,
        );
        assert_eq!(
            answers(&fx),
            [(
                TERMINAL,
                false,
                "db failed to start: db not ready after 1s".into()
            )]
        );
        // A wait still going when Ctrl-C comes is not answered: the notice says it all.
        let mut m = Machine::new(true);
        m.handle(
            Event::Request {
                client: None,
                work: up_wait(&[], 1000 * MS),
            },
            now,
        );
        m.handle(Event::PassDone(done(Ok("2 started"))), now + 10 * MS);
        let fx = m.handle(Event::Interrupt, now + 20 * MS);
        assert!(answers(&fx).is_empty(), "{fx:?}");
    }
}
