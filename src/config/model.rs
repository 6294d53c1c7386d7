//! The types of `mirrord-up.yaml`: real mirrord 3.250's schema plus our extensions (spec §4.3).
//!
//! Strict levels (`deny_unknown_fields`) are exactly mirrord's: the top level, `common`,
//! `services.<name>`, `target` and `run`. `env` and `http_filter` are mirrord's lenient types:
//! unknown sub-keys are dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::target::TargetConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpFile {
    #[serde(default)]
    pub common: CommonConfig,
    pub services: Services,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommonConfig {
    pub accept_invalid_certificates: Option<bool>,
    pub operator: Option<bool>,
    pub telemetry: Option<bool>,
    pub context: Option<String>,
}

/// The `services` map, in name order, refusing duplicated names (real mirrord keeps the last).
#[derive(Debug, Clone, Default)]
pub struct Services(pub BTreeMap<String, ServiceConfig>);

impl<'de> Deserialize<'de> for Services {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ServicesVisitor;
        impl<'de> Visitor<'de> for ServicesVisitor {
            type Value = Services;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of service names to services")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Services, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    if out.contains_key(&name) {
                        return Err(de::Error::custom(format!(
                            "duplicate service `{name}` (each service name may appear once)"
                        )));
                    }
                    let service = map.next_value::<ServiceConfig>()?;
                    out.insert(name, service);
                }
                Ok(Services(out))
            }
        }
        deserializer.deserialize_map(ServicesVisitor)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    #[serde(default)]
    pub target: TargetConfig,
    #[serde(default)]
    pub env: Option<EnvConfig>,
    #[serde(default)]
    pub default_mode: Mode,
    #[serde(default)]
    pub http_filter: Option<HttpFilterConfig>,
    #[serde(default)]
    pub ignore_ports: BTreeSet<u16>,
    #[serde(default)]
    pub skip: bool,
    #[serde(default)]
    pub context: Option<String>,
    pub run: RunConfig,
    // --- mirrord-up extensions (spec §4.3) ---
    #[serde(default)]
    pub depends_on: DependsOn,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub max_restarts: Option<u32>,
    #[serde(default)]
    pub ready: Option<ReadyConfig>,
    #[serde(default)]
    pub stop_signal: Option<StopSignal>,
    #[serde(default)]
    pub stop_timeout: Option<Seconds>,
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    #[serde(default)]
    pub env_file: Option<PathBuf>,
    #[serde(default)]
    pub config: Option<PathBuf>,
}

/// The extension keys a service uses, for `check --compat`.
pub const EXTENSION_KEYS: &[&str] = &[
    "depends_on",
    "restart",
    "max_restarts",
    "ready",
    "stop_signal",
    "stop_timeout",
    "working_dir",
    "env_file",
    "config",
];

impl ServiceConfig {
    pub fn extensions_used(&self) -> Vec<&'static str> {
        let used = [
            !self.depends_on.0.is_empty(),
            self.restart != RestartPolicy::No,
            self.max_restarts.is_some(),
            self.ready.is_some(),
            self.stop_signal.is_some(),
            self.stop_timeout.is_some(),
            self.working_dir.is_some(),
            self.env_file.is_some(),
            self.config.is_some(),
        ];
        EXTENSION_KEYS
            .iter()
            .zip(used)
            .filter_map(|(k, u)| u.then_some(*k))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Split,
    Replace,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Split => "split",
            Mode::Replace => "replace",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default, rename = "type")]
    pub kind: RunType,
    #[serde(deserialize_with = "command")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunType {
    #[default]
    Exec,
    Container,
}

impl RunType {
    pub fn as_str(self) -> &'static str {
        match self {
            RunType::Exec => "exec",
            RunType::Container => "container",
        }
    }
}

/// `command`: a non-empty list; numbers and booleans become strings, as in mirrord. The
/// emptiness check runs inside the visitor so that the error carries the `command` key path.
fn command<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct CommandVisitor;
    impl<'de> Visitor<'de> for CommandVisitor {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(Scalar(s)) = seq.next_element()? {
                out.push(s);
            }
            if out.is_empty() {
                return Err(de::Error::custom(
                    "`command` must not be empty (`command: []` would start nothing)",
                ));
            }
            Ok(out)
        }
    }
    deserializer.deserialize_seq(CommandVisitor)
}

/// A YAML scalar read as a string (`1` → "1", `true` → "true").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// A string or a list of strings (mirrord's `VecOrSingle`), written back in the form given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for StringOrList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringOrList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringOrList, E> {
                Ok(StringOrList::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringOrList, A::Error> {
                let mut out = Vec::new();
                while let Some(Scalar(s)) = seq.next_element()? {
                    out.push(s);
                }
                Ok(StringOrList::Many(out))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// mirrord's `feature.env` (lenient: unknown keys are dropped, as in mirrord).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct EnvConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<StringOrList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<StringOrList>,
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    pub overrides: Option<BTreeMap<String, Scalar>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_from_process: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unset: Option<StringOrList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<BTreeMap<String, Scalar>>,
}

/// mirrord's `feature.network.incoming.http_filter` (lenient).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct HttpFilterConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_filter_jq: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_filter: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_of: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any_of: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortOrList>,
}

impl HttpFilterConfig {
    /// mirrord's `is_filter_set`: any filter at all; `ports` alone does not count.
    pub fn is_filter_set(&self) -> bool {
        self.header_filter.is_some()
            || self.header_filter_jq.is_some()
            || self.path_filter.is_some()
            || self.method_filter.is_some()
            || self.body_filter.is_some()
            || self.all_of.is_some()
            || self.any_of.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PortOrList {
    One(u16),
    Many(Vec<u16>),
}

impl<'de> Deserialize<'de> for PortOrList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PortOrList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port or a list of ports")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortOrList, E> {
                u16::try_from(v)
                    .map(PortOrList::One)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &"u16"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortOrList, E> {
                u16::try_from(v)
                    .map(PortOrList::One)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &"u16"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PortOrList, A::Error> {
                let mut out = Vec::new();
                while let Some(p) = seq.next_element::<u16>()? {
                    out.push(p);
                }
                Ok(PortOrList::Many(out))
            }
        }
        deserializer.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Extensions

/// How a dependent waits for its dependency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    #[default]
    Started,
    Ready,
    CompletedSuccessfully,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    #[serde(default)]
    pub condition: Condition,
    #[serde(default)]
    pub restart: bool,
}

/// `depends_on`: a list of names, or a map `name: {condition, restart}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DependsOn(pub BTreeMap<String, Dependency>);

impl<'de> Deserialize<'de> for DependsOn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DependsOn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of service names or a map of service names to conditions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DependsOn, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(name) = seq.next_element::<String>()? {
                    out.insert(name, Dependency::default());
                }
                Ok(DependsOn(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DependsOn, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    let dep = map.next_value::<Option<Dependency>>()?.unwrap_or_default();
                    out.insert(name, dep);
                }
                Ok(DependsOn(out))
            }
            fn visit_unit<E: de::Error>(self) -> Result<DependsOn, E> {
                Ok(DependsOn::default())
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    OnFailure,
    Always,
}

/// When a service counts as ready. With none of `log`/`tcp`/`http`, the `Ready!` line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReadyConfig {
    #[serde(
        default,
        deserialize_with = "regex_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub log: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<u16>,
    #[serde(
        default,
        deserialize_with = "http_url_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub http: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Seconds>,
}

/// A string checked by `check` inside the visitor, so that errors carry the key's path.
fn checked_string<'de, D: Deserializer<'de>>(
    d: D,
    expecting: &'static str,
    check: fn(&str) -> Result<(), String>,
) -> Result<String, D::Error> {
    struct V(&'static str, fn(&str) -> Result<(), String>);
    impl Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            (self.1)(v).map_err(E::custom)?;
            Ok(v.to_owned())
        }
    }
    d.deserialize_str(V(expecting, check))
}

fn regex_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked_string(d, "a regular expression", |s| {
        regex::Regex::new(s)
            .map(drop)
            .map_err(|e| format!("invalid regex: {e}"))
    })
    .map(Some)
}

fn http_url_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked_string(d, "an http:// URL", |s| {
        if s.starts_with("http://") {
            Ok(())
        } else {
            Err(format!(
                "invalid value: string {s:?}, expected an http:// URL (https is not probed)"
            ))
        }
    })
    .map(Some)
}

/// A signal by name (`SIGTERM` or `TERM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSignal(pub nix::sys::signal::Signal);

impl Serialize for StopSignal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for StopSignal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = checked_string(deserializer, "a signal name", |name| {
            match parse_signal(name) {
                Some(_) => Ok(()),
                None => Err(format!(
                    "invalid value: string {name:?}, expected a signal name such as SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2 or SIGKILL"
                )),
            }
        })?;
        Ok(StopSignal(parse_signal(&name).expect("checked")))
    }
}

pub fn parse_signal(name: &str) -> Option<nix::sys::signal::Signal> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().ok()
}

/// A non-negative duration: integer or fractional seconds, or a string such as `10s`, `500ms`, `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Seconds(#[serde(with = "millis")] pub Duration);

mod millis {
    use std::time::Duration;
    /// Written as `"<n>ms"`, which reads back through the same parser.
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = "a non-negative number of seconds or a duration such as `10s`";
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(|v| Seconds(Duration::from_secs(v)))
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &EXPECTED))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                Duration::try_from_secs_f64(v)
                    .map(Seconds)
                    .map_err(|_| E::invalid_value(de::Unexpected::Float(v), &EXPECTED))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                parse_duration(v)
                    .map(Seconds)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &EXPECTED))
            }
        }
        deserializer.deserialize_any(V)
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("-1s"), None);
    }

    #[test]
    fn signals_by_either_name() {
        assert_eq!(parse_signal("INT"), Some(nix::sys::signal::Signal::SIGINT));
        assert_eq!(
            parse_signal("SIGTERM"),
            Some(nix::sys::signal::Signal::SIGTERM)
        );
        assert_eq!(parse_signal("SIGBOGUS"), None);
    }
}
