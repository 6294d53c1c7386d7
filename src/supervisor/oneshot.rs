//! The one-shot runner: a request served in this process when no supervisor runs, by the same
//! [`Machine`] and the same passes as the supervisor's loop, ending when the request is
//! answered. `restart|stop|start` and `ci start --up` without a supervisor are this
//! (`crate::request::submit`).
//!
//! Unlike the loop it watches no file, no signal and no exit: it carries out the machine's
//! effects until the answer — a pass (on this thread: nothing else is in flight), a readiness
//! probe (on a thread of its own, as in the loop), the probes of an `up --wait` and its
//! `--wait-timeout` — and leaves a back-off, an exit or a change of the file to the next
//! command or supervisor. Each pass takes the state lock for its own load-apply-save only: an
//! `up --wait` waits outside the lock, so `down` or `ci stop` run meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::mpsc::unbounded_channel;
use tokio::time::Instant;

use super::machine::{ClientId, Effect, Event, Machine, Timer};
use super::pass::{self, PassSettings, Work};
use super::shutdown::SweepStops;
use super::{Input, await_ready, pass_done, spawn_probe};
use crate::engine::Reporter;
use crate::project::Project;

/// The one client of a one-shot run: the command that asked.
const ASKER: ClientId = 1;

/// Serves `work` as the loop would, with `settings` as its standing settings; returns the
/// answer (`ok`, the summary or what went wrong).
pub fn serve(
    ctx: &dyn Project,
    mut settings: PassSettings,
    work: Work,
    reporter: &mut dyn Reporter,
) -> (bool, String) {
    settings.loop_waits = true;
    // A stop is a wait of this loop as of the supervisor's: the pass signals, records
    // `stopping` (owned by this process, `crate::stop_owner`) and returns; the grace period is
    // waited here, outside the state lock (a shutdown: `serve_shutdown`).
    settings.defer_stops = true;
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return (false, "cannot start a timer".into());
    };
    if let Work::Shutdown { sweep: true, .. } = &work {
        return serve_shutdown(ctx, settings, &work, reporter, &rt);
    }
    let (tx, mut rx) = unbounded_channel::<Input>();
    let cancel = Arc::new(AtomicBool::new(false));
    let mut machine = Machine::new(false);
    let mut pending = machine.handle(
        Event::Request {
            client: Some(ASKER),
            work,
        },
        Instant::now(),
    );
    let mut probes = 0usize;
    // Waits for other processes' stops in flight (`Effect::AwaitStops`).
    let mut awaiting = 0usize;
    // `--wait-timeout`s armed (the loop's other timers are not a one-shot's business).
    let mut timers: BTreeMap<Timer, Instant> = BTreeMap::new();
    // The kill switch of each stop in flight (as the supervisor's shell keeps them).
    let mut kill_switches: BTreeMap<u64, Arc<AtomicUsize>> = BTreeMap::new();
    let mut last: Option<Result<String, String>> = None;
    let answer = loop {
        let mut next = None;
        for effect in std::mem::take(&mut pending) {
            match effect {
                Effect::Answer {
                    client: ASKER,
                    ok,
                    message,
                } => {
                    cancel.store(true, Ordering::SeqCst);
                    return (ok, message);
                }
                Effect::RunPass {
                    work,
                    probed,
                    stopping,
                    ..
                } => {
                    if let Work::Reconcile { explicit: Some(e) } = &work {
                        super::widen_selection(&mut settings, e);
                    }
                    let mut s = settings.clone();
                    s.probed = probed;
                    s.stopping = stopping;
                    let out = pass::run_pass(ctx, &s, &work, reporter);
                    let done = pass_done(out, false);
                    last = Some(done.result.clone());
                    next = Some(Event::PassDone(done));
                }
                // Watched on a thread (`Event::StopSignalled`, `Event::StopDone`), killed by
                // its grace timer (`Effect::KillStop`).
                Effect::Stop { id, stops } => {
                    let switch = Arc::new(AtomicUsize::new(0));
                    kill_switches.insert(id, switch.clone());
                    super::spawn_stop(&tx, id, stops, switch, false);
                }
                Effect::KillStop { id, level } => {
                    if let Some(switch) = kill_switches.get(&id) {
                        switch.fetch_max(level.saturating_add(1), Ordering::SeqCst);
                    }
                }
                // Another process's stops, waited for on a thread (as the supervisor's shell
                // does): a wait the answer does not need ends with this process.
                Effect::AwaitStops {
                    id,
                    services,
                    limit,
                } => {
                    awaiting += 1;
                    super::spawn_await_stops(&tx, ctx, id, services, limit);
                }
                Effect::Arm {
                    timer: timer @ Timer::Grace(..),
                    at,
                } => {
                    timers.insert(timer, at);
                }
                Effect::Disarm(timer) => {
                    timers.remove(&timer);
                }
                Effect::Probe(order) => {
                    probes += 1;
                    spawn_probe(&tx, order, cancel.clone(), false);
                }
                Effect::AwaitReady {
                    client,
                    services,
                    deadline,
                    limit,
                } => {
                    let probed = await_ready(ctx, &tx, client, &services, deadline, &cancel);
                    for (service, own) in probed {
                        probes += 1;
                        reporter.waiting(&service, "waiting for readiness", Some(own.min(limit)));
                    }
                }
                Effect::Arm {
                    timer: timer @ Timer::Wait(_),
                    at,
                } => {
                    timers.insert(timer, at);
                }
                // The pass that records a service ready reports it to this command.
                Effect::Tell { .. }
                // Other timers (debounce, back-off), notices and the loop's end are the
                // loop's business: a one-shot run ends with its answer.
                | Effect::Arm { .. }
                // Sessions are awaited in a one-shot's pass.
                | Effect::WatchSessions(_)
                | Effect::Answer { .. }
                | Effect::InterruptPass
                | Effect::KillNow
                | Effect::Say(_)
                | Effect::Notice(_)
                | Effect::Exit(_) => {}
            }
        }
        if let Some(e) = next {
            pending = machine.handle(e, Instant::now());
            continue;
        }
        let timer = timers
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(t, at)| (*t, *at));
        // Idle and not answered, with nothing to wake it (a service still waits).
        if probes == 0 && timer.is_none() && kill_switches.is_empty() && awaiting == 0 {
            break last;
        }
        let received = rt.block_on(async {
            match timer {
                Some((_, at)) => tokio::time::timeout_at(at, rx.recv()).await.ok(),
                None => Some(rx.recv().await),
            }
        });
        let event = match received {
            // A timer is due.
            None => {
                let (t, _) = timer.expect("a timeout needs a timer");
                timers.remove(&t);
                Event::Timer(t)
            }
            Some(Some(Input::Event(e))) => {
                if matches!(e, Event::Probed { .. } | Event::WaitProbed { .. }) {
                    probes = probes.saturating_sub(1);
                }
                if let Event::StopDone { id, .. } = &e {
                    kill_switches.remove(id);
                }
                if matches!(e, Event::StopsReleased { .. }) {
                    awaiting = awaiting.saturating_sub(1);
                }
                e
            }
            Some(Some(_)) => continue,
            Some(None) => break last,
        };
        pending = machine.handle(event, Instant::now());
    };
    cancel.store(true, Ordering::SeqCst);
    match answer {
        Some(Ok(m)) => (true, m),
        Some(Err(e)) => (false, e),
        None => (false, "no result".into()),
    }
}

/// A one-shot `down` / `ci stop` (`Work::Shutdown { sweep: true }`) in two passes,
/// its grace periods waited between them, outside the state lock: the first signals and
/// records `stopping` (this process owns those stops, `crate::stop_owner`), the second
/// records the outcomes, forgets the records and sweeps the markers. With nothing to wait
/// for (or a refusal to report) the first pass does it all, as before.
fn serve_shutdown(
    ctx: &dyn Project,
    settings: PassSettings,
    work: &Work,
    reporter: &mut dyn Reporter,
    rt: &tokio::runtime::Runtime,
) -> (bool, String) {
    let mut s = settings;
    s.sweep_stops = SweepStops::Defer;
    let mut out = pass::run_pass(ctx, &s, work, reporter);
    if let Some(job) = out.stops.take() {
        let mut said = SaidOnce::new(reporter);
        let outcomes = watch_stops(
            Driver::Own(rt),
            job.stops.clone(),
            &mut said.as_they_end(&job),
        );
        s.sweep_stops = SweepStops::Finished { job, outcomes };
        out = pass::run_pass(ctx, &s, work, &mut said);
    }
    release_all(ctx);
    match out.result {
        Some(Ok(m)) => (true, m),
        Some(Err(e)) => (false, e),
        None => (false, "no result".into()),
    }
}

/// Who drives the timers of [`watch_stops`]: the one-shot's own runtime (its `block_on`
/// drives them), or the supervisor's, from its pass thread (its main thread drives them; a
/// `Handle::block_on` on a current-thread runtime does not).
pub(super) enum Driver<'a> {
    Own(&'a tokio::runtime::Runtime),
    Shared(&'a tokio::runtime::Handle),
}

impl Driver<'_> {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match self {
            Driver::Own(rt) => rt.block_on(f),
            Driver::Shared(h) => h.block_on(f),
        }
    }
}

/// The loop's final shutdown (`Work::Shutdown` without the sweep: `down` sent to the
/// supervisor, Ctrl-C), served on the pass thread of the supervisor's shell without holding
/// the state lock across the grace periods: a first pass signals and records `stopping`
/// (`PassSettings::defer_shutdown`), the stops are watched here (SIGKILL at the end of each
/// grace period, or at once after a second Ctrl-C: `process::kill_now`), and a
/// `Work::Finish` pass records them (their records go for a `down`). Nothing to wait for:
/// the first pass is the answer.
pub(super) fn serve_loop_shutdown(
    ctx: &dyn Project,
    settings: &PassSettings,
    work: &Work,
    reporter: &mut dyn Reporter,
    rt: &tokio::runtime::Handle,
) -> pass::PassOutcome {
    let rt = Driver::Shared(rt);
    let mut first = settings.clone();
    first.defer_shutdown = true;
    let mut out = pass::run_pass(ctx, &first, work, reporter);
    let Some(job) = out.stops.take() else {
        release_all(ctx);
        return out;
    };
    let mut said = SaidOnce::new(reporter);
    let outcomes = watch_stops(rt, job.stops.clone(), &mut said.as_they_end(&job));
    let finish = Work::Finish {
        job,
        outcomes,
        services: None,
        wait: None,
    };
    let mut last = settings.clone();
    // The records being stopped are this pass's own to record, not another stop's.
    last.stopping.clear();
    let mut done = pass::run_pass(ctx, &last, &finish, &mut said);
    release_all(ctx);
    // What the first pass settled (`--abort-on-exit`: the service that ended, and its code)
    // stays the answer's.
    if let Some(Err(e)) = out.result {
        done.result = Some(Err(e));
    }
    done.abort = out.abort.or(done.abort);
    out.failed.append(&mut done.failed);
    done.failed = out.failed;
    done.all_down = out.all_down.or(done.all_down);
    done
}

/// The shutdown is recorded: its stop lock of every service is nobody's any more.
fn release_all(ctx: &dyn Project) {
    if let Ok(store) = ctx.store() {
        crate::stop_owner::release_all(&store);
    }
}

/// A shutdown's reporter: each stop is said as it ends (`as_they_end`), not all at once when
/// the last one is recorded, and the pass that records them does not say them again.
struct SaidOnce<'a> {
    inner: &'a mut dyn Reporter,
    /// What was said, by `(service, what)`: how many times.
    said: BTreeMap<(String, String), usize>,
}

impl<'a> SaidOnce<'a> {
    fn new(inner: &'a mut dyn Reporter) -> SaidOnce<'a> {
        SaidOnce {
            inner,
            said: BTreeMap::new(),
        }
    }

    /// What hears the outcomes of `job`'s stops as they come (those that came together at
    /// once), and says them.
    fn as_they_end<'b>(
        &'b mut self,
        job: &pass::StopJob,
    ) -> impl FnMut(&[crate::process::StopOutcome]) + use<'a, 'b> {
        let why: BTreeMap<String, String> = job
            .stops
            .iter()
            .map(|p| (p.name.clone(), p.why.clone()))
            .collect();
        move |outcomes| {
            let batch: Vec<(String, String)> = outcomes
                .iter()
                .filter_map(|o| {
                    let why = why.get(&o.name)?;
                    Some((o.name.clone(), crate::engine::stop_event(o, why)))
                })
                .collect();
            self.inner.events(&batch);
            for said in batch {
                *self.said.entry(said).or_default() += 1;
            }
        }
    }
}

impl Reporter for SaidOnce<'_> {
    fn event(&mut self, service: &str, what: &str) {
        let key = (service.to_owned(), what.to_owned());
        if let Some(n) = self.said.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.said.remove(&key);
            }
            return;
        }
        self.inner.event(service, what);
    }

    fn waiting(&mut self, service: &str, what: &str, limit: Option<std::time::Duration>) {
        self.inner.waiting(service, what, limit);
    }

    fn waitings(&mut self, what: &str, waits: &[(&str, Option<std::time::Duration>)]) {
        self.inner.waitings(what, waits);
    }
}

/// Watches `stops` as the loop does (`spawn_stop`: deepest level first), killing each level
/// when its grace period ends; `each` hears each group's outcome as it ends; their outcomes.
/// A process's final shutdown (the loop's, a one-shot `down` or `ci stop`): the process ends
/// after it, and no worker thread is kept from then on.
fn watch_stops(
    rt: Driver<'_>,
    stops: Vec<crate::engine::PendingStop>,
    each: &mut dyn FnMut(&[crate::process::StopOutcome]),
) -> Vec<crate::process::StopOutcome> {
    let (tx, mut rx) = unbounded_channel::<Input>();
    let switch = Arc::new(AtomicUsize::new(0));
    super::spawn_stop(&tx, 0, stops, switch.clone(), true);
    drop(tx);
    // When each signalled level's grace period ends.
    let mut graces: BTreeMap<usize, Instant> = BTreeMap::new();
    loop {
        let due = graces
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(l, at)| (*l, *at));
        // What is queued already is taken without entering the runtime: a `down` of 100 ends
        // a hundred groups in a few milliseconds.
        let mut received = match rx.try_recv() {
            Ok(input) => Some(Some(input)),
            Err(_) => rt.block_on(async {
                match due {
                    Some((_, at)) => tokio::time::timeout_at(at, rx.recv()).await.ok(),
                    None => Some(rx.recv().await),
                }
            }),
        };
        // The groups that ended meanwhile are said together: one write to each place they are
        // said (said one by one, they fell behind the exits).
        if let Some(Some(Input::StopEnded(first))) = received {
            let mut ended = first;
            // What came after them, handled below.
            let mut after = None;
            while let Ok(input) = rx.try_recv() {
                match input {
                    Input::StopEnded(o) => ended.extend(o),
                    other => {
                        after = Some(other);
                        break;
                    }
                }
            }
            each(&ended);
            match after {
                Some(input) => received = Some(Some(input)),
                None => continue,
            }
        }
        match received {
            None => {
                // A timeout: the grace period of `due` ended.
                if let Some((level, _)) = due {
                    graces.remove(&level);
                    switch.fetch_max(level.saturating_add(1), Ordering::SeqCst);
                }
            }
            Some(Some(Input::Event(Event::StopSignalled { level, grace, .. }))) => {
                graces.insert(level, Instant::now() + grace);
            }
            Some(Some(Input::Event(Event::StopDone { outcomes, .. }))) => return outcomes,
            Some(Some(_)) => {}
            // The watch ended without outcomes: the second pass stops what is left.
            Some(None) => return Vec::new(),
        }
    }
}
