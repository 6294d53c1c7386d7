//! `completions` (placeholder, being written).

use std::process::ExitCode;

use anyhow::Result;

pub fn run(_shell: clap_complete::Shell) -> Result<ExitCode> {
    anyhow::bail!("`completions` is not available yet")
}
