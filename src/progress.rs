//! What a command shows while it waits on services (starting, readiness, grace periods):
//! plain lines, one per outcome (`api  started (pid 12): new service`).

use crate::commands::Context;
use crate::engine::{LineReporter, Reporter};

/// The reporter for a command's own output (stderr).
pub fn reporter(ctx: &Context, width: usize) -> Box<dyn Reporter> {
    Box::new(LineReporter {
        quiet: ctx.global.quiet,
        width,
    })
}
