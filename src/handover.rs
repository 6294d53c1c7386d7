//! How a service's configuration and environment reach `mirrord exec|container`, the way real
//! `mirrord up` hands them over (runtime.md §3.3, compat §2.5/§3.1).
//!
//! * Environment: variables of the invoking shell that change mirrord's *configuration*
//!   ([`CONFIG_VARS`], runtime.md §3.1 table (a)) are removed, so nothing in the shell silently
//!   changes what a service does; variables that change only *behaviour* ([`BEHAVIOUR_VARS`],
//!   §3.2 table (b): `MIRRORD_CI_API_KEY`, `MIRRORD_CHECK_VERSION`, `MIRRORD_LOG`, …) pass
//!   through. Unknown `MIRRORD_*` names are removed too: a newer mirrord mostly adds
//!   configuration variables, and a removed variable fails loudly while a leaked one silently
//!   changes a session. `MIRRORD_RESOLVED_CONFIG` (it makes every child refuse to run) and our
//!   own `MIRRORD_UP_*` names are never inherited.
//! * Configuration: for a mirrord whose `--version` is one we verified ([`VERIFIED_VERSIONS`]),
//!   the child gets `MIRRORD_UP_RESOLVED_CONFIG` = standard base64 of the full LayerConfig JSON
//!   of that version, `MIRRORD_PROGRESS_MODE=simple` and one `MIRRORD_UP_CORRELATION_ID` per run,
//!   and no `-f`. The LayerConfig comes from `mirrord verify-config --resolved` run on the
//!   generated `mirrord.json` in an environment without configuration variables, then adjusted
//!   to what real `up` builds (see [`adjust`]); it is cached next to the `mirrord.json`, keyed by
//!   the binary's identity and the input. Any other version falls back to
//!   `exec -f mirrord.json` with `MIRRORD_CLI_STRICT_ENV=true`, and says once what is lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Runtime.md §3.1 table (a): variables that change the resolved LayerConfig. Never inherited.
pub const CONFIG_VARS: &[&str] = &[
    "MIRRORD_CONFIG_FILE",
    "MIRRORD_KEY",
    "MIRRORD_BRANCH_NAME",
    "MIRRORD_ACCEPT_INVALID_CERTIFICATES",
    "MIRRORD_OPERATOR_ENABLE",
    "MIRRORD_MULTI_CLUSTER",
    "MIRRORD_API",
    "MIRRORD_KUBECONFIG",
    "MIRRORD_KUBE_CONTEXT",
    "MIRRORD_TELEMETRY",
    "MIRRORD_PROXY",
    "MIRRORD_SKIP_PROCESSES",
    "MIRRORD_SKIP_BUILD_TOOLS",
    "MIRRORD_SKIP_EXTRA_BUILD_TOOLS",
    "MIRRORD_SKIP_SIP",
    "MIRRORD_IMPERSONATED_TARGET",
    "MIRRORD_TARGET_NAMESPACE",
    "MIRRORD_AGENT_RUST_LOG",
    "MIRRORD_AGENT_JSON_LOG",
    "MIRRORD_AGENT_NAMESPACE",
    "MIRRORD_AGENT_IMAGE_PULL_POLICY",
    "MIRRORD_AGENT_TTL",
    "MIRRORD_AGENT_COMMUNICATION_TIMEOUT",
    "MIRRORD_AGENT_STARTUP_TIMEOUT",
    "MIRRORD_AGENT_STEALER_FLUSH_CONNECTIONS",
    "MIRRORD_AGENT_EXTERNAL_IP_FIX",
    "MIRRORD_AGENT_EXCLUDE_FROM_MESH",
    "MIRRORD_AGENT_HTTP_DETECTION_TIMEOUT",
    "MIRRORD_AGENT_CLEAN_IPTABLES_ON_START",
    "MIRRORD_AGENT_TEST_ERROR",
    "MIRRORD_EPHEMERAL_CONTAINER",
    "MIRRORD_AGENT_IMAGE",
    "MIRRORD_AGENT_IMAGE_REGISTRY",
    "MIRRORD_AGENT_IMAGE_TAG",
    "MIRRORD_OVERRIDE_ENV_VARS_INCLUDE",
    "MIRRORD_OVERRIDE_ENV_VARS_EXCLUDE",
    "MIRRORD_OVERRIDE_ENV_VARS_FILE",
    "MIRRORD_ENV_LOAD_FROM_PROCESS",
    "MIRRORD_FILE_MODE",
    "MIRRORD_FILE_OPS",
    "MIRRORD_FILE_RO_OPS",
    "MIRRORD_FILE_READ_WRITE_PATTERN",
    "MIRRORD_FILE_READ_ONLY_PATTERN",
    "MIRRORD_FILE_LOCAL_PATTERN",
    "MIRRORD_AGENT_TCP_STEAL_TRAFFIC",
    "MIRRORD_OPERATOR_ON_CONCURRENT_STEAL",
    "MIRRORD_HTTP_HEADER_FILTER",
    "MIRRORD_HTTP_PATH_FILTER",
    "MIRRORD_HTTP_METHOD_FILTER",
    "MIRRORD_HTTP_HEADER_FILTER_JQ",
    "MIRRORD_HTTP_FILTER_PORTS",
    "MIRRORD_TCP_OUTGOING",
    "MIRRORD_UDP_OUTGOING",
    "MIRRORD_OUTGOING_REMOTE_UNIX_STREAMS",
    "MIRRORD_REMOTE_DNS",
    "MIRRORD_ENABLE_IPV6",
    "MIRRORD_PREVIEW_IMAGE",
    "MIRRORD_PREVIEW_TTL_MINS",
    "MIRRORD_PREVIEW_TTL_SECS",
    "MIRRORD_PREVIEW_CREATION_TIMEOUT_SECS",
    "MIRRORD_PREVIEW_REPLICAS",
    "MIRRORD_PREVIEW_START_IDLE",
    "MIRRORD_PREVIEW_IDLE_SLEEP_AFTER_SECS",
    "MIRRORD_PREVIEW_IDLE_WAKE_TIMEOUT_SECS",
    "MIRRORD_UP_RESOLVED_CONFIG",
];

/// Runtime.md §3.2 table (b): variables that change behaviour, not configuration. Inherited.
/// (`MIRRORD_PROGRESS_MODE` is then set to `simple` for every service.)
pub const BEHAVIOUR_VARS: &[&str] = &[
    "MIRRORD_PROGRESS_MODE",
    "MIRRORD_PROGRESS_SUPPORT_IDE",
    "MIRRORD_IDE_NAME",
    "MIRRORD_CHECK_VERSION",
    "MIRRORD_CI_API_KEY",
    "MIRRORD_LOG",
    "MIRRORD_FORCE_LOG",
    "MIRRORD_CONSOLE_ADDR",
    "MIRRORD_CLI_STRICT_ENV",
    "MIRRORD_CLI_STRICT_ENV_ALLOWLIST",
    "MIRRORD_LS_RICH_OUTPUT",
    "MIRRORD_LS_TARGET_TYPES",
    "MIRRORD_LAYER_FILE",
    "MIRRORD_LAYER_LOG_PATH",
    "MIRRORD_TEST_INTPROXY_ADDR",
    "MIRRORD_CONTAINER_USE_RUNTIME",
];

/// Whether an inherited variable reaches a service (see the module docs): everything that is
/// not `MIRRORD_*`, and the `MIRRORD_*` names of [`BEHAVIOUR_VARS`].
pub fn inherited(name: &[u8]) -> bool {
    !name.starts_with(b"MIRRORD_") || BEHAVIOUR_VARS.iter().any(|v| v.as_bytes() == name)
}

/// mirrord versions whose LayerConfig hand-over was checked against real `mirrord up`.
pub const VERIFIED_VERSIONS: &[&str] = &["3.250.0"];

/// What the fallback loses, said once per run.
pub const FALLBACK_NOTICE: &str = "handing services their config with `mirrord exec -f` (MIRRORD_CLI_STRICT_ENV=true): automatic queue splitting is off and mirrord renders each mirrord.json as a template again";

/// Name of the cache of the encoded configuration, next to `mirrord.json`.
pub const CACHE_FILE: &str = "resolved-config.json";

/// Changes when [`adjust`] changes, so old caches are not reused.
const ADJUST_VERSION: u32 = 1;

/// How the configuration reaches the child.
#[derive(Debug, Clone, PartialEq)]
pub enum Handover {
    /// `MIRRORD_UP_RESOLVED_CONFIG=<encoded>`, no `-f`.
    Resolved { encoded: String },
    /// `-f mirrord.json` with `MIRRORD_CLI_STRICT_ENV=true`; the version that was found.
    File { version: Option<String> },
}

/// Whether `-k`/`--key` (or `MIRRORD_UP_KEY`) named the key: real `up` marks it `Provided`,
/// otherwise `Generated` (from the OS user name).
static KEY_PROVIDED: OnceLock<bool> = OnceLock::new();

pub fn set_key_provided(provided: bool) {
    let _ = KEY_PROVIDED.set(provided);
}

/// One UUID v4 per run of this process, as real `up` gives every child.
pub fn correlation_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let mut b = [0u8; 16];
        if getrandom::fill(&mut b).is_err() {
            // No entropy source: an id from the clock and pid is still unique enough for
            // grouping analytics events.
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
                ^ u128::from(std::process::id());
            b = seed.to_le_bytes();
        }
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    })
}

/// [`FALLBACK_NOTICE`] with the version found, the first time it is asked for in this process
/// (the caller shows it; `None` afterwards).
pub fn fallback_notice(version: Option<&str>) -> Option<String> {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let found = version.map_or_else(|| "of unknown version".to_owned(), |v| v.to_owned());
    Some(format!(
        "mirrord {found} is not a version whose config hand-over was verified ({}); {FALLBACK_NOTICE}",
        VERIFIED_VERSIONS.join(", ")
    ))
}

/// `(identity, version)` of a mirrord binary, remembered per identity.
fn version_of(bin: &Path) -> Result<(String, Option<String>), String> {
    static SEEN: OnceLock<Mutex<BTreeMap<String, Option<String>>>> = OnceLock::new();
    let identity = identity(bin)?;
    let seen = SEEN.get_or_init(Default::default);
    if let Some(v) = seen.lock().expect("not poisoned").get(&identity) {
        return Ok((identity, v.clone()));
    }
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("--version")
        .env_clear()
        .envs(std::env::vars_os().filter(|(k, _)| inherited(k.as_encoded_bytes())));
    let out =
        captured(cmd).map_err(|e| format!("cannot run `{} --version`: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // `mirrord 3.250.0` (the fake: `mirrord 3.250.0 (fake)`).
    let version = text
        .split_whitespace()
        .nth(1)
        .filter(|_| text.starts_with("mirrord "))
        .map(str::to_owned);
    seen.lock()
        .expect("not poisoned")
        .insert(identity.clone(), version.clone());
    Ok((identity, version))
}

/// Standard output and error of a short command. Its exit status is not used (the output says
/// everything): in the supervisor a concurrent `reap_children` may collect it first, which makes
/// `Command::output` fail with ECHILD.
struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

fn captured(mut cmd: std::process::Command) -> std::io::Result<Captured> {
    use std::io::Read;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut err_pipe = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_end(&mut stdout)?;
    let stderr = err_reader.join().unwrap_or_default();
    // Reaped here, or already by the supervisor's reaper (ECHILD): either is fine.
    let _ = child.wait();
    Ok(Captured { stdout, stderr })
}

/// What identifies one build of the binary without running it: path, size, mtime, inode.
fn identity(bin: &Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let path = std::fs::canonicalize(bin).unwrap_or_else(|_| bin.to_owned());
    let m = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(format!(
        "{}:{}:{}.{}:{}",
        path.display(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ino()
    ))
}

/// Decides how `config` (already written to `config_path`) reaches the child, preparing the
/// encoded form when the hand-over applies.
pub fn prepare(bin: &Path, config_path: &Path, config: &Value) -> Result<Handover, String> {
    let (identity, version) = version_of(bin)?;
    if !version
        .as_deref()
        .is_some_and(|v| VERIFIED_VERSIONS.contains(&v))
    {
        return Ok(Handover::File { version });
    }
    let provided = KEY_PROVIDED.get().copied().unwrap_or(false);
    let input = {
        let text = serde_json::to_string(&json!({
            "adjust": ADJUST_VERSION,
            "config": config,
            "provided": provided,
        }))
        .expect("JSON");
        let d = Sha256::digest(text.as_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let dir = config_path.parent().unwrap_or(Path::new("."));
    let cache_path = dir.join(CACHE_FILE);
    if let Some(encoded) = read_cache(&cache_path, &identity, &input) {
        return Ok(Handover::Resolved { encoded });
    }
    let (resolved, undo) = resolve(bin, dir, config)?;
    let resolved = adjust(resolved, undo, config, provided);
    let text = serde_json::to_string(&resolved).expect("JSON");
    let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    let cache = json!({"bin": identity, "input": input, "encoded": encoded});
    // A cache that cannot be written only costs time on the next start.
    let _ = crate::state::write_private_unsynced(
        &cache_path,
        serde_json::to_string(&cache).expect("JSON").as_bytes(),
    );
    Ok(Handover::Resolved { encoded })
}

fn read_cache(path: &Path, identity: &str, input: &str) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let v: Value = serde_json::from_slice(&text).ok()?;
    (v["bin"] == identity && v["input"] == input)
        .then(|| v["encoded"].as_str().map(str::to_owned))
        .flatten()
}

/// The input for `verify-config`, and what [`adjust`] must undo afterwards.
struct Prepared {
    input: Value,
    placeholder_target: bool,
    magic_forced: Vec<&'static str>,
}

/// What was changed in the input so that `verify-config` resolves it as `up` does.
struct Undo {
    placeholder_target: bool,
    magic_forced: Vec<&'static str>,
}

/// A placeholder target path: `verify-config` refuses `steal` without a target (IDE rules),
/// while `exec` accepts it; the path is removed again afterwards.
const PLACEHOLDER_TARGET: &str = "pod/mirrord-up-placeholder";

/// The magic features `verify-config` applies (e.g. the `~/.aws` mapping) and real `up` does
/// not: forced off for resolution, set back to their default afterwards.
const MAGIC: &[&str] = &["aws", "turbo", "auto_mount"];

fn prepare_input(config: &Value) -> Prepared {
    let mut input = config.clone();
    let obj = input
        .as_object_mut()
        .expect("a mirrord config is an object");
    let target = obj
        .entry("target")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .map(|t| {
            // No path, or the `targetless` path: both are targetless for `exec`.
            let missing = t
                .get("path")
                .is_none_or(|p| p.is_null() || p.as_str() == Some("targetless"));
            if missing {
                t.insert("path".into(), Value::String(PLACEHOLDER_TARGET.into()));
            }
            missing
        });
    let placeholder_target = target.unwrap_or(false);
    let magic = obj
        .entry("feature")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .map(|f| f.entry("magic").or_insert_with(|| json!({})));
    let mut magic_forced = Vec::new();
    if let Some(Value::Object(m)) = magic {
        for name in MAGIC {
            if !m.contains_key(*name) {
                m.insert((*name).into(), Value::Bool(false));
                magic_forced.push(*name);
            }
        }
    }
    Prepared {
        input,
        placeholder_target,
        magic_forced,
    }
}

/// `mirrord verify-config --resolved` on the prepared input, in an environment without any
/// configuration variable and without the version check; its `resolved_config`.
fn resolve(bin: &Path, dir: &Path, config: &Value) -> Result<(Value, Undo), String> {
    let prepared = prepare_input(config);
    let input_path = dir.join("mirrord.verify.json");
    crate::state::write_private_unsynced(
        &input_path,
        serde_json::to_string_pretty(&prepared.input)
            .expect("JSON")
            .as_bytes(),
    )
    .map_err(|e| format!("cannot write {}: {e}", input_path.display()))?;
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("verify-config")
        .arg("--resolved")
        .arg(&input_path)
        .env_clear()
        .envs(std::env::vars_os().filter(|(k, _)| !k.as_encoded_bytes().starts_with(b"MIRRORD_")))
        .env("MIRRORD_CHECK_VERSION", "false");
    let out =
        captured(cmd).map_err(|e| format!("cannot run `{} verify-config`: {e}", bin.display()));
    let _ = std::fs::remove_file(&input_path);
    let out = out?;
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "`{} verify-config --resolved` did not print JSON ({e}): {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    match v.get("resolved_config") {
        Some(resolved) if v["type"] == "Success" => Ok((
            resolved.clone(),
            Undo {
                placeholder_target: prepared.placeholder_target,
                magic_forced: prepared.magic_forced,
            },
        )),
        _ => {
            let errors = match &v["errors"] {
                Value::Array(e) => e
                    .iter()
                    .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join("; "),
                _ => v.to_string(),
            };
            Err(format!("mirrord refused the generated config: {errors}"))
        }
    }
}

/// Turns `verify-config`'s LayerConfig into the one real `up` hands over: without the
/// placeholder target, magic at its (unapplied) defaults, and the key marked as real `up`
/// marks it (`Provided` for `--key`, else `Generated`).
fn adjust(mut resolved: Value, undo: Undo, config: &Value, provided: bool) -> Value {
    if undo.placeholder_target
        && let Some(t) = resolved.get_mut("target").and_then(Value::as_object_mut)
    {
        t.remove("path");
    }
    if let Some(m) = resolved
        .pointer_mut("/feature/magic")
        .and_then(Value::as_object_mut)
    {
        for name in undo.magic_forced {
            m.insert(name.into(), Value::Bool(true));
        }
    }
    if let Some(key) = config.get("key").and_then(Value::as_str) {
        let kind = if provided { "Provided" } else { "Generated" };
        resolved["key"] = json!({ kind: key });
    }
    resolved
}

/// The encoded configuration decoded again (for tests and `--verbose` inspection).
pub fn decode(encoded: &str) -> Option<Value> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Where the encoded config of a service is cached.
pub fn cache_path(service_dir: &Path) -> PathBuf {
    service_dir.join(CACHE_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_lists_do_not_overlap_and_decide_inheritance() {
        for v in CONFIG_VARS {
            assert!(!BEHAVIOUR_VARS.contains(v), "{v} in both lists");
            assert!(!inherited(v.as_bytes()), "{v} must not be inherited");
        }
        for v in BEHAVIOUR_VARS {
            assert!(inherited(v.as_bytes()), "{v} must be inherited");
        }
        for v in [
            "MIRRORD_RESOLVED_CONFIG",
            "MIRRORD_UP_CORRELATION_ID",
            "MIRRORD_SOMETHING_NEW",
        ] {
            assert!(!inherited(v.as_bytes()), "{v}");
        }
        assert!(inherited(b"PATH"));
        assert!(inherited(b"KUBECONFIG"));
    }

    #[test]
    fn correlation_id_is_one_uuid_v4_per_run() {
        let id = correlation_id();
        assert_eq!(id, correlation_id());
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
    }

    #[test]
    fn placeholder_and_magic_are_undone() {
        let config = json!({"key": "alice", "feature": {"magic": {"aws": true}}});
        let p = prepare_input(&config);
        assert_eq!(p.input["target"]["path"], PLACEHOLDER_TARGET);
        assert_eq!(p.input["feature"]["magic"]["aws"], true);
        assert_eq!(p.input["feature"]["magic"]["turbo"], false);
        let undo = Undo {
            placeholder_target: p.placeholder_target,
            magic_forced: p.magic_forced,
        };
        let resolved = json!({
            "key": "alice",
            "target": {"path": {"pod": "mirrord-up-placeholder", "container": null}},
            "feature": {"magic": {"aws": true, "turbo": false, "auto_mount": false}},
        });
        let out = adjust(resolved, undo, &config, false);
        assert_eq!(
            out,
            json!({
                "key": {"Generated": "alice"},
                "target": {},
                "feature": {"magic": {"aws": true, "turbo": true, "auto_mount": true}},
            })
        );
    }
}
