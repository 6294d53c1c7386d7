//! `check [--compat]`: validate the file; list the extensions real mirrord would reject (and
//! then exit 1).

use std::process::ExitCode;

use anyhow::Result;

use super::Context;

pub fn run(ctx: &Context, compat: bool) -> Result<ExitCode> {
    let doc = ctx.load()?;
    crate::desired::select(&doc, &[])?;
    let services = &doc.file.services.0;
    println!(
        "{}: ok ({} service{})",
        doc.path.display(),
        services.len(),
        if services.len() == 1 { "" } else { "s" }
    );
    let mut rejected = false;
    if compat {
        let used: Vec<(String, Vec<&str>)> = services
            .iter()
            .map(|(n, s)| (n.clone(), s.extensions_used()))
            .filter(|(_, u)| !u.is_empty())
            .collect();
        if used.is_empty() && doc.document_extensions.is_empty() {
            println!("compatible with mirrord 3.250 `mirrord up`: no mirrord-up extensions used");
        } else {
            rejected = true;
            println!("real mirrord 3.250 `mirrord up` would reject these mirrord-up extensions:");
            for k in &doc.document_extensions {
                println!("  {k}");
            }
            for (name, keys) in used {
                for k in keys {
                    println!("  services.{name}.{k}");
                }
            }
        }
    }
    // Valid for mirrord-up, but not a file real `mirrord up` takes: scripts can tell.
    Ok(if rejected {
        ExitCode::from(crate::error::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}
