//! `init` (placeholder, being written).

use std::process::ExitCode;

use anyhow::Result;

use super::Context;

pub fn run(_ctx: &Context, _output: &std::path::Path) -> Result<ExitCode> {
    anyhow::bail!("`init` is not available yet")
}
