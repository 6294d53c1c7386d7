//! `down [-t SECS] [--force]`: stop every service of the project and forget it. Needs no YAML.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use nix::sys::signal::Signal;

use super::Context;
use crate::engine::{ApplyReport, Engine, LaunchSettings, LineReporter};
use crate::process::{self, StopRequest};
use crate::state::{State, StateError};

pub fn run(ctx: &Context, timeout: Option<Duration>, force: bool) -> Result<ExitCode> {
    stop(ctx, None, timeout, force)
}

/// Stops the recorded services and CI sessions (all, or those in `only`) and forgets them.
pub fn stop(
    ctx: &Context,
    only: Option<&[String]>,
    timeout: Option<Duration>,
    force: bool,
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
    let width = state.services.keys().map(String::len).max().unwrap_or(0);
    let mut reporter = LineReporter {
        quiet: ctx.global.quiet,
        width,
    };
    let settings = LaunchSettings {
        mirrord_bin: None,
        stop_timeout: timeout,
    };
    let mut engine = Engine::new(&store, &lock, state, settings, &mut reporter);
    if let Some(only) = only {
        let unknown: Vec<&String> = only
            .iter()
            .filter(|n| !engine.state.services.contains_key(*n))
            .collect();
        if !unknown.is_empty() {
            bail!(
                "nothing named {} in project `{}` (known: {})",
                unknown
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                store.project,
                engine
                    .state
                    .services
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
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
    engine.save()?;
    if let Some(msg) = report.error_message() {
        bail!("{msg}");
    }
    if !had_any && forced == 0 && !ctx.global.quiet {
        println!("nothing to stop");
    }
    Ok(ExitCode::SUCCESS)
}
