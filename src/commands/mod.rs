//! Command front-ends: each reads its inputs, calls the shared engine, prints, and maps the
//! outcome to an exit code (0 ok, 1 error; 2 pending changes for `plan --detailed-exitcode`).

mod check;
mod ci;
mod completions;
mod config;
pub mod discover;
mod down;
mod events;
mod init;
mod line_keys;
mod logs;
mod ls;
mod plan;
mod ps;
mod run;
mod schema;
mod service;
mod up;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};

use crate::cli::{Cli, Command, GlobalArgs};
use crate::config::UpDocument;
use crate::desired::{Desired, ResolveOptions, TargetInference};
use crate::spec::LauncherKind;
use crate::state::StateStore;

pub fn main() -> ExitCode {
    // watch (issue #16): the in-session runner, before anything else (it inherits SIGPIPE's
    // disposition for the app, and must open nothing that mirrord's layer would redirect).
    if crate::runner::asked() {
        return crate::runner::main();
    }
    // `mirrord-up config | head` must end quietly, like any Unix filter, not panic on EPIPE.
    // SAFETY: restoring the default disposition before any thread exists.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    // The template renderer (`config::template`): no clap, no logging, nothing but the render.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(
            crate::config::template::RENDER_SUBCOMMAND,
        ))
    {
        return crate::config::template::child_main();
    }
    // An empty MIRRORD_UP_FILE or MIRRORD_UP_PROJECT means unset (as an empty COMPOSE_FILE),
    // not "a value is required".
    for var in ["MIRRORD_UP_FILE", "MIRRORD_UP_PROJECT"] {
        if std::env::var_os(var).is_some_and(|v| v.is_empty()) {
            // SAFETY: single-threaded still: no thread reads the environment concurrently.
            unsafe { std::env::remove_var(var) };
        }
    }
    // A shell's completion script calling back (`COMPLETE=bash mirrord-up -- …`): answer, exit.
    completions::answer_if_asked();
    let args = crate::cli::rewrite_args(std::env::args_os().collect());
    let cli = crate::cli::command(&args)
        .try_get_matches_from(&args)
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m))
        .unwrap_or_else(|e| e.exit());
    init_tracing(cli.global.verbose);
    let ctx = Context::new(cli.global);
    let env_secs = ["MIRRORD_UP_LOCK_TIMEOUT", crate::infer::TIMEOUT_ENV];
    if let Err(e) = env_secs
        .iter()
        .try_for_each(|v| crate::cli::secs_env(v).map(drop))
    {
        // edge hook: the one exit-code mapping (crate::error).
        return crate::error::report(&anyhow::anyhow!("{e}"), ctx.stderr_color());
    }
    if !runs_until_stopped(&cli.command) {
        crate::os::alloc::keep_freed_memory();
    }
    match run(&ctx, cli.command) {
        Ok(code) => code,
        Err(e) => crate::error::report(&e, ctx.stderr_color()),
    }
}

/// Whether `command` may run until it is stopped (a supervisor, a foreground `up`, `logs -f`,
/// `events`, the command of `run`) rather than ending once it has answered.
fn runs_until_stopped(command: &Command) -> bool {
    match command {
        Command::Up(args) => !args.detach,
        Command::Supervise(_) | Command::Events { .. } | Command::Run { .. } => true,
        Command::Logs { follow, .. } => *follow,
        _ => false,
    }
}

/// `-v`: what each step does and how long it takes, on stderr (`-vv`: more). `RUST_LOG` works
/// too.
fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => return,
        1 => "mirrord_up=debug",
        _ => "mirrord_up=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_ansi(false)
        .try_init();
}

fn run(ctx: &Context, command: Command) -> Result<ExitCode> {
    match command {
        Command::Check { compat } => check::run(ctx, compat),
        Command::Config {
            service,
            hash,
            yaml,
        } => config::run(ctx, service.as_deref(), hash, yaml),
        Command::Plan {
            services,
            format,
            detailed_exitcode,
            mode,
        } => plan::run(
            ctx,
            &services,
            format,
            mode.map(Into::into),
            detailed_exitcode,
        ),
        Command::Ls { format, all } => ls::run(ctx, format, all),
        Command::Up(args) => up::run(ctx, &args),
        Command::Down { timeout, force } => {
            down::run(ctx, timeout.map(std::time::Duration::from_secs_f64), force)
        }
        Command::Ps {
            format,
            all,
            wide,
            services,
            status,
        } => ps::run(
            ctx,
            format,
            &ps::Options {
                all,
                wide,
                services,
                quiet: ctx.global.quiet,
                status,
            },
        ),
        Command::Ci { command } => ci::run(ctx, command),
        Command::Logs {
            services,
            follow,
            tail,
            no_prefix,
            timestamps,
            since,
        } => logs::run(
            ctx,
            &services,
            &logs::Options {
                follow,
                tail,
                prefix: !no_prefix,
                timestamps,
                since,
            },
        ),
        Command::Init { output } => init::run(ctx, &output),
        Command::Schema => schema::run(),
        Command::Completions { shell } => completions::run(shell),
        Command::Restart(args) => service::run(ctx, service::Op::Restart, &args),
        Command::Stop(args) => service::run(ctx, service::Op::Stop, &args),
        Command::Start(args) => service::run(ctx, service::Op::Start, &args),
        Command::Supervise(args) => up::supervise(ctx, &args),
        Command::Run {
            service,
            service_ports,
            env,
            command,
        } => run::run(
            ctx,
            &run::Options {
                service: &service,
                service_ports,
                env: &env,
                command: &command,
            },
        ),
        Command::Events {
            services,
            json,
            since,
        } => events::run(ctx, &services, json, since),
    }
}

/// What every command needs from the global options, and the project they point at.
#[derive(Debug, Clone)]
pub struct Context {
    pub global: GlobalArgs,
    /// The YAML: `-f`/`MIRRORD_UP_FILE` (made absolute), else the nearest `mirrord-up.yaml`
    /// in the current directory or a parent (`None`: none there).
    file: Option<PathBuf>,
    /// The `-f` files after the first, merged over it in order.
    overlays: Vec<PathBuf>,
    project: String,
}

impl Context {
    pub fn new(global: GlobalArgs) -> Context {
        let cwd = std::env::current_dir().ok();
        let absolute = |f: &PathBuf| std::path::absolute(f).unwrap_or_else(|_| f.clone());
        let overlays = global.file.iter().skip(1).map(absolute).collect();
        let file = match global.file.first() {
            Some(f) => Some(absolute(f)),
            None => cwd.as_deref().and_then(discover::find_file),
        };
        let project = match (&global.project, &file) {
            (Some(p), _) => sanitize_project(p),
            (None, Some(f)) => project_of_file(f),
            // No file: the project recorded for this directory (or a parent), else the
            // directory's name (what `ci start` without a file records).
            (None, None) => {
                let cwd = cwd.unwrap_or_default();
                state_root(&global)
                    .ok()
                    .and_then(|root| discover::recorded_for_dir(&root, &cwd))
                    .unwrap_or_else(|| {
                        sanitize_project(
                            &cwd.file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                                .unwrap_or_default(),
                        )
                    })
            }
        };
        Context {
            global,
            file,
            overlays,
            project,
        }
    }

    /// The reporter for the command's own output (stderr), `crate::progress::reporter` as
    /// `-q` and the terminal say.
    pub fn reporter(&self, width: usize) -> Box<dyn crate::engine::Reporter> {
        crate::progress::reporter(self.global.quiet, self.stderr_color(), width)
    }

    /// [`Context::reporter`], also recording into the project's journal.
    pub fn recording_reporter(&self, width: usize) -> Box<dyn crate::engine::Reporter> {
        self.recording(self.reporter(width))
    }

    /// `inner`, also recording into the project's journal.
    pub fn recording(
        &self,
        inner: Box<dyn crate::engine::Reporter>,
    ) -> Box<dyn crate::engine::Reporter> {
        crate::events::recording(self.store().ok(), inner)
    }

    pub fn stderr_color(&self) -> bool {
        use std::io::IsTerminal;
        crate::output::use_color(self.global.no_color, std::io::stderr().is_terminal())
    }

    pub fn stdout_color(&self) -> bool {
        crate::output::stdout_color(self.global.no_color)
    }

    /// The YAML's absolute path (when none was found: where `-f` would default to).
    pub fn file(&self) -> PathBuf {
        self.file.clone().unwrap_or_else(|| {
            std::path::absolute("mirrord-up.yaml").unwrap_or_else(|_| "mirrord-up.yaml".into())
        })
    }

    /// Every `-f` file, the first one first (or the one found).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.file()];
        files.extend(self.overlays.iter().cloned());
        files
    }

    /// The YAML if it was named or found (it may still not exist when named).
    pub fn found_file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    pub fn load(&self) -> Result<UpDocument> {
        let Some(file) = &self.file else {
            anyhow::bail!("{}", discover::no_file_message());
        };
        crate::handover::set_key_provided(self.global.key.is_some());
        let mut doc = if self.overlays.is_empty() {
            UpDocument::load(file, self.global.key.as_deref())?
        } else {
            let mut files = vec![file.clone()];
            files.extend(self.overlays.iter().cloned());
            UpDocument::load_many(&files, self.global.key.as_deref())?
        };
        doc.profiles = self.global.profiles.clone();
        Ok(doc)
    }

    /// `-p`, else the YAML's directory name, lower-cased and reduced to `[a-z0-9_-]`.
    pub fn project(&self) -> String {
        self.project.clone()
    }

    /// `-p` or `MIRRORD_UP_PROJECT` named the project.
    pub fn project_explicit(&self) -> bool {
        self.global.project.is_some()
    }

    /// `<state root>/<project>`, not created.
    pub fn state_dir(&self) -> Result<PathBuf> {
        Ok(self.state_root()?.join(&self.project))
    }

    /// For commands that act on a project: fails (creating nothing) unless the YAML exists or
    /// the project is recorded in the state directory.
    pub fn require_project(&self) -> Result<()> {
        if self.file.as_deref().is_some_and(Path::is_file)
            || self.state_dir()?.join("state.json").exists()
        {
            return Ok(());
        }
        let root = self.state_root()?;
        match &self.file {
            Some(f) => anyhow::bail!(
                "{} does not exist and no project `{}` is recorded in {} (`mirrord-up ls` lists the recorded projects)",
                f.display(),
                self.project,
                root.display()
            ),
            None => anyhow::bail!(
                "{}, and no project `{}` is recorded in {} (`mirrord-up ls` lists the recorded projects)",
                discover::no_file_message(),
                self.project,
                root.display()
            ),
        }
    }

    /// Refuses to act on a state that another file of the same project name recorded, unless
    /// the project was named with `-p` (as `up` refuses through a running supervisor).
    pub fn ensure_same_file(&self, state: Option<&crate::state::State>) -> Result<()> {
        self.ensure_same_path(state.and_then(|s| s.file.as_deref()))
    }

    /// [`Self::ensure_same_file`] given the file the state records.
    pub fn ensure_same_path(&self, theirs: Option<&Path>) -> Result<()> {
        if self.project_explicit() {
            return Ok(());
        }
        let (Some(ours), Some(theirs)) = (&self.file, theirs) else {
            return Ok(());
        };
        if ours != theirs {
            anyhow::bail!(
                "project `{}` runs {}, not {}: name that file with -f, or the project with `-p {}` to act on it anyway",
                self.project,
                theirs.display(),
                ours.display(),
                self.project
            );
        }
        Ok(())
    }

    pub fn state_root(&self) -> Result<PathBuf> {
        state_root(&self.global)
    }

    /// The recorded state, for commands that only read: creates nothing, takes no lock.
    pub fn read_state(&self) -> Result<Option<crate::state::State>> {
        let dir = self.state_dir()?;
        if !dir.join("state.json").exists() {
            return Ok(None);
        }
        Ok(self.store()?.read()?)
    }

    pub fn store(&self) -> Result<StateStore> {
        Ok(StateStore::open(&self.state_root()?, &self.project())?)
    }

    /// How long a mutating command waits for `state.lock` (`MIRRORD_UP_LOCK_TIMEOUT` seconds).
    pub fn lock_timeout(&self) -> std::time::Duration {
        crate::cli::secs_env("MIRRORD_UP_LOCK_TIMEOUT")
            .ok()
            .flatten()
            .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
            .unwrap_or(std::time::Duration::from_secs(60))
    }

    /// The mirrord binary when the launcher needs it.
    pub fn launcher_bin(&self) -> Result<Option<PathBuf>> {
        match self.global.launcher {
            LauncherKind::Mirrord => self.mirrord_bin().map(Some),
            LauncherKind::Local => Ok(None),
        }
    }

    /// The mirrord binary, checked to exist (README: "Running with the real mirrord").
    pub fn mirrord_bin(&self) -> Result<PathBuf> {
        let given = self.global.mirrord_bin.clone();
        let name = given.clone().unwrap_or_else(|| PathBuf::from("mirrord"));
        let found = if name.components().count() > 1 {
            name.is_file().then(|| name.clone())
        } else {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(&name))
                    .find(|p| p.is_file())
            })
        };
        found.map(|p| std::path::absolute(&p).unwrap_or(p)).with_context(|| {
            format!(
                "mirrord binary `{}` not found{}: install mirrord, point --mirrord-bin or MIRRORD_BIN at it, or run the commands without mirrord with `--launcher local`",
                name.display(),
                if given.is_none() { " on PATH" } else { "" }
            )
        })
    }

    /// The desired services, inferring targets (through the cached answers in `cache`) when
    /// the launcher is mirrord.
    pub fn desired(
        &self,
        doc: &UpDocument,
        selection: &[String],
        mode: Option<crate::config::Mode>,
        cache: std::collections::BTreeMap<String, String>,
    ) -> Result<(Desired, std::collections::BTreeMap<String, String>)> {
        let mut inference = match self.global.launcher {
            LauncherKind::Mirrord if needs_inference(doc, selection) => Some(TargetInference::new(
                cache,
                doc.file.common.accept_invalid_certificates,
            )),
            _ => None,
        };
        let desired = crate::desired::resolve(
            doc,
            ResolveOptions {
                selection,
                mode,
                context: self.global.context.as_deref(),
                launcher: self.global.launcher,
                inference: inference.as_mut(),
            },
        )?;
        if !self.global.quiet {
            for w in &desired.warnings {
                eprintln!("{w}");
            }
        }
        Ok((desired, inference.map(|i| i.cache).unwrap_or_default()))
    }
}

impl crate::project::Project for Context {
    fn store(&self) -> Result<StateStore> {
        Context::store(self)
    }

    fn lock_timeout(&self) -> std::time::Duration {
        Context::lock_timeout(self)
    }

    fn files(&self) -> Vec<PathBuf> {
        Context::files(self)
    }

    fn load(&self) -> Result<UpDocument> {
        Context::load(self)
    }

    fn desired(
        &self,
        doc: &UpDocument,
        selection: &[String],
        mode: Option<crate::config::Mode>,
        cache: std::collections::BTreeMap<String, String>,
    ) -> Result<(Desired, std::collections::BTreeMap<String, String>)> {
        Context::desired(self, doc, selection, mode, cache)
    }

    fn desired_tag(&self) -> Option<String> {
        let g = &self.global;
        Some(format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{}",
            self.files(),
            g.key,
            g.launcher,
            g.context,
            g.profiles,
            g.quiet
        ))
    }

    fn launcher_bin(&self) -> Result<Option<PathBuf>> {
        Context::launcher_bin(self)
    }

    fn stdout_color(&self) -> bool {
        Context::stdout_color(self)
    }

    fn stderr_color(&self) -> bool {
        Context::stderr_color(self)
    }
}

/// Where state, logs and generated configs live: `--state-dir`, else
/// `$XDG_STATE_HOME/mirrord-up`, else `~/.local/state/mirrord-up`.
pub fn state_root(global: &GlobalArgs) -> Result<PathBuf> {
    if let Some(d) = &global.state_dir {
        return Ok(std::path::absolute(d)?);
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("mirrord-up"));
    }
    let home = std::env::var_os("HOME").context("neither XDG_STATE_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/state/mirrord-up"))
}

/// The project name a file gives: its directory's name, sanitized.
pub fn project_of_file(file: &Path) -> String {
    sanitize_project(
        &file
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "default".into()),
    )
}

fn needs_inference(doc: &UpDocument, selection: &[String]) -> bool {
    crate::desired::select(doc, selection)
        .map(|names| {
            names
                .iter()
                .any(|n| doc.file.services.0[n].target.needs_inference())
        })
        .unwrap_or(true)
}

pub use crate::project::ensure_known;

pub fn sanitize_project(raw: &str) -> String {
    let s: String = raw
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        .collect();
    if s.is_empty() { "default".into() } else { s }
}
