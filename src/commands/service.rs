//! `restart|stop|start [SERVICE…]` (no names: every service): through the running supervisor when there is one (so that
//! its loop knows), otherwise as one pass in this process.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};

use super::Context;
use crate::cli::ServiceControlArgs;
use crate::state::RecordKind;
use crate::supervisor::control::{self, Request};
use crate::supervisor::pass::{self, PassSettings, Work};

#[derive(Debug, Clone, Copy)]
pub enum Op {
    Restart,
    Stop,
    Start,
}

pub fn run(ctx: &Context, op: Op, args: &ServiceControlArgs) -> Result<ExitCode> {
    ctx.require_project()?;
    let state = ctx.read_state()?;
    ctx.ensure_same_file(state.as_ref())?;
    // No names: every service of the project (compose).
    let services: Vec<String> = if args.services.is_empty() {
        state
            .iter()
            .flat_map(|s| s.records(RecordKind::Service))
            .map(|(n, _)| n.clone())
            .collect()
    } else {
        args.services.clone()
    };
    if services.is_empty() && state.is_some() {
        if !ctx.global.quiet {
            println!("no services in project `{}`", ctx.project());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let width = services.iter().map(String::len).max().unwrap_or(0);
    let mut reporter = ctx.reporter(width);
    let (ok, message) = if let Some(sup) = control::running(state.as_ref()) {
        let timeout_s = args.timeout;
        let req = match op {
            Op::Restart => Request::Restart {
                services,
                timeout_s,
            },
            Op::Stop => Request::Stop {
                services,
                timeout_s,
            },
            Op::Start => Request::Start { services },
        };
        control::request(&sup.socket, &req, reporter.as_mut())?
    } else {
        if state.is_none() {
            bail!(
                "nothing runs in project `{}` (no state file); start it with `mirrord-up up`",
                ctx.project()
            );
        }
        let names = services;
        let timeout = args.timeout.map(|t| Duration::from_secs_f64(t.max(0.0)));
        let work = match op {
            Op::Restart => Work::Restart { names, timeout },
            Op::Stop => Work::Stop { names, timeout },
            Op::Start => Work::Start { names },
        };
        // No supervisor records these events: this command does.
        let mut reporter = ctx.recording(reporter);
        let out = pass::run_pass(ctx, &PassSettings::default(), &work, reporter.as_mut());
        match out.result {
            Some(Ok(summary)) => (true, summary),
            Some(Err(e)) => (false, e),
            None => (false, "no result".into()),
        }
    };
    if !ok {
        bail!("{message}");
    }
    if !ctx.global.quiet {
        println!("{message}");
    }
    Ok(ExitCode::SUCCESS)
}
