//! `config [SERVICE] [--hash|--yaml]`: the generated mirrord.json of the services, their hashes,
//! or the file as it is parsed.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::{Map, Value};

use super::Context;

pub fn run(ctx: &Context, service: Option<&str>, hash: bool, yaml: bool) -> Result<ExitCode> {
    let doc = ctx.load()?;
    if yaml {
        print!("{}", doc.resolved);
        if !doc.resolved.ends_with('\n') {
            println!();
        }
        return Ok(ExitCode::SUCCESS);
    }
    let selection: Vec<String> = service.map(|s| vec![s.to_owned()]).unwrap_or_default();
    let cache = ctx.read_state().ok().flatten();
    let cache = cache.map(|s| s.target_cache).unwrap_or_default();
    let (desired, _) = ctx.desired(&doc, &selection, None, cache)?;
    let mut specs: Vec<_> = desired.services.iter().collect();
    if let Some(name) = service {
        specs.retain(|s| s.name == name);
    }
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    if hash {
        for s in specs {
            println!("{} {}", s.name, s.hash());
        }
    } else if let (Some(_), [one]) = (service, specs.as_slice()) {
        println!("{}", serde_json::to_string_pretty(&*one.mirrord_config)?);
    } else {
        let all: Map<String, Value> = specs
            .into_iter()
            .map(|s| (s.name.clone(), (*s.mirrord_config).clone()))
            .collect();
        println!("{}", serde_json::to_string_pretty(&Value::Object(all))?);
    }
    Ok(ExitCode::SUCCESS)
}
