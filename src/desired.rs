//! The desired state: the selected services of a loaded file, resolved into `ServiceSpec`s
//! (selection, `--mode`, kube context precedence, target inference, generated config).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config::{ConfigError, Mode, ServiceConfig, TargetConfig, UpDocument};
use crate::generate::{self, ResolvedTarget};
pub use crate::infer::TargetInference;
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
/// `selection`, or when it is empty ("all") and `named` is not, every service started without
/// being named plus `named` (those still in the file).
pub fn with_named(doc: &UpDocument, selection: &[String], named: &[String]) -> Vec<String> {
    if !selection.is_empty() || named.is_empty() {
        return selection.to_vec();
    }
    let services = &doc.file.services.0;
    services
        .iter()
        .filter(|(n, s)| s.enabled(&doc.profiles) || named.contains(n))
        .map(|(n, _)| n.clone())
        .collect()
}

pub fn select(doc: &UpDocument, selection: &[String]) -> Result<Vec<String>, ConfigError> {
    let services = &doc.file.services.0;
    let mut picked: BTreeSet<String> = if selection.is_empty() {
        let all: BTreeSet<String> = services
            .iter()
            .filter(|(_, s)| s.enabled(&doc.profiles))
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
    let mut not_inferred = Vec::new();
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
            (t, Some(inf)) => match inf.infer(&name, t.namespace(), context) {
                Ok(path) => ResolvedTarget::Path {
                    path,
                    namespace: t.namespace().map(str::to_owned),
                },
                // Every service's failure is reported, not only the first one.
                Err(message) => {
                    not_inferred.push((name.clone(), message));
                    ResolvedTarget::Unresolved {
                        namespace: t.namespace().map(str::to_owned),
                    }
                }
            },
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
    if !not_inferred.is_empty() {
        return Err(ConfigError::Inference {
            path: doc.path.clone(),
            failures: not_inferred,
        });
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
        mirrord_config: mirrord_config.into(),
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
        logging: svc.logging.as_ref().map(|l| l.limits()).unwrap_or_default(),
        watch: svc
            .watch
            .as_ref()
            .map(|w| crate::watch::WatchSpec::new(&doc.dir, w)),
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
