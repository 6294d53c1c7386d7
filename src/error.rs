//! The one place an error becomes an exit code, and where keep-going versus fatal is decided.
//!
//! Each layer has its own error type (`config::ConfigError`, `state::StateError`,
//! `process::Refusal`, `readiness::NotReady`); the CLI carries them in `anyhow::Error`, and
//! this module looks at the types in the chain, never at the text.

use std::process::ExitCode;

use crate::config::{ConfigError, ReadError};
use crate::engine::ApplyFailed;
use crate::process::Refusal;
use crate::readiness::{NotReady, NotReadyWhy};
use crate::state::{ExitInfo, StateError};
use crate::supervisor::pass::NotApplied;

/// `plan --detailed-exitcode`: the plan has changes.
pub const EXIT_CHANGES: u8 = 2;
/// Any error.
pub const EXIT_FAILURE: u8 = 1;
/// Ended by the user (Ctrl-C), as shells report SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;

/// What a long-running supervisor does after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Report it and go on: the next save or request may fix it (a bad file, a service that
    /// did not start or become ready, a record that must not be signalled, a busy lock).
    KeepGoing,
    /// Stop: the state cannot be trusted or written (too new, corrupt, unsafe path, I/O).
    Fatal,
}

/// Keep going or stop, by the first typed error in the chain; an error of no known layer is
/// fatal (nothing says going on is safe).
pub fn fate(err: &anyhow::Error) -> Fate {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<StateError>() {
            return match e {
                StateError::LockTimeout { .. } => Fate::KeepGoing,
                StateError::Io { .. }
                | StateError::Unsafe { .. }
                | StateError::Corrupt { .. }
                | StateError::TooNew { .. } => Fate::Fatal,
            };
        }
        if cause.is::<ConfigError>()
            || cause.is::<ApplyFailed>()
            || cause.is::<NotApplied>()
            || cause.is::<ReadError>()
            || cause.is::<NotReady>()
            || cause.is::<Refusal>()
        {
            return Fate::KeepGoing;
        }
    }
    Fate::Fatal
}

/// The exit code of a command that failed with `err`: 130 when the user interrupted it, 1
/// otherwise.
pub fn exit_code(err: &anyhow::Error) -> ExitCode {
    let interrupted = err.chain().any(|c| {
        c.downcast_ref::<NotReady>()
            .is_some_and(|e| e.why == NotReadyWhy::Interrupted)
    });
    ExitCode::from(if interrupted {
        EXIT_INTERRUPTED
    } else {
        EXIT_FAILURE
    })
}

/// `--abort-on-exit`: the code `up` ends with after a service exited, as real `mirrord up`
/// does: 0 after a clean exit, 1 after a crash (a code other than 0, a signal, unknown).
pub fn abort_on_exit_code(exit: &ExitInfo) -> u8 {
    if exit.code == Some(0) {
        0
    } else {
        EXIT_FAILURE
    }
}

/// The exit code of a command that passes on its child's end (`run`): its exit code, or
/// 128 + the signal that killed it, as shells report it; 1 when neither is known.
pub fn child_exit_code(code: Option<i32>, signal: Option<i32>) -> ExitCode {
    match (code, signal) {
        (Some(code), _) => ExitCode::from(code.clamp(0, 255) as u8),
        (None, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
        _ => ExitCode::from(EXIT_FAILURE),
    }
}

/// Prints `error: <err and its causes>` on stderr (red when `color`) and returns its exit code.
pub fn report(err: &anyhow::Error, color: bool) -> ExitCode {
    eprintln!("{} {err:#}", crate::output::paint("error:", 31, color));
    exit_code(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn state(e: StateError) -> anyhow::Error {
        anyhow::Error::new(e).context("cannot load the state")
    }

    #[test]
    fn the_fate_is_decided_by_type_through_the_context_chain() {
        let path = PathBuf::from("/s/state.json");
        assert_eq!(
            fate(&state(StateError::TooNew {
                path: path.clone(),
                found: 9
            })),
            Fate::Fatal
        );
        assert_eq!(
            fate(&state(StateError::LockTimeout {
                path,
                holder: "pid 1".into(),
                waited: std::time::Duration::from_secs(1)
            })),
            Fate::KeepGoing
        );
        let refusal = anyhow::Error::new(Refusal::NotLeader { pid: 5, pgid: 6 });
        assert_eq!(fate(&refusal), Fate::KeepGoing);
        let not_ready = anyhow::Error::new(NotReady::new("db", NotReadyWhy::Exited));
        assert_eq!(fate(&not_ready), Fate::KeepGoing);
        assert_eq!(fate(&anyhow::anyhow!("something else")), Fate::Fatal);
    }

    #[test]
    fn a_service_that_did_not_start_or_a_file_that_did_not_load_keeps_the_loop_going() {
        let failed = ApplyFailed {
            failed: vec![(
                "api".into(),
                "exited right after start (exit code 3)".into(),
            )],
            survivors: vec![("db".into(), vec![12])],
        };
        assert_eq!(
            failed.to_string(),
            "api failed to start: exited right after start (exit code 3); db did not stop (still running: pids [12])"
        );
        let err = anyhow::Error::new(failed).context("up");
        assert_eq!(fate(&err), Fate::KeepGoing);
        assert_eq!(exit_code(&err), ExitCode::from(1));
        let not_applied = anyhow::Error::new(NotApplied {
            nothing_recorded: true,
            message: "bad".into(),
        });
        assert_eq!(not_applied.to_string(), "nothing was started: bad");
        assert_eq!(fate(&not_applied), Fate::KeepGoing);
    }

    #[test]
    fn abort_on_exit_ends_with_0_after_a_clean_exit_and_1_after_a_crash() {
        let exit = |code, signal: Option<&str>| ExitInfo {
            code,
            signal: signal.map(Into::into),
            at_ms: 0,
        };
        assert_eq!(abort_on_exit_code(&exit(Some(0), None)), 0);
        assert_eq!(abort_on_exit_code(&exit(Some(3), None)), 1);
        assert_eq!(abort_on_exit_code(&exit(None, Some("SIGKILL"))), 1);
        assert_eq!(abort_on_exit_code(&exit(None, None)), 1);
    }

    #[test]
    fn an_interruption_exits_130_and_anything_else_1() {
        let interrupted = anyhow::Error::new(NotReady::new("db", NotReadyWhy::Interrupted))
            .context("waiting for db");
        assert_eq!(exit_code(&interrupted), ExitCode::from(130));
        assert_eq!(exit_code(&anyhow::anyhow!("x")), ExitCode::from(1));
    }

    #[test]
    fn a_child_exit_passes_on_its_code_or_128_plus_its_signal() {
        assert_eq!(child_exit_code(Some(7), None), ExitCode::from(7));
        assert_eq!(child_exit_code(None, Some(9)), ExitCode::from(137));
        assert_eq!(child_exit_code(None, None), ExitCode::from(1));
    }
}
