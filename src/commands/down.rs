//! `down [-t SECS] [--force]`: stop every service of the project and forget it. Needs no YAML.
//!
//! What is stopped does not depend on the state file alone: the supervisor is found by its
//! record *and* by its marker (`MIRRORD_UP_SUPERVISOR`), recorded services are stopped by
//! their checked identity, a start interrupted before its record was written is found by its
//! spawn nonce, and afterwards every process still carrying the project's markers (an intproxy
//! that left its group, a daemonised child, anything a corrupt or lost state forgot) is
//! stopped too. A corrupt state file is kept aside and reported; `down` still stops all of it.
//!
//! This command stops the supervisor (the front-end's part); the rest is one request served
//! in this process like every other (`request::submit` → the one-shot runner → the pass
//! `Work::Shutdown { sweep: true }`, whose steps are in `supervisor::shutdown`); `ci stop`
//! is the same request for some or all records (`Request::CiStop`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use nix::sys::signal::Signal;

use super::Context;
use crate::process::{self, ProcessIdentity};
use crate::request::Request;
use crate::state::{State, View};
use crate::supervisor::shutdown::{NOTHING_TO_STOP, supervisor_refusal};

pub fn run(ctx: &Context, timeout: Option<Duration>, force: bool) -> Result<ExitCode> {
    ctx.require_project()?;
    if !force && let Some(code) = through_listener(ctx, timeout)? {
        return Ok(code);
    }
    // A corrupt state file is `stop`'s to report; the supervisor is then unknown anyway.
    let state = ctx.read_state().ok().flatten();
    ctx.ensure_same_file(state.as_ref())?;
    // A project that only exists as a file has nothing to stop: no state directory is made.
    if !force && !ctx.state_dir()?.exists() {
        if !ctx.global.quiet {
            println!("nothing to stop");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let store = ctx.store()?;
    let width = state.as_ref().map_or(0, State::name_width);
    let mut supervisor_stopped = false;
    let mut refused = Vec::new();
    if let Some(sup) = crate::supervisor::control::running(state.as_ref()) {
        match supervisor_refusal(&sup.process, &store.dir) {
            None => {
                stop_supervisor(ctx, &sup, timeout, width, force);
                supervisor_stopped = true;
            }
            // A supervisor that is exiting right now no longer shows its environment.
            Some(_) if process::wait_gone(&sup.process, Duration::from_millis(500)) => {}
            Some(why) => refused.push(format!("supervisor: not signalled: {why}")),
        }
    }
    supervisor_stopped |= stop_unrecorded(ctx, &store.dir, timeout, width, force);
    stop_inner(ctx, &Request::Down { timeout }, supervisor_stopped, refused)
}

/// Supervisors the state does not record (a lost or corrupt state file) would start the
/// services again: they go first. Whether there were any.
fn stop_unrecorded(
    ctx: &Context,
    state_dir: &std::path::Path,
    timeout: Option<Duration>,
    width: usize,
    force: bool,
) -> bool {
    let mut any = false;
    for sup in process::find_supervisors(state_dir) {
        let mut reporter = ctx.reporter(width);
        let how = stop_process(&sup, timeout, force);
        reporter.event(
            "supervisor",
            &format!("{how} (pid {}, found by its marker)", sup.pid),
        );
        any = true;
    }
    any
}

/// What `down` reads of the state before it asks a listening supervisor: the file the project
/// runs (checked against `-f`) and the recorded names (their width) — a view, every other field
/// skipped by serde, not built: at 500 services the whole state is ≈1 MB of records. `None`
/// when there is no state or it does not parse (the state path reports it).
fn skim(ctx: &Context) -> Option<View<serde::de::IgnoredAny>> {
    // No state file: nothing is created here (`ctx.store()` would make the directory).
    if !ctx.state_dir().ok()?.join("state.json").exists() {
        return None;
    }
    ctx.store().ok()?.view()
}

/// The longest recorded name: what report lines pad names to.
fn width(skim: &View<serde::de::IgnoredAny>) -> usize {
    skim.services.keys().map(String::len).max().unwrap_or(0)
}

/// `down` through the supervisor listening on the project's socket (the common case), as `up
/// -d` asks it: the state is skimmed, not parsed (the file check and the names' width), the
/// request goes on the connection the supervisor took, and its exit is waited for on a pidfd.
/// One sweep (the one-shot pass: CI sessions, anything still carrying the project's markers),
/// as before — while the supervisor exits when it answered and the state records no
/// supervisor, after its exit otherwise; the `/proc` search for supervisors the state does not
/// record is left out when the state is readable and records none: the listener was the
/// registered supervisor (registration refuses while a live one is recorded), and only a
/// lost or corrupt state hides one. `None`: no such supervisor; the state decides, as before.
fn through_listener(ctx: &Context, timeout: Option<Duration>) -> Result<Option<ExitCode>> {
    let Some(skim) = skim(ctx) else {
        return Ok(None);
    };
    ctx.ensure_same_path(skim.file.as_deref())?;
    let Some((stream, socket, pid)) = super::up::listening(ctx) else {
        return Ok(None);
    };
    let store = ctx.store()?;
    let Ok(process) = ProcessIdentity::of(pid, None) else {
        return Ok(None);
    };
    if supervisor_refusal(&process, &store.dir).is_some() {
        return Ok(None);
    }
    let mut reporter = ctx.reporter(width(&skim));
    let asked = crate::supervisor::control::request_on(
        stream,
        &socket,
        &crate::supervisor::control::Request::Shutdown {
            timeout_s: timeout.map(|t| t.as_secs_f64()),
        },
        reporter.as_mut(),
    );
    // Answered: its services are stopped and their records gone (the answer follows the
    // pass that saved it), and it is exiting. Its exit may take a while of its own (a file
    // watch the kernel has not let go of yet: up to a grace period, 8–15 ms whatever the
    // project's size), so the sweep runs meanwhile, not after it: the sweep never selects a
    // supervisor (`sweep::Selector`), the state no longer records one, and its last state write
    // and the sweep's pass each take the state lock. `down` still returns only once it is gone.
    if matches!(asked, Ok((true, _)))
        && matches!(ctx.read_state(), Ok(Some(s)) if s.supervisor.is_none())
    {
        let swept = stop_inner(ctx, &Request::Down { timeout }, true, Vec::new());
        await_exit(&process, Ok((true, String::new())), timeout);
        return swept.map(Some);
    }
    await_exit(&process, asked, timeout);
    if !matches!(ctx.read_state(), Ok(Some(s)) if s.supervisor.is_none()) {
        stop_unrecorded(ctx, &store.dir, timeout, width(&skim), false);
    }
    stop_inner(ctx, &Request::Down { timeout }, true, Vec::new()).map(Some)
}

/// SIGTERM (SIGKILL with `force`), the grace period, then SIGKILL; only while `id` is still
/// the process it was. Says what happened.
fn stop_process(id: &ProcessIdentity, timeout: Option<Duration>, force: bool) -> &'static str {
    let grace = timeout.unwrap_or(crate::spec::DEFAULT_STOP_TIMEOUT) + Duration::from_secs(5);
    let first = if force {
        Signal::SIGKILL
    } else {
        Signal::SIGTERM
    };
    process::signal_if_same(id.pid, id.start_time, first);
    if !force && process::wait_gone(id, grace) {
        return "stopped";
    }
    process::signal_if_same(id.pid, id.start_time, Signal::SIGKILL);
    process::wait_gone(id, Duration::from_secs(5));
    "killed"
}

/// Asks the supervisor to stop every service and exit, and waits until it has; one that does
/// not answer gets SIGTERM (it then stops its services itself), and SIGKILL if it hangs.
fn stop_supervisor(
    ctx: &Context,
    sup: &crate::state::SupervisorRecord,
    timeout: Option<Duration>,
    width: usize,
    force: bool,
) {
    use crate::supervisor::control::request;
    let mut reporter = ctx.reporter(width);
    if force {
        let how = stop_process(&sup.process, timeout, true);
        reporter.event("supervisor", &format!("{how} (pid {})", sup.process.pid));
        return;
    }
    let asked = request(
        &sup.socket,
        &crate::supervisor::control::Request::Shutdown {
            timeout_s: timeout.map(|t| t.as_secs_f64()),
        },
        reporter.as_mut(),
    );
    await_exit(&sup.process, asked, timeout);
}

/// After the supervisor `sup` was asked to shut down (`asked`: its answer): waits for its exit
/// (its pidfd); one that did not answer gets SIGTERM, one that hangs SIGKILL.
fn await_exit(sup: &ProcessIdentity, asked: Result<(bool, String)>, timeout: Option<Duration>) {
    let grace = timeout.unwrap_or(crate::spec::DEFAULT_STOP_TIMEOUT) + Duration::from_secs(5);
    match asked {
        Ok((true, _)) => {}
        Ok((false, msg)) => eprintln!("warning: the supervisor said: {msg}"),
        Err(e) => {
            eprintln!("warning: {e:#}; stopping it with SIGTERM");
            process::signal_if_same(sup.pid, sup.start_time, Signal::SIGTERM);
        }
    }
    if !process::wait_gone(sup, grace) && sup.liveness() == process::Liveness::Alive {
        eprintln!(
            "warning: the supervisor (pid {}) did not exit; killing it",
            sup.pid
        );
        process::signal_if_same(sup.pid, sup.start_time, Signal::SIGKILL);
        process::wait_gone(sup, Duration::from_secs(5));
    }
}

/// Stops the recorded services and CI sessions (all, or those in `only`) and forgets them,
/// then every process still carrying their markers (`ci stop`).
pub fn stop(ctx: &Context, only: Option<&[String]>, timeout: Option<Duration>) -> Result<ExitCode> {
    let req = Request::CiStop {
        names: only.map(<[String]>::to_vec).unwrap_or_default(),
        timeout,
    };
    stop_inner(ctx, &req, false, Vec::new())
}

/// Serves `req` (a `down` or `ci stop`) in this process: the one-shot runner's pass
/// (`Work::Shutdown { sweep: true }`). `refused`: supervisors not signalled, said last.
fn stop_inner(
    ctx: &Context,
    req: &Request,
    supervisor_stopped: bool,
    refused: Vec<String>,
) -> Result<ExitCode> {
    // A corrupt state is the pass's to report (kept aside); the width is then unknown.
    let width = ctx
        .read_state()
        .ok()
        .flatten()
        .map_or(0, |s| s.name_width());
    let mut reporter = ctx.recording_reporter(width);
    let (ok, message) = crate::request::submit(ctx, None, req, reporter.as_mut())?;
    let mut problems: Vec<String> = (!ok).then_some(message.clone()).into_iter().collect();
    problems.extend(refused);
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    if message == NOTHING_TO_STOP && !supervisor_stopped && !ctx.global.quiet {
        println!("{NOTHING_TO_STOP}");
    }
    Ok(ExitCode::SUCCESS)
}
