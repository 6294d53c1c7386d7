//! `schema` (placeholder, being written).

use std::process::ExitCode;

use anyhow::Result;

pub fn run() -> Result<ExitCode> {
    anyhow::bail!("`schema` is not available yet")
}
