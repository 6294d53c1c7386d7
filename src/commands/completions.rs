//! `completions <SHELL>`: the shell completion script, generated from the clap definition so
//! that it follows every subcommand and option as they change.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Command, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;

const BIN: &str = "mirrord-up";

pub fn run(shell: Shell) -> Result<ExitCode> {
    std::io::stdout().write_all(script(shell).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn script(shell: Shell) -> String {
    let mut command = without_hidden(Cli::command());
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, BIN, &mut out);
    let script = String::from_utf8(out).expect("clap_complete writes UTF-8");
    match shell {
        Shell::Bash => fix_bash_dispatch(&script),
        _ => script,
    }
}

/// clap_complete's generators list hidden subcommands (`__supervise`) like any other, and a
/// `Command` cannot drop one: rebuild the top level from what the generators read (arguments,
/// visible subcommands, about, version). Only the top level has hidden subcommands;
/// `tests/completions.rs` fails if a deeper level gets one.
fn without_hidden(root: Command) -> Command {
    let mut rebuilt = Command::new(BIN)
        .args(root.get_arguments().cloned())
        .subcommands(root.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
        .subcommand_required(root.is_subcommand_required_set())
        .arg_required_else_help(root.is_arg_required_else_help_set());
    if root.get_version().is_some() {
        rebuilt = rebuilt.version(env!("CARGO_PKG_VERSION"));
    }
    if let Some(about) = root.get_about() {
        rebuilt = rebuilt.about(about.clone());
    }
    if let Some(long_about) = root.get_long_about() {
        rebuilt = rebuilt.long_about(long_about.clone());
    }
    rebuilt
}

/// clap_complete 4.6 spells the state of a subcommand of a hyphenated binary two ways in its
/// bash script (`mirrord__up__subcmd__up` where it dispatches, `mirrord__subcmd__up__subcmd__up`
/// in the `case` arm), so no subcommand's options ever complete (clap-rs/clap#6421). Spell the
/// arms as the dispatch does; once clap_complete is fixed this finds nothing to replace.
fn fix_bash_dispatch(script: &str) -> String {
    let wrong = format!("{}__subcmd__", BIN.replace('-', "__subcmd__"));
    let right = format!("{}__subcmd__", BIN.replace('-', "__"));
    script.replace(&wrong, &right)
}
