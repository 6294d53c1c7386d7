//! `up`: converge to the YAML (one-shot with `--detach`: plan, apply, record, return).

use std::process::ExitCode;

use anyhow::{Result, bail};

use super::Context;
use crate::cli::{Format, UpArgs};
use crate::engine::{Engine, LaunchSettings, LineReporter};
use crate::plan::PlanOptions;

pub fn run(ctx: &Context, args: &UpArgs) -> Result<ExitCode> {
    if !args.detach && !args.dry_run {
        bail!(
            "foreground `up` (logs and live reload) is not available in this version; run `mirrord-up up --detach`, then `mirrord-up logs -f`"
        );
    }
    apply_once(ctx, args)
}

/// One reconcile: plan against the recorded state, apply, record, return. `up --detach` and
/// `ci start --up` are this.
pub fn apply_once(ctx: &Context, args: &UpArgs) -> Result<ExitCode> {
    // Parse and validate before taking anything: a bad file changes nothing.
    let doc = ctx.load()?;
    let store = ctx.store()?;
    let lock = store.lock(ctx.lock_timeout())?;
    let state = store.load(&lock)?;
    let (desired, cache) = ctx.desired(
        &doc,
        &args.services,
        args.mode.map(Into::into),
        state.target_cache.clone(),
    )?;
    let settings = LaunchSettings {
        mirrord_bin: ctx.launcher_bin()?,
        stop_timeout: None,
    };
    let width = desired
        .services
        .iter()
        .map(|s| s.name.len())
        .chain(state.services.keys().map(String::len))
        .max()
        .unwrap_or(0);
    let mut reporter = LineReporter {
        quiet: ctx.global.quiet,
        width,
    };
    let fresh = state.services.is_empty();
    let mut engine = Engine::new(&store, &lock, state, settings, &mut reporter);
    engine.recover()?;
    if fresh {
        engine.check_untracked()?;
    }
    let observed = crate::engine::observe(&engine.state);
    let plan = crate::plan::plan(
        &desired,
        &observed,
        PlanOptions {
            force_recreate: args.force_recreate,
            restart_exited: true,
        },
    );
    if args.dry_run {
        super::plan::print_plan(&plan, Format::Text, ctx.stdout_color());
        return Ok(if plan.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        });
    }
    let recorded = (engine.state.target_cache.clone(), engine.state.file.clone());
    engine.state.target_cache = cache;
    engine.state.file = Some(doc.path.clone());
    if plan.is_empty() {
        // A no-op writes nothing unless what it records about the file changed.
        if recorded != (engine.state.target_cache.clone(), engine.state.file.clone()) {
            engine.save()?;
        }
        if !ctx.global.quiet {
            println!("nothing to do ({} running)", desired.services.len());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut report = engine.apply(&plan, &desired)?;
    if args.wait {
        let timeout = std::time::Duration::from_secs_f64(args.wait_timeout.max(0.0));
        engine.wait_all_ready(&desired, timeout, &mut report);
    }
    engine.reap_early_exits(&mut report);
    engine.save()?;
    match report.error_message() {
        None => {
            if !ctx.global.quiet {
                println!("{}", plan.summary());
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(msg) => bail!("{msg}"),
    }
}
