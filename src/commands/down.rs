//! `down [-t SECS] [--force]`: stop every service of the project and forget it. Needs no YAML.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use nix::sys::signal::Signal;

use super::Context;
use crate::engine::{ApplyReport, Engine, LaunchSettings};
use crate::process::{self, StopRequest};
use crate::state::{State, StateError};

pub fn run(ctx: &Context, timeout: Option<Duration>, force: bool) -> Result<ExitCode> {
    ctx.require_project()?;
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
    let via_supervisor = match crate::supervisor::control::running(state.as_ref()) {
        Some(sup) => {
            let width = state.as_ref().map_or(0, State::name_width);
            stop_supervisor(ctx, &sup, timeout, width);
            true
        }
        None => false,
    };
    stop(ctx, None, timeout, force, via_supervisor)
}

/// Asks the supervisor to stop every service and exit, and waits until it has; one that does
/// not answer gets SIGTERM (it then stops its services itself), and SIGKILL if it hangs.
fn stop_supervisor(
    ctx: &Context,
    sup: &crate::state::SupervisorRecord,
    timeout: Option<Duration>,
    width: usize,
) {
    use crate::supervisor::control::{Request, request};
    let mut reporter = crate::progress::reporter(ctx, width);
    let asked = request(
        &sup.socket,
        &Request::Shutdown {
            timeout_s: timeout.map(|t| t.as_secs_f64()),
        },
        reporter.as_mut(),
    );
    let grace = timeout.unwrap_or(crate::spec::DEFAULT_STOP_TIMEOUT) + Duration::from_secs(5);
    match asked {
        Ok((true, _)) => {}
        Ok((false, msg)) => eprintln!("warning: the supervisor said: {msg}"),
        Err(e) => {
            eprintln!("warning: {e:#}; stopping it with SIGTERM");
            let table = process::ProcessTable::snapshot();
            if sup.process.live_members(&table).contains(&sup.process.pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(sup.process.pid),
                    Signal::SIGTERM,
                );
            }
        }
    }
    if !process::wait_gone(&sup.process, grace)
        && sup.process.liveness() == process::Liveness::Alive
    {
        eprintln!(
            "warning: the supervisor (pid {}) did not exit; killing it",
            sup.process.pid
        );
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(sup.process.pid), Signal::SIGKILL);
        process::wait_gone(&sup.process, Duration::from_secs(5));
    }
}

/// Stops the recorded services and CI sessions (all, or those in `only`) and forgets them.
pub fn stop(
    ctx: &Context,
    only: Option<&[String]>,
    timeout: Option<Duration>,
    force: bool,
    supervisor_stopped: bool,
) -> Result<ExitCode> {
    let store = ctx.store()?;
    let lock = store.lock(ctx.lock_timeout())?;
    let state = match store.load(&lock) {
        Ok(s) => s,
        Err(e @ StateError::Corrupt { .. }) if force => {
            eprintln!("warning: {e}");
            State::new(&store.project)
        }
        Err(e) => return Err(e.into()),
    };
    let width = state.name_width();
    let mut reporter = crate::progress::reporter(ctx, width);
    let settings = LaunchSettings {
        mirrord_bin: None,
        stop_timeout: timeout,
    };
    let loaded = state.clone();
    let mut engine = Engine::new(&store, &lock, state, settings, reporter.as_mut());
    if let Some(only) = only {
        super::ensure_known(
            only,
            &engine.state.services.keys().collect::<Vec<_>>(),
            &store.project,
            "nothing named",
        )?;
    }
    let names: Vec<(String, String)> = engine
        .state
        .services
        .keys()
        .filter(|n| only.is_none_or(|o| o.contains(n)))
        .map(|n| (n.clone(), "stop requested".to_owned()))
        .collect();
    let all: BTreeSet<String> = names.iter().map(|(n, _)| n.clone()).collect();
    let had_any = !names.is_empty();
    let mut report = ApplyReport::default();
    engine.stop_services(&names, &all, &mut report)?;
    let mut forced = 0;
    if force {
        // A supervisor the state does not know would start services again: it goes first.
        for sup in process::find_supervisors(&store.dir) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(sup.pid), Signal::SIGKILL);
            process::wait_gone(&sup, Duration::from_secs(5));
            engine.reporter.event(
                "supervisor",
                &format!("killed (pid {}, found by its marker)", sup.pid),
            );
        }
        // Whatever still carries this project's markers, recorded or not.
        let groups = process::find_marked(&store.dir);
        forced = groups.len();
        let requests: Vec<StopRequest> = groups
            .iter()
            .map(|g| StopRequest {
                name: format!("{} (pgid {})", g.service, g.pgid),
                identity: g.identity(),
                signal: Signal::SIGTERM,
                timeout: timeout.unwrap_or(crate::spec::DEFAULT_STOP_TIMEOUT),
            })
            .collect();
        for o in process::stop_groups(&requests) {
            if o.survivors.is_empty() {
                engine
                    .reporter
                    .event(&o.name, "stopped (found by its markers)");
            } else {
                report.survivors.push((o.name, o.survivors));
            }
        }
    }
    if engine
        .state
        .supervisor
        .as_ref()
        .is_some_and(|s| s.process.liveness() != process::Liveness::Alive)
    {
        engine.state.supervisor = None;
    }
    engine.save_if_changed(&loaded)?;
    if let Some(msg) = report.error_message() {
        bail!("{msg}");
    }
    if !had_any && forced == 0 && !supervisor_stopped && !ctx.global.quiet {
        println!("nothing to stop");
    }
    Ok(ExitCode::SUCCESS)
}
