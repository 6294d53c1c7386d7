//! `ci start|stop|ps`: one-shot calls on the same state and engine, for pipelines where each
//! step is a separate process (README: "CI"). Unlike real `mirrord ci`, sessions are recorded with
//! their identity under the project's lock, stopped by process group with a grace period, and
//! a session that is already dead makes `ci start` fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::Context;
use crate::cli::{CiCommand, UpArgs};
use crate::process::{self, ENV_INSTANCE, ENV_PROJECT, ENV_SERVICE, ENV_STATE, SpawnRequest};
use crate::readiness::READY_LINE;
use crate::request::Request;
use crate::spec::{LauncherKind, ServiceSpec};
use crate::state::now_ms;

pub fn run(ctx: &Context, command: CiCommand) -> Result<ExitCode> {
    match command {
        CiCommand::Start { args } => start(ctx, &parse_start(&args)?),
        CiCommand::Stop { names, timeout } => super::down::stop(
            ctx,
            (!names.is_empty()).then_some(names.as_slice()),
            Some(timeout.map_or(crate::spec::DEFAULT_STOP_TIMEOUT, Duration::from_secs_f64)),
        ),
        CiCommand::Ps { format } => super::ps::run(
            ctx,
            format,
            &super::ps::Options {
                all: true,
                ..Default::default()
            },
        ),
    }
}

/// `ci start`'s own options; everything else goes to `mirrord exec`.
#[derive(Debug, Default, PartialEq)]
pub struct StartArgs {
    pub name: Option<String>,
    pub foreground: bool,
    pub wait: bool,
    pub wait_timeout: Option<f64>,
    /// `--up [SERVICE…]`: apply the YAML once instead.
    pub up: Option<Vec<String>>,
    pub mirrord_flags: Vec<String>,
    /// The `-f/--config-file` among them (for `ci.output_dir`).
    pub config_file: Option<PathBuf>,
    pub command: Vec<String>,
}

/// mirrord exec flags that take a value (compat §5.1), so that `ci start -t x node app.js`
/// finds the command without a `--`.
const VALUE_FLAGS: &[&str] = crate::cli::MIRRORD_EXEC_VALUE_FLAGS;

pub fn parse_start(raw: &[String]) -> Result<StartArgs> {
    let mut a = StartArgs::default();
    let mut it = raw.iter().peekable();
    let value = |flag: &str, it: &mut std::iter::Peekable<std::slice::Iter<String>>| {
        it.next()
            .cloned()
            .with_context(|| format!("`{flag}` needs a value"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--" => {
                a.command = it.cloned().collect();
                break;
            }
            "-h" | "--help" => {
                use clap::CommandFactory;
                let start = crate::cli::Cli::command()
                    .find_subcommand("ci")
                    .and_then(|ci| ci.find_subcommand("start"))
                    .expect("ci start exists")
                    .clone();
                let args: Vec<_> = std::env::args_os().collect();
                crate::cli::without_color_if_asked(start, &args).print_long_help()?;
                std::process::exit(0);
            }
            "--name" => a.name = Some(value("--name", &mut it)?),
            "--foreground" => a.foreground = true,
            "--wait" => a.wait = true,
            "--wait-timeout" => {
                a.wait_timeout = Some(
                    crate::cli::parse_secs(&value("--wait-timeout", &mut it)?)
                        .map_err(|e| anyhow::anyhow!("`--wait-timeout`: {e}"))?,
                )
            }
            "--up" => a.up = Some(Vec::new()),
            s if s.starts_with("--name=") => a.name = Some(s["--name=".len()..].to_owned()),
            s if a.up.is_some() && !s.starts_with('-') => {
                a.up.as_mut().expect("set").push(s.to_owned())
            }
            s if s.starts_with('-') => {
                a.mirrord_flags.push(s.to_owned());
                if let Some(v) = s.strip_prefix("--config-file=") {
                    a.config_file = Some(v.into());
                }
                if VALUE_FLAGS.contains(&s) {
                    let v = value(s, &mut it)?;
                    if s == "-f" || s == "--config-file" {
                        a.config_file = Some(PathBuf::from(&v));
                    }
                    a.mirrord_flags.push(v);
                }
            }
            _ => {
                // The command starts at the first word that is not a flag or a flag's value.
                a.command = std::iter::once(arg).chain(it).cloned().collect();
                break;
            }
        }
    }
    if let Some(n) = &a.name {
        crate::config::check_name(n).map_err(|e| anyhow::anyhow!("`--name`: {e}"))?;
    }
    if a.up.is_none() && a.command.is_empty() {
        bail!("`ci start` needs a command: mirrord-up ci start [FLAGS…] -- <command>…");
    }
    Ok(a)
}

fn start(ctx: &Context, a: &StartArgs) -> Result<ExitCode> {
    if let Some(services) = &a.up {
        let args = UpArgs {
            services: services.clone(),
            detach: true,
            no_watch: true,
            mode: None,
            force_recreate: false,
            dry_run: false,
            wait: a.wait,
            wait_timeout: a.wait_timeout.unwrap_or(120.0),
            abort_on_exit: false,
        };
        return super::up::apply(ctx, &args);
    }
    let cwd = std::env::current_dir()?;
    let program = crate::engine::find_program(&a.command[0], &cwd)
        .with_context(|| format!("command `{}` not found", a.command[0]))?;
    let binary = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "command".into());
    let (launcher_program, launcher_args) = match ctx.global.launcher {
        LauncherKind::Mirrord => {
            let mut args = vec!["exec".to_owned()];
            args.extend(a.mirrord_flags.iter().cloned());
            args.push("--".into());
            args.extend(a.command.iter().cloned());
            (ctx.mirrord_bin()?, args)
        }
        LauncherKind::Local => (program.clone(), a.command[1..].to_vec()),
    };
    let store = ctx.store()?;
    let nonce = process::new_nonce();
    let mut env = BTreeMap::new();
    env.insert(ENV_PROJECT.to_owned(), store.project.clone());
    env.insert(ENV_STATE.to_owned(), store.dir.display().to_string());
    env.insert(ENV_INSTANCE.to_owned(), nonce.clone());
    if ctx.global.launcher == LauncherKind::Mirrord && !a.foreground {
        let user = std::env::var("MIRRORD_PROGRESS_MODE").ok();
        env.insert(
            "MIRRORD_PROGRESS_MODE".to_owned(),
            progress_mode(user.as_deref()).to_owned(),
        );
    }

    if a.foreground {
        // Attached, like `mirrord exec`: this process becomes the session, and its exit code
        // is the application's. Nothing is recorded (nothing is left behind to stop).
        use std::os::unix::process::CommandExt;
        env.insert(ENV_SERVICE.to_owned(), a.name.clone().unwrap_or(binary));
        let err = std::process::Command::new(&launcher_program)
            .args(&launcher_args)
            .envs(&env)
            .exec();
        bail!("cannot run `{}`: {err}", launcher_program.display());
    }

    let out_dir = output_dir(a.config_file.as_deref(), &binary)?;
    let session = crate::request::CiSession {
        name: a.name.clone(),
        binary,
        spawn: SpawnRequest {
            program: launcher_program,
            args: launcher_args,
            env,
            cwd: cwd.clone(),
            stdout: out_dir.join("stdout"),
            stderr: out_dir.join("stderr"),
            nonce,
            keep_mirrord_env: true,
        },
        spec: ServiceSpec::plain(String::new(), ctx.global.launcher, a.command.clone(), cwd),
        out_dir: out_dir.clone(),
    };
    // Recorded and spawned by a pass (the one apply path); always in this process, whether a
    // supervisor runs or not: the session gets this step's environment.
    let mut reporter = ctx.reporter(0);
    let (ok, answer) = crate::request::submit(
        ctx,
        None,
        &Request::CiStart(Box::new(session)),
        reporter.as_mut(),
    )?;
    if !ok {
        bail!("{answer}");
    }
    let name = answer;
    let Some(session) = ctx
        .read_state()?
        .and_then(|s| s.services.get(&name).and_then(|r| r.process.clone()))
    else {
        bail!("session `{name}` was recorded without its process");
    };
    // This process spawned it: its exit is ours to collect.
    let child = process::Spawned { pid: session.pid };
    println!("mirrord ci files will be stored in {}", out_dir.display());
    println!("child pid: {}", session.pid);

    // Return once the session is up: mirrord's `Ready!` (or, locally, at once), then a short
    // settling time in which an application that dies at start is still caught.
    let ready_timeout = Duration::from_secs_f64(a.wait_timeout.unwrap_or(60.0));
    let needs_ready = a.wait || ctx.global.launcher == LauncherKind::Mirrord;
    let deadline = Instant::now() + ready_timeout;
    let stdout = out_dir.join("stdout");
    let stderr = out_dir.join("stderr");
    let mut watch = crate::readiness::ReadyWatch::new(&stdout, 0);
    let mut pause = Duration::from_millis(1);
    let mut ready_at: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait() {
            let (how, code) = match status {
                process::ExitKind::Code(c) => (format!("exit code {c}"), Some(c)),
                process::ExitKind::Signal(s) => (format!("signal {}", s as i32), None),
            };
            // What it left behind (mirrord's intproxy outlives a failed start).
            process::stop_leftovers(
                &name,
                &session,
                nix::sys::signal::Signal::SIGTERM,
                crate::spec::DEFAULT_STOP_TIMEOUT,
            );
            let ready = ready_at.is_some() || watch.poll();
            let errors = crate::readiness::read_from(&stderr, 0);
            // Before `Ready!` only mirrord wrote: its report's cause (not its help text). After
            // it the application did: its last lines, unless mirrord itself reported (execve).
            let cause = if ready || ctx.global.launcher == LauncherKind::Local {
                crate::report::graphical_cause(&errors)
            } else {
                crate::report::cause(&errors)
            };
            let when = if ready || ctx.global.launcher == LauncherKind::Local {
                "exited right away"
            } else {
                "failed before Ready!"
            };
            let reason = match &cause {
                Some(c) => format!("{when} ({how}): {c}"),
                None => format!("{when} ({how})"),
            };
            record_exit(ctx, &name, code, &reason)?;
            let tail = tail_of(&stderr, 10);
            let more = if cause.is_some() || tail.is_empty() {
                String::new()
            } else {
                format!("\nlast lines of stderr:\n{tail}")
            };
            bail!(
                "session `{name}` {reason}\noutput in {}{more}",
                out_dir.display(),
            );
        }
        let now = Instant::now();
        if ready_at.is_none() && (!needs_ready || watch.poll()) {
            ready_at = Some(now);
        }
        if ready_at.is_some_and(|t| now.duration_since(t) >= SETTLE) {
            return Ok(ExitCode::SUCCESS);
        }
        if ready_at.is_none() && now >= deadline {
            // Not ready is not started: the step fails (the session keeps running, in case it
            // is only slow; `ci stop` ends it).
            bail!(
                "session `{name}` not ready after {}s (no `{READY_LINE}` line in {}); it keeps running, stop it with `mirrord-up ci stop {name}`",
                ready_timeout.as_secs_f64(),
                stdout.display()
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// After `Ready!`, how long `ci start` still watches for an application that dies at once.
const SETTLE: Duration = Duration::from_millis(100);

/// The progress mode for a `ci start` session: `Ready!` is printed only in the `simple` (or
/// `dumb`, the same) and `json` modes, and nothing at all on a pipe otherwise (runtime §1.1).
/// One of those set by the user stays (`json` output is understood); anything else becomes
/// `simple`.
pub fn progress_mode(user: Option<&str>) -> &'static str {
    match user.map(str::trim) {
        Some("json") => "json",
        Some("dumb") => "dumb",
        _ => "simple",
    }
}

/// Records the exit `ci start` saw (a pass of its own: the one apply path).
fn record_exit(ctx: &Context, name: &str, code: Option<i32>, reason: &str) -> Result<()> {
    let req = Request::CiExited {
        name: name.to_owned(),
        code,
        reason: reason.to_owned(),
    };
    let mut reporter = ctx.reporter(0);
    let (ok, answer) = crate::request::submit(ctx, None, &req, reporter.as_mut())?;
    if !ok {
        bail!("{answer}");
    }
    Ok(())
}

/// `<ci.output_dir or $TMPDIR/mirrord-<euid>>/<binary>-<unix seconds>-<7 random alphanumerics>`,
/// with empty `stdout` and `stderr` files in it.
///
/// Unlike real mirrord (`$TMPDIR/mirrord`, shared by every user), the default base is per user:
/// a directory another user created first can neither be used against us nor lock us out. The
/// base and every directory above it are checked (`fsutil`: ours, not writable by others;
/// ancestors ours or root's, writable by others only if sticky), the run directory is created
/// with `mkdirat` under the checked base and must not exist yet, and the two files are created
/// with `O_EXCL|O_NOFOLLOW` under it: nothing planted in advance is followed or reused.
fn output_dir(config_file: Option<&Path>, binary: &str) -> Result<PathBuf> {
    use crate::fsutil::{Access, FsError, SafeDir};
    let base = match config_file.map(read_output_dir).transpose()?.flatten() {
        Some(d) => d,
        None => default_output_base(),
    };
    let base = SafeDir::open(&base, true).map_err(|e| {
        anyhow::anyhow!(
            "{e}; ci start writes its output there (set `ci.output_dir` in the mirrord config, or TMPDIR, to use another directory)"
        )
    })?;
    let seconds = now_ms() / 1000;
    for _ in 0..100 {
        let name = format!("{binary}-{seconds}-{}", random_alnum(7));
        let run = match base.create_subdir(&name) {
            Ok(d) => d,
            Err(FsError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for file in ["stdout", "stderr"] {
            run.open_file(file, Access::CreateNew)?;
        }
        return Ok(run.path().to_owned());
    }
    bail!(
        "cannot create a new output directory in {}: every name tried exists",
        base.path().display()
    )
}

/// `$TMPDIR/mirrord-<effective uid>`: one base per user.
pub fn default_output_base() -> PathBuf {
    std::env::temp_dir().join(format!("mirrord-{}", nix::unistd::geteuid().as_raw()))
}

/// `ci.output_dir` of a mirrord config file (JSON, or YAML by extension).
fn read_output_dir(path: &Path) -> Result<Option<PathBuf>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value = if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
        serde_yaml::from_str(&text)?
    } else {
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?
    };
    Ok(v.pointer("/ci/output_dir")
        .and_then(|d| d.as_str())
        .map(PathBuf::from))
}

fn random_alnum(n: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut seed = u64::from_str_radix(&process::new_nonce(), 16).unwrap_or(7);
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            CHARS[(seed % CHARS.len() as u64) as usize] as char
        })
        .collect()
}

fn tail_of(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn flags_pass_through_and_the_command_is_found() {
        let a = parse_start(&args("-t deployment/x -n staging --steal -- node app.js")).unwrap();
        assert_eq!(a.mirrord_flags, args("-t deployment/x -n staging --steal"));
        assert_eq!(a.command, args("node app.js"));
        let b = parse_start(&args("--name api -f m.json --steal node app.js")).unwrap();
        assert_eq!(b.name.as_deref(), Some("api"));
        assert_eq!(b.config_file, Some(PathBuf::from("m.json")));
        assert_eq!(b.mirrord_flags, args("-f m.json --steal"));
        assert_eq!(b.command, args("node app.js"));
    }

    #[test]
    fn up_takes_service_names() {
        let a = parse_start(&args("--up api web --wait")).unwrap();
        assert_eq!(a.up, Some(args("api web")));
        assert!(a.wait);
        assert!(parse_start(&args("--steal")).is_err());
    }

    #[test]
    fn random_names_are_alphanumeric() {
        let s = random_alnum(7);
        assert_eq!(s.len(), 7);
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
