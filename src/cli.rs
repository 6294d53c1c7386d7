//! The command line (clap): global options of spec §2, accepted before or after the subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Mode;
use crate::spec::LauncherKind;

#[derive(Debug, Parser)]
#[command(
    name = "mirrord-up",
    version,
    about = "Run several mirrord sessions from one mirrord-up.yaml, declaratively",
    long_about = "Run several mirrord sessions from one mirrord-up.yaml, the way docker compose runs \
containers from one compose file. The YAML is the desired state; every command plans the \
difference to what runs and starts, stops or restarts only what changed.",
    after_help = "Examples:\n  mirrord-up up                 # foreground, logs of every service, file watched\n  mirrord-up up -d && mirrord-up ps\n  mirrord-up plan --format json\n  mirrord-up down"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The mirrord-up.yaml to use (default: `mirrord-up.yaml` in the current directory or the
    /// nearest parent that has one). Repeat it to merge several files in order, compose's way
    /// (`MIRRORD_UP_FILE` takes them separated by `:`).
    #[arg(
        short = 'f',
        long = "file",
        env = "MIRRORD_UP_FILE",
        global = true,
        value_name = "PATH",
        value_delimiter = ':',
        action = clap::ArgAction::Append
    )]
    pub file: Vec<PathBuf>,
    /// Project name (default: the YAML's directory name, lower-cased, [a-z0-9_-] only).
    #[arg(
        short = 'p',
        long = "project-name",
        env = "MIRRORD_UP_PROJECT",
        global = true
    )]
    pub project: Option<String>,
    /// Where state, logs and generated configs live (default: $XDG_STATE_HOME/mirrord-up).
    #[arg(long, env = "MIRRORD_UP_STATE_DIR", global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The mirrord binary (default: `mirrord` on PATH).
    #[arg(long, env = "MIRRORD_BIN", global = true, value_name = "PATH")]
    pub mirrord_bin: Option<PathBuf>,
    /// How services are started: through mirrord, or the command alone (offline, demos).
    #[arg(
        long,
        env = "MIRRORD_UP_LAUNCHER",
        global = true,
        value_enum,
        default_value = "mirrord"
    )]
    pub launcher: LauncherKind,
    /// Session key (default: the OS user name, as real mirrord).
    #[arg(short = 'k', long, env = "MIRRORD_UP_KEY", global = true)]
    pub key: Option<String>,
    /// Activate a profile: services with `profiles:` start only when one of theirs is active
    /// or they are named (repeatable; `MIRRORD_UP_PROFILES` takes a comma-separated list).
    #[arg(
        long = "profile",
        env = "MIRRORD_UP_PROFILES",
        global = true,
        value_name = "NAME",
        value_delimiter = ',',
        action = clap::ArgAction::Append
    )]
    pub profiles: Vec<String>,
    /// Kubernetes context for every service (beats the file's `context`).
    #[arg(long, global = true, value_name = "CTX")]
    pub context: Option<String>,
    /// No ANSI colours (also: NO_COLOR, or output that is not a terminal).
    #[arg(long, global = true)]
    pub no_color: bool,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum TableFormat {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the YAML (and with --compat, list what real mirrord would reject: exit 1 if any).
    #[command(after_help = "Example:\n  mirrord-up check --compat -f mirrord-up.yaml")]
    Check {
        /// Also list the mirrord-up extensions the file uses (real mirrord 3.250 rejects them);
        /// exit 1 when there is any.
        #[arg(long)]
        compat: bool,
    },
    /// Print the generated mirrord.json of every (or one) service, or the config hashes.
    #[command(
        after_help = "Examples:\n  mirrord-up config api\n  mirrord-up config --hash\n  mirrord-up config --yaml"
    )]
    Config {
        /// Only this service: prints its mirrord.json alone.
        service: Option<String>,
        /// Print `<service> <sha256>` lines instead.
        #[arg(long)]
        hash: bool,
        /// Print the file as it is parsed instead: rendered, merge keys (`<<`) applied, `x-*`
        /// keys dropped.
        #[arg(long, conflicts_with_all = ["hash", "service"])]
        yaml: bool,
    },
    /// Converge to the YAML: start what is missing or changed, stop what was removed.
    #[command(
        after_help = "Examples:\n  mirrord-up up -d              # start in the background, return when started\n  mirrord-up up -d api --wait   # api and its dependencies, wait until ready\n  mirrord-up up --dry-run       # what would change"
    )]
    Up(UpArgs),
    /// Stop every service of the project and forget them; works without the YAML.
    #[command(
        after_help = "Examples:\n  mirrord-up down\n  mirrord-up down -t 2 --force   # state lost? find processes by their markers"
    )]
    Down {
        /// Seconds to wait after the stop signal before SIGKILL (default: each service's stop_timeout).
        #[arg(short, long, value_name = "SECS", value_parser = parse_secs)]
        timeout: Option<f64>,
        /// Also stop processes of this project that the state does not record (found by the
        /// MIRRORD_UP_* markers), and go on past a corrupt state file.
        #[arg(long)]
        force: bool,
    },
    /// One row per service in 80 columns: name, status, PID, uptime, restarts by the restart
    /// policy, target (`--wide`: also config hash, launcher, last exit, last reason; `-q`:
    /// PIDs only).
    #[command(
        after_help = "Examples:\n  mirrord-up ps\n  mirrord-up ps --status failed,backoff\n  mirrord-up ps -q | xargs -r ps -o pid,rss,cmd -p\n  mirrord-up ps --format json | jq '.[] | select(.status != \"running\")'"
    )]
    Ps {
        #[arg(long, value_enum, default_value_t)]
        format: TableFormat,
        /// Also show CI sessions.
        #[arg(short, long)]
        all: bool,
        /// Every column (config hash, launcher, last exit, last reason), nothing cut.
        #[arg(long)]
        wide: bool,
        /// Service names only, one a line.
        #[arg(long)]
        services: bool,
        /// Only services in this status (starting, running, ready, stopping, exited, failed,
        /// backoff, stopped); repeat it or separate with commas.
        #[arg(long, value_name = "STATUS", value_delimiter = ',')]
        status: Vec<String>,
    },
    /// Every project recorded in the state directory: its file, supervisor and services by status.
    #[command(
        after_help = "Examples:\n  mirrord-up ls\n  mirrord-up ls --format json | jq -r '.[] | select(.supervisor) | .name'"
    )]
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: TableFormat,
        /// Also projects that record nothing running or stopped (after `down`).
        #[arg(short, long)]
        all: bool,
    },
    /// Per-service logs, prefixed `name | `, with the supervisor's lifecycle lines (`name ▸ `).
    #[command(
        after_help = "Examples:\n  mirrord-up logs -n 20\n  mirrord-up logs -f api          # ends once api and the supervisor are gone\n  mirrord-up logs --since 10m"
    )]
    Logs {
        services: Vec<String>,
        /// Keep printing new lines, across restarts and reloads (`-f` after `logs` means this).
        #[arg(long)]
        follow: bool,
        /// Lines from the end of each log (default: all).
        #[arg(short = 'n', long = "tail", value_name = "N")]
        tail: Option<usize>,
        /// No `name | ` prefix.
        #[arg(long)]
        no_prefix: bool,
        /// Prefix each line with when it was written: lifecycle lines and lines read live
        /// with `-f` (old service lines have no known time and are left blank).
        #[arg(long)]
        timestamps: bool,
        /// Only what happened since: a duration back from now (`10m`, `1h`) or an RFC 3339
        /// time. Old service lines: from their service's last lifecycle event before it.
        #[arg(long, value_name = "DURATION|TIME", value_parser = crate::events::parse_since)]
        since: Option<std::time::SystemTime>,
    },
    /// CI: start sessions one step at a time, stop them all at the end (state shared on disk).
    #[command(
        after_help = "Examples:\n  mirrord-up ci start --name api -t deployment/api -- npm start\n  npm test                      # against staging, through the session\n  mirrord-up ci ps\n  mirrord-up ci stop"
    )]
    Ci {
        #[command(subcommand)]
        command: CiCommand,
    },
    /// Restart services, all without names (and dependents with `depends_on.<x>.restart: true`).
    #[command(
        after_help = "Examples:\n  mirrord-up restart api\n  mirrord-up restart api worker -t 2\n  mirrord-up restart            # every service"
    )]
    Restart(ServiceControlArgs),
    /// Stop services (all without names) without forgetting them (`start` brings them back).
    #[command(
        after_help = "Examples:\n  mirrord-up stop worker\n  mirrord-up start worker\n  mirrord-up stop               # every service"
    )]
    Stop(ServiceControlArgs),
    /// Start services that were stopped or exited (all without names).
    #[command(
        after_help = "Examples:\n  mirrord-up start worker\n  mirrord-up start              # every service"
    )]
    Start(ServiceControlArgs),
    /// Interactive wizard writing a mirrord-up.yaml (same questions as `mirrord up init`).
    #[command(
        after_help = "Examples:\n  mirrord-up init\n  mirrord-up init -o services/mirrord-up.yaml"
    )]
    Init {
        /// Where to write the file (asked again before writing).
        #[arg(short, long, value_name = "PATH", default_value = "mirrord-up.yaml")]
        output: PathBuf,
    },
    /// Print the JSON schema of mirrord-up.yaml (for editor completion and validation).
    #[command(
        after_help = "Examples:\n  mirrord-up schema > mirrord-up.schema.json\n  # then, as the first line of mirrord-up.yaml (editors using yaml-language-server):\n  # yaml-language-server: $schema=./mirrord-up.schema.json"
    )]
    Schema,
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  mirrord-up completions bash > ~/.local/share/bash-completion/completions/mirrord-up\n  mirrord-up completions zsh > \"${fpath[1]}/_mirrord-up\"\n  mirrord-up completions fish > ~/.config/fish/completions/mirrord-up.fish"
    )]
    Completions { shell: clap_complete::Shell },
    /// Run a command with a service's mirrord context (target, env, context, key), attached
    /// to this terminal; incoming traffic off unless --service-ports. Exits with its status.
    #[command(
        after_help = "Examples:\n  mirrord-up run api -- psql\n  mirrord-up run api -e LOG_LEVEL=debug -- go test ./...\n  mirrord-up run --service-ports api -- ./server   # takes the service's incoming traffic too"
    )]
    Run {
        /// The service whose mirrord configuration is used.
        service: String,
        /// Keep the service's incoming traffic configuration (steal/mirror, HTTP filter).
        #[arg(long)]
        service_ports: bool,
        /// An environment variable for the command (over the service's `env.override`).
        #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Follow the running supervisor's events live: started, ready, exited, restart
    /// scheduled, failed, stopped, reloads, session connected/lost, incoming requests.
    #[command(
        after_help = "Examples:\n  mirrord-up events\n  mirrord-up events api --json | jq -c 'select(.type == \"exited\")'\n  mirrord-up events --since 10m"
    )]
    Events {
        /// Only these services (and project-wide events); default: every one.
        services: Vec<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// First the recent events the supervisor kept since then: a duration back from now
        /// (`10m`) or an RFC 3339 time.
        #[arg(long, value_name = "DURATION|TIME", value_parser = crate::events::parse_since)]
        since: Option<std::time::SystemTime>,
    },
    /// The background supervisor of `up --detach` (internal).
    #[command(name = "__supervise", hide = true)]
    Supervise(UpArgs),
    /// What `up` would do now, per service, with the reason. Exit 0 once printed (1: error).
    #[command(
        after_help = "Examples:\n  mirrord-up plan\n  mirrord-up plan api --format json\n  mirrord-up plan --detailed-exitcode || echo \"changes pending (2) or error (1)\""
    )]
    Plan {
        services: Vec<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Exit 0 when there is nothing to do, 2 when changes are pending, 1 on error
        /// (terraform's convention).
        #[arg(long)]
        detailed_exitcode: bool,
        /// Override every selected service's `default_mode`.
        #[arg(short, long, value_enum)]
        mode: Option<ModeArg>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Services to run (with their dependencies); default: every service not marked `skip`.
    pub services: Vec<String>,
    /// Run in the background and return once everything is started.
    #[arg(short, long)]
    pub detach: bool,
    /// Do not watch the YAML for changes.
    #[arg(long)]
    pub no_watch: bool,
    /// Override every selected service's `default_mode`.
    #[arg(short, long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Restart every selected service even if its configuration did not change.
    #[arg(long)]
    pub force_recreate: bool,
    /// Print the plan and change nothing (same output as `plan`).
    #[arg(long)]
    pub dry_run: bool,
    /// Return only once every started service is ready (`ready` rule or mirrord's `Ready!`).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120.0, value_parser = parse_secs)]
    pub wait_timeout: f64,
    /// Stop everything when any service exits (real `mirrord up` behaviour).
    #[arg(long)]
    pub abort_on_exit: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ServiceControlArgs {
    /// Services to act on (default: every service of the project).
    pub services: Vec<String>,
    /// Seconds between the stop signal and SIGKILL (default: each service's stop_timeout).
    #[arg(short, long, value_name = "SECS", value_parser = parse_secs)]
    pub timeout: Option<f64>,
}

#[derive(Debug, Subcommand)]
pub enum CiCommand {
    /// Start one mirrord session in the background and record it, or apply the YAML once (--up).
    #[command(
        override_usage = "mirrord-up ci start [--name NAME] [--foreground] [--wait] [--wait-timeout SECS] [MIRRORD EXEC FLAGS…] -- <COMMAND>…\n       mirrord-up ci start --up [SERVICE…]",
        after_help = "Everything that is not one of the options above is passed to `mirrord exec` as is.\n\nExamples:\n  mirrord-up ci start --name api -t deployment/api -n staging --steal -- npm start\n  mirrord-up ci start --wait -f .mirrord/mirrord.json -- ./server\n  mirrord-up ci start --up            # every service of mirrord-up.yaml, once\n  mirrord-up ci stop"
    )]
    Start {
        /// (parsed by mirrord-up itself; see the usage line)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// Stop the project's CI sessions and services (all, or the named ones): signal, grace, SIGKILL.
    #[command(after_help = "Examples:\n  mirrord-up ci stop\n  mirrord-up ci stop api -t 2")]
    Stop {
        names: Vec<String>,
        /// Seconds between the stop signal and SIGKILL (default 10).
        #[arg(short, long, value_name = "SECS", value_parser = parse_secs)]
        timeout: Option<f64>,
    },
    /// As `ps -a`: services and CI sessions of the project.
    #[command(after_help = "Examples:\n  mirrord-up ci ps\n  mirrord-up ci ps --format json")]
    Ps {
        #[arg(long, value_enum, default_value_t)]
        format: TableFormat,
    },
}

// The seconds parsers live below the CLI (target inference reads a variable too).
pub use crate::secs::{MAX_SECS, parse_secs, secs_env};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Incoming traffic is split between the local and original services using HTTP filtering.
    Split,
    /// The local service replaces the original one (copy target, scaled down to zero).
    Replace,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Split => Mode::Split,
            ModeArg::Replace => Mode::Replace,
        }
    }
}

/// The clap command, without colours when `--no-color` is among `args`: clap colours its own
/// help and usage errors (it already heeds `NO_COLOR`, `TERM=dumb` and non-terminals) before
/// the flag is parsed.
pub fn command(args: &[std::ffi::OsString]) -> clap::Command {
    without_color_if_asked(<Cli as clap::CommandFactory>::command(), args)
}

pub fn without_color_if_asked(cmd: clap::Command, args: &[std::ffi::OsString]) -> clap::Command {
    if args
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--no-color")
    {
        cmd.color(clap::ColorChoice::Never)
    } else {
        cmd
    }
}

/// `logs -f` means follow (as in docker compose), although `-f` is the global `--file`
/// everywhere else: after the `logs` subcommand, a lone `-f` is rewritten to `--follow`.
pub fn rewrite_args(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let Some(sub) = subcommand_index(&args) else {
        return args;
    };
    // `ci start` takes mirrord's own flags (`-f` included) verbatim: hand clap a `--` so that
    // it keeps them raw, and parse them in `commands::ci`. Our own global options written
    // among them move before the subcommand, where clap reads them.
    if args[sub] == "ci" && args.get(sub + 1).is_some_and(|a| a == "start") {
        let mut out = args;
        let rest = out.split_off(sub + 2);
        let (ours, theirs) = split_ci_start(rest);
        let tail = out.split_off(sub);
        out.extend(ours);
        out.extend(tail);
        out.push("--".into());
        out.extend(theirs);
        return out;
    }
    if args[sub] != "logs" {
        return args;
    }
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            if i > sub && a == "-f" {
                "--follow".into()
            } else {
                a
            }
        })
        .collect()
}

/// mirrord exec flags that take a value (compat §5.1; `mirrord exec --help` of 3.250.0).
pub const MIRRORD_EXEC_VALUE_FLAGS: &[&str] = &[
    "-t",
    "--target",
    "-n",
    "--target-namespace",
    "-a",
    "--agent-namespace",
    "-l",
    "--agent-log-level",
    "-i",
    "--agent-image",
    "--agent-ttl",
    "--agent-startup-timeout",
    "--fs-mode",
    "-x",
    "--override-env-vars-exclude",
    "-s",
    "--override-env-vars-include",
    "--skip-processes",
    "-f",
    "--config-file",
    "--context",
    "--env-file",
    "-k",
    "--key",
    "--environment",
    "--pipeline",
    "--triggered-by",
];

/// Our global options that take a value.
const GLOBALS_WITH_VALUE: &[&str] = &[
    "-f",
    "--file",
    "-p",
    "--project-name",
    "--state-dir",
    "--mirrord-bin",
    "--launcher",
    "-k",
    "--key",
    "--context",
];
/// Those of them that are mirrord exec's own after `ci start` (`-f` is its config file; `-k`
/// and `--context` mean the same there). The rest `ci start` takes as ours wherever they are
/// written before the command.
const MIRRORD_EXEC_OWNS: &[&str] = &["-f", "-k", "--key", "--context"];
const CI_START_GLOBAL_FLAGS: &[&str] = &["--no-color", "-q", "--quiet", "--verbose"];

/// Splits what follows `ci start` into our global options and the rest (`ci start`'s own
/// options, mirrord exec's flags, the command), scanning up to `--` or the command.
pub fn split_ci_start(
    rest: Vec<std::ffi::OsString>,
) -> (Vec<std::ffi::OsString>, Vec<std::ffi::OsString>) {
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut up = false;
    let mut it = rest.into_iter();
    while let Some(arg) = it.next() {
        let Some(a) = arg.to_str() else {
            // Not UTF-8: not one of our options; the command (or a value) starts here.
            theirs.push(arg);
            break;
        };
        let name = a.split_once('=').map_or(a, |(n, _)| n);
        if a == "--" {
            theirs.push(arg);
            break;
        } else if GLOBALS_WITH_VALUE.contains(&name) && !MIRRORD_EXEC_OWNS.contains(&name) {
            let inline = a.contains('=');
            ours.push(arg);
            if !inline && let Some(v) = it.next() {
                ours.push(v);
            }
        } else if CI_START_GLOBAL_FLAGS.contains(&a)
            || (a.len() > 1 && a.starts_with('-') && a[1..].bytes().all(|b| b == b'v'))
        {
            ours.push(arg);
        } else if a == "--up" {
            up = true;
            theirs.push(arg);
        } else if a.starts_with('-') {
            let takes_value = !a.contains('=')
                && (MIRRORD_EXEC_VALUE_FLAGS.contains(&a)
                    || ["--name", "--wait-timeout"].contains(&a));
            theirs.push(arg);
            if takes_value && let Some(v) = it.next() {
                theirs.push(v);
            }
        } else if up {
            // `--up api web`: service names.
            theirs.push(arg);
        } else {
            // The command: everything from here on is its own.
            theirs.push(arg);
            break;
        }
    }
    theirs.extend(it);
    (ours, theirs)
}

/// Index of the subcommand word, skipping global options (and the values of those that take one).
pub fn subcommand_index(args: &[std::ffi::OsString]) -> Option<usize> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--" {
            return None;
        }
        if !a.starts_with('-') {
            return Some(i);
        }
        i += if GLOBALS_WITH_VALUE.contains(&a.as_ref()) {
            2
        } else {
            1
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(s: &str) -> String {
        let args: Vec<std::ffi::OsString> = s.split(' ').map(Into::into).collect();
        rewrite_args(args)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn our_global_options_after_ci_start_are_ours() {
        assert_eq!(
            rewrite(
                "mirrord-up ci start --mirrord-bin /m --state-dir /s -p proj -t deployment/api -f cfg.json --name api -q -vv --launcher=local -- sh -c x"
            ),
            "mirrord-up --mirrord-bin /m --state-dir /s -p proj -q -vv --launcher=local ci start -- -t deployment/api -f cfg.json --name api -- sh -c x"
        );
    }

    #[test]
    fn mirrords_own_flags_and_the_command_are_left_alone() {
        // `-f`, `-k` and `--context` are mirrord exec's; after the command, nothing is ours.
        assert_eq!(
            rewrite(
                "mirrord-up -f up.yaml ci start -f m.json -k key --context c node app.js --state-dir x"
            ),
            "mirrord-up -f up.yaml ci start -- -f m.json -k key --context c node app.js --state-dir x"
        );
        assert_eq!(
            rewrite("mirrord-up ci start -- node --state-dir x"),
            "mirrord-up ci start -- -- node --state-dir x"
        );
        // A value that looks like one of our options is a value.
        assert_eq!(
            rewrite("mirrord-up ci start --name --state-dir -- true"),
            "mirrord-up ci start -- --name --state-dir -- true"
        );
    }

    #[test]
    fn up_service_names_do_not_end_the_scan() {
        assert_eq!(
            rewrite("mirrord-up ci start --up api web --state-dir /s --wait"),
            "mirrord-up --state-dir /s ci start -- --up api web --wait"
        );
    }
}
