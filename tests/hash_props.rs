//! Property tests of the config hash (spec §6: sha256 of the canonical resolved service, "not the
//! YAML text, not cosmetic fields").
//!
//! Random services are rendered into `mirrord-up.yaml` text in many equivalent surface forms
//! (comments, key order, quoting, flow/block style, indentation, equivalent spellings of
//! defaults), loaded with the library and resolved with the `local` launcher, and hashed:
//!
//! 1. every surface form of the same file gives the same hashes (and the loaded model holds
//!    exactly the generated values, so the forms really are equivalent);
//! 2. changing one field that reaches the generated mirrord config or the command (an override
//!    value, a command element, a port, the mode, the target path) changes that service's hash
//!    and no other's;
//! 3. changing a behaviour-only extension (`stop_timeout`, `restart`, `stop_signal`,
//!    `max_restarts`) changes no hash.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use mirrord_up::config::UpDocument;
use mirrord_up::desired::{ResolveOptions, resolve};
use mirrord_up::spec::{LauncherKind, ServiceSpec};
use proptest::prelude::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The model

#[derive(Debug, Clone, PartialEq)]
enum Target {
    /// Absent, `~`, `null`, empty, `{}`: inferred (unresolved with the `local` launcher).
    Unspecified,
    /// `{namespace: ns}`: a namespace hint only.
    NamespaceOnly(String),
    Path {
        kind: &'static str,
        name: String,
        namespace: Option<String>,
    },
}

impl Target {
    fn path(&self) -> Option<String> {
        match self {
            Target::Path { kind, name, .. } => Some(format!("{kind}/{name}")),
            _ => None,
        }
    }

    fn namespace(&self) -> Option<&str> {
        match self {
            Target::NamespaceOnly(ns) => Some(ns),
            Target::Path { namespace, .. } => namespace.as_deref(),
            Target::Unspecified => None,
        }
    }
}

const RESTARTS: &[&str] = &["no", "on-failure", "always"];

#[derive(Debug, Clone)]
struct Svc {
    name: String,
    overrides: BTreeMap<String, String>,
    command: Vec<String>,
    ports: BTreeSet<u16>,
    replace: bool,
    target: Target,
    // Behaviour of the supervisor only: outside the hash.
    stop_timeout: Option<u32>,
    restart: usize,
    stop_signal: Option<&'static str>,
    max_restarts: Option<u32>,
}

// ---------------------------------------------------------------------------------------------
// Strategies

/// Names usable as service names, target names and namespaces (lowercase, dashes).
fn ident() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,6}"
}

/// String values: words that may be plain, numbers and booleans (coerced to strings by
/// mirrord's scalar rule), and arbitrary printable text that needs quoting. No `{`/`}`: the file
/// is a Tera template.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z][a-z0-9_./-]{0,8}",
        1 => "(0|[1-9][0-9]{0,5})",
        1 => "(true|false|yes|no|on|off|y|n)",
        3 => "[ -~&&[^{}]]{0,12}",
        1 => "[a-zé ü:#'\"\\\\-]{0,6}",
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::Unspecified),
        ident().prop_map(Target::NamespaceOnly),
        (
            prop::sample::select(vec!["deployment", "deploy", "statefulset", "replicaset"]),
            ident(),
            prop::option::of(ident()),
        )
            .prop_map(|(kind, name, namespace)| Target::Path {
                kind,
                name,
                namespace
            }),
    ]
}

fn service_body() -> impl Strategy<Value = Svc> {
    (
        prop::collection::btree_map("[A-Z][A-Z0-9_]{0,6}", value(), 0..4),
        prop::collection::vec(value(), 1..4),
        prop::collection::btree_set(1u16..=65535, 0..4),
        any::<bool>(),
        target(),
        (
            prop::option::of(0u32..120),
            0..RESTARTS.len(),
            prop::option::of(prop::sample::select(vec![
                "SIGTERM", "SIGINT", "INT", "HUP", "SIGUSR1", "KILL",
            ])),
            prop::option::of(0u32..10),
        ),
    )
        .prop_map(
            |(
                overrides,
                command,
                ports,
                replace,
                target,
                (stop_timeout, restart, stop_signal, max_restarts),
            )| Svc {
                name: String::new(),
                overrides,
                command,
                ports,
                replace,
                target,
                stop_timeout,
                restart,
                stop_signal,
                max_restarts,
            },
        )
}

fn services() -> impl Strategy<Value = Vec<Svc>> {
    prop::collection::btree_map(ident(), service_body(), 1..4).prop_map(|m| {
        m.into_iter()
            .map(|(name, mut svc)| {
                svc.name = name;
                svc
            })
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// Rendering: model → YAML node tree (with random equivalent spellings) → text (random style)

/// SplitMix64: the surface form of a file is a pure function of (model, seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Null {
    Tilde,
    Word,
    /// `key:` with nothing after it (block style only; `~` in flow style).
    Empty,
}

#[derive(Debug, Clone)]
enum Node {
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
    /// A string. `scalar`: read by mirrord's scalar rule, so numbers and booleans written plain
    /// still give the same string; otherwise it must be a YAML string.
    Str {
        text: String,
        scalar: bool,
    },
    /// A number, always written plain.
    Num(String),
    Null(Null),
}

fn s(text: impl Into<String>) -> Node {
    Node::Str {
        text: text.into(),
        scalar: false,
    }
}

fn scalar(text: impl Into<String>) -> Node {
    Node::Str {
        text: text.into(),
        scalar: true,
    }
}

fn null(rng: &mut Rng) -> Node {
    Node::Null(rng.pick(&[Null::Tilde, Null::Word, Null::Empty]))
}

fn shuffled(rng: &mut Rng, mut entries: Vec<(String, Node)>) -> Node {
    rng.shuffle(&mut entries);
    Node::Map(entries)
}

fn service_node(svc: &Svc, rng: &mut Rng) -> Node {
    let mut e: Vec<(String, Node)> = Vec::new();
    match &svc.target {
        Target::Unspecified => match rng.below(3) {
            0 => {}
            1 => e.push(("target".into(), null(rng))),
            _ => e.push(("target".into(), Node::Map(vec![]))),
        },
        t => {
            let mut m = Vec::new();
            match t.path() {
                Some(p) => m.push(("path".into(), s(p))),
                None if rng.chance(2) => m.push(("path".into(), null(rng))),
                None => {}
            }
            match t.namespace() {
                Some(ns) => m.push(("namespace".into(), s(ns))),
                None if rng.chance(3) => m.push(("namespace".into(), null(rng))),
                None => {}
            }
            e.push(("target".into(), shuffled(rng, m)));
        }
    }
    if svc.overrides.is_empty() {
        match rng.below(3) {
            0 => {}
            1 => e.push(("env".into(), Node::Map(vec![]))),
            _ => e.push((
                "env".into(),
                Node::Map(vec![("override".into(), null(rng))]),
            )),
        }
    } else {
        let vars = svc
            .overrides
            .iter()
            .map(|(k, v)| (k.clone(), scalar(v.clone())))
            .collect();
        e.push((
            "env".into(),
            Node::Map(vec![("override".into(), shuffled(rng, vars))]),
        ));
    }
    if svc.replace {
        e.push(("default_mode".into(), s("replace")));
    } else if rng.chance(2) {
        e.push(("default_mode".into(), s("split")));
    }
    if svc.ports.is_empty() {
        if rng.chance(2) {
            e.push(("ignore_ports".into(), Node::Seq(vec![])));
        }
    } else {
        // A set: any order, duplicates collapse.
        let mut ports: Vec<u16> = svc.ports.iter().copied().collect();
        for _ in 0..rng.below(3) {
            let dup = ports[rng.below(ports.len())];
            ports.push(dup);
        }
        rng.shuffle(&mut ports);
        e.push((
            "ignore_ports".into(),
            Node::Seq(ports.iter().map(|p| Node::Num(p.to_string())).collect()),
        ));
    }
    let mut run = vec![(
        "command".into(),
        Node::Seq(svc.command.iter().map(|c| scalar(c.clone())).collect()),
    )];
    if rng.chance(2) {
        run.push(("type".into(), s("exec")));
    }
    e.push(("run".into(), shuffled(rng, run)));
    // Behaviour-only extensions, each default spelled in several ways.
    match svc.stop_timeout {
        None if rng.chance(4) => e.push(("stop_timeout".into(), null(rng))),
        None => {}
        Some(n) => {
            let node = match rng.below(4) {
                0 => Node::Num(n.to_string()),
                1 => s(format!("{n}s")),
                2 => s(format!("{}ms", u64::from(n) * 1000)),
                _ => Node::Num(format!("{n}.0")),
            };
            e.push(("stop_timeout".into(), node));
        }
    }
    if svc.restart != 0 || rng.chance(2) {
        e.push(("restart".into(), s(RESTARTS[svc.restart])));
    }
    if let Some(sig) = svc.stop_signal {
        e.push(("stop_signal".into(), s(sig)));
    }
    if let Some(n) = svc.max_restarts {
        e.push(("max_restarts".into(), Node::Num(n.to_string())));
    }
    shuffled(rng, e)
}

fn document_node(services: &[Svc], rng: &mut Rng) -> Node {
    let svcs = services
        .iter()
        .map(|svc| (svc.name.clone(), service_node(svc, rng)))
        .collect();
    let mut root = vec![("services".to_owned(), shuffled(rng, svcs))];
    if rng.chance(3) {
        root.push(("common".into(), Node::Map(vec![])));
    }
    shuffled(rng, root)
}

/// YAML 1.2 words that are not strings (case-insensitive here, to be safe).
fn reserved(s: &str) -> bool {
    matches!(s.to_ascii_lowercase().as_str(), "true" | "false" | "null")
}

/// Whether `text` may be written as a plain scalar (in block and flow context) and still read
/// back as the same string.
fn plain_ok(text: &str, scalar: bool) -> bool {
    let word = text.starts_with(|c: char| c.is_ascii_lowercase())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_./-".contains(c));
    let number = text == "0"
        || (text.len() <= 9
            && text.starts_with(|c: char| ('1'..='9').contains(&c))
            && text.chars().all(|c| c.is_ascii_digit()));
    let boolean = text == "true" || text == "false";
    if scalar {
        (word && text != "null") || number || boolean
    } else {
        word && !reserved(text)
    }
}

fn plain_key_ok(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !reserved(key)
}

fn single_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn double_quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

const COMMENTS: &[&str] = &[
    "# a comment",
    "#tight comment",
    "# key: value, looks like YAML",
    "# - [not, a, list]",
    "# quotes ' and \" are fine in comments",
];

struct Emitter {
    rng: Rng,
    comments: bool,
    out: String,
}

impl Emitter {
    fn string(&mut self, text: &str, scalar: bool) -> String {
        let plain = plain_ok(text, scalar);
        match self.rng.below(if plain { 3 } else { 2 }) {
            0 => single_quoted(text),
            1 => double_quoted(text),
            _ => text.to_owned(),
        }
    }

    fn key(&mut self, key: &str) -> String {
        if plain_key_ok(key) && !self.rng.chance(4) {
            key.to_owned()
        } else if self.rng.chance(2) {
            single_quoted(key)
        } else {
            double_quoted(key)
        }
    }

    fn flow(&mut self, node: &Node) -> String {
        match node {
            Node::Map(entries) if entries.is_empty() => "{}".into(),
            Node::Map(entries) => {
                let parts: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| {
                        let k = self.key(k);
                        let v = self.flow(v);
                        format!("{k}: {v}")
                    })
                    .collect();
                let sep = if self.rng.chance(3) { " ,  " } else { ", " };
                if self.rng.chance(2) {
                    format!("{{{}}}", parts.join(sep))
                } else {
                    format!("{{ {} }}", parts.join(sep))
                }
            }
            Node::Seq(items) if items.is_empty() => "[]".into(),
            Node::Seq(items) => {
                let parts: Vec<String> = items.iter().map(|i| self.flow(i)).collect();
                let sep = self.rng.pick(&[", ", ",", " , "]);
                if self.rng.chance(2) {
                    format!("[{}]", parts.join(sep))
                } else {
                    format!("[ {} ]", parts.join(sep))
                }
            }
            Node::Str { text, scalar } => self.string(text, *scalar),
            Node::Num(text) => text.clone(),
            Node::Null(Null::Word) => "null".into(),
            Node::Null(Null::Tilde | Null::Empty) => "~".into(),
        }
    }

    fn line(&mut self, indent: usize, text: &str) {
        self.out.push_str(&" ".repeat(indent));
        self.out.push_str(text);
        if self.comments && self.rng.chance(6) {
            self.out.push_str(" # trailing comment");
        }
        self.out.push('\n');
    }

    fn extras(&mut self, indent: usize) {
        if self.comments && self.rng.chance(4) {
            let c = self.rng.pick(COMMENTS);
            // Comment lines may sit at any indentation.
            let at = self.rng.pick(&[0, indent]);
            self.out.push_str(&format!("{}{c}\n", " ".repeat(at)));
        }
        if self.rng.chance(8) {
            self.out.push('\n');
        }
    }

    fn block_map(&mut self, entries: &[(String, Node)], indent: usize) {
        for (k, v) in entries {
            self.extras(indent);
            let k = self.key(k);
            match v {
                Node::Map(children) if !children.is_empty() && !self.rng.chance(3) => {
                    self.line(indent, &format!("{k}:"));
                    let step = self.rng.pick(&[2, 3, 4]);
                    self.block_map(children, indent + step);
                }
                Node::Seq(items) if !items.is_empty() && !self.rng.chance(3) => {
                    self.line(indent, &format!("{k}:"));
                    // Block sequences may sit at the key's own indentation.
                    let at = self.rng.pick(&[indent, indent + 2, indent + 4]);
                    for item in items {
                        self.extras(at);
                        let item = self.flow(item);
                        self.line(at, &format!("- {item}"));
                    }
                }
                Node::Null(Null::Empty) => self.line(indent, &format!("{k}:")),
                other => {
                    let v = self.flow(other);
                    self.line(indent, &format!("{k}: {v}"));
                }
            }
        }
    }
}

/// One surface form of the document. Seed 0 is the plainest form: block style, no comments.
fn render(services: &[Svc], seed: u64) -> String {
    let mut rng = Rng(seed);
    let doc = document_node(services, &mut rng);
    let comments = seed != 0 && rng.chance(2);
    let mut e = Emitter {
        rng,
        comments,
        out: String::new(),
    };
    if e.comments {
        e.out
            .push_str("# mirrord-up.yaml, rendered by hash_props\n");
    }
    if e.rng.chance(4) {
        e.out.push_str("---\n");
    }
    let Node::Map(root) = &doc else {
        unreachable!()
    };
    if seed != 0 && e.rng.chance(5) {
        // The whole document in flow style.
        let text = e.flow(&doc);
        e.out.push_str(&text);
        e.out.push('\n');
    } else {
        e.block_map(root, 0);
    }
    e.out
}

// ---------------------------------------------------------------------------------------------
// Loading and hashing

fn resolve_text(dir: &Path, file: &str, yaml: &str) -> Vec<ServiceSpec> {
    let path = dir.join(file);
    std::fs::write(&path, yaml).expect("write yaml");
    let doc = UpDocument::load(&path, Some("alice"))
        .unwrap_or_else(|e| panic!("this YAML must load:\n{yaml}\n--- error:\n{e}"));
    let desired = resolve(
        &doc,
        ResolveOptions {
            selection: &[],
            mode: None,
            context: None,
            launcher: LauncherKind::Local,
            inference: None,
        },
    )
    .unwrap_or_else(|e| panic!("this YAML must resolve:\n{yaml}\n--- error:\n{e}"));
    desired.services.into_iter().map(|s| (*s).clone()).collect()
}

fn hashes(specs: &[ServiceSpec]) -> BTreeMap<String, String> {
    specs
        .iter()
        .map(|s| (s.name.clone(), s.hash().to_string()))
        .collect()
}

/// The loaded service is exactly the generated one (so that equal hashes are not vacuous).
fn assert_model(svc: &Svc, spec: &ServiceSpec, yaml: &str) {
    let ctx = || format!("service `{}` of:\n{yaml}", svc.name);
    assert_eq!(spec.env_overrides(), svc.overrides, "overrides, {}", ctx());
    assert_eq!(spec.command, svc.command, "command, {}", ctx());
    let cfg = &spec.mirrord_config;
    let ports = cfg.pointer("/feature/network/incoming/ignore_ports");
    if svc.ports.is_empty() {
        assert_eq!(ports, None, "ignore_ports, {}", ctx());
    } else {
        assert_eq!(ports, Some(&json!(svc.ports)), "ignore_ports, {}", ctx());
    }
    assert_eq!(
        cfg.pointer("/feature/copy_target").is_some(),
        svc.replace,
        "mode, {}",
        ctx()
    );
    assert_eq!(
        cfg.pointer("/target/path").and_then(Value::as_str),
        svc.target.path().as_deref(),
        "target.path, {}",
        ctx()
    );
    assert_eq!(
        cfg.pointer("/target/namespace").and_then(Value::as_str),
        svc.target.namespace(),
        "target.namespace, {}",
        ctx()
    );
    assert_eq!(
        spec.stop_timeout_ms,
        svc.stop_timeout.map_or(10_000, |n| u64::from(n) * 1000),
        "stop_timeout, {}",
        ctx()
    );
    assert_eq!(
        format!("{:?}", spec.restart).to_ascii_lowercase(),
        RESTARTS[svc.restart].replace('-', ""),
        "restart, {}",
        ctx()
    );
    assert_eq!(
        spec.max_restarts,
        svc.max_restarts,
        "max_restarts, {}",
        ctx()
    );
}

// ---------------------------------------------------------------------------------------------
// Mutations

#[derive(Debug, Clone, Copy)]
enum Change {
    OverrideValue,
    CommandElement,
    Port,
    Mode,
    TargetPath,
}

const CHANGES: &[Change] = &[
    Change::OverrideValue,
    Change::CommandElement,
    Change::Port,
    Change::Mode,
    Change::TargetPath,
];

fn apply(svc: &mut Svc, change: Change, pick: usize) {
    match change {
        Change::OverrideValue => {
            if svc.overrides.is_empty() {
                svc.overrides.insert("MUTATED".into(), "x".into());
            } else {
                let key = svc
                    .overrides
                    .keys()
                    .nth(pick % svc.overrides.len())
                    .cloned();
                svc.overrides.get_mut(&key.unwrap()).unwrap().push('x');
            }
        }
        Change::CommandElement => {
            let i = pick % svc.command.len();
            svc.command[i].push('x');
        }
        Change::Port => {
            if svc.ports.is_empty() {
                svc.ports.insert(8080);
            } else {
                let old = *svc.ports.iter().nth(pick % svc.ports.len()).unwrap();
                svc.ports.remove(&old);
                let mut new = old;
                while new == old || new == 0 || svc.ports.contains(&new) {
                    new = new.wrapping_add(1);
                }
                svc.ports.insert(new);
            }
        }
        Change::Mode => svc.replace = !svc.replace,
        Change::TargetPath => {
            svc.target = match svc.target.clone() {
                Target::Unspecified => Target::Path {
                    kind: "deployment",
                    name: svc.name.clone(),
                    namespace: None,
                },
                Target::NamespaceOnly(ns) => Target::Path {
                    kind: "deployment",
                    name: svc.name.clone(),
                    namespace: Some(ns),
                },
                Target::Path {
                    kind,
                    mut name,
                    namespace,
                } => {
                    name.push('x');
                    Target::Path {
                        kind,
                        name,
                        namespace,
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Behaviour {
    StopTimeout,
    Restart,
    StopSignal,
    MaxRestarts,
}

const BEHAVIOURS: &[Behaviour] = &[
    Behaviour::StopTimeout,
    Behaviour::Restart,
    Behaviour::StopSignal,
    Behaviour::MaxRestarts,
];

fn apply_behaviour(svc: &mut Svc, change: Behaviour) {
    match change {
        Behaviour::StopTimeout => {
            // `None` is the 10 s default, so `Some(10)` ↔ `None` would be no change at all.
            svc.stop_timeout = match svc.stop_timeout {
                None => Some(3),
                Some(n) if n % 2 == 0 && n != 10 => None,
                Some(n) => Some(n + 1),
            };
        }
        Behaviour::Restart => svc.restart = (svc.restart + 1) % RESTARTS.len(),
        Behaviour::StopSignal => {
            svc.stop_signal = match svc.stop_signal {
                Some("SIGKILL" | "KILL") => Some("SIGQUIT"),
                _ => Some("KILL"),
            }
        }
        Behaviour::MaxRestarts => {
            svc.max_restarts = Some(svc.max_restarts.map_or(1, |n| n + 1));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn equivalent_surface_forms_hash_identically(
        services in services(),
        seeds in prop::collection::vec(1u64..=u64::MAX, 4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let reference_yaml = render(&services, 0);
        let reference = resolve_text(dir.path(), "form-0.yaml", &reference_yaml);
        prop_assert_eq!(reference.len(), services.len());
        for svc in &services {
            let spec = reference.iter().find(|s| s.name == svc.name).expect("service resolved");
            assert_model(svc, spec, &reference_yaml);
        }
        let expected = hashes(&reference);
        for (i, seed) in seeds.iter().enumerate() {
            let yaml = render(&services, *seed);
            let specs = resolve_text(dir.path(), &format!("form-{}.yaml", i + 1), &yaml);
            for svc in &services {
                let spec = specs.iter().find(|s| s.name == svc.name).expect("service resolved");
                assert_model(svc, spec, &yaml);
            }
            prop_assert_eq!(
                &hashes(&specs),
                &expected,
                "hashes differ between\n{}\n--- and\n{}",
                reference_yaml,
                yaml
            );
        }
    }

    #[test]
    fn a_change_that_reaches_the_process_changes_only_that_service(
        services in services(),
        which in any::<prop::sample::Index>(),
        change in prop::sample::select(CHANGES),
        pick in any::<usize>(),
        seeds in (any::<u64>(), any::<u64>()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let victim = which.index(services.len());
        let mut changed = services.clone();
        apply(&mut changed[victim], change, pick);
        let before_yaml = render(&services, seeds.0);
        let after_yaml = render(&changed, seeds.1);
        let before = hashes(&resolve_text(dir.path(), "before.yaml", &before_yaml));
        let after_specs = resolve_text(dir.path(), "after.yaml", &after_yaml);
        assert_model(&changed[victim], after_specs.iter().find(|s| s.name == changed[victim].name).unwrap(), &after_yaml);
        let after = hashes(&after_specs);
        for svc in &services {
            let name = &svc.name;
            if svc.name == services[victim].name {
                prop_assert_ne!(
                    &before[name], &after[name],
                    "{:?} of `{}` did not change its hash:\n{}\n--- and\n{}",
                    change, name, before_yaml, after_yaml
                );
            } else {
                prop_assert_eq!(
                    &before[name], &after[name],
                    "{:?} of `{}` changed the hash of `{}`:\n{}\n--- and\n{}",
                    change, services[victim].name, name, before_yaml, after_yaml
                );
            }
        }
    }

    #[test]
    fn behaviour_only_extensions_do_not_change_the_hash(
        services in services(),
        which in any::<prop::sample::Index>(),
        change in prop::sample::select(BEHAVIOURS),
        seeds in (any::<u64>(), any::<u64>()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let victim = which.index(services.len());
        let mut changed = services.clone();
        apply_behaviour(&mut changed[victim], change);
        let before_yaml = render(&services, seeds.0);
        let after_yaml = render(&changed, seeds.1);
        let before_specs = resolve_text(dir.path(), "before.yaml", &before_yaml);
        let after_specs = resolve_text(dir.path(), "after.yaml", &after_yaml);
        // The change did reach the resolved spec (the supervisor will see it)…
        let name = &services[victim].name;
        let b = before_specs.iter().find(|s| &s.name == name).unwrap();
        let a = after_specs.iter().find(|s| &s.name == name).unwrap();
        assert_model(&changed[victim], a, &after_yaml);
        prop_assert!(
            (b.stop_timeout_ms, &b.restart, &b.stop_signal, b.max_restarts)
                != (a.stop_timeout_ms, &a.restart, &a.stop_signal, a.max_restarts),
            "{:?} did not change the resolved spec of `{}`", change, name
        );
        // …but no hash.
        prop_assert_eq!(
            hashes(&before_specs),
            hashes(&after_specs),
            "{:?} of `{}` changed a hash:\n{}\n--- and\n{}",
            change, name, before_yaml, after_yaml
        );
    }
}

/// The renderer itself: a few fixed forms, so that a broken generator cannot make the
/// properties pass vacuously (e.g. by producing the same text for every seed).
#[test]
fn renderer_produces_distinct_equivalent_forms() {
    let svc = Svc {
        name: "api".into(),
        overrides: BTreeMap::from([("A".into(), "1".into()), ("B".into(), "x: y".into())]),
        command: vec!["node".into(), "it's".into(), "true".into()],
        ports: BTreeSet::from([9090, 15090]),
        replace: false,
        target: Target::Path {
            kind: "deployment",
            name: "api".into(),
            namespace: Some("staging".into()),
        },
        stop_timeout: Some(5),
        restart: 1,
        stop_signal: None,
        max_restarts: None,
    };
    let services = vec![svc];
    let forms: BTreeSet<String> = (0..32).map(|seed| render(&services, seed)).collect();
    assert!(forms.len() > 20, "only {} distinct forms", forms.len());
    assert!(
        forms.iter().any(|f| f.contains('#')),
        "no form has comments"
    );
    assert!(
        forms.iter().any(|f| f.contains("command: [")),
        "no flow sequence"
    );
    assert!(forms.iter().any(|f| f.contains("- ")), "no block sequence");
    let dir = tempfile::tempdir().unwrap();
    let expected = hashes(&resolve_text(dir.path(), "f.yaml", &render(&services, 0)));
    for f in &forms {
        assert_eq!(
            hashes(&resolve_text(dir.path(), "f.yaml", f)),
            expected,
            "{f}"
        );
    }
}
