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
    /// The mirrord-up.yaml to use.
    #[arg(
        short = 'f',
        long = "file",
        env = "MIRRORD_UP_FILE",
        global = true,
        default_value = "mirrord-up.yaml",
        value_name = "PATH"
    )]
    pub file: PathBuf,
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
    /// Validate the YAML (and with --compat, list what real mirrord would reject).
    #[command(after_help = "Example:\n  mirrord-up check --compat -f mirrord-up.yaml")]
    Check {
        /// Also list the mirrord-up extensions the file uses (real mirrord 3.250 rejects them).
        #[arg(long)]
        compat: bool,
    },
    /// Print the generated mirrord.json of every (or one) service, or the config hashes.
    #[command(after_help = "Examples:\n  mirrord-up config api\n  mirrord-up config --hash")]
    Config {
        /// Only this service: prints its mirrord.json alone.
        service: Option<String>,
        /// Print `<service> <sha256>` lines instead.
        #[arg(long)]
        hash: bool,
    },
    /// What `up` would do now, per service, with the reason. Exit 0: nothing to do; 2: changes.
    #[command(after_help = "Examples:\n  mirrord-up plan\n  mirrord-up plan api --format json")]
    Plan {
        services: Vec<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Override every selected service's `default_mode`.
        #[arg(short, long, value_enum)]
        mode: Option<ModeArg>,
    },
}

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
