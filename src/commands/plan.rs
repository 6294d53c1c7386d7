//! `plan [SERVICE…] [--format text|json] [--detailed-exitcode]`: what `up` would do now.
//! Changes nothing; exits 0 once printed (`--detailed-exitcode`: 2 when changes are pending).

use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use super::Context;
use crate::cli::Format;
use crate::plan::{Action, Plan, PlanOptions};

pub fn run(
    ctx: &Context,
    services: &[String],
    format: Format,
    mode: Option<crate::config::Mode>,
    detailed_exitcode: bool,
) -> Result<ExitCode> {
    let doc = ctx.load()?;
    let state = ctx.read_state()?;
    let ctx = &recorded_launcher(ctx, state.as_ref());
    let cache = state
        .as_ref()
        .map(|s| s.target_cache.clone())
        .unwrap_or_default();
    let (desired, _) = ctx.desired(&doc, services, mode, cache)?;
    let observed = state
        .as_ref()
        .map(crate::engine::observe)
        .unwrap_or_default();
    let plan = crate::plan::plan(
        &desired,
        &observed,
        PlanOptions {
            restart_exited: true,
            ..Default::default()
        },
    );
    print_plan(&plan, format, ctx.stdout_color());
    Ok(exit_code(&plan, detailed_exitcode))
}

/// Whether `--launcher` (or `MIRRORD_UP_LAUNCHER`) was given: otherwise its default,
/// `mirrord`, is only a default.
fn launcher_given() -> bool {
    std::env::var_os("MIRRORD_UP_LAUNCHER").is_some_and(|v| !v.is_empty())
        || std::env::args()
            .skip(1)
            .take_while(|a| a != "--")
            .any(|a| a == "--launcher" || a.starts_with("--launcher="))
}

/// The context to plan with: when no launcher was given, the one the running services were
/// started with (as recorded), so that `plan` after `up -d --launcher local` compares like
/// with like, as the supervisor started with it does. With services of both launchers
/// recorded, or none, the default stays.
pub fn recorded_launcher(ctx: &Context, state: Option<&crate::state::State>) -> Context {
    let mut ctx = ctx.clone();
    if launcher_given() {
        return ctx;
    }
    let mut launchers = state
        .into_iter()
        .flat_map(|s| s.records(crate::state::RecordKind::Service))
        .map(|(_, r)| r.spec.launcher);
    if let Some(first) = launchers.next()
        && launchers.all(|l| l == first)
    {
        ctx.global.launcher = first;
    }
    ctx
}

/// 0 once printed; with `--detailed-exitcode`, 2 when changes are pending (terraform's
/// convention, for scripts).
pub fn exit_code(plan: &Plan, detailed: bool) -> ExitCode {
    if detailed && !plan.is_empty() {
        ExitCode::from(crate::error::EXIT_CHANGES)
    } else {
        ExitCode::SUCCESS
    }
}

pub fn print_plan(plan: &Plan, format: Format, color: bool) {
    match format {
        Format::Json => {
            let steps: Vec<_> = plan
                .steps
                .iter()
                .map(|s| json!({"service": s.service, "action": s.action, "cause": s.cause.to_string()}))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&steps).expect("plain JSON")
            );
        }
        Format::Text => {
            if plan.is_empty() {
                println!("nothing to do ({})", plan.summary());
                return;
            }
            let width = plan
                .steps
                .iter()
                .map(|s| s.service.len())
                .max()
                .unwrap_or(0);
            for s in &plan.steps {
                let code = match s.action {
                    Action::Start => 32,
                    Action::Restart => 33,
                    Action::Stop => 31,
                    Action::Keep => 90,
                };
                let action =
                    crate::output::paint(&format!("{:<7}", s.action.to_string()), code, color);
                println!("{action} {:<width$}  {}", s.service, s.cause);
            }
            println!("{}", plan.summary());
        }
    }
}
