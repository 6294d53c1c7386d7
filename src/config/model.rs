//! The types of `mirrord-up.yaml`: real mirrord 3.250's schema plus our extensions (spec §4.3).
//!
//! Strict levels (`deny_unknown_fields`) are exactly mirrord's: the top level, `common`,
//! `services.<name>`, `target` and `run`. `env` and `http_filter` are mirrord's lenient types:
//! unknown sub-keys are dropped.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::target::TargetConfig;

/// # mirrord-up.yaml
///
/// Several mirrord sessions in one file: real `mirrord up` 3.250's format plus the mirrord-up
/// extensions. The whole file is a Tera template, rendered (with `key` and `git_branch`) before
/// it is parsed.
///
/// mirrord-up extension (compose): top-level keys starting with `x-` are ignored (a place for
/// YAML anchors), and YAML merge keys (`<<: *anchor`) apply at every level.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {"description": "mirrord-up extension (compose): ignored; a place for YAML anchors."}}))]
pub struct UpFile {
    /// Settings shared by every service.
    // `common:` with nothing after it is an empty mapping to the parser but `null` in JSON.
    #[serde(default)]
    #[schemars(with = "Option<CommonConfig>", extend("default" = {}))]
    pub common: CommonConfig,
    /// The services, by name (at least one).
    pub services: Services,
}

/// Settings shared by every service.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommonConfig {
    /// Accept the cluster API server's certificate even if it is invalid (mirrord's
    /// `accept_invalid_certificates`).
    pub accept_invalid_certificates: Option<bool>,
    /// Use the mirrord operator (mirrord's `operator`; unset: use it when installed).
    pub operator: Option<bool>,
    /// mirrord's `telemetry`.
    pub telemetry: Option<bool>,
    /// Kubernetes context of every service (`kube_context`); the lowest precedence, below a
    /// service's `context` and `--context`.
    #[schemars(with = "Option<Scalar>")]
    pub context: Option<String>,
}

/// The `services` map, in name order, refusing duplicated names (real mirrord keeps the last).
/// Each service is shared: a file parsed again shares the services whose text did not change
/// with the file parsed before (`chunks`), and whatever was made of them can tell an
/// unchanged service by its pointer. A service is made here or by `chunks` (from a text that
/// holds its name), never shared under another name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Services(pub BTreeMap<String, Arc<ServiceConfig>>);

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
                    out.insert(name, Arc::new(service));
                }
                Ok(Services(out))
            }
        }
        deserializer.deserialize_map(ServicesVisitor)
    }
}

/// Any name maps to a service. `minProperties` says what `validate` refuses (`services: {}`),
/// so that editors flag it too; duplicated names cannot be told apart in JSON.
impl JsonSchema for Services {
    fn schema_name() -> Cow<'static, str> {
        "Services".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The services, by name. A name is 1 to 63 characters: a letter or digit, then letters, digits, `_`, `.` or `-` (docker compose's rule; real mirrord accepts any key). Each name may appear once, and at least one service is required.",
            "type": "object",
            "propertyNames": { "pattern": super::names::NAME_PATTERN },
            "additionalProperties": generator.subschema_for::<ServiceConfig>(),
            "minProperties": 1,
        })
    }
}

/// One service: a command run under its own mirrord session.
// Defaults that mean "unset" are left out of the schema (`no_default`): a `null` default would
// only be noise in an editor's completion.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The workload to mirror: `none`, `{path, namespace}`, or nothing (inferred from the
    /// service name).
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub target: TargetConfig,
    /// mirrord's `feature.env`. Unknown keys inside are ignored, as in mirrord.
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub env: Option<EnvConfig>,
    /// `split`: only requests matching `http_filter` (default: this session's `baggage`
    /// header) come to the local process; `replace`: all traffic does, with the target copied
    /// and scaled down. `-m/--mode` overrides it.
    #[serde(default)]
    pub default_mode: Mode,
    /// mirrord's `feature.network.incoming.http_filter` (split mode only). Unknown keys inside
    /// are ignored, as in mirrord.
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub http_filter: Option<HttpFilterConfig>,
    /// Local ports whose incoming traffic is not mirrored or stolen (duplicates collapse).
    // A set to the code, but duplicates are accepted: no `uniqueItems`. `null` is the JSON of an
    // empty `ignore_ports:`, which the parser reads as an empty list.
    #[serde(default, deserialize_with = "port_set")]
    #[schemars(with = "Option<Vec<Port>>")]
    pub ignore_ports: BTreeSet<u16>,
    /// Not started unless named on the command line.
    #[serde(default)]
    pub skip: bool,
    /// Kubernetes context of this service; beats `common.context`, `--context` beats both.
    #[serde(default)]
    #[schemars(with = "Option<Scalar>", transform = no_default)]
    pub context: Option<String>,
    /// What to run.
    pub run: RunConfig,
    // --- mirrord-up extensions (spec §4.3) ---
    /// mirrord-up extension (compose's `profiles`): started only when one of these profiles is
    /// active (`--profile`, `MIRRORD_UP_PROFILES`) or the service is named.
    #[serde(default)]
    #[schemars(extend("default" = []))]
    pub profiles: Vec<String>,
    /// mirrord-up extension: services to start first (and stop after this one).
    #[serde(default)]
    #[schemars(extend("default" = []))]
    pub depends_on: DependsOn,
    /// mirrord-up extension: restart policy when the service exits.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// mirrord-up extension: give up restarting after this many restarts (default: no limit).
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub max_restarts: Option<u32>,
    /// mirrord-up extension: when the service counts as ready (default: the `Ready!` line
    /// mirrord prints).
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub ready: Option<ReadyConfig>,
    /// mirrord-up extension: the signal sent to the service's process group to stop it.
    #[serde(default)]
    #[schemars(extend("default" = "SIGTERM"))]
    pub stop_signal: Option<StopSignal>,
    /// mirrord-up extension: how long to wait after `stop_signal` before SIGKILL (0 to 24 h).
    #[serde(default)]
    #[schemars(extend("default" = 10))]
    pub stop_timeout: Option<Seconds>,
    /// mirrord-up extension: the command's directory, relative to this file's directory
    /// (default: this file's directory).
    #[serde(default)]
    #[schemars(with = "Option<Scalar>", transform = no_default)]
    pub working_dir: Option<PathBuf>,
    /// mirrord-up extension: a dotenv file (relative to this file) merged under
    /// `env.override`; its content is part of the config hash.
    #[serde(default)]
    #[schemars(with = "Option<Scalar>", transform = no_default)]
    pub env_file: Option<PathBuf>,
    /// mirrord-up extension: a base mirrord config (JSON, or YAML by extension; relative to
    /// this file) merged under the generated keys.
    #[serde(default)]
    #[schemars(with = "Option<Scalar>", transform = no_default)]
    pub config: Option<PathBuf>,
    /// mirrord-up extension (compose's `logging`): how large the service's log file may grow
    /// while it runs and how many files it keeps (`options.max-size`, default `10m`;
    /// `options.max-file`, default 3, the live file included).
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub logging: Option<LoggingConfig>,
    /// mirrord-up extension: restart the app when its source files change, keeping its
    /// mirrord session warm (`action: restart`) or starting a new one (`restart-session`).
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub watch: Option<WatchConfig>,
}

/// compose's `logging`: mirrord-up writes each service's log file itself, so only the
/// `json-file`/`local` drivers' `max-size` and `max-file` options apply.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// Accepted for compose files: `json-file` or `local` (both mean mirrord-up's log files).
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub driver: Option<LogDriver>,
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub options: Option<LogOptions>,
}

#[derive(Debug, Clone, PartialEq, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LogDriver {
    JsonFile,
    Local,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogOptions {
    /// The most a log file holds before its oldest lines move to `<name>.log.1`: bytes, or a
    /// number with `k`, `m` or `g` (default `10m`, at least `16k`).
    #[serde(default, rename = "max-size")]
    #[schemars(transform = no_default)]
    pub max_size: Option<LogSize>,
    /// How many files a log keeps, the live one included (1 to 100, default 3).
    #[serde(default, rename = "max-file")]
    #[schemars(transform = no_default)]
    pub max_file: Option<LogFiles>,
}

impl LoggingConfig {
    pub fn limits(&self) -> crate::logrotate::Limits {
        let mut l = crate::logrotate::Limits::default();
        if let Some(o) = &self.options {
            if let Some(s) = o.max_size {
                l.max_size = s.0;
            }
            if let Some(n) = o.max_file {
                l.max_files = n.0;
            }
        }
        l
    }
}

/// A log size (`10m`, `500k`, bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSize(pub u64);

impl<'de> Deserialize<'de> for LogSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str =
            "a size of at least 16k: bytes, or a number with `k`, `m` or `g` such as `10m`";
        impl Visitor<'_> for V {
            type Value = LogSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LogSize, E> {
                (v >= crate::logrotate::MIN_MAX_SIZE)
                    .then_some(LogSize(v))
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(v), &EXPECTED))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LogSize, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &EXPECTED)),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LogSize, E> {
                let shown = super::names::excerpt(v, 64);
                crate::logrotate::parse_size(v)
                    .map(LogSize)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(&shown), &EXPECTED))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl JsonSchema for LogSize {
    fn schema_name() -> Cow<'static, str> {
        "LogSize".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size: bytes (at least 16384), or a number with a unit `k`, `m` or `g` such as `\"10m\"`.",
            "anyOf": [
                { "type": "integer", "minimum": 16384 },
                { "type": "string", "pattern": r"^\s*[0-9]+\s*[kKmMgG]?[bB]?\s*$" },
            ],
            "examples": ["10m", "500k"],
        })
    }
}

/// How many files a log keeps (compose writes it as a string: `"3"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogFiles(pub u32);

impl<'de> Deserialize<'de> for LogFiles {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = "a number of files from 1 to 100";
        fn bounded<E: de::Error>(n: Option<u64>, u: de::Unexpected) -> Result<LogFiles, E> {
            n.filter(|n| (1..=u64::from(crate::logrotate::MAX_MAX_FILES)).contains(n))
                .map(|n| LogFiles(n as u32))
                .ok_or_else(|| E::invalid_value(u, &EXPECTED))
        }
        impl Visitor<'_> for V {
            type Value = LogFiles;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LogFiles, E> {
                bounded(Some(v), de::Unexpected::Unsigned(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LogFiles, E> {
                bounded(u64::try_from(v).ok(), de::Unexpected::Signed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LogFiles, E> {
                let shown = super::names::excerpt(v, 64);
                bounded(v.trim().parse().ok(), de::Unexpected::Str(&shown))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl JsonSchema for LogFiles {
    fn schema_name() -> Cow<'static, str> {
        "LogFiles".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "How many files a log keeps, the live one included: 1 to 100 (a number or a string of digits, as compose writes it).",
            "anyOf": [
                { "type": "integer", "minimum": 1, "maximum": 100 },
                { "type": "string", "pattern": r"^\s*[0-9]+\s*$" },
            ],
            "examples": [3, "5"],
        })
    }
}

/// Drops a `default` the derive takes from `#[serde(default)]` where it says nothing (`null`).
pub(super) fn no_default(schema: &mut Schema) {
    schema.remove("default");
}

/// The extension keys a service uses, for `check --compat`.
pub const EXTENSION_KEYS: &[&str] = &[
    "profiles",
    "depends_on",
    "restart",
    "max_restarts",
    "ready",
    "stop_signal",
    "stop_timeout",
    "working_dir",
    "env_file",
    "config",
    "logging",
    "watch",
];

impl ServiceConfig {
    /// Started without being named: not `skip`, and no `profiles` or one of them is active.
    pub fn enabled(&self, active: &[String]) -> bool {
        !self.skip && (self.profiles.is_empty() || self.profiles.iter().any(|p| active.contains(p)))
    }

    pub fn extensions_used(&self) -> Vec<&'static str> {
        let used = [
            !self.profiles.is_empty(),
            !self.depends_on.0.is_empty(),
            self.restart != RestartPolicy::No,
            self.max_restarts.is_some(),
            self.ready.is_some(),
            self.stop_signal.is_some(),
            self.stop_timeout.is_some(),
            self.working_dir.is_some(),
            self.env_file.is_some(),
            self.config.is_some(),
            self.logging.is_some(),
            self.watch.is_some(),
        ];
        EXTENSION_KEYS
            .iter()
            .zip(used)
            .filter_map(|(k, u)| u.then_some(*k))
            .collect()
    }
}

/// How incoming traffic reaches the local process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only requests matching `http_filter` (default: this session's `baggage` header).
    #[default]
    Split,
    /// All traffic: the target is copied and the original scaled down to zero.
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

/// What to run, as `mirrord exec` or `mirrord container` would.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// `exec` runs the command under `mirrord exec`; `container` under `mirrord container`.
    #[serde(default, rename = "type")]
    pub kind: RunType,
    /// The command and its arguments (no shell). Numbers and booleans become strings.
    #[serde(deserialize_with = "command")]
    #[schemars(schema_with = "command_schema")]
    pub command: Vec<String>,
}

/// How the command is started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunType {
    /// `mirrord exec -- <command>`.
    #[default]
    Exec,
    /// `mirrord container -- <command>`; the command is `docker|podman|nerdctl run …`.
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

/// What `command` accepts: a non-empty list of scalars.
fn command_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": generator.subschema_for::<Scalar>(),
        "minItems": 1,
    })
}

/// A YAML scalar read as a string (`1` → "1", `true` → "true"). Its schema is also that of a
/// plain `String` field: the YAML parser hands any scalar to a string as its text.
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

impl JsonSchema for Scalar {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Scalar".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["string", "number", "boolean"] })
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

/// A single string is mirrord's `;`-separated form.
impl JsonSchema for StringOrList {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "StringOrList".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "string" },
                { "type": "array", "items": generator.subschema_for::<Scalar>() },
            ]
        })
    }
}

/// mirrord's `feature.env` (lenient: unknown keys are dropped, as in mirrord).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct EnvConfig {
    /// Only these remote variables (names or patterns; a string is `;`-separated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<StringOrList>,
    /// All remote variables but these (names or patterns; a string is `;`-separated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<StringOrList>,
    /// Variables set to these values, whatever the remote has.
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    pub overrides: Option<BTreeMap<String, Scalar>>,
    /// Also load the environment of the remote process (mirrord's `load_from_process`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_from_process: Option<bool>,
    /// Variables removed from the local process's environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unset: Option<StringOrList>,
    /// mirrord's own dotenv file (see also the service-level `env_file` extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Scalar>")]
    pub env_file: Option<String>,
    /// Regex of variable names to the value they get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<BTreeMap<String, Scalar>>,
}

/// mirrord's `feature.network.incoming.http_filter` (lenient).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct HttpFilterConfig {
    /// Regex matched against `name: value` of each request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Scalar>")]
    pub header_filter: Option<String>,
    /// jq filter over the request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Scalar>")]
    pub header_filter_jq: Option<String>,
    /// Regex matched against the request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Scalar>")]
    pub path_filter: Option<String>,
    /// HTTP method (`GET`, `POST`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Scalar>")]
    pub method_filter: Option<String>,
    /// mirrord's body filter (passed through as given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_filter: Option<serde_json::Value>,
    /// Every one of these inner filters must match (passed through as given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_of: Option<Vec<serde_json::Value>>,
    /// At least one of these inner filters must match (passed through as given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any_of: Option<Vec<serde_json::Value>>,
    /// Only filter on these ports; traffic to other ports is stolen unfiltered.
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
                port_of(v.into(), de::Unexpected::Unsigned(v)).map(PortOrList::One)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortOrList, E> {
                port_of(v.into(), de::Unexpected::Signed(v)).map(PortOrList::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PortOrList, A::Error> {
                let mut out = Vec::new();
                while let Some(Port(p)) = seq.next_element()? {
                    out.push(p);
                }
                Ok(PortOrList::Many(out))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A TCP port, 1 to 65535 (0 is "any port" to the kernel, never a port to listen on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port(pub u16);

const PORT_EXPECTED: &str = "a port from 1 to 65535";

fn port_of<E: de::Error>(v: i128, unexpected: de::Unexpected) -> Result<u16, E> {
    u16::try_from(v)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| E::invalid_value(unexpected, &PORT_EXPECTED))
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(PORT_EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                port_of(v.into(), de::Unexpected::Unsigned(v)).map(Port)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                port_of(v.into(), de::Unexpected::Signed(v)).map(Port)
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl JsonSchema for Port {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Port".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "format": "uint16", "minimum": 1, "maximum": 65535 })
    }
}

/// `ignore_ports`: a list of ports (an empty `ignore_ports:` is no port).
fn port_set<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeSet<u16>, D::Error> {
    let ports = Option::<Vec<Port>>::deserialize(d)?;
    Ok(ports.into_iter().flatten().map(|p| p.0).collect())
}

fn port_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    Ok(Option::<Port>::deserialize(d)?.map(|p| p.0))
}

impl JsonSchema for PortOrList {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "PortOrList".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                generator.subschema_for::<Port>(),
                { "type": "array", "items": generator.subschema_for::<Port>() },
            ]
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Extensions

/// How a dependent waits for its dependency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The dependency has been started.
    #[default]
    Started,
    /// The dependency is ready (its `ready` rule, or mirrord's `Ready!` line).
    Ready,
    /// The dependency has exited with status 0 (a migration, a seed job).
    CompletedSuccessfully,
}

/// How this service depends on one other service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    /// What to wait for before starting the dependent.
    #[serde(default)]
    pub condition: Condition,
    /// Restart the dependent whenever the dependency is restarted.
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

/// The visitor's three forms; a map entry may be empty (`db:`), meaning the defaults.
impl JsonSchema for DependsOn {
    fn schema_name() -> Cow<'static, str> {
        "DependsOn".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Services started before this one and stopped after it: a list of service names, or a map of service names to how this one depends on them.",
            "anyOf": [
                { "type": "array", "items": generator.subschema_for::<Scalar>() },
                {
                    "type": "object",
                    "additionalProperties": generator.subschema_for::<Option<Dependency>>(),
                },
                { "type": "null" },
            ]
        })
    }
}

/// What to do when the service exits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart (an unquoted `no` is a string in YAML 1.2).
    #[default]
    No,
    /// Restart after a non-zero exit, with exponential backoff.
    OnFailure,
    /// Restart after any exit, with exponential backoff.
    Always,
}

/// When a service counts as ready. With none of `log`/`tcp`/`http`, the `Ready!` line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = at_most_one_probe)]
pub struct ReadyConfig {
    /// Ready when a line of the service's output matches this regular expression.
    #[serde(
        default,
        deserialize_with = "regex_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "regex_schema")]
    pub log: Option<String>,
    /// Ready when this local TCP port accepts connections.
    #[serde(
        default,
        deserialize_with = "port_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<Port>")]
    pub tcp: Option<u16>,
    /// Ready when a GET of this `http://` URL answers 2xx.
    #[serde(
        default,
        deserialize_with = "http_url_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "http_url_schema")]
    pub http: Option<String>,
    /// Give up waiting after this long (default 60 seconds; more than 0, at most 24 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Seconds>,
}

/// `validate` refuses two probes at once. `tcp: ~` is no probe (a plain `Option`), but
/// `log: ~` is one: its visitor reads `~` as the regex `~`.
fn at_most_one_probe(schema: &mut Schema) {
    let probes = ["log", "tcp", "http"];
    let given = |probe: &str| match probe {
        "tcp" => serde_json::json!({ "not": { "type": "null" } }),
        _ => serde_json::json!(true),
    };
    let mut pairs = Vec::new();
    for (i, a) in probes.iter().enumerate() {
        for b in &probes[i + 1..] {
            pairs.push(serde_json::json!({
                "required": [a, b],
                "properties": { *a: given(a), *b: given(b) },
            }));
        }
    }
    schema.insert(
        "not".into(),
        serde_json::json!({ "description": "at most one of `log`, `tcp` and `http`", "anyOf": pairs }),
    );
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

/// Any scalar: the parser hands the check its text (`~` included, which is a valid regex).
fn regex_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": ["string", "number", "boolean", "null"], "format": "regex" })
}

/// Only a string can start with `http://`; `null` is refused too, since the check runs on `~`.
fn http_url_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": "^http://" })
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

/// `watch`: which files restart the service, and how.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Globs of the files to watch, relative to this file's directory (`src/**/*.go`); at
    /// least one.
    #[schemars(extend("minItems" = 1))]
    pub paths: Vec<WatchGlob>,
    /// Globs of files whose changes restart nothing, relative to this file's directory.
    /// `.gitignore`d files and the state directory are always ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("default" = []))]
    pub ignore: Vec<WatchGlob>,
    /// How long the files must be quiet before the restart (default 300 ms): a `git checkout`
    /// of many files is one restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "300ms"))]
    pub debounce: Option<Seconds>,
    /// `restart`: restart the app inside its warm mirrord session; `restart-session`: a
    /// whole new `mirrord exec`.
    #[serde(default)]
    pub action: WatchAction,
}

/// The default `watch.debounce`.
pub const DEFAULT_WATCH_DEBOUNCE: Duration = Duration::from_millis(300);

impl WatchConfig {
    pub fn debounce(&self) -> Duration {
        self.debounce.map_or(DEFAULT_WATCH_DEBOUNCE, |d| d.0)
    }
}

/// What a change of a watched file does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WatchAction {
    /// Restart the app only; its mirrord session (agent, intproxy) stays.
    #[default]
    Restart,
    /// Restart the whole service: a new `mirrord exec`, a new session.
    RestartSession,
}

/// A glob (`**`, `*`, `?`, `[...]`, `{a,b}`), checked when the file is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct WatchGlob(pub String);

impl<'de> Deserialize<'de> for WatchGlob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_string(deserializer, "a glob such as `src/**/*.go`", |s| {
            if s.trim().is_empty() {
                return Err("a glob must not be empty".to_owned());
            }
            globset::Glob::new(s)
                .map(drop)
                .map_err(|e| format!("invalid glob {s:?}: {}", e.kind()))
        })
        .map(WatchGlob)
    }
}

impl JsonSchema for WatchGlob {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Glob".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "minLength": 1 })
    }
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

/// `parse_signal`'s language: any ASCII case, `SIG` optional, surrounding blanks. The usual
/// spellings are listed for completion; the pattern admits the others. Built from nix's own
/// list, so it is the platform's (the schema is generated on Linux).
impl JsonSchema for StopSignal {
    fn schema_name() -> Cow<'static, str> {
        "Signal".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = nix::sys::signal::Signal::iterator()
            .map(|s| s.as_str())
            .collect();
        let any_case = |word: &str| -> String {
            word.chars()
                .map(|c| {
                    if c.is_ascii_alphabetic() {
                        format!("[{c}{}]", c.to_ascii_lowercase())
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        };
        let bare: Vec<String> = names
            .iter()
            .map(|n| any_case(n.strip_prefix("SIG").unwrap_or(n)))
            .collect();
        let pattern = format!(r"^\s*(?:{})?(?:{})\s*$", any_case("SIG"), bare.join("|"));
        json_schema!({
            "description": "A signal name, with or without `SIG`, in any case: `SIGTERM`, `TERM`, `sigint`…",
            "anyOf": [
                { "enum": names },
                { "type": "string", "pattern": pattern },
            ]
        })
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

/// The longest duration the file accepts: 24 hours.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = "a duration from 0 to 24 h (86400 seconds): a number of seconds or a string such as `10s`";
        fn bounded<E: de::Error>(d: Option<Duration>, u: de::Unexpected) -> Result<Seconds, E> {
            d.filter(|d| *d <= MAX_DURATION)
                .map(Seconds)
                .ok_or_else(|| E::invalid_value(u, &EXPECTED))
        }
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                bounded(Some(Duration::from_secs(v)), de::Unexpected::Unsigned(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                let d = u64::try_from(v).ok().map(Duration::from_secs);
                bounded(d, de::Unexpected::Signed(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                bounded(
                    Duration::try_from_secs_f64(v).ok(),
                    de::Unexpected::Float(v),
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                let shown = super::names::excerpt(v, 64);
                bounded(parse_duration(v), de::Unexpected::Str(&shown))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// What the visitor takes: a number, or the string `parse_duration` reads.
impl JsonSchema for Seconds {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: seconds (integer or fractional), or a number with a unit `ms`, `s`, `m` or `h` such as `\"500ms\"`, `\"30s\"`, `\"2m\"`.",
            "anyOf": [
                { "type": "number", "minimum": 0, "maximum": 86400 },
                { "type": "string", "pattern": r"^\s*(?:[0-9]+\.?[0-9]*|\.[0-9]+)\s*(?:ms|s|m|h)\s*$" },
            ],
            "examples": [10, "500ms", "30s", "2m"],
        })
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
