//! A service fully resolved for launching: what it runs, its generated mirrord config, and its
//! `ConfigHash` — sha256 over the canonical JSON of exactly the parts that change the process.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::{DependsOn, ReadyConfig, RestartPolicy, RunType};

/// How a service's command is started (spec §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LauncherKind {
    /// `mirrord exec|container -f <generated mirrord.json> -- <command>`.
    Mirrord,
    /// The command itself, with `env.override` applied; nothing else of the mirrord config.
    Local,
}

impl LauncherKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LauncherKind::Mirrord => "mirrord",
            LauncherKind::Local => "local",
        }
    }
}

/// sha256 (hex) of a service's canonical spec. Shared, not copied: every pass hands each
/// recorded hash to its observation and its plan (two copies per service, 64 bytes each, were
/// a thousand allocations per pass at 500 services).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigHash(std::sync::Arc<str>);

/// Written as its text, as a `String` is.
impl Serialize for ConfigHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ConfigHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ConfigHash, D::Error> {
        String::deserialize(d).map(|text| ConfigHash(text.into()))
    }
}

impl ConfigHash {
    pub fn of(canonical: &Value) -> ConfigHash {
        // serde_json maps are sorted (no `preserve_order`), so this text is canonical.
        ConfigHash::of_text(&serde_json::to_string(canonical).expect("JSON values serialize"))
    }

    fn of_text(text: &str) -> ConfigHash {
        let digest = Sha256::digest(text.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        ConfigHash(hex.into())
    }

    pub fn short(&self) -> &str {
        &self.0[..12.min(self.0.len())]
    }
}

impl fmt::Display for ConfigHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One service, ready to launch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub launcher: LauncherKind,
    /// Shared, not copied: a record, the pass's `before` and the plan's steps all clone specs,
    /// and this tree is most of a spec's size.
    #[serde(with = "shared_value")]
    pub mirrord_config: std::sync::Arc<Value>,
    pub run_type: RunType,
    pub command: Vec<String>,
    pub working_dir: PathBuf,
    // Behaviour of the supervisor, not of the process: outside the hash, so that editing a
    // restart policy or a timeout does not restart anything.
    pub level: usize,
    pub depends_on: DependsOn,
    pub restart: RestartPolicy,
    pub max_restarts: Option<u32>,
    pub ready: Option<ReadyConfig>,
    pub stop_signal: String,
    pub stop_timeout_ms: u64,
    /// Size limit and rotated files of the service's log (`logging`).
    #[serde(default)]
    pub logging: crate::logrotate::Limits,
    /// `watch:` (issue #16). Outside the hash but for `runner_canonical`: editing the globs
    /// or the debounce restarts nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<crate::watch::WatchSpec>,
}

/// (De)serializes an `Arc<Value>` as the value itself.
mod shared_value {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(v: &Arc<Value>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Value>, D::Error> {
        Value::deserialize(d).map(Arc::new)
    }
}

pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl ServiceSpec {
    /// A service that runs `command` in `working_dir` with every other setting at its
    /// default: no mirrord config of its own, level 0, no dependency, no restart, SIGTERM then
    /// [`DEFAULT_STOP_TIMEOUT`] (a `ci start` session; the tests' specs start from it).
    pub fn plain(
        name: impl Into<String>,
        launcher: LauncherKind,
        command: Vec<String>,
        working_dir: impl Into<PathBuf>,
    ) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            launcher,
            mirrord_config: Value::Null.into(),
            run_type: RunType::Exec,
            command,
            working_dir: working_dir.into(),
            level: 0,
            depends_on: DependsOn::default(),
            restart: RestartPolicy::default(),
            max_restarts: None,
            ready: None,
            stop_signal: "SIGTERM".into(),
            stop_timeout_ms: DEFAULT_STOP_TIMEOUT.as_millis() as u64,
            logging: Default::default(),
            watch: None,
        }
    }

    /// The hashed part: generated mirrord config (which holds `env_file` and `config` contents),
    /// the command, its working directory and the launcher.
    pub fn canonical(&self) -> Value {
        let mut v = json!({
            "launcher": self.launcher.as_str(),
            "mirrord": &*self.mirrord_config,
            "run": { "type": self.run_type.as_str(), "command": self.command },
            "working_dir": self.working_dir,
        });
        // A service whose app runs under the in-session runner is a different process tree.
        if let Some(runner) = crate::watch::runner_canonical(self) {
            v["runner"] = runner;
        }
        v
    }

    /// The hash of [`Self::canonical`]. A spec equal to one hashed before by this process
    /// (the same service, unchanged since: its mirrord config the very same shared tree, or
    /// an equal one) is not serialized and hashed again ([`hash_memo`]).
    pub fn hash(&self) -> ConfigHash {
        if let Some(hash) = hash_memo::get(self) {
            return hash;
        }
        let hash = self.hash_uncached();
        hash_memo::put(self, &hash);
        hash
    }

    /// [`Self::hash`], computed: the canonical text written out without building that tree
    /// (no copy of the mirrord config), the same text since these fields are in the sorted
    /// order a `Value` map has.
    pub fn hash_uncached(&self) -> ConfigHash {
        #[derive(Serialize)]
        struct Run<'a> {
            command: &'a [String],
            #[serde(rename = "type")]
            kind: &'a str,
        }
        #[derive(Serialize)]
        struct Canonical<'a> {
            launcher: &'a str,
            mirrord: &'a Value,
            run: Run<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            runner: Option<Value>,
            working_dir: &'a std::path::Path,
        }
        let text = serde_json::to_string(&Canonical {
            launcher: self.launcher.as_str(),
            mirrord: &self.mirrord_config,
            run: Run {
                command: &self.command,
                kind: self.run_type.as_str(),
            },
            runner: crate::watch::runner_canonical(self),
            working_dir: &self.working_dir,
        })
        .expect("specs serialize");
        ConfigHash::of_text(&text)
    }

    /// Environment overrides the `local` launcher applies (`feature.env.override`).
    pub fn env_overrides(&self) -> BTreeMap<String, String> {
        self.mirrord_config
            .pointer("/feature/env/override")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn stop_timeout(&self) -> Duration {
        Duration::from_millis(self.stop_timeout_ms)
    }
}

/// The hash of the spec each service name had the last time it was hashed. A spec is a
/// plain value and its hash a function of it, so an equal spec has that hash; comparing is
/// far cheaper than serializing (the mirrord configs of a service unchanged since are the
/// same `Arc`, compared by address first). The plan hashes every desired service each pass.
mod hash_memo {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::{ConfigHash, ServiceSpec};

    static HASHED: Mutex<Option<HashMap<String, (ServiceSpec, ConfigHash)>>> = Mutex::new(None);
    /// More names than a file holds: forget them all (tests hash many projects' specs).
    const KEPT: usize = 4096;

    pub(super) fn get(spec: &ServiceSpec) -> Option<ConfigHash> {
        let hashed = HASHED.lock().ok()?;
        let (seen, hash) = hashed.as_ref()?.get(&spec.name)?;
        (seen == spec).then(|| hash.clone())
    }

    pub(super) fn put(spec: &ServiceSpec, hash: &ConfigHash) {
        let Ok(mut hashed) = HASHED.lock() else {
            return;
        };
        let hashed = hashed.get_or_insert_with(HashMap::new);
        if hashed.len() >= KEPT {
            hashed.clear();
        }
        hashed.insert(spec.name.clone(), (spec.clone(), hash.clone()));
    }
}

/// Field paths that differ between two canonical specs, in the user's terms
/// (`env.override.FOO`, `run.command`, `target.path`).
pub fn changed_fields(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff(old, new, String::new(), &mut out);
    out.into_iter().map(|p| display_path(&p)).collect()
}

fn diff(old: &Value, new: &Value, path: String, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff(x, y, p, out),
                    _ => out.push(p),
                }
            }
        }
        (a, b) if a != b => out.push(path),
        _ => {}
    }
}

fn display_path(p: &str) -> String {
    for prefix in [
        "mirrord.feature.network.incoming.",
        "mirrord.feature.",
        "mirrord.",
    ] {
        if let Some(rest) = p.strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
    p.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hash is written as the hex text it was (a state file's `config_hash` is a string), and
    /// read back equal; a copy is the same text, not another.
    #[test]
    fn a_hash_is_its_hex_text_in_json_and_copies_share_it() {
        let hash = ConfigHash::of(&json!({"a": 1}));
        let text = serde_json::to_string(&hash).unwrap();
        assert_eq!(text, format!("\"{hash}\""));
        assert_eq!(hash.to_string().len(), 64);
        assert!(hash.to_string().bytes().all(|b| b.is_ascii_hexdigit()));
        let back: ConfigHash = serde_json::from_str(&text).unwrap();
        assert_eq!(back, hash);
        let copy = hash.clone();
        assert!(std::sync::Arc::ptr_eq(&copy.0, &hash.0));
    }

    /// `yaml` written as `mirrord-up.yaml` in `dir`, resolved for the local launcher.
    fn resolve_local(dir: &std::path::Path, yaml: &str) -> crate::desired::Desired {
        let file = dir.join("mirrord-up.yaml");
        std::fs::write(&file, yaml).unwrap();
        let doc = crate::config::UpDocument::load(&file, Some("alice")).unwrap();
        let opts = crate::desired::ResolveOptions {
            selection: &[],
            mode: None,
            context: None,
            launcher: LauncherKind::Local,
            inference: None,
        };
        crate::desired::resolve(&doc, opts).unwrap()
    }

    #[test]
    fn field_paths_use_yaml_terms() {
        let a = json!({"mirrord": {"feature": {"env": {"override": {"FOO": "1"}}, "network": {"incoming": {"mode": "steal"}}}}, "run": {"command": ["a"]}});
        let b = json!({"mirrord": {"feature": {"env": {"override": {"FOO": "2", "BAR": "x"}}, "network": {"incoming": {"mode": "steal", "ignore_ports": [1]}}}}, "run": {"command": ["b"]}});
        assert_eq!(
            changed_fields(&a, &b),
            vec![
                "env.override.BAR",
                "env.override.FOO",
                "ignore_ports",
                "run.command"
            ]
        );
    }

    /// `hash` writes the canonical text itself: it must be the text of `canonical()` (the
    /// hashes recorded in state files stay valid), with and without the watch runner.
    #[test]
    fn hash_is_the_hash_of_the_canonical_tree() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = r#"
services:
  a:
    target: {path: deployment/a, namespace: ns}
    env: {override: {FOO: "1", BAR: "x y"}}
    run: {command: ["./a", "--flag", "é"]}
  b:
    run: {command: ["sleep", "5"]}
    working_dir: sub
    stop_signal: SIGINT
    watch: {paths: ["src/**"], action: restart}
  c:
    run: {type: container, command: ["docker", "run", "x"]}
    watch: {paths: ["src/**"], action: restart-session}
"#;
        let desired = resolve_local(dir.path(), yaml);
        assert_eq!(desired.services.len(), 3);
        for s in &desired.services {
            assert_eq!(
                s.hash_uncached(),
                ConfigHash::of(&s.canonical()),
                "{}",
                s.name
            );
        }
        assert!(
            desired
                .services
                .iter()
                .any(|s| s.canonical().get("runner").is_some()),
            "one service runs under the watch runner"
        );
    }

    /// The memo of `hash` never hides a change: every field of the canonical text edited,
    /// one at a time, after the spec was hashed, gives the computed hash.
    #[test]
    fn a_remembered_hash_follows_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let spec = resolve_local(
            dir.path(),
            "services:\n  memo-a:\n    run: {command: [x]}\n    watch: {paths: [src], action: restart}\n",
        )
        .services[0]
            .clone();
        type Edit = fn(&mut ServiceSpec);
        let edits: [(&str, Edit); 8] = [
            ("command", |s| s.command.push("y".into())),
            ("working_dir", |s| s.working_dir.push("sub")),
            ("launcher", |s| s.launcher = LauncherKind::Mirrord),
            ("run_type", |s| {
                s.run_type = crate::config::RunType::Container
            }),
            ("stop_signal (runner)", |s| s.stop_signal = "SIGINT".into()),
            ("stop_timeout (runner)", |s| s.stop_timeout_ms += 1),
            ("watch (runner)", |s| s.watch = None),
            ("mirrord config", |s| {
                let mut c = (*s.mirrord_config).clone();
                c["key"] = "bob".into();
                s.mirrord_config = c.into();
            }),
        ];
        for (what, edit) in edits {
            assert_eq!(spec.hash(), spec.hash_uncached());
            let mut edited = (*spec).clone();
            edit(&mut edited);
            assert_ne!(edited.hash_uncached(), spec.hash_uncached(), "{what}");
            assert_eq!(edited.hash(), edited.hash_uncached(), "{what}");
            // And back.
            assert_eq!(spec.hash(), spec.hash_uncached(), "{what}");
        }
    }

    #[test]
    fn hash_is_order_independent() {
        let a: Value = serde_json::from_str(r#"{"a": 1, "b": {"c": 2, "d": 3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b": {"d": 3, "c": 2}, "a": 1}"#).unwrap();
        assert_eq!(ConfigHash::of(&a), ConfigHash::of(&b));
        assert_eq!(ConfigHash::of(&a).0.len(), 64);
    }
}
