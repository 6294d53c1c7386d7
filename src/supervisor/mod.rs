//! The supervisor: the live loop behind foreground `up` and the detached `up --detach`.
//!
//! # Theory of operation (ARCHITECTURE.md has the whole picture)
//!
//! The loop's rules live in a pure state machine (`machine::Machine`: one event in, effects
//! out, unit-tested without processes). This module is its shell: it gathers the events — a
//! change in the YAML's directory (notify), SIGHUP, SIGINT/SIGTERM, SIGCHLD, the exit of a
//! service (a `pidfd` per running service), a request on the control socket, a timer, the end
//! of a readiness probe — and carries out the effects: a reconcile pass (`pass::run_pass`) on
//! the one blocking thread, a probe on a thread of its own, a timer, an answer to a client.
//!
//! A pass is short: it never waits for readiness. A service whose dependency has not reached
//! its condition is recorded as `waiting`, the pass names the probes it needs, and a probe's
//! result wakes the next pass, which starts it (level-triggered). So edits, `stop`, `down`,
//! Ctrl-C and other front-ends are served while a probe runs, and the state lock is held for
//! one pass at a time, never across a wait.
//!
//! Services write their own log files and hold no pipe to the supervisor, so a supervisor that
//! dies (even by SIGKILL) takes nothing down with it; the next one adopts the services from the
//! state file, checking each recorded identity. The supervisor is the children's subreaper and
//! reaps every exit, keeping the statuses for the restart policy.

pub mod await_ready;
pub mod ci_pass;
pub mod control;
pub mod machine;
pub mod oneshot;
pub mod pass;
pub mod shutdown;
#[cfg(test)]
mod sim;
pub(crate) mod workers;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::time::Instant;

use crate::engine::Reporter;
use crate::process::{self, Liveness, ProcessIdentity};
use crate::project::Project;
use crate::state::{SupervisorRecord, now_ms};
use control::{Reply, Request};
use machine::{ClientId, Effect, Event, Machine, PassDone, ProbeOutcome, Timer};
use pass::{ApplyOptions, PassOutcome, PassSettings, ProbeOrder, Work};

pub use machine::DEBOUNCE;

/// Where a pass reports to, besides the supervisor's own output.
type Client = Box<dyn Write + Send>;

/// How a supervisor is run.
pub struct Options {
    pub settings: PassSettings,
    pub watch: bool,
    /// Foreground: log lines of every service on stdout, events on stderr, Ctrl-C ends it.
    pub foreground: bool,
    /// The first pass (an explicit `up`).
    pub first: ApplyOptions,
    /// Detached: the pipe to the `up --detach` that started us, answered like a socket client.
    pub first_client: Option<Client>,
    /// Foreground: names are padded to this (the longest service name in the file).
    pub width: usize,
}

/// Runs the loop until Ctrl-C/SIGTERM, `down`, or `--abort-on-exit`.
pub fn run(ctx: Arc<dyn Project>, opts: Options) -> Result<ExitCode> {
    // A client that hangs up must cost an EPIPE on that connection, not the supervisor.
    // (Spawned services get the default disposition back: std resets it in the child.)
    // SAFETY: no other thread exists yet that could race on the disposition.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    crate::os::lean_malloc(); // perf5: idle RSS (one arena, trimmed heap)
    // Passes run one at a time on one blocking thread, kept for the supervisor's life: a
    // thread per pass would each leave a malloc arena behind, and an idle-timeout would wake it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
        .thread_keep_alive(Duration::from_secs(365 * 24 * 3600))
        .build()
        .context("cannot start the event loop")?;
    rt.block_on(run_loop(ctx, opts))
}

struct Registration {
    socket: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

/// Records this process as the project's supervisor and opens its control socket, unless a
/// live supervisor is recorded already (then: its record).
fn register(ctx: &dyn Project) -> Result<Result<Registration, SupervisorRecord>> {
    let store = ctx.store()?;
    let lock = store.lock(ctx.lock_timeout())?;
    let mut state = store.load(&lock)?;
    if let Some(other) = control::running(Some(&state)) {
        return Ok(Err(other));
    }
    let socket = store.dir.join(control::SOCKET);
    let _ = std::fs::remove_file(&socket); // a dead supervisor's
    let listener = std::os::unix::net::UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    }
    let me = std::process::id() as i32;
    state.supervisor = Some(SupervisorRecord {
        process: ProcessIdentity::of(me, None)?,
        socket: socket.clone(),
        started_at_ms: now_ms(),
    });
    store.save(&lock, &state)?;
    Ok(Ok(Registration { socket, listener }))
}

/// Removes our record (if it is still ours) and the socket.
fn unregister(ctx: &dyn Project, socket: &Path) {
    let _ = std::fs::remove_file(socket);
    let Ok(store) = ctx.store() else { return };
    let ours = |state: &crate::state::State| {
        state
            .supervisor
            .as_ref()
            .is_some_and(|s| s.process.pid == std::process::id() as i32)
    };
    // Looked at without the lock first: after a shutdown the state records no supervisor
    // (its stopping pass took the record out), and `down` holds the lock for its sweep while
    // it waits for this process to exit. No other process records this one as the
    // supervisor: a state that does not record it now never will.
    if !matches!(store.read(), Ok(Some(state)) if ours(&state)) {
        return;
    }
    let Ok(lock) = store.lock(ctx.lock_timeout()) else {
        return;
    };
    if let Ok(mut state) = store.load(&lock)
        && ours(&state)
    {
        state.supervisor = None;
        let _ = store.save(&lock, &state);
    }
}

async fn run_loop(ctx: Arc<dyn Project>, mut opts: Options) -> Result<ExitCode> {
    process::become_subreaper();
    let reg = match register(ctx.as_ref())? {
        Ok(r) => r,
        Err(other) => {
            if let Some(mut client) = opts.first_client.take() {
                control::send(
                    &mut client,
                    &Reply::AlreadyRunning {
                        pid: other.process.pid,
                        socket: other.socket.clone(),
                    },
                );
                return Ok(ExitCode::SUCCESS);
            }
            anyhow::bail!(
                "a supervisor of this project already runs (pid {}); follow it with `mirrord-up logs -f` (its own log is {}), apply the file with `mirrord-up up --detach`, or stop it with `mirrord-up down`",
                other.process.pid,
                ctx.store()?.dir.join("supervisor.log").display()
            );
        }
    };
    let result = supervise(&ctx, opts, &reg).await;
    finish(ctx.as_ref(), &reg.socket);
    result
}

/// What the supervisor does last: takes its record out of the state (if still there) and
/// its socket away, and ends the `events` clients.
fn finish(ctx: &dyn Project, socket: &Path) {
    unregister(ctx, socket);
    // Hook (session, issue 13): `events` clients end with the supervisor.
    crate::event_hub::close("the supervisor ended");
}

/// What a finished pass leaves to follow after its effects: what runs now (`None`: what ran
/// after the last pass), and the services' source watches.
type AfterPass = (
    Option<Vec<(String, ProcessIdentity)>>,
    Option<Vec<crate::watch::Watched>>,
);

/// A finished pass, and the clients it borrowed.
type PassResult = (
    PassOutcome,
    Vec<(ClientId, Client)>,
    Option<crate::events::Journal>,
);

/// The shell around the [`Machine`]: gathers events, carries out effects.
struct Shell<'a> {
    ctx: &'a Arc<dyn Project>,
    /// The state directory, opened (and checked) once: where each pass's reporter writes the
    /// project's events. The pass itself opens it again, as every command does.
    journal_store: Option<crate::state::StateStore>,
    /// The events journal the last pass wrote with, its file still open: the next pass's
    /// reporter writes with it (not opening `events.log` again, a walk of the state
    /// directory's path, on each pass).
    journal: Option<crate::events::Journal>,
    foreground: bool,
    color: bool,
    width: usize,
    settings: PassSettings,
    tx: UnboundedSender<Input>,
    clients: BTreeMap<ClientId, Client>,
    next_client: ClientId,
    timers: BTreeMap<Timer, Instant>,
    pass: Option<tokio::task::JoinHandle<PassResult>>,
    /// Answers to clients lent to the pass in flight.
    deferred: Vec<(ClientId, bool, String)>,
    /// Set when the loop ends: probe threads give up.
    cancel: Arc<AtomicBool>,
    /// The kill switch of each stop in flight ([`Effect::KillStop`]): its thread kills the
    /// levels below the value.
    kill_switches: BTreeMap<u64, Arc<AtomicUsize>>,
    exit: Option<u8>,
}

impl Shell<'_> {
    fn client(&mut self, client: Option<Client>) -> Option<ClientId> {
        let c = client?;
        self.next_client += 1;
        self.clients.insert(self.next_client, c);
        Some(self.next_client)
    }

    fn carry_out(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::RunPass {
                    work,
                    client,
                    listeners,
                    probed,
                    stopping,
                } => {
                    self.settings.stopping = stopping;
                    self.run_pass(work, client, listeners, probed)
                }
                Effect::Stop { id, stops } => {
                    let switch = Arc::new(AtomicUsize::new(0));
                    self.kill_switches.insert(id, switch.clone());
                    spawn_stop(&self.tx, id, stops, switch, false);
                }
                Effect::KillStop { id, level } => {
                    if let Some(switch) = self.kill_switches.get(&id) {
                        switch.fetch_max(level.saturating_add(1), Ordering::SeqCst);
                    }
                }
                // One thread per pass's sessions (a cold `up -d` of many is one watch).
                Effect::WatchSessions(orders) => {
                    let tx = self.tx.clone();
                    let cancel = self.cancel.clone();
                    std::thread::spawn(move || {
                        crate::engine::watch_sessions(&orders, &cancel, &mut |order, outcome| {
                            let _ = tx.send(Input::Event(Event::SessionWatched {
                                service: order.name.clone(),
                                pid: order.identity.pid,
                                outcome,
                            }));
                        });
                    });
                }
                Effect::Arm { timer, at } => {
                    self.timers.insert(timer, at);
                }
                Effect::Disarm(timer) => {
                    self.timers.remove(&timer);
                }
                Effect::AwaitStops {
                    id,
                    services,
                    limit,
                } => spawn_await_stops(&self.tx, self.ctx.as_ref(), id, services, limit),
                Effect::Probe(order) => spawn_probe(&self.tx, order, self.cancel.clone(), false),
                Effect::AwaitReady {
                    client,
                    services,
                    deadline,
                    limit,
                } => {
                    let probed = await_ready(
                        self.ctx.as_ref(),
                        &self.tx,
                        client,
                        &services,
                        deadline,
                        &self.cancel,
                    );
                    // What the client waits for, as a pass's wait would have said it.
                    if let Some(c) = self.clients.get_mut(&client) {
                        for (service, own) in probed {
                            control::send(
                                c,
                                &Reply::Waiting {
                                    service,
                                    what: "waiting for readiness".into(),
                                    limit_ms: Some(own.min(limit).as_millis() as u64),
                                },
                            );
                        }
                    }
                }
                Effect::Tell {
                    client,
                    service,
                    what,
                } => {
                    if let Some(c) = self.clients.get_mut(&client) {
                        control::send(c, &Reply::Event { service, what });
                    }
                }
                Effect::Answer {
                    client,
                    ok,
                    message,
                } => match self.clients.remove(&client) {
                    Some(mut c) => control::send(&mut c, &Reply::Done { ok, message }),
                    // A foreground `up --wait` that failed.
                    None if client == machine::TERMINAL && !ok => {
                        let label = crate::output::paint("error:", 31, self.color);
                        line_to_stderr(&format!("{label} {message}"));
                    }
                    // Lent to the pass in flight (it hears its events): answered when the
                    // pass gives it back.
                    None if self.pass.is_some() => self.deferred.push((client, ok, message)),
                    None => {}
                },
                Effect::InterruptPass => process::interrupt(),
                Effect::KillNow => process::kill_now(),
                Effect::Say(what) => {
                    let mut note = self.reporter(Vec::new());
                    note.event("mirrord-up", &what);
                    self.journal = note.journal.take();
                }
                Effect::Notice(line) => line_to_stderr(&line),
                Effect::Exit(code) => self.exit = Some(code),
            }
        }
    }

    fn reporter(&mut self, clients: Vec<(ClientId, Client)>) -> SupervisorReporter {
        let journal = self.journal.take();
        SupervisorReporter {
            foreground: self.foreground,
            color: self.color,
            width: self.width,
            clients,
            journal: journal
                .or_else(|| self.journal_store.clone().map(crate::events::Journal::new)),
            shutting_down: false,
        }
    }

    fn run_pass(
        &mut self,
        work: Work,
        client: Option<ClientId>,
        listeners: Vec<ClientId>,
        probed: pass::Probed,
    ) {
        if let Work::Reconcile { explicit: Some(e) } = &work {
            widen_selection(&mut self.settings, e);
        }
        let mut clients = Vec::new();
        for id in client.into_iter().chain(listeners) {
            if let Some(c) = self.clients.remove(&id) {
                clients.push((id, c));
            }
        }
        let mut reporter = self.reporter(clients);
        reporter.shutting_down = matches!(work, Work::Shutdown { .. });
        if reporter.shutting_down {
            // The loop ends after this pass (`Machine::stopping`).
            crate::os::alloc::keep_freed_memory();
        }
        let ctx = self.ctx.clone();
        let mut settings = self.settings.clone();
        settings.probed = probed;
        let rt = tokio::runtime::Handle::current();
        self.pass = Some(tokio::task::spawn_blocking(move || {
            let out = if let Work::Shutdown { sweep: false, .. } = &work {
                oneshot::serve_loop_shutdown(ctx.as_ref(), &settings, &work, &mut reporter, &rt)
            } else {
                pass::run_pass(ctx.as_ref(), &settings, &work, &mut reporter)
            };
            reporter.print_failure(&out);
            (out, reporter.clients, reporter.journal)
        }));
    }
}

/// What reaches the shell.
enum Input {
    Event(Event),
    /// Groups of a stop watch ended, those one look found (before the watch's
    /// `Event::StopDone`): what a shutdown says as it happens (`oneshot::watch_stops`); the
    /// loop has no use for it.
    StopEnded(Vec<process::StopOutcome>),
    /// SIGCHLD: reap, keep the statuses.
    ChildExited,
    Control(Work, Client),
    ControlRefused(Client, String),
}

async fn supervise(ctx: &Arc<dyn Project>, opts: Options, reg: &Registration) -> Result<ExitCode> {
    let (tx, mut rx) = unbounded_channel::<Input>();
    listen_signals(&tx)?;
    listen_control(&tx, reg.listener.try_clone()?, ctx.files())?;
    // Hook (session, issue 13): the event stream and one session watcher per exec service.
    crate::event_hub::enable();
    let mut sessions = crate::session::Watchers::default();
    let publish = session_publisher(ctx);
    let mut reload_pending = false;
    let mut reload_in_pass = false;
    // A reload whose stops or session starts the loop watches is applied once a pass leaves
    // none of them.
    let mut reload_after_waits = false;
    // Each service's log stays bounded while it runs (`crate::logrotate`), told of each write
    // by the file watch's inotify instance.
    let logs_dir = ctx.store().ok().map(|s| s.dir.join("logs"));
    if let Some(dir) = &logs_dir {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut rotator = logs_dir
        .as_ref()
        .map(|_| crate::logrotate::Rotator::start());
    let logs = logs_dir.zip(rotator.as_ref().map(crate::logrotate::Rotator::feed));
    let mut watcher = FileWatcher::new(&tx, opts.watch, logs);
    // Watch before the first pass reads the file: a save right after `up -d` returns counts.
    watcher.watch(&ctx.files());
    let tail = opts.foreground.then(|| LogPrinter::start(ctx.as_ref()));
    let mut watching = true;
    // watch (issue #16): source watch of services with `watch:`; `restart-session` and the
    // dependents of an in-session restart come back as a normal restart request.
    let mut source_watch = {
        let tx = tx.clone();
        crate::watch::SourceWatch::start(
            ctx.store().ok(),
            Box::new(move |names| {
                let work = Work::Restart {
                    names,
                    timeout: None,
                };
                let _ = tx.send(Input::Control(work, Box::new(std::io::sink())));
            }),
        )
    };
    let mut exit_watch: BTreeMap<String, (i32, tokio::task::JoinHandle<()>)> = BTreeMap::new();
    // What the last pass said runs, as the exit watchers and session followers were synced to.
    let mut last_running: Vec<(String, ProcessIdentity)> = Vec::new();
    let mut trim_owed = false;
    // What a finished pass says runs and which sources it watches, for after its effects.
    let mut after_pass: Option<AfterPass> = None;
    let mut machine = Machine::new(opts.foreground);
    let mut shell = Shell {
        ctx,
        journal_store: ctx.store().ok(),
        journal: None,
        foreground: opts.foreground,
        color: opts.foreground && ctx.stderr_color(),
        width: opts.width,
        // The loop watches stops (`Effect::Stop`): a pass never waits out a grace period.
        settings: PassSettings {
            defer_stops: true,
            // Only the foreground follows the logs (`LogPrinter`).
            skip_logs: !opts.foreground,
            // Opened once, as the journal's: not walked to from `/` by every pass.
            store: ctx.store().ok(),
            ..opts.settings
        },
        tx: tx.clone(),
        clients: BTreeMap::new(),
        next_client: 0,
        timers: BTreeMap::new(),
        kill_switches: BTreeMap::new(),
        pass: None,
        deferred: Vec::new(),
        cancel: Arc::new(AtomicBool::new(false)),
        exit: None,
    };
    let first = shell.client(opts.first_client);
    let fx = machine.handle(
        Event::Request {
            client: first,
            work: Work::Reconcile {
                explicit: Some(opts.first),
            },
        },
        Instant::now(),
    );
    shell.carry_out(fx);

    while shell.exit.is_none() {
        let next_timer = shell
            .timers
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(t, at)| (*t, *at));
        let event = tokio::select! {
            Some(input) = rx.recv() => match input {
                Input::Event(e) => {
                    // Hook (session): a SIGHUP re-apply is a reload `events` reports.
                    reload_pending |= matches!(e, Event::Hangup) && !opts.foreground;
                    reload_pending |= matches!(e, Event::FileWritten); // perf5: applied at once
                    if matches!(e, Event::FileWritten | Event::FileChanged) {
                        tracing::debug!(event = ?e, "loop: file event");
                    }
                    if let Event::StopDone { id, .. } = &e {
                        shell.kill_switches.remove(id);
                    }
                    e
                }
                Input::ChildExited => {
                    process::reap_children();
                    continue;
                }
                Input::StopEnded(_) => continue,
                Input::Control(work, client) => {
                    let client = shell.client(Some(client));
                    Event::Request { client, work }
                }
                Input::ControlRefused(client, why) => {
                    refuse(client, &why);
                    continue;
                }
            },
            // Once the loop has been idle a while after a pass: what the passes made resident
            // is given back (freed heap, the pages of our code they ran: the supervisor idles
            // small), and the state versions they replaced are let go (`state::retired`). Not
            // after every pass: the next pass would fault the same pages in again (a reload is
            // several passes).
            _ = tokio::time::sleep(IDLE_TRIM), if trim_owed && shell.pass.is_none() => {
                trim_owed = false;
                crate::os::idle::release_idle_memory();
                crate::state::retired::close_all();
                continue;
            }
            _ = sleep_until(next_timer.map(|(_, at)| at)), if next_timer.is_some() => {
                let (timer, _) = next_timer.expect("guarded");
                shell.timers.remove(&timer);
                // Hook (session): a debounce made stale (by a complete write applied at once)
                // applies nothing: the next pass, for whatever reason, is no reload.
                reload_pending |=
                    matches!(timer, Timer::Debounce) && machine.debounce_due(Instant::now());
                Event::Timer(timer)
            }
            done = async { shell.pass.as_mut().expect("guarded").await }, if shell.pass.is_some() => {
                shell.pass = None;
                trim_owed = true;
                tracing::debug!("loop: pass done");
                let (mut out, clients, journal) = done.context("a reconcile pass panicked")?;
                shell.clients.extend(clients);
                shell.journal = journal;
                for (client, ok, message) in std::mem::take(&mut shell.deferred) {
                    shell.carry_out(vec![Effect::Answer { client, ok, message }]);
                }
                let files_changed = out
                    .watched_files
                    .as_ref()
                    .is_some_and(|files| watcher.watch(files));
                shell.width = shell
                    .width
                    .max(out.logs.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0));
                if let Some(t) = &tail {
                    t.follow(&out.logs);
                }
                // What runs is what ran after the last pass (the usual pass: nothing started
                // or ended): its exits are watched, its sessions followed already. An exit
                // watch that ended has told its exit; the pass that settles it changes this.
                // Else what runs now, and the services' source watches, are followed once the
                // machine has had the pass's end and its effects are carried out: a stop's
                // thread starts first, it does not wait for this bookkeeping.
                let same_running = out.running == last_running
                    && process::pidfds::count() == exit_watch.len();
                after_pass = Some((
                    (!same_running).then(|| out.running.clone()),
                    out.watches.take(),
                ));
                // Hook (session): say that a reload (file change, SIGHUP) was applied.
                let reloaded = std::mem::take(&mut reload_in_pass) && out.reload_error.is_none();
                let pending = reload_after_waits || reloaded;
                reload_after_waits = pending && (out.stops.is_some() || !out.sessions.is_empty());
                if pending && !reload_after_waits {
                    publish("mirrord-up", "reload applied");
                }
                Event::PassDone(pass_done(out, files_changed))
            }
        };
        let fx = machine.handle(event, Instant::now());
        let idle = shell.pass.is_none();
        shell.carry_out(fx);
        // Not once the loop ends (its last pass answered): nothing is followed any more, and
        // taking each exit watch apart (a pidfd out of the reactor and closed, 500 of them
        // after a `down` of 500 services) would only delay the exit that `down` waits for.
        if let Some((running, watches)) = after_pass.take()
            && shell.exit.is_none()
        {
            if let Some(running) = running {
                watch_exits(&tx, &mut exit_watch, &running);
                // Hook (session, issue 13): follow the sessions of what runs now.
                if let Some(store) = &shell.journal_store {
                    sessions.sync(store, &running, &publish);
                }
                last_running = running;
            }
            if watching {
                // watch (issue #16); not once the loop is ending (its watches are let go).
                source_watch.update(watches, &last_running);
            }
        }
        if machine.is_ending() && watching {
            watching = false;
            // Closing an inotify instance that watched something may wait for the kernel
            // (fsnotify lets go of its marks after an SRCU grace period: 4–18 ms here), and so
            // does the exit of a process that still holds one. The loop is ending: its watches
            // are removed now, so that the marks are let go while the services stop instead of
            // delaying the supervisor's exit — which `down` waits for (`KEPT_TO_EXIT`).
            watcher.close();
            drop(rotator.take());
            source_watch.update(Some(Vec::new()), &[]);
            // Likewise the state versions replaced (held open, `state::retired`).
            crate::state::retired::let_go_from_now();
        }
        if idle && shell.pass.is_some() {
            reload_in_pass = std::mem::take(&mut reload_pending); // hook (session)
        }
    }
    sessions.stop_all(); // hook (session)
    shell.cancel.store(true, Ordering::SeqCst);
    if let Some(t) = &tail {
        t.flush();
    }
    let code = shell.exit.unwrap_or(0);
    if !opts.foreground {
        // Detached, nothing follows the loop but the process's end, which `down` waits for:
        // it ends here, its services stopped, its answers given and its state saved. Returning
        // would first take the loop apart (each exit watch's pidfd taken out of the reactor
        // and closed, the runtime's threads joined, the heap freed piece by piece: ≈1 ms at
        // 100 services) for an exit that lets go of all of it at once.
        finish(ctx.as_ref(), &reg.socket);
        std::process::exit(i32::from(code));
    }
    Ok(ExitCode::from(code))
}

/// What the machine needs to know of a finished pass.
fn pass_done(out: PassOutcome, files_changed: bool) -> PassDone {
    PassDone {
        result: out.result.unwrap_or_else(|| Err("no result".into())),
        running: out.running.into_iter().map(|(n, id)| (n, id.pid)).collect(),
        next_due: out
            .next_due_ms
            .map(|t| Duration::from_millis(t.saturating_sub(now_ms()))),
        unsettled: out.unsettled,
        files_changed,
        abort: out.abort,
        all_down: out.all_down,
        probes: out.probes,
        waiting: out.waiting,
        failed: out.failed,
        stops: out.stops,
        sessions: out.sessions,
        foreign: out.owned_elsewhere,
        left: out.left_to_others,
    }
}

/// Watches the stops of a pass ([`Effect::Stop`]) on a thread of their own (a kept one,
/// [`workers`]): deepest level first, each level at once (its signal, SIGKILL after its grace
/// period or at once after a second Ctrl-C); their outcomes come back as `Event::StopDone`.
/// `last`: the process's final stop (`oneshot::watch_stops`: the loop's shutdown, a one-shot
/// `down` or `ci stop`), which the process ends after — the groups' outcomes also come as they
/// end (`Input::StopEnded`, those found ended by one look together: what a shutdown says as it
/// happens; the loop has no use for them, a `restart` of 500 would wake it up to 500 more
/// times), the pidfds of what ended are closed once it is over, and the thread ends after it,
/// no worker being kept from then on ([`workers::Workers::run_last`]).
fn spawn_stop(
    tx: &UnboundedSender<Input>,
    id: u64,
    stops: Vec<crate::engine::PendingStop>,
    switch: Arc<AtomicUsize>,
    last: bool,
) {
    let tx = tx.clone();
    let job: Box<dyn FnOnce() + Send> = Box::new(move || {
        tracing::debug!(id, "stop: thread started");
        let mut by_level: BTreeMap<std::cmp::Reverse<usize>, Vec<process::StopRequest>> =
            BTreeMap::new();
        for p in stops {
            by_level
                .entry(std::cmp::Reverse(p.level))
                .or_default()
                .push(p.request);
        }
        let mut outcomes = Vec::new();
        for (level, (_, mut requests)) in by_level.into_iter().enumerate() {
            let grace = requests.iter().map(|r| r.timeout).max().unwrap_or_default();
            let _ = tx.send(Input::Event(Event::StopSignalled { id, level, grace }));
            // The machine's grace timer kills (the switch); the thread's own deadline is a
            // backstop, should the loop not answer.
            for r in &mut requests {
                r.timeout = r.timeout.saturating_add(GRACE_BACKSTOP);
            }
            let kill = || switch.load(Ordering::SeqCst) > level;
            let mut ended = |o: &[&process::StopOutcome]| {
                if last {
                    let _ = tx.send(Input::StopEnded(o.iter().map(|&o| o.clone()).collect()));
                }
            };
            outcomes.extend(process::stop_groups_killable(&requests, &mut ended, &kill));
        }
        let _ = tx.send(Input::Event(Event::StopDone { id, outcomes }));
        if last {
            // While the loop records the stop: the exit would close them otherwise.
            process::pidfds::release_ended();
        }
    });
    if last {
        workers::STOPS.run_last(job);
        workers::SPAWNS.end_kept();
    } else {
        workers::STOPS.run(job);
    }
}

/// Waits on a thread of its own for other processes' stops of `services` to end (a blocking
/// `flock` per service, `stop_owner::wait_released`), within `limit`; then
/// `Event::StopsReleased`.
fn spawn_await_stops(
    tx: &UnboundedSender<Input>,
    ctx: &dyn Project,
    id: u64,
    services: Vec<String>,
    limit: Duration,
) {
    let tx = tx.clone();
    let store = ctx.store();
    std::thread::spawn(move || {
        let held = store.map_or_else(
            |_| Vec::new(),
            |s| crate::stop_owner::wait_released(&s, &services, limit),
        );
        let _ = tx.send(Input::Event(Event::StopsReleased { id, held }));
    });
}

/// How long the loop is idle after a pass before it gives back what the passes made resident
/// ([`crate::os::idle::release_idle_memory`]).
const IDLE_TRIM: Duration = Duration::from_millis(300);

/// How long after its grace period a stop's thread kills by itself when the loop's grace
/// timer ([`Timer::Grace`]) has not fired.
const GRACE_BACKSTOP: Duration = Duration::from_secs(2);

/// Hook (session, issue 13): session connected/lost go to the journal (`logs`, and from there
/// to `events`); incoming requests and `reload applied` only to `events`.
fn session_publisher(ctx: &Arc<dyn Project>) -> crate::session::Publish {
    let journal = ctx.store().ok().map(crate::events::Journal::new);
    Arc::new(
        move |service: &str, what: &str| match (&journal, what.starts_with("session ")) {
            (Some(j), true) => j.clone().record(service, what),
            _ => crate::event_hub::publish(service, what),
        },
    )
}

/// Probes one service's readiness on a thread of its own (a TCP connect or an HTTP request
/// may take a while): until it passes, the process ends, the timeout, or the loop ends.
/// `for_wait`: an `up --wait`'s probe (its result is `Event::WaitProbed`).
fn spawn_probe(
    tx: &UnboundedSender<Input>,
    order: ProbeOrder,
    cancel: Arc<AtomicBool>,
    for_wait: bool,
) {
    let tx = tx.clone();
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(2);
        // Who answered the probe's port instead of the service, when someone did.
        let mut foreign: Option<String>;
        let outcome = loop {
            if cancel.load(Ordering::SeqCst) {
                return;
            }
            // Honest: the service's own process passed, and still runs.
            match order.probe.check_service(
                &order.log,
                order.offset,
                Some(&order.identity),
                order.owner_check,
            ) {
                crate::readiness::Check::Ready => break ProbeOutcome::Ready,
                crate::readiness::Check::NotYet => foreign = None,
                other => foreign = other.note(),
            }
            if order.identity.liveness() != Liveness::Alive {
                break ProbeOutcome::Ended;
            }
            if started.elapsed() >= order.timeout {
                break ProbeOutcome::TimedOut(order.timeout, foreign);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        };
        let (service, pid) = (order.service, order.identity.pid);
        let _ = tx.send(Input::Event(if for_wait {
            Event::WaitProbed {
                service,
                pid,
                outcome,
            }
        } else {
            Event::Probed {
                service,
                pid,
                outcome,
            }
        }));
    });
}

/// `up --wait`: looks at the services waited for and probes those that run; what it found
/// comes back as `Event::Awaiting`.
fn await_ready(
    ctx: &dyn Project,
    tx: &UnboundedSender<Input>,
    client: ClientId,
    services: &[String],
    deadline: Instant,
    cancel: &Arc<AtomicBool>,
) -> Vec<(String, Duration)> {
    let state = ctx.store().ok().and_then(|s| s.read().ok().flatten());
    let looked = state
        .map(|state| await_ready::look(&state, services, deadline, Instant::now()))
        .unwrap_or_default();
    let probing = looked
        .probes
        .iter()
        .map(|(o, _)| (o.service.clone(), o.identity.pid))
        .collect();
    let _ = tx.send(Input::Event(Event::Awaiting {
        client,
        probing,
        ready: looked.ready,
        ended: looked.ended,
    }));
    let mut probed = Vec::new();
    for (order, own) in looked.probes {
        probed.push((order.service.clone(), own));
        spawn_probe(tx, order, cancel.clone(), true);
    }
    probed
}

/// `up -d api` to a supervisor of `web` runs both; `up -d` alone runs everything.
fn widen_selection(settings: &mut PassSettings, apply: &ApplyOptions) {
    if apply.services.is_empty() {
        settings.selection.clear();
    } else {
        // Named services join the selection, or, when it is "all", the list of those
        // `skip`/`profiles` leave out of it.
        let list = if settings.selection.is_empty() {
            &mut settings.named
        } else {
            &mut settings.selection
        };
        for s in &apply.services {
            if !list.contains(s) {
                list.push(s.clone());
            }
        }
    }
    if apply.profiles.is_some() {
        settings.profiles = apply.profiles.clone();
    }
    if apply.mode.is_some() {
        settings.mode = apply.mode;
    }
}

fn refuse(mut client: Client, why: &str) {
    control::send(
        &mut client,
        &Reply::Done {
            ok: false,
            message: why.to_owned(),
        },
    );
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn listen_signals(tx: &UnboundedSender<Input>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    for (kind, event) in [
        (SignalKind::hangup(), 0),
        (SignalKind::interrupt(), 1),
        (SignalKind::terminate(), 1),
        (SignalKind::child(), 2),
    ] {
        let mut stream = signal(kind).context("cannot install a signal handler")?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                let ev = match event {
                    0 => Input::Event(Event::Hangup),
                    1 => Input::Event(Event::Interrupt),
                    _ => Input::ChildExited,
                };
                if tx.send(ev).is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}

/// Accepts control connections (`control::serve`: bounded, timed out, checked) and hands each
/// request to the loop with the connection as the client that will receive the replies.
fn listen_control(
    tx: &UnboundedSender<Input>,
    listener: std::os::unix::net::UnixListener,
    files: Vec<PathBuf>,
) -> Result<()> {
    let tx = tx.clone();
    control::serve(listener, move |req, client| {
        // Hook (session, issue 13): `events` streams on its connection, outside the loop.
        if let Request::Events { services, since_ms } = req {
            crate::event_hub::subscribe(client, services, since_ms);
            return;
        }
        let _ = tx.send(match work_of(req, &files) {
            Ok(work) => Input::Control(work, client),
            Err(why) => Input::ControlRefused(client, why),
        });
    })
}

fn secs(s: Option<f64>) -> Option<Duration> {
    s.map(|s| Duration::from_secs_f64(s.max(0.0)))
}

/// `files`: the supervisor's `-f` files, the first one first.
fn work_of(req: Request, files: &[PathBuf]) -> Result<Work, String> {
    let file = files.first().map(PathBuf::as_path).unwrap_or(Path::new(""));
    Ok(match req {
        Request::Apply {
            file: theirs,
            services,
            mode,
            force_recreate,
            wait,
            wait_timeout_s,
            profiles,
            overlays,
        } => {
            if theirs != file {
                return Err(format!(
                    "this project's supervisor runs {}, not {}; stop it first with `mirrord-up down`, or pick another project name with -p",
                    file.display(),
                    theirs.display()
                ));
            }
            if let Some(theirs) = overlays
                && theirs != files[1..]
            {
                let list = |fs: &[PathBuf]| match fs {
                    [] => "no other file".to_owned(),
                    fs => fs
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                };
                return Err(format!(
                    "this project's supervisor merges {} over {}, not {}; stop it first with `mirrord-up down`",
                    list(&files[1..]),
                    file.display(),
                    list(&theirs)
                ));
            }
            Work::Reconcile {
                explicit: Some(ApplyOptions {
                    force_recreate,
                    wait: wait.then(|| Duration::from_secs_f64(wait_timeout_s.max(0.0))),
                    services,
                    mode,
                    profiles,
                }),
            }
        }
        Request::Stop {
            services,
            timeout_s,
        } => Work::Stop {
            names: services,
            timeout: secs(timeout_s),
        },
        Request::Start { services } => Work::Start { names: services },
        Request::Restart {
            services,
            timeout_s,
        } => Work::Restart {
            names: services,
            timeout: secs(timeout_s),
        },
        Request::Shutdown { timeout_s } => Work::Shutdown {
            timeout: secs(timeout_s),
            forget: true,
            only: None,
            sweep: false,
        },
        Request::Events { .. } => return Err("`events` is not a pass".to_owned()),
    })
}

/// One task per running service, waiting on its pidfd; replaced when the PID changes. The
/// pidfds are held in [`process::pidfds`] for as long as their watch lasts: the passes ask
/// them whether a service runs, instead of reading `/proc`.
fn watch_exits(
    tx: &UnboundedSender<Input>,
    watching: &mut BTreeMap<String, (i32, tokio::task::JoinHandle<()>)>,
    running: &[(String, ProcessIdentity)],
) {
    let wanted: BTreeMap<&String, &ProcessIdentity> = running.iter().map(|(n, p)| (n, p)).collect();
    watching.retain(|name, (pid, task)| {
        let keep = wanted.get(name).is_some_and(|p| p.pid == *pid) && !task.is_finished();
        if !keep {
            task.abort();
        }
        keep
    });
    // A pidfd is held while its service is watched (an exited one until the pass that
    // settles it: it answers `exited` without a `/proc` read).
    let watched: std::collections::HashSet<i32> = watching
        .values()
        .map(|(pid, _)| *pid)
        .chain(running.iter().map(|(_, p)| p.pid))
        .collect();
    process::pidfds::retain(|pid| watched.contains(&pid));
    for (name, identity) in wanted {
        if watching.contains_key(name) {
            continue;
        }
        let tx = tx.clone();
        let pid = identity.pid;
        // Held now (the pass that follows answers from it); `None`: gone already.
        let fd = process::pidfds::hold(identity);
        let service = name.clone();
        let task = tokio::spawn(async move {
            if let Some(fd) = fd {
                wait_for_exit(fd).await;
            }
            let _ = tx.send(Input::Event(Event::ServiceExited { name: service, pid }));
        });
        watching.insert(name.clone(), (pid, task));
    }
}

/// Waits until the pidfd `fd` is readable: its process exited.
async fn wait_for_exit(fd: Arc<std::os::fd::OwnedFd>) {
    // SAFETY: the AsyncFd owns a reference to the descriptor (`Arc<OwnedFd>`), which keeps it
    // open until the AsyncFd is dropped; nothing closes or replaces it meanwhile.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    };
    let Ok(fd) = registered else {
        return;
    };
    let _ = fd.readable().await;
}

/// Watches the directories of the YAML and its side files; only events naming one of those
/// files count (editors also write swap and backup files next to them). Also watches the logs'
/// directory for the log rotation (`logs`), whether the file is watched or not.
///
/// One inotify instance, read by a task of the loop itself: a save wakes the loop straight
/// from its `epoll`, not through a watcher thread and a channel (one thread wake-up less
/// between the save and its pass). One for both, not one each: two instances closed side by
/// side at the loop's end mostly made one of them wait out a whole SRCU grace period of the
/// kernel's (8–15 ms here), and the supervisor's exit with it, which `down` waits for.
struct FileWatcher {
    tx: UnboundedSender<Input>,
    enabled: bool,
    inner: Option<DirWatch>,
    files: Vec<PathBuf>,
    logs: Option<(PathBuf, crate::logrotate::RotationFeed)>,
}

/// The task reading one inotify instance; told to end by `stop` (true: the process is ending,
/// see [`KEPT_TO_EXIT`]).
struct DirWatch {
    stop: Option<tokio::sync::oneshot::Sender<bool>>,
}

impl DirWatch {
    fn end(&mut self, process_ending: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(process_ending);
        }
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        self.end(false);
    }
}

/// The inotify instances of a loop that is ending, their watches removed, kept open until the
/// process exits. Removing a watch frees its mark after an SRCU grace period, and closing the
/// instance waits for that: closed at once on a thread, the close made the kernel's two
/// reapers (the marks', the inodes' connectors') wait for grace periods side by side, which
/// made one of them slow (4–18 ms here, in traces of `down` at 100 services: longer than the
/// stop, and the supervisor's exit, which `down` waits for, waited for that thread). Kept, the
/// reapers run on their own, each after the other, and an exit ~10 ms later finds them done.
static KEPT_TO_EXIT: std::sync::Mutex<Vec<Inotify>> = std::sync::Mutex::new(Vec::new());

/// An inotify instance as tokio's `AsyncFd` wants it.
struct Inotify(nix::sys::inotify::Inotify);

impl std::os::fd::AsRawFd for Inotify {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// What the watch asks inotify for: a complete write (`IN_CLOSE_WRITE`, `IN_MOVED_TO`) and
/// every other change of a name in the directory.
fn watch_mask() -> nix::sys::inotify::AddWatchFlags {
    use nix::sys::inotify::AddWatchFlags as F;
    F::IN_CLOSE_WRITE
        | F::IN_MOVED_TO
        | F::IN_MOVED_FROM
        | F::IN_CREATE
        | F::IN_DELETE
        | F::IN_MODIFY
        | F::IN_ATTRIB
}

impl FileWatcher {
    fn new(
        tx: &UnboundedSender<Input>,
        enabled: bool,
        logs: Option<(PathBuf, crate::logrotate::RotationFeed)>,
    ) -> FileWatcher {
        FileWatcher {
            tx: tx.clone(),
            enabled,
            inner: None,
            files: Vec::new(),
            logs,
        }
    }

    /// Watches nothing from now on, the logs neither: the loop is ending (its watches are
    /// removed, the instance kept until the process exits: [`KEPT_TO_EXIT`]).
    fn close(&mut self) {
        self.enabled = false;
        self.logs = None;
        if let Some(mut inner) = self.inner.take() {
            inner.end(true);
        }
    }

    /// Watches `files` (replacing the previous set; none when the file is not watched) and the
    /// logs; true if the set of files changed.
    fn watch(&mut self, files: &[PathBuf]) -> bool {
        let files = if self.enabled { files } else { &[] };
        if (self.inner.is_some() && self.files == files)
            || (files.is_empty() && self.logs.is_none())
        {
            return false;
        }
        use nix::sys::inotify::{InitFlags, Inotify as Instance};
        let watched = Instance::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(std::io::Error::from)
            .and_then(|i| {
                // SAFETY: the instance owns its descriptor, which stays open and the same
                // until the AsyncFd lets it go (`into_inner` in `read_watch`, or its drop).
                unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        Inotify(i),
                        tokio::io::Interest::READABLE,
                    )
                }
                .map_err(std::io::Error::from)
            });
        let fd = match watched {
            Ok(fd) => fd,
            Err(e) => {
                if self.enabled {
                    eprintln!(
                        "warning: cannot watch the file for changes ({e}); send SIGHUP to reload"
                    );
                }
                if self.logs.is_some() {
                    tracing::warn!("logs are rotated only at restarts: no inotify instance: {e}");
                }
                return false;
            }
        };
        let dirs: std::collections::BTreeSet<&Path> =
            files.iter().filter_map(|f| f.parent()).collect();
        let mut dir_of = std::collections::HashMap::new();
        for d in dirs {
            match fd.get_ref().0.add_watch(d, watch_mask()) {
                Ok(wd) => {
                    dir_of.insert(wd, d.to_owned());
                }
                Err(e) => eprintln!("warning: cannot watch {}: {e}", d.display()),
            }
        }
        // Every write of a service's log (`IN_MASK_ADD`: the same directory as the file's
        // keeps the file's events too).
        let logs = self.logs.as_ref().and_then(|(dir, feed)| {
            use nix::sys::inotify::AddWatchFlags as F;
            let mask_add = F::from_bits_retain(nix::libc::IN_MASK_ADD);
            match fd.get_ref().0.add_watch(dir, F::IN_MODIFY | mask_add) {
                Ok(wd) => Some(LogsWatch {
                    wd,
                    dir: dir.clone(),
                    feed: feed.clone(),
                }),
                Err(e) => {
                    tracing::warn!(
                        "logs are rotated only at restarts: cannot watch {}: {e}",
                        dir.display()
                    );
                    None
                }
            }
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(read_watch(
            fd,
            dir_of,
            files.to_vec(),
            logs,
            self.tx.clone(),
            stopped,
        ));
        let first = self.inner.is_none();
        self.inner = Some(DirWatch { stop: Some(stop) });
        self.files = files.to_vec();
        !first
    }
}

/// The logs' directory in the watch: the log rotation is told of each write there.
struct LogsWatch {
    wd: nix::sys::inotify::WatchDescriptor,
    dir: PathBuf,
    feed: crate::logrotate::RotationFeed,
}

/// Tells the loop what each event of `fd` means for `names`, and the log rotation which logs
/// were written, until `stop`; then removes its watches and lets the instance go: on a thread
/// of its own (closing an inotify instance that watched something may wait for the kernel, not
/// to be spent in the loop), or, when the process is ending, at its exit ([`KEPT_TO_EXIT`]).
async fn read_watch(
    fd: tokio::io::unix::AsyncFd<Inotify>,
    dir_of: std::collections::HashMap<nix::sys::inotify::WatchDescriptor, PathBuf>,
    names: Vec<PathBuf>,
    logs: Option<LogsWatch>,
    tx: UnboundedSender<Input>,
    mut stop: tokio::sync::oneshot::Receiver<bool>,
) {
    let mut process_ending = false;
    loop {
        let mut ready = tokio::select! {
            ending = &mut stop => {
                process_ending = ending.unwrap_or(false);
                break;
            }
            ready = fd.readable() => match ready {
                Ok(ready) => ready,
                Err(_) => break,
            },
        };
        match ready.get_inner().0.read_events() {
            Ok(events) => {
                for ev in events {
                    if let (Some(logs), Some(name)) = (&logs, &ev.name)
                        && logs.wd == ev.wd
                        && ev
                            .mask
                            .contains(nix::sys::inotify::AddWatchFlags::IN_MODIFY)
                    {
                        logs.feed.wrote(logs.dir.join(name));
                    }
                    let path = ev
                        .name
                        .as_ref()
                        .and_then(|n| dir_of.get(&ev.wd).map(|d| d.join(n)));
                    if let Some(e) = file_event(ev.mask, path.as_deref(), &names) {
                        let _ = tx.send(Input::Event(e));
                    }
                }
            }
            Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
            Err(e) => {
                eprintln!("warning: the file watch ended ({e}); send SIGHUP to reload");
                break;
            }
        }
    }
    let instance = fd.into_inner();
    // Its watches are removed first: a process that exits holding an instance with watches
    // in place waits for the kernel to free their marks (an SRCU grace period: 14 ms here, in
    // 9 exits of 10). The loop is ending: the instance is kept until the exit, by which time
    // the marks are freed ([`KEPT_TO_EXIT`]). Replaced (another set of files), it closes on a
    // thread of its own, as the close may wait; without a thread (out of them), here: the loop
    // waits, nothing is lost.
    let logs = logs.map(|l| l.wd);
    for wd in dir_of.into_keys().chain(logs) {
        let _ = instance.0.rm_watch(wd);
    }
    if process_ending && let Ok(mut kept) = KEPT_TO_EXIT.lock() {
        kept.push(instance);
        return;
    }
    let _ = std::thread::Builder::new()
        .name("inotify-close".into())
        .spawn(move || drop(instance));
}

/// What an inotify event (`mask`, the path it names) means for the watched `names`: a
/// complete write (closed after writing, renamed over) is applied at once
/// ([`Event::FileWritten`]); another change of one of them waits for the debounce
/// ([`Event::FileChanged`]), and so does a lost event (the queue overflowed: any of them may
/// have changed). A save by rename is one event (`IN_MOVED_TO`), one write.
fn file_event(
    mask: nix::sys::inotify::AddWatchFlags,
    path: Option<&Path>,
    names: &[PathBuf],
) -> Option<Event> {
    use nix::sys::inotify::AddWatchFlags as F;
    if mask.contains(F::IN_Q_OVERFLOW) {
        return Some(Event::FileChanged);
    }
    let path = path?;
    if !names.iter().any(|n| n == path) {
        return None;
    }
    if mask.intersects(F::IN_CLOSE_WRITE | F::IN_MOVED_TO) {
        return Some(Event::FileWritten);
    }
    mask.intersects(watch_mask()).then_some(Event::FileChanged)
}

/// Reports of a pass: to the supervisor's own output and to the client that asked.
struct SupervisorReporter {
    foreground: bool,
    color: bool,
    width: usize,
    /// The clients that hear this pass's events: the one that asked, and those whose request
    /// waits for a service this pass may start.
    clients: Vec<(ClientId, Client)>,
    /// The project's events file, read by `logs`.
    journal: Option<crate::events::Journal>,
    /// The final stop: the foreground shows each stop as it begins.
    shutting_down: bool,
}

impl SupervisorReporter {
    /// An event's line in the supervisor's output (the terminal in the foreground, else
    /// `supervisor.log`), without its newline.
    fn line(&self, service: &str, what: &str) -> String {
        if self.foreground {
            let name = crate::output::paint(
                &format!("{service:<w$}", w = self.width),
                crate::output::color_of(service),
                self.color,
            );
            format!("{name}  {what}")
        } else {
            format!(
                "{} {service}  {what}",
                humantime::format_rfc3339_millis(std::time::SystemTime::now())
            )
        }
    }
}

impl Reporter for SupervisorReporter {
    fn event(&mut self, service: &str, what: &str) {
        self.events(&[(service.to_owned(), what.to_owned())]);
    }

    /// One write each to the events file, the output and each client.
    fn events(&mut self, batch: &[(String, String)]) {
        if batch.is_empty() {
            return;
        }
        if let Some(j) = &mut self.journal {
            j.record_all(batch);
        }
        let text: String = batch
            .iter()
            .map(|(service, what)| self.line(service, what) + "\n")
            .collect();
        crate::output::text_to(true, &text);
        let replies: Vec<Reply> = batch
            .iter()
            .map(|(service, what)| Reply::Event {
                service: service.clone(),
                what: what.clone(),
            })
            .collect();
        for (_, c) in &mut self.clients {
            control::send_all(c, &replies);
        }
    }

    fn waiting(&mut self, service: &str, what: &str, limit: Option<Duration>) {
        self.waitings(what, &[(service, limit)]);
    }

    /// One write each to the output and each client (a `down` of 500 services sent its
    /// clients 500 lines one by one before its first signal: 1.1 ms).
    fn waitings(&mut self, what: &str, waits: &[(&str, Option<Duration>)]) {
        if waits.is_empty() {
            return;
        }
        if self.foreground && self.shutting_down {
            let text: String = waits
                .iter()
                .map(|(service, limit)| {
                    let name = crate::output::paint(
                        &format!("{service:<w$}", w = self.width),
                        crate::output::color_of(service),
                        self.color,
                    );
                    let within = limit
                        .map(|l| format!(" (grace period {})", crate::output::duration(l)))
                        .unwrap_or_default();
                    format!("{name}  {what}…{within}\n")
                })
                .collect();
            crate::output::text_to(true, &text);
        }
        let replies: Vec<Reply> = waits
            .iter()
            .map(|(service, limit)| Reply::Waiting {
                service: (*service).to_owned(),
                what: what.to_owned(),
                limit_ms: limit.map(|l| l.as_millis() as u64),
            })
            .collect();
        for (_, c) in &mut self.clients {
            control::send_all(c, &replies);
        }
    }
}

/// One line on stderr in one `write` (stderr is unbuffered, and `eprintln!` writes each
/// piece of its format on its own), through `output::write_stderr`, which also waits for a
/// batch of service lines being written to the same terminal or pipe: in the foreground, an
/// event line never lands in the middle of a service's line, nor one of those in it.
pub fn line_to_stderr(line: &str) {
    crate::output::line_to(true, format_args!("{line}"));
}

impl SupervisorReporter {
    /// The supervisor's own output gets failures only (the events already told the rest);
    /// the client's answer is the machine's (`Effect::Answer`).
    fn print_failure(&mut self, out: &PassOutcome) {
        let (ok, message) = match &out.result {
            Some(Ok(summary)) => (true, summary.clone()),
            Some(Err(e)) => (false, e.clone()),
            None => (false, "no result".to_owned()),
        };
        let told = out.reload_error_told && out.reload_error.as_deref() == Some(message.as_str());
        // Sessions that died before their `Ready!` (settled in this pass, started in another).
        let more: Vec<String> = out
            .failed
            .iter()
            .map(|(n, why)| format!("{n} failed to start: {why}"))
            .filter(|line| ok || !message.contains(line.as_str()))
            .collect();
        let label = crate::output::paint("error:", 31, self.color);
        if !ok && !told {
            eprintln!("{label} {message}");
        }
        if !more.is_empty() {
            eprintln!("{label} {}", more.join("; "));
        }
    }
}

/// Foreground `up`: prints every service's new log lines, `name | line`, as they are written.
struct LogPrinter {
    tx: std::sync::mpsc::Sender<TailMsg>,
    done: std::sync::mpsc::Receiver<()>,
}

enum TailMsg {
    Changed,
    Follow(Vec<(String, PathBuf, u64)>),
    Flush,
}

impl LogPrinter {
    fn start(ctx: &dyn Project) -> LogPrinter {
        let (tx, rx) = std::sync::mpsc::channel::<TailMsg>();
        let (done_tx, done) = std::sync::mpsc::channel();
        let color = ctx.stdout_color();
        let logs_dir = ctx.store().map(|s| s.dir.join("logs")).ok();
        let fs_tx = tx.clone();
        std::thread::spawn(move || {
            use notify::Watcher;
            let _watcher = logs_dir.and_then(|dir| {
                let _ = std::fs::create_dir_all(&dir);
                let mut w =
                    notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                        if res.is_ok_and(|e| {
                            !matches!(e.kind, notify::EventKind::Access(_))
                                && e.paths.iter().any(|p| crate::tail::is_live_log(p))
                        }) {
                            let _ = fs_tx.send(TailMsg::Changed);
                        }
                    })
                    .ok()?;
                w.watch(&dir, notify::RecursiveMode::NonRecursive).ok()?;
                Some(w)
            });
            let mut tail = crate::tail::LogTail::default();
            let mut width = 0;
            let mut prefixes = crate::output::Prefixes::default();
            // Buffered: one write per chunk of lines, not one per line.
            let mut print = |tail: &mut crate::tail::LogTail, width: usize| {
                let mut out =
                    std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
                let _ = tail.read_new(&mut |name, line| {
                    out.write_all(prefixes.get(name, width, color).as_bytes())?;
                    out.write_all(line)?;
                    out.write_all(b"\n")
                });
                let _ = out.flush();
            };
            while let Ok(first) = rx.recv() {
                // What queued up meanwhile (a loud service's writes: one change each) is one
                // read; the files' lines so far go out before a file followed is replaced, and
                // a flush is answered after the read.
                let mut flush = false;
                let queued = std::iter::from_fn(|| rx.try_recv().ok());
                for msg in std::iter::once(first).chain(queued) {
                    match msg {
                        TailMsg::Changed => {}
                        TailMsg::Flush => flush = true,
                        TailMsg::Follow(list) => {
                            print(&mut tail, width);
                            for (name, path, offset) in list {
                                tail.follow(&name, &path, offset);
                            }
                            width = tail.names().map(String::len).max().unwrap_or(0);
                        }
                    }
                }
                print(&mut tail, width);
                if flush {
                    let _ = done_tx.send(());
                }
            }
        });
        LogPrinter { tx, done }
    }

    fn follow(&self, logs: &[(String, PathBuf, u64)]) {
        let _ = self.tx.send(TailMsg::Follow(logs.to_vec()));
    }

    /// Prints what is left before the process ends.
    fn flush(&self) {
        if self.tx.send(TailMsg::Flush).is_ok() {
            let _ = self.done.recv_timeout(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Request as Asked, UpRequest};

    /// The stops a level begins reach each client in one write, every one of them (a `down`
    /// of 500 services wrote its client 500 times before its first signal).
    #[test]
    fn the_waits_that_begin_together_reach_a_client_in_one_write() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);
        impl Write for Writes {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().push(buf.to_vec());
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let writes = Writes::default();
        let mut reporter = SupervisorReporter {
            foreground: false,
            color: false,
            width: 3,
            clients: vec![(1, Box::new(writes.clone()))],
            journal: None,
            shutting_down: true,
        };
        let limit = Some(Duration::from_secs(10));
        reporter.waitings("stopping", &[("api", limit), ("db", limit), ("web", None)]);
        let writes = writes.0.lock().unwrap();
        assert_eq!(writes.len(), 1, "one write");
        let said: Vec<(String, Option<u64>)> = String::from_utf8_lossy(&writes[0])
            .lines()
            .map(
                |l| match serde_json::from_str::<Reply>(l).expect("a reply line") {
                    Reply::Waiting {
                        service,
                        what,
                        limit_ms,
                    } => {
                        assert_eq!(what, "stopping");
                        (service, limit_ms)
                    }
                    other => panic!("not a wait: {other:?}"),
                },
            )
            .collect();
        assert_eq!(
            said,
            [
                ("api".to_owned(), Some(10_000)),
                ("db".to_owned(), Some(10_000)),
                ("web".to_owned(), None)
            ]
        );
    }

    /// A save by rename or a close after writing is one write, applied at once; another
    /// change of the file waits for the debounce, and so does an overflow of the queue;
    /// another file's events are not told.
    #[test]
    fn a_complete_write_is_told_at_once_and_another_change_after_the_quiet() {
        use nix::sys::inotify::AddWatchFlags as F;
        let file = PathBuf::from("/p/mirrord-up.yaml");
        let tmp = PathBuf::from("/p/.mirrord-up.yaml.swp");
        let names = vec![file.clone()];
        let told =
            |mask, path: Option<&PathBuf>| file_event(mask, path.map(|p| p.as_path()), &names);
        let written = |e: Option<Event>| matches!(e, Some(Event::FileWritten));
        let changed = |e: Option<Event>| matches!(e, Some(Event::FileChanged));
        // Renamed over it: the temporary file leaves, the file arrives.
        assert!(told(F::IN_MOVED_FROM, Some(&tmp)).is_none());
        assert!(written(told(F::IN_MOVED_TO, Some(&file))));
        // Closed after writing.
        assert!(written(told(F::IN_CLOSE_WRITE, Some(&file))));
        // Written in place, created, removed, renamed away, its mode changed: after the quiet.
        for mask in [
            F::IN_MODIFY,
            F::IN_CREATE,
            F::IN_DELETE,
            F::IN_MOVED_FROM,
            F::IN_ATTRIB,
        ] {
            assert!(changed(told(mask, Some(&file))), "{mask:?}");
        }
        // Another file of the directory, or the directory itself.
        assert!(told(F::IN_CLOSE_WRITE, Some(&tmp)).is_none());
        assert!(told(F::IN_MODIFY, Some(&tmp)).is_none());
        assert!(told(F::IN_MODIFY, None).is_none());
        // Events were lost: the file may have changed.
        assert!(changed(told(F::IN_Q_OVERFLOW, None)));
    }

    /// Every request reaches the machine as the same work whether it comes over the control
    /// socket (to a supervisor) or is served in the asking process (`oneshot`).
    #[test]
    fn a_request_is_the_same_work_over_the_socket_and_in_process() {
        let file = PathBuf::from("/p/mirrord-up.yaml");
        let secs = |s| Some(Duration::from_secs(s));
        let names = || vec!["api".to_owned(), "db".to_owned()];
        let asked = [
            Asked::Up {
                file: file.clone(),
                up: UpRequest {
                    services: names(),
                    force_recreate: true,
                    wait: secs(30),
                    wait_timeout: Duration::from_secs(30),
                    profiles: vec!["dev".into()],
                    ..Default::default()
                },
            },
            Asked::Up {
                file: file.clone(),
                up: UpRequest::default(),
            },
            Asked::Down { timeout: secs(3) },
            Asked::Down { timeout: None },
            Asked::Restart {
                names: names(),
                timeout: secs(2),
            },
            Asked::Stop {
                names: names(),
                timeout: None,
            },
            Asked::Start { names: names() },
        ];
        for req in asked {
            let wire = req.control().expect("these have a wire form");
            let over_the_socket = work_of(wire, std::slice::from_ref(&file))
                .unwrap_or_else(|e| panic!("{req:?}: {e}"));
            // Served in process, `down` also sweeps the markers (after a supervisor's `down`
            // the CLI sweeps itself: `commands::down`); the work is otherwise the same.
            let in_process = format!("{:?}", req.work());
            let in_process = match req {
                Asked::Down { .. } => in_process.replace("sweep: true", "sweep: false"),
                _ => in_process,
            };
            assert_eq!(format!("{over_the_socket:?}"), in_process, "{req:?}");
        }
    }
}
