//! `restart|stop|start [SERVICE…]` (no names: every service): through the running supervisor when there is one (so that
//! its loop knows), otherwise as one pass in this process.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};

use super::Context;
use crate::cli::ServiceControlArgs;
use crate::request::Request;
use crate::state::RecordKind;
use crate::supervisor::control;

#[derive(Debug, Clone, Copy)]
pub enum Op {
    Restart,
    Stop,
    Start,
}

/// The request of `restart|stop|start NAME…` (`-t SECS`: the stop's grace period).
pub fn request(op: Op, names: Vec<String>, timeout_s: Option<f64>) -> Request {
    let timeout = timeout_s.map(|t| Duration::from_secs_f64(t.max(0.0)));
    match op {
        Op::Restart => Request::Restart { names, timeout },
        Op::Stop => Request::Stop { names, timeout },
        Op::Start => Request::Start { names },
    }
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
    let sup = control::running(state.as_ref());
    if sup.is_none() && state.is_none() {
        bail!(
            "nothing runs in project `{}` (no state file); start it with `mirrord-up up`",
            ctx.project()
        );
    }
    let req = request(op, services, args.timeout);
    let mut reporter = ctx.reporter(width);
    // No supervisor records these events: this command does.
    if sup.is_none() {
        reporter = ctx.recording(reporter);
    }
    let (ok, message) = crate::request::submit(ctx, sup.as_ref(), &req, reporter.as_mut())?;
    if !ok {
        bail!("{message}");
    }
    if !ctx.global.quiet {
        println!("{message}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_stop_and_start_are_one_request_each() {
        let names = vec!["api".to_owned()];
        let two = Some(Duration::from_secs(2));
        assert_eq!(
            request(Op::Restart, names.clone(), Some(2.0)),
            Request::Restart {
                names: names.clone(),
                timeout: two
            }
        );
        assert_eq!(
            request(Op::Stop, names.clone(), None),
            Request::Stop {
                names: names.clone(),
                timeout: None
            }
        );
        assert_eq!(
            request(Op::Start, names.clone(), Some(2.0)),
            Request::Start { names }
        );
    }
}
