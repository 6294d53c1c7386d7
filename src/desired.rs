//! The desired state: the selected services of a loaded file, resolved into `ServiceSpec`s
//! (selection, `--mode`, kube context precedence, target inference, generated config).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod last;

use crate::config::{ConfigError, Mode, ServiceConfig, TargetConfig, UpDocument};
use crate::generate::ResolvedTarget;
pub use crate::infer::TargetInference;
use crate::spec::{DEFAULT_STOP_TIMEOUT, LauncherKind, ServiceSpec};

/// The services `up` should run, in start order.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// Shared with the memo, the last resolved `Desired` and the state's records: a pass
    /// copies a pointer per service, never a spec.
    pub services: Vec<Arc<ServiceSpec>>,
    /// Messages for the user (e.g. an `http_filter` ignored in replace mode).
    pub warnings: Vec<String>,
    /// True when the user named services: services outside the selection are left alone.
    pub partial: bool,
}

impl Desired {
    pub fn get(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name).map(|s| &**s)
    }

    /// [`Self::get`], the shared spec.
    pub fn shared(&self, name: &str) -> Option<&Arc<ServiceSpec>> {
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

/// The desired services of `doc`. Each service's generated config and spec are made again
/// only when something they are made of changed since this process last resolved it (see
/// [`memo`]): a reload of one edited service among hundreds builds one.
pub fn resolve(doc: &UpDocument, opts: ResolveOptions) -> Result<Desired, ConfigError> {
    let mut cache = memo::Cache::take(&doc.path);
    let resolved = resolve_with(doc, opts, cache.as_mut());
    if let Some(c) = cache {
        c.put_back();
    }
    resolved
}

/// The services to run and their levels, in start order.
type Order = Vec<(String, usize)>;

/// What [`select`] and the levels give, made anew.
fn order_of(doc: &UpDocument, selection: &[String]) -> Result<Order, ConfigError> {
    let names = select(doc, selection)?;
    let levels = crate::graph::levels(&doc.file.services.0, &names);
    Ok(crate::graph::start_order(&levels)
        .into_iter()
        .map(|n| {
            let level = levels[&n];
            (n, level)
        })
        .collect())
}

/// [`resolve`] without the per-service memo: everything is made anew (what the memo must
/// always agree with).
pub fn resolve_uncached(doc: &UpDocument, opts: ResolveOptions) -> Result<Desired, ConfigError> {
    resolve_with(doc, opts, None)
}

fn resolve_with(
    doc: &UpDocument,
    opts: ResolveOptions,
    mut cache: Option<&mut memo::Cache>,
) -> Result<Desired, ConfigError> {
    let services = &doc.file.services.0;
    let order = match cache.as_deref_mut() {
        Some(c) => {
            let order = c.order(doc, opts.selection)?;
            c.same_file(doc, opts.launcher);
            order
        }
        None => Arc::new(order_of(doc, opts.selection)?),
    };
    let mut inference = opts.inference;
    let mut warnings = Vec::new();
    let mut incompatible = Vec::new();
    let mut not_inferred = Vec::new();
    let mut out = Vec::new();
    for (i, (name, level)) in order.iter().enumerate() {
        let (name, level) = (name.as_str(), *level);
        let svc = &services[name];
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
            (t, Some(inf)) => match inf.infer(name, t.namespace(), context) {
                Ok(path) => ResolvedTarget::Path {
                    path,
                    namespace: t.namespace().map(str::to_owned),
                },
                // Every service's failure is reported, not only the first one.
                Err(message) => {
                    not_inferred.push((name.to_owned(), message));
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
        let made = memo::Key {
            config: crate::generate::Inputs {
                name,
                service: svc,
                common: &doc.file.common,
                key: &doc.key,
                context,
                mode,
                target: &target,
                env_file: doc.env_files.get(name),
                base: doc.base_configs.get(name),
            },
            shared: svc,
            dir: &doc.dir,
            level,
            launcher: opts.launcher,
        };
        let (spec, w) = match cache.as_deref_mut() {
            Some(c) => c.get_or_make(i, &made),
            None => {
                let (spec, w) = made.make();
                (Arc::new(spec), w)
            }
        };
        warnings.extend(w);
        out.push(spec);
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
    dir: &Path,
    name: &str,
    svc: &ServiceConfig,
    level: usize,
    launcher: LauncherKind,
    mirrord_config: serde_json::Value,
) -> ServiceSpec {
    let working_dir = match &svc.working_dir {
        Some(wd) => normalize(&dir.join(wd)),
        None => dir.to_owned(),
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
            .map(|w| crate::watch::WatchSpec::new(dir, w)),
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

/// The per-service memo of [`resolve`]: for each service of a file, what its spec was made of
/// the last time (every input of [`crate::generate::mirrord_config`] and `spec_of`: the service's
/// parsed YAML, the file's `common`, the key, the effective context and mode, the resolved
/// target, the contents of its `env_file` and `config` files as read this pass, the file's
/// directory, its level and the launcher) and what was made. A service whose inputs are all
/// equal gets the spec made then (its generated config shared, not rebuilt).
///
/// Everything read from outside (the file's text, templates, `${VAR}`s, side files) reaches
/// these inputs through the loaded document, which is read every pass: the memo never decides
/// whether something changed, only whether what it is made of did.
mod memo {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    use serde_json::Value;

    use crate::config::{CommonConfig, Mode, ServiceConfig};
    use crate::generate::{self, ResolvedTarget};
    use crate::spec::{LauncherKind, ServiceSpec};

    /// The inputs of one service, borrowed from the document being resolved: those of its
    /// mirrord config, and what else its spec is made of.
    pub(super) struct Key<'a> {
        pub config: generate::Inputs<'a>,
        /// `config.service`, shared with the parsed file: a service parsed from the same
        /// text as last time is the very same one (`config::chunks`), and needs no compare.
        pub shared: &'a Arc<ServiceConfig>,
        pub dir: &'a Path,
        pub level: usize,
        pub launcher: LauncherKind,
    }

    impl Key<'_> {
        /// The spec and the warnings, made from scratch.
        pub(super) fn make(&self) -> (ServiceSpec, Vec<String>) {
            let (config, warnings) = generate::mirrord_config(&self.config);
            let spec = super::spec_of(
                self.dir,
                self.config.name,
                self.config.service,
                self.level,
                self.launcher,
                config,
            );
            (spec, warnings)
        }

        fn owned(&self) -> Inputs {
            let c = &self.config;
            Inputs {
                name: c.name.to_owned(),
                svc: Arc::clone(self.shared),
                context: c.context.map(str::to_owned),
                mode: c.mode,
                target: c.target.clone(),
                env_file: c.env_file.cloned(),
                base: c.base.cloned(),
                level: self.level,
            }
        }
    }

    /// [`Key`], owned, but for what every service of the file shares ([`File`]).
    struct Inputs {
        name: String,
        svc: Arc<ServiceConfig>,
        context: Option<String>,
        mode: Mode,
        target: ResolvedTarget,
        env_file: Option<BTreeMap<String, String>>,
        base: Option<Value>,
        level: usize,
    }

    /// The inputs every service of a file shares: compared once per resolve
    /// ([`Cache::same_file`]), not once per service.
    struct File {
        common: CommonConfig,
        key: String,
        dir: PathBuf,
        launcher: LauncherKind,
    }

    impl Inputs {
        /// Every input equal. Destructured, so that a new input cannot be left out. Those of
        /// the whole file were compared before ([`Cache::same_file`]).
        fn same(&self, k: &Key<'_>) -> bool {
            let Inputs {
                name,
                svc,
                context,
                mode,
                target,
                env_file,
                base,
                level,
            } = self;
            let Key {
                config:
                    generate::Inputs {
                        name: k_name,
                        service: k_svc,
                        common: _,
                        key: _,
                        context: k_context,
                        mode: k_mode,
                        target: k_target,
                        env_file: k_env_file,
                        base: k_base,
                    },
                shared: k_shared,
                dir: _,
                level: k_level,
                launcher: _,
            } = k;
            level == k_level
                && mode == k_mode
                && context.as_deref() == *k_context
                && target == *k_target
                && env_file.as_ref() == *k_env_file
                && base.as_ref() == *k_base
                // A parsed service is made under one name and never shared under another
                // (`Services`): the same one is the same name, and its name is not read
                // (another memory access per service).
                && (Arc::ptr_eq(svc, k_shared) || {
                    #[cfg(test)]
                    super::tests::DEEP.with(|n| n.set(n.get() + 1));
                    name == k_name && **svc == **k_svc
                })
        }
    }

    struct Made {
        inputs: Inputs,
        spec: Arc<ServiceSpec>,
        warnings: Vec<String>,
    }

    /// The memo of one file: the services to run, in start order, with what that order was
    /// made of; for each service, what it was made of and what was made: in `slots` for the
    /// services of the order (slot `i` is the `i`th service of the order: no lookup by name),
    /// in `spare` by name for the other services of the file.
    pub(super) struct Cache {
        path: PathBuf,
        file: Option<File>,
        shape: Option<Shape>,
        slots: Vec<Option<Made>>,
        spare: BTreeMap<String, Made>,
    }

    /// What the start order is made of: the selection, the active profiles and, of each
    /// service of the file, its name and what decides whether it runs and when (`skip`,
    /// `profiles`, `depends_on`); and the order made of them.
    struct Shape {
        selection: Vec<String>,
        profiles: Vec<String>,
        /// Every service of the file, in name order (kept alive: a pointer compared with them
        /// cannot be another service's).
        services: Vec<(String, Arc<ServiceConfig>)>,
        order: Arc<super::Order>,
    }

    impl Shape {
        /// Whether `doc` with `selection` gives the same order. A service that is the very
        /// same parsed one needs no compare.
        fn same(&self, doc: &crate::config::UpDocument, selection: &[String]) -> bool {
            let now = &doc.file.services.0;
            self.selection == selection
                && self.profiles == doc.profiles
                && self.services.len() == now.len()
                && self
                    .services
                    .iter()
                    .zip(now)
                    .all(|((n, old), (name, new))| {
                        n == name
                            && (Arc::ptr_eq(old, new)
                                || (old.skip == new.skip
                                    && old.profiles == new.profiles
                                    && old.depends_on == new.depends_on))
                    })
        }
    }

    /// By file, at most [`FILES_REMEMBERED`](crate::config::FILES_REMEMBERED): one in the
    /// supervisor; many in a test binary, whose tests resolve side by side in one process.
    static CACHES: Mutex<Vec<Cache>> = Mutex::new(Vec::new());

    impl Cache {
        /// The memo of `path`, taken out (an empty one if there is none).
        pub(super) fn take(path: &Path) -> Option<Cache> {
            let mut all = CACHES.lock().ok()?;
            let found = all.iter().position(|c| c.path == path);
            Some(match found {
                Some(i) => all.swap_remove(i),
                None => Cache {
                    path: path.to_owned(),
                    file: None,
                    shape: None,
                    slots: Vec::new(),
                    spare: BTreeMap::new(),
                },
            })
        }

        /// The services remembered for `path`.
        #[cfg(test)]
        pub(super) fn remembered(path: &Path) -> Vec<String> {
            let all = CACHES.lock().unwrap();
            let found = all.iter().find(|c| c.path == path);
            let Some(c) = found else { return Vec::new() };
            let mut names: Vec<String> = c.spare.keys().cloned().collect();
            if let Some(shape) = &c.shape {
                let made = shape.order.iter().zip(&c.slots);
                names.extend(
                    made.filter(|(_, m)| m.is_some())
                        .map(|((n, _), _)| n.clone()),
                );
            }
            names.sort();
            names
        }

        pub(super) fn put_back(self) {
            let Ok(mut all) = CACHES.lock() else { return };
            all.retain(|c| c.path != self.path);
            if all.len() >= crate::config::FILES_REMEMBERED {
                all.remove(0);
            }
            all.push(self);
        }

        /// The services of `doc` to run with `selection`, in start order: made again only when
        /// what the order is made of changed. Services no longer in the file are forgotten
        /// then (their names cannot have changed otherwise).
        pub(super) fn order(
            &mut self,
            doc: &crate::config::UpDocument,
            selection: &[String],
        ) -> Result<Arc<super::Order>, crate::config::ConfigError> {
            if let Some(shape) = &self.shape
                && shape.same(doc, selection)
            {
                return Ok(Arc::clone(&shape.order));
            }
            let order = Arc::new(super::order_of(doc, selection)?);
            // Every service made so far, by name, but those no longer in the file.
            let now = &doc.file.services.0;
            let mut all = std::mem::take(&mut self.spare);
            if let Some(old) = self.shape.take() {
                let slots = std::mem::take(&mut self.slots);
                let made = old.order.iter().zip(slots);
                all.extend(made.filter_map(|((n, _), m)| Some((n.clone(), m?))));
            }
            all.retain(|n, _| now.contains_key(n));
            self.slots = order.iter().map(|(n, _)| all.remove(n)).collect();
            self.spare = all;
            self.shape = Some(Shape {
                selection: selection.to_vec(),
                profiles: doc.profiles.clone(),
                services: now
                    .iter()
                    .map(|(n, s)| (n.clone(), Arc::clone(s)))
                    .collect(),
                order: Arc::clone(&order),
            });
            Ok(order)
        }

        /// Forgets every service made when what the services of `doc` share is not what they
        /// shared when they were made.
        pub(super) fn same_file(
            &mut self,
            doc: &crate::config::UpDocument,
            launcher: LauncherKind,
        ) {
            let same = self.file.as_ref().is_some_and(|f| {
                f.launcher == launcher
                    && f.key == doc.key
                    && f.dir.as_os_str() == doc.dir.as_os_str()
                    && f.common == doc.file.common
            });
            if !same {
                self.slots.iter_mut().for_each(|s| *s = None);
                self.spare.clear();
                self.file = Some(File {
                    common: doc.file.common.clone(),
                    key: doc.key.clone(),
                    dir: doc.dir.clone(),
                    launcher,
                });
            }
        }

        /// The spec of the `i`th service of the order last given by [`Self::order`].
        pub(super) fn get_or_make(
            &mut self,
            i: usize,
            k: &Key<'_>,
        ) -> (Arc<ServiceSpec>, Vec<String>) {
            let Some(slot) = self.slots.get_mut(i) else {
                let (spec, warnings) = k.make();
                return (Arc::new(spec), warnings);
            };
            if let Some(m) = slot
                && m.inputs.same(k)
            {
                return (Arc::clone(&m.spec), m.warnings.clone());
            }
            let (spec, warnings) = k.make();
            let spec = Arc::new(spec);
            *slot = Some(Made {
                inputs: k.owned(),
                spec: spec.clone(),
                warnings: warnings.clone(),
            });
            (spec, warnings)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    thread_local! {
        /// How many services this thread's memo compared field by field (not by pointer).
        pub(super) static DEEP: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// A project directory with `mirrord-up.yaml` and its side files.
    struct Project {
        dir: tempfile::TempDir,
    }

    struct Resolve<'a> {
        key: &'a str,
        profiles: &'a [&'a str],
        mode: Option<Mode>,
        context: Option<&'a str>,
        launcher: LauncherKind,
        /// What inference answers for service `a` (`deployment/<name>` for the others), from
        /// its cache: no cluster is asked.
        inferred: Option<&'a str>,
    }

    const PLAIN: Resolve<'static> = Resolve {
        key: "alice",
        profiles: &[],
        mode: None,
        context: None,
        launcher: LauncherKind::Local,
        inferred: None,
    };

    impl Project {
        fn new() -> Project {
            Project {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.dir.path().join(name), text).unwrap();
        }

        /// Loads the file and resolves it twice, through the memo and without it: both must
        /// agree (services and warnings), and the memo's answer is returned.
        fn resolve(&self, how: &Resolve) -> Desired {
            let path = self.dir.path().join("mirrord-up.yaml");
            let mut doc = UpDocument::load(&path, Some(how.key)).unwrap();
            doc.profiles = how.profiles.iter().map(|p| p.to_string()).collect();
            let inference = || {
                how.inferred.map(|path| {
                    let mut cache = BTreeMap::new();
                    for context in ["", "one", "two"] {
                        for name in ["a", "b", "c", "m"] {
                            let answer = match name {
                                "a" => path.to_owned(),
                                other => format!("deployment/{other}"),
                            };
                            cache.insert(format!("{context}||{name}"), answer);
                        }
                    }
                    TargetInference::new(cache, None)
                })
            };
            let (mut one, mut two) = (inference(), inference());
            let opts = ResolveOptions {
                selection: &[],
                mode: how.mode,
                context: how.context,
                launcher: how.launcher,
                inference: one.as_mut(),
            };
            let cached = resolve(&doc, opts).unwrap();
            let opts = ResolveOptions {
                selection: &[],
                mode: how.mode,
                context: how.context,
                launcher: how.launcher,
                inference: two.as_mut(),
            };
            let fresh = resolve_uncached(&doc, opts).unwrap();
            assert_eq!(cached.services, fresh.services, "the memo hid a change");
            assert_eq!(cached.warnings, fresh.warnings);
            cached
        }
    }

    fn env_of(d: &Desired, name: &str, var: &str) -> Option<String> {
        d.get(name)?.env_overrides().get(var).cloned()
    }

    fn service(name: &str, body: &str) -> String {
        format!("  {name}:\n    run: {{command: [sleep, '1']}}\n{body}")
    }

    /// Every kind of input of a service's resolution, edited one at a time: each resolution
    /// through the memo is the one made from scratch, and shows the edit.
    #[test]
    fn the_memo_sees_every_kind_of_edit() {
        let p = Project::new();
        let file = |a: &str, common: &str| {
            format!(
                "{common}services:\n{}{}{}",
                service("a", a),
                service("b", "    env: {override: {B: '1'}}\n"),
                service("c", "    profiles: [extra]\n")
            )
        };
        p.write("a.env", "FROM_FILE=1\n");
        p.write("base.json", r#"{"agent": {"ttl": 1}}"#);
        let a = "    env: {override: {A: '1'}}\n    env_file: a.env\n    config: base.json\n";
        p.write("mirrord-up.yaml", &file(a, ""));
        let first = p.resolve(&PLAIN);
        assert_eq!(env_of(&first, "a", "A").as_deref(), Some("1"));
        assert_eq!(first.services.len(), 2, "c is in a profile");
        // Resolved again unchanged: the same.
        assert_eq!(p.resolve(&PLAIN).services, first.services);

        // The service's own YAML.
        let a2 = a.replace("A: '1'", "A: '2'");
        p.write("mirrord-up.yaml", &file(&a2, ""));
        let d = p.resolve(&PLAIN);
        assert_eq!(env_of(&d, "a", "A").as_deref(), Some("2"));
        assert_eq!(d.get("b"), first.get("b"), "b did not change");

        // The bytes of its env_file (same YAML text).
        p.write("a.env", "FROM_FILE=2\n");
        let d = p.resolve(&PLAIN);
        assert_eq!(env_of(&d, "a", "FROM_FILE").as_deref(), Some("2"));

        // The bytes of its config file.
        p.write("base.json", r#"{"agent": {"ttl": 2}}"#);
        let d = p.resolve(&PLAIN);
        assert_eq!(d.get("a").unwrap().mirrord_config["agent"]["ttl"], 2);

        // A file-level setting every service uses, and one that changes no service's
        // effective context.
        p.write("mirrord-up.yaml", &file(&a2, "common: {context: one}\n"));
        let d = p.resolve(&PLAIN);
        assert_eq!(d.get("b").unwrap().mirrord_config["kube_context"], "one");
        let common = "common: {context: one, operator: false}\n";
        p.write("mirrord-up.yaml", &file(&a2, common));
        let d = p.resolve(&PLAIN);
        assert_eq!(d.get("b").unwrap().mirrord_config["operator"], false);

        // The run's settings, each against the plain run resolved just before: profiles,
        // --mode, --context, the launcher, the key, an inferred target.
        let variant = |how: Resolve| {
            p.resolve(&PLAIN);
            p.resolve(&how)
        };
        let d = variant(Resolve {
            profiles: &["extra"],
            ..PLAIN
        });
        assert_eq!(d.services.len(), 3);
        let d = variant(Resolve {
            mode: Some(Mode::Replace),
            inferred: Some("deployment/a"),
            ..PLAIN
        });
        assert_eq!(
            d.get("a").unwrap().mirrord_config["feature"]["copy_target"]["enabled"],
            true
        );
        let d = variant(Resolve {
            context: Some("two"),
            ..PLAIN
        });
        assert_eq!(d.get("b").unwrap().mirrord_config["kube_context"], "two");
        let d = variant(Resolve {
            launcher: LauncherKind::Mirrord,
            ..PLAIN
        });
        assert_eq!(d.get("b").unwrap().launcher, LauncherKind::Mirrord);
        let d = variant(Resolve {
            key: "bob",
            ..PLAIN
        });
        assert_eq!(d.get("b").unwrap().mirrord_config["key"], "bob");
        let target = |d: &Desired| d.get("a").unwrap().mirrord_config["target"]["path"].clone();
        let d = variant(Resolve {
            inferred: Some("deployment/a1"),
            ..PLAIN
        });
        assert_eq!(target(&d), "deployment/a1");
        let d = p.resolve(&Resolve {
            inferred: Some("deployment/a2"),
            ..PLAIN
        });
        assert_eq!(target(&d), "deployment/a2");

        // Its level: a dependency of its dependency moves it (its own text is the same).
        let levels = |m: &str| {
            format!(
                "services:\n{}{}{}",
                service("a", &a2),
                service("m", m),
                service("b", "    depends_on: [m]\n")
            )
        };
        p.write("mirrord-up.yaml", &levels(""));
        assert_eq!(p.resolve(&PLAIN).get("b").unwrap().level, 1);
        p.write("mirrord-up.yaml", &levels("    depends_on: [a]\n"));
        assert_eq!(p.resolve(&PLAIN).get("b").unwrap().level, 2);
    }

    /// A variable a template reads: the file's text is the same, its rendering is not.
    #[test]
    fn the_memo_sees_an_environment_variable_a_template_reads() {
        const VAR: &str = "MIRRORD_UP_DESIRED_MEMO_TEST";
        let p = Project::new();
        p.write(
            "mirrord-up.yaml",
            &format!(
                "services:\n  a:\n    env: {{override: {{V: \"{{{{ get_env(name='{VAR}', default='unset') }}}}\"}}}}\n    run: {{command: [x]}}\n"
            ),
        );
        let d = p.resolve(&PLAIN);
        assert_eq!(env_of(&d, "a", "V").as_deref(), Some("unset"));
        // SAFETY: no other test reads or writes this variable; the standard library's own
        // reads of the environment are serialised with this write.
        unsafe { std::env::set_var(VAR, "set") };
        let d = p.resolve(&PLAIN);
        unsafe { std::env::remove_var(VAR) };
        assert_eq!(env_of(&d, "a", "V").as_deref(), Some("set"));
    }

    /// The file's directory (where relative working directories start): a document of the
    /// same path with another directory is made again.
    #[test]
    fn the_memo_sees_the_directory() {
        let p = Project::new();
        p.write(
            "mirrord-up.yaml",
            &format!("services:\n{}", service("a", "    working_dir: sub\n")),
        );
        let path = p.dir.path().join("mirrord-up.yaml");
        let mut doc = UpDocument::load(&path, Some("k")).unwrap();
        let opts = || ResolveOptions {
            selection: &[],
            mode: None,
            context: None,
            launcher: LauncherKind::Local,
            inference: None,
        };
        let first = resolve(&doc, opts()).unwrap();
        assert_eq!(first.services[0].working_dir, p.dir.path().join("sub"));
        doc.dir = PathBuf::from("/elsewhere");
        let moved = resolve(&doc, opts()).unwrap();
        assert_eq!(moved.services[0].working_dir, Path::new("/elsewhere/sub"));
    }

    /// A file of two services, `a` and `b`; `b` sets `V` to `v`.
    fn a_and_b(v: &str) -> String {
        format!(
            "services:\n{}{}",
            service("a", ""),
            service("b", &format!("    env: {{override: {{V: '{v}'}}}}\n"))
        )
    }

    /// What the memo is for: after an edit of one service, the others are not made again
    /// (their generated config is the very same shared tree); the edited one is.
    #[test]
    fn only_the_edited_service_is_made_again() {
        let p = Project::new();
        p.write("mirrord-up.yaml", &a_and_b("1"));
        let first = p.resolve(&PLAIN);
        p.write("mirrord-up.yaml", &a_and_b("2"));
        let second = p.resolve(&PLAIN);
        let shared = |name: &str| {
            std::sync::Arc::ptr_eq(
                &first.get(name).unwrap().mirrord_config,
                &second.get(name).unwrap().mirrord_config,
            )
        };
        assert!(shared("a"), "a was made again");
        assert!(!shared("b"), "b was not made again");
        // A service added before them changes the order: a and b are still not made again
        // (nor are they after a service is removed, or when only one is selected).
        let same = |x: &Desired, y: &Desired, name: &str| {
            std::sync::Arc::ptr_eq(
                &x.get(name).unwrap().mirrord_config,
                &y.get(name).unwrap().mirrord_config,
            )
        };
        let with_0 = format!("services:\n{}{}", service("0", ""), &a_and_b("2")[10..]);
        p.write("mirrord-up.yaml", &with_0);
        let third = p.resolve(&PLAIN);
        assert_eq!(third.services.len(), 3);
        assert!(same(&second, &third, "a") && same(&second, &third, "b"));
        p.write("mirrord-up.yaml", &a_and_b("2"));
        let fourth = p.resolve(&PLAIN);
        assert!(same(&third, &fourth, "a") && same(&third, &fourth, "b"));
    }

    /// A saved file whose services are parsed anew only where their text changed: the memo
    /// compares the others by pointer (not field by field), through edits, insertions and
    /// a load of the same text.
    #[test]
    fn unchanged_services_are_compared_by_pointer() {
        let p = Project::new();
        let file = |v: &str, extra: bool| {
            let mut text = String::from("services:\n");
            for i in 0..20 {
                let body = if i == 7 {
                    format!("    env: {{override: {{V: '{v}'}}}}\n")
                } else {
                    String::new()
                };
                text.push_str(&service(&format!("s{i:02}"), &body));
                if extra && i == 3 {
                    text.push_str(&service("new", ""));
                }
            }
            text
        };
        let deep = || DEEP.with(|n| n.get());
        p.write("mirrord-up.yaml", &file("1", false));
        p.resolve(&PLAIN);
        for (v, extra) in [
            ("2", false),
            ("2", false),
            ("3", true),
            ("4", true),
            ("4", false),
        ] {
            p.write("mirrord-up.yaml", &file(v, extra));
            let before = deep();
            p.resolve(&PLAIN);
            assert!(
                deep() - before <= 1,
                "{v} {extra}: {} compared field by field",
                deep() - before
            );
        }
    }

    /// The services to run and their order are made again when an edit of one service
    /// changes whether it runs or when (`skip`, `profiles`, `depends_on`), and only then:
    /// each resolution is the one made from scratch (`Project::resolve`).
    #[test]
    fn the_start_order_follows_an_edit_of_skip_profiles_or_dependencies() {
        let p = Project::new();
        let file = |b: &str, c: &str| {
            format!(
                "services:\n{}{}{}",
                service("a", ""),
                service("b", b),
                service("c", c)
            )
        };
        let order = |d: &Desired| -> Vec<(String, usize)> {
            d.services
                .iter()
                .map(|s| (s.name.clone(), s.level))
                .collect()
        };
        let pairs = |v: &[(&str, usize)]| -> Vec<(String, usize)> {
            v.iter().map(|(n, l)| (n.to_string(), *l)).collect()
        };
        p.write("mirrord-up.yaml", &file("", ""));
        assert_eq!(
            order(&p.resolve(&PLAIN)),
            pairs(&[("a", 0), ("b", 0), ("c", 0)])
        );
        p.write("mirrord-up.yaml", &file("    profiles: [x]\n", ""));
        assert_eq!(order(&p.resolve(&PLAIN)), pairs(&[("a", 0), ("c", 0)]));
        p.write("mirrord-up.yaml", &file("", ""));
        assert_eq!(order(&p.resolve(&PLAIN)).len(), 3);
        p.write("mirrord-up.yaml", &file("    skip: true\n", ""));
        assert_eq!(order(&p.resolve(&PLAIN)), pairs(&[("a", 0), ("c", 0)]));
        p.write("mirrord-up.yaml", &file("", "    depends_on: [b]\n"));
        assert_eq!(
            order(&p.resolve(&PLAIN)),
            pairs(&[("a", 0), ("b", 0), ("c", 1)])
        );
        p.write(
            "mirrord-up.yaml",
            &file("    depends_on: [a]\n", "    depends_on: [b]\n"),
        );
        assert_eq!(
            order(&p.resolve(&PLAIN)),
            pairs(&[("a", 0), ("b", 1), ("c", 2)])
        );
        // Another edit of b that moves nothing: the same order.
        p.write(
            "mirrord-up.yaml",
            &file(
                "    depends_on: [a]\n    restart: always\n",
                "    depends_on: [b]\n",
            ),
        );
        assert_eq!(
            order(&p.resolve(&PLAIN)),
            pairs(&[("a", 0), ("b", 1), ("c", 2)])
        );
    }

    /// `common:` is outside every service's text (every parsed service is shared after an
    /// edit of it): its change still reaches every service's spec.
    #[test]
    fn a_change_to_common_reaches_every_service() {
        let p = Project::new();
        let file = |context: &str| {
            format!(
                "common: {{context: {context}}}\nservices:\n{}{}{}",
                service("a", ""),
                service("b", ""),
                service("c", "")
            )
        };
        p.write("mirrord-up.yaml", &file("one"));
        p.resolve(&PLAIN);
        p.write("mirrord-up.yaml", &file("two"));
        let d = p.resolve(&PLAIN);
        for s in &d.services {
            assert_eq!(s.mirrord_config["kube_context"], "two", "{}", s.name);
        }
    }

    /// A service removed from the file is forgotten; added back, it is made again (from its
    /// new inputs, not the old ones).
    #[test]
    fn a_removed_service_is_forgotten() {
        let p = Project::new();
        p.write("mirrord-up.yaml", &a_and_b("1"));
        p.resolve(&PLAIN);
        p.write(
            "mirrord-up.yaml",
            &format!("services:\n{}", service("a", "")),
        );
        assert_eq!(p.resolve(&PLAIN).services.len(), 1);
        let path = p.dir.path().join("mirrord-up.yaml");
        assert_eq!(memo::Cache::remembered(&path), ["a"]);
        p.write("mirrord-up.yaml", &a_and_b("2"));
        assert_eq!(env_of(&p.resolve(&PLAIN), "b", "V").as_deref(), Some("2"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// One service's text from small random choices.
        fn service_text() -> impl Strategy<Value = String> {
            (
                prop::sample::select(vec![
                    "",
                    "    target: none\n",
                    "    target: {path: deployment/x, namespace: ns}\n",
                ]),
                prop::sample::select(vec![
                    "",
                    "    env: {override: {V: '1'}}\n",
                    "    env: {override: {V: '2'}, unset: [X]}\n",
                ]),
                prop::sample::select(vec![
                    "",
                    "    default_mode: replace\n    target: {path: deployment/y}\n",
                ]),
                prop::sample::select(vec!["", "    http_filter: {header_filter: 'x: y'}\n"]),
                prop::sample::select(vec!["", "    env_file: s.env\n"]),
                prop::sample::select(vec!["", "    config: s.json\n"]),
                prop::sample::select(vec![
                    "",
                    "    working_dir: sub\n",
                    "    ignore_ports: [1, 2]\n",
                ]),
                prop::sample::select(vec!["[a]", "[b, c]"]),
            )
                .prop_map(|(t, e, m, h, ef, c, w, cmd)| {
                    let mode = if m.is_empty() { t } else { m };
                    format!("{mode}{e}{h}{ef}{c}{w}    run: {{command: {cmd}}}\n")
                })
        }

        #[derive(Debug, Clone)]
        struct Version {
            services: Vec<String>,
            common: &'static str,
            env_file: &'static str,
            config: &'static str,
        }

        fn version() -> impl Strategy<Value = Version> {
            (
                prop::collection::vec(service_text(), 1..4),
                prop::sample::select(vec![
                    "",
                    "common: {context: c}\n",
                    "common: {telemetry: false}\n",
                ]),
                prop::sample::select(vec!["A=1\n", "A=2\nB=3\n"]),
                prop::sample::select(vec![
                    r#"{"agent": {"ttl": 1}}"#,
                    r#"{"feature": {"fs": "read"}}"#,
                ]),
            )
                .prop_map(|(services, common, env_file, config)| Version {
                    services,
                    common,
                    env_file,
                    config,
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

            /// Any sequence of versions of a file and its side files: the memo's resolution
            /// of each is the one made from scratch (`Project::resolve` checks it).
            #[test]
            fn memo_and_fresh_resolution_agree(versions in prop::collection::vec(version(), 1..6)) {
                let p = Project::new();
                for v in &versions {
                    let mut text = format!("{}services:\n", v.common);
                    for (i, s) in v.services.iter().enumerate() {
                        text.push_str(&format!("  s{i}:\n{s}"));
                    }
                    p.write("mirrord-up.yaml", &text);
                    p.write("s.env", v.env_file);
                    p.write("s.json", v.config);
                    p.resolve(&PLAIN);
                    p.resolve(&Resolve { mode: Some(Mode::Split), ..PLAIN });
                }
            }
        }
    }
}
