//! Service → `mirrord.json`: the mapping of real `mirrord up` 3.250 (compat §2), plus the
//! service's `config:` base file merged underneath and `env_file` merged into `env.override`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::config::{CommonConfig, Mode, ServiceConfig, TargetPath};

/// Where a service's target comes from once inference has run.
#[derive(Debug, Clone, PartialEq)]
pub enum ResolvedTarget {
    /// `target: none`.
    Targetless,
    /// An explicit or inferred path.
    Path {
        path: TargetPath,
        namespace: Option<String>,
    },
    /// Not inferred (the `local` launcher): only the namespace hint, if any.
    Unresolved { namespace: Option<String> },
}

/// Queue types of mirrord's automatic queue splitting, with the jq selector of each (compat §2.3).
const SPLIT_QUEUES: &[(&str, &str)] = &[
    ("SQS", ".MessageAttributes"),
    ("Kafka", ".headers"),
    ("GCPPubSub", ".attributes"),
    ("AzureServiceBus", ".application_properties"),
    ("RedisPubSub", "."),
    ("Temporal", ".header"),
    ("BullMQ", "."),
];

/// The seven wildcard `split_queues` entries, in mirrord's list form.
pub fn split_queues(key: &str) -> Value {
    let marker = serde_json::to_string(&format!("mirrord-session={key}")).expect("string");
    Value::Array(
        SPLIT_QUEUES
            .iter()
            .map(|(queue_type, selector)| {
                json!({
                    "queue_id": "*",
                    "queue_type": queue_type,
                    "jq_filter": format!(
                        "({selector} // {{}}) | [.. | select(type == \"string\" and contains({marker}))] | length > 0"
                    ),
                })
            })
            .collect(),
    )
}

/// The default split-mode filter. Unlike real mirrord's `baggage: .*mirrord-session=<key>.*`
/// (spec §4.1), the key is regex-escaped and anchored on both sides: mirrord matches the
/// filter against `Name: Value` (case-insensitively, fancy-regex, unanchored search), so the
/// key must start a baggage member (after `:`, `,` or whitespace) and end at `,` (next member),
/// `;` (member properties), whitespace or the end. `alice` then matches neither `alice2` nor
/// `xalice`.
pub fn default_header_filter(key: &str) -> String {
    format!(
        "baggage:(?:.*[,\\s])?mirrord-session={}(?:[,;\\s]|$).*",
        escape_key(key)
    )
}

/// Escapes only what is special in a regex outside a character class, so that common keys
/// (`ci-run-42`, `alice`) stay readable while `.` or `+` match themselves.
pub fn escape_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if matches!(
            c,
            '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub struct Inputs<'a> {
    pub name: &'a str,
    pub service: &'a ServiceConfig,
    pub common: &'a CommonConfig,
    pub key: &'a str,
    /// Effective kube context (`--context`, then the service's, then `common.context`).
    pub context: Option<&'a str>,
    pub mode: Mode,
    pub target: &'a ResolvedTarget,
    pub env_file: Option<&'a BTreeMap<String, String>>,
    pub base: Option<&'a Value>,
}

/// The generated `mirrord.json`, and warnings to show the user.
pub fn mirrord_config(i: &Inputs) -> (Value, Vec<String>) {
    let mut warnings = Vec::new();
    let mut root = Map::new();
    let common = i.common;
    for (k, v) in [
        (
            "accept_invalid_certificates",
            common.accept_invalid_certificates,
        ),
        ("operator", common.operator),
        ("telemetry", common.telemetry),
    ] {
        if let Some(v) = v {
            root.insert(k.into(), Value::Bool(v));
        }
    }
    root.insert("key".into(), Value::String(i.key.to_owned()));
    if let Some(ctx) = i.context {
        root.insert("kube_context".into(), Value::String(ctx.to_owned()));
    }
    let mut target = Map::new();
    match i.target {
        ResolvedTarget::Targetless => {}
        ResolvedTarget::Path { path, namespace } => {
            target.insert("path".into(), path.to_json());
            if let Some(ns) = namespace {
                target.insert("namespace".into(), Value::String(ns.clone()));
            }
        }
        ResolvedTarget::Unresolved { namespace } => {
            if let Some(ns) = namespace {
                target.insert("namespace".into(), Value::String(ns.clone()));
            }
        }
    }
    if !target.is_empty() {
        root.insert("target".into(), Value::Object(target));
    }

    let mut feature = Map::new();
    let mut env = i
        .service
        .env
        .as_ref()
        .map(|e| serde_json::to_value(e).expect("env serializes"))
        .unwrap_or_else(|| Value::Object(Map::new()));
    if let Some(vars) = i.env_file.filter(|v| !v.is_empty()) {
        let overrides = env
            .as_object_mut()
            .expect("env is an object")
            .entry("override")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .expect("override is an object");
        for (k, v) in vars {
            overrides
                .entry(k.clone())
                .or_insert_with(|| Value::String(v.clone()));
        }
    }
    if env.as_object().is_some_and(|e| !e.is_empty()) {
        feature.insert("env".into(), env);
    }

    let mut incoming = Map::new();
    incoming.insert("mode".into(), Value::String("steal".into()));
    let user_filter = i.service.http_filter.as_ref();
    match i.mode {
        Mode::Split => {
            let filter = match user_filter.filter(|f| f.is_filter_set()) {
                Some(f) => serde_json::to_value(f).expect("filter serializes"),
                None => json!({ "header_filter": default_header_filter(i.key) }),
            };
            incoming.insert("http_filter".into(), filter);
        }
        Mode::Replace => {
            if user_filter.is_some_and(|f| f.is_filter_set()) {
                warnings.push(format!(
                    "{}: `http_filter` is ignored in `replace` mode, all incoming traffic is handled locally",
                    i.name
                ));
            }
            feature.insert(
                "copy_target".into(),
                json!({ "enabled": true, "scale_down": true }),
            );
        }
    }
    if !i.service.ignore_ports.is_empty() {
        incoming.insert("ignore_ports".into(), json!(i.service.ignore_ports));
    }
    feature.insert("network".into(), json!({ "incoming": incoming }));
    feature.insert("split_queues".into(), split_queues(i.key));
    root.insert("feature".into(), Value::Object(feature));

    let mut out = match i.base {
        Some(base) => {
            let mut merged = base.clone();
            merge(&mut merged, Value::Object(root));
            merged
        }
        None => Value::Object(root),
    };
    if *i.target == ResolvedTarget::Targetless
        && let Some(t) = out.get_mut("target").and_then(Value::as_object_mut)
    {
        // `target: none` wins over a base file's target.
        t.remove("path");
    }
    (out, warnings)
}

/// Deep merge: objects merge key by key, anything else in `top` replaces `base`.
fn merge(base: &mut Value, top: Value) {
    match (base, top) {
        (Value::Object(b), Value::Object(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, t) => *b = t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_escaped_in_the_default_filter_only() {
        assert_eq!(
            default_header_filter("john.doe"),
            r"baggage:(?:.*[,\s])?mirrord-session=john\.doe(?:[,;\s]|$).*"
        );
        assert_eq!(escape_key("ci-run-42"), "ci-run-42");
        assert_eq!(escape_key("a+b(c)"), r"a\+b\(c\)");
        let q = split_queues("john.doe");
        assert_eq!(
            q[0]["jq_filter"],
            "(.MessageAttributes // {}) | [.. | select(type == \"string\" and contains(\"mirrord-session=john.doe\"))] | length > 0"
        );
        assert_eq!(q.as_array().unwrap().len(), 7);
    }

    /// mirrord matches header filters against `Name: Value`, case-insensitively, with an
    /// unanchored search (compat §2.4); the `regex` crate agrees with fancy-regex on this syntax.
    #[test]
    fn default_filter_matches_only_its_own_key() {
        let matches = |key: &str, header: &str| {
            regex::RegexBuilder::new(&default_header_filter(key))
                .case_insensitive(true)
                .build()
                .expect("valid regex")
                .is_match(header)
        };
        for header in [
            "baggage: mirrord-session=k",
            "baggage: a=b,mirrord-session=k;x",
            "baggage: a=b, mirrord-session=k",
            "Baggage: mirrord-session=k ,c=d",
            "baggage:mirrord-session=k",
        ] {
            assert!(matches("k", header), "{header}");
        }
        for header in [
            "baggage: mirrord-session=k2",
            "baggage: a=b,mirrord-session=k2;x",
            "baggage: xmirrord-session=k",
            "baggage: mirrord-session=",
            "other: mirrord-session=k",
        ] {
            assert!(!matches("k", header), "{header}");
        }
        assert!(matches("john.doe", "baggage: mirrord-session=john.doe"));
        assert!(!matches("john.doe", "baggage: mirrord-session=johnxdoe"));
        assert!(matches("a+b", "baggage: mirrord-session=a+b"));
        assert!(matches("ci-run-42", "baggage: mirrord-session=ci-run-42"));
        assert!(!matches("ci-run-4", "baggage: mirrord-session=ci-run-42"));
    }

    #[test]
    fn merge_keeps_base_keys_and_generated_wins() {
        let mut base = json!({"agent": {"ttl": 30}, "feature": {"fs": "read", "network": {"incoming": {"mode": "mirror"}}}});
        merge(
            &mut base,
            json!({"feature": {"network": {"incoming": {"mode": "steal"}}}}),
        );
        assert_eq!(
            base,
            json!({"agent": {"ttl": 30}, "feature": {"fs": "read", "network": {"incoming": {"mode": "steal"}}}})
        );
    }
}
