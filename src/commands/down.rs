//! `down [-t SECS] [--force]`: stop every service of the project and forget it. Needs no YAML.
//!
//! What is stopped does not depend on the state file alone: the supervisor is found by its
//! record *and* by its marker (`MIRRORD_UP_SUPERVISOR`), recorded services are stopped by
//! their checked identity, a start interrupted before its record was written is found by its
//! spawn nonce, and afterwards every process still carrying the project's markers (an intproxy
//! that left its group, a daemonised child, anything a corrupt or lost state forgot) is
//! stopped too. A corrupt state file is kept aside and reported; `down` still stops all of it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use nix::sys::signal::Signal;

use super::Context;
use crate::engine::{ApplyReport, Engine, LaunchSettings};
use crate::process::{self, ProcessIdentity, sweep};
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
    // Supervisors the state does not record (a lost or corrupt state file) would start the
    // services again: they go first.
    for sup in process::find_supervisors(&store.dir) {
        let mut reporter = ctx.reporter(width);
        let how = stop_process(&sup, timeout, force);
        reporter.event(
            "supervisor",
            &format!("{how} (pid {}, found by its marker)", sup.pid),
        );
        supervisor_stopped = true;
    }
    stop_inner(ctx, None, timeout, supervisor_stopped, refused)
}

/// Why a recorded supervisor must not be signalled: it is no process of ours to stop unless it
/// is a mirrord-up (its marker names this state directory, or it runs this very executable)
/// and not this process, its group or its session.
fn supervisor_refusal(id: &ProcessIdentity, state_dir: &Path) -> Option<String> {
    let me = process::own_ids();
    if id.pid <= 1 || me.contains(id.pid) {
        return Some(format!(
            "the state records pid {} as the supervisor, which is not one",
            id.pid
        ));
    }
    let marked = process::environ_of(id.pid).is_some_and(|env| {
        env.get(process::ENV_SUPERVISOR).map(String::as_str) == Some(&*state_dir.to_string_lossy())
    });
    let same_exe = || {
        let exe = |p: &str| std::fs::read_link(p).ok();
        exe(&format!("/proc/{}/exe", id.pid)).is_some()
            && exe(&format!("/proc/{}/exe", id.pid)) == exe("/proc/self/exe")
    };
    (!marked && !same_exe()).then(|| {
        format!(
            "the state records pid {} as the supervisor, but it is no mirrord-up",
            id.pid
        )
    })
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
        &crate::request::Request::Down { timeout }.control(),
        reporter.as_mut(),
    );
    let grace = timeout.unwrap_or(crate::spec::DEFAULT_STOP_TIMEOUT) + Duration::from_secs(5);
    match asked {
        Ok((true, _)) => {}
        Ok((false, msg)) => eprintln!("warning: the supervisor said: {msg}"),
        Err(e) => {
            eprintln!("warning: {e:#}; stopping it with SIGTERM");
            process::signal_if_same(sup.process.pid, sup.process.start_time, Signal::SIGTERM);
        }
    }
    if !process::wait_gone(&sup.process, grace)
        && sup.process.liveness() == process::Liveness::Alive
    {
        eprintln!(
            "warning: the supervisor (pid {}) did not exit; killing it",
            sup.process.pid
        );
        process::signal_if_same(sup.process.pid, sup.process.start_time, Signal::SIGKILL);
        process::wait_gone(&sup.process, Duration::from_secs(5));
    }
}

/// Stops the recorded services and CI sessions (all, or those in `only`) and forgets them,
/// then every process still carrying their markers (`ci stop`).
pub fn stop(
    ctx: &Context,
    only: Option<&[String]>,
    timeout: Option<Duration>,
    _force: bool,
    supervisor_stopped: bool,
) -> Result<ExitCode> {
    stop_inner(ctx, only, timeout, supervisor_stopped, Vec::new())
}

fn stop_inner(
    ctx: &Context,
    only: Option<&[String]>,
    timeout: Option<Duration>,
    supervisor_stopped: bool,
    mut refused: Vec<String>,
) -> Result<ExitCode> {
    let store = ctx.store()?;
    let lock = store.lock(ctx.lock_timeout())?;
    let (mut state, corrupt) = match store.load(&lock) {
        Ok(s) => (s, false),
        Err(StateError::Corrupt { kept, reason, .. }) => {
            eprintln!(
                "warning: the state file of project `{}` is corrupt ({reason}); it was kept aside as {}. Stopping every process of the project found by its markers",
                store.project,
                kept.display()
            );
            (State::new(&store.project), true)
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(only) = only
        && !corrupt
    {
        super::ensure_known(
            only,
            &state.services.keys().collect::<Vec<_>>(),
            &store.project,
            "nothing named",
        )?;
    }
    let selected = |n: &String| only.is_none_or(|o| o.contains(n));
    let width = state.name_width();
    let mut reporter = ctx.recording_reporter(width);

    // A record that points at no service's group (pgid 0 or 1, our own group…) is never
    // signalled; its spawn nonce still finds the real processes below.
    for (n, rec) in state.services.iter_mut().filter(|(n, _)| selected(n)) {
        if let Some(id) = &rec.process
            && let Some(why) = id.refusal()
        {
            reporter.event(n, &format!("not signalled: {why}"));
            refused.push(format!("{n}: not signalled: {why}"));
            rec.spawn_nonce = id.nonce.clone().or(rec.spawn_nonce.take());
            rec.process = None;
        }
    }
    // How each selected service is stopped, and the spawn nonces its processes carry (also
    // those of a start interrupted before its process was recorded).
    let mut nonces = BTreeSet::new();
    let mut how: BTreeMap<String, (Signal, Duration)> = BTreeMap::new();
    for (n, rec) in state.services.iter().filter(|(n, _)| selected(n)) {
        nonces.extend(rec.spawn_nonce.clone());
        nonces.extend(rec.process.as_ref().and_then(|p| p.nonce.clone()));
        let signal = crate::config::parse_signal(&rec.spec.stop_signal).unwrap_or(Signal::SIGTERM);
        how.insert(
            n.clone(),
            (signal, timeout.unwrap_or(rec.spec.stop_timeout())),
        );
    }

    let settings = LaunchSettings {
        mirrord_bin: None,
        stop_timeout: timeout,
        ..Default::default()
    };
    let loaded = state.clone();
    let mut engine = Engine::new(&store, &lock, state, settings, reporter.as_mut());
    // An interrupted start: adopt what its nonce finds, so it is stopped like any service.
    if engine
        .state
        .services
        .iter()
        .any(|(n, r)| selected(n) && r.process.is_none() && r.spawn_nonce.is_some())
    {
        engine.recover()?;
    }
    let names: Vec<(String, String)> = engine
        .state
        .services
        .keys()
        .filter(|n| selected(n))
        .map(|n| (n.clone(), "stop requested".to_owned()))
        .collect();
    let all: BTreeSet<String> = names.iter().map(|(n, _)| n.clone()).collect();
    let had_any = !names.is_empty();
    let mut report = ApplyReport::default();
    engine.stop_services(&names, &all, &mut report)?;

    // Whatever still carries the markers: left its group, was never recorded, or is recorded
    // in a state that is lost.
    let services: Option<BTreeSet<String>> = only.map(|o| o.iter().cloned().collect());
    let found = sweep::find(&sweep::Selector {
        state_dir: Some(&store.dir),
        services: services.as_ref(),
        instances: Some(&nonces),
    });
    let swept = found.len();
    let default_how = (
        Signal::SIGTERM,
        timeout.unwrap_or(crate::spec::DEFAULT_STOP_TIMEOUT),
    );
    let targets: Vec<sweep::Target> = found
        .into_iter()
        .map(|proc| {
            let (signal, timeout) = proc
                .service
                .as_ref()
                .and_then(|s| how.get(s))
                .copied()
                .unwrap_or(default_how);
            sweep::Target {
                proc,
                signal,
                timeout,
            }
        })
        .collect();
    for (t, o) in targets.iter().zip(sweep::stop_targets(&targets)) {
        let name = t.proc.service.clone().unwrap_or_else(|| "?".into());
        let pid = t.proc.info.pid;
        if o.survived {
            report.survivors.push((name, vec![pid]));
        } else {
            let killed = if o.killed {
                ", killed after the grace period"
            } else {
                ""
            };
            engine.reporter.event(
                &name,
                &format!("stopped pid {pid} (found by its markers{killed})"),
            );
        }
    }

    if engine.state.supervisor.as_ref().is_some_and(|s| {
        s.process.liveness() != process::Liveness::Alive
            || supervisor_refusal(&s.process, &store.dir).is_some()
    }) {
        engine.state.supervisor = None;
    }
    engine.save_if_changed(&loaded)?;
    let mut problems: Vec<String> = report.error_message().into_iter().collect();
    problems.extend(refused);
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    if !had_any && swept == 0 && !supervisor_stopped && !ctx.global.quiet {
        println!("nothing to stop");
    }
    Ok(ExitCode::SUCCESS)
}
