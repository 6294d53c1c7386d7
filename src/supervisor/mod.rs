//! The supervisor: the live loop behind foreground `up` and the detached `up --detach`.
//!
//! # Theory of operation
//!
//! One task owns the loop. Everything that can matter arrives as an [`Event`] on one channel:
//! a change in the YAML's directory (notify), SIGHUP, SIGINT/SIGTERM, SIGCHLD, the exit of a
//! service (a `pidfd` per running service becomes readable), a request on the control socket.
//! The loop never acts on *why* it woke: it marks itself dirty and runs one reconcile pass
//! (`pass::run_pass`), which re-reads the file and the state and applies the pure plan —
//! kube-runtime's level-triggered reconcile. File events are debounced on the trailing edge;
//! a back-off ends with a timer for the earliest due restart. Idle, the loop sleeps on those
//! sources and nothing else: no polling, no periodic wake-ups.
//!
//! A pass is synchronous (it stops and spawns process groups and waits for readiness) and runs
//! on a blocking thread, so the loop keeps hearing signals meanwhile: a second Ctrl-C during a
//! slow stop escalates every stop to SIGKILL at once. Passes never overlap; events that arrive
//! during one are folded into the next.
//!
//! Services write their own log files and hold no pipe to the supervisor, so a supervisor that
//! dies (even by SIGKILL) takes nothing down with it; the next one adopts the services from the
//! state file, checking each recorded identity. The supervisor is the children's subreaper and
//! reaps every exit, keeping the statuses for the restart policy.

pub mod control;
pub mod pass;

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::time::Instant;

use crate::commands::Context;
use crate::engine::Reporter;
use crate::process::{self, Liveness, ProcessIdentity};
use crate::state::{SupervisorRecord, now_ms};
use control::{Reply, Request};
use pass::{ApplyOptions, PassOutcome, PassSettings, Work};

/// Trailing-edge debounce of file events: editors write a file in several steps.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// What wakes the loop.
enum Event {
    FileChanged,
    Reload,
    Terminate,
    ChildExited,
    /// The process `pid` of a service ended.
    ServiceExited(String, i32),
    Control(Work, Client),
    ControlRefused(Client, String),
}

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
pub fn run(ctx: Context, opts: Options) -> Result<ExitCode> {
    // A client that hangs up must cost an EPIPE on that connection, not the supervisor.
    // (Spawned services get the default disposition back: std resets it in the child.)
    // SAFETY: no other thread exists yet that could race on the disposition.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
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
fn register(ctx: &Context) -> Result<Result<Registration, SupervisorRecord>> {
    let store = ctx.store()?;
    let lock = store.lock(ctx.lock_timeout())?;
    let mut state = store.load(&lock)?;
    if let Some(other) = control::running(Some(&state)) {
        return Ok(Err(other));
    }
    let socket = store.dir.join("supervisor.sock");
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
fn unregister(ctx: &Context, socket: &Path) {
    let _ = std::fs::remove_file(socket);
    let Ok(store) = ctx.store() else { return };
    let Ok(lock) = store.lock(ctx.lock_timeout()) else {
        return;
    };
    if let Ok(mut state) = store.load(&lock)
        && state
            .supervisor
            .as_ref()
            .is_some_and(|s| s.process.pid == std::process::id() as i32)
    {
        state.supervisor = None;
        let _ = store.save(&lock, &state);
    }
}

async fn run_loop(ctx: Context, mut opts: Options) -> Result<ExitCode> {
    process::become_subreaper();
    let reg = match register(&ctx)? {
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
    unregister(&ctx, &reg.socket);
    result
}

async fn supervise(ctx: &Context, opts: Options, reg: &Registration) -> Result<ExitCode> {
    let (tx, mut rx) = unbounded_channel::<Event>();
    listen_signals(&tx)?;
    listen_control(&tx, reg.listener.try_clone()?, ctx.files())?;
    let mut watcher = FileWatcher::new(&tx, opts.watch);
    // Watch before the first pass reads the file: a save right after `up -d` returns counts.
    watcher.watch(&ctx.files());
    let tail = opts.foreground.then(|| LogPrinter::start(ctx));
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
                let _ = tx.send(Event::Control(work, Box::new(std::io::sink())));
            }),
        )
    };
    let color = opts.foreground && ctx.stderr_color();

    let mut settings = opts.settings;
    let mut queue: VecDeque<(Work, Option<Client>)> = VecDeque::new();
    queue.push_back((
        Work::Reconcile {
            explicit: Some(opts.first),
        },
        opts.first_client,
    ));
    let mut dirty = false;
    let mut debounce: Option<Instant> = None;
    let mut backoff_due: Option<Instant> = None;
    let mut exit_watch: BTreeMap<String, (i32, tokio::task::JoinHandle<()>)> = BTreeMap::new();
    // Set once the loop is to end: the exit code, and whether the final stop pass has begun.
    let mut stopping: Option<ExitCode> = None;
    let mut final_pass = false;
    let mut width = opts.width;
    let mut running: Option<tokio::task::JoinHandle<PassOutcome>> = None;
    let mut first_pass = true;
    // Exits heard while a pass runs: that pass may have caused (or settled) them.
    let mut exits_during_pass: Vec<(String, i32)> = Vec::new();
    // "Every service has ended" was said (once per time it happens).
    let mut announced_down = false;

    loop {
        if running.is_none() {
            let next = match stopping {
                Some(_) if final_pass => break,
                Some(_) => {
                    final_pass = true;
                    // Ctrl-C, SIGTERM or --abort-on-exit: stop everything, keep the records.
                    let job = queue.pop_front().unwrap_or((
                        Work::Shutdown {
                            timeout: None,
                            forget: false,
                        },
                        None,
                    ));
                    Some(job)
                }
                None => queue.pop_front().or_else(|| {
                    std::mem::take(&mut dirty).then_some((Work::Reconcile { explicit: None }, None))
                }),
            };
            if let Some((work, client)) = next {
                if let Work::Reconcile { explicit: Some(e) } = &work {
                    dirty = false; // this pass reads everything afresh anyway
                    widen_selection(&mut settings, e);
                }
                let ctx = ctx.clone();
                let settings = settings.clone();
                let foreground = opts.foreground;
                running = Some(tokio::task::spawn_blocking(move || {
                    let mut reporter = SupervisorReporter {
                        foreground,
                        color,
                        width,
                        client,
                        journal: ctx.store().ok().map(crate::events::Journal::new),
                    };
                    let out = pass::run_pass(&ctx, &settings, &work, &mut reporter);
                    reporter.finish(&out);
                    // Give back what the pass allocated: the supervisor then idles small.
                    // SAFETY: malloc_trim only releases free heap memory.
                    unsafe {
                        nix::libc::malloc_trim(0);
                    }
                    out
                }));
            }
        }
        tokio::select! {
            Some(ev) = rx.recv() => match ev {
                Event::FileChanged => debounce = Some(Instant::now() + DEBOUNCE),
                Event::Reload => dirty = true,
                Event::ServiceExited(name, pid) => {
                    if running.is_some() {
                        exits_during_pass.push((name, pid));
                    } else {
                        dirty = true;
                    }
                }
                Event::ChildExited => process::reap_children(),
                Event::Terminate => {
                    if stopping.is_some() {
                        process::kill_now();
                    } else {
                        process::interrupt();
                        stopping = Some(ExitCode::from(130));
                    }
                }
                Event::Control(work, client) => {
                    if stopping.is_some() {
                        refuse(client, "the supervisor is shutting down");
                    } else if matches!(work, Work::Shutdown { .. }) {
                        // `down`: this client gets the final pass's answer, then the loop ends.
                        process::interrupt();
                        stopping = Some(ExitCode::SUCCESS);
                        for (_, waiting) in queue.drain(..) {
                            if let Some(c) = waiting {
                                refuse(c, "the supervisor is shutting down");
                            }
                        }
                        queue.push_back((work, Some(client)));
                    } else {
                        queue.push_back((work, Some(client)));
                    }
                }
                Event::ControlRefused(client, why) => refuse(client, &why),
            },
            _ = sleep_until(debounce), if debounce.is_some() => {
                debounce = None;
                dirty = true;
            }
            _ = sleep_until(backoff_due), if backoff_due.is_some() => {
                backoff_due = None;
                dirty = true;
            }
            done = async { running.as_mut().expect("guarded").await }, if running.is_some() => {
                running = None;
                let out = done.context("a reconcile pass panicked")?;
                if let Some(files) = &out.watched_files {
                    // Files newly watched may have changed before the watch began.
                    dirty |= watcher.watch(files);
                }
                width = width.max(out.logs.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0));
                if let Some(t) = &tail {
                    t.follow(&out.logs);
                }
                backoff_due = out.next_due_ms.map(|t| {
                    Instant::now() + Duration::from_millis(t.saturating_sub(now_ms()))
                });
                watch_exits(&tx, &mut exit_watch, &out.running);
                source_watch.update(out.watches.clone(), &out.running); // watch (issue #16)
                dirty |= out.unsettled;
                // An exit the pass did not see (the PID is still the one it left running).
                dirty |= exits_during_pass
                    .drain(..)
                    .any(|(n, pid)| out.running.iter().any(|(r, id)| *r == n && id.pid == pid));
                // A first pass that failed and left nothing to look after ends the supervisor
                // (its client already has the error).
                if std::mem::take(&mut first_pass)
                    && matches!(out.result, Some(Err(_)))
                    && out.running.is_empty()
                    && out.next_due_ms.is_none()
                {
                    stopping = Some(ExitCode::from(1));
                    final_pass = true;
                }
                if let (Some(code), None) = (out.abort, stopping) {
                    stopping = Some(ExitCode::from(code.clamp(0, 255) as u8));
                }
                // Every service ended and no restart policy brings one back. In the
                // foreground that is the end, as for real `mirrord up` (and compose): non-zero
                // if any failed. A background supervisor stays: a save of the file (or an
                // `up -d`) may fix what failed; it says so once.
                let settled = queue.is_empty() && !dirty && debounce.is_none();
                match (&out.all_down, stopping) {
                    (Some(failed), None) if settled => {
                        if !announced_down {
                            let mut note = SupervisorReporter {
                                foreground: opts.foreground,
                                color,
                                width,
                                client: None,
                                journal: ctx.store().ok().map(crate::events::Journal::new),
                            };
                            note.event("mirrord-up", &all_down_message(failed, opts.foreground));
                        }
                        announced_down = true;
                        if opts.foreground {
                            stopping = Some(ExitCode::from(u8::from(!failed.is_empty())));
                            final_pass = true;
                        }
                    }
                    (None, _) => announced_down = false,
                    _ => {}
                }
            }
        }
    }
    if let Some(t) = &tail {
        t.flush();
    }
    Ok(stopping.unwrap_or(ExitCode::SUCCESS))
}

/// What the supervisor says when every service has ended.
fn all_down_message(failed: &[String], foreground: bool) -> String {
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

fn listen_signals(tx: &UnboundedSender<Event>) -> Result<()> {
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
                    0 => Event::Reload,
                    1 => Event::Terminate,
                    _ => Event::ChildExited,
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
    tx: &UnboundedSender<Event>,
    listener: std::os::unix::net::UnixListener,
    files: Vec<PathBuf>,
) -> Result<()> {
    let tx = tx.clone();
    control::serve(listener, move |req, client| {
        let _ = tx.send(match work_of(req, &files) {
            Ok(work) => Event::Control(work, client),
            Err(why) => Event::ControlRefused(client, why),
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
        },
    })
}

/// One task per running service, waiting on its pidfd; replaced when the PID changes.
fn watch_exits(
    tx: &UnboundedSender<Event>,
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
    for (name, identity) in wanted {
        if watching.contains_key(name) {
            continue;
        }
        let tx = tx.clone();
        let pid = identity.pid;
        let identity = identity.clone();
        let service = name.clone();
        let task = tokio::spawn(async move {
            wait_for_exit(&identity).await;
            let _ = tx.send(Event::ServiceExited(service, pid));
        });
        watching.insert(name.clone(), (pid, task));
    }
}

async fn wait_for_exit(identity: &ProcessIdentity) {
    let Ok(fd) = process::pidfd_open(identity.pid) else {
        return; // already gone
    };
    // The PID might have been reused between the pass and `pidfd_open`.
    if identity.liveness() != Liveness::Alive {
        return;
    }
    // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, which owns it until dropped; nothing
    // else closes or replaces that descriptor.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    };
    let Ok(fd) = registered else {
        return;
    };
    let _ = fd.readable().await;
}

/// Watches the directories of the YAML and its side files; only events naming one of those
/// files count (editors also write swap and backup files next to them).
struct FileWatcher {
    tx: UnboundedSender<Event>,
    enabled: bool,
    inner: Option<notify::RecommendedWatcher>,
    files: Vec<PathBuf>,
}

impl FileWatcher {
    fn new(tx: &UnboundedSender<Event>, enabled: bool) -> FileWatcher {
        FileWatcher {
            tx: tx.clone(),
            enabled,
            inner: None,
            files: Vec::new(),
        }
    }

    /// Watches `files` (replacing the previous set); true if the set changed.
    fn watch(&mut self, files: &[PathBuf]) -> bool {
        if !self.enabled || (self.inner.is_some() && self.files == files) {
            return false;
        }
        use notify::Watcher;
        let names: Vec<PathBuf> = files.to_vec();
        let tx = self.tx.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            if ev.paths.iter().any(|p| names.iter().any(|n| n == p)) {
                let _ = tx.send(Event::FileChanged);
            }
        };
        let Ok(mut w) = notify::recommended_watcher(handler) else {
            eprintln!("warning: cannot watch the file for changes; send SIGHUP to reload");
            return false;
        };
        let dirs: std::collections::BTreeSet<&Path> =
            files.iter().filter_map(|f| f.parent()).collect();
        for d in dirs {
            if let Err(e) = w.watch(d, notify::RecursiveMode::NonRecursive) {
                eprintln!("warning: cannot watch {}: {e}", d.display());
            }
        }
        let first = self.inner.is_none();
        self.inner = Some(w);
        self.files = files.to_vec();
        !first
    }
}

/// Reports of a pass: to the supervisor's own output and to the client that asked.
struct SupervisorReporter {
    foreground: bool,
    color: bool,
    width: usize,
    client: Option<Client>,
    /// The project's events file, read by `logs`.
    journal: Option<crate::events::Journal>,
}

impl Reporter for SupervisorReporter {
    fn event(&mut self, service: &str, what: &str) {
        if let Some(j) = &mut self.journal {
            j.record(service, what);
        }
        if self.foreground {
            let name = crate::output::paint(
                &format!("{service:<w$}", w = self.width),
                crate::output::color_of(service),
                self.color,
            );
            line_to_stderr(&format!("{name}  {what}"));
        } else {
            line_to_stderr(&format!(
                "{} {service}  {what}",
                humantime::format_rfc3339_millis(std::time::SystemTime::now())
            ));
        }
        if let Some(c) = &mut self.client {
            control::send(
                c,
                &Reply::Event {
                    service: service.to_owned(),
                    what: what.to_owned(),
                },
            );
        }
    }

    fn waiting(&mut self, service: &str, what: &str, limit: Option<Duration>) {
        if let Some(c) = &mut self.client {
            control::send(
                c,
                &Reply::Waiting {
                    service: service.to_owned(),
                    what: what.to_owned(),
                    limit_ms: limit.map(|l| l.as_millis() as u64),
                },
            );
        }
    }
}

/// One line on stderr in one `write`: stderr is unbuffered, and `eprintln!` writes each piece
/// of its format on its own, so that, in the foreground, a service's log line on stdout (the
/// same terminal or pipe) could land in the middle of an event line.
pub fn line_to_stderr(line: &str) {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    let _ = std::io::stderr().lock().write_all(&bytes);
}

impl SupervisorReporter {
    /// The client's final line; the supervisor's own output gets failures only (the events
    /// already told the rest).
    fn finish(&mut self, out: &PassOutcome) {
        let (ok, message) = match &out.result {
            Some(Ok(summary)) => (true, summary.clone()),
            Some(Err(e)) => (false, e.clone()),
            None => (false, "no result".to_owned()),
        };
        let told = out.reload_error_told && out.reload_error.as_deref() == Some(message.as_str());
        if !ok && !told {
            let label = crate::output::paint("error:", 31, self.color);
            eprintln!("{label} {message}");
        }
        if let Some(mut c) = self.client.take() {
            control::send(&mut c, &Reply::Done { ok, message });
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
    fn start(ctx: &Context) -> LogPrinter {
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
                        if res.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
                            let _ = fs_tx.send(TailMsg::Changed);
                        }
                    })
                    .ok()?;
                w.watch(&dir, notify::RecursiveMode::NonRecursive).ok()?;
                Some(w)
            });
            let mut tail = crate::tail::LogTail::default();
            let mut width = 0;
            while let Ok(msg) = rx.recv() {
                let flush = matches!(msg, TailMsg::Flush);
                if let TailMsg::Follow(list) = msg {
                    for (name, path, offset) in list {
                        tail.follow(&name, &path, offset);
                    }
                    width = tail.names().map(String::len).max().unwrap_or(0);
                }
                let mut out = std::io::stdout().lock();
                let _ = tail.read_new(&mut |name, line| {
                    out.write_all(crate::output::prefix(name, width, color).as_bytes())?;
                    out.write_all(line)?;
                    out.write_all(b"\n")
                });
                let _ = out.flush();
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
