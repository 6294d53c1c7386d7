//! Shell completion, dynamic (clap_complete's engine): the shell asks the binary itself at
//! each TAB (`COMPLETE=<shell> mirrord-up -- <words>`), so that subcommands and options follow
//! the clap definition and service names come from the project's file, found as every command
//! finds it (`-f` on the line, `MIRRORD_UP_FILE`, else the current directory and its parents).
//! `completions <SHELL>` prints the script that registers this with the shell (the same as
//! `COMPLETE=<shell> mirrord-up`).

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Command, CommandFactory};
use clap_complete::env::EnvCompleter;
use clap_complete::{ArgValueCandidates, CompleteEnv, CompletionCandidate, Shell};

use crate::cli::Cli;

const BIN: &str = "mirrord-up";
/// The variable the registration scripts set when they call the binary.
const VAR: &str = "COMPLETE";

/// Subcommands whose positional argument names services of the file.
const SERVICE_ARGS: &[(&str, &str)] = &[
    ("up", "services"),
    ("logs", "services"),
    ("restart", "services"),
    ("stop", "services"),
    ("start", "services"),
    ("plan", "services"),
    ("config", "service"),
    ("run", "services"),
    ("run", "service"),
    ("events", "services"),
];

/// Answers a completion request (or prints the registration) and exits, when the shell's
/// script called this binary with `COMPLETE` set; otherwise returns.
pub fn answer_if_asked() {
    if std::env::var_os(VAR).is_none() {
        return;
    }
    let args = line_as_parsed(std::env::args_os().collect());
    let cwd = std::env::current_dir().ok();
    if CompleteEnv::with_factory(completion_command)
        .var(VAR)
        .bin(BIN)
        .try_complete(args, cwd.as_deref())
        .unwrap_or_else(|e| e.exit())
    {
        std::process::exit(0);
    }
}

/// The words being completed (after the `--` of the registration scripts) as the command line
/// reads them: `logs -f` is `--follow`. Only rewrites that keep every word in its place (the
/// shell gives the index of the word under the cursor).
fn line_as_parsed(args: Vec<OsString>) -> Vec<OsString> {
    let Some(dash) = args.iter().position(|a| a == "--") else {
        return args;
    };
    let words = args[dash + 1..].to_vec();
    let rewritten = crate::cli::rewrite_args(words.clone());
    let mut out = args[..=dash].to_vec();
    out.extend(if rewritten.len() == words.len() {
        rewritten
    } else {
        words
    });
    out
}

pub fn run(shell: Shell) -> Result<ExitCode> {
    std::io::stdout().write_all(&registration(shell)?)?;
    Ok(ExitCode::SUCCESS)
}

/// The registration script of `shell`, calling back this very binary (as it was invoked: a
/// bare name is looked up on PATH by the shell, a path is made absolute).
fn registration(shell: Shell) -> Result<Vec<u8>> {
    let completer: &dyn EnvCompleter = match shell {
        Shell::Bash => &clap_complete::env::Bash,
        Shell::Zsh => &clap_complete::env::Zsh,
        Shell::Fish => &clap_complete::env::Fish,
        Shell::Elvish => &clap_complete::env::Elvish,
        Shell::PowerShell => &clap_complete::env::Powershell,
        other => anyhow::bail!("no completion script for {other}"),
    };
    let argv0 = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| BIN.into());
    let program = if argv0.components().count() > 1 {
        std::path::absolute(&argv0).unwrap_or(argv0)
    } else {
        argv0
    };
    let mut out = Vec::new();
    completer.write_registration(VAR, BIN, BIN, &program.to_string_lossy(), &mut out)?;
    Ok(out)
}

/// The command line as completion sees it: hidden subcommands left out (they would be offered
/// for a prefix only they match), service arguments completed from the file.
fn completion_command() -> Command {
    let mut cmd = without_hidden(Cli::command());
    for (sub, arg) in SERVICE_ARGS {
        if cmd
            .find_subcommand(sub)
            .is_some_and(|s| s.get_arguments().any(|a| a.get_id().as_str() == *arg))
        {
            cmd = cmd.mut_subcommand(sub, |s| {
                s.mut_arg(*arg, |a| a.add(ArgValueCandidates::new(service_candidates)))
            });
        }
    }
    cmd
}

/// `Command` cannot drop a subcommand: rebuild the top level from its arguments and visible
/// subcommands. Only the top level has hidden subcommands (`tests/completions.rs` checks).
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
    rebuilt
}

/// The services of the file this command line would use; none when there is no readable file
/// (completion never fails loudly).
fn service_candidates() -> Vec<CompletionCandidate> {
    let Some(file) = file_of_line(std::env::args_os().collect())
        .or_else(|| {
            std::env::var_os("MIRRORD_UP_FILE")
                .filter(|f| !f.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| {
            std::env::current_dir()
                .ok()
                .and_then(|d| super::discover::find_file(&d))
        })
    else {
        return Vec::new();
    };
    let key = std::env::var("MIRRORD_UP_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    match crate::config::UpDocument::load(&file, key.as_deref()) {
        Ok(doc) => doc
            .names()
            .into_iter()
            .map(CompletionCandidate::new)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `-f PATH`, `--file PATH` or `--file=PATH` among the words being completed (after the `--`
/// that the registration scripts put before them).
fn file_of_line(args: Vec<OsString>) -> Option<PathBuf> {
    let words = args.split(|a| a == "--").nth(1)?;
    // `logs -f` is `--follow`, as on any command line.
    let words = crate::cli::rewrite_args(words.to_vec());
    let mut found = None;
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let w = w.to_string_lossy();
        if w == "-f" || w == "--file" {
            found = it.next().map(PathBuf::from).or(found);
        } else if let Some(v) = w.strip_prefix("--file=") {
            found = Some(PathBuf::from(v));
        }
    }
    found.filter(|f| !f.as_os_str().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_named_on_the_line_wins() {
        let args = |s: &[&str]| s.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            file_of_line(args(&[
                "mirrord-up",
                "--",
                "mirrord-up",
                "-f",
                "a.yaml",
                "up",
                ""
            ])),
            Some("a.yaml".into())
        );
        assert_eq!(
            file_of_line(args(&[
                "mirrord-up",
                "--",
                "mirrord-up",
                "--file=b.yaml",
                "logs"
            ])),
            Some("b.yaml".into())
        );
        assert_eq!(
            file_of_line(args(&["mirrord-up", "--", "mirrord-up", "logs", "-f", ""])),
            None
        );
        assert_eq!(
            file_of_line(args(&[
                "mirrord-up",
                "--",
                "mirrord-up",
                "logs",
                "-f",
                "api",
                ""
            ])),
            None
        );
        assert_eq!(file_of_line(args(&["mirrord-up", "logs"])), None);
    }
}
