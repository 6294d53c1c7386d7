//! The desired state: the selected services of a loaded file, resolved into `ServiceSpec`s
//! (selection, `--mode`, kube context precedence, target inference, generated config).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::{ConfigError, Mode, ServiceConfig, TargetConfig, TargetPath, UpDocument};
use crate::generate::{self, ResolvedTarget};
use crate::spec::{DEFAULT_STOP_TIMEOUT, LauncherKind, ServiceSpec};

/// The services `up` should run, in start order.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub services: Vec<ServiceSpec>,
    /// Messages for the user (e.g. an `http_filter` ignored in replace mode).
    pub warnings: Vec<String>,
    /// True when the user named services: services outside the selection are left alone.
    pub partial: bool,
}

impl Desired {
    pub fn get(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }
}

pub struct ResolveOptions<'a> {
    pub selection: &'a [String],
    pub mode: Option<Mode>,
    pub context: Option<&'a str>,
    pub launcher: LauncherKind,
    /// Asked for targets that the file leaves to inference; `None` with the `local` launcher.
    pub inference: Option<&'a mut TargetInference>,
}

/// Names to run: the named services (naming one overrides its `skip`) or every non-skipped
/// one, plus their non-skipped dependencies.
pub fn select(doc: &UpDocument, selection: &[String]) -> Result<Vec<String>, ConfigError> {
    let services = &doc.file.services.0;
    let mut picked: BTreeSet<String> = if selection.is_empty() {
        let all: BTreeSet<String> = services
            .iter()
            .filter(|(_, s)| !s.skip)
            .map(|(n, _)| n.clone())
            .collect();
        if all.is_empty() {
            return Err(ConfigError::AllSkipped {
                path: doc.path.clone(),
            });
        }
        all
    } else {
        let unknown: Vec<String> = selection
            .iter()
            .filter(|n| !services.contains_key(*n))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(ConfigError::UnknownServices {
                path: doc.path.clone(),
                unknown,
                available: doc.names(),
            });
        }
        selection.iter().cloned().collect()
    };
    let mut queue: Vec<String> = picked.iter().cloned().collect();
    while let Some(n) = queue.pop() {
        for dep in services[&n].depends_on.0.keys() {
            if !services[dep].skip && picked.insert(dep.clone()) {
                queue.push(dep.clone());
            }
        }
    }
    Ok(picked.into_iter().collect())
}

pub fn resolve(doc: &UpDocument, opts: ResolveOptions) -> Result<Desired, ConfigError> {
    let names = select(doc, opts.selection)?;
    let services = &doc.file.services.0;
    let levels = crate::graph::levels(services, &names);
    let mut inference = opts.inference;
    let mut warnings = Vec::new();
    let mut incompatible = Vec::new();
    let mut out = Vec::new();
    for name in crate::graph::start_order(&levels) {
        let svc = &services[&name];
        let mode = opts.mode.unwrap_or(svc.default_mode);
        let context =
            opts.context
                .or(svc.context.as_deref())
                .or(doc.file.common.context.as_deref());
        let target = match (&svc.target, inference.as_deref_mut()) {
            (TargetConfig::None, _) => ResolvedTarget::Targetless,
            (t, _) if t.path().is_some() => ResolvedTarget::Path {
                path: t.path().cloned().expect("checked"),
                namespace: t.namespace().map(str::to_owned),
            },
            (t, Some(inf)) => {
                let path = inf
                    .infer(&name, t.namespace(), context)
                    .map_err(|message| ConfigError::Inference {
                        path: doc.path.clone(),
                        service: name.clone(),
                        message,
                    })?;
                ResolvedTarget::Path {
                    path,
                    namespace: t.namespace().map(str::to_owned),
                }
            }
            (t, None) => ResolvedTarget::Unresolved {
                namespace: t.namespace().map(str::to_owned),
            },
        };
        if mode == Mode::Replace
            && let Some(kind) = replace_incompatible(&target)
        {
            incompatible.push(format!("`{name}` is `replace` mode with a {kind} target"));
        }
        let (mirrord_config, w) = generate::mirrord_config(&generate::Inputs {
            name: &name,
            service: svc,
            common: &doc.file.common,
            key: &doc.key,
            context,
            mode,
            target: &target,
            env_file: doc.env_files.get(&name),
            base: doc.base_configs.get(&name),
        });
        warnings.extend(w);
        out.push(spec_of(
            doc,
            &name,
            svc,
            levels[&name],
            opts.launcher,
            mirrord_config,
        ));
    }
    if !incompatible.is_empty() {
        return Err(ConfigError::IncompatibleTargets {
            path: doc.path.clone(),
            details: incompatible,
        });
    }
    Ok(Desired {
        services: out,
        warnings,
        partial: !opts.selection.is_empty(),
    })
}

fn spec_of(
    doc: &UpDocument,
    name: &str,
    svc: &ServiceConfig,
    level: usize,
    launcher: LauncherKind,
    mirrord_config: serde_json::Value,
) -> ServiceSpec {
    let working_dir = match &svc.working_dir {
        Some(wd) => normalize(&doc.dir.join(wd)),
        None => doc.dir.clone(),
    };
    ServiceSpec {
        name: name.to_owned(),
        launcher,
        mirrord_config,
        run_type: svc.run.kind,
        command: svc.run.command.clone(),
        working_dir,
        level,
        depends_on: svc.depends_on.clone(),
        restart: svc.restart,
        max_restarts: svc.max_restarts,
        ready: svc.ready.clone(),
        stop_signal: svc
            .stop_signal
            .map(|s| s.0.as_str().to_owned())
            .unwrap_or_else(|| "SIGTERM".into()),
        stop_timeout_ms: svc
            .stop_timeout
            .map(|s| s.0)
            .unwrap_or(DEFAULT_STOP_TIMEOUT)
            .as_millis() as u64,
    }
}

/// `a/./b/../c` → `a/c`, without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// mirrord's `TargetType::compatible_with` for copy target with scale down (compat §1.10).
fn replace_incompatible(target: &ResolvedTarget) -> Option<&'static str> {
    match target {
        ResolvedTarget::Targetless => Some("targetless"),
        ResolvedTarget::Path { path, .. } => match path.kind() {
            "targetless" => Some("targetless"),
            "rollout" => Some("rollout"),
            "service" => Some("service"),
            "label" => Some("label"),
            "pod" => Some("pod"),
            _ => None,
        },
        ResolvedTarget::Unresolved { .. } => None,
    }
}

/// Target inference through `<mirrord-bin> ls -o json` (spec §4.2.1), with a cache that the
/// state file keeps between runs.
pub struct TargetInference {
    pub mirrord_bin: PathBuf,
    /// `context|namespace|service` → target path.
    pub cache: BTreeMap<String, String>,
    listings: BTreeMap<String, Vec<String>>,
}

/// Workload kinds tried, in mirrord's priority order.
const INFERRED_KINDS: &[&str] = &["deployment", "statefulset", "rollout", "pod"];

impl TargetInference {
    pub fn new(mirrord_bin: PathBuf, cache: BTreeMap<String, String>) -> TargetInference {
        TargetInference {
            mirrord_bin,
            cache,
            listings: BTreeMap::new(),
        }
    }

    pub fn infer(
        &mut self,
        name: &str,
        namespace: Option<&str>,
        context: Option<&str>,
    ) -> Result<TargetPath, String> {
        let cache_key = format!(
            "{}|{}|{name}",
            context.unwrap_or_default(),
            namespace.unwrap_or_default()
        );
        if let Some(p) = self.cache.get(&cache_key)
            && let Ok(path) = TargetPath::parse(p)
        {
            return Ok(path);
        }
        let listing_key = format!(
            "{}|{}",
            context.unwrap_or_default(),
            namespace.unwrap_or_default()
        );
        if !self.listings.contains_key(&listing_key) {
            let listing = self.list(namespace, context)?;
            self.listings.insert(listing_key.clone(), listing);
        }
        let candidates = &self.listings[&listing_key];
        let found = INFERRED_KINDS.iter().find_map(|kind| {
            candidates.iter().find(|p| {
                let mut parts = p.split('/');
                parts.next() == Some(kind) && parts.next() == Some(name)
            })
        });
        let ns = namespace.unwrap_or("default");
        match found {
            Some(p) => {
                let path = TargetPath::parse(p)
                    .map_err(|e| format!("`mirrord ls` returned `{p}`: {e}"))?;
                self.cache.insert(cache_key, p.clone());
                Ok(path)
            }
            None => Err(format!(
                "no workload named \"{name}\" found in namespace \"{ns}\"{}; candidates seen: {}. Set `target.path` explicitly.",
                context
                    .map(|c| format!(" using context \"{c}\""))
                    .unwrap_or_default(),
                if candidates.is_empty() {
                    "none".to_owned()
                } else {
                    candidates.join(", ")
                }
            )),
        }
    }

    fn list(&self, namespace: Option<&str>, context: Option<&str>) -> Result<Vec<String>, String> {
        let mut cmd = Command::new(&self.mirrord_bin);
        cmd.args(["ls", "-o", "json"]);
        if let Some(ns) = namespace {
            cmd.args(["-n", ns]);
        }
        let _ctx_file; // kept alive until the command has run
        if let Some(ctx) = context {
            let f = tempfile_with(&serde_json::json!({ "kube_context": ctx }).to_string())
                .map_err(|e| format!("cannot write a temporary mirrord config: {e}"))?;
            cmd.arg("-f").arg(f.path());
            _ctx_file = f;
        }
        let out = cmd.output().map_err(|e| {
            format!(
                "cannot run `{} ls` to infer the target: {e}",
                self.mirrord_bin.display()
            )
        })?;
        if !out.status.success() {
            return Err(format!(
                "`{} ls -o json` failed: {}",
                self.mirrord_bin.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        parse_listing(&out.stdout).ok_or_else(|| {
            format!(
                "`{} ls -o json` printed something that is not a list of targets",
                self.mirrord_bin.display()
            )
        })
    }
}

/// A JSON array of paths, or an object with a `targets` array (of paths or `{path}` objects).
fn parse_listing(stdout: &[u8]) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_slice(stdout).ok()?;
    let items = match &v {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(o) => o.get("targets")?.as_array()?,
        _ => return None,
    };
    items
        .iter()
        .map(|i| match i {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => o.get("path")?.as_str().map(str::to_owned),
            _ => None,
        })
        .collect()
}

/// A private temporary file holding `text`, deleted on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tempfile_with(text: &str) -> std::io::Result<TempFile> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::env::temp_dir().join(format!(
        "mirrord-up-{}-{}.json",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(text.as_bytes())?;
    Ok(TempFile(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_in_both_shapes() {
        assert_eq!(
            parse_listing(br#"["deployment/api","pod/x"]"#).unwrap(),
            vec!["deployment/api", "pod/x"]
        );
        assert_eq!(
            parse_listing(br#"{"targets":[{"path":"deployment/api"}]}"#).unwrap(),
            vec!["deployment/api"]
        );
        assert!(parse_listing(b"nope").is_none());
    }
}
