//! `up`: converge to the YAML. Foreground: the supervisor loop in this process, logs on
//! stdout. `--detach`: the same loop in a background supervisor, started here (or, if one
//! runs, asked over its control socket), and this command returns after the first pass.
//! `--dry-run` and `ci start --up` are one-shot: plan, apply, return.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::Context;
use crate::cli::{Format, UpArgs};
use crate::engine::{Engine, LaunchSettings};
use crate::plan::PlanOptions;
use crate::supervisor::control::{self, Outcome};
use crate::supervisor::pass::{ApplyOptions, PassSettings};

pub fn run(ctx: &Context, args: &UpArgs) -> Result<ExitCode> {
    if args.dry_run {
        return dry_run(ctx, args);
    }
    // `up --detach` while a supervisor listens (the common no-op case): hand it the request
    // without reading the state first; it reads the file and the state itself.
    if args.detach
        && let Some((stream, socket, _)) = listening(ctx)
    {
        // Named services are checked against the file here, as below.
        if !args.services.is_empty() {
            crate::desired::select(&ctx.load()?, &args.services)?;
        }
        let mut reporter = LazyWidth { ctx, inner: None };
        let req = request(ctx, args)
            .control()
            .context("an `up` has a wire form")?;
        let (ok, message) = control::request_on(stream, &socket, &req, &mut reporter)?;
        return finish(ctx, ok, message, None);
    }
    let state = read_state(ctx)?;
    if let Some(sup) = control::running(state.as_ref()) {
        // Named services are checked against the file here: the supervisor would widen its
        // selection with known names only and apply the whole file.
        if !args.services.is_empty() {
            crate::desired::select(&ctx.load()?, &args.services)?;
        }
        if !args.detach {
            bail!(
                "a background supervisor (pid {}) already runs project `{}`: follow its services with `mirrord-up logs -f` (its own log is {}), apply the file with `mirrord-up up --detach`, or stop it with `mirrord-up down`",
                sup.process.pid,
                ctx.project(),
                ctx.store()?.dir.join("supervisor.log").display()
            );
        }
        // The supervisor reads the file itself (and answers with its error if it is bad).
        let width = state.as_ref().map_or(0, crate::state::State::name_width);
        return forward(ctx, &sup.socket, args, width, state.as_ref());
    }
    // A bad file is refused before anything starts.
    let doc = ctx.load()?;
    let width = doc.names().iter().map(String::len).max().unwrap_or(0);
    // Foreground, services are coloured in the file's order (the first five all differ).
    crate::output::assign(&doc.names());
    if args.detach {
        detach(ctx, args, width)
    } else {
        crate::supervisor::run(
            std::sync::Arc::new(ctx.clone()),
            supervisor_options(args, true, width),
        )
    }
}

/// A connection to the project's supervisor when one listens on the socket of its state
/// directory (checked as every state directory is, never created here) and is alive: a
/// supervisor killed a moment ago can still take a connection while its last threads exit
/// (its listener closes with them), so the listening process must not be a zombie — as the
/// state's record would have been checked. Otherwise the state decides, as before. Also
/// returns the listener's PID (`SO_PEERCRED`).
pub(crate) fn listening(
    ctx: &Context,
) -> Option<(std::os::unix::net::UnixStream, std::path::PathBuf, i32)> {
    let dir = crate::fsutil::SafeDir::open(&ctx.state_dir().ok()?, false).ok()?;
    let socket = dir.path().join(control::SOCKET);
    let stream = control::connect_now(&socket)?;
    let pid = control::peer_pid(&stream)?;
    let live = crate::os::proc_info(pid).is_ok_and(|p| !p.zombie);
    live.then_some((stream, socket, pid))
}

/// The reporter of a forwarded `up`, whose names are padded to the longest recorded name:
/// the state is read for that at the first line to show (a no-op shows none).
struct LazyWidth<'a> {
    ctx: &'a Context,
    inner: Option<Box<dyn crate::engine::Reporter>>,
}

impl LazyWidth<'_> {
    fn inner(&mut self) -> &mut dyn crate::engine::Reporter {
        let ctx = self.ctx;
        self.inner
            .get_or_insert_with(|| {
                let width = ctx
                    .read_state()
                    .ok()
                    .flatten()
                    .map_or(0, |s| s.name_width());
                ctx.reporter(width)
            })
            .as_mut()
    }
}

impl crate::engine::Reporter for LazyWidth<'_> {
    fn event(&mut self, service: &str, what: &str) {
        self.inner().event(service, what);
    }

    fn events(&mut self, batch: &[(String, String)]) {
        // Nothing to say: the width is not worked out (it reads the whole state).
        if !batch.is_empty() {
            self.inner().events(batch);
        }
    }

    fn waiting(&mut self, service: &str, what: &str, limit: Option<Duration>) {
        self.inner().waiting(service, what, limit);
    }
}

/// The hidden `__supervise` command: the detached supervisor itself. Its stdout is the pipe
/// of the `up --detach` that started it: the first pass answers there, then stdout joins the
/// supervisor log (stderr), so that nothing ever writes to a pipe nobody reads.
pub fn supervise(ctx: &Context, args: &UpArgs) -> Result<ExitCode> {
    use std::os::fd::AsFd;
    let stdout = std::io::stdout();
    let client = std::fs::File::from(stdout.as_fd().try_clone_to_owned()?);
    nix::unistd::dup2_stdout(std::io::stderr().as_fd())?;
    // Detached, names are not padded (the log lines carry a timestamp instead): no width.
    let mut opts = supervisor_options(args, false, 0);
    opts.first_client = Some(Box::new(client));
    crate::supervisor::run(std::sync::Arc::new(ctx.clone()), opts)
}

fn supervisor_options(args: &UpArgs, foreground: bool, width: usize) -> crate::supervisor::Options {
    crate::supervisor::Options {
        settings: PassSettings {
            selection: args.services.clone(),
            mode: args.mode.map(Into::into),
            abort_on_exit: args.abort_on_exit,
            supervised: true,
            ..Default::default()
        },
        watch: !args.no_watch,
        foreground,
        first: ApplyOptions {
            force_recreate: args.force_recreate,
            wait: args
                .wait
                .then(|| Duration::from_secs_f64(args.wait_timeout.max(0.0))),
            services: args.services.clone(),
            mode: args.mode.map(Into::into),
            profiles: None,
        },
        first_client: None,
        width,
    }
}

/// The request of an `up` (also of `ci start --up`).
pub fn request(ctx: &Context, args: &UpArgs) -> crate::request::Request {
    let wait_timeout = Duration::from_secs_f64(args.wait_timeout.max(0.0));
    crate::request::Request::Up {
        file: ctx.file(),
        up: crate::request::UpRequest {
            services: args.services.clone(),
            mode: args.mode.map(Into::into),
            force_recreate: args.force_recreate,
            wait: args.wait.then_some(wait_timeout),
            wait_timeout,
            profiles: ctx.global.profiles.clone(),
            overlays: ctx.files().split_off(1),
        },
    }
}

/// The recorded state; an unreadable one (corrupt, too new) is reported by the locked load,
/// which keeps the file aside, and read again.
fn read_state(ctx: &Context) -> Result<Option<crate::state::State>> {
    match ctx.read_state() {
        Ok(s) => Ok(s),
        Err(_) => {
            let store = ctx.store()?;
            store.load(&store.lock(ctx.lock_timeout())?)?;
            Ok(ctx.read_state()?)
        }
    }
}

/// Asks the running supervisor to apply the file, showing what it does. `read` is the state
/// read before asking, if any.
fn forward(
    ctx: &Context,
    socket: &Path,
    args: &UpArgs,
    width: usize,
    read: Option<&crate::state::State>,
) -> Result<ExitCode> {
    let mut reporter = ctx.reporter(width);
    let req = request(ctx, args)
        .control()
        .context("an `up` has a wire form")?;
    let (ok, message) = control::request(socket, &req, reporter.as_mut())?;
    finish(ctx, ok, message, read)
}

/// Says how the pass ended, then the route of each split-mode service. `read` (the state
/// read before the request) serves for those when the pass had nothing to do: no spec and no
/// process changed (liveness is looked at now either way), so the state is not parsed again.
fn finish(
    ctx: &Context,
    ok: bool,
    message: String,
    read: Option<&crate::state::State>,
) -> Result<ExitCode> {
    if !ok {
        bail!("{message}");
    }
    if !ctx.global.quiet {
        println!("{message}");
        // Hook (session, issue 13): how to reach each split-mode service (on stderr: stdout
        // keeps the one summary line scripts read).
        let lines = match read.filter(|_| message.starts_with("nothing to do")) {
            Some(state) => crate::session::route_lines(state),
            None if !may_route(ctx) => Vec::new(),
            None => match ctx.read_state() {
                Ok(Some(state)) => crate::session::route_lines(&state),
                _ => Vec::new(),
            },
        };
        for line in lines {
            eprintln!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the state may have a route line to show: only a mirrord service has one
/// (`session::applicability`), so the state is read with every other field skipped, and
/// parsed whole for the route lines only when it records one (a hundred recorded
/// configurations cost the client more than the rest of a no-op `up -d`). A state this view
/// cannot read is parsed whole.
fn may_route(ctx: &Context) -> bool {
    #[derive(serde::Deserialize)]
    struct Record {
        spec: Spec,
    }
    #[derive(serde::Deserialize)]
    struct Spec {
        launcher: crate::spec::LauncherKind,
    }
    let Ok(dir) = ctx.state_dir() else {
        return false;
    };
    if !dir.join("state.json").exists() {
        return false;
    }
    crate::state::view_in::<Record>(&dir).is_none_or(|v| {
        v.services
            .values()
            .any(|r| r.spec.launcher == crate::spec::LauncherKind::Mirrord)
    })
}

/// Starts the background supervisor (a new session, its output in `supervisor.log`) and
/// follows its first pass.
fn detach(ctx: &Context, args: &UpArgs, width: usize) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let store = ctx.store()?;
    let log_path = store.dir.join("supervisor.log");
    let log = crate::fsutil::open_in_checked_dir(&log_path, crate::fsutil::Access::Append)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    let sub = crate::cli::subcommand_index(&argv).context("no subcommand in the arguments")?;
    argv[sub] = "__supervise".into();
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(&argv[1..])
        .env(crate::process::ENV_SUPERVISOR, &store.dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the supervisor")?;
    let pipe = child.stdout.take().expect("piped");
    let mut reporter = ctx.reporter(width);
    match control::read_replies(pipe, reporter.as_mut())? {
        Some(Outcome::Done { ok, message }) => {
            // A first pass that failed and left nothing to look after ends the supervisor:
            // return once it has, so that nothing of the project outlives this command.
            if !ok && nothing_left(ctx) {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            finish(ctx, ok, message, None)
        }
        // Another `up --detach` won the race: that supervisor applies the file.
        Some(Outcome::AlreadyRunning { socket, .. }) => {
            let _ = child.wait();
            forward(ctx, &socket, args, width, None)
        }
        None => {
            let _ = child.wait();
            bail!(
                "the supervisor ended before its first pass finished; see {}",
                log_path.display()
            )
        }
    }
}

/// No service of the project runs or waits out a back-off (so the supervisor has nothing to
/// look after).
fn nothing_left(ctx: &Context) -> bool {
    let Ok(Some(state)) = ctx.read_state() else {
        return true;
    };
    state.services.values().all(|r| {
        r.status != crate::state::Status::Backoff
            && crate::engine::liveness(r) != crate::process::Liveness::Alive
    })
}

/// `up --dry-run`: what `up` would do, as `plan` shows it; nothing is applied (a start that a
/// crash interrupted is still adopted by its spawn nonce, as any pass would).
pub fn dry_run(ctx: &Context, args: &UpArgs) -> Result<ExitCode> {
    // Parse and validate before taking anything: a bad file changes nothing.
    let doc = ctx.load()?;
    let store = ctx.store()?;
    let lock = store.lock(ctx.lock_timeout())?;
    let state = store.load(&lock)?;
    // A dry run compares as `plan` does: with the launcher recorded when none is given.
    let planning = super::plan::recorded_launcher(ctx, Some(&state));
    let ctx = &planning;
    let (desired, _) = ctx.desired(
        &doc,
        &args.services,
        args.mode.map(Into::into),
        state.target_cache.clone(),
    )?;
    let width = desired
        .services
        .iter()
        .map(|s| s.name.len())
        .chain(state.services.keys().map(String::len))
        .max()
        .unwrap_or(0);
    let mut reporter = ctx.reporter(width);
    let fresh = state.services.is_empty();
    let settings = LaunchSettings {
        mirrord_bin: ctx.launcher_bin()?,
        ..Default::default()
    };
    let mut engine = Engine::new(&store, &lock, state, settings, reporter.as_mut());
    engine.recover()?;
    if fresh {
        engine.check_untracked()?;
    }
    let observed = crate::engine::observe(&engine.state);
    let plan = crate::plan::plan(
        &desired,
        &observed,
        PlanOptions {
            force_recreate: args.force_recreate,
            restart_exited: true,
        },
    );
    super::plan::print_plan(&plan, Format::Text, ctx.stdout_color());
    Ok(super::plan::exit_code(&plan, false))
}

/// One `up` applied and answered, by the supervisor when one runs, otherwise in this process
/// (`ci start --up`): the request path every front-end takes (`crate::request::submit`).
pub fn apply(ctx: &Context, args: &UpArgs) -> Result<ExitCode> {
    // Parse and validate before taking anything: a bad file changes nothing.
    let doc = ctx.load()?;
    let state = read_state(ctx)?;
    let width = doc
        .names()
        .iter()
        .map(String::len)
        .chain(
            state
                .iter()
                .flat_map(|s| s.services.keys().map(String::len)),
        )
        .max()
        .unwrap_or(0);
    let sup = control::running(state.as_ref());
    let mut reporter = ctx.reporter(width);
    let (ok, message) =
        crate::request::submit(ctx, sup.as_ref(), &request(ctx, args), reporter.as_mut())?;
    finish(ctx, ok, message, state.as_ref())
}
