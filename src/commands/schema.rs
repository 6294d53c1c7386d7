//! `schema`: the JSON schema (draft 2020-12) of `mirrord-up.yaml`, generated from the config
//! types so that it cannot drift from what the parser accepts.

use std::process::ExitCode;

use anyhow::Result;
use schemars::generate::SchemaSettings;
use serde_json::Value;

use crate::config::UpFile;

/// Where the checked-in copy (`mirrord-up.schema.json` at the repository root) is published;
/// the same base as `state/state.schema.json`'s `$id`.
const SCHEMA_ID: &str = "https://github.com/mirrord-up/mirrord-up/mirrord-up.schema.json";

pub fn run() -> Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(&json_schema())?);
    Ok(ExitCode::SUCCESS)
}

fn json_schema() -> Value {
    let mut schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<UpFile>();
    schema.insert("$id".into(), SCHEMA_ID.into());
    let mut value = schema.to_value();
    unwrap_descriptions(&mut value);
    value
}

/// Doc comments are wrapped at 100 columns; editors show descriptions as they are, so the
/// wrapping newlines become spaces (a blank line, a paragraph break, stays).
fn unwrap_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(text) if key == "description" || key == "title" => {
                        *text = text
                            .split("\n\n")
                            .map(|para| para.split('\n').collect::<Vec<_>>().join(" "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => unwrap_descriptions(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}
