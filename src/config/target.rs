//! The `target` key: its three YAML forms and mirrord's target-path grammar.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Serialize};

use super::model::{Scalar, no_default};

/// A service's `target`, as real mirrord's three-state deserializer reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub enum TargetConfig {
    /// `target: none` — a targetless session.
    None,
    /// Absent, `~`, `{}` or a mapping; a mapping without `path` leaves the path to inference.
    #[default]
    Unspecified,
    Specified(SpecifiedTarget),
}

/// A target mapping. Without `path`, the path is inferred from the service name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpecifiedTarget {
    /// The workload to mirror (default: the first deployment, statefulset, rollout or pod
    /// named like the service).
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub path: Option<TargetPath>,
    /// Namespace of the target, or where to look for it when `path` is absent.
    #[serde(default)]
    #[schemars(with = "Option<Scalar>", transform = no_default)]
    pub namespace: Option<String>,
}

impl TargetConfig {
    /// The explicit path, if the file gives one.
    pub fn path(&self) -> Option<&TargetPath> {
        match self {
            TargetConfig::Specified(s) => s.path.as_ref(),
            _ => None,
        }
    }

    pub fn namespace(&self) -> Option<&str> {
        match self {
            TargetConfig::Specified(s) => s.namespace.as_deref(),
            _ => None,
        }
    }

    /// True when the path has to come from the cluster (spec §4.2.1).
    pub fn needs_inference(&self) -> bool {
        matches!(self, TargetConfig::Unspecified)
            || matches!(self, TargetConfig::Specified(s) if s.path.is_none())
    }
}

impl<'de> Deserialize<'de> for TargetConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TargetVisitor;
        impl<'de> Visitor<'de> for TargetVisitor {
            type Value = TargetConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`none`, a target mapping, or nothing at all")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TargetConfig, E> {
                if v == "none" {
                    Ok(TargetConfig::None)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<TargetConfig, E> {
                Ok(TargetConfig::Unspecified)
            }
            fn visit_none<E: de::Error>(self) -> Result<TargetConfig, E> {
                Ok(TargetConfig::Unspecified)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TargetConfig, A::Error> {
                let spec = SpecifiedTarget::deserialize(MapAccessDeserializer::new(map))?;
                if spec.path.is_none() && spec.namespace.is_none() {
                    Ok(TargetConfig::Unspecified)
                } else {
                    Ok(TargetConfig::Specified(spec))
                }
            }
        }
        deserializer.deserialize_any(TargetVisitor)
    }
}

/// The visitor's three forms: exactly `none`, nothing (`~`), or a mapping.
impl JsonSchema for TargetConfig {
    fn schema_name() -> Cow<'static, str> {
        "Target".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The workload this service's mirrord session targets: `none` (targetless), a mapping `{path, namespace}`, or nothing at all (the path is inferred from the service name, in the cluster). The short form `target: deployment/x` is not accepted, as in mirrord.",
            "anyOf": [
                { "const": "none", "description": "Targetless: no workload is mirrored." },
                generator.subschema_for::<SpecifiedTarget>(),
                { "type": "null", "description": "Inferred from the service name." },
            ]
        })
    }
}

/// Kinds accepted by mirrord's `Target::from_str`, in its own spelling.
const PATH_KINDS: &[&str] = &[
    "deployment",
    "deploy",
    "rollout",
    "pod",
    "job",
    "cronjob",
    "statefulset",
    "service",
    "replicaset",
];

/// Kinds of the map form (`{deployment: foo, container: c}`), as in mirrord's schema.
const MAP_KINDS: &[&str] = &[
    "deployment",
    "pod",
    "rollout",
    "job",
    "cron_job",
    "stateful_set",
    "service",
    "replica_set",
    "labels",
];

const VALID_FORMATS: &str = "
mirrord-layer failed to parse the provided target!

- Valid format:
    >> `targetless`
    >> `pod/{pod-name}[/container/{container-name}]`;
    >> `deployment/{deployment-name}[/container/{container-name}]`;
    >> `rollout/{rollout-name}[/container/{container-name}]`;
    >> `job/{job-name}[/container/{container-name}]`;
    >> `cronjob/{cronjob-name}[/container/{container-name}]`;
    >> `statefulset/{statefulset-name}[/container/{container-name}]`;
    >> `service/{service-name}[/container/{container-name}]`;
    >> `replicaset/{replicaset-name}[/container/{container-name}]`;
";

/// A target path: the string form (kept as written, already checked) or the map form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TargetPath {
    Text(String),
    Map(serde_json::Map<String, serde_json::Value>),
}

impl TargetPath {
    /// Parses the string form with mirrord's rules; the error text follows mirrord's.
    pub fn parse(s: &str) -> Result<TargetPath, String> {
        if s == "targetless" {
            return Ok(TargetPath::Text(s.to_owned()));
        }
        let mut parts = s.split('/');
        let kind = parts.next().unwrap_or_default();
        if !PATH_KINDS.contains(&kind) {
            return Err(format!(
                "invalid target provided `Provided target: {s} is unsupported. Did you remember to add a prefix, e.g. pod/{s}? \n{VALID_FORMATS}`"
            ));
        }
        let name = parts.next().filter(|n| !n.is_empty());
        let rest: Vec<&str> = parts.collect();
        match (name, rest.as_slice()) {
            (Some(_), []) => Ok(TargetPath::Text(s.to_owned())),
            (Some(_), ["container", c]) if !c.is_empty() => Ok(TargetPath::Text(s.to_owned())),
            _ => Err(format!("invalid target provided `{VALID_FORMATS}`")),
        }
    }

    /// `targetless` written as a path (a pitfall: steal mode then fails in mirrord).
    pub fn is_targetless(&self) -> bool {
        matches!(self, TargetPath::Text(s) if s == "targetless")
    }

    /// The workload kind, normalised (`deploy` → `deployment`).
    pub fn kind(&self) -> &str {
        match self {
            TargetPath::Text(s) if s == "targetless" => "targetless",
            TargetPath::Text(s) => match s.split('/').next().unwrap_or_default() {
                "deploy" => "deployment",
                other => other,
            },
            TargetPath::Map(m) => m
                .keys()
                .find(|k| MAP_KINDS.contains(&k.as_str()))
                .map(|k| match k.as_str() {
                    "cron_job" => "cronjob",
                    "stateful_set" => "statefulset",
                    "replica_set" => "replicaset",
                    "labels" => "label",
                    other => other,
                })
                .unwrap_or("unknown"),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("target paths are plain JSON")
    }
}

impl fmt::Display for TargetPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetPath::Text(s) => f.write_str(s),
            TargetPath::Map(m) => write!(f, "{}", serde_json::Value::Object(m.clone())),
        }
    }
}

impl<'de> Deserialize<'de> for TargetPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PathVisitor;
        impl<'de> Visitor<'de> for PathVisitor {
            type Value = TargetPath;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a target path such as `deployment/api` or a target mapping")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TargetPath, E> {
                TargetPath::parse(v).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TargetPath, A::Error> {
                let mut out = serde_json::Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    let allowed = MAP_KINDS.contains(&key.as_str()) || key == "container";
                    if !allowed {
                        return Err(de::Error::unknown_field(&key, MAP_KINDS));
                    }
                    let value: serde_json::Value = if key == "labels" {
                        serde_json::to_value(
                            map.next_value::<std::collections::BTreeMap<String, String>>()?,
                        )
                        .expect("string map")
                    } else {
                        serde_json::Value::String(map.next_value::<String>()?)
                    };
                    out.insert(key, value);
                }
                let kinds = out
                    .keys()
                    .filter(|k| MAP_KINDS.contains(&k.as_str()))
                    .count();
                if kinds != 1 {
                    return Err(de::Error::custom(format!(
                        "invalid target provided `a target mapping names exactly one of {}`",
                        MAP_KINDS.join(", ")
                    )));
                }
                Ok(TargetPath::Map(out))
            }
        }
        deserializer.deserialize_any(PathVisitor)
    }
}

/// `TargetPath::parse`'s grammar as a pattern, and the map form with exactly one kind; both
/// built from the kind lists the parser uses.
impl JsonSchema for TargetPath {
    fn schema_name() -> Cow<'static, str> {
        "TargetPath".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let pattern = format!(
            "^(?:targetless|(?:{})/[^/]+(?:/container/[^/]+)?)$",
            PATH_KINDS.join("|")
        );
        let mut properties = serde_json::Map::new();
        for kind in MAP_KINDS {
            let schema = if *kind == "labels" {
                json_schema!({
                    "type": "object",
                    "additionalProperties": generator.subschema_for::<Scalar>(),
                })
            } else {
                generator.subschema_for::<Scalar>()
            };
            properties.insert((*kind).to_owned(), schema.to_value());
        }
        properties.insert(
            "container".to_owned(),
            generator.subschema_for::<Scalar>().to_value(),
        );
        let one_kind: Vec<serde_json::Value> = MAP_KINDS
            .iter()
            .map(|k| serde_json::json!({ "required": [k] }))
            .collect();
        let description = format!(
            "`<kind>/<name>[/container/<container>]` (kind: {}), `targetless`, or a mapping naming exactly one of {} (plus an optional `container`), such as `{{deployment: api, container: main}}`.",
            PATH_KINDS.join(", "),
            MAP_KINDS.join(", "),
        );
        json_schema!({
            "description": description,
            "anyOf": [
                { "type": "string", "pattern": pattern },
                {
                    "type": "object",
                    "properties": properties,
                    "additionalProperties": false,
                    "oneOf": one_kind,
                },
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_paths_follow_mirrord_grammar() {
        for ok in [
            "deployment/api",
            "deploy/api/container/c",
            "pod/x",
            "rollout/r",
            "job/j",
            "cronjob/c",
            "statefulset/s",
            "service/s/container/main",
            "replicaset/r",
            "targetless",
        ] {
            assert!(TargetPath::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "bogus/x",
            "deployment",
            "deployment/",
            "pod/x/y",
            "pod/x/container",
            "api",
        ] {
            assert!(TargetPath::parse(bad).is_err(), "{bad}");
        }
        assert!(
            TargetPath::parse("bogus/x")
                .unwrap_err()
                .contains("Did you remember to add a prefix, e.g. pod/bogus/x?")
        );
    }

    #[test]
    fn kinds_are_normalised() {
        assert_eq!(TargetPath::parse("deploy/a").unwrap().kind(), "deployment");
        assert_eq!(
            TargetPath::parse("targetless").unwrap().kind(),
            "targetless"
        );
    }
}
